//! The Rust core against an independent PyTorch implementation of
//! ALGORITHMS.md (`tests/reference/rwp_reference.py`): same initial weights,
//! same batches, same noise seeds, one CPU thread; after 24 updates of the
//! small CNN with BatchNorm, weights, momentum, BN buffers and the history `F`
//! must be equal bit for bit.

use std::collections::HashMap;

use rwp_core::trainer::LocalTrainer;
use rwp_integration_tests::{max_difference, python, workspace_root};
use rwp_spec::{JobSpec, LrSchedule, Method, Role};
use serde_json::json;
use tch::{Device, Tensor};

const UPDATES: u64 = 24;

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Clean => "clean",
        Role::Perturbed => "perturbed",
        Role::Sam => "sam",
    }
}

fn spec_for(method: Method) -> JobSpec {
    let mut spec = JobSpec::reference(method);
    spec.batch_size = 32;
    spec.epochs = 2;
    spec.max_updates = Some(UPDATES);
    spec.seed = 17;
    // Spread the schedule variants over the cases so each one is exercised.
    match method {
        Method::Sgd => {
            spec.nesterov = true;
            spec.warmup_updates = 5;
            spec.lr_schedule = LrSchedule::Step { milestones: vec![1], gamma: 0.1 };
        }
        Method::MRwp => spec.lr_schedule = LrSchedule::CosinePerUpdate,
        Method::Sam => spec.lr_schedule = LrSchedule::Constant,
        _ => {}
    }
    // Sharper noise than the reference so that ε visibly matters in 24 updates.
    if method.uses_perturbed() && method != Method::Arwp {
        spec.sigma = 0.05;
    }
    spec
}

/// Runs `spec` in Rust, writes the case for the script, runs it, compares.
fn check(spec: JobSpec) {
    tch::set_num_threads(1);
    let label = format!("{} ({}+{} shards)", spec.method, spec.clean_shards, spec.perturbed_shards);
    let mut trainer = LocalTrainer::new(spec.clone(), Device::Cpu).expect("valid spec");
    let mut case: Vec<(String, Tensor)> = Vec::new();
    for (i, w) in trainer.state.weights.iter().enumerate() {
        case.push((format!("init.w.{i}"), w.copy()));
    }
    for (i, b) in trainer.state.buffers.iter().enumerate() {
        case.push((format!("init.b.{i}"), b.copy()));
    }
    let mut steps = Vec::new();
    while !trainer.is_done() {
        let step = trainer.state.step;
        let prepared = trainer.prepare_step();
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
    assert_eq!(trainer.state.step, UPDATES);

    let dir = tempfile::tempdir().unwrap();
    let case_path = dir.path().join("case.safetensors");
    let config_path = dir.path().join("case.json");
    let out_path = dir.path().join("out.safetensors");
    Tensor::write_safetensors(&case, &case_path).unwrap();
    let mut config = serde_json::to_value(&spec).unwrap();
    let extra = json!({
        "num_weights": trainer.state.weights.len(),
        "num_buffers": trainer.state.buffers.len(),
        "updates": UPDATES,
        "updates_per_epoch": trainer.schedule.updates_per_epoch,
        "planned_updates": trainer.schedule.planned_updates,
        "steps": steps,
    });
    config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    std::fs::write(&config_path, config.to_string()).unwrap();

    let output = python()
        .arg(workspace_root().join("tests/reference/rwp_reference.py"))
        .args(["run".as_ref(), case_path.as_os_str(), config_path.as_os_str(), out_path.as_os_str()])
        .output()
        .expect("the reference script starts");
    assert!(output.status.success(), "reference script failed: {}", String::from_utf8_lossy(&output.stderr));
    let reference: HashMap<String, Tensor> = Tensor::read_safetensors(&out_path).unwrap().into_iter().collect();

    let mut groups = vec![("w", &trainer.state.weights), ("b", &trainer.state.buffers)];
    let momentum = trainer.state.momentum.as_ref().expect("every case uses momentum");
    groups.push(("m", momentum));
    if spec.method.is_adaptive() {
        groups.push(("F", trainer.state.history.as_ref().expect("adaptive methods keep F")));
    }
    assert_eq!(reference.len(), groups.iter().map(|(_, t)| t.len()).sum::<usize>(), "{label}: tensor count");
    let mut mismatches = Vec::new();
    for (prefix, tensors) in groups {
        for (i, ours) in tensors.iter().enumerate() {
            let theirs = &reference[&format!("{prefix}.{i}")];
            if !ours.equal(theirs) {
                let (abs, rel) = max_difference(ours, theirs);
                mismatches.push(format!("{prefix}.{i}: max abs {abs:e}, max rel {rel:e}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{label}: not bit-identical to PyTorch:\n{}", mismatches.join("\n"));
    // The run must have moved the weights, or the comparison proves nothing.
    let initial = case.iter().find(|(n, _)| n == "init.w.0").unwrap();
    assert!(!initial.1.equal(&trainer.state.weights[0]), "{label}: weights did not change");
}

#[test]
fn sgd_matches_pytorch_bit_for_bit() {
    check(spec_for(Method::Sgd));
}

#[test]
fn sam_matches_pytorch_bit_for_bit() {
    check(spec_for(Method::Sam));
}

#[test]
fn rwp_matches_pytorch_bit_for_bit() {
    check(spec_for(Method::Rwp));
}

#[test]
fn arwp_matches_pytorch_bit_for_bit() {
    check(spec_for(Method::Arwp));
}

#[test]
fn m_rwp_matches_pytorch_bit_for_bit() {
    check(spec_for(Method::MRwp));
}

#[test]
fn m_arwp_matches_pytorch_bit_for_bit() {
    check(spec_for(Method::MArwp));
}

#[test]
fn sharded_m_arwp_matches_pytorch_bit_for_bit() {
    let mut spec = spec_for(Method::MArwp);
    spec.clean_shards = 2;
    spec.perturbed_shards = 4;
    check(spec);
}
