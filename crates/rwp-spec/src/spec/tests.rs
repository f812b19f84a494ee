//! Tests of the job spec: validation, its messages, defaults and schedules.

use super::*;

fn base() -> JobSpec {
    JobSpec::reference(Method::MArwp)
}

/// Validates `spec`, expecting an out-of-range error on `field`; returns its Display.
fn rejects(spec: &JobSpec, field: &str) -> String {
    let err = spec.validate().expect_err(&format!("spec with bad {field} should be rejected"));
    match &err {
        SpecError::OutOfRange { field: f, .. } => assert_eq!(*f, field, "wrong field blamed: {err}"),
        other => panic!("expected OutOfRange on {field}, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(field), "Display '{text}' does not name {field}");
    text
}

#[test]
fn reference_specs_are_valid_for_every_method() {
    for m in Method::ALL {
        let spec = JobSpec::reference(m);
        assert_eq!(spec.method, m);
        assert_eq!(spec.validate(), Ok(()), "{m}");
    }
}

#[test]
fn negative_and_nan_sigma_are_rejected() {
    let mut s = base();
    s.sigma = -0.01;
    let text = rejects(&s, "sigma");
    assert!(text.contains("-0.01"), "{text}");
    s.sigma = f64::NAN;
    let text = rejects(&s, "sigma");
    assert!(text.contains("NaN"), "{text}");
    s.sigma = f64::INFINITY;
    rejects(&s, "sigma");
    s.sigma = 0.0;
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn lambda_outside_unit_interval_is_rejected() {
    let mut s = base();
    s.lambda = 1.5;
    let text = rejects(&s, "lambda");
    assert!(text.contains("1.5"), "{text}");
    s.lambda = -0.1;
    rejects(&s, "lambda");
    s.lambda = f64::NAN;
    rejects(&s, "lambda");
    for ok in [0.0, 1.0] {
        s.lambda = ok;
        assert_eq!(s.validate(), Ok(()), "lambda {ok}");
    }
}

#[test]
fn beta_of_one_is_rejected() {
    let mut s = base();
    s.beta = 1.0;
    rejects(&s, "beta");
    s.beta = -0.5;
    rejects(&s, "beta");
    s.beta = 0.0;
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn shard_counts_must_divide_the_batch() {
    let mut s = base();
    s.batch_size = 64;
    s.clean_shards = 3;
    let text = rejects(&s, "clean_shards");
    assert!(text.contains("divide"), "{text}");
    s.clean_shards = 0;
    rejects(&s, "clean_shards");
    s.clean_shards = 4;
    s.perturbed_shards = 5;
    rejects(&s, "perturbed_shards");
    s.perturbed_shards = 64;
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn momentum_must_be_below_one() {
    let mut s = base();
    s.momentum = 1.0;
    rejects(&s, "momentum");
    s.momentum = -0.1;
    rejects(&s, "momentum");
    s.momentum = 0.0;
    assert_eq!(s.validate(), Ok(()));
}

#[test]
fn nesterov_needs_momentum() {
    let mut s = base();
    s.nesterov = true;
    assert_eq!(s.validate(), Ok(()));
    s.momentum = 0.0;
    rejects(&s, "nesterov");
}

#[test]
fn sam_needs_a_positive_rho() {
    let mut s = JobSpec::reference(Method::Sam);
    s.rho = 0.0;
    rejects(&s, "rho");
    s.rho = f64::NAN;
    rejects(&s, "rho");
    // Other methods ignore rho, but it must still be a number.
    let mut s = JobSpec::reference(Method::Sgd);
    s.rho = 0.0;
    assert_eq!(s.validate(), Ok(()));
    for bad in [f64::NAN, f64::INFINITY, -0.1] {
        s.rho = bad;
        rejects(&s, "rho");
    }
}

/// One out-of-range value per case; the error must blame that field.
type Spoil = fn(&mut JobSpec);

/// Every field with a range, hit with values out of it. Fields without a
/// range are valid by their type: the destructuring below stops
/// compiling when a field is added, so that it is added here too.
#[test]
fn every_field_is_checked_and_named() {
    let JobSpec {
        method: _,           // an enum: unknown wire values are named by rwp-proto
        model: _,            // likewise
        dataset: _,          // likewise; a file dataset without data_dir: file_datasets_need_a_data_dir
        data_dir: _,         // below
        seed: _,             // every u64 is a seed
        epochs: _,           // below
        max_updates: _,      // below
        batch_size: _,       // below
        clean_shards: _,     // below
        perturbed_shards: _, // below
        independent_noise: _,
        lr: _,             // below
        momentum: _,       // below
        nesterov: _,       // below
        weight_decay: _,   // below
        lr_schedule: _,    // below: gamma and milestones
        warmup_updates: _, // below
        sigma: _,          // below
        sigma_schedule: _, // below: inc
        lambda: _,         // below
        eta: _,            // below
        beta: _,           // below
        rho: _,            // below
        augment: _,
        non_finite: _,
        gradient_encoding: _,
        model_file: _,          // below
        validation_fraction: _, // below
        data: _,                // own_data_needs_its_locations_and_fits_its_kind
    } = base();
    let cases: &[(&str, Spoil)] = &[
        ("model_file", |s| s.model = ModelKind::TorchScript),
        ("model_file", |s| s.model_file = Some(ModelFile { sha256: "ab".repeat(32), size_bytes: 1 })),
        ("model_file.sha256", |s| {
            s.model = ModelKind::TorchScript;
            s.model_file = Some(ModelFile { sha256: "../../etc/passwd".into(), size_bytes: 1 });
        }),
        ("model_file.sha256", |s| {
            s.model = ModelKind::TorchScript;
            s.model_file = Some(ModelFile { sha256: "AB".repeat(32), size_bytes: 1 });
        }),
        ("data_dir", |s| s.data_dir = Some(PathBuf::new())),
        ("data_dir", |s| s.data_dir = Some(PathBuf::from("d".repeat(MAX_DATA_DIR_BYTES + 1)))),
        ("batch_size", |s| s.batch_size = 0),
        ("batch_size", |s| s.batch_size = MAX_BATCH_SIZE + 1),
        ("epochs", |s| s.epochs = 0),
        ("epochs", |s| s.epochs = MAX_EPOCHS + 1),
        ("max_updates", |s| s.max_updates = Some(0)),
        ("max_updates", |s| s.max_updates = Some(MAX_UPDATES + 1)),
        ("warmup_updates", |s| s.warmup_updates = MAX_UPDATES + 1),
        ("clean_shards", |s| s.clean_shards = 0),
        ("clean_shards", |s| s.clean_shards = 3),
        ("clean_shards", |s| (s.batch_size, s.clean_shards) = (2048, 2048)),
        ("perturbed_shards", |s| s.perturbed_shards = 0),
        ("perturbed_shards", |s| s.perturbed_shards = 5),
        ("perturbed_shards", |s| (s.batch_size, s.perturbed_shards) = (2048, 2048)),
        ("lr", |s| s.lr = 0.0),
        ("lr", |s| s.lr = f64::NAN),
        ("lr", |s| s.lr = f64::INFINITY),
        ("momentum", |s| s.momentum = 1.0),
        ("momentum", |s| s.momentum = -0.1),
        ("momentum", |s| s.momentum = f64::NAN),
        ("nesterov", |s| (s.nesterov, s.momentum) = (true, 0.0)),
        ("weight_decay", |s| s.weight_decay = -1.0),
        ("weight_decay", |s| s.weight_decay = f64::NAN),
        ("lr_schedule.gamma", |s| s.lr_schedule = LrSchedule::Step { milestones: vec![2, 4], gamma: 0.0 }),
        ("lr_schedule.gamma", |s| s.lr_schedule = LrSchedule::Step { milestones: vec![2, 4], gamma: 1.5 }),
        ("lr_schedule.milestones", |s| s.lr_schedule = LrSchedule::Step { milestones: vec![4, 2], gamma: 0.1 }),
        ("lr_schedule.milestones", |s| s.lr_schedule = LrSchedule::Step { milestones: vec![2, 2], gamma: 0.1 }),
        ("lr_schedule.milestones", |s| {
            s.lr_schedule = LrSchedule::Step { milestones: (0..=MAX_MILESTONES as u32).collect(), gamma: 0.1 };
        }),
        ("sigma", |s| s.sigma = -0.01),
        ("sigma", |s| s.sigma = f64::INFINITY),
        ("sigma_schedule.inc", |s| s.sigma_schedule = SigmaSchedule::CosineIncreasing { inc: -1.0 }),
        ("sigma_schedule.inc", |s| s.sigma_schedule = SigmaSchedule::CosineIncreasing { inc: f64::NAN }),
        ("lambda", |s| s.lambda = 1.5),
        ("lambda", |s| s.lambda = -0.1),
        ("eta", |s| s.eta = f64::NEG_INFINITY),
        ("eta", |s| s.eta = -0.5),
        ("beta", |s| s.beta = 1.0),
        ("beta", |s| s.beta = -0.5),
        ("rho", |s| s.rho = -1.0),
        ("rho", |s| s.rho = f64::NAN),
        ("rho", |s| (s.method, s.rho) = (Method::Sam, 0.0)),
        ("validation_fraction", |s| s.validation_fraction = -0.1),
        ("validation_fraction", |s| s.validation_fraction = 0.5),
        ("validation_fraction", |s| s.validation_fraction = f64::NAN),
    ];
    for (i, (field, spoil)) in cases.iter().enumerate() {
        let mut spec = base();
        spoil(&mut spec);
        let err = spec.validate().expect_err(&format!("case {i}: a bad {field} is accepted"));
        assert!(
            matches!(&err, SpecError::OutOfRange { field: f, .. } if f == field),
            "case {i}: expected {field} to be blamed, got: {err}"
        );
        let text = err.to_string();
        assert!(text.starts_with(&format!("{field} = ")), "case {i}: '{text}' does not start with the field");
    }
}

#[test]
fn file_datasets_need_a_data_dir() {
    for dataset in [DatasetKind::Cifar10, DatasetKind::Cifar100, DatasetKind::Mnist] {
        let mut s = base();
        s.dataset = dataset;
        let err = s.validate().unwrap_err();
        assert_eq!(err, SpecError::MissingDataDir { dataset });
        let text = err.to_string();
        assert!(text.contains("data_dir") && text.contains(dataset.name()), "{text}");
        s.data_dir = Some(PathBuf::from("/data"));
        assert_eq!(s.validate(), Ok(()));
    }
}

fn schedule(spec: &JobSpec, train_len: usize) -> Schedule {
    Schedule::new(spec, train_len).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn schedule_counts_updates_and_honours_max_updates() {
    let mut s = base();
    s.batch_size = 10;
    s.epochs = 3;
    // 105 samples: 10 full batches, the remainder is dropped.
    let sch = schedule(&s, 105);
    assert_eq!((sch.updates_per_epoch, sch.planned_updates, sch.total_updates), (10, 30, 30));
    assert_eq!((sch.epoch_of(0), sch.epoch_of(9), sch.epoch_of(10), sch.epoch_of(29)), (0, 0, 1, 2));
    s.max_updates = Some(7);
    let sch = schedule(&s, 105);
    assert_eq!((sch.planned_updates, sch.total_updates), (30, 7));
    s.max_updates = Some(1000);
    assert_eq!(schedule(&s, 105).total_updates, 30);
    let err = Schedule::new(&s, 9).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
}

/// Found by the `job_file` fuzz target (fuzz/): the README's job file with
/// `epochs = 400`, planned over a training set of `usize::MAX` samples,
/// overflowed `updates_per_epoch * epochs` (a panic in debug builds, a
/// wrapped update count in release ones). No dataset is that large, but
/// the schedule is total now.
#[test]
fn an_update_count_beyond_64_bits_is_an_error_not_a_panic() {
    let mut s = base();
    s.batch_size = 256;
    s.epochs = 400;
    let err = Schedule::new(&s, usize::MAX).unwrap_err();
    assert!(matches!(err, SpecError::OutOfRange { field: "epochs", .. }), "{err:?}");
    assert_eq!(err.to_string(), "epochs = 400 is out of range: epochs times the updates per epoch must fit in 64 bits");
    s.epochs = 1;
    assert_eq!(schedule(&s, usize::MAX).planned_updates, usize::MAX as u64 / 256);
}

/// Found by the `proto_job_spec` fuzz target (fuzz/): lr = 1.8e307 with
/// 59 warmup updates validated, and the warmup's `lr · (t + 1)`
/// overflowed to an infinite learning rate at step 9.
#[test]
fn a_learning_rate_whose_warmup_overflows_is_refused() {
    let mut s = base();
    s.lr = 1.797_693_134_862_571_5e307;
    s.warmup_updates = 59;
    s.lr_schedule = LrSchedule::Step { milestones: vec![1, 2, 5], gamma: 0.5 };
    let text = rejects(&s, "lr");
    assert!(text.contains("warmup_updates"), "{text}");
    s.warmup_updates = 0;
    assert_eq!(s.validate(), Ok(()));
    let sched = schedule(&s, 1000);
    assert!((0..sched.planned_updates).all(|t| sched.lr_at(t).is_finite()));
    s.lr = 1e300;
    s.warmup_updates = 1000;
    assert_eq!(s.validate(), Ok(()));
    assert!(schedule(&s, 1000).lr_at(998).is_finite());
}

/// Found with a hand-written input to the `job_file` fuzz target
/// (fuzz/), which checks that σ stays finite: σ = 1e300 with a
/// cosine-increasing schedule of inc = 1e300 validated, and σ became
/// infinite from the first update on.
#[test]
fn a_sigma_schedule_that_overflows_is_refused() {
    let mut s = JobSpec::reference(Method::Arwp);
    s.sigma = 1e300;
    s.sigma_schedule = SigmaSchedule::CosineIncreasing { inc: 1e300 };
    let text = rejects(&s, "sigma_schedule.inc");
    assert!(text.contains("sigma times (1 + inc) must be finite"), "{text}");
    // inc alone overflows when doubled.
    s.sigma = 0.001;
    s.sigma_schedule = SigmaSchedule::CosineIncreasing { inc: f64::MAX };
    rejects(&s, "sigma_schedule.inc");
    s.sigma_schedule = SigmaSchedule::CosineIncreasing { inc: 1e300 };
    assert_eq!(s.validate(), Ok(()));
    let sched = schedule(&s, 1000);
    assert!((0..sched.planned_updates).all(|t| sched.sigma_at(t).is_finite()));
}

#[test]
fn cosine_per_update_anneals_every_update() {
    let mut s = base();
    s.lr = 0.2;
    s.batch_size = 10;
    s.epochs = 4;
    s.lr_schedule = LrSchedule::CosinePerUpdate;
    let sch = schedule(&s, 100); // T = 40
    assert_eq!(sch.planned_updates, 40);
    assert_eq!(sch.lr_at(0), 0.2);
    assert!(close(sch.lr_at(20), 0.1), "{}", sch.lr_at(20));
    for t in 0..40u64 {
        let want = 0.2 * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / 40.0).cos());
        assert!(close(sch.lr_at(t), want), "t={t}: {} vs {want}", sch.lr_at(t));
    }
    assert!(sch.lr_at(1) < sch.lr_at(0));
    assert!(sch.lr_at(39) > 0.0 && sch.lr_at(39) < 0.001);
    assert!(sch.lr_at(40).abs() < 1e-15);
}

#[test]
fn cosine_per_epoch_is_constant_within_an_epoch() {
    let mut s = base();
    s.lr = 0.1;
    s.batch_size = 10;
    s.epochs = 4;
    s.lr_schedule = LrSchedule::CosinePerEpoch;
    let sch = schedule(&s, 100); // 10 updates per epoch
    for epoch in 0..4u64 {
        let want = 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / 4.0).cos());
        for t in epoch * 10..(epoch + 1) * 10 {
            assert!(close(sch.lr_at(t), want), "t={t}: {} vs {want}", sch.lr_at(t));
        }
    }
    assert_eq!(sch.lr_at(0), 0.1);
    assert_eq!(sch.lr_at(9), 0.1);
    assert!(close(sch.lr_at(20), 0.05));
    assert!(sch.lr_at(10) < sch.lr_at(9));
}

#[test]
fn step_schedule_multiplies_by_gamma_at_milestones() {
    let mut s = base();
    s.lr = 1.0;
    s.batch_size = 10;
    s.epochs = 6;
    s.lr_schedule = LrSchedule::Step { milestones: vec![2, 4], gamma: 0.1 };
    let sch = schedule(&s, 30); // 3 updates per epoch
    let want = [1.0, 1.0, 0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1];
    for (epoch, &w) in want.iter().enumerate() {
        for t in 3 * epoch as u64..3 * (epoch as u64 + 1) {
            assert!(close(sch.lr_at(t), w), "epoch {epoch} t={t}: {} vs {w}", sch.lr_at(t));
        }
    }
}

#[test]
fn constant_schedule_with_linear_warmup() {
    let mut s = base();
    s.lr = 0.4;
    s.batch_size = 10;
    s.epochs = 2;
    s.lr_schedule = LrSchedule::Constant;
    s.warmup_updates = 4;
    let sch = schedule(&s, 100);
    let want = [0.1, 0.2, 0.3, 0.4, 0.4, 0.4];
    for (t, &w) in want.iter().enumerate() {
        assert!(close(sch.lr_at(t as u64), w), "t={t}: {} vs {w}", sch.lr_at(t as u64));
    }
    assert_eq!(sch.lr_at(19), 0.4);
}

#[test]
fn warmup_scales_the_underlying_schedule() {
    let mut s = base();
    s.lr = 0.1;
    s.batch_size = 10;
    s.epochs = 4;
    s.lr_schedule = LrSchedule::CosinePerUpdate;
    s.warmup_updates = 5;
    let sch = schedule(&s, 100);
    for t in 0..5u64 {
        let cos = 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / 40.0).cos());
        let want = cos * (t + 1) as f64 / 5.0;
        assert!(close(sch.lr_at(t), want), "t={t}: {} vs {want}", sch.lr_at(t));
    }
    let cos5 = 0.1 * 0.5 * (1.0 + (std::f64::consts::PI * 5.0 / 40.0).cos());
    assert!(close(sch.lr_at(5), cos5));
}

