use super::*;
use crate::{Method, ModelKind};

fn base() -> JobSpec {
    let mut s = JobSpec::reference(Method::MArwp);
    s.model = ModelKind::Mlp;
    s.epochs = 4;
    s.validation_fraction = 0.2;
    s
}

fn num(x: f64) -> ParamValue {
    ParamValue::Number(x)
}

fn grid(params: Vec<(&str, Vec<ParamValue>)>) -> SweepSpec {
    SweepSpec {
        base: base(),
        search: Search {
            mode: SearchMode::Grid,
            n_trials: None,
            seed: 0,
            params: params
                .into_iter()
                .map(|(f, values)| SearchParam { field: f.into(), values, distribution: None, low: None, high: None })
                .collect(),
        },
        concurrency: 2,
        early_stopping: None,
    }
}

fn ranged(field: &str, d: Distribution, low: f64, high: f64) -> SearchParam {
    SearchParam { field: field.into(), values: vec![], distribution: Some(d), low: Some(low), high: Some(high) }
}

fn random(params: Vec<SearchParam>, n: u32, seed: u64) -> SweepSpec {
    let mut s = grid(vec![]);
    s.search = Search { mode: SearchMode::Random, n_trials: Some(n), seed, params };
    s
}

#[test]
fn a_grid_is_the_cartesian_product_first_parameter_slowest() {
    let s = grid(vec![
        ("sigma", vec![num(0.001), num(0.01), num(0.1)]),
        ("method", vec![ParamValue::Text("m-rwp".into()), ParamValue::Text("m-arwp".into())]),
    ]);
    let trials = s.trials().unwrap();
    assert_eq!(trials.len(), 6);
    let got: Vec<(f64, Method)> = trials.iter().map(|t| (t.spec.sigma, t.spec.method)).collect();
    assert_eq!(
        got,
        vec![
            (0.001, Method::MRwp),
            (0.001, Method::MArwp),
            (0.01, Method::MRwp),
            (0.01, Method::MArwp),
            (0.1, Method::MRwp),
            (0.1, Method::MArwp),
        ]
    );
    assert!(trials.iter().enumerate().all(|(i, t)| t.index as usize == i));
    assert_eq!(describe(&trials[3].params), "sigma = 0.01, method = m-arwp");
    // Everything not searched is the base's.
    assert!(trials.iter().all(|t| t.spec.lr == base().lr && t.spec.validation_fraction == 0.2));
}

#[test]
fn integer_nested_and_flag_fields_can_be_searched() {
    let s = grid(vec![
        ("batch_size", vec![num(32.0), num(64.0)]),
        ("epochs", vec![num(3.0)]),
        ("nesterov", vec![ParamValue::Flag(true)]),
    ]);
    let trials = s.trials().unwrap();
    assert_eq!(trials.iter().map(|t| t.spec.batch_size).collect::<Vec<_>>(), vec![32, 64]);
    assert!(trials.iter().all(|t| t.spec.epochs == 3 && t.spec.nesterov));

    let mut s = grid(vec![("lr_schedule.gamma", vec![num(0.1), num(0.5)])]);
    s.base.lr_schedule = crate::LrSchedule::Step { milestones: vec![2], gamma: 0.2 };
    let trials = s.trials().unwrap();
    assert_eq!(trials[1].spec.lr_schedule, crate::LrSchedule::Step { milestones: vec![2], gamma: 0.5 });
}

#[test]
fn seeded_random_search_is_reproducible_and_within_bounds() {
    let params = || {
        vec![
            ranged("sigma", Distribution::LogUniform, 1e-3, 3e-2),
            ranged("lambda", Distribution::Uniform, 0.2, 0.8),
            ranged("batch_size", Distribution::IntUniform, 16.0, 20.0),
            SearchParam {
                field: "method".into(),
                values: vec![ParamValue::Text("m-rwp".into()), ParamValue::Text("m-arwp".into())],
                distribution: None,
                low: None,
                high: None,
            },
        ]
    };
    let mut spec = random(params(), 400, 7);
    spec.base.clean_shards = 1;
    spec.base.perturbed_shards = 1;
    let a = spec.trials().unwrap();
    assert_eq!(a, spec.trials().unwrap(), "the same seed gives the same trials");
    assert_eq!(a.len(), 400);
    let mut other = spec.clone();
    other.search.seed = 8;
    assert_ne!(a, other.trials().unwrap(), "another seed, other trials");

    let sigmas: Vec<f64> = a.iter().map(|t| t.spec.sigma).collect();
    assert!(sigmas.iter().all(|s| (1e-3..=3e-2).contains(s)), "log-uniform within bounds");
    // Log-uniform: about as many draws below the geometric middle as above
    // it (a uniform draw would put ~85% above it).
    let middle = (1e-3f64 * 3e-2).sqrt();
    let below = sigmas.iter().filter(|&&s| s < middle).count();
    assert!((150..=250).contains(&below), "{below} of 400 below the geometric middle");
    assert!(a.iter().all(|t| (0.2..=0.8).contains(&t.spec.lambda)));
    let sizes: std::collections::BTreeSet<u32> = a.iter().map(|t| t.spec.batch_size).collect();
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), vec![16, 17, 18, 19, 20], "int-uniform covers low..=high");
    let methods: std::collections::BTreeSet<String> = a.iter().map(|t| t.spec.method.to_string()).collect();
    assert_eq!(methods.len(), 2);
}

