//! Checkpoints: a resumed run continues bit for bit, bad files are refused
//! with an error, and PyTorch's `safetensors` reads what we write.

use std::path::{Path, PathBuf};
use std::process::Command;

use rwp_core::checkpoint::{self, CheckpointError};
use rwp_core::model::Model;
use rwp_core::optim::TrainState;
use rwp_core::trainer::{LocalTrainer, TrainError};
use rwp_spec::{Extension, JobSpec, Method, ModelKind};
use tch::{Device, Tensor};
use tempfile::TempDir;

fn spec() -> JobSpec {
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.batch_size = 64;
    spec.epochs = 1;
    spec.max_updates = Some(4);
    spec
}

fn trainer() -> LocalTrainer {
    tch::set_num_threads(1);
    LocalTrainer::new(spec(), Device::Cpu).unwrap()
}

/// A trainer after two updates, and the checkpoint it wrote then.
fn trained_and_saved(dir: &TempDir) -> (LocalTrainer, PathBuf) {
    let mut t = trainer();
    t.step().unwrap();
    t.step().unwrap();
    let path = dir.path().join("run.safetensors");
    t.save_checkpoint(&path).unwrap();
    (t, path)
}

fn same_tensors(what: &str, a: &[Tensor], b: &[Tensor]) {
    assert_eq!(a.len(), b.len(), "{what}: count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.size(), y.size(), "{what}[{i}]: shape");
        assert_eq!(x.kind(), y.kind(), "{what}[{i}]: kind");
        assert!(x.equal(y), "{what}[{i}] differs");
    }
}

fn same_state(a: &TrainState, b: &TrainState) {
    assert_eq!(a.step, b.step, "step");
    same_tensors("weights", a.weights(), b.weights());
    same_tensors("buffers", a.buffers(), b.buffers());
    assert_eq!(a.momentum().is_some(), b.momentum().is_some(), "momentum presence");
    assert_eq!(a.history().is_some(), b.history().is_some(), "history presence");
    if let (Some(x), Some(y)) = (a.momentum(), b.momentum()) {
        same_tensors("momentum", x, y);
    }
    if let (Some(x), Some(y)) = (a.history(), b.history()) {
        same_tensors("history", x, y);
    }
}

#[test]
fn a_resumed_run_continues_bit_for_bit() {
    let dir = TempDir::new().unwrap();
    let (mut original, path) = trained_and_saved(&dir);
    assert_eq!(original.state.step, 2);
    assert!(original.state.momentum().is_some() && original.state.history().is_some());

    let mut resumed = LocalTrainer::resume(&path, Device::Cpu, None, &Default::default()).unwrap();
    assert_eq!(resumed.spec, original.spec);
    assert_eq!(resumed.model.kind, ModelKind::SmallCnn);
    assert_eq!(resumed.schedule.total_updates, 4);
    same_state(&resumed.state, &original.state);

    for _ in 0..2 {
        let a = original.step().unwrap();
        let b = resumed.step().unwrap();
        assert_eq!(a, b, "update reports (step, lr, sigma, losses)");
    }
    assert!(original.is_done() && resumed.is_done());
    same_state(&resumed.state, &original.state);

    // The continued run really moved on from the checkpoint.
    let saved = checkpoint::load(&path, &original.model, Device::Cpu).unwrap();
    assert_eq!(saved.state.step, 2);
    assert!(!saved.state.weights()[0].equal(&original.state.weights()[0]));
    assert_eq!(original.evaluate().unwrap(), resumed.evaluate().unwrap());
}

