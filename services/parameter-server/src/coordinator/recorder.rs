//! The side effects of what happens to a job: its metrics, its TensorBoard
//! files (scalars; for a sweep's trial its HParams session, for the sweep
//! its HParams experiment), its MLflow run when the server has a tracker,
//! and its rows in the store.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use rwp_spec::sweep::{Distribution, ParamValue, SearchParam};
use rwp_spec::JobSpec;
use rwp_telemetry::hparams::{self, DatasetType, Domain, Experiment, HParamInfo, Interval, ListValue, ProtoValue};
use rwp_telemetry::mlflow::{MlflowTracker, Record, RunStatus};
use rwp_telemetry::tfevents::{run_name, EventWriter};
use tracing::warn;

use super::metrics::ServerMetrics;
use crate::domain::{now_unix_ms, Evaluation, JobRecord, JobState, StepMetrics, SweepRecord};
use crate::store::Store;

#[derive(Debug)]
pub(super) struct UpdateRecorder {
    store: Store,
    metrics: ServerMetrics,
    /// Where each job's TensorBoard run directory goes.
    boards_dir: PathBuf,
    /// Names this server process's event files apart from earlier ones'.
    incarnation: String,
    /// Each running job's event file.
    boards: Mutex<HashMap<String, EventWriter>>,
    /// The MLflow tracking server's client, when the server has one.
    tracker: Option<MlflowTracker>,
}

/// The metrics an HParams experiment shows for each trial, with the split
/// each comes from.
const TRIAL_METRICS: [(&str, DatasetType); 6] = [
    ("validation/accuracy", DatasetType::Validation),
    ("validation/loss", DatasetType::Validation),
    ("test/accuracy", DatasetType::Unknown),
    ("test/loss", DatasetType::Unknown),
    ("train/accuracy", DatasetType::Training),
    ("train/loss", DatasetType::Training),
];

/// The TensorBoard run directory of a new job (see
/// [`JobRecord::tensorboard_run`]): `<name>-<id>`; for trial `index` of a
/// sweep, `<sweep name>-<sweep id>/<index>-<field>=<value>,...-<id>` (the
/// sweep's run holds the HParams experiment, its trials are its sessions).
pub(super) fn tensorboard_run(job: &str, name: &str, trial: Option<(&SweepRecord, u32)>) -> String {
    match trial {
        None => run_name(name, job),
        Some((sweep, index)) => {
            let params = sweep.trials.get(index as usize).map(|t| t.params.as_slice()).unwrap_or_default();
            let values: Vec<String> = params.iter().map(|(field, value)| format!("{field}={value}")).collect();
            let trial = format!("{index}-{}", values.join(","));
            format!("{}/{}", sweep_run(sweep), run_name(&trial, job))
        }
    }
}

/// The TensorBoard run directory of a sweep.
fn sweep_run(sweep: &SweepRecord) -> String {
    run_name(&sweep.name, &sweep.id)
}

fn proto_value(value: &ParamValue) -> ProtoValue {
    match value {
        ParamValue::Flag(b) => ProtoValue::flag(*b),
        ParamValue::Number(x) => ProtoValue::number(*x),
        ParamValue::Text(t) => ProtoValue::text(t.clone()),
    }
}

