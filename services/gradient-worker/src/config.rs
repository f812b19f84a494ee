//! The worker's configuration: one struct, [`WorkerConfig`], whose fields are
//! the settings, in layers: defaults < TOML file (`--config`) < environment
//! (`RWP_*`) < command-line flags. `rwp-config` merges them, the same way as
//! the server's, and derives each setting's variable (`RWP_` and the key in
//! capitals, unless the field names another) and flag (`--key-with-dashes`)
//! from the struct; `rwp-worker --print-config` prints it all.
//!
//! ```toml
//! server = "http://rwp-parameter-server:50051"
//! device = "cuda:0"
//! threads = 4
//! chunk_bytes = 1048576
//! # TLS (an https:// server): the CA to trust (else the public roots), a
//! # certificate and key for mutual TLS, the name the server's certificate
//! # carries when it is not the URL's host.
//! tls_ca = "/etc/rwp/tls/ca.crt"
//! tls_cert = "/etc/rwp/tls/tls.crt"
//! tls_key = "/etc/rwp/tls/tls.key"
//! # A server with a tokens file: the worker's token (role worker), best
//! # from a file (a mounted Secret) or RWP_TOKEN rather than this file.
//! token_file = "/etc/rwp/token/token"
//! ```

use std::path::{Path, PathBuf};

use rwp_config::{Env, Loaded};
use rwp_credentials::Token;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::WorkerError;

/// The first reconnection delay; it doubles up to `max_backoff_ms`.
pub const INITIAL_BACKOFF_MS: u64 = 100;
/// The largest push chunk accepted (gRPC messages are sized from it).
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Everything the worker needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// URL of the parameter server's gRPC endpoint: `http://host:port`, or
    /// `https://host:port` for TLS. An unreachable server is retried with
    /// backoff (up to `max_backoff_ms`) for as long as the worker runs.
    pub server: String,
    /// Name the worker registers under (shown in the server's logs); default
    /// `hostname-pid`.
    #[schemars(extend("x-env" = "RWP_WORKER_NAME"))]
    pub name: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
    pub device: String,
    /// libtorch intra-op threads; 0: as many as the CPUs this process may
    /// use (its container's CPU quota, its CPU affinity), not the machine's
    /// cores, which libtorch would take.
    pub threads: usize,
    /// How long the server may hold a `LeaseTask` call waiting for work (a
    /// server without the `Tasks` stream).
    pub lease_wait_ms: u32,
    /// Largest data chunk of a gradient push.
    pub chunk_bytes: usize,
    /// Longest delay between two attempts to reach the server.
    pub max_backoff_ms: u64,
    /// On shutdown, how long the task in flight may take to finish before its
    /// lease is given back instead.
    pub drain_timeout_ms: u64,
    /// Address of the HTTP endpoint with `/metrics` and `/healthz`; off when unset.
    #[schemars(example = &"0.0.0.0:9091")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Time a client of the metrics endpoint has to send a request's
    /// headers; a connection that does not is closed.
    pub metrics_header_timeout_ms: u64,
    /// Connections one peer IP address may hold to the metrics endpoint at
    /// once; one more is closed as soon as it is accepted.
    pub max_connections_per_peer: usize,
    /// PEM CA certificates to trust for an `https://` server (the public web
    /// roots when unset).
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate to present to the server (mutual TLS), with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Name the server's certificate is checked against, when it is not the
    /// host of `server`.
    pub tls_domain: Option<String>,
    /// Bearer token (role worker) for a server with a tokens file; prefer
    /// `token_file` or the variable to a flag.
    #[schemars(with = "Option<String>", extend("x-secret" = true))]
    pub token: Option<Token>,
    /// File holding the bearer token (a mounted Secret), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Where TorchScript model files fetched from the server are kept, by
    /// SHA-256 (any worker may delete it; files are fetched again); default
    /// `$TMPDIR/rwp-model-cache`.
    pub model_cache_dir: PathBuf,
    /// Where objects of jobs' own data read from object storage are cached
    /// (shards, images), the least recently used going first; default
    /// `$TMPDIR/rwp-data-cache`.
    pub data_cache_dir: PathBuf,
    /// The most bytes `data_cache_dir` holds (0: no cache; objects are
    /// then read by ranges).
    pub data_cache_bytes: u64,
    /// The `rwp-sandbox` program that runs TorchScript jobs' code; default:
    /// beside `rwp-worker`.
    pub sandbox_program: Option<PathBuf>,
    /// Private memory one model sandbox may use, bytes.
    pub sandbox_memory_bytes: u64,
    /// `UID:GID` model sandboxes run as when the worker runs as root.
    pub sandbox_user: String,
    /// Refuse to run TorchScript jobs where the kernel lacks Landlock.
    pub sandbox_require_landlock: bool,
    /// How long loading a job's model and data into its sandbox may take.
    pub sandbox_load_timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            server: "http://127.0.0.1:50051".to_owned(),
            name: default_name(),
            device: "auto".to_owned(),
            threads: 0,
            lease_wait_ms: 2000,
            chunk_bytes: 1 << 20,
            max_backoff_ms: 5000,
            drain_timeout_ms: 30_000,
            metrics_listen: None,
            metrics_header_timeout_ms: 10_000,
            max_connections_per_peer: 64,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_domain: None,
            token: None,
            token_file: None,
            model_cache_dir: std::env::temp_dir().join("rwp-model-cache"),
            data_cache_dir: std::env::temp_dir().join("rwp-data-cache"),
            data_cache_bytes: rwp_data::cache::DEFAULT_CACHE_BYTES,
            sandbox_program: None,
            sandbox_memory_bytes: 8 << 30,
            sandbox_user: rwp_sandbox::DEFAULT_USER.to_owned(),
            sandbox_require_landlock: true,
            sandbox_load_timeout_ms: 600_000,
        }
    }
}

