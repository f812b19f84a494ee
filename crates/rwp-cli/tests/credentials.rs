//! Credentials on the command line: the bearer token goes with every call,
//! from the environment or a file; mistakes in credential flags are usage
//! errors that name the flag and the file.

mod common;

use std::time::Duration;

use common::mock::{ended_job, MockServer};
use common::{assert_clean_error, rwp, rwp_with_env, write_file};
use rwp_proto::v1::JobState;
use rwp_sdk::Method;

fn server() -> MockServer {
    MockServer::start(vec![ended_job("j-000001", "a", Method::Sgd, JobState::Succeeded, 4, 4)])
}

#[test]
fn the_token_goes_with_every_call_from_the_environment_or_a_file() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "token", "rwp_from_file\n");
    let seconds = Duration::from_secs(30);
    let (o, _) = rwp_with_env(&["--server", &server.url, "list"], &[("RWP_TOKEN", "rwp_from_env")], seconds);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let (o, _) = rwp_with_env(&["--server", &server.url, "list"], &[("RWP_TOKEN_FILE", &file)], seconds);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = rwp(&["--server", &server.url, "--token-file", &file, "list"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = rwp(&["--server", &server.url, "list"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let sent = server.recorded.lock().unwrap().authorization.clone();
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    // `list` calls ListJobs twice: once to check the server answers, once for the list.
    assert_eq!(sent.len(), 8, "{sent:?}");
    assert!(sent[..2].iter().all(|a| *a == bearer("rwp_from_env")), "{sent:?}");
    assert!(sent[2..6].iter().all(|a| *a == bearer("rwp_from_file")), "{sent:?}");
    assert!(sent[6..].iter().all(Option::is_none), "no token, no header: {sent:?}");
}

#[test]
fn credential_mistakes_are_usage_errors_naming_flag_and_file() {
    let server = server();
    let dir = tempfile::tempdir().unwrap();
    let token = write_file(dir.path(), "token", "rwp_x");
    let empty = write_file(dir.path(), "empty", "\n");
    let garbage = write_file(dir.path(), "garbage.pem", "not a certificate");
    let missing = dir.path().join("missing").display().to_string();
    let url = server.url.as_str();
    let cases: [(&[&str], String); 5] = [
        (&["--token", "x", "--token-file", &token], "give the token once".to_owned()),
        (&["--token-file", &missing], format!("--token-file: cannot read {missing}")),
        (&["--token-file", &empty], format!("--token-file: {empty}: the token file is empty")),
        (&["--tls-cert", &garbage], "--tls-cert and --tls-key go together".to_owned()),
        (&["--tls-ca", &garbage], format!("{garbage}: holds no PEM certificate")),
    ];
    for (flags, want) in cases {
        let args: Vec<&str> = ["--server", url].iter().chain(flags).chain(&["list"]).copied().collect();
        let line = assert_clean_error(&rwp(&args), 2);
        assert!(line.contains(&want), "{flags:?}: {line}");
    }
    assert!(server.recorded.lock().unwrap().authorization.is_empty(), "nothing was sent");
}
