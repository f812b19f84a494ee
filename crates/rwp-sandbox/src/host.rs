//! The parent's side: starts a sandbox for one model file, talks to it,
//! bounds every request by a timeout and kills it when asked or when it
//! runs over.
//!
//! A host is driven from one long-lived thread (the worker's compute
//! thread, the server's engine thread): the sandbox dies with the thread
//! that started it (`PR_SET_PDEATHSIG`), so it must not be started from a
//! pool thread that may exit under it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rwp_spec::eval::{BatchEval, EvalTask};
use rwp_spec::{JobSpec, Task};
use tracing::{debug, warn};

use rwp_core::data::Batch;

use crate::protocol::{self, BatchAt, NamedShape, Policy, Request, Response};
use crate::shm::Region;

/// Environment variables a sandbox inherits; everything else (tokens,
/// cloud credentials) stays behind.
const PASSED_ENVIRONMENT: &[&str] = &[
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "ATEN_CPU_CAPABILITY",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
];

/// Bytes of a batch in the input region: float32 inputs, int64 labels.
fn batch_bytes(batch: &Batch) -> u64 {
    (batch.images.numel() * 4 + batch.labels.numel() * 8) as u64
}

/// Lines of a sandbox's standard error kept for error messages.
const STDERR_TAIL: usize = 12;

/// How sandboxes are started.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxConfig {
    /// The `rwp-sandbox` program.
    pub program: PathBuf,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads inside the sandbox (0: libtorch's default).
    pub threads: i32,
    /// Limit on a sandbox's private memory, bytes (0: none).
    pub memory_bytes: u64,
    /// Limit on a sandbox's CPU time, seconds (0: none): a backstop behind
    /// the per-request timeouts.
    pub cpu_seconds: u64,
    /// The user and group a sandbox runs as when the parent is root.
    pub run_as: Option<(u32, u32)>,
    /// Refuse to run model code where Landlock is not available.
    pub require_landlock: bool,
    /// How long loading and checking a module may take.
    pub load_timeout: Duration,
}

/// The user sandboxes run as when the parent is root: `nobody`.
pub const DEFAULT_USER: &str = "65534:65534";

/// Parses a `UID:GID` setting.
pub fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let parsed = s.split_once(':').and_then(|(u, g)| Some((u.trim().parse().ok()?, g.trim().parse().ok()?)));
    match parsed {
        Some((0, _) | (_, 0)) => Err(format!("'{s}' is root: the sandbox must run as an unprivileged user")),
        Some(ids) => Ok(ids),
        None => Err(format!("'{s}' is not UID:GID (numbers, e.g. {DEFAULT_USER})")),
    }
}

impl SandboxConfig {
    /// `explicit`, else `rwp-sandbox` beside the running program.
    pub fn locate_program(explicit: Option<&Path>) -> Result<PathBuf, SandboxError> {
        if let Some(path) = explicit {
            return Ok(path.to_path_buf());
        }
        let exe = std::env::current_exe().map_err(|e| SandboxError::Spawn(format!("cannot find this program: {e}")))?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        // Test binaries live one level down (target/debug/deps).
        for _ in 0..2 {
            let candidate = dir.join("rwp-sandbox");
            if candidate.is_file() {
                return Ok(candidate);
            }
            if !dir.pop() {
                break;
            }
        }
        Err(SandboxError::Spawn(format!(
            "rwp-sandbox is not installed beside {} (it runs uploaded models; set sandbox_program)",
            exe.display()
        )))
    }
}

/// What a sandbox is given: the model file (read here and passed through
/// shared memory; the sandbox cannot open it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    pub model_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the model sandbox: {0}")]
    Spawn(String),
    /// The module itself is at fault: not loadable, refused by the
    /// allowlist, wrong shapes.
    #[error("{0}")]
    Refused(String),
    #[error("{what} did not finish within {seconds} s; its sandbox was killed")]
    TimedOut { what: &'static str, seconds: f64 },
    #[error("the model sandbox died during {what} ({how}){detail}")]
    Died { what: &'static str, how: String, detail: String },
    #[error("the model sandbox was stopped during {what}: {reason}")]
    Killed { what: &'static str, reason: String },
    #[error("{what} failed in the model sandbox: {message}")]
    Failed { what: &'static str, message: String },
    #[error("the model sandbox broke the protocol during {what}: {message}")]
    Protocol { what: &'static str, message: String },
}

impl SandboxError {
    /// Whether the module (not the machine) is at fault, so that running
    /// it elsewhere would fail the same way.
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_))
    }

    /// Whether the sandbox itself could not do its work (not installed,
    /// broken protocol), whatever the model: everything else (refused,
    /// failed, too slow, out of memory, killed) happened to the model.
    #[must_use]
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Self::Spawn(_) | Self::Protocol { .. })
    }
}

