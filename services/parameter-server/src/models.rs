//! TorchScript files uploaded for jobs, stored by content:
//! `<data_dir>/models/<sha256>.pt`. An upload is written to a temporary
//! file, checked (size, SHA-256, then in a model sandbox: a loadable module
//! whose code passes the op allowlist, with float32 parameters) and only
//! then renamed into place, so a stored file is always whole and valid;
//! jobs name it by its SHA-256 and workers fetch it by the same name. The
//! server never loads a module in its own process.
//!
//! A file belongs to the owners that uploaded it (records in the
//! [`Store`]): a user may name only its own uploads, and each owner's stored
//! bytes are limited (`max_model_bytes_per_owner`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rwp_sandbox::{Grants, ModelHost, SandboxConfig, SandboxError};

use rwp_spec::{ModelFile, ModelReceiver};

use crate::domain::{now_unix_ms, StoredModel};
use crate::error::ServerError;
use crate::store::Store;

/// Bytes of uploads under way, by owner.
type Receiving = Arc<Mutex<HashMap<String, u64>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where stored model files live, and who uploaded them.
#[derive(Debug)]
pub struct ModelStore {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes one owner may have stored.
    max_bytes_per_owner: u64,
    uploads: AtomicU64,
    /// How uploads are checked; `Err`: this server cannot run the sandbox.
    sandbox: Result<SandboxConfig, SandboxError>,
    store: Store,
    receiving: Receiving,
    /// Held while a file is put in place with its record, or removed: an
    /// upload and a removal of the same file never interleave.
    files: Mutex<()>,
}

/// Whose uploads a job may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// Any stored file (admins; every caller of a server without tokens).
    Any,
    /// This owner's uploads only.
    Owner(&'a str),
}

impl ModelStore {
    /// Opens (creating) `dir`, clearing uploads a crash left half-written.
    pub fn open(
        dir: PathBuf,
        max_bytes: u64,
        max_bytes_per_owner: u64,
        store: Store,
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
        Ok(Self {
            dir,
            max_bytes,
            max_bytes_per_owner,
            uploads: AtomicU64::new(0),
            sandbox,
            store,
            receiving: Receiving::default(),
            files: Mutex::new(()),
        })
    }

