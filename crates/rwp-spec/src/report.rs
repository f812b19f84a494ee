//! A sweep as the server reports it: its spec and state, and each generated
//! trial with the job started for it. Shared by the server (which builds it
//! from its records), the SDK and the CLI; `rwp-proto` converts it to and
//! from the wire.

use crate::job::Job;
use crate::sweep::{ParamValue, SweepSpec, SweepState};

/// A sweep as the server reports it: its spec, and each trial with its job
/// once started.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub id: String,
    pub name: String,
    pub spec: SweepSpec,
    pub state: SweepState,
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    /// The token that created the sweep; `None` on a server without authentication.
    pub owner: Option<String>,
    /// In trial order.
    pub trials: Vec<Trial>,
    /// The trial with the highest validation accuracy so far (never chosen
    /// by test accuracy).
    pub best_trial: Option<u32>,
}

/// One trial of a reported sweep (the generated trial itself is
/// [`crate::sweep::Trial`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub index: u32,
    pub params: Vec<(String, ParamValue)>,
    /// `None` while the trial waits for a slot.
    pub job: Option<Job>,
}

impl Sweep {
    /// The sweep and every trial it started have ended.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.state.is_terminal() && self.trials.iter().filter_map(|t| t.job.as_ref()).all(|j| j.state.is_terminal())
    }

    #[must_use]
    pub fn best(&self) -> Option<&Trial> {
        self.best_trial.and_then(|i| self.trials.get(i as usize))
    }
}
