//! The worker's configuration, in layers: defaults < TOML file (`--config`) <
//! environment (`RWP_*`) < command-line flags.
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
use std::str::FromStr;

use rwp_credentials::Token;
use serde::{Deserialize, Serialize};

use crate::WorkerError;

/// Environment variable of [`WorkerConfig::server`].
pub const ENV_SERVER: &str = "RWP_SERVER";
/// Environment variable of [`WorkerConfig::name`].
pub const ENV_NAME: &str = "RWP_WORKER_NAME";
/// Environment variable of [`WorkerConfig::device`].
pub const ENV_DEVICE: &str = "RWP_DEVICE";
/// Environment variable of [`WorkerConfig::threads`].
pub const ENV_THREADS: &str = "RWP_THREADS";
/// Environment variable of [`WorkerConfig::lease_wait_ms`].
pub const ENV_LEASE_WAIT_MS: &str = "RWP_LEASE_WAIT_MS";
/// Environment variable of [`WorkerConfig::chunk_bytes`].
pub const ENV_CHUNK_BYTES: &str = "RWP_CHUNK_BYTES";
/// Environment variable of [`WorkerConfig::max_backoff_ms`].
pub const ENV_MAX_BACKOFF_MS: &str = "RWP_MAX_BACKOFF_MS";
/// Environment variable of [`WorkerConfig::drain_timeout_ms`].
pub const ENV_DRAIN_TIMEOUT_MS: &str = "RWP_DRAIN_TIMEOUT_MS";
/// Environment variable of [`WorkerConfig::metrics_listen`].
pub const ENV_METRICS_LISTEN: &str = "RWP_METRICS_LISTEN";
/// Environment variable of [`WorkerConfig::metrics_header_timeout_ms`].
pub const ENV_METRICS_HEADER_TIMEOUT_MS: &str = "RWP_METRICS_HEADER_TIMEOUT_MS";
/// Environment variable of [`WorkerConfig::max_connections_per_peer`].
pub const ENV_MAX_CONNECTIONS_PER_PEER: &str = "RWP_MAX_CONNECTIONS_PER_PEER";
/// Environment variable of [`WorkerConfig::tls_ca`].
pub const ENV_TLS_CA: &str = "RWP_TLS_CA";
/// Environment variable of [`WorkerConfig::tls_cert`].
pub const ENV_TLS_CERT: &str = "RWP_TLS_CERT";
/// Environment variable of [`WorkerConfig::tls_key`].
pub const ENV_TLS_KEY: &str = "RWP_TLS_KEY";
/// Environment variable of [`WorkerConfig::tls_domain`].
pub const ENV_TLS_DOMAIN: &str = "RWP_TLS_DOMAIN";
/// Environment variable of [`WorkerConfig::token`].
pub const ENV_TOKEN: &str = "RWP_TOKEN";
/// Environment variable of [`WorkerConfig::token_file`].
pub const ENV_TOKEN_FILE: &str = "RWP_TOKEN_FILE";
/// Environment variable of [`WorkerConfig::model_cache_dir`].
pub const ENV_MODEL_CACHE_DIR: &str = "RWP_MODEL_CACHE_DIR";
/// Environment variable of [`WorkerConfig::sandbox_program`].
pub const ENV_SANDBOX_PROGRAM: &str = "RWP_SANDBOX_PROGRAM";
/// Environment variable of [`WorkerConfig::sandbox_memory_bytes`].
pub const ENV_SANDBOX_MEMORY_BYTES: &str = "RWP_SANDBOX_MEMORY_BYTES";
/// Environment variable of [`WorkerConfig::sandbox_user`].
pub const ENV_SANDBOX_USER: &str = "RWP_SANDBOX_USER";
/// Environment variable of [`WorkerConfig::sandbox_require_landlock`].
pub const ENV_SANDBOX_REQUIRE_LANDLOCK: &str = "RWP_SANDBOX_REQUIRE_LANDLOCK";
/// Environment variable of [`WorkerConfig::sandbox_load_timeout_ms`].
pub const ENV_SANDBOX_LOAD_TIMEOUT_MS: &str = "RWP_SANDBOX_LOAD_TIMEOUT_MS";

