//! Job specs (their enums and schedules) and sweep specs.

use std::path::PathBuf;

use rwp_spec::sweep::{Distribution, EarlyStopping, ParamValue, Search, SearchMode, SearchParam, SweepSpec};
use rwp_spec::{
    BadSamples, DataReport, DataSource, DataSummary, DatasetKind, GradientEncoding, JobSpec, LrSchedule, Method,
    ModelFile, ModelKind, NonFinitePolicy, SigmaSchedule, SplitReport, Transforms, UnreadableSample,
};

use super::{missing, unknown, ConversionError};
use crate::v1;

impl From<Method> for v1::Method {
    fn from(m: Method) -> Self {
        match m {
            Method::Sgd => v1::Method::Sgd,
            Method::Sam => v1::Method::Sam,
            Method::Rwp => v1::Method::Rwp,
            Method::Arwp => v1::Method::Arwp,
            Method::MRwp => v1::Method::MRwp,
            Method::MArwp => v1::Method::MArwp,
        }
    }
}

/// Decodes a wire enum value, naming the field when unset or unknown.
pub fn method_from_wire(value: i32) -> Result<Method, ConversionError> {
    {
        Ok(match v1::Method::try_from(value).map_err(|_| unknown("spec.method", value))? {
            v1::Method::Unspecified => return Err(missing("spec.method")),
            v1::Method::Sgd => Method::Sgd,
            v1::Method::Sam => Method::Sam,
            v1::Method::Rwp => Method::Rwp,
            v1::Method::Arwp => Method::Arwp,
            v1::Method::MRwp => Method::MRwp,
            v1::Method::MArwp => Method::MArwp,
        })
    }
}

impl From<ModelKind> for v1::Model {
    fn from(m: ModelKind) -> Self {
        match m {
            ModelKind::Mlp => v1::Model::Mlp,
            ModelKind::SmallCnn => v1::Model::SmallCnn,
            ModelKind::Resnet18 => v1::Model::Resnet18,
            ModelKind::Resnet50 => v1::Model::Resnet50,
            ModelKind::Vgg16Bn => v1::Model::Vgg16Bn,
            ModelKind::Wrn16_8 => v1::Model::Wrn168,
            ModelKind::Wrn28_10 => v1::Model::Wrn2810,
            ModelKind::TorchScript => v1::Model::Torchscript,
        }
    }
}

/// Decodes a wire enum value, naming the field when unset or unknown.
pub fn model_from_wire(value: i32) -> Result<ModelKind, ConversionError> {
    {
        Ok(match v1::Model::try_from(value).map_err(|_| unknown("spec.model", value))? {
            v1::Model::Unspecified => return Err(missing("spec.model")),
            v1::Model::Mlp => ModelKind::Mlp,
            v1::Model::SmallCnn => ModelKind::SmallCnn,
            v1::Model::Resnet18 => ModelKind::Resnet18,
            v1::Model::Resnet50 => ModelKind::Resnet50,
            v1::Model::Vgg16Bn => ModelKind::Vgg16Bn,
            v1::Model::Wrn168 => ModelKind::Wrn16_8,
            v1::Model::Wrn2810 => ModelKind::Wrn28_10,
            v1::Model::Torchscript => ModelKind::TorchScript,
        })
    }
}

impl From<DatasetKind> for v1::Dataset {
    fn from(d: DatasetKind) -> Self {
        match d {
            DatasetKind::Synthetic => v1::Dataset::Synthetic,
            DatasetKind::Mnist => v1::Dataset::Mnist,
            DatasetKind::Cifar10 => v1::Dataset::Cifar10,
            DatasetKind::Cifar100 => v1::Dataset::Cifar100,
            DatasetKind::ImageFolder => v1::Dataset::ImageFolder,
            DatasetKind::TarShards => v1::Dataset::TarShards,
            DatasetKind::Tensors => v1::Dataset::Tensors,
        }
    }
}

