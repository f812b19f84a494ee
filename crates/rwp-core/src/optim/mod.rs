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
use tch::{Device, Kind, Tensor};

use crate::grad::ShardGradient;
use crate::model::Model;
use crate::perturb::RowFactors;

mod fused;
mod state;

pub use state::{FlatGroup, TrainState};

impl TrainState {
    /// The adaptive divisors ε of the next update is scaled by, if any.
    #[must_use]
    pub fn row_factors(&self, spec: &JobSpec) -> Option<RowFactors> {
        if !spec.method.is_adaptive() {
            return None;
        }
        self.history().map(|h| tch::no_grad(|| RowFactors::from_history(h, spec.eta)))
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

/// The shard gradients as the CPU update reads them: contiguous float32
/// tensors on the CPU (the given ones, or copies when they are not).
struct CpuGradients {
    clean: Vec<Vec<Tensor>>,
    perturbed: Vec<Vec<Tensor>>,
}

impl CpuGradients {
    fn of(results: &StepResults) -> Self {
        let plain = |t: &Tensor| {
            if t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() {
                t.shallow_clone()
            } else {
                t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous()
            }
        };
        let group = |shards: &[ShardGradient]| shards.iter().map(|s| s.grads.iter().map(plain).collect()).collect();
        Self { clean: group(&results.clean), perturbed: group(&results.perturbed) }
    }

    fn slice(t: &Tensor) -> &[f32] {
        state::cpu_f32_slice(t)
    }

    /// The gradients of parameter `i`, shard by shard.
    fn param(shards: &[Vec<Tensor>], i: usize) -> Vec<&[f32]> {
        shards.iter().map(|s| Self::slice(&s[i])).collect()
    }
}

/// Which gradients are finite, worked out on `threads` threads: by role
/// (clean, perturbed), shard and parameter. Tensors of the wrong shape are
/// not looked at (the shape check reports them first).
fn finite_flags(model: &Model, results: &StepResults, cpu: &CpuGradients, threads: usize) -> [Vec<Vec<bool>>; 2] {
    let params = model.params();
    let mut jobs = Vec::new();
    let mut flags: [Vec<Vec<bool>>; 2] = Default::default();
    for (role, (shards, tensors)) in
        [(&results.clean, &cpu.clean), (&results.perturbed, &cpu.perturbed)].into_iter().enumerate()
    {
        for (shard, (result, cpu_shard)) in shards.iter().zip(tensors).enumerate() {
            flags[role].push(vec![true; result.grads.len()]);
            for (i, (g, spec)) in result.grads.iter().zip(params).enumerate() {
                if g.size() == spec.shape {
                    jobs.push(((role, shard, i), CpuGradients::slice(&cpu_shard[i])));
                }
            }
        }
    }
    let size = jobs.iter().map(|(_, s)| s.len()).sum();
    let found = std::sync::Mutex::new(Vec::new());
    fused::for_each_parallel(threads, size, jobs, |(at, values)| {
        if !fused::all_finite(values) {
            found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(at);
        }
    });
    for (role, shard, i) in found.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        flags[role][shard][i] = false;
    }
    flags
}

fn check(
    model: &Model,
    step: u64,
    role: Role,
    expected: usize,
    shards: &[ShardGradient],
    finite: &[Vec<bool>],
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
        for (i, (g, spec)) in result.grads.iter().zip(params).enumerate() {
            if g.size() != spec.shape {
                return Err(UpdateError::Shape {
                    role,
                    shard,
                    param: spec.name.clone(),
                    expected: spec.shape.clone(),
                    got: g.size(),
                });
            }
            if !finite[shard][i] {
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

/// Mean over shards, in shard order. A single shard is its own mean (`x / 1`
/// is `x`, bit for bit), so it is not copied.
fn shard_mean<'a>(mut tensors: impl Iterator<Item = &'a Tensor>, count: usize) -> Tensor {
    let first = tensors.next().expect("at least one shard").shallow_clone();
    if count == 1 {
        return first;
    }
    tensors.fold(first, |acc, t| acc + t) / count as f64
}

fn mean_of(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

/// What the update needs to know besides the shard results.
struct Plan {
    clean: bool,
    perturbed: bool,
    coefficients: fused::Coefficients,
}

/// One shard's result as it arrives over the network: its gradient payload
/// (in the job's encoding) and its BatchNorm buffer payload, as
/// [`crate::wire`] lays them out.
#[derive(Debug)]
pub struct ShardPayload<'a> {
    pub gradient: &'a [u8],
    pub buffers: Option<&'a [u8]>,
    pub loss: f64,
    pub accuracy: f64,
}

/// The shard payloads of one update, each group in shard order.
#[derive(Debug, Default)]
pub struct StepPayloads<'a> {
    /// Clean shards (SAM shards for `sam`).
    pub clean: Vec<ShardPayload<'a>>,
    pub perturbed: Vec<ShardPayload<'a>>,
}

/// Why shard payloads were refused. The state is left untouched.
#[derive(Debug, thiserror::Error)]
pub enum PayloadUpdateError {
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
    #[error(transparent)]
    Update(#[from] UpdateError),
}

/// Whether the update looks for NaN and ±∞ in the gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finiteness {
    /// Scan every gradient first (a read of each: on 11 M parameters, a
    /// quarter of the update's time).
    Check,
    /// The payloads were scanned as they arrived
    /// (`rwp_spec::payload::Layout::check_finite`, as the server does for
    /// every push, while the bytes are still in cache).
    CheckedOnArrival,
}

/// [`apply_update`] on shard results still in their wire bytes (each group
/// in shard order). Float32 gradients are read where they lie, without a
/// copy (a state on a GPU gets each payload in one host-to-device copy);
/// bfloat16 ones are widened first.
pub fn apply_payloads(
    spec: &JobSpec,
    schedule: &Schedule,
    model: &Model,
    state: &mut TrainState,
    payloads: &StepPayloads<'_>,
    threads: usize,
    finiteness: Finiteness,
) -> Result<UpdateReport, PayloadUpdateError> {
    let encoding = spec.gradient_encoding;
    let device = state.flat_weights().flat().device();
    // A float32 payload is read where it lies as one tensor (on a GPU state,
    // copied to the device once, as one block), and viewed per parameter.
    let flat_f32 = |bytes: &[u8]| -> Option<Vec<Tensor>> {
        if encoding != rwp_spec::GradientEncoding::F32 {
            return None;
        }
        let flat = state::borrowed_f32_tensor(bytes, &[(bytes.len() / 4) as i64])?;
        let flat = if device == Device::Cpu { flat } else { flat.to_device(device) };
        let mut offset = 0;
        let views = model
            .params()
            .iter()
            .map(|p| {
                let view = flat.narrow(0, offset, p.numel()).view(p.shape.as_slice());
                offset += p.numel();
                view
            })
            .collect();
        Some(views)
    };
    let decode = |shards: &[ShardPayload<'_>]| -> Result<Vec<ShardGradient>, crate::wire::WireError> {
        shards
            .iter()
            .map(|shard| {
                let expected = crate::wire::gradient_len(model, encoding);
                if shard.gradient.len() != expected {
                    return Err(crate::wire::WireError::ByteCount {
                        what: "gradient payload",
                        expected,
                        got: shard.gradient.len(),
                    });
                }
                let grads = match flat_f32(shard.gradient) {
                    Some(grads) => grads,
                    None => crate::wire::decode_gradients(model, shard.gradient, encoding, device)?,
                };
                let buffers = shard.buffers.map(|b| crate::wire::decode_buffers(model, b, device)).transpose()?;
                Ok(ShardGradient { grads, loss: shard.loss, accuracy: shard.accuracy, buffers })
            })
            .collect()
    };
    let results = StepResults { clean: decode(&payloads.clean)?, perturbed: decode(&payloads.perturbed)? };
    // `apply_update` keeps nothing of the results (it copies the buffers it
    // keeps), so the tensors over the payloads end with this call.
    Ok(apply(spec, schedule, model, state, results, threads, finiteness)?)
}

/// Aggregates the shard results of update `state.step` and applies it.
/// Results are checked first; on error nothing in `state` changes.
///
/// On the CPU the elementwise work runs on up to `threads` threads (the
/// bits do not depend on how many); elsewhere it is libtorch's.
pub fn apply_update(
    spec: &JobSpec,
    schedule: &Schedule,
    model: &Model,
    state: &mut TrainState,
    results: StepResults,
    threads: usize,
) -> Result<UpdateReport, UpdateError> {
    apply(spec, schedule, model, state, results, threads, Finiteness::Check)
}

fn apply(
    spec: &JobSpec,
    schedule: &Schedule,
    model: &Model,
    state: &mut TrainState,
    results: StepResults,
    threads: usize,
    finiteness: Finiteness,
) -> Result<UpdateReport, UpdateError> {
    let method = spec.method;
    let step = state.step;
    let first_role = if method == Method::Sam { Role::Sam } else { Role::Clean };
    let clean_expected = if method.uses_clean() || method == Method::Sam { spec.clean_shards as usize } else { 0 };
    let perturbed_expected = if method.uses_perturbed() { spec.perturbed_shards as usize } else { 0 };
    let on_cpu = state.weights().first().is_none_or(|w| w.device() == Device::Cpu);
    let cpu = on_cpu.then(|| CpuGradients::of(&results));
    let [clean_finite, perturbed_finite] = match &cpu {
        _ if finiteness == Finiteness::CheckedOnArrival => {
            let flags = |shards: &[ShardGradient]| -> Vec<Vec<bool>> {
                shards.iter().map(|s| vec![true; s.grads.len()]).collect()
            };
            [flags(&results.clean), flags(&results.perturbed)]
        }
        Some(cpu) => finite_flags(model, &results, cpu, threads),
        None => {
            let flags = |shards: &[ShardGradient]| -> Vec<Vec<bool>> {
                shards.iter().map(|s| s.grads.iter().map(all_finite).collect()).collect()
            };
            [flags(&results.clean), flags(&results.perturbed)]
        }
    };
    check(model, step, first_role, clean_expected, &results.clean, &clean_finite, clean_expected > 0)?;
    check(
        model,
        step,
        Role::Perturbed,
        perturbed_expected,
        &results.perturbed,
        &perturbed_finite,
        method.bn_stats_from_perturbed(),
    )?;

    let lr = schedule.lr_at(step);
    let sigma = if method.uses_perturbed() { schedule.sigma_at(step) } else { 0.0 };
    let _no_grad = tch::no_grad_guard();
    let adaptive = method.is_adaptive();
    let has_momentum = spec.momentum > 0.0;
    let new_history = adaptive && state.history().is_none();
    let new_momentum = has_momentum && state.momentum().is_none();
    if adaptive {
        state.history_or_new();
    }
    if has_momentum {
        state.momentum_or_new();
    }
    let plan = Plan {
        clean: clean_expected > 0,
        perturbed: perturbed_expected > 0,
        // float32, as ATen casts a double scalar for a float32 tensor.
        coefficients: fused::Coefficients {
            mix: (clean_expected > 0 && perturbed_expected > 0)
                .then_some(((1.0 - spec.lambda) as f32, spec.lambda as f32)),
            beta: spec.beta as f32,
            weight_decay: spec.weight_decay as f32,
            momentum: has_momentum.then_some(spec.momentum as f32),
            nesterov: spec.nesterov,
            lr: lr as f32,
            adaptive,
            new_momentum,
        },
    };
    match &cpu {
        Some(cpu) => update_cpu(state, cpu, &plan, threads),
        None => update_tensors(spec, state, &results, &plan, lr, new_momentum, new_history),
    }

    let buffers_from = if clean_expected > 0 {
        Some(&results.clean)
    } else if method.bn_stats_from_perturbed() {
        Some(&results.perturbed)
    } else {
        None
    };
    if let Some(shards) = buffers_from {
        let shard_buffers: Vec<&Vec<Tensor>> = shards.iter().filter_map(|s| s.buffers.as_ref()).collect();
        for (i, view) in state.buffers().iter().enumerate() {
            let mean = shard_mean(shard_buffers.iter().map(|b| &b[i]), shard_buffers.len());
            view.shallow_clone().copy_(&mean);
        }
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

/// The update in one pass over memory, on up to `threads` threads.
fn update_cpu(state: &mut TrainState, cpu: &CpuGradients, plan: &Plan, threads: usize) {
    let size = state.flat_weights().flat().numel();
    let slices = state.slices_mut().expect("a CPU state");
    let mut momentum = slices.momentum.map(Vec::into_iter);
    let mut history = slices.history.map(Vec::into_iter);
    let mut units = Vec::new();
    for (i, w) in slices.weights.into_iter().enumerate() {
        let clean = if plan.clean { CpuGradients::param(&cpu.clean, i) } else { Vec::new() };
        let perturbed = if plan.perturbed { CpuGradients::param(&cpu.perturbed, i) } else { Vec::new() };
        let m = momentum.as_mut().map(|m| m.next().expect("one buffer per parameter"));
        let h = history.as_mut().map(|h| h.next().expect("one F per parameter"));
        fused::units(w, m, h, &clean, &perturbed, &mut units);
    }
    let coefficients = plan.coefficients;
    fused::for_each_parallel(threads, size, units, |unit| fused::update(unit, &coefficients));
}

/// The update with libtorch's operations, one parameter at a time (state on
/// a GPU). In place on the state's views: `a *= x`, `a += b` give the same
/// bits as the out-of-place expressions of the fixed order, and `+` is
/// commutative in IEEE arithmetic.
fn update_tensors(
    spec: &JobSpec,
    state: &mut TrainState,
    results: &StepResults,
    plan: &Plan,
    lr: f64,
    new_momentum: bool,
    new_history: bool,
) {
    let weights: Vec<Tensor> = state.weights().iter().map(Tensor::shallow_clone).collect();
    let momentum: Option<Vec<Tensor>> = state.momentum().map(|m| m.iter().map(Tensor::shallow_clone).collect());
    let history: Option<Vec<Tensor>> = state.history().map(|h| h.iter().map(Tensor::shallow_clone).collect());
    for (i, mut w) in weights.into_iter().enumerate() {
        let mean = |shards: &[ShardGradient]| shard_mean(shards.iter().map(|s| &s.grads[i]), shards.len());
        let clean = plan.clean.then(|| mean(&results.clean));
        let perturbed = plan.perturbed.then(|| mean(&results.perturbed));
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
        if let Some(history) = &history {
            let gp = perturbed.as_ref().expect("adaptive methods have perturbed shards");
            let mut f = history[i].shallow_clone();
            if new_history {
                f.copy_(&(gp * gp));
            } else {
                f *= spec.beta;
                f += gp * gp;
            }
        }
        let mut direction = &w * spec.weight_decay;
        direction += &g;
        if let Some(momentum) = &momentum {
            let mut buffer = momentum[i].shallow_clone();
            if new_momentum {
                buffer.copy_(&direction);
            } else {
                buffer *= spec.momentum;
                buffer += &direction;
            }
            if spec.nesterov {
                direction += &buffer * spec.momentum;
            } else {
                direction = buffer;
            }
        }
        w -= direction * lr;
    }
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

#[cfg(test)]
mod tests;
