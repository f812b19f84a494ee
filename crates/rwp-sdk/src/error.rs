use tonic::{Code, Status};

/// Everything an SDK call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The endpoint URL or TLS settings are unusable.
    #[error("invalid endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// A certificate, key or token that cannot be used; the message names it.
    #[error("{0}")]
    Credentials(String),
    /// The server could not be reached (after retries, for idempotent calls).
    #[error("cannot reach the server at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// A job spec or job file the server (or the SDK) refused.
    #[error("{0}")]
    InvalidSpec(String),
    #[error("{0}")]
    NotFound(String),
    /// The server requires a token and got none, or one it does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// The token's role may not do this (a worker token on the job API, say).
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit of the server: too many requests (retry after a moment; the
    /// idempotent calls do), or too many running jobs for the token.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request was understood but refused in the job's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The server answered with another error.
    #[error("server error ({code:?}): {message}")]
    Server { code: Code, message: String },
    /// A stream from the server broke off or carried something unexpected.
    #[error("{0}")]
    Protocol(String),
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// A message from the server that does not convert to the SDK's types.
impl From<rwp_proto::ConversionError> for SdkError {
    fn from(e: rwp_proto::ConversionError) -> Self {
        SdkError::Protocol(format!("unexpected message from the server: {e}"))
    }
}

impl SdkError {
    /// Whether retrying the same idempotent call may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, SdkError::Unreachable { .. } | SdkError::ResourceExhausted(_))
            || matches!(self, SdkError::Server { code, .. } if matches!(code, Code::Unavailable | Code::Aborted))
    }

    pub(crate) fn from_status(status: Status, endpoint: &str) -> Self {
        use std::error::Error;
        let message = status.message().to_owned();
        // A status with a source was made on this side from a transport
        // failure (refused connection, failed TLS handshake, a peer that
        // does not speak gRPC); one the server sent has none.
        let transport = status.source().is_some()
            && matches!(status.code(), Code::Unavailable | Code::Internal | Code::Unknown | Code::Cancelled);
        match status.code() {
            _ if transport => {
                SdkError::Unreachable { endpoint: endpoint.to_owned(), reason: unreachable_reason(&status) }
            }
            Code::InvalidArgument => SdkError::InvalidSpec(message),
            Code::NotFound => SdkError::NotFound(message),
            Code::FailedPrecondition => SdkError::FailedPrecondition(message),
            Code::Unauthenticated => SdkError::Unauthenticated(message),
            Code::PermissionDenied => SdkError::PermissionDenied(message),
            Code::ResourceExhausted => SdkError::ResourceExhausted(message),
            Code::Unavailable
                if message.contains("tcp connect") || message.contains("transport error") || message.is_empty() =>
            {
                SdkError::Unreachable { endpoint: endpoint.to_owned(), reason: unreachable_reason(&status) }
            }
            code => SdkError::Server { code, message },
        }
    }
}

fn unreachable_reason(status: &Status) -> String {
    use std::error::Error;
    let mut reason = status.message().to_owned();
    let mut source = status.source();
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    if reason.is_empty() {
        "connection failed".to_owned()
    } else {
        reason
    }
}
