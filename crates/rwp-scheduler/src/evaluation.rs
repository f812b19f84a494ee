//! Evaluation rounds: the shards of the evaluation of one weights version,
//! leased like gradient tasks (same expiry, re-issue, failure, duplicate
//! and stale rules) while the job's updates go on. A round ends when its
//! last shard's result is in; its results come out in shard order.

use std::time::{Duration, Instant};

use rwp_spec::eval::EvalTask;
use rwp_spec::work::Work;

use super::slot::{slowest, Slot, Status};
use super::{task_timeout, Lease, LeaseRef, Leased, ScheduleError, Scheduler};

/// The shards of the evaluation of one version.
#[derive(Debug)]
pub(crate) struct Round<E> {
    pub(crate) slots: Vec<Slot<EvalTask, E>>,
    published: Instant,
}

/// What a worker says it pushes for an evaluation shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalClaim<'a> {
    pub worker: &'a str,
    pub lease: &'a str,
    pub job: &'a str,
    pub task: &'a EvalTask,
}

/// Every shard result of an evaluation, in task order.
#[derive(Debug, PartialEq)]
pub struct CompleteEvaluation<E> {
    pub version: u64,
    pub results: Vec<E>,
    /// From the evaluation's scheduling to its last result.
    pub waited: Duration,
}

/// What recording an evaluation shard's result did.
#[derive(Debug, PartialEq)]
pub enum RecordedEvaluation<E> {
    /// The shard's result was already in: dropped.
    Duplicate,
    /// Kept; the evaluation waits for other shards.
    Accepted,
    /// Kept, and it was the last: the evaluation is complete (and gone
    /// from the scheduler; later pushes for it are stale).
    Complete(CompleteEvaluation<E>),
}

impl<R, E> Scheduler<R, E> {
    /// Schedules the evaluation of the job's weights version `version`, one
    /// task per shard (the job's current update goes on beside it). A
    /// version already being evaluated is left as it is.
    pub fn schedule_evaluation(&mut self, job: &str, version: u64, tasks: Vec<EvalTask>, now: Instant) {
        let rounds = self.evaluations.entry(job.to_owned()).or_default();
        rounds.entry(version).or_insert_with(|| Round {
            slots: tasks.into_iter().map(|task| Slot::new(task, now)).collect(),
            published: now,
        });
    }

    /// Whether some evaluation of the job is under way.
    #[must_use]
    pub fn is_evaluating(&self, job: &str) -> bool {
        self.evaluations.get(job).is_some_and(|rounds| !rounds.is_empty())
    }

    pub(crate) fn evaluation_slot(&mut self, job: &str, version: u64, slot: usize) -> Option<&mut Slot<EvalTask, E>> {
        self.evaluations.get_mut(job)?.get_mut(&version)?.slots.get_mut(slot)
    }

    /// Leases the next ready shard; with `before_updates`, only of a job
    /// whose current update has not started.
    pub(crate) fn lease_evaluation(&mut self, worker: &str, now: Instant, before_updates: bool) -> Option<Lease> {
        let jobs: Vec<&String> = self.evaluations.keys().collect();
        if jobs.is_empty() {
            return None;
        }
        let start = self.evaluation_cursor % jobs.len();
        let (offset, job, version, index) =
            jobs.iter().cycle().skip(start).take(jobs.len()).enumerate().find_map(|(offset, job)| {
                if self.is_paused(job) || (before_updates && !self.update_not_started(job)) {
                    return None;
                }
                self.evaluations[*job].iter().find_map(|(version, round)| {
                    let index = round.slots.iter().position(|slot| slot.ready(now))?;
                    Some((offset, (*job).clone(), *version, index))
                })
            })?;
        self.evaluation_cursor = start + offset + 1;
        let id = self.next_lease_id();
        let slowest = self.updates.get(&job).and_then(|u| u.slowest_evaluation);
        let task_timeout = task_timeout(&self.timing, slowest);
        let lease_timeout = self.timing.lease_timeout;
        let slot = self.evaluation_slot(&job, version, index).expect("found above");
        let (deadline, queued, replaces) = slot.take(&id, now, lease_timeout);
        let work = Work::Evaluation(slot.planned);
        let on = Leased::Evaluation { version };
        self.leases.insert(id.clone(), LeaseRef { job: job.clone(), on, slot: index, worker: worker.to_owned() });
        Some(Lease { id, job, work, deadline, task_timeout, queued, replaces })
    }

    /// Checks an evaluation push against its lease; `Ok(true)`: the shard's
    /// result is already in (a duplicate, to drop).
    pub fn admit_evaluation(&self, push: &EvalClaim<'_>) -> Result<bool, ScheduleError> {
        if self.draining {
            return Err(ScheduleError::ShuttingDown);
        }
        self.check_worker(push.worker)?;
        let rounds = self.evaluations.get(push.job);
        if rounds.is_none() && !self.updates.contains_key(push.job) {
            return Err(ScheduleError::NotScheduled(push.job.to_owned()));
        }
        let version = push.task.version;
        let Some(round) = rounds.and_then(|r| r.get(&version)) else {
            return Err(ScheduleError::Stale(format!(
                "the evaluation of version {version} of job {} is complete or was never scheduled",
                push.job
            )));
        };
        let lease = self
            .leases
            .get(push.lease)
            .filter(|l| l.worker == push.worker)
            .ok_or_else(|| ScheduleError::UnknownLease(push.lease.to_owned()))?;
        let slot = round.slots.get(lease.slot);
        if lease.job != push.job
            || lease.on != (Leased::Evaluation { version })
            || slot.map(|s| &s.planned) != Some(push.task)
        {
            return Err(ScheduleError::Mismatch(format!(
                "lease {} is for job {} ({:?} slot {}), not the evaluation shard {:?} of job {}",
                push.lease, lease.job, lease.on, lease.slot, push.task, push.job
            )));
        }
        Ok(slot.is_some_and(|s| matches!(s.status, Status::Done)))
    }

    /// Admits an evaluation push ([`Scheduler::admit_evaluation`]) and keeps
    /// its result; completes the evaluation when it is the last.
    pub fn record_evaluation(
        &mut self,
        push: &EvalClaim<'_>,
        result: E,
        now: Instant,
    ) -> Result<RecordedEvaluation<E>, ScheduleError> {
        if self.admit_evaluation(push)? {
            return Ok(RecordedEvaluation::Duplicate);
        }
        let version = push.task.version;
        let slot = self.leases[push.lease].slot;
        let took = self.evaluation_slot(push.job, version, slot).expect("admitted").fill(result, now);
        if let Some(update) = self.updates.get_mut(push.job) {
            update.slowest_evaluation = slowest(update.slowest_evaluation, took);
        }
        let rounds = self.evaluations.get_mut(push.job).expect("admitted");
        if rounds[&version].slots.iter().any(|s| s.result.is_none()) {
            return Ok(RecordedEvaluation::Accepted);
        }
        let round = rounds.remove(&version).expect("admitted");
        if rounds.is_empty() {
            self.evaluations.remove(push.job);
        }
        let on = Leased::Evaluation { version };
        self.leases.retain(|_, l| l.job != push.job || l.on != on);
        Ok(RecordedEvaluation::Complete(CompleteEvaluation {
            version,
            waited: now.saturating_duration_since(round.published),
            results: round.slots.into_iter().map(|s| s.result.expect("every result is in")).collect(),
        }))
    }
}
