//! The parameter server's work per m-ARWP update of a ResNet-18 (11,173,962
//! parameters, 1 clean + 1 perturbed shard), as the engine does it: decoding
//! the shard results from bytes (`wire::decode_gradients`, `decode_buffers`),
//! then `optim::apply_update` (shard means, mixing, the history `F`, SGD with
//! momentum and weight decay). Against PyTorch's
//! `torch.optim.SGD(momentum=0.9, weight_decay=1e-3).step()` on the same
//! parameter shapes (`tests/reference/optimizer_step.py`), same thread count.
//! Serialising the next snapshot is timed separately and left out of the ratio,
//! as is a worker's encoding of a gradient into the bytes it pushes.
//!
//! For the breakdown, the same update is also applied as `m-rwp` (no `F`) and
//! as `sgd` with the clean shard only (no perturbed mean, no mixing, no `F`):
//! `F` = m-arwp − m-rwp, perturbed mean and mixing = m-rwp − sgd.
//!
//!     target/release/bench-aggregation     # UPDATES=10 WARMUP=2 ROUNDS=3 THREADS=1 (a list, e.g. 1,2, runs each)
//!
//! Rounds interleave ours and PyTorch's; each figure is the best round, a
//! round being the mean over UPDATES updates after WARMUP. The last stdout
//! line is one JSON object: `ours_ms`, `torch_ms` and their ratio for the
//! first thread count at the top, every thread count under `results`.

use std::time::Instant;

use rwp_core::grad::ShardGradient;
use rwp_core::model::{InputShape, Model};
use rwp_core::optim::{apply_update, StepResults, TrainState};
use rwp_core::wire;
use rwp_integration_tests::bench::env;
use rwp_integration_tests::{python, workspace_root};
use rwp_spec::{DatasetKind, GradientEncoding, JobSpec, Method, ModelKind, Schedule};
use serde_json::{json, Value};
use tch::{Device, Tensor};

/// CIFAR-10's training split: the length only sets the schedule.
const TRAIN_LEN: usize = 50_000;

/// One update's shard results as they arrive at the server.
struct Payloads {
    clean_gradient: Vec<u8>,
    clean_buffers: Vec<u8>,
    perturbed_gradient: Vec<u8>,
}

impl Payloads {
    fn new(model: &Model) -> Self {
        let gradients = |seed| {
            tch::manual_seed(seed);
            let grads: Vec<Tensor> =
                model.params().iter().map(|p| Tensor::randn(p.shape.as_slice(), tch::kind::FLOAT_CPU) * 1e-3).collect();
            wire::encode_gradients(&grads, GradientEncoding::F32)
        };
        let (_, buffers) = model.init(0, Device::Cpu);
        Self {
            clean_gradient: gradients(1),
            clean_buffers: wire::encode_buffers(&buffers),
            perturbed_gradient: gradients(2),
        }
    }
}

fn spec(method: Method) -> JobSpec {
    let mut spec = JobSpec::reference(method);
    spec.model = ModelKind::Resnet18;
    spec.dataset = DatasetKind::Cifar10;
    spec.epochs = 200;
    spec
}

fn decode(model: &Model, payloads: &Payloads, perturbed: bool) -> StepResults {
    let gradient = |bytes: &[u8]| wire::decode_gradients(model, bytes, GradientEncoding::F32, Device::Cpu).unwrap();
    let clean = ShardGradient {
        grads: gradient(&payloads.clean_gradient),
        loss: 2.3,
        accuracy: 0.1,
        buffers: Some(wire::decode_buffers(model, &payloads.clean_buffers, Device::Cpu).unwrap()),
    };
    let perturbed = perturbed.then(|| ShardGradient {
        grads: gradient(&payloads.perturbed_gradient),
        loss: 2.4,
        accuracy: 0.1,
        buffers: None,
    });
    StepResults { clean: vec![clean], perturbed: perturbed.into_iter().collect() }
}

/// Mean milliseconds per update of each phase.
#[derive(Clone, Copy, Debug)]
struct Ours {
    decode: f64,
    update: f64,
    snapshot: f64,
}

impl Ours {
    fn min(self, other: Self) -> Self {
        Self {
            decode: self.decode.min(other.decode),
            update: self.update.min(other.update),
            snapshot: self.snapshot.min(other.snapshot),
        }
    }
}

fn ours(model: &Model, payloads: &Payloads, method: Method, warmup: usize, updates: usize) -> Ours {
    let spec = spec(method);
    let schedule = Schedule::new(&spec, TRAIN_LEN).unwrap();
    let (weights, buffers) = model.init(0, Device::Cpu);
    let mut state = TrainState::new(weights, buffers);
    let (mut decode_s, mut update_s, mut snapshot_s) = (0.0, 0.0, 0.0);
    for i in 0..warmup + updates {
        let started = Instant::now();
        let results = decode(model, payloads, method.uses_perturbed());
        let decoded = Instant::now();
        apply_update(&spec, &schedule, model, &mut state, results).unwrap();
        let updated = Instant::now();
        let factors = state.row_factors(&spec);
        let snapshot = wire::encode_snapshot(model, &state.weights, &state.buffers, factors.as_ref());
        drop(snapshot);
        if i >= warmup {
            decode_s += (decoded - started).as_secs_f64();
            update_s += (updated - decoded).as_secs_f64();
            snapshot_s += updated.elapsed().as_secs_f64();
        }
    }
    let ms = |s: f64| 1e3 * s / updates as f64;
    Ours { decode: ms(decode_s), update: ms(update_s), snapshot: ms(snapshot_s) }
}

