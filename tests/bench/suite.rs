//! `make bench`: the performance suite. Every figure is a ratio of two
//! things measured side by side in this run (rounds interleaved, best of
//! each), written to BENCHMARKS.md (with the machine and the commands) and
//! to benchmarks/results-<device>.json.
//!
//! 1. parallel efficiency: m-arwp on 2 workers / sgd on 1 worker, same
//!    per-worker batch, small CNN and ResNet-18 (random data of CIFAR-10's
//!    format and sizes);
//! 2. against SAM: m-arwp on 2 workers / sam on 1 worker;
//! 3. against PyTorch DDP (gloo, 2 processes) running parallel m-RWP
//!    (tests/reference/ddp_mrwp.py): our m-rwp on 2 workers / DDP's;
//! 4. transport: gradient push and weight fetch throughput for ResNet-18's
//!    44.7 MB against a raw TCP copy (bench-transport);
//! 5. the server's aggregation + update for 11 M parameters against
//!    `optimizer.step()` (bench-aggregation);
//! 6. the server's peak memory with 1, 8 and 32 workers on the same job;
//! 7. the cost of evaluating every epoch: small CNN m-arwp on 2 workers,
//!    random data of CIFAR-10's format and sizes, 200 timed updates that
//!    hold an epoch's end, evaluation every epoch / none
//!    (`--eval-every-epochs 1` / `0`).
//!
//! Settings (environment): ROUNDS (3), SMALL_BATCH (256), SMALL_UPDATES
//! (30), RESNET_BATCH (32), RESNET_UPDATES (6), SECTIONS (all: "1,2,3,4,5,6,7"),
//! DEVICE (cpu; `make bench-gpu` runs sections 1 to 3 with DEVICE=cuda).
//! Each device's results replace their own block of BENCHMARKS.md.

use std::fmt::Write as _;
use std::process::Command;

use rwp_integration_tests::bench::{env, write_cifar_like, TimedJob, Timing};
use rwp_integration_tests::{binary, python, workspace_root};
use rwp_spec::{DatasetKind, Method, ModelKind};
use serde_json::{json, Value};

/// One reported ratio against its target.
struct Figure {
    section: &'static str,
    name: String,
    ours: String,
    theirs: String,
    ratio: f64,
    target: &'static str,
    met: bool,
}

fn le(ratio: f64, target: f64) -> bool {
    ratio <= target
}

#[derive(Clone)]
struct Workload {
    label: &'static str,
    model: ModelKind,
    dataset: DatasetKind,
    data_dir: Option<std::path::PathBuf>,
    batch: u32,
    updates: u64,
    warmup: u64,
    device: String,
    /// Section 1's target, m-arwp on 2 workers / sgd on 1, as a number and as shown.
    parallel_target: (f64, &'static str),
}

impl Workload {
    fn job(&self, method: Method, workers: usize) -> TimedJob {
        let mut job = TimedJob::new(method, workers, self.model, self.batch);
        job.device.clone_from(&self.device);
        job.dataset = self.dataset;
        job.data_dir.clone_from(&self.data_dir);
        job.updates = self.updates;
        job.warmup = self.warmup;
        job
    }
}

/// The best run of each (method, workers), rounds interleaved.
async fn best_runs(w: &Workload, runs: &[(Method, usize)], rounds: usize) -> Vec<Timing> {
    let mut best: Vec<Option<Timing>> = vec![None; runs.len()];
    for round in 1..=rounds {
        let mut line = format!("  {} round {round}:", w.label);
        for (i, (method, workers)) in runs.iter().enumerate() {
            let t = w.job(*method, *workers).run().await;
            let _ = write!(line, " {method}/{workers}w {:.1} ms", t.seconds_per_update * 1e3);
            if best[i].as_ref().is_none_or(|b| t.seconds_per_update < b.seconds_per_update) {
                best[i] = Some(t);
            }
        }
        println!("{line}");
    }
    best.into_iter().map(|t| t.expect("at least one round")).collect()
}

/// A markdown table of where the time of each run's update goes.
fn profile_table(label: &str, runs: &[(Method, usize)], timings: &[Timing]) -> String {
    let mut md = format!(
        "\n{label}, ms per update, means over the timed updates (warm-up and last update excluded; means, unlike \
         medians, add up): `waiting` is from an update's tasks being published to its last result arriving \
         (workers fetching, computing, pushing); `aggregation` and `publish` are the server's engine (shard means, \
         F and SGD in one pass; writing the next weights version); `rest` is the remainder of the update \
         (checkpoints, scheduling, recording), so waiting + aggregation + publish + rest = per update. `compute` \
         is one task's gradient on a worker, by role (within `waiting`).\n\n\
         | run | per update | waiting | aggregation | publish | rest | compute: clean | perturbed | sam |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for ((method, workers), t) in runs.iter().zip(timings) {
        let ms = |k: &str| t.profile.get(k).map_or("-".to_owned(), |s| format!("{:.1}", s * 1e3));
        let _ = writeln!(
            md,
            "| {method} on {workers} worker(s) | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            t.seconds_per_update * 1e3,
            ms("waiting"),
            ms("aggregation"),
            ms("publish"),
            ms("rest"),
            ms("compute clean"),
            ms("compute perturbed"),
            ms("compute sam")
        );
    }
    md
}

/// Runs `command`, echoes its output, and parses its last stdout line as JSON.
fn json_of(mut command: Command, what: &str) -> Value {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: last line is not JSON ({e}):\n{stdout}"))
}

fn machine(device: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(String::new(), |kb| format!(", {:.0} GiB", kb / 1048576.0));
    let gpu = if device.starts_with("cuda") {
        Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("CUDA device").trim().to_owned())
            .unwrap_or_else(|_| "CUDA device".into())
    } else {
        "no GPU used".into()
    };
    format!("{cpu}, {cores} cores{memory}; workers on {device}: {gpu}")
}

