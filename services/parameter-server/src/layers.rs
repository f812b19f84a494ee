//! The tower middleware every request passes, outermost first: marking its
//! connection as having delivered a request
//! ([`crate::connections::FirstRequestLayer`]), load shedding (refuse at once when saturated rather than queue), a global
//! concurrency limit, then authentication. Request timeouts and
//! decoded-message size limits are set on the tonic server and services.
//!
//! Authentication resolves each request's [`Principal`] from its headers,
//! refuses a role the API it calls is not for (workers call
//! `rwp.v1.WorkerService` only, users and admins `rwp.v1.JobService` only),
//! and hands the principal to the handlers in the request's extensions.
//! Health and reflection stay open.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use crate::domain::{Api, Principal};
use crate::error::ServerError;
use crate::tokens::TokenTable;

/// Resolves who a request comes from, from its headers.
pub type Authenticate = Arc<dyn Fn(&http::HeaderMap) -> Result<Principal, ServerError> + Send + Sync>;

/// Every caller is [`Principal::anonymous`]: a server without a tokens file.
#[must_use]
pub fn open() -> Authenticate {
    Arc::new(|_| Ok(Principal::anonymous()))
}

/// Callers present `authorization: Bearer <token>` with a token of `tokens`.
#[must_use]
pub fn bearer_tokens(tokens: TokenTable) -> Authenticate {
    Arc::new(move |headers| tokens.authenticate(bearer_token(headers)?))
}

/// The token of an `authorization: Bearer <token>` header.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<&str, ServerError> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
        ServerError::Unauthenticated("no credentials: this server requires `authorization: Bearer <token>`".to_owned())
    })?;
    let malformed = || ServerError::Unauthenticated("the authorization header must be `Bearer <token>`".to_owned());
    let value = value.to_str().map_err(|_| malformed())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(malformed()),
    }
}

/// The API a request's path belongs to; `None` for the open services (and
/// unknown paths, which tonic answers UNIMPLEMENTED).
fn api_of(path: &str) -> Option<Api> {
    if path.starts_with("/rwp.v1.JobService/") {
        Some(Api::Jobs)
    } else if path.starts_with("/rwp.v1.WorkerService/") {
        Some(Api::Workers)
    } else {
        None
    }
}

/// Paths a probe or a tool may call without credentials.
const OPEN_PREFIXES: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/"];

#[derive(Clone)]
pub struct AuthLayer {
    authenticate: Authenticate,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl AuthLayer {
    #[must_use]
    pub fn new(authenticate: Authenticate) -> Self {
        Self { authenticate }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, authenticate: self.authenticate.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticate: Authenticate,
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").finish_non_exhaustive()
    }
}

impl<S, B, R> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures_util::future::Either<std::future::Ready<Result<http::Response<R>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            let api = api_of(path);
            let resolved = (self.authenticate)(request.headers()).and_then(|principal| {
                if let Some(api) = api {
                    principal.may_call(api)?;
                }
                Ok(principal)
            });
            match resolved {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                }
                Err(e) => {
                    tracing::debug!(path, "refused: {e}");
                    return futures_util::future::Either::Left(std::future::ready(Ok(Status::from(e).into_http())));
                }
            }
        }
        futures_util::future::Either::Right(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        if let Some(v) = value {
            map.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_bearer_scheme_is_required_and_case_insensitive() {
        assert_eq!(bearer_token(&headers(Some("Bearer rwp_x"))).unwrap(), "rwp_x");
        assert_eq!(bearer_token(&headers(Some("bearer  rwp_x "))).unwrap(), "rwp_x");
        for bad in [Some("Basic dXNlcjpwdw=="), Some("Bearer "), Some("rwp_x"), None] {
            let err = bearer_token(&headers(bad)).unwrap_err();
            assert!(matches!(err, ServerError::Unauthenticated(_)), "{bad:?}: {err:?}");
        }
        assert!(bearer_token(&headers(None)).unwrap_err().to_string().contains("requires `authorization: Bearer"));
    }

    #[test]
    fn paths_map_to_their_api() {
        assert_eq!(api_of("/rwp.v1.JobService/ListJobs"), Some(Api::Jobs));
        assert_eq!(api_of("/rwp.v1.WorkerService/Register"), Some(Api::Workers));
        assert_eq!(api_of("/rwp.v1.JobServiceX/ListJobs"), None);
    }
}
