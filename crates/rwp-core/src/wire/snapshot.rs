//! Weights snapshots: safetensors files whose data is laid out as the
//! server's flat state is, all weights in parameter order, then all
//! BatchNorm buffers, then the adaptive row factors when there are any.
//! The header depends on the model only, so [`SnapshotWriter`] works it out
//! once; publishing a version is then the header and one copy of the
//! state's bytes, into a buffer recycled from a version nobody holds any
//! more. Any safetensors reader reads a snapshot; [`decode_snapshot`] reads
//! each group of tensors that lies in one piece with one copy and moves it
//! to the device once.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::Bytes;
use safetensors::tensor::{Dtype, SafeTensors};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

use super::{concatenated_len, write_concatenated, WireError};
use crate::model::{Model, TensorSpec};
use crate::optim::TrainState;
use crate::perturb::RowFactors;

/// The shape of a parameter's row factors: one per output row (per element
/// for 1-D parameters).
fn factor_shape(shape: &[i64]) -> Vec<i64> {
    if shape.len() >= 2 {
        vec![shape[0]]
    } else {
        shape.to_vec()
    }
}

/// The safetensors header (length prefix included) of a snapshot of
/// `model`, with or without factors, padded so that the data starts at a
/// multiple of 8 bytes.
fn header(model: &Model, with_factors: bool) -> Vec<u8> {
    let mut entries = Map::new();
    let mut offset = 0usize;
    let mut add = |name: String, shape: &[i64]| {
        let len = shape.iter().product::<i64>() as usize * 4;
        entries.insert(name, json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len] }));
        offset += len;
    };
    for p in model.params() {
        add(format!("weights.{}", p.name), &p.shape);
    }
    for b in model.buffers() {
        add(format!("buffers.{}", b.name), &b.shape);
    }
    if with_factors {
        for p in model.params() {
            add(format!("factors.{}", p.name), &factor_shape(&p.shape));
        }
    }
    let mut text = serde_json::to_vec(&Value::Object(entries)).expect("a JSON object serialises");
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out
}

/// The snapshot of one weights version, written tensor by tensor.
#[must_use]
pub fn encode_snapshot(model: &Model, weights: &[Tensor], buffers: &[Tensor], factors: Option<&RowFactors>) -> Vec<u8> {
    let mut out = header(model, factors.is_some());
    let start = out.len();
    let factors = factors.map_or(&[][..], |f| f.0.as_slice());
    let len = [weights, buffers, factors].iter().map(|g| concatenated_len(g, Kind::Float)).sum::<usize>();
    out.resize(start + len, 0);
    let mut offset = start;
    for group in [weights, buffers, factors] {
        offset += write_concatenated(group, Kind::Float, &mut out[offset..]);
    }
    out
}

/// Idle snapshot buffers, shared with the snapshots that will return theirs.
type Idle = Arc<Mutex<Vec<Vec<u8>>>>;

/// Buffers kept for reuse: the version being written and one more while
/// the previous one is still being fetched.
const IDLE_BUFFERS: usize = 2;

/// A snapshot's memory: given back to its writer when the last reference
/// to the snapshot is dropped.
struct Recycled {
    data: Vec<u8>,
    idle: Weak<Mutex<Vec<Vec<u8>>>>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        if let Some(idle) = self.idle.upgrade() {
            let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < IDLE_BUFFERS {
                idle.push(std::mem::take(&mut self.data));
            }
        }
    }
}

/// Publishes the weights versions of one job: the header is computed once,
/// and each version's bytes are copied once from the flat state into a
/// buffer that an earlier version no longer needs (a fresh buffer of that
/// size would cost a page fault per 4 KiB, about as much as the copy).
pub struct SnapshotWriter {
    plain: Vec<u8>,
    with_factors: Vec<u8>,
    idle: Idle,
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter").field("header_bytes", &self.plain.len()).finish_non_exhaustive()
    }
}

impl SnapshotWriter {
    #[must_use]
    pub fn new(model: &Model) -> Self {
        Self { plain: header(model, false), with_factors: header(model, true), idle: Idle::default() }
    }

