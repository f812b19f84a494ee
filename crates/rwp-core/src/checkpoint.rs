//! Checkpoints as safetensors files that PyTorch's `safetensors` reads:
//! tensors `weights.<name>`, `buffers.<name>`, `momentum.<name>` and
//! `history.<name>` (the last two once they exist), and string metadata
//! `rwp.step`, `rwp.seed`, `rwp.model`, `rwp.spec` (the job spec as JSON) and
//! `rwp.crc32`, a checksum of the other metadata and of every tensor's name,
//! shape and bytes, so that a corrupted file is refused rather than trained on.
//!
//! [`Rotation`] keeps a job's latest checkpoint and the one before it, and
//! falls back to the older one when the latest is missing or corrupt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rwp_spec::JobSpec;
use safetensors::tensor::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

use crate::faults;
use crate::model::{Model, TensorSpec};
use crate::optim::TrainState;
use crate::wire::{safetensors_bytes, Encoded};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot access checkpoint {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a valid checkpoint: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

fn groups<'a>(model: &'a Model, state: &'a TrainState) -> Vec<(&'static str, &'a [TensorSpec], &'a [Tensor])> {
    let mut groups = vec![("weights", model.params(), state.weights()), ("buffers", model.buffers(), state.buffers())];
    if let Some(m) = state.momentum() {
        groups.push(("momentum", model.params(), m));
    }
    if let Some(h) = state.history() {
        groups.push(("history", model.params(), h));
    }
    groups
}

/// The checkpoint of `state` as the bytes of a safetensors file.
#[must_use]
pub fn to_bytes(spec: &JobSpec, model: &Model, state: &TrainState) -> Vec<u8> {
    let mut named = Vec::new();
    for (prefix, specs, tensors) in groups(model, state) {
        for (s, t) in specs.iter().zip(tensors) {
            named.push((format!("{prefix}.{}", s.name), Encoded::f32(t)));
        }
    }
    let mut metadata = HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        ("rwp.step".to_owned(), state.step.to_string()),
        ("rwp.seed".to_owned(), spec.seed.to_string()),
        ("rwp.model".to_owned(), model.kind.to_string()),
        ("rwp.spec".to_owned(), serde_json::to_string(spec).expect("a spec serialises")),
    ]);
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let crc = checksum(&metadata, named.iter().map(|(n, e)| (n.as_str(), e.shape.as_slice(), e.data.as_slice())));
    metadata.insert(CHECKSUM_KEY.to_owned(), format!("{crc:08x}"));
    safetensors_bytes(&named, Some(metadata))
}

const CHECKSUM_KEY: &str = "rwp.crc32";
const CHECKSUMMED_METADATA: [&str; 4] = ["rwp.step", "rwp.seed", "rwp.model", "rwp.spec"];

/// CRC-32 of the checksummed metadata and of the tensors, taken in name order
/// (independent of where the file lays them out).
fn checksum<'a>(
    metadata: &HashMap<String, String>,
    tensors_by_name: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>,
) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for key in CHECKSUMMED_METADATA {
        crc.update(key.as_bytes());
        crc.update(&[0]);
        crc.update(metadata.get(key).map_or(&b""[..], |v| v.as_bytes()));
        crc.update(&[0]);
    }
    for (name, shape, data) in tensors_by_name {
        crc.update(name.as_bytes());
        crc.update(&[0]);
        for d in shape {
            crc.update(&(*d as u64).to_le_bytes());
        }
        crc.update(data);
    }
    crc.finalize()
}

/// Writes `state` to `path` atomically: a temporary file, synced, renamed
/// into place. On failure (a full or read-only disk, say) the temporary file
/// is removed and whatever was at `path` is left as it was.
pub fn save(path: &Path, spec: &JobSpec, model: &Model, state: &TrainState) -> Result<(), CheckpointError> {
    let tmp = write_temporary(path, &to_bytes(spec, model, state))?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        CheckpointError::Io { path: path.to_owned(), source }
    })?;
    sync_parent(path)
}

fn temporary_path(path: &Path) -> PathBuf {
    path.with_extension("safetensors.tmp")
}

