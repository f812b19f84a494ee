//! Bearer tokens on a client's calls.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

use crate::{malformed, CredentialsError};

/// A bearer token's text. `Debug` never prints it, so a configuration that
/// holds one can be logged.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    #[must_use]
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text, to send or hash.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
/// The value is marked sensitive: HTTP/2 never indexes it, and `Debug`
/// never prints it.
#[derive(Clone, Default)]
pub struct Bearer {
    value: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer").field("token", &self.value.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl Bearer {
    /// `origin` names where the token came from in errors (never the token itself).
    pub fn new(token: Option<&Token>, origin: &str) -> Result<Self, CredentialsError> {
        let Some(token) = token.map(Token::expose) else { return Ok(Self::default()) };
        if token.is_empty() {
            return Err(malformed(origin, "the token is empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed(origin, "the token must be printable ASCII without spaces"));
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| malformed(origin, "the token is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(Self { value: Some(value) })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.value {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Reads a token from a file (a mounted Secret): its content without the
/// surrounding white space.
pub fn read_token_file(path: &Path) -> Result<Token, CredentialsError> {
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| CredentialsError::Read { path: origin.clone(), source })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(malformed(&origin, "the token file is empty"));
    }
    Ok(Token::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "rwp_abc\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap().expose(), "rwp_abc");
        std::fs::write(&path, " \n").unwrap();
        assert!(read_token_file(&path).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn the_bearer_header_is_added_and_never_printed() {
        let token = Token::new("s3cret");
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let mut bearer = Bearer::new(Some(&token), "RWP_TOKEN").unwrap();
        let request = bearer.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap().to_str().unwrap(), "Bearer s3cret");
        assert!(!format!("{bearer:?}").contains("s3cret"));
        let mut none = Bearer::new(None, "RWP_TOKEN").unwrap();
        assert!(none.call(tonic::Request::new(())).unwrap().metadata().get("authorization").is_none());
        let err = Bearer::new(Some(&Token::new("two words")), "RWP_TOKEN").unwrap_err().to_string();
        assert!(err.starts_with("RWP_TOKEN:") && !err.contains("two words"), "{err}");
    }
}
