//! An unreachable server is one clear line with its address, exit status 1,
//! within a few seconds: no panic, no backtrace.

mod common;

use std::time::Duration;

use common::{assert_clean_error, rwp_within};

const NO_SERVER: &str = "http://127.0.0.1:1";

#[test]
fn list_says_it_cannot_reach_the_server() {
    let (o, took) = rwp_within(&["--server", NO_SERVER, "list"], Duration::from_secs(20));
    let line = assert_clean_error(&o, 1);
    assert!(line.contains("cannot reach the server at http://127.0.0.1:1"), "{line}");
    assert!(line.contains("connection refused"), "{line}");
    assert!(line.contains("RWP_SERVER"), "{line}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn every_command_that_needs_the_server_fails_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("c.png");
    let safetensors = dir.path().join("w.safetensors");
    let commands: Vec<Vec<&str>> = vec![
        vec!["get", "j-1"],
        vec!["watch", "j-1"],
        vec!["cancel", "j-1"],
        vec!["export", "j-1", "-o", safetensors.to_str().unwrap()],
        vec!["plot", "j-1", "-o", png.to_str().unwrap()],
        vec!["submit", "--method", "sgd"],
        vec!["submit", "--method", "sgd", "--watch"],
        vec!["list", "--json"],
    ];
    for args in commands {
        let mut all = vec!["--server", NO_SERVER];
        all.extend(&args);
        let (o, took) = rwp_within(&all, Duration::from_secs(20));
        let line = assert_clean_error(&o, 1);
        assert!(line.contains("cannot reach the server at http://127.0.0.1:1"), "{args:?}: {line}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_server_can_come_from_the_environment_and_a_bare_host_port() {
    let output = std::process::Command::new(common::rwp_bin())
        .args(["list"])
        .env("RWP_SERVER", "127.0.0.1:1")
        .env("RWP_RETRIES", "0")
        .output()
        .unwrap();
    let line = assert_clean_error(&output, 1);
    assert!(line.contains("cannot reach the server at http://127.0.0.1:1"), "{line}");
}

#[test]
fn a_malformed_address_is_a_usage_error() {
    let (o, _) = rwp_within(&["--server", "http://bad host:1", "list"], Duration::from_secs(20));
    let line = assert_clean_error(&o, 2);
    assert!(line.contains("http://bad host:1"), "{line}");
}
