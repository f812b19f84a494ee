//! The metric families the server exports, one typed field each.

use std::sync::Arc;

use rwp_scheduler::Gauges;
use rwp_telemetry::{Counter, Gauge, Histogram, Registry};

#[derive(Clone, Debug)]
pub(crate) struct ServerMetrics {
    pub pending_tasks: Gauge,
    pub leased_tasks: Gauge,
    pub active_workers: Gauge,
    pub running_jobs: Gauge,
    pub updates: Counter,
    pub skipped_updates: Counter,
    pub leases_issued: Counter,
    pub task_queue_seconds: Histogram,
    pub lease_service_seconds: Histogram,
    pub results_accepted: Counter,
    pub lease_expiries: Counter,
    pub task_failures: Counter,
    pub checkpoint_failures: Counter,
    pub checkpoints_rejected: Counter,
    pub gradient_bytes_in: Counter,
    pub weight_bytes_out: Counter,
    pub step_seconds: Histogram,
    pub job_loss: Gauge,
    pub job_accuracy: Gauge,
    pub job_test_accuracy: Gauge,
}

impl ServerMetrics {
    pub(crate) fn new(registry: &Arc<Registry>) -> Self {
        let r = registry;
        Self {
            pending_tasks: r
                .gauge("rwp_pending_tasks", "Tasks of running jobs waiting for a worker (the autoscaling signal)."),
            leased_tasks: r.gauge("rwp_leased_tasks", "Tasks leased to a worker and not yet done (work in flight)."),
            active_workers: r.gauge("rwp_active_workers", "Workers that asked for work within the last lease timeout."),
            running_jobs: r.gauge("rwp_running_jobs", "Jobs in the running state."),
            updates: r.counter("rwp_updates_total", "Updates applied, by job."),
            skipped_updates: r
                .counter("rwp_skipped_updates_total", "Updates skipped for non-finite gradients, by job."),
            leases_issued: r.counter("rwp_leases_issued_total", "Task leases handed to workers."),
            task_queue_seconds: r.histogram(
                "rwp_task_queue_seconds",
                "Time a task waited for a worker: from its publication (or its lease lapsing) to its lease.",
            ),
            lease_service_seconds: r.histogram(
                "rwp_lease_service_seconds",
                "Time the server took to hand out a task to a LeaseTask call that found one ready.",
            ),
            results_accepted: r
                .counter("rwp_results_accepted_total", "Shard results accepted (each task's first result)."),
            lease_expiries: r
                .counter("rwp_lease_expiries_total", "Leases that lapsed and whose task was handed out again."),
            task_failures: r.counter("rwp_task_failures_total", "Tasks workers gave back with an error."),
            checkpoint_failures: r.counter(
                "rwp_checkpoint_failures_total",
                "Checkpoint writes that failed (the job pauses until one succeeds).",
            ),
            checkpoints_rejected: r.counter(
                "rwp_checkpoints_rejected_total",
                "Checkpoint files found corrupt or unreadable when resuming (an older one was used).",
            ),
            gradient_bytes_in: r.counter("rwp_gradient_bytes_in_total", "Bytes of shard results received."),
            weight_bytes_out: r.counter("rwp_weight_bytes_out_total", "Bytes of weights versions sent to workers."),
            step_seconds: r.histogram(
                "rwp_step_seconds",
                "Time of one update by phase: waiting (for its tasks), update (all the engine does), and its \
                 parts: aggregation, checkpoint, publish; and of an evaluation on the workers (evaluation).",
            ),
            job_loss: r.gauge("rwp_job_loss", "Training loss of the latest update, by job."),
            job_accuracy: r.gauge("rwp_job_accuracy", "Training accuracy of the latest update, by job."),
            job_test_accuracy: r.gauge("rwp_job_test_accuracy", "Test accuracy of the latest evaluation, by job."),
        }
    }

    /// The gauges that summarise the scheduling state.
    pub(crate) fn show(&self, gauges: Gauges) {
        self.pending_tasks.set(f64::from(gauges.pending));
        self.leased_tasks.set(f64::from(gauges.leased));
        self.running_jobs.set(f64::from(gauges.running));
        self.active_workers.set(f64::from(gauges.active_workers));
    }
}