/// What an opened job's module looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedJob {
    pub params: Vec<NamedShape>,
    pub buffers: Vec<NamedShape>,
    pub input: [i64; 3],
    pub classes: i64,
    pub train_samples: u64,
}

/// A computed task's result.
#[derive(Debug)]
pub struct Computed {
    pub payload: Vec<u8>,
    pub gradient_bytes: u64,
    pub buffer_bytes: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub compute_time: Duration,
}

/// Kills a host's sandbox from another thread (a cancelled job, shutdown).
#[derive(Clone, Debug, Default)]
pub struct Killer {
    /// The running sandbox's pid, `None` once it is reaped; the reason it
    /// was killed for.
    state: Arc<Mutex<(Option<i32>, Option<String>)>>,
}

impl Killer {
    /// SIGKILLs the sandbox, if one is running; its request then fails
    /// with `reason`.
    pub fn kill(&self, reason: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pid) = state.0 {
            state.1 = Some(reason.to_owned());
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    fn take_reason(&self) -> Option<String> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1.take()
    }

    fn reaped(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 = None;
    }
}

/// A running sandbox for one model file.
pub struct ModelHost {
    child: Child,
    socket: UnixStream,
    input: Option<Region>,
    output: Option<Region>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Forwards the sandbox's standard error to the log; ends when the sandbox does.
    log_thread: Option<std::thread::JoinHandle<()>>,
    killer: Killer,
    load_timeout: Duration,
    dead: bool,
    /// The model file's bytes, given to the sandbox with each load.
    model: Vec<u8>,
}

