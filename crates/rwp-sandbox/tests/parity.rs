//! A TorchScript module computes the same bits in its sandbox as in this
//! process: every task of an m-arwp update (clean with BatchNorm buffers,
//! perturbed), and the evaluation of a version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rwp_core::data::Dataset;
use rwp_core::grad::compute_task;
use rwp_core::model::Model;
use rwp_core::trainer::{eval_batches, evaluate};
use rwp_core::wire;
use rwp_sandbox::{Grants, ModelHost, SandboxConfig};
use rwp_spec::eval::{eval_tasks, EvalTotals, SplitPlan};
use rwp_spec::plan::{init_seed, tasks_for_step, Sampler};
use rwp_spec::{JobSpec, Method, ModelKind, Role, Schedule};
use tch::Device;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cnn(dir: &Path) -> PathBuf {
    let python =
        std::env::var_os("RWP_PYTHON").map_or_else(|| workspace_root().join(".venv/bin/python"), PathBuf::from);
    let out = dir.join("cnn-bn.pt");
    let status = Command::new(python)
        .arg(workspace_root().join("tests/reference/script_models.py"))
        .args(["cnn-bn".as_ref(), out.as_os_str()])
        .status()
        .expect("python starts");
    assert!(status.success());
    out
}

#[test]
fn every_task_and_the_evaluation_match_the_unsandboxed_model_bit_for_bit() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let file = cnn(dir.path());
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.model = ModelKind::TorchScript;
    spec.model_file = Some(rwp_spec::ModelFile::of_path(&file).unwrap());
    spec.batch_size = 32;
    spec.clean_shards = 2;
    spec.perturbed_shards = 2;

    let config = SandboxConfig {
        program: PathBuf::from(env!("CARGO_BIN_EXE_rwp-sandbox")),
        device: "cpu".to_owned(),
        threads: 1,
        memory_bytes: 2 << 30,
        cpu_seconds: 0,
        run_as: Some((65534, 65534)),
        require_landlock: true,
        load_timeout: Duration::from_secs(30),
    };
    let mut host = ModelHost::spawn(&config, &Grants { model_file: file.clone() }).unwrap();
    let opened = host.open_job(&spec).unwrap();
    let snapshot = host.initial_snapshot().unwrap();

    let data = Dataset::for_spec(&spec).unwrap();
    let model = Model::load_script(&file, data.shape, data.classes, Device::Cpu).unwrap();
    let (weights, buffers) = model.init(init_seed(&spec), Device::Cpu);
    assert_eq!(snapshot, wire::encode_snapshot(&model, &weights, &buffers, None), "initial weights");
    assert_eq!(opened.train_samples as usize, data.train.len());

    let schedule = Schedule::new(&spec, data.train.len()).unwrap();
    let mut sampler = Sampler::new(&spec, &schedule, data.train.len());
    let tasks = tasks_for_step(&spec, &schedule, 0);
    assert!(tasks.iter().any(|t| t.role == Role::Perturbed));
    for (i, task) in tasks.iter().enumerate() {
        let returns_buffers = task.role == Role::Clean;
        let batch = data.train_batch(&sampler.shard(task)).unwrap();
        let sandboxed = host
            .compute(task, returns_buffers, (i == 0).then_some(snapshot.as_slice()), 0, &batch, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{task:?}: {e}"));
        let local = compute_task(&spec, &model, &weights, &buffers, task, &batch, None);
        let mut payload = wire::encode_gradients(&local.grads, spec.gradient_encoding);
        if returns_buffers {
            payload.extend(wire::encode_buffers(local.buffers.as_ref().unwrap()));
        }
        assert!(sandboxed.payload == payload, "{task:?}: the sandbox's gradient differs");
        assert_eq!(sandboxed.loss.to_bits(), local.loss.to_bits(), "{task:?}: loss");
    }

    // Evaluation shards, folded in shard order, are the local evaluation;
    // the weights go to the second slot once.
    let mut totals = EvalTotals::default();
    let plan = data.eval_plan(&data.test);
    for (i, task) in eval_tasks(0, plan, SplitPlan { samples: 0, ..plan }).iter().enumerate() {
        let install = (i == 0).then_some(snapshot.as_slice());
        let batches = eval_batches(&data, &data.test, plan.shard_batches(task.shard)).unwrap();
        let (batches, _) = host.evaluate(task, install, 1, &batches, Duration::from_secs(60)).unwrap();
        batches.iter().for_each(|b| totals.add(b));
    }
    let local = evaluate(&model, &data, &weights, &buffers, Device::Cpu).unwrap();
    assert_eq!(
        (totals.loss().to_bits(), totals.accuracy().to_bits()),
        (local.loss.to_bits(), local.accuracy.to_bits())
    );

    // What the server asks for: the module's tensors and initial weights,
    // from a sandbox that is given no data either.
    let mut server = ModelHost::spawn(&config, &Grants { model_file: file.clone() }).unwrap();
    assert_eq!(server.open_job(&spec).unwrap(), opened);
    assert_eq!(server.initial_snapshot().unwrap(), snapshot);
}
