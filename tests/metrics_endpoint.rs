//! The server's Prometheus endpoint during a job: counters move while it
//! runs, and the pending-tasks gauge (the autoscaling signal) returns to 0
//! when it ends.

use std::time::Duration;

use rwp_integration_tests::in_process::{http_get, sample, Cluster};
use rwp_sdk::{Client, JobSpecBuilder, JobState, Method};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_during_a_job_and_pending_tasks_return_to_zero() {
    let cluster = Cluster::start(0).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    assert_eq!(http_get(cluster.metrics, "/healthz").await.trim(), "ok");
    let before = http_get(cluster.metrics, "/metrics").await;
    assert!(before.contains("# TYPE rwp_pending_tasks gauge"), "{before}");
    assert_eq!(sample(&before, "rwp_pending_tasks"), Some(0.0));

    // No workers yet: the job's first update waits with its 3 tasks pending.
    let spec = JobSpecBuilder::new(Method::MArwp)
        .epochs(1)
        .batch_size(64)
        .clean_shards(1)
        .perturbed_shards(2)
        .max_updates(6)
        .build()
        .unwrap();
    let job = client.submit("metrics", &spec).await.unwrap();
    let waiting = http_get(cluster.metrics, "/metrics").await;
    assert_eq!(sample(&waiting, "rwp_pending_tasks"), Some(3.0), "{waiting}");
    assert_eq!(sample(&waiting, "rwp_running_jobs"), Some(1.0));

    // Workers arrive: the job runs; scrape while it does.
    let cluster = cluster.with_workers(2).await;
    let mut seen_updates = Vec::new();
    loop {
        let text = http_get(cluster.metrics, "/metrics").await;
        let updates = sample(&text, &format!("rwp_updates_total{{job=\"{}\"}}", job.id)).unwrap_or(0.0);
        seen_updates.push(updates);
        if client.get(&job.id).await.unwrap().state.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.get(&job.id).await.unwrap().state, JobState::Succeeded);
    let after = http_get(cluster.metrics, "/metrics").await;
    assert_eq!(sample(&after, &format!("rwp_updates_total{{job=\"{}\"}}", job.id)), Some(6.0), "{after}");
    assert!(seen_updates.windows(2).all(|w| w[0] <= w[1]), "a counter never goes down: {seen_updates:?}");
    assert_eq!(sample(&after, "rwp_pending_tasks"), Some(0.0), "{after}");
    assert_eq!(sample(&after, "rwp_leased_tasks"), Some(0.0), "{after}");
    assert_eq!(sample(&after, "rwp_running_jobs"), Some(0.0));
    // 6 updates x 3 tasks, each leased at least once; bytes flowed both ways.
    assert!(sample(&after, "rwp_leases_issued_total").unwrap() >= 18.0, "{after}");
    assert!(sample(&after, "rwp_gradient_bytes_in_total").unwrap() > 0.0);
    assert!(sample(&after, "rwp_weight_bytes_out_total").unwrap() > 0.0);
    for (phase, count) in
        [("waiting", 6.0), ("update", 6.0), ("aggregation", 6.0), ("publish", 6.0), ("checkpoint", 2.0)]
    {
        let series = format!("rwp_step_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(sample(&after, &series), Some(count), "{series}");
    }
    assert!(sample(&after, &format!("rwp_job_loss{{job=\"{}\"}}", job.id)).unwrap() > 0.0);

    // The workers' endpoints: between them, every task was computed and pushed once.
    let (mut clean, mut perturbed) = (0.0, 0.0);
    for addr in &cluster.worker_metrics {
        let text = http_get(*addr, "/metrics").await;
        clean += sample(&text, "rwp_worker_tasks_total{role=\"clean\",outcome=\"accepted\"}").unwrap_or(0.0);
        perturbed += sample(&text, "rwp_worker_tasks_total{role=\"perturbed\",outcome=\"accepted\"}").unwrap_or(0.0);
        assert!(text.contains("# TYPE rwp_worker_compute_seconds histogram"), "{text}");
    }
    assert_eq!((clean, perturbed), (6.0, 12.0));
    cluster.shutdown().await;
}
