//! The worker API in domain terms: a task as a worker leases it (a gradient
//! of an update, or a shard of an evaluation), the header of a gradient it
//! pushes back and an evaluation shard's result. The worker builds a
//! [`PushHeader`] or an [`EvalPush`] and the server parses the same types;
//! `rwp-proto` converts them to and from the wire (`rwp.v1.Task`,
//! `rwp.v1.GradientHeader`, `rwp.v1.PushEvaluationRequest`).

use std::time::Duration;

use crate::eval::{BatchEval, EvalTask};
use crate::payload::Announced;
use crate::{JobSpec, Role, Task};

/// A task handed to a worker under a lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeasedTask {
    pub lease_id: String,
    pub job_id: String,
    /// The job's spec: everything the result depends on, with the task.
    pub spec: JobSpec,
    pub work: Work,
    /// When the lease lapses unless renewed (Unix ms).
    pub deadline_unix_ms: i64,
    /// How long the worker may compute the task before it kills it; `None`:
    /// no limit (0 on the wire). Whole milliseconds on the wire.
    pub timeout: Option<Duration>,
}

/// What a leased task computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Work {
    /// A gradient task of an update.
    Gradient {
        task: Task,
        /// Whether the result carries the BatchNorm buffers after the task's batch.
        returns_buffers: bool,
    },
    /// A shard of the evaluation of a weights version.
    Evaluation(EvalTask),
}

impl Work {
    /// The weights version the task computes on.
    #[must_use]
    pub fn version(&self) -> u64 {
        match self {
            Work::Gradient { task, .. } => task.step,
            Work::Evaluation(task) => task.version,
        }
    }
}

/// An evaluation shard's result, as a worker pushes it.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPush {
    pub worker_id: String,
    pub lease_id: String,
    pub job_id: String,
    pub task: EvalTask,
    /// One per batch of the shard, in batch order.
    pub batches: Vec<BatchEval>,
    /// Samples left out of the shard's batches (`bad_samples = "skip"`).
    pub skipped: Vec<String>,
}

/// What a worker says it is pushing: the header of a push, before the payload.
#[derive(Clone, Debug, PartialEq)]
pub struct PushHeader {
    pub worker_id: String,
    pub lease_id: String,
    pub job_id: String,
    pub step: u64,
    pub role: Role,
    pub shard: u32,
    /// The weights version the result was computed at.
    pub weights_version: u64,
    pub loss: f64,
    pub accuracy: f64,
    /// The encoding and byte counts of the payload that follows.
    pub announced: Announced,
    /// Samples left out of the task's batch (`bad_samples = "skip"`).
    pub skipped: Vec<String>,
}

/// A submitted job's own data, leased to a worker to inspect: the worker
/// lists it as the job's workers will ([`crate::DataSummary`]) and pushes
/// the summary or the first problem found.
#[derive(Clone, Debug, PartialEq)]
pub struct Inspection {
    pub lease_id: String,
    pub dataset: crate::DatasetKind,
    pub data: crate::DataSource,
    /// When the lease lapses unless renewed (Unix ms).
    pub deadline_unix_ms: i64,
    /// Read and decode every image too, listing the unreadable ones.
    pub decode: bool,
}

/// What a worker found inspecting data.
#[derive(Clone, Debug, PartialEq)]
pub struct InspectionPush {
    pub worker_id: String,
    pub lease_id: String,
    pub result: Result<crate::DataReport, String>,
}
