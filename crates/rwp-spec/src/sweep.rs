//! Sweeps: a base job spec, a search space over its fields, and the rules
//! that run the trials it generates: a concurrency limit, asynchronous
//! successive halving (ASHA) on validation accuracy, and the choice of the
//! best trial by validation accuracy only.
//!
//! Everything here is a pure function of the sweep spec (and, for ASHA, of
//! the results recorded so far), so the server, the SDK and the tests agree
//! on which trials a sweep has and what each decision is.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rng::{derive_seed, Rng};
use crate::{schedule_keys, JobSpec, LrSchedule, SigmaSchedule};

/// Most trials one sweep may have.
pub const MAX_TRIALS: usize = 1000;
/// Most concurrent trials of one sweep.
pub const MAX_CONCURRENCY: u32 = 256;
/// Fields a search may not vary: they change what is measured (the data and
/// the validation set), so trials would not be comparable.
pub const FIXED_FIELDS: &[&str] = &["dataset", "data_dir", "validation_fraction"];

const TAG_SEARCH: u64 = 6;

/// A value of a searched field: a number (integer fields take whole
/// numbers), a name (`method = "sgd"`, `model = "mlp"`) or a flag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Flag(bool),
    Number(f64),
    Text(String),
}

impl ParamValue {
    fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Flag(b) => serde_json::Value::Bool(*b),
            // Whole numbers go as integers so that integer fields (epochs,
            // batch_size, seed) take them; float fields take integers too.
            ParamValue::Number(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
                if *x < 0.0 {
                    serde_json::Value::from(*x as i64)
                } else {
                    serde_json::Value::from(*x as u64)
                }
            }
            ParamValue::Number(x) => serde_json::Number::from_f64(*x).map_or(serde_json::Value::Null, Into::into),
            ParamValue::Text(t) => serde_json::Value::String(t.clone()),
        }
    }

    /// The number, for plots and sorting; names and flags have none.
    #[must_use]
    pub fn as_number(&self) -> Option<f64> {
        match self {
            ParamValue::Number(x) => Some(*x),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Flag(b) => write!(f, "{b}"),
            ParamValue::Number(x) => write!(f, "{x}"),
            ParamValue::Text(t) => f.write_str(t),
        }
    }
}

/// How the trials are generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchMode {
    /// Every combination of every parameter's `values` (first parameter
    /// slowest).
    #[default]
    Grid,
    /// `n_trials` draws, each parameter from its distribution, from `seed`.
    Random,
}

/// The distribution a random search draws a parameter from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distribution {
    /// Uniform over `values`.
    Choice,
    /// Uniform in `[low, high]`.
    Uniform,
    /// `exp` of a uniform in `[ln low, ln high]`: every decade equally likely
    /// (σ, learning rates, weight decay).
    LogUniform,
    /// A uniform whole number in `low..=high`.
    IntUniform,
}

/// One searched field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParam {
    /// A JobSpec field, e.g. `sigma`, `lr`, `method`, or a nested one such
    /// as `lr_schedule.gamma`.
    pub field: String,
    /// Grid: the values to try. Random: the choices (distribution `choice`,
    /// the default when `values` is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ParamValue>,
    /// Random search only: how the value is drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
}

/// The search space and how it is explored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    #[serde(default)]
    pub mode: SearchMode,
    /// Random search: how many trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_trials: Option<u32>,
    /// Random search: the seed of the draws (the same seed, the same trials).
    #[serde(default)]
    pub seed: u64,
    #[serde(rename = "param")]
    pub params: Vec<SearchParam>,
}

/// Asynchronous successive halving on validation accuracy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Epochs at which a trial is judged, strictly increasing, each below
    /// the trial's epochs to matter.
    pub rungs: Vec<u32>,
    /// η: a trial reaching a rung goes on only if it is in the top 1/η of
    /// the trials that reached that rung so far. Must be > 1.
    #[serde(default = "default_reduction_factor")]
    pub reduction_factor: f64,
    /// Stop at any rung a trial whose validation accuracy is below this,
    /// however few trials reached the rung (e.g. chance level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_validation_accuracy: Option<f64>,
}

