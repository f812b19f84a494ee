//! Typed views of the service's messages.

use rwp_proto::v1;
use rwp_spec::sweep::{ParamValue, SweepSpec, SweepState};
use rwp_spec::{Evaluation, JobSpec, JobState, StepMetrics};

use crate::SdkError;

/// A job as the server reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Updates applied so far.
    pub step: u64,
    pub total_updates: u64,
    pub updates_per_epoch: u64,
    /// Why the job failed, if it did.
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    pub skipped_updates: u64,
    pub last_step: Option<StepMetrics>,
    pub last_evaluation: Option<Evaluation>,
    /// Name of the token that submitted the job; `None` on a server without
    /// authentication.
    pub owner: Option<String>,
    /// The sweep the job is a trial of, and its index there.
    pub sweep: Option<(String, u32)>,
}

/// A sweep as the server reports it: its spec, and each trial with its job
/// once started.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub id: String,
    pub name: String,
    pub spec: SweepSpec,
    pub state: SweepState,
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    pub owner: Option<String>,
    pub trials: Vec<Trial>,
    /// The trial with the highest validation accuracy so far (never chosen
    /// by test accuracy).
    pub best_trial: Option<u32>,
}

/// One trial of a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub index: u32,
    pub params: Vec<(String, ParamValue)>,
    /// `None` while the trial waits for a slot.
    pub job: Option<Job>,
}

impl Sweep {
    /// The sweep and every trial it started have ended.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.state.is_terminal() && self.trials.iter().filter_map(|t| t.job.as_ref()).all(|j| j.state.is_terminal())
    }

    #[must_use]
    pub fn best(&self) -> Option<&Trial> {
        self.best_trial.and_then(|i| self.trials.get(i as usize))
    }
}

impl TryFrom<v1::Sweep> for Sweep {
    type Error = SdkError;
    fn try_from(s: v1::Sweep) -> Result<Self, SdkError> {
        let spec = SweepSpec::try_from(s.spec.ok_or_else(|| protocol("a sweep without a spec"))?).map_err(protocol)?;
        let mut trials = Vec::with_capacity(s.trials.len());
        for t in s.trials {
            let mut params = Vec::with_capacity(t.params.len());
            for p in t.params {
                let value = rwp_proto::param_value_from_wire(
                    p.value.ok_or_else(|| protocol("a trial parameter without a value"))?,
                    "trial.params.value",
                )
                .map_err(protocol)?;
                params.push((p.field, value));
            }
            trials.push(Trial { index: t.index, params, job: t.job.map(Job::try_from).transpose()? });
        }
        Ok(Self {
            state: rwp_proto::sweep_state_from_wire(s.state).map_err(protocol)?,
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

/// A model file uploaded to the server, as [`crate::Client::list_models`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredModel {
    pub sha256: String,
    pub size_bytes: u64,
    /// When its owner last uploaded it.
    pub uploaded_unix_ms: i64,
    /// The token that uploaded it; `None` on a server without authentication.
    pub owner: Option<String>,
}

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

/// What [`crate::Client::watch`] yields.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// An update was applied (every step, in order).
    Step(StepMetrics),
    /// The test split was evaluated.
    Evaluation(Evaluation),
    /// The job changed state; when terminal, this is the last event.
    State(Box<Job>),
}

fn protocol(what: impl std::fmt::Display) -> SdkError {
    SdkError::Protocol(format!("unexpected message from the server: {what}"))
}

impl TryFrom<v1::Job> for Job {
    type Error = SdkError;
    fn try_from(j: v1::Job) -> Result<Self, SdkError> {
        let spec = j.spec.ok_or_else(|| protocol("a job without a spec"))?;
        Ok(Self {
            spec: JobSpec::try_from(spec).map_err(protocol)?,
            state: rwp_proto::job_state_from_wire(j.state).map_err(protocol)?,
            id: j.id,
            name: j.name,
            step: j.step,
            total_updates: j.total_updates,
            updates_per_epoch: j.updates_per_epoch,
            error: (!j.error.is_empty()).then_some(j.error),
            created_unix_ms: j.created_unix_ms,
            updated_unix_ms: j.updated_unix_ms,
            skipped_updates: j.skipped_updates,
            last_step: j.last_step.map(Into::into),
            last_evaluation: j.last_evaluation.map(Into::into),
            owner: (!j.owner.is_empty()).then_some(j.owner),
            sweep: (!j.sweep_id.is_empty()).then_some((j.sweep_id, j.sweep_trial)),
        })
    }
}

impl TryFrom<v1::JobEvent> for JobEvent {
    type Error = SdkError;
    fn try_from(e: v1::JobEvent) -> Result<Self, SdkError> {
        use v1::job_event::Event;
        match e.event.ok_or_else(|| protocol("an empty event"))? {
            Event::Step(m) => Ok(JobEvent::Step(m.into())),
            Event::Evaluation(e) => Ok(JobEvent::Evaluation(e.into())),
            Event::Job(j) => Ok(JobEvent::State(Box::new(j.try_into()?))),
        }
    }
}
