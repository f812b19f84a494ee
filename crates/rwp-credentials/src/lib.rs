//! Credentials of the RWP service's gRPC connections, shared by the
//! parameter server, the gradient worker and the client SDK:
//!
//! - [`Pem`]: certificates and keys read from PEM files (as Kubernetes
//!   mounts Secrets) and checked when read, so that a missing, unreadable or
//!   malformed file is an error that names it, at startup rather than at the
//!   first handshake;
//! - [`server_tls`] and [`client_tls`]: tonic's rustls settings from them,
//!   with mutual TLS when the server is given a client CA and the client a
//!   certificate and key;
//! - [`Bearer`]: the `authorization: Bearer <token>` metadata on every call
//!   of a client, and [`read_token_file`].

mod bearer;
mod tls;

pub use bearer::{read_token_file, Bearer, Token};
pub use tls::{client_tls, server_tls, Pem, HANDSHAKE_TIMEOUT};
/// A credential that cannot be used, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{origin}: {reason}")]
    Malformed { origin: String, reason: String },
    /// Parts that do not fit together (a key of another certificate, say).
    #[error("{0}")]
    Mismatch(String),
}

pub(crate) fn malformed(origin: &str, reason: impl Into<String>) -> CredentialsError {
    CredentialsError::Malformed { origin: origin.to_owned(), reason: reason.into() }
}
