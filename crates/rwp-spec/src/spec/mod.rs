use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::{DataSource, Transforms};
use crate::{DatasetKind, Method, ModelFile, ModelKind, SpecError};

/// When the learning rate changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LrSchedule {
    Constant,
    /// Multiply by `gamma` at each milestone epoch (PyTorch's `MultiStepLR`).
    Step {
        milestones: Vec<u32>,
        gamma: f64,
    },
    /// Cosine annealing to 0 over the run, recomputed every update.
    CosinePerUpdate,
    /// Cosine annealing to 0 over the run, recomputed once per epoch.
    CosinePerEpoch,
}

/// How σ changes over the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SigmaSchedule {
    Constant,
    /// `σ_t = σ₀ · (1 + inc · (1 − cos(π t / T)) / 2)`.
    CosineIncreasing {
        inc: f64,
    },
}

impl LrSchedule {
    /// The schedules' names, the same everywhere: job files (`lr_schedule =
    /// "cosine-per-epoch"` or `{ kind = "step", ... }`), `rwp submit
    /// --lr-schedule`, `rwp-train --lr-schedule` and the SDKs.
    pub const NAMES: [&'static str; 4] = ["constant", "step", "cosine-per-update", "cosine-per-epoch"];

    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Step { .. } => "step",
            LrSchedule::CosinePerUpdate => "cosine-per-update",
            LrSchedule::CosinePerEpoch => "cosine-per-epoch",
        }
    }

    /// The schedule called `name` (one of [`Self::NAMES`], or rwp-train's
    /// older `cosine-update` and `cosine-epoch`); `milestones` and `gamma`
    /// are the step schedule's.
    pub fn from_name(name: &str, milestones: &[u32], gamma: f64) -> Result<Self, SpecError> {
        match name {
            "constant" => Ok(LrSchedule::Constant),
            "step" => Ok(LrSchedule::Step { milestones: milestones.to_vec(), gamma }),
            "cosine-per-update" | "cosine-update" => Ok(LrSchedule::CosinePerUpdate),
            "cosine-per-epoch" | "cosine-epoch" => Ok(LrSchedule::CosinePerEpoch),
            other => Err(SpecError::Unknown {
                what: "lr schedule",
                value: other.to_owned(),
                expected: Self::NAMES.join(", "),
            }),
        }
    }
}

impl SigmaSchedule {
    /// The schedules' names, the same everywhere (see [`LrSchedule::NAMES`]).
    pub const NAMES: [&'static str; 2] = ["constant", "cosine-increasing"];
    /// `inc` of `cosine-increasing` when none is given.
    pub const DEFAULT_INC: f64 = 10.0;

    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            SigmaSchedule::Constant => "constant",
            SigmaSchedule::CosineIncreasing { .. } => "cosine-increasing",
        }
    }

    /// The schedule called `name` (one of [`Self::NAMES`], or rwp-train's
    /// older `cosine-inc`); `inc` is the growth of `cosine-increasing`.
    pub fn from_name(name: &str, inc: f64) -> Result<Self, SpecError> {
        match name {
            "constant" => Ok(SigmaSchedule::Constant),
            "cosine-increasing" | "cosine-inc" => Ok(SigmaSchedule::CosineIncreasing { inc }),
            other => Err(SpecError::Unknown {
                what: "sigma schedule",
                value: other.to_owned(),
                expected: Self::NAMES.join(", "),
            }),
        }
    }
}

/// The keys a schedule table of `kind` (an lr or a sigma schedule's name)
/// takes besides `kind`, as job files and sweeps write them.
#[must_use]
pub fn schedule_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "step" => &["milestones", "gamma"],
        "cosine-increasing" => &["inc"],
        _ => &[],
    }
}

