//! The jobs registry: every job's record, who may see it, the running-job
//! quota, the record's store writes and the job's event broadcast; and the
//! job API over it (submit, get, list, watch, cancel, export).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use rwp_spec::rng::derive_seed;
use rwp_spec::{DataReport, DataSource, DatasetKind, JobSpec};
use tokio::sync::broadcast;
use tracing::info;

use super::admission::{check_data_dir, check_data_locations, check_name, request_key, without_summary, Named};
use super::{planned, recorder, Coordinator, Run, State};
use crate::domain::{now_unix_ms, Job, JobEvent, LogKind, Principal, StepMetrics, SubmitOptions};
pub(super) use crate::domain::{JobRecord, JobState};
use crate::engine::{EngineError, EngineHandle};
use crate::error::ServerError;
use crate::store::RequestKey;

/// A job to start, as a submission or a sweep asks for it.
pub(super) struct NewJob {
    pub(super) owner: Option<String>,
    pub(super) name: String,
    pub(super) spec: JobSpec,
    pub(super) options: SubmitOptions,
    /// The sweep and trial it is, for a sweep's trial.
    pub(super) sweep: Option<(String, u32)>,
    /// The checkpoint file it starts from (`options.init_from`'s state).
    pub(super) initial: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(super) struct JobEntry {
    pub(super) record: JobRecord,
    pub(super) events: broadcast::Sender<JobEvent>,
    /// The job's engine while it runs.
    pub(super) run: Option<Run>,
    /// The latest updates' metrics, sent to watchers before the store has
    /// them: a watch that starts meanwhile replays them from here.
    pub(super) recent_steps: VecDeque<StepMetrics>,
}

/// How many of the latest updates' metrics a job keeps in memory.
const RECENT_STEPS: usize = 64;

/// Keeps `metrics` among a job's latest updates' (they reach the store later).
pub(super) fn remember(recent: &mut VecDeque<StepMetrics>, metrics: &StepMetrics) {
    if recent.len() == RECENT_STEPS {
        recent.pop_front();
    }
    recent.push_back(metrics.clone());
}

impl JobEntry {
    pub(super) fn new(record: JobRecord, events: broadcast::Sender<JobEvent>, run: Option<Run>) -> Self {
        Self { record, events, run, recent_steps: VecDeque::new() }
    }

    /// Moves the job to `state` with `error` (`None` clears it), tells the
    /// watchers, and returns the record to store.
    pub(super) fn set_state(&mut self, state: JobState, error: Option<String>) -> JobRecord {
        self.record.state = state;
        self.record.error = error;
        self.record.updated_unix_ms = now_unix_ms();
        self.announce();
        self.record.clone()
    }

    /// Sends the record to the job's watchers.
    pub(super) fn announce(&self) {
        let _ = self.events.send(JobEvent::State(Box::new(self.record.job.clone())));
    }
}

/// Every job this server knows, by id.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    entries: BTreeMap<String, JobEntry>,
    /// Submissions under way, by owner: they count as running jobs until
    /// their job is in `entries` (or refused).
    submitting: HashMap<String, u32>,
    counter: u64,
    /// Jobs being resumed or deleted (one such request at a time per job).
    pub(super) busy: HashSet<String>,
}

impl Jobs {
    pub(super) fn insert(&mut self, entry: JobEntry) {
        self.entries.insert(entry.record.id.clone(), entry);
    }

    pub(super) fn remove(&mut self, job: &str) -> Option<JobEntry> {
        self.entries.remove(job)
    }

    pub(super) fn get(&self, job: &str) -> Option<&JobEntry> {
        self.entries.get(job)
    }

    pub(super) fn get_mut(&mut self, job: &str) -> Option<&mut JobEntry> {
        self.entries.get_mut(job)
    }

    pub(super) fn entries(&self) -> impl Iterator<Item = &JobEntry> {
        self.entries.values()
    }

    pub(super) fn entries_mut(&mut self) -> impl Iterator<Item = &mut JobEntry> {
        self.entries.values_mut()
    }

    /// The job's running state, if it runs.
    pub(super) fn run(&self, job: &str) -> Option<&Run> {
        self.entries.get(job).and_then(|j| j.run.as_ref())
    }

    /// The job `job` as `principal` may see it: another user's job is not
    /// found, so that its existence does not leak.
    pub(super) fn visible(&self, principal: &Principal, job: &str) -> Result<&JobEntry, ServerError> {
        self.entries
            .get(job)
            .filter(|entry| principal.can_see(&entry.record))
            .ok_or_else(|| ServerError::JobNotFound(job.to_owned()))
    }

