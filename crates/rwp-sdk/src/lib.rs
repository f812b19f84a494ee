//! Async Rust client of the RWP training service.
//!
//! Build a job spec from a method's reference hyper-parameters, submit it,
//! follow it, export its weights:
//!
//! ```no_run
//! use rwp_sdk::{Client, JobEvent, JobSpecBuilder, Method};
//! use tokio_stream::StreamExt;
//!
//! # async fn demo() -> Result<(), rwp_sdk::SdkError> {
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let spec = JobSpecBuilder::new(Method::MArwp).epochs(20).batch_size(128).build()?;
//! let job = client.submit("marwp-demo", &spec).await?;
//! let mut events = client.watch(&job.id, 0).await?;
//! while let Some(event) = events.next().await {
//!     match event? {
//!         JobEvent::Step(m) => println!("step {} loss {:.3}", m.step, m.loss),
//!         JobEvent::Evaluation(e) => println!("test accuracy {:.3}", e.test_accuracy),
//!         JobEvent::State(job) => println!("job is {}", job.state),
//!     }
//! }
//! client.export(&job.id, "marwp.safetensors".as_ref()).await?;
//! # Ok(()) }
//! ```
//!
//! Idempotent calls (`get`, `list`, `cancel`, `watch`, `export`) retry
//! transient failures with exponential backoff; so does `submit`, whose
//! attempts share one request id so that a job never starts twice;
//! `resume` and `delete` do not. Endpoints
//! are `http://` (plaintext) or `https://` (TLS, with the public roots or a
//! CA given in [`ClientConfig`], and a client certificate for servers that
//! require mutual TLS). The crate does not depend on libtorch.

mod builder;
mod client;
mod error;
mod job_file;
mod sweep_file;

pub use builder::JobSpecBuilder;
pub use client::{Client, ClientConfig, Export};
pub use error::SdkError;
pub use job_file::JobFile;
pub use rwp_credentials::{read_token_file, Pem, Token};
// What the server reports (Job, JobEvent, Sweep, Trial, StoredModel) are
// the domain types of rwp-spec, the server's own; rwp-proto converts them
// from the wire.
pub use rwp_spec::report::{Sweep, Trial};
pub use rwp_spec::sweep::{
    self, Distribution, EarlyStopping, ParamValue, Search, SearchMode, SearchParam, SweepSpec, SweepState,
};
pub use rwp_spec::{
    DatasetKind, Evaluation, Extension, GradientEncoding, Job, JobEvent, JobSpec, JobState, LogEntry, LogKind,
    LrSchedule, Method, ModelFile, ModelKind, NonFinitePolicy, SigmaSchedule, StepMetrics, StoredModel, SubmitOptions,
    WorkerInfo,
};
pub use sweep_file::SweepFile;
