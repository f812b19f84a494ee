//! `rwp`, the command-line client of the RWP training service, built on
//! [`rwp_sdk`] (no libtorch).
//!
//! ```text
//! rwp submit job.toml --watch             # a TOML job file; prints the job id
//! rwp submit --method m-arwp --epochs 5   # or flags over the method's reference settings
//! rwp list                                # ID NAME METHOD MODEL STATE STEP/TOTAL LOSS VAL ACC TEST ACC AGE
//! rwp get job-5e768fc32c72 [--json]        # or a unique id prefix (5e76), or the job's name
//! rwp watch job-5e768fc32c72               # progress bar; exit 0 succeeded, 1 failed, 3 cancelled, 4 stopped early
//! rwp cancel job-5e768fc32c72
//! rwp export job-5e768fc32c72 -o weights.safetensors
//! rwp plot job-5e768fc32c72 job-90ab12cd34ef -o curves.svg
//! rwp model list [--json]                 # uploaded TorchScript files: SHA256 SIZE UPLOADED [OWNER]
//! rwp model delete SHA256
//! rwp completions bash
//! ```
//!
//! The server is `--server URL` (or `RWP_SERVER`, default
//! `http://127.0.0.1:50051`); `https://` URLs use TLS with the public roots
//! or `--tls-ca ca.pem`, and `--tls-cert`/`--tls-key` present a client
//! certificate to a server that requires mutual TLS. A server with a tokens
//! file needs a bearer token: `--token-file`/`RWP_TOKEN_FILE` or `RWP_TOKEN`.
//!
//! Output is meant for people and scripts alike: `submit` prints only the
//! job id on stdout, `watch` ends with one summary line on stdout (`job ID
//! succeeded: step 240/240, test accuracy 0.8123, wall 41.2s, 5.83
//! updates/s`), `list` and `get` have `--json`; progress and notes go to
//! stderr. Errors are one line on stderr, `error: ...`, with exit status 2
//! for usage and job-file errors and 1 for the others.
//!
//! Job files are parsed by [`rwp_sdk::JobFile`]; the schema is in `rwp
//! submit --help`. Modules: [`cli`] (the command line), [`job`] (job file
//! and flags to a spec), [`commands`], [`table`], [`plot`], [`format`](mod@format)
//! (pure helpers), [`error`].

pub mod cli;
pub mod commands;
pub mod error;
pub mod format;
pub mod job;
pub mod plot;
pub mod table;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::CliError;

/// Parses the process's arguments, runs the command and returns its exit
/// status; errors are printed as one line on stderr.
#[must_use]
pub fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error{place}: {message} (please report it)");
    }));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&CliError::Other(format!("cannot start the async runtime: {e}"))),
    };
    let stdout = std::io::stdout();
    // Names, owners and errors come from the server: nothing printed may drive the terminal.
    let mut out = format::Printable::new(stdout.lock());
    let result = runtime.block_on(commands::run(cli, &mut out));
    let _ = out.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    eprintln!("error: {}", format::printable(&e.to_string()));
    ExitCode::from(e.exit_code())
}
