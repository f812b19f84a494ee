//! Every rule of the scheduler, and the races between them, with time
//! advanced by hand.

use std::time::{Duration, Instant};

use rwp_spec::{Role, Task};

use super::*;

mod evaluation;

pub(super) type Sched = Scheduler<&'static str, &'static str>;

impl Lease {
    fn task(&self) -> &Task {
        match &self.work {
            Work::Gradient { task, .. } => task,
            Work::Evaluation(t) => panic!("an evaluation lease: {t:?}"),
        }
    }

    fn returns_buffers(&self) -> bool {
        matches!(self.work, Work::Gradient { returns_buffers: true, .. })
    }
}

pub(super) const LEASE: Duration = Duration::from_secs(10);
const INITIAL: Duration = Duration::from_secs(600);
const FLOOR: Duration = Duration::from_secs(60);

fn scheduler() -> Sched {
    Scheduler::new(Timing { lease_timeout: LEASE, task_timeout_initial: INITIAL, task_timeout_floor: FLOOR }, "test")
}

fn task(step: u64, role: Role, shard: u32) -> Planned {
    Planned {
        task: Task { step, role, shard, num_shards: 2, noise_seed: None, sigma: 0.0 },
        returns_buffers: role == Role::Clean,
    }
}

/// An m-ARWP update: one clean and one perturbed task.
pub(super) fn update(step: u64) -> Vec<Planned> {
    vec![task(step, Role::Clean, 0), task(step, Role::Perturbed, 0)]
}

fn claim<'a>(worker: &'a str, lease: &'a Lease) -> PushClaim<'a> {
    PushClaim {
        worker,
        lease: &lease.id,
        job: &lease.job,
        step: lease.task().step,
        role: lease.task().role,
        shard: lease.task().shard,
        weights_version: lease.task().step,
    }
}

/// Admits and records `lease`'s result as `worker` would push it.
pub(super) fn push(s: &mut Sched, worker: &str, lease: &Lease, result: &'static str, now: Instant) -> Pushed {
    let admitted = match s.admit(&claim(worker, lease)) {
        Ok(a) => a,
        Err(e) => return Pushed::Refused(e),
    };
    let slot = match s.result_slot(&lease.id) {
        Ok(Some(slot)) => slot,
        Ok(None) => return Pushed::Duplicate,
        Err(e) => return Pushed::Refused(e),
    };
    assert!(!admitted.duplicate, "admitted as a duplicate, yet its slot is free");
    match s.record(slot, result, now) {
        Recorded::Accepted => Pushed::Accepted,
        Recorded::Complete(c) => Pushed::Complete(c),
    }
}

#[derive(Debug, PartialEq)]
pub(super) enum Pushed {
    Accepted,
    Complete(CompleteUpdate<&'static str>),
    Duplicate,
    Refused(ScheduleError),
}

/// A scheduler with job `j` at update 0 and two registered workers.
pub(super) fn running(now: Instant) -> (Sched, String, String) {
    let mut s = scheduler();
    let a = s.register(now);
    let b = s.register(now);
    s.schedule("j", 0, update(0), now);
    (s, a, b)
}

#[test]
fn each_task_is_leased_once_in_order_and_then_nothing_is_left() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let first = s.lease(&a, t0).unwrap().unwrap();
    let second = s.lease(&b, t0).unwrap().unwrap();
    assert_eq!((first.task().role, second.task().role), (Role::Clean, Role::Perturbed));
    assert_eq!((first.returns_buffers(), second.returns_buffers()), (true, false));
    assert_ne!(first.id, second.id);
    assert_eq!(first.deadline, t0 + LEASE);
    assert_eq!(first.replaces, None);
    assert_eq!(s.lease(&a, t0 + LEASE / 2).unwrap(), None);
    assert_eq!(s.gauges(t0).leased, 2);
}

#[test]
fn an_unregistered_worker_is_refused_everywhere() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    let stranger = "w-other-1";
    assert_eq!(s.lease(stranger, t0), Err(ScheduleError::UnknownWorker(stranger.into())));
    assert_eq!(s.renew(stranger, &lease.id, t0), Err(ScheduleError::UnknownWorker(stranger.into())));
    assert_eq!(s.release(stranger, &lease.id, None), Err(ScheduleError::UnknownWorker(stranger.into())));
    assert_eq!(s.admit(&claim(stranger, &lease)), Err(ScheduleError::UnknownWorker(stranger.into())));
}

