//! `rwp plot` against a scripted server: ended and running jobs, PNG and SVG;
//! a running job is drawn up to its current update without waiting for more.

mod common;

use std::time::Duration;

use common::mock::{ended_job, history, job, MockJob, MockServer};
use common::{rwp_within, stderr, stdout};
use rwp_proto::v1::JobState;
use rwp_sdk::Method;

fn server() -> MockServer {
    // Still running at update 10; its watch stays open after the history.
    let running = MockJob {
        record: job("j-000002", "", Method::Sgd, JobState::Running, 10, 40),
        history: history(0, 10, 0.3),
        live: vec![],
        ends: None,
    };
    MockServer::start(vec![ended_job("j-000001", "cifar-marwp", Method::MArwp, JobState::Succeeded, 24, 24), running])
}

#[test]
fn plots_ended_and_running_jobs_to_png_and_svg() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    for name in ["curves.png", "curves.svg"] {
        let path = dir.path().join(name);
        let args = ["--server", &server.url, "plot", "j-000001", "j-000002", "-o", path.to_str().unwrap()];
        let (o, took) = rwp_within(&args, Duration::from_secs(20));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(took < Duration::from_secs(8), "a running job must not keep plot waiting: {took:?}");
        assert_eq!(stdout(&o), format!("wrote {} (2 jobs, 34 updates, 8 evaluations)\n", path.display()));
        let bytes = std::fs::read(&path).unwrap();
        if name.ends_with(".png") {
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        } else {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains("cifar-marwp (m-arwp)") && text.contains("j-000002 (sgd)"), "legend");
        }
    }
}

#[test]
fn a_bad_file_name_or_job_is_reported() {
    let server = server();
    let (o, _) =
        rwp_within(&["--server", &server.url, "plot", "j-000001", "-o", "curves.pdf"], Duration::from_secs(20));
    let line = common::assert_clean_error(&o, 2);
    assert!(line.contains("curves.pdf") && line.contains(".png or .svg"), "{line}");
    let (o, _) = rwp_within(&["--server", &server.url, "plot", "j-404", "-o", "x.png"], Duration::from_secs(20));
    let line = common::assert_clean_error(&o, 1);
    assert!(line.starts_with("error: job j-404 not found: no job you may see has it"), "{line}");
}