/// Writes `bytes` next to `path` in a synced temporary file; returns its path.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf, CheckpointError> {
    use std::io::Write;
    let tmp = temporary_path(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        file.write_all(head)?;
        faults::hit("checkpoint-write");
        file.write_all(tail)?;
        file.sync_all()
    })();
    written.map(|()| tmp.clone()).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        CheckpointError::Io { path: path.to_owned(), source }
    })
}

/// Makes the renames in `path`'s directory durable.
fn sync_parent(path: &Path) -> Result<(), CheckpointError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CheckpointError::Io { path: dir.to_owned(), source })
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    pub spec: JobSpec,
    pub state: TrainState,
}

/// Checks the stored checksum against the file's contents (files written
/// before checksums existed have none and pass).
fn verify_checksum(meta: &HashMap<String, String>, file: &SafeTensors<'_>) -> Result<(), String> {
    let Some(stored) = meta.get(CHECKSUM_KEY) else { return Ok(()) };
    let mut names: Vec<&String> = file.names();
    names.sort();
    let views = names.iter().map(|n| file.tensor(n).map(|v| (n.as_str(), v))).collect::<Result<Vec<_>, _>>();
    let views = views.map_err(|e| format!("{e:?}"))?;
    let actual = checksum(meta, views.iter().map(|(n, v)| (*n, v.shape(), v.data())));
    if *stored == format!("{actual:08x}") {
        Ok(())
    } else {
        Err(format!("checksum mismatch: the file says {stored}, its contents give {actual:08x}"))
    }
}

/// Checks that `bytes` are an intact checkpoint (parseable, checksum right)
/// without building any tensor; returns the step it holds.
pub fn verify(bytes: &[u8]) -> Result<u64, String> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| format!("{e:?}"))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| format!("{e:?}"))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    verify_checksum(&meta, &file)?;
    let step = meta.get("rwp.step").ok_or("metadata rwp.step is missing")?;
    step.parse().map_err(|e| format!("rwp.step: {e}"))
}

