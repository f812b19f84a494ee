//! TLS and mutual TLS on a real server (in this process, on 127.0.0.1 port
//! 0) that requires client certificates from its CA: every way of getting the
//! credentials wrong is refused, and a correctly configured SDK client and a
//! real `rwp-worker` process train a job to completion over it (with bearer
//! tokens too). Certificates are made here, with rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{start_worker_with, Proc};
use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::tokens::TokensFile;
use rwp_parameter_server::domain::CallerRole;
use rwp_sdk::{Client, ClientConfig, JobEvent, JobSpecBuilder, JobState, Method, Pem, SdkError};
use tokio_stream::StreamExt;

/// A certificate authority that writes what it issues into a directory.
struct Authority {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

/// A certificate and its key, as files.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.crt")), issuer.pem()).unwrap();
        Self { name: name.to_owned(), issuer, dir: dir.to_owned() }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A certificate for `names` (DNS names or IP addresses), valid now
    /// unless `expired`.
    fn issue(&self, file: &str, names: &[&str], expired: bool) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued { cert: self.dir.join(format!("{file}.crt")), key: self.dir.join(format!("{file}.key")) };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// The certificates of one test: the server's CA and a stranger's.
struct Pki {
    _dir: tempfile::TempDir,
    ours: Authority,
    theirs: Authority,
    server: Issued,
    worker: Issued,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ours = Authority::new(dir.path(), "ours");
        let theirs = Authority::new(dir.path(), "theirs");
        let server = ours.issue("server", &["127.0.0.1", "rwp-server"], false);
        let worker = ours.issue("worker", &["worker"], false);
        Self { _dir: dir, ours, theirs, server, worker }
    }
}

/// A server in this process that speaks TLS only and requires a client
/// certificate from `pki.ours`; plaintext health on its own port; bearer
/// tokens when given a tokens file.
async fn mtls_cluster(pki: &Pki, tokens: Option<&TokensFile>) -> Cluster {
    Cluster::start_configured(
        0,
        |c| {
            c.tls_cert = Some(pki.server.cert.clone());
            c.tls_key = Some(pki.server.key.clone());
            c.tls_client_ca = Some(pki.ours.ca());
            c.health_listen = Some("127.0.0.1:0".parse().unwrap());
            c.tokens_file = tokens.map(|t| t.path.clone());
        },
        |_| {},
    )
    .await
}

fn pem(path: &Path) -> Pem {
    Pem::read(path).unwrap()
}

/// An SDK configuration that trusts `ca` and presents `identity`.
fn client_config(url: &str, ca: &Path, identity: Option<&Issued>) -> ClientConfig {
    let mut config = ClientConfig::new(url);
    config.tls_ca = Some(pem(ca));
    config.tls_client_cert = identity.map(|i| pem(&i.cert));
    config.tls_client_key = identity.map(|i| pem(&i.key));
    config.attempts = 1;
    config
}

