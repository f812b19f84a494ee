//! The side effects of an applied update: its metrics, its TensorBoard
//! scalars and its rows in the store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use rwp_telemetry::tfevents::EventWriter;
use tracing::warn;

use super::metrics::ServerMetrics;
use crate::domain::{now_unix_ms, Evaluation, JobRecord, StepMetrics};
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
}

impl UpdateRecorder {
    pub(super) fn new(store: Store, metrics: ServerMetrics, boards_dir: PathBuf, incarnation: String) -> Self {
        Self { store, metrics, boards_dir, incarnation, boards: Mutex::default() }
    }

    fn boards(&self) -> std::sync::MutexGuard<'_, HashMap<String, EventWriter>> {
        self.boards.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the job's TensorBoard event file (a new one per server process).
    pub(super) fn open_board(&self, job: &str) {
        match EventWriter::create(&self.boards_dir.join(job), &self.incarnation) {
            Ok(writer) => {
                self.boards().insert(job.to_owned(), writer);
            }
            Err(e) => warn!(job, error = %e, "cannot write TensorBoard events"),
        }
    }

    /// The job ended: its event file is closed.
    pub(super) fn close_board(&self, job: &str) {
        self.boards().remove(job);
    }

    /// Deletes the job's TensorBoard run (a deleted job's).
    pub(super) fn remove_board(&self, job: &str) {
        self.close_board(job);
        let dir = self.boards_dir.join(job);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(job, dir = %dir.display(), error = %e, "cannot remove a deleted job's TensorBoard run"),
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

    /// Writes the update's TensorBoard scalars and its store rows.
    pub(super) fn persist(&self, record: &JobRecord, step: &StepMetrics) {
        let job = record.id.as_str();
        if let Some(file) = self.boards().get_mut(job) {
            if let Err(e) = write_scalars(file, step) {
                warn!(job, error = %e, "cannot write TensorBoard events");
            }
        }
        if let Err(e) = self.store.put_step(record, step, None) {
            warn!(job, error = %e, "cannot record metrics");
        }
    }

    /// Writes an evaluation's TensorBoard scalars and its store row.
    pub(super) fn persist_evaluation(&self, record: &JobRecord, evaluation: &Evaluation) {
        let job = record.id.as_str();
        if let Some(file) = self.boards().get_mut(job) {
            if let Err(e) = write_evaluation(file, evaluation) {
                warn!(job, error = %e, "cannot write TensorBoard events");
            }
        }
        if let Err(e) = self.store.put_evaluation(record, evaluation) {
            warn!(job, error = %e, "cannot record the evaluation");
        }
    }
}

fn write_scalars(file: &mut EventWriter, step: &StepMetrics) -> std::io::Result<()> {
    let wall = now_unix_ms() as f64 / 1000.0;
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
    file.scalars(step.step, wall, &scalars)
}

fn write_evaluation(file: &mut EventWriter, e: &Evaluation) -> std::io::Result<()> {
    let wall = now_unix_ms() as f64 / 1000.0;
    let mut scalars = vec![("test/loss", e.test_loss), ("test/accuracy", e.test_accuracy)];
    if let (Some(loss), Some(accuracy)) = (e.validation_loss, e.validation_accuracy) {
        scalars.extend([("validation/loss", loss), ("validation/accuracy", accuracy)]);
    }
    file.scalars(e.step, wall, &scalars)
}
