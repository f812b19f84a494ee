//! Server configuration in layers: built-in defaults, then an optional TOML
//! file, then environment variables, then command-line flags (the last two
//! merged by clap). Unknown keys in the file are rejected; every value is
//! validated and a bad one is named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
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
    /// libtorch intra-op threads for aggregation and evaluation (0: libtorch's default).
    pub torch_threads: i32,
    /// Size of the chunks weights and exports are streamed in.
    pub chunk_bytes: usize,
    /// Largest gRPC message accepted (one gradient chunk, say).
    pub max_message_bytes: usize,
    /// On SIGTERM, how long in-flight work may take before the server stops.
    pub drain_timeout_ms: u64,
    /// Address of the HTTP endpoint with `/metrics` (Prometheus) and `/healthz`; off when unset.
    #[serde(default)]
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
    /// datasets volume. An empty list allows only the built-in dataset.
    #[serde(default)]
    pub data_roots: Option<Vec<PathBuf>>,
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
        }
    }
}

/// One layer of overrides: every field optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_retry_ms: Option<u64>,
    pub lease_timeout_ms: Option<u64>,
    pub checkpoint_every: Option<u64>,
    pub eval_every_epochs: Option<u64>,
    pub torch_threads: Option<i32>,
    pub chunk_bytes: Option<usize>,
    pub max_message_bytes: Option<usize>,
    pub drain_timeout_ms: Option<u64>,
    pub metrics_listen: Option<SocketAddr>,
    pub request_timeout_ms: Option<u64>,
    pub max_concurrent_requests: Option<usize>,
    pub connection_first_request_timeout_ms: Option<u64>,
    pub max_connections_per_peer: Option<usize>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub health_listen: Option<SocketAddr>,
    pub tokens_file: Option<PathBuf>,
    pub max_active_jobs_per_token: Option<u32>,
    pub max_model_parameters: Option<u64>,
    pub max_model_file_bytes: Option<u64>,
    pub max_model_bytes_per_owner: Option<u64>,
    pub model_gc_interval_ms: Option<u64>,
    pub unreferenced_model_retention_ms: Option<u64>,
    pub requests_per_second: Option<f64>,
    pub request_burst: Option<u32>,
    pub sandbox_program: Option<PathBuf>,
    pub sandbox_memory_bytes: Option<u64>,
    pub sandbox_user: Option<String>,
    pub sandbox_require_landlock: Option<bool>,
    pub sandbox_timeout_ms: Option<u64>,
    pub task_timeout_initial_ms: Option<u64>,
    pub task_timeout_floor_ms: Option<u64>,
    pub data_roots: Option<Vec<PathBuf>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{field} = {value} is out of range: {rule}")]
    Invalid { field: &'static str, value: String, rule: &'static str },
    #[error("{field} is set but {missing} is not: {why}")]
    Incomplete { field: &'static str, missing: &'static str, why: &'static str },
}

