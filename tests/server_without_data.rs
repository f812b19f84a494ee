//! The parameter server never reads a dataset: a job whose `data_dir` does
//! not exist where the server runs (a relative path, resolved in each
//! process's own directory, and only the workers' holds the files) trains
//! and evaluates to success, with the local trainer's weights and figures.

use std::path::Path;
use std::time::Duration;

use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_worker_in, submit, wait_for_success, ServerCommand,
};
use rwp_integration_tests::evaluations::{assert_evaluations_match, job_evaluations};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_spec::{DatasetKind, Method};

/// MNIST-format files of the standard sizes (60,000 + 10,000 images) with
/// made-up pixels and labels.
fn write_mnist(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", 60_000u32), ("t10k", 10_000)] {
        let mut images = [0x0000_0803u32, n, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>();
        images.extend((0..n as usize * 784).map(|i| ((i * 7919 + i / 784 * 31) % 256) as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        let mut labels = [0x0000_0801u32, n].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>();
        labels.extend((0..n as usize).map(|i| ((i * 13 + i / 7) % 10) as u8));
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_data_only_the_workers_can_read_trains_and_evaluates() {
    let workers_dir = tempfile::tempdir().unwrap();
    write_mnist(&workers_dir.path().join("mnist"));
    let server_dir = tempfile::tempdir().unwrap();
    assert!(!server_dir.path().join("mnist").exists(), "the server has no such data");
    let (_tmp, dir) = data_dir();
    let (_server, addr) = ServerCommand::new(&dir, "127.0.0.1:0").current_dir(server_dir.path()).start();
    let url = format!("http://{addr}");
    let _workers: Vec<_> =
        (0..2).map(|i| start_worker_in(&url, &format!("w{i}"), &[], Some(workers_dir.path()), &[])).collect();
    let mut client = connect(addr).await;
    let mut spec = small_job(64, Method::Sgd, 3);
    spec.dataset = DatasetKind::Mnist;
    spec.data_dir = Some("mnist".into());
    spec.validation_fraction = 0.01;
    let id = submit(&mut client, "data-on-workers-only", &spec).await;
    let job = wait_for_success(&mut client, &id, Duration::from_secs(300)).await;
    assert_eq!(job.step, 3);

    // The same job, locally, reading the workers' files.
    spec.data_dir = Some(workers_dir.path().join("mnist"));
    assert_evaluations_match("data on the workers only", &job_evaluations(&mut client, &id).await, &spec, &[3]);
    assert_bit_identical("data on the workers only", &export(&mut client, &id).await, &spec);
}
