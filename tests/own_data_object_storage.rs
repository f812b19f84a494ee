//! A job's own data in a bucket of a real S3-compatible server (moto, on
//! loopback): tar shards in a bucket train on 2 workers to the bits of the
//! local trainer reading the same shards from a local folder; wrong
//! credentials and a missing bucket refuse the submission, saying which;
//! the bucket going away mid-job pauses the job with the reason, and it
//! resumes to the same bits when the bucket is back. A TorchScript model
//! (whose sandbox reads no data: its worker passes the batches in) trains
//! from the bucket too, and one with fewer classes than the data's labels
//! is refused.

use std::time::Duration;

use rwp_core::trainer::LocalTrainer;
use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server_with, start_worker_in, wait_for_state, wait_for_step, wait_for_success,
    Proc,
};
use rwp_integration_tests::evaluations::EVERY_EPOCH;
use rwp_integration_tests::local_run::{assert_bit_identical_to, local_reference, trained_to_the_end};
use rwp_integration_tests::own_data::{image_folder_dataset, image_source, own_data_job, pack_shards};
use rwp_integration_tests::s3::{AccessKey, S3Server};
use rwp_integration_tests::write_script_model;
use rwp_proto::v1::{self, SubmitJobRequest};
use rwp_spec::{DatasetKind, ModelFile, ModelKind};

const TIMEOUT: Duration = Duration::from_secs(300);

/// Image shards packed into `shards/` and uploaded to `s3://datasets/imagenet/`.
fn shards_in_a_bucket(s3: &S3Server, root: &std::path::Path) -> (String, String) {
    let images = root.join("images");
    image_folder_dataset(&images);
    let shards = root.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let train = pack_shards(&images.join("train"), &shards.join("train"), 100);
    let test = pack_shards(&images.join("val"), &shards.join("val"), 50);
    s3.upload("datasets", &shards, "imagenet");
    (train, test)
}

fn worker_env(s3: &S3Server, key: &AccessKey, cache: &std::path::Path) -> Vec<(String, String)> {
    let mut env = s3.env(key);
    env.push(("RWP_DATA_CACHE_DIR".into(), cache.display().to_string()));
    env
}

