//! Bearer tokens on a real server in this process: who may call what, and
//! whose jobs each caller sees. Unknown callers are UNAUTHENTICATED; workers
//! call the worker API only, users and admins the job API only
//! (PERMISSION_DENIED); a user sees and controls its own jobs, and another
//! user's answer NOT_FOUND exactly as a job that does not exist; an admin
//! sees and controls all. Health and reflection stay open; without a tokens
//! file the server is open.

use std::time::Duration;

use rwp_integration_tests::binary;
use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::tokens::TokensFile;
use rwp_parameter_server::domain::CallerRole;
use rwp_proto::v1::worker_service_client::WorkerServiceClient;
use rwp_proto::v1::RegisterRequest;
use rwp_sdk::{Client, ClientConfig, JobEvent, JobSpecBuilder, JobState, Method, SdkError, Token};
use tokio_stream::StreamExt;
use tonic::Code;

/// Two users, an admin and a worker pool.
struct Tokens {
    file: TokensFile,
    alice: Token,
    bob: Token,
    root: Token,
    pool: Token,
}

impl Tokens {
    fn new() -> Self {
        let file = TokensFile::new(&[
            ("alice", CallerRole::User),
            ("bob", CallerRole::User),
            ("root", CallerRole::Admin),
            ("pool", CallerRole::Worker),
        ]);
        let token = |name| file.token(name).clone();
        let (alice, bob, root, pool) = (token("alice"), token("bob"), token("root"), token("pool"));
        Self { file, alice, bob, root, pool }
    }

    /// A server with this tokens file and `workers` workers using the worker token.
    async fn cluster(&self, workers: usize) -> Cluster {
        Cluster::start_configured(
            workers,
            |c| c.tokens_file = Some(self.file.path.clone()),
            |w| w.token = Some(self.pool.clone()),
        )
        .await
    }
}

fn config(cluster: &Cluster, token: Option<&Token>) -> ClientConfig {
    let mut config = ClientConfig::new(cluster.url());
    config.token = token.cloned();
    config.attempts = 1;
    config
}

async fn client(cluster: &Cluster, token: &Token) -> Client {
    Client::connect_with(config(cluster, Some(token))).await.unwrap()
}

/// `Register` on the worker API with `token`.
async fn register(cluster: &Cluster, token: Option<&Token>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(RegisterRequest { name: "probe".into(), device: "cpu".into() });
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {}", token.expose()).parse().unwrap());
    }
    let mut stub = WorkerServiceClient::connect(cluster.url()).await.unwrap();
    stub.register(request).await.map(drop)
}

