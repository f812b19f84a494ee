//! A job's life after it ends: resumed for longer, deleted by its owner or
//! by the retention rule; and the state file a new job starts from when
//! it is started from another job's weights.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rwp_core::data::DatasetInfo;
use rwp_spec::{Extension, Schedule};
use tracing::{info, warn};

use super::registry::JobRecord;
use super::{planned, Coordinator};
use crate::domain::{now_unix_ms, JobState, LogKind, Principal};
use crate::error::ServerError;

/// The checkpoint a job started from another job's weights begins with, in
/// its directory (kept, so that a restart before its first checkpoint
/// starts it the same way).
pub(super) const INITIAL_STATE_FILE: &str = "initial.safetensors";

/// Longest wait between two passes of the retention rule.
const MAX_RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Marks a job as under a lifecycle operation (resume, delete) until
/// dropped, so that two of them never run on one job at once.
struct Busy<'a> {
    coordinator: &'a Coordinator,
    job: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.coordinator.lock().jobs.busy.remove(&self.job);
    }
}

impl Coordinator {
    /// The record of `job`, which `principal` may see, marked busy;
    /// `cannot` makes the error when it is busy already.
    fn claim(
        &self,
        principal: &Principal,
        job: &str,
        cannot: impl Fn(String) -> ServerError,
    ) -> Result<(JobRecord, Busy<'_>), ServerError> {
        let mut s = self.lock();
        let record = s.jobs.visible(principal, job)?.record.clone();
        if !s.jobs.busy.insert(job.to_owned()) {
            return Err(cannot("another request is resuming or deleting it; try again".to_owned()));
        }
        Ok((record, Busy { coordinator: self, job: job.to_owned() }))
    }