/// A searched field as an HParams hyper-parameter: its values (a grid, a
/// random choice) or the interval it is drawn from, and their type when
/// they share one.
fn hparam_info(param: &SearchParam) -> HParamInfo {
    let (data_type, domain) = match (param.distribution, param.low, param.high) {
        (Some(Distribution::Uniform | Distribution::LogUniform | Distribution::IntUniform), Some(low), Some(high)) => {
            (hparams::DataType::Float64, Some(Domain::Interval(Interval { min_value: low, max_value: high })))
        }
        _ => {
            let values: Vec<ProtoValue> = param.values.iter().map(proto_value).collect();
            let first = values.first().map_or(hparams::DataType::Unset, ProtoValue::data_type);
            let shared = if values.iter().all(|v| v.data_type() == first) { first } else { hparams::DataType::Unset };
            (shared, Some(Domain::Discrete(ListValue { values })))
        }
    };
    let differs = match &domain {
        Some(Domain::Interval(range)) => range.min_value < range.max_value,
        Some(Domain::Discrete(list)) => list.values.len() > 1,
        None => false,
    };
    HParamInfo { name: param.field.clone(), r#type: data_type as i32, domain, differs, ..HParamInfo::default() }
}

/// The job's spec as MLflow parameters: every field, nested ones as
/// `lr_schedule.gamma`, leaving out unset ones and `data_dir` (a path on
/// the server).
fn spec_params(spec: &JobSpec) -> Vec<(String, String)> {
    fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(fields) => {
                for (key, value) in fields {
                    let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    flatten(&key, value, out);
                }
            }
            serde_json::Value::String(text) => out.push((prefix.to_owned(), text.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut params = Vec::new();
    if let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(spec) {
        fields.remove("data_dir");
        flatten("", &serde_json::Value::Object(fields), &mut params);
    }
    params
}

/// The scalars of an update, in TensorBoard and MLflow alike.
fn step_scalars(step: &StepMetrics) -> Vec<(&'static str, f64)> {
    let mut scalars = vec![("train/lr", step.lr)];
    if !step.skipped {
        scalars.extend([("train/loss", step.loss), ("train/accuracy", step.accuracy)]);
        if let Some(p) = step.perturbed_loss {
            scalars.push(("train/perturbed_loss", p));
        }
        if step.sigma > 0.0 {
            scalars.push(("train/sigma", step.sigma));
        }
    }
    scalars
}

/// The scalars of an evaluation.
fn evaluation_scalars(e: &Evaluation) -> Vec<(&'static str, f64)> {
    let mut scalars = vec![("test/loss", e.test_loss), ("test/accuracy", e.test_accuracy)];
    if let (Some(loss), Some(accuracy)) = (e.validation_loss, e.validation_accuracy) {
        scalars.extend([("validation/loss", loss), ("validation/accuracy", accuracy)]);
    }
    scalars
}

fn seconds(unix_ms: i64) -> f64 {
    unix_ms as f64 / 1000.0
}

impl UpdateRecorder {
    pub(super) fn new(
        store: Store,
        metrics: ServerMetrics,
        boards_dir: PathBuf,
        incarnation: String,
        tracker: Option<MlflowTracker>,
    ) -> Self {
        Self { store, metrics, boards_dir, incarnation, boards: Mutex::default(), tracker }
    }

    fn boards(&self) -> std::sync::MutexGuard<'_, HashMap<String, EventWriter>> {
        self.boards.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the job's TensorBoard event file in its run directory (a new
    /// file per server process).
    pub(super) fn open_board(&self, record: &JobRecord) {
        let job = record.id.as_str();
        match EventWriter::create(&self.boards_dir.join(record.tensorboard_run()), &self.incarnation) {
            Ok(writer) => {
                self.boards().insert(job.to_owned(), writer);
            }
            Err(e) => warn!(job, error = %e, "cannot write TensorBoard events"),
        }
    }

    /// The job's event file is closed without a trace of the job elsewhere
    /// (a submission refused after its engine started).
    pub(super) fn close_board(&self, job: &str) {
        self.boards().remove(job);
    }

    /// Deletes the job's TensorBoard run (a deleted job's).
    pub(super) fn remove_board(&self, record: &JobRecord) {
        let job = record.id.as_str();
        self.close_board(job);
        let dir = self.boards_dir.join(record.tensorboard_run());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(job, dir = %dir.display(), error = %e, "cannot remove a deleted job's TensorBoard run"),
        }
    }

    /// A job started (`resumed`: again, after a restart): its MLflow run
    /// begins, with its parameters; a new trial's HParams session starts.
    pub(super) fn job_started(&self, record: &JobRecord, trial: Option<&SweepRecord>, resumed: bool) {
        let job = record.id.as_str();
        if let Some(sweep) = trial.filter(|_| !resumed) {
            let index = record.sweep.as_ref().map_or(0, |(_, index)| *index);
            let values: BTreeMap<String, ProtoValue> = sweep
                .trials
                .get(index as usize)
                .map(|t| t.params.iter().map(|(field, value)| (field.clone(), proto_value(value))).collect())
                .unwrap_or_default();
            let start = seconds(record.created_unix_ms);
            if let Some(file) = self.boards().get_mut(job) {
                if let Err(e) = file.summary(0, start, vec![hparams::session_start_summary(values, start)]) {
                    warn!(job, error = %e, "cannot write TensorBoard events");
                }
            }
        }
        if let Some(tracker) = &self.tracker {
            let mut tags = vec![("rwp.method".to_owned(), record.spec.method.to_string())];
            if let Some(owner) = &record.owner {
                tags.push(("rwp.owner".to_owned(), owner.clone()));
            }
            if let Some((sweep, index)) = &record.sweep {
                tags.extend([("rwp.sweep_id".to_owned(), sweep.clone()), ("rwp.trial".to_owned(), index.to_string())]);
            }
            let name = if record.name.is_empty() { record.id.clone() } else { record.name.clone() };
            tracker.record(Record::Started {
                job: job.to_owned(),
                name,
                params: spec_params(&record.spec),
                tags,
                start_unix_ms: record.created_unix_ms,
                resumed,
            });
        }
    }

    /// The job ended: a trial's HParams session ends, the MLflow run ends
    /// with the job's state, the event file is closed.
    pub(super) fn job_ended(&self, record: &JobRecord) {
        let job = record.id.as_str();
        let now = now_unix_ms();
        if let Some(mut file) = self.boards().remove(job) {
            if record.sweep.is_some() {
                // A trial stopped early by its sweep ran as it should.
                let status = match record.state {
                    JobState::Succeeded | JobState::Stopped => hparams::Status::Success,
                    JobState::Failed => hparams::Status::Failure,
                    _ => hparams::Status::Unknown,
                };
                let end = vec![hparams::session_end_summary(status, seconds(now))];
                if let Err(e) = file.summary(record.step, seconds(now), end) {
                    warn!(job, error = %e, "cannot write TensorBoard events");
                }
            }
        }
        if let Some(tracker) = &self.tracker {
            let status = match record.state {
                JobState::Succeeded => RunStatus::Finished,
                JobState::Failed => RunStatus::Failed,
                _ => RunStatus::Killed,
            };
            tracker.record(Record::Ended { job: job.to_owned(), status, end_unix_ms: now });
        }
    }

    /// A sweep was created: its run directory gets the HParams experiment,
    /// its searched fields and the metrics to compare its trials on.
    pub(super) fn sweep_created(&self, sweep: &SweepRecord) {
        let created = seconds(sweep.created_unix_ms);
        let experiment = Experiment {
            name: if sweep.name.is_empty() { sweep.id.clone() } else { sweep.name.clone() },
            description: format!("rwp sweep {}", sweep.id),
            user: sweep.owner.clone().unwrap_or_default(),
            time_created_secs: created,
            hparam_infos: sweep.spec.search.params.iter().map(hparam_info).collect(),
            metric_infos: TRIAL_METRICS.iter().map(|(tag, dataset)| hparams::metric(tag, *dataset)).collect(),
        };
        let written = EventWriter::create(&self.boards_dir.join(sweep_run(sweep)), &self.incarnation)
            .and_then(|mut file| file.summary(0, created, vec![hparams::experiment_summary(experiment)]));
        if let Err(e) = written {
            warn!(sweep = %sweep.id, error = %e, "cannot write the sweep's TensorBoard HParams experiment");
        }
    }

    /// Counts the update in the metrics (before its events reach watchers,
    /// so a watcher that saw the update reads metrics that include it).
    pub(super) fn count(&self, job: &str, step: &StepMetrics) {
        let labels = [("job", job)];
        if step.skipped {
            self.metrics.skipped_updates.inc_with(&labels, 1.0);
        } else {
            self.metrics.updates.inc_with(&labels, 1.0);
            self.metrics.job_loss.set_with(&labels, step.loss);
            self.metrics.job_accuracy.set_with(&labels, step.accuracy);
        }
    }

    /// Counts an evaluation in the metrics (before its event reaches watchers).
    pub(super) fn count_evaluation(&self, job: &str, evaluation: &Evaluation) {
        self.metrics.job_test_accuracy.set_with(&[("job", job)], evaluation.test_accuracy);
    }

    /// Writes the update's TensorBoard scalars, its MLflow metrics and its store rows.
    pub(super) fn persist(&self, record: &JobRecord, step: &StepMetrics) {
        self.scalars(&record.id, step.step, &step_scalars(step));
        if let Err(e) = self.store.put_step(record, step, None) {
            warn!(job = %record.id, error = %e, "cannot record metrics");
        }
    }

    /// Writes an evaluation's TensorBoard scalars, its MLflow metrics and its store row.
    pub(super) fn persist_evaluation(&self, record: &JobRecord, evaluation: &Evaluation) {
        self.scalars(&record.id, evaluation.step, &evaluation_scalars(evaluation));
        if let Err(e) = self.store.put_evaluation(record, evaluation) {
            warn!(job = %record.id, error = %e, "cannot record the evaluation");
        }
    }

    /// `scalars` at `step` to the job's event file and its MLflow run.
    fn scalars(&self, job: &str, step: u64, scalars: &[(&str, f64)]) {
        let now = now_unix_ms();
        if let Some(file) = self.boards().get_mut(job) {
            if let Err(e) = file.scalars(step, seconds(now), scalars) {
                warn!(job, error = %e, "cannot write TensorBoard events");
            }
        }
        if let Some(tracker) = &self.tracker {
            let values = scalars.iter().map(|(key, value)| ((*key).to_owned(), *value)).collect();
            tracker.record(Record::Metrics { job: job.to_owned(), step: step as i64, unix_ms: now, values });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TrialRecord;
    use rwp_spec::sweep::{Search, SearchMode, SweepSpec, SweepState};
    use rwp_spec::Method;

    fn sweep(name: &str) -> SweepRecord {
        let params =
            vec![("sigma".to_owned(), ParamValue::Number(0.01)), ("nesterov".to_owned(), ParamValue::Flag(true))];
        let spec = SweepSpec {
            base: JobSpec::reference(Method::MArwp),
            search: Search { mode: SearchMode::Grid, n_trials: None, seed: 0, params: Vec::new() },
            concurrency: 1,
            early_stopping: None,
        };
        SweepRecord {
            id: "sweep-1".into(),
            name: name.into(),
            trials: vec![TrialRecord { index: 0, params, spec: spec.base.clone(), job_id: None }],
            spec,
            state: SweepState::Running,
            error: None,
            created_unix_ms: 0,
            updated_unix_ms: 0,
            owner: None,
            max_active_jobs: None,
            rungs: Vec::new(),
        }
    }

    #[test]
    fn run_directories_name_the_job_and_nest_trials_in_their_sweep() {
        assert_eq!(tensorboard_run("job-1", "resnet baseline", None), "resnet_baseline-job-1");
        assert_eq!(tensorboard_run("job-1", "", None), "job-1");
        let grid = sweep("sigma grid");
        assert_eq!(
            tensorboard_run("job-2", "sigma grid/0 sigma = 0.01", Some((&grid, 0))),
            "sigma_grid-sweep-1/0-sigma=0.01_nesterov=true-job-2"
        );
    }

    #[test]
    fn searched_fields_become_hparams_with_their_domains() {
        let param = |values: Vec<ParamValue>, distribution, low, high| SearchParam {
            field: "f".into(),
            values,
            distribution,
            low,
            high,
        };
        let grid = hparam_info(&param(vec![ParamValue::Number(0.1), ParamValue::Number(1.0)], None, None, None));
        assert_eq!(grid.r#type, hparams::DataType::Float64 as i32);
        let values = vec![ProtoValue::number(0.1), ProtoValue::number(1.0)];
        assert_eq!(grid.domain, Some(Domain::Discrete(ListValue { values })));
        assert!(grid.differs);
        let mixed = hparam_info(&param(vec![ParamValue::Number(0.1), ParamValue::Text("x".into())], None, None, None));
        assert_eq!(mixed.r#type, hparams::DataType::Unset as i32);
        let drawn = hparam_info(&param(Vec::new(), Some(Distribution::LogUniform), Some(0.001), Some(0.1)));
        assert_eq!(drawn.domain, Some(Domain::Interval(Interval { min_value: 0.001, max_value: 0.1 })));
    }

    #[test]
    fn mlflow_parameters_are_the_spec_flattened_without_server_paths() {
        let mut spec = JobSpec::reference(Method::MArwp);
        spec.data_dir = Some("/srv/data".into());
        let params: BTreeMap<String, String> = spec_params(&spec).into_iter().collect();
        assert_eq!(params["method"], "m-arwp");
        assert_eq!(params["lr"], spec.lr.to_string());
        assert_eq!(params["sigma"], spec.sigma.to_string());
        assert_eq!(params["batch_size"], spec.batch_size.to_string());
        assert!(params.keys().any(|k| k.starts_with("lr_schedule")), "{params:?}");
        assert!(!params.contains_key("data_dir"));
    }
}