fn small_job() -> rwp_sdk::JobSpec {
    JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).max_updates(3).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_known_token_are_unauthenticated_but_probes_get_through() {
    let tokens = Tokens::new();
    let cluster = tokens.cluster(0).await;

    let err = Client::connect_with(config(&cluster, None)).await.unwrap_err();
    assert!(
        matches!(&err, SdkError::Unauthenticated(m) if m.contains("requires `authorization: Bearer <token>`")),
        "{err:?}"
    );
    let guess = Token::new("rwp_0000000000000000000000000000000000000000000000000000000000000000");
    let err = Client::connect_with(config(&cluster, Some(&guess))).await.unwrap_err();
    assert!(matches!(&err, SdkError::Unauthenticated(m) if m.starts_with("unknown token")), "{err:?}");
    let err = register(&cluster, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = register(&cluster, Some(&guess)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Health and reflection need no token.
    let channel = tonic::transport::Endpoint::from_shared(cluster.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let request = tonic_health::pb::HealthCheckRequest { service: "rwp.v1.JobService".into() };
    assert_eq!(health.check(request).await.unwrap().into_inner().status, 1);
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let mut reflection = tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    assert!(answers.next().await.unwrap().is_ok(), "reflection answers without a token");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_only_its_own_api() {
    let tokens = Tokens::new();
    let cluster = tokens.cluster(0).await;
    let err = Client::connect_with(config(&cluster, Some(&tokens.pool))).await.unwrap_err();
    let SdkError::PermissionDenied(message) = &err else { panic!("{err:?}") };
    assert_eq!(
        message,
        "token 'pool' has the role worker and may not call rwp.v1.JobService, which is for users and admins"
    );
    for (name, token) in [("alice", &tokens.alice), ("root", &tokens.root)] {
        let err = register(&cluster, Some(token)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{name}: {err:?}");
        assert!(err.message().contains("may not call rwp.v1.WorkerService, which is for workers"), "{err:?}");
        client(&cluster, token).await.list().await.unwrap();
    }
    register(&cluster, Some(&tokens.pool)).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_and_control_only_their_own_jobs_and_admins_all() {
    let tokens = Tokens::new();
    let cluster = tokens.cluster(0).await;
    let (alice, bob, root) = (
        client(&cluster, &tokens.alice).await,
        client(&cluster, &tokens.bob).await,
        client(&cluster, &tokens.root).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let hers = alice.submit("hers", &small_job()).await.unwrap();
    assert_eq!(hers.owner.as_deref(), Some("alice"));
    let his = bob.submit("his", &small_job()).await.unwrap();

    // To bob, alice's job is exactly like one that does not exist.
    let not_found = |err: SdkError, id: &str| match err {
        SdkError::NotFound(m) => assert_eq!(m, format!("job {id} not found")),
        other => panic!("{other:?}"),
    };
    for id in [hers.id.as_str(), "job-000000000000"] {
        not_found(bob.get(id).await.unwrap_err(), id);
        not_found(bob.cancel(id).await.unwrap_err(), id);
        not_found(bob.watch(id, 0).await.err().unwrap(), id);
        not_found(bob.export(id, &path).await.unwrap_err(), id);
    }
    let ids = |jobs: Vec<rwp_sdk::Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(bob.list().await.unwrap()), vec![his.id.clone()]);
    assert_eq!(ids(alice.list().await.unwrap()), vec![hers.id.clone()]);
    assert_eq!(alice.get(&hers.id).await.unwrap().state, JobState::Running, "still hers, still running");

    // The admin sees and controls both.
    let mut all = ids(root.list().await.unwrap());
    all.sort();
    let mut want = vec![hers.id.clone(), his.id.clone()];
    want.sort();
    assert_eq!(all, want);
    assert_eq!(root.get(&his.id).await.unwrap().owner.as_deref(), Some("bob"));
    assert_eq!(root.cancel(&hers.id).await.unwrap().state, JobState::Cancelled);
    assert_eq!(alice.get(&hers.id).await.unwrap().state, JobState::Cancelled);
    alice.export(&hers.id, &path).await.expect("its owner exports it");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_the_worker_token_train_a_users_job() {
    let tokens = Tokens::new();
    let cluster = tokens.cluster(1).await;
    let alice = client(&cluster, &tokens.alice).await;
    let job = alice.submit("trained", &small_job()).await.unwrap();
    let mut events = Box::pin(alice.watch(&job.id, 0).await.unwrap());
    let mut last = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(180), events.next()).await.expect("progress") {
        if let JobEvent::State(j) = event.unwrap() {
            last = Some(j.state);
        }
    }
    assert_eq!(last, Some(JobState::Succeeded));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_by_rwp_server_token_new_is_accepted() {
    let out = std::process::Command::new(binary("rwp-server"))
        .args(["token", "new", "--name", "carol", "--role", "user"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (token, entry) = text.split_once('\n').unwrap();
    assert!(token.starts_with("rwp_") && !entry.contains(token), "the entry holds only the hash:\n{text}");

    // `token hash` gives the hash the entry holds.
    let mut hash = std::process::Command::new(binary("rwp-server"))
        .args(["token", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(hash.stdin.take().unwrap(), "{token}").unwrap();
    let hashed = String::from_utf8(hash.wait_with_output().unwrap().stdout).unwrap();
    assert!(entry.contains(&format!("sha256 = \"{}\"", hashed.trim())), "{hashed} in\n{entry}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, entry).unwrap();
    let cluster = Cluster::start_configured(0, |c| c.tokens_file = Some(file), |_| {}).await;
    let carol = client(&cluster, &Token::new(token)).await;
    let job = carol.submit("carols", &small_job()).await.unwrap();
    assert_eq!(job.owner.as_deref(), Some("carol"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tokens_file_the_server_is_open_and_jobs_have_no_owner() {
    let cluster = Cluster::start(0).await;
    let anyone = Client::connect_with(config(&cluster, None)).await.unwrap();
    let job = anyone.submit("open", &small_job()).await.unwrap();
    assert_eq!(job.owner, None);
    register(&cluster, None).await.unwrap();
    // A token is not needed, and not refused either.
    let stranger = Client::connect_with(config(&cluster, Some(&Token::new("rwp_anything")))).await.unwrap();
    assert_eq!(stranger.get(&job.id).await.unwrap().id, job.id);
    cluster.shutdown().await;
}

#[test]
fn a_bad_tokens_file_stops_the_server_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    std::fs::write(&file, "[[token]]\nname = \"alice\"\nrole = \"user\"\nsha256 = \"not-hex\"\n").unwrap();
    let out = std::process::Command::new(binary("rwp-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tokens-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it stops before it listens");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("tokens file {}: [[token]] 1 ('alice'): sha256 must be 64 hex digits", file.display());
    assert!(stderr.contains(&want), "{stderr}");
}