/// A run that stopped at its update cap and is continued without it ends
/// where a run without the cap ends, bit for bit (the schedules spanned
/// the same epochs all along).
#[test]
fn a_run_extended_past_its_cap_equals_an_uninterrupted_longer_run() {
    let dir = TempDir::new().unwrap();
    let (_, path) = trained_and_saved(&dir);
    let uncapped = Extension { epochs: None, max_updates: Some(None) };
    let mut extended = LocalTrainer::resume(&path, Device::Cpu, None, &uncapped).unwrap();
    assert_eq!(extended.spec.max_updates, None);
    let mut longer_spec = spec();
    longer_spec.max_updates = None;
    let mut longer = LocalTrainer::new(longer_spec, Device::Cpu).unwrap();
    assert_eq!(extended.schedule.total_updates, longer.schedule.total_updates);
    assert!(longer.schedule.total_updates > 4, "the cap held the run back");
    while !longer.is_done() {
        longer.step().unwrap();
    }
    while !extended.is_done() {
        extended.step().unwrap();
    }
    same_state(&extended.state, &longer.state);

    // More epochs: the schedules span the new total.
    let two_epochs = Extension { epochs: Some(2), max_updates: None };
    let more = LocalTrainer::resume(&path, Device::Cpu, None, &two_epochs).unwrap();
    assert_eq!((more.spec.epochs, more.spec.max_updates), (2, Some(4)));
}

/// Starting from another run's weights takes its weights and BatchNorm
/// statistics, and nothing of its optimizer state.
#[test]
fn a_run_started_from_weights_has_them_and_a_fresh_optimizer() {
    let dir = TempDir::new().unwrap();
    let (source, path) = trained_and_saved(&dir);
    let mut other = spec();
    other.seed = 7;
    other.method = Method::Sgd;
    let started = LocalTrainer::from_weights(other.clone(), Device::Cpu, None, &path).unwrap();
    assert_eq!(started.state.step, 0);
    assert!(started.state.momentum().is_none() && started.state.history().is_none());
    same_tensors("weights", started.state.weights(), source.state.weights());
    same_tensors("buffers", started.state.buffers(), source.state.buffers());
    let from_seed = LocalTrainer::new(other.clone(), Device::Cpu).unwrap();
    assert!(!from_seed.state.weights()[0].equal(&started.state.weights()[0]));

    // Another model's weights are refused, naming what does not fit.
    other.model = ModelKind::Mlp;
    let err = LocalTrainer::from_weights(other, Device::Cpu, None, &path).unwrap_err().to_string();
    assert!(err.contains("small-cnn model, not mlp"), "{err}");
}

#[test]
fn a_fresh_state_round_trips_without_momentum_or_history() {
    let dir = TempDir::new().unwrap();
    let t = trainer();
    assert!(t.state.momentum().is_none() && t.state.history().is_none());
    let path = dir.path().join("fresh.safetensors");
    t.save_checkpoint(&path).unwrap();
    let loaded = checkpoint::load(&path, &t.model, Device::Cpu).unwrap();
    assert_eq!(loaded.spec, t.spec);
    same_state(&loaded.state, &t.state);
    assert_eq!(checkpoint::read_spec(&path).unwrap(), t.spec);
    // The temporary file was renamed away.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("fresh.safetensors")]);
}

#[test]
fn a_checkpoint_of_another_model_is_refused() {
    let dir = TempDir::new().unwrap();
    let (t, path) = trained_and_saved(&dir);
    let mlp = Model::new(ModelKind::Mlp, t.model.input, t.model.classes);
    let err = checkpoint::load(&path, &mlp, Device::Cpu).unwrap_err();
    assert!(matches!(&err, CheckpointError::Invalid { path: p, .. } if *p == path), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("small-cnn") && text.contains("mlp"), "{text}");
    assert!(text.contains("run.safetensors"), "{text}");

    // Same kind, other shapes (7 classes instead of 10): the tensor is named.
    let other = Model::new(ModelKind::SmallCnn, t.model.input, 7);
    let text = checkpoint::load(&path, &other, Device::Cpu).unwrap_err().to_string();
    assert!(text.contains("weights.fc.weight"), "{text}");
}

fn expect_invalid(result: Result<LocalTrainer, TrainError>, path: &Path) -> String {
    match result {
        Err(TrainError::Checkpoint(err @ CheckpointError::Invalid { .. })) => {
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            text
        }
        Err(other) => panic!("expected an invalid checkpoint, got {other:?}"),
        Ok(_) => panic!("a bad checkpoint was accepted"),
    }
}