impl ModelHost {
    /// Starts a sandbox that may read `grants` (and system libraries).
    pub fn spawn(config: &SandboxConfig, grants: &Grants) -> Result<Self, SandboxError> {
        let spawn_error = |e: std::io::Error| SandboxError::Spawn(format!("{}: {e}", config.program.display()));
        let model = std::fs::read(&grants.model_file)
            .map_err(|e| SandboxError::Spawn(format!("cannot read the model file: {}", e.kind())))?;
        let policy = Policy {
            library_dirs: library_dirs(),
            device: config.device.clone(),
            threads: config.threads,
            memory_bytes: config.memory_bytes,
            cpu_seconds: config.cpu_seconds,
            run_as: config.run_as,
            require_landlock: config.require_landlock,
        };
        let policy = serde_json::to_string(&policy).map_err(|e| SandboxError::Spawn(e.to_string()))?;
        let (socket, theirs) = UnixStream::pair().map_err(spawn_error)?;
        let mut command = Command::new(&config.program);
        command
            .arg(policy)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for name in PASSED_ENVIRONMENT {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let mut child = command.spawn().map_err(spawn_error)?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let log_thread = match child.stderr.take() {
            Some(pipe) => {
                let tail = stderr.clone();
                let pid = child.id();
                let thread = std::thread::Builder::new()
                    .name("rwp-sandbox-log".to_owned())
                    .spawn(move || forward_stderr(pipe, pid, &tail))
                    .map_err(spawn_error)?;
                Some(thread)
            }
            None => None,
        };
        let killer = Killer::default();
        killer.state.lock().unwrap_or_else(PoisonError::into_inner).0 = i32::try_from(child.id()).ok();
        Ok(Self {
            child,
            socket,
            input: None,
            output: None,
            stderr,
            log_thread,
            killer,
            load_timeout: config.load_timeout,
            dead: false,
            model,
        })
    }

    /// A handle that kills this sandbox from another thread.
    #[must_use]
    pub fn killer(&self) -> Killer {
        self.killer.clone()
    }

    /// Whether the sandbox can take more requests (it is not dead, killed
    /// or failed).
    #[must_use]
    pub fn is_usable(&self) -> bool {
        !self.dead
    }

    /// Checks the module's code and lists its float tensors.
    pub fn inspect(&mut self) -> Result<(Vec<NamedShape>, Vec<NamedShape>), SandboxError> {
        let model = std::mem::take(&mut self.model);
        let model_len = self.write_input(&model, &[]);
        self.model = model;
        match self.request(Request::Inspect { model_len: model_len?.0 }, &[], self.load_timeout, "loading the model")? {
            Response::Inspected { params, buffers } => Ok((params, buffers)),
            other => Err(self.unexpected("loading the model", &other)),
        }
    }

    /// Loads the module for `spec`, checked against the input shape and
    /// classes of its data (the sandbox opens no data file).
    pub fn open_job(&mut self, spec: &JobSpec) -> Result<OpenedJob, SandboxError> {
        let what = "loading the model";
        let model = std::mem::take(&mut self.model);
        let model_len = self.write_input(&model, &[]);
        self.model = model;
        let request = Request::OpenJob { spec: Box::new(spec.clone()), model_len: model_len?.0 };
        match self.request(request, &[], self.load_timeout, what)? {
            Response::Opened { params, buffers, input, classes, train_samples, snapshot_bytes, payload_bytes } => {
                self.ensure_regions(snapshot_bytes, snapshot_bytes.max(payload_bytes))?;
                Ok(OpenedJob { params, buffers, input, classes, train_samples })
            }
            other => Err(self.unexpected(what, &other)),
        }
    }

    /// The opened job's initial weights version (a serialised snapshot).
    pub fn initial_snapshot(&mut self) -> Result<Vec<u8>, SandboxError> {
        let what = "reading the initial weights";
        match self.request(Request::InitialSnapshot, &[], self.load_timeout, what)? {
            Response::Snapshot { len } => Ok(self.output_bytes(len, what)?.to_vec()),
            other => Err(self.unexpected(what, &other)),
        }
    }

    /// Computes `task` on `batch` with the weights in slot `slot` (of
    /// [`crate::WEIGHT_SLOTS`]), first installing `snapshot` (weights version
    /// `task.step`) there when given.
    pub fn compute(
        &mut self,
        task: &Task,
        returns_buffers: bool,
        snapshot: Option<&[u8]>,
        slot: usize,
        batch: &Batch,
        timeout: Duration,
    ) -> Result<Computed, SandboxError> {
        let what = "the task";
        let (snapshot_len, placed) = self.write_input(snapshot.unwrap_or_default(), std::slice::from_ref(batch))?;
        let snapshot_len = snapshot.map(|_| snapshot_len);
        let request = Request::Compute { task: task.clone(), returns_buffers, snapshot_len, slot, batch: placed[0] };
        match self.request(request, &[], timeout, what)? {
            Response::Computed {
                payload_len,
                gradient_bytes,
                buffer_bytes,
                loss_bits,
                accuracy_bits,
                compute_micros,
            } => {
                if gradient_bytes.checked_add(buffer_bytes) != Some(payload_len) {
                    return Err(self.protocol(what, "payload parts do not add up"));
                }
                Ok(Computed {
                    payload: self.output_bytes(payload_len, what)?.to_vec(),
                    gradient_bytes,
                    buffer_bytes,
                    loss: f64::from_bits(loss_bits),
                    accuracy: f64::from_bits(accuracy_bits),
                    compute_time: Duration::from_micros(compute_micros),
                })
            }
            other => Err(self.unexpected(what, &other)),
        }
    }

    /// Evaluates the shard `task`, whose batches are `batches`, with the
    /// weights in slot `slot`, first installing `snapshot` (weights version
    /// `task.version`) there when given; returns one result per batch and
    /// the time it took.
    pub fn evaluate(
        &mut self,
        task: &EvalTask,
        snapshot: Option<&[u8]>,
        slot: usize,
        batches: &[Batch],
        timeout: Duration,
    ) -> Result<(Vec<BatchEval>, Duration), SandboxError> {
        let what = "the evaluation";
        let (snapshot_len, placed) = self.write_input(snapshot.unwrap_or_default(), batches)?;
        let snapshot_len = snapshot.map(|_| snapshot_len);
        match self.request(
            Request::Evaluate { task: *task, snapshot_len, slot, batches: placed },
            &[],
            timeout,
            what,
        )? {
            Response::Evaluated { batches: results, compute_micros } => {
                if results.len() != batches.len() {
                    return Err(
                        self.protocol(what, &format!("{} results for {} batches", results.len(), batches.len()))
                    );
                }
                Ok((results.into_iter().map(BatchEval::from).collect(), Duration::from_micros(compute_micros)))
            }
            other => Err(self.unexpected(what, &other)),
        }
    }

    /// Writes `bytes` at the start of the input region and `batches` after
    /// them (each at a 64-byte boundary), growing the regions as needed;
    /// returns the length of `bytes` and where each batch went.
    fn write_input(&mut self, bytes: &[u8], batches: &[Batch]) -> Result<(u64, Vec<BatchAt>), SandboxError> {
        let mut placed = Vec::with_capacity(batches.len());
        let mut end = bytes.len() as u64;
        for batch in batches {
            let offset = end.next_multiple_of(64);
            let samples = batch.len() as u64;
            placed.push(BatchAt { offset, samples });
            end = offset + batch_bytes(batch);
        }
        let output = self.output.as_ref().map_or(0, Region::len) as u64;
        self.ensure_regions(end, output)?;
        let region = self.input.as_mut().expect("ensured above").as_mut_slice();
        region[..bytes.len()].copy_from_slice(bytes);
        for (batch, at) in batches.iter().zip(&placed) {
            let images = batch.images.contiguous();
            let labels = batch.labels.contiguous();
            let (images_len, labels_len) = (images.numel(), labels.numel());
            let start = at.offset as usize;
            let middle = start + images_len * 4;
            images.copy_data_u8(&mut region[start..middle], images_len);
            labels.copy_data_u8(&mut region[middle..middle + labels_len * 8], labels_len);
        }
        Ok((bytes.len() as u64, placed))
    }

    fn output_bytes(&self, len: u64, what: &'static str) -> Result<&[u8], SandboxError> {
        self.output
            .as_ref()
            .and_then(|r| r.as_slice().get(..usize::try_from(len).ok()?))
            .ok_or_else(|| self.protocol(what, &format!("{len} bytes reported, beyond the output region")))
    }

    /// Makes the regions at least this large, sending new ones when needed.
    fn ensure_regions(&mut self, input: u64, output: u64) -> Result<(), SandboxError> {
        let fits = |r: &Option<Region>, len: u64| r.as_ref().is_some_and(|r| r.len() as u64 >= len);
        if fits(&self.input, input) && fits(&self.output, output) {
            return Ok(());
        }
        let what = "sharing memory";
        let keep = |r: &Option<Region>, len: u64| len.max(r.as_ref().map_or(0, |r| r.len() as u64));
        let (input, output) = (keep(&self.input, input), keep(&self.output, output));
        let create = |name, len: u64| {
            Region::create(name, len as usize).map_err(|e| SandboxError::Spawn(format!("cannot share memory: {e}")))
        };
        let (new_input, new_output) = (create("rwp-sandbox-in", input)?, create("rwp-sandbox-out", output)?);
        let response = self.request(
            Request::Regions { input, output },
            &[new_input.fd(), new_output.fd()],
            self.load_timeout,
            what,
        );
        match response? {
            Response::RegionsMapped => {
                self.input = Some(new_input);
                self.output = Some(new_output);
                Ok(())
            }
            other => Err(self.unexpected(what, &other)),
        }
    }

    fn request(
        &mut self,
        request: Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
        timeout: Duration,
        what: &'static str,
    ) -> Result<Response, SandboxError> {
        if self.dead {
            return Err(SandboxError::Died { what, how: "already stopped".to_owned(), detail: String::new() });
        }
        let result = self
            .socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| protocol::send(&self.socket, &request, fds))
            .and_then(|()| protocol::recv::<Response>(&self.socket));
        match result {
            Ok((Response::Failed { message, refused }, _)) => {
                // The sandbox exits after a failure; its state is not trusted.
                self.stop();
                Err(if refused { SandboxError::Refused(message) } else { SandboxError::Failed { what, message } })
            }
            Ok((response, _)) => Ok(response),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                self.killer.kill("timed out");
                self.stop();
                Err(SandboxError::TimedOut { what, seconds: timeout.as_secs_f64() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let error = self.protocol(what, &e.to_string());
                self.stop();
                Err(error)
            }
            Err(e) => {
                let status = self.stop();
                if let Some(reason) = self.killer.take_reason() {
                    return Err(SandboxError::Killed { what, reason });
                }
                let how = match status {
                    Some(s) if s.signal() == Some(libc::SIGKILL) => {
                        "killed by SIGKILL: out of CPU time or memory, or killed from outside".to_owned()
                    }
                    Some(s) if s.signal() == Some(libc::SIGXCPU) => "out of CPU time".to_owned(),
                    Some(s) if s.signal() == Some(libc::SIGSYS) => "a forbidden system call".to_owned(),
                    Some(s) => s.to_string(),
                    None => format!("connection lost: {e}"),
                };
                Err(SandboxError::Died { what, how, detail: self.stderr_detail() })
            }
        }
    }

    /// The last lines the dead sandbox wrote.
    fn stderr_detail(&mut self) -> String {
        // The sandbox is reaped and could not fork: its end of the pipe is
        // closed, so the log thread ends once it has read the last lines.
        if let Some(thread) = self.log_thread.take() {
            let _ = thread.join();
        }
        let tail = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        let lines: Vec<&str> =
            tail.iter().map(String::as_str).filter(|l| !l.starts_with("rwp-sandbox: confined")).collect();
        if lines.is_empty() {
            String::new()
        } else {
            format!(": {}", lines.join(" | "))
        }
    }

    fn protocol(&self, what: &'static str, message: &str) -> SandboxError {
        SandboxError::Protocol { what, message: message.to_owned() }
    }

    fn unexpected(&mut self, what: &'static str, response: &Response) -> SandboxError {
        self.stop();
        let name = format!("{response:?}");
        self.protocol(what, &format!("unexpected answer {}", name.split([' ', '{', '(']).next().unwrap_or("")))
    }

    /// Kills and reaps the sandbox; its exit status when it had one.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.dead = true;
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        let status = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            _ => {
                // It may be exiting by itself (after a failure): give it a moment.
                std::thread::sleep(Duration::from_millis(10));
                match self.child.try_wait() {
                    Ok(Some(status)) => Some(status),
                    _ => {
                        let _ = self.child.kill();
                        self.child.wait().ok()
                    }
                }
            }
        };
        self.killer.reaped();
        status
    }
}

