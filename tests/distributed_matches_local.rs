//! The determinism contract, end to end: an `m-arwp` job on the small CNN run
//! by a real parameter server and real gradient workers (separate processes
//! on loopback, killed with real signals) ends with weights, BN buffers,
//! momentum and `F` bit-identical to the local trainer's for the same spec,
//! however many workers run it, whoever dies, and whatever else shares them.

use std::time::Duration;

use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server, start_worker, submit, wait_for_step, wait_for_success,
};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_spec::{JobSpec, Method};

const TIMEOUT: Duration = Duration::from_secs(240);

fn spec(seed: u64, method: Method) -> JobSpec {
    small_job(seed, method, 12)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let _worker = start_worker(addr, "w1");
    let mut client = connect(addr).await;
    let spec = spec(1, Method::MArwp);
    let id = submit(&mut client, "one-worker", &spec).await;
    let job = wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_eq!(job.step, 12);
    assert_bit_identical("1 worker", &export(&mut client, &id).await, &spec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let _workers: Vec<_> = (1..=3).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let spec = spec(2, Method::MArwp);
    let id = submit(&mut client, "three-workers", &spec).await;
    wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_bit_identical("3 workers", &export(&mut client, &id).await, &spec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_run_and_another_started_later() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let mut doomed = start_worker(addr, "doomed");
    let _steady = start_worker(addr, "steady");
    let mut client = connect(addr).await;
    let mut spec = spec(3, Method::MArwp);
    spec.max_updates = Some(20);
    let id = submit(&mut client, "worker-killed", &spec).await;
    let at = wait_for_step(&mut client, &id, 3, TIMEOUT).await;
    assert_eq!(at.state, rwp_proto::v1::JobState::Running as i32, "killed before the end");
    doomed.kill_hard();
    wait_for_step(&mut client, &id, 6, TIMEOUT).await;
    let _late = start_worker(addr, "late");
    wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_bit_identical("worker killed", &export(&mut client, &id).await, &spec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_run_and_restarted_from_its_data_directory() {
    let (_tmp, dir) = data_dir();
    let (mut server, addr) = start_server(&dir, "127.0.0.1:0");
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let mut spec = spec(4, Method::MArwp);
    spec.max_updates = Some(20);
    let id = submit(&mut client, "server-killed", &spec).await;
    let at = wait_for_step(&mut client, &id, 5, TIMEOUT).await;
    assert!(at.step < 20, "killed before the end");
    server.kill_hard();
    // Same address: the workers retry until the new server answers.
    let (_server, again) = start_server(&dir, &addr.to_string());
    assert_eq!(again, addr);
    let mut client = connect(addr).await;
    let resumed = rwp_integration_tests::cluster::job(&mut client, &id).await;
    assert_eq!(resumed.name, "server-killed", "the job survived the restart");
    wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_bit_identical("server killed", &export(&mut client, &id).await, &spec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_share_the_same_workers() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let (a, b) = (spec(5, Method::MArwp), spec(6, Method::Sgd));
    let id_a = submit(&mut client, "job-a", &a).await;
    let id_b = submit(&mut client, "job-b", &b).await;
    wait_for_success(&mut client, &id_a, TIMEOUT).await;
    wait_for_success(&mut client, &id_b, TIMEOUT).await;
    assert_bit_identical("job a of two", &export(&mut client, &id_a).await, &a);
    assert_bit_identical("job b of two", &export(&mut client, &id_b).await, &b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_batchnorm() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let mut sam = spec(7, Method::Sam);
    sam.model = rwp_spec::ModelKind::Mlp;
    let mut marwp = spec(8, Method::MArwp);
    marwp.model = rwp_spec::ModelKind::Mlp;
    let ids = [submit(&mut client, "mlp-sam", &sam).await, submit(&mut client, "mlp-m-arwp", &marwp).await];
    for (id, spec) in ids.iter().zip([&sam, &marwp]) {
        wait_for_success(&mut client, id, TIMEOUT).await;
        assert_bit_identical(&format!("mlp {}", spec.method), &export(&mut client, id).await, spec);
    }
}