/// Two workers with the bucket's credentials, each caching under `root/cache-N`.
fn bucket_workers(url: &str, s3: &S3Server, key: &AccessKey, root: &std::path::Path) -> Vec<Proc> {
    (0..2)
        .map(|i| {
            let env = worker_env(s3, key, &root.join(format!("cache-{i}")));
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            start_worker_in(url, &format!("w{i}"), &[], None, &env)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_shards_in_a_bucket_train_on_two_workers_to_the_bits_of_the_same_shards_on_disk() {
    let (tmp, dir) = data_dir();
    let s3 = S3Server::start();
    let (local_train, local_test) = shards_in_a_bucket(&s3, tmp.path());
    let key = s3.enforce_credentials();
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let url = format!("http://{addr}");
    let _workers = bucket_workers(&url, &s3, &key, tmp.path());
    let mut client = connect(addr).await;
    let in_bucket =
        image_source("s3://datasets/imagenet/train-{00..03}.tar", "s3://datasets/imagenet/val-{00..01}.tar");
    let spec = own_data_job(91, DatasetKind::TarShards, in_bucket, 10);
    let request = SubmitJobRequest { name: "bucket".into(), spec: Some((&spec).into()), ..Default::default() };
    let id = client.submit_job(request).await.expect("the job is accepted").into_inner().id;
    let done = wait_for_success(&mut client, &id, TIMEOUT).await;
    let summary = done.spec.and_then(|s| s.data).and_then(|d| d.summary).unwrap();
    assert_eq!((summary.classes, summary.train, summary.test), (5, 320, 80));
    let on_disk = own_data_job(91, DatasetKind::TarShards, image_source(&local_train, &local_test), 10);
    assert_bit_identical_to("shards in a bucket", &export(&mut client, &id).await, &local_reference(&on_disk), &spec);
    let cached = std::fs::read_dir(tmp.path().join("cache-0")).map(Iterator::count).unwrap_or(0);
    assert!(cached > 0, "the worker read the shards through its disk cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_a_missing_bucket_refuse_the_submission_saying_which() {
    let (tmp, dir) = data_dir();
    let s3 = S3Server::start();
    shards_in_a_bucket(&s3, tmp.path());
    let key = s3.enforce_credentials();
    let wrong = AccessKey { id: key.id.clone(), secret: "not-the-secret".into() };
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let env = worker_env(&s3, &wrong, &tmp.path().join("cache"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let worker = start_worker_in(&format!("http://{addr}"), "wrong", &[], None, &env);
    let mut client = connect(addr).await;
    let submit = |train: &str| {
        let spec =
            own_data_job(92, DatasetKind::TarShards, image_source(train, "s3://datasets/imagenet/val-{00..01}.tar"), 4);
        SubmitJobRequest { name: "refused".into(), spec: Some((&spec).into()), ..Default::default() }
    };
    let status = client.submit_job(submit("s3://datasets/imagenet/train-{00..03}.tar")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("data.train: cannot read s3://datasets/imagenet/train-00.tar")
            && status.message().contains("access to s3://datasets was refused: check the credentials"),
        "{}",
        status.message()
    );
    drop(worker);

    let env = worker_env(&s3, &key, &tmp.path().join("cache"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _worker = start_worker_in(&format!("http://{addr}"), "right", &[], None, &env);
    let status = client.submit_job(submit("s3://no-such-bucket/train-{00..03}.tar")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("the bucket s3://no-such-bucket does not exist"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torchscript_model_trains_from_a_bucket_and_one_with_too_few_classes_is_refused() {
    let (tmp, dir) = data_dir();
    let s3 = S3Server::start();
    let (local_train, local_test) = shards_in_a_bucket(&s3, tmp.path());
    let key = s3.enforce_credentials();
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let url = format!("http://{addr}");
    let _workers = bucket_workers(&url, &s3, &key, tmp.path());
    let client = rwp_sdk::Client::connect(url.clone()).await.unwrap();
    let in_bucket =
        image_source("s3://datasets/imagenet/train-{00..03}.tar", "s3://datasets/imagenet/val-{00..01}.tar");
    let mut spec = own_data_job(92, DatasetKind::TarShards, in_bucket, 6);
    spec.model = ModelKind::TorchScript;

    // The data's labels go up to 4: a module with 3 logits cannot train on them.
    let three = tmp.path().join("cnn-3.pt");
    write_script_model("cnn-bn", &three, 3, 3);
    match client.submit_with_model_file("three-classes", &spec, &three).await {
        Err(rwp_sdk::SdkError::InvalidSpec(text)) => {
            assert!(text.contains("returns Float [2, 3]; the dataset needs logits of shape [2, 5]"), "{text}");
        }
        other => panic!("a module with 3 classes for 5 must be refused: {other:?}"),
    }

    let module = tmp.path().join("cnn-5.pt");
    write_script_model("cnn-bn", &module, 3, 5);
    let job = client.submit_with_model_file("script-from-bucket", &spec, &module).await.unwrap();
    let mut raw = connect(addr).await;
    let done = wait_for_success(&mut raw, &job.id, TIMEOUT).await;
    assert_eq!(done.step, 6);
    let mut on_disk = own_data_job(92, DatasetKind::TarShards, image_source(&local_train, &local_test), 6);
    on_disk.model = ModelKind::TorchScript;
    on_disk.model_file = Some(ModelFile::of_path(&module).unwrap());
    let local = trained_to_the_end(LocalTrainer::with_model_file(on_disk, tch::Device::Cpu, Some(&module)).unwrap());
    assert_bit_identical_to(
        "a TorchScript model on shards in a bucket",
        &export(&mut raw, &job.id).await,
        &local,
        &spec,
    );
}

#[test]
fn dataset_inspect_reports_an_image_folder_in_a_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start();
    let images = tmp.path().join("images");
    image_folder_dataset(&images);
    s3.upload("datasets", &images, "folders");
    let key = s3.enforce_credentials();
    let out = std::process::Command::new(rwp_integration_tests::binary("rwp"))
        .args(["dataset", "inspect", "s3://datasets/folders", "--image-size", "16"])
        .envs(worker_env(&s3, &key, &tmp.path().join("cache")))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "kind        image-folder");
    assert_eq!(lines[1], "classes     5 (class-0, class-1, class-2, class-3, class-4)");
    assert_eq!(lines[2], "train       320 samples in 320 files  s3://datasets/folders/train");
    assert_eq!(lines[3], "test        80 samples in 80 files  s3://datasets/folders/val");
    assert!(lines[4].starts_with("input       3 × 16 × 16 (the first training image is "), "{text}");
    assert_eq!(lines[5], "unreadable  none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_going_away_mid_job_pauses_it_and_it_resumes_to_the_same_bits() {
    let (tmp, dir) = data_dir();
    let s3 = S3Server::start();
    let (local_train, local_test) = shards_in_a_bucket(&s3, tmp.path());
    let mut flags = EVERY_EPOCH.to_vec();
    flags.extend(["--checkpoint-retry-ms", "500"]);
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", &flags);
    let url = format!("http://{addr}");
    // No disk cache: every sample is read from the bucket, so its outage shows.
    let anyone = AccessKey { id: "anyone".into(), secret: "anything".into() };
    let mut env = s3.env(&anyone);
    env.push(("RWP_DATA_CACHE_BYTES".into(), "0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let _workers: Vec<_> = (0..2).map(|i| start_worker_in(&url, &format!("w{i}"), &[], None, &env)).collect();
    let mut client = connect(addr).await;
    let in_bucket =
        image_source("s3://datasets/imagenet/train-{00..03}.tar", "s3://datasets/imagenet/val-{00..01}.tar");
    let mut spec = own_data_job(93, DatasetKind::TarShards, in_bucket, 20);
    spec.epochs = 4;
    let request = SubmitJobRequest { name: "outage".into(), spec: Some((&spec).into()), ..Default::default() };
    let id = client.submit_job(request).await.unwrap().into_inner().id;
    wait_for_step(&mut client, &id, 3, TIMEOUT).await;

    let port = s3.stop();
    let paused = wait_for_state(&mut client, &id, v1::JobState::Paused, TIMEOUT).await;
    assert!(
        paused.error.starts_with("paused: the job's data cannot be read") && paused.error.contains("cannot be reached"),
        "{}",
        paused.error
    );
    assert!(paused.step < 20, "the job stopped training: {paused:?}");

    let s3 = S3Server::start_on(port);
    s3.upload("datasets", &tmp.path().join("shards"), "imagenet");
    let done = wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_eq!(done.step, 20);
    let mut on_disk = own_data_job(93, DatasetKind::TarShards, image_source(&local_train, &local_test), 20);
    on_disk.epochs = 4;
    assert_bit_identical_to("after the outage", &export(&mut client, &id).await, &local_reference(&on_disk), &spec);
}
