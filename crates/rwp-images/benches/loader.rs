//! Our loader against PyTorch's DataLoader: images per second through the
//! ImageNet training transforms at 224 x 224, on the same folder of JPEGs,
//! with as many threads (ours) as worker processes (PyTorch's).
//!
//!     make bench-loader    # cargo bench -p rwp-images --bench loader
//!
//! Settings (environment): ROUNDS=3, THREADS (default: the CPUs this
//! process may use), BATCH=256, EPOCHS=3, SIZE=224, CLASSES=10,
//! PER_CLASS=150, IMAGES_DIR (default: `<target>/loader-bench-images`).
//!
//! The folder is an ImageFolder tree of photo-like JPEGs written once by
//! `benches/loader_pytorch.py generate` (kept for later runs). Its files are
//! read once before timing, so both sides read from the page cache. Each
//! round times one run of each side, which side goes first alternating;
//! every run shuffles, goes through EPOCHS epochs, and excludes its first
//! batch (worker start-up) from the count and the time. The best round of
//! each side is reported, their ratio, and where our time goes (the stages
//! of one image on one thread). The section `loader` of BENCHMARKS.md is
//! rewritten; the last stdout line is one JSON object.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use rwp_images::{decode, transform_into, Loader, Normalize, SplitMix64, Transform};
use serde_json::{json, Value};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> Command {
    let path = std::env::var_os("RWP_PYTHON")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("VIRTUAL_ENV").map(|venv| PathBuf::from(venv).join("bin/python")))
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    Command::new(path)
}

/// Runs `loader_pytorch.py` with `args`; its last stdout line, as JSON.
fn pytorch_script(args: &[String]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/loader_pytorch.py");
    let output = python().arg(script).args(args).output().expect("python starts (make setup)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "loader_pytorch.py {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("a JSON line")
}

/// The dataset's summary (`complete.json`), generating the folder first if
/// it is missing or was made with other settings.
fn dataset(dir: &Path, classes: usize, per_class: usize) -> Value {
    let summary_path = dir.join("complete.json");
    if let Some(summary) = std::fs::read(&summary_path).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()) {
        if summary["classes"] == classes && summary["per_class"] == per_class {
            return summary;
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("writing {} JPEGs into {} (once)", classes * per_class, dir.display());
    pytorch_script(&["generate".into(), dir.display().to_string(), classes.to_string(), per_class.to_string()])
}

/// The JPEGs of the class folders, in ImageFolder's order.
fn image_files(dir: &Path) -> Vec<PathBuf> {
    let mut classes: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    classes.sort();
    let mut files = Vec::new();
    for class in classes {
        let mut in_class: Vec<PathBuf> = std::fs::read_dir(&class)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        in_class.sort();
        files.extend(in_class);
    }
    files
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    threads: usize,
    batch: usize,
    epochs: usize,
    size: u32,
}

/// Images counted and seconds taken after the first batch.
#[derive(Debug, Clone, Copy)]
struct Run {
    images: usize,
    seconds: f64,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.images as f64 / self.seconds
    }
}

/// One run of our loader: every epoch a fresh shuffle, batches in turn, the
/// next one prefetched while the current one is handed over, and its buffer
/// recycled once used.
fn ours(files: &Arc<Vec<PathBuf>>, settings: Settings, round: u64) -> Run {
    let loader = Loader::new(settings.threads);
    let transform = Transform::ImagenetTrain { size: settings.size };
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for epoch in 0..settings.epochs as u64 {
        let mut order: Vec<usize> = (0..files.len()).collect();
        let mut rng = SplitMix64::new(round << 32 | epoch);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.integer_up_to(i as u32) as usize);
        }
        batches.extend(order.chunks(settings.batch).map(<[usize]>::to_vec));
    }
    let start_batch = |items: &Vec<usize>| {
        let n = items.len();
        let seeds = items.iter().map(|&i| round << 40 ^ i as u64).collect();
        let (items, files) = (items.clone(), Arc::clone(files));
        let read = move |k: usize| std::fs::read(&files[items[k]]).map_err(|e| e.to_string());
        loader.prefetch(n, read, seeds, transform, Normalize::IMAGENET)
    };
    let mut pending = Some(start_batch(&batches[0]));
    let (mut images, mut start) = (0, None);
    for i in 0..batches.len() {
        let batch = pending.take().expect("a batch in flight").wait();
        assert!(batch.failed.is_empty(), "{:?}", batch.failed);
        pending = batches.get(i + 1).map(start_batch);
        match start {
            None => start = Some(Instant::now()),
            Some(_) => images += batch.kept.len(),
        }
        // Done with it (a trainer, after copying it into a tensor).
        loader.recycle(batch.pixels);
    }
    Run { images, seconds: start.expect("a first batch").elapsed().as_secs_f64() }
}

