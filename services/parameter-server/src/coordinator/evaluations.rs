//! Evaluations on the workers: when an applied update makes a version due
//! for evaluation, its shards ([`rwp_spec::eval`]) are scheduled beside the
//! next update's tasks and the version's snapshot is kept fetchable until
//! the last shard is in. The shards' per-batch results are then summed in
//! shard order, exactly as the local trainer sums its batches, and the
//! evaluation reaches the job's history, its watchers, TensorBoard and
//! the metrics. A job whose training is done succeeds once its last
//! evaluation is recorded.

use std::sync::Arc;
use std::time::Instant;

use rwp_core::data::DatasetInfo;
use rwp_scheduler::{EvalClaim, RecordedEvaluation};
use rwp_spec::eval::{check_shard_result, eval_tasks, BatchEval, EvalSplit, EvalTotals};
use rwp_spec::work::EvalPush;
use tracing::info;

use super::{work::refusal, Coordinator, Snapshot, State};
use crate::domain::{Evaluation, JobEvent, JobState, LogKind};
use crate::error::ServerError;

/// A version under evaluation: its epoch and its snapshot, which workers
/// fetch until the evaluation is complete.
#[derive(Debug)]
pub(super) struct Evaluating {
    pub(super) epoch: u64,
    pub(super) snapshot: Arc<Snapshot>,
    /// Open from scheduling to the fold; the shards' task spans on the
    /// workers are its children.
    pub(super) span: tracing::Span,
}

impl Coordinator {
    /// Schedules the evaluation of `snapshot`, the job's version at the end
    /// of `epoch`.
    pub(super) fn start_evaluation(s: &mut State, job: &str, epoch: u64, snapshot: Arc<Snapshot>) {
        let Some(entry) = s.jobs.get_mut(job) else { return };
        let Some(run) = entry.run.as_mut() else { return };
        let info = DatasetInfo::for_spec(&entry.record.spec);
        let version = snapshot.version;
        let tasks = eval_tasks(version, info.eval_plan(EvalSplit::Test), info.eval_plan(EvalSplit::Validation));
        let span = tracing::info_span!(parent: None, "rwp.evaluation", job = %job, step = version, epoch);
        run.evaluating.insert(version, Evaluating { epoch, snapshot, span });
        s.scheduler.schedule_evaluation(job, version, tasks, Instant::now());
    }

    /// Takes an evaluation shard's result. Returns whether it was accepted
    /// (false: a duplicate, dropped).
    pub async fn push_evaluation(self: &Arc<Self>, push: EvalPush) -> Result<bool, ServerError> {
        let claim = EvalClaim { worker: &push.worker_id, lease: &push.lease_id, job: &push.job_id, task: &push.task };
        let job = push.job_id.as_str();
        let (evaluation, record) = {
            let mut guard = self.lock();
            let s = &mut *guard;
            s.scheduler.admit_evaluation(&claim).map_err(|e| refusal(s, e))?;
            let entry = s.jobs.get(job).ok_or_else(|| ServerError::JobNotFound(job.to_owned()))?;
            let plan = DatasetInfo::for_spec(&entry.record.spec).eval_plan(push.task.split);
            check_shard_result(plan, &push.task, &push.batches, push.skipped.len())
                .map_err(|e| ServerError::BadPush(format!("{e} (job {job})")))?;
            let recorded = s.scheduler.record_evaluation(&claim, push.batches.clone(), Instant::now());
            if matches!(recorded, Ok(RecordedEvaluation::Accepted | RecordedEvaluation::Complete(_))) {
                s.workers.lease_ended(&push.worker_id, &push.lease_id, true, Instant::now());
                let what =
                    format!("{:?} evaluation shard {} of step {}", push.task.split, push.task.shard, push.task.version);
                self.note_skipped(s, job, &what, &push.skipped);
            }
            self.refresh_gauges(s);
            let complete = match recorded.map_err(|e| refusal(s, e))? {
                RecordedEvaluation::Duplicate => return Ok(false),
                RecordedEvaluation::Accepted => return Ok(true),
                RecordedEvaluation::Complete(complete) => complete,
            };
            self.metrics.step_seconds.observe_with(&[("phase", "evaluation")], complete.waited.as_secs_f64());
            let outage = s.no_workers_since;
            let Some(entry) = s.jobs.get_mut(job) else { return Ok(true) };
            let Some(run) = entry.run.as_mut() else { return Ok(true) };
            let Some(evaluating) = run.evaluating.remove(&complete.version) else { return Ok(true) };
            let evaluation = fold(
                &complete.results,
                complete.version,
                evaluating.epoch,
                entry.record.wall_time_before_s + run.trained_seconds(outage),
                &DatasetInfo::for_spec(&entry.record.spec),
            );
            if entry.record.last_evaluation.as_ref().is_none_or(|e| e.step <= evaluation.step) {
                entry.record.last_evaluation = Some(evaluation.clone());
            }
            self.recorder.count_evaluation(job, &evaluation);
            let _ = entry.events.send(JobEvent::Evaluation(evaluation.clone()));
            (evaluation, entry.record.clone())
        };
        info!(job, step = evaluation.step, test_accuracy = evaluation.test_accuracy, "evaluated");
        let validation = match (evaluation.validation_accuracy, evaluation.validation_loss) {
            (Some(accuracy), Some(loss)) => format!(", validation accuracy {accuracy:.4}, loss {loss:.4}"),
            _ => String::new(),
        };
        self.log(
            job,
            LogKind::Evaluated,
            None,
            format!(
                "evaluated at step {} (epoch {}): test accuracy {:.4}, loss {:.4}{validation}",
                evaluation.step, evaluation.epoch, evaluation.test_accuracy, evaluation.test_loss
            ),
        );
        self.recorder.persist_evaluation(&record, &evaluation);
        if let Some((sweep, trial)) = &record.sweep {
            self.sweep_changed(sweep);
            if evaluation.step < record.total_updates {
                self.judge_trial(sweep, *trial, job, &evaluation).await;
            }
        }
        self.succeed_when_done(job);
        Ok(true)
    }

    /// Ends the job as succeeded when its training is done, its checkpoint
    /// written and its evaluations recorded.
    pub(super) fn succeed_when_done(&self, job: &str) {
        let done = {
            let s = self.lock();
            s.jobs.get(job).is_some_and(|entry| {
                entry.run.is_some()
                    && entry.record.total_updates > 0
                    && entry.record.step >= entry.record.total_updates
                    && !s.scheduler.is_paused(job)
                    && !s.scheduler.is_evaluating(job)
            })
        };
        if done {
            let _ = self.finish(job, JobState::Succeeded, None);
        }
    }
}

/// The evaluation of a version from its shards' results, in task order
/// (the test split's shards, then the validation split's): each split's
/// batches summed in batch order.
fn fold(results: &[Vec<BatchEval>], version: u64, epoch: u64, wall_time_s: f64, info: &DatasetInfo) -> Evaluation {
    let test_shards = info.eval_plan(EvalSplit::Test).shard_count() as usize;
    let totals = |shards: &[Vec<BatchEval>]| {
        let mut totals = EvalTotals::default();
        shards.iter().flatten().for_each(|batch| totals.add(batch));
        totals
    };
    let test = totals(&results[..test_shards]);
    let validation = (info.validation > 0).then(|| totals(&results[test_shards..]));
    Evaluation {
        step: version,
        epoch,
        test_loss: test.loss(),
        test_accuracy: test.accuracy(),
        wall_time_s,
        validation_loss: validation.map(|v| v.loss()),
        validation_accuracy: validation.map(|v| v.accuracy()),
    }
}