fn default_reduction_factor() -> f64 {
    3.0
}

/// A sweep as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    /// What every trial starts from; `validation_fraction` must be > 0.
    pub base: JobSpec,
    pub search: Search,
    /// Trials running at once.
    pub concurrency: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
}

/// One generated trial: its parameters and the full spec they give.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub index: u32,
    pub params: Vec<(String, ParamValue)>,
    pub spec: JobSpec,
}

/// A sweep spec that cannot run; the message names the offending field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SweepError(pub String);

fn err<T>(message: impl Into<String>) -> Result<T, SweepError> {
    Err(SweepError(message.into()))
}

/// Where a sweep is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepState {
    /// Trials are running or waiting for a slot.
    Running,
    /// Every trial ended (succeeded, stopped early or failed).
    Succeeded,
    /// Cancelled: running trials were cancelled, waiting ones never started.
    Cancelled,
    /// The sweep could not go on (a trial could not be started).
    Failed,
}

impl SweepState {
    #[must_use]
    pub fn is_terminal(self) -> bool {
        self != SweepState::Running
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            SweepState::Running => "running",
            SweepState::Succeeded => "succeeded",
            SweepState::Cancelled => "cancelled",
            SweepState::Failed => "failed",
        }
    }
}

impl fmt::Display for SweepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl SweepSpec {
    /// Checks the sweep and generates its trials, each spec validated; the
    /// error names the parameter or trial field at fault.
    pub fn trials(&self) -> Result<Vec<Trial>, SweepError> {
        self.base.validate().map_err(|e| SweepError(format!("base: {e}")))?;
        if self.base.validation_fraction <= 0.0 {
            return err(format!(
                "base.validation_fraction = {} is out of range: a sweep selects trials on validation accuracy, \
                 so it must hold out a validation set (e.g. 0.1)",
                self.base.validation_fraction
            ));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return err(format!(
                "concurrency = {} is out of range: must be in 1..={MAX_CONCURRENCY}",
                self.concurrency
            ));
        }
        if let Some(es) = &self.early_stopping {
            es.validate()?;
        }
        let search = &self.search;
        if search.params.is_empty() {
            return err("search.param: at least one parameter to search is needed");
        }
        for (i, p) in search.params.iter().enumerate() {
            p.validate(i, search.mode)?;
            if search.params[..i].iter().any(|q| q.field == p.field) {
                return err(format!("search.param[{i}] ({}): the field is searched twice", p.field));
            }
        }
        let combos: Vec<Vec<(String, ParamValue)>> = match search.mode {
            SearchMode::Grid => {
                if search.n_trials.is_some() {
                    return err("search.n_trials: only a random search has n_trials (a grid has every combination)");
                }
                let mut total: usize = 1;
                for p in &search.params {
                    total = total.saturating_mul(p.values.len());
                }
                if total > MAX_TRIALS {
                    return err(format!("search: the grid has {total} combinations, at most {MAX_TRIALS}"));
                }
                let mut combos = vec![Vec::new()];
                for p in &search.params {
                    combos = combos
                        .into_iter()
                        .flat_map(|prefix| {
                            p.values.iter().map(move |v| {
                                let mut c = prefix.clone();
                                c.push((p.field.clone(), v.clone()));
                                c
                            })
                        })
                        .collect();
                }
                combos
            }
            SearchMode::Random => {
                let n =
                    search.n_trials.ok_or_else(|| SweepError("search.n_trials: a random search needs it".into()))?;
                if !(1..=MAX_TRIALS as u32).contains(&n) {
                    return err(format!("search.n_trials = {n} is out of range: must be in 1..={MAX_TRIALS}"));
                }
                let mut rng = Rng::new(derive_seed(search.seed, &[TAG_SEARCH]));
                (0..n).map(|_| search.params.iter().map(|p| (p.field.clone(), p.draw(&mut rng))).collect()).collect()
            }
        };
        combos
            .into_iter()
            .enumerate()
            .map(|(index, params)| {
                let spec = apply(&self.base, &params)
                    .map_err(|e| SweepError(format!("trial {index} ({}): {e}", describe(&params))))?;
                Ok(Trial { index: index as u32, params, spec })
            })
            .collect()
    }
}