/// Decodes a wire enum value, naming the field when unset or unknown.
pub fn dataset_from_wire(value: i32) -> Result<DatasetKind, ConversionError> {
    {
        Ok(match v1::Dataset::try_from(value).map_err(|_| unknown("spec.dataset", value))? {
            v1::Dataset::Unspecified => return Err(missing("spec.dataset")),
            v1::Dataset::Synthetic => DatasetKind::Synthetic,
            v1::Dataset::Mnist => DatasetKind::Mnist,
            v1::Dataset::Cifar10 => DatasetKind::Cifar10,
            v1::Dataset::Cifar100 => DatasetKind::Cifar100,
            v1::Dataset::ImageFolder => DatasetKind::ImageFolder,
            v1::Dataset::TarShards => DatasetKind::TarShards,
            v1::Dataset::Tensors => DatasetKind::Tensors,
        })
    }
}

impl From<GradientEncoding> for v1::GradientEncoding {
    fn from(e: GradientEncoding) -> Self {
        match e {
            GradientEncoding::F32 => v1::GradientEncoding::F32,
            GradientEncoding::Bf16 => v1::GradientEncoding::Bf16,
        }
    }
}

/// Decodes a wire encoding; unspecified means float32.
pub fn encoding_from_wire(value: i32) -> Result<GradientEncoding, ConversionError> {
    match v1::GradientEncoding::try_from(value).map_err(|_| unknown("encoding", value))? {
        v1::GradientEncoding::Unspecified | v1::GradientEncoding::F32 => Ok(GradientEncoding::F32),
        v1::GradientEncoding::Bf16 => Ok(GradientEncoding::Bf16),
    }
}

impl From<&LrSchedule> for v1::LrSchedule {
    fn from(s: &LrSchedule) -> Self {
        use v1::lr_schedule::{Constant, CosinePerEpoch, CosinePerUpdate, Kind, Step};
        let kind = match s {
            LrSchedule::Constant => Kind::Constant(Constant {}),
            LrSchedule::Step { milestones, gamma } => {
                Kind::Step(Step { milestones: milestones.clone(), gamma: *gamma })
            }
            LrSchedule::CosinePerUpdate => Kind::CosinePerUpdate(CosinePerUpdate {}),
            LrSchedule::CosinePerEpoch => Kind::CosinePerEpoch(CosinePerEpoch {}),
        };
        v1::LrSchedule { kind: Some(kind) }
    }
}

impl From<&SigmaSchedule> for v1::SigmaSchedule {
    fn from(s: &SigmaSchedule) -> Self {
        use v1::sigma_schedule::{Constant, CosineIncreasing, Kind};
        let kind = match s {
            SigmaSchedule::Constant => Kind::Constant(Constant {}),
            SigmaSchedule::CosineIncreasing { inc } => Kind::CosineIncreasing(CosineIncreasing { inc: *inc }),
        };
        v1::SigmaSchedule { kind: Some(kind) }
    }
}

impl From<&JobSpec> for v1::JobSpec {
    fn from(s: &JobSpec) -> Self {
        v1::JobSpec {
            method: v1::Method::from(s.method).into(),
            model: v1::Model::from(s.model).into(),
            dataset: v1::Dataset::from(s.dataset).into(),
            data_dir: s.data_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            seed: s.seed,
            epochs: s.epochs,
            max_updates: s.max_updates,
            batch_size: s.batch_size,
            clean_shards: s.clean_shards,
            perturbed_shards: s.perturbed_shards,
            independent_noise: s.independent_noise,
            lr: s.lr,
            momentum: s.momentum,
            nesterov: s.nesterov,
            weight_decay: s.weight_decay,
            lr_schedule: Some((&s.lr_schedule).into()),
            warmup_updates: s.warmup_updates,
            sigma: s.sigma,
            sigma_schedule: Some((&s.sigma_schedule).into()),
            lambda: s.lambda,
            eta: s.eta,
            beta: s.beta,
            rho: s.rho,
            augment: s.augment,
            non_finite: match s.non_finite {
                NonFinitePolicy::Fail => v1::NonFinitePolicy::Fail,
                NonFinitePolicy::Skip => v1::NonFinitePolicy::Skip,
            }
            .into(),
            gradient_encoding: v1::GradientEncoding::from(s.gradient_encoding).into(),
            model_file: s
                .model_file
                .as_ref()
                .map(|f| v1::ModelFile { sha256: f.sha256.clone(), size_bytes: f.size_bytes }),
            validation_fraction: s.validation_fraction,
            data: s.data.as_ref().map(v1::DataSource::from),
        }
    }
}