#[test]
fn a_lapsed_lease_is_reissued_and_its_queue_time_counts_from_its_deadline() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let first = s.lease(&a, t0).unwrap().unwrap();
    let _perturbed = s.lease(&a, t0).unwrap().unwrap();
    // Not before the deadline...
    assert_eq!(s.lease(&b, t0 + LEASE - Duration::from_millis(1)).unwrap(), None);
    // ...at it.
    let at = t0 + LEASE + Duration::from_secs(3);
    let again = s.lease(&b, at).unwrap().unwrap();
    assert_eq!(again.task(), first.task());
    assert_eq!(again.replaces.as_deref(), Some(first.id.as_str()));
    assert_eq!(again.queued, Duration::from_secs(3));
    assert_ne!(again.id, first.id);
}

#[test]
fn a_renewed_lease_is_not_reissued_at_its_first_deadline() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    let _ = s.lease(&a, t0).unwrap().unwrap();
    let renewed = s.renew(&a, &lease.id, t0 + LEASE / 2).unwrap();
    assert_eq!(renewed, t0 + LEASE / 2 + LEASE);
    // At the first deadline only the task whose lease was not renewed goes again.
    let lapsed = s.lease(&b, t0 + LEASE).unwrap().unwrap();
    assert_eq!(lapsed.task().role, Role::Perturbed);
    assert_eq!(s.lease(&b, t0 + LEASE).unwrap(), None);
    assert_eq!(s.lease(&b, renewed).unwrap().unwrap().replaces.as_deref(), Some(lease.id.as_str()));
}

#[test]
fn another_workers_lease_is_unknown_to_renew_and_release() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(s.renew(&b, &lease.id, t0), Err(ScheduleError::UnknownLease(lease.id.clone())));
    assert_eq!(s.release(&b, &lease.id, Some("boom")), Err(ScheduleError::UnknownLease(lease.id.clone())));
    assert_eq!(s.renew(&a, "l-test-999", t0), Err(ScheduleError::UnknownLease("l-test-999".into())));
}

#[test]
fn a_renewal_racing_its_own_push_succeeds_after_the_push() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(push(&mut s, &a, &lease, "clean", t0 + LEASE / 4), Pushed::Accepted);
    assert_eq!(s.renew(&a, &lease.id, t0 + LEASE / 2), Ok(t0 + LEASE / 2 + LEASE));
}

#[test]
fn a_renewal_after_reissue_is_stale() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    let later = t0 + LEASE * 2;
    let reissued = s.lease(&b, later).unwrap().unwrap();
    assert_eq!(reissued.replaces.as_deref(), Some(lease.id.as_str()));
    assert!(matches!(s.renew(&a, &lease.id, later), Err(ScheduleError::Stale(_))));
    assert!(s.renew(&b, &reissued.id, later).is_ok());
}

#[test]
fn a_push_after_expiry_is_kept_and_the_reissued_leases_push_is_a_duplicate() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let slow = s.lease(&a, t0).unwrap().unwrap();
    let later = t0 + LEASE * 2;
    let reissued = s.lease(&b, later).unwrap().unwrap();
    // Every lease of a task computes the same bits: the first result in wins.
    assert_eq!(push(&mut s, &a, &slow, "slow", later), Pushed::Accepted);
    assert_eq!(s.admit(&claim(&b, &reissued)).unwrap(), Admitted { duplicate: true, returns_buffers: true });
    assert_eq!(push(&mut s, &b, &reissued, "fast", later), Pushed::Duplicate);
    // And the duplicate's lease may be renewed: nothing wrong with it.
    assert!(s.renew(&b, &reissued.id, later).is_ok());
}

#[test]
fn a_push_on_a_lapsed_lease_before_reissue_is_accepted() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(push(&mut s, &a, &lease, "late", t0 + LEASE * 3), Pushed::Accepted);
    assert_eq!(s.gauges(t0 + LEASE * 3).pending, 1, "only the perturbed task is left");
}

