//! The command line: subcommands, flags and their help texts.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;
use rwp_sdk::{DatasetKind, GradientEncoding, LrSchedule, Method, ModelKind, NonFinitePolicy, SigmaSchedule, Token};

const ABOUT: &str = "Command-line client of the RWP distributed training service";

const LONG_ABOUT: &str = "\
Command-line client of the RWP distributed training service.

Submits training jobs (random weight perturbation: sgd, sam, rwp, arwp, m-rwp,
m-arwp) to an rwp-server, lists and follows them, cancels them, downloads their
weights and draws their learning curves.";

const AFTER_HELP: &str = "\
Examples:
  rwp submit job.toml --watch            submit a job file and follow it to the end
  rwp submit --method m-arwp --epochs 5  submit with the method's reference settings
  rwp list                               the jobs you may see, as a table
  rwp watch job-5e768fc32c72             progress bar until the job ends
  rwp watch 5e76                         the same: a unique prefix of the id will do, or the job's name
  rwp plot job-5e768fc32c72 job-90ab12cd34ef -o curves.svg
  rwp --server https://rwp.example.org:50051 --tls-ca ca.pem list
  rwp --server https://rwp:50051 --tls-ca ca.pem --tls-cert me.crt --tls-key me.key list
  RWP_TOKEN_FILE=~/.config/rwp/token rwp list    a server with a tokens file
  rwp completions bash > /etc/bash_completion.d/rwp

Exit status:
  0    success (watch, submit --watch: the job succeeded)
  1    an error, e.g. the server is unreachable (watch: the job failed; sweep watch: the sweep did not succeed)
  2    a usage, flag or job-file error
  3    watch: the job was cancelled
  4    watch: the job was stopped early by its sweep's early stopping
  130  watch: stopped with Ctrl-C (the job goes on)";

const SUBMIT_AFTER_HELP: &str = "\
The job comes from a job file, from flags, or both: every setting starts from
the method's reference value (docs/algorithms.md in the repository, section
Reference hyper-parameters), then the job file's, then the flags'. Only the
job id is printed on stdout; with --watch, progress goes to stderr and a
summary line to stdout, as `rwp watch` does.

