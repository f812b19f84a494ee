//! The gradient worker of the RWP training service.
//!
//! A worker is stateless as far as training goes: everything a result depends
//! on comes with the task it leases from the parameter server (job spec, step,
//! role, shard, noise seed, σ) and with the weights version the task names. It
//! loops over:
//!
//! 1. **connect and register**: connects to the server's `WorkerService`,
//!    retrying with exponential backoff (100 ms doubling up to
//!    `max_backoff_ms`) while the server is down or restarting, then
//!    `Register`s and keeps the worker id and the lease renewal interval. A
//!    later call that fails because the connection is gone, or a `NOT_FOUND`
//!    for the worker id (a restarted server forgot it), starts this over;
//! 2. **lease** a task on its `Tasks` stream, one long-lived stream per
//!    session: it says `Ready` with the weights versions its compute thread
//!    holds, and the server offers the next task when there is one, then
//!    the task's weights version unless the worker holds it (a server
//!    without the stream: `LeaseTask`, held open up to `lease_wait_ms`).
//!    The lease is bound to the stream: if the worker dies, the server
//!    re-issues its task as soon as the stream breaks;
//! 3. **receive** the weights version the task needs from the stream (or,
//!    when the compute thread dropped a version the server thought it held,
//!    fetch it with `FetchWeights`), checking that the chunks tile the
//!    announced size exactly, while the compute thread reads and decodes the
//!    task's batch;
//!    For a TorchScript job, the model file the spec names is fetched once
//!    with `FetchModel` into `model_cache_dir`, checked against its SHA-256;
//! 4. **compute** the shard's result with [`rwp_core::grad::compute_task`],
//!    on one dedicated thread that owns every libtorch object (tensors are not
//!    `Sync`, so none is ever held in async code). The thread caches, per job,
//!    the dataset, the model, the schedule, the sampler and the latest weights
//!    version, for a few jobs at most and only while they are used;
//! 5. **renew** the lease every `renew_interval_ms` while the task runs;
//! 6. **push** the result with `PushGradient`: a header, then the payload
//!    (gradients in the job's encoding, then BatchNorm buffers for the tasks
//!    that return them; see [`rwp_core::wire`]) in chunks of at most
//!    `chunk_bytes`. A result the server already had is dropped there
//!    (`accepted = false`), which is fine: tasks are deterministic.
//!
//! A failed task is logged, its lease given back, and the worker goes on with
//! the next one. When the shutdown future given to [`run`] resolves (SIGTERM in
//! the binary), the worker stops leasing, finishes the task in flight within
//! `drain_timeout_ms` or else gives its lease back (`ReleaseLease`), and
//! returns a [`WorkerReport`].
//!
//! Configuration ([`WorkerConfig`]) comes in layers: defaults, an optional
//! TOML file, environment variables (`RWP_*`), then command-line flags.

mod compute;
pub mod config;
mod error;
mod in_process;
mod models;
mod rpc;
mod slots;
mod worker;

pub use config::{ConfigFlags, WorkerConfig};
pub use error::WorkerError;
pub use worker::{bind_metrics, run, run_with_metrics, WorkerReport};
