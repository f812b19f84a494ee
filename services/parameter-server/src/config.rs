//! Server configuration: one struct, [`ServerConfig`], whose fields are the
//! settings. Its defaults, a TOML file (`--config`), the `RWP_*` environment
//! and the command-line flags are layered in that order by `rwp-config`,
//! which derives each setting's variable (`RWP_` and the key in capitals,
//! unless the field names another) and flag (`--key-with-dashes`) from the
//! struct, and prints it all with `rwp-server --print-config`. Unknown keys
//! are rejected; every value is validated and a bad one is named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rwp_config::{Env, Loaded};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on: `IP:PORT`, or `HOST:PORT` with a host name
    /// such as `localhost` (resolved at start, IPv4 preferred). Port 0 picks
    /// a free port, printed on stdout.
    #[schemars(example = &"[::]:50051")]
    #[serde(deserialize_with = "host_and_port")]
    pub listen: SocketAddr,
    /// Directory of the embedded database (and of the checkpoints unless
    /// `checkpoint_dir` is set).
    pub data_dir: PathBuf,
    /// Directory of the jobs' checkpoints (one folder per job); default
    /// `<data_dir>/jobs`. May sit on its own volume.
    #[serde(default)]
    pub checkpoint_dir: Option<PathBuf>,
    /// While a job's checkpoint cannot be written (full or read-only
    /// storage) the job is paused and the write retried this often.
    pub checkpoint_retry_ms: u64,
    /// A lease not renewed within this time is handed to another worker.
    pub lease_timeout_ms: u64,
    /// Save a checkpoint of each job every this many updates (and at the end).
    pub checkpoint_every: u64,
    /// Evaluate on the test split every this many epochs (and at the end; 0: end only).
    pub eval_every_epochs: u64,
    /// libtorch intra-op threads for evaluation and the adaptive factors (0: libtorch's default).
    pub torch_threads: i32,
    /// Threads of each job's aggregation and update (0: the CPUs this process
    /// may use: its container's CPU quota, its affinity). Results are the same
    /// bits whatever the number.
    pub engine_threads: usize,
    /// Where each job's aggregation and update run: `cpu`, or `cuda` /
    /// `cuda:N` on a server with a GPU (the weights, momentum and `F` then
    /// live in its memory and each gradient push is copied to it once).
    /// Results are the bits of the local trainer on the same kind of device.
    #[schemars(example = &"cuda")]
    pub engine_device: String,
    /// Size of the chunks weights and exports are streamed in.
    #[schemars(extend("x-env" = "RWP_STREAM_CHUNK_BYTES"))]
    pub chunk_bytes: usize,
    /// Largest gRPC message accepted (one gradient chunk, say).
    pub max_message_bytes: usize,
    /// On SIGTERM, how long in-flight work may take before the server stops.
    #[schemars(extend("x-env" = "RWP_SERVER_DRAIN_TIMEOUT_MS"))]
    pub drain_timeout_ms: u64,
    /// Address of the HTTP endpoint with `/metrics` (Prometheus) and `/healthz`; off when unset.
    #[serde(default)]
    #[schemars(example = &"0.0.0.0:9090")]
    pub metrics_listen: Option<SocketAddr>,
    /// Longest time a request's handler may take (long-polled leases wait
    /// at most 30 s; streams are not cut once they started).
    pub request_timeout_ms: u64,
    /// Requests handled at once; beyond it new requests are shed with UNAVAILABLE.
    pub max_concurrent_requests: usize,
    /// A connection to a gRPC port that has not delivered its first complete
    /// request (TLS handshake, HTTP/2 preface, headers) this long after it
    /// was accepted is closed; on the metrics port, each request's headers
    /// must arrive within it.
    pub connection_first_request_timeout_ms: u64,
    /// Connections one peer IP address may hold at once, on each port; one
    /// more is closed as soon as it is accepted. Behind a load balancer or
    /// an ingress every client shares its address: raise it there.
    pub max_connections_per_peer: usize,
    /// PEM certificate chain the gRPC port presents; with `tls_key`, the
    /// port speaks TLS only.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; when set, every client must present a
    /// certificate that chains to one of them (mutual TLS).
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// Address of a plaintext gRPC endpoint that serves only
    /// `grpc.health.v1.Health`, for probes that cannot speak TLS (the
    /// kubelet's); off when unset.
    #[serde(default)]
    #[schemars(example = &"0.0.0.0:50052")]
    pub health_listen: Option<SocketAddr>,
    /// TOML file of the bearer tokens callers must present (see
    /// [`crate::tokens`]); without one every caller may do everything.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Jobs one token may have running at once, unless its entry in the
    /// tokens file says otherwise (`max_active_jobs`).
    pub max_active_jobs_per_token: u32,
    /// Most parameters of a job's model; a larger one is refused at submit.
    pub max_model_parameters: u64,
    /// Largest TorchScript file `UploadModel` accepts, in bytes.
    pub max_model_file_bytes: u64,
    /// Bytes of model files one owner (token) may have stored; an upload
    /// that would go over is refused before a byte is stored. Re-uploading
    /// a file the owner has costs nothing. Not applied without a tokens file.
    pub max_model_bytes_per_owner: u64,
    /// How often stored model files are collected (and once at start).
    pub model_gc_interval_ms: u64,
    /// A model file no running or paused job (nor running sweep) names is
    /// deleted, with its owners' records, once this long has passed since
    /// its last upload (for files without a record: its modification).
    pub unreferenced_model_retention_ms: u64,
    /// A job that ended (succeeded, failed, cancelled, stopped early) is
    /// deleted with its metrics, checkpoints and TensorBoard run this long
    /// after it ended; 0 keeps every job. Sweep trials stay with their sweep.
    pub finished_job_retention_ms: u64,
    /// How long a submission of a job with its own data waits for a worker
    /// to inspect the data (the server never reads it) before it is refused.
    pub data_inspection_timeout_ms: u64,
    /// Job API requests one token may make per second, on average, unless
    /// its entry says otherwise; beyond, RESOURCE_EXHAUSTED.
    pub requests_per_second: f64,
    /// Job API requests one token may make at once after a quiet spell.
    pub request_burst: u32,
    /// The `rwp-sandbox` program that runs uploaded models' code (checks
    /// at upload and submit, evaluation); default: beside `rwp-server`.
    #[serde(default)]
    pub sandbox_program: Option<PathBuf>,
    /// Private memory one model sandbox may use, bytes.
    pub sandbox_memory_bytes: u64,
    /// `UID:GID` model sandboxes run as when the server runs as root.
    pub sandbox_user: String,
    /// Refuse to run uploaded models where the kernel lacks Landlock.
    pub sandbox_require_landlock: bool,
    /// How long loading, checking or evaluating an uploaded model may take
    /// in its sandbox before it is killed.
    pub sandbox_timeout_ms: u64,
    /// A task's time limit before any task of its job has finished.
    pub task_timeout_initial_ms: u64,
    /// The least time limit of a task; after the job's first results the
    /// limit is ten times its slowest task, but not less than this.
    pub task_timeout_floor_ms: u64,
    /// Directories a job's `data_dir` must lie under (compared after
    /// resolving `.` and `..` lexically; symlinks are not followed). Unset:
    /// any path, for development; production deployments set it to the
    /// datasets volume. An empty list allows only the built-in dataset. In
    /// a variable or flag: comma-separated.
    #[serde(default)]
    pub data_roots: Option<Vec<PathBuf>>,
    /// An MLflow tracking server, `http://host:port[/path]`, to log every
    /// job to: a run per job with its parameters, its training and
    /// evaluation metrics and how it ended, sent in the background (an
    /// unreachable tracker costs its records and a warning, never training
    /// time). Off when unset.
    #[serde(default)]
    #[schemars(example = &"http://mlflow:5000")]
    pub mlflow_tracking_uri: Option<String>,
    /// The MLflow experiment the jobs' runs go to (made when missing).
    pub mlflow_experiment: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50051".parse().expect("valid address"),
            data_dir: PathBuf::from("rwp-data"),
            checkpoint_dir: None,
            checkpoint_retry_ms: 5_000,
            lease_timeout_ms: 10_000,
            checkpoint_every: 50,
            eval_every_epochs: 1,
            torch_threads: 0,
            engine_threads: 0,
            engine_device: "cpu".to_owned(),
            chunk_bytes: 1 << 20,
            max_message_bytes: 8 << 20,
            drain_timeout_ms: 20_000,
            metrics_listen: None,
            request_timeout_ms: 60_000,
            max_concurrent_requests: 4096,
            connection_first_request_timeout_ms: 10_000,
            max_connections_per_peer: 64,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            health_listen: None,
            tokens_file: None,
            max_active_jobs_per_token: 8,
            max_model_parameters: 100_000_000,
            max_model_file_bytes: 256 << 20,
            max_model_bytes_per_owner: 4 << 30,
            model_gc_interval_ms: 3_600_000,
            unreferenced_model_retention_ms: 7 * 24 * 3_600_000,
            finished_job_retention_ms: 0,
            data_inspection_timeout_ms: 120_000,
            requests_per_second: 20.0,
            request_burst: 40,
            sandbox_program: None,
            sandbox_memory_bytes: 8 << 30,
            sandbox_user: rwp_sandbox::DEFAULT_USER.to_owned(),
            sandbox_require_landlock: true,
            sandbox_timeout_ms: 600_000,
            task_timeout_initial_ms: 600_000,
            task_timeout_floor_ms: 60_000,
            data_roots: None,
            mlflow_tracking_uri: None,
            mlflow_experiment: "rwp".to_owned(),
        }
    }
}

