//! The parameter server's scheduler: each running job's current update (one slot per task) and
//! the leases handed to workers. Synchronous, with no I/O, metrics or clock:
//! every rule that depends on time takes `now`, so the tests below drive it
//! with time advanced by hand.
//!
//! The rules:
//! - a task is leased to one worker at a time; a lease not renewed within
//!   the lease timeout lapses and its task goes to the next worker that asks;
//! - the first result of a task is kept, from whichever lease computed it
//!   (every lease of a task computes the same bits); later ones are
//!   duplicates, read and dropped;
//! - a result for an update already applied is stale; a lease the scheduler
//!   never issued, or another worker's, is unknown;
//! - when every task of an update has its result the update is complete: no
//!   task is leased until the next update is scheduled;
//! - a task given back with an error is re-issued; its third failure fails
//!   the job;
//! - a paused job, or a draining scheduler, hands out nothing;
//! - evaluation shards ([`Scheduler::schedule_evaluation`]) follow the same
//!   rules on the weights version they evaluate, several versions at once
//!   and beside the job's current update. Where there are more workers than
//!   gradient tasks per update, the spare workers take them while the
//!   updates go on. Where there are not, an update waits for its slowest
//!   task, so a shard taken by a worker that finished its task early would
//!   hold up the next update while the other workers idle: the job's
//!   shards go first at an update's start (before any of its tasks is
//!   leased), on every worker at once, and then the update follows.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rwp_spec::work::Work;
use rwp_spec::{Role, Task};

mod evaluation;
mod slot;

use slot::{slowest, Slot, Status};

pub use evaluation::{CompleteEvaluation, EvalClaim, RecordedEvaluation};

/// A task that fails this many times fails its job.
pub const MAX_TASK_FAILURES: u32 = 3;

/// The scheduler's time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A lease not renewed within this time lapses.
    pub lease_timeout: Duration,
    /// How long a worker may compute a task before one of the job's tasks
    /// has finished.
    pub task_timeout_initial: Duration,
    /// The shortest limit a task gets once tasks have finished (then ten
    /// times the slowest task so far).
    pub task_timeout_floor: Duration,
}

/// Why the scheduler refused a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown worker {0}: register again")]
    UnknownWorker(String),
    #[error("unknown lease {0}")]
    UnknownLease(String),
    /// The job has no update scheduled (it ended, or never ran here).
    #[error("job {0} is not running")]
    NotScheduled(String),
    /// The lease or the update it was for is over.
    #[error("stale task: {0}")]
    Stale(String),
    /// A push that does not match its lease.
    #[error("bad push: {0}")]
    Mismatch(String),
    #[error("job {job} is at weights version {current}, not {requested}")]
    StaleVersion { job: String, requested: u64, current: u64 },
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// One task of an update, as the scheduler plans it.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub task: Task,
    /// Whether the task's result carries BatchNorm buffers.
    pub returns_buffers: bool,
}

/// A task handed to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub id: String,
    pub job: String,
    pub work: Work,
    /// The lease lapses at this time unless renewed.
    pub deadline: Instant,
    /// How long the worker may compute the task.
    pub task_timeout: Duration,
    /// How long the task waited for a worker (from its publication, or from
    /// the deadline of the lease that lapsed).
    pub queued: Duration,
    /// The lapsed lease this one replaces.
    pub replaces: Option<String>,
}

/// What a worker says it pushes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushClaim<'a> {
    pub worker: &'a str,
    pub lease: &'a str,
    pub job: &'a str,
    pub step: u64,
    pub role: Role,
    pub shard: u32,
    pub weights_version: u64,
}

/// A push the scheduler admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The task's result is already in: the push is read and dropped.
    pub duplicate: bool,
    pub returns_buffers: bool,
}

/// Where a result goes, found by [`Scheduler::result_slot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultSlot {
    job: String,
    index: usize,
    pub returns_buffers: bool,
}

/// What recording a result did.
#[derive(Debug, PartialEq)]
pub enum Recorded<R> {
    /// Kept; the update waits for other tasks.
    Accepted,
    /// Kept, and it was the last: the update is complete and the job waits
    /// for [`Scheduler::schedule`] of the next one.
    Complete(CompleteUpdate<R>),
}

/// Every result of an update, in task order, split by role.
#[derive(Debug, PartialEq)]
pub struct CompleteUpdate<R> {
    /// Clean (or SAM) shards, in shard order.
    pub clean: Vec<R>,
    /// Perturbed shards, in shard order.
    pub perturbed: Vec<R>,
    /// From the update's publication to its last result.
    pub waited: Duration,
}