#[tokio::main]
async fn main() {
    let rounds: usize = env("ROUNDS", 3);
    let device: String = env("DEVICE", "cpu".to_owned());
    let sections: String = env("SECTIONS", "1,2,3,4,5,6,7".to_owned());
    let wanted = |s: &str| sections.split(',').any(|x| x.trim() == s);
    let tmp = tempfile::tempdir().unwrap();
    // CIFAR-10's sizes (50,000 training and 10,000 test images): the server
    // knows a built-in dataset by its standard sizes and workers check them.
    let cifar = tmp.path().join("cifar");
    write_cifar_like(&cifar, 10_000, 10_000, 7);
    let small = Workload {
        label: "small CNN",
        model: ModelKind::SmallCnn,
        dataset: DatasetKind::Synthetic,
        data_dir: None,
        batch: env("SMALL_BATCH", 256),
        updates: env("SMALL_UPDATES", 30),
        warmup: 3,
        device: device.clone(),
        parallel_target: (1.10, "≤ 1.10"),
    };
    let resnet = Workload {
        label: "ResNet-18",
        model: ModelKind::Resnet18,
        dataset: DatasetKind::Cifar10,
        data_dir: Some(cifar.clone()),
        batch: env("RESNET_BATCH", 32),
        updates: env("RESNET_UPDATES", 6),
        warmup: 2,
        device: device.clone(),
        parallel_target: (1.08, "≤ 1.08"),
    };
    let mut figures: Vec<Figure> = Vec::new();
    let mut raw = serde_json::Map::new();
    let mut profiles = String::new();

    if wanted("1") || wanted("2") {
        for w in [&small, &resnet] {
            println!("{}: sgd on 1 worker, m-arwp on 2, sam on 1; batch {} per worker", w.label, w.batch);
            let runs = [(Method::Sgd, 1), (Method::MArwp, 2), (Method::Sam, 1)];
            let best = best_runs(w, &runs, rounds).await;
            profiles.push_str(&profile_table(w.label, &runs, &best));
            let t: Vec<f64> = best.iter().map(|b| b.seconds_per_update).collect();
            raw.insert(
                format!("{} ms per update", w.label),
                json!({"sgd_1": t[0] * 1e3, "m-arwp_2": t[1] * 1e3, "sam_1": t[2] * 1e3}),
            );
            let ms = |s: f64| format!("{:.1} ms", s * 1e3);
            figures.push(Figure {
                section: "1. parallel efficiency",
                name: format!("{}: m-arwp on 2 workers / sgd on 1", w.label),
                ours: ms(t[1]),
                theirs: ms(t[0]),
                ratio: t[1] / t[0],
                target: w.parallel_target.1,
                met: le(t[1] / t[0], w.parallel_target.0),
            });
            figures.push(Figure {
                section: "2. against SAM",
                name: format!("{}: m-arwp on 2 workers / sam on 1", w.label),
                ours: ms(t[1]),
                theirs: ms(t[2]),
                ratio: t[1] / t[2],
                target: "≤ 0.55",
                met: le(t[1] / t[2], 0.55),
            });
        }
    }

    if wanted("3") {
        for w in [&small, &resnet] {
            println!("{}: m-rwp on 2 workers against PyTorch DDP (gloo, 2 processes)", w.label);
            let model = if w.model == ModelKind::Resnet18 { "resnet18" } else { "small-cnn" };
            let (mut ours, mut theirs) = (f64::INFINITY, f64::INFINITY);
            for round in 1..=rounds {
                let o = w.job(Method::MRwp, 2).run().await.seconds_per_update * 1e3;
                let mut ddp = python();
                ddp.arg(workspace_root().join("tests/reference/ddp_mrwp.py")).args([
                    "--model",
                    model,
                    "--batch-size",
                    &w.batch.to_string(),
                    "--updates",
                    &w.updates.to_string(),
                    "--warmup",
                    &w.warmup.to_string(),
                    "--threads",
                    "1",
                    "--device",
                    &device,
                ]);
                let d = json_of(ddp, "ddp_mrwp.py")["ms_per_update"].as_f64().expect("ms_per_update");
                println!("  {} round {round}: ours {o:.1} ms, DDP {d:.1} ms", w.label);
                ours = ours.min(o);
                theirs = theirs.min(d);
            }
            raw.insert(format!("{} m-rwp vs DDP ms", w.label), json!({"ours": ours, "ddp": theirs}));
            figures.push(Figure {
                section: "3. against PyTorch DDP",
                name: format!("{}: m-rwp, ours on 2 workers / DDP on 2 processes", w.label),
                ours: format!("{ours:.1} ms"),
                theirs: format!("{theirs:.1} ms"),
                ratio: ours / theirs,
                target: "≤ 0.90",
                met: le(ours / theirs, 0.9),
            });
        }
    }

    if wanted("4") {
        println!("transport: push and fetch of ResNet-18's gradients and weights against a raw TCP copy");
        let t = json_of(Command::new(binary("bench-transport")), "bench-transport");
        for (what, key) in [("gradient push", "push"), ("weight fetch", "fetch")] {
            let ours = t[format!("{key}_mb_s")].as_f64().expect("throughput");
            let tcp = t["raw_tcp_mb_s"].as_f64().expect("raw TCP throughput");
            figures.push(Figure {
                section: "4. transport",
                name: format!("{what} / raw TCP copy (44.7 MB, loopback)"),
                ours: format!("{ours:.0} MB/s"),
                theirs: format!("{tcp:.0} MB/s"),
                ratio: ours / tcp,
                target: "≥ 0.70",
                met: ours / tcp >= 0.7,
            });
        }
        raw.insert("transport".into(), t);
    }

    if wanted("5") {
        println!("aggregation + update for 11 M parameters against optimizer.step()");
        let a = json_of(Command::new(binary("bench-aggregation")), "bench-aggregation");
        let (ours, torch) = (a["ours_ms"].as_f64().expect("ours_ms"), a["torch_ms"].as_f64().expect("torch_ms"));
        figures.push(Figure {
            section: "5. aggregation",
            name: "m-arwp aggregation + update (2 shards) / torch.optim.SGD.step()".into(),
            ours: format!("{ours:.1} ms"),
            theirs: format!("{torch:.1} ms"),
            ratio: ours / torch,
            target: "≤ 1.5",
            met: le(ours / torch, 1.5),
        });
        let (publish, memcpy) =
            (a["publish_ms"].as_f64().expect("publish_ms"), a["memcpy_ms"].as_f64().expect("memcpy_ms"));
        figures.push(Figure {
            section: "5. aggregation",
            name: "publishing a weights version (44.7 MB) / a plain copy of its bytes".into(),
            ours: format!("{publish:.1} ms"),
            theirs: format!("{memcpy:.1} ms"),
            ratio: publish / memcpy,
            target: "≤ 1.5",
            met: le(publish / memcpy, 1.5),
        });
        raw.insert("aggregation".into(), a);
    }

    if wanted("6") {
        println!("server memory: one m-arwp job of 8 clean + 8 perturbed shards, 1, 8 and 32 workers");
        let mut peaks = Vec::new();
        for workers in [1, 8, 32] {
            let mut job = small.job(Method::MArwp, workers);
            job.batch = 32;
            job.clean_shards = 8;
            job.perturbed_shards = 8;
            job.updates = 8;
            let peak = job.run().await.server_peak_mib;
            println!("  {workers} workers: server peak {peak:.0} MiB");
            peaks.push(peak);
        }
        raw.insert("server peak MiB by workers".into(), json!({"1": peaks[0], "8": peaks[1], "32": peaks[2]}));
        figures.push(Figure {
            section: "6. server memory",
            name: "peak with 32 workers / with 1 (same job, 16 shards)".into(),
            ours: format!("{:.0} MiB", peaks[2]),
            theirs: format!("{:.0} MiB", peaks[0]),
            ratio: peaks[2] / peaks[0],
            target: "≈ 1 (no growth with workers)",
            met: peaks[2] / peaks[0] <= 1.10,
        });
        figures.push(Figure {
            section: "6. server memory",
            name: "peak with 8 workers / with 1".into(),
            ours: format!("{:.0} MiB", peaks[1]),
            theirs: format!("{:.0} MiB", peaks[0]),
            ratio: peaks[1] / peaks[0],
            target: "≈ 1 (no growth with workers)",
            met: peaks[1] / peaks[0] <= 1.10,
        });
    }

    if wanted("7") {
        // CIFAR-10's 50,000 training and 10,000 test images: 195 updates of
        // batch 256 an epoch. The 200 timed updates (21 to 220) hold the end
        // of epoch 1 and, well before the window ends, all of its
        // evaluation's shards: one evaluation per 200 updates against a
        // whole epoch's one per 195.
        let epoch_workload = Workload {
            label: "small CNN, CIFAR-10 sizes",
            dataset: DatasetKind::Cifar10,
            data_dir: Some(cifar.clone()),
            batch: 256,
            updates: 200,
            warmup: 20,
            ..small.clone()
        };
        println!("{}: m-arwp on 2 workers, an epoch end timed, evaluation every epoch / none", epoch_workload.label);
        let (mut with, mut without) = (f64::INFINITY, f64::INFINITY);
        for round in 1..=rounds {
            let mut job = epoch_workload.job(Method::MArwp, 2);
            let plain = job.run().await.seconds_per_update * 1e3;
            job.eval_every_epochs = 1;
            let evaluated = job.run().await.seconds_per_update * 1e3;
            println!("  round {round}: with evaluation {evaluated:.1} ms per update, without {plain:.1} ms");
            with = with.min(evaluated);
            without = without.min(plain);
        }
        raw.insert("epoch with evaluation ms per update".into(), json!({"with": with, "without": without}));
        figures.push(Figure {
            section: "7. evaluation",
            name: "small CNN: an epoch with evaluation every epoch / without (m-arwp, 2 workers)".into(),
            ours: format!("{with:.1} ms"),
            theirs: format!("{without:.1} ms"),
            ratio: with / without,
            target: "≤ 1.05",
            met: le(with / without, 1.05),
        });
    }

    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "## Workers on {device}\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (tests/bench/suite.rs). Every figure is a ratio of two things measured side by side \
         in one run on one machine, rounds interleaved, best of {rounds}; absolute times on a shared machine mean \
         little.\n"
    );
    let _ = writeln!(md, "- machine: {}", machine(&device));
    let _ = writeln!(md, "- commit: `{commit}`");
    let command = if device == "cpu" { "make bench" } else { "make bench-gpu" };
    let _ = writeln!(
        md,
        "- command: `{command}` (ROUNDS={rounds} SMALL_BATCH={} SMALL_UPDATES={} RESNET_BATCH={} RESNET_UPDATES={}; \
         one libtorch thread per worker process and on the server)",
        small.batch, small.updates, resnet.batch, resnet.updates
    );
    let _ = writeln!(md, "- machine-readable: `benchmarks/results-{device}.json`\n");
    let _ = writeln!(md, "| section | figure | ours | baseline | ratio | target | met |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for f in &figures {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.3} | {} | {} |",
            f.section,
            f.name,
            f.ours,
            f.theirs,
            f.ratio,
            f.target,
            if f.met { "yes" } else { "**no**" }
        );
    }
    if !profiles.is_empty() {
        let _ = writeln!(md, "\n### Where the time goes (best rounds)\n{profiles}");
    }
    let results = json!({
        "machine": machine(&device),
        "device": device,
        "commit": commit,
        "rounds": rounds,
        "figures": figures.iter().map(|f| json!({
            "section": f.section, "name": f.name, "ours": f.ours, "baseline": f.theirs,
            "ratio": f.ratio, "target": f.target, "met": f.met,
        })).collect::<Vec<_>>(),
        "raw": raw,
    });
    print!("\n{md}");
    let json_path = workspace_root().join(format!("benchmarks/results-{device}.json"));
    std::fs::create_dir_all(json_path.parent().unwrap()).unwrap();
    std::fs::write(&json_path, serde_json::to_string_pretty(&results).unwrap()).unwrap();
    let out = std::env::var("BENCHMARKS_MD").unwrap_or_else(|_| "BENCHMARKS.md".into());
    let path = workspace_root().join(out);
    let previous = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    std::fs::write(&path, replace_block(&previous, &device, &md)).unwrap();
    println!("wrote {} and {}", path.display(), json_path.display());
}

/// `text` with the block of `device` (between its markers) replaced by
/// `block`, or with the block appended; everything else (notes) is kept.
fn replace_block(text: &str, device: &str, block: &str) -> String {
    let (begin, end) = (format!("<!-- begin {device} -->\n"), format!("<!-- end {device} -->\n"));
    let fresh = format!("{begin}{block}{end}");
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{fresh}{}", &text[..b], &text[e + end.len()..]),
        _ => format!("{}\n{fresh}", text.trim_end()),
    }
}