#[test]
fn truncated_and_garbage_files_are_errors_not_panics() {
    let dir = TempDir::new().unwrap();
    let (t, path) = trained_and_saved(&dir);
    let bytes = std::fs::read(&path).unwrap();

    // Tensor data cut short: the header still parses.
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).unwrap();
    let err = checkpoint::load(&cut, &t.model, Device::Cpu).unwrap_err();
    assert!(matches!(err, CheckpointError::Invalid { .. }), "{err:?}");
    expect_invalid(LocalTrainer::resume(&cut, Device::Cpu, None, &Default::default()), &cut);

    // Cut inside the header, and a few bytes only.
    for len in [bytes.len() / 100, 12, 5, 0] {
        let short = dir.path().join(format!("short{len}.safetensors"));
        std::fs::write(&short, &bytes[..len]).unwrap();
        let err = checkpoint::load(&short, &t.model, Device::Cpu).unwrap_err();
        assert!(matches!(err, CheckpointError::Invalid { .. }), "{len} bytes: {err:?}");
        assert!(matches!(checkpoint::read_spec(&short), Err(CheckpointError::Invalid { .. })), "{len} bytes");
        expect_invalid(LocalTrainer::resume(&short, Device::Cpu, None, &Default::default()), &short);
    }

    // A header length far beyond the file.
    let huge = dir.path().join("huge.safetensors");
    let mut garbage = u64::MAX.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"{}");
    std::fs::write(&huge, &garbage).unwrap();
    expect_invalid(LocalTrainer::resume(&huge, Device::Cpu, None, &Default::default()), &huge);

    // No file at all.
    let missing = dir.path().join("missing.safetensors");
    let err = checkpoint::load(&missing, &t.model, Device::Cpu).unwrap_err();
    assert!(matches!(&err, CheckpointError::Io { path: p, .. } if *p == missing), "{err:?}");
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
}

fn python() -> Command {
    let path = std::env::var_os("RWP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"));
    assert!(path.exists(), "{} is missing: run `make setup` first (or set RWP_PYTHON)", path.display());
    Command::new(path)
}

#[test]
fn pytorch_safetensors_reads_the_checkpoint() {
    let dir = TempDir::new().unwrap();
    let (t, path) = trained_and_saved(&dir);
    let script = r#"
import sys
from safetensors.torch import load_file
from safetensors import safe_open
path = sys.argv[1]
tensors = load_file(path)
with safe_open(path, framework="pt") as f:
    meta = f.metadata()
w = tensors["weights.conv1.weight"]
print("step", meta["rwp.step"])
print("model", meta["rwp.model"])
print("tensors", len(tensors))
print("shape", list(w.shape))
print("dtype", w.dtype)
print("first", repr(w.flatten()[0].item()))
print("history", repr(tensors["history.fc.bias"][3].item()))
"#;
    let output = python().arg("-c").arg(script).arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no '{key}' in:\n{stdout}"))
            .to_owned()
    };
    assert_eq!(field("step"), "2");
    assert_eq!(field("model"), "small-cnn");
    let params = t.model.params().len();
    assert_eq!(field("tensors"), (3 * params + t.model.buffers().len()).to_string());
    assert_eq!(field("shape"), "[32, 3, 3, 3]");
    assert_eq!(field("dtype"), "torch.float32");
    // Values survive exactly (Python prints the double of the f32, round-trip exact).
    let first: f64 = field("first").parse().unwrap();
    assert_eq!(first, t.state.weights()[0].flatten(0, -1).double_value(&[0]));
    let fc_bias = t.model.params().iter().position(|p| p.name == "fc.bias").unwrap();
    let history: f64 = field("history").parse().unwrap();
    assert_eq!(history, t.state.history().unwrap()[fc_bias].double_value(&[3]));
}