Job file (TOML): a `method` and only the settings that differ from its
reference; unknown keys are rejected with their line.

  name = \"cifar-marwp\"          # optional
  method = \"m-arwp\"             # sgd | sam | rwp | arwp | m-rwp | m-arwp
  model = \"resnet18\"            # mlp | small-cnn | resnet18 | resnet50 | vgg16-bn | wrn16-8 | wrn28-10
  dataset = \"cifar10\"           # synthetic | mnist | cifar10 | cifar100
  data_dir = \"/data/cifar10\"    # read by every worker
  seed = 0
  epochs = 200
  max_updates = 1000            # stop early; schedules still span all epochs
  batch_size = 256
  clean_shards = 1              # tasks the clean batch is split into
  perturbed_shards = 1          # tasks the perturbed batch is split into
  independent_noise = false     # one ε per perturbed shard
  lr = 0.1
  momentum = 0.9
  nesterov = false
  weight_decay = 0.001
  lr_schedule = { kind = \"cosine-per-epoch\" }   # constant | cosine-per-update |
                                  # { kind = \"step\", milestones = [60, 120], gamma = 0.2 }
                                  # (the names of --lr-schedule, and of rwp-train's)
  warmup_updates = 0
  sigma = 0.015                 # perturbation scale σ
  sigma_schedule = { kind = \"constant\" }        # or { kind = \"cosine-increasing\", inc = 10.0 }
  lambda = 0.5                  # weight of the perturbed gradient (m-rwp, m-arwp)
  eta = 0.1                     # adaptive scale η (arwp, m-arwp)
  beta = 0.99                   # history decay β (arwp, m-arwp)
  rho = 0.05                    # SAM radius ρ
  augment = true                # crop, flip, Cutout (CIFAR)
  non_finite = \"fail\"           # fail | skip
  gradient_encoding = \"f32\"     # f32 | bf16

Examples:
  rwp submit job.toml
  rwp submit job.toml --epochs 1 --name smoke-test --watch
  rwp submit --method sgd --model resnet18 --dataset cifar10 --data-dir /data/cifar10 --epochs 200";

const WATCH_AFTER_HELP: &str = "\
Shows a progress bar (step/total, loss, accuracy, updates/s, ETA) on stderr and
prints each test evaluation above it; when stderr is not a terminal, prints a
plain progress line every --interval seconds instead. Ends with one summary
line on stdout, e.g.

  job job-5e768fc32c72 succeeded: step 240/240, test accuracy 0.8123, wall 41.2s, 5.83 updates/s

Exit status: 0 the job succeeded, 1 it failed (its error is printed) or the
watch failed, 3 it was cancelled, 4 it was stopped early by its sweep's early
stopping, 130 Ctrl-C stopped watching (the job goes on).";

const PLOT_AFTER_HELP: &str = "\
Draws four panels, one line per job: train loss against step and against wall
time, test accuracy against step and against wall time. The format follows the
file name: .png or .svg. A running job is drawn up to its latest update.

Examples:
  rwp plot job-5e768fc32c72 -o curves.png
  rwp plot first-run 90ab 5e76 -o compare.svg --width 1600 --height 1000   (names and id prefixes work too)";

/// `rwp`: the command line.
#[derive(Debug, Parser)]
#[command(
    name = "rwp",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the server; accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Address of the rwp-server: http://host:port, or https://host:port for TLS
    #[arg(
        long,
        global = true,
        env = "RWP_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL",
        display_order = 100
    )]
    pub server: String,
    /// PEM file of the CA that signed the server's certificate (turns TLS on)
    #[arg(long, global = true, env = "RWP_TLS_CA", value_name = "PATH", display_order = 101)]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of a certificate to present to a server that requires mutual TLS (with --tls-key)
    #[arg(long, global = true, env = "RWP_TLS_CERT", value_name = "PATH", display_order = 102)]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert
    #[arg(long, global = true, env = "RWP_TLS_KEY", value_name = "PATH", display_order = 102)]
    pub tls_key: Option<PathBuf>,
    /// Name to check the server's certificate against, when it differs from the host of --server
    #[arg(long, global = true, env = "RWP_TLS_DOMAIN", value_name = "NAME", display_order = 102)]
    pub tls_domain: Option<String>,
    /// Bearer token for a server that requires one (prefer RWP_TOKEN or --token-file: a flag shows in `ps`)
    #[arg(long, global = true, env = "RWP_TOKEN", hide_env_values = true, value_name = "TOKEN", display_order = 103)]
    pub token: Option<Token>,
    /// File holding the bearer token (e.g. ~/.config/rwp/token, or a mounted Secret)
    #[arg(long, global = true, env = "RWP_TOKEN_FILE", value_name = "PATH", display_order = 103)]
    pub token_file: Option<PathBuf>,
    /// Retries of a call that could not reach the server (a retried submit carries the first attempt's request id, so it starts one job)
    #[arg(
        long,
        global = true,
        env = "RWP_RETRIES",
        default_value_t = 1,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(0..=100),
        display_order = 103
    )]
    pub retries: u32,
    /// Seconds to wait for the server to answer when connecting
    #[arg(
        long,
        global = true,
        default_value = "5",
        value_name = "SECS",
        value_parser = parse_seconds,
        display_order = 104
    )]
    pub connect_timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit a job from a TOML job file and/or flags; prints its id
    #[command(after_help = SUBMIT_AFTER_HELP)]
    Submit(Box<SubmitArgs>),
    /// List the jobs you may see (yours; all for an admin) as a table (or JSON)
    #[command(visible_alias = "ls")]
    List(JobListArgs),
    /// Show one job: spec, state, progress, latest metrics, error
    Get(GetArgs),
    /// Follow a job live until it ends; the exit status tells how it ended
    #[command(after_help = WATCH_AFTER_HELP)]
    Watch(WatchArgs),
    /// Cancel a job (its workers stop after the update in progress)
    Cancel(CancelArgs),
    /// Continue a job that ended (succeeded, cancelled, failed, stopped) from its latest checkpoint
    #[command(after_help = RESUME_AFTER_HELP)]
    Resume(ResumeArgs),
    /// A job's event log: submitted, tasks leased and by whom, workers lost and tasks re-issued, pauses, evaluations, the end
    #[command(
        after_help = "Examples:\n  rwp logs job-5e768fc32c72\n  rwp logs job-5e768fc32c72 --follow     # until the job ends\n  rwp logs job-5e768fc32c72 --json       # one JSON object per line"
    )]
    Logs(LogsArgs),
    /// The workers the server knows: name, device, connected, current job and task, tasks done, last seen
    Workers(WorkersArgs),
    /// Delete a job that ended: its record, metrics, checkpoints and TensorBoard run
    #[command(
        after_help = "Example:\n  rwp delete job-5e768fc32c72\n\nA running job is cancelled first (rwp cancel)."
    )]
    Delete(DeleteArgs),
    /// Download a job's current weights as a safetensors file
    #[command(after_help = "Example:\n  rwp export job-5e768fc32c72 -o marwp.safetensors")]
    Export(ExportArgs),
    /// Draw learning curves of one or more jobs to a PNG or SVG file
    #[command(after_help = PLOT_AFTER_HELP)]
    Plot(PlotArgs),
    /// Sweeps: run a search over job settings (σ, λ, η, lr, ...) and pick
    /// the best trial by validation accuracy
    #[command(subcommand, after_help = SWEEP_AFTER_HELP)]
    Sweep(SweepCommand),
    /// Model files: list the TorchScript files you uploaded, delete ones you no longer need
    #[command(subcommand, after_help = MODEL_AFTER_HELP)]
    Model(ModelCommand),
    /// Your own data: check a dataset on this machine before a job trains on it
    #[command(subcommand, after_help = DATASET_AFTER_HELP)]
    Dataset(DatasetCommand),
    /// Print a shell completion script
    #[command(after_help = "\
