//! The determinism contract, end to end: an `m-arwp` job on the small CNN run
//! by a real parameter server and real gradient workers (separate processes
//! on loopback, killed with real signals) ends with weights, BN buffers,
//! momentum and `F` bit-identical to the local trainer's for the same spec,
//! however many workers run it, whoever dies, and whatever else shares them.

use std::collections::HashMap;
use std::time::Duration;

use rwp_core::trainer::LocalTrainer;
use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server, start_worker, submit, wait_for_step, wait_for_success,
};
use rwp_spec::{JobSpec, Method};
use tch::{Device, Tensor};

const TIMEOUT: Duration = Duration::from_secs(240);

fn spec(seed: u64, method: Method) -> JobSpec {
    let mut spec = JobSpec::reference(method);
    spec.batch_size = 64;
    spec.epochs = 2;
    spec.max_updates = Some(12);
    spec.seed = seed;
    spec.clean_shards = 2;
    spec.perturbed_shards = 2;
    spec
}

/// The local trainer's final state as the named tensors of a checkpoint.
fn local_reference(spec: &JobSpec) -> HashMap<String, Tensor> {
    tch::set_num_threads(1);
    let mut trainer = LocalTrainer::new(spec.clone(), Device::Cpu).unwrap();
    while !trainer.is_done() {
        trainer.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("local.safetensors");
    trainer.save_checkpoint(&path).unwrap();
    Tensor::read_safetensors(&path).unwrap().into_iter().collect()
}

fn assert_bit_identical(label: &str, exported: &[u8], spec: &JobSpec) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exported.safetensors");
    std::fs::write(&path, exported).unwrap();
    let distributed: HashMap<String, Tensor> = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
    let local = local_reference(spec);
    assert_eq!(
        {
            let mut k: Vec<_> = distributed.keys().collect();
            k.sort();
            k
        },
        {
            let mut k: Vec<_> = local.keys().collect();
            k.sort();
            k
        },
        "{label}: same tensors"
    );
    for group in ["weights.", "buffers.", "momentum.", "history."] {
        assert!(local.keys().any(|k| k.starts_with(group)) || group == "history.", "{label}: no {group} tensors");
    }
    let differing: Vec<&String> = local.iter().filter(|(k, v)| !distributed[*k].equal(v)).map(|(k, _)| k).collect();
    assert!(differing.is_empty(), "{label}: not bit-identical to the local trainer: {differing:?}");
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