#[test]
fn the_last_result_completes_the_update_in_task_order() {
    let t0 = Instant::now();
    let mut s = scheduler();
    let w = s.register(t0);
    let tasks = vec![
        task(0, Role::Clean, 0),
        task(0, Role::Clean, 1),
        task(0, Role::Perturbed, 0),
        task(0, Role::Perturbed, 1),
    ];
    s.schedule("j", 0, tasks, t0);
    let leases: Vec<Lease> = (0..4).map(|_| s.lease(&w, t0).unwrap().unwrap()).collect();
    // Results arrive in another order than the tasks'.
    let names = ["c0", "c1", "p0", "p1"];
    for i in [3, 0, 2] {
        assert_eq!(push(&mut s, &w, &leases[i], names[i], t0), Pushed::Accepted);
    }
    let done = push(&mut s, &w, &leases[1], names[1], t0 + Duration::from_secs(5));
    let Pushed::Complete(complete) = done else { panic!("{done:?}") };
    assert_eq!(complete.clean, ["c0", "c1"]);
    assert_eq!(complete.perturbed, ["p0", "p1"]);
    assert_eq!(complete.waited, Duration::from_secs(5));
    assert!(s.applying());
    // While the update is applied nothing is leased, and a late copy is a duplicate.
    assert_eq!(s.lease(&w, t0 + LEASE * 5).unwrap(), None);
    assert_eq!(push(&mut s, &w, &leases[0], "again", t0), Pushed::Duplicate);
}

#[test]
fn a_push_for_an_applied_update_is_stale_and_old_leases_end() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let clean = s.lease(&a, t0).unwrap().unwrap();
    let perturbed = s.lease(&b, t0).unwrap().unwrap();
    let late_copy = s.lease(&b, t0 + LEASE * 2).unwrap().unwrap();
    assert_eq!(push(&mut s, &a, &clean, "c", t0), Pushed::Accepted);
    assert!(matches!(push(&mut s, &b, &perturbed, "p", t0), Pushed::Complete(_)));
    s.schedule("j", 1, update(1), t0 + LEASE);
    assert!(!s.applying());
    let refused = s.admit(&claim(&b, &late_copy)).unwrap_err();
    assert_eq!(refused, ScheduleError::Stale("step 0 of job j is already applied (now at step 1)".into()));
    assert!(matches!(s.renew(&a, &clean.id, t0 + LEASE), Err(ScheduleError::UnknownLease(_))));
    assert!(matches!(s.result_slot(&clean.id), Err(ScheduleError::Stale(_))));
    let next = s.lease(&a, t0 + LEASE).unwrap().unwrap();
    assert_eq!(next.task().step, 1);
}

#[test]
fn a_push_that_does_not_match_its_lease_is_refused() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    let mut wrong_role = claim(&a, &lease);
    wrong_role.role = Role::Perturbed;
    assert!(matches!(s.admit(&wrong_role), Err(ScheduleError::Mismatch(m)) if m.contains("not Perturbed shard 0")));
    let mut wrong_step = claim(&a, &lease);
    wrong_step.step = 1;
    assert!(matches!(s.admit(&wrong_step), Err(ScheduleError::Mismatch(m)) if m.contains("not job j step 1")));
    let mut wrong_version = claim(&a, &lease);
    wrong_version.weights_version = 7;
    assert_eq!(s.admit(&wrong_version), Err(ScheduleError::StaleVersion { job: "j".into(), requested: 7, current: 0 }));
    let mut unknown = claim(&a, &lease);
    unknown.lease = "l-test-404";
    assert_eq!(s.admit(&unknown), Err(ScheduleError::UnknownLease("l-test-404".into())));
    let mut ended = claim(&a, &lease);
    ended.job = "gone";
    assert_eq!(s.admit(&ended), Err(ScheduleError::NotScheduled("gone".into())));
}

#[test]
fn a_released_lease_is_reissued_at_once_and_the_old_holder_cannot_disturb_the_new_one() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(s.release(&a, &lease.id, None), Ok(Released::Requeued));
    let again = s.lease(&b, t0).unwrap().unwrap();
    assert_eq!(again.task(), lease.task());
    assert_eq!(again.replaces, None, "released, not lapsed");
    // The first holder gives it back again (a retry): the new lease holds.
    assert_eq!(s.release(&a, &lease.id, Some("late retry")), Ok(Released::NotHeld));
    assert!(s.renew(&b, &again.id, t0).is_ok());
    assert_eq!(s.gauges(t0).leased, 1);
}

