//! Tasks given back because a job's data storage cannot be reached (a
//! bucket gone, a network down): not the task's failure, and not counted
//! as one. The task goes back to the queue, the job pauses with the
//! reason, and it goes on after `checkpoint_retry_ms`; while the storage
//! stays away, the next task fails the same way and pauses it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Coordinator;
use crate::domain::{JobState, LogKind};
use crate::error::ServerError;

/// How a pause for unreachable storage starts its reason.
const PAUSED_FOR_STORAGE: &str = "paused: the job's data cannot be read";

impl Coordinator {
    /// `worker` gives `lease` back because the job's data storage cannot
    /// be reached (`reason`).
    pub fn storage_unavailable(self: &Arc<Self>, worker: &str, lease: &str, reason: &str) -> Result<(), ServerError> {
        let (job, record) = {
            let mut guard = self.lock();
            let s = &mut *guard;
            let job = s.scheduler.lease_job(worker, lease);
            s.scheduler.release(worker, lease, None)?;
            s.workers.lease_ended(worker, lease, false, Instant::now());
            self.refresh_gauges(s);
            let Some(job) = job else { return Ok(()) };
            if s.scheduler.is_paused(&job) {
                return Ok(());
            }
            let Some(entry) = s.jobs.get_mut(&job).filter(|e| e.run.is_some()) else { return Ok(()) };
            s.scheduler.pause(&job);
            let message =
                format!("{PAUSED_FOR_STORAGE} ({reason}); trying again every {} ms", self.config.checkpoint_retry_ms);
            let record = entry.set_state(JobState::Paused, Some(message.clone()));
            let name = s.workers.name(worker);
            self.log(&job, LogKind::Paused, Some(&name), message);
            self.refresh_gauges(s);
            (job, record)
        };
        warn!(job, reason, "job paused: its data storage cannot be reached");
        if let Err(e) = self.store.put_job(&record) {
            warn!(job, error = %e, "cannot record the paused job");
        }
        self.try_storage_again(job);
        Ok(())
    }

    /// Lets the job's tasks go out again after `checkpoint_retry_ms`.
    fn try_storage_again(self: &Arc<Self>, job: String) {
        let this = Arc::clone(self);
        let mut stopping = self.stopping();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(this.config.checkpoint_retry_ms)) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let record = {
                let mut guard = this.lock();
                let s = &mut *guard;
                let paused_for_storage = |e: &super::JobEntry| {
                    e.run.is_some()
                        && e.record.state == JobState::Paused
                        && e.record.error.as_deref().is_some_and(|r| r.starts_with(PAUSED_FOR_STORAGE))
                };
                let Some(entry) = s.jobs.get_mut(&job).filter(|e| paused_for_storage(e)) else { return };
                s.scheduler.resume(&job, Instant::now());
                let record = entry.set_state(JobState::Running, None);
                this.refresh_gauges(s);
                record
            };
            info!(job, "trying the job's data storage again");
            this.log(&job, LogKind::Unpaused, None, "trying the job's data again".to_owned());
            if let Err(e) = this.store.put_job(&record) {
                warn!(job, error = %e, "cannot record the resumed job");
            }
            this.work.notify_waiters();
        });
    }
}
