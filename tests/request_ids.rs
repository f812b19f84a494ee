//! A client's request id makes SubmitJob and CreateSweep safe to retry: a
//! second request with the same id from the same owner returns what the
//! first created instead of creating another, also after the server was
//! killed and started again on its data directory (the mapping is in its
//! database). Another id creates another; a reused id with another spec is
//! refused.

use rwp_integration_tests::cluster::{connect, data_dir, ServerCommand};
use rwp_integration_tests::sweeps::{sigma_grid, SWEEP_SERVER_FLAGS};
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::{CreateSweepRequest, ListJobsRequest, ListSweepsRequest, SubmitJobRequest};
use rwp_sdk::{JobSpecBuilder, Method};
use tonic::transport::Channel;
use tonic::Code;

fn submit_request(name: &str, epochs: u32, request_id: &str) -> SubmitJobRequest {
    let spec = JobSpecBuilder::new(Method::Sgd).epochs(epochs).batch_size(128).build().unwrap();
    SubmitJobRequest {
        name: name.into(),
        spec: Some((&spec).into()),
        request_id: Some(request_id.into()),
        ..Default::default()
    }
}

fn sweep_request(request_id: &str) -> CreateSweepRequest {
    let spec = sigma_grid(&[0.01, 0.02], 1, 1, None);
    CreateSweepRequest { name: "retried".into(), spec: Some((&spec).into()), request_id: Some(request_id.into()) }
}

async fn counts(stub: &mut JobServiceClient<Channel>) -> (usize, usize) {
    let jobs = stub.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    let sweeps = stub.list_sweeps(ListSweepsRequest {}).await.unwrap().into_inner().sweeps;
    (jobs.iter().filter(|j| j.sweep_id.is_empty()).count(), sweeps.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submission_returns_the_first_job_even_after_a_restart() {
    let (_tmp, dir) = data_dir();
    let command = ServerCommand::new(&dir, "127.0.0.1:0").flags(SWEEP_SERVER_FLAGS);
    let (mut server, addr) = command.clone().start();
    let mut stub = connect(addr).await;

    // No workers: jobs stay running.
    let first = stub.submit_job(submit_request("once", 1, "req-1")).await.unwrap().into_inner();
    let again = stub.submit_job(submit_request("once", 1, "req-1")).await.unwrap().into_inner();
    assert_eq!(again.id, first.id, "the retry returns the job the first request started");
    let sweep = stub.create_sweep(sweep_request("sweep-1")).await.unwrap().into_inner();
    let sweep_again = stub.create_sweep(sweep_request("sweep-1")).await.unwrap().into_inner();
    assert_eq!(sweep_again.id, sweep.id);
    assert_eq!(counts(&mut stub).await, (1, 1), "one job and one sweep");

    // Another id is another job; the same id with another spec is refused.
    let other = stub.submit_job(submit_request("once", 1, "req-2")).await.unwrap().into_inner();
    assert_ne!(other.id, first.id);
    let err = stub.submit_job(submit_request("once", 2, "req-1")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(&first.id), "{err:?}");
    let err = stub.submit_job(submit_request("once", 1, &"r".repeat(129))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("request_id"), "{err:?}");
    assert_eq!(counts(&mut stub).await, (2, 1));

    server.kill_hard();
    let (_server, addr) = command.listen_on(&addr.to_string()).start();
    let mut stub = connect(addr).await;
    let after = stub.submit_job(submit_request("once", 1, "req-1")).await.unwrap().into_inner();
    assert_eq!(after.id, first.id, "the id still names its job after a restart");
    let sweep_after = stub.create_sweep(sweep_request("sweep-1")).await.unwrap().into_inner();
    assert_eq!(sweep_after.id, sweep.id, "and its sweep");
    assert_eq!(counts(&mut stub).await, (2, 1), "nothing new was created");
}
