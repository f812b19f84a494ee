//! TorchScript jobs: the worker fetches the model file the spec names,
//! checks it against the SHA-256, and keeps it in its cache. A file whose
//! bytes do not match is never used: the lease goes back with the reason.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{fixture, wire_task, worker_config, FakeState, Running, Worker};
use rwp_spec::{ModelFile, ModelKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_whose_bytes_do_not_match_its_digest_is_refused() {
    let fx = fixture();
    let mut spec = fx.spec.clone();
    spec.model = ModelKind::TorchScript;
    let announced = ModelFile { sha256: rwp_spec::sha256_hex(b"the real model"), size_bytes: 14 };
    spec.model_file = Some(announced.clone());
    let task = wire_task(&spec, &fx.expected[0].task);
    let mut state = FakeState::new("a", &fx, [task]);
    // Same length, other bytes: only the checksum can tell.
    state.models.insert(announced.sha256.clone(), Bytes::from_static(b"the fake model"));
    let server = Running::start_local(state).await;
    let cache = tempfile::tempdir().unwrap();
    let mut config = worker_config(&server.url());
    config.model_cache_dir = cache.path().join("models");
    let worker = Worker::start(config);

    assert!(server.wait_for(Duration::from_secs(60), |s| !s.releases.is_empty()).await, "the lease comes back");
    let report = worker.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.tasks_failed, 1);
    let state = server.server.state.lock().unwrap();
    assert_eq!(state.model_fetches, std::slice::from_ref(&announced.sha256));
    assert!(state.pushes.is_empty(), "nothing computed from a bad file");
    let error = &state.release_errors[0];
    assert!(error.contains("checksum mismatch") && error.contains(&announced.sha256), "{error}");
    let left: Vec<_> = std::fs::read_dir(cache.path().join("models")).unwrap().flatten().collect();
    assert!(left.is_empty(), "no file kept: {left:?}");
}
