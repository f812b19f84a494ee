//! The Rust core against an independent PyTorch implementation of
//! docs/algorithms.md (`tests/reference/rwp_reference.py`): same initial weights,
//! same batches, same noise seeds, one CPU thread; after 24 updates of the
//! small CNN with BatchNorm, weights, momentum, BN buffers and the history `F`
//! must be equal bit for bit. The same holds for a TorchScript CNN with
//! BatchNorm (`tests/reference/script_models.py`), trained by every method
//! from the file's weights, against PyTorch training the same module.

use rwp_integration_tests::reference::{assert_matches_pytorch, run_with_pytorch};
use rwp_integration_tests::write_script_model;
use rwp_spec::{JobSpec, LrSchedule, Method};
use tch::Tensor;

const UPDATES: u64 = 24;

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
    check_with(spec, None);
}

/// [`check`] for a TorchScript model: the script trains the same file.
fn check_script(method: Method) {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("cnn_bn.pt");
    write_script_model("cnn-bn", &module, 3, 10);
    let mut spec = spec_for(method);
    spec.model = rwp_spec::ModelKind::TorchScript;
    spec.model_file = Some(rwp_spec::ModelFile::of_path(&module).unwrap());
    check_with(spec, Some(&module));
}

fn check_with(spec: JobSpec, module: Option<&std::path::Path>) {
    let label = format!("{} {} ({}+{} shards)", spec.model, spec.method, spec.clean_shards, spec.perturbed_shards);
    let run = run_with_pytorch(&spec, module);
    let state = &run.trainer.state;
    assert_eq!(state.step, UPDATES);
    let mut groups: Vec<(&str, &[Tensor])> = vec![("w", state.weights()), ("b", state.buffers())];
    groups.push(("m", state.momentum().expect("every case uses momentum")));
    if spec.method.is_adaptive() {
        groups.push(("F", state.history().expect("adaptive methods keep F")));
    }
    assert_matches_pytorch(&label, &groups, &run.reference);
    // The run must have moved the weights, or the comparison proves nothing.
    assert!(!run.initial_first_weight.equal(&state.weights()[0]), "{label}: weights did not change");
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

#[test]
fn torchscript_sgd_matches_pytorch_bit_for_bit() {
    check_script(Method::Sgd);
}

#[test]
fn torchscript_sam_matches_pytorch_bit_for_bit() {
    check_script(Method::Sam);
}

#[test]
fn torchscript_rwp_matches_pytorch_bit_for_bit() {
    check_script(Method::Rwp);
}

#[test]
fn torchscript_arwp_matches_pytorch_bit_for_bit() {
    check_script(Method::Arwp);
}

#[test]
fn torchscript_m_rwp_matches_pytorch_bit_for_bit() {
    check_script(Method::MRwp);
}

#[test]
fn torchscript_m_arwp_matches_pytorch_bit_for_bit() {
    check_script(Method::MArwp);
}