impl From<&DataSource> for v1::DataSource {
    fn from(d: &DataSource) -> Self {
        v1::DataSource {
            train: d.train.clone(),
            test: d.test.clone(),
            validation: d.validation.clone(),
            image_size: d.image_size,
            transforms: match d.transforms {
                Transforms::Imagenet => v1::Transforms::Imagenet,
                Transforms::Cifar => v1::Transforms::Cifar,
                Transforms::Resize => v1::Transforms::Resize,
            }
            .into(),
            mean: d.mean.clone().unwrap_or_default(),
            std: d.std.clone().unwrap_or_default(),
            bad_samples: match d.bad_samples {
                BadSamples::Fail => v1::BadSamples::Fail,
                BadSamples::Skip => v1::BadSamples::Skip,
            }
            .into(),
            summary: d.summary.as_ref().map(v1::DataSummary::from),
        }
    }
}

impl From<&DataSummary> for v1::DataSummary {
    fn from(s: &DataSummary) -> Self {
        v1::DataSummary {
            classes: s.classes,
            train: s.train,
            validation: s.validation,
            test: s.test,
            shape: s.shape.clone(),
            digest: s.digest.clone(),
        }
    }
}

impl From<v1::DataSummary> for DataSummary {
    fn from(s: v1::DataSummary) -> Self {
        DataSummary {
            classes: s.classes,
            train: s.train,
            validation: s.validation,
            test: s.test,
            shape: s.shape,
            digest: s.digest,
        }
    }
}

impl From<&DataReport> for v1::DataReport {
    fn from(r: &DataReport) -> Self {
        v1::DataReport {
            kind: v1::Dataset::from(r.kind).into(),
            class_names: r.class_names.clone(),
            splits: r
                .splits
                .iter()
                .map(|s| v1::SplitReport {
                    field: s.field.clone(),
                    location: s.location.clone(),
                    samples: s.samples,
                    files: s.files,
                })
                .collect(),
            shape: r.shape.clone(),
            first_image: r.first_image.map(Vec::from).unwrap_or_default(),
            unreadable: r
                .unreadable
                .iter()
                .map(|u| v1::UnreadableSample { sample: u.sample.clone(), reason: u.reason.clone() })
                .collect(),
            decoded: r.decoded,
            summary: Some((&r.summary).into()),
        }
    }
}

/// Checks the kind, the summary and the first image's shape (fields
/// `report.kind`, `report.summary`, `report.first_image`).
impl TryFrom<v1::DataReport> for DataReport {
    type Error = ConversionError;

    fn try_from(r: v1::DataReport) -> Result<Self, Self::Error> {
        let first_image = match r.first_image.as_slice() {
            [] => None,
            [height, width] => Some([*height, *width]),
            other => {
                return Err(ConversionError {
                    field: "report.first_image",
                    reason: format!("must be [height, width], not {other:?}"),
                })
            }
        };
        Ok(DataReport {
            kind: dataset_from_wire(r.kind).map_err(|e| ConversionError { field: "report.kind", reason: e.reason })?,
            class_names: r.class_names,
            splits: r
                .splits
                .into_iter()
                .map(|s| SplitReport { field: s.field, location: s.location, samples: s.samples, files: s.files })
                .collect(),
            shape: r.shape,
            first_image,
            unreadable: r
                .unreadable
                .into_iter()
                .map(|u| UnreadableSample { sample: u.sample, reason: u.reason })
                .collect(),
            decoded: r.decoded,
            summary: r.summary.map(DataSummary::from).ok_or_else(|| missing("report.summary"))?,
        })
    }
}

