//! TLS settings from PEM files.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{malformed, CredentialsError};

/// PEM text and where it came from (a file name), for error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem {
    origin: String,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Pem {
    /// The origin only: a private key's bytes never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem").field("origin", &self.origin).field("bytes", &self.bytes.len()).finish()
    }
}

impl Pem {
    /// PEM text from memory; `origin` names it in errors.
    #[must_use]
    pub fn new(origin: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self { origin: origin.into(), bytes: bytes.into() }
    }

    /// Reads a PEM file; errors name it.
    pub fn read(path: &Path) -> Result<Self, CredentialsError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| CredentialsError::Read { path: origin.clone(), source })?;
        Ok(Self { origin, bytes })
    }

    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The certificates it holds, checked: at least one, each a well-formed
    /// PEM `CERTIFICATE` block.
    pub fn certificates(&self) -> Result<Certificate, CredentialsError> {
        let mut count = 0;
        for certificate in CertificateDer::pem_slice_iter(&self.bytes) {
            certificate.map_err(|e| malformed(&self.origin, format!("not a valid PEM certificate ({e})")))?;
            count += 1;
        }
        if count == 0 {
            return Err(malformed(&self.origin, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
        }
        Ok(Certificate::from_pem(&self.bytes))
    }

    /// Checks that it holds a private key (PKCS#8, PKCS#1 or SEC1 PEM).
    pub fn private_key(&self) -> Result<(), CredentialsError> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map(drop).map_err(|e| {
            malformed(&self.origin, format!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))
        })
    }
}

/// Longest a client may take to complete its TLS handshake with the server;
/// a connection still silent then is closed, so idle connections cannot pile up.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The server's TLS settings: its certificate chain and key, and with
/// `client_ca`, mutual TLS: every client must present a certificate that
/// chains to it (and is within its validity period).
pub fn server_tls(cert: &Pem, key: &Pem, client_ca: Option<&Pem>) -> Result<ServerTlsConfig, CredentialsError> {
    cert.certificates()?;
    key.private_key()?;
    let mut tls =
        ServerTlsConfig::new().identity(Identity::from_pem(&cert.bytes, &key.bytes)).timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(ca.certificates()?);
    }
    // Builds the rustls configuration now: a key that does not match the
    // certificate, or a certificate that does not parse, fails here.
    tonic::transport::Server::builder().tls_config(tls.clone()).map_err(|e| {
        CredentialsError::Mismatch(format!(
            "the certificate {} and the key {} cannot be used together: {}",
            cert.origin,
            key.origin,
            error_chain(&e)
        ))
    })?;
    Ok(tls)
}

/// A client's TLS settings: the CA to trust for the server's certificate
/// (the public web roots when `None`), a certificate and key to present for
/// mutual TLS, and the name to check the server's certificate against when it
/// is not the endpoint's host.
pub fn client_tls(
    ca: Option<&Pem>,
    identity: Option<(&Pem, &Pem)>,
    domain: Option<&str>,
) -> Result<ClientTlsConfig, CredentialsError> {
    let mut tls = ClientTlsConfig::new();
    tls = match ca {
        Some(ca) => tls.ca_certificate(ca.certificates()?),
        None => tls.with_webpki_roots(),
    };
    if let Some((cert, key)) = identity {
        cert.certificates()?;
        key.private_key()?;
        tls = tls.identity(Identity::from_pem(&cert.bytes, &key.bytes));
    }
    if let Some(domain) = domain {
        tls = tls.domain_name(domain);
    }
    Ok(tls)
}

/// An error with its causes, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ca = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

    fn ca() -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    fn leaf(ca: &Ca) -> (Pem, Pem) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, ca).unwrap();
        (Pem::new("server.crt", cert.pem()), Pem::new("server.key", key.serialize_pem()))
    }

    #[test]
    fn a_valid_identity_and_ca_make_server_and_client_settings() {
        let ca = ca();
        let (cert, key) = leaf(&ca);
        let ca_pem = Pem::new("ca.crt", ca.pem());
        server_tls(&cert, &key, Some(&ca_pem)).unwrap();
        client_tls(Some(&ca_pem), Some((&cert, &key)), Some("localhost")).unwrap();
    }

    #[test]
    fn malformed_files_are_named() {
        let ca = ca();
        let (cert, key) = leaf(&ca);
        let garbage = Pem::new("/etc/rwp/tls/tls.crt", "not a certificate\n");
        let err = server_tls(&garbage, &key, None).unwrap_err().to_string();
        assert!(err.starts_with("/etc/rwp/tls/tls.crt: holds no PEM certificate"), "{err}");
        let truncated = Pem::new("ca.crt", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        let err = client_tls(Some(&truncated), None, None).unwrap_err().to_string();
        assert!(err.starts_with("ca.crt: not a valid PEM certificate"), "{err}");
        let not_a_key = Pem::new("tls.key", cert.bytes.clone());
        let err = server_tls(&cert, &not_a_key, None).unwrap_err().to_string();
        assert!(err.starts_with("tls.key: holds no usable PEM private key"), "{err}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_both_files() {
        let ca = ca();
        let (cert, _) = leaf(&ca);
        let (_, other_key) = leaf(&ca);
        let err = server_tls(&cert, &other_key, None).unwrap_err().to_string();
        assert!(err.contains("server.crt") && err.contains("server.key"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Pem::read(Path::new("/nonexistent/ca.crt")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read /nonexistent/ca.crt:"), "{err}");
    }
}
