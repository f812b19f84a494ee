//! The server's domain types: what a job is, what happened at each update.
//! Free of transport; `grpc.rs` converts them to and from wire messages.

use rwp_spec::JobSpec;
use serde::{Deserialize, Serialize};

pub use rwp_spec::job::{Evaluation, JobState, StepMetrics};

/// The durable record of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Updates applied so far.
    pub step: u64,
    pub total_updates: u64,
    pub updates_per_epoch: u64,
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    pub skipped_updates: u64,
    pub last_step: Option<StepMetrics>,
    pub last_evaluation: Option<Evaluation>,
    /// Running time accumulated before the current server process took the job over.
    #[serde(default)]
    pub wall_time_before_s: f64,
}

/// What a watcher sees.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    Step(StepMetrics),
    Evaluation(Evaluation),
    /// The record after a state change; the terminal one is the last event.
    Job(Box<JobRecord>),
}

#[must_use]
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
