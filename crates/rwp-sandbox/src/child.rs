//! The sandbox process (`rwp-sandbox`): confines itself, then serves one
//! host's requests for one model file (and, once opened, one job) until the
//! host closes the socket or kills it.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Instant;

use rwp_core::data::{Batch, DatasetInfo};
use rwp_core::grad::compute_task;
use rwp_core::model::{inspect_script, InputShape, Model, ScriptModule, ScriptSource};
use rwp_core::trainer::{evaluate_batch, parse_device};
use rwp_core::wire::{self, Snapshot};
use rwp_spec::plan::init_seed;
use rwp_spec::{JobSpec, Schedule};
use tch::{Device, Kind, Tensor};

use crate::allowlist;
use crate::confine::confine;
use crate::panic_message;
use crate::protocol::{self, BatchAt, ExactBatch, Policy, Request, Response, WEIGHT_SLOTS};
use crate::shm::Region;

/// The entry point of the `rwp-sandbox` binary: `rwp-sandbox POLICY_JSON`,
/// its control socket on standard input.
#[must_use]
pub fn main() -> ExitCode {
    let Some(policy) = std::env::args().nth(1) else {
        eprintln!("rwp-sandbox runs model code for rwp-server and rwp-worker, which start it; it is not run by hand");
        return ExitCode::from(2);
    };
    let policy: Policy = match serde_json::from_str(&policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rwp-sandbox: bad policy: {e}");
            return ExitCode::from(2);
        }
    };
    let confinement = match confine(&policy) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rwp-sandbox: {e}");
            return ExitCode::from(3);
        }
    };
    eprintln!("rwp-sandbox: confined (uid {}, Landlock {}, seccomp on)", confinement.uid, confinement.landlock);
    let device = match parse_device(&policy.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rwp-sandbox: {e}");
            return ExitCode::from(2);
        }
    };
    if policy.threads > 0 {
        tch::set_num_threads(policy.threads);
    }
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("rwp-sandbox: no control socket: {e}");
            return ExitCode::from(2);
        }
    };
    let mut sandbox = Sandbox { device, job: None, input: None, output: None };
    loop {
        let (request, fds) = match protocol::recv::<Request>(&socket) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rwp-sandbox: {e}");
                return ExitCode::from(4);
            }
        };
        let answer = std::panic::catch_unwind(AssertUnwindSafe(|| sandbox.handle(request, fds)))
            .unwrap_or_else(|panic| Err(failed(panic_message(&*panic))));
        let (answer, fatal) = match answer {
            Ok(a) => (a, false),
            // After a failure the job's state may be half updated: the host
            // starts a fresh sandbox for what comes next.
            Err(a) => (a, true),
        };
        if protocol::send(&socket, &answer, &[]).is_err() || fatal {
            let _ = std::io::stderr().flush();
            return ExitCode::from(if fatal { 1 } else { 4 });
        }
    }
}

fn failed(message: String) -> Response {
    Response::Failed { message, refused: false }
}

/// Checks a loaded module's code against the allowlist.
fn vet(module: &ScriptModule) -> Result<(), String> {
    let operations = module.operations().map_err(|e| format!("cannot read the module's code: {e}"))?;
    allowlist::check(operations.iter().map(|o| (o.function.as_str(), o.op.as_str()))).map_err(|r| r.to_string())
}

struct Job {
    spec: JobSpec,
    shape: InputShape,
    model: Model,
    initial: Vec<u8>,
    weights: [Option<Snapshot>; WEIGHT_SLOTS],
}

impl Job {
    /// Installs the snapshot of `len` bytes in the input region into `slot`
    /// when given; returns the slot's weights and the job's model.
    fn weights(
        &mut self,
        input_region: &Option<Region>,
        snapshot_len: Option<u64>,
        slot: usize,
        device: Device,
    ) -> Result<(&Snapshot, &Model), Response> {
        let held = self.weights.get_mut(slot).ok_or_else(|| failed(format!("no weights slot {slot}")))?;
        if let Some(len) = snapshot_len {
            let bytes = input(input_region, len)?;
            *held = Some(wire::decode_snapshot(bytes, &self.model, device).map_err(|e| failed(e.to_string()))?);
        }
        let weights = held.as_ref().ok_or_else(|| failed("no weights version is installed".to_owned()))?;
        Ok((weights, &self.model))
    }

    /// The batch the host placed at `at` in the input region, on `device`.
    fn batch(&self, input_region: &Option<Region>, at: BatchAt, device: Device) -> Result<Batch, Response> {
        let InputShape { channels, height, width } = self.shape;
        let samples = i64::try_from(at.samples).map_err(|_| failed(format!("a batch of {} samples", at.samples)))?;
        let images_len = (samples * channels * height * width) as u64 * 4;
        let start = at.offset;
        let end = start.checked_add(images_len).and_then(|m| m.checked_add(at.samples * 8));
        let bytes = end
            .and_then(|end| input(input_region, end).ok())
            .and_then(|region| region.get(start as usize..))
            .ok_or_else(|| {
            failed(format!("a batch of {samples} samples at byte {start} does not fit the input region"))
        })?;
        let (images, labels) = bytes.split_at(images_len as usize);
        let images = Tensor::from_data_size(images, &[samples, channels, height, width], Kind::Float);
        let labels = Tensor::from_data_size(labels, &[samples], Kind::Int64);
        Ok(Batch { images, labels, skipped: Vec::new() }.to_device(device))
    }
}

struct Sandbox {
    device: Device,
    job: Option<Job>,
    input: Option<Region>,
    output: Option<Region>,
}

