//! Aggregation of shard results and the update (docs/algorithms.md, "The
//! methods", "Shards and aggregation", "The SGD step", "BatchNorm running
//! statistics").
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
            if !all_finite(g) {
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

/// Whether `t` holds no NaN and no ±∞: its minimum and maximum are finite
/// (both propagate NaN). One reduction pass and no temporaries, where
/// `isfinite().all()` allocates three tensors the size of `t`.
fn all_finite(t: &Tensor) -> bool {
    if t.numel() == 0 {
        return true;
    }
    let (min, max) = t.aminmax(None::<i64>, false);
    min.double_value(&[]).is_finite() && max.double_value(&[]).is_finite()
}

/// Mean over shards, in shard order. A single shard is its own mean (`x / 1`
/// is `x`, bit for bit), so it is not copied.
fn shard_mean<'a>(mut tensors: impl Iterator<Item = &'a Tensor>, count: usize) -> Tensor {
    let first = tensors.next().expect("at least one shard").shallow_clone();
    if count == 1 {
        return first;
    }
    tensors.fold(first, |acc, t| acc + t) / count as f64
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

    // One parameter at a time, every step of the update: the temporaries are
    // the size of one tensor (reused by the allocator and warm in cache)
    // rather than of the whole model. Updates in place (`a *= x`, `a += b`)
    // give the same bits as the out-of-place expressions of the fixed order
    // above: the same kernels, and `+` is commutative in IEEE arithmetic.
    let adaptive = method.is_adaptive();
    let mut history = state.history.take();
    let mut momentum = if spec.momentum > 0.0 { Some(state.momentum.take()) } else { None };
    let mut new_history = Vec::new();
    let mut new_momentum = Vec::new();
    for (i, w) in state.weights.iter_mut().enumerate() {
        let mean = |shards: &[ShardGradient]| shard_mean(shards.iter().map(|s| &s.grads[i]), shards.len());
        let clean = (clean_expected > 0).then(|| mean(&results.clean));
        let perturbed = (perturbed_expected > 0).then(|| mean(&results.perturbed));
        let g = match (clean, &perturbed) {
            (Some(gc), None) => gc,
            (None, Some(gp)) => gp.shallow_clone(),
            (Some(gc), Some(gp)) => {
                let mut g = gc * (1.0 - spec.lambda);
                g += gp * spec.lambda;
                g
            }
            (None, None) => unreachable!("every method has clean or perturbed shards"),
        };

        if adaptive {
            let gp = perturbed.as_ref().expect("adaptive methods have perturbed shards");
            new_history.push(match history.as_mut() {
                None => gp * gp,
                Some(previous) => {
                    let mut f = std::mem::replace(&mut previous[i], Tensor::new());
                    f *= spec.beta;
                    f += gp * gp;
                    f
                }
            });
        }

        let mut direction = &*w * spec.weight_decay;
        direction += &g;
        if let Some(previous) = momentum.as_mut() {
            let buffer = match previous {
                None => direction.copy(),
                Some(buffers) => {
                    let mut buffer = std::mem::replace(&mut buffers[i], Tensor::new());
                    buffer *= spec.momentum;
                    buffer += &direction;
                    buffer
                }
            };
            if spec.nesterov {
                direction += &buffer * spec.momentum;
            } else {
                direction = buffer.shallow_clone();
            }
            new_momentum.push(buffer);
        }
        *w -= direction * lr;
    }
    if adaptive {
        state.history = Some(new_history);
    }
    if momentum.is_some() {
        state.momentum = Some(new_momentum);
    }

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

#[cfg(test)]
mod tests {
    use rwp_spec::ModelKind;
    use tch::{Device, Kind};

    use super::*;
    use crate::model::InputShape;

    /// The update written tensor-list by tensor-list, out of place, exactly as
    /// the fixed order in the module documentation reads.
    fn reference_update(spec: &JobSpec, lr: f64, state: &mut TrainState, results: &StepResults) {
        let mean = |shards: &[ShardGradient], i: usize| {
            let first = shards[0].grads[i].shallow_clone();
            shards[1..].iter().fold(first, |acc, s| acc + &s.grads[i]) / shards.len() as f64
        };
        let n = state.weights.len();
        let clean: Option<Vec<Tensor>> =
            (!results.clean.is_empty()).then(|| (0..n).map(|i| mean(&results.clean, i)).collect());
        let perturbed: Option<Vec<Tensor>> =
            (!results.perturbed.is_empty()).then(|| (0..n).map(|i| mean(&results.perturbed, i)).collect());
        let grads: Vec<Tensor> = match (&clean, &perturbed) {
            (Some(c), None) => c.iter().map(Tensor::shallow_clone).collect(),
            (None, Some(p)) => p.iter().map(Tensor::shallow_clone).collect(),
            (Some(c), Some(p)) => c.iter().zip(p).map(|(gc, gp)| gc * (1.0 - spec.lambda) + gp * spec.lambda).collect(),
            (None, None) => unreachable!(),
        };
        if spec.method.is_adaptive() {
            let gp = perturbed.as_ref().unwrap();
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
    }

    fn shard(model: &Model, seed: i64, buffers: bool) -> ShardGradient {
        let grads = crate::torch_rng::with_seed(seed as u64, || {
            model.params().iter().map(|p| Tensor::randn(p.shape.as_slice(), (Kind::Float, Device::Cpu))).collect()
        });
        let buffers = buffers.then(|| model.init(0, Device::Cpu).1);
        ShardGradient { grads, loss: 1.0, accuracy: 0.5, buffers }
    }

    fn same(a: &[Tensor], b: &[Tensor]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.equal(y))
    }

    #[test]
    fn the_update_matches_the_fixed_order_bit_for_bit() {
        let model = Model::new(ModelKind::SmallCnn, InputShape { channels: 3, height: 16, width: 16 }, 10);
        let mut cases = Vec::new();
        for method in Method::ALL {
            for (shards, momentum, nesterov) in [(1, 0.9, false), (2, 0.9, true), (3, 0.0, false)] {
                let mut spec = JobSpec::reference(method);
                spec.clean_shards = shards;
                spec.perturbed_shards = shards;
                spec.batch_size = 6;
                spec.momentum = momentum;
                spec.nesterov = nesterov;
                cases.push(spec);
            }
        }
        for spec in cases {
            let schedule = Schedule::new(&spec, 600).unwrap();
            let (weights, buffers) = model.init(1, Device::Cpu);
            let mut ours = TrainState::new(weights.iter().map(Tensor::copy).collect(), buffers);
            let mut reference = TrainState::new(weights, Vec::new());
            let uses_clean = spec.method.uses_clean() || spec.method == Method::Sam;
            for step in 0..3i64 {
                // Drawn once and copied: the generator is global to the
                // process, and tests running beside this one draw from it.
                let results = StepResults {
                    clean: (0..spec.clean_shards as i64)
                        .filter(|_| uses_clean)
                        .map(|k| shard(&model, 100 * step + k, true))
                        .collect(),
                    perturbed: (0..spec.perturbed_shards as i64)
                        .filter(|_| spec.method.uses_perturbed())
                        .map(|k| shard(&model, 100 * step + 50 + k, spec.method.bn_stats_from_perturbed()))
                        .collect(),
                };
                let copy = |shards: &[ShardGradient]| -> Vec<ShardGradient> {
                    shards
                        .iter()
                        .map(|s| ShardGradient {
                            grads: s.grads.iter().map(Tensor::copy).collect(),
                            loss: s.loss,
                            accuracy: s.accuracy,
                            buffers: s.buffers.as_ref().map(|b| b.iter().map(Tensor::copy).collect()),
                        })
                        .collect()
                };
                let again = StepResults { clean: copy(&results.clean), perturbed: copy(&results.perturbed) };
                let lr = schedule.lr_at(ours.step);
                tch::no_grad(|| reference_update(&spec, lr, &mut reference, &again));
                apply_update(&spec, &schedule, &model, &mut ours, results).unwrap();
                let label =
                    format!("{:?} {} shards, momentum {}, step {step}", spec.method, spec.clean_shards, spec.momentum);
                assert!(same(&ours.weights, &reference.weights), "weights differ: {label}");
                let both = |a: &Option<Vec<Tensor>>, b: &Option<Vec<Tensor>>| match (a, b) {
                    (None, None) => true,
                    (Some(a), Some(b)) => same(a, b),
                    _ => false,
                };
                assert!(both(&ours.momentum, &reference.momentum), "momentum differs: {label}");
                assert!(both(&ours.history, &reference.history), "F differs: {label}");
            }
        }
    }

    #[test]
    fn non_finite_gradients_are_refused_and_leave_the_state_alone() {
        let model = Model::new(ModelKind::SmallCnn, InputShape { channels: 3, height: 16, width: 16 }, 10);
        let spec = JobSpec::reference(Method::MArwp);
        let schedule = Schedule::new(&spec, 1000).unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let (weights, buffers) = model.init(1, Device::Cpu);
            let mut state = TrainState::new(weights.iter().map(Tensor::copy).collect(), buffers);
            let perturbed = shard(&model, 2, false);
            let _ = perturbed.grads[3].get(5).get(1).get(2).fill_(bad);
            let results = StepResults { clean: vec![shard(&model, 1, true)], perturbed: vec![perturbed] };
            let err = apply_update(&spec, &schedule, &model, &mut state, results).unwrap_err();
            assert_eq!(
                err,
                UpdateError::NonFinite { role: Role::Perturbed, shard: 0, param: "conv2.weight".to_owned() }
            );
            assert!(same(&state.weights, &weights) && state.step == 0 && state.momentum.is_none());
        }
    }
}
