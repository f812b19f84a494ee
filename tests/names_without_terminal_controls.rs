//! A job or sweep name with a terminal control (ESC, CR, LF, NUL, a C1
//! control, a bidirectional override or isolate) is refused with
//! INVALID_ARGUMENT naming the field and the character's code point, so no
//! record can later drive the terminal of whoever lists it.

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::sweeps::sigma_grid;
use rwp_proto::v1::job_service_client::JobServiceClient;
use rwp_proto::v1::{CreateSweepRequest, ListJobsRequest, ListSweepsRequest, SubmitJobRequest};
use rwp_sdk::{JobSpecBuilder, Method};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_terminal_controls_are_invalid_arguments() {
    let cluster = Cluster::start_configured(0, |_| {}, |_| {}).await;
    let mut stub = JobServiceClient::connect(cluster.url()).await.unwrap();
    let job = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).max_updates(3).build().unwrap();
    for (name, code) in [
        ("x\u{1b}[2J", "U+001B"),
        ("x\r", "U+000D"),
        ("x\ny", "U+000A"),
        ("\0", "U+0000"),
        ("x\u{9b}", "U+009B"),
        ("x\u{202e}gpj", "U+202E"),
        ("\u{2068}x", "U+2068"),
    ] {
        let request =
            SubmitJobRequest { name: name.into(), spec: Some((&job).into()), request_id: None, ..Default::default() };
        let err = stub.submit_job(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
        assert!(err.message().contains("name: ") && err.message().contains(code), "{name:?}: {err:?}");

        let sweep = sigma_grid(&[0.01], 1, 1, None);
        let request = CreateSweepRequest { name: name.into(), spec: Some((&sweep).into()), request_id: None };
        let err = stub.create_sweep(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
        assert!(err.message().contains("sweep name") && err.message().contains(code), "{name:?}: {err:?}");
    }
    assert!(stub.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner().jobs.is_empty());
    assert!(stub.list_sweeps(ListSweepsRequest {}).await.unwrap().into_inner().sweeps.is_empty());
    // Printable Unicode is fine.
    let request = SubmitJobRequest {
        name: "σ-grid ünïcode".into(),
        spec: Some((&job).into()),
        request_id: None,
        ..Default::default()
    };
    stub.submit_job(request).await.unwrap();
    cluster.shutdown().await;
}
