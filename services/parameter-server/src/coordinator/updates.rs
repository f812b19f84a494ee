//! A complete update handed to the job's engine, and its outcome applied:
//! the record advanced, the next update scheduled, watchers told, the
//! recorder's side effects, a paused job's checkpoint retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rwp_scheduler::CompleteUpdate;
use rwp_spec::NonFinitePolicy;
use tracing::{info, warn, Instrument};

use super::{planned, step_span, Coordinator, PushHeader, Snapshot};
use crate::domain::{now_unix_ms, JobEvent, JobState, LogKind, StepMetrics};
use crate::engine::{EngineHandle, RawResult, RawStep, UpdateOutcome};
use crate::error::ServerError;

impl Coordinator {
    /// Applies a complete update on the job's engine, off the caller's task.
    pub(super) fn apply(
        self: &Arc<Self>,
        job: String,
        engine: EngineHandle,
        update: CompleteUpdate<RawResult>,
        span: tracing::Span,
    ) {
        let this = Arc::clone(self);
        let raw = RawStep { clean: update.clean, perturbed: update.perturbed };
        tokio::spawn(
            async move {
                let started = Instant::now();
                let outcome = engine.update(raw).await;
                this.metrics.step_seconds.observe_with(&[("phase", "update")], started.elapsed().as_secs_f64());
                if let Ok(o) = &outcome {
                    for (phase, seconds) in &o.phases {
                        this.metrics.step_seconds.observe_with(&[("phase", phase)], *seconds);
                    }
                }
                this.apply_outcome(&job, outcome).await;
            }
            .instrument(span),
        );
    }

    /// A result with NaN or infinite values, under the job's policy: the job
    /// fails (a sweep trial stops), or the update is skipped.
    pub(super) fn non_finite(
        self: &Arc<Self>,
        h: &PushHeader,
        policy: NonFinitePolicy,
        reason: String,
    ) -> Result<bool, ServerError> {
        match policy {
            NonFinitePolicy::Fail => {
                // A sweep trial whose gradients blow up (a σ or learning rate
                // far too large) is what early stopping is for: it stops,
                // keeping its metrics, instead of failing the sweep's report.
                let trial = self.lock().jobs.get(&h.job_id).is_some_and(|j| j.record.sweep.is_some());
                if trial {
                    let reason = format!("stopped early at update {}: non-finite gradient: {reason}", h.step);
                    self.finish(&h.job_id, JobState::Stopped, Some(reason.clone()))?;
                    return Err(ServerError::NonFinite(format!("{reason}; the trial stopped")));
                }
                self.finish(&h.job_id, JobState::Failed, Some(format!("non-finite gradient: {reason}")))?;
                Err(ServerError::NonFinite(format!("{reason}; the job failed")))
            }
            NonFinitePolicy::Skip => {
                let engine = {
                    let mut s = self.lock();
                    let given_up = s.scheduler.give_up_update(&h.job_id);
                    self.refresh_gauges(&s);
                    s.jobs.run(&h.job_id).filter(|_| given_up).map(|run| run.engine.clone())
                };
                if let Some(engine) = engine {
                    warn!(job = %h.job_id, step = h.step, %reason, "skipping update");
                    let this = Arc::clone(self);
                    let job = h.job_id.clone();
                    tokio::spawn(async move {
                        let outcome = engine.skip().await;
                        this.apply_outcome(&job, outcome).await;
                    });
                }
                Err(ServerError::NonFinite(format!("{reason}; the update is skipped")))
            }
        }
    }

