//! The credential files of the server, read and checked once at startup:
//! a missing, unreadable or malformed one is an error naming it.

use rwp_credentials::{server_tls, Pem};
use tonic::transport::ServerTlsConfig;

use crate::config::ServerConfig;
use crate::domain::{Limits, Rate};
use crate::error::ServerError;
use crate::layers::{self, Authenticate};
use crate::tokens::TokenTable;

/// What the credential files of a [`ServerConfig`] hold.
#[derive(Debug, Default, Clone)]
pub struct Security {
    /// TLS of the gRPC port (mutual TLS with a client CA); plaintext when `None`.
    pub tls: Option<ServerTlsConfig>,
    /// The tokens callers must present; every caller may do everything when `None`.
    pub tokens: Option<TokenTable>,
}

impl Security {
    pub fn load(config: &ServerConfig) -> Result<Self, ServerError> {
        let credentials = |e: rwp_credentials::CredentialsError| ServerError::Credentials(e.to_string());
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let client_ca = config.tls_client_ca.as_deref().map(Pem::read).transpose().map_err(credentials)?;
                let cert = Pem::read(cert).map_err(credentials)?;
                let key = Pem::read(key).map_err(credentials)?;
                Some(server_tls(&cert, &key, client_ca.as_ref()).map_err(credentials)?)
            }
            _ => None,
        };
        let defaults = Limits {
            max_active_jobs: Some(config.max_active_jobs_per_token),
            rate: Some(Rate { per_second: config.requests_per_second, burst: config.request_burst }),
        };
        let tokens = config.tokens_file.as_deref().map(|path| TokenTable::load(path, &defaults)).transpose()?;
        Ok(Self { tls, tokens })
    }

    /// How requests are authenticated: with the tokens, or not at all.
    #[must_use]
    pub fn authenticate(&self) -> Authenticate {
        match &self.tokens {
            Some(tokens) => layers::bearer_tokens(tokens.clone()),
            None => layers::open(),
        }
    }
}
