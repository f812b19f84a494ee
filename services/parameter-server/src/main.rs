//! `rwp-server`: the parameter server binary. Configuration in layers
//! (defaults, `--config` TOML file, `RWP_*` environment, flags; see
//! `--print-config`); SIGTERM or Ctrl-C drains and exits 0. `rwp-server
//! token new|hash` makes entries of the tokens file.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use rwp_config::{Env, Loaded};
use rwp_parameter_server::config::{ServerConfig, ServerFlags};
use rwp_parameter_server::domain::CallerRole;
use rwp_parameter_server::tokens;
use rwp_parameter_server::{Listeners, Security, ServeOptions};

/// The RWP parameter server.
#[derive(Debug, Parser)]
#[command(name = "rwp-server", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML file with any of the settings (unknown keys are rejected).
    #[arg(long, env = "RWP_SERVER_CONFIG", value_name = "TOML")]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults < --config < RWP_* environment < flags; secrets redacted) and every setting's type, default, variable, flag and doc as JSON, then exit.
    #[arg(long)]
    print_config: bool,
    /// Log format: text or json.
    #[arg(long, env = "RWP_LOG_FORMAT", default_value = "text")]
    log_format: String,
    // The settings, one flag each (ServerConfig's fields).
    #[command(flatten)]
    settings: ServerFlags,
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

impl From<TokenRole> for CallerRole {
    fn from(role: TokenRole) -> Self {
        match role {
            TokenRole::User => CallerRole::User,
            TokenRole::Admin => CallerRole::Admin,
            TokenRole::Worker => CallerRole::Worker,
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
    fn config(&self) -> Result<Loaded<ServerConfig>, String> {
        ServerConfig::load(self.config.as_deref(), &Env::process(), &self.settings).map_err(|e| e.to_string())
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Says where the server listens, one line per port: `rwp-server listening
/// on ADDRESS` first (what scripts wait for), then `rwp-server metrics on`
/// and `rwp-server health on` when those ports are open (port 0 in the
/// settings picks a free one; these lines say which). A reader that stopped
/// after the first line does not stop the server.
fn announce(listeners: &Listeners) -> std::io::Result<()> {
    use std::io::Write;
    println!("rwp-server listening on {}", listeners.grpc.local_addr()?);
    let mut stdout = std::io::stdout();
    for (what, listener) in [("metrics", &listeners.metrics), ("health", &listeners.health)] {
        if let Some(listener) = listener {
            let _ = writeln!(stdout, "rwp-server {what} on {}", listener.local_addr()?);
        }
    }
    let _ = stdout.flush();
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    let _telemetry = rwp_telemetry::init("rwp-server", &args.log_format)?;
    let config = args.config()?.config;
    // Credential files are read before the port opens: a bad one is named and nothing listens.
    let security = Security::load(&config).map_err(|e| e.to_string())?;
    // So is the data directory: one it cannot use, or one another server
    // holds, is reported before anything listens.
    let store = rwp_parameter_server::store::Store::open(&config.data_dir).map_err(|e| e.to_string())?;
    let listeners = Listeners::bind(&config).await.map_err(|e| e.to_string())?;
    announce(&listeners).map_err(|e| e.to_string())?;
    let options = ServeOptions { store: Some(store), ..ServeOptions::default() };
    rwp_parameter_server::serve_with_security(listeners, config, security, options, shutdown_signal())
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
    if args.print_config {
        return rwp_config::print_config_and_exit(args.config(), &Args::command(), ExitCode::FAILURE);
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