    /// Records an update the engine applied and schedules the next one.
    async fn apply_outcome(self: &Arc<Self>, job: &str, outcome: Result<UpdateOutcome, ServerError>) {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let _ = self.finish(job, JobState::Failed, Some(e.to_string()));
                return;
            }
        };
        let paused = outcome.checkpoint_error.is_some();
        let (record, metrics, finished) = {
            let mut guard = self.lock();
            let s = &mut *guard;
            let outage = s.no_workers_since;
            let Some(entry) = s.jobs.get_mut(job) else { return };
            let Some(run) = entry.run.as_mut() else { return };
            let wall = entry.record.wall_time_before_s + run.trained_seconds(outage);
            // Numbered from 1, as everywhere a client sees steps.
            let step = outcome.step;
            let metrics = match &outcome.report {
                Some(r) => StepMetrics {
                    step,
                    loss: r.loss,
                    accuracy: r.accuracy,
                    perturbed_loss: r.perturbed_loss,
                    lr: r.lr,
                    sigma: r.sigma,
                    wall_time_s: wall,
                    skipped: false,
                },
                None => StepMetrics {
                    step,
                    loss: 0.0,
                    accuracy: 0.0,
                    perturbed_loss: None,
                    lr: run.schedule.lr_at(step - 1),
                    sigma: 0.0,
                    wall_time_s: wall,
                    skipped: true,
                },
            };
            entry.record.step = outcome.step;
            entry.record.updated_unix_ms = now_unix_ms();
            if metrics.skipped {
                entry.record.skipped_updates += 1;
            }
            entry.record.last_step = Some(metrics.clone());
            super::registry::remember(&mut entry.recent_steps, &metrics);
            let finished = outcome.step >= run.schedule.total_updates;
            run.snapshot = Arc::new(Snapshot { version: outcome.step, bytes: outcome.snapshot });
            // The last update leaves nothing to schedule; the job ends below.
            let tasks = if finished { Vec::new() } else { planned(&entry.record.spec, &run.schedule, outcome.step) };
            s.scheduler.schedule(job, outcome.step, tasks, Instant::now());
            if !finished {
                // Ends the finished update's span; the next one starts now.
                run.step_span = step_span(job, outcome.step);
            }
            let evaluate = outcome.evaluation.map(|epoch| (epoch, run.snapshot.clone()));
            self.recorder.count(job, &metrics);
            let _ = entry.events.send(JobEvent::Step(metrics.clone()));
            if metrics.skipped {
                self.log(job, LogKind::UpdateSkipped, None, format!("update {step} skipped: a non-finite gradient"));
            }
            if let Some(error) = &outcome.checkpoint_error {
                s.scheduler.pause(job);
                entry.record.state = JobState::Paused;
                let reason = format!(
                    "paused: the checkpoint after update {} could not be written ({error}); retrying every {} ms",
                    outcome.step, self.config.checkpoint_retry_ms
                );
                self.log(job, LogKind::Paused, None, reason.clone());
                entry.record.error = Some(reason);
                entry.announce();
            }
            let record = entry.record.clone();
            if let Some((epoch, snapshot)) = evaluate {
                Self::start_evaluation(s, job, epoch, snapshot);
            }
            self.refresh_gauges(s);
            (record, metrics, finished)
        };
        if paused {
            warn!(job, step = record.step, reason = record.error.as_deref().unwrap_or(""), "job paused");
            self.metrics.checkpoint_failures.inc(1.0);
            self.retry_checkpoint(job.to_owned(), finished);
        }
        self.recorder.persist(&record, &metrics);
        if let Some((sweep, _)) = &record.sweep {
            self.sweep_changed(sweep);
        }
        if finished && !paused {
            self.succeed_when_done(job);
        }
        self.work.notify_waiters();
    }

    /// Retries a paused job's checkpoint until it is written (then the job
    /// goes on, or ends if that was its last update), the job ends, or the
    /// server stops.
    fn retry_checkpoint(self: &Arc<Self>, job: String, finished: bool) {
        let this = Arc::clone(self);
        let mut stopping = self.stopping();
        tokio::spawn(async move {
            let interval = Duration::from_millis(this.config.checkpoint_retry_ms);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                let engine = {
                    let s = this.lock();
                    match s.jobs.run(&job) {
                        Some(run) if s.scheduler.is_paused(&job) => run.engine.clone(),
                        _ => return,
                    }
                };
                let Err(e) = engine.checkpoint().await else { break };
                this.metrics.checkpoint_failures.inc(1.0);
                tracing::debug!(job, error = %e, "checkpoint retry failed");
            }
            let record = {
                let mut guard = this.lock();
                let s = &mut *guard;
                let Some(entry) = s.jobs.get_mut(&job).filter(|e| e.run.is_some()) else { return };
                s.scheduler.resume(&job, Instant::now());
                let record = entry.set_state(JobState::Running, None);
                this.refresh_gauges(s);
                record
            };
            info!(job, step = record.step, "checkpoint written; job resumed");
            this.log(
                &job,
                LogKind::Unpaused,
                None,
                format!("the checkpoint at step {} is written: work goes on", record.step),
            );
            if let Err(e) = this.store.put_job(&record) {
                warn!(job, error = %e, "cannot record the resumed job");
            }
            if finished {
                this.succeed_when_done(&job);
            }
            this.work.notify_waiters();
        });
    }
}