/// `hostname-pid`: unique per process, and tells a pod's logs apart.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The command-line flags of the settings (`--server`, `--threads` ...), to
/// flatten into the binary's parser; a flag not given keeps the value of the
/// lower layers.
pub type ConfigFlags = rwp_config::Flags<WorkerConfig>;

impl WorkerConfig {
    /// Layers defaults < `file` < `env` < `flags` and validates the result.
    /// `env` looks a variable up (`|k| std::env::var(k).ok()` for the process
    /// environment); empty values count as unset.
    pub fn resolve(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &ConfigFlags,
    ) -> Result<Self, WorkerError> {
        Self::load(file, &Env::Lookup(env), flags).map(|loaded| loaded.config)
    }

    /// Layers defaults < `file` < `env` < `flags` and validates the result,
    /// keeping where each value came from (for `--print-config`). With
    /// [`Env::All`], an `RWP_*` variable that is no setting of either service
    /// nor read by another program of the project is an error.
    pub fn load(file: Option<&Path>, env: &Env<'_>, flags: &ConfigFlags) -> Result<Loaded<Self>, WorkerError> {
        let loaded = rwp_config::load(file, env, flags)?;
        loaded.config.validate()?;
        Ok(loaded)
    }

    /// The libtorch threads this worker computes with, and where the number
    /// comes from: `threads` when set, else the CPUs this process may use
    /// (`std::thread::available_parallelism`: the cgroup CPU quota of its
    /// container, rounded up, and its affinity mask, at most the cores).
    #[must_use]
    pub fn compute_threads(&self) -> (usize, &'static str) {
        if self.threads > 0 {
            return (self.threads, "the threads setting");
        }
        let usable = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        (usable, "the CPUs this process may use (container CPU quota, affinity)")
    }

    /// How this worker starts model sandboxes on `device` with `threads`
    /// libtorch threads; `Err` says why it cannot (no `rwp-sandbox`).
    pub fn sandbox(
        &self,
        device: &str,
        threads: usize,
    ) -> Result<rwp_sandbox::SandboxConfig, rwp_sandbox::SandboxError> {
        Ok(rwp_sandbox::SandboxConfig {
            program: rwp_sandbox::SandboxConfig::locate_program(self.sandbox_program.as_deref())?,
            device: device.to_owned(),
            threads: i32::try_from(threads).unwrap_or(0),
            memory_bytes: self.sandbox_memory_bytes,
            cpu_seconds: 0,
            run_as: rwp_sandbox::parse_user(&self.sandbox_user).ok(),
            require_landlock: self.sandbox_require_landlock,
            load_timeout: std::time::Duration::from_millis(self.sandbox_load_timeout_ms),
        })
    }

    /// [`WorkerConfig::load`] with the process environment.
    pub fn from_process(file: Option<&Path>, flags: &ConfigFlags) -> Result<Self, WorkerError> {
        Self::load(file, &Env::process(), flags).map(|loaded| loaded.config)
    }