impl Sandbox {
    fn handle(&mut self, request: Request, fds: Vec<std::os::fd::OwnedFd>) -> Result<Response, Response> {
        match request {
            Request::Regions { input, output } => {
                let [input_fd, output_fd]: [_; 2] =
                    fds.try_into().map_err(|_| failed("Regions needs two descriptors".to_owned()))?;
                let map = |fd, len: u64| Region::map(fd, len as usize).map_err(|e| failed(format!("cannot map: {e}")));
                self.input = Some(map(input_fd, input)?);
                self.output = Some(map(output_fd, output)?);
                Ok(Response::RegionsMapped)
            }
            Request::Inspect { model_len } => {
                let model = input(&self.input, model_len)?;
                let tensors = inspect_script(ScriptSource::Bytes(model), vet).map_err(refusal)?;
                Ok(Response::Inspected { params: tensors.params, buffers: tensors.buffers })
            }
            Request::OpenJob { spec, model_len } => self.open(*spec, model_len),
            Request::InitialSnapshot => {
                let job = self.job.as_ref().ok_or_else(|| failed("no job is open".to_owned()))?;
                let out = output(&mut self.output, job.initial.len())?;
                out[..job.initial.len()].copy_from_slice(&job.initial);
                Ok(Response::Snapshot { len: job.initial.len() as u64 })
            }
            Request::Compute { task, returns_buffers, snapshot_len, slot, batch } => {
                let device = self.device;
                let job = self.job.as_mut().ok_or_else(|| failed("no job is open".to_owned()))?;
                let batch = job.batch(&self.input, batch, device)?;
                let (spec, encoding) = (job.spec.clone(), job.spec.gradient_encoding);
                let (weights, model) = job.weights(&self.input, snapshot_len, slot, device)?;
                let started = Instant::now();
                let result = compute_task(
                    &spec,
                    model,
                    &weights.weights,
                    &weights.buffers,
                    &task,
                    &batch,
                    weights.factors.as_ref(),
                );
                let buffers = match (returns_buffers, result.buffers.as_deref()) {
                    (true, Some(b)) => Some(b),
                    (true, None) => {
                        return Err(failed(format!("a {:?} task returned no BatchNorm buffers", task.role)))
                    }
                    (false, _) => None,
                };
                // Encoded straight into the shared memory the host reads.
                let region = self.output.as_mut().ok_or_else(|| failed("no output region".to_owned()))?;
                let size = region.len();
                let (gradient_bytes, buffer_bytes) =
                    wire::write_result(&result.grads, encoding, buffers, region.as_mut_slice())
                        .ok_or_else(|| failed(format!("the result does not fit the output region of {size}")))?;
                let total = gradient_bytes + buffer_bytes;
                Ok(Response::Computed {
                    payload_len: total as u64,
                    gradient_bytes: gradient_bytes as u64,
                    buffer_bytes: buffer_bytes as u64,
                    loss_bits: result.loss.to_bits(),
                    accuracy_bits: result.accuracy.to_bits(),
                    compute_micros: started.elapsed().as_micros() as u64,
                })
            }
            Request::Evaluate { task: _, snapshot_len, slot, batches } => {
                let device = self.device;
                let job = self.job.as_mut().ok_or_else(|| failed("no job is open".to_owned()))?;
                let batches =
                    batches.into_iter().map(|at| job.batch(&self.input, at, device)).collect::<Result<Vec<_>, _>>()?;
                let (weights, model) = job.weights(&self.input, snapshot_len, slot, device)?;
                let started = Instant::now();
                let results: Vec<_> =
                    batches.iter().map(|b| evaluate_batch(model, b, &weights.weights, &weights.buffers)).collect();
                Ok(Response::Evaluated {
                    batches: results.into_iter().map(ExactBatch::from).collect(),
                    compute_micros: started.elapsed().as_micros() as u64,
                })
            }
        }
    }

    fn open(&mut self, spec: JobSpec, model_len: u64) -> Result<Response, Response> {
        spec.validate().map_err(|e| failed(e.to_string()))?;
        let info = DatasetInfo::for_spec(&spec);
        let source = ScriptSource::Bytes(input(&self.input, model_len)?);
        let model = Model::load_script_vetted(source, info.shape, info.classes, self.device, vet).map_err(refusal)?;
        Schedule::new(&spec, info.train).map_err(|e| failed(e.to_string()))?;
        let (weights, buffers) = model.init(init_seed(&spec), Device::Cpu);
        let initial = wire::encode_snapshot(&model, &weights, &buffers, None);
        let named =
            |specs: &[rwp_core::model::TensorSpec]| specs.iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
        let payload_bytes = wire::gradient_len(&model, spec.gradient_encoding) + wire::buffers_len(&model);
        let response = Response::Opened {
            params: named(model.params()),
            buffers: named(model.buffers()),
            input: [info.shape.channels, info.shape.height, info.shape.width],
            classes: info.classes,
            train_samples: info.train as u64,
            snapshot_bytes: initial.len() as u64,
            payload_bytes: payload_bytes as u64,
        };
        self.job = Some(Job { spec, shape: info.shape, model, initial, weights: Default::default() });
        Ok(response)
    }
}

fn refusal(e: rwp_core::model::ModelError) -> Response {
    Response::Failed { message: e.to_string(), refused: true }
}

fn input(region: &Option<Region>, len: u64) -> Result<&[u8], Response> {
    let region = region.as_ref().ok_or_else(|| failed("no input region".to_owned()))?;
    region.as_slice().get(..len as usize).ok_or_else(|| failed(format!("{len} bytes do not fit the input region")))
}

fn output(region: &mut Option<Region>, len: usize) -> Result<&mut [u8], Response> {
    let region = region.as_mut().ok_or_else(|| failed("no output region".to_owned()))?;
    let size = region.len();
    region
        .as_mut_slice()
        .get_mut(..len)
        .ok_or_else(|| failed(format!("{len} bytes do not fit the output region of {size}")))
}
