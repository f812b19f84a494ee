//! What the job API reports: jobs and their states, step metrics and
//! evaluations, job events, sweeps and their trials, stored model files.

use rwp_spec::report::{Sweep, Trial};
use rwp_spec::sweep::{SweepSpec, SweepState};
use rwp_spec::{Evaluation, Job, JobEvent, JobSpec, JobState, LogEntry, LogKind, StepMetrics, StoredModel, WorkerInfo};

use super::spec::param_value_from_wire;
use super::{missing, unknown, ConversionError};
use crate::v1;

impl From<JobState> for v1::JobState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Running => v1::JobState::Running,
            JobState::Paused => v1::JobState::Paused,
            JobState::Succeeded => v1::JobState::Succeeded,
            JobState::Failed => v1::JobState::Failed,
            JobState::Cancelled => v1::JobState::Cancelled,
            JobState::Stopped => v1::JobState::Stopped,
        }
    }
}

/// Decodes a wire job state.
pub fn job_state_from_wire(value: i32) -> Result<JobState, ConversionError> {
    match v1::JobState::try_from(value).map_err(|_| unknown("job.state", value))? {
        v1::JobState::Unspecified => Err(missing("job.state")),
        v1::JobState::Running => Ok(JobState::Running),
        v1::JobState::Paused => Ok(JobState::Paused),
        v1::JobState::Succeeded => Ok(JobState::Succeeded),
        v1::JobState::Failed => Ok(JobState::Failed),
        v1::JobState::Cancelled => Ok(JobState::Cancelled),
        v1::JobState::Stopped => Ok(JobState::Stopped),
    }
}

impl From<&StepMetrics> for v1::StepMetrics {
    fn from(m: &StepMetrics) -> Self {
        v1::StepMetrics {
            step: m.step,
            loss: m.loss,
            accuracy: m.accuracy,
            perturbed_loss: m.perturbed_loss,
            lr: m.lr,
            sigma: m.sigma,
            wall_time_s: m.wall_time_s,
            skipped: m.skipped,
        }
    }
}

impl From<v1::StepMetrics> for StepMetrics {
    fn from(m: v1::StepMetrics) -> Self {
        StepMetrics {
            step: m.step,
            loss: m.loss,
            accuracy: m.accuracy,
            perturbed_loss: m.perturbed_loss,
            lr: m.lr,
            sigma: m.sigma,
            wall_time_s: m.wall_time_s,
            skipped: m.skipped,
        }
    }
}

impl From<&Evaluation> for v1::Evaluation {
    fn from(e: &Evaluation) -> Self {
        v1::Evaluation {
            step: e.step,
            epoch: e.epoch,
            test_loss: e.test_loss,
            test_accuracy: e.test_accuracy,
            wall_time_s: e.wall_time_s,
            validation_loss: e.validation_loss,
            validation_accuracy: e.validation_accuracy,
        }
    }
}

impl From<v1::Evaluation> for Evaluation {
    fn from(e: v1::Evaluation) -> Self {
        Evaluation {
            step: e.step,
            epoch: e.epoch,
            test_loss: e.test_loss,
            test_accuracy: e.test_accuracy,
            wall_time_s: e.wall_time_s,
            validation_loss: e.validation_loss,
            validation_accuracy: e.validation_accuracy,
        }
    }
}

impl From<SweepState> for v1::SweepState {
    fn from(s: SweepState) -> Self {
        match s {
            SweepState::Running => v1::SweepState::Running,
            SweepState::Succeeded => v1::SweepState::Succeeded,
            SweepState::Cancelled => v1::SweepState::Cancelled,
            SweepState::Failed => v1::SweepState::Failed,
        }
    }
}

/// Decodes a wire sweep state.
pub fn sweep_state_from_wire(value: i32) -> Result<SweepState, ConversionError> {
    match v1::SweepState::try_from(value).map_err(|_| unknown("sweep.state", value))? {
        v1::SweepState::Unspecified => Err(missing("sweep.state")),
        v1::SweepState::Running => Ok(SweepState::Running),
        v1::SweepState::Succeeded => Ok(SweepState::Succeeded),
        v1::SweepState::Cancelled => Ok(SweepState::Cancelled),
        v1::SweepState::Failed => Ok(SweepState::Failed),
    }
}

