//! A job on its owner's tensor files: a worker inspects them at submission
//! (the server never reads a job's data), and the job trains on 3 workers
//! to the local trainer's bits, evaluations included. A problem in the
//! data refuses the submission, naming the file and the rule.

use std::time::Duration;

use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server_with, start_worker, submit, wait_for_success,
};
use rwp_integration_tests::evaluations::{assert_evaluations_match, job_evaluations, EVERY_EPOCH};
use rwp_integration_tests::local_run::assert_bit_identical;
use rwp_integration_tests::own_data::{own_data_job, tensors_dataset, write_safetensors};
use rwp_proto::v1::SubmitJobRequest;
use rwp_spec::DatasetKind;

const TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tensors_job_on_three_workers_matches_the_local_trainer() {
    let (tmp, dir) = data_dir();
    let data = tensors_dataset(&tmp.path().join("tensors"));
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let _workers: Vec<_> = (0..3).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    // 320 training samples: 5 updates of 64 an epoch.
    let spec = own_data_job(71, DatasetKind::Tensors, data, 10);
    let id = submit(&mut client, "tensors", &spec).await;
    let job = wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_eq!((job.step, job.updates_per_epoch), (10, 5));
    let summary = job.spec.and_then(|s| s.data).and_then(|d| d.summary).expect("the server keeps the summary");
    assert_eq!((summary.classes, summary.train, summary.test, summary.shape), (5, 320, 120, vec![3, 16, 16]));
    assert_bit_identical("tensors, 3 workers", &export(&mut client, &id).await, &spec);
    assert_evaluations_match("tensors, 3 workers", &job_evaluations(&mut client, &id).await, &spec, &[5, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_problem_in_the_data_refuses_the_submission_naming_it() {
    let (tmp, dir) = data_dir();
    let folder = tmp.path().join("tensors");
    let data = tensors_dataset(&folder);
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", EVERY_EPOCH);
    let _worker = start_worker(addr, "w0");
    let mut client = connect(addr).await;
    let refused = |spec: &rwp_spec::JobSpec| SubmitJobRequest {
        name: "bad".into(),
        spec: Some(spec.into()),
        request_id: None,
        ..Default::default()
    };

    let bad_labels = folder.join("bad-test.safetensors");
    write_safetensors(
        &bad_labels,
        &[
            ("inputs", "U8", vec![2, 3, 16, 16], vec![0; 2 * 3 * 16 * 16]),
            ("labels", "I64", vec![2], [0i64, -1].iter().flat_map(|l| l.to_le_bytes()).collect()),
        ],
    );
    let mut spec = own_data_job(72, DatasetKind::Tensors, data.clone(), 4);
    spec.data.as_mut().unwrap().test = bad_labels.display().to_string();
    let status = client.submit_job(refused(&spec)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let message = status.message();
    assert!(message.contains("data.test:") && message.contains("bad-test.safetensors"), "{message}");
    assert!(message.contains("has label -1 at row 1"), "{message}");

    let mut spec = own_data_job(72, DatasetKind::Tensors, data.clone(), 4);
    spec.data.as_mut().unwrap().train = folder.join("missing-{0..1}.safetensors").display().to_string();
    let message = client.submit_job(refused(&spec)).await.unwrap_err().message().to_owned();
    assert!(message.contains("data.train: cannot read") && message.contains("missing-0.safetensors"), "{message}");

    let mut spec = own_data_job(72, DatasetKind::Tensors, data, 4);
    let index = rwp_data::DataIndex::build(DatasetKind::Tensors, spec.data.as_ref().unwrap()).unwrap();
    spec.data.as_mut().unwrap().summary = Some(index.summary());
    let message = client.submit_job(refused(&spec)).await.unwrap_err().message().to_owned();
    assert!(message.contains("data.summary is written by the server"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_workers_a_submission_is_refused_when_no_one_inspects_its_data() {
    let (tmp, dir) = data_dir();
    let data = tensors_dataset(&tmp.path().join("tensors"));
    let mut flags = EVERY_EPOCH.to_vec();
    flags.extend(["--data-inspection-timeout-ms", "1000"]);
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", &flags);
    let mut client = connect(addr).await;
    let spec = own_data_job(73, DatasetKind::Tensors, data, 4);
    let request = SubmitJobRequest { name: "alone".into(), spec: Some((&spec).into()), ..Default::default() };
    let status = client.submit_job(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no worker inspected the data within 1000 ms"), "{}", status.message());
}
