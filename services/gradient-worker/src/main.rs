//! `rwp-worker`: the gradient worker binary. Parses the configuration, sets
//! up logging (to stderr), turns SIGTERM/SIGINT into a graceful shutdown and
//! runs [`rwp_gradient_worker::run`]. Prints nothing on stdout, except the
//! configuration with `--print-config` (which starts nothing).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, ValueEnum};
use rwp_config::Env;
use rwp_gradient_worker::{ConfigFlags, WorkerConfig};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Gradient worker of the RWP training service: leases gradient tasks from a
/// parameter server, computes them with libtorch and streams them back.
#[derive(Debug, Parser)]
#[command(name = "rwp-worker", version)]
struct Cli {
    /// TOML config file (keys as the flags, with underscores)
    #[arg(long, value_name = "PATH", env = "RWP_WORKER_CONFIG")]
    config: Option<PathBuf>,
    /// Log line format (filter with RUST_LOG, default info)
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "RWP_LOG_FORMAT")]
    log_format: LogFormat,
    /// Print the effective configuration (defaults < --config < RWP_* environment < flags; secrets redacted) and every setting's type, default, variable, flag and doc as JSON, then exit
    #[arg(long)]
    print_config: bool,
    // The settings, one flag each (WorkerConfig's fields).
    #[command(flatten)]
    flags: ConfigFlags,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_config {
        let loaded = WorkerConfig::load(cli.config.as_deref(), &Env::process(), &cli.flags);
        return rwp_config::print_config_and_exit(loaded, &Cli::command(), ExitCode::from(2));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Logs, and spans over OTLP when the OTEL_* variables ask for it.
        let format = match cli.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let _telemetry = match rwp_telemetry::init("rwp-worker", format) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let config = match WorkerConfig::from_process(cli.config.as_deref(), &cli.flags) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
        };
        // Registered before the worker starts, so an early signal is not lost.
        let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        };
        let metrics = match rwp_gradient_worker::bind_metrics(&config).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("worker failed: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Port 0 in metrics_listen picks a free port: this line says which
        // (a reader that closed the pipe does not stop the worker).
        if let Some(address) = metrics.as_ref().and_then(|l| l.local_addr().ok()) {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "rwp-worker metrics on {address}");
        }
        match rwp_gradient_worker::run_with_metrics(config, metrics, shutdown).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("worker failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
