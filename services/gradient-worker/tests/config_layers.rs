//! Configuration layers: defaults < TOML file < environment < flags.

use std::collections::HashMap;
use std::io::Write;

use clap::Parser;
use rwp_gradient_worker::{ConfigFlags, WorkerConfig, WorkerError};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    flags: ConfigFlags,
}

fn flags(args: &[&str]) -> ConfigFlags {
    Cli::try_parse_from(std::iter::once("rwp-worker").chain(args.iter().copied())).unwrap().flags
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |k| vars.get(k).cloned()
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let file = toml_file("server = \"http://ps:50051\"\nchunk_byte = 4096\n");
    let err = WorkerConfig::resolve(Some(file.path()), &env(&[]), &ConfigFlags::default()).unwrap_err();
    assert!(matches!(err, WorkerError::ConfigFile { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("chunk_byte"), "{text}");
    assert!(text.contains(&file.path().display().to_string()), "{text}");
}

#[test]
fn file_then_environment_then_flags() {
    let file = toml_file(
        "server = \"http://from-file:1\"\nname = \"file-name\"\nthreads = 3\nchunk_bytes = 8192\ndevice = \"cpu\"\n",
    );
    let vars = env(&[("RWP_SERVER", "http://from-env:2"), ("RWP_THREADS", "5"), ("RWP_WORKER_NAME", "")]);

    let c = WorkerConfig::resolve(Some(file.path()), &vars, &ConfigFlags::default()).unwrap();
    assert_eq!(c.server, "http://from-env:2", "env overrides the file");
    assert_eq!(c.threads, 5);
    assert_eq!(c.name, "file-name", "an empty variable counts as unset");
    assert_eq!(c.chunk_bytes, 8192, "the file overrides defaults");
    assert_eq!(c.lease_wait_ms, WorkerConfig::default().lease_wait_ms, "defaults fill the rest");

    let c = WorkerConfig::resolve(Some(file.path()), &vars, &flags(&["--threads", "7", "--server", "http://flag:3"]))
        .unwrap();
    assert_eq!(c.server, "http://flag:3", "flags override env");
    assert_eq!(c.threads, 7);
    assert_eq!(c.chunk_bytes, 8192);
}

#[test]
fn invalid_values_name_their_field() {
    let err = WorkerConfig::resolve(None, &env(&[]), &flags(&["--chunk-bytes", "0"])).unwrap_err();
    assert!(err.to_string().contains("chunk_bytes"), "{err}");
    let err = WorkerConfig::resolve(None, &env(&[("RWP_DEVICE", "tpu")]), &ConfigFlags::default()).unwrap_err();
    assert!(matches!(err, WorkerError::Config { field: "device", .. }), "{err}");
    let file = toml_file("threads = \"many\"\n");
    let err = WorkerConfig::resolve(Some(file.path()), &env(&[]), &ConfigFlags::default()).unwrap_err();
    assert!(err.to_string().contains("threads"), "{err}");
}