#[test]
fn bad_sweeps_are_refused_naming_the_field() {
    let refuse = |s: SweepSpec, needle: &str| {
        let e = s.trials().unwrap_err().to_string();
        assert!(e.contains(needle), "'{e}' does not mention '{needle}'");
    };
    let mut s = grid(vec![("sigma", vec![num(0.01)])]);
    s.base.validation_fraction = 0.0;
    refuse(s, "base.validation_fraction");
    refuse(grid(vec![("sigmaa", vec![num(0.01)])]), "sigmaa");
    refuse(grid(vec![("sigma", vec![num(0.01), num(-1.0)])]), "trial 1 (sigma = -1): sigma = -1 is out of range");
    refuse(grid(vec![("batch_size", vec![num(32.5)])]), "batch_size");
    refuse(grid(vec![("method", vec![ParamValue::Text("adam".into())])]), "adam");
    refuse(grid(vec![("validation_fraction", vec![num(0.3)])]), "cannot be searched");
    refuse(grid(vec![("sigma", vec![])]), "search.param[0] (sigma): values must not be empty");
    refuse(grid(vec![]), "search.param");
    refuse(grid(vec![("sigma", vec![num(0.01)]), ("sigma", vec![num(0.1)])]), "searched twice");
    let mut s = grid(vec![("sigma", vec![num(0.01)])]);
    s.concurrency = 0;
    refuse(s, "concurrency");
    refuse(random(vec![ranged("sigma", Distribution::LogUniform, 0.0, 1.0)], 3, 0), "low > 0");
    refuse(random(vec![ranged("sigma", Distribution::Uniform, 1.0, 0.5)], 3, 0), "low <= high");
    let mut s = random(vec![ranged("sigma", Distribution::Uniform, 0.0, 0.5)], 3, 0);
    s.search.n_trials = None;
    refuse(s, "search.n_trials");
    let mut s = grid(vec![("sigma", vec![num(0.01)])]);
    s.early_stopping = Some(EarlyStopping { rungs: vec![2, 1], reduction_factor: 3.0, min_validation_accuracy: None });
    refuse(s.clone(), "early_stopping.rungs");
    s.early_stopping = Some(EarlyStopping { rungs: vec![1], reduction_factor: 1.0, min_validation_accuracy: None });
    refuse(s, "early_stopping.reduction_factor");
    let many = (0..1001).map(|i| num(f64::from(i) * 1e-4)).collect();
    refuse(grid(vec![("sigma", many)]), "at most 1000");
}

#[test]
fn sweep_specs_round_trip_through_toml_and_json() {
    let mut spec = random(
        vec![
            ranged("sigma", Distribution::LogUniform, 0.003, 0.1),
            SearchParam {
                field: "epochs".into(),
                values: vec![num(2.0), num(3.0)],
                distribution: None,
                low: None,
                high: None,
            },
        ],
        4,
        3,
    );
    spec.early_stopping =
        Some(EarlyStopping { rungs: vec![1, 2], reduction_factor: 3.0, min_validation_accuracy: None });
    let text = toml::to_string(&spec).unwrap();
    let back: SweepSpec = toml::from_str(&text).unwrap();
    assert_eq!(back, spec, "{text}");
    let trials = back.trials().unwrap();
    assert_eq!(trials.len(), 4);
    assert!(trials.iter().all(|t| [2, 3].contains(&t.spec.epochs)));
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<SweepSpec>(&json).unwrap(), spec);
    // The reduction factor defaults to 3.
    let es: EarlyStopping = toml::from_str("rungs = [1, 2]").unwrap();
    assert_eq!(es.reduction_factor, 3.0);
}

fn asha(rf: f64) -> EarlyStopping {
    EarlyStopping { rungs: vec![1, 2, 4], reduction_factor: rf, min_validation_accuracy: None }
}

#[test]
fn asha_goes_on_while_too_few_trials_reached_the_rung() {
    let es = asha(3.0);
    assert_eq!(es.decide(1, 0.1, &[]), Decision::Continue);
    assert_eq!(es.decide(1, 0.1, &[0.9]), Decision::Continue);
}

#[test]
fn asha_keeps_the_top_third_of_the_trials_at_a_rung() {
    let es = asha(3.0);
    // Three at the rung: only the best goes on.
    assert_eq!(es.decide(2, 0.9, &[0.5, 0.6]), Decision::Continue);
    let Decision::Stop { reason } = es.decide(2, 0.55, &[0.5, 0.9]) else { panic!("should stop") };
    assert_eq!(
        reason,
        "stopped early at rung epoch 2: validation accuracy 0.5500 below the rung's cut 0.9000 \
         (the best 1 of 3 trials go on, η = 3)"
    );
    // Six at the rung: the best two go on.
    let others = [0.2, 0.3, 0.8, 0.6, 0.4];
    assert_eq!(es.decide(2, 0.7, &others), Decision::Continue);
    assert!(matches!(es.decide(2, 0.5, &others), Decision::Stop { .. }));
    // A tie with the cut goes on.
    assert_eq!(es.decide(2, 0.8, &[0.8, 0.1]), Decision::Continue);
}

