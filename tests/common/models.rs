//! Uploaded model files with owners: a tokens file of two users and an
//! admin, their clients, small TorchScript files and what the server keeps.

use std::path::{Path, PathBuf};

use rwp_parameter_server::domain::CallerRole;
use rwp_sdk::{Client, ClientConfig, JobSpec, Method, ModelFile, ModelKind};

use crate::tokens::TokensFile;
use crate::write_script_model;

/// The tokens of `alice` and `bob` (users) and `root` (an admin).
#[must_use]
pub fn owners() -> TokensFile {
    TokensFile::new(&[("alice", CallerRole::User), ("bob", CallerRole::User), ("root", CallerRole::Admin)])
}

/// A client of the server at `url` with `name`'s token (`None`: no token),
/// trying each call once.
pub async fn client_as(url: &str, tokens: Option<&TokensFile>, name: &str) -> Client {
    let mut config = ClientConfig::new(url);
    config.token = tokens.map(|t| t.token(name).clone());
    config.attempts = 1;
    Client::connect_with(config).await.unwrap()
}

/// Writes a TorchScript MLP for the built-in dataset with `classes` logits
/// (10 fits it; other counts make files of other bytes) to `dir`.
#[must_use]
pub fn mlp(dir: &Path, classes: u32) -> PathBuf {
    let path = dir.join(format!("mlp-{classes}.pt"));
    write_script_model("mlp", &path, 3, classes);
    path
}

/// A small job on the built-in dataset training the uploaded `file`.
#[must_use]
pub fn script_job(file: &ModelFile) -> JobSpec {
    let mut spec = crate::local_run::small_job(1, Method::Sgd, 4);
    spec.model = ModelKind::TorchScript;
    spec.model_file = Some(file.clone());
    spec
}

/// The digests of the model files the server in `data_dir` stores, sorted;
/// panics on anything else there (a half-written upload).
#[must_use]
pub fn stored_files(data_dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(data_dir.join("models"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .map(|name| name.strip_suffix(".pt").unwrap_or_else(|| panic!("{name} left in models/")).to_owned())
        .collect();
    files.sort();
    files
}
