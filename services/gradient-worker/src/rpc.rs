//! The worker's side of the `WorkerService` calls: connecting with backoff,
//! registering, leasing, renewing, fetching weights and pushing results.

use std::error::Error as _;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use rwp_proto::v1::gradient_chunk::Part;
use rwp_proto::v1::worker_service_client::WorkerServiceClient;
use rwp_proto::v1::{
    FetchWeightsRequest, GradientChunk, LeaseTaskRequest, RegisterRequest, ReleaseLeaseRequest, RenewLeaseRequest,
    Task, WeightsChunk,
};
use rwp_spec::work::PushHeader;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tracing::{debug, info, trace, warn};

use rwp_credentials::{client_tls, read_token_file, Bearer, Pem};

use crate::config::{WorkerConfig, INITIAL_BACKOFF_MS};
use crate::WorkerError;

/// The worker service's client stub, with the worker's token on every call.
pub(crate) type Client = WorkerServiceClient<InterceptedService<Channel, Bearer>>;

/// HTTP/2 flow-control windows: large enough that a weights pull or a
/// gradient push is not held back by window updates on a fast network.
const WINDOW_BYTES: u32 = 8 << 20;
/// The largest HTTP/2 frame the server may send us (the protocol maximum).
const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;
/// Weights chunks are sized by the server: accept generous ones.
const MIN_DECODING_BYTES: usize = 64 << 20;
/// Deadline of the small unary calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The renewal interval used when the server announces none.
const FALLBACK_RENEW: Duration = Duration::from_secs(1);

/// Whether a failed call means the connection is gone (server down or
/// restarting), as opposed to an answer from a live server.
pub(crate) fn is_disconnect(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        // Built on this side from a transport failure (a status sent by the
        // server has no source).
        Code::Unknown | Code::Internal | Code::Cancelled => status.source().is_some(),
        _ => false,
    }
}

/// Exponential backoff (backon), without end: 100 ms doubling up to
/// `max_ms`. `build()` starts it over. No jitter: backon's adds up to the
/// whole delay again, which would break the `max_backoff_ms` cap.
pub(crate) fn backoff(max_ms: u64) -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(INITIAL_BACKOFF_MS))
        .with_max_delay(Duration::from_millis(max_ms))
        .without_max_times()
}

/// A registration with a (live) server.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub client: Client,
    pub worker_id: String,
    pub renew_interval: Duration,
}

/// How the worker reaches the server: the endpoint, with TLS when the
/// server is `https://`, and its token. Made once, at startup, so that a bad
/// credential file stops the worker at once, naming the file.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    endpoint: Endpoint,
    bearer: Bearer,
}

