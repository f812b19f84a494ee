//! The server's limits on a real server in this process: the size of a
//! message, the running jobs of a token (a default and a token's own), the
//! size of a job's model, and the request rate of a token (a default and a
//! token's own). Each refusal names the limit.

use std::time::Duration;

use rwp_core::model::{InputShape, Model};
use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::tokens::TokensFile;
use rwp_parameter_server::domain::CallerRole;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::worker_service_client::WorkerServiceClient;
use rwp_proto::v1::{ListJobsRequest, RegisterRequest, SubmitJobRequest};
use rwp_sdk::{Client, ClientConfig, JobSpecBuilder, JobState, Method, ModelKind, SdkError, Token};
use tonic::Code;

async fn client(cluster: &Cluster, token: Option<&Token>) -> Client {
    let mut config = ClientConfig::new(cluster.url());
    config.token = token.cloned();
    config.attempts = 1;
    Client::connect_with(config).await.unwrap()
}

fn small_job() -> rwp_sdk::JobSpec {
    JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).max_updates(3).build().unwrap()
}

/// A request with `token` as its bearer.
fn with_token<T>(message: T, token: &Token) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {}", token.expose()).parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_message_bytes_is_refused_and_a_long_name_too() {
    let limit = 64 << 10;
    let cluster = Cluster::start_configured(
        0,
        |c| {
            c.chunk_bytes = 4096;
            c.max_message_bytes = limit;
        },
        |_| {},
    )
    .await;
    let mut stub = JobServiceClient::connect(cluster.url()).await.unwrap();
    let spec = Some((&small_job()).into());
    let big = SubmitJobRequest { name: "x".repeat(limit + 1), spec, request_id: None, ..Default::default() };
    let err = stub.submit_job(big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains(&format!("the limit is: {limit} bytes")), "{err:?}");

    // Within the message limit, a name still has its own.
    let client = client(&cluster, None).await;
    let err = client.submit(&"n".repeat(257), &small_job()).await.unwrap_err();
    assert!(matches!(&err, SdkError::InvalidSpec(m) if m.contains("257 characters long, at most 256")), "{err:?}");
    client.submit(&"n".repeat(256), &small_job()).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jobs_per_token_have_a_default_and_a_tokens_own_limit() {
    let tokens =
        TokensFile::with_settings(&[("alice", CallerRole::User, ""), ("bob", CallerRole::User, "max_active_jobs = 1")]);
    let cluster = Cluster::start_configured(
        0,
        |c| {
            c.tokens_file = Some(tokens.path.clone());
            c.max_active_jobs_per_token = 2;
        },
        |_| {},
    )
    .await;
    let (alice, bob) =
        (client(&cluster, Some(tokens.token("alice"))).await, client(&cluster, Some(tokens.token("bob"))).await);
    // No workers: jobs stay running.
    let first = alice.submit("1", &small_job()).await.unwrap();
    alice.submit("2", &small_job()).await.unwrap();
    let err = alice.submit("3", &small_job()).await.unwrap_err();
    let SdkError::ResourceExhausted(message) = &err else { panic!("{err:?}") };
    assert!(message.starts_with("'alice' already has 2 running jobs"), "{message}");
    bob.submit("b1", &small_job()).await.unwrap();
    let err = bob.submit("b2", &small_job()).await.unwrap_err();
    assert!(
        matches!(&err, SdkError::ResourceExhausted(m) if m.starts_with("'bob' already has 1 running jobs")),
        "{err:?}"
    );
    // A job that ends gives its slot back.
    assert_eq!(alice.cancel(&first.id).await.unwrap().state, JobState::Cancelled);
    alice.submit("3", &small_job()).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_over_max_model_parameters_is_refused_naming_count_and_limit() {
    let cluster = Cluster::start_configured(0, |c| c.max_model_parameters = 200_000, |_| {}).await;
    let client = client(&cluster, None).await;
    let synthetic = InputShape { channels: 3, height: 16, width: 16 };
    let parameters = |kind| Model::new(kind, synthetic, 10).num_parameters();
    assert!(parameters(ModelKind::SmallCnn) <= 200_000, "the control fits");
    client.submit("small", &small_job()).await.unwrap();

    let mut spec = small_job();
    spec.model = ModelKind::Resnet18;
    let err = client.submit("big", &spec).await.unwrap_err();
    let want = format!(
        "model resnet18 has {} parameters, more than this server accepts (200000, max_model_parameters)",
        parameters(ModelKind::Resnet18)
    );
    assert!(matches!(&err, SdkError::InvalidSpec(m) if *m == want), "{err:?}\nwant {want}");
    assert_eq!(client.list().await.unwrap().len(), 1, "the refused job is not recorded");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_a_tokens_rate_are_refused_with_when_to_retry() {
    let tokens = TokensFile::with_settings(&[
        ("alice", CallerRole::User, ""),
        ("bob", CallerRole::User, "request_burst = 2"),
        ("carol", CallerRole::User, "request_burst = 1\nrequests_per_second = 0.4"),
        ("pool", CallerRole::Worker, ""),
    ]);
    let cluster = Cluster::start_configured(
        0,
        |c| {
            c.tokens_file = Some(tokens.path.clone());
            // One request back every 20 s: none comes back during the test.
            c.requests_per_second = 0.05;
            c.request_burst = 4;
        },
        |_| {},
    )
    .await;
    let stub = JobServiceClient::connect(cluster.url()).await.unwrap();
    let list = |name: &str| {
        let request = with_token(ListJobsRequest::default(), tokens.token(name));
        let mut stub = stub.clone();
        async move { stub.list_jobs(request).await }
    };
    // The default burst for alice, bob's own; each in their own bucket.
    for _ in 0..4 {
        list("alice").await.unwrap();
    }
    for _ in 0..2 {
        list("bob").await.unwrap();
    }
    for (name, rate) in [("alice", "at most 0.05/s, bursts of 4"), ("bob", "at most 0.05/s, bursts of 2")] {
        let err = list(name).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        let text = err.message();
        assert!(text.starts_with(&format!("too many requests from '{name}' ({rate}): retry in ")), "{text}");
    }
    // The worker API has no rate: leases and pushes are paced by the work.
    let mut workers = WorkerServiceClient::connect(cluster.url()).await.unwrap();
    for _ in 0..8 {
        let request = with_token(RegisterRequest { name: "w".into(), device: "cpu".into() }, tokens.token("pool"));
        workers.register(request).await.unwrap();
    }
    // The SDK retries an idempotent call that hit the rate, after a pause:
    // carol's bucket is empty, and a request comes back every 2.5 s.
    list("carol").await.unwrap();
    assert_eq!(list("carol").await.unwrap_err().code(), Code::ResourceExhausted);
    let mut config = ClientConfig::new(cluster.url());
    config.token = Some(tokens.token("carol").clone());
    config.attempts = 4;
    config.initial_backoff = Duration::from_secs(1);
    Client::connect_with(config).await.expect("served once the bucket refills");
    cluster.shutdown().await;
}