Examples:
  rwp completions bash > ~/.local/share/bash-completion/completions/rwp
  rwp completions zsh > ~/.zfunc/_rwp
  rwp completions fish > ~/.config/fish/completions/rwp.fish")]
    Completions(CompletionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// Job file (TOML); see below for its keys. Without one, --method is required
    #[arg(value_name = "JOBFILE")]
    pub job_file: Option<PathBuf>,
    /// Name of the job (default: the job file's `name`, else its file name)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Follow the job after submitting it, as `rwp watch` does
    #[arg(long)]
    pub watch: bool,
    /// With --watch: seconds between progress lines when stderr is not a terminal
    #[arg(long, default_value = "5", value_name = "SECS", value_parser = parse_seconds)]
    pub interval: f64,
    /// A label KEY=VALUE for the job (repeat for more); `rwp list --label` filters by them
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Start from the latest weights and BatchNorm statistics of this job (id, prefix or name)
    /// instead of the seed's: fine-tuning, warm starts. The model must be the same; the
    /// optimizer starts fresh
    #[arg(long, value_name = "JOB")]
    pub init_from: Option<String>,
    #[command(flatten)]
    pub settings: SpecFlags,
}

/// Job settings given as flags; each overrides the job file's value.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Job settings (override the job file)")]
pub struct SpecFlags {
    /// Training method (required without a job file)
    #[arg(long, value_name = "METHOD", value_parser = method_parser())]
    pub method: Option<Method>,
    /// Model architecture (torchscript: the module of --model-file)
    #[arg(long, value_name = "MODEL", value_parser = model_parser())]
    pub model: Option<ModelKind>,
    /// TorchScript file (torch.jit.script(model).save(path)) of --model torchscript; uploaded on submit
    #[arg(long, value_name = "PT")]
    pub model_file: Option<PathBuf>,
    /// Dataset (synthetic is built in; the others read --data-dir)
    #[arg(long, value_name = "DATASET", value_parser = dataset_parser())]
    pub dataset: Option<DatasetKind>,
    /// Directory of the dataset's files, as the workers see it (a relative one is made absolute here)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Root seed of the weights, sample order, augmentation and noise
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Epochs (passes over the training set) the schedules span
    #[arg(long, value_name = "N")]
    pub epochs: Option<u32>,
    /// Stop after this many updates (schedules still span all epochs)
    #[arg(long, value_name = "N")]
    pub max_updates: Option<u64>,
    /// Samples per mini-batch (clean and perturbed batches alike)
    #[arg(long, value_name = "N")]
    pub batch_size: Option<u32>,
    /// Tasks the clean (or SAM) batch of each update is split into
    #[arg(long, value_name = "N")]
    pub clean_shards: Option<u32>,
    /// Tasks the perturbed batch of each update is split into
    #[arg(long, value_name = "N")]
    pub perturbed_shards: Option<u32>,
    /// Draw an independent ε for each perturbed shard
    #[arg(long)]
    pub independent_noise: bool,
    /// Learning rate
    #[arg(long, value_name = "LR")]
    pub lr: Option<f64>,
    /// SGD momentum, in [0, 1)
    #[arg(long, value_name = "M")]
    pub momentum: Option<f64>,
    /// Nesterov momentum
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (coupled, as PyTorch's SGD)
    #[arg(long, value_name = "WD")]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule: constant, step (with --milestones, --lr-gamma), cosine-per-update or cosine-per-epoch
    #[arg(long, value_name = "SCHEDULE", value_parser = lr_schedule_parser())]
    pub lr_schedule: Option<String>,
    /// Epochs at which the step schedule multiplies the rate by --lr-gamma (comma-separated)
    #[arg(long, value_name = "EPOCHS", value_delimiter = ',')]
    pub milestones: Option<Vec<u32>>,
    /// Factor the step schedule multiplies the rate by at each milestone (default 0.1)
    #[arg(long, value_name = "GAMMA")]
    pub lr_gamma: Option<f64>,
    /// Linear learning-rate warmup over this many updates
    #[arg(long, value_name = "N")]
    pub warmup_updates: Option<u64>,
    /// Perturbation scale σ
    #[arg(long, value_name = "SIGMA")]
    pub sigma: Option<f64>,
    /// σ schedule: constant or cosine-increasing (with --sigma-inc)
    #[arg(long, value_name = "SCHEDULE", value_parser = sigma_schedule_parser())]
    pub sigma_schedule: Option<String>,
    /// Growth of the cosine-increasing σ schedule (default 10)
    #[arg(long, value_name = "INC")]
    pub sigma_inc: Option<f64>,
    /// Weight λ of the perturbed gradient (m-rwp, m-arwp), in [0, 1]
    #[arg(long, value_name = "LAMBDA")]
    pub lambda: Option<f64>,
    /// Adaptive scale η (arwp, m-arwp)
    #[arg(long, value_name = "ETA")]
    pub eta: Option<f64>,
    /// History decay β (arwp, m-arwp), in [0, 1)
    #[arg(long, value_name = "BETA")]
    pub beta: Option<f64>,
    /// SAM radius ρ
    #[arg(long, value_name = "RHO")]
    pub rho: Option<f64>,
    /// Turn the data augmentation off
    #[arg(long)]
    pub no_augment: bool,
    /// What a NaN or infinite gradient does: fail the job, or skip the update
    #[arg(long, value_name = "POLICY", value_parser = non_finite_parser())]
    pub non_finite: Option<NonFinitePolicy>,
    /// Wire format of gradients: f32 (bit-exact) or bf16 (half the bytes)
    #[arg(long, value_name = "ENCODING", value_parser = encoding_parser())]
    pub gradient_encoding: Option<GradientEncoding>,
    /// Hold out this fraction of the training set for validation, in [0, 0.5)
    #[arg(long, value_name = "FRACTION")]
    pub validation_fraction: Option<f64>,
}

const SWEEP_AFTER_HELP: &str = "\
Examples:
  rwp sweep submit sigma.toml --watch      # run a sweep, follow it, print the table
  rwp sweep get sweep-3fa2c81b07 --best-job-file best.toml
  rwp sweep plot sweep-3fa2c81b07 -o plots/
  rwp submit best.toml                     # train the best trial's settings again

A sweep file is a job file (the base of every trial, with validation_fraction > 0)
plus [search] with [[search.param]] entries, optional [early_stopping] and
`concurrency`; see docs/tuning-sigma.md.";

#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// Create a sweep from a TOML sweep file; prints its id
    Submit(SweepSubmitArgs),
    /// Follow a sweep: each trial's progress, then the table of results
    Watch(SweepWatchArgs),
    /// List the sweeps you may see
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// The trials of a sweep sorted by validation accuracy (with test accuracy and cost)
    Get(SweepGetArgs),
    /// Plot validation accuracy against each swept field, and every trial's curves
    Plot(SweepPlotArgs),
    /// Cancel a sweep's running trials; waiting ones never start
    Cancel(SweepIdArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SweepSubmitArgs {
    /// Sweep file (TOML)
    #[arg(value_name = "SWEEPFILE")]
    pub file: PathBuf,
    /// Name of the sweep (default: the file's `name`, else its file name)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Follow the sweep after creating it, as `rwp sweep watch` does
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SweepIdArgs {
    /// Sweep id
    #[arg(value_name = "SWEEP")]
    pub sweep: String,
}

#[derive(Debug, Clone, Args)]
pub struct SweepWatchArgs {
    /// Sweep id
    #[arg(value_name = "SWEEP")]
    pub sweep: String,
    /// Write the best trial's spec as a job file when the sweep ends
    #[arg(long, value_name = "FILE")]
    pub best_job_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct SweepGetArgs {
    /// Sweep id
    #[arg(value_name = "SWEEP")]
    pub sweep: String,
    /// Write the best trial's spec as a job file (loadable by `rwp submit`)
    #[arg(long, value_name = "FILE")]
    pub best_job_file: Option<PathBuf>,
    /// Print JSON instead of the table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SweepPlotArgs {
    /// Sweep id
    #[arg(value_name = "SWEEP")]
    pub sweep: String,
    /// Directory to write the images to (created if missing)
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Image format: png or svg
    #[arg(long, default_value = "png", value_parser = ["png", "svg"])]
    pub format: String,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Print JSON (an array of jobs) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct JobListArgs {
    /// Print JSON (an array of jobs) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Only jobs with this label (repeat: jobs with all of them)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

const RESUME_AFTER_HELP: &str = "\
The job goes on from its latest checkpoint with the same settings, on the same
workers' pool; its learning-rate and σ schedules span the job's epochs, so a job
stopped by its update cap (--max-updates) and resumed without it ends with the
same weights as one that ran uninterrupted.

Examples:
  rwp resume job-5e768fc32c72                   # a cancelled or failed job goes on
  rwp resume job-5e768fc32c72 --epochs 40       # train a finished job for longer
  rwp resume job-5e768fc32c72 --max-updates 0   # lift the update cap
  rwp resume job-5e768fc32c72 --watch";

#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// Job: its id (job-5e768fc32c72), a unique prefix of it (job-5e76 or 5e76), or its name
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Epochs in all (more than the job has done); the schedules then span them
    #[arg(long, value_name = "N")]
    pub epochs: Option<u32>,
    /// Stop after this many updates in all (0: no cap, run all the epochs)
    #[arg(long, value_name = "N")]
    pub max_updates: Option<u64>,
    /// Follow the job after resuming it, as `rwp watch` does
    #[arg(long)]
    pub watch: bool,
    /// With --watch: seconds between progress lines when stderr is not a terminal
    #[arg(long, default_value = "5", value_name = "SECS", value_parser = parse_seconds)]
    pub interval: f64,
}

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// Job: its id (job-5e768fc32c72), a unique prefix of it (job-5e76 or 5e76), or its name
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Keep printing entries as they come, until the job ends
    #[arg(short, long)]
    pub follow: bool,
    /// One JSON object per entry and line instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    /// Print JSON (an array of workers) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Job: its id (job-5e768fc32c72), a unique prefix of it (job-5e76 or 5e76), or its name
    #[arg(value_name = "JOB")]
    pub job: String,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    rwp_spec::labels::parse(text)
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Job: its id (job-5e768fc32c72), a unique prefix of it (job-5e76 or 5e76), or its name
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Job: its id (job-5e768fc32c72), a unique prefix of it (job-5e76 or 5e76), or its name
    #[arg(value_name = "JOB")]
    pub job: String,
    /// Seconds between progress lines when stderr is not a terminal
    #[arg(long, default_value = "5", value_name = "SECS", value_parser = parse_seconds)]
    pub interval: f64,
}

const MODEL_AFTER_HELP: &str = "\
Uploaded files (rwp submit --model-file, sweep files' model_file) belong to the
token that uploaded them: a job may name only its submitter's files (an admin's
any), and each token may store up to the server's max_model_bytes_per_owner.
The server deletes a file once no owner is left and no running job names it,
and any file no running job has named for unreferenced_model_retention_ms
(7 days by default) after its last upload.

Examples:
  rwp model list                   your files: SHA256, SIZE, UPLOADED (an admin's: every owner's)
  rwp model list --json
  rwp model delete 3b0c...e41f     give up your copy of a file";

const DATASET_AFTER_HELP: &str = "\
Examples:
  rwp dataset inspect /data/imagenet         a folder with train/ and val/ (or test/) in it
  rwp dataset inspect --job resnet50.toml    the [data] of a job file
  rwp dataset inspect /data/shards --json

The exit status is 1 when some sample cannot be read or decoded.";

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// List a dataset as a job's workers would, decode every image, and
    /// print its kind, classes, samples per split, input shape and the
    /// samples that cannot be read or decoded
    Inspect(DatasetInspectArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatasetInspectArgs {
    /// A folder holding the dataset's splits: train/, and test/ or val/
    /// (validation/ too); their files tell the kind
    #[arg(value_name = "LOCATION", required_unless_present = "job", conflicts_with = "job")]
    pub location: Option<String>,
    /// Inspect the data of a job file (its dataset and [data] table) instead
    #[arg(long, value_name = "FILE")]
    pub job: Option<std::path::PathBuf>,
    /// image-folder, tar-shards or tensors (found from the files when not given)
    #[arg(long, value_parser = dataset_parser())]
    pub kind: Option<DatasetKind>,
    /// Images: the side of the square inputs the model would see
    #[arg(long, default_value_t = rwp_spec::data::DEFAULT_IMAGE_SIZE)]
    pub image_size: u32,
    /// List the samples only: do not decode the images
    #[arg(long)]
    pub no_decode: bool,
    /// Have the service inspect the job file's data on a worker, as the
    /// job's workers will read it (their credentials and mounts), instead
    /// of reading it here; needs --job
    #[arg(long)]
    pub on_workers: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List the model files you uploaded (all, with owners, for an admin)
    #[command(visible_alias = "ls")]
    List(ModelListArgs),
    /// Give up your ownership of an uploaded model file
    Delete(ModelDeleteArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ModelListArgs {
    /// Print JSON (an array of files) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ModelDeleteArgs {
    /// The file's SHA-256 (64 hex digits), as `rwp model list` shows it
    #[arg(value_name = "SHA256")]
    pub sha256: String,
}

#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// Job: its id (job-5e768fc32c72), a unique prefix of it (job-5e76 or 5e76), or its name
    #[arg(value_name = "JOB")]
    pub job: String,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Job: its id (job-5e768fc32c72), a unique prefix of it (job-5e76 or 5e76), or its name
    #[arg(value_name = "JOB")]
    pub job: String,
    /// File to write (safetensors), replaced atomically
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Jobs, one line each: ids, unique id prefixes or names
    #[arg(value_name = "JOB", required = true)]
    pub jobs: Vec<String>,
    /// Image to write: FILE.png or FILE.svg
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Image width in pixels
    #[arg(long, default_value_t = 1400, value_parser = clap::value_parser!(u32).range(200..=10_000))]
    pub width: u32,
    /// Image height in pixels
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(200..=10_000))]
    pub height: u32,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// Shell to generate for
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds in (0, 86400]")),
    }
}

fn method_parser() -> impl TypedValueParser<Value = Method> {
    PossibleValuesParser::new(Method::ALL.map(Method::name))
        .map(|s| s.parse::<Method>().expect("clap only lets possible values through"))
}

fn model_parser() -> impl TypedValueParser<Value = ModelKind> {
    PossibleValuesParser::new(ModelKind::ALL.map(ModelKind::name))
        .map(|s| s.parse::<ModelKind>().expect("clap only lets possible values through"))
}

fn dataset_parser() -> impl TypedValueParser<Value = DatasetKind> {
    PossibleValuesParser::new(DatasetKind::ALL.map(DatasetKind::name))
        .map(|s| s.parse::<DatasetKind>().expect("clap only lets possible values through"))
}

/// The schedules' names ([`LrSchedule::NAMES`]), and rwp-train's older
/// short ones as hidden aliases.
fn lr_schedule_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(LrSchedule::NAMES.map(|name| match name {
        "cosine-per-update" => PossibleValue::new(name).alias("cosine-update"),
        "cosine-per-epoch" => PossibleValue::new(name).alias("cosine-epoch"),
        _ => PossibleValue::new(name),
    }))
}

fn sigma_schedule_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(SigmaSchedule::NAMES.map(|name| match name {
        "cosine-increasing" => PossibleValue::new(name).alias("cosine-inc"),
        _ => PossibleValue::new(name),
    }))
}