impl From<&Job> for v1::Job {
    fn from(j: &Job) -> Self {
        v1::Job {
            id: j.id.clone(),
            name: j.name.clone(),
            spec: Some((&j.spec).into()),
            state: v1::JobState::from(j.state).into(),
            step: j.step,
            total_updates: j.total_updates,
            updates_per_epoch: j.updates_per_epoch,
            error: j.error.clone().unwrap_or_default(),
            created_unix_ms: j.created_unix_ms,
            updated_unix_ms: j.updated_unix_ms,
            skipped_updates: j.skipped_updates,
            skipped_samples: j.skipped_samples,
            skipped_sample_examples: j.skipped_sample_examples.clone(),
            last_step: j.last_step.as_ref().map(Into::into),
            last_evaluation: j.last_evaluation.as_ref().map(Into::into),
            owner: j.owner.clone().unwrap_or_default(),
            sweep_id: j.sweep.as_ref().map(|(id, _)| id.clone()).unwrap_or_default(),
            sweep_trial: j.sweep.as_ref().map_or(0, |(_, trial)| *trial),
            labels: j.labels.clone(),
            init_from_job: j.init_from.clone().unwrap_or_default(),
            waiting: j.waiting.clone().unwrap_or_default(),
        }
    }
}

/// Empty strings on the wire are `None` here (no error, no owner, no sweep).
impl TryFrom<v1::Job> for Job {
    type Error = ConversionError;
    fn try_from(j: v1::Job) -> Result<Self, Self::Error> {
        let spec = j.spec.ok_or_else(|| missing("job.spec"))?;
        Ok(Self {
            spec: JobSpec::try_from(spec)?,
            state: job_state_from_wire(j.state)?,
            id: j.id,
            name: j.name,
            step: j.step,
            total_updates: j.total_updates,
            updates_per_epoch: j.updates_per_epoch,
            error: (!j.error.is_empty()).then_some(j.error),
            created_unix_ms: j.created_unix_ms,
            updated_unix_ms: j.updated_unix_ms,
            skipped_updates: j.skipped_updates,
            skipped_samples: j.skipped_samples,
            skipped_sample_examples: j.skipped_sample_examples,
            last_step: j.last_step.map(Into::into),
            last_evaluation: j.last_evaluation.map(Into::into),
            owner: (!j.owner.is_empty()).then_some(j.owner),
            sweep: (!j.sweep_id.is_empty()).then_some((j.sweep_id, j.sweep_trial)),
            labels: j.labels,
            init_from: (!j.init_from_job.is_empty()).then_some(j.init_from_job),
            waiting: (!j.waiting.is_empty()).then_some(j.waiting),
        })
    }
}

impl From<&LogEntry> for v1::JobLogEntry {
    fn from(e: &LogEntry) -> Self {
        v1::JobLogEntry {
            seq: e.seq,
            unix_ms: e.unix_ms,
            kind: e.kind.name().to_owned(),
            worker: e.worker.clone().unwrap_or_default(),
            message: e.message.clone(),
        }
    }
}

impl TryFrom<v1::JobLogEntry> for LogEntry {
    type Error = ConversionError;
    fn try_from(e: v1::JobLogEntry) -> Result<Self, Self::Error> {
        let kind = LogKind::from_name(&e.kind).ok_or_else(|| ConversionError {
            field: "job_log_entry.kind",
            reason: format!("unknown kind '{}'", e.kind),
        })?;
        Ok(Self {
            seq: e.seq,
            unix_ms: e.unix_ms,
            kind,
            worker: (!e.worker.is_empty()).then_some(e.worker),
            message: e.message,
        })
    }
}

impl From<&WorkerInfo> for v1::WorkerStatus {
    fn from(w: &WorkerInfo) -> Self {
        v1::WorkerStatus {
            id: w.id.clone(),
            name: w.name.clone(),
            device: w.device.clone(),
            connected: w.connected,
            registered_unix_ms: w.registered_unix_ms,
            last_seen_unix_ms: w.last_seen_unix_ms,
            job_id: w.job.clone().unwrap_or_default(),
            task: w.task.clone().unwrap_or_default(),
            tasks_done: w.tasks_done,
        }
    }
}