impl std::fmt::Debug for ModelHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHost").field("pid", &self.child.id()).field("dead", &self.dead).finish_non_exhaustive()
    }
}

impl Drop for ModelHost {
    fn drop(&mut self) {
        if !self.dead {
            self.stop();
        }
    }
}

/// Where libtorch's shared libraries are (some load lazily, after the
/// sandbox is closed): its own directory and, for CUDA wheels, the
/// `nvidia` packages beside torch.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(torch_lib) = crate::confine::loaded_library_dir("libtorch_cpu") {
        if let Some(site_packages) = torch_lib.parent().and_then(Path::parent) {
            let nvidia = site_packages.join("nvidia");
            if nvidia.is_dir() {
                dirs.push(nvidia);
            }
        }
        dirs.push(torch_lib);
    }
    dirs
}

/// Forwards a sandbox's standard error to the log, line by line, keeping
/// the last lines for error messages. Lines are the module's (its prints)
/// as much as the sandbox's: bounded and stripped of control characters.
fn forward_stderr(pipe: std::process::ChildStderr, pid: u32, tail: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(pipe).split(b'\n') {
        let Ok(line) = line else { break };
        let line: String = String::from_utf8_lossy(&line).chars().filter(|c| !c.is_control()).take(400).collect();
        if line.starts_with("rwp-sandbox:") {
            debug!(sandbox = pid, "{line}");
        } else {
            warn!(sandbox = pid, "model sandbox said: {line}");
        }
        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}
