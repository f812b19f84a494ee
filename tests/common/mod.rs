//! Helpers shared by the integration tests.

pub mod cluster;

use std::path::PathBuf;
use std::process::Command;

/// The workspace root.
#[must_use]
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_owned()
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

/// A release or debug binary of the workspace, built by cargo for this test run.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    // Integration tests live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the workspace's binaries first (make build)", path.display());
    path
}

/// Largest absolute and relative difference between two tensors.
#[must_use]
pub fn max_difference(a: &tch::Tensor, b: &tch::Tensor) -> (f64, f64) {
    let diff = (a - b).abs();
    let abs = diff.max().double_value(&[]);
    let rel = (diff / (b.abs() + 1e-30)).max().double_value(&[]);
    (abs, rel)
}
