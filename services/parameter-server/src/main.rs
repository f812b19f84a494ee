//! `rwp-server`: the parameter server binary. Configuration in layers
//! (defaults, `--config` TOML file, `RWP_*` environment, flags); SIGTERM or
//! Ctrl-C drains and exits 0. `rwp-server token new|hash` makes entries of
//! the tokens file.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rwp_parameter_server::config::{ConfigLayer, ServerConfig};
use rwp_parameter_server::domain::Role;
use rwp_parameter_server::tokens;
use rwp_parameter_server::{Security, ServeOptions};
use tokio::net::TcpListener;

/// The RWP parameter server.
#[derive(Debug, Parser)]
#[command(name = "rwp-server", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML file with any of the settings below (unknown keys are rejected).
    #[arg(long, env = "RWP_SERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, env = "RWP_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory of the job database (and of the checkpoints unless --checkpoint-dir is set).
    #[arg(long, env = "RWP_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory of the jobs' checkpoints (default: <data-dir>/jobs).
    #[arg(long, env = "RWP_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Milliseconds between retries of a checkpoint that could not be written (the job is paused meanwhile).
    #[arg(long, env = "RWP_CHECKPOINT_RETRY_MS")]
    checkpoint_retry_ms: Option<u64>,
    /// Milliseconds before an unrenewed lease is handed to another worker.
    #[arg(long, env = "RWP_LEASE_TIMEOUT_MS")]
    lease_timeout_ms: Option<u64>,
    /// Checkpoint each job every N updates.
    #[arg(long, env = "RWP_CHECKPOINT_EVERY")]
    checkpoint_every: Option<u64>,
    /// Evaluate on the test split every N epochs (0: at the end only).
    #[arg(long, env = "RWP_EVAL_EVERY_EPOCHS")]
    eval_every_epochs: Option<u64>,
    /// libtorch threads for aggregation and evaluation (0: default).
    #[arg(long, env = "RWP_TORCH_THREADS")]
    torch_threads: Option<i32>,
    /// Chunk size of weight and export streams, bytes.
    #[arg(long, env = "RWP_STREAM_CHUNK_BYTES")]
    chunk_bytes: Option<usize>,
    /// Largest gRPC message accepted, bytes.
    #[arg(long, env = "RWP_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Milliseconds in-flight work may take after SIGTERM.
    #[arg(long, env = "RWP_SERVER_DRAIN_TIMEOUT_MS")]
    drain_timeout_ms: Option<u64>,
    /// HTTP address for /metrics (Prometheus) and /healthz; off when unset.
    #[arg(long, env = "RWP_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Longest time one request's handler may take, ms.
    #[arg(long, env = "RWP_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// Requests handled at once; more are refused with UNAVAILABLE.
    #[arg(long, env = "RWP_MAX_CONCURRENT_REQUESTS")]
    max_concurrent_requests: Option<usize>,
    /// A connection that has not delivered its first complete request this long after connecting is closed (on the metrics port: each request's headers), ms [default: 10000]
    #[arg(long, env = "RWP_CONNECTION_FIRST_REQUEST_TIMEOUT_MS", value_name = "MS")]
    connection_first_request_timeout_ms: Option<u64>,
    /// Connections one peer IP address may hold at once, per port (raise it behind a load balancer or ingress) [default: 64]
    #[arg(long, env = "RWP_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    max_connections_per_peer: Option<usize>,
    /// PEM certificate chain of the gRPC port; with --tls-key the port speaks TLS only.
    #[arg(long, env = "RWP_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "RWP_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients must present a certificate chaining to one (mutual TLS).
    #[arg(long, env = "RWP_TLS_CLIENT_CA", value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
    /// Plaintext gRPC address serving only grpc.health.v1.Health (for probes that cannot speak TLS); off when unset.
    #[arg(long, env = "RWP_HEALTH_LISTEN")]
    health_listen: Option<SocketAddr>,
    /// TOML file of the bearer tokens callers must present; unset: every caller may do everything.
    #[arg(long, env = "RWP_TOKENS_FILE", value_name = "TOML")]
    tokens_file: Option<PathBuf>,
    /// Jobs one token may have running at once (a token's entry may say otherwise).
    #[arg(long, env = "RWP_MAX_ACTIVE_JOBS_PER_TOKEN", value_name = "N")]
    max_active_jobs_per_token: Option<u32>,
    /// Most parameters of a job's model; larger ones are refused at submit.
    #[arg(long, env = "RWP_MAX_MODEL_PARAMETERS", value_name = "N")]
    max_model_parameters: Option<u64>,
    /// Largest TorchScript model file an upload may carry, in bytes.
    #[arg(long, env = "RWP_MAX_MODEL_FILE_BYTES", value_name = "BYTES")]
    max_model_file_bytes: Option<u64>,
    /// Bytes of model files one token may have stored; uploads beyond are refused [default: 4 GiB]
    #[arg(long, env = "RWP_MAX_MODEL_BYTES_PER_OWNER", value_name = "BYTES")]
    max_model_bytes_per_owner: Option<u64>,
    /// How often unreferenced model files are collected, ms [default: 3600000]
    #[arg(long, env = "RWP_MODEL_GC_INTERVAL_MS", value_name = "MS")]
    model_gc_interval_ms: Option<u64>,
    /// How long a model file no running job names is kept after its last upload, ms [default: 7 days]
    #[arg(long, env = "RWP_UNREFERENCED_MODEL_RETENTION_MS", value_name = "MS")]
    unreferenced_model_retention_ms: Option<u64>,
    /// Job API requests per second one token may make on average (a token's entry may say otherwise).
    #[arg(long, env = "RWP_REQUESTS_PER_SECOND", value_name = "RATE")]
    requests_per_second: Option<f64>,
    /// Job API requests one token may make at once after a quiet spell.
    #[arg(long, env = "RWP_REQUEST_BURST", value_name = "N")]
    request_burst: Option<u32>,
    /// The rwp-sandbox program that runs uploaded models [default: beside rwp-server]
    #[arg(long, env = "RWP_SANDBOX_PROGRAM", value_name = "PATH")]
    sandbox_program: Option<PathBuf>,
    /// Private memory one model sandbox may use, bytes [default: 8 GiB]
    #[arg(long, env = "RWP_SANDBOX_MEMORY_BYTES", value_name = "BYTES")]
    sandbox_memory_bytes: Option<u64>,
    /// UID:GID model sandboxes run as when the server runs as root [default: 65534:65534]
    #[arg(long, env = "RWP_SANDBOX_USER", value_name = "UID:GID")]
    sandbox_user: Option<String>,
    /// Refuse to run uploaded models where the kernel lacks Landlock [default: true]
    #[arg(long, env = "RWP_SANDBOX_REQUIRE_LANDLOCK", value_name = "BOOL")]
    sandbox_require_landlock: Option<bool>,
    /// How long loading, checking or evaluating an uploaded model may take, ms [default: 600000]
    #[arg(long, env = "RWP_SANDBOX_TIMEOUT_MS", value_name = "MS")]
    sandbox_timeout_ms: Option<u64>,
    /// A task's time limit before any task of its job finished, ms [default: 600000]
    #[arg(long, env = "RWP_TASK_TIMEOUT_INITIAL_MS", value_name = "MS")]
    task_timeout_initial_ms: Option<u64>,
    /// Least time limit of a task (else 10× the job's slowest task), ms [default: 60000]
    #[arg(long, env = "RWP_TASK_TIMEOUT_FLOOR_MS", value_name = "MS")]
    task_timeout_floor_ms: Option<u64>,
    /// Directories a job's data_dir must lie under, comma-separated (unset: any path; set it in production).
    #[arg(long, env = "RWP_DATA_ROOTS", value_name = "DIR,...", value_delimiter = ',')]
    data_roots: Option<Vec<PathBuf>>,
    /// Log format: text or json.
    #[arg(long, env = "RWP_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bearer tokens for the tokens file
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a random token: prints it (once; it is stored nowhere), then its tokens-file entry, which holds only its SHA-256
    New {
        /// Who the token is for: owner of the jobs it submits
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: TokenRole,
    },
    /// Print the SHA-256 of a token read from stdin, as the tokens file holds it
    Hash,
}

