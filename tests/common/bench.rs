//! Building blocks of the benchmark programs in `tests/bench/`: data sets
//! they write themselves, and timed runs of real processes on loopback.

use std::collections::BTreeMap;
use std::path::Path;

use rwp_proto::v1::{CancelJobRequest, JobState, WatchJobRequest};
use rwp_spec::rng::derive_seed;
use rwp_spec::{DatasetKind, JobSpec, Method, ModelKind};
use tokio_stream::StreamExt;

use crate::cluster::{connect, data_dir, job, start_server_with, start_worker_with, submit};
use crate::in_process::http_get;

/// An environment variable parsed, or `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes a CIFAR-10-format data set of random images (`per_file` records in
/// each of the five training files, `test` in the test file) into `dir`: the
/// shape and cost of CIFAR without downloading it.
pub fn write_cifar_like(dir: &Path, per_file: usize, test: usize, seed: u64) {
    const RECORD: usize = 1 + 3 * 32 * 32;
    std::fs::create_dir_all(dir).unwrap();
    let mut counter = 0u64;
    let mut file = |name: &str, records: usize| {
        let mut bytes = vec![0u8; records * RECORD];
        for chunk in bytes.chunks_exact_mut(8) {
            chunk.copy_from_slice(&derive_seed(seed, &[counter]).to_le_bytes());
            counter += 1;
        }
        for record in bytes.chunks_exact_mut(RECORD) {
            record[0] %= 10;
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    for i in 1..=5 {
        file(&format!("data_batch_{i}.bin"), per_file);
    }
    file("test_batch.bin", test);
}

/// One timed job on a fresh server and `workers` fresh worker processes.
#[derive(Debug, Clone)]
pub struct TimedJob {
    pub method: Method,
    pub workers: usize,
    pub model: ModelKind,
    pub dataset: DatasetKind,
    pub data_dir: Option<std::path::PathBuf>,
    /// Per shard: the update's batch is `batch * shards`.
    pub batch: u32,
    pub clean_shards: u32,
    pub perturbed_shards: u32,
    pub updates: u64,
    pub warmup: u64,
    /// The workers' device (`cpu`, `cuda`, ...).
    pub device: String,
    /// The server's `eval_every_epochs` (0: at the end only).
    pub eval_every_epochs: u64,
}

/// What a [`TimedJob`] measured.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Mean wall time per update after the warm-up.
    pub seconds_per_update: f64,
    /// The server's peak resident memory (VmHWM), MiB.
    pub server_peak_mib: f64,
    /// Where an update's time goes, over the timed updates only (warm-up
    /// and last update excluded): mean seconds per update of the server's
    /// phases (`waiting` for the tasks, `aggregation`, `publish`), `rest`
    /// (everything else: checkpoints, scheduling, recording), which with
    /// them adds up to `seconds_per_update`, and the workers' gradient
    /// computations (`compute <role>`, per task, part of `waiting`).
    pub profile: BTreeMap<String, f64>,
}

/// Sum and count of a Prometheus histogram's series in `text`, for the
/// series whose labels contain `labels` (all of them when empty).
fn histogram_totals(text: &str, name: &str, labels: &str) -> (f64, f64) {
    let total = |suffix: &str| -> f64 {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}_{suffix}")))
            .filter(|rest| rest.contains(labels))
            .filter_map(|rest| rest.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    (total("sum"), total("count"))
}

/// The mean of what a histogram observed between two scrapes of `/metrics`.
fn window_mean(before: &str, after: &str, name: &str, labels: &str) -> Option<f64> {
    let ((s0, c0), (s1, c1)) = (histogram_totals(before, name, labels), histogram_totals(after, name, labels));
    (c1 > c0).then(|| (s1 - s0) / (c1 - c0))
}

impl TimedJob {
    /// `method` with one shard of each kind it uses, `batch` per shard.
    #[must_use]
    pub fn new(method: Method, workers: usize, model: ModelKind, batch: u32) -> Self {
        Self {
            method,
            workers,
            model,
            dataset: DatasetKind::Synthetic,
            data_dir: None,
            batch,
            clean_shards: 1,
            perturbed_shards: 1,
            updates: 20,
            warmup: 3,
            device: "cpu".into(),
            eval_every_epochs: 0,
        }
    }

    pub fn spec(&self) -> JobSpec {
        let mut spec = JobSpec::reference(self.method);
        spec.model = self.model;
        spec.dataset = self.dataset;
        spec.data_dir.clone_from(&self.data_dir);
        spec.augment = false;
        spec.epochs = 1000;
        spec.max_updates = Some(self.updates + self.warmup);
        spec.clean_shards = self.clean_shards;
        spec.perturbed_shards = self.perturbed_shards;
        let shards = match self.method {
            Method::Sgd | Method::Sam => self.clean_shards,
            Method::Rwp | Method::Arwp => self.perturbed_shards,
            Method::MRwp | Method::MArwp => self.clean_shards.max(self.perturbed_shards),
        };
        spec.batch_size = self.batch * shards;
        spec
    }

    /// Runs the job's updates (then cancels it rather than wait for its
    /// final evaluation); times the updates after the warm-up, up to the
    /// second-to-last (the last one carries the final checkpoint).
    pub async fn run(&self) -> Timing {
        let (_tmp, dir) = data_dir();
        let eval_every = self.eval_every_epochs.to_string();
        let flags = [
            "--checkpoint-every",
            "1000000",
            "--eval-every-epochs",
            &eval_every,
            "--torch-threads",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        let (server, addr) = start_server_with(&dir, "127.0.0.1:0", &flags);
        let metrics = server.announced("rwp-server metrics on ");
        let workers: Vec<_> = (0..self.workers)
            .map(|i| {
                let url = format!("http://{addr}");
                let flags = ["--device", &self.device, "--metrics-listen", "127.0.0.1:0"];
                start_worker_with(&url, &format!("bench-{i}"), &flags)
            })
            .collect();
        let worker_metrics: Vec<_> = workers.iter().map(|w| w.announced("rwp-worker metrics on ")).collect();
        let mut client = connect(addr).await;
        let id = submit(&mut client, "bench", &self.spec()).await;
        // Metrics are scraped when the first and the last timed update are
        // reported, so that the profile covers the timed updates only.
        let scrape = || async {
            let mut texts = vec![http_get(metrics, "/metrics").await];
            for m in &worker_metrics {
                texts.push(http_get(*m, "/metrics").await);
            }
            texts
        };
        // Steps count updates from 1: the last warm-up update, the update
        // before the last timed one, and the last.
        let (first_timed, last_timed) = (self.warmup, self.warmup + self.updates - 1);
        let last = self.warmup + self.updates;
        let mut stream =
            client.watch_job(WatchJobRequest { job_id: id.clone(), from_step: 0 }).await.unwrap().into_inner();
        let (mut times, mut before, mut after) = (Vec::new(), None, None);
        while let Some(event) = stream.next().await {
            if let Some(rwp_proto::v1::job_event::Event::Step(m)) = event.unwrap().event {
                times.push(m.wall_time_s);
                if m.step == first_timed {
                    before = Some(scrape().await);
                }
                if m.step == last_timed {
                    after = Some(scrape().await);
                }
                if m.step == last {
                    break;
                }
            }
        }
        // Training is over: the job's final evaluation of the whole test set
        // (minutes for ResNet-18 on CPU workers) is not what is timed.
        let ended = match client.cancel_job(CancelJobRequest { job_id: id.clone() }).await {
            Ok(cancelled) => cancelled.into_inner(),
            // It ended first (its evaluation was quick).
            Err(_) => job(&mut client, &id).await,
        };
        assert!(
            [JobState::Cancelled as i32, JobState::Succeeded as i32].contains(&ended.state),
            "bench job {id} ended as {:?}: {}",
            ended.state(),
            ended.error
        );
        let server_peak_mib = memory_mib(server.child.id()).1;
        // times[k] is the wall time of step k + 1 (steps count from 1).
        let (start, end) = (times[(first_timed - 1) as usize], times[(last_timed - 1) as usize]);
        let seconds_per_update = (end - start) / (self.updates - 1) as f64;
        let (before, after) = (before.expect("the first timed update"), after.expect("the last timed update"));
        let mut profile = BTreeMap::new();
        for phase in ["waiting", "aggregation", "publish"] {
            if let Some(mean) = window_mean(&before[0], &after[0], "rwp_step_seconds", &format!("phase=\"{phase}\"")) {
                profile.insert(phase.to_owned(), mean);
            }
        }
        let accounted: f64 = profile.values().sum();
        profile.insert("rest".to_owned(), seconds_per_update - accounted);
        for role in ["clean", "perturbed", "sam"] {
            let means: Vec<f64> = before[1..]
                .iter()
                .zip(&after[1..])
                .filter_map(|(b, a)| window_mean(b, a, "rwp_worker_compute_seconds", &format!("role=\"{role}\"")))
                .collect();
            if !means.is_empty() {
                profile.insert(format!("compute {role}"), means.iter().sum::<f64>() / means.len() as f64);
            }
        }
        Timing { seconds_per_update, server_peak_mib, profile }
    }
}

/// Resident and peak resident memory (VmRSS, VmHWM) of a process, MiB.
#[must_use]
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
