//! Inspecting a job's own data through the service, without starting a job
//! (`InspectData`: the Rust SDK's `inspect_data`, `rwp dataset inspect
//! --on-workers`): a worker lists the data (and, when asked, decodes every
//! image) and its report is the one this machine's own inspection gives;
//! the first problem comes back as an invalid spec naming it.

use std::path::Path;
use std::process::{Command, Output};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{data_dir, start_server_with, start_worker};
use rwp_integration_tests::own_data::{corrupt_an_image, image_folder_dataset};
use rwp_sdk::{Client, SdkError};
use rwp_spec::{DataReport, DatasetKind};

/// This machine's own inspection (`rwp dataset inspect --json`), with its exit status.
fn inspected_here(images: &Path, decode: bool) -> (DataReport, Option<i32>) {
    let mut command = Command::new(binary("rwp"));
    command.args(["dataset", "inspect", &images.display().to_string(), "--image-size", "16", "--json"]);
    if !decode {
        command.arg("--no-decode");
    }
    let out = command.output().unwrap();
    (serde_json::from_slice(&out.stdout).unwrap(), out.status.code())
}

fn rwp(url: &str, args: &[&str]) -> Output {
    Command::new(binary("rwp")).args(["--server", url]).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_inspects_a_folder_as_this_machine_does_and_names_the_first_problem() {
    let (tmp, dir) = data_dir();
    let images = tmp.path().join("images");
    let mut data = image_folder_dataset(&images);
    data.image_size = 16;
    let corrupt = corrupt_an_image(&images.join("train"));
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", &[]);
    let _worker = start_worker(addr, "inspector");
    let url = format!("http://{addr}");
    let client = Client::connect(url.clone()).await.unwrap();

    // Listed only: the worker's report is this machine's, nothing unreadable found.
    let listed = client.inspect_data(DatasetKind::ImageFolder, &data, false).await.unwrap();
    assert_eq!(listed, inspected_here(&images, false).0);
    assert_eq!(listed.class_names, ["class-0", "class-1", "class-2", "class-3", "class-4"]);
    let splits: Vec<_> = listed.splits.iter().map(|s| (s.field.as_str(), s.samples, s.files)).collect();
    assert_eq!(splits, [("data.train", 320, 320), ("data.test", 80, 80)]);
    assert_eq!((listed.shape.as_slice(), listed.decoded, listed.unreadable.len()), (&[3, 16, 16][..], false, 0));

    // Decoded: the corrupt image is named, as here.
    let decoded = client.inspect_data(DatasetKind::ImageFolder, &data, true).await.unwrap();
    let (here, status) = inspected_here(&images, true);
    assert_eq!((decoded.clone(), status), (here, Some(1)));
    assert_eq!(decoded.unreadable.len(), 1, "{:?}", decoded.unreadable);
    assert_eq!(decoded.unreadable[0].sample, corrupt.display().to_string());
    assert_eq!(decoded.summary, listed.summary, "decoding does not change what the job is planned from");

    // The CLI asks the service for a job file's data; exit status 1 for the unreadable image.
    let job = tmp.path().join("job.toml");
    let job_file = format!(
        "method = \"sgd\"\nmodel = \"small-cnn\"\ndataset = \"image-folder\"\n\n[data]\ntrain = \"{}\"\ntest = \
         \"{}\"\nimage_size = 16\n",
        data.train, data.test
    );
    std::fs::write(&job, job_file).unwrap();
    let out = rwp(&url, &["dataset", "inspect", "--job", job.to_str().unwrap(), "--on-workers"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("classes     5 (class-0, class-1, class-2, class-3, class-4)"), "{text}");
    assert!(text.contains("unreadable  1:"), "{text}");
    assert!(text.contains(&corrupt.display().to_string()), "{text}");
    let out = rwp(&url, &["dataset", "inspect", images.to_str().unwrap(), "--on-workers"]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{error}");
    assert!(error.contains("--on-workers needs --job FILE"), "{error}");

    // The first problem, named; a built-in dataset is not inspected.
    std::fs::remove_dir_all(images.join("train").join("class-3")).unwrap();
    std::fs::create_dir(images.join("train").join("class-3")).unwrap();
    match client.inspect_data(DatasetKind::ImageFolder, &data, false).await {
        Err(SdkError::InvalidSpec(text)) => assert!(text.contains("data.train") && text.contains("class-3"), "{text}"),
        other => panic!("an empty class folder must be named: {other:?}"),
    }
    match client.inspect_data(DatasetKind::Cifar10, &data, false).await {
        Err(SdkError::InvalidSpec(text)) => {
            assert!(text.contains("only image-folder, tar-shards and tensors"), "{text}")
        }
        other => panic!("a built-in dataset is not inspected: {other:?}"),
    }
}
