//! Uploaded model files as the job API sees them: uploads recorded to their
//! owner, the check that a job names one of its submitter's files, listing
//! and disowning, and the collection of files no job needs any more.
//!
//! A file is in use while a running or paused job names it, a running sweep
//! names it in its base spec, or a submission naming it is under way; a
//! file in use is never removed. Removals hold the model store's file lock
//! and, while deciding and unlinking, the scheduling state's lock.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rwp_spec::ModelFile;
use tracing::{info, warn};

use super::{Coordinator, State};
use crate::domain::{now_unix_ms, CallerRole, Principal, StoredModel};
use crate::error::ServerError;
use crate::models::{Access, ModelUpload};

/// Whose files `principal` may name: an admin (or anyone on a server
/// without tokens) any file, a user its own uploads.
fn access(principal: &Principal) -> Access<'_> {
    match principal.role {
        CallerRole::Admin | CallerRole::Anonymous => Access::Any,
        CallerRole::User | CallerRole::Worker => Access::Owner(&principal.name),
    }
}

/// The digests of the files in use (see the module's documentation).
fn in_use(s: &State) -> HashSet<&str> {
    let jobs = s.jobs.entries().filter(|j| j.run.is_some()).filter_map(|j| j.record.spec.model_file.as_ref());
    let files = jobs.map(|f| f.sha256.as_str());
    let sweeps = s.sweeps.values().filter_map(super::sweeps::SweepEntry::model_in_use);
    files.chain(sweeps).chain(s.models_starting.keys().map(String::as_str)).collect()
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A submission naming a model file, under way: the file counts as in use
/// until the job is in the coordinator's jobs (or refused).
pub(super) struct ModelInUse<'a> {
    coordinator: &'a Coordinator,
    sha256: String,
}

impl Drop for ModelInUse<'_> {
    fn drop(&mut self) {
        let mut s = self.coordinator.lock();
        if let Some(count) = s.models_starting.get_mut(&self.sha256) {
            *count -= 1;
            if *count == 0 {
                s.models_starting.remove(&self.sha256);
            }
        }
    }
}

impl Coordinator {
    /// Files whose last owner gave them up while they were in use: removed
    /// when no longer in use.
    fn disowned(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.disowned.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks that `principal` may name `file` (see [`crate::models::ModelStore::stored`])
    /// and holds it in use until the returned guard is dropped. New jobs,
    /// sweeps and retried submissions all come through here; jobs resumed
    /// after a restart and a sweep's later trials do not.
    pub(super) fn use_model(&self, principal: &Principal, file: &ModelFile) -> Result<ModelInUse<'_>, ServerError> {
        // In use first, checked second: a collection either sees the use or
        // has removed the file before the check.
        *self.lock().models_starting.entry(file.sha256.clone()).or_default() += 1;
        let guard = ModelInUse { coordinator: self, sha256: file.sha256.clone() };
        self.models.stored(file, access(principal))?;
        Ok(guard)
    }

    /// Starts receiving a model file for `principal`, within its quota.
    pub fn begin_model_upload(&self, principal: &Principal, announced: ModelFile) -> Result<ModelUpload, ServerError> {
        self.admit(principal)?;
        if self.draining() {
            return Err(ServerError::ShuttingDown);
        }
        let owner = principal.owner();
        self.models.begin(announced, owner.as_deref().unwrap_or_default(), owner.is_some())
    }

    /// Checks a received model file and stores it (libtorch loads it, on a
    /// blocking thread).
    pub async fn finish_model_upload(&self, upload: ModelUpload) -> Result<ModelFile, ServerError> {
        let models = self.models.clone();
        let file = tokio::task::spawn_blocking(move || models.commit(upload))
            .await
            .map_err(|e| ServerError::Storage(format!("model check stopped: {e}")))??;
        info!(sha256 = %file.sha256, bytes = file.size_bytes, "model file stored");
        Ok(file)
    }

    /// A stored model file's bytes, for workers.
    pub async fn model_bytes(&self, sha256: &str) -> Result<Bytes, ServerError> {
        let models = self.models.clone();
        let sha256 = sha256.to_owned();
        tokio::task::spawn_blocking(move || models.read(&sha256).map(Bytes::from))
            .await
            .map_err(|e| ServerError::Storage(format!("model read stopped: {e}")))?
    }

