//! The worker waits for a server that is not up yet, and comes back to one
//! that restarted (registering again with it).

mod common;

use std::time::Duration;

use common::{fixture, wire_task, worker_config, FakeState, Running, Worker};
use tokio::net::TcpListener;

/// The one place a test names a port before anything listens on it: the
/// point is a worker started against an address where no server is yet.
/// The kernel picks the port (bound and released at once).
async fn free_port() -> std::net::SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_retries_until_the_server_is_up() {
    let fx = fixture();
    let addr = free_port().await;
    let worker = Worker::start(worker_config(&format!("http://{addr}")));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let clean = &fx.expected[0];
    let server = Running::start(
        TcpListener::bind(addr).await.unwrap(),
        FakeState::new("a", &fx, [wire_task(&fx.spec, &clean.task)]),
    );
    assert!(server.wait_for(Duration::from_secs(60), |s| s.pushes.len() == 1).await, "the task completes");
    let report = worker.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.tasks_completed, 1);
    assert_eq!(report.registrations, 1);
    let state = server.server.state.lock().unwrap();
    assert!(state.pushes[0].payload == clean.payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_registers_again_with_a_restarted_server() {
    let fx = fixture();
    let (clean, perturbed) = (&fx.expected[0], &fx.expected[1]);
    let first = Running::start_local(FakeState::new("a", &fx, [wire_task(&fx.spec, &clean.task)])).await;
    let addr = first.addr;
    let worker = Worker::start(worker_config(&first.url()));
    assert!(first.wait_for(Duration::from_secs(60), |s| s.pushes.len() == 1).await);
    first.stop().await;
    // Down for a while: calls fail, the worker backs off and reconnects.
    tokio::time::sleep(Duration::from_millis(700)).await;

    // The "restarted" server knows nothing of the worker.
    let second = Running::start(
        TcpListener::bind(addr).await.unwrap(),
        FakeState::new("b", &fx, [wire_task(&fx.spec, &perturbed.task)]),
    );
    assert!(second.wait_for(Duration::from_secs(60), |s| s.pushes.len() == 1).await, "the worker comes back");
    let report = worker.shutdown(Duration::from_secs(30)).await;
    assert_eq!(report.tasks_completed, 2);
    assert_eq!(report.registrations, 2);
    let state = second.server.state.lock().unwrap();
    assert_eq!(state.pushes[0].header.worker_id, "b-worker-1");
    assert!(state.pushes[0].payload == perturbed.payload);
}
