//! Bring your own PyTorch model: a TorchScript file uploaded through the job
//! API, stored by the server under its SHA-256, fetched and cached by real
//! worker processes, trained with m-ARWP, and compared with PyTorch training
//! the same module on the same batches and noise (`rwp_reference.py
//! --module`): bit for bit on one CPU thread, across a server SIGKILLed
//! and restarted mid-run. Bad files are refused with errors that say what is
//! wrong.

use std::time::Duration;

use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_worker_with, wait_for_step, wait_for_success, ServerCommand,
};
use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::local_run::{exported_tensors, small_job};
use rwp_integration_tests::reference::{assert_matches_pytorch, run_with_pytorch};
use rwp_integration_tests::sweeps::{sigma_grid, wait_for_sweep};
use rwp_integration_tests::write_script_model;
use rwp_proto::v1;
use rwp_sdk::{Client, JobState, Method, ModelFile, ModelKind, SdkError, SweepState};
use tch::Tensor;

const TIMEOUT: Duration = Duration::from_secs(240);
const UPDATES: u64 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torchscript_cnn_trained_through_the_service_across_a_restart_matches_pytorch_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let module = tmp.path().join("cnn_bn.pt");
    write_script_model("cnn-bn", &module, 3, 10);
    let (_dir, data) = data_dir();
    let command = ServerCommand::new(&data, "127.0.0.1:0");
    let (mut server, addr) = command.clone().start();
    let url = format!("http://{addr}");
    let caches: Vec<_> = (1..=2).map(|i| tmp.path().join(format!("cache-w{i}"))).collect();
    let _workers: Vec<_> = caches
        .iter()
        .enumerate()
        .map(|(i, cache)| start_worker_with(&url, &format!("w{i}"), &["--model-cache-dir", cache.to_str().unwrap()]))
        .collect();

    // m-arwp, 24 updates of batch 64, 2 clean and 2 perturbed shards.
    let mut spec = small_job(5, Method::MArwp, UPDATES);
    spec.model = ModelKind::TorchScript;
    let client = Client::connect(url.clone()).await.unwrap();
    let job = client.submit_with_model_file("torchscript-cnn", &spec, &module).await.unwrap();
    let stored = ModelFile::of_path(&module).unwrap();
    assert_eq!(job.spec.model_file.as_ref(), Some(&stored), "the job names the uploaded file");
    assert!(data.join("models").join(format!("{}.pt", stored.sha256)).is_file(), "the server stores it by digest");

    // The server dies mid-run; restarted, it reloads the module from its
    // store and resumes from the latest checkpoint.
    let mut raw = connect(addr).await;
    let at = wait_for_step(&mut raw, &job.id, 9, TIMEOUT).await;
    assert!(at.step < UPDATES, "killed before the end (step {})", at.step);
    server.kill_hard();
    let (_server, again) = command.listen_on(&addr.to_string()).start();
    assert_eq!(again, addr);
    let mut raw = connect(addr).await;
    let done = wait_for_success(&mut raw, &job.id, TIMEOUT).await;
    assert_eq!(done.step, UPDATES);
    for cache in &caches {
        let cached = cache.join(format!("{}.pt", stored.sha256));
        assert_eq!(std::fs::read(&cached).ok(), std::fs::read(&module).ok(), "{} holds the model", cache.display());
    }

    // PyTorch trains the same module file on the same batches and noise seeds.
    spec.model_file = Some(stored);
    let run = run_with_pytorch(&spec, Some(&module));
    let exported = exported_tensors(&export(&mut raw, &job.id).await);
    let model = &run.trainer.model;
    let group = |prefix: &str, specs: &[rwp_core::model::TensorSpec]| -> Vec<Tensor> {
        specs.iter().map(|s| exported[&format!("{prefix}.{}", s.name)].shallow_clone()).collect()
    };
    let (weights, buffers) = (group("weights", model.params()), group("buffers", model.buffers()));
    let (momentum, history) = (group("momentum", model.params()), group("history", model.params()));
    assert!(model.params().iter().any(|p| p.name == "features.1.weight"), "parameters keep the module's names");
    assert_eq!(buffers.len(), 4, "two BatchNorm layers: running mean and variance each");
    assert_matches_pytorch(
        "service vs PyTorch",
        &[("w", &weights), ("b", &buffers), ("m", &momentum), ("F", &history)],
        &run.reference,
    );
    assert!(!run.initial_first_weight.equal(&weights[0]), "training moved the weights");
    let initial_buffers = rwp_core::model::Model::load_script(&module, model.input, model.classes, tch::Device::Cpu)
        .unwrap()
        .init(0, tch::Device::Cpu)
        .1;
    assert!(!initial_buffers[0].equal(&buffers[0]), "the clean passes moved the running statistics");
}

