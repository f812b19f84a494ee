//! The worker API over the scheduler: registration, leases, weights
//! versions and the admission and recording of pushed results.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rwp_scheduler::{PushClaim, Recorded, Released, ScheduleError};
use rwp_spec::payload::{Payload, PayloadError};
use rwp_spec::work::Work;
use tracing::{info, warn};

use super::inspections::Inspections;
use super::{workers, Coordinator, Leased, LeasedTask, PushAdmission, PushHeader, Snapshot, State};
use crate::domain::{now_unix_ms, JobState, LogKind};
use crate::engine::RawResult;
use crate::error::ServerError;

/// Unix milliseconds of `deadline`, a time after `now`.
fn unix_ms(deadline: Instant, now: Instant) -> i64 {
    now_unix_ms() + deadline.saturating_duration_since(now).as_millis() as i64
}

/// A scheduler's refusal; a job it does not schedule is named as the
/// registry knows it (not found, or ended).
pub(super) fn refusal(s: &State, e: ScheduleError) -> ServerError {
    match e {
        ScheduleError::NotScheduled(job) => match s.jobs.get(&job) {
            Some(entry) => ServerError::JobNotRunning { job, state: entry.record.state.name() },
            None => ServerError::JobNotFound(job),
        },
        other => other.into(),
    }
}

/// A lease call under way: its worker counts as connected until it ends.
struct WaitingForWork<'a> {
    coordinator: &'a Coordinator,
    worker: &'a str,
}

impl Drop for WaitingForWork<'_> {
    fn drop(&mut self) {
        self.coordinator.lock().workers.waiting(self.worker, false, Instant::now());
    }
}

impl Coordinator {
    pub fn register(&self, name: &str, device: &str) -> (String, u64) {
        let now = Instant::now();
        let id = {
            let mut s = self.lock();
            let id = s.scheduler.register(now);
            s.workers.register(&id, name, device, now);
            id
        };
        info!(worker = %id, name, device, "worker registered");
        (id, self.config.lease_timeout_ms / 3)
    }

