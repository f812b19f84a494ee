//! What the worker API carries: leased tasks (gradients and evaluation
//! shards), push headers (roles and the announced payload), the messages of
//! a push stream, and evaluation results.

use std::time::Duration;

use bytes::Bytes;
use rwp_spec::eval::{BatchEval, EvalSplit, EvalTask};
use rwp_spec::payload::{Announced, PushMessage};
use rwp_spec::work::{EvalPush, Inspection, InspectionPush, LeasedTask, PushHeader, Work};
use rwp_spec::{DataReport, DataSource};
use rwp_spec::{JobSpec, Role, Task};

use super::spec::{dataset_from_wire, encoding_from_wire};
use super::{missing, unknown, ConversionError};
use crate::v1;

impl From<Role> for v1::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Clean => v1::Role::Clean,
            Role::Perturbed => v1::Role::Perturbed,
            Role::Sam => v1::Role::Sam,
        }
    }
}

impl TryFrom<v1::Role> for Role {
    type Error = ConversionError;
    fn try_from(r: v1::Role) -> Result<Self, Self::Error> {
        match r {
            v1::Role::Unspecified => Err(missing("role")),
            v1::Role::Clean => Ok(Role::Clean),
            v1::Role::Perturbed => Ok(Role::Perturbed),
            v1::Role::Sam => Ok(Role::Sam),
        }
    }
}

/// Decodes a wire role.
pub fn role_from_wire(value: i32) -> Result<Role, ConversionError> {
    v1::Role::try_from(value).map_err(|_| unknown("role", value))?.try_into()
}

/// A push header's announced encoding and byte counts, for
/// [`rwp_spec::payload::Layout::expect`].
impl TryFrom<&v1::GradientHeader> for Announced {
    type Error = ConversionError;
    fn try_from(h: &v1::GradientHeader) -> Result<Self, Self::Error> {
        Ok(Announced {
            encoding: encoding_from_wire(h.encoding)?,
            gradient_bytes: h.gradient_bytes,
            buffer_bytes: h.buffer_bytes,
        })
    }
}

/// A message of a `PushGradient` stream, for the transport-free checks of
/// [`rwp_spec::payload`].
impl From<v1::GradientChunk> for PushMessage<v1::GradientHeader, Bytes> {
    fn from(chunk: v1::GradientChunk) -> Self {
        use v1::gradient_chunk::Part;
        match chunk.part {
            Some(Part::Header(h)) => PushMessage::Header(h),
            Some(Part::Data(data)) => PushMessage::Data(data),
            None => PushMessage::Empty,
        }
    }
}

impl From<PushHeader> for v1::GradientHeader {
    fn from(h: PushHeader) -> Self {
        v1::GradientHeader {
            worker_id: h.worker_id,
            lease_id: h.lease_id,
            job_id: h.job_id,
            step: h.step,
            role: v1::Role::from(h.role).into(),
            shard: h.shard,
            weights_version: h.weights_version,
            loss: h.loss,
            accuracy: h.accuracy,
            encoding: v1::GradientEncoding::from(h.announced.encoding).into(),
            gradient_bytes: h.announced.gradient_bytes,
            buffer_bytes: h.announced.buffer_bytes,
            skipped_samples: h.skipped,
        }
    }
}

/// Checks the role, then the encoding (fields `role`, `encoding`).
impl TryFrom<v1::GradientHeader> for PushHeader {
    type Error = ConversionError;
    fn try_from(h: v1::GradientHeader) -> Result<Self, Self::Error> {
        Ok(PushHeader {
            role: role_from_wire(h.role)?,
            announced: Announced::try_from(&h)?,
            worker_id: h.worker_id,
            lease_id: h.lease_id,
            job_id: h.job_id,
            step: h.step,
            shard: h.shard,
            weights_version: h.weights_version,
            loss: h.loss,
            accuracy: h.accuracy,
            skipped: h.skipped_samples,
        })
    }
}

impl From<EvalSplit> for v1::EvaluationSplit {
    fn from(s: EvalSplit) -> Self {
        match s {
            EvalSplit::Test => v1::EvaluationSplit::Test,
            EvalSplit::Validation => v1::EvaluationSplit::Validation,
        }
    }
}