    fn buffer(&self, len: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let fits = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| (len..=len.saturating_mul(2)).contains(&b.capacity()))
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut buffer = fits.map(|i| idle.swap_remove(i)).unwrap_or_else(|| Vec::with_capacity(len));
        buffer.clear();
        buffer
    }

    /// The snapshot of `state`'s weights and buffers, with `factors`.
    #[must_use]
    pub fn write(&self, state: &TrainState, factors: Option<&RowFactors>) -> Bytes {
        let header = if factors.is_some() { &self.with_factors } else { &self.plain };
        let factors = factors.map_or(&[][..], |f| f.0.as_slice());
        let groups = [state.flat_weights(), state.flat_buffers()];
        let len = header.len()
            + groups.iter().map(|g| g.flat().numel() * 4).sum::<usize>()
            + concatenated_len(factors, Kind::Float);
        let mut data = self.buffer(len);
        data.extend_from_slice(header);
        for group in groups {
            match group.as_slice() {
                Some(values) => data.extend_from_slice(bytemuck::cast_slice(values)),
                None => {
                    let start = data.len();
                    data.resize(start + group.flat().numel() * 4, 0);
                    write_concatenated(std::slice::from_ref(group.flat()), Kind::Float, &mut data[start..]);
                }
            }
        }
        let start = data.len();
        data.resize(len, 0);
        write_concatenated(factors, Kind::Float, &mut data[start..]);
        Bytes::from_owner(Recycled { data, idle: Arc::downgrade(&self.idle) })
    }
}

/// A snapshot decoded onto a device.
#[derive(Debug)]
pub struct Snapshot {
    pub weights: Vec<Tensor>,
    pub buffers: Vec<Tensor>,
    pub factors: Option<RowFactors>,
}

/// Reads the tensors `prefix.<name>` of the given shapes. When their bytes
/// lie one after another in the file (as [`SnapshotWriter`] writes them)
/// they are copied once into one tensor, moved to `device` once and
/// returned as views of it.
fn read_group(
    bytes: &[u8],
    file: &SafeTensors<'_>,
    prefix: &str,
    tensors: &[(&str, Vec<i64>)],
    device: Device,
) -> Result<Vec<Tensor>, WireError> {
    let mut data = Vec::with_capacity(tensors.len());
    for (name, shape) in tensors {
        let name = format!("{prefix}.{name}");
        let view = file.tensor(&name).map_err(|_| WireError::Snapshot(format!("tensor {name} is missing")))?;
        let got: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if view.dtype() != Dtype::F32 || &got != shape {
            return Err(WireError::Snapshot(format!(
                "tensor {name} is {:?} {got:?}, expected F32 {shape:?}",
                view.dtype()
            )));
        }
        data.push(view.data());
    }
    let in_one_piece = data.windows(2).all(|w| w[0].as_ptr_range().end == w[1].as_ptr());
    if !in_one_piece || data.is_empty() {
        return Ok(data
            .iter()
            .zip(tensors)
            .map(|(bytes, (_, shape))| Tensor::from_data_size(bytes, shape, Kind::Float).to_device(device))
            .collect());
    }
    let total: usize = data.iter().map(|d| d.len()).sum();
    // The pieces are adjacent parts of `bytes`, the buffer `file` reads.
    let start = data[0].as_ptr() as usize - bytes.as_ptr() as usize;
    let whole = &bytes[start..start + total];
    let flat = Tensor::from_data_size(whole, &[(total / 4) as i64], Kind::Float).to_device(device);
    let mut offset = 0;
    Ok(tensors
        .iter()
        .map(|(_, shape)| {
            let numel: i64 = shape.iter().product();
            let view = flat.narrow(0, offset, numel).view(shape.as_slice());
            offset += numel;
            view
        })
        .collect())
}

fn named(specs: &[TensorSpec], shape: fn(&[i64]) -> Vec<i64>) -> Vec<(&str, Vec<i64>)> {
    specs.iter().map(|s| (s.name.as_str(), shape(&s.shape))).collect()
}

pub fn decode_snapshot(bytes: &[u8], model: &Model, device: Device) -> Result<Snapshot, WireError> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| WireError::Snapshot(format!("{e:?}")))?;
    let weights = read_group(bytes, &file, "weights", &named(model.params(), <[i64]>::to_vec), device)?;
    let buffers = read_group(bytes, &file, "buffers", &named(model.buffers(), <[i64]>::to_vec), device)?;
    let factors = match model.params().first() {
        Some(first) if file.tensor(&format!("factors.{}", first.name)).is_ok() => {
            let shapes = named(model.params(), factor_shape);
            Some(RowFactors(read_group(bytes, &file, "factors", &shapes, device)?))
        }
        _ => None,
    };
    Ok(Snapshot { weights, buffers, factors })
}