/// The schedules as `rwp-train` and `rwp submit` take them on the command
/// line: `--lr-schedule NAME` (with `--milestones`, `--lr-gamma` for `step`)
/// and `--sigma-schedule NAME` (with `--sigma-inc` for `cosine-increasing`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScheduleFlags {
    pub lr_schedule: Option<String>,
    pub milestones: Option<Vec<u32>>,
    pub lr_gamma: Option<f64>,
    pub sigma_schedule: Option<String>,
    pub sigma_inc: Option<f64>,
}

impl ScheduleFlags {
    /// `gamma` of `--lr-schedule step` without `--lr-gamma`.
    pub const DEFAULT_GAMMA: f64 = 0.1;

    /// Applies the flags over the schedules a job has so far (the method's
    /// reference, or a job file's). A flag for a schedule the job does not
    /// end up with is an error naming it, never ignored.
    pub fn apply(&self, lr: &mut LrSchedule, sigma: &mut SigmaSchedule) -> Result<(), String> {
        let step_settings = self.milestones.is_some() || self.lr_gamma.is_some();
        match self.lr_schedule.as_deref() {
            Some(name) => {
                let gamma = self.lr_gamma.unwrap_or(Self::DEFAULT_GAMMA);
                let schedule = LrSchedule::from_name(name, self.milestones.as_deref().unwrap_or_default(), gamma)
                    .map_err(|e| format!("--lr-schedule: {e}"))?;
                if step_settings && !matches!(schedule, LrSchedule::Step { .. }) {
                    return Err(format!(
                        "--milestones and --lr-gamma are for --lr-schedule step, not --lr-schedule {name}"
                    ));
                }
                *lr = schedule;
            }
            None if step_settings => match lr {
                LrSchedule::Step { milestones, gamma } => {
                    if let Some(m) = &self.milestones {
                        milestones.clone_from(m);
                    }
                    if let Some(g) = self.lr_gamma {
                        *gamma = g;
                    }
                }
                other => {
                    return Err(format!(
                        "--milestones and --lr-gamma are for the step schedule, and this job's lr schedule is {}: \
                         add --lr-schedule step",
                        other.name()
                    ))
                }
            },
            None => {}
        }
        let inc = match (&*sigma, self.sigma_inc) {
            (_, Some(inc)) => inc,
            (SigmaSchedule::CosineIncreasing { inc }, None) => *inc,
            (SigmaSchedule::Constant, None) => SigmaSchedule::DEFAULT_INC,
        };
        if let Some(name) = self.sigma_schedule.as_deref() {
            *sigma = SigmaSchedule::from_name(name, inc).map_err(|e| format!("--sigma-schedule: {e}"))?;
        }
        match (&*sigma, self.sigma_inc) {
            (SigmaSchedule::CosineIncreasing { .. }, Some(inc)) => *sigma = SigmaSchedule::CosineIncreasing { inc },
            (SigmaSchedule::Constant, Some(_)) => {
                return Err(match &self.sigma_schedule {
                    Some(name) => format!("--sigma-inc is for --sigma-schedule cosine-increasing, not {name}"),
                    None => "--sigma-inc is for the cosine-increasing sigma schedule, and this job's is constant: \
                             add --sigma-schedule cosine-increasing"
                        .to_owned(),
                });
            }
            (_, None) => {}
        }
        Ok(())
    }
}

/// What to do when a shard's gradient holds NaN or infinite values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonFinitePolicy {
    /// Fail the job, naming the shard and parameter.
    #[default]
    Fail,
    /// Leave the weights as they are for this update, count it, go on.
    Skip,
}

/// How gradients travel from workers to the parameter server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradientEncoding {
    /// float32: the distributed run is bit-identical to the local trainer.
    #[default]
    F32,
    /// bfloat16: half the bytes; gives up bit-exactness.
    Bf16,
}

/// How a run that ended goes on for longer (`rwp resume`, `rwp-train
/// --resume`): its spec with another number of epochs or update cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extension {
    /// Epochs in all, in place of the spec's (the schedules then span them).
    pub epochs: Option<u32>,
    /// The update cap in all, in place of the spec's; `Some(None)` removes it.
    pub max_updates: Option<Option<u64>>,
}

