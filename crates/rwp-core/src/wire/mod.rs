//! Byte formats that cross the network, shared by the parameter server and
//! the workers:
//!
//! - a weights *snapshot*: a safetensors file with `weights.<name>`,
//!   `buffers.<name>` and, for adaptive methods once `F` exists,
//!   `factors.<name>` (the per-row divisors of ε), laid out in that order
//!   (module `snapshot`). Written once per version on the server.
//! - a shard *result*: the gradients of every parameter in declaration order,
//!   little-endian float32 (or bfloat16), followed for tasks that return them
//!   by every BatchNorm buffer in declaration order, float32. Sizes are known
//!   from the model, so a wrong byte count is caught before anything is read.
//!
//! float32 bytes round-trip exactly, which keeps distributed runs
//! bit-identical to the local trainer.

use std::borrow::Cow;
use std::collections::HashMap;

use rwp_spec::payload::all_finite;
use rwp_spec::GradientEncoding;
use safetensors::tensor::{Dtype, View};
use tch::{Device, Kind, Tensor};

use crate::model::Model;

mod snapshot;

pub use snapshot::{decode_snapshot, encode_snapshot, Snapshot, SnapshotWriter};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("{what} has {got} bytes, expected {expected}")]
    ByteCount { what: &'static str, expected: usize, got: usize },
    #[error("gradient of {param} holds NaN or infinite values")]
    NonFinite { param: String },
    #[error("BatchNorm buffer {buffer} holds NaN or infinite values")]
    NonFiniteBuffer { buffer: String },
    #[error("malformed weights snapshot: {0}")]
    Snapshot(String),
}

/// Little-endian bytes of a tensor in `kind` (float32 or bfloat16).
#[must_use]
pub fn tensor_bytes(t: &Tensor, kind: Kind) -> Vec<u8> {
    concatenated_bytes(std::slice::from_ref(t), kind)
}

/// The bytes of every tensor in `kind`, one after another, written straight
/// into one buffer of the final size.
fn concatenated_bytes(tensors: &[Tensor], kind: Kind) -> Vec<u8> {
    let mut data = vec![0u8; concatenated_len(tensors, kind)];
    write_concatenated(tensors, kind, &mut data);
    data
}

pub(crate) fn concatenated_len(tensors: &[Tensor], kind: Kind) -> usize {
    tensors.iter().map(|t| t.numel() * kind.elt_size_in_bytes()).sum()
}

/// Writes the bytes of every tensor in `kind` at the start of `out`;
/// returns how many. Panics when `out` is too small.
pub(crate) fn write_concatenated(tensors: &[Tensor], kind: Kind, out: &mut [u8]) -> usize {
    let elt = kind.elt_size_in_bytes();
    let mut offset = 0;
    for t in tensors {
        let t = t.to_device(Device::Cpu).to_kind(kind).contiguous();
        let numel = t.numel();
        t.copy_data_u8(&mut out[offset..offset + numel * elt], numel);
        offset += numel * elt;
    }
    offset
}

/// A tensor's bytes with its shape, ready to be written as safetensors.
pub(crate) struct Encoded {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<u8>,
}

impl Encoded {
    pub(crate) fn f32(t: &Tensor) -> Self {
        Self { shape: t.size().iter().map(|&d| d as usize).collect(), data: tensor_bytes(t, Kind::Float) }
    }
}

