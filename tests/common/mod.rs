//! Helpers shared by the integration tests.

pub mod bench;
pub mod cluster;
pub mod connections;
pub mod evaluations;
pub mod in_process;
pub mod local_run;
pub mod models;
pub mod own_data;
pub mod reference;
pub mod s3;
pub mod sweeps;
pub mod tokens;

use std::path::PathBuf;
use std::process::Command;

/// The workspace root: where this crate was built, or `RWP_WORKSPACE_ROOT`
/// for binaries run from another copy of the repository (a benchmark built
/// here and run on a GPU machine).
#[must_use]
pub fn workspace_root() -> PathBuf {
    std::env::var_os("RWP_WORKSPACE_ROOT").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_owned()
    })
}

/// The Python interpreter with torch 2.11.0 that `scripts/setup-libtorch.sh`
/// installed (`RWP_PYTHON`, written into `.cargo/config.toml`).
#[must_use]
pub fn python() -> Command {
    let path =
        std::env::var_os("RWP_PYTHON").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(path.exists(), "{} is missing: run `make setup` (or `make test`) first", path.display());
    Command::new(path)
}

/// A binary of the workspace from the same build profile as the caller:
/// test executables live in `target/<profile>/deps`, binaries in
/// `target/<profile>`.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("own executable path");
    let dir = exe.parent().expect("executable directory");
    let candidates = [dir.join(name), dir.parent().map(|d| d.join(name)).unwrap_or_default()];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!("{name} is missing next to {}: build the workspace's binaries first (make build)", exe.display())
    })
}

/// Writes a TorchScript file with `tests/reference/script_models.py` (kinds:
/// `cnn-bn`, `mlp`, `no-params`, `not-script`) for a dataset of `channels`
/// × 16 × 16 images and `classes` classes.
pub fn write_script_model(kind: &str, path: &std::path::Path, channels: u32, classes: u32) {
    let output = python()
        .arg(workspace_root().join("tests/reference/script_models.py"))
        .arg(kind)
        .arg(path)
        .args(["--channels", &channels.to_string(), "--classes", &classes.to_string()])
        .output()
        .expect("the model script starts");
    assert!(output.status.success(), "script_models.py {kind} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Largest absolute and relative difference between two tensors.
#[must_use]
pub fn max_difference(a: &tch::Tensor, b: &tch::Tensor) -> (f64, f64) {
    let diff = (a - b).abs();
    let abs = diff.max().double_value(&[]);
    let rel = (diff / (b.abs() + 1e-30)).max().double_value(&[]);
    (abs, rel)
}
