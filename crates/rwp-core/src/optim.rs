//! Aggregation of shard results and the update (ALGORITHMS.md, "Methods",
//! "Base optimizer", "Sharding", "BatchNorm running statistics").
//!
//! Floating-point order, fixed so that every implementation gets the same bits:
//! - shard mean: `((g₀ + g₁) + …) / k`, in shard order;
//! - mixing: `g = g_c · (1 − λ) + g_p · λ` (`1 − λ` in double precision);
//! - history: `F = g_p · g_p`, then `F = F · β + g_p · g_p`;
//! - SGD: `d = g + w · wd`; `buf = d` then `buf = buf · μ + d`;
//!   Nesterov `d = d + buf · μ`, else `d = buf`; `w = w − d · lr`.

use rwp_spec::{JobSpec, Method, Role, Schedule};
use tch::Tensor;

use crate::grad::ShardGradient;
use crate::model::Model;
use crate::perturb::RowFactors;

/// Everything the server keeps for a job between updates.
#[derive(Debug)]
pub struct TrainState {
    pub weights: Vec<Tensor>,
    pub buffers: Vec<Tensor>,
    /// SGD momentum buffers; `None` before the first update (or without momentum).
    pub momentum: Option<Vec<Tensor>>,
    /// Adaptive history `F`; `None` before the first update of ARWP / m-ARWP.
    pub history: Option<Vec<Tensor>>,
    /// Updates applied so far; the next update is `step`.
    pub step: u64,
}

impl TrainState {
    #[must_use]
    pub fn new(weights: Vec<Tensor>, buffers: Vec<Tensor>) -> Self {
        Self { weights, buffers, momentum: None, history: None, step: 0 }
    }

    /// The adaptive divisors ε of the next update is scaled by, if any.
    #[must_use]
    pub fn row_factors(&self, spec: &JobSpec) -> Option<RowFactors> {
        if !spec.method.is_adaptive() {
            return None;
        }
        self.history.as_ref().map(|h| tch::no_grad(|| RowFactors::from_history(h, spec.eta)))
    }
}

/// The shard results of one update, each group in shard order.
#[derive(Debug, Default)]
pub struct StepResults {
    /// Clean shards (SAM shards for `sam`).
    pub clean: Vec<ShardGradient>,
    pub perturbed: Vec<ShardGradient>,
}

/// Why shard results were refused. The state is left untouched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    #[error("step {step} needs {expected} {role:?} shard results, got {got}")]
    ShardCount { step: u64, role: Role, expected: usize, got: usize },
    #[error("{role:?} shard {shard}: expected {expected} gradient tensors, got {got}")]
    TensorCount { role: Role, shard: usize, expected: usize, got: usize },
    #[error("{role:?} shard {shard}: gradient of {param} has shape {got:?}, expected {expected:?}")]
    Shape { role: Role, shard: usize, param: String, expected: Vec<i64>, got: Vec<i64> },
    #[error("{role:?} shard {shard}: gradient of {param} holds NaN or infinite values")]
    NonFinite { role: Role, shard: usize, param: String },
    #[error("{role:?} shard {shard}: BatchNorm buffers are missing or malformed")]
    Buffers { role: Role, shard: usize },
}

/// What one update did.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateReport {
    /// The update's index (the state's step before it).
    pub step: u64,
    pub lr: f64,
    pub sigma: f64,
    /// Mean training loss of the clean (or SAM) shards, else of the perturbed ones.
    pub loss: f64,
    pub accuracy: f64,
    /// Mean loss at `w + ε`, for methods with perturbed shards.
    pub perturbed_loss: Option<f64>,
}

fn check(
    model: &Model,
    step: u64,
    role: Role,
    expected: usize,
    shards: &[ShardGradient],
    needs_buffers: bool,
) -> Result<(), UpdateError> {
    if shards.len() != expected {
        return Err(UpdateError::ShardCount { step, role, expected, got: shards.len() });
    }
    let params = model.params();
    for (shard, result) in shards.iter().enumerate() {
        if result.grads.len() != params.len() {
            return Err(UpdateError::TensorCount { role, shard, expected: params.len(), got: result.grads.len() });
        }
        for (g, spec) in result.grads.iter().zip(params) {
            if g.size() != spec.shape {
                return Err(UpdateError::Shape {
                    role,
                    shard,
                    param: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: g.size(),
                });
            }
            if !bool::try_from(g.isfinite().all()).unwrap_or(false) {
                return Err(UpdateError::NonFinite { role, shard, param: spec.name.clone() });
            }
        }
        if needs_buffers {
            let ok = result.buffers.as_ref().is_some_and(|b| {
                b.len() == model.buffers().len() && b.iter().zip(model.buffers()).all(|(t, s)| t.size() == s.shape)
            });
            if !ok {
                return Err(UpdateError::Buffers { role, shard });
            }
        }
    }
    Ok(())
}