/// What giving a lease back did.
#[derive(Debug, PartialEq)]
pub enum Released {
    /// The lease no longer held its task (re-issued, or its result is in): nothing changed.
    NotHeld,
    /// The task is ready again.
    Requeued,
    /// The task failed and is ready again; it has failed `failures` times.
    Failed { work: Work, failures: u32 },
    /// The task failed [`MAX_TASK_FAILURES`] times: the job fails with this reason.
    JobFails { job: String, work: Work, reason: String },
}

/// Tasks by state, and the workers seen lately.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Waiting for a worker (lapsed leases included).
    pub pending: u32,
    /// Leased and not lapsed.
    pub leased: u32,
    /// Jobs with an update scheduled.
    pub running: u32,
    /// Workers that asked for work within the lease timeout.
    pub active_workers: u32,
}

#[derive(Debug)]
struct Update<R> {
    version: u64,
    slots: Vec<Slot<Planned, R>>,
    published: Instant,
    /// Complete and handed to the engine.
    applying: bool,
    paused: bool,
    /// The longest a task of this job took from lease to result.
    slowest_task: Option<Duration>,
    /// The longest an evaluation shard of this job took.
    slowest_evaluation: Option<Duration>,
}

/// What a lease is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leased {
    /// A gradient task of the update `step`.
    Update { step: u64 },
    /// A shard of the evaluation of weights version `version`.
    Evaluation { version: u64 },
}

#[derive(Clone, Debug)]
struct LeaseRef {
    job: String,
    on: Leased,
    slot: usize,
    worker: String,
}

/// Every running job's current update and the leases on its tasks.
#[derive(Debug)]
pub struct Scheduler<R, E = ()> {
    timing: Timing,
    /// Prefix of lease and worker ids: ids of another server process never match.
    incarnation: String,
    updates: BTreeMap<String, Update<R>>,
    /// Each job's evaluations under way, by the version they evaluate.
    evaluations: BTreeMap<String, BTreeMap<u64, evaluation::Round<E>>>,
    leases: HashMap<String, LeaseRef>,
    /// Registered workers: when each last asked for work.
    workers: HashMap<String, Instant>,
    issued: u64,
    /// Where the next lease search starts: jobs take turns.
    cursor: usize,
    /// The same for evaluation shards.
    evaluation_cursor: usize,
    draining: bool,
}

impl<R, E> Scheduler<R, E> {
    #[must_use]
    pub fn new(timing: Timing, incarnation: impl Into<String>) -> Self {
        Self {
            timing,
            incarnation: incarnation.into(),
            updates: BTreeMap::new(),
            evaluations: BTreeMap::new(),
            leases: HashMap::new(),
            workers: HashMap::new(),
            issued: 0,
            cursor: 0,
            evaluation_cursor: 0,
            draining: false,
        }
    }

    /// Registers a worker; returns its id.
    pub fn register(&mut self, now: Instant) -> String {
        self.issued += 1;
        let id = format!("w-{}-{}", self.incarnation, self.issued);
        self.workers.insert(id.clone(), now);
        id
    }

    /// Makes `tasks` the job's update `version`, replacing the one before
    /// (whose leases end; its evaluations go on).
    pub fn schedule(&mut self, job: &str, version: u64, tasks: Vec<Planned>, now: Instant) {
        self.leases.retain(|_, l| l.job != job || !matches!(l.on, Leased::Update { .. }));
        let slots = tasks.into_iter().map(|planned| Slot::new(planned, now)).collect();
        let before = self.updates.get(job);
        let slowest_task = before.and_then(|u| u.slowest_task);
        let slowest_evaluation = before.and_then(|u| u.slowest_evaluation);
        self.updates.insert(
            job.to_owned(),
            Update { version, slots, published: now, applying: false, paused: false, slowest_task, slowest_evaluation },
        );
    }

    /// The job ended: its update, its evaluations and their leases are dropped.
    pub fn unschedule(&mut self, job: &str) {
        self.leases.retain(|_, l| l.job != job);
        self.updates.remove(job);
        self.evaluations.remove(job);
    }

    /// Stops handing out the job's tasks (its checkpoint cannot be written).
    pub fn pause(&mut self, job: &str) {
        if let Some(update) = self.updates.get_mut(job) {
            update.paused = true;
        }
    }