/// Expects a connection refused by one side's TLS; returns the reason.
fn refused(result: Result<Client, SdkError>) -> String {
    let err = result.expect_err("the connection must be refused");
    assert!(matches!(&err, SdkError::Unreachable { .. }), "{err:?}");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_by_one_side_or_the_other() {
    let pki = Pki::new();
    let cluster = mtls_cluster(&pki, None).await;
    let https = cluster.url();
    assert!(https.starts_with("https://127.0.0.1:"), "{https}");

    // The control: our CA, our certificate.
    let client = Client::connect_with(client_config(&https, &pki.ours.ca(), Some(&pki.worker))).await.unwrap();
    assert!(client.list().await.unwrap().is_empty());

    // (a) Plaintext: the port speaks TLS only.
    let plaintext = format!("http://{}", cluster.addr);
    let mut config = ClientConfig::new(&plaintext);
    config.attempts = 1;
    refused(Client::connect_with(config).await);

    // The server refuses these during the handshake. (Under TLS 1.3 the
    // client may see the server's alert or only the closed connection,
    // whichever comes first; they differ from the control only in the
    // client's certificate.)
    // TLS without a client certificate.
    refused(Client::connect_with(client_config(&https, &pki.ours.ca(), None)).await);
    // (b) A client certificate from another CA.
    let stranger = pki.theirs.issue("stranger", &["stranger"], false);
    refused(Client::connect_with(client_config(&https, &pki.ours.ca(), Some(&stranger))).await);
    // (c) An expired client certificate from our CA.
    let expired = pki.ours.issue("expired", &["expired"], true);
    refused(Client::connect_with(client_config(&https, &pki.ours.ca(), Some(&expired))).await);

    // The client refuses these itself, saying why.
    // (d) A client that trusts another CA refuses the server.
    let why = refused(Client::connect_with(client_config(&https, &pki.theirs.ca(), Some(&pki.worker))).await);
    assert!(why.contains("UnknownIssuer"), "{why}");

    // A certificate that does not name the host the client dialled.
    let mut config = client_config(&https, &pki.ours.ca(), Some(&pki.worker));
    config.tls_domain = Some("elsewhere".into());
    let why = refused(Client::connect_with(config).await);
    assert!(why.contains("not valid for name \"elsewhere\""), "{why}");
    // ... unless told the name it carries.
    let mut config = client_config(&https, &pki.ours.ca(), Some(&pki.worker));
    config.tls_domain = Some("rwp-server".into());
    Client::connect_with(config).await.unwrap();

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_get_plaintext_health_on_their_own_port_and_nothing_else() {
    let pki = Pki::new();
    let cluster = mtls_cluster(&pki, None).await;
    let health = cluster.health.expect("a health port");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{health}")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            // The server binds the health port as it starts.
            Err(e) if std::time::Instant::now() > deadline => panic!("no health port: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut probe = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "rwp.v1.WorkerService", "rwp.v1.JobService"] {
        let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
        assert_eq!(probe.check(request).await.unwrap().into_inner().status, 1, "{service:?} SERVING");
    }
    let mut jobs = rwp_proto::v1::job_service_client::JobServiceClient::new(channel);
    let err = jobs.list_jobs(rwp_proto::v1::ListJobsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "the job API is not on the health port: {err:?}");
    cluster.shutdown().await;
}

/// The production setup: mutual TLS and bearer tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_client_and_a_worker_process_train_over_mutual_tls_with_tokens() {
    let pki = Pki::new();
    let tokens = TokensFile::new(&[("alice", CallerRole::User), ("pool", CallerRole::Worker)]);
    let cluster = mtls_cluster(&pki, Some(&tokens)).await;
    let https = cluster.url();
    let [ca, cert, key, token] =
        [pki.ours.ca(), pki.worker.cert.clone(), pki.worker.key.clone(), tokens.token_file("pool")]
            .map(|p| p.display().to_string());
    let flags = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key, "--token-file", &token];
    let _worker: Proc = start_worker_with(&https, "tls-worker", &flags);

    let mut config = client_config(&https, &pki.ours.ca(), Some(&pki.worker));
    config.token = Some(tokens.token("alice").clone());
    let client = Client::connect_with(config).await.unwrap();
    let spec = JobSpecBuilder::new(Method::MArwp).epochs(1).batch_size(128).max_updates(3).build().unwrap();
    let job = client.submit("over-mtls", &spec).await.unwrap();
    assert_eq!(job.owner.as_deref(), Some("alice"));
    let mut events = Box::pin(client.watch(&job.id, 0).await.unwrap());
    let mut steps = Vec::new();
    let mut last = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(180), events.next()).await.expect("progress") {
        match event.unwrap() {
            JobEvent::Step(m) => steps.push(m.step),
            JobEvent::State(j) => last = Some(j.state),
            JobEvent::Evaluation(_) => {}
        }
    }
    assert_eq!(steps, vec![1, 2, 3]);
    assert_eq!(last, Some(JobState::Succeeded));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_completes_its_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    let pki = Pki::new();
    let cluster = mtls_cluster(&pki, None).await;
    let mut idle = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();
    let started = std::time::Instant::now();
    let limit = rwp_credentials::HANDSHAKE_TIMEOUT + Duration::from_secs(5);
    let read = tokio::time::timeout(limit, idle.read(&mut [0u8; 64])).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "still open after {:?}: {read:?}", started.elapsed());
    assert!(started.elapsed() >= rwp_credentials::HANDSHAKE_TIMEOUT - Duration::from_secs(1));
    cluster.shutdown().await;
}

#[test]
fn a_bad_credential_file_stops_either_binary_naming_the_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let missing = dir.path().join("missing.key");
    let data = dir.path().join("data");
    // Runs `name` with `args`, expecting it to fail; returns its stderr.
    let fails = |name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let out = std::process::Command::new(binary(name))
            .args(args.iter().map(|a| a.as_ref()))
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} started with a bad credential file");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.is_empty(), "{name} must stop before it listens, but printed: {stdout}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let server = |cert: &Path, key: &Path| {
        fails(
            "rwp-server",
            &[&"--listen", &"127.0.0.1:0", &"--data-dir", &data, &"--tls-cert", &cert, &"--tls-key", &key],
        )
    };
    let stderr = server(&pki.server.cert, &missing);
    assert!(stderr.contains(&format!("cannot read {}", missing.display())), "{stderr}");
    let stderr = server(&garbage, &pki.server.key);
    assert!(stderr.contains(&format!("{}: holds no PEM certificate", garbage.display())), "{stderr}");
    let stderr =
        fails("rwp-worker", &[&"--server", &"https://127.0.0.1:1", &"--device", &"cpu", &"--tls-ca", &garbage]);
    assert!(stderr.contains(&format!("{}: holds no PEM certificate", garbage.display())), "{stderr}");
}
