//! Typed views of the service's messages.

use rwp_proto::v1;
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