impl Connector {
    pub(crate) fn new(config: &WorkerConfig) -> Result<Self, WorkerError> {
        let credentials = |e: rwp_credentials::CredentialsError| WorkerError::Credentials(e.to_string());
        let mut endpoint = Endpoint::from_shared(config.server.clone())
            .map_err(|e| WorkerError::Config { field: "server", reason: e.to_string() })?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .initial_stream_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(20));
        if config.server.starts_with("https://") {
            let read =
                |path: &Option<std::path::PathBuf>| path.as_deref().map(Pem::read).transpose().map_err(credentials);
            let (ca, cert, key) = (read(&config.tls_ca)?, read(&config.tls_cert)?, read(&config.tls_key)?);
            let tls = client_tls(ca.as_ref(), cert.as_ref().zip(key.as_ref()), config.tls_domain.as_deref())
                .map_err(credentials)?;
            endpoint = endpoint.tls_config(tls).map_err(|e| WorkerError::Credentials(format!("TLS: {e}")))?;
        }
        let token = match &config.token_file {
            Some(path) => Some(read_token_file(path).map_err(credentials)?),
            None => config.token.clone(),
        };
        let origin = if config.token_file.is_some() { "token_file" } else { "token" };
        let bearer = Bearer::new(token.as_ref(), origin).map_err(credentials)?;
        Ok(Self { endpoint, bearer })
    }

    async fn connect(&self, config: &WorkerConfig) -> Result<Client, WorkerError> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|source| WorkerError::Connect { server: config.server.clone(), source })?;
        let message_limit = config.chunk_bytes + (1 << 20);
        Ok(WorkerServiceClient::with_interceptor(channel, self.bearer.clone())
            .max_encoding_message_size(message_limit)
            .max_decoding_message_size(message_limit.max(MIN_DECODING_BYTES)))
    }

    async fn register_once(&self, config: &WorkerConfig, device: &str) -> Result<Session, WorkerError> {
        let mut client = self.connect(config).await?;
        let mut request = Request::new(RegisterRequest { name: config.name.clone(), device: device.to_owned() });
        request.set_timeout(CALL_TIMEOUT);
        let response = client.register(request).await.map_err(WorkerError::rpc("Register"))?.into_inner();
        let renew_interval = match response.renew_interval_ms {
            0 => FALLBACK_RENEW,
            ms => Duration::from_millis(u64::from(ms)),
        };
        Ok(Session { client, worker_id: response.worker_id, renew_interval })
    }

    /// Connects and registers, retrying with backoff until it works (callers
    /// race it against shutdown).
    pub(crate) async fn connect_and_register(
        &self,
        config: &WorkerConfig,
        device: &str,
    ) -> Result<Session, WorkerError> {
        let mut attempt = 0u64;
        let session = (|| self.register_once(config, device))
            .retry(backoff(config.max_backoff_ms))
            .when(|e| !matches!(e, WorkerError::Config { .. }))
            .notify(|e, delay| {
                attempt += 1;
                warn!(
                    server = %config.server,
                    attempt,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot register with the server: {e}"
                );
            })
            .await?;
        info!(
            server = %config.server,
            worker_id = %session.worker_id,
            renew_interval_ms = session.renew_interval.as_millis() as u64,
            "registered"
        );
        Ok(session)
    }
}

/// Leases a task; with it, the response metadata, which carries the trace
/// context of the server's span for the task's update.
/// What the server hands a worker that asks for work.
#[derive(Debug)]
pub(crate) enum Offered {
    /// A task, with the metadata that carries its update's trace context,
    /// and where its weights version comes from.
    Task(Box<Task>, tonic::metadata::MetadataMap, Weights),
    /// A submitted job's own data to inspect.
    Inspection(rwp_proto::v1::InspectionTask),
}

pub(crate) async fn lease(session: &Session, wait_ms: u32) -> Result<Option<Offered>, WorkerError> {
    let mut request = Request::new(LeaseTaskRequest { worker_id: session.worker_id.clone(), wait_ms });
    request.set_timeout(Duration::from_millis(u64::from(wait_ms)) + CALL_TIMEOUT);
    let response = session.client.clone().lease_task(request).await.map_err(WorkerError::rpc("LeaseTask"))?;
    let (metadata, body, _) = response.into_parts();
    Ok(match (body.task, body.inspection) {
        (Some(task), _) => Some(Offered::Task(Box::new(task), metadata, Weights::Fetch)),
        (None, Some(inspection)) => Some(Offered::Inspection(inspection)),
        (None, None) => None,
    })
}

/// Where a task's weights version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Weights {
    /// The worker holds it, unless it dropped it since (then: fetch).
    Held,
    /// It follows the offer on the Tasks stream.
    Incoming,
    /// Fetched with FetchWeights unless the worker holds it (LeaseTask).
    Fetch,
}

fn closed() -> WorkerError {
    WorkerError::rpc("Tasks")(Status::unavailable("the server closed the task stream"))
}

/// A worker's Tasks stream: it says Ready, the server answers with the next
/// task (and its weights, unless held) or inspection when there is one.
#[derive(Debug)]
pub(crate) struct TaskStream {
    ready: tokio::sync::mpsc::Sender<rwp_proto::v1::WorkerReady>,
    offers: tonic::Streaming<rwp_proto::v1::Offer>,
    /// Bytes of the last task's weights not read yet (its task failed
    /// first): skipped before the next offer.
    unread: u64,
}

