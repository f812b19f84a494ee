//! A job's data_dir must lie under one of the server's data_roots, compared
//! after `..` is resolved; a refusal names only the roots as configured. The
//! server never reads the data: a dataset under a root that the workers
//! cannot load fails its job, reported by file name and kind of failure,
//! never with its absolute path or anything read from the file.

use std::path::Path;

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::sweeps::sigma_grid;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::{self, CreateSweepRequest, SubmitJobRequest};
use rwp_sdk::{DatasetKind, JobSpecBuilder, Method};
use tonic::transport::Channel;
use tonic::Code;

async fn submit(stub: &mut JobServiceClient<Channel>, data_dir: &Path) -> tonic::Status {
    let mut spec = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).build().unwrap();
    spec.dataset = DatasetKind::Mnist;
    spec.data_dir = Some(data_dir.to_owned());
    let request =
        SubmitJobRequest { name: "d".into(), spec: Some((&spec).into()), request_id: None, ..Default::default() };
    stub.submit_job(request).await.unwrap_err()
}

/// Submits an MNIST job on `data_dir` and waits for it to fail.
async fn failed_job(stub: &mut JobServiceClient<Channel>, data_dir: &Path) -> v1::Job {
    let mut spec = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).build().unwrap();
    spec.dataset = DatasetKind::Mnist;
    spec.data_dir = Some(data_dir.to_owned());
    let request =
        SubmitJobRequest { name: "d".into(), spec: Some((&spec).into()), request_id: None, ..Default::default() };
    let id = stub.submit_job(request).await.expect("the server does not read the data").into_inner().id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let job = stub.get_job(v1::GetJobRequest { job_id: id.clone() }).await.unwrap().into_inner();
        if job.state != v1::JobState::Running as i32 {
            assert_eq!(job.state, v1::JobState::Failed as i32, "{job:?}");
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} did not fail");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_outside_the_roots_are_refused_and_load_errors_hide_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("datasets");
    std::fs::create_dir_all(root.join("mnist")).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let cluster = Cluster::start_configured(1, |c| c.data_roots = Some(vec![root.clone()]), |_| {}).await;
    let mut stub = JobServiceClient::connect(cluster.url()).await.unwrap();

    let roots_named = format!("(data_roots): {}", root.display());
    for outside in [secret.clone(), root.join("../secret"), root.join("mnist/../../secret"), "datasets/mnist".into()] {
        let err = submit(&mut stub, &outside).await;
        assert_eq!(err.code(), Code::InvalidArgument, "{outside:?}: {err:?}");
        assert!(err.message().ends_with(&roots_named), "{outside:?}: {err:?}");
    }
    let mut sweep = sigma_grid(&[0.01], 1, 1, None);
    sweep.base.dataset = DatasetKind::Mnist;
    sweep.base.data_dir = Some(secret.clone());
    let request = CreateSweepRequest { name: "s".into(), spec: Some((&sweep).into()), request_id: None };
    let err = stub.create_sweep(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().ends_with(&roots_named), "{err:?}");

    // Under the root (after `..`), but no files: the server never reads the
    // data, the worker cannot, and the job fails naming the file by name,
    // without the worker's path.
    let job = failed_job(&mut stub, &root.join("other/../mnist")).await;
    assert!(job.error.contains("cannot read train-images-idx3-ubyte in data_dir"), "{}", job.error);
    assert!(!job.error.contains(tmp.path().to_str().unwrap()), "the path leaks: {}", job.error);

    // A file that is not a dataset: nothing read from it comes back.
    std::fs::write(root.join("mnist/train-images-idx3-ubyte"), b"SECRET=hunter2 and more bytes").unwrap();
    let job = failed_job(&mut stub, &root.join("mnist")).await;
    let message = job.error;
    assert!(message.contains("train-images-idx3-ubyte in data_dir is not a valid IDX file"), "{message}");
    for leak in [tmp.path().to_str().unwrap(), "SECRET", "0x", "bytes"] {
        assert!(!message.contains(leak), "{leak:?} leaks: {message}");
    }
    cluster.shutdown().await;
}