#[test]
fn asha_stops_non_finite_and_hopeless_trials_at_once() {
    let mut es = asha(3.0);
    assert!(matches!(es.decide(1, f64::NAN, &[]), Decision::Stop { .. }));
    es.min_validation_accuracy = Some(0.2);
    let Decision::Stop { reason } = es.decide(1, 0.11, &[]) else { panic!("should stop") };
    assert!(reason.contains("below the minimum 0.2000"), "{reason}");
    assert_eq!(es.decide(1, 0.21, &[]), Decision::Continue);
}

#[test]
fn the_rung_reached_is_the_highest_unjudged_one_at_or_below_the_epoch() {
    let es = asha(3.0);
    assert_eq!(es.rung_reached(0, |_| false), None);
    assert_eq!(es.rung_reached(1, |_| false), Some(1));
    assert_eq!(es.rung_reached(3, |_| false), Some(2));
    assert_eq!(es.rung_reached(3, |r| r == 2), Some(1));
    assert_eq!(es.rung_reached(2, |r| r <= 2), None);
    assert_eq!(es.rung_reached(9, |_| false), Some(4));
}

#[test]
fn the_best_trial_is_chosen_by_validation_accuracy_never_test_accuracy() {
    let score = |index, v: Option<f64>, t: Option<f64>| TrialScore { index, validation_accuracy: v, test_accuracy: t };
    // Test accuracy ranks the trials the other way round.
    let scores = [
        score(0, Some(0.70), Some(0.95)),
        score(1, Some(0.90), Some(0.60)),
        score(2, Some(0.80), Some(0.80)),
        score(3, None, Some(0.99)),
        score(4, Some(f64::NAN), Some(0.99)),
    ];
    assert_eq!(rank(&scores), vec![1, 2, 0, 3, 4]);
    assert_eq!(best(&scores), Some(1));
    // Ties go to the lower index.
    assert_eq!(best(&[score(5, Some(0.5), None), score(2, Some(0.5), None)]), Some(2));
    assert_eq!(best(&[score(0, None, Some(1.0))]), None);
}

#[test]
fn searched_schedules_use_the_names_and_never_serde_words() {
    let text = |s: &str| ParamValue::Text(s.to_owned());
    let set = |field: &str, v: ParamValue| apply(&base(), &[(field.to_owned(), v)]);
    // A kind by name; the base's keys the new kind does not take are dropped.
    let spec = set("lr_schedule.kind", text("cosine-per-update")).unwrap();
    assert_eq!(spec.lr_schedule, LrSchedule::CosinePerUpdate);
    let mut stepped = base();
    stepped.lr_schedule = LrSchedule::Step { milestones: vec![2], gamma: 0.5 };
    let spec = apply(&stepped, &[("lr_schedule.kind".into(), text("cosine-per-epoch"))]).unwrap();
    assert_eq!(spec.lr_schedule, LrSchedule::CosinePerEpoch);
    let spec = apply(&stepped, &[("lr_schedule.gamma".into(), ParamValue::Number(0.2))]).unwrap();
    assert_eq!(spec.lr_schedule, LrSchedule::Step { milestones: vec![2], gamma: 0.2 });
    let spec = set("sigma_schedule.kind", text("cosine-increasing")).err();
    assert_eq!(
        spec.as_deref(),
        Some("sigma_schedule.kind = \"cosine-increasing\" needs sigma_schedule.inc: set it in the base job or search it too")
    );
    for (field, value, want) in [
        (
            "lr_schedule.kind",
            text("cosine"),
            "lr_schedule.kind: unknown lr schedule 'cosine' (expected one of: constant, step, cosine-per-update, \
             cosine-per-epoch)",
        ),
        (
            "sigma_schedule.kind",
            text("cosine-inc"),
            "sigma_schedule.kind: unknown sigma schedule 'cosine-inc' (expected one of: constant, cosine-increasing)",
        ),
        ("lr_schedule", text("constant"), "lr_schedule: a sweep searches a schedule's fields, e.g. lr_schedule.kind"),
        (
            "lr_schedule.gamma",
            ParamValue::Number(0.1),
            "lr_schedule.gamma: lr_schedule kind \"cosine-per-epoch\" has no gamma (it takes only kind)",
        ),
    ] {
        let e = set(field, value).unwrap_err();
        assert!(e.starts_with(want), "{field}: {e}");
        for internal in ["internally tagged", "variant", "LrSchedule", "SigmaSchedule"] {
            assert!(!e.contains(internal), "{field}: {e}");
        }
    }
}
