//! Tasks of built-in models, computed on the compute thread itself.

use std::time::{Duration, Instant};

use rwp_core::grad::compute_task;
use rwp_core::model::Model;
use rwp_core::trainer::evaluate_batch;
use rwp_core::wire::{self, Snapshot};
use rwp_spec::work::Work;
use rwp_spec::JobSpec;
use tch::Device;
use tracing::debug;

use crate::compute::{Computed, GradientOutput, Loaded};
use crate::slots::WeightSlots;
use crate::WorkerError;

/// Computes `work` on `loaded`, its batches, with the weights version it
/// names, installing `snapshot` (that version's bytes) first when given;
/// returns the result, the time it took and the spent snapshot buffer.
pub(crate) fn compute(
    spec: &JobSpec,
    model: &Model,
    weights: &mut WeightSlots<Snapshot>,
    work: &Work,
    loaded: &Loaded,
    snapshot: Option<Vec<u8>>,
    device: Device,
) -> Result<(Computed, Duration, Option<Vec<u8>>), WorkerError> {
    let version = work.version();
    let (slot, _) = weights.slot_for(version);
    let spent_snapshot = match snapshot {
        Some(bytes) => {
            let decoded = wire::decode_snapshot(&bytes, model, device)?;
            debug!(version, slot, factors = decoded.factors.is_some(), "weights installed");
            weights.put(slot, version, decoded);
            Some(bytes)
        }
        None => None,
    };
    let held = weights.slot_for(version);
    let weights = match held {
        (slot, true) => weights.touch(slot).expect("held"),
        _ => return Err(WorkerError::Compute(format!("weights version {version} is not loaded"))),
    };
    let started = Instant::now();
    let computed = match (work, loaded) {
        (Work::Gradient { task, returns_buffers }, Loaded::Gradient(batch)) => {
            let batch = batch.to_device(device);
            let result =
                compute_task(spec, model, &weights.weights, &weights.buffers, task, &batch, weights.factors.as_ref());
            let mut payload = wire::encode_gradients(&result.grads, spec.gradient_encoding);
            let gradient_bytes = payload.len() as u64;
            let buffer_bytes = if *returns_buffers {
                let Some(buffers) = result.buffers.as_ref() else {
                    return Err(WorkerError::Compute(format!(
                        "bug: a {:?} task must return BatchNorm buffers but its result has none",
                        task.role
                    )));
                };
                let bytes = wire::encode_buffers(buffers);
                payload.extend_from_slice(&bytes);
                bytes.len() as u64
            } else {
                0
            };
            debug!(loss = result.loss, accuracy = result.accuracy, samples = batch.len(), "computed");
            Computed::Gradient(GradientOutput {
                payload,
                gradient_bytes,
                buffer_bytes,
                loss: result.loss,
                accuracy: result.accuracy,
            })
        }
        (Work::Evaluation(_), Loaded::Evaluation(batches)) => {
            let results: Vec<_> = batches
                .iter()
                .map(|batch| evaluate_batch(model, &batch.to_device(device), &weights.weights, &weights.buffers))
                .collect();
            debug!(batches = results.len(), "evaluated");
            Computed::Evaluation(results)
        }
        _ => return Err(WorkerError::Compute("bug: batches of another kind of task".to_owned())),
    };
    Ok((computed, started.elapsed(), spent_snapshot))
}
