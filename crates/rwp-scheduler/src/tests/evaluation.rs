//! Evaluation rounds: on the version they evaluate, while updates go on,
//! with the gradient tasks' rules; first at an update's start where no
//! worker is spare, in the gaps where some are.

use std::time::{Duration, Instant};

use rwp_spec::eval::{eval_tasks, EvalSplit, EvalTask, SplitPlan, EVAL_BATCH};
use rwp_spec::work::Work;

use super::{push, running, Pushed, Sched, LEASE};
use crate::{CompleteEvaluation, EvalClaim, Lease, RecordedEvaluation, Released, ScheduleError, MAX_TASK_FAILURES};

fn eval_task(lease: &Lease) -> EvalTask {
    match &lease.work {
        Work::Evaluation(task) => *task,
        Work::Gradient { task, .. } => panic!("a gradient lease: {task:?}"),
    }
}

fn record(
    s: &mut Sched,
    worker: &str,
    lease: &Lease,
    result: &'static str,
    now: Instant,
) -> Result<RecordedEvaluation<&'static str>, ScheduleError> {
    let task = eval_task(lease);
    s.record_evaluation(&EvalClaim { worker, lease: &lease.id, job: &lease.job, task: &task }, result, now)
}

/// Job `j` at update 0 with the evaluation of version 0 scheduled: two test
/// shards and one validation shard.
fn evaluating(now: Instant) -> (Sched, String, String) {
    let (mut s, a, b) = running(now);
    s.schedule_evaluation("j", 0, eval_tasks(0, plan(2000), plan(200)), now);
    (s, a, b)
}

fn plan(samples: usize) -> SplitPlan {
    SplitPlan { samples, batch: EVAL_BATCH }
}

#[test]
fn without_spare_workers_the_shards_go_first_at_an_updates_start_on_every_worker() {
    let t0 = Instant::now();
    let (mut s, a, b) = evaluating(t0);
    assert!(!s.has_spare_workers(t0), "two workers, two tasks per update");
    let shards: Vec<_> = [&a, &b, &a].iter().map(|w| eval_task(&s.lease(w, t0).unwrap().unwrap())).collect();
    let listed: Vec<_> = shards.iter().map(|t| (t.version, t.split, t.shard)).collect();
    assert_eq!(listed, vec![(0, EvalSplit::Test, 0), (0, EvalSplit::Test, 1), (0, EvalSplit::Validation, 0)]);
    let (clean, perturbed) = (s.lease(&b, t0).unwrap().unwrap(), s.lease(&a, t0).unwrap().unwrap());
    assert!(matches!(clean.work, Work::Gradient { .. }) && matches!(perturbed.work, Work::Gradient { .. }));
    assert_eq!(s.lease(&a, t0).unwrap(), None);
    let gauges = s.gauges(t0);
    assert_eq!((gauges.pending, gauges.leased), (0, 5), "evaluation shards count as tasks");
}

#[test]
fn without_spare_workers_a_worker_done_early_waits_for_the_next_updates_start() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    let (clean, perturbed) = (s.lease(&a, t0).unwrap().unwrap(), s.lease(&b, t0).unwrap().unwrap());
    s.schedule_evaluation("j", 0, eval_tasks(0, plan(1000), plan(0)), t0);
    assert_eq!(push(&mut s, &a, &clean, "c", t0), Pushed::Accepted);
    // A shard now would hold up update 1 while b idles after its task.
    assert_eq!(s.lease(&a, t0).unwrap(), None);
    assert!(matches!(push(&mut s, &b, &perturbed, "p", t0), Pushed::Complete(_)));
    assert!(matches!(s.lease(&a, t0).unwrap().unwrap().work, Work::Evaluation(_)), "update 0 is applied");
    s.schedule("j", 1, super::update(1), t0);
    assert_eq!(s.lease(&b, t0).unwrap().unwrap().task().step, 1, "the one shard is leased");
}