/// `sigma = 0.01, lr = 0.1`.
#[must_use]
pub fn describe(params: &[(String, ParamValue)]) -> String {
    params.iter().map(|(f, v)| format!("{f} = {v}")).collect::<Vec<_>>().join(", ")
}

impl SearchParam {
    fn validate(&self, i: usize, mode: SearchMode) -> Result<(), SweepError> {
        let at = format!("search.param[{i}] ({})", self.field);
        if self.field.is_empty() {
            return err(format!("search.param[{i}].field: must name a job spec field"));
        }
        if FIXED_FIELDS.contains(&self.field.as_str()) {
            return err(format!("{at}: {} cannot be searched: trials must see the same data", self.field));
        }
        let range = |low: Option<f64>, high: Option<f64>| match (low, high) {
            (Some(l), Some(h)) if l.is_finite() && h.is_finite() && l <= h => Ok((l, h)),
            (Some(l), Some(h)) => err(format!("{at}: low = {l} and high = {h} must be finite with low <= high")),
            _ => err(format!("{at}: the distribution needs low and high")),
        };
        match (mode, self.distribution) {
            (SearchMode::Grid, Some(d)) => {
                return err(format!("{at}: distribution {d:?} is for a random search; a grid takes values"))
            }
            (SearchMode::Grid, None) | (SearchMode::Random, None | Some(Distribution::Choice)) => {
                if self.values.is_empty() {
                    return err(format!("{at}: values must not be empty"));
                }
                if self.low.is_some() || self.high.is_some() {
                    return err(format!("{at}: low and high go with a distribution, not with values"));
                }
                if let Some(bad) = self.values.iter().find(|v| matches!(v, ParamValue::Number(x) if !x.is_finite())) {
                    return err(format!("{at}: value {bad} is not a finite number"));
                }
            }
            (SearchMode::Random, Some(d)) => {
                if !self.values.is_empty() {
                    return err(format!("{at}: values go with a grid or a choice, not with {d:?}"));
                }
                let (low, high) = range(self.low, self.high)?;
                if d == Distribution::LogUniform && low <= 0.0 {
                    return err(format!("{at}: a log-uniform range needs low > 0 (got {low})"));
                }
                if d == Distribution::IntUniform && (low.fract() != 0.0 || high.fract() != 0.0) {
                    return err(format!("{at}: an int-uniform range needs whole numbers (got {low}, {high})"));
                }
            }
        }
        Ok(())
    }

    /// One draw (random search); `validate` has passed.
    fn draw(&self, rng: &mut Rng) -> ParamValue {
        let (low, high) = (self.low.unwrap_or(0.0), self.high.unwrap_or(0.0));
        match self.distribution.unwrap_or(Distribution::Choice) {
            Distribution::Choice => self.values[rng.below(self.values.len() as u64) as usize].clone(),
            Distribution::Uniform => ParamValue::Number((low + rng.next_f64() * (high - low)).clamp(low, high)),
            Distribution::LogUniform => {
                let (a, b) = (low.ln(), high.ln());
                ParamValue::Number((a + rng.next_f64() * (b - a)).exp().clamp(low, high))
            }
            Distribution::IntUniform => {
                let span = (high - low) as u64 + 1;
                ParamValue::Number(low + rng.below(span) as f64)
            }
        }
    }
}

