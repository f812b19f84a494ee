//! `rwp model list` and `rwp model delete` against a scripted server.

mod common;

use common::mock::MockServer;
use common::{assert_clean_error, rwp, stderr, stdout};

fn server_with_upload(sha256: &str) -> MockServer {
    let server = MockServer::start(vec![]);
    server.recorded.lock().unwrap().uploads.push((sha256.to_owned(), vec![7; 1234]));
    server
}

#[test]
fn model_list_prints_the_uploads_as_a_table_or_json() {
    let sha256 = "ab".repeat(32);
    let server = server_with_upload(&sha256);
    let o = rwp(&["--server", &server.url, "model", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines, [vec!["SHA256", "SIZE", "UPLOADED", "OWNER"], vec![&sha256, "1234", "1m", "ago", "alice"]]);

    let o = rwp(&["--server", &server.url, "model", "ls", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let value: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let models = value.as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["sha256"], sha256.as_str());
    assert_eq!(models[0]["size_bytes"], 1234);
    assert_eq!(models[0]["owner"], "alice");
    assert!(models[0]["uploaded_unix_ms"].as_i64().unwrap() > 0);
}

#[test]
fn model_delete_drops_the_file_and_a_second_delete_is_not_found() {
    let sha256 = "cd".repeat(32);
    let server = server_with_upload(&sha256);
    let o = rwp(&["--server", &server.url, "model", "delete", &sha256]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("deleted your copy of model file {sha256}\n"));
    assert_eq!(server.recorded.lock().unwrap().deleted_models, std::slice::from_ref(&sha256));

    let o = rwp(&["--server", &server.url, "model", "delete", &sha256]);
    let err = assert_clean_error(&o, 1);
    assert!(err.contains("not stored on this server"), "{err}");
    let o = rwp(&["--server", &server.url, "model", "list"]);
    assert_eq!(stdout(&o).lines().count(), 1, "only the header is left: {}", stdout(&o));
}