#[test]
fn spare_workers_take_the_shards_while_the_update_goes_on() {
    let t0 = Instant::now();
    let (mut s, a, b) = evaluating(t0);
    let c = s.register(t0);
    assert!(s.has_spare_workers(t0), "three workers, two tasks per update");
    let (clean, perturbed) = (s.lease(&a, t0).unwrap().unwrap(), s.lease(&b, t0).unwrap().unwrap());
    assert!(matches!(clean.work, Work::Gradient { .. }) && matches!(perturbed.work, Work::Gradient { .. }));
    let shards: Vec<_> = (0..3).map(|_| eval_task(&s.lease(&c, t0).unwrap().unwrap())).collect();
    let listed: Vec<_> = shards.iter().map(|t| (t.version, t.split, t.shard)).collect();
    assert_eq!(listed, vec![(0, EvalSplit::Test, 0), (0, EvalSplit::Test, 1), (0, EvalSplit::Validation, 0)]);
    // Workers not seen within the lease timeout are not counted.
    let later = t0 + LEASE + Duration::from_millis(1);
    s.lease(&a, later).unwrap();
    assert!(!s.has_spare_workers(later));
}

#[test]
fn an_evaluation_outlives_the_update_it_was_scheduled_with_and_completes_in_shard_order() {
    let t0 = Instant::now();
    let (mut s, a, b) = evaluating(t0);
    let shards: Vec<_> = (0..3).map(|_| s.lease(&b, t0).unwrap().unwrap()).collect();
    let grads = [s.lease(&a, t0).unwrap().unwrap(), s.lease(&b, t0).unwrap().unwrap()];
    assert_eq!(push(&mut s, &a, &grads[0], "c", t0), Pushed::Accepted);
    assert!(matches!(push(&mut s, &b, &grads[1], "p", t0), Pushed::Complete(_)));
    s.schedule("j", 1, super::update(1), t0);
    assert!(s.is_evaluating("j"));
    // Every shard is leased: the next update goes on beside them.
    let next = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(next.task().step, 1);
    let t1 = t0 + Duration::from_secs(1);
    assert!(s.renew(&b, &shards[1].id, t1).is_ok(), "the evaluation's leases survive the new update");
    assert_eq!(record(&mut s, &b, &shards[2], "v0", t1), Ok(RecordedEvaluation::Accepted));
    assert_eq!(record(&mut s, &b, &shards[1], "t1", t1), Ok(RecordedEvaluation::Accepted));
    let done = record(&mut s, &b, &shards[0], "t0", t1 + Duration::from_secs(1)).unwrap();
    let complete = CompleteEvaluation { version: 0, results: vec!["t0", "t1", "v0"], waited: Duration::from_secs(2) };
    assert_eq!(done, RecordedEvaluation::Complete(complete));
    assert!(!s.is_evaluating("j"));
    let late = record(&mut s, &b, &shards[0], "again", t1).unwrap_err();
    assert!(matches!(late, ScheduleError::Stale(_)), "{late:?}");
    assert!(matches!(s.renew(&b, &shards[0].id, t1), Err(ScheduleError::UnknownLease(_))));
}

#[test]
fn a_lapsed_shard_is_reissued_and_the_first_result_wins() {
    let t0 = Instant::now();
    let (mut s, a, b) = running(t0);
    s.schedule_evaluation("j", 0, eval_tasks(0, plan(1000), plan(0)), t0);
    let first = s.lease(&a, t0).unwrap().unwrap();
    let grads = [s.lease(&a, t0).unwrap().unwrap(), s.lease(&a, t0).unwrap().unwrap()];
    assert_eq!(s.lease(&b, t0).unwrap(), None, "the one shard is leased");
    let later = t0 + LEASE;
    for grad in &grads {
        s.renew(&a, &grad.id, later - Duration::from_millis(1)).unwrap();
    }
    assert_eq!(s.lease(&b, later).unwrap(), None, "mid-update, the lapsed shard waits for the update's end");
    assert_eq!(push(&mut s, &a, &grads[0], "c", later), Pushed::Accepted);
    assert!(matches!(push(&mut s, &a, &grads[1], "p", later), Pushed::Complete(_)));
    let again = s.lease(&b, later).unwrap().unwrap();
    assert_eq!((eval_task(&again), again.replaces.as_deref()), (eval_task(&first), Some(first.id.as_str())));
    assert!(matches!(s.renew(&a, &first.id, later), Err(ScheduleError::Stale(_))));
    // The late first lease's result is as good as any: it completes the round.
    assert!(matches!(record(&mut s, &a, &first, "slow", later), Ok(RecordedEvaluation::Complete(_))));
    assert!(matches!(record(&mut s, &b, &again, "fast", later), Err(ScheduleError::Stale(_))));
}