    /// Whether the job is paused.
    #[must_use]
    pub fn is_paused(&self, job: &str) -> bool {
        self.updates.get(job).is_some_and(|u| u.paused)
    }

    /// Hands out the job's tasks again; the update's waiting time starts anew.
    pub fn resume(&mut self, job: &str, now: Instant) {
        if let Some(update) = self.updates.get_mut(job) {
            update.paused = false;
            update.published = now;
        }
    }

    /// From now on nothing is leased and no push admitted.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Whether some job's complete update is being applied.
    #[must_use]
    pub fn applying(&self) -> bool {
        self.updates.values().any(|u| u.applying)
    }

    fn check_worker(&self, worker: &str) -> Result<(), ScheduleError> {
        if self.workers.contains_key(worker) {
            Ok(())
        } else {
            Err(ScheduleError::UnknownWorker(worker.to_owned()))
        }
    }

    /// The lease `lease` of a registered `worker`: another worker's lease is unknown to it.
    /// The job of the lease `worker` holds, if it holds it.
    #[must_use]
    pub fn lease_job(&self, worker: &str, lease: &str) -> Option<String> {
        self.held(worker, lease).ok().map(|held| held.job)
    }

    fn held(&self, worker: &str, lease: &str) -> Result<LeaseRef, ScheduleError> {
        self.check_worker(worker)?;
        self.leases
            .get(lease)
            .filter(|l| l.worker == worker)
            .cloned()
            .ok_or_else(|| ScheduleError::UnknownLease(lease.to_owned()))
    }

    /// Notes that a registered `worker` asked for work now (it counts as
    /// active); an unknown worker is refused.
    pub fn seen(&mut self, worker: &str, now: Instant) -> Result<(), ScheduleError> {
        let seen = self.workers.get_mut(worker).ok_or_else(|| ScheduleError::UnknownWorker(worker.to_owned()))?;
        *seen = now;
        Ok(())
    }

    /// Leases the next ready task to `worker` (jobs taking turns; of a
    /// job's evaluations, the oldest version first); `None` when no task is
    /// ready. With spare workers ([`Scheduler::has_spare_workers`]): a
    /// gradient task of some job's current update, else an evaluation
    /// shard. Without: a shard of a job whose update has not started yet,
    /// else a gradient task; never a shard in the middle of its job's
    /// update, where it would keep the update's next start waiting.
    pub fn lease(&mut self, worker: &str, now: Instant) -> Result<Option<Lease>, ScheduleError> {
        let seen = self.workers.get_mut(worker).ok_or_else(|| ScheduleError::UnknownWorker(worker.to_owned()))?;
        *seen = now;
        if self.draining {
            return Ok(None);
        }
        if self.has_spare_workers(now) {
            if let Some(lease) = self.lease_update_task(worker, now) {
                return Ok(Some(lease));
            }
            return Ok(self.lease_evaluation(worker, now, false));
        }
        if let Some(lease) = self.lease_evaluation(worker, now, true) {
            return Ok(Some(lease));
        }
        Ok(self.lease_update_task(worker, now))
    }

    /// Whether more workers asked for work within the lease timeout than
    /// the running jobs' updates have gradient tasks: then some of them
    /// would idle through every update, and evaluations can use them.
    #[must_use]
    pub fn has_spare_workers(&self, now: Instant) -> bool {
        let tasks: usize = self.updates.values().filter(|u| !u.paused).map(|u| u.slots.len()).sum();
        let window = self.timing.lease_timeout;
        let active = self.workers.values().filter(|seen| now.saturating_duration_since(**seen) <= window).count();
        active > tasks
    }

    /// Whether the job's current update has not started: none of its
    /// tasks leased yet, or none scheduled (the job's last update is
    /// applied, or being applied).
    fn update_not_started(&self, job: &str) -> bool {
        self.updates.get(job).is_none_or(|u| u.applying || u.slots.iter().all(Slot::never_leased))
    }

    fn next_lease_id(&mut self) -> String {
        self.issued += 1;
        format!("l-{}-{}", self.incarnation, self.issued)
    }

