//! Each attack an uploaded TorchScript module can make, against a real
//! `rwp-sandbox` process: refused when its code is checked, or contained
//! (killed past its time, out of memory), and never a file written outside.
//! The modules come from tests/reference/script_models.py.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rwp_core::data::{Batch, Dataset};
use rwp_sandbox::{Grants, ModelHost, SandboxConfig, SandboxError};
use rwp_spec::plan::{tasks_for_step, Sampler};
use rwp_spec::{JobSpec, Method, ModelKind, Schedule};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes the module `kind` (aimed at `target`) into `dir`.
fn module(dir: &Path, kind: &str, target: &Path) -> PathBuf {
    let python =
        std::env::var_os("RWP_PYTHON").map_or_else(|| workspace_root().join(".venv/bin/python"), PathBuf::from);
    let out = dir.join(format!("{kind}.pt"));
    let status = Command::new(python)
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

fn config() -> SandboxConfig {
    SandboxConfig {
        program: PathBuf::from(env!("CARGO_BIN_EXE_rwp-sandbox")),
        device: "cpu".to_owned(),
        threads: 1,
        memory_bytes: 1 << 30,
        cpu_seconds: 60,
        run_as: Some((65534, 65534)),
        require_landlock: true,
        load_timeout: Duration::from_secs(20),
    }
}

fn host(model_file: &Path) -> ModelHost {
    ModelHost::spawn(&config(), &Grants { model_file: model_file.to_owned() }).expect("sandbox starts")
}

fn spec(model_file: &Path) -> JobSpec {
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.model = ModelKind::TorchScript;
    spec.model_file = Some(rwp_spec::ModelFile::of_path(model_file).unwrap());
    spec.batch_size = 32;
    spec.epochs = 1;
    spec
}

/// Opens a job of `model_file` in `host` (its shape check runs the module
/// in evaluation mode) and returns the job's first task with the initial
/// weights and its batch.
fn first_task(host: &mut ModelHost, model_file: &Path) -> (rwp_spec::Task, Vec<u8>, Batch) {
    let spec = spec(model_file);
    let opened = host.open_job(&spec).expect("the job opens");
    let snapshot = host.initial_snapshot().unwrap();
    let schedule = Schedule::new(&spec, opened.train_samples as usize).unwrap();
    let task = tasks_for_step(&spec, &schedule, 0).swap_remove(0);
    let data = Dataset::for_spec(&spec).unwrap();
    let batch = data.train_batch(&Sampler::new(&spec, &schedule, data.train.len()).shard(&task)).unwrap();
    (task, snapshot, batch)
}

/// A directory anyone may write, so that only the sandbox stops a write.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    dir
}

fn refusal(result: Result<impl std::fmt::Debug, SandboxError>) -> String {
    match result {
        Err(SandboxError::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_module_that_writes_a_file_while_loading_is_refused_and_writes_nothing() {
    let dir = open_dir();
    let target = dir.path().join("written-by-setstate");
    let file = module(dir.path(), "write-in-setstate", &target);
    let message = refusal(host(&file).inspect());
    assert!(message.contains("not a loadable TorchScript module"), "{message}");
    assert!(!target.exists(), "the module wrote {}", target.display());
}

#[test]
fn a_module_that_writes_a_file_in_forward_is_refused_naming_the_op_and_method() {
    let dir = open_dir();
    let target = dir.path().join("written-by-forward");
    let file = module(dir.path(), "write-in-forward", &target);
    let message = refusal(host(&file).inspect());
    assert!(message.contains("WriteInForward.forward calls aten::from_file"), "{message}");
    assert!(!target.exists());
}

#[test]
fn a_module_that_reads_a_file_through_a_shape_is_refused() {
    let dir = open_dir();
    let file = module(dir.path(), "read-through-shape", Path::new("/etc/passwd"));
    let message = refusal(host(&file).inspect());
    assert!(message.contains("ReadThroughShape.forward calls aten::from_file"), "{message}");
    assert!(!message.contains("root"), "{message}");
}

#[test]
fn a_module_that_reads_a_file_into_a_buffer_is_refused() {
    let dir = open_dir();
    let file = module(dir.path(), "read-into-buffer", Path::new("/etc/passwd"));
    let message = refusal(host(&file).inspect());
    assert!(message.contains("ReadIntoBuffer.forward calls aten::from_file"), "{message}");
}

#[test]
fn custom_classes_and_foreign_operators_are_refused() {
    let dir = open_dir();
    let file = module(dir.path(), "quantized", Path::new("/nonexistent"));
    let message = refusal(host(&file).inspect());
    assert!(message.contains("quantized::conv2d"), "{message}");
    assert!(message.contains("Conv2dPackedParamsBase"), "{message}");
}

#[test]
fn a_module_that_never_finishes_loading_is_killed_at_its_timeout() {
    let dir = open_dir();
    let file = module(dir.path(), "loop-in-setstate", Path::new("/nonexistent"));
    let mut config = config();
    config.load_timeout = Duration::from_secs(2);
    let mut host = ModelHost::spawn(&config, &Grants { model_file: file }).unwrap();
    let started = Instant::now();
    let error = host.inspect().unwrap_err();
    assert!(matches!(error, SandboxError::TimedOut { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!host.is_usable());
}

#[test]
fn a_task_that_never_returns_is_killed_at_its_timeout() {
    let dir = open_dir();
    let file = module(dir.path(), "loop-in-training", Path::new("/nonexistent"));
    let mut host = host(&file);
    let (task, snapshot, batch) = first_task(&mut host, &file);
    let task = &task;
    let started = Instant::now();
    let error = host.compute(task, true, Some(&snapshot), 0, &batch, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(error, SandboxError::TimedOut { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_huge_allocation_fails_the_task_within_the_memory_limit() {
    let dir = open_dir();
    let file = module(dir.path(), "alloc-in-training", Path::new("/nonexistent"));
    let mut host = host(&file);
    let (task, snapshot, batch) = first_task(&mut host, &file);
    let task = &task;
    let error = host.compute(task, true, Some(&snapshot), 0, &batch, Duration::from_secs(30)).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("memory") || message.contains("alloc"), "{message}");
}

#[test]
fn a_killer_stops_a_running_task_from_another_thread() {
    let dir = open_dir();
    let file = module(dir.path(), "loop-in-training", Path::new("/nonexistent"));
    let mut host = host(&file);
    let (task, snapshot, batch) = first_task(&mut host, &file);
    let task = &task;
    let killer = host.killer();
    let kill = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        killer.kill("the job was cancelled");
    });
    let error = host.compute(task, true, Some(&snapshot), 0, &batch, Duration::from_secs(60)).unwrap_err();
    kill.join().unwrap();
    assert!(matches!(&error, SandboxError::Killed { reason, .. } if reason == "the job was cancelled"), "{error}");
}
