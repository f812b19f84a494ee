//! Idle and half-open connections are closed, and one peer cannot hold
//! unbounded connections: on the gRPC port (plaintext and TLS) a connection
//! that has not delivered a complete request within
//! `connection_first_request_timeout_ms` is closed, and a connection beyond
//! `max_connections_per_peer` from one address is closed at once; the
//! metrics port closes a connection that does not finish its headers and
//! keeps the same per-peer limit. Clients that sent a request are never cut
//! by the deadline: a quiet watch stream and a 30 s long-polled lease
//! outlive it many times over. Raw sockets on 127.0.0.1 against in-process
//! servers.

use std::time::{Duration, Instant};

use rwp_integration_tests::connections::{closed_within, connect_and_send, HTTP2_PREFACE};
use rwp_integration_tests::in_process::{http_get, Cluster};
use rwp_parameter_server::ServerConfig;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::worker_service_client::WorkerServiceClient;
use rwp_proto::v1::{LeaseTaskRequest, RegisterRequest, WatchJobRequest};
use rwp_sdk::{Client, JobSpecBuilder, JobState, Method};

const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A server (no workers) whose connections must deliver a request within
/// [`FIRST_REQUEST_TIMEOUT`], with `configure` applied on top.
async fn server(configure: impl FnOnce(&mut ServerConfig)) -> Cluster {
    Cluster::start_configured(
        0,
        |c| {
            c.connection_first_request_timeout_ms = FIRST_REQUEST_TIMEOUT.as_millis() as u64;
            configure(c);
        },
        |_| {},
    )
    .await
}

/// The server closed the connection at its deadline: not before, nor long after.
fn closed_at_the_deadline(closed: Option<Duration>, what: &str) {
    let closed = closed.unwrap_or_else(|| panic!("{what}: still open 5 s after connecting"));
    assert!(closed >= FIRST_REQUEST_TIMEOUT - Duration::from_millis(100), "{what}: closed after {closed:?}, too early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_request_timeout() {
    let cluster = server(|_| {}).await;
    let mut silent = connect_and_send(cluster.addr, b"").await;
    closed_at_the_deadline(closed_within(&mut silent, Duration::from_secs(5)).await, "silent connection");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_only_the_http2_preface_is_closed_likewise() {
    let cluster = server(|_| {}).await;
    let mut preface_only = connect_and_send(cluster.addr, HTTP2_PREFACE).await;
    closed_at_the_deadline(closed_within(&mut preface_only, Duration::from_secs(5)).await, "preface only");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_never_starts_its_handshake_is_closed_at_the_same_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let cluster = server(|c| (c.tls_cert, c.tls_key) = (Some(cert_path), Some(key_path))).await;
    let mut silent = connect_and_send(cluster.addr, b"").await;
    // Well before the TLS handshake's own 10 s limit.
    closed_at_the_deadline(closed_within(&mut silent, Duration::from_secs(5)).await, "silent TLS connection");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_peer_limit_are_closed_at_once_on_both_ports() {
    let cluster = server(|c| {
        c.max_connections_per_peer = 3;
        // The admitted connections send nothing: keep them past the test.
        c.connection_first_request_timeout_ms = 60_000;
    })
    .await;
    for (port, addr) in [("gRPC", cluster.addr), ("metrics", cluster.metrics)] {
        let mut admitted = Vec::new();
        for _ in 0..3 {
            admitted.push(connect_and_send(addr, b"").await);
        }
        let mut extra = connect_and_send(addr, b"").await;
        let closed = closed_within(&mut extra, Duration::from_secs(2)).await;
        assert!(closed.is_some_and(|t| t < Duration::from_secs(1)), "{port}: the 4th connection is closed at once");
        for (i, connection) in admitted.iter_mut().enumerate() {
            let closed = closed_within(connection, Duration::from_millis(300)).await;
            assert_eq!(closed, None, "{port}: admitted connection {i} stays open");
        }

        // A connection that ends frees its place.
        drop(admitted.pop());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut next = connect_and_send(addr, b"").await;
            if closed_within(&mut next, Duration::from_millis(500)).await.is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "{port}: the freed place is never given to a new connection");
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_closes_a_connection_that_never_finishes_its_headers() {
    let cluster = server(|_| {}).await;
    let mut unfinished = connect_and_send(cluster.metrics, b"GET /metrics HTTP/1.1\r\nHost: rwp\r\n").await;
    closed_at_the_deadline(closed_within(&mut unfinished, Duration::from_secs(5)).await, "unfinished headers");
    assert!(http_get(cluster.metrics, "/healthz").await.starts_with("ok"), "complete requests are answered");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_stream_and_the_sdk_outlive_the_first_request_timeout() {
    let cluster = server(|_| {}).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let spec = JobSpecBuilder::new(Method::MArwp).epochs(1).batch_size(128).seed(5).build().unwrap();
    let job = client.submit("quiet-watch", &spec).await.unwrap();

    // A raw client, which does not reconnect: a cut connection ends the stream with an error.
    let mut jobs = JobServiceClient::connect(cluster.url()).await.unwrap();
    let mut events =
        jobs.watch_job(WatchJobRequest { job_id: job.id.clone(), from_step: 0 }).await.unwrap().into_inner();
    // No worker yet: the stream stays quiet for three deadlines.
    tokio::time::sleep(3 * FIRST_REQUEST_TIMEOUT).await;
    let cluster = cluster.with_workers(1).await;
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while tokio::time::timeout_at(deadline.into(), events.message())
        .await
        .expect("the watch ends in time")
        .unwrap()
        .is_some()
    {
        received += 1;
    }
    assert!(received > 7, "every step and the terminal state arrived: {received} events");

    // The SDK's connection has sat idle past the deadline too.
    tokio::time::sleep(2 * FIRST_REQUEST_TIMEOUT).await;
    assert_eq!(client.get(&job.id).await.unwrap().state, JobState::Succeeded);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polled_lease_outlives_the_first_request_timeout() {
    let cluster = server(|_| {}).await;
    let mut worker = WorkerServiceClient::connect(cluster.url()).await.unwrap();
    let id = worker
        .register(RegisterRequest { name: "poller".into(), device: "cpu".into() })
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    tokio::time::sleep(2 * FIRST_REQUEST_TIMEOUT).await;
    let started = Instant::now();
    // There is no job: the server holds the call for the whole 30 s.
    let leased = worker.lease_task(LeaseTaskRequest { worker_id: id, wait_ms: 30_000 }).await.unwrap();
    assert!(leased.into_inner().task.is_none());
    assert!(started.elapsed() >= Duration::from_secs(29), "held {:?}", started.elapsed());
    cluster.shutdown().await;
}