    /// The stored file of `sha256` (which must be a validated hex digest).
    #[must_use]
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.pt"))
    }

    /// The stored file a job names, checked to be there with its size and,
    /// for an owner, to be one of its uploads. A file that is not there,
    /// another owner's, or of another size gets one and the same answer,
    /// naming only what the caller gave: nothing about others' files leaks.
    pub fn stored(&self, file: &ModelFile, access: Access<'_>) -> Result<PathBuf, ServerError> {
        file.validate().map_err(|e| ServerError::InvalidSpec(e.to_string()))?;
        let not_found = || ServerError::ModelNotFound(format!("{} of {} bytes", file.sha256, file.size_bytes));
        if let Access::Owner(owner) = access {
            match self.store.model(owner, &file.sha256)? {
                Some(record) if record.size_bytes == file.size_bytes => {}
                _ => return Err(not_found()),
            }
        }
        let path = self.path(&file.sha256);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == file.size_bytes => Ok(path),
            _ => Err(not_found()),
        }
    }

    /// Starts receiving the file `announced` describes for `owner` (`""`
    /// on a server without tokens): refused at once when it is over the
    /// size limit, its digest is malformed or, with `limited`, it would
    /// take the owner's stored bytes (uploads under way included) over
    /// `max_model_bytes_per_owner`. A file the owner has costs nothing.
    pub fn begin(&self, announced: ModelFile, owner: &str, limited: bool) -> Result<ModelUpload, ServerError> {
        announced.validate().map_err(|e| ServerError::InvalidModel(e.to_string()))?;
        if announced.size_bytes == 0 {
            return Err(ServerError::InvalidModel("the announced size is 0 bytes".to_owned()));
        }
        if announced.size_bytes > self.max_bytes {
            return Err(ServerError::ModelFileTooLarge { size: announced.size_bytes, limit: self.max_bytes });
        }
        let reserved = if limited { self.reserve(&announced, owner)? } else { 0 };
        let reservation = Reservation { receiving: self.receiving.clone(), owner: owner.to_owned(), bytes: reserved };
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!("{}.{}.{n}.upload", announced.sha256, std::process::id()));
        let file =
            File::create(&temp).map_err(|e| ServerError::Storage(format!("cannot create {}: {e}", temp.display())))?;
        Ok(ModelUpload { temp: Some(temp), file, receiver: Some(ModelReceiver::new(announced)), reservation })
    }

    /// Counts `announced` against `owner`'s quota until the upload ends;
    /// returns the bytes counted (0 for a file the owner already has).
    fn reserve(&self, announced: &ModelFile, owner: &str) -> Result<u64, ServerError> {
        if self.store.model(owner, &announced.sha256)?.is_some() {
            return Ok(0);
        }
        let mut receiving = lock(&self.receiving);
        let stored: u64 = self.store.models(Some(owner))?.iter().map(|m| m.size_bytes).sum();
        let used = stored + receiving.get(owner).copied().unwrap_or(0);
        if used.saturating_add(announced.size_bytes) > self.max_bytes_per_owner {
            return Err(ServerError::ModelQuotaExceeded {
                owner: owner.to_owned(),
                used,
                size: announced.size_bytes,
                limit: self.max_bytes_per_owner,
            });
        }
        *receiving.entry(owner.to_owned()).or_default() += announced.size_bytes;
        Ok(announced.size_bytes)
    }

    /// Held while files are put in place or removed (see [`ModelStore::remove`]).
    pub fn lock_files(&self) -> MutexGuard<'_, ()> {
        lock(&self.files)
    }

    /// Deletes the stored file of `sha256` (call with [`ModelStore::lock_files`] held).
    pub fn remove(&self, sha256: &str) -> Result<(), ServerError> {
        match std::fs::remove_file(self.path(sha256)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ServerError::Storage(format!("cannot remove model {sha256}: {e}"))),
        }
    }

    /// The stored files: each digest with the file's modification time.
    pub fn files(&self) -> Result<Vec<(String, SystemTime)>, ServerError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| ServerError::Storage(format!("cannot list {}: {e}", self.dir.display())))?;
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(sha256) = name.strip_suffix(".pt").filter(|s| rwp_spec::is_sha256_hex(s)) else { continue };
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                files.push((sha256.to_owned(), modified));
            }
        }
        Ok(files)
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
        let grants = Grants { model_file: temp.to_owned() };
        ModelHost::spawn(sandbox, &grants).and_then(|mut host| host.inspect())?;
        let path = self.path(&announced.sha256);
        let _files = self.lock_files();
        std::fs::rename(temp, &path)
            .map_err(|e| ServerError::Storage(format!("cannot store {}: {e}", path.display())))?;
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        self.store.put_model(&StoredModel {
            owner: Some(upload.reservation.owner.clone()).filter(|o| !o.is_empty()),
            sha256: announced.sha256.clone(),
            size_bytes: announced.size_bytes,
            uploaded_unix_ms: now_unix_ms(),
        })?;
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
    reservation: Reservation,
}

