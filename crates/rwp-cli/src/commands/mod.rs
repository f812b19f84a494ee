//! The subcommands. Each takes its arguments and a writer for stdout;
//! progress and notes go to stderr.

mod dataset;
mod jobs;
mod models;
mod plot;
pub mod resolve;
mod sweeps;
mod watch;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use rwp_sdk::{read_token_file, Client, ClientConfig, Extension, JobState, Pem, SdkError, SubmitOptions};
use tokio_stream::StreamExt;

use crate::cli::{Cli, Command, ConnectionArgs, SubmitArgs};
use crate::error::CliError;
use crate::format::now_unix_ms;
use crate::job::{build_job, BuiltJob};
use crate::plot::ImageFormat;
use jobs::{log_line, workers_table};

pub use jobs::{job_detail, job_json, jobs_table};
pub use models::{model_json, models_table};
pub use watch::{summary_line, Outcome};

/// Attempts of each call while watching, so that a watch rides out a server
/// restart (about 15 s of retries) where a one-off call fails fast.
const WATCH_ATTEMPTS: u32 = 10;

/// How to reach the server, checked before anything is sent.
#[derive(Clone, Debug)]
pub struct Connection {
    config: ClientConfig,
}

impl Connection {
    pub fn new(args: &ConnectionArgs) -> Result<Self, CliError> {
        let server = args.server.trim();
        if server.is_empty() {
            return Err(CliError::Usage("--server is empty (expected http://host:port or https://host:port)".into()));
        }
        // `host:port` alone means plaintext HTTP/2.
        let endpoint = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
        let mut config = ClientConfig::new(endpoint);
        if args.tls_cert.is_some() != args.tls_key.is_some() {
            return Err(CliError::Usage("--tls-cert and --tls-key go together (mutual TLS needs both)".into()));
        }
        config.tls_ca = read_pem(args.tls_ca.as_deref(), "--tls-ca")?;
        config.tls_client_cert = read_pem(args.tls_cert.as_deref(), "--tls-cert")?;
        config.tls_client_key = read_pem(args.tls_key.as_deref(), "--tls-key")?;
        config.token = match (&args.token, &args.token_file) {
            (Some(_), Some(_)) => {
                return Err(CliError::Usage(
                    "give the token once: --token (RWP_TOKEN) or --token-file (RWP_TOKEN_FILE)".into(),
                ))
            }
            (Some(token), None) => Some(token.clone()),
            (None, Some(path)) => {
                Some(read_token_file(path).map_err(|e| CliError::Usage(format!("--token-file: {e}")))?)
            }
            (None, None) => None,
        };
        config.tls_domain.clone_from(&args.tls_domain);
        config.attempts = args.retries.saturating_add(1);
        config.connect_timeout = Duration::from_secs_f64(args.connect_timeout);
        Ok(Self { config })
    }

    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// Connects and checks that the server answers, failing fast.
    pub async fn connect(&self) -> Result<Client, CliError> {
        self.connect_with(self.config.clone()).await
    }

    /// A client whose calls retry for longer, for following a job; it still
    /// fails fast when the server cannot be reached at first.
    pub async fn connect_patient(&self) -> Result<Client, CliError> {
        self.connect().await?;
        let mut config = self.config.clone();
        config.attempts = config.attempts.max(WATCH_ATTEMPTS);
        self.connect_with(config).await
    }

    async fn connect_with(&self, config: ClientConfig) -> Result<Client, CliError> {
        // A server that accepts connections but never answers would otherwise
        // keep the first call waiting forever.
        let limit =
            self.config.connect_timeout.saturating_mul(self.config.attempts.saturating_add(1)) + Duration::from_secs(2);
        match tokio::time::timeout(limit, Client::connect_with(config)).await {
            Ok(client) => Ok(client?),
            Err(_) => Err(SdkError::Unreachable {
                endpoint: self.config.endpoint.clone(),
                reason: format!("no answer within {}s", limit.as_secs()),
            }
            .into()),
        }
    }
}