    /// The uploads `principal` may see: its own, or every owner's for an
    /// admin and on a server without tokens.
    pub fn list_models(&self, principal: &Principal) -> Result<Vec<StoredModel>, ServerError> {
        self.admit(principal)?;
        match access(principal) {
            Access::Any => self.store.models(None),
            Access::Owner(owner) => self.store.models(Some(owner)),
        }
    }

    /// Gives up `principal`'s ownership of the file `sha256`; the file is
    /// removed once it has no owner left and is not in use (else when the
    /// last job naming it ends).
    pub fn delete_model(&self, principal: &Principal, sha256: &str) -> Result<(), ServerError> {
        self.admit(principal)?;
        let owner = principal.owner().unwrap_or_default();
        let _files = self.models.lock_files();
        if !rwp_spec::is_sha256_hex(sha256) || !self.store.delete_model(&owner, sha256)? {
            return Err(ServerError::ModelNotFound(sha256.chars().take(80).collect()));
        }
        info!(sha256, owner, "model file disowned");
        if self.store.models(None)?.iter().any(|m| m.sha256 == sha256) {
            return Ok(());
        }
        let s = self.lock();
        if in_use(&s).contains(sha256) {
            self.disowned().insert(sha256.to_owned());
            return Ok(());
        }
        self.models.remove(sha256)?;
        info!(sha256, "model file removed: no owner left and no job names it");
        Ok(())
    }

    /// After a job naming `file` ended: removes the file if its last owner
    /// gave it up while it was in use and nothing uses it now.
    pub(super) fn model_released(&self, file: &ModelFile) {
        if !self.disowned().contains(&file.sha256) {
            return;
        }
        // Locks in the order every removal takes them: files, state, disowned.
        let _files = self.models.lock_files();
        let s = self.lock();
        if in_use(&s).contains(file.sha256.as_str()) || !self.disowned().remove(&file.sha256) {
            return;
        }
        match self.models.remove(&file.sha256) {
            Ok(()) => info!(sha256 = %file.sha256, "model file removed: no owner left and no job names it"),
            Err(e) => warn!(sha256 = %file.sha256, error = %e, "cannot remove a disowned model file"),
        }
    }

    /// One collection: deletes, with their records, the stored files not in
    /// use whose last upload (for files without a record, modification) is
    /// older than `unreferenced_model_retention_ms`; returns their digests.
    pub fn collect_models(&self) -> Result<Vec<String>, ServerError> {
        let retention = i64::try_from(self.config.unreferenced_model_retention_ms).unwrap_or(i64::MAX);
        let cutoff = now_unix_ms().saturating_sub(retention);
        let _files = self.models.lock_files();
        let mut uploaded: HashMap<String, i64> = HashMap::new();
        for m in self.store.models(None)? {
            let last = uploaded.entry(m.sha256).or_insert(i64::MIN);
            *last = (*last).max(m.uploaded_unix_ms);
        }
        let files = self.models.files()?;
        let mut removed = Vec::new();
        {
            let s = self.lock();
            let used = in_use(&s);
            let mut disowned = self.disowned();
            for (sha256, modified) in &files {
                if used.contains(sha256.as_str()) {
                    continue;
                }
                let last = uploaded.get(sha256).copied().unwrap_or_else(|| unix_ms(*modified));
                if last >= cutoff && !disowned.contains(sha256) {
                    continue;
                }
                match self.models.remove(sha256) {
                    Ok(()) => {
                        disowned.remove(sha256);
                        info!(sha256 = %sha256, last_upload_unix_ms = last, "unreferenced model file removed");
                        removed.push(sha256.clone());
                    }
                    Err(e) => warn!(sha256 = %sha256, error = %e, "cannot remove an unreferenced model file"),
                }
            }
        }
        // Records of removed files, and old ones whose file is gone.
        let on_disk: HashSet<&str> = files.iter().map(|(sha256, _)| sha256.as_str()).collect();
        for (sha256, last) in &uploaded {
            if removed.contains(sha256) || (*last < cutoff && !on_disk.contains(sha256.as_str())) {
                self.store.delete_model_records(sha256)?;
            }
        }
        Ok(removed)
    }

    /// Collects model files now, then every `model_gc_interval_ms`, until
    /// the server stops.
    pub(super) fn spawn_model_collection(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let interval = Duration::from_millis(self.config.model_gc_interval_ms);
        let mut stopping = self.stopping();
        tokio::spawn(async move {
            loop {
                let Some(coordinator) = this.upgrade() else { return };
                match tokio::task::spawn_blocking(move || coordinator.collect_models()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, "model file collection failed"),
                    Err(e) => warn!(error = %e, "model file collection stopped"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
    }
}