impl View for &Encoded {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Serialises named float32 tensors as one safetensors file in memory.
pub(crate) fn safetensors_bytes(named: &[(String, Encoded)], metadata: Option<HashMap<String, String>>) -> Vec<u8> {
    safetensors::tensor::serialize(named.iter().map(|(n, e)| (n.as_str(), e)), &metadata)
        .expect("float32 tensors with consistent shapes serialise")
}

fn kind_of(encoding: GradientEncoding) -> Kind {
    match encoding {
        GradientEncoding::F32 => Kind::Float,
        GradientEncoding::Bf16 => Kind::BFloat16,
    }
}

/// Bytes of one shard's gradients in `encoding`.
#[must_use]
pub fn gradient_len(model: &Model, encoding: GradientEncoding) -> usize {
    model.num_parameters() as usize * kind_of(encoding).elt_size_in_bytes()
}

/// Bytes of one shard's BatchNorm buffers (float32).
#[must_use]
pub fn buffers_len(model: &Model) -> usize {
    model.buffers().iter().map(|b| b.numel() as usize * 4).sum()
}

#[must_use]
pub fn encode_gradients(grads: &[Tensor], encoding: GradientEncoding) -> Vec<u8> {
    concatenated_bytes(grads, kind_of(encoding))
}

#[must_use]
pub fn encode_buffers(buffers: &[Tensor]) -> Vec<u8> {
    concatenated_bytes(buffers, Kind::Float)
}

/// A shard's result (its gradients, then its BatchNorm buffers if any) in
/// the bytes [`encode_gradients`] and [`encode_buffers`] give, written in
/// place at the start of `out` (shared memory, say); returns the byte
/// counts of the two parts, or `None` when `out` is too small.
#[must_use]
pub fn write_result(
    grads: &[Tensor],
    encoding: GradientEncoding,
    buffers: Option<&[Tensor]>,
    out: &mut [u8],
) -> Option<(usize, usize)> {
    let kind = kind_of(encoding);
    let gradient_bytes = concatenated_len(grads, kind);
    let buffer_bytes = buffers.map_or(0, |b| concatenated_len(b, Kind::Float));
    if gradient_bytes + buffer_bytes > out.len() {
        return None;
    }
    write_concatenated(grads, kind, out);
    if let Some(b) = buffers {
        write_concatenated(b, Kind::Float, &mut out[gradient_bytes..]);
    }
    Some((gradient_bytes, buffer_bytes))
}

/// Decodes and checks a shard's gradients: exact byte count, finite values.
pub fn decode_gradients(
    model: &Model,
    bytes: &[u8],
    encoding: GradientEncoding,
    device: Device,
) -> Result<Vec<Tensor>, WireError> {
    let expected = gradient_len(model, encoding);
    if bytes.len() != expected {
        return Err(WireError::ByteCount { what: "gradient payload", expected, got: bytes.len() });
    }
    let kind = kind_of(encoding);
    let mut offset = 0;
    model
        .params()
        .iter()
        .map(|spec| {
            let len = spec.numel() as usize * kind.elt_size_in_bytes();
            let data = &bytes[offset..offset + len];
            offset += len;
            // On the bytes, as the server's push check does: `isfinite().all()`
            // on the tensor would allocate three temporaries its size.
            if !all_finite(data, encoding) {
                return Err(WireError::NonFinite { param: spec.name.clone() });
            }
            Ok(Tensor::from_data_size(data, &spec.shape, kind).to_kind(Kind::Float).to_device(device))
        })
        .collect()
}

/// Decodes and checks a shard's BatchNorm buffers.
pub fn decode_buffers(model: &Model, bytes: &[u8], device: Device) -> Result<Vec<Tensor>, WireError> {
    let expected = buffers_len(model);
    if bytes.len() != expected {
        return Err(WireError::ByteCount { what: "BatchNorm buffer payload", expected, got: bytes.len() });
    }
    let mut offset = 0;
    model
        .buffers()
        .iter()
        .map(|spec| {
            let len = spec.numel() as usize * 4;
            let data = &bytes[offset..offset + len];
            offset += len;
            if !all_finite(data, GradientEncoding::F32) {
                return Err(WireError::NonFiniteBuffer { buffer: spec.name.clone() });
            }
            Ok(Tensor::from_data_size(data, &spec.shape, Kind::Float).to_device(device))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rwp_spec::ModelKind;

    use super::*;
    use crate::model::InputShape;
    use crate::optim::TrainState;
    use crate::perturb::RowFactors;

    fn model() -> Model {
        Model::new(ModelKind::SmallCnn, InputShape { channels: 3, height: 16, width: 16 }, 10)
    }

    #[test]
    fn snapshot_round_trips_bit_for_bit() {
        let m = model();
        let (w, b) = m.init(3, Device::Cpu);
        let factors = RowFactors::from_history(&w.iter().map(|t| t * t).collect::<Vec<_>>(), 0.1);
        let bytes = encode_snapshot(&m, &w, &b, Some(&factors));
        let back = decode_snapshot(&bytes, &m, Device::Cpu).unwrap();
        assert!(back.weights.iter().zip(&w).all(|(a, b)| a.equal(b)));
        assert!(back.buffers.iter().zip(&b).all(|(a, b)| a.equal(b)));
        assert!(back.factors.unwrap().0.iter().zip(&factors.0).all(|(a, b)| a.equal(b)));
        let plain = decode_snapshot(&encode_snapshot(&m, &w, &b, None), &m, Device::Cpu).unwrap();
        assert!(plain.factors.is_none());
    }

    #[test]
    fn published_snapshots_are_the_encoded_ones_and_reuse_their_memory() {
        let m = model();
        let (w, b) = m.init(5, Device::Cpu);
        let state = TrainState::new(w, b);
        let factors = RowFactors::from_history(&state.weights().iter().map(|t| t * t).collect::<Vec<_>>(), 0.1);
        let writer = SnapshotWriter::new(&m);
        for f in [None, Some(&factors)] {
            let published = writer.write(&state, f);
            assert_eq!(&published[..], &encode_snapshot(&m, state.weights(), state.buffers(), f)[..]);
            let back = decode_snapshot(&published, &m, Device::Cpu).unwrap();
            assert!(back.weights.iter().zip(state.weights()).all(|(a, b)| a.equal(b)));
            // Read in one piece: every weight is a view of one tensor.
            let base = back.weights[0].data_ptr() as usize;
            let offsets: Vec<usize> = back.weights.iter().map(|t| t.data_ptr() as usize - base).collect();
            let sizes: Vec<usize> = state.weights().iter().map(|t| t.numel() * 4).collect();
            assert!(offsets.windows(2).zip(&sizes).all(|(o, size)| o[1] - o[0] == *size));
        }
        let first = writer.write(&state, None);
        let address = first.as_ptr();
        drop(first);
        assert_eq!(writer.write(&state, None).as_ptr(), address, "a dropped version's buffer is reused");
    }

    /// Snapshots written by other safetensors writers (tensors in name
    /// order, not in one piece per group) read the same.
    #[test]
    fn snapshots_laid_out_otherwise_read_the_same() {
        let m = model();
        let (w, b) = m.init(6, Device::Cpu);
        let mut named: Vec<(String, Encoded)> = Vec::new();
        for (spec, t) in m.params().iter().zip(&w) {
            named.push((format!("weights.{}", spec.name), Encoded::f32(t)));
        }
        for (spec, t) in m.buffers().iter().zip(&b) {
            named.push((format!("buffers.{}", spec.name), Encoded::f32(t)));
        }
        let bytes = safetensors_bytes(&named, None);
        assert_ne!(bytes, encode_snapshot(&m, &w, &b, None));
        let back = decode_snapshot(&bytes, &m, Device::Cpu).unwrap();
        assert!(back.weights.iter().zip(&w).all(|(x, y)| x.equal(y)));
        assert!(back.buffers.iter().zip(&b).all(|(x, y)| x.equal(y)));
        let mut wrong = named;
        wrong[0].1 = Encoded::f32(&Tensor::zeros([3], (Kind::Float, Device::Cpu)));
        let err = decode_snapshot(&safetensors_bytes(&wrong, None), &m, Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("weights.conv1.weight"), "{err}");
    }

    #[test]
    fn gradients_round_trip_and_bad_payloads_are_named() {
        let m = model();
        let (w, b) = m.init(4, Device::Cpu);
        let bytes = encode_gradients(&w, GradientEncoding::F32);
        assert_eq!(bytes.len(), gradient_len(&m, GradientEncoding::F32));
        let back = decode_gradients(&m, &bytes, GradientEncoding::F32, Device::Cpu).unwrap();
        assert!(back.iter().zip(&w).all(|(a, b)| a.equal(b)));

        let err = decode_gradients(&m, &bytes[1..], GradientEncoding::F32, Device::Cpu).unwrap_err();
        assert!(matches!(err, WireError::ByteCount { got, .. } if got == bytes.len() - 1));

        let mut nan = bytes.clone();
        let fc_weight_offset = (m.num_parameters() as usize - 10 - 10 * 64 * 16) * 4;
        nan[fc_weight_offset..fc_weight_offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let err = decode_gradients(&m, &nan, GradientEncoding::F32, Device::Cpu).unwrap_err();
        assert_eq!(err, WireError::NonFinite { param: "fc.weight".to_owned() });

        let bf16 = encode_gradients(&w, GradientEncoding::Bf16);
        assert_eq!(bf16.len() * 2, bytes.len());
        let approx = decode_gradients(&m, &bf16, GradientEncoding::Bf16, Device::Cpu).unwrap();
        let err = (&approx[0] - &w[0]).abs().max().double_value(&[]);
        assert!(err > 0.0 && err < 1e-2 * w[0].abs().max().double_value(&[]));

        let mut inf = bf16.clone();
        let fc_weight_offset = fc_weight_offset / 2;
        // −∞ in bfloat16 is 0xFF80.
        inf[fc_weight_offset..fc_weight_offset + 2].copy_from_slice(&[0x80, 0xFF]);
        let err = decode_gradients(&m, &inf, GradientEncoding::Bf16, Device::Cpu).unwrap_err();
        assert_eq!(err, WireError::NonFinite { param: "fc.weight".to_owned() });

        let buffers = decode_buffers(&m, &encode_buffers(&b), Device::Cpu).unwrap();
        assert!(buffers.iter().zip(&b).all(|(x, y)| x.equal(y)));
        assert!(decode_buffers(&m, &[0u8; 3], Device::Cpu).is_err());
        let mut inf = encode_buffers(&b);
        inf[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        let err = decode_buffers(&m, &inf, Device::Cpu).unwrap_err();
        assert_eq!(err, WireError::NonFiniteBuffer { buffer: "bn1.running_mean".to_owned() });
    }
}
