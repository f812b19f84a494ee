//! Names, owners and errors come from the server, and an old record (or a
//! hostile server) may hold terminal controls: `rwp list`, `get`, `watch`
//! and error messages print them escaped (`\u001b`), never raw; `--json`
//! stays valid JSON with the same strings.

mod common;

use common::mock::{ended_job, MockServer};
use common::{rwp, stderr, stdout};
use rwp_proto::v1::JobState;
use rwp_sdk::Method;

const NAME: &str = "evil\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}gpj.exe";
const OWNER: &str = "mallory\r\u{9b}31m";
const ERROR: &str = "boom\n\u{1b}[1A\u{1b}[2Kjob succeeded\u{2066}";

fn server() -> MockServer {
    let mut job = ended_job("j-000001", NAME, Method::Sgd, JobState::Failed, 8, 8);
    job.record.owner = OWNER.to_owned();
    job.record.error = ERROR.to_owned();
    job.ends.as_mut().unwrap().clone_from(&job.record);
    MockServer::start(vec![job])
}

/// No raw terminal control in `text` but newlines (and tabs).
fn assert_inert(what: &str, text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    assert!(raw.is_empty(), "{what} prints raw terminal controls {raw:?}: {text:?}");
}

#[test]
fn list_get_watch_and_errors_escape_terminal_controls() {
    let server = server();
    for args in [&["list"][..], &["get", "j-000001"], &["watch", "j-000001"], &["get", "j-\u{1b}[2J"]] {
        let mut all = vec!["--server", &server.url];
        all.extend_from_slice(args);
        let o = rwp(&all);
        assert_inert(&format!("rwp {args:?} (stdout)"), &stdout(&o));
        assert_inert(&format!("rwp {args:?} (stderr)"), &stderr(&o));
    }
    let o = rwp(&["--server", &server.url, "get", "j-000001"]);
    let text = stdout(&o);
    assert!(text.contains("evil\\u001b[2J\\u001b]0;owned\\u0007\\u202egpj.exe"), "{text}");
    assert!(text.contains("mallory\\u000d\\u009b31m"), "{text}");
    assert!(text.contains("boom\\u000a\\u001b[1A"), "the error stays on its line: {text}");
    let o = rwp(&["--server", &server.url, "get", "j-\u{1b}[2J"]);
    assert!(stderr(&o).contains("job j-\\u001b[2J not found"), "{}", stderr(&o));

    // JSON keeps the exact strings (as JSON escapes).
    let o = rwp(&["--server", &server.url, "list", "--json"]);
    assert_inert("rwp list --json", &stdout(&o));
    let value: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(value[0]["name"], NAME);
    assert_eq!(value[0]["owner"], OWNER);
    assert_eq!(value[0]["error"], ERROR);
}
