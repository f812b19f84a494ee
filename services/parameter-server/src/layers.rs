//! The tower middleware every request passes, outermost first:
//! load shedding (refuse at once when saturated rather than queue), a global
//! concurrency limit, then the authentication slot. Request timeouts and
//! decoded-message size limits are set on the tonic server and services.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

/// Decides whether a request may proceed, from its headers (`authorization`,
/// client certificates' identity headers, ...). The security layer of the
/// service plugs in here; without one, every request proceeds.
pub type Authenticate = Arc<dyn Fn(&http::HeaderMap) -> Result<(), Status> + Send + Sync>;

/// Paths a probe or a tool may call without credentials.
const OPEN_PREFIXES: [&str; 2] = ["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/"];

#[derive(Clone)]
pub struct AuthLayer {
    authenticate: Option<Authenticate>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").field("enabled", &self.authenticate.is_some()).finish()
    }
}

impl AuthLayer {
    #[must_use]
    pub fn new(authenticate: Option<Authenticate>) -> Self {
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
    authenticate: Option<Authenticate>,
}

impl<S> std::fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("enabled", &self.authenticate.is_some()).finish()
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(authenticate) = &self.authenticate {
            let open = OPEN_PREFIXES.iter().any(|p| request.uri().path().starts_with(p));
            if !open {
                if let Err(status) = authenticate(request.headers()) {
                    return futures_util::future::Either::Left(std::future::ready(Ok(status.into_http())));
                }
            }
        }
        futures_util::future::Either::Right(self.inner.call(request))
    }
}
