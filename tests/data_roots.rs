//! A job's data_dir must lie under one of the server's data_roots, compared
//! after `..` is resolved; a refusal names only the roots as configured. A
//! dataset under a root that fails to load on the server is reported by
//! file name and kind of failure, never with its absolute path on the
//! server or anything read from the file.

use std::path::Path;

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::sweeps::sigma_grid;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::{CreateSweepRequest, SubmitJobRequest};
use rwp_sdk::{DatasetKind, JobSpecBuilder, Method};
use tonic::transport::Channel;
use tonic::Code;

async fn submit(stub: &mut JobServiceClient<Channel>, data_dir: &Path) -> tonic::Status {
    let mut spec = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).build().unwrap();
    spec.dataset = DatasetKind::Mnist;
    spec.data_dir = Some(data_dir.to_owned());
    let request = SubmitJobRequest { name: "d".into(), spec: Some((&spec).into()), request_id: None };
    stub.submit_job(request).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_outside_the_roots_are_refused_and_load_errors_hide_server_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("datasets");
    std::fs::create_dir_all(root.join("mnist")).unwrap();
    let secret = tmp.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let cluster = Cluster::start_configured(0, |c| c.data_roots = Some(vec![root.clone()]), |_| {}).await;
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

    // Under the root (after `..`), but no files: named by file, without the server's path.
    let err = submit(&mut stub, &root.join("other/../mnist")).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("cannot read train-images-idx3-ubyte in data_dir"), "{err:?}");
    assert!(!err.message().contains(tmp.path().to_str().unwrap()), "the server's path leaks: {err:?}");

    // A file that is not a dataset: nothing read from it comes back.
    std::fs::write(root.join("mnist/train-images-idx3-ubyte"), b"SECRET=hunter2 and more bytes").unwrap();
    let err = submit(&mut stub, &root.join("mnist")).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let message = err.message();
    assert!(message.contains("train-images-idx3-ubyte in data_dir is not a valid IDX file"), "{message}");
    for leak in [tmp.path().to_str().unwrap(), "SECRET", "0x", "bytes"] {
        assert!(!message.contains(leak), "{leak:?} leaks: {message}");
    }
    cluster.shutdown().await;
}