/// `base` with `params` set (dotted names reach into tables such as
/// `lr_schedule.gamma`), validated.
pub fn apply(base: &JobSpec, params: &[(String, ParamValue)]) -> Result<JobSpec, String> {
    check_schedule_params(params)?;
    let mut value = serde_json::to_value(base).map_err(|e| e.to_string())?;
    for (field, v) in params {
        let parts: Vec<&str> = field.split('.').collect();
        let mut slot = &mut value;
        for (depth, part) in parts.iter().enumerate() {
            let object =
                slot.as_object_mut().ok_or_else(|| format!("{field}: {} is not a table", parts[..depth].join(".")))?;
            if depth + 1 == parts.len() {
                object.insert((*part).to_owned(), v.to_json());
                break;
            }
            slot = object.get_mut(*part).ok_or_else(|| format!("{field}: the spec has no table {part}"))?;
        }
    }
    for table in SCHEDULES {
        fit_schedule(&mut value, table, params)?;
    }
    let spec: JobSpec = serde_json::from_value(value).map_err(|e| {
        let names: Vec<&str> = params.iter().map(|(f, _)| f.as_str()).collect();
        format!("{}: {e}", names.join(", "))
    })?;
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The schedule tables a sweep may reach into.
const SCHEDULES: [&str; 2] = ["lr_schedule", "sigma_schedule"];

/// The names of a schedule table's kinds, and what they are called.
fn schedule_names(table: &str) -> (&'static [&'static str], &'static str) {
    if table == "lr_schedule" {
        (&LrSchedule::NAMES, "lr schedule")
    } else {
        (&SigmaSchedule::NAMES, "sigma schedule")
    }
}

/// Searched schedule fields name the schedules as job files do; a whole
/// table or an unknown kind is refused with the names (serde's words for
/// the enums never reach the user).
fn check_schedule_params(params: &[(String, ParamValue)]) -> Result<(), String> {
    for (field, v) in params {
        for table in SCHEDULES {
            let (names, what) = schedule_names(table);
            if field == table {
                return Err(format!(
                    "{field}: a sweep searches a schedule's fields, e.g. {table}.kind (one of: {}), not the whole table",
                    names.join(", ")
                ));
            }
            if *field == format!("{table}.kind") {
                match v {
                    ParamValue::Text(kind) if names.contains(&kind.as_str()) => {}
                    ParamValue::Text(kind) => {
                        return Err(format!("{field}: unknown {what} '{kind}' (expected one of: {})", names.join(", ")))
                    }
                    other => return Err(format!("{field}: {other} is not a name (one of: {})", names.join(", "))),
                }
            }
        }
    }
    Ok(())
}

/// With a schedule's fields set by `params`: the keys the base's kind had
/// and the searched kind does not take are dropped, and a key the kind
/// needs but neither gives is named.
fn fit_schedule(value: &mut serde_json::Value, table: &str, params: &[(String, ParamValue)]) -> Result<(), String> {
    let prefix = format!("{table}.");
    let searched: Vec<&str> = params.iter().filter_map(|(f, _)| f.strip_prefix(&prefix)).collect();
    if searched.is_empty() {
        return Ok(());
    }
    let Some(object) = value.get_mut(table).and_then(serde_json::Value::as_object_mut) else { return Ok(()) };
    let kind = object.get("kind").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    let keys = schedule_keys(&kind);
    if let Some(key) = searched.iter().find(|k| **k != "kind" && !keys.contains(k)) {
        let takes = if keys.is_empty() { "only kind".to_owned() } else { format!("kind, {}", keys.join(", ")) };
        return Err(format!("{table}.{key}: {table} kind \"{kind}\" has no {key} (it takes {takes})"));
    }
    object.retain(|key, _| key == "kind" || keys.contains(&key.as_str()));
    if let Some(missing) = keys.iter().find(|k| !object.contains_key(**k)) {
        return Err(format!(
            "{table}.kind = \"{kind}\" needs {table}.{missing}: set it in the base job or search it too"
        ));
    }
    Ok(())
}

impl EarlyStopping {
    fn validate(&self) -> Result<(), SweepError> {
        if self.rungs.is_empty() {
            return err("early_stopping.rungs: at least one rung epoch is needed");
        }
        if self.rungs[0] == 0 || self.rungs.windows(2).any(|w| w[0] >= w[1]) {
            return err(format!(
                "early_stopping.rungs = {:?} is out of range: epochs >= 1, strictly increasing",
                self.rungs
            ));
        }
        if !(self.reduction_factor.is_finite() && self.reduction_factor > 1.0) {
            return err(format!(
                "early_stopping.reduction_factor = {} is out of range: must be a finite number > 1",
                self.reduction_factor
            ));
        }
        if let Some(m) = self.min_validation_accuracy {
            if !(0.0..=1.0).contains(&m) {
                return err(format!("early_stopping.min_validation_accuracy = {m} is out of range: must be in [0, 1]"));
            }
        }
        Ok(())
    }