/// The command-line flags of the settings (`--lease-timeout-ms` ...), to
/// flatten into the binary's parser.
pub type ServerFlags = rwp_config::Flags<ServerConfig>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, a variable or a flag cannot be read as settings (an
    /// unknown key or `RWP_*` variable is named).
    #[error(transparent)]
    Load(#[from] rwp_config::LoadError),
    #[error("{field} = {value} is out of range: {rule}")]
    Invalid { field: &'static str, value: String, rule: &'static str },
    #[error("{field} is set but {missing} is not: {why}")]
    Incomplete { field: &'static str, missing: &'static str, why: &'static str },
}

impl ServerConfig {
    /// How this server starts model sandboxes (on the CPU, with its torch
    /// threads); `Err` says why it cannot (no `rwp-sandbox` program).
    pub fn sandbox(&self) -> Result<rwp_sandbox::SandboxConfig, rwp_sandbox::SandboxError> {
        Ok(rwp_sandbox::SandboxConfig {
            program: rwp_sandbox::SandboxConfig::locate_program(self.sandbox_program.as_deref())?,
            device: "cpu".to_owned(),
            threads: self.torch_threads,
            memory_bytes: self.sandbox_memory_bytes,
            cpu_seconds: 0,
            run_as: rwp_sandbox::parse_user(&self.sandbox_user).ok(),
            require_landlock: self.sandbox_require_landlock,
            load_timeout: std::time::Duration::from_millis(self.sandbox_timeout_ms),
        })
    }

    /// The device of `engine_device` (validated by [`Self::validate`]).
    #[must_use]
    pub fn resolved_engine_device(&self) -> tch::Device {
        rwp_core::trainer::parse_device(&self.engine_device).unwrap_or(tch::Device::Cpu)
    }

    /// The aggregation and update threads: `engine_threads`, or when 0 the
    /// CPUs this process may use.
    #[must_use]
    pub fn resolved_engine_threads(&self) -> usize {
        match self.engine_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }

    /// The directory holding one checkpoint folder per job.
    #[must_use]
    pub fn checkpoint_root(&self) -> PathBuf {
        self.checkpoint_dir.clone().unwrap_or_else(|| self.data_dir.join("jobs"))
    }

    /// Merges the layers, defaults < the TOML file `file` < `env` < `flags`,
    /// and validates the result.
    pub fn load(file: Option<&Path>, env: &Env<'_>, flags: &ServerFlags) -> Result<Loaded<Self>, ConfigError> {
        let loaded = rwp_config::load(file, env, flags)?;
        loaded.config.validate()?;
        Ok(loaded)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, value: String, rule| Err(ConfigError::Invalid { field, value, rule });
        if self.lease_timeout_ms < 100 {
            return bad("lease_timeout_ms", self.lease_timeout_ms.to_string(), "must be at least 100");
        }
        if self.checkpoint_retry_ms < 100 {
            return bad("checkpoint_retry_ms", self.checkpoint_retry_ms.to_string(), "must be at least 100");
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint_every", "0".into(), "must be at least 1");
        }
        let device_syntax = self.engine_device == "cpu"
            || self.engine_device == "cuda"
            || self.engine_device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
        if !device_syntax {
            return bad("engine_device", self.engine_device.clone(), "must be cpu, cuda or cuda:N");
        }
        if self.engine_device != "cpu" {
            crate::cuda::load_torch_cuda();
        }
        if rwp_core::trainer::parse_device(&self.engine_device).is_err() {
            return bad(
                "engine_device",
                self.engine_device.clone(),
                "names a CUDA device this server cannot see (no GPU, or fewer GPUs); use cpu",
            );
        }
        if self.torch_threads < 0 {
            return bad("torch_threads", self.torch_threads.to_string(), "must be >= 0");
        }
        if !(1024..=(64 << 20)).contains(&self.chunk_bytes) {
            return bad("chunk_bytes", self.chunk_bytes.to_string(), "must be between 1 KiB and 64 MiB");
        }
        if self.request_timeout_ms < 31_000 {
            return bad(
                "request_timeout_ms",
                self.request_timeout_ms.to_string(),
                "must exceed the 30 s lease long-poll",
            );
        }
        if self.max_concurrent_requests == 0 {
            return bad("max_concurrent_requests", "0".into(), "must be at least 1");
        }
        if !(100..=600_000).contains(&self.connection_first_request_timeout_ms) {
            return bad(
                "connection_first_request_timeout_ms",
                self.connection_first_request_timeout_ms.to_string(),
                "must be between 100 ms and 10 min",
            );
        }
        if self.max_connections_per_peer == 0 {
            return bad("max_connections_per_peer", "0".into(), "must be at least 1");
        }
        if self.max_message_bytes < self.chunk_bytes + 4096 {
            return bad("max_message_bytes", self.max_message_bytes.to_string(), "must exceed chunk_bytes by 4 KiB");
        }
        if self.max_active_jobs_per_token == 0 {
            return bad("max_active_jobs_per_token", "0".into(), "must be at least 1");
        }
        if self.max_model_parameters == 0 {
            return bad("max_model_parameters", "0".into(), "must be at least 1");
        }
        if self.max_model_file_bytes == 0 {
            return bad("max_model_file_bytes", "0".into(), "must be at least 1");
        }
        if self.max_model_bytes_per_owner == 0 {
            return bad("max_model_bytes_per_owner", "0".into(), "must be at least 1");
        }
        if self.model_gc_interval_ms < 100 {
            return bad("model_gc_interval_ms", self.model_gc_interval_ms.to_string(), "must be at least 100");
        }
        if self.unreferenced_model_retention_ms < 1000 {
            return bad(
                "unreferenced_model_retention_ms",
                self.unreferenced_model_retention_ms.to_string(),
                "must be at least 1000 (an upload needs time to be named by a job)",
            );
        }
        if (1..1000).contains(&self.finished_job_retention_ms) {
            return bad(
                "finished_job_retention_ms",
                self.finished_job_retention_ms.to_string(),
                "must be 0 (keep every job) or at least 1000",
            );
        }
        if self.data_inspection_timeout_ms < 100 {
            return bad(
                "data_inspection_timeout_ms",
                self.data_inspection_timeout_ms.to_string(),
                "must be at least 100",
            );
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return bad("requests_per_second", self.requests_per_second.to_string(), "must be a finite number > 0");
        }
        if self.request_burst == 0 {
            return bad("request_burst", "0".into(), "must be at least 1");
        }
        if self.sandbox_memory_bytes < (64 << 20) {
            return bad("sandbox_memory_bytes", self.sandbox_memory_bytes.to_string(), "must be at least 64 MiB");
        }
        if rwp_sandbox::parse_user(&self.sandbox_user).is_err() {
            return bad(
                "sandbox_user",
                format!("'{}'", self.sandbox_user),
                "must be UID:GID of a user other than root",
            );
        }
        for (field, value) in [
            ("sandbox_timeout_ms", self.sandbox_timeout_ms),
            ("task_timeout_initial_ms", self.task_timeout_initial_ms),
            ("task_timeout_floor_ms", self.task_timeout_floor_ms),
        ] {
            if !(100..=86_400_000).contains(&value) {
                return bad(field, value.to_string(), "must be between 100 ms and 24 h");
            }
        }
        if let Some(root) = self.data_roots.iter().flatten().find(|r| !r.is_absolute()) {
            return bad(
                "data_roots",
                format!("{:?}", root.display().to_string()),
                "every root must be an absolute path",
            );
        }
        if let Some(uri) = &self.mlflow_tracking_uri {
            if rwp_telemetry::mlflow::TrackingUri::parse(uri).is_err() {
                return bad(
                    "mlflow_tracking_uri",
                    format!("'{uri}'"),
                    "must be an http://host:port[/path] URI of an MLflow tracking server (https:// is not supported)",
                );
            }
        }
        if self.mlflow_experiment.trim().is_empty() {
            return bad("mlflow_experiment", "''".into(), "must name an experiment");
        }
        let incomplete = |field, missing, why| Err(ConfigError::Incomplete { field, missing, why });
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return incomplete("tls_cert", "tls_key", "TLS needs the certificate and its key"),
            (None, Some(_)) => return incomplete("tls_key", "tls_cert", "TLS needs the certificate and its key"),
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return incomplete("tls_client_ca", "tls_cert", "mutual TLS needs the server's own certificate and key");
        }
        Ok(())
    }
}

/// `IP:PORT`, or `HOST:PORT` resolved to the host's first IPv4 address
/// (its first address when it has none).
fn host_and_port<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    resolve_listen(&text).map_err(serde::de::Error::custom)
}