/// Decodes a wire evaluation split, named `field` in errors.
fn split_from_wire(value: i32, field: &'static str) -> Result<EvalSplit, ConversionError> {
    match v1::EvaluationSplit::try_from(value).map_err(|_| unknown(field, value))? {
        v1::EvaluationSplit::Unspecified => Err(missing(field)),
        v1::EvaluationSplit::Test => Ok(EvalSplit::Test),
        v1::EvaluationSplit::Validation => Ok(EvalSplit::Validation),
    }
}

impl From<EvalTask> for v1::EvaluationTask {
    fn from(t: EvalTask) -> Self {
        v1::EvaluationTask {
            version: t.version,
            split: v1::EvaluationSplit::from(t.split).into(),
            shard: t.shard,
            num_shards: t.num_shards,
        }
    }
}

/// `split_field` names the split in errors (`evaluation.split`, `task.split`).
fn eval_task_from_wire(t: &v1::EvaluationTask, split_field: &'static str) -> Result<EvalTask, ConversionError> {
    Ok(EvalTask {
        version: t.version,
        split: split_from_wire(t.split, split_field)?,
        shard: t.shard,
        num_shards: t.num_shards,
    })
}

impl From<EvalPush> for v1::PushEvaluationRequest {
    fn from(p: EvalPush) -> Self {
        v1::PushEvaluationRequest {
            worker_id: p.worker_id,
            lease_id: p.lease_id,
            job_id: p.job_id,
            task: Some(p.task.into()),
            batches: p
                .batches
                .into_iter()
                .map(|b| v1::EvaluatedBatch { loss_sum: b.loss_sum, correct: b.correct, samples: b.samples })
                .collect(),
            skipped_samples: p.skipped,
        }
    }
}

/// Fields are named as in the message (`task`, `task.split`).
impl TryFrom<v1::PushEvaluationRequest> for EvalPush {
    type Error = ConversionError;
    fn try_from(p: v1::PushEvaluationRequest) -> Result<Self, Self::Error> {
        let task = p.task.as_ref().ok_or_else(|| missing("task"))?;
        Ok(EvalPush {
            task: eval_task_from_wire(task, "task.split")?,
            worker_id: p.worker_id,
            lease_id: p.lease_id,
            job_id: p.job_id,
            batches: p
                .batches
                .into_iter()
                .map(|b| BatchEval { loss_sum: b.loss_sum, correct: b.correct, samples: b.samples })
                .collect(),
            skipped: p.skipped_samples,
        })
    }
}

impl From<Inspection> for v1::InspectionTask {
    fn from(i: Inspection) -> Self {
        v1::InspectionTask {
            lease_id: i.lease_id,
            dataset: v1::Dataset::from(i.dataset).into(),
            data: Some((&i.data).into()),
            lease_deadline_unix_ms: i.deadline_unix_ms,
            decode: i.decode,
        }
    }
}

impl TryFrom<v1::InspectionTask> for Inspection {
    type Error = ConversionError;
    fn try_from(i: v1::InspectionTask) -> Result<Self, Self::Error> {
        Ok(Inspection {
            lease_id: i.lease_id,
            dataset: dataset_from_wire(i.dataset)
                .map_err(|e| ConversionError { field: "dataset", reason: e.reason })?,
            data: DataSource::try_from(i.data.ok_or_else(|| missing("data"))?)?,
            deadline_unix_ms: i.lease_deadline_unix_ms,
            decode: i.decode,
        })
    }
}

impl From<InspectionPush> for v1::PushInspectionRequest {
    fn from(p: InspectionPush) -> Self {
        use v1::push_inspection_request::Result as Found;
        v1::PushInspectionRequest {
            worker_id: p.worker_id,
            lease_id: p.lease_id,
            result: Some(match &p.result {
                Ok(report) => Found::Report(report.into()),
                Err(error) => Found::Error(error.clone()),
            }),
        }
    }
}

impl TryFrom<v1::PushInspectionRequest> for InspectionPush {
    type Error = ConversionError;
    fn try_from(p: v1::PushInspectionRequest) -> Result<Self, Self::Error> {
        use v1::push_inspection_request::Result as Found;
        let result = match p.result.ok_or_else(|| missing("result"))? {
            Found::Report(report) => Ok(DataReport::try_from(report)?),
            Found::Summary(_) => {
                return Err(ConversionError {
                    field: "result",
                    reason: "a summary without its report: the worker is older than the server; upgrade it".into(),
                })
            }
            Found::Error(error) => Err(error),
        };
        Ok(InspectionPush { worker_id: p.worker_id, lease_id: p.lease_id, result })
    }
}

