//! The life cycle of a task, as a type that only allows the documented
//! transitions: PENDING → RUNNING → SUCCEEDED | FAILED | CANCELLED.
//!
//! Every change of a task's state goes through [`TaskState::can_become`], so
//! a late result of work that was already cancelled, or a second cancel, can
//! never move a finished task again.

/// Where a task is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaskState {
    /// Registered; its work has not started yet.
    Pending,
    /// Its work is running.
    Running,
    /// The work finished and its results are in place. Terminal.
    Succeeded,
    /// The work stopped with an error. Terminal.
    Failed,
    /// The task was cancelled. Terminal.
    Cancelled,
}

impl TaskState {
    /// Whether no transition leaves this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// Whether the life cycle allows going from `self` to `next`.
    pub fn can_become(self, next: TaskState) -> bool {
        matches!(
            (self, next),
            (TaskState::Pending, TaskState::Running)
                | (
                    TaskState::Running,
                    TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
                )
        )
    }

    /// The state's name, in capitals as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Running => "RUNNING",
            TaskState::Succeeded => "SUCCEEDED",
            TaskState::Failed => "FAILED",
            TaskState::Cancelled => "CANCELLED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TaskState::{self, *};

    const ALL: [TaskState; 5] = [Pending, Running, Succeeded, Failed, Cancelled];

    #[test]
    fn only_the_documented_transitions_are_allowed() {
        let allowed: Vec<_> = ALL
            .iter()
            .flat_map(|&from| ALL.iter().map(move |&to| (from, to)))
            .filter(|&(from, to)| from.can_become(to))
            .collect();
        assert_eq!(
            allowed,
            [
                (Pending, Running),
                (Running, Succeeded),
                (Running, Failed),
                (Running, Cancelled)
            ]
        );
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(ALL.iter().all(|&to| !from.can_become(to)), "{from:?}");
        }
        assert!(!Pending.is_terminal() && !Running.is_terminal());
    }
}
