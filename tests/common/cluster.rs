//! Real processes on loopback: a parameter server and gradient workers
//! started from the workspace's binaries, stopped with real signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::{self, ExportWeightsRequest, GetJobRequest, SubmitJobRequest};
use rwp_spec::JobSpec;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::binary;

/// A child process killed (SIGKILL) when dropped, unless it already exited.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub name: String,
    /// The lines the process printed on stdout so far (where it listens),
    /// and whether its stdout closed.
    stdout: Arc<Mutex<(Vec<String>, bool)>>,
}

/// Collects a child's stdout lines on a thread of their own, so the child
/// never blocks on a full pipe.
fn collect_lines(stdout: ChildStdout) -> Arc<Mutex<(Vec<String>, bool)>> {
    let lines = Arc::new(Mutex::new((Vec::new(), false)));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().0.push(line);
        }
        sink.lock().unwrap().1 = true;
    });
    lines
}

impl Proc {
    fn with_stdout(mut child: Child, name: &str) -> Self {
        let stdout = child.stdout.take().map_or_else(Arc::default, collect_lines);
        Self { child, name: name.to_owned(), stdout }
    }

    /// The address of the first stdout line `PREFIX ADDRESS` the process
    /// printed (`rwp-server listening on `, `rwp-server metrics on `,
    /// `rwp-worker metrics on `), waiting up to 60 s for it.
    pub fn announced(&self, prefix: &str) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (found, closed) = {
                let stdout = self.stdout.lock().unwrap();
                (stdout.0.iter().find_map(|l| l.strip_prefix(prefix).map(str::to_owned)), stdout.1)
            };
            if let Some(address) = found {
                return address.trim().parse().unwrap_or_else(|e| panic!("{}: {prefix}{address}: {e}", self.name));
            }
            assert!(
                !closed && Instant::now() < deadline,
                "{} printed no line starting with {prefix:?} (stdout: {:?})",
                self.name,
                self.stdout.lock().unwrap().0
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. "KILL", "TERM") with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    pub fn kill_hard(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.wait_status(timeout).and_then(|status| status.code())
    }

    /// Waits for the process to end; `None` if it still runs at `timeout`.
    pub fn wait_status(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Settings the tests run the server with: fast leases, frequent checkpoints,
/// one libtorch thread (bit-exactness needs a fixed thread count).
pub const SERVER_FLAGS: &[&str] =
    &["--lease-timeout-ms", "1500", "--checkpoint-every", "2", "--torch-threads", "1", "--eval-every-epochs", "0"];

/// Starts `rwp-server` on `listen` (port 0 for a free one) and returns it
/// with the address it reports.
pub fn start_server(data_dir: &Path, listen: &str) -> (Proc, SocketAddr) {
    ServerCommand::new(data_dir, listen).start()
}

/// Starts `rwp-server` with `flags` instead of [`SERVER_FLAGS`].
pub fn start_server_with(data_dir: &Path, listen: &str, flags: &[&str]) -> (Proc, SocketAddr) {
    ServerCommand::new(data_dir, listen).flags(flags).start()
}

/// How to start an `rwp-server` process: [`SERVER_FLAGS`] unless replaced,
/// extra flags and environment, and optionally its log (stderr) in a file.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    data_dir: PathBuf,
    listen: String,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    cwd: Option<PathBuf>,
}

impl ServerCommand {
    #[must_use]
    pub fn new(data_dir: &Path, listen: &str) -> Self {
        Self {
            data_dir: data_dir.to_owned(),
            listen: listen.to_owned(),
            flags: SERVER_FLAGS.iter().map(|f| (*f).to_owned()).collect(),
            env: Vec::new(),
            log: None,
            cwd: None,
        }
    }

    /// Replaces the default flags.
    #[must_use]
    pub fn flags(mut self, flags: &[&str]) -> Self {
        self.flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self
    }

