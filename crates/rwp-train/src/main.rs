//! `rwp-train`: trains one job in one process, with the reference
//! hyper-parameters of docs/algorithms.md ("Reference hyper-parameters") as defaults for the chosen method.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use rwp_core::checkpoint;
use rwp_core::trainer::{parse_device, LocalTrainer};
use rwp_spec::{
    check_model_file, DatasetKind, Extension, JobSpec, Method, ModelFile, ModelKind, ScheduleFlags, Spelling,
};

/// Train a model with an RWP-family method in one process.
///
/// Every hyper-parameter defaults to the reference value of docs/algorithms.md
/// for the chosen method; flags override them.
#[derive(Debug, Parser)]
#[command(name = "rwp-train", version, about, long_about = None)]
struct Args {
    /// sgd, sam, rwp, arwp, m-rwp or m-arwp.
    #[arg(long, default_value = "m-arwp")]
    method: Method,
    /// mlp, small-cnn, resnet18, resnet50, vgg16-bn, wrn16-8, wrn28-10, or torchscript
    /// (with --model-file).
    #[arg(long, default_value = "small-cnn")]
    model: ModelKind,
    /// The TorchScript file (`torch.jit.script(model).save(path)`) of
    /// --model torchscript; training starts from its weights.
    #[arg(long)]
    model_file: Option<PathBuf>,
    /// synthetic (built in), mnist, cifar10, cifar100, or your own data:
    /// image-folder, tar-shards or tensors (with --train and --test).
    #[arg(long, default_value = "synthetic")]
    dataset: DatasetKind,
    /// Directory with the dataset's files (MNIST IDX, CIFAR binary).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Your own data's training samples: a folder of class folders
    /// (image-folder), tar shards (`train-{0000..0127}.tar`, or their
    /// folder), or safetensors files (tensors).
    #[arg(long, value_name = "LOCATION", requires = "test")]
    train: Option<String>,
    /// Your own data's test samples, as --train.
    #[arg(long, value_name = "LOCATION", requires = "train")]
    test: Option<String>,
    /// Your own data's validation samples, kept apart (instead of --validation-fraction).
    #[arg(long, value_name = "LOCATION", requires = "train")]
    validation: Option<String>,
    /// Images: the side of the square images the model sees.
    #[arg(long, default_value_t = rwp_spec::data::DEFAULT_IMAGE_SIZE)]
    image_size: u32,
    /// Images: imagenet (random resized crop and flip; resize and centre
    /// crop to evaluate), cifar (resize, then the CIFAR augmentation) or resize.
    #[arg(long, default_value = "imagenet")]
    transforms: rwp_spec::Transforms,
    /// A sample that cannot be read or decoded: fail (the run stops, naming
    /// it) or skip (left out of its batch).
    #[arg(long, default_value = "fail")]
    bad_samples: rwp_spec::BadSamples,
    /// Per-channel mean of your own data's inputs (ImageNet's for images by default).
    #[arg(long, value_delimiter = ',', requires = "std", allow_negative_numbers = true)]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviation, with --mean.
    #[arg(long, value_delimiter = ',', requires = "mean")]
    std: Option<Vec<f32>>,
    /// Root seed of initial weights, sample order, augmentation and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Epochs (passes over the training set) the schedules span; with
    /// --resume, the epochs in all to continue to.
    #[arg(long)]
    epochs: Option<u32>,
    /// Stop after this many updates (schedules still span all epochs); with
    /// --resume, the cap in all (0: none, run all the epochs).
    #[arg(long)]
    max_updates: Option<u64>,
    /// Samples per mini-batch (the clean and the perturbed batch alike).
    #[arg(long)]
    batch_size: Option<u32>,
    /// Shards the clean (or SAM) batch is split into.
    #[arg(long)]
    clean_shards: Option<u32>,
    /// Shards the perturbed batch is split into.
    #[arg(long)]
    perturbed_shards: Option<u32>,
    /// Independent ε per perturbed shard instead of one shared ε.
    #[arg(long)]
    independent_noise: bool,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum, in [0, 1).
    #[arg(long)]
    momentum: Option<f64>,
    /// Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// Weight decay (coupled, as PyTorch's SGD).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// constant, step (with --milestones, --lr-gamma), cosine-per-update or
    /// cosine-per-epoch; the names of job files' lr_schedule and `rwp submit`.
    #[arg(long, value_name = "SCHEDULE")]
    lr_schedule: Option<String>,
    /// Epochs at which the step schedule multiplies the rate by --lr-gamma (comma-separated).
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<u32>>,
    /// Factor the step schedule multiplies the rate by at each milestone (default 0.1).
    #[arg(long)]
    lr_gamma: Option<f64>,
    /// Linear warmup over this many updates.
    #[arg(long)]
    warmup_updates: Option<u64>,
    /// Perturbation scale σ.
    #[arg(long, allow_negative_numbers = true)]
    sigma: Option<f64>,
    /// constant or cosine-increasing (with --sigma-inc); the names of job
    /// files' sigma_schedule and `rwp submit`.
    #[arg(long, value_name = "SCHEDULE")]
    sigma_schedule: Option<String>,
    /// Growth of the cosine-increasing σ schedule (default 10).
    #[arg(long)]
    sigma_inc: Option<f64>,
    /// Weight λ of the perturbed gradient (m-rwp, m-arwp).
    #[arg(long, allow_negative_numbers = true)]
    lambda: Option<f64>,
    /// Adaptive scale η (arwp, m-arwp).
    #[arg(long, allow_negative_numbers = true)]
    eta: Option<f64>,
    /// History decay β (arwp, m-arwp).
    #[arg(long, allow_negative_numbers = true)]
    beta: Option<f64>,
    /// SAM radius ρ.
    #[arg(long, allow_negative_numbers = true)]
    rho: Option<f64>,
    /// Turn off CIFAR augmentation.
    #[arg(long)]
    no_augment: bool,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Intra-op threads of libtorch (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Evaluate on the test split every N epochs (0: only at the end).
    #[arg(long, default_value_t = 1)]
    eval_every: u32,
    /// Write one JSON object per update and per evaluation to this file.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Directory for checkpoints.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Save a checkpoint every N updates (with --checkpoint-dir; the last update is always saved).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Continue from a checkpoint, with the spec it holds; only --epochs,
    /// --max-updates (to go on for longer), --device, --threads,
    /// --eval-every, --metrics, --checkpoint-dir, --checkpoint-every,
    /// --model-file and --quiet may go with it.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start from the weights and BatchNorm statistics of this checkpoint
    /// (an `rwp export` file, say) instead of the seed's, with a fresh
    /// optimizer state: fine-tuning, warm starts. The model must match.
    #[arg(long, value_name = "SAFETENSORS", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The flags a resumed run applies (by their ids, the fields of [`Args`]);
/// every other flag sets the spec, which a resumed run takes from its checkpoint.
const RESUME_FLAGS: [&str; 11] = [
    "resume",
    "epochs",
    "max_updates",
    "device",
    "threads",
    "eval_every",
    "metrics",
    "checkpoint_dir",
    "checkpoint_every",
    "model_file",
    "quiet",
];

/// With --resume, the flags given that would be ignored, by their names
/// (`--epochs`), in the order of `--help`.
fn ignored_on_resume(matches: &ArgMatches) -> Vec<String> {
    Args::command()
        .get_arguments()
        .filter(|a| !RESUME_FLAGS.contains(&a.get_id().as_str()))
        .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// "--a", "--a and --b", "--a, --b and --c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl Args {
    fn spec(&self) -> Result<JobSpec, String> {
        let mut s = JobSpec::reference(self.method);
        s.model = self.model;
        check_model_file(self.model, self.model_file.is_some(), Spelling::Flags)?;
        s.model_file = match &self.model_file {
            Some(path) => Some(
                ModelFile::of_path(path).map_err(|e| format!("--model-file: cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        s.dataset = self.dataset;
        s.data_dir.clone_from(&self.data_dir);
        if let (Some(train), Some(test)) = (&self.train, &self.test) {
            s.data = Some(rwp_spec::DataSource {
                train: train.clone(),
                test: test.clone(),
                validation: self.validation.clone(),
                image_size: self.image_size,
                transforms: self.transforms,
                mean: self.mean.clone(),
                std: self.std.clone(),
                bad_samples: self.bad_samples,
                summary: None,
            });
        }
        s.seed = self.seed;
        s.independent_noise = self.independent_noise;
        s.nesterov = self.nesterov;
        // Tensors are used as stored: augmentation is for images.
        s.augment = !self.no_augment && self.dataset != DatasetKind::Tensors;
        s.max_updates = self.max_updates;
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { s.$field = v; } )* };
        }
        set!(
            epochs,
            batch_size,
            clean_shards,
            perturbed_shards,
            lr,
            momentum,
            weight_decay,
            warmup_updates,
            sigma,
            lambda,
            eta,
            beta,
            rho
        );
        let schedules = ScheduleFlags {
            lr_schedule: self.lr_schedule.clone(),
            milestones: self.milestones.clone(),
            lr_gamma: self.lr_gamma,
            sigma_schedule: self.sigma_schedule.clone(),
            sigma_inc: self.sigma_inc,
        };
        schedules.apply(&mut s.lr_schedule, &mut s.sigma_schedule)?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }
}

/// --model-file on resume is the file of a torchscript checkpoint, which
/// needs it; a built-in model's checkpoint would ignore it.
fn check_resumed_model_file(path: &Path, has_file: bool) -> Result<(), String> {
    let spec = checkpoint::read_spec(path).map_err(|e| format!("--resume {}: {e}", path.display()))?;
    match (spec.model, has_file) {
        (ModelKind::TorchScript, false) => Err(format!(
            "{} is a checkpoint of a torchscript model: give the model's file with --model-file PATH",
            path.display()
        )),
        (ModelKind::TorchScript, true) | (_, false) => Ok(()),
        (model, true) => Err(format!(
            "--model-file is only for a checkpoint of a torchscript model, and {} is one of {model}: drop --model-file",
            path.display()
        )),
    }
}

fn json_line(out: &mut Option<BufWriter<File>>, value: &serde_json::Value) -> Result<(), String> {
    if let Some(w) = out {
        writeln!(w, "{value}").map_err(|e| format!("cannot write metrics: {e}"))?;
    }
    Ok(())
}

/// Progress lines go above the bar on a terminal, or plainly to stderr.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = parse_device(&args.device).map_err(|e| e.to_string())?;
    let mut trainer = match &args.resume {
        Some(path) => {
            check_resumed_model_file(path, args.model_file.is_some())?;
            let extend = Extension::from_flags(args.epochs, args.max_updates);
            LocalTrainer::resume(path, device, args.model_file.as_deref(), &extend)
        }
        None => match &args.init_from {
            Some(initial) => LocalTrainer::from_weights(args.spec()?, device, args.model_file.as_deref(), initial),
            None => LocalTrainer::with_model_file(args.spec()?, device, args.model_file.as_deref()),
        },
    }
    .map_err(|e| e.to_string())?;
    let mut metrics = match &args.metrics {
        Some(path) => {
            Some(BufWriter::new(File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?))
        }
        None => None,
    };
    if let Some(dir) = &args.checkpoint_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let spec = trainer.spec.clone();
    let total = trainer.schedule.total_updates;
    let per_epoch = trainer.schedule.updates_per_epoch;
    eprintln!(
        "rwp-train: {} on {} ({}, {} parameters), {} updates ({} per epoch), device {:?}",
        spec.method,
        spec.dataset,
        spec.model,
        trainer.model.num_parameters(),
        total,
        per_epoch,
        trainer.device()
    );
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} updates  {msg}  [{elapsed_precise}<{eta_precise}]")
            .expect("valid template"),
    );
    bar.set_position(trainer.state.step);
    let started = Instant::now();
    let first_step = trainer.state.step;
    let mut last_eval = None;
    let mut training = std::time::Duration::ZERO;
    while !trainer.is_done() {
        let update_started = Instant::now();
        let report = trainer.step().map_err(|e| e.to_string())?;
        let update_time = update_started.elapsed();
        training += update_time;
        let step = trainer.state.step;
        bar.set_position(step);
        bar.set_message(format!("loss {:.4} acc {:.3} lr {:.4}", report.loss, report.accuracy, report.lr));
        json_line(
            &mut metrics,
            &serde_json::json!({
                "kind": "update", "step": step, "loss": report.loss, "accuracy": report.accuracy,
                "perturbed_loss": report.perturbed_loss, "lr": report.lr, "sigma": report.sigma,
                "update_ms": update_time.as_secs_f64() * 1000.0,
                "wall_time_s": started.elapsed().as_secs_f64(),
            }),
        )?;
        let epoch_end = step % per_epoch == 0;
        let eval_now =
            step == total || (args.eval_every > 0 && epoch_end && (step / per_epoch) % u64::from(args.eval_every) == 0);
        if eval_now {
            let eval = trainer.evaluate().map_err(|e| e.to_string())?;
            let validation = trainer.evaluate_validation().map_err(|e| e.to_string())?;
            let val_text =
                validation.map(|v| format!("  val loss {:.4}  val acc {:.4}", v.loss, v.accuracy)).unwrap_or_default();
            say(
                &bar,
                format!(
                    "epoch {:>4}  update {step:>6}  train loss {:.4}{val_text}  test loss {:.4}  test acc {:.4}",
                    step.div_ceil(per_epoch),
                    report.loss,
                    eval.loss,
                    eval.accuracy
                ),
            );
            json_line(
                &mut metrics,
                &serde_json::json!({
                    "kind": "eval", "step": step, "epoch": step.div_ceil(per_epoch), "test_loss": eval.loss,
                    "test_accuracy": eval.accuracy, "validation_loss": validation.map(|v| v.loss),
                    "validation_accuracy": validation.map(|v| v.accuracy),
                    "wall_time_s": started.elapsed().as_secs_f64(),
                }),
            )?;
            last_eval = Some(eval);
        }
        if let Some(dir) = &args.checkpoint_dir {
            if step == total || (args.checkpoint_every > 0 && step % args.checkpoint_every == 0) {
                trainer.save_checkpoint(&dir.join(format!("step-{step:08}.safetensors"))).map_err(|e| e.to_string())?;
            }
        }
    }
    bar.finish_and_clear();
    if let Some(first) = trainer.skipped_sample_examples.first() {
        eprintln!(
            "rwp-train: {} times a sample was left out of a training batch (bad_samples = skip); {} distinct, the \
             first: {first}",
            trainer.skipped_samples,
            trainer.skipped_sample_examples.len()
        );
    }
    let wall = started.elapsed().as_secs_f64();
    let eval = match last_eval {
        Some(eval) => eval,
        None => trainer.evaluate().map_err(|e| e.to_string())?,
    };
    let updates = trainer.state.step - first_step;
    if let Some(w) = &mut metrics {
        w.flush().map_err(|e| format!("cannot write metrics: {e}"))?;
    }
    println!(
        "summary method={} model={} dataset={} updates={} test_accuracy={:.4} test_loss={:.4} wall_time_s={:.2} ms_per_update={:.2}",
        spec.method,
        spec.model,
        spec.dataset,
        trainer.state.step,
        eval.accuracy,
        eval.loss,
        wall,
        if updates > 0 { 1000.0 * training.as_secs_f64() / updates as f64 } else { 0.0 }
    );
    Ok(())
}

fn main() -> ExitCode {
    let parsed = Args::command().try_get_matches().and_then(|m| Args::from_arg_matches(&m).map(|a| (a, m)));
    let args = match parsed {
        Ok((args, matches)) => {
            let ignored = ignored_on_resume(&matches);
            if args.resume.is_some() && !ignored.is_empty() {
                eprintln!(
                    "error: --resume continues with the spec in its checkpoint, so {} would be ignored: drop {} \
                     (with --resume: --epochs, --max-updates, --device, --threads, --eval-every, --metrics, \
                     --checkpoint-dir, --checkpoint-every, --model-file, --quiet)",
                    and_list(&ignored),
                    if ignored.len() == 1 { "it" } else { "them" }
                );
                return ExitCode::from(2);
            }
            args
        }
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line naming the problem; clap's usage hint follows only with --help.
            let rendered = e.to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("invalid arguments"));
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