/// The roles a token may have.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenRole {
    /// Submits jobs; sees and controls its own
    User,
    /// Sees and controls every job
    Admin,
    /// Runs gradient tasks (rwp.v1.WorkerService only)
    Worker,
}

impl From<TokenRole> for Role {
    fn from(role: TokenRole) -> Self {
        match role {
            TokenRole::User => Role::User,
            TokenRole::Admin => Role::Admin,
            TokenRole::Worker => Role::Worker,
        }
    }
}

fn token_command(command: TokenCommand) -> Result<(), String> {
    match command {
        TokenCommand::New { name, role } => {
            tokens::check_name(&name)?;
            let token = tokens::new_token().map_err(|e| e.to_string())?;
            eprintln!("The token for {name} is on the first line: hand it over now, it is stored nowhere.");
            println!("{token}");
            println!("# Add to the tokens file (tokens_file); the entry holds only the token's SHA-256:");
            print!("{}", tokens::token_entry(&name, role.into(), &token));
            Ok(())
        }
        TokenCommand::Hash => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read stdin: {e}"))?;
            let token = text.trim();
            if token.is_empty() {
                return Err("no token on stdin".to_owned());
            }
            println!("{}", tokens::hash_token(token));
            Ok(())
        }
    }
}

impl Args {
    fn config(&self) -> Result<ServerConfig, String> {
        let mut layers = Vec::new();
        if let Some(path) = &self.config {
            layers.push(ConfigLayer::from_file(path).map_err(|e| e.to_string())?);
        }
        layers.push(ConfigLayer {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            checkpoint_dir: self.checkpoint_dir.clone(),
            checkpoint_retry_ms: self.checkpoint_retry_ms,
            lease_timeout_ms: self.lease_timeout_ms,
            checkpoint_every: self.checkpoint_every,
            eval_every_epochs: self.eval_every_epochs,
            torch_threads: self.torch_threads,
            chunk_bytes: self.chunk_bytes,
            max_message_bytes: self.max_message_bytes,
            drain_timeout_ms: self.drain_timeout_ms,
            metrics_listen: self.metrics_listen,
            request_timeout_ms: self.request_timeout_ms,
            max_concurrent_requests: self.max_concurrent_requests,
            connection_first_request_timeout_ms: self.connection_first_request_timeout_ms,
            max_connections_per_peer: self.max_connections_per_peer,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            health_listen: self.health_listen,
            tokens_file: self.tokens_file.clone(),
            max_active_jobs_per_token: self.max_active_jobs_per_token,
            max_model_parameters: self.max_model_parameters,
            max_model_file_bytes: self.max_model_file_bytes,
            max_model_bytes_per_owner: self.max_model_bytes_per_owner,
            model_gc_interval_ms: self.model_gc_interval_ms,
            unreferenced_model_retention_ms: self.unreferenced_model_retention_ms,
            requests_per_second: self.requests_per_second,
            request_burst: self.request_burst,
            sandbox_program: self.sandbox_program.clone(),
            sandbox_memory_bytes: self.sandbox_memory_bytes,
            sandbox_user: self.sandbox_user.clone(),
            sandbox_require_landlock: self.sandbox_require_landlock,
            sandbox_timeout_ms: self.sandbox_timeout_ms,
            task_timeout_initial_ms: self.task_timeout_initial_ms,
            task_timeout_floor_ms: self.task_timeout_floor_ms,
            data_roots: self.data_roots.clone(),
        });
        ServerConfig::from_layers(&layers).map_err(|e| e.to_string())
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn run(args: Args) -> Result<(), String> {
    let _telemetry = rwp_telemetry::init("rwp-server", &args.log_format)?;
    let config = args.config()?;
    // Credential files are read before the port opens: a bad one is named and nothing listens.
    let security = Security::load(&config).map_err(|e| e.to_string())?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("rwp-server listening on {address}");
    let options = ServeOptions::default();
    rwp_parameter_server::serve_with_security(listener, config, security, options, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(Command::Token(command)) = args.command.take() {
        return match token_command(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // A blocking task still running (a model check waiting on its sandbox)
    // must not keep the process alive past the drain: its sandbox dies
    // with the process.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
