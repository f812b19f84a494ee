use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{check, load, print_config, Env, Flags, LoadError, Origin, Schema};

/// A settings struct like the services'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Sample {
    /// Address to listen on
    /// (port 0 picks one).
    ///
    /// A second paragraph.
    #[schemars(example = &"[::]:9000")]
    listen: SocketAddr,
    /// A lease not renewed within this time is handed out again.
    lease_timeout_ms: u64,
    /// Size of the chunks, under its own variable.
    #[schemars(extend("x-env" = "RWP_STREAM_CHUNK_BYTES"))]
    chunk_bytes: usize,
    /// Requests per second.
    requests_per_second: f64,
    /// Refuse to run without Landlock.
    sandbox_require_landlock: bool,
    /// Threads (may be negative, for the validation to refuse).
    torch_threads: i32,
    /// Directories.
    #[serde(default)]
    data_roots: Option<Vec<PathBuf>>,
    /// A bearer token.
    #[serde(default)]
    #[schemars(extend("x-secret" = true))]
    token: Option<String>,
    /// Metrics address; off when unset.
    #[serde(default)]
    #[schemars(example = &"0.0.0.0:9090")]
    metrics_listen: Option<SocketAddr>,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:50051".parse().unwrap(),
            lease_timeout_ms: 10_000,
            chunk_bytes: 1 << 20,
            requests_per_second: 20.0,
            sandbox_require_landlock: true,
            torch_threads: 0,
            data_roots: None,
            token: None,
            metrics_listen: None,
        }
    }
}

