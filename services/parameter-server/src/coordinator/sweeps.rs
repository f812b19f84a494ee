//! Sweeps on the coordinator: creating one (its trials generated and
//! validated up front), starting trials as ordinary jobs tagged with the
//! sweep, at most `concurrency` at a time, judging each trial at its rungs
//! (asynchronous successive halving on validation accuracy), and resuming
//! every running sweep when the server starts again.
//!
//! The sweep record (trials, the job started for each, every rung judgement)
//! is in the store; trial jobs resume from their checkpoints like any job.

use std::sync::Arc;

use rwp_spec::sweep::{self, Decision, RungResult, SweepSpec, SweepState, TrialScore};
use tokio::sync::watch;
use tracing::{info, warn};

use super::admission::{check_data_dir, check_data_locations, check_name, request_key, without_summary, Named};
use super::registry::{ActiveJobSlot, NewJob};
use super::{Coordinator, State};
use crate::domain::{
    now_unix_ms, Evaluation, Job, JobState, Principal, SubmitOptions, Sweep, SweepRecord, Trial, TrialRecord,
};
use crate::error::ServerError;

#[derive(Debug)]
pub(super) struct SweepEntry {
    record: SweepRecord,
    /// Bumped whenever the sweep or one of its trials changes.
    changed: watch::Sender<u64>,
}

impl SweepEntry {
    /// The digest of the model file a running sweep's trials will use.
    pub(super) fn model_in_use(&self) -> Option<&str> {
        let file = self.record.spec.base.model_file.as_ref();
        file.filter(|_| self.record.state == SweepState::Running).map(|f| f.sha256.as_str())
    }

    pub(super) fn record(&self) -> &SweepRecord {
        &self.record
    }