/// An upload's bytes counted against its owner's quota until it ends.
#[derive(Debug)]
struct Reservation {
    receiving: Receiving,
    owner: String,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut receiving = lock(&self.receiving);
        if let Some(bytes) = receiving.get_mut(&self.owner) {
            *bytes = bytes.saturating_sub(self.bytes);
            if *bytes == 0 {
                receiving.remove(&self.owner);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(limit: u64) -> (tempfile::TempDir, ModelStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let no_sandbox = Err(SandboxError::Spawn("tests".into()));
        let models = ModelStore::open(dir.path().join("models"), 1 << 20, limit, store, no_sandbox).unwrap();
        (dir, models)
    }

    /// A stored file of `size` bytes, recorded as `owner`'s upload.
    fn put(models: &ModelStore, owner: &str, size: u64) -> ModelFile {
        let bytes = vec![owner.len() as u8; size as usize];
        let file = ModelFile { sha256: rwp_spec::sha256_hex(&bytes), size_bytes: size };
        std::fs::write(models.path(&file.sha256), &bytes).unwrap();
        let record = StoredModel {
            owner: Some(owner.into()),
            sha256: file.sha256.clone(),
            size_bytes: size,
            uploaded_unix_ms: now_unix_ms(),
        };
        models.store.put_model(&record).unwrap();
        file
    }

    #[test]
    fn an_owner_names_only_its_own_uploads_and_every_miss_reads_the_same() {
        let (_dir, models) = open(1 << 20);
        let hers = put(&models, "alice", 10);
        let unknown = ModelFile { sha256: rwp_spec::sha256_hex(b"never"), size_bytes: 10 };
        let wrong_size = ModelFile { size_bytes: 11, ..hers.clone() };
        assert_eq!(models.stored(&hers, Access::Owner("alice")).unwrap(), models.path(&hers.sha256));
        assert_eq!(models.stored(&hers, Access::Any).unwrap(), models.path(&hers.sha256));
        let answer = |file: &ModelFile, access| models.stored(file, access).unwrap_err().to_string();
        let as_unknown = answer(&ModelFile { sha256: hers.sha256.clone(), size_bytes: 10 }, Access::Owner("bob"));
        let expected = ServerError::ModelNotFound(format!("{} of 10 bytes", hers.sha256)).to_string();
        assert_eq!(as_unknown, expected);
        assert!(!answer(&wrong_size, Access::Owner("alice")).contains(" 10 "), "the real size never shows");
        assert_eq!(answer(&wrong_size, Access::Any), answer(&wrong_size, Access::Owner("alice")));
        let unknown_answer = answer(&unknown, Access::Owner("bob"));
        assert_eq!(unknown_answer, answer(&unknown, Access::Any));
        assert_eq!(unknown_answer.replace(&unknown.sha256, &hers.sha256), as_unknown);
        // A record whose file is gone is not there either.
        models.remove(&hers.sha256).unwrap();
        assert_eq!(answer(&hers, Access::Owner("alice")), expected);
    }

    #[test]
    fn uploads_over_the_owners_quota_are_refused_and_a_file_it_has_costs_nothing() {
        let (_dir, models) = open(100);
        let held = put(&models, "alice", 60);
        put(&models, "bob", 90);
        let new = |size: u64, seed: &str| ModelFile { sha256: rwp_spec::sha256_hex(seed.as_bytes()), size_bytes: size };

        let err = models.begin(new(41, "a"), "alice", true).unwrap_err();
        assert!(matches!(&err, ServerError::ModelQuotaExceeded { used: 60, size: 41, limit: 100, .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("max_model_bytes_per_owner") && text.contains("60") && text.contains("100"), "{text}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::ResourceExhausted);
        // Nothing was written for it.
        let left = std::fs::read_dir(models.path("x").parent().unwrap()).unwrap().count();
        assert_eq!(left, 2);

        // Re-uploading a file it has is free even when full; an upload under
        // way counts until it ends.
        let upload = models.begin(new(40, "b"), "alice", true).unwrap();
        drop(models.begin(held.clone(), "alice", true).unwrap());
        let err = models.begin(new(1, "c"), "alice", true).unwrap_err();
        assert!(matches!(err, ServerError::ModelQuotaExceeded { used: 100, .. }), "{err:?}");
        drop(upload);
        drop(models.begin(new(40, "c"), "alice", true).unwrap());
        // Another owner's files do not count; without a limit nothing does.
        drop(models.begin(new(10, "d"), "bob", true).unwrap());
        drop(models.begin(new(1000, "e"), "", false).unwrap());
    }
}