/// PyTorch's SGD step: (default implementation, foreach) in ms.
fn torch_sgd(threads: i32, warmup: usize, updates: usize) -> (f64, f64) {
    let script = workspace_root().join("tests/reference/optimizer_step.py");
    let output = python()
        .arg(script)
        .args(["--threads", &threads.to_string(), "--warmup", &warmup.to_string(), "--updates", &updates.to_string()])
        .output()
        .expect("the PyTorch script runs");
    assert!(output.status.success(), "optimizer_step.py failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let result: Value = serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    (result["ms_per_step"].as_f64().unwrap(), result["ms_per_step_foreach"].as_f64().unwrap())
}

/// A worker's last step before its push, in ms (best of `repeats`): a
/// shard's gradient tensors to the bytes it sends.
fn worker_encode_ms(model: &Model, repeats: usize) -> f64 {
    let grads: Vec<Tensor> =
        model.params().iter().map(|p| Tensor::randn(p.shape.as_slice(), tch::kind::FLOAT_CPU)).collect();
    (0..repeats)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(wire::encode_gradients(&grads, GradientEncoding::F32));
            started.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn main() {
    let updates: usize = env("UPDATES", 10);
    let warmup: usize = env("WARMUP", 2);
    let rounds: usize = env("ROUNDS", 3);
    let thread_counts: Vec<i32> = std::env::var("THREADS")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .map(|t| t.trim().parse().expect("THREADS is a comma-separated list of thread counts"))
        .collect();
    let model = Model::new(ModelKind::Resnet18, InputShape { channels: 3, height: 32, width: 32 }, 10);
    let payloads = Payloads::new(&model);
    eprintln!(
        "resnet18 ({} parameters), m-arwp update of 1 clean + 1 perturbed shard, {updates} updates after {warmup} \
         warm-up, best of {rounds} interleaved rounds, threads {thread_counts:?}",
        model.num_parameters()
    );

    let _no_grad = tch::no_grad_guard();
    let mut per_threads = Vec::new();
    for &threads in &thread_counts {
        tch::set_num_threads(threads);
        let mut best: Option<[Ours; 3]> = None;
        let (mut torch_default, mut torch_foreach) = (f64::INFINITY, f64::INFINITY);
        for round in 1..=rounds {
            let measured =
                [Method::MArwp, Method::MRwp, Method::Sgd].map(|m| ours(&model, &payloads, m, warmup, updates));
            let (t, f) = torch_sgd(threads, warmup, updates);
            eprintln!(
                "threads {threads}, round {round}: m-arwp decode {:.1} ms + update {:.1} ms (m-rwp update {:.1}, sgd \
                 update {:.1}), snapshot {:.1} ms; torch SGD step {t:.1} ms (foreach {f:.1})",
                measured[0].decode, measured[0].update, measured[1].update, measured[2].update, measured[0].snapshot
            );
            best = Some(match best {
                None => measured,
                Some(b) => [b[0].min(measured[0]), b[1].min(measured[1]), b[2].min(measured[2])],
            });
            torch_default = torch_default.min(t);
            torch_foreach = torch_foreach.min(f);
        }
        let [marwp, mrwp, sgd] = best.expect("at least one round");
        let total = marwp.decode + marwp.update;
        per_threads.push(json!({
            "threads": threads,
            "ours_ms": round3(total),
            "ours_decode_ms": round3(marwp.decode),
            "ours_apply_update_ms": round3(marwp.update),
            "breakdown_ms": {
                "decode": round3(marwp.decode),
                "sgd_step_with_clean_mean_and_checks": round3(sgd.update),
                "perturbed_mean_and_mixing": round3(mrwp.update - sgd.update),
                "history_f": round3(marwp.update - mrwp.update),
            },
            "snapshot_encode_ms_not_in_ratio": round3(marwp.snapshot),
            "torch_sgd_step_ms": round3(torch_default),
            "torch_sgd_step_foreach_ms": round3(torch_foreach),
            "ratio_ours_over_torch": round3(total / torch_default),
            "ratio_apply_update_over_torch": round3(marwp.update / torch_default),
            "ratio_sgd_only_over_torch": round3(sgd.update / torch_default),
            "target_ratio": 1.5,
        }));
    }
    let first = &per_threads[0];
    let report = json!({
        "benchmark": "aggregation",
        "threads": thread_counts[0],
        "ours_ms": first["ours_ms"],
        "torch_ms": first["torch_sgd_step_ms"],
        "ratio_ours_over_torch": first["ratio_ours_over_torch"],
        "model": "resnet18",
        "parameters": model.num_parameters(),
        "parameter_tensors": model.params().len(),
        "method": "m-arwp",
        "shards": {"clean": 1, "perturbed": 1},
        "warmup": warmup,
        "updates": updates,
        "rounds": rounds,
        "statistic": "best round; a round is the mean over its updates; ours and torch interleaved per round",
        "results": per_threads,
        "worker_encode_gradient_ms_not_in_ratio": round3(worker_encode_ms(&model, 3)),
    });
    println!("{report}");
}