fn pytorch(dir: &Path, settings: Settings) -> Run {
    let Settings { threads, batch, epochs, size } = settings;
    let args = ["run".to_string(), dir.display().to_string()]
        .into_iter()
        .chain([threads, batch, epochs, size as usize].map(|v| v.to_string()))
        .collect::<Vec<_>>();
    let result = pytorch_script(&args);
    Run { images: result["images"].as_u64().unwrap() as usize, seconds: result["seconds"].as_f64().unwrap() }
}

/// Milliseconds per image of each stage on one thread: read, decode, transform.
fn stages(files: &[PathBuf], size: u32) -> [f64; 3] {
    let transform = Transform::ImagenetTrain { size };
    let mut out = vec![0.0; transform.output_len()];
    let mut seconds = [0.0; 3];
    for (i, path) in files.iter().enumerate().cycle().take(3 * files.len()) {
        let t0 = Instant::now();
        let bytes = std::fs::read(path).unwrap();
        let t1 = Instant::now();
        let image = decode(&bytes).unwrap();
        let t2 = Instant::now();
        transform_into(&image, &transform, &Normalize::IMAGENET, i as u64, &mut out);
        let t3 = Instant::now();
        for (total, (a, b)) in seconds.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3)]) {
            *total += (b - a).as_secs_f64();
        }
    }
    seconds.map(|s| s * 1e3 / (3 * files.len()) as f64)
}

fn machine() -> String {
    let first_line_of = |file: &str, key: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
    };
    let cpu = first_line_of("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let memory = first_line_of("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(String::new(), |kb| format!(", {:.0} GiB", kb / 1_048_576.0));
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{cpu}, {cores} cores{memory}")
}

