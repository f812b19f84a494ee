//! `rwp watch` against a scripted server: the summary line on stdout and an
//! exit status for each way a job ends; plain progress lines off a terminal.

mod common;

use std::time::Duration;

use common::mock::{ended_job, history, job, step_metrics, MockJob, MockServer};
use common::{rwp, stderr, stdout};
use rwp_proto::v1::JobState;
use rwp_sdk::Method;

#[test]
fn a_succeeded_job_exits_0_with_a_summary_line() {
    let server = MockServer::start(vec![ended_job("j-000001", "a", Method::MArwp, JobState::Succeeded, 24, 24)]);
    let o = rwp(&["--server", &server.url, "watch", "j-000001"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "job j-000001 succeeded: step 24/24, test accuracy 0.4400, wall 12.0s, 2.00 updates/s\n");
}

#[test]
fn a_failed_job_exits_1_and_prints_its_error() {
    let server = MockServer::start(vec![ended_job("j-000001", "a", Method::Sgd, JobState::Failed, 7, 24)]);
    let o = rwp(&["--server", &server.url, "watch", "j-000001"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("job j-000001 failed: step 7/24, "), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("error: job j-000001 failed: shard 1 of update 7: data directory /data/cifar10 is missing"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_cancelled_job_exits_3() {
    let server = MockServer::start(vec![ended_job("j-000001", "a", Method::Rwp, JobState::Cancelled, 5, 24)]);
    let o = rwp(&["--server", &server.url, "watch", "j-000001"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("job j-000001 cancelled: step 5/24"), "{}", stdout(&o));
}

#[test]
fn a_running_job_is_followed_to_its_end_with_plain_progress_lines() {
    let mut record = job("j-000001", "live", Method::MArwp, JobState::Running, 4, 12);
    record.last_step = Some(step_metrics(4, 0.25));
    let mut end = record.clone();
    end.state = JobState::Succeeded as i32;
    end.step = 12;
    end.last_step = Some(step_metrics(12, 0.25));
    let live = history(4, 12, 0.25).into_iter().map(|e| (Duration::from_millis(40), e)).collect();
    let running = MockJob { record, history: history(0, 4, 0.25), live, ends: Some(end) };
    let server = MockServer::start(vec![running]);
    let o = rwp(&["--server", &server.url, "watch", "j-000001", "--interval", "0.001"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    // stderr is a pipe here: plain lines, one per update at this interval.
    assert!(err.contains("watching job j-000001 (live: m-arwp on synthetic, small-cnn): step 4/12"), "{err}");
    assert!(err.contains("job j-000001: step 12/12  loss "), "{err}");
    assert!(err.contains("upd/s  ETA "), "{err}");
    assert!(err.contains("4.00 upd/s"), "updates/s from the wall times: {err}");
    assert!(err.contains("test after step 8 (epoch 2): accuracy 0.2800"), "{err}");
    assert!(!err.contains("test after step 4 "), "history before the watch is not repeated: {err}");
    // The record carries no evaluation: the summary uses the last one seen.
    assert_eq!(stdout(&o), "job j-000001 succeeded: step 12/12, test accuracy 0.3200, wall 3.0s, 4.00 updates/s\n");
}

#[test]
fn an_unknown_job_is_an_error() {
    let server = MockServer::start(vec![]);
    let line = common::assert_clean_error(&rwp(&["--server", &server.url, "watch", "nope"]), 1);
    assert!(line.starts_with("error: job nope not found: no job you may see has it"), "{line}");
}
