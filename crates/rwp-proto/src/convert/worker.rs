//! What the worker API carries: leased tasks, push headers (roles and the
//! announced payload) and the messages of a push stream.

use std::time::Duration;

use bytes::Bytes;
use rwp_spec::payload::{Announced, PushMessage};
use rwp_spec::work::{LeasedTask, PushHeader};
use rwp_spec::{JobSpec, Role, Task};

use super::spec::encoding_from_wire;
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
        })
    }
}

/// The trace context of the task's update travels beside the message (in
/// its metadata), not in it.
impl From<LeasedTask> for v1::Task {
    fn from(l: LeasedTask) -> Self {
        v1::Task {
            lease_id: l.lease_id,
            job_id: l.job_id,
            spec: Some((&l.spec).into()),
            step: l.task.step,
            role: v1::Role::from(l.task.role).into(),
            shard: l.task.shard,
            num_shards: l.task.num_shards,
            noise_seed: l.task.noise_seed,
            sigma: l.task.sigma,
            lease_deadline_unix_ms: l.deadline_unix_ms,
            returns_buffers: l.returns_buffers,
            timeout_ms: l.timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Fields are named as in the `Task` message (`spec`, `spec.method`,
/// `role`); a zero `timeout_ms` is no timeout.
impl TryFrom<v1::Task> for LeasedTask {
    type Error = ConversionError;
    fn try_from(t: v1::Task) -> Result<Self, Self::Error> {
        let spec = JobSpec::try_from(t.spec.ok_or_else(|| missing("spec"))?)?;
        let role = role_from_wire(t.role)?;
        Ok(LeasedTask {
            lease_id: t.lease_id,
            job_id: t.job_id,
            spec,
            task: Task {
                step: t.step,
                role,
                shard: t.shard,
                num_shards: t.num_shards,
                noise_seed: t.noise_seed,
                sigma: t.sigma,
            },
            returns_buffers: t.returns_buffers,
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
            task,
            returns_buffers: true,
            deadline_unix_ms: 1_700_000_000_000,
            timeout: Some(Duration::from_millis(1500)),
        };
        let wire = v1::Task::from(leased.clone());
        assert_eq!(wire.timeout_ms, 1500);
        assert_eq!(LeasedTask::try_from(wire.clone()).unwrap(), leased);
        let unlimited = LeasedTask { timeout: None, ..leased };
        assert_eq!(v1::Task::from(unlimited.clone()).timeout_ms, 0);
        assert_eq!(LeasedTask::try_from(v1::Task::from(unlimited.clone())).unwrap(), unlimited);

        let err = LeasedTask::try_from(v1::Task { spec: None, ..wire.clone() }).unwrap_err();
        assert_eq!(err.to_string(), "spec: must be set");
        let err = LeasedTask::try_from(v1::Task { role: 9, ..wire.clone() }).unwrap_err();
        assert_eq!(err.to_string(), "role: unknown value 9");
        let mut bad_spec = wire;
        bad_spec.spec.as_mut().unwrap().method = 0;
        assert_eq!(LeasedTask::try_from(bad_spec).unwrap_err().field, "spec.method");
    }
}