fn non_finite_parser() -> impl TypedValueParser<Value = NonFinitePolicy> {
    PossibleValuesParser::new(["fail", "skip"]).map(|s| match s.as_str() {
        "skip" => NonFinitePolicy::Skip,
        _ => NonFinitePolicy::Fail,
    })
}

fn encoding_parser() -> impl TypedValueParser<Value = GradientEncoding> {
    PossibleValuesParser::new(["f32", "bf16"]).map(|s| match s.as_str() {
        "bf16" => GradientEncoding::Bf16,
        _ => GradientEncoding::F32,
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_into_typed_values() {
        let cli = Cli::try_parse_from([
            "rwp",
            "submit",
            "--method",
            "m-rwp",
            "--model",
            "wrn16-8",
            "--dataset",
            "cifar100",
            "--non-finite",
            "skip",
            "--gradient-encoding",
            "bf16",
            "--server",
            "http://h:1",
        ])
        .unwrap();
        assert_eq!(cli.connection.server, "http://h:1");
        let Command::Submit(args) = cli.command else { panic!("not submit") };
        assert_eq!(args.settings.method, Some(Method::MRwp));
        assert_eq!(args.settings.model, Some(ModelKind::Wrn16_8));
        assert_eq!(args.settings.dataset, Some(DatasetKind::Cifar100));
        assert_eq!(args.settings.non_finite, Some(NonFinitePolicy::Skip));
        assert_eq!(args.settings.gradient_encoding, Some(GradientEncoding::Bf16));
        let err = Cli::try_parse_from(["rwp", "submit", "--method", "adam"]).unwrap_err().to_string();
        assert!(err.contains("adam") && err.contains("m-arwp"), "{err}");
        let err = Cli::try_parse_from(["rwp", "watch", "j", "--interval", "0"]).unwrap_err().to_string();
        assert!(err.contains("seconds"), "{err}");
    }
}