/// The first reconnection delay; it doubles up to `max_backoff_ms`.
pub const INITIAL_BACKOFF_MS: u64 = 100;
/// The largest push chunk accepted (gRPC messages are sized from it).
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Everything the worker needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// URL of the parameter server's gRPC endpoint.
    pub server: String,
    /// Name the worker registers under (shown in the server's logs).
    pub name: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
    pub device: String,
    /// libtorch intra-op threads; 0 keeps libtorch's default.
    pub threads: usize,
    /// How long the server may hold a `LeaseTask` call waiting for work.
    pub lease_wait_ms: u32,
    /// Largest data chunk of a gradient push.
    pub chunk_bytes: usize,
    /// Longest delay between two attempts to reach the server.
    pub max_backoff_ms: u64,
    /// On shutdown, how long the task in flight may take to finish before its
    /// lease is given back instead.
    pub drain_timeout_ms: u64,
    /// Address of the HTTP endpoint with `/metrics` and `/healthz`; off when unset.
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
    /// Bearer token (role worker) for a server with a tokens file.
    pub token: Option<Token>,
    /// File holding the bearer token (a mounted Secret), instead of `token`.
    pub token_file: Option<PathBuf>,
    /// Where TorchScript model files fetched from the server are kept, by
    /// SHA-256 (any worker may delete it; files are fetched again).
    pub model_cache_dir: PathBuf,
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

/// The command-line flags that override configuration values; `None` keeps
/// the value of the lower layers.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ConfigFlags {
    /// Parameter server URL, e.g. http://127.0.0.1:50051 [env: RWP_SERVER]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Name to register under [env: RWP_WORKER_NAME] [default: hostname-pid]
    #[arg(long)]
    pub name: Option<String>,
    /// cpu, cuda, cuda:N or auto [env: RWP_DEVICE] [default: auto]
    #[arg(long)]
    pub device: Option<String>,
    /// libtorch intra-op threads, 0 = libtorch's default [env: RWP_THREADS]
    #[arg(long)]
    pub threads: Option<usize>,
    /// How long one LeaseTask call may wait for work [env: RWP_LEASE_WAIT_MS] [default: 2000]
    #[arg(long, value_name = "MS")]
    pub lease_wait_ms: Option<u32>,
    /// Largest data chunk of a gradient push [env: RWP_CHUNK_BYTES] [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub chunk_bytes: Option<usize>,
    /// Longest delay between attempts to reach the server [env: RWP_MAX_BACKOFF_MS] [default: 5000]
    #[arg(long, value_name = "MS")]
    pub max_backoff_ms: Option<u64>,
    /// Time the task in flight gets to finish on shutdown [env: RWP_DRAIN_TIMEOUT_MS] [default: 30000]
    #[arg(long, value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// HTTP address for /metrics and /healthz; off when unset [env: RWP_METRICS_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Time a metrics client has to send a request's headers [env: RWP_METRICS_HEADER_TIMEOUT_MS] [default: 10000]
    #[arg(long, value_name = "MS")]
    pub metrics_header_timeout_ms: Option<u64>,
    /// Connections one peer IP address may hold to the metrics endpoint [env: RWP_MAX_CONNECTIONS_PER_PEER] [default: 64]
    #[arg(long, value_name = "N")]
    pub max_connections_per_peer: Option<usize>,
    /// PEM CA certificates to trust for an https:// server [env: RWP_TLS_CA] [default: the public roots]
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate to present to the server (mutual TLS), with --tls-key [env: RWP_TLS_CERT]
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [env: RWP_TLS_KEY]
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Name to check the server's certificate against, when not the host of --server [env: RWP_TLS_DOMAIN]
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
    /// Bearer token (role worker) for a server with a tokens file; prefer RWP_TOKEN or --token-file [env: RWP_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<Token>,
    /// File holding the bearer token, e.g. a mounted Secret [env: RWP_TOKEN_FILE]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Directory for TorchScript model files fetched from the server [env: RWP_MODEL_CACHE_DIR] [default: $TMPDIR/rwp-model-cache]
    #[arg(long, value_name = "DIR")]
    pub model_cache_dir: Option<PathBuf>,
    /// The rwp-sandbox program that runs TorchScript models [env: RWP_SANDBOX_PROGRAM] [default: beside rwp-worker]
    #[arg(long, value_name = "PATH")]
    pub sandbox_program: Option<PathBuf>,
    /// Private memory one model sandbox may use [env: RWP_SANDBOX_MEMORY_BYTES] [default: 8 GiB]
    #[arg(long, value_name = "BYTES")]
    pub sandbox_memory_bytes: Option<u64>,
    /// UID:GID model sandboxes run as when the worker runs as root [env: RWP_SANDBOX_USER] [default: 65534:65534]
    #[arg(long, value_name = "UID:GID")]
    pub sandbox_user: Option<String>,
    /// Refuse to run TorchScript jobs where the kernel lacks Landlock [env: RWP_SANDBOX_REQUIRE_LANDLOCK] [default: true]
    #[arg(long, value_name = "BOOL")]
    pub sandbox_require_landlock: Option<bool>,
    /// How long loading a job's model and data into its sandbox may take [env: RWP_SANDBOX_LOAD_TIMEOUT_MS] [default: 600000]
    #[arg(long, value_name = "MS")]
    pub sandbox_load_timeout_ms: Option<u64>,
}