impl Extension {
    /// The extension asked for by flags and requests, where an update cap
    /// of 0 lifts the cap (`--max-updates 0`, `ResumeJobRequest`).
    #[must_use]
    pub fn from_flags(epochs: Option<u32>, max_updates: Option<u64>) -> Self {
        Self { epochs, max_updates: max_updates.map(|cap| (cap > 0).then_some(cap)) }
    }

    /// The update cap as flags and requests give it: 0 lifts the cap.
    #[must_use]
    pub fn max_updates_flag(&self) -> Option<u64> {
        self.max_updates.map(|cap| cap.unwrap_or(0))
    }

    pub fn apply(&self, spec: &mut JobSpec) {
        if let Some(epochs) = self.epochs {
            spec.epochs = epochs;
        }
        if let Some(max_updates) = self.max_updates {
            spec.max_updates = max_updates;
        }
    }
}

/// Everything that decides a training run. Two runs with equal specs (and the
/// same data files) produce the same weights, bit for bit on CPU with a fixed
/// thread count, however the work is spread over workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub method: Method,
    pub model: ModelKind,
    pub dataset: DatasetKind,
    /// Directory holding the dataset's files (MNIST IDX or CIFAR binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Root seed: initial weights, sample order, augmentation and noise derive from it.
    pub seed: u64,
    pub epochs: u32,
    /// Stop after this many updates even if `epochs` would allow more.
    /// Schedules still run over the full `epochs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_updates: Option<u64>,
    /// Samples per mini-batch, `b`. Clean and perturbed batches both have this size.
    pub batch_size: u32,
    /// Shards the clean (or SAM) batch is split into.
    pub clean_shards: u32,
    /// Shards the perturbed batch is split into.
    pub perturbed_shards: u32,
    /// Draw an independent ε per perturbed shard instead of one shared ε.
    pub independent_noise: bool,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub lr_schedule: LrSchedule,
    /// Linear warmup over this many updates (0: none).
    pub warmup_updates: u64,
    /// Perturbation scale σ (γ in the papers).
    pub sigma: f64,
    pub sigma_schedule: SigmaSchedule,
    /// Weight λ (α) of the perturbed gradient in m-RWP / m-ARWP.
    pub lambda: f64,
    /// Adaptive scale η of ARWP / m-ARWP.
    pub eta: f64,
    /// History decay β of ARWP / m-ARWP.
    pub beta: f64,
    /// SAM radius ρ.
    pub rho: f64,
    /// Data augmentation of the references (CIFAR only: crop, flip, Cutout).
    pub augment: bool,
    /// What a non-finite gradient does to the job.
    #[serde(default)]
    pub non_finite: NonFinitePolicy,
    /// Wire format of gradients in distributed runs.
    #[serde(default)]
    pub gradient_encoding: GradientEncoding,
    /// The TorchScript file of a [`ModelKind::TorchScript`] job; `None` for
    /// the built-in models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_file: Option<ModelFile>,
    /// Fraction of the training set held out as a validation set, in
    /// `[0, 0.5)`; 0: none. The held-out samples are drawn with the job's
    /// seed ([`crate::plan::validation_split`]) and never trained on.
    #[serde(default)]
    pub validation_fraction: f64,
    /// Where a job's own data is and how it is read (datasets
    /// `image-folder`, `tar-shards`, `tensors`); `None` for the built-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSource>,
}