    /// Adds flags after the current ones (a later flag wins).
    #[must_use]
    pub fn extra_flags(mut self, flags: &[&str]) -> Self {
        self.flags.extend(flags.iter().map(|f| (*f).to_owned()));
        self
    }

    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Appends the server's stderr (its log) to `path` instead of the test's.
    #[must_use]
    pub fn log_to(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    /// Runs the server in `dir` (where a relative path resolves).
    #[must_use]
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    #[must_use]
    pub fn listen_on(mut self, listen: &str) -> Self {
        self.listen = listen.to_owned();
        self
    }

    pub fn start(&self) -> (Proc, SocketAddr) {
        let stderr = match &self.log {
            Some(path) => {
                Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file opens"))
            }
            None => Stdio::inherit(),
        };
        let mut command = Command::new(binary("rwp-server"));
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        let child = command
            .args(["--listen", &self.listen, "--data-dir"])
            .arg(&self.data_dir)
            .args(&self.flags)
            .env("RUST_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("rwp-server starts");
        let server = Proc::with_stdout(child, "rwp-server");
        let address = server.announced("rwp-server listening on ");
        (server, address)
    }
}

/// Starts `rwp-worker` against `server` on the CPU with one thread.
pub fn start_worker(server: SocketAddr, name: &str) -> Proc {
    start_worker_with(&format!("http://{server}"), name, &[])
}

/// Starts `rwp-worker` against `server` on `device` (one CPU thread).
pub fn start_worker_on(server: SocketAddr, name: &str, device: &str) -> Proc {
    start_worker_with(&format!("http://{server}"), name, &["--device", device])
}

/// Starts `rwp-worker` against the server at `url` (CPU, one thread) with
/// `extra` flag-value pairs (TLS, credentials, metrics, ...), which replace
/// the defaults of the same name.
pub fn start_worker_with(url: &str, name: &str, extra: &[&str]) -> Proc {
    start_worker_in(url, name, extra, None, &[])
}

/// [`start_worker_with`], run in the directory `cwd` (where a relative
/// `data_dir` resolves) and with `env` added to its environment.
pub fn start_worker_in(url: &str, name: &str, extra: &[&str], cwd: Option<&Path>, env: &[(&str, &str)]) -> Proc {
    let defaults = [["--server", url], ["--device", "cpu"], ["--threads", "1"], ["--name", name]];
    let overridden = |flag: &str| extra.chunks(2).any(|pair| pair[0] == flag);
    let args = defaults.iter().filter(|[flag, _]| !overridden(flag)).flatten().chain(extra);
    let mut command = Command::new(binary("rwp-worker"));
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    let child = command
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("rwp-worker starts");
    Proc::with_stdout(child, name)
}

pub async fn connect(server: SocketAddr) -> JobServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match JobServiceClient::connect(format!("http://{server}")).await {
            Ok(client) => return client.max_decoding_message_size(64 << 20),
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {server}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub async fn submit(client: &mut JobServiceClient<Channel>, name: &str, spec: &JobSpec) -> String {
    let request =
        SubmitJobRequest { name: name.into(), spec: Some(spec.into()), request_id: None, ..Default::default() };
    client.submit_job(request).await.expect("job accepted").into_inner().id
}

pub async fn job(client: &mut JobServiceClient<Channel>, id: &str) -> v1::Job {
    client.get_job(GetJobRequest { job_id: id.into() }).await.expect("job exists").into_inner()
}

/// Polls until the job has applied at least `step` updates (or ended).
pub async fn wait_for_step(client: &mut JobServiceClient<Channel>, id: &str, step: u64, timeout: Duration) -> v1::Job {
    let deadline = Instant::now() + timeout;
    loop {
        let j = job(client, id).await;
        let going_on = [v1::JobState::Running as i32, v1::JobState::Paused as i32].contains(&j.state);
        if j.step >= step || !going_on {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} stuck at step {} (waiting for {step})", j.step);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls until the job has ended; panics unless it succeeded.
pub async fn wait_for_success(client: &mut JobServiceClient<Channel>, id: &str, timeout: Duration) -> v1::Job {
    let j = wait_for_step(client, id, u64::MAX, timeout).await;
    assert_eq!(j.state, v1::JobState::Succeeded as i32, "job {id} ended as {:?}: {}", j.state(), j.error);
    j
}

/// The job's exported checkpoint (safetensors bytes).
pub async fn export(client: &mut JobServiceClient<Channel>, id: &str) -> Vec<u8> {
    let mut stream = client.export_weights(ExportWeightsRequest { job_id: id.into() }).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.offset as usize, bytes.len(), "chunks arrive in order");
        bytes.extend_from_slice(&chunk.data);
    }
    bytes
}

/// A temporary data directory for a server.
pub fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server");
    (dir, path)
}

/// Polls until the job is in `state`; panics if it ends in another one.
pub async fn wait_for_state(
    client: &mut JobServiceClient<Channel>,
    id: &str,
    state: v1::JobState,
    timeout: Duration,
) -> v1::Job {
    let deadline = Instant::now() + timeout;
    loop {
        let j = job(client, id).await;
        if j.state == state as i32 {
            return j;
        }
        let ended = ![v1::JobState::Running as i32, v1::JobState::Paused as i32].contains(&j.state);
        assert!(!ended, "job {id} ended as {:?} while waiting for {state:?}: {}", j.state(), j.error);
        assert!(Instant::now() < deadline, "job {id} not {state:?} in time (still {:?} at step {})", j.state(), j.step);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether the fault suite runs in its long form (`make chaos`) rather than
/// the short one `make test` runs.
#[must_use]
pub fn chaos_long() -> bool {
    std::env::var("RWP_CHAOS").is_ok_and(|v| v == "long")
}