/// Mean over shards, in shard order.
fn shard_mean<'a>(mut tensors: impl Iterator<Item = &'a Tensor>, count: usize) -> Tensor {
    let first = tensors.next().expect("at least one shard").shallow_clone();
    tensors.fold(first, |acc, t| acc + t) / count as f64
}

fn mean_grads(shards: &[ShardGradient]) -> Vec<Tensor> {
    (0..shards[0].grads.len()).map(|i| shard_mean(shards.iter().map(|s| &s.grads[i]), shards.len())).collect()
}

fn mean_buffers(shards: &[ShardGradient]) -> Vec<Tensor> {
    let buffers: Vec<&Vec<Tensor>> = shards.iter().filter_map(|s| s.buffers.as_ref()).collect();
    (0..buffers[0].len()).map(|i| shard_mean(buffers.iter().map(|b| &b[i]), buffers.len())).collect()
}

fn mean_of(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

/// Aggregates the shard results of update `state.step` and applies it.
/// Results are checked first; on error nothing in `state` changes.
pub fn apply_update(
    spec: &JobSpec,
    schedule: &Schedule,
    model: &Model,
    state: &mut TrainState,
    results: StepResults,
) -> Result<UpdateReport, UpdateError> {
    let method = spec.method;
    let step = state.step;
    let first_role = if method == Method::Sam { Role::Sam } else { Role::Clean };
    let clean_expected = if method.uses_clean() || method == Method::Sam { spec.clean_shards as usize } else { 0 };
    let perturbed_expected = if method.uses_perturbed() { spec.perturbed_shards as usize } else { 0 };
    check(model, step, first_role, clean_expected, &results.clean, clean_expected > 0)?;
    check(model, step, Role::Perturbed, perturbed_expected, &results.perturbed, method.bn_stats_from_perturbed())?;

    let lr = schedule.lr_at(step);
    let sigma = if method.uses_perturbed() { schedule.sigma_at(step) } else { 0.0 };
    let _no_grad = tch::no_grad_guard();

    let clean = (clean_expected > 0).then(|| mean_grads(&results.clean));
    let perturbed = (perturbed_expected > 0).then(|| mean_grads(&results.perturbed));
    let grads: Vec<Tensor> = match (&clean, &perturbed) {
        (Some(c), None) => c.iter().map(Tensor::shallow_clone).collect(),
        (None, Some(p)) => p.iter().map(Tensor::shallow_clone).collect(),
        (Some(c), Some(p)) => c.iter().zip(p).map(|(gc, gp)| gc * (1.0 - spec.lambda) + gp * spec.lambda).collect(),
        (None, None) => unreachable!("every method has clean or perturbed shards"),
    };

    if method.is_adaptive() {
        let gp = perturbed.as_ref().expect("adaptive methods have perturbed shards");
        state.history = Some(match state.history.take() {
            None => gp.iter().map(|g| g * g).collect(),
            Some(f) => f.iter().zip(gp).map(|(f, g)| f * spec.beta + g * g).collect(),
        });
    }

    let mut directions: Vec<Tensor> =
        grads.iter().zip(&state.weights).map(|(g, w)| g + w * spec.weight_decay).collect();
    if spec.momentum > 0.0 {
        let buffers: Vec<Tensor> = match state.momentum.take() {
            None => directions.iter().map(Tensor::copy).collect(),
            Some(bufs) => bufs.iter().zip(&directions).map(|(b, d)| b * spec.momentum + d).collect(),
        };
        directions = if spec.nesterov {
            directions.iter().zip(&buffers).map(|(d, b)| d + b * spec.momentum).collect()
        } else {
            buffers.iter().map(Tensor::shallow_clone).collect()
        };
        state.momentum = Some(buffers);
    }
    state.weights = state.weights.iter().zip(&directions).map(|(w, d)| w - d * lr).collect();

    if clean_expected > 0 {
        state.buffers = mean_buffers(&results.clean);
    } else if method.bn_stats_from_perturbed() {
        state.buffers = mean_buffers(&results.perturbed);
    }
    state.step += 1;

    let (loss, accuracy) = if clean_expected > 0 {
        (mean_of(results.clean.iter().map(|s| s.loss)), mean_of(results.clean.iter().map(|s| s.accuracy)))
    } else {
        (mean_of(results.perturbed.iter().map(|s| s.loss)), mean_of(results.perturbed.iter().map(|s| s.accuracy)))
    };
    let perturbed_loss = (perturbed_expected > 0).then(|| mean_of(results.perturbed.iter().map(|s| s.loss)));
    Ok(UpdateReport { step, lr, sigma, loss, accuracy, perturbed_loss })
}