impl JobSpec {
    /// The reference hyper-parameters for `method` (docs/algorithms.md,
    /// "Reference hyper-parameters"), on the built-in dataset with the small CNN.
    #[must_use]
    pub fn reference(method: Method) -> Self {
        let mut spec = JobSpec {
            method,
            model: ModelKind::SmallCnn,
            dataset: DatasetKind::Synthetic,
            data_dir: None,
            seed: 0,
            epochs: 30,
            max_updates: None,
            batch_size: 256,
            clean_shards: 1,
            perturbed_shards: 1,
            independent_noise: false,
            lr: 0.1,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-3,
            lr_schedule: LrSchedule::CosinePerEpoch,
            warmup_updates: 0,
            sigma: 0.0,
            sigma_schedule: SigmaSchedule::Constant,
            lambda: 0.5,
            eta: 0.1,
            beta: 0.99,
            rho: 0.05,
            augment: true,
            non_finite: NonFinitePolicy::Fail,
            gradient_encoding: GradientEncoding::F32,
            model_file: None,
            validation_fraction: 0.0,
            data: None,
        };
        match method {
            Method::Sgd | Method::Sam => {}
            Method::Rwp | Method::MRwp => spec.sigma = 0.01,
            Method::MArwp => spec.sigma = 0.015,
            Method::Arwp => {
                spec.sigma = 0.001;
                spec.sigma_schedule = SigmaSchedule::CosineIncreasing { inc: 10.0 };
                spec.lr_schedule = LrSchedule::CosinePerUpdate;
            }
        }
        spec
    }

    /// The rules tying `dataset`, `data_dir`, `data` and `augment` together.
    fn validate_data(&self) -> Result<(), SpecError> {
        fn bad(field: &'static str, value: impl ToString, rule: &'static str) -> SpecError {
            SpecError::OutOfRange { field, value: value.to_string(), rule }
        }
        let Some(data) = &self.data else {
            if self.dataset.is_own_data() {
                return Err(bad(
                    "data",
                    "none",
                    "must give the data's locations (data.train, data.test) for this dataset",
                ));
            }
            return Ok(());
        };
        if !self.dataset.is_own_data() {
            return Err(bad("data", self.dataset, "is only for datasets image-folder, tar-shards and tensors"));
        }
        if self.data_dir.is_some() {
            return Err(bad("data_dir", self.dataset, "must be unset: this dataset's locations are in data"));
        }
        if data.validation.is_some() && self.validation_fraction > 0.0 {
            return Err(bad(
                "validation_fraction",
                self.validation_fraction,
                "must be 0 when data.validation names the validation samples",
            ));
        }
        if self.dataset == DatasetKind::Tensors && self.augment {
            return Err(bad("augment", true, "must be false for tensors (their samples are used as stored)"));
        }
        if self.dataset == DatasetKind::Tensors && data.transforms != Transforms::default() {
            return Err(bad("data.transforms", data.transforms, "is for image datasets, not tensors"));
        }
        if self.dataset.holds_images() {
            if let Some(mean) = &data.mean {
                if mean.len() != 3 {
                    return Err(bad("data.mean", format!("{mean:?}"), "must hold 3 values (R, G, B) for images"));
                }
            }
        }
        data.validate(self.dataset.holds_images())
    }