fn from_env<T: FromStr>(
    env: &dyn Fn(&str) -> Option<String>,
    key: &'static str,
    field: &'static str,
) -> Result<Option<T>, WorkerError>
where
    T::Err: std::fmt::Display,
{
    match env(key).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| WorkerError::Config { field, reason: format!("{key}='{v}' is not valid: {e}") }),
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *target = v;
    }
}

/// [`set`] for a setting that may stay unset: a value given replaces it.
fn set_optional<T>(target: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *target = value;
    }
}

impl WorkerConfig {
    /// Parses a TOML config file's text; `origin` names it in errors. Keys
    /// not given keep their defaults; an unknown key is an error naming it.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, WorkerError> {
        toml::from_str(text)
            .map_err(|e| WorkerError::ConfigFile { path: origin.to_owned(), message: e.to_string().trim().to_owned() })
    }

    /// Reads a TOML config file (see [`WorkerConfig::from_toml_str`]).
    pub fn from_file(path: &Path) -> Result<Self, WorkerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| WorkerError::ConfigFile { path: path.to_owned(), message: e.to_string() })?;
        Self::from_toml_str(&text, path)
    }

    /// Layers defaults < `file` < `env` < `flags` and validates the result.
    /// `env` looks a variable up (`|k| std::env::var(k).ok()` for the process
    /// environment); empty values count as unset.
    pub fn resolve(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &ConfigFlags,
    ) -> Result<Self, WorkerError> {
        let mut c = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        set(&mut c.server, from_env(env, ENV_SERVER, "server")?);
        set(&mut c.name, from_env(env, ENV_NAME, "name")?);
        set(&mut c.device, from_env(env, ENV_DEVICE, "device")?);
        set(&mut c.threads, from_env(env, ENV_THREADS, "threads")?);
        set(&mut c.lease_wait_ms, from_env(env, ENV_LEASE_WAIT_MS, "lease_wait_ms")?);
        set(&mut c.chunk_bytes, from_env(env, ENV_CHUNK_BYTES, "chunk_bytes")?);
        set(&mut c.max_backoff_ms, from_env(env, ENV_MAX_BACKOFF_MS, "max_backoff_ms")?);
        set(&mut c.drain_timeout_ms, from_env(env, ENV_DRAIN_TIMEOUT_MS, "drain_timeout_ms")?);
        set_optional(&mut c.metrics_listen, from_env(env, ENV_METRICS_LISTEN, "metrics_listen")?);
        set(
            &mut c.metrics_header_timeout_ms,
            from_env(env, ENV_METRICS_HEADER_TIMEOUT_MS, "metrics_header_timeout_ms")?,
        );
        set(&mut c.max_connections_per_peer, from_env(env, ENV_MAX_CONNECTIONS_PER_PEER, "max_connections_per_peer")?);
        set_optional(&mut c.tls_ca, from_env(env, ENV_TLS_CA, "tls_ca")?);
        set_optional(&mut c.tls_cert, from_env(env, ENV_TLS_CERT, "tls_cert")?);
        set_optional(&mut c.tls_key, from_env(env, ENV_TLS_KEY, "tls_key")?);
        set_optional(&mut c.tls_domain, from_env(env, ENV_TLS_DOMAIN, "tls_domain")?);
        set_optional(&mut c.token, from_env(env, ENV_TOKEN, "token")?);
        set_optional(&mut c.token_file, from_env(env, ENV_TOKEN_FILE, "token_file")?);
        set(&mut c.model_cache_dir, from_env(env, ENV_MODEL_CACHE_DIR, "model_cache_dir")?);
        set_optional(&mut c.sandbox_program, from_env(env, ENV_SANDBOX_PROGRAM, "sandbox_program")?);
        set(&mut c.sandbox_memory_bytes, from_env(env, ENV_SANDBOX_MEMORY_BYTES, "sandbox_memory_bytes")?);
        set(&mut c.sandbox_user, from_env(env, ENV_SANDBOX_USER, "sandbox_user")?);
        set(&mut c.sandbox_require_landlock, from_env(env, ENV_SANDBOX_REQUIRE_LANDLOCK, "sandbox_require_landlock")?);
        set(&mut c.sandbox_load_timeout_ms, from_env(env, ENV_SANDBOX_LOAD_TIMEOUT_MS, "sandbox_load_timeout_ms")?);

        let f = flags.clone();
        set(&mut c.server, f.server);
        set(&mut c.name, f.name);
        set(&mut c.device, f.device);
        set(&mut c.threads, f.threads);
        set(&mut c.lease_wait_ms, f.lease_wait_ms);
        set(&mut c.chunk_bytes, f.chunk_bytes);
        set(&mut c.max_backoff_ms, f.max_backoff_ms);
        set(&mut c.drain_timeout_ms, f.drain_timeout_ms);
        set_optional(&mut c.metrics_listen, f.metrics_listen);
        set(&mut c.metrics_header_timeout_ms, f.metrics_header_timeout_ms);
        set(&mut c.max_connections_per_peer, f.max_connections_per_peer);
        set_optional(&mut c.tls_ca, f.tls_ca);
        set_optional(&mut c.tls_cert, f.tls_cert);
        set_optional(&mut c.tls_key, f.tls_key);
        set_optional(&mut c.tls_domain, f.tls_domain);
        set_optional(&mut c.token, f.token);
        set_optional(&mut c.token_file, f.token_file);
        set(&mut c.model_cache_dir, f.model_cache_dir);
        set_optional(&mut c.sandbox_program, f.sandbox_program);
        set(&mut c.sandbox_memory_bytes, f.sandbox_memory_bytes);
        set(&mut c.sandbox_user, f.sandbox_user);
        set(&mut c.sandbox_require_landlock, f.sandbox_require_landlock);
        set(&mut c.sandbox_load_timeout_ms, f.sandbox_load_timeout_ms);
        c.validate()?;
        Ok(c)
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

    /// [`WorkerConfig::resolve`] with the process environment.
    pub fn from_process(file: Option<&Path>, flags: &ConfigFlags) -> Result<Self, WorkerError> {
        Self::resolve(file, &|k| std::env::var(k).ok(), flags)
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
        let env = |k: &str| (k == ENV_TOKEN).then(|| "rwp_s3cret".to_owned());
        let c = WorkerConfig::resolve(None, &env, &ConfigFlags::default()).unwrap();
        assert_eq!(c.token.as_ref().map(Token::expose), Some("rwp_s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let flags = ConfigFlags { token_file: Some("/etc/rwp/token/token".into()), ..ConfigFlags::default() };
        let err = WorkerConfig::resolve(None, &env, &flags).unwrap_err();
        assert!(matches!(err, WorkerError::Config { field: "token_file", .. }), "{err}");
    }

    #[test]
    fn a_bad_environment_value_names_variable_and_field() {
        let env = |k: &str| (k == ENV_CHUNK_BYTES).then(|| "lots".to_owned());
        let err = WorkerConfig::resolve(None, &env, &ConfigFlags::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("chunk_bytes") && text.contains(ENV_CHUNK_BYTES), "{text}");
    }
}
