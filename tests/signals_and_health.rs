//! Operational behaviour of the real binaries: SIGTERM drains the server
//! (exit 0, every job checkpointed, a restart continues to the same weights),
//! SIGTERM stops a worker cleanly, the health service reports each service,
//! reflection lists them, and bf16 gradients train (without bit-exactness).

use std::collections::HashMap;
use std::time::Duration;

use rwp_core::trainer::LocalTrainer;
use rwp_integration_tests::cluster::{
    connect, data_dir, export, start_server, start_worker, submit, wait_for_step, wait_for_success,
};
use rwp_spec::{GradientEncoding, JobSpec, Method};
use tch::{Device, Tensor};
use tokio_stream::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(240);

fn spec(seed: u64) -> JobSpec {
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.batch_size = 64;
    spec.epochs = 2;
    spec.max_updates = Some(16);
    spec.seed = seed;
    spec
}

fn tensors(bytes: &[u8]) -> HashMap<String, Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    std::fs::write(&path, bytes).unwrap();
    Tensor::read_safetensors(&path).unwrap().into_iter().collect()
}

fn local(spec: &JobSpec) -> LocalTrainer {
    tch::set_num_threads(1);
    let mut trainer = LocalTrainer::new(spec.clone(), Device::Cpu).unwrap();
    while !trainer.is_done() {
        trainer.step().unwrap();
    }
    trainer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_server_and_a_restart_continues_bit_identically() {
    let (_tmp, dir) = data_dir();
    let (mut server, addr) = start_server(&dir, "127.0.0.1:0");
    let _worker = start_worker(addr, "w1");
    let mut client = connect(addr).await;
    let spec = spec(11);
    let id = submit(&mut client, "drained", &spec).await;
    let at = wait_for_step(&mut client, &id, 3, TIMEOUT).await;
    assert!(at.step < 16);
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0), "the server drains and exits 0");

    let (_server, _) = start_server(&dir, &addr.to_string());
    let mut client = connect(addr).await;
    wait_for_success(&mut client, &id, TIMEOUT).await;
    let exported = tensors(&export(&mut client, &id).await);
    let trainer = local(&spec);
    for (spec, ours) in trainer.model.params().iter().zip(trainer.state.weights()) {
        assert!(
            exported[&format!("weights.{}", spec.name)].equal(ours),
            "{} differs after a drained restart",
            spec.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_worker_cleanly() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let mut worker = start_worker(addr, "w1");
    let mut client = connect(addr).await;
    let id = submit(&mut client, "worker-stops", &spec(12)).await;
    wait_for_step(&mut client, &id, 2, TIMEOUT).await;
    worker.signal("TERM");
    assert_eq!(worker.wait_exit(Duration::from_secs(30)), Some(0), "the worker exits 0 after SIGTERM");
    // Its work is not lost: another worker finishes the job.
    let _next = start_worker(addr, "w2");
    wait_for_success(&mut client, &id, TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_each_service_and_reflection_lists_them() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let _ = connect(addr).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["rwp.v1.WorkerService", "rwp.v1.JobService"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(status.status, ServingStatus::Serving as i32, "{service}");
    }
    let unknown = health.check(HealthCheckRequest { service: "rwp.v1.Nope".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("a list of services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["rwp.v1.WorkerService", "rwp.v1.JobService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == service), "{service} not in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bf16_gradients_train_close_to_but_not_exactly_like_f32() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let _worker = start_worker(addr, "w1");
    let mut client = connect(addr).await;
    let mut bf16 = spec(13);
    bf16.max_updates = Some(8);
    bf16.gradient_encoding = GradientEncoding::Bf16;
    let id = submit(&mut client, "bf16", &bf16).await;
    wait_for_success(&mut client, &id, TIMEOUT).await;
    let exported = tensors(&export(&mut client, &id).await);
    let mut f32_spec = bf16.clone();
    f32_spec.gradient_encoding = GradientEncoding::F32;
    let trainer = local(&f32_spec);
    let (mut identical, mut worst) = (true, 0.0f64);
    for (spec, ours) in trainer.model.params().iter().zip(trainer.state.weights()) {
        let theirs = &exported[&format!("weights.{}", spec.name)];
        identical &= theirs.equal(ours);
        let rel = (theirs - ours).norm().double_value(&[]) / (ours.norm().double_value(&[]) + 1e-12);
        worst = worst.max(rel);
    }
    assert!(!identical, "bf16 gradients cannot be bit-identical to f32");
    assert!(worst < 0.05, "bf16 run drifted {worst:.4} (relative) from the f32 run");
}
