//! `rwp cancel` and `rwp export` against a scripted server.

mod common;

use common::mock::{ended_job, job, MockJob, MockServer};
use common::{rwp, stderr, stdout};
use rwp_proto::v1::JobState;
use rwp_sdk::Method;

#[test]
fn cancel_reports_the_step_it_stopped_at() {
    let running = job("j-000001", "r", Method::MArwp, JobState::Running, 10, 40);
    let server = MockServer::start(vec![
        MockJob { record: running, history: vec![], live: vec![], ends: None },
        ended_job("j-000002", "d", Method::Sgd, JobState::Succeeded, 24, 24),
    ]);
    let o = rwp(&["--server", &server.url, "cancel", "j-000001"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "cancelled job j-000001 at step 10/40\n");
    assert_eq!(server.job("j-000001").unwrap().state, JobState::Cancelled as i32);
    let o = rwp(&["--server", &server.url, "cancel", "j-000002"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "job j-000002 had already succeeded (step 24/24); nothing to cancel\n");
    assert_eq!(server.recorded.lock().unwrap().cancelled, ["j-000001", "j-000002"]);
}

#[test]
fn export_writes_the_file_and_prints_step_and_bytes() {
    let server = MockServer::start(vec![ended_job("j-000001", "d", Method::Sgd, JobState::Succeeded, 24, 24)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let o = rwp(&["--server", &server.url, "export", "j-000001", "-o", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("exported job j-000001 at step 24: 2500 bytes to {}\n", path.display()));
    assert_eq!(std::fs::read(&path).unwrap().len(), 2500);
}
