//! Shutdown during a task: the task is finished and pushed within the drain
//! timeout, or else its lease is given back.

mod common;

use std::time::Duration;

use common::{fixture, wire_task, worker_config, FakeState, Running, Worker};
use rwp_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_task_finishes_and_pushes_it() {
    let fx = fixture();
    let tasks: Vec<v1::Task> = fx.expected.iter().map(|e| wire_task(&fx.spec, &e.task)).collect();
    let mut state = FakeState::new("a", &fx, tasks);
    state.fetch_delay = Duration::from_millis(800);
    let server = Running::start_local(state).await;
    let worker = Worker::start(worker_config(&server.url()));

    assert!(server.wait_for(Duration::from_secs(60), |s| s.fetches.len() == 1).await, "mid-task");
    let report = worker.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.tasks_completed, 1);
    let state = server.server.state.lock().unwrap();
    assert_eq!(state.leased.len(), 1, "no task leased after shutdown");
    assert_eq!(state.pushes.len(), 1);
    assert_eq!(state.pushes[0].header.lease_id, state.leased[0]);
    assert!(state.pushes[0].payload == fx.expected[0].payload);
    assert!(state.releases.is_empty());
    assert!(state.renewals.iter().any(|l| l == &state.leased[0]), "the lease was renewed while the task ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_the_drain_timeout_releases_the_lease() {
    let fx = fixture();
    let mut state = FakeState::new("a", &fx, [wire_task(&fx.spec, &fx.expected[1].task)]);
    state.fetch_delay = Duration::from_secs(20);
    let server = Running::start_local(state).await;
    let mut config = worker_config(&server.url());
    config.drain_timeout_ms = 200;
    let worker = Worker::start(config);

    assert!(server.wait_for(Duration::from_secs(60), |s| s.fetches.len() == 1).await, "mid-task");
    let started = std::time::Instant::now();
    let report = worker.shutdown(Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(8), "stopped after the drain timeout, not the task");
    assert_eq!(report.tasks_completed, 0);
    assert_eq!(report.leases_released, 1);
    let state = server.server.state.lock().unwrap();
    assert_eq!(state.releases, state.leased);
    assert!(state.pushes.is_empty());
}
