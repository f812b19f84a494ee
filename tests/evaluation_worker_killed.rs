//! A worker SIGKILLed while it evaluates a shard (it kills itself at the
//! `evaluation` fault point, so the kill lands mid-evaluation every time):
//! the shard's lease lapses, another worker evaluates it, and the job's
//! evaluations still equal the local trainer's to the bit.

use std::time::Duration;

use rwp_integration_tests::cluster::{
    connect, data_dir, start_server_with, start_worker, start_worker_in, submit, wait_for_success,
};
use rwp_integration_tests::evaluations::{assert_evaluations_match, job_evaluations, EVERY_EPOCH};
use rwp_integration_tests::local_run::small_job;
use rwp_spec::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_of_a_killed_worker_is_evaluated_by_another() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let url = format!("http://{addr}");
    let mut doomed = start_worker_in(&url, "doomed", &[], None, &[("RWP_TEST_FAULTS", "evaluation:kill")]);
    let mut client = connect(addr).await;
    let mut spec = small_job(63, Method::MArwp, 24);
    spec.validation_fraction = 0.2;
    let id = submit(&mut client, "evaluation-kill", &spec).await;
    // Alone, the doomed worker trains the first epoch, then takes a shard
    // of its evaluation and dies on it.
    let code = doomed.wait_exit(Duration::from_secs(180));
    assert_eq!(code, None, "killed by a signal, not exited");
    assert!(doomed.child.try_wait().unwrap().is_some(), "the doomed worker died at its first evaluation shard");
    let _steady = start_worker(addr, "steady");
    let job = wait_for_success(&mut client, &id, Duration::from_secs(300)).await;
    assert_eq!(job.step, 24);
    assert_evaluations_match(
        "worker killed mid-evaluation",
        &job_evaluations(&mut client, &id).await,
        &spec,
        &[12, 24],
    );
}