#[test]
fn a_duplicate_is_dropped_and_a_mismatched_push_refused() {
    let t0 = Instant::now();
    let (mut s, a, b) = evaluating(t0);
    let first = s.lease(&a, t0).unwrap().unwrap();
    let second = s.lease(&a, t0).unwrap().unwrap();
    let task = eval_task(&second);
    let claim = EvalClaim { worker: &a, lease: &first.id, job: "j", task: &task };
    assert!(matches!(s.record_evaluation(&claim, "x", t0), Err(ScheduleError::Mismatch(_))));
    let other_version = EvalTask { version: 1, ..eval_task(&first) };
    let claim = EvalClaim { worker: &a, lease: &first.id, job: "j", task: &other_version };
    assert!(matches!(s.record_evaluation(&claim, "x", t0), Err(ScheduleError::Stale(_))));
    let stranger = record(&mut s, &b, &first, "x", t0).unwrap_err();
    assert!(matches!(stranger, ScheduleError::UnknownLease(_)), "another worker's lease: {stranger:?}");
    assert_eq!(record(&mut s, &a, &first, "t0", t0), Ok(RecordedEvaluation::Accepted));
    assert_eq!(record(&mut s, &a, &first, "t0", t0), Ok(RecordedEvaluation::Duplicate));
    let claim = EvalClaim { worker: &a, lease: &first.id, job: "nope", task: &task };
    assert!(matches!(s.record_evaluation(&claim, "x", t0), Err(ScheduleError::NotScheduled(_))));
}

#[test]
fn the_third_failure_of_a_shard_fails_the_job_and_a_released_shard_comes_back() {
    let t0 = Instant::now();
    let (mut s, a, _) = evaluating(t0);
    let shard = s.lease(&a, t0).unwrap().unwrap();
    assert_eq!(s.release(&a, &shard.id, None), Ok(Released::Requeued));
    for attempt in 1..=MAX_TASK_FAILURES {
        let lease = s.lease(&a, t0).unwrap().unwrap();
        assert_eq!(eval_task(&lease), eval_task(&shard), "the released shard comes back first");
        let released = s.release(&a, &lease.id, Some("cannot read the data")).unwrap();
        let work = lease.work.clone();
        if attempt < MAX_TASK_FAILURES {
            assert_eq!(released, Released::Failed { work, failures: attempt });
        } else {
            let reason = format!(
                "Test evaluation shard 0 of version 0 failed 3 times; last error (worker {a}): cannot read the data"
            );
            assert_eq!(released, Released::JobFails { job: "j".into(), work, reason });
        }
    }
}

#[test]
fn paused_draining_and_ended_jobs_hand_out_no_shard() {
    let t0 = Instant::now();
    let (mut s, a, _) = evaluating(t0);
    s.pause("j");
    assert_eq!(s.lease(&a, t0).unwrap(), None);
    s.resume("j", t0);
    let shard = s.lease(&a, t0).unwrap().unwrap();
    s.unschedule("j");
    assert!(!s.is_evaluating("j"));
    assert_eq!(s.lease(&a, t0).unwrap(), None);
    assert!(matches!(record(&mut s, &a, &shard, "x", t0), Err(ScheduleError::NotScheduled(_))));
    s.schedule("j", 0, Vec::new(), t0);
    s.schedule_evaluation("j", 0, eval_tasks(0, plan(500), plan(0)), t0);
    s.drain();
    assert_eq!(s.lease(&a, t0).unwrap(), None);
}
