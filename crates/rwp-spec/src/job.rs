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
    /// Times a sample was left out of a batch (`bad_samples = "skip"`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_samples: u64,
    /// The distinct samples left out, with what is wrong with each: the
    /// first [`MAX_SKIPPED_EXAMPLES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_sample_examples: Vec<String>,
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
    /// Why a running job makes no progress now, when something outside it
    /// holds it up ("no worker is connected"). Not stored.
    #[serde(default, skip)]
    pub waiting: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How many distinct skipped samples a job names ([`Job::skipped_sample_examples`]).
pub const MAX_SKIPPED_EXAMPLES: usize = 100;

impl Job {
    /// Counts the samples a result left out; returns those named for the
    /// first time (to be logged).
    pub fn note_skipped(&mut self, skipped: &[String]) -> Vec<String> {
        note_skipped(&mut self.skipped_samples, &mut self.skipped_sample_examples, skipped)
    }
}

/// Adds `skipped` (samples left out of a batch, each with what is wrong
/// with it) to `count` and to the first [`MAX_SKIPPED_EXAMPLES`] distinct
/// `examples`; returns those named for the first time.
pub fn note_skipped(count: &mut u64, examples: &mut Vec<String>, skipped: &[String]) -> Vec<String> {
    *count += skipped.len() as u64;
    let mut new = Vec::new();
    for sample in skipped {
        if examples.len() >= MAX_SKIPPED_EXAMPLES {
            break;
        }
        if !examples.contains(sample) {
            examples.push(sample.clone());
            new.push(sample.clone());
        }
    }
    new
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

/// One entry of a job's event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its number in the job's log, from 1.
    pub seq: u64,
    pub unix_ms: i64,
    pub kind: LogKind,
    /// The worker it involves (its name), when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// What happened, in words.
    pub message: String,
}

/// What a log entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogKind {
    Submitted,
    /// Continued after it ended (`rwp resume`).
    Resumed,
    /// Taken over by a restarted server from its checkpoint.
    ServerRestarted,
    /// A task handed to a worker.
    Leased,
    /// A worker stopped renewing a lease (it died, hung or lost the
    /// network): its task was handed to another.
    LeaseLapsed,
    /// A worker reported a task failed; it is re-issued.
    TaskFailed,
    /// No worker is connected: the job waits.
    NoWorkers,
    /// A worker is connected again after [`LogKind::NoWorkers`].
    WorkersBack,
    /// A due checkpoint could not be written: no work until it can.
    Paused,
    /// The checkpoint was written after all: work goes on.
    Unpaused,
    /// An update skipped for a non-finite gradient.
    UpdateSkipped,
    /// A sample left out of a batch for the first time (`bad_samples = "skip"`).
    SampleSkipped,
    Evaluated,
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped early by its sweep.
    Stopped,
}

impl LogKind {
    pub const ALL: [LogKind; 17] = [
        LogKind::Submitted,
        LogKind::Resumed,
        LogKind::ServerRestarted,
        LogKind::Leased,
        LogKind::LeaseLapsed,
        LogKind::TaskFailed,
        LogKind::NoWorkers,
        LogKind::WorkersBack,
        LogKind::Paused,
        LogKind::Unpaused,
        LogKind::UpdateSkipped,
        LogKind::SampleSkipped,
        LogKind::Evaluated,
        LogKind::Succeeded,
        LogKind::Failed,
        LogKind::Cancelled,
        LogKind::Stopped,
    ];

    /// Its name on the wire and on screen (`lease-lapsed`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            LogKind::Submitted => "submitted",
            LogKind::Resumed => "resumed",
            LogKind::ServerRestarted => "server-restarted",
            LogKind::Leased => "leased",
            LogKind::LeaseLapsed => "lease-lapsed",
            LogKind::TaskFailed => "task-failed",
            LogKind::NoWorkers => "no-workers",
            LogKind::WorkersBack => "workers-back",
            LogKind::Paused => "paused",
            LogKind::Unpaused => "unpaused",
            LogKind::UpdateSkipped => "update-skipped",
            LogKind::SampleSkipped => "sample-skipped",
            LogKind::Evaluated => "evaluated",
            LogKind::Succeeded => "succeeded",
            LogKind::Failed => "failed",
            LogKind::Cancelled => "cancelled",
            LogKind::Stopped => "stopped",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it records the job's end (the last entry, unless the job is
    /// resumed).
    #[must_use]
    pub fn is_end(self) -> bool {
        matches!(self, LogKind::Succeeded | LogKind::Failed | LogKind::Cancelled | LogKind::Stopped)
    }

    /// The kind of entry that records a job's end in `state`.
    #[must_use]
    pub fn of_end(state: JobState) -> Option<Self> {
        match state {
            JobState::Succeeded => Some(LogKind::Succeeded),
            JobState::Failed => Some(LogKind::Failed),
            JobState::Cancelled => Some(LogKind::Cancelled),
            JobState::Stopped => Some(LogKind::Stopped),
            JobState::Running | JobState::Paused => None,
        }
    }
}

/// A worker as the server sees it (`rwp workers`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    /// The name it registered with.
    pub name: String,
    /// The device it computes on (`cpu`, `cuda:0`).
    pub device: String,
    /// Whether it asked for work or reported within the lease timeout (or
    /// is waiting for work now).
    pub connected: bool,
    pub registered_unix_ms: i64,
    pub last_seen_unix_ms: i64,
    /// The job and task it computes now, when it computes one the caller
    /// may see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Results it returned that were accepted.
    pub tasks_done: u64,
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
