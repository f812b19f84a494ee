//! The cost of the model sandbox: a worker's time per m-ARWP update of a
//! TorchScript CNN with BatchNorm (tests/reference/script_models.py
//! `cnn-bn`; 1 clean + 1 perturbed shard), computed in this process and in
//! an `rwp-sandbox` process, side by side. Each update installs the weights
//! version (decoding the snapshot; through shared memory for the sandbox)
//! and computes both tasks into the bytes a worker pushes (through shared
//! memory back out of the sandbox).
//!
//!     target/release/bench-sandbox     # UPDATES=20 WARMUP=3 ROUNDS=3 THREADS=1 BATCH=256
//!
//! Rounds interleave the two; each figure is the median update of the best
//! round. The last stdout line is one JSON object with `in_process_ms`,
//! `sandboxed_ms` and their ratio.

use std::time::{Duration, Instant};

use rwp_core::data::Dataset;
use rwp_core::grad::compute_task;
use rwp_core::model::Model;
use rwp_core::wire;
use rwp_integration_tests::bench::env;
use rwp_integration_tests::{binary, write_script_model};
use rwp_sandbox::{Grants, ModelHost, SandboxConfig};
use rwp_spec::plan::{init_seed, tasks_for_step, Sampler};
use rwp_spec::{JobSpec, Method, ModelKind, Role, Schedule, Task};
use serde_json::json;
use tch::Device;

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let updates: usize = env("UPDATES", 20);
    let warmup: usize = env("WARMUP", 3);
    let rounds: usize = env("ROUNDS", 3);
    let threads: i32 = env("THREADS", 1);
    let batch: u32 = env("BATCH", 256);
    tch::set_num_threads(threads);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cnn-bn.pt");
    write_script_model("cnn-bn", &file, 3, 10);
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.model = ModelKind::TorchScript;
    spec.model_file = Some(rwp_spec::ModelFile::of_path(&file).unwrap());
    spec.batch_size = batch;
    spec.epochs = 1000;

    let data = Dataset::for_spec(&spec).unwrap();
    let model = Model::load_script(&file, data.shape, data.classes, Device::Cpu).unwrap();
    let schedule = Schedule::new(&spec, data.train.len()).unwrap();
    let mut sampler = Sampler::new(&spec, &schedule, data.train.len());
    let (weights, buffers) = model.init(init_seed(&spec), Device::Cpu);
    let snapshot = wire::encode_snapshot(&model, &weights, &buffers, None);

    let config = SandboxConfig {
        program: binary("rwp-sandbox"),
        device: "cpu".to_owned(),
        threads,
        memory_bytes: 8 << 30,
        cpu_seconds: 0,
        run_as: rwp_sandbox::parse_user(rwp_sandbox::DEFAULT_USER).ok(),
        require_landlock: true,
        load_timeout: Duration::from_secs(120),
    };
    let mut host = ModelHost::spawn(&config, &Grants { model_file: file.clone(), data_dir: None }).unwrap();
    host.open_job(&spec).unwrap();

    let step_tasks = |step: u64| tasks_for_step(&spec, &schedule, step);
    let returns_buffers = |task: &Task| task.role == Role::Clean;
    let mut in_process_update = |step: u64| {
        let started = Instant::now();
        let installed = wire::decode_snapshot(&snapshot, &model, Device::Cpu).unwrap();
        for task in step_tasks(step) {
            let batch = data.train_batch(&sampler.shard(&task));
            let result = compute_task(&spec, &model, &installed.weights, &installed.buffers, &task, &batch, None);
            let mut payload = wire::encode_gradients(&result.grads, spec.gradient_encoding);
            if returns_buffers(&task) {
                payload.extend(wire::encode_buffers(result.buffers.as_ref().unwrap()));
            }
            std::hint::black_box(payload);
        }
        started.elapsed().as_secs_f64() * 1e3
    };
    let mut sandboxed_update = |step: u64| {
        let started = Instant::now();
        for (i, task) in step_tasks(step).iter().enumerate() {
            let install = (i == 0).then_some(snapshot.as_slice());
            let computed = host.compute(task, returns_buffers(task), install, Duration::from_secs(600)).unwrap();
            std::hint::black_box(computed.payload);
        }
        started.elapsed().as_secs_f64() * 1e3
    };

    let (mut best_in, mut best_out) = (f64::INFINITY, f64::INFINITY);
    for round in 0..rounds {
        let mut ours_in = Vec::new();
        let mut ours_out = Vec::new();
        for step in 0..(warmup + updates) as u64 {
            let (a, b) = if (step + round as u64) % 2 == 0 {
                let a = in_process_update(step);
                (a, sandboxed_update(step))
            } else {
                let b = sandboxed_update(step);
                (in_process_update(step), b)
            };
            if step as usize >= warmup {
                ours_in.push(a);
                ours_out.push(b);
            }
        }
        let (m_in, m_out) = (median(ours_in), median(ours_out));
        println!("round {round}: in process {m_in:.2} ms, sandboxed {m_out:.2} ms per update");
        best_in = best_in.min(m_in);
        best_out = best_out.min(m_out);
    }
    println!(
        "TorchScript CNN-BN m-arwp, batch {batch}, {threads} thread(s): in process {best_in:.2} ms, sandboxed \
         {best_out:.2} ms per update, sandboxed / in process = {:.3}",
        best_out / best_in
    );
    println!(
        "{}",
        json!({"in_process_ms": best_in, "sandboxed_ms": best_out, "ratio": best_out / best_in, "batch": batch, "threads": threads})
    );
}