impl TaskStream {
    /// Opens the session's stream; `None` when the server has none (an
    /// older server: the worker leases with LeaseTask then).
    pub(crate) async fn open(session: &Session) -> Result<Option<Self>, WorkerError> {
        let (ready, requests) = tokio::sync::mpsc::channel(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(requests);
        match session.client.clone().tasks(stream).await {
            Ok(response) => Ok(Some(Self { ready, offers: response.into_inner(), unread: 0 })),
            Err(status) if status.code() == Code::Unimplemented => Ok(None),
            Err(status) => Err(WorkerError::rpc("Tasks")(status)),
        }
    }

    /// Asks for the next task, saying which weights versions this worker
    /// holds, and waits for it (as long as it takes). A task's weights, when
    /// they come with it, are read next with [`Self::weights`].
    pub(crate) async fn next(&mut self, session: &Session, holds: Vec<(String, u64)>) -> Result<Offered, WorkerError> {
        use rwp_proto::v1::offer::Part;
        let holds = holds.into_iter().map(|(job_id, version)| rwp_proto::v1::HeldVersion { job_id, version }).collect();
        let ready = rwp_proto::v1::WorkerReady { worker_id: session.worker_id.clone(), holds };
        while self.unread > 0 {
            match self.part().await?.ok_or_else(closed)? {
                Part::Weights(chunk) => self.unread = self.unread.saturating_sub(chunk.data.len() as u64),
                _ => return Err(WorkerError::InvalidTask("a task's weights ended early".to_owned())),
            }
        }
        self.ready.send(ready).await.map_err(|_| closed())?;
        let offered = match self.part().await?.ok_or_else(closed)? {
            Part::Inspection(inspection) => return Ok(Offered::Inspection(inspection)),
            Part::Task(offered) => offered,
            Part::Weights(_) => return Err(WorkerError::InvalidTask("weights came before their task".to_owned())),
        };
        let task = offered.task.ok_or_else(|| WorkerError::InvalidTask("an offer without its task".to_owned()))?;
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (key, value) in &offered.trace_context {
            if let (Ok(key), Ok(value)) = (key.parse::<tonic::metadata::AsciiMetadataKey>(), value.parse()) {
                metadata.insert(key, value);
            }
        }
        self.unread = offered.weights_bytes;
        let weights = if offered.weights_bytes > 0 { Weights::Incoming } else { Weights::Held };
        Ok(Offered::Task(Box::new(task), metadata, weights))
    }

    /// The weights version `version` of `job_id` that follows the last
    /// task's offer, received into `buffer`.
    pub(crate) async fn weights(
        &mut self,
        job_id: &str,
        version: u64,
        buffer: Vec<u8>,
    ) -> Result<Vec<u8>, WorkerError> {
        use rwp_proto::v1::offer::Part;
        let bad = |reason| WorkerError::Weights { job_id: job_id.to_owned(), version, reason };
        let mut assembler = Assembler::new(version, buffer);
        while self.unread > 0 {
            match self.part().await?.ok_or_else(closed)? {
                Part::Weights(chunk) => {
                    self.unread = self.unread.saturating_sub(chunk.data.len() as u64);
                    assembler.push(chunk).map_err(bad)?;
                }
                _ => return Err(bad("the weights ended before their announced size".to_owned())),
            }
        }
        assembler.finish().map_err(bad)
    }

    async fn part(&mut self) -> Result<Option<rwp_proto::v1::offer::Part>, WorkerError> {
        loop {
            match self.offers.message().await.map_err(WorkerError::rpc("Tasks"))? {
                None => return Ok(None),
                Some(rwp_proto::v1::Offer { part: Some(part) }) => return Ok(Some(part)),
                Some(_) => {}
            }
        }
    }
}

/// Pushes what inspecting a job's data found.
pub(crate) async fn push_inspection(
    session: &Session,
    push: rwp_spec::work::InspectionPush,
) -> Result<(), WorkerError> {
    let mut request = Request::new(rwp_proto::v1::PushInspectionRequest::from(push));
    request.set_timeout(CALL_TIMEOUT);
    session.client.clone().push_inspection(request).await.map_err(WorkerError::rpc("PushInspection"))?;
    Ok(())
}

/// Renews a lease every `interval` until dropped (aborted). Stops when the
/// server says the lease is gone; then a built-in model's result is pushed
/// all the same, a sandboxed computation is killed.
pub(crate) async fn keep_renewing(session: Session, lease_id: String, aborter: crate::compute::Aborter) {
    let interval = session.renew_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = session.client.clone();
    loop {
        ticker.tick().await;
        let mut request =
            Request::new(RenewLeaseRequest { worker_id: session.worker_id.clone(), lease_id: lease_id.clone() });
        request.set_timeout(CALL_TIMEOUT);
        match client.renew_lease(request).await {
            Ok(r) => trace!(deadline_unix_ms = r.into_inner().lease_deadline_unix_ms, "lease renewed"),
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {
                warn!(
                    "the lease is gone ({}); a built-in model's task finishes anyway (the server drops the result \
                     if another worker's came first), a sandboxed one is stopped",
                    s.message()
                );
                aborter.abort("its lease is gone (the job was cancelled, or the task was given to another worker)");
                return;
            }
            Err(s) => warn!("renewing the lease failed, will retry: {} ({:?})", s.message(), s.code()),
        }
    }
}

/// Gives a lease back (best effort).
pub(crate) async fn release(
    session: &Session,
    lease_id: &str,
    error: Option<String>,
    storage_unavailable: bool,
) -> Result<(), WorkerError> {
    let mut request = Request::new(ReleaseLeaseRequest {
        worker_id: session.worker_id.clone(),
        lease_id: lease_id.to_owned(),
        error: error.unwrap_or_default(),
        storage_unavailable,
    });
    request.set_timeout(CALL_TIMEOUT);
    session.client.clone().release_lease(request).await.map_err(WorkerError::rpc("ReleaseLease"))?;
    Ok(())
}

/// Puts a streamed file back together, checking that the chunks tile
/// exactly `total_bytes` in order.
#[derive(Debug)]
pub(crate) struct Assembler {
    version: u64,
    total: Option<u64>,
    bytes: Vec<u8>,
}

impl Assembler {
    /// Assembles into `buffer` (cleared; its capacity is reused).
    pub(crate) fn new(version: u64, mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        Self { version, total: None, bytes: buffer }
    }