    fn lease_update_task(&mut self, worker: &str, now: Instant) -> Option<Lease> {
        let jobs = self.updates.len();
        if jobs == 0 {
            return None;
        }
        let start = self.cursor % jobs;
        let (offset, job, index) =
            self.updates.iter().cycle().skip(start).take(jobs).enumerate().find_map(|(offset, (job, update))| {
                if update.applying || update.paused {
                    return None;
                }
                let index = update.slots.iter().position(|slot| slot.ready(now))?;
                Some((offset, job.clone(), index))
            })?;
        self.cursor = start + offset + 1;
        let id = self.next_lease_id();
        let update = self.updates.get_mut(&job).expect("found above");
        let task_timeout = task_timeout(&self.timing, update.slowest_task);
        let slot = &mut update.slots[index];
        let (deadline, queued, replaces) = slot.take(&id, now, self.timing.lease_timeout);
        let work = Work::Gradient { task: slot.planned.task.clone(), returns_buffers: slot.planned.returns_buffers };
        let on = Leased::Update { step: update.version };
        self.leases.insert(id.clone(), LeaseRef { job: job.clone(), on, slot: index, worker: worker.to_owned() });
        Some(Lease { id, job, work, deadline, task_timeout, queued, replaces })
    }

    /// Extends a lease; returns its new deadline. A lease whose task's
    /// result is already in (its own push racing the renewal, or another
    /// lease's) is renewed too: nothing to keep alive, nothing wrong.
    pub fn renew(&mut self, worker: &str, lease: &str, now: Instant) -> Result<Instant, ScheduleError> {
        let held = self.held(worker, lease)?;
        let deadline = now + self.timing.lease_timeout;
        let stale = || ScheduleError::Stale(format!("lease {lease} is no longer held (expired, re-issued or done)"));
        match held.on {
            Leased::Update { step } => {
                let update =
                    self.updates.get_mut(&held.job).ok_or_else(|| ScheduleError::UnknownLease(lease.to_owned()))?;
                if step != update.version {
                    return Err(stale());
                }
                update.slots.get_mut(held.slot).ok_or_else(stale)?.renew(lease, deadline)
            }
            Leased::Evaluation { version } => {
                self.evaluation_slot(&held.job, version, held.slot).ok_or_else(stale)?.renew(lease, deadline)
            }
        }
    }

    /// Gives a lease back unfinished: its task is ready again at once. With
    /// an `error` the failure is counted.
    pub fn release(&mut self, worker: &str, lease: &str, error: Option<&str>) -> Result<Released, ScheduleError> {
        let held = self.held(worker, lease)?;
        let (failures, work) = match held.on {
            Leased::Update { .. } => {
                let Some(slot) = self.updates.get_mut(&held.job).and_then(|u| u.slots.get_mut(held.slot)) else {
                    return Ok(Released::NotHeld);
                };
                let Some(failures) = slot.release(lease, error) else { return Ok(Released::NotHeld) };
                let work =
                    Work::Gradient { task: slot.planned.task.clone(), returns_buffers: slot.planned.returns_buffers };
                (failures, work)
            }
            Leased::Evaluation { version } => {
                let Some(slot) = self.evaluation_slot(&held.job, version, held.slot) else {
                    return Ok(Released::NotHeld);
                };
                let Some(failures) = slot.release(lease, error) else { return Ok(Released::NotHeld) };
                (failures, Work::Evaluation(slot.planned))
            }
        };
        let Some(error) = error else { return Ok(Released::Requeued) };
        if failures < MAX_TASK_FAILURES {
            return Ok(Released::Failed { work, failures });
        }
        let what = match &work {
            Work::Gradient { task, .. } => format!("{:?} shard {} of step {}", task.role, task.shard, task.step),
            Work::Evaluation(t) => format!("{:?} evaluation shard {} of version {}", t.split, t.shard, t.version),
        };
        let reason = format!("{what} failed {failures} times; last error (worker {worker}): {error}");
        Ok(Released::JobFails { job: held.job, work, reason })
    }

