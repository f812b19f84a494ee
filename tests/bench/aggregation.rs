//! The parameter server's work per m-ARWP update of a ResNet-18 (11,173,962
//! parameters, 1 clean + 1 perturbed shard), as the engine does it:
//! `optim::apply_payloads` on the shard results' wire bytes (read where they
//! lie; finiteness was checked on arrival, as the server does; shard means, mixing, the history `F`, SGD with momentum and
//! weight decay, on `THREADS` threads). Against PyTorch's
//! `torch.optim.SGD(momentum=0.9, weight_decay=1e-3).step()` on the same
//! parameter shapes (`tests/reference/optimizer_step.py`), same thread count.
//!
//! Publishing the next version (`wire::SnapshotWriter`: the header and one
//! copy of the state's bytes; the adaptive factors are computed before and
//! not counted) is timed against a plain copy of as many bytes into a
//! buffer that already exists.
//!
//! For the breakdown, the same update is also applied as `m-rwp` (no `F`) and
//! as `sgd` with the clean shard only (no perturbed mean, no mixing, no `F`):
//! `F` = m-arwp − m-rwp, perturbed mean and mixing = m-rwp − sgd.
//!
//!     target/release/bench-aggregation     # UPDATES=10 WARMUP=2 ROUNDS=3 THREADS=1 (a list, e.g. 1,2, runs each)
//!
//! Rounds interleave ours and PyTorch's; each figure is the best round, a
//! round being the mean over UPDATES updates after WARMUP. The last stdout
//! line is one JSON object: `ours_ms`, `torch_ms` and their ratio, and
//! `publish_ms`, `memcpy_ms` and theirs, for the first thread count at the
//! top, every thread count under `results`.

use std::time::Instant;

use rwp_core::model::{InputShape, Model};
use rwp_core::optim::{apply_payloads, Finiteness, ShardPayload, StepPayloads, TrainState};
use rwp_core::wire::{self, SnapshotWriter};
use rwp_integration_tests::bench::env;
use rwp_integration_tests::{python, workspace_root};
use rwp_spec::{DatasetKind, GradientEncoding, JobSpec, Method, ModelKind, Schedule};
use serde_json::{json, Value};
use tch::{Device, Tensor};

/// CIFAR-10's training split: the length only sets the schedule.
const TRAIN_LEN: usize = 50_000;

