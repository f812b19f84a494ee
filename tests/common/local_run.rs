//! The reference every distributed run is held to: the local trainer's
//! final state for the same spec, in one process.

use std::collections::HashMap;

use rwp_core::trainer::LocalTrainer;
use rwp_spec::{JobSpec, Method};
use tch::{Device, Tensor};

/// A small job on the built-in dataset: batch 64, split into 2 clean and
/// 2 perturbed shards, `updates` updates.
#[must_use]
pub fn small_job(seed: u64, method: Method, updates: u64) -> JobSpec {
    let mut spec = JobSpec::reference(method);
    spec.batch_size = 64;
    spec.epochs = u32::try_from(updates.div_ceil(15)).unwrap_or(u32::MAX).max(2);
    spec.max_updates = Some(updates);
    spec.seed = seed;
    spec.clean_shards = 2;
    spec.perturbed_shards = 2;
    spec
}

/// The local trainer's final state as the named tensors of a checkpoint.
pub fn local_reference(spec: &JobSpec) -> HashMap<String, Tensor> {
    tch::set_num_threads(1);
    trained_to_the_end(LocalTrainer::new(spec.clone(), Device::Cpu).unwrap())
}

/// The final state of `trainer`, run to its end on one libtorch thread, as
/// the named tensors of a checkpoint.
pub fn trained_to_the_end(mut trainer: LocalTrainer) -> HashMap<String, Tensor> {
    tch::set_num_threads(1);
    while !trainer.is_done() {
        trainer.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.safetensors");
    trainer.save_checkpoint(&path).unwrap();
    Tensor::read_safetensors(&path).unwrap().into_iter().collect()
}

/// The named tensors of an exported checkpoint (safetensors bytes).
pub fn exported_tensors(exported: &[u8]) -> HashMap<String, Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exported.safetensors");
    std::fs::write(&path, exported).unwrap();
    Tensor::read_safetensors(&path).unwrap().into_iter().collect()
}

/// Whether an exported checkpoint holds exactly the local trainer's tensors, bit for bit.
pub fn matches_local(exported: &[u8], spec: &JobSpec) -> bool {
    let distributed = exported_tensors(exported);
    let local = local_reference(spec);
    local.len() == distributed.len() && local.iter().all(|(k, v)| distributed.get(k).is_some_and(|d| d.equal(v)))
}

pub fn assert_bit_identical(label: &str, exported: &[u8], spec: &JobSpec) {
    assert_bit_identical_to(label, exported, &local_reference(spec), spec);
}

/// [`assert_bit_identical`] against a local state computed by the caller.
pub fn assert_bit_identical_to(label: &str, exported: &[u8], local: &HashMap<String, Tensor>, spec: &JobSpec) {
    let distributed = exported_tensors(exported);
    assert_eq!(
        {
            let mut k: Vec<_> = distributed.keys().collect();
            k.sort();
            k
        },
        {
            let mut k: Vec<_> = local.keys().collect();
            k.sort();
            k
        },
        "{label}: same tensors"
    );
    // Weights and momentum always; BN buffers where the model has BatchNorm.
    let batch_norm = spec.model != rwp_spec::ModelKind::Mlp;
    for (group, expected) in [("weights.", true), ("momentum.", true), ("buffers.", batch_norm)] {
        assert!(!expected || local.keys().any(|k| k.starts_with(group)), "{label}: no {group} tensors");
    }
    let differing: Vec<&String> = local.iter().filter(|(k, v)| !distributed[*k].equal(v)).map(|(k, _)| k).collect();
    assert!(differing.is_empty(), "{label}: not bit-identical to the local trainer: {differing:?}");
}