impl TryFrom<v1::DataSource> for DataSource {
    type Error = ConversionError;

    fn try_from(d: v1::DataSource) -> Result<Self, Self::Error> {
        let transforms =
            match v1::Transforms::try_from(d.transforms).map_err(|_| unknown("spec.data.transforms", d.transforms))? {
                v1::Transforms::Unspecified | v1::Transforms::Imagenet => Transforms::Imagenet,
                v1::Transforms::Cifar => Transforms::Cifar,
                v1::Transforms::Resize => Transforms::Resize,
            };
        let bad_samples = match v1::BadSamples::try_from(d.bad_samples)
            .map_err(|_| unknown("spec.data.bad_samples", d.bad_samples))?
        {
            v1::BadSamples::Unspecified | v1::BadSamples::Fail => BadSamples::Fail,
            v1::BadSamples::Skip => BadSamples::Skip,
        };
        Ok(DataSource {
            train: d.train,
            test: d.test,
            validation: d.validation,
            image_size: if d.image_size == 0 { rwp_spec::data::DEFAULT_IMAGE_SIZE } else { d.image_size },
            transforms,
            mean: (!d.mean.is_empty()).then_some(d.mean),
            std: (!d.std.is_empty()).then_some(d.std),
            bad_samples,
            summary: d.summary.map(DataSummary::from),
        })
    }
}

impl TryFrom<v1::JobSpec> for JobSpec {
    type Error = ConversionError;

    /// Converts and checks that every enum and schedule is set; range checks
    /// are [`JobSpec::validate`]'s job.
    fn try_from(s: v1::JobSpec) -> Result<Self, Self::Error> {
        use v1::lr_schedule::Kind as Lr;
        use v1::sigma_schedule::Kind as Sig;
        let lr_schedule = match s.lr_schedule.and_then(|l| l.kind).ok_or_else(|| missing("spec.lr_schedule"))? {
            Lr::Constant(_) => LrSchedule::Constant,
            Lr::Step(step) => LrSchedule::Step { milestones: step.milestones, gamma: step.gamma },
            Lr::CosinePerUpdate(_) => LrSchedule::CosinePerUpdate,
            Lr::CosinePerEpoch(_) => LrSchedule::CosinePerEpoch,
        };
        let sigma_schedule =
            match s.sigma_schedule.and_then(|l| l.kind).ok_or_else(|| missing("spec.sigma_schedule"))? {
                Sig::Constant(_) => SigmaSchedule::Constant,
                Sig::CosineIncreasing(c) => SigmaSchedule::CosineIncreasing { inc: c.inc },
            };
        let non_finite =
            match v1::NonFinitePolicy::try_from(s.non_finite).map_err(|_| unknown("spec.non_finite", s.non_finite))? {
                v1::NonFinitePolicy::Unspecified | v1::NonFinitePolicy::Fail => NonFinitePolicy::Fail,
                v1::NonFinitePolicy::Skip => NonFinitePolicy::Skip,
            };
        Ok(JobSpec {
            method: method_from_wire(s.method)?,
            model: model_from_wire(s.model)?,
            dataset: dataset_from_wire(s.dataset)?,
            data_dir: (!s.data_dir.is_empty()).then(|| PathBuf::from(s.data_dir)),
            seed: s.seed,
            epochs: s.epochs,
            max_updates: s.max_updates,
            batch_size: s.batch_size,
            clean_shards: s.clean_shards,
            perturbed_shards: s.perturbed_shards,
            independent_noise: s.independent_noise,
            lr: s.lr,
            momentum: s.momentum,
            nesterov: s.nesterov,
            weight_decay: s.weight_decay,
            lr_schedule,
            warmup_updates: s.warmup_updates,
            sigma: s.sigma,
            sigma_schedule,
            lambda: s.lambda,
            eta: s.eta,
            beta: s.beta,
            rho: s.rho,
            augment: s.augment,
            non_finite,
            gradient_encoding: encoding_from_wire(s.gradient_encoding)
                .map_err(|e| ConversionError { field: "spec.gradient_encoding", reason: e.reason })?,
            model_file: s.model_file.map(|f| ModelFile { sha256: f.sha256, size_bytes: f.size_bytes }),
            validation_fraction: s.validation_fraction,
            data: s.data.map(DataSource::try_from).transpose()?,
        })
    }
}

