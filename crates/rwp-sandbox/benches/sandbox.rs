//! The cost of the model sandbox: a worker's time per m-ARWP update of a
//! TorchScript CNN with BatchNorm (tests/reference/script_models.py
//! `cnn-bn`; 1 clean + 1 perturbed shard), computed in this process and in
//! an `rwp-sandbox` process, side by side. Each update installs the weights
//! version (decoding the snapshot; through shared memory for the sandbox)
//! and computes both tasks into the bytes a worker pushes (through shared
//! memory back out of the sandbox).
//!
//!     cargo bench -p rwp-sandbox --bench sandbox    # UPDATES=30 WARMUP=3 ROUNDS=3 THREADS=1 BATCH=256
//!
//! The two are interleaved update by update (which goes first alternates).
//! Reported: the median of the per-update ratios (sandboxed / in process,
//! each pair measured back to back) over every round, the best round's
//! medians, and where the sandbox's extra time goes: the compute inside the
//! sandbox (as the sandbox measures it) against the same compute in process,
//! and the rest (requests, wake-ups, copies). The last stdout line is one
//! JSON object.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rwp_core::data::Dataset;
use rwp_core::grad::compute_task;
use rwp_core::model::Model;
use rwp_core::wire;
use rwp_sandbox::{Grants, ModelHost, SandboxConfig};
use rwp_spec::plan::{init_seed, tasks_for_step, Sampler};
use rwp_spec::{JobSpec, Method, ModelKind, Role, Schedule, Task};
use tch::Device;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write_cnn(out: &Path) {
    let python =
        std::env::var_os("RWP_PYTHON").map_or_else(|| workspace_root().join(".venv/bin/python"), PathBuf::from);
    let status = Command::new(python)
        .arg(workspace_root().join("tests/reference/script_models.py"))
        .args(["cnn-bn".as_ref(), out.as_os_str()])
        .status()
        .expect("python starts");
    assert!(status.success(), "tests/reference/script_models.py failed");
}

/// One update's times, in milliseconds.
#[derive(Clone, Copy, Default)]
struct Update {
    wall: f64,
    /// Sampling, forward and backward and encoding, without the install.
    compute: f64,
}

fn main() {
    let updates: usize = env("UPDATES", 30);
    let warmup: usize = env("WARMUP", 3);
    let rounds: usize = env("ROUNDS", 3);
    let threads: i32 = env("THREADS", 1);
    let batch: u32 = env("BATCH", 256);
    tch::set_num_threads(threads);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cnn-bn.pt");
    write_cnn(&file);
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.model = ModelKind::TorchScript;
    spec.model_file = Some(rwp_spec::ModelFile::of_path(&file).unwrap());
    spec.batch_size = batch;
    spec.epochs = 1000;

    let data = Dataset::for_spec(&spec).unwrap();
    let model = Model::load_script(&file, data.shape, data.classes, Device::Cpu).unwrap();
    let schedule = Schedule::new(&spec, data.train.len()).unwrap();
    let mut sampler = Sampler::new(&spec, &schedule, data.train.len());
    let mut sandbox_sampler = sampler.clone();
    let (weights, buffers) = model.init(init_seed(&spec), Device::Cpu);
    let snapshot = wire::encode_snapshot(&model, &weights, &buffers, None);

    let config = SandboxConfig {
        program: PathBuf::from(env!("CARGO_BIN_EXE_rwp-sandbox")),
        device: "cpu".to_owned(),
        threads,
        memory_bytes: 8 << 30,
        cpu_seconds: 0,
        run_as: rwp_sandbox::parse_user(rwp_sandbox::DEFAULT_USER).ok(),
        require_landlock: true,
        load_timeout: Duration::from_secs(120),
    };
    let mut host = ModelHost::spawn(&config, &Grants { model_file: file.clone() }).unwrap();
    host.open_job(&spec).unwrap();

    let step_tasks = |step: u64| tasks_for_step(&spec, &schedule, step);
    let returns_buffers = |task: &Task| task.role == Role::Clean;
    let mut in_process_update = |step: u64| {
        let started = Instant::now();
        let installed = wire::decode_snapshot(&snapshot, &model, Device::Cpu).unwrap();
        let mut compute = Duration::ZERO;
        for task in step_tasks(step) {
            let computing = Instant::now();
            let batch = data.train_batch(&sampler.shard(&task)).unwrap();
            let result = compute_task(&spec, &model, &installed.weights, &installed.buffers, &task, &batch, None);
            let mut payload = wire::encode_gradients(&result.grads, spec.gradient_encoding);
            if returns_buffers(&task) {
                payload.extend(wire::encode_buffers(result.buffers.as_ref().unwrap()));
            }
            compute += computing.elapsed();
            std::hint::black_box(payload);
        }
        Update { wall: started.elapsed().as_secs_f64() * 1e3, compute: compute.as_secs_f64() * 1e3 }
    };
    let mut sandboxed_update = |step: u64| {
        let started = Instant::now();
        let mut compute = Duration::ZERO;
        for (i, task) in step_tasks(step).iter().enumerate() {
            let install = (i == 0).then_some(snapshot.as_slice());
            let computing = Instant::now();
            let batch = data.train_batch(&sandbox_sampler.shard(task)).unwrap();
            let loading = computing.elapsed();
            let computed =
                host.compute(task, returns_buffers(task), install, 0, &batch, Duration::from_secs(600)).unwrap();
            compute += loading;
            compute += computed.compute_time;
            std::hint::black_box(computed.payload);
        }
        Update { wall: started.elapsed().as_secs_f64() * 1e3, compute: compute.as_secs_f64() * 1e3 }
    };

    let mut ratios = Vec::new();
    let (mut best_in, mut best_out) = (f64::INFINITY, f64::INFINITY);
    let (mut compute_in, mut compute_out) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (mut ours_in, mut ours_out) = (Vec::new(), Vec::new());
        for step in 0..(warmup + updates) as u64 {
            let (a, b) = if (step + round as u64) % 2 == 0 {
                let a = in_process_update(step);
                (a, sandboxed_update(step))
            } else {
                let b = sandboxed_update(step);
                (in_process_update(step), b)
            };
            if step as usize >= warmup {
                ours_in.push(a.wall);
                ours_out.push(b.wall);
                ratios.push(b.wall / a.wall);
                compute_in.push(a.compute);
                compute_out.push(b.compute);
            }
        }
        let (m_in, m_out) = (median(ours_in), median(ours_out));
        println!("round {round}: in process {m_in:.2} ms, sandboxed {m_out:.2} ms per update (median)");
        best_in = best_in.min(m_in);
        best_out = best_out.min(m_out);
    }
    let ratio = median(ratios.clone());
    let (compute_in, compute_out) = (median(compute_in), median(compute_out));
    println!(
        "TorchScript CNN-BN m-arwp, batch {batch}, {threads} thread(s), {} pairs: sandboxed / in process = {ratio:.3} \
         (median of per-update ratios); best round's medians {best_in:.2} vs {best_out:.2} ms ({:.3}); compute \
         alone {compute_in:.2} ms in process, {compute_out:.2} ms in the sandbox ({:.3})",
        ratios.len(),
        best_out / best_in,
        compute_out / compute_in,
    );
    println!(
        "{{\"ratio\":{ratio},\"in_process_ms\":{best_in},\"sandboxed_ms\":{best_out},\"compute_in_process_ms\":{compute_in},\"compute_sandboxed_ms\":{compute_out},\"batch\":{batch},\"threads\":{threads}}}"
    );
}
