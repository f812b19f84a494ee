//! Evaluations run on the workers as shards of the test and validation
//! splits, while training goes on: a job that evaluates every epoch reports
//! test and validation loss and accuracy equal, to the bit, to the local
//! trainer's at the same versions, with one worker or three, and still ends
//! bit-identical to it.

use std::time::Duration;

use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server_with, start_worker, submit, wait_for_success,
};
use rwp_integration_tests::evaluations::{assert_evaluations_match, job_evaluations, EVERY_EPOCH};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_spec::{JobSpec, Method};

const TIMEOUT: Duration = Duration::from_secs(300);

/// Two epochs of 12 updates (800 training samples, 200 held out).
fn spec(seed: u64) -> JobSpec {
    let mut spec = small_job(seed, Method::MArwp, 24);
    spec.validation_fraction = 0.2;
    spec
}

async fn run(workers: usize, seed: u64) {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let _workers: Vec<_> = (0..workers).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let spec = spec(seed);
    let id = submit(&mut client, "evaluated", &spec).await;
    let job = wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_eq!((job.step, job.updates_per_epoch), (24, 12));
    let label = format!("{workers} workers");
    assert_bit_identical(&label, &export(&mut client, &id).await, &spec);
    assert_evaluations_match(&label, &job_evaluations(&mut client, &id).await, &spec, &[12, 24]);
    let last = job.last_evaluation.expect("the last evaluation is on the record");
    assert_eq!(last.step, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker() {
    run(1, 61).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers() {
    run(3, 62).await;
}