    /// Checks every field, naming the first one that is out of range. Fields
    /// without a range (`method`, `model`, `dataset`, `seed`, the flags, the
    /// policies) are valid by their type; the wire conversion names unknown
    /// enum values.
    pub fn validate(&self) -> Result<(), SpecError> {
        fn bad(field: &'static str, value: impl ToString, rule: &'static str) -> SpecError {
            SpecError::OutOfRange { field, value: value.to_string(), rule }
        }
        let finite_non_negative = |field, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(bad(field, v, "must be a finite number >= 0"))
            }
        };
        if let Some(dir) = &self.data_dir {
            let length = dir.as_os_str().len();
            if length == 0 {
                return Err(bad("data_dir", "\"\"", "must not be empty when set"));
            }
            if length > MAX_DATA_DIR_BYTES {
                return Err(bad("data_dir", format!("a path of {length} bytes"), "must be at most 4096 bytes"));
            }
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(bad("batch_size", self.batch_size, "must be in 1..=65536"));
        }
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return Err(bad("epochs", self.epochs, "must be in 1..=100000"));
        }
        if let Some(max) = self.max_updates {
            if !(1..=MAX_UPDATES).contains(&max) {
                return Err(bad("max_updates", max, "must be in 1..=1000000000 when set"));
            }
        }
        if self.warmup_updates > MAX_UPDATES {
            return Err(bad("warmup_updates", self.warmup_updates, "must be at most 1000000000"));
        }
        for (field, shards) in [("clean_shards", self.clean_shards), ("perturbed_shards", self.perturbed_shards)] {
            if !(1..=MAX_SHARDS).contains(&shards) {
                return Err(bad(field, shards, "must be in 1..=1024"));
            }
            if self.batch_size % shards != 0 {
                return Err(bad(field, shards, "must divide batch_size"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad("lr", self.lr, "must be a finite number > 0"));
        }
        // The warmup computes `lr · (t + 1) / warmup_updates` (in that order,
        // as the reference does), which must not overflow.
        if !(self.lr * self.warmup_updates as f64).is_finite() {
            return Err(bad("lr", self.lr, "lr times warmup_updates must be finite"));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(bad("momentum", self.momentum, "must be in [0, 1)"));
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(bad("nesterov", true, "needs momentum > 0"));
        }
        finite_non_negative("weight_decay", self.weight_decay)?;
        finite_non_negative("sigma", self.sigma)?;
        finite_non_negative("eta", self.eta)?;
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(bad("lambda", self.lambda, "must be in [0, 1]"));
        }
        if !(0.0..1.0).contains(&self.beta) {
            return Err(bad("beta", self.beta, "must be in [0, 1)"));
        }
        if self.method == Method::Sam {
            if !(self.rho.is_finite() && self.rho > 0.0) {
                return Err(bad("rho", self.rho, "must be a finite number > 0 for sam"));
            }
        } else {
            finite_non_negative("rho", self.rho)?;
        }
        // Other methods ignore ρ, but it is part of the spec that is stored and shown.
        finite_non_negative("rho", self.rho)?;
        match &self.lr_schedule {
            LrSchedule::Step { milestones, gamma } => {
                if !(gamma.is_finite() && *gamma > 0.0 && *gamma <= 1.0) {
                    return Err(bad("lr_schedule.gamma", gamma, "must be in (0, 1]"));
                }
                if milestones.len() > MAX_MILESTONES {
                    return Err(bad(
                        "lr_schedule.milestones",
                        format!("{} milestones", milestones.len()),
                        "at most 1000",
                    ));
                }
                if milestones.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(bad(
                        "lr_schedule.milestones",
                        format!("{milestones:?}"),
                        "must be strictly increasing",
                    ));
                }
            }
            LrSchedule::Constant | LrSchedule::CosinePerUpdate | LrSchedule::CosinePerEpoch => {}
        }
        if let SigmaSchedule::CosineIncreasing { inc } = self.sigma_schedule {
            finite_non_negative("sigma_schedule.inc", inc)?;
            // σ at its peak, computed as `Schedule::sigma_at` does (1 − cos ≤ 2).
            if !(self.sigma * (1.0 + inc * 2.0 / 2.0)).is_finite() {
                return Err(bad("sigma_schedule.inc", inc, "sigma times (1 + inc) must be finite"));
            }
        }
        if !(0.0..MAX_VALIDATION_FRACTION).contains(&self.validation_fraction) {
            return Err(bad("validation_fraction", self.validation_fraction, "must be in [0, 0.5)"));
        }
        if self.dataset.needs_files() && self.data_dir.is_none() {
            return Err(SpecError::MissingDataDir { dataset: self.dataset });
        }
        self.validate_data()?;
        match (&self.model_file, self.model) {
            (Some(file), ModelKind::TorchScript) => file.validate()?,
            (None, ModelKind::TorchScript) => {
                return Err(bad("model_file", "none", "must name the uploaded TorchScript file for model torchscript"))
            }
            (Some(_), model) => return Err(bad("model_file", model, "must be unset for a built-in model")),
            (None, _) => {}
        }
        Ok(())
    }
}