    /// Checks a push against its lease before its payload is read.
    pub fn admit(&self, push: &PushClaim<'_>) -> Result<Admitted, ScheduleError> {
        if self.draining {
            return Err(ScheduleError::ShuttingDown);
        }
        self.check_worker(push.worker)?;
        let update = self.updates.get(push.job).ok_or_else(|| ScheduleError::NotScheduled(push.job.to_owned()))?;
        let Some(lease) = self.leases.get(push.lease) else {
            if push.step < update.version {
                return Err(ScheduleError::Stale(format!(
                    "step {} of job {} is already applied (now at step {})",
                    push.step, push.job, update.version
                )));
            }
            return Err(ScheduleError::UnknownLease(push.lease.to_owned()));
        };
        if lease.job != push.job || lease.on != (Leased::Update { step: push.step }) {
            return Err(ScheduleError::Mismatch(format!(
                "lease {} is for job {} ({:?}), not job {} step {}",
                push.lease, lease.job, lease.on, push.job, push.step
            )));
        }
        let slot = &update.slots[lease.slot];
        let task = &slot.planned.task;
        if task.role != push.role || task.shard != push.shard {
            return Err(ScheduleError::Mismatch(format!(
                "lease {} is for {:?} shard {}, not {:?} shard {}",
                push.lease, task.role, task.shard, push.role, push.shard
            )));
        }
        if push.weights_version != push.step {
            return Err(ScheduleError::StaleVersion {
                job: push.job.to_owned(),
                requested: push.weights_version,
                current: update.version,
            });
        }
        Ok(Admitted { duplicate: matches!(slot.status, Status::Done), returns_buffers: slot.planned.returns_buffers })
    }

    /// Where the result of an admitted push goes, once its payload is in;
    /// `None` when the task's result is already in (a duplicate).
    pub fn result_slot(&self, lease: &str) -> Result<Option<ResultSlot>, ScheduleError> {
        let held = self
            .leases
            .get(lease)
            .ok_or_else(|| ScheduleError::Stale(format!("lease {lease} ended while its result was sent")))?;
        if !matches!(held.on, Leased::Update { .. }) {
            return Err(ScheduleError::Mismatch(format!("lease {lease} is not for a gradient task")));
        }
        let update = self.updates.get(&held.job).ok_or_else(|| ScheduleError::NotScheduled(held.job.clone()))?;
        let slot = &update.slots[held.slot];
        if matches!(slot.status, Status::Done) {
            return Ok(None);
        }
        Ok(Some(ResultSlot { job: held.job.clone(), index: held.slot, returns_buffers: slot.planned.returns_buffers }))
    }

    /// Keeps a task's result; completes the update when it is the last.
    pub fn record(&mut self, slot: ResultSlot, result: R, now: Instant) -> Recorded<R> {
        let Some(update) = self.updates.get_mut(&slot.job) else { return Recorded::Accepted };
        let took = update.slots[slot.index].fill(result, now);
        update.slowest_task = slowest(update.slowest_task, took);
        if update.applying || update.slots.iter().any(|s| s.result.is_none()) {
            return Recorded::Accepted;
        }
        update.applying = true;
        let mut complete = CompleteUpdate {
            clean: Vec::new(),
            perturbed: Vec::new(),
            waited: now.saturating_duration_since(update.published),
        };
        for slot in &mut update.slots {
            let result = slot.result.take().expect("every result is in");
            match slot.planned.task.role {
                Role::Clean | Role::Sam => complete.clean.push(result),
                Role::Perturbed => complete.perturbed.push(result),
            }
        }
        Recorded::Complete(complete)
    }

    /// Gives the update up (a non-finite gradient under the skip policy):
    /// its results are dropped and nothing more is leased until the next
    /// update is scheduled. False when it is already complete or given up.
    pub fn give_up_update(&mut self, job: &str) -> bool {
        let Some(update) = self.updates.get_mut(job).filter(|u| !u.applying) else { return false };
        update.applying = true;
        for slot in &mut update.slots {
            slot.result = None;
        }
        true
    }

    /// Tasks by state and the workers seen within the lease timeout.
    #[must_use]
    pub fn gauges(&self, now: Instant) -> Gauges {
        let mut gauges = Gauges { running: self.updates.len() as u32, ..Gauges::default() };
        for update in self.updates.values().filter(|u| !u.applying && !u.paused) {
            for slot in &update.slots {
                slot.count(now, &mut gauges);
            }
        }
        for (job, rounds) in &self.evaluations {
            if self.is_paused(job) {
                continue;
            }
            for slot in rounds.values().flat_map(|round| &round.slots) {
                slot.count(now, &mut gauges);
            }
        }
        let window = self.timing.lease_timeout;
        gauges.active_workers =
            self.workers.values().filter(|seen| now.saturating_duration_since(**seen) <= window).count() as u32;
        gauges
    }
}

/// How long a task may run on a worker: the initial limit until one of its
/// job's tasks finished, then ten times the slowest so far, never under the floor.
fn task_timeout(timing: &Timing, slowest: Option<Duration>) -> Duration {
    match slowest {
        None => timing.task_timeout_initial,
        Some(slowest) => (slowest * 10).max(timing.task_timeout_floor),
    }
}

#[cfg(test)]
mod tests;
