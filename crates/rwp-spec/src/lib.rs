//! The contract of an RWP-family training job, free of libtorch so that
//! clients, the parameter server's control plane and the workers share it.
//!
//! - [`JobSpec`]: method, model, data and hyper-parameters, validated;
//! - [`Schedule`]: learning rate and σ per update (docs/algorithms.md, "Schedules");
//! - [`plan`]: the tasks of an update and the samples and seeds of each task;
//! - [`eval`]: the shards of an evaluation and how their results are summed;
//! - [`payload`]: the byte layout of a shard result and the server's checks
//!   on a pushed one (sizes, order of messages, finite values);
//! - what the service says, as domain values that `rwp-proto` converts to
//!   and from its wire messages: a [`Job`] and its [`JobEvent`]s,
//!   a [`report::Sweep`] and its trials, a [`StoredModel`], and the worker
//!   API's [`work::LeasedTask`], [`work::PushHeader`] and [`work::EvalPush`].
//!
//! Seeds are derived with [`rng::derive_seed`] from the job's root seed and a
//! path `(tag, ...)`: initial weights `(1)`, the sample order of a stream in an
//! epoch `(2, stream, epoch)`, the augmentation of the sample at position `p`
//! of that order `(3, stream, epoch, p)`, and ε of update `t`
//! `(4, t, shard)` (shard is 0 unless noise is independent per shard), and
//! the validation samples held out of the training set `(5)`.

pub mod data;
pub mod eval;
pub mod job;
pub mod labels;
mod method;
mod model_file;
pub mod payload;
pub mod plan;
pub mod report;
pub mod rng;
mod spec;
pub mod sweep;
pub mod work;

pub use data::{BadSamples, DataReport, DataSource, DataSummary, SplitReport, Transforms, UnreadableSample};
pub use job::{Evaluation, Job, JobEvent, JobState, LogEntry, LogKind, StepMetrics, SubmitOptions, WorkerInfo};
pub use method::{DatasetKind, Method, ModelKind};
pub use model_file::{
    check_model_file, is_sha256_hex, sha256_hex, ModelFile, ModelReceiver, Sha256, Spelling, StoredModel,
};
pub use plan::{Role, Task};
pub use spec::{
    schedule_keys, Extension, GradientEncoding, JobSpec, LrSchedule, NonFinitePolicy, Schedule, ScheduleFlags,
    SigmaSchedule,
};

/// A job spec that cannot run, naming the field and the rule it breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("unknown {what} '{value}' (expected one of: {expected})")]
    Unknown { what: &'static str, value: String, expected: String },
    #[error("{field} = {value} is out of range: {rule}")]
    OutOfRange { field: &'static str, value: String, rule: &'static str },
    #[error("dataset {dataset} needs a data directory (data_dir / --data-dir)")]
    MissingDataDir { dataset: DatasetKind },
}