    /// The rung a trial reaches with an evaluation at `epoch`: the highest
    /// rung at or below it that `judged` does not hold yet.
    #[must_use]
    pub fn rung_reached(&self, epoch: u64, judged: impl Fn(u32) -> bool) -> Option<u32> {
        self.rungs.iter().rev().copied().find(|&r| u64::from(r) <= epoch && !judged(r))
    }

    /// Whether a trial whose validation accuracy at `rung` is `value` goes
    /// on, given the values of the OTHER trials recorded at that rung so far.
    ///
    /// Asynchronous successive halving (Li et al., 2020): with `n` trials at
    /// the rung (this one included), the trial goes on if it is among the
    /// best `max(1, floor(n / η))`. While fewer than η trials have reached
    /// the rung there is nothing to compare with and every trial goes on
    /// (Ray Tune's grace). A non-finite value, or one below
    /// `min_validation_accuracy`, stops the trial at once.
    #[must_use]
    pub fn decide(&self, rung: u32, value: f64, others: &[f64]) -> Decision {
        let stop = |why: String| Decision::Stop { reason: format!("stopped early at rung epoch {rung}: {why}") };
        if !value.is_finite() {
            return stop(format!("validation accuracy {value} is not a number"));
        }
        if let Some(min) = self.min_validation_accuracy.filter(|m| value < *m) {
            return stop(format!("validation accuracy {value:.4} below the minimum {min:.4}"));
        }
        let n = others.len() + 1;
        if (n as f64) < self.reduction_factor {
            return Decision::Continue;
        }
        let keep = ((n as f64 / self.reduction_factor).floor() as usize).max(1);
        let mut all: Vec<f64> = others.iter().copied().filter(|v| v.is_finite()).collect();
        all.push(value);
        all.sort_by(|a, b| b.total_cmp(a));
        let cut = all[(keep - 1).min(all.len() - 1)];
        if value >= cut {
            Decision::Continue
        } else {
            stop(format!(
                "validation accuracy {value:.4} below the rung's cut {cut:.4} (the best {keep} of {n} trials go on, η = {})",
                self.reduction_factor
            ))
        }
    }
}

/// What happens to a trial at a rung.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Continue,
    Stop { reason: String },
}

/// A rung result: the validation accuracy of `trial` when it reached `rung`,
/// and whether it went on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RungResult {
    pub rung: u32,
    pub trial: u32,
    pub validation_accuracy: f64,
    pub continued: bool,
}

/// What a trial scored, for ranking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrialScore {
    pub index: u32,
    pub validation_accuracy: Option<f64>,
    /// Reported next to the validation accuracy; never used to rank.
    pub test_accuracy: Option<f64>,
}

/// Trial indices from best to worst by validation accuracy (the latest
/// evaluation of each); trials without one (or with NaN) come last; ties go
/// to the lower index. Test accuracy plays no part.
#[must_use]
pub fn rank(scores: &[TrialScore]) -> Vec<u32> {
    let key = |s: &TrialScore| s.validation_accuracy.filter(|v| v.is_finite());
    let mut sorted: Vec<&TrialScore> = scores.iter().collect();
    sorted.sort_by(|a, b| match (key(a), key(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.index.cmp(&b.index)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.index.cmp(&b.index),
    });
    sorted.into_iter().map(|s| s.index).collect()
}

/// The best trial by validation accuracy, if any trial has one.
#[must_use]
pub fn best(scores: &[TrialScore]) -> Option<u32> {
    let first = *rank(scores).first()?;
    scores
        .iter()
        .find(|s| s.index == first)
        .and_then(|s| s.validation_accuracy.filter(|v| v.is_finite()))
        .map(|_| first)
}

#[cfg(test)]
mod tests;