/// The trace context of the task's update travels beside the message (in
/// its metadata), not in it. An evaluation task sets `evaluation` and leaves
/// the gradient fields at their defaults.
impl From<LeasedTask> for v1::Task {
    fn from(l: LeasedTask) -> Self {
        let mut wire = v1::Task {
            lease_id: l.lease_id,
            job_id: l.job_id,
            spec: Some((&l.spec).into()),
            lease_deadline_unix_ms: l.deadline_unix_ms,
            timeout_ms: l.timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            ..v1::Task::default()
        };
        match l.work {
            Work::Gradient { task, returns_buffers } => {
                wire.step = task.step;
                wire.role = v1::Role::from(task.role).into();
                wire.shard = task.shard;
                wire.num_shards = task.num_shards;
                wire.noise_seed = task.noise_seed;
                wire.sigma = task.sigma;
                wire.returns_buffers = returns_buffers;
            }
            Work::Evaluation(task) => {
                wire.step = task.version;
                wire.evaluation = Some(task.into());
            }
        }
        wire
    }
}

/// Fields are named as in the `Task` message (`spec`, `spec.method`,
/// `role`, `evaluation.split`); a zero `timeout_ms` is no timeout.
impl TryFrom<v1::Task> for LeasedTask {
    type Error = ConversionError;
    fn try_from(t: v1::Task) -> Result<Self, Self::Error> {
        let spec = JobSpec::try_from(t.spec.ok_or_else(|| missing("spec"))?)?;
        let work = match &t.evaluation {
            Some(evaluation) => Work::Evaluation(eval_task_from_wire(evaluation, "evaluation.split")?),
            None => Work::Gradient {
                task: Task {
                    step: t.step,
                    role: role_from_wire(t.role)?,
                    shard: t.shard,
                    num_shards: t.num_shards,
                    noise_seed: t.noise_seed,
                    sigma: t.sigma,
                },
                returns_buffers: t.returns_buffers,
            },
        };
        Ok(LeasedTask {
            lease_id: t.lease_id,
            job_id: t.job_id,
            spec,
            work,
            deadline_unix_ms: t.lease_deadline_unix_ms,
            timeout: (t.timeout_ms > 0).then(|| Duration::from_millis(t.timeout_ms)),
        })
    }
}

#[cfg(test)]
mod tests {
    use rwp_spec::GradientEncoding;

    use super::*;

    #[test]
    fn push_messages_and_announced_sizes_convert() {
        use v1::gradient_chunk::Part;
        let header = v1::GradientHeader {
            encoding: v1::GradientEncoding::Bf16 as i32,
            gradient_bytes: 10,
            buffer_bytes: 4,
            ..v1::GradientHeader::default()
        };
        let announced = Announced::try_from(&header).unwrap();
        assert_eq!(announced, Announced { encoding: GradientEncoding::Bf16, gradient_bytes: 10, buffer_bytes: 4 });
        let err = Announced::try_from(&v1::GradientHeader { encoding: 7, ..header.clone() }).unwrap_err();
        assert_eq!(err.to_string(), "encoding: unknown value 7");
        let data = Bytes::from_static(&[1, 2]);
        let message = |part| PushMessage::from(v1::GradientChunk { part });
        assert_eq!(message(Some(Part::Header(header.clone()))), PushMessage::Header(header));
        assert_eq!(message(Some(Part::Data(data.clone()))), PushMessage::Data(data));
        assert_eq!(message(None), PushMessage::Empty);
    }

    #[test]
    fn roles_round_trip() {
        for r in [Role::Clean, Role::Perturbed, Role::Sam] {
            assert_eq!(role_from_wire(v1::Role::from(r).into()).unwrap(), r);
        }
        assert_eq!(role_from_wire(0).unwrap_err().to_string(), "role: must be set");
    }