/// One update's shard results as they arrive at the server.
struct Payloads {
    clean_gradient: &'static [u8],
    clean_buffers: &'static [u8],
    perturbed_gradient: &'static [u8],
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
        // Kept for the whole run, as a server keeps its payload buffers.
        Self {
            clean_gradient: gradients(1).leak(),
            clean_buffers: wire::encode_buffers(&buffers).leak(),
            perturbed_gradient: gradients(2).leak(),
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

/// Mean milliseconds per update of each phase.
#[derive(Clone, Copy, Debug)]
struct Ours {
    update: f64,
    publish: f64,
    memcpy: f64,
}

impl Ours {
    fn min(self, other: Self) -> Self {
        Self {
            update: self.update.min(other.update),
            publish: self.publish.min(other.publish),
            memcpy: self.memcpy.min(other.memcpy),
        }
    }
}

fn ours(model: &Model, payloads: &Payloads, method: Method, threads: usize, warmup: usize, updates: usize) -> Ours {
    let spec = spec(method);
    let schedule = Schedule::new(&spec, TRAIN_LEN).unwrap();
    let (weights, buffers) = model.init(0, Device::Cpu);
    let mut state = TrainState::new(weights, buffers);
    let writer = SnapshotWriter::new(model);
    let shard = |gradient: &'static [u8], buffers: Option<&'static [u8]>| ShardPayload {
        gradient,
        buffers,
        loss: 2.3,
        accuracy: 0.1,
    };
    let step = StepPayloads {
        clean: vec![shard(payloads.clean_gradient, Some(payloads.clean_buffers))],
        perturbed: if method.uses_perturbed() { vec![shard(payloads.perturbed_gradient, None)] } else { vec![] },
    };
    let mut copy_to: Vec<u8> = Vec::new();
    let (mut update_s, mut publish_s, mut memcpy_s) = (0.0, 0.0, 0.0);
    for i in 0..warmup + updates {
        let started = Instant::now();
        apply_payloads(&spec, &schedule, model, &mut state, &step, threads, Finiteness::CheckedOnArrival).unwrap();
        let updated = Instant::now();
        let factors = state.row_factors(&spec);
        let publishing = Instant::now();
        let snapshot = writer.write(&state, factors.as_ref());
        let published = Instant::now();
        // The baseline: as many bytes copied into a buffer that exists.
        copy_to.resize(snapshot.len(), 0);
        let copying = Instant::now();
        copy_to.copy_from_slice(&snapshot);
        std::hint::black_box(&copy_to);
        let memcpy = copying.elapsed();
        drop(snapshot);
        if i >= warmup {
            update_s += (updated - started).as_secs_f64();
            publish_s += (published - publishing).as_secs_f64();
            memcpy_s += memcpy.as_secs_f64();
        }
    }
    let ms = |s: f64| 1e3 * s / updates as f64;
    Ours { update: ms(update_s), publish: ms(publish_s), memcpy: ms(memcpy_s) }
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
        let engine_threads = usize::try_from(threads).expect("a positive thread count");
        let mut best: Option<[Ours; 3]> = None;
        let (mut torch_default, mut torch_foreach) = (f64::INFINITY, f64::INFINITY);
        for round in 1..=rounds {
            let measured = [Method::MArwp, Method::MRwp, Method::Sgd]
                .map(|m| ours(&model, &payloads, m, engine_threads, warmup, updates));
            let (t, f) = torch_sgd(threads, warmup, updates);
            eprintln!(
                "threads {threads}, round {round}: m-arwp update {:.1} ms (m-rwp {:.1}, sgd {:.1}), publish {:.1} ms \
                 (memcpy {:.1}); torch SGD step {t:.1} ms (foreach {f:.1})",
                measured[0].update, measured[1].update, measured[2].update, measured[0].publish, measured[0].memcpy
            );
            best = Some(match best {
                None => measured,
                Some(b) => [b[0].min(measured[0]), b[1].min(measured[1]), b[2].min(measured[2])],
            });
            torch_default = torch_default.min(t);
            torch_foreach = torch_foreach.min(f);
        }
        let [marwp, mrwp, sgd] = best.expect("at least one round");
        per_threads.push(json!({
            "threads": threads,
            "ours_ms": round3(marwp.update),
            "breakdown_ms": {
                "sgd_step_with_clean_mean_and_checks": round3(sgd.update),
                "perturbed_mean_and_mixing": round3(mrwp.update - sgd.update),
                "history_f": round3(marwp.update - mrwp.update),
            },
            "torch_sgd_step_ms": round3(torch_default),
            "torch_sgd_step_foreach_ms": round3(torch_foreach),
            "ratio_ours_over_torch": round3(marwp.update / torch_default),
            "ratio_sgd_only_over_torch": round3(sgd.update / torch_default),
            "target_ratio": 1.5,
            "publish_ms": round3(marwp.publish),
            "memcpy_ms": round3(marwp.memcpy),
            "ratio_publish_over_memcpy": round3(marwp.publish / marwp.memcpy),
            "publish_target_ratio": 1.5,
        }));
    }
    let first = &per_threads[0];
    let report = json!({
        "benchmark": "aggregation",
        "threads": thread_counts[0],
        "ours_ms": first["ours_ms"],
        "torch_ms": first["torch_sgd_step_ms"],
        "ratio_ours_over_torch": first["ratio_ours_over_torch"],
        "publish_ms": first["publish_ms"],
        "memcpy_ms": first["memcpy_ms"],
        "ratio_publish_over_memcpy": first["ratio_publish_over_memcpy"],
        "model": "resnet18",
        "parameters": model.num_parameters(),
        "parameter_tensors": model.params().len(),
        "method": "m-arwp",
        "shards": {"clean": 1, "perturbed": 1},
        "warmup": warmup,
        "updates": updates,
        "rounds": rounds,
        "statistic": "best round; a round is the mean over its updates; ours and torch interleaved per round; \
                      publish and memcpy timed back to back in each update",
        "results": per_threads,
        "worker_encode_gradient_ms_not_in_ratio": round3(worker_encode_ms(&model, 3)),
    });
    println!("{report}");
}