    /// Continues a job that ended from its latest checkpoint, with `extend`
    /// applied to its spec (more epochs, another update cap).
    pub async fn resume(&self, principal: &Principal, job: &str, extend: &Extension) -> Result<JobRecord, ServerError> {
        self.admit(principal)?;
        if self.draining() {
            return Err(ServerError::ShuttingDown);
        }
        let cannot = |reason: String| ServerError::CannotResume { job: job.to_owned(), reason };
        let (record, _busy) = self.claim(principal, job, cannot)?;
        if !record.state.is_terminal() {
            return Err(cannot(format!("it is {}; only a job that ended can be resumed", record.state.name())));
        }
        if let Some((sweep, trial)) = &record.sweep {
            return Err(cannot(format!("it is trial {trial} of sweep {sweep}, which decides what its trials run")));
        }
        let mut resumed = record.clone();
        extend.apply(&mut resumed.spec);
        resumed.spec.validate().map_err(|e| ServerError::InvalidSpec(e.to_string()))?;
        let total = Schedule::new(&resumed.spec, DatasetInfo::for_spec(&resumed.spec).train)
            .map_err(|e| ServerError::InvalidSpec(e.to_string()))?
            .total_updates;
        if total <= record.step {
            return Err(cannot(if *extend == Extension::default() {
                format!(
                    "it has made all its {total} updates: give it more epochs (--epochs) or a higher update cap \
                     (--max-updates)"
                )
            } else {
                format!("it has made {} updates, and with the new settings it would make {total} in all", record.step)
            }));
        }
        let _model_in_use = resumed.spec.model_file.as_ref().map(|file| self.use_model(principal, file)).transpose()?;
        let slot = self.reserve_active_job(principal)?;
        let (run, evaluation) = self.start_run(&resumed, None).await?;
        let version = run.snapshot.version;
        resumed.state = JobState::Running;
        resumed.error = None;
        resumed.step = version;
        resumed.total_updates = run.schedule.total_updates;
        resumed.updates_per_epoch = run.schedule.updates_per_epoch;
        resumed.updated_unix_ms = now_unix_ms();
        resumed.wall_time_before_s = resumed.last_step.as_ref().map_or(0.0, |s| s.wall_time_s);
        if let Err(e) = self.store.put_job(&resumed) {
            drop(run);
            self.recorder.close_board(job);
            return Err(e);
        }
        let unevaluated = match evaluation {
            Some(epoch) if !self.store.evaluations(job, version)?.iter().any(|e| e.step == version) => Some(epoch),
            _ => None,
        };
        {
            let mut guard = self.lock();
            let s = &mut *guard;
            let entry = s.jobs.get_mut(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
            let snapshot = run.snapshot.clone();
            s.scheduler.schedule(job, version, planned(&resumed.spec, &run.schedule, version), Instant::now());
            entry.record = resumed.clone();
            entry.run = Some(run);
            entry.announce();
            slot.taken_over(s);
            if let Some(epoch) = unevaluated {
                Self::start_evaluation(s, job, epoch, snapshot);
            }
            self.refresh_gauges(s);
        }
        self.recorder.job_started(&resumed, None, true);
        self.log(job, LogKind::Resumed, None, format!("resumed at step {version}, to {total} updates"));
        info!(job, step = version, updates = total, "job resumed");
        self.work.notify_waiters();
        Ok(resumed)
    }

    /// Deletes a job that ended, with everything the server keeps of it.
    pub fn delete(&self, principal: &Principal, job: &str) -> Result<(), ServerError> {
        self.admit(principal)?;
        let cannot = |reason: String| ServerError::CannotDelete { job: job.to_owned(), reason };
        let (record, _busy) = self.claim(principal, job, cannot)?;
        if !record.state.is_terminal() {
            return Err(cannot(format!("it is {}: cancel it first (rwp cancel {job})", record.state.name())));
        }
        if let Some((sweep, trial)) = &record.sweep {
            return Err(cannot(format!("it is trial {trial} of sweep {sweep}, whose results hold it")));
        }
        self.remove_job(&record)?;
        info!(job, "job deleted");
        Ok(())
    }

    /// Removes an ended job: its records first (a failure leaves it whole),
    /// then its files.
    fn remove_job(&self, record: &JobRecord) -> Result<(), ServerError> {
        let job = record.id.as_str();
        self.store.delete_job(job)?;
        self.lock().jobs.remove(job);
        self.discard_job_dir(job);
        self.recorder.remove_board(record);
        self.logs.forget(job);
        Ok(())
    }

    /// Deletes the jobs that ended more than `finished_job_retention_ms`
    /// ago (not sweep trials, nor jobs under another lifecycle operation);
    /// returns how many.
    fn delete_expired(&self) -> usize {
        let retention = i64::try_from(self.config.finished_job_retention_ms).unwrap_or(i64::MAX);
        let cutoff = now_unix_ms().saturating_sub(retention);
        let expired: Vec<String> = self
            .lock()
            .jobs
            .entries()
            .filter(|j| j.record.state.is_terminal() && j.record.sweep.is_none() && j.record.updated_unix_ms < cutoff)
            .map(|j| j.record.id.clone())
            .collect();
        let mut deleted = 0;
        for job in expired {
            // Resumed or deleted meanwhile: left to that request.
            let claimed = self.lock().jobs.busy.insert(job.clone());
            if !claimed {
                continue;
            }
            let _busy = Busy { coordinator: self, job: job.clone() };
            let still_expired = self
                .lock()
                .jobs
                .get(&job)
                .map(|j| j.record.clone())
                .filter(|r| r.state.is_terminal() && r.updated_unix_ms < cutoff);
            let Some(record) = still_expired else { continue };
            match self.remove_job(&record) {
                Ok(()) => {
                    info!(job, "job deleted: it ended longer ago than finished_job_retention_ms");
                    deleted += 1;
                }
                Err(e) => warn!(job, error = %e, "cannot delete an expired job"),
            }
        }
        deleted
    }

    /// Applies the retention rule for ended jobs now and then, when the
    /// server has one.
    pub(super) fn spawn_retention(self: &Arc<Self>) {
        let retention = self.config.finished_job_retention_ms;
        if retention == 0 {
            return;
        }
        let interval = (Duration::from_millis(retention) / 4).min(MAX_RETENTION_INTERVAL);
        let this = Arc::downgrade(self);
        let mut stopping = self.stopping();
        tokio::spawn(async move {
            loop {
                let Some(coordinator) = this.upgrade() else { return };
                if let Err(e) = tokio::task::spawn_blocking(move || coordinator.delete_expired()).await {
                    warn!(error = %e, "the retention of ended jobs stopped");
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
    }

    /// Writes the checkpoint a new job starts from into its directory.
    pub(super) fn write_initial_state(&self, job: &str, bytes: &[u8]) -> Result<(), ServerError> {
        let dir = self.job_dir(job);
        let path = dir.join(INITIAL_STATE_FILE);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, bytes))
            .map_err(|e| ServerError::Storage(format!("cannot write {}: {e}", path.display())))
    }
}
