use rwp_spec::ModelKind;
use tch::{Device, Kind};

use super::*;
use crate::model::InputShape;

/// The state as the reference update keeps it: plain tensors.
struct Reference {
    weights: Vec<Tensor>,
    momentum: Option<Vec<Tensor>>,
    history: Option<Vec<Tensor>>,
}

/// The update written tensor-list by tensor-list with libtorch, out of
/// place, exactly as the fixed order in the module documentation reads.
fn reference_update(spec: &JobSpec, lr: f64, state: &mut Reference, results: &StepResults) {
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

fn copies(shards: &[ShardGradient]) -> Vec<ShardGradient> {
    shards
        .iter()
        .map(|s| ShardGradient {
            grads: s.grads.iter().map(Tensor::copy).collect(),
            loss: s.loss,
            accuracy: s.accuracy,
            buffers: s.buffers.as_ref().map(|b| b.iter().map(Tensor::copy).collect()),
        })
        .collect()
}

/// Applies three updates of `spec` with `apply_update` on `threads` threads
/// and with the reference, and asserts that weights, momentum and `F` agree
/// bit for bit after each.
fn assert_matches_reference(model: &Model, spec: &JobSpec, threads: usize) {
    let schedule = Schedule::new(spec, 600).unwrap();
    let (weights, buffers) = model.init(1, Device::Cpu);
    let mut ours = TrainState::new(weights.iter().map(Tensor::copy).collect(), buffers);
    let mut reference = Reference { weights, momentum: None, history: None };
    let uses_clean = spec.method.uses_clean() || spec.method == Method::Sam;
    for step in 0..3i64 {
        // Drawn once and copied: the generator is global to the process, and
        // tests running beside this one draw from it.
        let results = StepResults {
            clean: (0..spec.clean_shards as i64)
                .filter(|_| uses_clean)
                .map(|k| shard(model, 100 * step + k, true))
                .collect(),
            perturbed: (0..spec.perturbed_shards as i64)
                .filter(|_| spec.method.uses_perturbed())
                .map(|k| shard(model, 100 * step + 50 + k, spec.method.bn_stats_from_perturbed()))
                .collect(),
        };
        let again = StepResults { clean: copies(&results.clean), perturbed: copies(&results.perturbed) };
        let lr = schedule.lr_at(ours.step);
        tch::no_grad(|| reference_update(spec, lr, &mut reference, &again));
        apply_update(spec, &schedule, model, &mut ours, results, threads).unwrap();
        let label = format!(
            "{:?} {} shards, momentum {}, {threads} threads, step {step}",
            spec.method, spec.clean_shards, spec.momentum
        );
        assert!(same(ours.weights(), &reference.weights), "weights differ: {label}");
        let both = |a: Option<&[Tensor]>, b: &Option<Vec<Tensor>>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => same(a, b),
            _ => false,
        };
        assert!(both(ours.momentum(), &reference.momentum), "momentum differs: {label}");
        assert!(both(ours.history(), &reference.history), "F differs: {label}");
    }
}

#[test]
fn the_update_matches_the_fixed_order_bit_for_bit() {
    let model = Model::new(ModelKind::SmallCnn, InputShape { channels: 3, height: 16, width: 16 }, 10);
    for method in Method::ALL {
        for (shards, momentum, nesterov) in [(1, 0.9, false), (2, 0.9, true), (3, 0.0, false)] {
            let mut spec = JobSpec::reference(method);
            spec.clean_shards = shards;
            spec.perturbed_shards = shards;
            spec.batch_size = 6;
            spec.momentum = momentum;
            spec.nesterov = nesterov;
            // Not a power of two: a fused multiply-add would round differently.
            spec.lambda = 0.3;
            assert_matches_reference(&model, &spec, 1);
        }
    }
}

/// A model large enough for the update to be shared between threads (1.7 M
/// parameters, tensors that are not whole numbers of the threads' units):
/// 1, 2 and 3 threads give the reference's bits, hence the same bits.
#[test]
fn the_bits_do_not_depend_on_the_number_of_threads() {
    let model = Model::new(ModelKind::Mlp, InputShape { channels: 3, height: 32, width: 32 }, 10);
    assert!(model.num_parameters() > 1_000_000);
    for (method, shards, nesterov) in [(Method::MArwp, 2, true), (Method::Sam, 3, false)] {
        let mut spec = JobSpec::reference(method);
        spec.clean_shards = shards;
        spec.perturbed_shards = shards;
        spec.batch_size = 6;
        spec.nesterov = nesterov;
        spec.lambda = 0.3;
        for threads in [1, 2, 3] {
            assert_matches_reference(&model, &spec, threads);
        }
    }
}

#[test]
fn non_finite_gradients_are_refused_and_leave_the_state_alone() {
    let model = Model::new(ModelKind::SmallCnn, InputShape { channels: 3, height: 16, width: 16 }, 10);
    let spec = JobSpec::reference(Method::MArwp);
    let schedule = Schedule::new(&spec, 1000).unwrap();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        for threads in [1, 2] {
            let (weights, buffers) = model.init(1, Device::Cpu);
            let mut state = TrainState::new(weights.iter().map(Tensor::copy).collect(), buffers);
            let perturbed = shard(&model, 2, false);
            let _ = perturbed.grads[3].get(5).get(1).get(2).fill_(bad);
            let results = StepResults { clean: vec![shard(&model, 1, true)], perturbed: vec![perturbed] };
            let err = apply_update(&spec, &schedule, &model, &mut state, results, threads).unwrap_err();
            assert_eq!(
                err,
                UpdateError::NonFinite { role: Role::Perturbed, shard: 0, param: "conv2.weight".to_owned() }
            );
            assert!(same(state.weights(), &weights) && state.step == 0 && state.momentum().is_none());
        }
    }
}
