//! `demo` tasks: a simulated job of a number of equal steps, for trying out
//! progress streams (and for testing them) without real work behind.

use std::time::Duration;

use super::TaskContext;
use crate::error::{Error, FieldViolation, Result};

/// Most steps of a demo task.
pub const MAX_STEPS: u32 = 10_000;

/// Longest step of a demo task, in milliseconds.
pub const MAX_STEP_DELAY_MS: u32 = 60_000;

/// A checked demo task specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSpec {
    steps: u32,
    step_delay: Duration,
    fail_at_step: Option<u32>,
}

impl DemoSpec {
    /// Checks the raw fields (as named in `DemoTaskSpec`); `fail_at_step` 0
    /// means the task does not fail.
    pub fn new(steps: u32, step_delay_ms: u32, fail_at_step: u32) -> Result<Self> {
        let mut violations = Vec::new();
        if !(1..=MAX_STEPS).contains(&steps) {
            violations.push(FieldViolation::new(
                "demo.steps",
                format!("must be 1 to {MAX_STEPS}, got {steps}"),
            ));
        }
        if step_delay_ms > MAX_STEP_DELAY_MS {
            violations.push(FieldViolation::new(
                "demo.step_delay_ms",
                format!("must be at most {MAX_STEP_DELAY_MS}, got {step_delay_ms}"),
            ));
        }
        if fail_at_step > steps {
            violations.push(FieldViolation::new(
                "demo.fail_at_step",
                format!(
                    "must be 0 (never) or a step from 1 to steps ({steps}), got {fail_at_step}"
                ),
            ));
        }
        Error::check(violations)?;
        Ok(Self {
            steps,
            step_delay: Duration::from_millis(step_delay_ms.into()),
            fail_at_step: (fail_at_step > 0).then_some(fail_at_step),
        })
    }

    /// Runs the steps, reporting progress after each; stops early when the
    /// task is cancelled, and fails at `fail_at_step`.
    pub async fn run(self, context: TaskContext) -> Result<(), String> {
        let total = self.steps;
        context.progress(0, total, format!("starting {total} steps"));
        for step in 1..=total {
            if !self.wait_one_step(&context).await {
                return Err(format!("cancelled at step {step} of {total}"));
            }
            if self.fail_at_step == Some(step) {
                return Err(format!(
                    "demo task failed at step {step} of {total}, as asked"
                ));
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
