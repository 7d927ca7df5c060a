//! Validation of the TaskService requests, protocol-free.
//!
//! Each edge fills a draft ([`StartDraft`], a task id, a [`ListDraft`]) and
//! calls the checks here before any work starts, so limits and field paths
//! are the same for every protocol.

use super::{DemoSpec, page_token::PageTokens};
use crate::{
    error::Result,
    validation::{PageDraft, Violations, invalid},
};

/// Tasks per ListTasks page when the request sets none.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 50;
/// Most tasks per ListTasks page.
pub(crate) const MAX_PAGE_SIZE: u32 = 1_000;
/// Longest task id accepted; the server's own are 37 bytes.
pub(crate) const MAX_TASK_ID_BYTES: usize = 128;

/// A StartTask request as a client sent it: which kind of task, with its
/// raw parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartDraft {
    /// A demo task.
    Demo {
        /// Steps.
        steps: u32,
        /// Milliseconds per step.
        step_delay_ms: u32,
        /// Step that fails; 0 for none.
        fail_at_step: u32,
    },
    /// The request named no kind of task.
    Missing,
}

/// A checked StartTask request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskSpec {
    /// A demo task.
    Demo(DemoSpec),
}

/// Checks a StartTask request.
pub(crate) fn start_request(draft: StartDraft) -> Result<TaskSpec> {
    match draft {
        StartDraft::Demo {
            steps,
            step_delay_ms,
            fail_at_step,
        } => Ok(TaskSpec::Demo(DemoSpec::new(
            steps,
            step_delay_ms,
            fail_at_step,
        )?)),
        StartDraft::Missing => Err(invalid("spec", "required: set `demo`")),
    }
}

/// A task id must be given and no longer than any id the server makes.
pub(crate) fn check_task_id(id: &str) -> Result<()> {
    if id.is_empty() {
        Err(invalid("task_id", "required"))
    } else if id.len() > MAX_TASK_ID_BYTES {
        Err(invalid(
            "task_id",
            format!("too long: task ids are at most {MAX_TASK_ID_BYTES} bytes"),
        ))
    } else {
        Ok(())
    }
}

/// Checks that a watcher resumes from a sequence the task has reached.
pub(crate) fn check_after_sequence(after_sequence: u64, last: u64) -> Result<()> {
    if after_sequence > last {
        return Err(invalid(
            "after_sequence",
            format!("the task's last event is {last}; pass a sequence you have seen"),
        ));
    }
    Ok(())
}

/// A ListTasks request as a client sent it.
pub(crate) type ListDraft = PageDraft;

/// A checked ListTasks request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListRequest {
    /// Tasks per page, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: usize,
    /// The creation order the page starts before; `None` for the newest.
    pub before: Option<u64>,
}

/// Checks a ListTasks request; its page token must be one that `tokens`
/// issued (the list key of the last task of the previous page, signed, so
/// pages stay stable as tasks come and go and forged tokens are refused).
pub(crate) fn list_request(draft: &ListDraft, tokens: &PageTokens) -> Result<ListRequest> {
    let mut violations = Violations::new();
    violations.require(draft.page_size <= MAX_PAGE_SIZE, "page_size", || {
        format!("must be at most {MAX_PAGE_SIZE}, got {}", draft.page_size)
    });
    let before = if draft.page_token.is_empty() {
        None
    } else {
        let before = tokens.verify(&draft.page_token);
        violations.require(before.is_some(), "page_token", || {
            "not a token this server's ListTasks returned; leave empty for the first page".into()
        });
        before
    };
    violations.finish()?;
    let page_size = match draft.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size => size,
    };
    Ok(ListRequest {
        page_size: page_size as usize,
        before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PageTokens {
        PageTokens::new(b"test key")
    }

    fn page(page_size: u32, page_token: &str) -> Result<(usize, Option<u64>)> {
        let draft = ListDraft {
            page_size,
            page_token: page_token.into(),
        };
        list_request(&draft, &tokens()).map(|list| (list.page_size, list.before))
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(page(0, "").ok(), Some((50, None)));
        let token = tokens().issue(42);
        assert_eq!(page(1000, &token).ok(), Some((1000, Some(42))));
        assert!(page(1001, "").is_err());
        let other = PageTokens::new(b"another key").issue(42);
        for bad in ["42", "before-42", "before-x", &other] {
            assert!(page(10, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_ids_must_be_present_and_short() {
        assert!(check_task_id("task-1").is_ok());
        assert!(check_task_id("").is_err());
        assert!(check_task_id(&"x".repeat(MAX_TASK_ID_BYTES + 1)).is_err());
    }

    #[test]
    fn watchers_resume_only_from_seen_sequences() {
        assert!(check_after_sequence(0, 0).is_ok());
        assert!(check_after_sequence(3, 3).is_ok());
        assert!(check_after_sequence(4, 3).is_err());
    }

    #[test]
    fn a_start_request_names_its_kind() {
        assert!(start_request(StartDraft::Missing).is_err());
        let demo = StartDraft::Demo {
            steps: 3,
            step_delay_ms: 0,
            fail_at_step: 0,
        };
        assert!(matches!(start_request(demo), Ok(TaskSpec::Demo(_))));
    }
}
