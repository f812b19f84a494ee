//! `make load`: the service under load on loopback. A parameter server and
//! WORKERS (32) real worker processes; JOBS (20) jobs of a tiny model kept
//! running at once for SECONDS (120), every method in turn, each job
//! replaced by a new one as it ends. Then:
//!
//! - throughput: shard results accepted per second;
//! - lease latency, p50 and p99 (from the server's histograms, interpolated
//!   within buckets as Prometheus does): how long a ready task waited for a
//!   worker (`rwp_task_queue_seconds`), and the server's time to hand one out
//!   (`rwp_lease_service_seconds`);
//! - the server's memory (resident, peak resident);
//! - no job lost (every job submitted succeeded), no task result lost (results
//!   accepted = tasks the jobs' plans hold), and every job's weights
//!   bit-identical to the single-process trainer's.
//!
//!     make load        # WORKERS=32 JOBS=20 SECONDS=120 UPDATES=40 BATCH=32

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rwp_integration_tests::bench::{env, memory_mib};
use rwp_integration_tests::cluster::{connect, data_dir, export, start_worker, submit, ServerCommand};
use rwp_integration_tests::in_process::{http_get, sample};
use rwp_integration_tests::local_run::matches_local;
use rwp_proto::v1::{JobState, ListJobsRequest};
use rwp_spec::plan::tasks_for_step;
use rwp_spec::{JobSpec, Method, ModelKind, Schedule};

fn job_spec(index: u64, updates: u64, batch: u32) -> JobSpec {
    let method = Method::ALL[index as usize % Method::ALL.len()];
    let mut spec = JobSpec::reference(method);
    spec.model = ModelKind::Mlp;
    spec.batch_size = batch;
    spec.epochs = 1000;
    spec.max_updates = Some(updates);
    spec.seed = 1000 + index;
    spec.clean_shards = 1 + (index % 2) as u32;
    spec.perturbed_shards = 1 + (index % 2) as u32;
    spec
}

/// Tasks (shard results) a job's plan holds, all updates together.
fn planned_tasks(spec: &JobSpec) -> u64 {
    let schedule = Schedule::new(spec, 1000).expect("a valid spec");
    (0..schedule.total_updates).map(|step| tasks_for_step(spec, &schedule, step).len() as u64).sum()
}

/// The `q` quantile of a Prometheus histogram in `text`, interpolated linearly within its bucket.
fn quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| {
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let within = if count > below { (rank - below) / (count - below) } else { 1.0 };
            return Some(lower + (bound - lower) * within);
        }
        (lower, below) = (bound, count);
    }
    None
}

