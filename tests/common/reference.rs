//! Runs the independent PyTorch implementation of docs/algorithms.md
//! (`tests/reference/rwp_reference.py`) on the exact batches and noise seeds
//! of a job, and compares its final state with ours.

use std::collections::HashMap;
use std::path::Path;

use rwp_core::trainer::LocalTrainer;
use rwp_spec::{JobSpec, Role};
use serde_json::json;
use tch::{Device, Tensor};

use crate::{max_difference, python, workspace_root};

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Clean => "clean",
        Role::Perturbed => "perturbed",
        Role::Sam => "sam",
    }
}

/// The local trainer run to the end of `spec`, and the reference script's
/// final state for the same case: `w.i`, `b.i`, `m.i` and `F.i` (weights,
/// BN buffers, momentum, history in parameter order).
#[derive(Debug)]
pub struct PytorchRun {
    pub trainer: LocalTrainer,
    pub reference: HashMap<String, Tensor>,
    /// The first parameter before training, to check that training moved it.
    pub initial_first_weight: Tensor,
}

/// Runs `spec` with the local trainer (one CPU thread), recording every
/// update's batches and noise seeds, then the reference script on them. A
/// TorchScript job names its `module` file, which the script trains too.
pub fn run_with_pytorch(spec: &JobSpec, module: Option<&Path>) -> PytorchRun {
    tch::set_num_threads(1);
    let mut trainer = LocalTrainer::with_model_file(spec.clone(), Device::Cpu, module).expect("valid spec");
    let mut case: Vec<(String, Tensor)> = Vec::new();
    for (i, w) in trainer.state.weights().iter().enumerate() {
        case.push((format!("init.w.{i}"), w.copy()));
    }
    for (i, b) in trainer.state.buffers().iter().enumerate() {
        case.push((format!("init.b.{i}"), b.copy()));
    }
    let initial_first_weight = trainer.state.weights()[0].copy();
    let mut steps = Vec::new();
    while !trainer.is_done() {
        let step = trainer.state.step;
        let prepared = trainer.prepare_step().expect("batches load");
        let mut tasks = Vec::new();
        for (task, batch) in &prepared.tasks {
            let key = format!("step{step}.{}{}", role_name(task.role), task.shard);
            case.push((format!("{key}.x"), batch.images.copy()));
            case.push((format!("{key}.y"), batch.labels.copy()));
            tasks.push(json!({"role": role_name(task.role), "shard": task.shard, "noise_seed": task.noise_seed}));
        }
        steps.push(tasks);
        trainer.run_step(prepared).expect("update applies");
    }

    let dir = tempfile::tempdir().unwrap();
    let case_path = dir.path().join("case.safetensors");
    let config_path = dir.path().join("case.json");
    let out_path = dir.path().join("out.safetensors");
    Tensor::write_safetensors(&case, &case_path).unwrap();
    let mut config = serde_json::to_value(spec).unwrap();
    let extra = json!({
        "num_weights": trainer.state.weights().len(),
        "num_buffers": trainer.state.buffers().len(),
        "updates": trainer.state.step,
        "updates_per_epoch": trainer.schedule.updates_per_epoch,
        "planned_updates": trainer.schedule.planned_updates,
        "steps": steps,
    });
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    std::fs::write(&config_path, config.to_string()).unwrap();

    let mut script = python();
    script.arg(workspace_root().join("tests/reference/rwp_reference.py")).args([
        "run".as_ref(),
        case_path.as_os_str(),
        config_path.as_os_str(),
        out_path.as_os_str(),
    ]);
    if let Some(module) = module {
        script.arg("--module").arg(module);
    }
    let output = script.output().expect("the reference script starts");
    assert!(output.status.success(), "reference script failed: {}", String::from_utf8_lossy(&output.stderr));
    let reference = Tensor::read_safetensors(&out_path).unwrap().into_iter().collect();
    PytorchRun { trainer, reference, initial_first_weight }
}

/// Asserts that `ours` (groups `w`, `b`, `m`, `F` of tensors in parameter
/// order) equals the reference bit for bit, listing every tensor that differs.
pub fn assert_matches_pytorch(label: &str, ours: &[(&str, &[Tensor])], reference: &HashMap<String, Tensor>) {
    assert_eq!(reference.len(), ours.iter().map(|(_, t)| t.len()).sum::<usize>(), "{label}: tensor count");
    let mut mismatches = Vec::new();
    for (prefix, tensors) in ours {
        for (i, t) in tensors.iter().enumerate() {
            let theirs = &reference[&format!("{prefix}.{i}")];
            if !t.equal(theirs) {
                let (abs, rel) = max_difference(t, theirs);
                mismatches.push(format!("{prefix}.{i}: max abs {abs:e}, max rel {rel:e}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{label}: not bit-identical to PyTorch:\n{}", mismatches.join("\n"));
}
