//! TorchScript files uploaded for jobs, stored by content:
//! `<data_dir>/models/<sha256>.pt`. An upload is written to a temporary
//! file, checked (size, SHA-256, then in a model sandbox: a loadable module
//! whose code passes the op allowlist, with float32 parameters) and only
//! then renamed into place, so a stored file is always whole and valid;
//! jobs name it by its SHA-256 and workers fetch it by the same name. The
//! server never loads a module in its own process.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rwp_sandbox::{Grants, ModelHost, SandboxConfig, SandboxError};

use rwp_spec::{ModelFile, ModelReceiver};

use crate::error::ServerError;

/// Where stored model files live.
#[derive(Debug)]
pub struct ModelStore {
    dir: PathBuf,
    max_bytes: u64,
    uploads: AtomicU64,
    /// How uploads are checked; `Err`: this server cannot run the sandbox.
    sandbox: Result<SandboxConfig, SandboxError>,
}

impl ModelStore {
    /// Opens (creating) `dir`, clearing uploads a crash left half-written.
    pub fn open(
        dir: PathBuf,
        max_bytes: u64,
        sandbox: Result<SandboxConfig, SandboxError>,
    ) -> Result<Self, ServerError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServerError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".upload") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(Self { dir, max_bytes, uploads: AtomicU64::new(0), sandbox })
    }

    /// The stored file of `sha256` (which must be a validated hex digest).
    #[must_use]
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.pt"))
    }

    /// The stored file a job names, checked to be there with its size.
    pub fn stored(&self, file: &ModelFile) -> Result<PathBuf, ServerError> {
        file.validate().map_err(|e| ServerError::InvalidSpec(e.to_string()))?;
        let path = self.path(&file.sha256);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == file.size_bytes => Ok(path),
            Ok(meta) => Err(ServerError::InvalidSpec(format!(
                "model_file {} has {} bytes on this server, the spec says {}",
                file.sha256,
                meta.len(),
                file.size_bytes
            ))),
            Err(_) => Err(ServerError::ModelNotFound(file.sha256.clone())),
        }
    }

    /// Starts receiving the file `announced` describes: refused at once when
    /// it is over the size limit or its digest is malformed.
    pub fn begin(&self, announced: ModelFile) -> Result<ModelUpload, ServerError> {
        announced.validate().map_err(|e| ServerError::InvalidModel(e.to_string()))?;
        if announced.size_bytes == 0 {
            return Err(ServerError::InvalidModel("the announced size is 0 bytes".to_owned()));
        }
        if announced.size_bytes > self.max_bytes {
            return Err(ServerError::ModelFileTooLarge { size: announced.size_bytes, limit: self.max_bytes });
        }
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!("{}.{}.{n}.upload", announced.sha256, std::process::id()));
        let file =
            File::create(&temp).map_err(|e| ServerError::Storage(format!("cannot create {}: {e}", temp.display())))?;
        Ok(ModelUpload { temp: Some(temp), file, receiver: Some(ModelReceiver::new(announced)) })
    }

    /// Checks a received upload and stores it under its digest. Loads the
    /// module in a sandbox and waits for it (blocking: call it off the
    /// async runtime, on a thread that outlives the check).
    pub fn commit(&self, mut upload: ModelUpload) -> Result<ModelFile, ServerError> {
        let temp = upload.temp.take().expect("an upload is committed once");
        let result = self.check_and_store(&temp, &mut upload);
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    fn check_and_store(&self, temp: &Path, upload: &mut ModelUpload) -> Result<ModelFile, ServerError> {
        let receiver = upload.receiver.take().expect("an upload is committed once");
        let announced = receiver.finish().map_err(|e| ServerError::InvalidModel(format!("upload: {e}")))?;
        upload.file.sync_all().map_err(|e| ServerError::Storage(format!("cannot write {}: {e}", temp.display())))?;
        let sandbox = self.sandbox.as_ref().map_err(|e| ServerError::Sandbox(e.to_string()))?;
        let grants = Grants { model_file: temp.to_owned(), data_dir: None };
        ModelHost::spawn(sandbox, &grants).and_then(|mut host| host.inspect())?;
        let path = self.path(&announced.sha256);
        std::fs::rename(temp, &path)
            .map_err(|e| ServerError::Storage(format!("cannot store {}: {e}", path.display())))?;
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(announced)
    }

    /// The stored file's bytes, for a worker.
    pub fn read(&self, sha256: &str) -> Result<Vec<u8>, ServerError> {
        if !rwp_spec::is_sha256_hex(sha256) {
            return Err(ServerError::ModelNotFound(sha256.chars().take(80).collect()));
        }
        std::fs::read(self.path(sha256)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ServerError::ModelNotFound(sha256.to_owned()),
            _ => ServerError::Storage(format!("cannot read model {sha256}: {e}")),
        })
    }
}

/// A model file being received.
#[derive(Debug)]
pub struct ModelUpload {
    temp: Option<PathBuf>,
    file: File,
    receiver: Option<ModelReceiver>,
}

impl ModelUpload {
    /// Appends a chunk, which must start where the previous one ended and
    /// stay within the announced size.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), ServerError> {
        let receiver = self.receiver.as_mut().expect("written before it is committed");
        receiver.accept(offset, data).map_err(|e| ServerError::InvalidModel(format!("upload: {e}")))?;
        self.file.write_all(data).map_err(|e| ServerError::Storage(format!("cannot write an upload: {e}")))
    }
}

impl Drop for ModelUpload {
    /// An upload abandoned midway (client gone, bad chunk) leaves nothing.
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(temp);
        }
    }
}