    /// The engine of every running job.
    pub(super) fn engines(&self) -> Vec<(String, EngineHandle)> {
        self.entries.iter().filter_map(|(id, j)| j.run.as_ref().map(|r| (id.clone(), r.engine.clone()))).collect()
    }

    /// A number not handed out before by this registry (ids are drawn from it).
    pub(super) fn next_serial(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Takes one of `owner`'s `limit` running-job slots, if one is free: its
    /// running jobs (sweep trials included) and submissions under way hold
    /// the others.
    pub(super) fn reserve(&mut self, owner: &str, limit: u32) -> bool {
        let running =
            self.entries.values().filter(|j| j.run.is_some() && j.record.owner.as_deref() == Some(owner)).count();
        let submitting = self.submitting.get(owner).copied().unwrap_or(0);
        if running + submitting as usize >= limit as usize {
            return false;
        }
        *self.submitting.entry(owner.to_owned()).or_default() += 1;
        true
    }

    fn release_submission(&mut self, owner: &str) {
        if let Some(count) = self.submitting.get_mut(owner) {
            *count -= 1;
            if *count == 0 {
                self.submitting.remove(owner);
            }
        }
    }
}

/// A running-job slot held by a submission under way; given back when
/// dropped unless the job took it over.
pub(super) struct ActiveJobSlot<'a> {
    pub(super) coordinator: &'a Coordinator,
    pub(super) owner: Option<String>,
}

impl ActiveJobSlot<'_> {
    /// The job is in the registry now: it counts itself.
    pub(super) fn taken_over(mut self, s: &mut State) {
        if let Some(owner) = self.owner.take() {
            s.jobs.release_submission(&owner);
        }
    }
}

impl Drop for ActiveJobSlot<'_> {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            self.coordinator.lock().jobs.release_submission(&owner);
            self.coordinator.active_job_freed(&owner);
        }
    }
}

impl Coordinator {
    /// Takes one request from `principal`'s rate.
    pub(super) fn admit(&self, principal: &Principal) -> Result<(), ServerError> {
        let Some(rate) = principal.limits.rate else { return Ok(()) };
        self.rates.admit(&principal.name, rate, Instant::now()).map_err(|retry_after| ServerError::RateLimited {
            principal: principal.name.clone(),
            per_second: rate.per_second,
            burst: rate.burst,
            retry_after,
        })
    }