    fn new(record: SweepRecord) -> Self {
        Self { record, changed: watch::channel(0).0 }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The sweep as reported: its record, each trial with its job's current
/// state, the best trial so far.
fn view(s: &State, record: &SweepRecord) -> Sweep {
    let jobs: Vec<Option<Job>> = record
        .trials
        .iter()
        .map(|t| t.job_id.as_ref().and_then(|id| s.jobs.get(id)).map(|j| j.record.job.clone()))
        .collect();
    let scores: Vec<TrialScore> = record
        .trials
        .iter()
        .zip(&jobs)
        .map(|(t, job)| {
            let last = job.as_ref().and_then(|j| j.last_evaluation.as_ref());
            TrialScore {
                index: t.index,
                validation_accuracy: last.and_then(|e| e.validation_accuracy),
                test_accuracy: last.map(|e| e.test_accuracy),
            }
        })
        .collect();
    let trials = record
        .trials
        .iter()
        .zip(jobs)
        .map(|(t, job)| Trial { index: t.index, params: t.params.clone(), job })
        .collect();
    Sweep {
        id: record.id.clone(),
        name: record.name.clone(),
        spec: record.spec.clone(),
        state: record.state,
        error: record.error.clone(),
        created_unix_ms: record.created_unix_ms,
        updated_unix_ms: record.updated_unix_ms,
        owner: record.owner.clone(),
        trials,
        best_trial: sweep::best(&scores),
    }
}

impl Coordinator {
    /// Validates `spec`, records the sweep and starts its first trials.
    /// With a `request_id` the same owner used within the last 24 hours,
    /// returns the sweep that request created instead (a client's retry).
    pub async fn create_sweep(
        self: &Arc<Self>,
        principal: &Principal,
        name: String,
        spec: SweepSpec,
        request_id: Option<String>,
    ) -> Result<Sweep, ServerError> {
        self.admit(principal)?;
        if self.draining() {
            return Err(ServerError::ShuttingDown);
        }
        check_name(&name, Named::Sweep)?;
        let request = request_id.map(|id| request_key(principal, Named::Sweep, id)).transpose()?;
        // A trial's spec may differ from the base in anything but its model
        // file, which must be one the caller may name (retries included)
        // before any trial starts; once the sweep runs, it holds the file.
        let _model_in_use = spec.base.model_file.as_ref().map(|file| self.use_model(principal, file)).transpose()?;
        let _retries_wait = match &request {
            Some(key) => Some(self.requests.lock(key).await),
            None => None,
        };
        if let Some(key) = &request {
            if let Some(sweep) = self.store.request(key)? {
                let s = self.lock();
                let entry = s.sweeps.get(&sweep).ok_or_else(|| ServerError::SweepNotFound(sweep.clone()))?;
                let mut stored = entry.record.spec.clone();
                stored.base = without_summary(&stored.base);
                if entry.record.name != name || stored != spec {
                    return Err(ServerError::InvalidSweep(format!(
                        "request_id '{}' already created sweep {sweep}, with another name or spec: \
                         use a new request_id for a new sweep",
                        key.id
                    )));
                }
                info!(sweep = %sweep, request_id = %key.id, "a retried sweep creation: the sweep it created");
                return Ok(view(&s, &entry.record));
            }
        }
        let trials = spec.trials().map_err(|e| ServerError::InvalidSweep(e.to_string()))?;
        // Trials may not change data_dir: the base's is every trial's.
        check_data_dir(self.config.data_roots.as_deref(), spec.base.data_dir.as_deref())
            .map_err(ServerError::InvalidSweep)?;
        check_data_locations(self.config.data_roots.as_deref(), &spec.base).map_err(ServerError::InvalidSweep)?;
        if let Some(es) = &spec.early_stopping {
            let every = self.config.eval_every_epochs;
            if every == 0 {
                return Err(ServerError::InvalidSweep(
                    "early_stopping needs evaluations during training, and this server evaluates at the end only \
                     (eval_every_epochs = 0)"
                        .into(),
                ));
            }
            if let Some(rung) = es.rungs.iter().find(|&&r| u64::from(r) % every != 0) {
                return Err(ServerError::InvalidSweep(format!(
                    "early_stopping.rungs: rung epoch {rung} is not a multiple of the server's eval_every_epochs \
                     ({every}), so no evaluation would judge it"
                )));
            }
        }
        if let Some(limit) = principal.limits.max_active_jobs.filter(|l| spec.concurrency > *l) {
            return Err(ServerError::InvalidSweep(format!(
                "concurrency = {} is more than the {limit} running jobs '{}' may have",
                spec.concurrency, principal.name
            )));
        }
        // A job's own data is inspected once, for every trial.
        let (mut spec, mut trials) = (spec, trials);
        if spec.base.data.is_some() {
            spec.base = self.with_data_summary(spec.base).await.map_err(|e| match e {
                ServerError::InvalidSpec(problem) => ServerError::InvalidSweep(format!("base: {problem}")),
                other => other,
            })?;
            let summary = spec.base.data.as_ref().and_then(|d| d.summary.clone());
            for trial in &mut trials {
                if let Some(data) = &mut trial.spec.data {
                    data.summary.clone_from(&summary);
                }
            }
        }
        let id = {
            let serial = self.lock().jobs.next_serial();
            format!(
                "sweep-{:010x}",
                rwp_spec::rng::derive_seed(now_unix_ms() as u64, &[serial, u64::from(std::process::id()), 7]) >> 24
            )
        };
        let now = now_unix_ms();
        let record = SweepRecord {
            id: id.clone(),
            name,
            state: SweepState::Running,
            error: None,
            created_unix_ms: now,
            updated_unix_ms: now,
            owner: principal.owner(),
            max_active_jobs: principal.limits.max_active_jobs,
            trials: trials
                .into_iter()
                .map(|t| TrialRecord { index: t.index, params: t.params, spec: t.spec, job_id: None })
                .collect(),
            rungs: Vec::new(),
            spec,
        };
        self.store.put_sweep_for(&record, request.as_ref())?;
        self.recorder.sweep_created(&record);
        info!(sweep = %id, trials = record.trials.len(), concurrency = record.spec.concurrency, "sweep created");
        self.lock().sweeps.insert(id.clone(), SweepEntry::new(record));
        self.schedule_sweep(&id).await;
        let s = self.lock();
        Ok(view(&s, &s.sweeps[&id].record))
    }

    fn visible_sweep<'a>(s: &'a State, principal: &Principal, sweep: &str) -> Result<&'a SweepEntry, ServerError> {
        s.sweeps
            .get(sweep)
            .filter(|e| principal.can_see_owned_by(e.record.owner.as_deref()))
            .ok_or_else(|| ServerError::SweepNotFound(sweep.to_owned()))
    }