impl From<v1::WorkerStatus> for WorkerInfo {
    fn from(w: v1::WorkerStatus) -> Self {
        Self {
            id: w.id,
            name: w.name,
            device: w.device,
            connected: w.connected,
            registered_unix_ms: w.registered_unix_ms,
            last_seen_unix_ms: w.last_seen_unix_ms,
            job: (!w.job_id.is_empty()).then_some(w.job_id),
            task: (!w.task.is_empty()).then_some(w.task),
            tasks_done: w.tasks_done,
        }
    }
}

impl From<&JobEvent> for v1::JobEvent {
    fn from(e: &JobEvent) -> Self {
        use v1::job_event::Event;
        let event = match e {
            JobEvent::Step(m) => Event::Step(m.into()),
            JobEvent::Evaluation(e) => Event::Evaluation(e.into()),
            JobEvent::State(j) => Event::Job(j.as_ref().into()),
        };
        v1::JobEvent { event: Some(event) }
    }
}

impl TryFrom<v1::JobEvent> for JobEvent {
    type Error = ConversionError;
    fn try_from(e: v1::JobEvent) -> Result<Self, Self::Error> {
        use v1::job_event::Event;
        Ok(match e.event.ok_or_else(|| missing("event"))? {
            Event::Step(m) => JobEvent::Step(m.into()),
            Event::Evaluation(e) => JobEvent::Evaluation(e.into()),
            Event::Job(j) => JobEvent::State(Box::new(j.try_into()?)),
        })
    }
}

/// A trial's `job_id` on the wire is its job's id (empty while it waits).
impl From<&Sweep> for v1::Sweep {
    fn from(s: &Sweep) -> Self {
        v1::Sweep {
            id: s.id.clone(),
            name: s.name.clone(),
            spec: Some((&s.spec).into()),
            state: v1::SweepState::from(s.state).into(),
            error: s.error.clone().unwrap_or_default(),
            created_unix_ms: s.created_unix_ms,
            updated_unix_ms: s.updated_unix_ms,
            owner: s.owner.clone().unwrap_or_default(),
            trials: s.trials.iter().map(Into::into).collect(),
            best_trial: s.best_trial,
        }
    }
}

impl From<&Trial> for v1::Trial {
    fn from(t: &Trial) -> Self {
        v1::Trial {
            index: t.index,
            params: t
                .params
                .iter()
                .map(|(field, value)| v1::SweepParam { field: field.clone(), value: Some(value.into()) })
                .collect(),
            job_id: t.job.as_ref().map(|j| j.id.clone()).unwrap_or_default(),
            job: t.job.as_ref().map(Into::into),
        }
    }
}

impl TryFrom<v1::Sweep> for Sweep {
    type Error = ConversionError;
    fn try_from(s: v1::Sweep) -> Result<Self, Self::Error> {
        let spec = SweepSpec::try_from(s.spec.ok_or_else(|| missing("sweep.spec"))?)?;
        let trials = s.trials.into_iter().map(Trial::try_from).collect::<Result<_, _>>()?;
        Ok(Self {
            state: sweep_state_from_wire(s.state)?,
            id: s.id,
            name: s.name,
            spec,
            error: (!s.error.is_empty()).then_some(s.error),
            created_unix_ms: s.created_unix_ms,
            updated_unix_ms: s.updated_unix_ms,
            owner: (!s.owner.is_empty()).then_some(s.owner),
            trials,
            best_trial: s.best_trial,
        })
    }
}

impl TryFrom<v1::Trial> for Trial {
    type Error = ConversionError;
    fn try_from(t: v1::Trial) -> Result<Self, Self::Error> {
        let mut params = Vec::with_capacity(t.params.len());
        for p in t.params {
            let value = p.value.ok_or_else(|| missing("trial.params.value"))?;
            params.push((p.field, param_value_from_wire(value, "trial.params.value")?));
        }
        Ok(Self { index: t.index, params, job: t.job.map(Job::try_from).transpose()? })
    }
}

impl From<StoredModel> for v1::StoredModel {
    fn from(m: StoredModel) -> Self {
        v1::StoredModel {
            sha256: m.sha256,
            size_bytes: m.size_bytes,
            uploaded_unix_ms: m.uploaded_unix_ms,
            owner: m.owner.unwrap_or_default(),
        }
    }
}

