//! An uploaded TorchScript module is its author's code, run against a real
//! `rwp-server` with a tokens file and real `rwp-worker` processes: modules
//! that write or read files are refused at upload and write nothing; a
//! module that never returns from training fails its job at the task time
//! limit while another user's job trains to success; a 2 GiB allocation
//! fails its job within the sandbox's memory limit while the worker stays
//! small; cancelling its job kills the computation; SIGTERM stops a worker in
//! the middle of it, and the server in the middle of loading a module that
//! never loads, sandboxes included.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rwp_integration_tests::cluster::{data_dir, start_worker_with, Proc, ServerCommand};
use rwp_integration_tests::tokens::TokensFile;
use rwp_integration_tests::{python, workspace_root};
use rwp_parameter_server::domain::CallerRole;
use rwp_sdk::{Client, ClientConfig, JobSpec, JobState, Method, ModelKind, SdkError};

const TIMEOUT: Duration = Duration::from_secs(120);

/// Writes the attack module `kind` of tests/reference/script_models.py, aimed at `target`.
fn attack(dir: &Path, kind: &str, target: &Path) -> PathBuf {
    let out = dir.join(format!("{kind}.pt"));
    let status = python()
        .arg(workspace_root().join("tests/reference/script_models.py"))
        .arg(kind)
        .arg(&out)
        .arg("--target")
        .arg(target)
        .status()
        .expect("python starts");
    assert!(status.success(), "script_models.py {kind}");
    out
}

struct Service {
    _data: tempfile::TempDir,
    tokens: TokensFile,
    server: Proc,
    url: String,
}

impl Service {
    /// A server with two users and a worker token; tasks get `task_timeout_ms`.
    fn start(task_timeout_ms: u64) -> Self {
        Self::start_with(task_timeout_ms, &[])
    }

    fn start_with(task_timeout_ms: u64, flags: &[&str]) -> Self {
        let tokens =
            TokensFile::new(&[("alice", CallerRole::User), ("bob", CallerRole::User), ("pool", CallerRole::Worker)]);
        let (data, path) = data_dir();
        let timeout = task_timeout_ms.to_string();
        let (server, addr) = ServerCommand::new(&path, "127.0.0.1:0")
            .extra_flags(&[
                "--tokens-file",
                tokens.path.to_str().unwrap(),
                "--task-timeout-initial-ms",
                &timeout,
                "--task-timeout-floor-ms",
                &timeout,
            ])
            .extra_flags(flags)
            .start();
        Self { _data: data, tokens, server, url: format!("http://{addr}") }
    }

    fn worker(&self, name: &str, extra: &[&str]) -> Proc {
        let token = self.tokens.token_file("pool");
        let mut args = vec!["--token-file", token.to_str().unwrap()];
        args.extend_from_slice(extra);
        start_worker_with(&self.url, name, &args)
    }

    async fn client(&self, user: &str) -> Client {
        let mut config = ClientConfig::new(self.url.clone());
        config.token = Some(self.tokens.token(user).clone());
        Client::connect_with(config).await.unwrap()
    }
}

fn small_spec(model: ModelKind, updates: u64) -> JobSpec {
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.model = model;
    spec.batch_size = 32;
    spec.max_updates = Some(updates);
    spec
}

async fn wait_for_end(client: &Client, id: &str) -> rwp_sdk::Job {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let job = client.get(id).await.unwrap();
        if !matches!(job.state, JobState::Running | JobState::Paused) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} still {:?} at step {}", job.state, job.step);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `rwp-sandbox` processes whose parent is `pid`.
fn sandboxes_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
            stat.contains("(rwp-sandbox)") && after.split_whitespace().nth(1) == Some(&pid.to_string())
        })
        .collect()
}

