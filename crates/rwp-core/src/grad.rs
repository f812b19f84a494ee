//! The gradient tasks of one shard. Each is a pure function of (model, weights,
//! buffers, batch, task parameters): no state is kept between calls, so any
//! worker can run any task.

use tch::{Kind, Tensor};

use crate::data::Batch;
use crate::model::{BnMode, Model};
use crate::perturb::{perturbation, Noise};

/// What a worker sends back for one shard.
#[derive(Debug)]
pub struct ShardGradient {
    /// One gradient per parameter, in parameter order.
    pub grads: Vec<Tensor>,
    /// Mean cross-entropy of the shard (for SAM: at `w`).
    pub loss: f64,
    /// Fraction of the shard classified correctly (for SAM: at `w`).
    pub accuracy: f64,
    /// BatchNorm running statistics after this shard's forward pass, when the
    /// task is one whose statistics the update keeps.
    pub buffers: Option<Vec<Tensor>>,
}

struct Pass {
    grads: Vec<Tensor>,
    loss: f64,
    accuracy: f64,
}

fn loss_and_grads(model: &Model, weights: &[Tensor], buffers: &[Tensor], batch: &Batch, bn: BnMode) -> Pass {
    let leaves = model.leaves(weights);
    let logits = model.forward(&leaves, buffers, &batch.images, bn);
    let loss = logits.cross_entropy_for_logits(&batch.labels);
    let grads = Tensor::run_backward(&[&loss], &leaves, false, false);
    let accuracy =
        tch::no_grad(|| logits.argmax(-1, false).eq_tensor(&batch.labels).to_kind(Kind::Double).mean(Kind::Double));
    Pass { grads, loss: loss.double_value(&[]), accuracy: accuracy.double_value(&[]) }
}

fn copies(tensors: &[Tensor]) -> Vec<Tensor> {
    tensors.iter().map(Tensor::copy).collect()
}

/// `∇L_{B_c}(w)` on a clean shard; the running statistics are updated on a
/// copy of `buffers` and returned.
#[must_use]
pub fn clean_gradient(model: &Model, weights: &[Tensor], buffers: &[Tensor], batch: &Batch) -> ShardGradient {
    let updated = copies(buffers);
    let pass = loss_and_grads(model, weights, &updated, batch, BnMode::Train);
    ShardGradient { grads: pass.grads, loss: pass.loss, accuracy: pass.accuracy, buffers: Some(updated) }
}

/// `∇L_{B_p}(w + ε)` on a perturbed shard. ε is drawn, added for this pass
/// only and dropped: `weights` are not touched. Running statistics are left
/// alone unless `keep_bn_stats` (methods with no clean pass), in which case
/// the updated copies are returned.
#[must_use]
pub fn perturbed_gradient(
    model: &Model,
    weights: &[Tensor],
    buffers: &[Tensor],
    batch: &Batch,
    noise: &Noise<'_>,
    keep_bn_stats: bool,
) -> ShardGradient {
    let eps = perturbation(weights, noise);
    let perturbed: Vec<Tensor> = tch::no_grad(|| weights.iter().zip(&eps).map(|(w, e)| w + e).collect());
    drop(eps);
    if keep_bn_stats {
        let updated = copies(buffers);
        let pass = loss_and_grads(model, &perturbed, &updated, batch, BnMode::Train);
        ShardGradient { grads: pass.grads, loss: pass.loss, accuracy: pass.accuracy, buffers: Some(updated) }
    } else {
        let pass = loss_and_grads(model, &perturbed, buffers, batch, BnMode::BatchStats);
        ShardGradient { grads: pass.grads, loss: pass.loss, accuracy: pass.accuracy, buffers: None }
    }
}

/// SAM on one shard: `g₁ = ∇L_B(w)` (updating running statistics on a copy),
/// `e = g₁ · (ρ / (‖g₁‖₂ + 1e-12))` with the global norm taken as the norm of
/// the per-tensor norms (computed in double precision on the host), then
/// `∇L_B(w + e)` with batch statistics only.
#[must_use]
pub fn sam_gradient(model: &Model, weights: &[Tensor], buffers: &[Tensor], batch: &Batch, rho: f64) -> ShardGradient {
    let updated = copies(buffers);
    let first = loss_and_grads(model, weights, &updated, batch, BnMode::Train);
    let ascent: Vec<Tensor> = tch::no_grad(|| {
        let norms: Vec<Tensor> = first.grads.iter().map(Tensor::norm).collect();
        let global = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let scale = rho / (global + 1e-12);
        weights.iter().zip(&first.grads).map(|(w, g)| w + g * scale).collect()
    });
    let second = loss_and_grads(model, &ascent, buffers, batch, BnMode::BatchStats);
    ShardGradient { grads: second.grads, loss: first.loss, accuracy: first.accuracy, buffers: Some(updated) }
}

/// Runs one task of the plan on its batch: the single entry point a worker
/// (or the local trainer) needs.
#[must_use]
pub fn compute_task(
    spec: &rwp_spec::JobSpec,
    model: &Model,
    weights: &[Tensor],
    buffers: &[Tensor],
    task: &rwp_spec::Task,
    batch: &Batch,
    factors: Option<&crate::perturb::RowFactors>,
) -> ShardGradient {
    match task.role {
        rwp_spec::Role::Clean => clean_gradient(model, weights, buffers, batch),
        rwp_spec::Role::Sam => sam_gradient(model, weights, buffers, batch, spec.rho),
        rwp_spec::Role::Perturbed => {
            let noise = Noise {
                seed: task.noise_seed.expect("perturbed tasks carry a noise seed"),
                sigma: task.sigma,
                factors,
            };
            perturbed_gradient(model, weights, buffers, batch, &noise, spec.method.bn_stats_from_perturbed())
        }
    }
}