/// Largest `batch_size`.
pub const MAX_BATCH_SIZE: u32 = 65_536;
/// Largest `epochs`.
pub const MAX_EPOCHS: u32 = 100_000;
/// Largest `max_updates` and `warmup_updates`.
pub const MAX_UPDATES: u64 = 1_000_000_000;
/// Largest `clean_shards` and `perturbed_shards`: tasks per update.
pub const MAX_SHARDS: u32 = 1024;
/// Most milestones of a step schedule.
pub const MAX_MILESTONES: usize = 1000;
/// `validation_fraction` must be below this.
pub const MAX_VALIDATION_FRACTION: f64 = 0.5;
/// Longest `data_dir`, in bytes.
pub const MAX_DATA_DIR_BYTES: usize = 4096;

/// Learning rate and σ for every update of a run over a training set of a
/// known size.
#[derive(Clone, Debug)]
pub struct Schedule {
    lr: f64,
    lr_schedule: LrSchedule,
    warmup_updates: u64,
    sigma: f64,
    sigma_schedule: SigmaSchedule,
    pub updates_per_epoch: u64,
    /// Updates the schedules run over: `epochs · updates_per_epoch`.
    pub planned_updates: u64,
    /// Updates actually made: `planned_updates`, or fewer with `max_updates`.
    pub total_updates: u64,
}

impl Schedule {
    pub fn new(spec: &JobSpec, train_len: usize) -> Result<Self, SpecError> {
        let updates_per_epoch = train_len as u64 / u64::from(spec.batch_size);
        if updates_per_epoch == 0 {
            return Err(SpecError::OutOfRange {
                field: "batch_size",
                value: spec.batch_size.to_string(),
                rule: "must not exceed the training set size",
            });
        }
        let planned_updates =
            updates_per_epoch.checked_mul(u64::from(spec.epochs)).ok_or_else(|| SpecError::OutOfRange {
                field: "epochs",
                value: spec.epochs.to_string(),
                rule: "epochs times the updates per epoch must fit in 64 bits",
            })?;
        let total_updates = spec.max_updates.map_or(planned_updates, |m| m.min(planned_updates));
        Ok(Self {
            lr: spec.lr,
            lr_schedule: spec.lr_schedule.clone(),
            warmup_updates: spec.warmup_updates,
            sigma: spec.sigma,
            sigma_schedule: spec.sigma_schedule.clone(),
            updates_per_epoch,
            planned_updates,
            total_updates,
        })
    }

    #[must_use]
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.updates_per_epoch
    }

    #[must_use]
    pub fn lr_at(&self, step: u64) -> f64 {
        let epoch = self.epoch_of(step);
        let epochs = self.planned_updates / self.updates_per_epoch;
        let base = match &self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| u64::from(m) <= epoch).count();
                self.lr * gamma.powi(passed as i32)
            }
            LrSchedule::CosinePerUpdate => cosine(self.lr, step, self.planned_updates),
            LrSchedule::CosinePerEpoch => cosine(self.lr, epoch, epochs),
        };
        if step < self.warmup_updates {
            base * (step + 1) as f64 / self.warmup_updates as f64
        } else {
            base
        }
    }

    #[must_use]
    pub fn sigma_at(&self, step: u64) -> f64 {
        match self.sigma_schedule {
            SigmaSchedule::Constant => self.sigma,
            SigmaSchedule::CosineIncreasing { inc } => {
                let phase = std::f64::consts::PI * step as f64 / self.planned_updates as f64;
                self.sigma * (1.0 + inc * (1.0 - phase.cos()) / 2.0)
            }
        }
    }
}

fn cosine(base: f64, t: u64, total: u64) -> f64 {
    base * 0.5 * (1.0 + (std::f64::consts::PI * t as f64 / total as f64).cos())
}

#[cfg(test)]
mod tests;