async fn wait_for_sandbox(parent: &Proc) -> u32 {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(pid) = sandboxes_of(parent.child.id()).first() {
            return *pid;
        }
        assert!(Instant::now() < deadline, "{} started no sandbox", parent.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A process's resident memory, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_that_write_or_read_files_are_refused_at_upload_and_write_nothing() {
    let service = Service::start(60_000);
    let alice = service.client("alice").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let cases = [
        ("write-in-setstate", dir.path().join("setstate-wrote-this"), "Permission denied"),
        ("write-in-forward", dir.path().join("forward-wrote-this"), "WriteInForward.forward calls aten::from_file"),
        ("read-through-shape", PathBuf::from("/etc/passwd"), "ReadThroughShape.forward calls aten::from_file"),
        ("read-into-buffer", PathBuf::from("/etc/passwd"), "ReadIntoBuffer.forward calls aten::from_file"),
    ];
    for (kind, target, reason) in cases {
        let module = attack(dir.path(), kind, &target);
        match alice.upload_model(&module).await {
            Err(SdkError::InvalidSpec(message)) => {
                assert!(message.contains(reason), "{kind}: {message}");
                assert!(!message.contains("root:"), "{kind} leaked the file: {message}");
            }
            other => panic!("{kind}: expected a refusal, got {other:?}"),
        }
        if kind.starts_with("write") {
            assert!(!target.exists(), "{kind} wrote {}", target.display());
        }
    }
    assert!(alice.list().await.unwrap().is_empty(), "the server is still serving, and made no job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_task_fails_its_job_at_the_time_limit_while_another_users_job_trains() {
    let service = Service::start(1_500);
    let _workers: Vec<Proc> = (0..2).map(|i| service.worker(&format!("w{i}"), &[])).collect();
    let (alice, bob) = (service.client("alice").await, service.client("bob").await);
    let dir = tempfile::tempdir().unwrap();
    let module = attack(dir.path(), "loop-in-training", Path::new("/nonexistent"));
    let started = Instant::now();
    let endless =
        alice.submit_with_model_file("endless", &small_spec(ModelKind::TorchScript, 4), &module).await.unwrap();
    let honest = bob.submit("honest", &small_spec(ModelKind::Mlp, 6)).await.unwrap();

    let honest = wait_for_end(&bob, &honest.id).await;
    assert_eq!(honest.state, JobState::Succeeded, "{:?}", honest.error);
    let endless = wait_for_end(&alice, &endless.id).await;
    assert_eq!(endless.state, JobState::Failed);
    let error = endless.error.unwrap_or_default();
    assert!(error.contains("failed 3 times") && error.contains("did not finish within 1.5 s"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_kills_its_running_computation() {
    let service = Service::start(600_000);
    let worker = service.worker("w0", &[]);
    let alice = service.client("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let module = attack(dir.path(), "loop-in-training", Path::new("/nonexistent"));
    let job = alice.submit_with_model_file("endless", &small_spec(ModelKind::TorchScript, 4), &module).await.unwrap();
    let sandbox = wait_for_sandbox(&worker).await;
    // Let the task start (the sandbox loads first).
    tokio::time::sleep(Duration::from_secs(2)).await;
    alice.cancel(&job.id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(sandbox) {
        assert!(Instant::now() < deadline, "the cancelled job's sandbox {sandbox} still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_in_the_middle_of_an_endless_task() {
    let service = Service::start(600_000);
    let mut worker = service.worker("w0", &["--drain-timeout-ms", "1000"]);
    let alice = service.client("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let module = attack(dir.path(), "loop-in-training", Path::new("/nonexistent"));
    alice.submit_with_model_file("endless", &small_spec(ModelKind::TorchScript, 4), &module).await.unwrap();
    let sandbox = wait_for_sandbox(&worker).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = Instant::now();
    worker.signal("TERM");
    let code = worker.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "the worker did not stop within 10 s of SIGTERM");
    assert!(sent.elapsed() < Duration::from_secs(8), "{:?}", sent.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(sandbox) {
        assert!(Instant::now() < deadline, "the sandbox {sandbox} outlived its worker");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_allocation_fails_its_job_and_the_worker_stays_small() {
    let service = Service::start(60_000);
    let worker = service.worker("w0", &["--sandbox-memory-bytes", "1073741824"]);
    let alice = service.client("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let module = attack(dir.path(), "alloc-in-training", Path::new("/nonexistent"));
    let job = alice.submit_with_model_file("greedy", &small_spec(ModelKind::TorchScript, 4), &module).await.unwrap();
    let mut peak = 0;
    let deadline = Instant::now() + TIMEOUT;
    let ended = loop {
        peak = peak.max(resident_bytes(worker.child.id()));
        let job = alice.get(&job.id).await.unwrap();
        if !matches!(job.state, JobState::Running | JobState::Paused) {
            break job;
        }
        assert!(Instant::now() < deadline, "the job did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended.state, JobState::Failed);
    let error = ended.error.unwrap_or_default();
    assert!(error.contains("failed 3 times") && error.contains("allocate"), "{error}");
    assert!(peak < 1 << 30, "the worker itself grew to {peak} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_while_a_module_loads_forever() {
    let mut service = Service::start_with(60_000, &["--drain-timeout-ms", "1000"]);
    let alice = service.client("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let module = attack(dir.path(), "loop-in-setstate", Path::new("/nonexistent"));
    let upload = tokio::spawn(async move { alice.upload_model(&module).await });
    let sandbox = wait_for_sandbox(&service.server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    service.server.signal("TERM");
    let code = service.server.wait_exit(Duration::from_secs(15));
    assert!(code.is_some(), "the server did not stop within 15 s of SIGTERM");
    assert!(sent.elapsed() < Duration::from_secs(10), "{:?}", sent.elapsed());
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(sandbox) {
        assert!(Instant::now() < deadline, "the sandbox {sandbox} outlived the server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(upload.await.unwrap().is_err(), "the upload of a module that never loads is not stored");
}
