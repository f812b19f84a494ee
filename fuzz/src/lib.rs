//! Checks shared by the fuzz targets in `fuzz_targets/`: what must hold for
//! every job spec that validation accepts, whichever way it arrived (a job
//! file or a protobuf message).

use prost::Message;
use rwp_proto::v1;
use rwp_spec::plan::{tasks_for_step, Sampler};
use rwp_spec::{JobSpec, LrSchedule, Role, Schedule, SigmaSchedule, SpecError};

/// Training sets up to this size get their tasks planned and sampled: the
/// task list of an update is as long as the shard counts, which a batch no
/// larger than the training set bounds.
const MAX_PLANNED_TRAIN_LEN: usize = 60_000;
/// Training sets up to this size also get their samples drawn (a permutation
/// of the training set per call).
const MAX_SAMPLED_TRAIN_LEN: usize = 4096;

/// A validation error must name the field it blames.
pub fn check_spec_error(err: &SpecError) {
    let text = err.to_string();
    if let SpecError::OutOfRange { field, .. } = err {
        assert!(text.contains(field), "'{text}' does not name {field}");
    }
}

/// A spec the client accepted is the one the server sees and accepts: sent
/// as a `SubmitJobRequest`, decoded, converted and validated there, it is
/// unchanged, bit for bit.
pub fn check_crosses_the_wire(spec: &JobSpec) {
    let request = v1::SubmitJobRequest { name: "fuzz".to_owned(), spec: Some(spec.into()), request_id: None, ..Default::default() };
    let bytes = request.encode_to_vec();
    let decoded = v1::SubmitJobRequest::decode(bytes.as_slice()).expect("an encoded request decodes");
    let back = JobSpec::try_from(decoded.spec.expect("the spec is set"))
        .unwrap_or_else(|e| panic!("the server cannot convert a valid spec: {e}\n{spec:?}"));
    if let Err(e) = back.validate() {
        panic!("the server refuses a spec the client accepted: {e}\nsent {spec:?}\ngot {back:?}");
    }
    assert_eq!(back.data_dir, spec.data_dir, "data_dir changed on the wire");
    assert_eq!(
        v1::JobSpec::from(&back).encode_to_vec(),
        v1::JobSpec::from(spec).encode_to_vec(),
        "the spec changed on the wire:\nsent {spec:?}\ngot {back:?}"
    );
}

/// Everything a valid spec feeds must work: finite hyper-parameters, a
/// schedule for any training set at least one batch long, finite learning
/// rates and σ over the whole run, the tasks of an update and their samples.
pub fn check_valid_spec(spec: &JobSpec) {
    for (field, value) in [
        ("lr", spec.lr),
        ("momentum", spec.momentum),
        ("weight_decay", spec.weight_decay),
        ("sigma", spec.sigma),
        ("lambda", spec.lambda),
        ("eta", spec.eta),
        ("beta", spec.beta),
        ("rho", spec.rho),
    ] {
        assert!(value.is_finite(), "a valid spec has {field} = {value}");
    }
    if let LrSchedule::Step { gamma, .. } = spec.lr_schedule {
        assert!(gamma.is_finite(), "a valid spec has lr_schedule.gamma = {gamma}");
    }
    if let SigmaSchedule::CosineIncreasing { inc } = spec.sigma_schedule {
        assert!(inc.is_finite(), "a valid spec has sigma_schedule.inc = {inc}");
    }
    let batch = spec.batch_size as usize;
    // The built-in dataset's 1,000 samples, CIFAR's 50,000, MNIST's 60,000,
    // the edges around one batch, and sizes no dataset has (for overflows).
    let train_lens = [1000, 50_000, 60_000, batch, batch * 2 - 1, batch - 1, u32::MAX as usize, usize::MAX];
    for train_len in train_lens {
        check_schedule(spec, train_len);
    }
}

fn check_schedule(spec: &JobSpec, train_len: usize) {
    let schedule = match Schedule::new(spec, train_len) {
        Ok(schedule) => schedule,
        Err(e) => {
            check_spec_error(&e);
            let per_epoch = (train_len / spec.batch_size as usize) as u64;
            let overflows = per_epoch.checked_mul(u64::from(spec.epochs)).is_none();
            assert!(per_epoch == 0 || overflows, "no schedule for {train_len} samples: {e}");
            return;
        }
    };
    assert!(train_len >= spec.batch_size as usize, "a schedule with a batch larger than the training set");
    let per_epoch = schedule.updates_per_epoch;
    assert!(per_epoch >= 1);
    assert_eq!(Some(schedule.planned_updates), per_epoch.checked_mul(u64::from(spec.epochs)));
    assert!(schedule.total_updates >= 1 && schedule.total_updates <= schedule.planned_updates);
    let last = schedule.total_updates - 1;
    let steps = [0, 1, per_epoch - 1, per_epoch, last, schedule.planned_updates - 1];
    // The schedules run over the planned updates (`max_updates` only stops early).
    for step in steps.into_iter().filter(|&s| s < schedule.planned_updates) {
        let lr = schedule.lr_at(step);
        // At most the base rate, give or take rounding: warmup's division may
        // round up by an ulp, and the cosine's halving and doubling more
        // than that for a subnormal rate (3.5e-323 gives 4e-323).
        let at_most = spec.lr * (1.0 + 1e-12) + 1e-300;
        assert!(lr.is_finite() && lr >= 0.0 && lr <= at_most, "lr {lr} at step {step} of {schedule:?}");
        let sigma = schedule.sigma_at(step);
        assert!(sigma.is_finite() && sigma >= 0.0, "sigma {sigma} at step {step} of {schedule:?}");
        assert!(schedule.epoch_of(step) < u64::from(spec.epochs), "step {step} beyond the last epoch");
    }
    if train_len > MAX_PLANNED_TRAIN_LEN {
        return;
    }
    let mut sampler = (train_len <= MAX_SAMPLED_TRAIN_LEN).then(|| Sampler::new(spec, &schedule, train_len));
    for step in [0, last.min(per_epoch), last] {
        let tasks = tasks_for_step(spec, &schedule, step);
        let clean =
            if spec.method.uses_clean() || spec.method == rwp_spec::Method::Sam { spec.clean_shards } else { 0 };
        let perturbed = if spec.method.uses_perturbed() { spec.perturbed_shards } else { 0 };
        assert_eq!(tasks.len(), (clean + perturbed) as usize, "{:?} tasks of step {step}", spec.method);
        for task in &tasks {
            assert_eq!(task.step, step);
            assert!(task.shard < task.num_shards);
            assert_eq!(spec.batch_size % task.num_shards, 0);
            match task.role {
                Role::Perturbed => {
                    assert!(task.noise_seed.is_some());
                    assert_eq!(task.sigma.to_bits(), schedule.sigma_at(step).to_bits());
                }
                Role::Clean | Role::Sam => assert!(task.noise_seed.is_none() && task.sigma == 0.0),
            }
        }
        if let Some(sampler) = &mut sampler {
            for task in [tasks.first(), tasks.last()].into_iter().flatten() {
                let samples = sampler.shard(task);
                assert_eq!(samples.indices.len(), (spec.batch_size / task.num_shards) as usize);
                assert_eq!(samples.augment_seeds.len(), samples.indices.len());
                assert!(samples.indices.iter().all(|&i| (i as usize) < train_len));
            }
        }
    }
}
