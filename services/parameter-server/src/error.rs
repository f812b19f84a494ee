//! The server's one error enum, and its one mapping to gRPC status codes.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid job spec: {0}")]
    InvalidSpec(String),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("invalid sweep: {0}")]
    InvalidSweep(String),
    #[error("sweep {0} not found")]
    SweepNotFound(String),
    #[error("job {job} is {state}, not running")]
    JobNotRunning { job: String, state: &'static str },
    #[error("invalid labels: {0}")]
    InvalidLabels(String),
    /// A job that cannot be continued; the reason says what would allow it.
    #[error("job {job} cannot be resumed: {reason}")]
    CannotResume { job: String, reason: String },
    #[error("job {job} cannot be deleted: {reason}")]
    CannotDelete { job: String, reason: String },
    /// A job's weights that another job cannot start from.
    #[error("cannot start from the weights of job {job}: {reason}")]
    InitFrom { job: String, reason: String },
    #[error("worker {0} is not registered (register again)")]
    UnknownWorker(String),
    #[error("lease {0} is unknown")]
    UnknownLease(String),
    #[error("{0}")]
    StaleTask(String),
    #[error("weights version {requested} of job {job} is not available (current version {current})")]
    StaleVersion { job: String, requested: u64, current: u64 },
    #[error("bad gradient push: {0}")]
    BadPush(String),
    #[error("non-finite gradient: {0}")]
    NonFinite(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A job's own data that no worker inspected in time.
    #[error("{0}")]
    DataNotInspected(String),
    /// No credentials, or ones the server does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// Known credentials whose role may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// A principal called the job API faster than its rate allows.
    #[error(
        "too many requests from '{principal}' (at most {per_second}/s, bursts of {burst}): retry in {} ms",
        retry_after.as_millis().max(1)
    )]
    RateLimited { principal: String, per_second: f64, burst: u32, retry_after: std::time::Duration },
    /// A principal already has as many running jobs as it may.
    #[error(
        "'{owner}' already has {limit} running jobs, as many as it may have at once: \
         wait for one to end or cancel one, then submit again"
    )]
    TooManyActiveJobs { owner: String, limit: u32 },
    /// A job whose model has more parameters than the server accepts.
    #[error(
        "model {model} has {parameters} parameters, more than this server accepts ({limit}, max_model_parameters)"
    )]
    ModelTooLarge { model: String, parameters: u64, limit: u64 },
    /// An uploaded model file that cannot be stored: the message says why.
    #[error("invalid model file: {0}")]
    InvalidModel(String),
    #[error("model file of {size} bytes is larger than this server accepts ({limit} bytes, max_model_file_bytes)")]
    ModelFileTooLarge { size: u64, limit: u64 },
    /// A model file that is not stored, or (for a user) not among its
    /// uploads, or not of the size named: one answer for all three.
    #[error("model file {0} is not stored on this server for this caller: upload it first (UploadModel)")]
    ModelNotFound(String),
    /// An upload that would take its owner's stored model files over its limit.
    #[error(
        "'{owner}' has {used} bytes of model files stored (or being uploaded); this upload of {size} bytes would \
         exceed its limit of {limit} bytes (max_model_bytes_per_owner): delete files it no longer needs \
         (rwp model delete) first"
    )]
    ModelQuotaExceeded { owner: String, used: u64, size: u64, limit: u64 },
    #[error("storage: {0}")]
    Storage(String),
    /// The server could not start: a port it cannot listen on, a service it
    /// cannot build. Reported at startup.
    #[error("cannot start: {0}")]
    Startup(String),
    /// The gRPC server stopped with an error while serving.
    #[error("transport: {0}")]
    Transport(String),
    #[error("training engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    /// The model sandbox could not run (not installed, broken), through no
    /// fault of the model.
    #[error("model sandbox: {0}")]
    Sandbox(String),
    /// A credential file (certificate, key, CA) that cannot be used; the
    /// message names it. Reported at startup.
    #[error("{0}")]
    Credentials(String),
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        let message = e.to_string();
        match e {
            ServerError::InvalidSpec(_)
            | ServerError::InvalidSweep(_)
            | ServerError::BadPush(_)
            | ServerError::NonFinite(_)
            | ServerError::ModelTooLarge { .. }
            | ServerError::InvalidLabels(_)
            | ServerError::InitFrom { .. }
            | ServerError::InvalidModel(_) => Status::invalid_argument(message),
            ServerError::ModelFileTooLarge { .. } => Status::out_of_range(message),
            ServerError::RateLimited { .. }
            | ServerError::TooManyActiveJobs { .. }
            | ServerError::ModelQuotaExceeded { .. } => Status::resource_exhausted(message),
            ServerError::JobNotFound(_)
            | ServerError::SweepNotFound(_)
            | ServerError::UnknownWorker(_)
            | ServerError::UnknownLease(_)
            | ServerError::ModelNotFound(_) => Status::not_found(message),
            ServerError::JobNotRunning { .. }
            | ServerError::CannotResume { .. }
            | ServerError::CannotDelete { .. }
            | ServerError::StaleTask(_)
            | ServerError::StaleVersion { .. } => Status::failed_precondition(message),
            ServerError::ShuttingDown | ServerError::DataNotInspected(_) => Status::unavailable(message),
            ServerError::Unauthenticated(_) => Status::unauthenticated(message),
            ServerError::PermissionDenied(_) => Status::permission_denied(message),
            ServerError::Storage(_)
            | ServerError::Engine(_)
            | ServerError::Credentials(_)
            | ServerError::Sandbox(_)
            | ServerError::Startup(_)
            | ServerError::Transport(_) => Status::internal(message),
        }
    }
}

impl From<rwp_scheduler::ScheduleError> for ServerError {
    /// The callers that can tell a job that ended from one never known map
    /// [`ScheduleError::NotScheduled`] themselves; here it is not found.
    ///
    /// [`ScheduleError::NotScheduled`]: rwp_scheduler::ScheduleError::NotScheduled
    fn from(e: rwp_scheduler::ScheduleError) -> Self {
        use rwp_scheduler::ScheduleError as E;
        match e {
            E::UnknownWorker(worker) => ServerError::UnknownWorker(worker),
            E::UnknownLease(lease) => ServerError::UnknownLease(lease),
            E::NotScheduled(job) => ServerError::JobNotFound(job),
            E::Stale(message) => ServerError::StaleTask(message),
            E::Mismatch(message) => ServerError::BadPush(message),
            E::StaleVersion { job, requested, current } => ServerError::StaleVersion { job, requested, current },
            E::ShuttingDown => ServerError::ShuttingDown,
        }
    }
}

impl From<rwp_sandbox::SandboxError> for ServerError {
    /// A model that fails in its sandbox (refused, too slow, out of memory)
    /// is the model's fault; a sandbox that cannot run is the server's.
    fn from(e: rwp_sandbox::SandboxError) -> Self {
        if e.is_server_fault() {
            ServerError::Sandbox(e.to_string())
        } else {
            ServerError::InvalidModel(e.to_string())
        }
    }
}

impl From<redb::Error> for ServerError {
    fn from(e: redb::Error) -> Self {
        ServerError::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => { $( impl From<$t> for ServerError { fn from(e: $t) -> Self { ServerError::Storage(e.to_string()) } } )* };
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);