#[test]
fn a_flipped_byte_anywhere_is_caught_by_the_checksum() {
    let dir = TempDir::new().unwrap();
    let (t, path) = trained_and_saved(&dir);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(checkpoint::verify(&bytes), Ok(2));
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // A bit in the middle of the tensor data, and one in the last byte.
    for at in [8 + header_len + (bytes.len() - 8 - header_len) / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let flipped = dir.path().join("flipped.safetensors");
        std::fs::write(&flipped, &bad).unwrap();
        let text = checkpoint::load(&flipped, &t.model, Device::Cpu).unwrap_err().to_string();
        assert!(text.contains("checksum mismatch") && text.contains("flipped.safetensors"), "{text}");
        assert!(checkpoint::verify(&bad).unwrap_err().contains("checksum mismatch"));
    }
    // The step in the metadata is covered too (same length, so the header still parses).
    let text = String::from_utf8_lossy(&bytes[8..8 + header_len]).into_owned();
    let edited = text.replacen("\"rwp.step\":\"2\"", "\"rwp.step\":\"3\"", 1);
    assert_ne!(edited, text, "the header holds the step");
    let mut bad = bytes.clone();
    bad[8..8 + header_len].copy_from_slice(edited.as_bytes());
    assert!(checkpoint::verify(&bad).unwrap_err().contains("checksum mismatch"));
}

#[test]
fn rotation_falls_back_to_the_previous_checkpoint_and_keeps_the_corrupt_one() {
    let dir = TempDir::new().unwrap();
    let rotation = checkpoint::Rotation::in_dir(dir.path());
    let mut t = trainer();
    let (none, rejected) = rotation.load(&t.model, Device::Cpu);
    assert!(none.is_none() && rejected.is_empty(), "a new job has nothing to resume");
    t.step().unwrap();
    rotation.save(&t.spec, &t.model, &t.state).unwrap();
    let after_one = t.state.weights()[0].copy();
    t.step().unwrap();
    rotation.save(&t.spec, &t.model, &t.state).unwrap();

    let (latest, rejected) = rotation.load(&t.model, Device::Cpu);
    assert!(rejected.is_empty());
    same_state(&latest.unwrap().state, &t.state);

    // Corrupt the latest file: the previous one (step 1) is used, the bad
    // file is moved aside, not deleted.
    let mut bytes = std::fs::read(rotation.latest()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(rotation.latest(), &bytes).unwrap();
    let (previous, rejected) = rotation.load(&t.model, Device::Cpu);
    let previous = previous.expect("the previous checkpoint is used");
    assert_eq!(previous.state.step, 1);
    assert!(previous.state.weights()[0].equal(&after_one));
    assert_eq!(rejected.len(), 1);
    let text = rejected[0].to_string();
    assert!(text.contains("checksum mismatch") && text.contains("moved to"), "{text}");
    let aside = rejected[0].moved_to.clone().unwrap();
    assert_eq!(std::fs::read(&aside).unwrap(), bytes, "the corrupt file is kept as it was");
    assert!(!rotation.latest().exists());
}

#[test]
fn a_failed_write_leaves_both_checkpoints_and_no_temporary_file() {
    let dir = TempDir::new().unwrap();
    let rotation = checkpoint::Rotation::in_dir(dir.path());
    let mut t = trainer();
    t.step().unwrap();
    rotation.save(&t.spec, &t.model, &t.state).unwrap();
    t.step().unwrap();
    rotation.save(&t.spec, &t.model, &t.state).unwrap();
    let before: Vec<_> = ["checkpoint.safetensors", "checkpoint.previous.safetensors"]
        .map(|n| std::fs::read(dir.path().join(n)).unwrap())
        .into();

    // A temporary file left by a process killed mid-write is cleared on load.
    let tmp = dir.path().join("checkpoint.safetensors.tmp");
    std::fs::write(&tmp, b"half a checkpoint").unwrap();
    let (loaded, _) = rotation.load(&t.model, Device::Cpu);
    assert_eq!(loaded.unwrap().state.step, 2);
    assert!(!tmp.exists());

    // The temporary file cannot be created (a directory is in the way): the
    // save fails, naming the checkpoint, and changes nothing.
    std::fs::create_dir(&tmp).unwrap();
    t.step().unwrap();
    let err = rotation.save(&t.spec, &t.model, &t.state).unwrap_err();
    assert!(err.to_string().contains("checkpoint.safetensors"), "{err}");
    let after: Vec<_> = ["checkpoint.safetensors", "checkpoint.previous.safetensors"]
        .map(|n| std::fs::read(dir.path().join(n)).unwrap())
        .into();
    assert_eq!(before, after);
}
