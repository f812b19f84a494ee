//! The `RWP_*` variables of the whole repository.

/// Every `RWP_*` environment variable that some program, script or test of
/// this repository reads. The two services share the prefix with each
/// other, the CLI, the scripts and the tests, so a shell or a test run may
/// hold any of these: a service ignores the ones that are not its settings,
/// and refuses any other `RWP_*` variable, naming it (a misspelt setting
/// must not be silently ignored). A test reads the repository and fails on a
/// variable missing here.
pub const PROJECT_VARIABLES: &[&str] = &[
    // Options of the binaries that are not settings.
    "RWP_LOG_FORMAT",
    "RWP_SERVER_CONFIG",
    "RWP_WORKER_CONFIG",
    // rwp-server's settings.
    "RWP_CHECKPOINT_DIR",
    "RWP_CHECKPOINT_EVERY",
    "RWP_CHECKPOINT_RETRY_MS",
    "RWP_CONNECTION_FIRST_REQUEST_TIMEOUT_MS",
    "RWP_DATA_DIR",
    "RWP_DATA_ROOTS",
    "RWP_ENGINE_DEVICE",
    "RWP_ENGINE_THREADS",
    "RWP_EVAL_EVERY_EPOCHS",
    "RWP_HEALTH_LISTEN",
    "RWP_LEASE_TIMEOUT_MS",
    "RWP_LISTEN",
    "RWP_MAX_ACTIVE_JOBS_PER_TOKEN",
    "RWP_MAX_CONCURRENT_REQUESTS",
    "RWP_MAX_MESSAGE_BYTES",
    "RWP_MAX_MODEL_BYTES_PER_OWNER",
    "RWP_MAX_MODEL_FILE_BYTES",
    "RWP_MAX_MODEL_PARAMETERS",
    "RWP_MLFLOW_EXPERIMENT",
    "RWP_MLFLOW_TRACKING_URI",
    "RWP_MODEL_GC_INTERVAL_MS",
    "RWP_REQUESTS_PER_SECOND",
    "RWP_REQUEST_BURST",
    "RWP_REQUEST_TIMEOUT_MS",
    "RWP_SANDBOX_TIMEOUT_MS",
    "RWP_SERVER_DRAIN_TIMEOUT_MS",
    "RWP_STREAM_CHUNK_BYTES",
    "RWP_TASK_TIMEOUT_FLOOR_MS",
    "RWP_TASK_TIMEOUT_INITIAL_MS",
    "RWP_TLS_CLIENT_CA",
    "RWP_TOKENS_FILE",
    "RWP_TORCH_THREADS",
    "RWP_UNREFERENCED_MODEL_RETENTION_MS",
    "RWP_FINISHED_JOB_RETENTION_MS",
    "RWP_DATA_INSPECTION_TIMEOUT_MS",
    "RWP_DATA_CACHE_DIR",
    "RWP_DATA_CACHE_BYTES",
    // rwp-worker's settings (some the CLI's too).
    "RWP_CHUNK_BYTES",
    "RWP_DEVICE",
    "RWP_DRAIN_TIMEOUT_MS",
    "RWP_LEASE_WAIT_MS",
    "RWP_MAX_BACKOFF_MS",
    "RWP_METRICS_HEADER_TIMEOUT_MS",
    "RWP_MODEL_CACHE_DIR",
    "RWP_SANDBOX_LOAD_TIMEOUT_MS",
    "RWP_SERVER",
    "RWP_THREADS",
    "RWP_TLS_CA",
    "RWP_TLS_DOMAIN",
    "RWP_TOKEN",
    "RWP_TOKEN_FILE",
    "RWP_WORKER_NAME",
    // Settings of both services.
    "RWP_MAX_CONNECTIONS_PER_PEER",
    "RWP_METRICS_LISTEN",
    "RWP_SANDBOX_MEMORY_BYTES",
    "RWP_SANDBOX_PROGRAM",
    "RWP_SANDBOX_REQUIRE_LANDLOCK",
    "RWP_SANDBOX_USER",
    "RWP_TLS_CERT",
    "RWP_TLS_KEY",
    // The CLI (rwp).
    "RWP_RETRIES",
    // Fault injection (rwp-core's faults, read by the server).
    "RWP_TEST_FAULTS",
    // Build, scripts and tests (cargo passes .cargo/config.toml's [env] to
    // the processes it runs).
    "RWP_BIN_DIR",
    "RWP_CHAOS",
    "RWP_CHAOS_SEED",
    "RWP_PLOT_KEEP",
    "RWP_PROTO_DIR",
    "RWP_PYTHON",
    "RWP_TORCH_LIB",
    "RWP_WORKSPACE_ROOT",
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::PROJECT_VARIABLES;

    /// Words of the repository that look like variables and are not.
    const NOT_VARIABLES: &[&str] = &[
        // A constant of the CLI's tests.
        "RWP_VARIABLES",
        // Misspelt settings that tests show refused.
        "RWP_LEASE_TIMEOUT",
        "RWP_CHUNKBYTES",
        "RWP_NOWHERE",
    ];

    fn scan(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || matches!(name.as_str(), "target" | "runs" | "__pycache__" | "node_modules") {
                continue;
            }
            if path.is_dir() {
                scan(&path, found);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                for (at, _) in text.match_indices("RWP_") {
                    let word: String = text[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    // `RWP_SERVER_*`, a prefix in prose, is not a variable.
                    if !word.ends_with('_') && !NOT_VARIABLES.contains(&word.as_str()) {
                        found.insert(word);
                    }
                }
            }
        }
    }

    #[test]
    fn every_variable_of_the_repository_is_listed() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut found = BTreeSet::new();
        scan(&root, &mut found);
        assert!(found.contains("RWP_LISTEN") && found.contains("RWP_BIN_DIR"), "the scan missed the repository");
        let missing: Vec<_> = found.iter().filter(|v| !PROJECT_VARIABLES.contains(&v.as_str())).collect();
        assert!(missing.is_empty(), "add these to rwp_config::PROJECT_VARIABLES (or NOT_VARIABLES): {missing:?}");
    }

    #[test]
    fn the_list_has_no_duplicates() {
        let set: BTreeSet<_> = PROJECT_VARIABLES.iter().collect();
        assert_eq!(set.len(), PROJECT_VARIABLES.len());
    }
}