#[test]
fn sigma_schedules() {
    let mut s = base();
    s.sigma = 0.002;
    s.batch_size = 10;
    s.epochs = 4;
    let sch = schedule(&s, 100);
    assert_eq!(sch.sigma_at(0), 0.002);
    assert_eq!(sch.sigma_at(39), 0.002);

    s.sigma_schedule = SigmaSchedule::CosineIncreasing { inc: 10.0 };
    let sch = schedule(&s, 100); // T = 40
    assert!(close(sch.sigma_at(0), 0.002), "{}", sch.sigma_at(0));
    assert!(close(sch.sigma_at(20), 0.002 * (1.0 + 10.0 / 2.0)), "{}", sch.sigma_at(20));
    assert!(close(sch.sigma_at(40), 0.002 * (1.0 + 10.0)), "{}", sch.sigma_at(40));
    for t in 0..40u64 {
        assert!(sch.sigma_at(t + 1) > sch.sigma_at(t), "sigma increases at t={t}");
    }
    // max_updates does not shorten the schedule's horizon.
    s.max_updates = Some(5);
    let short = schedule(&s, 100);
    assert_eq!(short.sigma_at(20), sch.sigma_at(20));
}

#[test]
fn max_updates_does_not_change_the_lr_horizon() {
    let mut s = base();
    s.batch_size = 10;
    s.epochs = 4;
    s.lr_schedule = LrSchedule::CosinePerUpdate;
    let full = schedule(&s, 100);
    s.max_updates = Some(3);
    let short = schedule(&s, 100);
    for t in 0..3 {
        assert_eq!(short.lr_at(t), full.lr_at(t));
    }
}