    pub fn get_sweep(&self, principal: &Principal, sweep: &str) -> Result<Sweep, ServerError> {
        self.admit(principal)?;
        let s = self.lock();
        Ok(view(&s, &Self::visible_sweep(&s, principal, sweep)?.record))
    }

    pub fn list_sweeps(&self, principal: &Principal) -> Result<Vec<Sweep>, ServerError> {
        self.admit(principal)?;
        let s = self.lock();
        Ok(s.sweeps
            .values()
            .filter(|e| principal.can_see_owned_by(e.record.owner.as_deref()))
            .map(|e| view(&s, &e.record))
            .collect())
    }

    /// The sweep now, and a receiver that changes whenever it (or a trial) does.
    pub fn watch_sweep(
        &self,
        principal: &Principal,
        sweep: &str,
    ) -> Result<(Sweep, watch::Receiver<u64>), ServerError> {
        self.admit(principal)?;
        let s = self.lock();
        let entry = Self::visible_sweep(&s, principal, sweep)?;
        Ok((view(&s, &entry.record), entry.changed.subscribe()))
    }

    /// The sweep as it is now, for a watcher (no rate admission: one watch is one request).
    pub fn sweep_now(&self, sweep: &str) -> Result<Sweep, ServerError> {
        let s = self.lock();
        let entry = s.sweeps.get(sweep).ok_or_else(|| ServerError::SweepNotFound(sweep.to_owned()))?;
        Ok(view(&s, &entry.record))
    }

    /// Cancels the sweep's running trials; the waiting ones never start.
    pub async fn cancel_sweep(&self, principal: &Principal, sweep: &str) -> Result<Sweep, ServerError> {
        self.admit(principal)?;
        let _scheduling = self.sweep_scheduler.lock().await;
        let (record, running) = {
            let mut s = self.lock();
            Self::visible_sweep(&s, principal, sweep)?;
            let jobs: Vec<String> = s.sweeps[sweep]
                .record
                .trials
                .iter()
                .filter_map(|t| t.job_id.clone())
                .filter(|id| s.jobs.get(id).is_some_and(|j| !j.record.state.is_terminal()))
                .collect();
            let entry = s.sweeps.get_mut(sweep).expect("visible");
            if !entry.record.state.is_terminal() {
                entry.record.state = SweepState::Cancelled;
                entry.record.updated_unix_ms = now_unix_ms();
            }
            (entry.record.clone(), jobs)
        };
        self.store.put_sweep(&record)?;
        for job in running {
            if let Err(e) = self.end_running(&job, JobState::Cancelled, Some(format!("sweep {sweep} cancelled"))).await
            {
                warn!(sweep, job, error = %e, "cannot cancel trial");
            }
        }
        info!(sweep, "sweep cancelled");
        let s = self.lock();
        let entry = &s.sweeps[sweep];
        entry.bump();
        Ok(view(&s, &entry.record))
    }

    /// A trial job of `sweep` reached a terminal state.
    pub(super) fn trial_ended(&self, sweep: &str) {
        self.sweep_changed(sweep);
        let _ = self.sweep_signal.send(sweep.to_owned());
    }