/// Reads a checkpoint written by [`save`] for `model`, onto `device`.
pub fn load(path: &Path, model: &Model, device: Device) -> Result<Checkpoint, CheckpointError> {
    let invalid = |reason: String| CheckpointError::Invalid { path: path.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_owned(), source })?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(format!("{e:?}")))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| invalid(format!("{e:?}")))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    let field = |key: &str| meta.get(key).cloned().ok_or_else(|| invalid(format!("metadata {key} is missing")));
    verify_checksum(&meta, &file).map_err(invalid)?;
    let spec: JobSpec = serde_json::from_str(&field("rwp.spec")?).map_err(|e| invalid(format!("rwp.spec: {e}")))?;
    let step: u64 = field("rwp.step")?.parse().map_err(|e| invalid(format!("rwp.step: {e}")))?;
    if spec.model != model.kind {
        return Err(invalid(format!("it holds a {} model, not {}", spec.model, model.kind)));
    }
    let read_group =
        |prefix: &str, specs: &[TensorSpec], required: bool| -> Result<Option<Vec<Tensor>>, CheckpointError> {
            let first = format!("{prefix}.{}", specs.first().map_or("", |s| s.name.as_str()));
            if !required && !specs.is_empty() && file.tensor(&first).is_err() {
                return Ok(None);
            }
            specs
                .iter()
                .map(|s| {
                    let name = format!("{prefix}.{}", s.name);
                    let view = file.tensor(&name).map_err(|_| invalid(format!("tensor {name} is missing")))?;
                    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                    if view.dtype() != Dtype::F32 || shape != s.shape {
                        return Err(invalid(format!(
                            "tensor {name} is {:?} {shape:?}, expected F32 {:?}",
                            view.dtype(),
                            s.shape
                        )));
                    }
                    Ok(Tensor::from_data_size(view.data(), &shape, Kind::Float).to_device(device))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
    let weights = read_group("weights", model.params(), true)?.expect("required");
    let buffers = read_group("buffers", model.buffers(), true)?.expect("required");
    let momentum = read_group("momentum", model.params(), false)?;
    let history = read_group("history", model.params(), false)?;
    Ok(Checkpoint { spec, state: TrainState::from_parts(weights, buffers, momentum, history, step) })
}

/// A fresh training state (step 0, no momentum or `F`) holding the weights
/// and BatchNorm statistics of the checkpoint at `path`: how a job starts
/// from another job's weights. The checkpoint must be of the same model
/// (the same tensors, names and shapes).
pub fn load_initial(path: &Path, model: &Model, device: Device) -> Result<TrainState, CheckpointError> {
    Ok(load(path, model, device)?.state.restarted())
}

/// The job spec stored in a checkpoint, reading only the file's header (a
/// checkpoint can be large, and resuming reads it in full once anyway). The
/// header must describe exactly the data the file holds, so a truncated file
/// is refused here too.
pub fn read_spec(path: &Path) -> Result<JobSpec, CheckpointError> {
    use std::io::Read;
    let invalid = |reason: String| CheckpointError::Invalid { path: path.to_owned(), reason };
    let io = |source| CheckpointError::Io { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| invalid(format!("{file_len} bytes is shorter than a header")))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len - 8 {
        return Err(invalid(format!("header length {header_len} runs past the end of the file")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| invalid(format!("header is not JSON: {e}")))?;
    let entries = header.as_object().ok_or_else(|| invalid("header is not a JSON object".to_owned()))?;
    let data_len = entries
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, info)| info["data_offsets"][1].as_u64())
        .max()
        .unwrap_or(0);
    let held = file_len - 8 - header_len;
    if held != data_len {
        return Err(invalid(format!("the header describes {data_len} data bytes, the file holds {held} (truncated?)")));
    }
    let json = header["__metadata__"]["rwp.spec"]
        .as_str()
        .ok_or_else(|| invalid("metadata rwp.spec is missing".to_owned()))?;
    serde_json::from_str(json).map_err(|e| invalid(format!("rwp.spec: {e}")))
}

/// A job's checkpoints in one directory: the latest and the one before it,
/// so that a corrupt or half-written latest file costs a few updates (which
/// a deterministic job recomputes exactly), not the job.
#[derive(Clone, Debug)]
pub struct Rotation {
    latest: PathBuf,
    previous: PathBuf,
}

/// A checkpoint file that could not be used.
#[derive(Debug)]
pub struct Rejected {
    pub error: CheckpointError,
    /// Where a corrupt file was moved, for inspection.
    pub moved_to: Option<PathBuf>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(to) = &self.moved_to {
            write!(f, " (moved to {})", to.display())?;
        }
        Ok(())
    }
}

impl Rotation {
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self { latest: dir.join("checkpoint.safetensors"), previous: dir.join("checkpoint.previous.safetensors") }
    }

    #[must_use]
    pub fn latest(&self) -> &Path {
        &self.latest
    }

    /// Writes a new latest checkpoint; the former latest becomes the previous
    /// one. A failure leaves both files as they were.
    pub fn save(&self, spec: &JobSpec, model: &Model, state: &TrainState) -> Result<(), CheckpointError> {
        let tmp = write_temporary(&self.latest, &to_bytes(spec, model, state))?;
        let renamed = (|| {
            if self.latest.exists() {
                std::fs::rename(&self.latest, &self.previous)?;
            }
            std::fs::rename(&tmp, &self.latest)
        })();
        renamed.map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            CheckpointError::Io { path: self.latest.clone(), source }
        })?;
        sync_parent(&self.latest)
    }

    /// The newest usable checkpoint, if any, and the files passed over on the
    /// way: a corrupt one is moved aside (`.corrupt-<unix ms>`), never deleted.
    /// A temporary file left by an interrupted write is removed.
    #[must_use]
    pub fn load(&self, model: &Model, device: Device) -> (Option<Checkpoint>, Vec<Rejected>) {
        let _ = std::fs::remove_file(temporary_path(&self.latest));
        let mut rejected = Vec::new();
        for path in [&self.latest, &self.previous] {
            if !path.exists() {
                continue;
            }
            match load(path, model, device) {
                Ok(checkpoint) => return (Some(checkpoint), rejected),
                Err(error) => {
                    let moved_to = matches!(error, CheckpointError::Invalid { .. })
                        .then(|| {
                            let stamp = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis());
                            let aside = path.with_extension(format!("safetensors.corrupt-{stamp}"));
                            std::fs::rename(path, &aside).ok().map(|()| aside)
                        })
                        .flatten();
                    rejected.push(Rejected { error, moved_to });
                }
            }
        }
        (None, rejected)
    }
}