fn full_spec() -> JobSpec {
    let mut s = JobSpec::reference(Method::Arwp);
    s.dataset = DatasetKind::Cifar100;
    s.data_dir = Some(PathBuf::from("/data/cifar"));
    s.model = ModelKind::Wrn16_8;
    s.max_updates = Some(123);
    s.seed = u64::MAX;
    s.lr_schedule = LrSchedule::Step { milestones: vec![60, 120, 160], gamma: 0.2 };
    s.independent_noise = true;
    s.nesterov = true;
    s
}

#[test]
fn spec_round_trips_through_json() {
    for spec in [full_spec(), JobSpec::reference(Method::Sgd), JobSpec::reference(Method::Arwp)] {
        let json = serde_json::to_string(&spec).unwrap();
        let back: JobSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec, "{json}");
    }
    let json = serde_json::to_string(&full_spec()).unwrap();
    assert!(json.contains(r#""method":"arwp""#), "{json}");
    assert!(json.contains(r#""model":"wrn16-8""#), "{json}");
    assert!(json.contains(r#""lr_schedule":{"kind":"step""#), "{json}");
    assert!(json.contains(r#""sigma_schedule":{"kind":"cosine-increasing","inc":10.0}"#), "{json}");
    // Optional fields are omitted when unset, and default when absent.
    let plain = serde_json::to_string(&JobSpec::reference(Method::Sgd)).unwrap();
    assert!(!plain.contains("data_dir") && !plain.contains("max_updates"), "{plain}");
}

#[test]
fn spec_round_trips_through_toml() {
    // TOML integers are i64, so this spec keeps its seed within i64 (a
    // seed above i64::MAX round-trips through JSON only).
    let mut big = full_spec();
    big.seed = i64::MAX as u64;
    for spec in [big, JobSpec::reference(Method::MRwp)] {
        let text = toml::to_string(&spec).unwrap();
        let back: JobSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, spec, "{text}");
    }
}

#[test]
fn hand_written_toml_parses() {
    let text = r#"
        method = "m-arwp"
        model = "small-cnn"
        dataset = "synthetic"
        seed = 7
        epochs = 2
        batch_size = 32
        clean_shards = 2
        perturbed_shards = 4
        independent_noise = false
        lr = 0.05
        momentum = 0.9
        nesterov = false
        weight_decay = 0.0005
        warmup_updates = 0
        sigma = 0.01
        lambda = 0.5
        eta = 0.1
        beta = 0.99
        rho = 0.05
        augment = false
        lr_schedule = { kind = "cosine-per-update" }
        sigma_schedule = { kind = "constant" }
    "#;
    let spec: JobSpec = toml::from_str(text).unwrap();
    assert_eq!(spec.method, Method::MArwp);
    assert_eq!(spec.lr_schedule, LrSchedule::CosinePerUpdate);
    assert_eq!(spec.data_dir, None);
    assert_eq!(spec.max_updates, None);
    assert_eq!(spec.validate(), Ok(()));
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let mut value = serde_json::to_value(JobSpec::reference(Method::Rwp)).unwrap();
    value.as_object_mut().unwrap().insert("sigmaa".to_owned(), serde_json::json!(0.1));
    let err = serde_json::from_value::<JobSpec>(value).unwrap_err().to_string();
    assert!(err.contains("unknown field") && err.contains("sigmaa"), "{err}");

    let text = toml::to_string(&JobSpec::reference(Method::Rwp)).unwrap();
    let err = toml::from_str::<JobSpec>(&format!("lamda = 0.3\n{text}")).unwrap_err().to_string();
    assert!(err.contains("lamda"), "{err}");

    // Also inside the tagged schedule enums.
    let mut value = serde_json::to_value(JobSpec::reference(Method::Rwp)).unwrap();
    value["lr_schedule"] = serde_json::json!({"kind": "step", "milestones": [1], "gamma": 0.1, "gama": 0.2});
    let err = serde_json::from_value::<JobSpec>(value).unwrap_err().to_string();
    assert!(err.contains("gama"), "{err}");
}

#[test]
fn unknown_enum_values_are_rejected() {
    let mut value = serde_json::to_value(JobSpec::reference(Method::Rwp)).unwrap();
    value["method"] = serde_json::json!("adam");
    let err = serde_json::from_value::<JobSpec>(value).unwrap_err().to_string();
    assert!(err.contains("adam"), "{err}");
    let mut value = serde_json::to_value(JobSpec::reference(Method::Rwp)).unwrap();
    value.as_object_mut().unwrap().remove("sigma");
    let err = serde_json::from_value::<JobSpec>(value).unwrap_err().to_string();
    assert!(err.contains("sigma"), "missing field: {err}");
}

#[test]
fn schedule_names_round_trip_and_unknown_ones_list_the_names() {
    for name in LrSchedule::NAMES {
        let schedule = LrSchedule::from_name(name, &[3], 0.5).unwrap();
        assert_eq!(schedule.name(), name);
        // The name is serde's `kind`, so job files and flags agree.
        let json = serde_json::to_value(&schedule).unwrap();
        assert_eq!(json["kind"], name);
    }
    for name in SigmaSchedule::NAMES {
        let schedule = SigmaSchedule::from_name(name, 2.0).unwrap();
        assert_eq!(schedule.name(), name);
        assert_eq!(serde_json::to_value(&schedule).unwrap()["kind"], name);
    }
    assert_eq!(LrSchedule::from_name("cosine-epoch", &[], 0.1).unwrap(), LrSchedule::CosinePerEpoch);
    assert_eq!(SigmaSchedule::from_name("cosine-inc", 4.0).unwrap(), SigmaSchedule::CosineIncreasing { inc: 4.0 });
    assert_eq!(
        LrSchedule::from_name("linear", &[], 0.1).unwrap_err().to_string(),
        "unknown lr schedule 'linear' (expected one of: constant, step, cosine-per-update, cosine-per-epoch)"
    );
    assert_eq!(
        SigmaSchedule::from_name("cosine", 1.0).unwrap_err().to_string(),
        "unknown sigma schedule 'cosine' (expected one of: constant, cosine-increasing)"
    );
}

#[test]
fn schedule_flags_apply_or_name_what_they_cannot_apply_to() {
    let flags =
        |lr: Option<&str>, milestones: Option<Vec<u32>>, gamma: Option<f64>, sigma: Option<&str>, inc| ScheduleFlags {
            lr_schedule: lr.map(str::to_owned),
            milestones,
            lr_gamma: gamma,
            sigma_schedule: sigma.map(str::to_owned),
            sigma_inc: inc,
        };
    let (mut lr, mut sigma) = (LrSchedule::CosinePerEpoch, SigmaSchedule::Constant);
    flags(Some("step"), Some(vec![2, 4]), None, Some("cosine-increasing"), None).apply(&mut lr, &mut sigma).unwrap();
    assert_eq!(lr, LrSchedule::Step { milestones: vec![2, 4], gamma: 0.1 });
    assert_eq!(sigma, SigmaSchedule::CosineIncreasing { inc: 10.0 });
    // Settings alone change the schedule the job already has.
    flags(None, None, Some(0.5), None, Some(3.0)).apply(&mut lr, &mut sigma).unwrap();
    assert_eq!(lr, LrSchedule::Step { milestones: vec![2, 4], gamma: 0.5 });
    assert_eq!(sigma, SigmaSchedule::CosineIncreasing { inc: 3.0 });
    // ... and are refused where they would be ignored.
    let (mut lr, mut sigma) = (LrSchedule::CosinePerEpoch, SigmaSchedule::Constant);
    let e = flags(None, Some(vec![3]), None, None, None).apply(&mut lr, &mut sigma).unwrap_err();
    assert!(e.contains("cosine-per-epoch") && e.contains("add --lr-schedule step"), "{e}");
    let e = flags(Some("constant"), None, Some(0.2), None, None).apply(&mut lr, &mut sigma).unwrap_err();
    assert!(e.contains("--lr-schedule step, not --lr-schedule constant"), "{e}");
    let e = flags(None, None, None, None, Some(2.0)).apply(&mut lr, &mut sigma).unwrap_err();
    assert!(e.contains("add --sigma-schedule cosine-increasing"), "{e}");
    let e = flags(Some("cosine"), None, None, None, None).apply(&mut lr, &mut sigma).unwrap_err();
    assert!(e.starts_with("--lr-schedule: unknown lr schedule 'cosine' (expected one of: constant, step"), "{e}");
    assert_eq!((lr, sigma), (LrSchedule::CosinePerEpoch, SigmaSchedule::Constant), "nothing applied on an error");
}

#[test]
fn an_update_cap_of_zero_in_flags_lifts_the_cap() {
    let lift = Extension::from_flags(None, Some(0));
    assert_eq!(lift, Extension { epochs: None, max_updates: Some(None) });
    assert_eq!(Extension::from_flags(Some(4), Some(12)), Extension { epochs: Some(4), max_updates: Some(Some(12)) });
    assert_eq!(Extension::from_flags(None, None), Extension::default());
    for flag in [None, Some(0), Some(12)] {
        assert_eq!(Extension::from_flags(None, flag).max_updates_flag(), flag, "round trip of {flag:?}");
    }
    let mut spec = base();
    spec.max_updates = Some(5);
    lift.apply(&mut spec);
    assert_eq!(spec.max_updates, None);
}

#[test]
fn own_data_needs_its_locations_and_fits_its_kind() {
    let data = || crate::DataSource {
        train: "s3://bucket/train-{0000..0003}.tar".into(),
        test: "/data/test".into(),
        validation: None,
        image_size: 224,
        transforms: crate::Transforms::Imagenet,
        mean: None,
        std: None,
        bad_samples: crate::BadSamples::Skip,
        summary: None,
    };
    let mut s = base();
    s.dataset = DatasetKind::TarShards;
    s.data = Some(data());
    assert_eq!(s.validate(), Ok(()));
    let rules = |edit: Spoil| {
        let mut s = base();
        s.dataset = DatasetKind::ImageFolder;
        s.data = Some(data());
        edit(&mut s);
        s.validate().unwrap_err().to_string()
    };
    let cases: Vec<(Spoil, &str)> = vec![
        (|s| s.data = None, "data = none is out of range: must give the data's locations"),
        (
            |s| {
                s.dataset = DatasetKind::Cifar10;
                s.data_dir = Some("/cifar".into());
            },
            "data = cifar10 is out of range: is only for datasets",
        ),
        (|s| s.data_dir = Some("/x".into()), "data_dir = image-folder is out of range: must be unset"),
        (
            |s| {
                s.validation_fraction = 0.1;
                s.data.as_mut().unwrap().validation = Some("/v".into());
            },
            "validation_fraction = 0.1 is out of range: must be 0 when data.validation",
        ),
        (|s| s.data.as_mut().unwrap().image_size = 4, "data.image_size = 4 is out of range"),
        (|s| s.data.as_mut().unwrap().train = "ftp://x/y".into(), "data.train = \"ftp://x/y\""),
        (|s| s.data.as_mut().unwrap().test = String::new(), "data.test = \"\" is out of range: must not be empty"),
        (
            |s| s.data.as_mut().unwrap().mean = Some(vec![0.5; 3]),
            "data.std = None is out of range: must be set together with data.mean",
        ),
        (
            |s| {
                let d = s.data.as_mut().unwrap();
                (d.mean, d.std) = (Some(vec![0.5]), Some(vec![0.2]));
            },
            "data.mean = [0.5] is out of range: must hold 3 values",
        ),
        (
            |s| {
                let d = s.data.as_mut().unwrap();
                (d.mean, d.std) = (Some(vec![0.5; 3]), Some(vec![0.2, 0.0, 0.1]));
            },
            "data.std = [0.2, 0.0, 0.1] is out of range: must be finite (and > 0 for std)",
        ),
        (
            |s| {
                s.dataset = DatasetKind::Tensors;
                s.augment = true;
            },
            "augment = true is out of range: must be false for tensors",
        ),
    ];
    for (edit, says) in cases {
        let error = rules(edit);
        assert!(error.starts_with(says), "{error}");
    }
}