impl ConfigLayer {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })
    }
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

    /// The directory holding one checkpoint folder per job.
    #[must_use]
    pub fn checkpoint_root(&self) -> PathBuf {
        self.checkpoint_dir.clone().unwrap_or_else(|| self.data_dir.join("jobs"))
    }

    /// Applies `layers` in order on top of the defaults, then validates.
    pub fn from_layers(layers: &[ConfigLayer]) -> Result<Self, ConfigError> {
        let mut c = ServerConfig::default();
        for l in layers {
            macro_rules! take {
                ($($f:ident),*) => { $( if let Some(v) = l.$f.clone() { c.$f = v; } )* };
            }
            take!(
                listen,
                data_dir,
                checkpoint_retry_ms,
                lease_timeout_ms,
                checkpoint_every,
                eval_every_epochs,
                torch_threads,
                chunk_bytes,
                max_message_bytes,
                drain_timeout_ms,
                request_timeout_ms,
                max_concurrent_requests,
                connection_first_request_timeout_ms,
                max_connections_per_peer,
                max_active_jobs_per_token,
                max_model_parameters,
                max_model_file_bytes,
                max_model_bytes_per_owner,
                model_gc_interval_ms,
                unreferenced_model_retention_ms,
                requests_per_second,
                request_burst,
                sandbox_memory_bytes,
                sandbox_user,
                sandbox_require_landlock,
                sandbox_timeout_ms,
                task_timeout_initial_ms,
                task_timeout_floor_ms
            );
            macro_rules! take_optional {
                ($($f:ident),*) => { $( if l.$f.is_some() { c.$f = l.$f.clone(); } )* };
            }
            take_optional!(
                metrics_listen,
                tls_cert,
                tls_key,
                tls_client_ca,
                health_listen,
                tokens_file,
                checkpoint_dir,
                sandbox_program,
                data_roots
            );
        }
        c.validate()?;
        Ok(c)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_win_and_unset_fields_keep_earlier_values() {
        let file: ConfigLayer = toml::from_str("lease_timeout_ms = 500\ncheckpoint_every = 7").unwrap();
        let flags = ConfigLayer { checkpoint_every: Some(3), ..ConfigLayer::default() };
        let c = ServerConfig::from_layers(&[file, flags]).unwrap();
        assert_eq!((c.lease_timeout_ms, c.checkpoint_every), (500, 3));
        assert_eq!(c.chunk_bytes, ServerConfig::default().chunk_bytes);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = toml::from_str::<ConfigLayer>("lease_timeout = 5").unwrap_err().to_string();
        assert!(err.contains("lease_timeout"), "{err}");
        let err = ServerConfig::from_layers(&[ConfigLayer { checkpoint_every: Some(0), ..Default::default() }])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("checkpoint_every = 0"), "{err}");
    }

    #[test]
    fn checkpoints_default_to_the_data_directory_and_may_move() {
        let c = ServerConfig::from_layers(&[ConfigLayer { data_dir: Some("d".into()), ..Default::default() }]).unwrap();
        assert_eq!(c.checkpoint_root(), PathBuf::from("d/jobs"));
        let file: ConfigLayer = toml::from_str("checkpoint_dir = \"/vol/ckpt\"\ncheckpoint_retry_ms = 250").unwrap();
        let c = ServerConfig::from_layers(&[file]).unwrap();
        assert_eq!((c.checkpoint_root(), c.checkpoint_retry_ms), (PathBuf::from("/vol/ckpt"), 250));
        let err = ServerConfig::from_layers(&[ConfigLayer { checkpoint_retry_ms: Some(5), ..Default::default() }])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("checkpoint_retry_ms = 5"), "{err}");
    }

    #[test]
    fn limits_out_of_range_are_named() {
        let cases = [
            (ConfigLayer { max_active_jobs_per_token: Some(0), ..Default::default() }, "max_active_jobs_per_token = 0"),
            (ConfigLayer { max_model_parameters: Some(0), ..Default::default() }, "max_model_parameters = 0"),
            (ConfigLayer { max_model_bytes_per_owner: Some(0), ..Default::default() }, "max_model_bytes_per_owner = 0"),
            (ConfigLayer { model_gc_interval_ms: Some(10), ..Default::default() }, "model_gc_interval_ms = 10"),
            (
                ConfigLayer { unreferenced_model_retention_ms: Some(999), ..Default::default() },
                "unreferenced_model_retention_ms = 999",
            ),
            (ConfigLayer { max_model_file_bytes: Some(0), ..Default::default() }, "max_model_file_bytes = 0"),
            (ConfigLayer { requests_per_second: Some(0.0), ..Default::default() }, "requests_per_second = 0"),
            (ConfigLayer { requests_per_second: Some(f64::NAN), ..Default::default() }, "requests_per_second = NaN"),
            (ConfigLayer { request_burst: Some(0), ..Default::default() }, "request_burst = 0"),
            (ConfigLayer { sandbox_user: Some("0:0".into()), ..Default::default() }, "sandbox_user = '0:0'"),
            (ConfigLayer { sandbox_memory_bytes: Some(1), ..Default::default() }, "sandbox_memory_bytes = 1"),
            (ConfigLayer { task_timeout_floor_ms: Some(0), ..Default::default() }, "task_timeout_floor_ms = 0"),
            (ConfigLayer { max_connections_per_peer: Some(0), ..Default::default() }, "max_connections_per_peer = 0"),
            (
                ConfigLayer { connection_first_request_timeout_ms: Some(50), ..Default::default() },
                "connection_first_request_timeout_ms = 50",
            ),
        ];
        for (layer, want) in cases {
            let err = ServerConfig::from_layers(&[layer]).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }

    #[test]
    fn data_roots_are_absolute_directories_and_unset_by_default() {
        assert_eq!(ServerConfig::default().data_roots, None);
        let file: ConfigLayer = toml::from_str("data_roots = [\"/datasets\", \"/mnt/data\"]").unwrap();
        let c = ServerConfig::from_layers(&[file]).unwrap();
        assert_eq!(c.data_roots, Some(vec![PathBuf::from("/datasets"), PathBuf::from("/mnt/data")]));
        let file: ConfigLayer = toml::from_str("data_roots = [\"datasets\"]").unwrap();
        let err = ServerConfig::from_layers(&[file]).unwrap_err().to_string();
        assert!(err.starts_with("data_roots = \"datasets\" is out of range"), "{err}");
    }

    #[test]
    fn tls_settings_must_come_in_working_sets() {
        let cert = || Some(PathBuf::from("tls.crt"));
        let key = || Some(PathBuf::from("tls.key"));
        let ca = || Some(PathBuf::from("ca.crt"));
        let cases = [
            (ConfigLayer { tls_cert: cert(), ..Default::default() }, "tls_cert is set but tls_key is not"),
            (ConfigLayer { tls_key: key(), ..Default::default() }, "tls_key is set but tls_cert is not"),
            (ConfigLayer { tls_client_ca: ca(), ..Default::default() }, "tls_client_ca is set but tls_cert is not"),
        ];
        for (layer, want) in cases {
            let err = ServerConfig::from_layers(&[layer]).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let file: ConfigLayer =
            toml::from_str("tls_cert = \"/etc/rwp/tls/tls.crt\"\ntls_key = \"/etc/rwp/tls/tls.key\"").unwrap();
        let flags = ConfigLayer { tls_client_ca: ca(), ..Default::default() };
        let c = ServerConfig::from_layers(&[file, flags]).unwrap();
        assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/rwp/tls/tls.crt")));
        assert_eq!(c.tls_client_ca, ca());
    }
}