impl From<&ParamValue> for v1::ParamValue {
    fn from(v: &ParamValue) -> Self {
        use v1::param_value::Value;
        let value = match v {
            ParamValue::Number(x) => Value::Number(*x),
            ParamValue::Text(t) => Value::Text(t.clone()),
            ParamValue::Flag(b) => Value::Flag(*b),
        };
        v1::ParamValue { value: Some(value) }
    }
}

/// A searched value; `field` names it in the error.
pub fn param_value_from_wire(v: v1::ParamValue, field: &'static str) -> Result<ParamValue, ConversionError> {
    use v1::param_value::Value;
    Ok(match v.value.ok_or_else(|| missing(field))? {
        Value::Number(x) => ParamValue::Number(x),
        Value::Text(t) => ParamValue::Text(t),
        Value::Flag(b) => ParamValue::Flag(b),
    })
}

impl From<&SweepSpec> for v1::SweepSpec {
    fn from(s: &SweepSpec) -> Self {
        v1::SweepSpec {
            base: Some((&s.base).into()),
            mode: match s.search.mode {
                SearchMode::Grid => v1::SearchMode::Grid,
                SearchMode::Random => v1::SearchMode::Random,
            }
            .into(),
            n_trials: s.search.n_trials,
            search_seed: s.search.seed,
            params: s
                .search
                .params
                .iter()
                .map(|p| v1::SearchParam {
                    field: p.field.clone(),
                    values: p.values.iter().map(Into::into).collect(),
                    distribution: match p.distribution {
                        None => v1::Distribution::Unspecified,
                        Some(Distribution::Choice) => v1::Distribution::Choice,
                        Some(Distribution::Uniform) => v1::Distribution::Uniform,
                        Some(Distribution::LogUniform) => v1::Distribution::LogUniform,
                        Some(Distribution::IntUniform) => v1::Distribution::IntUniform,
                    }
                    .into(),
                    low: p.low,
                    high: p.high,
                })
                .collect(),
            concurrency: s.concurrency,
            early_stopping: s.early_stopping.as_ref().map(|e| v1::EarlyStopping {
                rungs: e.rungs.clone(),
                reduction_factor: e.reduction_factor,
                min_validation_accuracy: e.min_validation_accuracy,
            }),
        }
    }
}

impl TryFrom<v1::SweepSpec> for SweepSpec {
    type Error = ConversionError;