fn main() {
    let rounds: usize = env("ROUNDS", 3);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let settings = Settings {
        threads: env("THREADS", cpus),
        batch: env("BATCH", 256),
        epochs: env("EPOCHS", 3),
        size: env("SIZE", 224),
    };
    let (classes, per_class) = (env("CLASSES", 10), env("PER_CLASS", 150));
    let target_dir = std::env::current_exe().unwrap().ancestors().nth(3).unwrap().to_owned();
    let dir = std::env::var_os("IMAGES_DIR").map_or_else(|| target_dir.join("loader-bench-images"), PathBuf::from);
    let summary = dataset(&dir, classes, per_class);
    let files = Arc::new(image_files(&dir));
    assert_eq!(files.len(), classes * per_class, "the images of {}", dir.display());
    // Decoding every file once also brings them all into the page cache.
    let sizes: Vec<(u32, u32)> = files
        .iter()
        .map(|f| {
            let image = decode(&std::fs::read(f).unwrap()).unwrap();
            (image.width(), image.height())
        })
        .collect();
    let mean_pixels = sizes.iter().map(|&(w, h)| f64::from(w) * f64::from(h)).sum::<f64>() / sizes.len() as f64;
    let sides = (sizes.iter().map(|s| s.0.min(s.1)).min().unwrap(), sizes.iter().map(|s| s.0.max(s.1)).max().unwrap());
    eprintln!(
        "{} images, sides {}–{} px, mean {:.0} kpixels, {settings:?}",
        files.len(),
        sides.0,
        sides.1,
        mean_pixels / 1e3
    );

    let (mut our_runs, mut their_runs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut run_ours = || our_runs.push(ours(&files, settings, round as u64));
        if round % 2 == 0 {
            run_ours();
            their_runs.push(pytorch(&dir, settings));
        } else {
            their_runs.push(pytorch(&dir, settings));
            run_ours();
        }
        let (a, b) = (our_runs[round].per_second(), their_runs[round].per_second());
        eprintln!("round {}: ours {a:.0} images/s, PyTorch {b:.0} images/s, ratio {:.3}", round + 1, a / b);
    }
    let best = |runs: &[Run]| runs.iter().map(Run::per_second).fold(0.0, f64::max);
    let (our_best, their_best) = (best(&our_runs), best(&their_runs));
    let ratio = our_best / their_best;
    let stage_ms = stages(&files, settings.size);

    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let Settings { threads, batch, epochs, size } = settings;
    let mut md = String::new();
    let _ = writeln!(md, "## Image loader against PyTorch's DataLoader\n");
    let _ = writeln!(
        md,
        "Written by `make bench-loader` (crates/rwp-images/benches/loader.rs). Images per second through the ImageNet \
         training transforms, ours and PyTorch's side by side on one machine, rounds interleaved, best of {rounds}; \
         absolute figures on a shared machine mean little.\n"
    );
    let _ = writeln!(md, "- machine: {}", machine());
    let _ = writeln!(md, "- commit: `{commit}`");
    let _ = writeln!(
        md,
        "- command: `make bench-loader` (ROUNDS={rounds} THREADS={threads} BATCH={batch} EPOCHS={epochs} SIZE={size} \
         CLASSES={classes} PER_CLASS={per_class})"
    );
    let _ = writeln!(
        md,
        "- data: {} JPEGs in {classes} class folders, quality 90, sides {}–{} px (mean {:.0} kpixels, about 500x375), \
         {}–{} KB (mean {} KB); read from the page cache",
        files.len(),
        sides.0,
        sides.1,
        mean_pixels / 1e3,
        summary["min_kb"],
        summary["max_kb"],
        summary["mean_kb"]
    );
    let _ = writeln!(
        md,
        "- ours: `Loader::new({threads})`, `Transform::ImagenetTrain {{ size: {size} }}`, `Normalize::IMAGENET`, the \
         next batch prefetched, buffers recycled; PyTorch: torchvision `ImageFolder` with `RandomResizedCrop({size})`, \
         `RandomHorizontalFlip()`, `ToTensor()`, `Normalize(ImageNet)` through `DataLoader(batch_size={batch}, \
         num_workers={threads}, shuffle=True, persistent_workers=True)`; {epochs} epochs each, the first batch excluded\n"
    );
    let _ = writeln!(md, "| figure | ours | PyTorch | ratio | target | met |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| images/s at {size}x{size}, {threads} threads / {threads} workers | {our_best:.0} | {their_best:.0} | \
         {ratio:.2} | ≥ 1.2 | {} |",
        if ratio >= 1.2 { "yes" } else { "**no**" }
    );
    let rounds_text: Vec<String> = our_runs
        .iter()
        .zip(&their_runs)
        .map(|(a, b)| format!("{:.0} / {:.0}", a.per_second(), b.per_second()))
        .collect();
    let _ = writeln!(md, "\nRounds (images/s, ours / PyTorch): {}.", rounds_text.join(", "));
    let _ = writeln!(
        md,
        "Where our time goes, per image on one thread: reading the file {:.2} ms, decoding {:.2} ms, crop + \
         resize + flip + normalise {:.2} ms.",
        stage_ms[0], stage_ms[1], stage_ms[2]
    );

    print!("\n{md}");
    let path = workspace_root().join("BENCHMARKS.md");
    let previous = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (begin, end) = ("<!-- begin loader -->\n", "<!-- end loader -->\n");
    let section = format!("{begin}{md}{end}");
    let updated = match (previous.find(begin), previous.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &previous[..b], &previous[e + end.len()..]),
        _ => format!("{}\n\n{section}", previous.trim_end()),
    };
    std::fs::write(&path, updated).unwrap();
    eprintln!("wrote {}", path.display());
    let result = json!({
        "ours_images_per_s": our_best, "pytorch_images_per_s": their_best, "ratio": ratio, "target": 1.2,
        "met": ratio >= 1.2, "threads": threads, "batch": batch, "epochs": epochs, "size": size,
        "images": files.len(), "commit": commit, "stage_ms": {"read": stage_ms[0], "decode": stage_ms[1], "transform": stage_ms[2]},
        "rounds": our_runs.iter().zip(&their_runs).map(|(a, b)| json!({"ours": a.per_second(), "pytorch": b.per_second()})).collect::<Vec<_>>(),
    });
    println!("{result}");
}
