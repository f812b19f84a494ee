//! `rwp list` and `rwp get` against a scripted server: the table, the
//! detail, and their JSON.

mod common;

use common::mock::{ended_job, MockServer};
use common::{assert_clean_error, rwp, stdout};
use rwp_proto::v1::JobState;
use rwp_sdk::Method;

fn server() -> MockServer {
    let first = ended_job("j-000001", "cifar-marwp", Method::MArwp, JobState::Succeeded, 24, 24);
    let mut ownerless = ended_job("j-000002", "", Method::Sgd, JobState::Failed, 7, 24);
    ownerless.record.owner = String::new();
    // Submitted a second after the first: `rwp list` orders by submission time.
    ownerless.record.created_unix_ms = first.record.created_unix_ms + 1000;
    MockServer::start(vec![first, ownerless])
}

#[test]
fn list_prints_an_aligned_table() {
    let server = server();
    let o = rwp(&["--server", &server.url, "list"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let header: Vec<&str> = lines[0].split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header,
        ["ID", "NAME", "OWNER", "METHOD", "MODEL", "STATE", "STEP/TOTAL", "LOSS", "VAL ACC", "TEST ACC", "AGE"]
    );
    let first: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &first[..7],
        ["j-000001", "cifar-marwp", "alice", "m-arwp", "small-cnn", "succeeded", "24/24"],
        "{text}"
    );
    assert_eq!(first[8], "-", "no validation set: {text}");
    assert_eq!(first[9], "0.4400", "test accuracy of the last evaluation: {text}");
    assert_eq!(first[10], "1m", "age: {text}");
    let second: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&second[..7], ["j-000002", "-", "-", "sgd", "small-cnn", "failed", "7/24"], "{text}");
    // Columns line up: every row's STATE starts where the header's does.
    let at = lines[0].find("STATE").unwrap();
    assert!(lines[1..].iter().all(|l| l[at..].starts_with(|c: char| c.is_ascii_lowercase())), "{text}");
}

#[test]
fn list_json_is_an_array_of_jobs() {
    let server = server();
    let o = rwp(&["--server", &server.url, "list", "--json"]);
    assert!(o.status.success());
    let value: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let jobs = value.as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["id"], "j-000001");
    assert_eq!(jobs[0]["owner"], "alice");
    assert_eq!(jobs[1]["owner"], serde_json::Value::Null);
    assert_eq!(jobs[0]["state"], "succeeded");
    assert_eq!(jobs[0]["spec"]["method"], "m-arwp");
    assert_eq!(jobs[1]["error"], "shard 1 of update 7: data directory /data/cifar10 is missing");
}

#[test]
fn get_shows_the_job_in_detail() {
    let server = server();
    let o = rwp(&["--server", &server.url, "get", "j-000002"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for want in [
        "job ",
        "j-000002",
        "state ",
        "failed",
        "7/24 updates",
        "method ",
        "sgd",
        "last update",
        "error ",
        "data directory",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let o = rwp(&["--server", &server.url, "get", "j-000001"]);
    assert!(stdout(&o).lines().any(|l| l.split_whitespace().eq(["owner", "alice"])), "{}", stdout(&o));
    let o = rwp(&["--server", &server.url, "get", "j-000001", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(value["step"], 24);
    assert_eq!(value["last_evaluation"]["test_accuracy"], 0.44);
}

#[test]
fn an_unknown_job_is_named() {
    let server = server();
    let line = assert_clean_error(&rwp(&["--server", &server.url, "get", "j-999"]), 1);
    assert!(line.starts_with("error: job j-999 not found: no job you may see has it"), "{line}");
}
