//! The middleware in front of every service: the authentication slot
//! resolves the caller or refuses the request (health stays open for
//! probes), and the concurrency limit sheds load instead of queueing it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rwp_parameter_server::domain::{CallerRole, Limits, Principal};
use rwp_parameter_server::{Listeners, ServeOptions, ServerConfig, ServerError};
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::worker_service_client::WorkerServiceClient;
use rwp_proto::v1::{LeaseTaskRequest, ListJobsRequest, RegisterRequest};
use tonic::{Code, Request};

async fn start(
    config: ServerConfig,
    options: ServeOptions,
) -> (String, tokio::sync::oneshot::Sender<()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig { data_dir: dir.path().join("data"), ..config };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = Listeners { grpc: listener, metrics: None, health: None };
    tokio::spawn(rwp_parameter_server::serve_with_listeners(listeners, config, options, async {
        let _ = stopped.await;
    }));
    (url, stop, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authentication_slot_guards_every_service_but_health() {
    let authenticate: rwp_parameter_server::layers::Authenticate =
        Arc::new(|headers: &http::HeaderMap| match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some("Bearer s3cret") => {
                Ok(Principal { name: "tester".into(), role: CallerRole::Admin, limits: Limits::default() })
            }
            _ => Err(ServerError::Unauthenticated("a valid bearer token is required".into())),
        });
    let (url, _stop, _dir) =
        start(ServerConfig::default(), ServeOptions { authenticate: Some(authenticate), ..ServeOptions::default() })
            .await;
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();

    let mut anonymous = JobServiceClient::new(channel.clone());
    let refused = anonymous.list_jobs(ListJobsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("bearer token"));
    let mut worker = WorkerServiceClient::new(channel.clone());
    let refused = worker.register(RegisterRequest { name: "w".into(), device: "cpu".into() }).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let mut authorised = JobServiceClient::with_interceptor(channel.clone(), |mut r: Request<()>| {
        r.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
        Ok(r)
    });
    assert!(authorised.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner().jobs.is_empty());

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: "rwp.v1.JobService".into() };
    assert_eq!(health.check(request).await.unwrap().into_inner().status, 1, "health answers probes without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_are_shed_not_queued() {
    let config = ServerConfig { max_concurrent_requests: 1, ..ServerConfig::default() };
    let (url, _stop, _dir) = start(config, ServeOptions::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(url).unwrap().connect().await.unwrap();
    let mut worker = WorkerServiceClient::new(channel.clone());
    let id = worker
        .register(RegisterRequest { name: "w".into(), device: "cpu".into() })
        .await
        .unwrap()
        .into_inner()
        .worker_id;

    // A long-polled lease holds the only slot for 5 s (there is no work).
    let mut poller = worker.clone();
    let held = tokio::spawn(async move { poller.lease_task(LeaseTaskRequest { worker_id: id, wait_ms: 5000 }).await });

    // Once the lease holds the slot, another call is refused at once.
    let mut jobs = JobServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(4);
    let shed = loop {
        let started = Instant::now();
        match jobs.list_jobs(ListJobsRequest::default()).await {
            Err(status) => break (status, started.elapsed()),
            // The lease has not reached the server yet.
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(_) => panic!("no request was shed while the lease held the only slot"),
        }
    };
    assert!(matches!(shed.0.code(), Code::Unavailable | Code::ResourceExhausted), "{:?}", shed.0);
    assert!(shed.1 < Duration::from_secs(1), "refused at once, not queued behind the lease");
    assert!(held.await.unwrap().unwrap().into_inner().task.is_none());
}
