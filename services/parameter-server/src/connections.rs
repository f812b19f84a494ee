//! Limits on the connections of the gRPC ports (the main port, plaintext or
//! TLS, and the plaintext health port), so that idle and half-open
//! connections cannot pile up:
//!
//! - one peer IP address holds at most `max_connections_per_peer` at once;
//!   one more is closed as soon as it is accepted;
//! - a connection must deliver its first complete request (TLS handshake,
//!   HTTP/2 preface, the request's headers) within
//!   `connection_first_request_timeout_ms` of being accepted, else it is
//!   closed. [`FirstRequestLayer`] marks the connection when a request
//!   reaches the services; from then on the deadline is off, so long-polled
//!   leases and long streams are never cut by it;
//! - HTTP/2 keep-alive pings ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`])
//!   close a connection whose peer stopped answering.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rwp_telemetry::{ConnectionsPerPeer, PeerPermit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::{Layer, Service};
use tracing::{debug, warn};

use crate::ServerConfig;

/// How often the server pings an HTTP/2 connection's peer.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long the server waits for the answer to a ping before it closes the
/// connection.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Admits the connections of a gRPC port within the configured limits.
#[derive(Debug)]
pub struct Admission {
    peers: ConnectionsPerPeer,
    first_request_timeout: Duration,
}

impl Admission {
    /// Limits from `config`, for one port: each port counts its peers' connections apart.
    #[must_use]
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            peers: ConnectionsPerPeer::new(config.max_connections_per_peer),
            first_request_timeout: Duration::from_millis(config.connection_first_request_timeout_ms),
        }
    }

    /// The connections of `listener` that are admitted, each with its
    /// first-request deadline running; the others are closed at once.
    pub fn incoming(self, listener: TcpListener) -> impl Stream<Item = io::Result<GuardedConnection>> + Send {
        TcpListenerStream::new(listener).filter_map(move |accepted| match accepted {
            Ok(stream) => self.admit(stream).map(Ok),
            Err(e) => Some(Err(e)),
        })
    }

    fn admit(&self, stream: TcpStream) -> Option<GuardedConnection> {
        let remote = stream.peer_addr().ok()?;
        let Some(permit) = self.peers.admit(remote.ip()) else {
            warn!(
                peer = %remote.ip(),
                limit = self.peers.limit(),
                "closed a connection beyond the peer's limit (max_connections_per_peer)"
            );
            return None;
        };
        let _ = stream.set_nodelay(true);
        let tcp = TcpConnectInfo { local_addr: stream.local_addr().ok(), remote_addr: Some(remote) };
        Some(GuardedConnection {
            stream,
            info: ConnectionInfo { tcp, served: Arc::default() },
            first_request_deadline: Some(Box::pin(tokio::time::sleep(self.first_request_timeout))),
            first_request_timeout: self.first_request_timeout,
            _permit: permit,
        })
    }
}

/// What the requests of a connection know about it (in their extensions).
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    tcp: TcpConnectInfo,
    served: Arc<AtomicBool>,
}

impl ConnectionInfo {
    /// The peer's address.
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.tcp.remote_addr
    }

    fn mark_served(&self) {
        self.served.store(true, Ordering::Release);
    }

    fn served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }
}

/// An admitted TCP connection: it holds its peer's place, and fails its
/// reads once its first-request deadline has passed without a request.
#[derive(Debug)]
pub struct GuardedConnection {
    stream: TcpStream,
    info: ConnectionInfo,
    first_request_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    first_request_timeout: Duration,
    _permit: PeerPermit,
}

impl Connected for GuardedConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for GuardedConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.first_request_deadline.as_mut() {
            if this.info.served() {
                this.first_request_deadline = None;
            // Polling the deadline also wakes the connection when it passes,
            // though the peer sends nothing.
            } else if deadline.as_mut().poll(cx).is_ready() {
                debug!(peer = ?this.info.remote_addr(), "closing a connection that sent no complete request in time");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no complete request within {} ms of connecting (connection_first_request_timeout_ms)",
                        this.first_request_timeout.as_millis()
                    ),
                )));
            }
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Marks each request's connection as having delivered a request, which
/// lifts its first-request deadline. Outermost, so that a request refused
/// later (shed, unauthenticated) counts as well.
#[derive(Clone, Copy, Debug, Default)]
pub struct FirstRequestLayer;

impl<S> Layer<S> for FirstRequestLayer {
    type Service = FirstRequestService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FirstRequestService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct FirstRequestService<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for FirstRequestService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(info) = request.extensions().get::<ConnectionInfo>() {
            info.mark_served();
            // `tonic::Request::remote_addr` looks for tonic's own connection info.
            let tcp = info.tcp.clone();
            request.extensions_mut().insert(tcp);
        }
        self.inner.call(request)
    }
}
