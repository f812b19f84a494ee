//! The SDK against a real server and workers in this process: every call,
//! `watch` delivering every step in order and ending with the terminal state,
//! and a cancel while watching.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rwp_integration_tests::in_process::Cluster;
use rwp_sdk::{Client, ClientConfig, JobEvent, JobSpecBuilder, JobState, Method, SdkError};
use tch::Tensor;
use tokio_stream::StreamExt;

/// Collects a watch until its terminal event (or fails after `timeout`).
async fn collect(client: &Client, job: &str, from: u64) -> Vec<JobEvent> {
    let mut stream = Box::pin(client.watch(job, from).await.unwrap());
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while let Some(event) = tokio::time::timeout_at(deadline.into(), stream.next()).await.expect("watch ends in time") {
        events.push(event.unwrap());
    }
    events
}

fn steps(events: &[JobEvent]) -> Vec<u64> {
    events.iter().filter_map(|e| if let JobEvent::Step(m) = e { Some(m.step) } else { None }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_the_sdk() {
    let cluster = Cluster::start(2).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    assert!(client.list().await.unwrap().is_empty());

    // batch 128 on 1,000 images: 7 updates per epoch, 2 epochs.
    let spec = JobSpecBuilder::new(Method::MArwp).epochs(2).batch_size(128).seed(3).build().unwrap();
    let job = client.submit("sdk-all-calls", &spec).await.unwrap();
    assert_eq!((job.state, job.step, job.total_updates, job.updates_per_epoch), (JobState::Running, 0, 14, 7));
    assert_eq!(job.spec, spec);

    let events = collect(&client, &job.id, 0).await;
    assert_eq!(steps(&events), (1..=14).collect::<Vec<u64>>(), "every step, numbered from 1, once, in order");
    let evaluations: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| if let JobEvent::Evaluation(e) = e { Some((e.step, e.epoch)) } else { None })
        .collect();
    assert_eq!(evaluations, vec![(7, 1), (14, 2)], "an evaluation after each epoch");
    let Some(JobEvent::State(last)) = events.last() else { panic!("the last event is the terminal state") };
    assert_eq!((last.state, last.step), (JobState::Succeeded, 14));
    let position = |step| events.iter().position(|e| matches!(e, JobEvent::Step(m) if m.step == step)).unwrap();
    let eval_position = events.iter().position(|e| matches!(e, JobEvent::Evaluation(e) if e.step == 7)).unwrap();
    // Workers evaluate while training goes on: the evaluation of version 7
    // comes after the step that made it, maybe after later ones too.
    assert!(position(7) < eval_position, "the evaluation follows its epoch's last step");

    // Replaying after the first 10 updates.
    let tail = collect(&client, &job.id, 10).await;
    assert_eq!(steps(&tail), vec![11, 12, 13, 14]);

    let got = client.get(&job.id).await.unwrap();
    assert_eq!(got.state, JobState::Succeeded);
    let accuracy = got.last_evaluation.as_ref().unwrap().test_accuracy;
    assert!(accuracy > 0.1, "trained: test accuracy {accuracy}");
    assert_eq!(client.list().await.unwrap().iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![job.id.clone()]);

    // Export: a safetensors file PyTorch reads, holding the final step.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    let export = client.export(&job.id, &path).await.unwrap();
    assert_eq!(export.step, 14);
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
    assert!(tensors.contains_key("weights.conv1.weight") && tensors.contains_key("history.fc.bias"));
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, export.bytes);

    // Cancelling an ended job changes nothing.
    assert_eq!(client.cancel(&job.id).await.unwrap().state, JobState::Succeeded);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_watch_ends_the_watch_with_the_cancelled_state() {
    let cluster = Cluster::start(1).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let spec = JobSpecBuilder::new(Method::Sgd).epochs(100).batch_size(64).build().unwrap();
    let job = client.submit("to-cancel", &spec).await.unwrap();
    let mut stream = Box::pin(client.watch(&job.id, 0).await.unwrap());
    let mut seen = Vec::new();
    let mut last = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(120), stream.next()).await.unwrap() {
        match event.unwrap() {
            JobEvent::Step(m) => {
                seen.push(m.step);
                if m.step == 2 {
                    let cancelled = client.cancel(&job.id).await.unwrap();
                    assert_eq!(cancelled.state, JobState::Cancelled);
                }
            }
            JobEvent::State(j) => last = Some(j),
            JobEvent::Evaluation(_) => {}
        }
    }
    let last = last.expect("a terminal state event");
    assert_eq!(last.state, JobState::Cancelled);
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>(), "steps in order up to the cancel");
    assert!(seen.len() < 20, "the job stopped soon after the cancel ({} steps)", seen.len());
    assert_eq!(client.get(&job.id).await.unwrap().state, JobState::Cancelled);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_name_the_problem() {
    let cluster = Cluster::start(0).await;
    let client = Client::connect(cluster.url()).await.unwrap();

    let err = JobSpecBuilder::new(Method::MRwp).lambda(1.5).build().unwrap_err();
    assert!(matches!(&err, SdkError::InvalidSpec(m) if m.contains("lambda")), "{err}");

    // The server checks what the SDK cannot: here, that the model file the
    // job names was uploaded.
    let mut spec = JobSpecBuilder::new(Method::Sgd).build().unwrap();
    spec.model = rwp_spec::ModelKind::TorchScript;
    spec.model_file = Some(rwp_spec::ModelFile { sha256: "ab".repeat(32), size_bytes: 10 });
    let err = client.submit("no-model", &spec).await.unwrap_err();
    assert!(matches!(&err, SdkError::NotFound(m) if m.contains("upload it first")), "{err}");

    let err = client.get("job-missing").await.unwrap_err();
    assert!(matches!(&err, SdkError::NotFound(m) if m.contains("job-missing")), "{err}");
    let err = client.cancel("job-missing").await.unwrap_err();
    assert!(matches!(err, SdkError::NotFound(_)));
    assert!(matches!(client.watch("job-missing", 0).await.err().unwrap(), SdkError::NotFound(_)));

    let started = Instant::now();
    let mut config = ClientConfig::new("http://127.0.0.1:1");
    config.attempts = 2;
    config.initial_backoff = Duration::from_millis(50);
    let err = Client::connect_with(config).await.unwrap_err();
    assert!(matches!(&err, SdkError::Unreachable { endpoint, .. } if endpoint == "http://127.0.0.1:1"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = Client::connect("not a url").await.unwrap_err();
    assert!(matches!(err, SdkError::Endpoint { .. }), "{err:?}");
    cluster.shutdown().await;
}