/// The binary's parser: program options, then the settings' flags.
#[derive(Debug, Parser)]
#[command(name = "sample")]
struct Cli {
    /// TOML file with any of the settings.
    #[arg(long, env = "RWP_SERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "RWP_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(flatten)]
    settings: Flags<Sample>,
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn vars(pairs: &[(&str, &str)]) -> Env<'static> {
    Env::All(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

fn flags(args: &[&str]) -> Flags<Sample> {
    Flags::parse(args).unwrap()
}

#[test]
fn file_then_environment_then_flags() {
    let file = toml_file("lease_timeout_ms = 500\nchunk_bytes = 4096\nrequests_per_second = 5\n");
    let env = vars(&[("RWP_STREAM_CHUNK_BYTES", "8192"), ("RWP_REQUESTS_PER_SECOND", " 7.5 ")]);
    let loaded = load(Some(file.path()), &env, &flags(&["--requests-per-second", "9"])).unwrap();
    let c = loaded.config;
    assert_eq!((c.lease_timeout_ms, c.chunk_bytes, c.requests_per_second), (500, 8192, 9.0));
    assert_eq!(c.listen, Sample::default().listen);
    assert_eq!(loaded.origins["lease_timeout_ms"], Origin::File);
    assert_eq!(loaded.origins["chunk_bytes"], Origin::Env);
    assert_eq!(loaded.origins["requests_per_second"], Origin::Flag);
    assert_eq!(loaded.origins["listen"], Origin::Default);
}

#[test]
fn unknown_keys_in_the_file_are_named_with_the_file() {
    let file = toml_file("lease_timeout = 5\n");
    let err = load(Some(file.path()), &vars(&[]), &Flags::<Sample>::default()).unwrap_err();
    assert!(matches!(err, LoadError::File { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("lease_timeout") && text.contains(&file.path().display().to_string()), "{text}");
    let file = toml_file("lease_timeout_ms = \"soon\"\n");
    let text = load(Some(file.path()), &vars(&[]), &Flags::<Sample>::default()).unwrap_err().to_string();
    assert!(text.contains("lease_timeout_ms"), "{text}");
    let text = load(Some(file.path().with_extension("gone").as_path()), &vars(&[]), &Flags::<Sample>::default())
        .unwrap_err()
        .to_string();
    assert!(text.starts_with("cannot read config file"), "{text}");
}

#[test]
fn unknown_rwp_variables_are_refused_and_the_project_s_others_ignored() {
    let err = load(None, &vars(&[("RWP_LEASE_TIMEOUT", "5")]), &Flags::<Sample>::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LoadError::UnknownVariable { .. }), "{err:?}");
    assert!(text.contains("RWP_LEASE_TIMEOUT ") && text.contains("did you mean RWP_LEASE_TIMEOUT_MS?"), "{text}");
    // Other programs' variables, and variables without the prefix.
    let env =
        vars(&[("RWP_BIN_DIR", "target/debug"), ("RWP_DEVICE", "cpu"), ("HOME", "/root"), ("RWP_LOG_FORMAT", "x")]);
    assert_eq!(load(None, &env, &Flags::<Sample>::default()).unwrap().config, Sample::default());
    // Empty counts as unset.
    let c = load(None, &vars(&[("RWP_LEASE_TIMEOUT_MS", "")]), &Flags::<Sample>::default()).unwrap().config;
    assert_eq!(c.lease_timeout_ms, 10_000);
    // A lookup sees the settings' variables only.
    let lookup = |k: &str| (k == "RWP_LISTEN").then(|| "127.0.0.1:1".to_owned());
    let c = load(None, &Env::Lookup(&lookup), &Flags::<Sample>::default()).unwrap().config;
    assert_eq!(c.listen.port(), 1);
}

#[test]
fn a_bad_value_names_its_variable_or_flag_and_key() {
    let text =
        load(None, &vars(&[("RWP_STREAM_CHUNK_BYTES", "lots")]), &Flags::<Sample>::default()).unwrap_err().to_string();
    assert!(text.starts_with("RWP_STREAM_CHUNK_BYTES='lots' is not valid for chunk_bytes"), "{text}");
    let text =
        load(None, &vars(&[("RWP_METRICS_LISTEN", "nowhere")]), &Flags::<Sample>::default()).unwrap_err().to_string();
    assert!(text.starts_with("RWP_METRICS_LISTEN='nowhere' is not valid for metrics_listen"), "{text}");
    let text = load(None, &vars(&[]), &flags(&["--listen", "nowhere"])).unwrap_err().to_string();
    assert!(text.starts_with("--listen='nowhere' is not valid for listen"), "{text}");
    let text = Flags::<Sample>::parse(&["--lease-timeout-ms", "soon"]).unwrap_err().to_string();
    assert!(text.contains("--lease-timeout-ms") && text.contains("soon"), "{text}");
    // Negative numbers are values, for the validation to judge.
    assert_eq!(load(None, &vars(&[]), &flags(&["--torch-threads", "-2"])).unwrap().config.torch_threads, -2);
}

#[test]
fn lists_are_comma_separated_in_variables_and_flags() {
    let c = load(None, &vars(&[("RWP_DATA_ROOTS", "/a,/b")]), &Flags::<Sample>::default()).unwrap().config;
    assert_eq!(c.data_roots, Some(vec![PathBuf::from("/a"), PathBuf::from("/b")]));
    let c = load(None, &vars(&[]), &flags(&["--data-roots", ""])).unwrap().config;
    assert_eq!(c.data_roots, Some(vec![]));
    let file = toml_file("data_roots = [\"/c\"]\n");
    let c = load(Some(file.path()), &vars(&[]), &Flags::<Sample>::default()).unwrap().config;
    assert_eq!(c.data_roots, Some(vec![PathBuf::from("/c")]));
}

#[test]
fn print_config_shows_values_schema_and_options_with_secrets_redacted() {
    let cli = Cli::try_parse_from(["sample", "--token", "rwp_s3cret", "--lease-timeout-ms", "600"]).unwrap();
    assert!(!format!("{cli:?}").contains("s3cret"));
    let loaded = load(None, &vars(&[]), &cli.settings).unwrap();
    assert_eq!(loaded.config.token.as_deref(), Some("rwp_s3cret"));
    let out = serde_json::to_value(print_config(&loaded, &Cli::command())).unwrap();
    let text = out.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert_eq!(out["program"], "sample");
    assert_eq!(out["config"]["token"], "<redacted>");
    assert_eq!(out["config"]["lease_timeout_ms"], 600);
    assert_eq!(out["origin"]["lease_timeout_ms"], "flag");
    let key = &out["schema"]["chunk_bytes"];
    assert_eq!(key["env"], "RWP_STREAM_CHUNK_BYTES");
    assert_eq!(key["flag"], "--chunk-bytes");
    assert_eq!(key["type"], "integer");
    assert_eq!(key["default"], 1 << 20);
    assert_eq!(key["doc"], "Size of the chunks, under its own variable.");
    let listen = &out["schema"]["listen"];
    assert_eq!(listen["doc"], "Address to listen on (port 0 picks one).\n\nA second paragraph.");
    assert_eq!(listen["examples"][0], "[::]:9000");
    assert_eq!(out["schema"]["data_roots"]["items"], "string");
    assert_eq!(out["schema"]["data_roots"]["nullable"], true);
    assert_eq!(out["schema"]["token"]["secret"], true);
    assert_eq!(out["options"]["config"]["env"], "RWP_SERVER_CONFIG");
    assert_eq!(out["options"]["log-format"]["default"], "text");
    assert!(out["options"].get("token").is_none());
}

#[test]
fn help_names_the_variable_and_the_default() {
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("--lease-timeout-ms <MS>"), "{help}");
    assert!(help.contains("[env: RWP_STREAM_CHUNK_BYTES] [default: 1048576]"), "{help}");
}

#[test]
fn every_key_of_the_sample_is_settable_from_each_layer() {
    assert_eq!(check::every_key_settable::<Sample>(), Ok(9));
}

/// A field whose type the variables and flags cannot carry.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
struct Nested {
    inner: Inner,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
struct Inner {
    depth: u32,
}

#[test]
#[should_panic(expected = "setting `inner` has a type the layers cannot carry")]
fn a_nested_struct_is_refused() {
    let _ = Schema::of::<Nested>();
}

/// Settings the check must refuse: a field left out of the schema, an
/// address with nothing to set it to, a variable no list knows.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Unsettable {
    #[schemars(skip)]
    lease_timeout_ms: u64,
    #[serde(default)]
    health_listen: Option<SocketAddr>,
    #[schemars(extend("x-env" = "RWP_NOWHERE"))]
    threads: u32,
}

impl Default for Unsettable {
    fn default() -> Self {
        Self { lease_timeout_ms: 1, health_listen: None, threads: 0 }
    }
}

#[test]
fn the_check_names_every_key_it_cannot_set() {
    let problems = check::every_key_settable::<Unsettable>().unwrap_err();
    assert!(problems.contains("are not the serialised default's"), "{problems}");
    assert!(problems.contains("health_listen: no value other than the default"), "{problems}");
    assert!(problems.contains("add its variable RWP_NOWHERE"), "{problems}");
}
