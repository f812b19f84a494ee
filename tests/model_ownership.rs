//! Uploaded model files belong to their uploader. With a tokens file a user
//! may name only files it uploaded: another user's digest, and a wrong size
//! of its own, get exactly the answer an unknown digest gets (NOT_FOUND,
//! naming only what the caller gave), in jobs, sweeps and retried
//! submissions alike. Several users may upload the same bytes; an admin may
//! name any file; a server without a tokens file lets anyone name any file.

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::models::{client_as, mlp, owners, script_job};
use rwp_integration_tests::sweeps::sigma_grid;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::SubmitJobRequest;
use rwp_sdk::{Client, JobState, ModelFile, ModelKind, SdkError};
use tonic::Code;

fn not_found<T: std::fmt::Debug>(result: Result<T, SdkError>) -> String {
    match result {
        Err(SdkError::NotFound(message)) => message,
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

/// The answer to submitting a job that names `file`.
async fn submit_answer(client: &Client, file: &ModelFile) -> String {
    not_found(client.submit("named", &script_job(file)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_names_only_its_own_uploads_and_learns_nothing_of_others() {
    let tokens = owners();
    let cluster = Cluster::start_configured(0, |c| c.tokens_file = Some(tokens.path.clone()), |_| {}).await;
    let url = cluster.url();
    let (alice, bob, root) = (
        client_as(&url, Some(&tokens), "alice").await,
        client_as(&url, Some(&tokens), "bob").await,
        client_as(&url, Some(&tokens), "root").await,
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = mlp(tmp.path(), 10);
    let hers = alice.upload_model(&path).await.unwrap();
    let unknown = ModelFile { sha256: rwp_spec::sha256_hex(b"never uploaded"), size_bytes: hers.size_bytes };

    // Bob naming alice's file reads exactly as a digest nobody uploaded.
    let as_unknown = submit_answer(&bob, &unknown).await;
    assert!(as_unknown.contains("upload it first"), "{as_unknown}");
    let answer = submit_answer(&bob, &hers).await;
    assert_eq!(answer, as_unknown.replace(&unknown.sha256, &hers.sha256));
    // So does alice naming her own file with the wrong size: the real size never shows.
    let wrong = ModelFile { size_bytes: hers.size_bytes + 1, ..hers.clone() };
    let wrong_unknown = ModelFile { size_bytes: wrong.size_bytes, ..unknown.clone() };
    let answer = submit_answer(&alice, &wrong).await;
    assert_eq!(answer, submit_answer(&alice, &wrong_unknown).await.replace(&unknown.sha256, &hers.sha256));
    assert!(!answer.contains(&format!("{} bytes", hers.size_bytes)), "{answer}");
    // Sweeps go through the same check.
    let mut sweep = sigma_grid(&[0.01, 0.02], 1, 1, None);
    sweep.base.model = ModelKind::TorchScript;
    sweep.base.model_file = Some(hers.clone());
    let answer = not_found(bob.create_sweep("bob's sweep", &sweep).await);
    assert!(answer.contains(&hers.sha256) && answer.contains("upload it first"), "{answer}");

    // Alice and an admin may name it; bob may once he uploads the same bytes.
    let job = alice.submit("hers", &script_job(&hers)).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    let job = root.submit("admin's", &script_job(&hers)).await.unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(bob.upload_model(&path).await.unwrap(), hers);
    let job = bob.submit("his copy", &script_job(&hers)).await.unwrap();
    assert_eq!((job.owner.as_deref(), job.state), (Some("bob"), JobState::Running));
    for client in [&alice, &bob, &root] {
        for job in client.list().await.unwrap() {
            client.cancel(&job.id).await.unwrap();
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submission_is_checked_again() {
    let tokens = owners();
    let cluster = Cluster::start_configured(0, |c| c.tokens_file = Some(tokens.path.clone()), |_| {}).await;
    let alice = client_as(&cluster.url(), Some(&tokens), "alice").await;
    let tmp = tempfile::tempdir().unwrap();
    let file = alice.upload_model(&mlp(tmp.path(), 10)).await.unwrap();
    let mut stub = JobServiceClient::connect(cluster.url()).await.unwrap();
    let request = || {
        let mut request = tonic::Request::new(SubmitJobRequest {
            name: "retried".into(),
            spec: Some((&script_job(&file)).into()),
            request_id: Some("alice-1".into()),
            ..Default::default()
        });
        let bearer = format!("Bearer {}", tokens.token("alice").expose());
        request.metadata_mut().insert("authorization", bearer.parse().unwrap());
        request
    };
    let first = stub.submit_job(request()).await.unwrap().into_inner();
    assert_eq!(stub.submit_job(request()).await.unwrap().into_inner().id, first.id, "a retry finds the job");
    // Once alice gave the file up, even a retry of her own submission may not name it.
    alice.delete_model(&file.sha256).await.unwrap();
    let status = stub.submit_job(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("upload it first"), "{}", status.message());
    alice.cancel(&first.id).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_tokens_file_any_caller_names_any_stored_file() {
    let cluster = Cluster::start(0).await;
    let (uploader, other) = (client_as(&cluster.url(), None, "").await, client_as(&cluster.url(), None, "").await);
    let tmp = tempfile::tempdir().unwrap();
    let file = uploader.upload_model(&mlp(tmp.path(), 10)).await.unwrap();
    let job = other.submit("open", &script_job(&file)).await.unwrap();
    assert_eq!((job.owner, job.state), (None, JobState::Running));
    let models = other.list_models().await.unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(
        (models[0].sha256.as_str(), models[0].size_bytes, models[0].owner.as_ref()),
        (file.sha256.as_str(), file.size_bytes, None)
    );
    other.cancel(&job.id).await.unwrap();
    cluster.shutdown().await;
}
