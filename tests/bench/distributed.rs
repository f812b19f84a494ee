//! Time per update of `m-arwp` on two workers (one clean and one perturbed
//! shard each update) against `sgd` on one worker with the same per-worker
//! batch: the papers' claim is "nearly the same speed" (a ratio near 1).
//! Real processes on loopback, rounds interleaved, one run.
//!
//!     make bench-distributed        # BATCH=256 UPDATES=40 ROUNDS=3 MODEL=small-cnn

use std::time::Duration;

use rwp_integration_tests::cluster::{connect, data_dir, start_server_with, start_worker, submit, wait_for_success};
use rwp_proto::v1::WatchJobRequest;
use rwp_spec::{JobSpec, Method, ModelKind};
use tokio_stream::StreamExt;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Mean seconds per update after `warmup` updates, from the job's step metrics.
async fn seconds_per_update(
    method: Method,
    workers: usize,
    batch: u32,
    updates: u64,
    warmup: u64,
    model: ModelKind,
) -> f64 {
    let (_tmp, dir) = data_dir();
    // Checkpoints and evaluation only at the end, which is left out of the timing.
    let flags = ["--checkpoint-every", "1000000", "--eval-every-epochs", "0", "--torch-threads", "1"];
    let (_server, addr) = start_server_with(&dir, "127.0.0.1:0", &flags);
    let _workers: Vec<_> = (0..workers).map(|i| start_worker(addr, &format!("bench-{i}"))).collect();
    let mut client = connect(addr).await;
    let mut spec = JobSpec::reference(method);
    spec.model = model;
    spec.batch_size = batch;
    spec.epochs = 1000;
    spec.max_updates = Some(updates + warmup);
    let id = submit(&mut client, "bench", &spec).await;
    wait_for_success(&mut client, &id, Duration::from_secs(3600)).await;
    let mut stream = client.watch_job(WatchJobRequest { job_id: id, from_step: 0 }).await.unwrap().into_inner();
    let mut times = Vec::new();
    while let Some(event) = stream.next().await {
        if let Some(rwp_proto::v1::job_event::Event::Step(m)) = event.unwrap().event {
            times.push(m.wall_time_s);
        }
    }
    // From the end of the warm-up to the end of the second-to-last update (the
    // last one includes the final evaluation and checkpoint).
    let (start, end) = (times[warmup as usize - 1], times[times.len() - 2]);
    (end - start) / (updates - 1) as f64
}

#[tokio::main]
async fn main() {
    let batch: u32 = env("BATCH", 256);
    let updates: u64 = env("UPDATES", 40);
    let rounds: usize = env("ROUNDS", 3);
    let model: ModelKind = std::env::var("MODEL").ok().and_then(|m| m.parse().ok()).unwrap_or(ModelKind::SmallCnn);
    let warmup = 3;
    println!(
        "{model}, batch {batch} per worker, {updates} updates after {warmup} warm-up, {rounds} interleaved rounds"
    );
    let (mut sgd, mut marwp) = (f64::INFINITY, f64::INFINITY);
    for round in 1..=rounds {
        let s = seconds_per_update(Method::Sgd, 1, batch, updates, warmup, model).await;
        let m = seconds_per_update(Method::MArwp, 2, batch, updates, warmup, model).await;
        println!(
            "round {round}: sgd/1 worker {:.2} ms, m-arwp/2 workers {:.2} ms, ratio {:.3}",
            s * 1e3,
            m * 1e3,
            m / s
        );
        sgd = sgd.min(s);
        marwp = marwp.min(m);
    }
    println!(
        "best: sgd on 1 worker {:.2} ms/update, m-arwp on 2 workers {:.2} ms/update, ratio {:.3}",
        sgd * 1e3,
        marwp * 1e3,
        marwp / sgd
    );
}