    /// Checks every field, naming the first one out of range. The device is
    /// checked for syntax only: whether it exists is known when the worker
    /// starts.
    pub fn validate(&self) -> Result<(), WorkerError> {
        let bad = |field: &'static str, reason: String| Err(WorkerError::Config { field, reason });
        if !(self.server.starts_with("http://") || self.server.starts_with("https://")) {
            return bad("server", format!("'{}' must be a URL like http://host:port", self.server));
        }
        if let Err(e) = tonic::transport::Endpoint::from_shared(self.server.clone()) {
            return bad("server", format!("'{}' is not a valid URL: {e}", self.server));
        }
        if self.name.trim().is_empty() {
            return bad("name", "must not be empty".to_owned());
        }
        if self.data_cache_dir.as_os_str().is_empty() {
            return bad("data_cache_dir", "must not be empty".to_owned());
        }
        if self.model_cache_dir.as_os_str().is_empty() {
            return bad("model_cache_dir", "must not be empty".to_owned());
        }
        let device_ok = matches!(self.device.as_str(), "cpu" | "cuda" | "auto")
            || self.device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
        if !device_ok {
            return bad("device", format!("unknown device '{}' (expected cpu, cuda, cuda:N or auto)", self.device));
        }
        if self.threads > 4096 {
            return bad("threads", format!("{} is out of range: must be at most 4096", self.threads));
        }
        if self.lease_wait_ms == 0 || self.lease_wait_ms > 600_000 {
            return bad("lease_wait_ms", format!("{} is out of range: must be in 1..=600000", self.lease_wait_ms));
        }
        if self.chunk_bytes == 0 || self.chunk_bytes > MAX_CHUNK_BYTES {
            return bad(
                "chunk_bytes",
                format!("{} is out of range: must be in 1..={MAX_CHUNK_BYTES}", self.chunk_bytes),
            );
        }
        let tls = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_domain.is_some();
        if tls && !self.server.starts_with("https://") {
            return bad("server", format!("'{}' must be an https:// URL when a tls_* setting is given", self.server));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return bad("tls_key", "must be set with tls_cert (mutual TLS needs both)".to_owned()),
            (None, Some(_)) => return bad("tls_cert", "must be set with tls_key (mutual TLS needs both)".to_owned()),
            _ => {}
        }
        if self.token.is_some() && self.token_file.is_some() {
            return bad("token_file", "is set as well as token: give the token once".to_owned());
        }
        if self.sandbox_memory_bytes < (64 << 20) {
            return bad(
                "sandbox_memory_bytes",
                format!("{} is out of range: must be at least 64 MiB", self.sandbox_memory_bytes),
            );
        }
        if let Err(reason) = rwp_sandbox::parse_user(&self.sandbox_user) {
            return bad("sandbox_user", reason);
        }
        if !(100..=86_400_000).contains(&self.sandbox_load_timeout_ms) {
            return bad(
                "sandbox_load_timeout_ms",
                format!("{} is out of range: must be between 100 ms and 24 h", self.sandbox_load_timeout_ms),
            );
        }
        if !(100..=600_000).contains(&self.metrics_header_timeout_ms) {
            return bad(
                "metrics_header_timeout_ms",
                format!("{} is out of range: must be between 100 ms and 10 min", self.metrics_header_timeout_ms),
            );
        }
        if self.max_connections_per_peer == 0 {
            return bad("max_connections_per_peer", "0 is out of range: must be at least 1".to_owned());
        }
        if self.max_backoff_ms < INITIAL_BACKOFF_MS {
            return bad(
                "max_backoff_ms",
                format!("{} is out of range: must be at least {INITIAL_BACKOFF_MS}", self.max_backoff_ms),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = WorkerConfig::default();
        c.validate().unwrap();
        assert!(c.name.ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn out_of_range_fields_are_named() {
        type Spoil = fn(&mut WorkerConfig);
        let cases: [(&str, Spoil); 12] = [
            ("metrics_header_timeout_ms", |c| c.metrics_header_timeout_ms = 0),
            ("max_connections_per_peer", |c| c.max_connections_per_peer = 0),
            ("sandbox_user", |c| c.sandbox_user = "0:0".to_owned()),
            ("sandbox_memory_bytes", |c| c.sandbox_memory_bytes = 1024),
            ("chunk_bytes", |c| c.chunk_bytes = 0),
            ("server", |c| c.server = "localhost:1".to_owned()),
            ("device", |c| c.device = "gpu".to_owned()),
            ("max_backoff_ms", |c| c.max_backoff_ms = 10),
            ("lease_wait_ms", |c| c.lease_wait_ms = 0),
            ("server", |c| c.tls_ca = Some("ca.crt".into())),
            ("tls_key", |c| (c.server, c.tls_cert) = ("https://ps:1".to_owned(), Some("tls.crt".into()))),
            ("tls_cert", |c| (c.server, c.tls_key) = ("https://ps:1".to_owned(), Some("tls.key".into()))),
        ];
        for (field, spoil) in cases {
            let mut c = WorkerConfig::default();
            spoil(&mut c);
            let err = c.validate().unwrap_err();
            assert!(matches!(err, WorkerError::Config { field: f, .. } if f == field), "{field}: {err}");
        }
    }

    #[test]
    fn the_token_comes_from_one_place_and_never_shows_in_debug() {
        let env = |k: &str| (k == "RWP_TOKEN").then(|| "rwp_s3cret".to_owned());
        let c = WorkerConfig::resolve(None, &env, &ConfigFlags::default()).unwrap();
        assert_eq!(c.token.as_ref().map(Token::expose), Some("rwp_s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let flags = ConfigFlags::parse(&["--token-file", "/etc/rwp/token/token"]).unwrap();
        let err = WorkerConfig::resolve(None, &env, &flags).unwrap_err();
        assert!(matches!(err, WorkerError::Config { field: "token_file", .. }), "{err}");
    }

    #[test]
    fn a_bad_environment_value_names_variable_and_field() {
        let env = |k: &str| (k == "RWP_CHUNK_BYTES").then(|| "lots".to_owned());
        let err = WorkerConfig::resolve(None, &env, &ConfigFlags::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("chunk_bytes") && text.contains("RWP_CHUNK_BYTES"), "{text}");
    }

    #[test]
    fn the_server_setting_is_documented_as_it_behaves() {
        let docs = include_str!("../../../docs/distributed.md");
        let row = docs.lines().find(|l| l.starts_with("| `server` | `--server` |")).expect("a row for server");
        let default = WorkerConfig::default().server;
        assert!(row.contains(&format!("`{default}`")), "the documented default is the real one ({default}): {row}");
        assert!(!row.contains("required"), "it has a default: {row}");
        for refused in ["rwp-parameter-server:50051", "grpc://ps:50051"] {
            let config = WorkerConfig { server: refused.to_owned(), ..WorkerConfig::default() };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("must be a URL like http://host:port"), "{err}");
        }
        assert!(row.contains("http://host:port") && row.contains("https://host:port"), "{row}");
    }

    #[test]
    fn docs_distributed_md_lists_every_setting_and_its_variable() {
        rwp_config::check::assert_documented::<WorkerConfig>(
            include_str!("../../../docs/distributed.md"),
            "Configuration",
        );
    }

    /// Generated from the struct (`rwp_config::check`): each key of the
    /// serialised default, set from a TOML file, from its variable and from
    /// its flag, arrives (and nothing else changes); a higher layer wins. A
    /// field added to `WorkerConfig` is checked with the others, and fails here
    /// if a layer cannot carry it.
    #[test]
    fn every_setting_can_be_set_from_each_layer() {
        rwp_config::check::assert_every_key_settable::<WorkerConfig>();
    }

    #[test]
    fn the_variables_are_the_documented_ones_and_the_token_is_redacted() {
        let schema = rwp_config::Schema::of::<WorkerConfig>();
        let key = |name: &str| schema.get(name).unwrap();
        assert_eq!(key("name").env, "RWP_WORKER_NAME");
        assert_eq!(key("chunk_bytes").env, "RWP_CHUNK_BYTES");
        assert_eq!(key("sandbox_load_timeout_ms").flag, "--sandbox-load-timeout-ms");
        assert!(key("token").secret);
        let flags = ConfigFlags::parse(&["--token", "rwp_s3cret"]).unwrap();
        let loaded = WorkerConfig::load(None, &Env::All(Vec::new()), &flags).unwrap();
        assert_eq!(loaded.config.token.as_ref().map(Token::expose), Some("rwp_s3cret"));
        let printed = rwp_config::print_config(&loaded, &clap::Command::new("rwp-worker")).to_string();
        assert!(!printed.contains("s3cret") && printed.contains("<redacted>"), "{printed}");
    }

    #[test]
    fn an_unknown_rwp_variable_is_refused_but_other_programs_are_left_alone() {
        let env = |vars: &[(&str, &str)]| Env::All(vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
        let err = WorkerConfig::load(None, &env(&[("RWP_CHUNKBYTES", "4096")]), &ConfigFlags::default()).unwrap_err();
        assert!(err.to_string().contains("did you mean RWP_CHUNK_BYTES?"), "{err}");
        let others = [("RWP_LISTEN", "0.0.0.0:1"), ("RWP_BIN_DIR", "target/debug"), ("RWP_LOG_FORMAT", "json")];
        WorkerConfig::load(None, &env(&others), &ConfigFlags::default()).unwrap();
    }
}