#[tokio::main]
async fn main() {
    let workers: usize = env("WORKERS", 32);
    let concurrent: usize = env("JOBS", 20);
    let seconds: u64 = env("SECONDS", 120);
    let updates: u64 = env("UPDATES", 40);
    let batch: u32 = env("BATCH", 32);
    println!(
        "load: {workers} workers, {concurrent} concurrent jobs for {seconds} s, mlp, {updates} updates of batch {batch} each"
    );

    let (_tmp, dir) = data_dir();
    let flags = [
        "--torch-threads",
        "1",
        "--eval-every-epochs",
        "0",
        "--checkpoint-every",
        "10",
        "--lease-timeout-ms",
        "10000",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let (server, addr) = ServerCommand::new(&dir, "127.0.0.1:0").flags(&flags).start();
    let metrics: SocketAddr = server.announced("rwp-server metrics on ");
    let pool: Vec<_> = (0..workers).map(|i| start_worker(addr, &format!("load-{i}"))).collect();
    let mut client = connect(addr).await;

    let started = Instant::now();
    let mut submitted: BTreeMap<String, JobSpec> = BTreeMap::new();
    let mut next = 0u64;
    let mut peak_rss: f64 = 0.0;
    let mut last_report = Instant::now();
    loop {
        let jobs = client.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner().jobs;
        let running = jobs.iter().filter(|j| j.state == JobState::Running as i32).count();
        let ended_badly: Vec<_> = jobs
            .iter()
            .filter(|j| [JobState::Failed as i32, JobState::Cancelled as i32].contains(&j.state))
            .map(|j| format!("{} ({:?}: {})", j.id, j.state(), j.error))
            .collect();
        assert!(ended_badly.is_empty(), "jobs failed under load: {ended_badly:?}");
        let submitting = started.elapsed() < Duration::from_secs(seconds);
        if submitting {
            for _ in running..concurrent {
                let spec = job_spec(next, updates, batch);
                let id = submit(&mut client, &format!("load-{next}"), &spec).await;
                submitted.insert(id, spec);
                next += 1;
            }
        } else if running == 0 {
            break;
        }
        peak_rss = peak_rss.max(memory_mib(server.child.id()).0);
        if last_report.elapsed() > Duration::from_secs(15) {
            let done = jobs.iter().filter(|j| j.state == JobState::Succeeded as i32).count();
            println!("  {:>4.0} s: {running} running, {done} succeeded", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let text = http_get(metrics, "/metrics").await;
    let (rss, hwm) = memory_mib(server.child.id());
    drop(pool);

    let jobs = client.list_jobs(ListJobsRequest::default()).await.unwrap().into_inner().jobs;
    let succeeded = jobs.iter().filter(|j| j.state == JobState::Succeeded as i32).count();
    let accepted = sample(&text, "rwp_results_accepted_total").unwrap_or(0.0) as u64;
    let planned: u64 = submitted.values().map(planned_tasks).sum();
    let issued = sample(&text, "rwp_leases_issued_total").unwrap_or(0.0);
    let expired = sample(&text, "rwp_lease_expiries_total").unwrap_or(0.0);
    let ms = |name: &str, q: f64| quantile(&text, name, q).map_or(f64::NAN, |s| s * 1e3);

    print!("checking every job against the single-process trainer ... ");
    let mut identical = 0;
    let mut differing = Vec::new();
    for (id, spec) in &submitted {
        if matches_local(&export(&mut client, id).await, spec) {
            identical += 1;
        } else {
            differing.push(id.clone());
        }
    }
    println!("done");

    let report = format!(
        "load test: {workers} worker processes, {concurrent} concurrent jobs (mlp, batch {batch}, {updates} updates, all six methods), {elapsed:.1} s\n\
         jobs: {} submitted, {succeeded} succeeded, {} lost\n\
         task results: {accepted} accepted of {planned} planned ({} lost); {issued} leases issued, {expired} expired\n\
         throughput: {:.1} tasks/s, {:.2} updates/s\n\
         task queue wait (ready -> leased): p50 {:.2} ms, p99 {:.2} ms\n\
         lease service time (call -> task): p50 {:.3} ms, p99 {:.3} ms\n\
         server memory: {rss:.0} MiB resident at the end, peak {hwm:.0} MiB (sampled peak {peak_rss:.0} MiB)\n\
         weights bit-identical to the single-process trainer: {identical} of {} jobs{}\n",
        submitted.len(),
        submitted.len() - succeeded,
        planned.saturating_sub(accepted),
        accepted as f64 / elapsed,
        submitted.len() as f64 * updates as f64 / elapsed,
        ms("rwp_task_queue_seconds", 0.5),
        ms("rwp_task_queue_seconds", 0.99),
        ms("rwp_lease_service_seconds", 0.5),
        ms("rwp_lease_service_seconds", 0.99),
        submitted.len(),
        if differing.is_empty() { String::new() } else { format!(" (differing: {differing:?})") },
    );
    print!("{report}");
    std::fs::create_dir_all("runs/load").unwrap();
    std::fs::write("runs/load/report.txt", &report).unwrap();
    let ok = succeeded == submitted.len() && accepted == planned && differing.is_empty();
    // exit() skips destructors: stop the server here.
    drop(server);
    std::process::exit(i32::from(!ok));
}