    pub(crate) fn push(&mut self, chunk: WeightsChunk) -> Result<(), String> {
        if chunk.version != self.version {
            return Err(format!("a chunk of version {} arrived", chunk.version));
        }
        let total = *self.total.get_or_insert(chunk.total_bytes);
        if chunk.total_bytes != total {
            return Err(format!("total_bytes changed from {total} to {}", chunk.total_bytes));
        }
        if self.bytes.is_empty() {
            self.bytes.reserve_exact(total.min(1 << 30) as usize);
        }
        let have = self.bytes.len() as u64;
        if chunk.offset != have {
            return Err(format!("chunk at offset {} where {have} was expected", chunk.offset));
        }
        if have + chunk.data.len() as u64 > total {
            return Err(format!("chunk at offset {have} of {} bytes runs past total_bytes {total}", chunk.data.len()));
        }
        self.bytes.extend_from_slice(&chunk.data);
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>, String> {
        match self.total {
            None => Err("the stream ended without any chunk".to_owned()),
            Some(total) if self.bytes.len() as u64 != total => {
                Err(format!("the stream ended after {} of {total} bytes", self.bytes.len()))
            }
            Some(_) => Ok(self.bytes),
        }
    }
}

/// Fetches weights version `version` of a job as one snapshot file, into `buffer`.
pub(crate) async fn fetch_weights(
    session: &Session,
    job_id: &str,
    version: u64,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, WorkerError> {
    let started = std::time::Instant::now();
    let call = WorkerError::rpc("FetchWeights");
    let request = FetchWeightsRequest { job_id: job_id.to_owned(), version };
    let mut stream = session.client.clone().fetch_weights(request).await.map_err(call)?.into_inner();
    let mut assembler = Assembler::new(version, buffer);
    let bad = |reason| WorkerError::Weights { job_id: job_id.to_owned(), version, reason };
    while let Some(chunk) = stream.message().await.map_err(WorkerError::rpc("FetchWeights"))? {
        assembler.push(chunk).map_err(bad)?;
    }
    let bytes = assembler.finish().map_err(bad)?;
    debug!(version, bytes = bytes.len(), elapsed_ms = started.elapsed().as_millis() as u64, "weights fetched");
    Ok(bytes)
}

/// Pushes a result: the header, then the payload in chunks of at most
/// `chunk_bytes`. Returns whether the server accepted it (false: duplicate).
pub(crate) async fn push(
    session: &Session,
    header: PushHeader,
    payload: Bytes,
    chunk_bytes: usize,
) -> Result<bool, WorkerError> {
    let chunks = payload.len().div_ceil(chunk_bytes);
    let data = (0..chunks).map(move |i| {
        let start = i * chunk_bytes;
        let end = (start + chunk_bytes).min(payload.len());
        GradientChunk { part: Some(Part::Data(payload.slice(start..end))) }
    });
    let messages = std::iter::once(GradientChunk { part: Some(Part::Header(header.into())) }).chain(data);
    let mut request = Request::new(tokio_stream::iter(messages));
    rwp_telemetry::inject(&tracing::Span::current(), request.metadata_mut());
    let response = session.client.clone().push_gradient(request).await.map_err(WorkerError::rpc("PushGradient"))?;
    Ok(response.into_inner().accepted)
}

/// Pushes an evaluation shard's result. Returns whether the server
/// accepted it (false: duplicate).
pub(crate) async fn push_evaluation(session: &Session, push: rwp_spec::work::EvalPush) -> Result<bool, WorkerError> {
    let mut request = Request::new(rwp_proto::v1::PushEvaluationRequest::from(push));
    request.set_timeout(CALL_TIMEOUT);
    rwp_telemetry::inject(&tracing::Span::current(), request.metadata_mut());
    let response = session.client.clone().push_evaluation(request).await.map_err(WorkerError::rpc("PushEvaluation"))?;
    Ok(response.into_inner().accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    fn chunk(offset: u64, data: &[u8]) -> WeightsChunk {
        WeightsChunk { version: 3, total_bytes: 6, offset, data: Bytes::copy_from_slice(data) }
    }

    #[test]
    fn chunks_are_assembled_in_order() {
        let mut a = Assembler::new(3, Vec::new());
        a.push(chunk(0, b"abc")).unwrap();
        a.push(chunk(3, b"de")).unwrap();
        a.push(chunk(5, b"f")).unwrap();
        assert_eq!(a.finish().unwrap(), b"abcdef");
    }

    #[test]
    fn a_reused_buffer_starts_empty() {
        let mut a = Assembler::new(3, b"stale bytes".to_vec());
        a.push(chunk(0, b"abcdef")).unwrap();
        assert_eq!(a.finish().unwrap(), b"abcdef");
    }

    #[test]
    fn gaps_overlaps_overruns_and_short_streams_are_refused() {
        let mut a = Assembler::new(3, Vec::new());
        a.push(chunk(0, b"abc")).unwrap();
        assert!(a.push(chunk(4, b"e")).unwrap_err().contains("offset 4"));
        assert!(a.push(chunk(2, b"c")).is_err());
        assert!(a.push(chunk(3, b"defg")).unwrap_err().contains("past total_bytes"));
        assert!(a.push(WeightsChunk { version: 2, ..chunk(3, b"d") }).is_err());
        assert!(a.push(WeightsChunk { total_bytes: 7, ..chunk(3, b"d") }).is_err());
        assert!(a.finish().unwrap_err().contains("3 of 6"));
        assert!(Assembler::new(3, Vec::new()).finish().is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let policy = backoff(500);
        let mut b = policy.build();
        let delays: Vec<u64> = (0..5).map(|_| b.next().unwrap().as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        b = policy.build();
        assert_eq!(b.next().unwrap(), Duration::from_millis(100));
    }

    #[test]
    fn only_transport_failures_count_as_disconnects() {
        assert!(is_disconnect(&Status::unavailable("connection refused")));
        assert!(!is_disconnect(&Status::unknown("from the server")));
        assert!(!is_disconnect(&Status::not_found("worker")));
    }
}
