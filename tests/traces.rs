//! OTLP export. Distributed traces: with OTLP export configured, the server opens a span
//! per update, each worker's span for a task of that update is its child
//! (the W3C trace context travels in gRPC metadata), and the server's span for
//! receiving the result is the task span's child. Checked with an in-process
//! OTLP receiver: a tonic server implementing the collector's trace and
//! metrics services. The metrics of the Prometheus endpoint arrive over OTLP too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use rwp_integration_tests::in_process::Cluster;
use rwp_sdk::{Client, JobSpecBuilder, Method};
use tokio_stream::StreamExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.metric_names.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                names.extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_task_spans_are_children_of_the_servers_step_span() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let telemetry = rwp_telemetry::init_with("rwp-test", "text", Some(format!("http://{collector}"))).unwrap();
    // The server and workers export their metrics where the standard variable says.
    std::env::set_var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", format!("http://{collector}"));

    let cluster = Cluster::start(2).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let spec = JobSpecBuilder::new(Method::MArwp).epochs(1).batch_size(64).max_updates(2).build().unwrap();
    // The client's own span: the SDK sends its context with the request.
    let client_span = tracing::info_span!("client.submit");
    let job = {
        let _context = client_span.context().attach();
        client.submit("traced", &spec).await.unwrap()
    };
    drop(client_span);
    let mut events = Box::pin(client.watch(&job.id, 0).await.unwrap());
    while let Some(e) = events.next().await {
        e.unwrap();
    }
    cluster.shutdown().await;
    telemetry.flush();

    let ours = |s: &Span| attribute(s, "job").as_deref() == Some(job.id.as_str());
    let all = |name: &str| -> Vec<Span> {
        receiver.spans.lock().unwrap().iter().filter(|s| s.name == name).cloned().collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<Span> = receiver.spans.lock().unwrap().iter().filter(|s| ours(s)).cloned().collect();
        let tasks = spans.iter().filter(|s| s.name == "rwp.task").count();
        // 4 gradient tasks (2 updates x clean + perturbed) and the final
        // test evaluation's shards.
        let evaluations = spans.iter().filter(|s| s.name == "rwp.evaluation").count();
        if (tasks >= 6 && evaluations >= 1) || Instant::now() > deadline {
            break spans;
        }
        telemetry.flush();
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let steps: HashMap<String, &Span> =
        spans.iter().filter(|s| s.name == "rwp.step").map(|s| (attribute(s, "step").unwrap(), s)).collect();
    assert!(steps.contains_key("0") && steps.contains_key("1"), "a span per update: {:?}", steps.keys());

    let role = |s: &Span| attribute(s, "role").unwrap_or_default();
    let (tasks, evaluations): (Vec<&Span>, Vec<&Span>) =
        spans.iter().filter(|s| s.name == "rwp.task").partition(|s| !role(s).starts_with("evaluation-"));
    assert_eq!(tasks.len(), 4, "one span per gradient task (2 updates x clean + perturbed)");
    // The end-of-job test evaluation runs on the workers as leased tasks
    // (2 shards of the test set), in the trace of the version they evaluate.
    assert_eq!(
        evaluations.len(),
        2,
        "one span per evaluation shard: {:?}",
        evaluations.iter().map(|s| role(s)).collect::<Vec<_>>()
    );
    let server_evaluations: Vec<&Span> = spans.iter().filter(|s| s.name == "rwp.evaluation").collect();
    assert_eq!(server_evaluations.len(), 1, "one evaluation span on the server, for the final version");
    let parent = server_evaluations[0];
    assert_eq!(attribute(parent, "step").as_deref(), Some("2"), "the final weights are version 2");
    for evaluation in &evaluations {
        assert_eq!(role(evaluation), "evaluation-test");
        assert_eq!(attribute(evaluation, "step").as_deref(), Some("2"));
        assert_eq!(evaluation.trace_id, parent.trace_id, "an evaluation shard is in its evaluation's trace");
        assert_eq!(evaluation.parent_span_id, parent.span_id, "an evaluation shard is a child of its evaluation");
    }
    for task in &tasks {
        let step = attribute(task, "step").unwrap();
        let parent = steps[&step];
        assert_eq!(task.trace_id, parent.trace_id, "task of step {step} is in its update's trace");
        assert_eq!(task.parent_span_id, parent.span_id, "task of step {step} is a child of the step span");
        assert!(matches!(attribute(task, "role").as_deref(), Some("clean" | "perturbed")));
        assert_eq!(attribute(task, "device").as_deref(), Some("cpu"));
        assert!(attribute(task, "bytes").unwrap().parse::<u64>().unwrap() > 0);
        assert!(attribute(task, "shard").is_some());
    }
    // The client's span is the parent of the server's span for the submission.
    let client = all("client.submit");
    let submit = all("rwp.submit");
    assert_eq!((client.len(), submit.len()), (1, 1), "client and server spans of the submission");
    assert_eq!(submit[0].trace_id, client[0].trace_id);
    assert_eq!(submit[0].parent_span_id, client[0].span_id, "the server's span continues the client's trace");
    assert_eq!(attribute(&submit[0], "job").as_deref(), Some(job.id.as_str()));

    // Metrics export on shutdown at the latest.
    let names = receiver.metric_names.lock().unwrap().clone();
    for name in ["rwp_pending_tasks", "rwp_updates_total", "rwp_step_seconds_count", "rwp_worker_tasks_total"] {
        assert!(names.iter().any(|n| n == name), "{name} not exported over OTLP: {names:?}");
    }

    let task_ids: Vec<&Vec<u8>> = tasks.iter().map(|t| &t.span_id).collect();
    let pushes: Vec<&Span> = receiver
        .spans
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == "rwp.push")
        .cloned()
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .collect();
    assert!(
        pushes.iter().filter(|p| task_ids.contains(&&p.parent_span_id)).count() >= 4,
        "the server's receiving span is a child of the worker's task span"
    );
}
