//! The worker API in domain terms: a task as a worker leases it, and the
//! header of the result it pushes back. The worker builds a [`PushHeader`]
//! and the server parses the same type; `rwp-proto` converts both to and
//! from the wire (`rwp.v1.Task`, `rwp.v1.GradientHeader`).

use std::time::Duration;

use crate::payload::Announced;
use crate::{JobSpec, Role, Task};

/// A task handed to a worker under a lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeasedTask {
    pub lease_id: String,
    pub job_id: String,
    /// The job's spec: everything the result depends on, with the task.
    pub spec: JobSpec,
    pub task: Task,
    /// Whether the result carries the BatchNorm buffers after the task's batch.
    pub returns_buffers: bool,
    /// When the lease lapses unless renewed (Unix ms).
    pub deadline_unix_ms: i64,
    /// How long the worker may compute the task before it kills it; `None`:
    /// no limit (0 on the wire). Whole milliseconds on the wire.
    pub timeout: Option<Duration>,
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
}