fn resolve_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    use std::net::ToSocketAddrs;
    let addresses: Vec<SocketAddr> =
        text.to_socket_addrs().map_err(|e| format!("not IP:PORT or HOST:PORT ({e})"))?.collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("the host of {text} has no address"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The configuration with `toml` as the config file (and no variables).
    fn from_file(toml: &str) -> Result<ServerConfig, ConfigError> {
        from_file_and_flags(toml, &[])
    }

    fn from_file_and_flags(toml: &str, flags: &[&str]) -> Result<ServerConfig, ConfigError> {
        let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let flags = ServerFlags::parse(flags).unwrap();
        ServerConfig::load(Some(file.path()), &Env::All(Vec::new()), &flags).map(|l| l.config)
    }

    #[test]
    fn later_layers_win_and_unset_fields_keep_earlier_values() {
        let c =
            from_file_and_flags("lease_timeout_ms = 500\ncheckpoint_every = 7", &["--checkpoint-every", "3"]).unwrap();
        assert_eq!((c.lease_timeout_ms, c.checkpoint_every), (500, 3));
        assert_eq!(c.chunk_bytes, ServerConfig::default().chunk_bytes);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = from_file("lease_timeout = 5").unwrap_err().to_string();
        assert!(err.contains("lease_timeout"), "{err}");
        let err = from_file("checkpoint_every = 0").unwrap_err().to_string();
        assert!(err.starts_with("checkpoint_every = 0"), "{err}");
    }

    #[test]
    fn checkpoints_default_to_the_data_directory_and_may_move() {
        let c = from_file("data_dir = \"d\"").unwrap();
        assert_eq!(c.checkpoint_root(), PathBuf::from("d/jobs"));
        let c = from_file("checkpoint_dir = \"/vol/ckpt\"\ncheckpoint_retry_ms = 250").unwrap();
        assert_eq!((c.checkpoint_root(), c.checkpoint_retry_ms), (PathBuf::from("/vol/ckpt"), 250));
        let err = from_file("checkpoint_retry_ms = 5").unwrap_err().to_string();
        assert!(err.starts_with("checkpoint_retry_ms = 5"), "{err}");
    }

    #[test]
    fn limits_out_of_range_are_named() {
        let cases = [
            ("max_active_jobs_per_token = 0", "max_active_jobs_per_token = 0"),
            ("max_model_parameters = 0", "max_model_parameters = 0"),
            ("max_model_bytes_per_owner = 0", "max_model_bytes_per_owner = 0"),
            ("model_gc_interval_ms = 10", "model_gc_interval_ms = 10"),
            ("unreferenced_model_retention_ms = 999", "unreferenced_model_retention_ms = 999"),
            ("finished_job_retention_ms = 5", "finished_job_retention_ms = 5"),
            ("max_model_file_bytes = 0", "max_model_file_bytes = 0"),
            ("requests_per_second = 0.0", "requests_per_second = 0"),
            ("requests_per_second = nan", "requests_per_second = NaN"),
            ("request_burst = 0", "request_burst = 0"),
            ("sandbox_user = \"0:0\"", "sandbox_user = '0:0'"),
            ("sandbox_memory_bytes = 1", "sandbox_memory_bytes = 1"),
            ("task_timeout_floor_ms = 0", "task_timeout_floor_ms = 0"),
            ("max_connections_per_peer = 0", "max_connections_per_peer = 0"),
            ("connection_first_request_timeout_ms = 50", "connection_first_request_timeout_ms = 50"),
            ("mlflow_tracking_uri = \"https://mlflow:5000\"", "mlflow_tracking_uri = 'https://mlflow:5000'"),
            ("mlflow_tracking_uri = \"mlflow:5000\"", "mlflow_tracking_uri = 'mlflow:5000'"),
            ("mlflow_experiment = \" \"", "mlflow_experiment = ''"),
        ];
        for (layer, want) in cases {
            let err = from_file(layer).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn listen_takes_a_host_name_or_an_address() {
        let c = from_file_and_flags("", &["--listen", "localhost:0"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse::<SocketAddr>().unwrap(), "localhost, IPv4 first");
        let c = from_file("listen = \"localhost:50051\"").unwrap();
        assert_eq!(c.listen.port(), 50051);
        let c = from_file_and_flags("", &["--listen", "[::1]:7"]).unwrap();
        assert_eq!(c.listen, "[::1]:7".parse::<SocketAddr>().unwrap());
        let err = from_file_and_flags("", &["--listen", "localhost"]).unwrap_err().to_string();
        assert!(err.starts_with("--listen='localhost' is not valid for listen"), "{err}");
    }

    #[test]
    fn the_engine_runs_on_the_cpu_unless_a_visible_gpu_is_named() {
        let c = from_file("").unwrap();
        assert_eq!((c.engine_device.as_str(), c.resolved_engine_device()), ("cpu", tch::Device::Cpu));
        let err = from_file("engine_device = \"gpu\"").unwrap_err().to_string();
        assert!(err.starts_with("engine_device = gpu ") && err.contains("cpu, cuda or cuda:N"), "{err}");
        let err = from_file("engine_device = \"auto\"").unwrap_err().to_string();
        assert!(err.contains("cpu, cuda or cuda:N"), "{err}");
        // A device index past the GPUs this machine has is refused, naming why.
        let beyond = format!("engine_device = \"cuda:{}\"", tch::Cuda::device_count());
        let err = from_file(&beyond).unwrap_err().to_string();
        assert!(err.contains("a CUDA device this server cannot see"), "{err}");
        if tch::Cuda::is_available() {
            let c = from_file("engine_device = \"cuda\"").unwrap();
            assert_eq!(c.resolved_engine_device(), tch::Device::Cuda(0));
        }
    }

    #[test]
    fn data_roots_are_absolute_directories_and_unset_by_default() {
        assert_eq!(ServerConfig::default().data_roots, None);
        let c = from_file("data_roots = [\"/datasets\", \"/mnt/data\"]").unwrap();
        assert_eq!(c.data_roots, Some(vec![PathBuf::from("/datasets"), PathBuf::from("/mnt/data")]));
        let err = from_file("data_roots = [\"datasets\"]").unwrap_err().to_string();
        assert!(err.starts_with("data_roots = \"datasets\" is out of range"), "{err}");
    }

    #[test]
    fn tls_settings_must_come_in_working_sets() {
        let ca = || Some(PathBuf::from("ca.crt"));
        let cases = [
            ("tls_cert = \"tls.crt\"", "tls_cert is set but tls_key is not"),
            ("tls_key = \"tls.key\"", "tls_key is set but tls_cert is not"),
            ("tls_client_ca = \"ca.crt\"", "tls_client_ca is set but tls_cert is not"),
        ];
        for (layer, want) in cases {
            let err = from_file(layer).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let c = from_file_and_flags(
            "tls_cert = \"/etc/rwp/tls/tls.crt\"\ntls_key = \"/etc/rwp/tls/tls.key\"",
            &["--tls-client-ca", "ca.crt"],
        )
        .unwrap();
        assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/rwp/tls/tls.crt")));
        assert_eq!(c.tls_client_ca, ca());
    }

    #[test]
    fn docs_distributed_md_lists_every_setting_and_its_variable() {
        rwp_config::check::assert_documented::<ServerConfig>(
            include_str!("../../../docs/distributed.md"),
            "Configuration",
        );
    }

    /// Generated from the struct (`rwp_config::check`): each key of the
    /// serialised default, set from a TOML file, from its variable and from
    /// its flag, arrives (and nothing else changes); a higher layer wins. A
    /// field added to `ServerConfig` is checked with the others, and fails here
    /// if a layer cannot carry it.
    #[test]
    fn every_setting_can_be_set_from_each_layer() {
        rwp_config::check::assert_every_key_settable::<ServerConfig>();
    }

    #[test]
    fn the_variables_and_flags_are_the_documented_ones() {
        let schema = rwp_config::Schema::of::<ServerConfig>();
        let key = |name: &str| schema.get(name).unwrap();
        assert_eq!(key("lease_timeout_ms").env, "RWP_LEASE_TIMEOUT_MS");
        assert_eq!(key("lease_timeout_ms").flag, "--lease-timeout-ms");
        assert_eq!(key("chunk_bytes").env, "RWP_STREAM_CHUNK_BYTES");
        assert_eq!(key("drain_timeout_ms").env, "RWP_SERVER_DRAIN_TIMEOUT_MS");
        assert_eq!(key("data_roots").flag, "--data-roots");
        assert_eq!(key("mlflow_tracking_uri").env, "RWP_MLFLOW_TRACKING_URI");
        assert_eq!(key("mlflow_tracking_uri").flag, "--mlflow-tracking-uri");
    }
}