    /// Leases the next task (a data inspection first), waiting up to `wait` for one.
    pub async fn lease(&self, worker: &str, wait: Duration) -> Result<Option<Leased>, ServerError> {
        self.lock().workers.waiting(worker, true, Instant::now());
        let _waiting = WaitingForWork { coordinator: self, worker };
        let deadline = Instant::now() + wait;
        let arrived = Instant::now();
        let mut first_try = true;
        loop {
            let notified = self.work.notified();
            if let Some(task) = self.try_lease(worker)? {
                if first_try {
                    self.metrics.lease_service_seconds.observe(arrived.elapsed().as_secs_f64());
                }
                return Ok(Some(task));
            }
            first_try = false;
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Also wake up in time for the earliest lease expiry.
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(250)), notified).await;
        }
    }

    fn try_lease(&self, worker: &str) -> Result<Option<Leased>, ServerError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let now = Instant::now();
        s.scheduler.seen(worker, now)?;
        let timeout = Duration::from_millis(self.config.lease_timeout_ms);
        if !s.scheduler.is_draining() {
            if let Some(inspection) = s.inspections.lease(worker, now, timeout) {
                return Ok(Some(Leased::Inspection(Box::new(inspection))));
            }
        }
        let lease = s.scheduler.lease(worker, now);
        self.refresh_gauges(s);
        let Some(lease) = lease? else { return Ok(None) };
        let task = workers::describe(&lease.work);
        let name = s.workers.name(worker);
        if let Some(expired) = &lease.replaces {
            warn!(job = %lease.job, version = lease.work.version(), work = ?lease.work, %expired, "lease expired, re-issuing");
            self.metrics.lease_expiries.inc(1.0);
            let lost = s.workers.holder_of(expired).map(|id| {
                s.workers.lease_lapsed(&id, expired);
                s.workers.name(&id)
            });
            let lost_name = lost.as_deref().unwrap_or("(unknown)");
            self.log(
                &lease.job,
                LogKind::LeaseLapsed,
                lost.as_deref(),
                format!(
                    "worker {lost_name} lost: its lease on {task} lapsed, not renewed within {} ms; re-issued to \
                     worker {name}",
                    self.config.lease_timeout_ms
                ),
            );
        }
        s.workers.leased(worker, &lease.id, &lease.job, &lease.work);
        self.log(&lease.job, LogKind::Leased, Some(&name), format!("{task} leased to worker {name}"));
        self.metrics.task_queue_seconds.observe(lease.queued.as_secs_f64());
        self.metrics.leases_issued.inc(1.0);
        let entry = s.jobs.get(&lease.job).expect("a scheduled job is registered");
        let run = entry.run.as_ref().expect("a scheduled job runs");
        let trace = match &lease.work {
            Work::Evaluation(task) => run.evaluating.get(&task.version).map(|e| e.span.clone()),
            Work::Gradient { .. } => None,
        };
        Ok(Some(Leased::Task(Box::new(LeasedTask {
            trace: trace.unwrap_or_else(|| run.step_span.clone()),
            leased: rwp_spec::work::LeasedTask {
                deadline_unix_ms: unix_ms(lease.deadline, now),
                lease_id: lease.id,
                job_id: lease.job,
                spec: entry.record.spec.clone(),
                work: lease.work,
                timeout: Some(lease.task_timeout),
            },
        }))))
    }

    /// Extends a lease; returns its new deadline (Unix ms).
    pub fn renew(&self, worker: &str, lease: &str) -> Result<i64, ServerError> {
        let now = Instant::now();
        let mut s = self.lock();
        s.workers.seen(worker, now);
        let deadline = if Inspections::owns(lease) {
            s.inspections.renew(worker, lease, now, Duration::from_millis(self.config.lease_timeout_ms))?
        } else {
            s.scheduler.renew(worker, lease, now)?
        };
        Ok(unix_ms(deadline, now))
    }

    /// Hands a lease back unfinished so the task is re-issued at once. With
    /// an `error`, the failure is counted; the third failure of the same task
    /// fails the job with that reason.
    pub fn release(&self, worker: &str, lease: &str, error: Option<&str>) -> Result<(), ServerError> {
        if Inspections::owns(lease) {
            self.lock().inspections.release(worker, lease, error)?;
            self.work.notify_waiters();
            return Ok(());
        }
        let (released, name, job) = {
            let mut s = self.lock();
            let job = s.scheduler.lease_job(worker, lease);
            let released = s.scheduler.release(worker, lease, error);
            s.workers.lease_ended(worker, lease, false, Instant::now());
            self.refresh_gauges(&s);
            (released?, s.workers.name(worker), job)
        };
        if let Released::Failed { work, .. } | Released::JobFails { work, .. } = &released {
            self.metrics.task_failures.inc(1.0);
            let error = error.unwrap_or_default();
            warn!(lease, version = work.version(), ?work, worker, error, "task failed on a worker");
            if let Some(job) = &job {
                let what = if matches!(released, Released::JobFails { .. }) { "the job fails" } else { "re-issued" };
                let task = workers::describe(work);
                self.log(
                    job,
                    LogKind::TaskFailed,
                    Some(&name),
                    format!("{task} failed on worker {name}: {error}; {what}"),
                );
            }
        }
        if let Released::JobFails { job, reason, .. } = released {
            self.finish(&job, JobState::Failed, Some(reason))?;
        }
        self.work.notify_waiters();
        Ok(())
    }

    /// The Tasks stream of `worker` ended while it held `lease` (the worker
    /// died or its connection dropped): the task goes to the next worker
    /// at once instead of at the lease's expiry. A lease already finished
    /// is left alone.
    pub fn stream_closed(&self, worker: &str, lease: &str) {
        if Inspections::owns(lease) {
            let _ = self.lock().inspections.release(worker, lease, None);
            self.work.notify_waiters();
            return;
        }
        let (job, name) = {
            let s = self.lock();
            // Only a lease the worker still holds: not one it finished or gave back.
            let held = s.workers.holder_of(lease).is_some_and(|holder| holder == worker);
            (held.then(|| s.scheduler.lease_job(worker, lease)).flatten(), s.workers.name(worker))
        };
        let Some(job) = job else { return };
        if self.release(worker, lease, None).is_ok() {
            warn!(worker, lease, "the worker's task stream closed while it held a task; re-issued at once");
            self.log(
                &job,
                LogKind::LeaseLapsed,
                Some(&name),
                format!(
                    "worker {name}'s task stream closed while it held lease {lease}: the task is re-issued at once"
                ),
            );
        }
    }

    /// The weights version a worker asks for, if it is the current one or
    /// one under evaluation.
    pub fn snapshot(&self, job: &str, version: u64) -> Result<Arc<Snapshot>, ServerError> {
        let s = self.lock();
        let entry = s.jobs.get(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
        let run = entry
            .run
            .as_ref()
            .ok_or(ServerError::JobNotRunning { job: job.to_owned(), state: entry.record.state.name() })?;
        if let Some(evaluating) = run.evaluating.get(&version) {
            return Ok(evaluating.snapshot.clone());
        }
        if run.snapshot.version != version {
            return Err(ServerError::StaleVersion {
                job: job.to_owned(),
                requested: version,
                current: run.snapshot.version,
            });
        }
        Ok(run.snapshot.clone())
    }

    /// Counts the samples an accepted result of `what` left out on the job,
    /// and logs each the first time it is named.
    pub(super) fn note_skipped(&self, s: &mut State, job: &str, what: &str, skipped: &[String]) {
        if skipped.is_empty() {
            return;
        }
        let Some(entry) = s.jobs.get_mut(job) else { return };
        let shown: Vec<String> = skipped.iter().map(|r| super::admission::printable_skip(r)).collect();
        for sample in entry.record.note_skipped(&shown) {
            self.log(job, LogKind::SampleSkipped, None, format!("left out of {what}: {sample}"));
        }
    }

    /// Checks a push header before its payload is read.
    pub fn admit_push(&self, h: &PushHeader) -> Result<PushAdmission, ServerError> {
        let s = self.lock();
        let claim = PushClaim {
            worker: &h.worker_id,
            lease: &h.lease_id,
            job: &h.job_id,
            step: h.step,
            role: h.role,
            shard: h.shard,
            weights_version: h.weights_version,
        };
        let admitted = s.scheduler.admit(&claim).map_err(|e| refusal(&s, e))?;
        let entry = s.jobs.get(&h.job_id).expect("a scheduled job is registered");
        if h.skipped.len() > entry.record.spec.batch_size as usize {
            return Err(ServerError::BadPush(format!(
                "{} samples said to be left out of a batch of {} (job {})",
                h.skipped.len(),
                entry.record.spec.batch_size,
                h.job_id
            )));
        }
        let run = entry.run.as_ref().expect("a scheduled job runs");
        let sizes = run
            .layout
            .expect(&h.announced, admitted.returns_buffers)
            .map_err(|e| ServerError::BadPush(format!("{e}, for {} on job {}", entry.record.spec.model, h.job_id)))?;
        Ok(if admitted.duplicate { PushAdmission::Duplicate(sizes) } else { PushAdmission::Expect(sizes) })
    }

    /// Takes a complete, admitted payload. Returns whether it was accepted
    /// (false: a duplicate, dropped).
    pub async fn complete_push(self: &Arc<Self>, h: &PushHeader, payload: Payload) -> Result<bool, ServerError> {
        let recorded = {
            let mut guard = self.lock();
            let s = &mut *guard;
            let Some(slot) = s.scheduler.result_slot(&h.lease_id).map_err(|e| refusal(s, e))? else {
                return Ok(false);
            };
            let entry = s.jobs.get(&h.job_id).ok_or_else(|| ServerError::JobNotFound(h.job_id.clone()))?;
            let policy = entry.record.spec.non_finite;
            let run = entry.run.as_ref().expect("a scheduled job runs");
            let split = payload.gradient_bytes();
            let payload = Bytes::from(payload.into_bytes());
            self.metrics.gradient_bytes_in.inc(payload.len() as f64);
            let (gradient, buffers) = (payload.slice(..split), payload.slice(split..));
            match run.layout.check_finite(&gradient, &buffers) {
                Ok(()) => {}
                Err(e @ PayloadError::NonFinite(_)) => {
                    let reason =
                        format!("{e} ({:?} shard {} of step {}, worker {})", h.role, h.shard, h.step, h.worker_id);
                    drop(guard);
                    return self.non_finite(h, policy, reason);
                }
                Err(e) => return Err(ServerError::BadPush(e.to_string())),
            }
            self.metrics.results_accepted.inc(1.0);
            let what = format!("{:?} shard {} of step {}", h.role, h.shard, h.step);
            self.note_skipped(s, &h.job_id, &what, &h.skipped);
            let result = RawResult {
                gradient,
                // A task that returns BN buffers returns them even when the
                // model has none (an MLP): an empty set, not a missing one.
                buffers: slot.returns_buffers.then_some(buffers),
                loss: h.loss,
                accuracy: h.accuracy,
            };
            let recorded = s.scheduler.record(slot, result, Instant::now());
            s.workers.lease_ended(&h.worker_id, &h.lease_id, true, Instant::now());
            // The task is done: the gauges say so now, not at the next lease.
            self.refresh_gauges(s);
            match recorded {
                Recorded::Accepted => None,
                Recorded::Complete(update) => {
                    let run = s.jobs.run(&h.job_id).expect("a scheduled job runs");
                    Some((update, run.engine.clone(), run.step_span.clone()))
                }
            }
        };
        if let Some((update, engine, step_span)) = recorded {
            self.metrics.step_seconds.observe_with(&[("phase", "waiting")], update.waited.as_secs_f64());
            let span = tracing::info_span!(parent: &step_span, "rwp.update", job = %h.job_id, step = h.step);
            self.apply(h.job_id.clone(), engine, update, span);
        }
        Ok(true)
    }
}