    /// A running-job slot of `owner` was given back (a job ended, or a
    /// submission failed): its sweeps' waiting trials may start now.
    pub(super) fn active_job_freed(&self, owner: &str) {
        let sweeps: Vec<String> = self
            .lock()
            .sweeps
            .values()
            .filter(|e| e.record.owner.as_deref() == Some(owner) && !e.record.state.is_terminal())
            .map(|e| e.record.id.clone())
            .collect();
        for sweep in sweeps {
            let _ = self.sweep_signal.send(sweep);
        }
    }

    /// Wakes the sweep's watchers.
    pub(super) fn sweep_changed(&self, sweep: &str) {
        if let Some(entry) = self.lock().sweeps.get(sweep) {
            entry.bump();
        }
    }

    /// Loads the sweeps, links trial jobs started just before a crash to
    /// their trials, and starts the scheduler; running sweeps go on.
    pub(super) fn resume_sweeps(self: &Arc<Self>) -> Result<(), ServerError> {
        let records = self.store.sweeps()?;
        let mut running = Vec::new();
        {
            let mut s = self.lock();
            let mut linked: Vec<SweepRecord> = Vec::new();
            for mut record in records {
                let mut relinked = false;
                for job in s.jobs.entries() {
                    let Some((sweep, trial)) = &job.record.sweep else { continue };
                    if *sweep != record.id {
                        continue;
                    }
                    if let Some(t) = record.trials.get_mut(*trial as usize).filter(|t| t.job_id.is_none()) {
                        t.job_id = Some(job.record.id.clone());
                        relinked = true;
                    }
                }
                if relinked {
                    linked.push(record.clone());
                }
                if record.state == SweepState::Running {
                    running.push(record.id.clone());
                }
                s.sweeps.insert(record.id.clone(), SweepEntry::new(record));
            }
            drop(s);
            for record in &linked {
                self.store.put_sweep(record)?;
            }
        }
        let receiver = self.sweep_signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(mut receiver) = receiver {
            let this = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(sweep) = receiver.recv().await {
                    let Some(this) = this.upgrade() else { return };
                    this.schedule_sweep(&sweep).await;
                }
            });
        }
        for id in running {
            info!(sweep = %id, "resuming sweep");
            let _ = self.sweep_signal.send(id);
        }
        Ok(())
    }

    /// Starts waiting trials while fewer than `concurrency` run; ends the
    /// sweep when every trial has ended.
    pub(super) async fn schedule_sweep(&self, sweep: &str) {
        let _scheduling = self.sweep_scheduler.lock().await;
        loop {
            if self.draining() {
                return;
            }
            let next = {
                let mut s = self.lock();
                let Some(entry) = s.sweeps.get(sweep) else { return };
                if entry.record.state.is_terminal() {
                    return;
                }
                let running = entry
                    .record
                    .trials
                    .iter()
                    .filter_map(|t| t.job_id.as_ref())
                    .filter(|id| s.jobs.get(id).is_some_and(|j| !j.record.state.is_terminal()))
                    .count();
                let waiting = entry.record.trials.iter().find(|t| t.job_id.is_none()).cloned();
                match waiting {
                    Some(trial) if running < entry.record.spec.concurrency as usize => {
                        let (owner, name) = (entry.record.owner.clone(), entry.record.name.clone());
                        // Trials are the owner's running jobs like any other:
                        // at its limit the trial waits until one of them ends.
                        let reserved = match (&owner, entry.record.max_active_jobs) {
                            (Some(owner), Some(limit)) => {
                                if !s.jobs.reserve(owner, limit) {
                                    tracing::debug!(sweep, owner, limit, "trial waits for a running-job slot");
                                    return;
                                }
                                Some(owner.clone())
                            }
                            _ => None,
                        };
                        Some((trial, owner, name, reserved))
                    }
                    Some(_) => return,
                    None if running > 0 => return,
                    None => {
                        let entry = s.sweeps.get_mut(sweep).expect("present");
                        entry.record.state = SweepState::Succeeded;
                        entry.record.updated_unix_ms = now_unix_ms();
                        entry.bump();
                        let record = entry.record.clone();
                        drop(s);
                        info!(sweep, "sweep finished: every trial ended");
                        if let Err(e) = self.store.put_sweep(&record) {
                            warn!(sweep, error = %e, "cannot record the sweep");
                        }
                        return;
                    }
                }
            };
            let Some((trial, owner, name, reserved)) = next else { return };
            let job_name = format!(
                "{}/{} {}",
                if name.is_empty() { sweep } else { &name },
                trial.index,
                sweep::describe(&trial.params)
            );
            let slot = ActiveJobSlot { coordinator: self, owner: reserved };
            let new = NewJob {
                owner,
                name: job_name,
                spec: trial.spec.clone(),
                options: SubmitOptions::default(),
                sweep: Some((sweep.to_owned(), trial.index)),
                initial: None,
            };
            let started = self.start_job(new, slot, None).await;
            let record = {
                let mut s = self.lock();
                let Some(entry) = s.sweeps.get_mut(sweep) else { return };
                match &started {
                    Ok(job) => {
                        entry.record.trials[trial.index as usize].job_id = Some(job.id.clone());
                        info!(sweep, trial = trial.index, job = %job.id, params = %sweep::describe(&trial.params), "trial started");
                    }
                    Err(e) => {
                        warn!(sweep, trial = trial.index, error = %e, "trial cannot start; the sweep fails");
                        entry.record.state = SweepState::Failed;
                        entry.record.error = Some(format!("trial {} could not start: {e}", trial.index));
                    }
                }
                entry.record.updated_unix_ms = now_unix_ms();
                entry.bump();
                entry.record.clone()
            };
            if let Err(e) = self.store.put_sweep(&record) {
                warn!(sweep, error = %e, "cannot record the sweep");
            }
            if started.is_err() {
                return;
            }
        }
    }

    /// Judges a trial at the rung its evaluation reached, if any: records
    /// the result and stops the trial when successive halving says so.
    pub(super) async fn judge_trial(&self, sweep: &str, trial: u32, job: &str, evaluation: &Evaluation) {
        let Some(accuracy) = evaluation.validation_accuracy else { return };
        let (decision, rung, record) = {
            let mut s = self.lock();
            if s.jobs.get(job).is_none_or(|j| j.record.state.is_terminal()) {
                return;
            }
            let Some(entry) = s.sweeps.get_mut(sweep) else { return };
            if entry.record.state.is_terminal() {
                return;
            }
            let Some(es) = entry.record.spec.early_stopping.clone() else { return };
            let judged = |r: u32| entry.record.rungs.iter().any(|x| x.rung == r && x.trial == trial);
            let Some(rung) = es.rung_reached(evaluation.epoch, judged) else { return };
            let others: Vec<f64> = entry
                .record
                .rungs
                .iter()
                .filter(|x| x.rung == rung && x.trial != trial)
                .map(|x| x.validation_accuracy)
                .collect();
            let decision = es.decide(rung, accuracy, &others);
            entry.record.rungs.push(RungResult {
                rung,
                trial,
                validation_accuracy: accuracy,
                continued: decision == Decision::Continue,
            });
            entry.record.updated_unix_ms = now_unix_ms();
            (decision, rung, entry.record.clone())
        };
        if let Err(e) = self.store.put_sweep(&record) {
            warn!(sweep, error = %e, "cannot record the rung result");
        }
        match decision {
            Decision::Continue => info!(sweep, trial, job, rung, accuracy, "trial goes on from its rung"),
            Decision::Stop { reason } => {
                info!(sweep, trial, job, rung, %reason, "trial stopped early");
                if let Err(e) = self.end_running(job, JobState::Stopped, Some(reason)).await {
                    warn!(sweep, job, error = %e, "cannot stop trial");
                }
            }
        }
    }
}