/// Reads the PEM file of a flag, if given; errors name the flag and the file.
fn read_pem(path: Option<&Path>, flag: &str) -> Result<Option<Pem>, CliError> {
    path.map(Pem::read).transpose().map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

/// Runs one parsed command line; returns the process's exit status.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<u8, CliError> {
    let Cli { connection, command } = cli;
    // Everything that can be checked without the server is checked before connecting.
    let connect = || Connection::new(&connection);
    match command {
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "rwp", out);
            Ok(0)
        }
        Command::Submit(args) => {
            let job = build_job(&args)?;
            submit(&connect()?, &args, &job, out).await
        }
        Command::List(args) => {
            let selector = args.labels.into_iter().collect();
            let mut jobs = connect()?.connect().await?.list_labelled(&selector).await?;
            jobs.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
            if args.json {
                let json: Vec<_> = jobs.iter().map(job_json).collect();
                writeln!(out, "{}", to_json(&json)?)?;
            } else {
                out.write_all(jobs_table(&jobs, now_unix_ms()).as_bytes())?;
            }
            Ok(0)
        }
        Command::Get(args) => {
            let client = connect()?.connect().await?;
            let job = client.get(&resolve::job_id(&client, &args.job).await?).await?;
            if args.json {
                writeln!(out, "{}", to_json(&job_json(&job))?)?;
            } else {
                out.write_all(job_detail(&job, now_unix_ms()).as_bytes())?;
            }
            Ok(0)
        }
        Command::Watch(args) => {
            let client = connect()?.connect_patient().await?;
            let job = resolve::job_id(&client, &args.job).await?;
            let outcome = watch::watch(&client, &job, Duration::from_secs_f64(args.interval), out).await?;
            Ok(outcome.exit_code())
        }
        Command::Cancel(args) => {
            let client = connect()?.connect().await?;
            let job = client.cancel(&resolve::job_id(&client, &args.job).await?).await?;
            let progress = format!("step {}/{}", job.step, job.total_updates);
            if job.state.is_terminal() && job.state != JobState::Cancelled {
                writeln!(out, "job {} had already {} ({progress}); nothing to cancel", job.id, job.state)?;
            } else {
                writeln!(out, "cancelled job {} at {progress}", job.id)?;
            }
            Ok(0)
        }
        Command::Resume(args) => {
            let connection = connect()?;
            let client = if args.watch { connection.connect_patient().await? } else { connection.connect().await? };
            let id = resolve::job_id(&client, &args.job).await?;
            let extend = Extension::from_flags(args.epochs, args.max_updates);
            let job = client.resume(&id, &extend).await?;
            writeln!(out, "resumed job {} at step {}/{}", job.id, job.step, job.total_updates)?;
            out.flush()?;
            if !args.watch {
                return Ok(0);
            }
            let outcome = watch::watch(&client, &job.id, Duration::from_secs_f64(args.interval), out).await?;
            Ok(outcome.exit_code())
        }
        Command::Logs(args) => {
            let client = if args.follow { connect()?.connect_patient().await? } else { connect()?.connect().await? };
            let id = resolve::job_id(&client, &args.job).await?;
            let mut entries = Box::pin(client.logs(&id, 0, args.follow).await?);
            while let Some(entry) = entries.next().await {
                let entry = entry?;
                if args.json {
                    writeln!(out, "{}", serde_json::to_string(&entry).map_err(|e| CliError::Other(e.to_string()))?)?;
                } else {
                    writeln!(out, "{}", log_line(&entry))?;
                }
                out.flush()?;
            }
            Ok(0)
        }
        Command::Workers(args) => {
            let workers = connect()?.connect().await?.workers().await?;
            if args.json {
                writeln!(out, "{}", to_json(&workers)?)?;
            } else {
                out.write_all(workers_table(&workers, now_unix_ms()).as_bytes())?;
            }
            Ok(0)
        }
        Command::Delete(args) => {
            let client = connect()?.connect().await?;
            let id = resolve::job_id(&client, &args.job).await?;
            client.delete(&id).await?;
            writeln!(out, "deleted job {id}")?;
            Ok(0)
        }
        Command::Export(args) => {
            let client = connect()?.connect().await?;
            let job = resolve::job_id(&client, &args.job).await?;
            let export = client.export(&job, &args.output).await?;
            let (step, bytes, path) = (export.step, export.bytes, args.output.display());
            writeln!(out, "exported job {job} at step {step}: {bytes} bytes to {path}")?;
            Ok(0)
        }
        Command::Sweep(command) => sweeps::run(command, connect, out).await,
        Command::Model(command) => models::run(command, connect, out).await,
        Command::Dataset(command) => dataset::run(command, connect, out).await,
        Command::Plot(args) => {
            ImageFormat::from_path(&args.output).map_err(CliError::Usage)?;
            let client = connect()?.connect().await?;
            plot::plot(&client, &args, out).await?;
            Ok(0)
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value).map_err(|e| CliError::Other(format!("cannot write JSON: {e}")))
}

async fn submit(
    connection: &Connection,
    args: &SubmitArgs,
    built: &BuiltJob,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let client = if args.watch { connection.connect_patient().await? } else { connection.connect().await? };
    if let Some(path) = &built.model_path {
        client.upload_model(path).await?;
    }
    let init_from = match &args.init_from {
        Some(job) => Some(resolve::job_id(&client, job).await?),
        None => None,
    };
    let options = SubmitOptions { labels: args.labels.iter().cloned().collect(), init_from };
    let job = client.submit_with(&built.name, &built.spec, &options).await?;
    writeln!(out, "{}", job.id)?;
    out.flush()?;
    if !args.watch {
        return Ok(0);
    }
    let outcome = watch::watch(&client, &job.id, Duration::from_secs_f64(args.interval), out).await?;
    Ok(outcome.exit_code())
}
