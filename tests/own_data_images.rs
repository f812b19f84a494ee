//! Jobs on their owners' images, written by the test: an image folder on 3
//! workers and tar shards packed from it on 2 workers train to the local
//! trainer's bits (the shards hold the folder's samples in its order, so
//! they train to the same bits as the folder); a corrupt image fails the
//! job naming it, or is skipped on every worker alike; `rwp dataset
//! inspect` reports the folder, the corrupt image among it.

use std::process::Command;
use std::time::Duration;

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server_with, start_worker, submit, wait_for_state, wait_for_success,
};
use rwp_integration_tests::evaluations::{assert_evaluations_match, job_evaluations, EVERY_EPOCH};
use rwp_integration_tests::local_run::{assert_bit_identical, assert_bit_identical_to, local_reference};
use rwp_integration_tests::own_data::{
    corrupt_an_image, image_folder_dataset, image_source, own_data_job, pack_shards,
};
use rwp_proto::v1;
use rwp_spec::{BadSamples, DatasetKind};

const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_folder_on_three_workers_matches_the_local_trainer() {
    let (tmp, dir) = data_dir();
    let data = image_folder_dataset(&tmp.path().join("images"));
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let _workers: Vec<_> = (0..3).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    // 320 training images: 5 updates of 64 an epoch.
    let spec = own_data_job(81, DatasetKind::ImageFolder, data, 10);
    let id = submit(&mut client, "images", &spec).await;
    let done = wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_eq!((done.step, done.updates_per_epoch), (10, 5));
    let summary = done.spec.and_then(|s| s.data).and_then(|d| d.summary).unwrap();
    assert_eq!((summary.classes, summary.train, summary.test, summary.shape), (5, 320, 80, vec![3, 16, 16]));
    assert_bit_identical("image folder, 3 workers", &export(&mut client, &id).await, &spec);
    assert_evaluations_match("image folder, 3 workers", &job_evaluations(&mut client, &id).await, &spec, &[5, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_shards_of_the_folder_train_to_the_folders_bits_on_two_workers() {
    let (tmp, dir) = data_dir();
    let images = tmp.path().join("images");
    let folder = image_folder_dataset(&images);
    let shards = tmp.path().join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let train = pack_shards(&images.join("train"), &shards.join("train"), 100);
    let test = pack_shards(&images.join("val"), &shards.join("val"), 50);
    assert!(train.ends_with("train-{00..03}.tar"), "{train}");
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let _workers: Vec<_> = (0..2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let spec = own_data_job(82, DatasetKind::TarShards, image_source(&train, &test), 10);
    let id = submit(&mut client, "shards", &spec).await;
    wait_for_success(&mut client, &id, TIMEOUT).await;
    let exported = export(&mut client, &id).await;
    assert_bit_identical("tar shards, 2 workers", &exported, &spec);
    let from_folder = own_data_job(82, DatasetKind::ImageFolder, folder, 10);
    assert_bit_identical_to("tar shards against the folder", &exported, &local_reference(&from_folder), &spec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_image_fails_the_job_naming_it_or_is_skipped_alike_everywhere() {
    let (tmp, dir) = data_dir();
    let images = tmp.path().join("images");
    let data = image_folder_dataset(&images);
    let corrupt = corrupt_an_image(&images.join("train"));
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let _workers: Vec<_> = (0..2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;

    let failing = own_data_job(83, DatasetKind::ImageFolder, data.clone(), 10);
    let id = submit(&mut client, "fails", &failing).await;
    let failed = wait_for_state(&mut client, &id, v1::JobState::Failed, TIMEOUT).await;
    let error = failed.error;
    assert!(error.contains("failed 3 times"), "{error}");
    assert!(
        error.contains(&format!("data.train: sample {} cannot be used", corrupt.display())),
        "the error names the image: {error}"
    );

    // Under `skip`, a corrupt test image too: left out of every evaluation.
    let corrupt_test = corrupt_an_image(&images.join("val"));
    let mut skipping = data;
    skipping.bad_samples = BadSamples::Skip;
    let spec = own_data_job(83, DatasetKind::ImageFolder, skipping, 10);
    let id = submit(&mut client, "skips", &spec).await;
    let done = wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_eq!(done.step, 10);
    assert_bit_identical("a skipped image", &export(&mut client, &id).await, &spec);
    assert_evaluations_match("a skipped image", &job_evaluations(&mut client, &id).await, &spec, &[5, 10]);
    // 320 images in batches of 64: each of the two streams (clean,
    // perturbed) reads the corrupt training image once an epoch, 2 epochs;
    // and each of the 2 evaluations reads the corrupt test image once.
    assert_eq!(done.skipped_samples, 2 * 2 + 2, "{:?}", done.skipped_sample_examples);
    let named: Vec<&str> = done.skipped_sample_examples.iter().map(String::as_str).collect();
    assert_eq!(named.len(), 2, "{named:?}");
    for (file, split) in [(&corrupt, "data.train"), (&corrupt_test, "data.test")] {
        let want = format!("{split}: sample {} cannot be used", file.display());
        assert!(named.iter().any(|n| n.contains(&want)), "{want} not in {named:?}");
    }
    let logs = Command::new(binary("rwp")).args(["--server", &format!("http://{addr}"), "logs", &id]).output().unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    let skipped_lines: Vec<&str> = logs.lines().filter(|l| l.contains("sample-skipped")).collect();
    assert_eq!(skipped_lines.len(), 2, "each sample is logged once:\n{logs}");
}

#[test]
fn the_local_trainer_counts_the_samples_it_leaves_out() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder_dataset(&images);
    let corrupt = corrupt_an_image(&images.join("train"));
    let train = images.join("train").display().to_string();
    let test = images.join("val").display().to_string();
    let out = Command::new(binary("rwp-train"))
        .args(["--dataset", "image-folder", "--train", &train, "--test", &test, "--image-size", "16"])
        .args(["--method", "m-arwp", "--batch-size", "64", "--epochs", "1", "--threads", "1"])
        .args(["--bad-samples", "skip"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // One epoch of 320 images in batches of 64: the clean and the perturbed
    // stream each read the corrupt image once.
    let want = format!(
        "rwp-train: 2 times a sample was left out of a training batch (bad_samples = skip); 1 distinct, the first: \
         data.train: sample {} cannot be used",
        corrupt.display()
    );
    assert!(stderr.contains(&want), "{want}\nnot in:\n{stderr}");
}

#[test]
fn dataset_inspect_reports_a_folder_and_its_unreadable_images() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    image_folder_dataset(&images);
    let corrupt = corrupt_an_image(&images.join("train"));
    let inspect = |args: &[&str]| Command::new(binary("rwp")).args(["dataset", "inspect"]).args(args).output().unwrap();
    let out = inspect(&[&images.display().to_string(), "--image-size", "16"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "an unreadable image: exit status 1\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "kind        image-folder");
    assert_eq!(lines[1], "classes     5 (class-0, class-1, class-2, class-3, class-4)");
    assert!(lines[2].starts_with("train       320 samples in 320 files  "), "{text}");
    assert!(lines[3].starts_with("test        80 samples in 80 files  ") && lines[3].ends_with("val"), "{text}");
    assert!(lines[4].starts_with("input       3 × 16 × 16 (the first training image is "), "{text}");
    assert_eq!(lines[5], "unreadable  1:");
    assert!(lines[6].starts_with(&format!("  {}: ", corrupt.display())), "{text}");
    assert!(lines[7].starts_with("digest      "), "{text}");

    let out = inspect(&[&images.display().to_string(), "--json", "--no-decode"]);
    assert_eq!(out.status.code(), Some(0), "listed only: nothing found unreadable");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["kind"], "image-folder");
    assert_eq!(json["summary"]["train"], 320);
    assert_eq!(json["decoded"], false);

    let out = inspect(&[&tmp.path().join("nothing").display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let error = String::from_utf8(out.stderr).unwrap();
    assert!(error.contains("location: cannot read") && error.contains("no such folder"), "{error}");
}
