//! Checkpoints as safetensors files that PyTorch's `safetensors` reads:
//! tensors `weights.<name>`, `buffers.<name>`, `momentum.<name>` and
//! `history.<name>` (the last two once they exist), and string metadata
//! `rwp.step`, `rwp.seed`, `rwp.model` and `rwp.spec` (the job spec as JSON).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rwp_spec::JobSpec;
use safetensors::tensor::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

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
    let mut groups = vec![
        ("weights", model.params(), state.weights.as_slice()),
        ("buffers", model.buffers(), state.buffers.as_slice()),
    ];
    if let Some(m) = &state.momentum {
        groups.push(("momentum", model.params(), m.as_slice()));
    }
    if let Some(h) = &state.history {
        groups.push(("history", model.params(), h.as_slice()));
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
    let metadata = HashMap::from([
        ("format".to_owned(), "pt".to_owned()),
        ("rwp.step".to_owned(), state.step.to_string()),
        ("rwp.seed".to_owned(), spec.seed.to_string()),
        ("rwp.model".to_owned(), model.kind.to_string()),
        ("rwp.spec".to_owned(), serde_json::to_string(spec).expect("a spec serialises")),
    ]);
    safetensors_bytes(&named, Some(metadata))
}

/// Writes `state` to `path` atomically: a temporary file, synced, renamed into place.
pub fn save(path: &Path, spec: &JobSpec, model: &Model, state: &TrainState) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("safetensors.tmp");
    {
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut file, &to_bytes(spec, model, state)).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Checkpoint {
    pub spec: JobSpec,
    pub state: TrainState,
}

/// Reads a checkpoint written by [`save`] for `model`, onto `device`.
pub fn load(path: &Path, model: &Model, device: Device) -> Result<Checkpoint, CheckpointError> {
    let invalid = |reason: String| CheckpointError::Invalid { path: path.to_owned(), reason };
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_owned(), source })?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(format!("{e:?}")))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| invalid(format!("{e:?}")))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    let field = |key: &str| meta.get(key).cloned().ok_or_else(|| invalid(format!("metadata {key} is missing")));
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
    Ok(Checkpoint { spec, state: TrainState { weights, buffers, momentum, history, step } })
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