/// Uploads `bytes` announcing `announced` (a digest and size that may lie).
async fn raw_upload(url: &str, announced: &ModelFile, bytes: &[u8]) -> tonic::Status {
    let mut client = v1::job_service_client::JobServiceClient::connect(url.to_owned()).await.unwrap();
    let chunk = v1::ModelChunk {
        total_bytes: announced.size_bytes,
        sha256: announced.sha256.clone(),
        offset: 0,
        data: bytes.to_vec().into(),
    };
    client.upload_model(tokio_stream::iter([chunk])).await.expect_err("the upload is refused")
}

fn invalid(result: Result<impl std::fmt::Debug, SdkError>) -> String {
    match result {
        Err(SdkError::InvalidSpec(message)) => message,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_files_are_refused_with_a_reason() {
    let cluster = Cluster::start_configured(0, |c| c.max_model_file_bytes = 1 << 20, |_| {}).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name);
    let spec = {
        let mut s = small_job(1, Method::MArwp, 4);
        s.model = ModelKind::TorchScript;
        s
    };

    write_script_model("not-script", &path("random.pt"), 3, 10);
    let text = invalid(client.upload_model(&path("random.pt")).await);
    assert!(text.contains("not a loadable TorchScript module"), "{text}");

    write_script_model("no-params", &path("empty.pt"), 3, 10);
    let text = invalid(client.upload_model(&path("empty.pt")).await);
    assert!(text.contains("has no parameters"), "{text}");

    // Stored fine, but the built-in dataset has 3×16×16 images and 10 classes.
    write_script_model("cnn-bn", &path("gray.pt"), 1, 10);
    let text = invalid(client.submit_with_model_file("gray", &spec, &path("gray.pt")).await);
    assert!(text.contains("does not accept the dataset's input of shape [2, 3, 16, 16]"), "{text}");
    let five_classes = path("five.pt");
    write_script_model("cnn-bn", &five_classes, 3, 5);
    let text = invalid(client.submit_with_model_file("five", &spec, &five_classes).await);
    assert!(text.contains("the dataset needs logits of shape [2, 10]"), "{text}");

    // The bytes must be the ones announced.
    write_script_model("cnn-bn", &path("good.pt"), 3, 10);
    let good = std::fs::read(path("good.pt")).unwrap();
    let mut lying = ModelFile::of_path(&path("good.pt")).unwrap();
    lying.sha256 = rwp_spec::sha256_hex(b"something else");
    let status = raw_upload(&cluster.url(), &lying, &good).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("checksum mismatch"), "{}", status.message());
    let short = ModelFile { size_bytes: good.len() as u64 + 10, ..ModelFile::of_path(&path("good.pt")).unwrap() };
    let status = raw_upload(&cluster.url(), &short, &good).await;
    assert!(status.message().contains("ended after"), "{}", status.message());

    // Over the server's limit: refused before a byte is stored.
    let huge = ModelFile { sha256: rwp_spec::sha256_hex(b"x"), size_bytes: 2 << 20 };
    let status = raw_upload(&cluster.url(), &huge, b"x").await;
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(status.message().contains("max_model_file_bytes"), "{}", status.message());

    // A job naming a file the server does not have.
    let mut unknown = spec.clone();
    unknown.model_file = Some(ModelFile { sha256: rwp_spec::sha256_hex(b"never uploaded"), size_bytes: 14 });
    match client.submit("unknown", &unknown).await {
        Err(SdkError::NotFound(text)) => assert!(text.contains("upload it first"), "{text}"),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }

    // Nothing half-written is left; the good file can still be used.
    let models = cluster.data_dir().join("models");
    let left: Vec<_> = std::fs::read_dir(&models).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| n.to_string_lossy().ends_with(".pt")), "{left:?}");
    let job = client.submit_with_model_file("good", &spec, &path("good.pt")).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    client.cancel(&job.id).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_trains_every_trial_of_a_torchscript_model() {
    let cluster = Cluster::start(2).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let module = tmp.path().join("mlp.pt");
    write_script_model("mlp", &module, 3, 10);
    let mut spec = sigma_grid(&[0.003, 0.03], 1, 2, None);
    spec.base.model = ModelKind::TorchScript;
    spec.base.model_file = Some(ModelFile::of_path(&module).unwrap());
    spec.base.max_updates = Some(4);
    // Not uploaded yet: refused before any trial starts.
    match client.create_sweep("ts", &spec).await {
        Err(SdkError::NotFound(text)) => assert!(text.contains("upload it first"), "{text}"),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    client.upload_model(&module).await.unwrap();
    let created = client.create_sweep("ts", &spec).await.unwrap();
    let sweep = wait_for_sweep(&client, &created.id, TIMEOUT).await;
    assert_eq!(sweep.state, SweepState::Succeeded, "{:?}", sweep.error);
    for trial in &sweep.trials {
        let job = trial.job.as_ref().expect("every trial ran");
        assert_eq!((job.state, job.step), (JobState::Succeeded, 4), "trial {}: {:?}", trial.index, job.error);
        assert_eq!(job.spec.model_file, spec.base.model_file);
    }
    cluster.shutdown().await;
}