    /// Converts and checks the enums; [`SweepSpec::trials`] checks the rest.
    fn try_from(s: v1::SweepSpec) -> Result<Self, Self::Error> {
        let base = JobSpec::try_from(s.base.ok_or_else(|| missing("sweep.base"))?)?;
        let mode = match v1::SearchMode::try_from(s.mode).map_err(|_| unknown("sweep.mode", s.mode))? {
            v1::SearchMode::Unspecified | v1::SearchMode::Grid => SearchMode::Grid,
            v1::SearchMode::Random => SearchMode::Random,
        };
        let mut params = Vec::with_capacity(s.params.len());
        for p in s.params {
            let distribution = match v1::Distribution::try_from(p.distribution)
                .map_err(|_| unknown("sweep.params.distribution", p.distribution))?
            {
                v1::Distribution::Unspecified => None,
                v1::Distribution::Choice => Some(Distribution::Choice),
                v1::Distribution::Uniform => Some(Distribution::Uniform),
                v1::Distribution::LogUniform => Some(Distribution::LogUniform),
                v1::Distribution::IntUniform => Some(Distribution::IntUniform),
            };
            params.push(SearchParam {
                field: p.field,
                values: p
                    .values
                    .into_iter()
                    .map(|v| param_value_from_wire(v, "sweep.params.values"))
                    .collect::<Result<_, _>>()?,
                distribution,
                low: p.low,
                high: p.high,
            });
        }
        Ok(SweepSpec {
            base,
            search: Search { mode, n_trials: s.n_trials, seed: s.search_seed, params },
            concurrency: s.concurrency,
            early_stopping: s.early_stopping.map(|e| EarlyStopping {
                rungs: e.rungs,
                reduction_factor: e.reduction_factor,
                min_validation_accuracy: e.min_validation_accuracy,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_specs_round_trip() {
        let text = r#"
            concurrency = 3
            [base]
            method = "m-arwp"
            model = "mlp"
            dataset = "synthetic"
            seed = 1
            epochs = 4
            batch_size = 64
            clean_shards = 1
            perturbed_shards = 1
            independent_noise = false
            lr = 0.1
            momentum = 0.9
            nesterov = false
            weight_decay = 0.001
            warmup_updates = 0
            sigma = 0.015
            lambda = 0.5
            eta = 0.1
            beta = 0.99
            rho = 0.05
            augment = false
            validation_fraction = 0.2
            lr_schedule = { kind = "constant" }
            sigma_schedule = { kind = "constant" }
            [search]
            mode = "random"
            n_trials = 5
            seed = 9
            [[search.param]]
            field = "sigma"
            distribution = "log-uniform"
            low = 0.001
            high = 0.1
            [[search.param]]
            field = "method"
            values = ["m-rwp", "m-arwp"]
            [[search.param]]
            field = "nesterov"
            values = [true]
            [early_stopping]
            rungs = [1, 2]
            reduction_factor = 2.0
            min_validation_accuracy = 0.15
        "#;
        let spec: SweepSpec = toml_like(text);
        let wire = v1::SweepSpec::from(&spec);
        assert_eq!(SweepSpec::try_from(wire).unwrap(), spec);
        let mut grid = spec.clone();
        grid.search.mode = SearchMode::Grid;
        grid.early_stopping = None;
        assert_eq!(SweepSpec::try_from(v1::SweepSpec::from(&grid)).unwrap(), grid);
    }

    fn toml_like(text: &str) -> SweepSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn every_reference_spec_round_trips() {
        for method in Method::ALL {
            let mut spec = JobSpec::reference(method);
            spec.max_updates = Some(9);
            spec.lr_schedule = LrSchedule::Step { milestones: vec![3, 5], gamma: 0.5 };
            spec.non_finite = NonFinitePolicy::Skip;
            spec.gradient_encoding = GradientEncoding::Bf16;
            let wire = v1::JobSpec::from(&spec);
            assert_eq!(JobSpec::try_from(wire).unwrap(), spec);
        }
    }

    #[test]
    fn every_enum_value_round_trips() {
        for m in Method::ALL {
            assert_eq!(method_from_wire(v1::Method::from(m).into()).unwrap(), m);
        }
        for m in ModelKind::ALL {
            assert_eq!(model_from_wire(v1::Model::from(m).into()).unwrap(), m);
        }
        for d in DatasetKind::ALL {
            assert_eq!(dataset_from_wire(v1::Dataset::from(d).into()).unwrap(), d);
        }
        for e in [GradientEncoding::F32, GradientEncoding::Bf16] {
            assert_eq!(encoding_from_wire(v1::GradientEncoding::from(e).into()).unwrap(), e);
        }
        for v in [ParamValue::Number(0.5), ParamValue::Text("sam".into()), ParamValue::Flag(true)] {
            assert_eq!(param_value_from_wire((&v).into(), "value").unwrap(), v);
        }
        assert_eq!(param_value_from_wire(v1::ParamValue { value: None }, "value").unwrap_err().field, "value");
    }

    /// The wire fields whose values the domain types cannot hold (range
    /// checks of the others: `JobSpec::validate`), one bad value each.
    #[test]
    fn unset_or_unknown_enums_and_schedules_are_named() {
        type Spoil = fn(&mut v1::JobSpec);
        let cases: &[(&str, &str, Spoil)] = &[
            ("spec.method", "must be set", |s| s.method = 0),
            ("spec.method", "unknown value 42", |s| s.method = 42),
            ("spec.model", "must be set", |s| s.model = 0),
            ("spec.model", "unknown value 99", |s| s.model = 99),
            ("spec.dataset", "must be set", |s| s.dataset = 0),
            ("spec.dataset", "unknown value -1", |s| s.dataset = -1),
            ("spec.non_finite", "unknown value 7", |s| s.non_finite = 7),
            ("spec.gradient_encoding", "unknown value 3", |s| s.gradient_encoding = 3),
            ("spec.lr_schedule", "must be set", |s| s.lr_schedule = None),
            ("spec.lr_schedule", "must be set", |s| s.lr_schedule = Some(v1::LrSchedule { kind: None })),
            ("spec.sigma_schedule", "must be set", |s| s.sigma_schedule = None),
        ];
        let wire = v1::JobSpec::from(&JobSpec::reference(Method::Sgd));
        for (field, reason, spoil) in cases {
            let mut bad = wire.clone();
            spoil(&mut bad);
            let err = JobSpec::try_from(bad).unwrap_err();
            assert_eq!(err.to_string(), format!("{field}: {reason}"));
        }
    }

    /// Found by the `proto_job_spec` fuzz target (fuzz/): an m-rwp
    /// `SubmitJobRequest` with `rho` = NaN (bytes `0xff` × 8) passed
    /// validation, since only sam's ρ was checked, and a NaN went into the
    /// stored spec.
    #[test]
    fn a_nan_rho_from_the_wire_is_refused_for_every_method() {
        use prost::Message;
        const CRASH: [u8; 130] = [
            10, 15, 114, 101, 102, 101, 114, 101, 110, 99, 101, 45, 109, 45, 114, 119, 112, 18, 111, 8, 5, 16, 2, 24,
            1, 48, 30, 64, 128, 2, 72, 1, 80, 1, 97, 154, 153, 153, 153, 153, 153, 185, 63, 105, 205, 204, 204, 204,
            204, 204, 236, 63, 121, 252, 169, 241, 210, 77, 98, 80, 63, 130, 1, 2, 34, 0, 145, 1, 123, 20, 174, 71,
            225, 122, 132, 63, 154, 1, 2, 10, 0, 161, 1, 0, 0, 0, 0, 0, 0, 224, 63, 169, 1, 154, 153, 153, 153, 153,
            153, 185, 63, 177, 1, 174, 71, 225, 122, 20, 174, 239, 63, 185, 1, 255, 255, 255, 255, 255, 255, 255, 255,
            192, 1, 1, 200, 1, 1, 208, 1, 1,
        ];
        let request = v1::SubmitJobRequest::decode(CRASH.as_slice()).unwrap();
        let spec = JobSpec::try_from(request.spec.unwrap()).unwrap();
        assert_eq!(spec.method, Method::MRwp);
        assert!(spec.rho.is_nan());
        let err = spec.validate().unwrap_err();
        assert_eq!(err.to_string(), "rho = NaN is out of range: must be a finite number >= 0");
    }
}
