//! Each job's event log: what happened to it, in words, with who did it
//! (submitted, tasks leased and by whom, a worker lost and its task
//! re-issued, paused and why, evaluations, the end). Entries are numbered
//! per job from 1, sent at once to the job's followers, and written to the
//! store in batches by a background task (never under the coordinator's
//! lock); the newest [`MAX_ENTRIES_PER_JOB`] of a job are kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rwp_spec::job::{LogEntry, LogKind};
use tokio::sync::broadcast;
use tracing::warn;

use super::Coordinator;
use crate::domain::{now_unix_ms, Principal};
use crate::error::ServerError;
use crate::store::Store;

/// Entries of one job the store keeps; older ones are dropped.
pub const MAX_ENTRIES_PER_JOB: u64 = 100_000;

/// How often appended entries are written to the store.
const FLUSH_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct Inner {
    /// The number of each job's next entry.
    next_seq: HashMap<String, u64>,
    /// Appended, not yet in the store.
    pending: Vec<(String, LogEntry)>,
    /// Each followed job's live entries.
    live: HashMap<String, broadcast::Sender<LogEntry>>,
}

#[derive(Debug)]
pub(super) struct JobLogs {
    store: Store,
    inner: Mutex<Inner>,
}

impl JobLogs {
    /// The logs in `store`; `jobs` are the jobs it holds, whose logs go on
    /// after their last entry.
    pub(super) fn open(store: Store, jobs: impl Iterator<Item = String>) -> Result<Self, ServerError> {
        let mut next_seq = HashMap::new();
        for job in jobs {
            let last = store.last_log_seq(&job)?;
            next_seq.insert(job, last + 1);
        }
        Ok(Self { store, inner: Mutex::new(Inner { next_seq, ..Inner::default() }) })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends an entry to `job`'s log (no I/O: cheap under any lock).
    pub(super) fn append(&self, job: &str, kind: LogKind, worker: Option<&str>, message: String) {
        let mut inner = self.inner();
        let seq = inner.next_seq.entry(job.to_owned()).or_insert(1);
        let entry = LogEntry { seq: *seq, unix_ms: now_unix_ms(), kind, worker: worker.map(str::to_owned), message };
        *seq += 1;
        if let Some(live) = inner.live.get(job) {
            let _ = live.send(entry.clone());
        }
        inner.pending.push((job.to_owned(), entry));
    }

    /// Writes the appended entries to the store, in one transaction.
    pub(super) fn flush(&self) -> Result<(), ServerError> {
        let pending = std::mem::take(&mut self.inner().pending);
        if pending.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store.put_log_entries(&pending, MAX_ENTRIES_PER_JOB) {
            // Kept for the next try, before what came since.
            let mut inner = self.inner();
            let later = std::mem::replace(&mut inner.pending, pending);
            inner.pending.extend(later);
            return Err(e);
        }
        Ok(())
    }

    /// The entries of `job` after `after_seq`, in order, and, with
    /// `follow`, a receiver of the entries appended from now on (which may
    /// repeat the last ones returned: skip those by their number).
    pub(super) fn read(
        &self,
        job: &str,
        after_seq: u64,
        follow: bool,
    ) -> Result<(Vec<LogEntry>, Option<broadcast::Receiver<LogEntry>>), ServerError> {
        let receiver = follow.then(|| {
            let mut inner = self.inner();
            inner.live.entry(job.to_owned()).or_insert_with(|| broadcast::channel(4096).0).subscribe()
        });
        let pending: Vec<LogEntry> = self
            .inner()
            .pending
            .iter()
            .filter(|(j, e)| j == job && e.seq > after_seq)
            .map(|(_, e)| e.clone())
            .collect();
        let mut entries = self.store.log_entries(job, after_seq + 1)?;
        let stored_up_to = entries.last().map_or(after_seq, |e| e.seq);
        entries.extend(pending.into_iter().filter(|e| e.seq > stored_up_to));
        Ok((entries, receiver))
    }

    /// Forgets a deleted job's log (its store rows go with its record).
    pub(super) fn forget(&self, job: &str) {
        let mut inner = self.inner();
        inner.next_seq.remove(job);
        inner.live.remove(job);
        inner.pending.retain(|(j, _)| j != job);
    }
}

impl Coordinator {
    /// Appends to `job`'s log.
    pub(super) fn log(&self, job: &str, kind: LogKind, worker: Option<&str>, message: impl Into<String>) {
        self.logs.append(job, kind, worker, message.into());
    }

    /// Writes the logs' appended entries to the store now and then, and
    /// once more when the server stops.
    pub(super) fn spawn_log_writer(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let mut stopping = self.stopping();
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    () = tokio::time::sleep(FLUSH_INTERVAL) => false,
                    _ = stopping.wait_for(|s| *s) => true,
                };
                let Some(coordinator) = this.upgrade() else { return };
                match tokio::task::spawn_blocking(move || coordinator.logs.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "cannot write job logs; they are kept for the next try"),
                    Err(e) => warn!(error = %e, "the job log writer stopped"),
                }
                if stop {
                    return;
                }
            }
        });
    }
}

impl Coordinator {
    /// `job`'s log after entry `after_seq`, and with `follow` a receiver of
    /// what comes next (none when the job has ended: its log is complete).
    pub fn job_log(
        &self,
        principal: &Principal,
        job: &str,
        after_seq: u64,
        follow: bool,
    ) -> Result<(Vec<LogEntry>, Option<broadcast::Receiver<LogEntry>>), ServerError> {
        self.admit(principal)?;
        let ended = self.lock().jobs.visible(principal, job)?.record.state.is_terminal();
        self.logs.read(job, after_seq, follow && !ended)
    }
}