#[test]
fn the_third_failure_of_a_task_fails_the_job_naming_the_task_and_the_error() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    for attempt in 1..=MAX_TASK_FAILURES {
        let lease = s.lease(&a, t0).unwrap().unwrap();
        assert_eq!(lease.task().role, Role::Clean, "the failed task comes back first");
        let released = s.release(&a, &lease.id, Some("out of memory")).unwrap();
        let work = lease.work.clone();
        if attempt < MAX_TASK_FAILURES {
            assert_eq!(released, Released::Failed { work, failures: attempt });
        } else {
            let reason = format!("Clean shard 0 of step 0 failed 3 times; last error (worker {a}): out of memory");
            assert_eq!(released, Released::JobFails { job: "j".into(), work, reason });
        }
    }
}

#[test]
fn a_draining_scheduler_hands_out_nothing_and_admits_no_push() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let lease = s.lease(&a, t0).unwrap().unwrap();
    s.drain();
    assert_eq!(s.lease(&b, t0).unwrap(), None);
    assert_eq!(s.admit(&claim(&a, &lease)), Err(ScheduleError::ShuttingDown));
    // The worker still counts as seen.
    assert_eq!(s.gauges(t0).active_workers, 2);
}

#[test]
fn a_paused_job_hands_out_nothing_until_resumed() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    s.pause("j");
    assert_eq!(s.lease(&a, t0).unwrap(), None);
    assert_eq!(s.gauges(t0).pending, 0, "a paused job's tasks are not waiting for workers");
    s.resume("j", t0 + LEASE);
    let lease = s.lease(&a, t0 + LEASE).unwrap().unwrap();
    assert_eq!(lease.queued, LEASE, "queued since publication");
}

#[test]
fn jobs_take_turns() {
    let t0 = Instant::now();
    let mut s = scheduler();
    let w = s.register(t0);
    for job in ["a", "b", "c"] {
        s.schedule(job, 0, update(0), t0);
    }
    let order: Vec<String> = (0..6).map(|_| s.lease(&w, t0).unwrap().unwrap().job).collect();
    assert_eq!(order, ["a", "b", "c", "a", "b", "c"]);
    s.unschedule("b");
    assert_eq!(s.lease(&w, t0).unwrap(), None);
}

#[test]
fn task_time_limits_follow_the_slowest_task() {
    let t0 = Instant::now();
    let mut s = scheduler();
    let w = s.register(t0);
    s.schedule("j", 0, update(0), t0);
    let first = s.lease(&w, t0).unwrap().unwrap();
    assert_eq!(first.task_timeout, INITIAL);
    assert_eq!(push(&mut s, &w, &first, "c", t0 + Duration::from_secs(2)), Pushed::Accepted);
    // Ten times two seconds is under the floor.
    assert_eq!(s.lease(&w, t0).unwrap().unwrap().task_timeout, FLOOR);
    s.schedule("j", 1, update(1), t0);
    let slow = s.lease(&w, t0).unwrap().unwrap();
    assert_eq!(push(&mut s, &w, &slow, "c", t0 + Duration::from_secs(30)), Pushed::Accepted);
    assert_eq!(s.lease(&w, t0).unwrap().unwrap().task_timeout, Duration::from_secs(300));
}

#[test]
fn a_given_up_update_keeps_nothing_and_leases_nothing() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    let clean = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(push(&mut s, &a, &clean, "c", t0), Pushed::Accepted);
    assert!(s.give_up_update("j"));
    assert!(!s.give_up_update("j"), "given up once");
    assert_eq!(s.lease(&a, t0).unwrap(), None);
    s.schedule("j", 1, update(1), t0);
    assert_eq!(s.lease(&a, t0).unwrap().unwrap().task().step, 1);
}

#[test]
fn gauges_count_lapsed_leases_as_pending_and_forget_quiet_workers() {
    let t0 = Instant::now();
    let (mut s, a, _) = running(t0);
    let _lease = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(s.gauges(t0), Gauges { pending: 1, leased: 1, running: 1, active_workers: 2 });
    let later = t0 + LEASE + Duration::from_millis(1);
    assert_eq!(s.gauges(later), Gauges { pending: 2, leased: 0, running: 1, active_workers: 0 });
}