/// An empty owner on the wire is `None` (a server without authentication).
impl From<v1::StoredModel> for StoredModel {
    fn from(m: v1::StoredModel) -> Self {
        Self {
            sha256: m.sha256,
            size_bytes: m.size_bytes,
            uploaded_unix_ms: m.uploaded_unix_ms,
            owner: (!m.owner.is_empty()).then_some(m.owner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_messages_round_trip() {
        let m = StepMetrics {
            step: 3,
            loss: 1.5,
            accuracy: 0.25,
            perturbed_loss: Some(1.75),
            lr: 0.1,
            sigma: 0.01,
            wall_time_s: 2.5,
            skipped: false,
        };
        assert_eq!(StepMetrics::from(v1::StepMetrics::from(&m)), m);
        let mut e = Evaluation {
            step: 7,
            epoch: 1,
            test_loss: 0.5,
            test_accuracy: 0.875,
            wall_time_s: 3.0,
            validation_loss: None,
            validation_accuracy: None,
        };
        assert_eq!(Evaluation::from(v1::Evaluation::from(&e)), e);
        (e.validation_loss, e.validation_accuracy) = (Some(0.6), Some(0.8));
        assert_eq!(Evaluation::from(v1::Evaluation::from(&e)), e);
        for s in [JobState::Running, JobState::Paused, JobState::Succeeded, JobState::Failed, JobState::Cancelled] {
            assert_eq!(job_state_from_wire(v1::JobState::from(s) as i32).unwrap(), s);
        }
        assert_eq!(job_state_from_wire(0).unwrap_err().field, "job.state");
    }

    #[test]
    fn sweep_states_round_trip() {
        for s in [SweepState::Running, SweepState::Succeeded, SweepState::Cancelled, SweepState::Failed] {
            assert_eq!(sweep_state_from_wire(v1::SweepState::from(s).into()).unwrap(), s);
        }
        assert_eq!(sweep_state_from_wire(0).unwrap_err().to_string(), "sweep.state: must be set");
    }

    fn job(owner: Option<&str>, sweep: Option<(&str, u32)>) -> Job {
        Job {
            id: "job-1".into(),
            name: "a job".into(),
            spec: rwp_spec::JobSpec::reference(rwp_spec::Method::MArwp),
            state: JobState::Failed,
            step: 12,
            total_updates: 40,
            updates_per_epoch: 10,
            error: Some("non-finite gradient".into()),
            created_unix_ms: 1_700_000_000_000,
            updated_unix_ms: 1_700_000_000_500,
            skipped_updates: 2,
            skipped_samples: 3,
            skipped_sample_examples: vec!["train/cat/x.jpg: not a JPEG".into()],
            last_step: Some(StepMetrics {
                step: 11,
                loss: 0.5,
                accuracy: 0.75,
                perturbed_loss: Some(0.625),
                lr: 0.1,
                sigma: 0.01,
                wall_time_s: 4.5,
                skipped: true,
            }),
            last_evaluation: Some(Evaluation {
                step: 10,
                epoch: 1,
                test_loss: 0.25,
                test_accuracy: 0.875,
                wall_time_s: 4.0,
                validation_loss: Some(0.3),
                validation_accuracy: Some(0.8),
            }),
            owner: owner.map(str::to_owned),
            sweep: sweep.map(|(id, trial)| (id.to_owned(), trial)),
            labels: [("team".to_owned(), "vision".to_owned()), ("stage".to_owned(), String::new())].into(),
            init_from: owner.map(|_| "job-0".to_owned()),
            waiting: owner.map(|_| "no worker is connected".to_owned()),
        }
    }

    #[test]
    fn jobs_round_trip() {
        for j in [job(Some("alice"), Some(("sweep-1", 3))), job(None, None)] {
            assert_eq!(Job::try_from(v1::Job::from(&j)).unwrap(), j);
        }
        let mut bare = job(None, None);
        (bare.error, bare.last_step, bare.last_evaluation, bare.state) = (None, None, None, JobState::Running);
        assert_eq!(Job::try_from(v1::Job::from(&bare)).unwrap(), bare);
        let no_spec = v1::Job { spec: None, ..v1::Job::from(&bare) };
        assert_eq!(Job::try_from(no_spec).unwrap_err().to_string(), "job.spec: must be set");
        let bad_state = v1::Job { state: 0, ..v1::Job::from(&bare) };
        assert_eq!(Job::try_from(bad_state).unwrap_err().field, "job.state");
    }

    #[test]
    fn log_entries_and_workers_round_trip() {
        for kind in LogKind::ALL {
            let entry = LogEntry {
                seq: 3,
                unix_ms: 1_700_000_000_000,
                kind,
                worker: Some("gpu-0".into()),
                message: "m".into(),
            };
            assert_eq!(LogEntry::try_from(v1::JobLogEntry::from(&entry)).unwrap(), entry);
            assert_eq!(LogKind::from_name(kind.name()), Some(kind));
        }
        let bad = v1::JobLogEntry { kind: "exploded".into(), ..v1::JobLogEntry::default() };
        assert_eq!(LogEntry::try_from(bad).unwrap_err().to_string(), "job_log_entry.kind: unknown kind 'exploded'");
        let worker = WorkerInfo {
            id: "w-1".into(),
            name: "gpu-0".into(),
            device: "cuda:0".into(),
            connected: true,
            registered_unix_ms: 1,
            last_seen_unix_ms: 2,
            job: Some("job-1".into()),
            task: Some("update 3, clean shard 1/2".into()),
            tasks_done: 7,
        };
        assert_eq!(WorkerInfo::from(v1::WorkerStatus::from(&worker)), worker);
    }

    #[test]
    fn job_events_round_trip() {
        let j = job(Some("alice"), None);
        let events = [
            JobEvent::Step(j.last_step.clone().unwrap()),
            JobEvent::Evaluation(j.last_evaluation.clone().unwrap()),
            JobEvent::State(Box::new(j)),
        ];
        for e in events {
            assert_eq!(JobEvent::try_from(v1::JobEvent::from(&e)).unwrap(), e);
        }
        assert_eq!(JobEvent::try_from(v1::JobEvent { event: None }).unwrap_err().field, "event");
    }

    #[test]
    fn sweeps_round_trip() {
        use rwp_spec::sweep::{ParamValue, Search, SearchMode};
        let spec = SweepSpec {
            base: rwp_spec::JobSpec::reference(rwp_spec::Method::Sgd),
            search: Search { mode: SearchMode::Grid, n_trials: None, seed: 0, params: vec![] },
            concurrency: 2,
            early_stopping: None,
        };
        let sweep = Sweep {
            id: "sweep-1".into(),
            name: "lr".into(),
            spec,
            state: SweepState::Cancelled,
            error: Some("cancelled".into()),
            created_unix_ms: 5,
            updated_unix_ms: 6,
            owner: Some("alice".into()),
            trials: vec![
                Trial {
                    index: 0,
                    params: vec![("lr".into(), ParamValue::Number(0.1)), ("nesterov".into(), ParamValue::Flag(true))],
                    job: Some(job(Some("alice"), Some(("sweep-1", 0)))),
                },
                Trial { index: 1, params: vec![("method".into(), ParamValue::Text("sam".into()))], job: None },
            ],
            best_trial: Some(0),
        };
        let wire = v1::Sweep::from(&sweep);
        assert_eq!((wire.trials[0].job_id.as_str(), wire.trials[1].job_id.as_str()), ("job-1", ""));
        assert_eq!(Sweep::try_from(wire.clone()).unwrap(), sweep);
        let bare = Sweep { error: None, owner: None, best_trial: None, trials: vec![], ..sweep };
        assert_eq!(Sweep::try_from(v1::Sweep::from(&bare)).unwrap(), bare);

        let mut no_value = wire.clone();
        no_value.trials[1].params[0].value = None;
        assert_eq!(Sweep::try_from(no_value).unwrap_err().to_string(), "trial.params.value: must be set");
        assert_eq!(Sweep::try_from(v1::Sweep { spec: None, ..wire.clone() }).unwrap_err().field, "sweep.spec");
        assert_eq!(Sweep::try_from(v1::Sweep { state: 9, ..wire }).unwrap_err().field, "sweep.state");
    }

    #[test]
    fn stored_models_round_trip() {
        for owner in [Some("alice".to_owned()), None] {
            let m = StoredModel { sha256: "a".repeat(64), size_bytes: 10, uploaded_unix_ms: 3, owner };
            assert_eq!(StoredModel::from(v1::StoredModel::from(m.clone())), m);
        }
    }
}
