//! The CLI's errors: one line for people, an exit status for scripts.

use rwp_sdk::SdkError;

use crate::format::tidy_reason;

/// Exit status of a usage, job-file or flag error (as clap uses for its own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of every other error, and of `watch` when the job failed.
pub const EXIT_ERROR: u8 = 1;
/// Exit status of `watch` when the job was cancelled.
pub const EXIT_CANCELLED: u8 = 3;
/// Exit status of `watch` stopped with Ctrl-C (the job goes on).
pub const EXIT_INTERRUPTED: u8 = 130;
/// A job stopped early by its sweep's early stopping.
pub const EXIT_STOPPED: u8 = 4;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: a job file, a flag, a file name. Exit status 2.
    #[error("{0}")]
    Usage(String),
    /// A call to the server failed. Exit status 2 for a refused spec or a bad address, else 1.
    #[error("{}", sdk_message(.0))]
    Sdk(#[from] SdkError),
    /// Anything else. Exit status 1.
    #[error("{0}")]
    Other(String),
    /// Writing the output failed (a closed pipe is not reported).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_)
            | CliError::Sdk(SdkError::InvalidSpec(_) | SdkError::Endpoint { .. } | SdkError::Credentials(_)) => {
                EXIT_USAGE
            }
            CliError::Sdk(_) | CliError::Other(_) | CliError::Output(_) => EXIT_ERROR,
        }
    }

    /// Whether this is only the reader of our output going away (`rwp list | head`).
    #[must_use]
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// One line for an SDK error, with a hint where there is an obvious next step.
#[must_use]
pub fn sdk_message(e: &SdkError) -> String {
    match e {
        SdkError::Unreachable { endpoint, reason } => {
            format!(
                "cannot reach the server at {endpoint}: {} ({})",
                tidy_reason(reason),
                unreachable_hint(endpoint, reason)
            )
        }
        SdkError::Endpoint { endpoint, reason } => {
            format!(
                "invalid server address {endpoint}: {} (expected http://host:port or https://host:port)",
                tidy_reason(reason)
            )
        }
        SdkError::Server { code: tonic::Code::Unavailable, message } if message.contains("corrupt message") => {
            format!(
                "the TLS handshake with the server failed: {message} (for a plaintext server use an http:// address)"
            )
        }
        SdkError::Unauthenticated(message) => {
            format!("{message} (give the token with --token-file, RWP_TOKEN_FILE or RWP_TOKEN)")
        }
        SdkError::Server { code, message } => format!("the server answered {code:?}: {message}"),
        other => one_line(&other.to_string()),
    }
}

/// What to try when the server cannot be reached, from why.
fn unreachable_hint(endpoint: &str, reason: &str) -> &'static str {
    if reason.contains("invalid peer certificate") {
        "the server's certificate is not trusted for this address: check --tls-ca and --tls-domain"
    } else if reason.contains("received fatal alert")
        || (endpoint.starts_with("https://") && ["connection closed", "broken pipe"].iter().any(|r| reason.contains(r)))
    {
        "the server refused the TLS connection: it requires a client certificate signed by its CA and valid now, \
         given with --tls-cert and --tls-key"
    } else if endpoint.starts_with("http://")
        && ["frame with invalid size", "broken pipe", "h2 protocol error"].iter().any(|r| reason.contains(r))
    {
        "if the server speaks TLS, use an https:// address"
    } else {
        "is rwp-server running? set --server or RWP_SERVER"
    }
}

/// Joins the lines of a multi-line message (TOML errors quote the source) into one.
#[must_use]
pub fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_names_the_address_and_what_to_do() {
        let e = CliError::from(SdkError::Unreachable {
            endpoint: "http://127.0.0.1:1".into(),
            reason: "Connection refused (os error 111)".into(),
        });
        assert_eq!(
            e.to_string(),
            "cannot reach the server at http://127.0.0.1:1: connection refused \
             (is rwp-server running? set --server or RWP_SERVER)"
        );
        assert_eq!(e.exit_code(), EXIT_ERROR);
    }

    #[test]
    fn tls_failures_get_their_own_hints() {
        let hint = |endpoint: &str, reason: &str| {
            CliError::from(SdkError::Unreachable { endpoint: endpoint.into(), reason: reason.into() }).to_string()
        };
        let text = hint("https://ps:1", "invalid peer certificate: UnknownIssuer");
        assert!(
            text.ends_with(
                "(the server's certificate is not trusted for this address: check --tls-ca and --tls-domain)"
            ),
            "{text}"
        );
        let text = hint("https://ps:1", "received fatal alert: CertificateExpired");
        assert!(text.contains("--tls-cert and --tls-key"), "{text}");
        let text = hint("https://ps:1", "connection closed");
        assert!(text.contains("--tls-cert and --tls-key"), "{text}");
        let text = hint("http://ps:1", "connection error detected: frame with invalid size");
        assert!(text.contains("use an https:// address"), "{text}");
    }

    #[test]
    fn a_tls_mismatch_gets_a_hint() {
        let e = SdkError::Server {
            code: tonic::Code::Unavailable,
            message: "received corrupt message of type InvalidContentType".into(),
        };
        assert!(sdk_message(&e).contains("for a plaintext server use an http:// address"), "{}", sdk_message(&e));
        let e = SdkError::Server { code: tonic::Code::Internal, message: "boom".into() };
        assert_eq!(sdk_message(&e), "the server answered Internal: boom");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::from(SdkError::InvalidSpec("x".into())).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::from(SdkError::NotFound("job j-9 not found".into())).exit_code(), EXIT_ERROR);
        assert_eq!(CliError::Other("x".into()).exit_code(), EXIT_ERROR);
        let pipe = CliError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        assert_eq!(one_line("first\n  second  \n\nthird"), "first second third");
    }
}