    /// A running-job slot for a job `principal` submits, if it has one left.
    pub(super) fn reserve_active_job(&self, principal: &Principal) -> Result<ActiveJobSlot<'_>, ServerError> {
        let (Some(owner), Some(limit)) = (principal.owner(), principal.limits.max_active_jobs) else {
            return Ok(ActiveJobSlot { coordinator: self, owner: None });
        };
        if !self.lock().jobs.reserve(&owner, limit) {
            return Err(ServerError::TooManyActiveJobs { owner, limit });
        }
        Ok(ActiveJobSlot { coordinator: self, owner: Some(owner) })
    }

    /// Starts a job. With a `request_id` the same owner used within the
    /// last 24 hours, returns the job that request started instead (a
    /// client's retry), as long as it asks for the same name, spec and
    /// options.
    pub async fn submit(
        &self,
        principal: &Principal,
        name: String,
        spec: JobSpec,
        options: SubmitOptions,
        request_id: Option<String>,
    ) -> Result<JobRecord, ServerError> {
        self.admit(principal)?;
        if self.draining() {
            return Err(ServerError::ShuttingDown);
        }
        check_name(&name, Named::Job)?;
        let request = request_id.map(|id| request_key(principal, Named::Job, id)).transpose()?;
        spec.validate().map_err(|e| ServerError::InvalidSpec(e.to_string()))?;
        rwp_spec::labels::validate(&options.labels).map_err(ServerError::InvalidLabels)?;
        check_data_dir(self.config.data_roots.as_deref(), spec.data_dir.as_deref())
            .map_err(ServerError::InvalidSpec)?;
        check_data_locations(self.config.data_roots.as_deref(), &spec).map_err(ServerError::InvalidSpec)?;
        let _model_in_use = spec.model_file.as_ref().map(|file| self.use_model(principal, file)).transpose()?;
        let _retries_wait = match &request {
            Some(key) => Some(self.requests.lock(key).await),
            None => None,
        };
        if let Some(key) = &request {
            if let Some(job) = self.store.request(key)? {
                let s = self.lock();
                let entry = s.jobs.get(&job).ok_or_else(|| ServerError::JobNotFound(job.clone()))?;
                let same_options = entry.record.labels == options.labels && entry.record.init_from == options.init_from;
                if entry.record.name != name || without_summary(&entry.record.spec) != spec || !same_options {
                    return Err(ServerError::InvalidSpec(format!(
                        "request_id '{}' already submitted job {job}, with another name, spec or options: \
                         use a new request_id for a new job",
                        key.id
                    )));
                }
                info!(job = %job, request_id = %key.id, "a retried submission: the job it started");
                return Ok(entry.record.clone());
            }
        }
        let initial = match &options.init_from {
            Some(source) => Some(self.initial_state_of(principal, source).await?),
            None => None,
        };
        let slot = self.reserve_active_job(principal)?;
        let spec = self.with_data_summary(spec).await?;
        let start = NewJob { owner: principal.owner(), name, spec, options, sweep: None, initial };
        self.start_job(start, slot, request.as_ref()).await
    }

    /// A job's own data as a worker finds it, without starting a job
    /// (`InspectData`): checked as a submission checks it (the data roots,
    /// no client-sent summary, the options' ranges).
    pub async fn inspect_own_data(
        &self,
        principal: &Principal,
        dataset: DatasetKind,
        data: DataSource,
        decode: bool,
    ) -> Result<DataReport, ServerError> {
        self.admit(principal)?;
        if self.draining() {
            return Err(ServerError::ShuttingDown);
        }
        if !dataset.is_own_data() {
            return Err(ServerError::InvalidSpec(format!(
                "dataset {dataset}: only image-folder, tar-shards and tensors data can be inspected"
            )));
        }
        let mut spec = JobSpec::reference(rwp_spec::Method::Sgd);
        spec.dataset = dataset;
        spec.augment = dataset.holds_images();
        spec.data = Some(data);
        spec.validate().map_err(|e| ServerError::InvalidSpec(e.to_string()))?;
        check_data_locations(self.config.data_roots.as_deref(), &spec).map_err(ServerError::InvalidSpec)?;
        let data = spec.data.take().expect("set above");
        self.inspect_data(dataset, &data, decode).await
    }

    /// `spec` with the summary of its own data, as a worker inspected it
    /// (the job is planned from it); a spec of a built-in dataset as it is.
    pub(super) async fn with_data_summary(&self, mut spec: JobSpec) -> Result<JobSpec, ServerError> {
        let dataset = spec.dataset;
        let Some(data) = spec.data.as_mut() else { return Ok(spec) };
        data.summary = Some(self.inspect_data(dataset, data, false).await?.summary);
        Ok(spec)
    }

    /// The latest weights of `source`, which `principal` may see, as a
    /// checkpoint file for a new job to start from.
    async fn initial_state_of(&self, principal: &Principal, source: &str) -> Result<Vec<u8>, ServerError> {
        self.lock().jobs.visible(principal, source)?;
        self.state_file(source).await.map(|(_, bytes)| bytes).map_err(|e| ServerError::InitFrom {
            job: source.to_owned(),
            reason: match e {
                ServerError::Storage(reason) => reason,
                other => other.to_string(),
            },
        })
    }

    /// Starts a validated job: its engine, its record, its first tasks.
    pub(super) async fn start_job(
        &self,
        new: NewJob,
        slot: ActiveJobSlot<'_>,
        request: Option<&RequestKey>,
    ) -> Result<JobRecord, ServerError> {
        let NewJob { owner, name, spec, options, sweep, initial } = new;
        let serial = self.lock().jobs.next_serial();
        let id =
            format!("job-{:012x}", derive_seed(now_unix_ms() as u64, &[serial, u64::from(std::process::id())]) >> 16);
        let now = now_unix_ms();
        let mut record = JobRecord {
            job: Job {
                id: id.clone(),
                name,
                spec,
                state: JobState::Running,
                step: 0,
                total_updates: 0,
                updates_per_epoch: 0,
                error: None,
                created_unix_ms: now,
                updated_unix_ms: now,
                skipped_updates: 0,
                skipped_samples: 0,
                skipped_sample_examples: Vec::new(),
                last_step: None,
                last_evaluation: None,
                owner,
                sweep,
                labels: options.labels,
                init_from: options.init_from,
                waiting: None,
            },
            wall_time_before_s: 0.0,
            tensorboard_run: None,
        };
        if let Some(bytes) = initial {
            if let Err(e) = self.write_initial_state(&id, &bytes) {
                self.discard_job_dir(&id);
                return Err(e);
            }
        }
        // A trial's run directory lies in its sweep's.
        let trial_of =
            record.sweep.as_ref().and_then(|(sweep, _)| self.lock().sweeps.get(sweep).map(|e| e.record().clone()));
        let trial = trial_of.as_ref().zip(record.sweep.as_ref().map(|(_, index)| *index));
        record.tensorboard_run = Some(recorder::tensorboard_run(&id, &record.name, trial));
        let (run, _) = match self.start_run(&record, Some(self.config.max_model_parameters)).await {
            Ok(started) => started,
            Err(e) => {
                self.discard_job_dir(&id);
                return Err(match (e, &record.init_from) {
                    (ServerError::Engine(EngineError::InitialState(reason)), Some(source)) => {
                        ServerError::InitFrom { job: source.clone(), reason }
                    }
                    (ServerError::Engine(e), _) => ServerError::InvalidSpec(e.to_string()),
                    (other, _) => other,
                });
            }
        };
        record.total_updates = run.schedule.total_updates;
        record.updates_per_epoch = run.schedule.updates_per_epoch;
        if let Err(e) = self.store.put_job_for(&record, request) {
            drop(run);
            self.recorder.close_board(&id);
            self.discard_job_dir(&id);
            return Err(e);
        }
        info!(job = %id, owner = record.owner.as_deref().unwrap_or(""), method = %record.spec.method, model = %record.spec.model, updates = record.total_updates, "job submitted");
        let by = record.owner.as_deref().map(|o| format!(" by {o}")).unwrap_or_default();
        let from = record.init_from.as_deref().map(|j| format!(", from the weights of job {j}")).unwrap_or_default();
        self.log(
            &id,
            LogKind::Submitted,
            None,
            format!(
                "submitted{by}: {} on {} ({}), {} updates ({} per epoch){from}",
                record.spec.method,
                record.spec.dataset,
                record.spec.model,
                record.total_updates,
                record.updates_per_epoch
            ),
        );
        self.recorder.job_started(&record, trial_of.as_ref(), false);
        let (events, _) = broadcast::channel(1024);
        {
            let mut s = self.lock();
            let tasks = planned(&record.spec, &run.schedule, run.snapshot.version);
            s.scheduler.schedule(&id, run.snapshot.version, tasks, Instant::now());
            s.jobs.insert(JobEntry::new(record.clone(), events, Some(run)));
            if s.no_workers_since.is_some() {
                let message =
                    format!("waiting: {}; the time is not counted as training time", super::workers::NO_WORKER);
                self.log(&id, LogKind::NoWorkers, None, message);
            }
            slot.taken_over(&mut s);
            self.refresh_gauges(&s);
        }
        self.work.notify_waiters();
        Ok(record)
    }

    pub fn get(&self, principal: &Principal, job: &str) -> Result<JobRecord, ServerError> {
        self.admit(principal)?;
        let s = self.lock();
        s.jobs.visible(principal, job).map(|j| Self::reported(&s, j))
    }

    /// A job's record as reported: with what it waits for, if anything.
    fn reported(s: &State, entry: &JobEntry) -> JobRecord {
        let mut record = entry.record.clone();
        if entry.run.is_some() && s.no_workers_since.is_some() {
            record.waiting = Some(super::workers::NO_WORKER.to_owned());
        }
        record
    }

    /// The jobs `principal` may see that carry every label of `selector`.
    pub fn list(
        &self,
        principal: &Principal,
        selector: &BTreeMap<String, String>,
    ) -> Result<Vec<JobRecord>, ServerError> {
        self.admit(principal)?;
        let s = self.lock();
        Ok(s.jobs
            .entries()
            .filter(|j| principal.can_see(&j.record) && rwp_spec::labels::matches(&j.record.labels, selector))
            .map(|j| Self::reported(&s, j))
            .collect())
    }

    pub async fn cancel(&self, principal: &Principal, job: &str) -> Result<JobRecord, ServerError> {
        self.admit(principal)?;
        self.lock().jobs.visible(principal, job)?;
        self.end_running(job, JobState::Cancelled, None).await
    }

    /// Ends a job that may be running: checkpoints it (export and inspection
    /// keep working on the state reached) and moves it to `state`.
    pub(super) async fn end_running(
        &self,
        job: &str,
        state: JobState,
        error: Option<String>,
    ) -> Result<JobRecord, ServerError> {
        let engine = {
            let s = self.lock();
            let entry = s.jobs.get(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
            match &entry.run {
                Some(run) => run.engine.clone(),
                None => return Ok(entry.record.clone()),
            }
        };
        let _ = engine.checkpoint().await;
        self.finish(job, state, error)
    }

    /// Moves a job to a terminal state, dropping its engine and leases.
    pub(super) fn finish(&self, job: &str, state: JobState, error: Option<String>) -> Result<JobRecord, ServerError> {
        let record = {
            let mut guard = self.lock();
            let s = &mut *guard;
            s.scheduler.unschedule(job);
            let entry = s.jobs.get_mut(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
            if entry.record.state.is_terminal() {
                return Ok(entry.record.clone());
            }
            entry.run = None;
            let record = entry.set_state(state, error);
            self.refresh_gauges(s);
            record
        };
        self.recorder.job_ended(&record);
        info!(job, state = state.name(), error = record.error.as_deref().unwrap_or(""), "job finished");
        if let Some(kind) = LogKind::of_end(state) {
            let error = record.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            let progress = format!("at step {} of {}", record.step, record.total_updates);
            self.log(job, kind, None, format!("{} {progress}{error}", state.name()));
        }
        self.store.put_job(&record)?;
        if let Some((sweep, _)) = &record.sweep {
            self.trial_ended(sweep);
        }
        if let Some(owner) = &record.owner {
            self.active_job_freed(owner);
        }
        if let Some(file) = &record.spec.model_file {
            self.model_released(file);
        }
        Ok(record)
    }

    /// The job's state as a checkpoint file, and the step it holds.
    pub async fn export(&self, principal: &Principal, job: &str) -> Result<(u64, Vec<u8>), ServerError> {
        self.admit(principal)?;
        self.lock().jobs.visible(principal, job)?;
        self.state_file(job).await
    }

    /// The state of `job` now (from its engine while it runs, else its
    /// latest checkpoint) as a checkpoint file, and the step it holds.
    pub(super) async fn state_file(&self, job: &str) -> Result<(u64, Vec<u8>), ServerError> {
        let (engine, step) = {
            let s = self.lock();
            let entry = s.jobs.get(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
            (entry.run.as_ref().map(|r| r.engine.clone()), entry.record.step)
        };
        match engine {
            Some(engine) => Ok((step, engine.export().await?)),
            None => {
                let path = self.job_dir(job).join("checkpoint.safetensors");
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| ServerError::Storage(format!("no weights to export for job {job}: {e}")))?;
                rwp_core::checkpoint::verify(&bytes).map_err(|e| {
                    ServerError::Storage(format!("the checkpoint of job {job} ({}) is corrupt: {e}", path.display()))
                })?;
                Ok((step, bytes))
            }
        }
    }

    /// History after the first `from_step` updates (step metrics and
    /// evaluations in step order, then the record if the job already ended)
    /// and a receiver of live events.
    pub fn watch(
        &self,
        principal: &Principal,
        job: &str,
        from_step: u64,
    ) -> Result<(Vec<JobEvent>, Option<broadcast::Receiver<JobEvent>>), ServerError> {
        self.admit(principal)?;
        let (receiver, record, recent) = {
            let s = self.lock();
            let entry = s.jobs.visible(principal, job)?;
            (entry.events.subscribe(), entry.record.clone(), entry.recent_steps.clone())
        };
        let mut history: Vec<(u64, u8, JobEvent)> = Vec::new();
        let stored = self.store.steps(job, from_step + 1)?;
        let stored_up_to = stored.last().map_or(from_step, |m| m.step);
        // The latest updates are sent to watchers (before this watch
        // subscribed) before they reach the store: taken from memory.
        let unstored = recent.into_iter().filter(|m| m.step > stored_up_to);
        for m in stored.into_iter().chain(unstored) {
            // Metrics of steps the job has not (re)reached are left over from
            // before a restart; they will be recorded again.
            if m.step <= record.step {
                history.push((m.step, 0, JobEvent::Step(m)));
            }
        }
        let mut evaluations = self.store.evaluations(job, from_step + 1)?;
        // The same for the latest evaluation.
        if let Some(latest) = record.last_evaluation.clone() {
            if latest.step > from_step && !evaluations.iter().any(|e| e.step == latest.step) {
                evaluations.push(latest);
            }
        }
        for e in evaluations {
            if e.step <= record.step {
                history.push((e.step, 1, JobEvent::Evaluation(e)));
            }
        }
        history.sort_by_key(|(step, order, _)| (*step, *order));
        let mut events: Vec<JobEvent> = history.into_iter().map(|(_, _, e)| e).collect();
        if record.state.is_terminal() {
            events.push(JobEvent::State(Box::new(record.job)));
            return Ok((events, None));
        }
        Ok((events, Some(receiver)))
    }
}