    #[test]
    fn push_headers_round_trip() {
        let header = PushHeader {
            worker_id: "w-1".into(),
            lease_id: "l-7".into(),
            job_id: "job-1".into(),
            step: 4,
            role: Role::Perturbed,
            shard: 1,
            weights_version: 4,
            loss: 1.25,
            accuracy: 0.5,
            announced: Announced { encoding: GradientEncoding::Bf16, gradient_bytes: 10, buffer_bytes: 0 },
            skipped: vec!["train/cat/x.jpg: not a JPEG".into()],
        };
        let wire = v1::GradientHeader::from(header.clone());
        assert_eq!(PushHeader::try_from(wire.clone()).unwrap(), header);
        assert_eq!(Announced::try_from(&wire).unwrap(), header.announced);
        let err = PushHeader::try_from(v1::GradientHeader { role: 0, encoding: 7, ..wire.clone() }).unwrap_err();
        assert_eq!(err.to_string(), "role: must be set", "the role is checked first");
        let err = PushHeader::try_from(v1::GradientHeader { encoding: 7, ..wire }).unwrap_err();
        assert_eq!(err.to_string(), "encoding: unknown value 7");
    }

    #[test]
    fn leased_tasks_round_trip() {
        let spec = JobSpec::reference(rwp_spec::Method::MArwp);
        let task = Task { step: 3, role: Role::Perturbed, shard: 1, num_shards: 2, noise_seed: Some(99), sigma: 0.01 };
        let leased = LeasedTask {
            lease_id: "l-1".into(),
            job_id: "job-1".into(),
            spec,
            work: Work::Gradient { task, returns_buffers: true },
            deadline_unix_ms: 1_700_000_000_000,
            timeout: Some(Duration::from_millis(1500)),
        };
        let wire = v1::Task::from(leased.clone());
        assert_eq!(wire.timeout_ms, 1500);
        assert_eq!(wire.evaluation, None);
        assert_eq!(LeasedTask::try_from(wire.clone()).unwrap(), leased);
        let unlimited = LeasedTask { timeout: None, ..leased.clone() };
        assert_eq!(v1::Task::from(unlimited.clone()).timeout_ms, 0);
        assert_eq!(LeasedTask::try_from(v1::Task::from(unlimited.clone())).unwrap(), unlimited);

        let err = LeasedTask::try_from(v1::Task { spec: None, ..wire.clone() }).unwrap_err();
        assert_eq!(err.to_string(), "spec: must be set");
        let err = LeasedTask::try_from(v1::Task { role: 9, ..wire.clone() }).unwrap_err();
        assert_eq!(err.to_string(), "role: unknown value 9");
        let mut bad_spec = wire;
        bad_spec.spec.as_mut().unwrap().method = 0;
        assert_eq!(LeasedTask::try_from(bad_spec).unwrap_err().field, "spec.method");

        let task = EvalTask { version: 12, split: EvalSplit::Validation, shard: 1, num_shards: 3 };
        let evaluation = LeasedTask { work: Work::Evaluation(task), ..leased };
        let wire = v1::Task::from(evaluation.clone());
        assert_eq!((wire.step, wire.role), (12, 0), "an evaluation task has no role");
        assert_eq!(LeasedTask::try_from(wire.clone()).unwrap(), evaluation);
        let mut bad_split = wire;
        bad_split.evaluation.as_mut().unwrap().split = 0;
        assert_eq!(LeasedTask::try_from(bad_split).unwrap_err().to_string(), "evaluation.split: must be set");
    }

    #[test]
    fn evaluation_pushes_round_trip_exactly() {
        let push = EvalPush {
            worker_id: "w-1".into(),
            lease_id: "l-2".into(),
            job_id: "job-1".into(),
            task: EvalTask { version: 4, split: EvalSplit::Test, shard: 0, num_shards: 2 },
            batches: vec![
                BatchEval { loss_sum: 0.1 + 0.2, correct: 17.0, samples: 500 },
                BatchEval { loss_sum: f64::MIN_POSITIVE, correct: 0.0, samples: 3 },
            ],
            skipped: vec!["test/dog/y.png: truncated".into()],
        };
        let wire = v1::PushEvaluationRequest::from(push.clone());
        let back = EvalPush::try_from(wire.clone()).unwrap();
        assert_eq!(back, push);
        assert_eq!(back.batches[0].loss_sum.to_bits(), (0.1f64 + 0.2).to_bits());
        let err = EvalPush::try_from(v1::PushEvaluationRequest { task: None, ..wire.clone() }).unwrap_err();
        assert_eq!(err.to_string(), "task: must be set");
        let mut bad = wire;
        bad.task.as_mut().unwrap().split = 5;
        assert_eq!(EvalPush::try_from(bad).unwrap_err().to_string(), "task.split: unknown value 5");
    }
}
