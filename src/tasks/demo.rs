//! `demo` tasks: a simulated job of a number of equal steps, for trying out
//! progress streams (and for testing them) without real work behind.

use std::time::Duration;

use super::TaskContext;
use crate::{error::Result, validation::Violations};

/// Most steps of a demo task.
pub(crate) const MAX_STEPS: u32 = 10_000;

/// Longest step of a demo task, in milliseconds.
pub(crate) const MAX_STEP_DELAY_MS: u32 = 60_000;

/// How a demo task stops short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DemoError {
    /// Its cancellation was observed before `step`.
    #[error("cancelled at step {step} of {total}")]
    Cancelled {
        /// The step that did not run.
        step: u32,
        /// Steps in all.
        total: u32,
    },
    /// It reached `fail_at_step`.
    #[error("demo task failed at step {step} of {total}, as asked")]
    FailedAsAsked {
        /// The failing step.
        step: u32,
        /// Steps in all.
        total: u32,
    },
}

/// A checked demo task specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DemoSpec {
    steps: u32,
    step_delay: Duration,
    fail_at_step: Option<u32>,
}

impl DemoSpec {
    /// Checks the raw fields (as named in `DemoTaskSpec`); `fail_at_step` 0
    /// means the task does not fail.
    pub(crate) fn new(steps: u32, step_delay_ms: u32, fail_at_step: u32) -> Result<Self> {
        let mut violations = Violations::new();
        violations.require((1..=MAX_STEPS).contains(&steps), "demo.steps", || {
            format!("must be 1 to {MAX_STEPS}, got {steps}")
        });
        violations.require(
            step_delay_ms <= MAX_STEP_DELAY_MS,
            "demo.step_delay_ms",
            || format!("must be at most {MAX_STEP_DELAY_MS}, got {step_delay_ms}"),
        );
        violations.require(fail_at_step <= steps, "demo.fail_at_step", || {
            format!("must be 0 (never) or a step from 1 to steps ({steps}), got {fail_at_step}")
        });
        violations.finish()?;
        Ok(Self {
            steps,
            step_delay: Duration::from_millis(step_delay_ms.into()),
            fail_at_step: (fail_at_step > 0).then_some(fail_at_step),
        })
    }

    /// Runs the steps, reporting progress after each; stops early when the
    /// task is cancelled, and fails at `fail_at_step`.
    pub(crate) async fn run(self, context: TaskContext) -> Result<(), DemoError> {
        let total = self.steps;
        context.progress(0, total, format!("starting {total} steps"));
        for step in 1..=total {
            if !self.wait_one_step(&context).await {
                return Err(DemoError::Cancelled { step, total });
            }
            if self.fail_at_step == Some(step) {
                return Err(DemoError::FailedAsAsked { step, total });
            }
            context.progress(step, total, format!("step {step} of {total} done"));
        }
        Ok(())
    }

    /// Waits for the length of one step; false when cancelled meanwhile.
    async fn wait_one_step(&self, context: &TaskContext) -> bool {
        if self.step_delay.is_zero() {
            // Let other tasks run between instant steps.
            tokio::task::yield_now().await;
            return !context.is_cancelled();
        }
        tokio::select! {
            () = context.cancellation().cancelled() => false,
            () = tokio::time::sleep(self.step_delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn fields(result: Result<DemoSpec>) -> Vec<String> {
        match result {
            Err(Error::InvalidArgument(violations)) => {
                violations.into_iter().map(|v| v.field).collect()
            }
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_limits() {
        assert!(DemoSpec::new(1, 0, 0).is_ok());
        assert!(DemoSpec::new(MAX_STEPS, MAX_STEP_DELAY_MS, MAX_STEPS).is_ok());
    }

    #[test]
    fn names_every_field_beyond_its_limit() {
        assert_eq!(fields(DemoSpec::new(0, 0, 0)), ["demo.steps"]);
        assert_eq!(
            fields(DemoSpec::new(
                MAX_STEPS + 1,
                MAX_STEP_DELAY_MS + 1,
                MAX_STEPS + 2
            )),
            ["demo.steps", "demo.step_delay_ms", "demo.fail_at_step"]
        );
        assert_eq!(fields(DemoSpec::new(5, 10, 6)), ["demo.fail_at_step"]);
    }
}
