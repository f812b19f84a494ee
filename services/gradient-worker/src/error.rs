//! The worker's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the worker. [`crate::run`] returns only
/// configuration, device and compute-thread errors: a failed task is logged
/// and the worker goes on with the next one.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A configuration value out of range, naming the field (and where the
    /// value came from when it was not a TOML file or a flag).
    #[error("invalid config field `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    /// The TOML config file cannot be read or parsed (an unknown key is named).
    #[error("config file {}: {message}", path.display())]
    ConfigFile { path: PathBuf, message: String },
    /// A variable's or flag's value that is not of its setting's type, or an
    /// `RWP_*` variable that names no setting (named).
    #[error(transparent)]
    ConfigLayer(rwp_config::LoadError),
    /// A credential file (CA, certificate, key) that cannot be used; the
    /// message names it.
    #[error("{0}")]
    Credentials(String),
    /// The compute device cannot be used.
    #[error("device: {0}")]
    Device(String),
    /// A gRPC call failed.
    #[error("{call} failed: {} ({:?})", status.message(), status.code())]
    Rpc { call: &'static str, status: tonic::Status },
    /// The server cannot be reached at all.
    #[error("cannot connect to {server}: {}", chain(source))]
    Connect {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A leased task that does not describe valid work.
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// The task's job spec cannot be run.
    #[error("job spec: {0}")]
    Spec(#[from] rwp_spec::SpecError),
    /// The task's dataset cannot be loaded.
    #[error(transparent)]
    Data(#[from] rwp_core::data::DataError),
    /// The weights snapshot cannot be decoded.
    #[error(transparent)]
    Wire(#[from] rwp_core::wire::WireError),
    /// The streamed weights do not form one whole file.
    #[error("weights of job {job_id} version {version}: {reason}")]
    Weights { job_id: String, version: u64, reason: String },
    /// A job's model file cannot be fetched or used.
    #[error("model file {sha256}: {reason}")]
    Model { sha256: String, reason: String },
    /// A model sandbox cannot start, or the job's code failed, ran past its
    /// time limit or was killed in it.
    #[error("model sandbox: {0}")]
    Sandbox(String),
    /// Computing the task failed (a libtorch error or an internal bug).
    #[error("compute: {0}")]
    Compute(String),
    /// The compute thread is gone (it cannot be restarted: a bug).
    #[error("the compute thread stopped")]
    ComputeThreadGone,
}

/// An error with its causes, `a: b: c` (tonic's transport errors say little
/// at the top).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        cause = c.source();
    }
    text
}

impl From<rwp_config::LoadError> for WorkerError {
    fn from(error: rwp_config::LoadError) -> Self {
        match error {
            rwp_config::LoadError::Read { path, source } => {
                WorkerError::ConfigFile { path, message: source.to_string() }
            }
            rwp_config::LoadError::File { path, message } => WorkerError::ConfigFile { path, message },
            other => WorkerError::ConfigLayer(other),
        }
    }
}

impl WorkerError {
    pub(crate) fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> WorkerError {
        move |status| WorkerError::Rpc { call, status }
    }

    /// The error as the server (and the job's owner) is told it: a dataset
    /// that cannot be loaded is named by file and kind of failure, without
    /// this worker's paths or anything read from the files.
    #[must_use]
    pub fn for_server(&self) -> String {
        match self {
            WorkerError::Data(e) => e.redacted(),
            other => other.to_string(),
        }
    }

    /// Whether the job's data storage cannot be reached: nothing is wrong
    /// with the task, which may work later.
    #[must_use]
    pub fn is_storage_unavailable(&self) -> bool {
        matches!(self, WorkerError::Data(rwp_core::data::DataError::Own(e)) if e.is_unavailable())
    }

    /// Whether the error means the connection to the server is gone (the
    /// server is down or restarting): the worker then reconnects and
    /// registers again.
    #[must_use]
    pub fn is_disconnect(&self) -> bool {
        match self {
            WorkerError::Rpc { status, .. } => crate::rpc::is_disconnect(status),
            WorkerError::Connect { .. } => true,
            _ => false,
        }
    }
}
