//! Typed views of the service's messages.

use rwp_proto::v1;
use rwp_spec::JobSpec;

use crate::SdkError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    #[must_use]
    pub fn is_terminal(self) -> bool {
        self != JobState::Running
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Metrics of one update.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub perturbed_loss: Option<f64>,
    pub lr: f64,
    pub sigma: f64,
    /// Seconds of running time when the update was applied.
    pub wall_time_s: f64,
    pub skipped: bool,
}

/// A test-split evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Updates applied when evaluated.
    pub step: u64,
    pub epoch: u64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub wall_time_s: f64,
}

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

impl TryFrom<i32> for JobState {
    type Error = SdkError;
    fn try_from(value: i32) -> Result<Self, SdkError> {
        match v1::JobState::try_from(value) {
            Ok(v1::JobState::Running) => Ok(JobState::Running),
            Ok(v1::JobState::Succeeded) => Ok(JobState::Succeeded),
            Ok(v1::JobState::Failed) => Ok(JobState::Failed),
            Ok(v1::JobState::Cancelled) => Ok(JobState::Cancelled),
            _ => Err(protocol(format!("job state {value}"))),
        }
    }
}

impl From<v1::StepMetrics> for StepMetrics {
    fn from(m: v1::StepMetrics) -> Self {
        Self {
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

impl From<v1::Evaluation> for Evaluation {
    fn from(e: v1::Evaluation) -> Self {
        Self {
            step: e.step,
            epoch: e.epoch,
            test_loss: e.test_loss,
            test_accuracy: e.test_accuracy,
            wall_time_s: e.wall_time_s,
        }
    }
}

impl TryFrom<v1::Job> for Job {
    type Error = SdkError;
    fn try_from(j: v1::Job) -> Result<Self, SdkError> {
        let spec = j.spec.ok_or_else(|| protocol("a job without a spec"))?;
        Ok(Self {
            spec: JobSpec::try_from(spec).map_err(protocol)?,
            state: JobState::try_from(j.state)?,
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
