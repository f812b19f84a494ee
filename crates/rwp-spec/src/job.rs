//! What clients and the server say about a job: the job as reported
//! ([`Job`]), its state, the metrics of each update, the evaluations and
//! what a watcher sees ([`JobEvent`]). Shared by the server, the SDK and the
//! CLI (the wire messages convert to and from these in `rwp-proto`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::JobSpec;

/// A job as the server reports it. The server's durable record is this
/// plus its own bookkeeping, flattened into the same JSON object, so the
/// serde attributes here are those of the stored records: `owner` may be
/// missing (records written before owners were recorded), `sweep` is left
/// out when `None`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Updates applied so far.
    pub step: u64,
    pub total_updates: u64,
    pub updates_per_epoch: u64,
    /// Why the job failed (or stopped early), if it did.
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    pub skipped_updates: u64,
    pub last_step: Option<StepMetrics>,
    pub last_evaluation: Option<Evaluation>,
    /// The name of the token that submitted the job; `None` on a server
    /// without authentication (and for records written before owners were
    /// recorded): such jobs are an admin's only.
    #[serde(default)]
    pub owner: Option<String>,
    /// The sweep this job is a trial of, and the trial's index there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<(String, u32)>,
    /// Free-form labels given at submission ([`crate::labels`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The job whose weights this one started from, when it was started
    /// from another job's (`init_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
}

/// What a submission may say besides the job's name and spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Free-form labels ([`crate::labels`]).
    pub labels: BTreeMap<String, String>,
    /// A job whose latest weights and BatchNorm statistics the new job
    /// starts from (fine-tuning, warm starts); the optimizer starts fresh.
    pub init_from: Option<String>,
}

/// What a watcher of a job sees.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// An update was applied (every step, in order).
    Step(StepMetrics),
    /// The test split was evaluated.
    Evaluation(Evaluation),
    /// The job changed state; when terminal, this is the last event.
    State(Box<Job>),
}

/// Where a job is in its life; `Running` and `Paused` go on, the others are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Running,
    /// Waiting for its storage: a due checkpoint could not be written, and
    /// the server retries it before handing out more work.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped early by its sweep's early-stopping rule; `error` says why.
    /// Its metrics and weights stay as they were.
    Stopped,
}

impl JobState {
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Running | JobState::Paused)
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Stopped => "stopped",
        }
    }
}

/// Metrics of one applied (or skipped) update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The update's number, counting from 1: the updates applied once it
    /// was (as [`Job::step`] and [`Evaluation::step`] count them).
    pub step: u64,
    /// Mean training loss and accuracy of the clean (or SAM) shards, else of the perturbed ones.
    pub loss: f64,
    pub accuracy: f64,
    /// Mean loss at `w + ε`, for methods with perturbed shards.
    pub perturbed_loss: Option<f64>,
    pub lr: f64,
    pub sigma: f64,
    /// Seconds of running time when the update was applied.
    pub wall_time_s: f64,
    /// Skipped for non-finite gradients (weights unchanged).
    pub skipped: bool,
}

/// An evaluation on the test split, and on the validation split when the
/// job holds one out (`validation_fraction > 0`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Updates applied when evaluated.
    pub step: u64,
    pub epoch: u64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub wall_time_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
