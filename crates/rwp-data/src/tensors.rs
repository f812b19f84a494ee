//! `tensors`: safetensors files holding `inputs` (`[N, ...]`, float32 or
//! uint8, up to 3 dimensions per sample) and `labels` (`[N]`, int64, int32
//! or uint8). A split is one file, a brace range of files, or a folder (its
//! `.safetensors` files sorted by name); its samples are the rows of its
//! files in order. The classes are `0..=` the largest label of any split.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;

use crate::index::{DataIndex, SampleRef, Split, SplitIndex, TensorDtype};
use crate::storage::{files_named, Store};
use crate::{limits, DataError};

#[derive(Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// One tensor of a file: its dtype, shape and absolute byte range.
struct Tensor {
    dtype: String,
    shape: Vec<u64>,
    start: u64,
    end: u64,
}

/// The tensors of a safetensors file, their ranges checked against its size.
fn header(store: &Store, field: &'static str, path: &str) -> Result<BTreeMap<String, Tensor>, DataError> {
    let invalid = |problem: String| DataError::invalid(field, path, problem);
    let size = store.size(path).map_err(|e| DataError::io(field, path, &e))?;
    let mut reader = store.open(path).map_err(|e| DataError::io(field, path, &e))?;
    let mut length = [0u8; 8];
    reader.read_exact(&mut length).map_err(|_| invalid("is not a safetensors file: shorter than 8 bytes".into()))?;
    let length = u64::from_le_bytes(length);
    if length > limits::MAX_TENSOR_HEADER_BYTES || 8 + length > size {
        return Err(invalid(format!("is not a safetensors file: a header of {length} bytes in a file of {size}")));
    }
    let mut text = vec![0; length as usize];
    reader.read_exact(&mut text).map_err(|e| DataError::io(field, path, &e))?;
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| invalid(format!("is not a safetensors file: its header: {e}")))?;
    let data_start = 8 + length;
    let mut tensors = BTreeMap::new();
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let entry: TensorEntry =
            serde_json::from_value(value).map_err(|e| invalid(format!("has a malformed entry for '{name}': {e}")))?;
        let [start, end] = entry.data_offsets;
        if start > end || data_start + end > size {
            return Err(invalid(format!("says '{name}' lies at bytes {start}..{end}, past the file's end")));
        }
        tensors.insert(
            name,
            Tensor { dtype: entry.dtype, shape: entry.shape, start: data_start + start, end: data_start + end },
        );
    }
    Ok(tensors)
}

fn dtype_bytes(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F32" | "I32" => 4,
        "I64" => 8,
        "U8" => 1,
        _ => return None,
    })
}

pub(crate) fn index(listed: &[(Split, &str, String, Store)]) -> Result<DataIndex, DataError> {
    let mut splits = Vec::new();
    let mut layout: Option<(Vec<u64>, TensorDtype, &'static str)> = None;
    let mut largest = None;
    for (split, location, path, store) in listed {
        let field = split.field();
        let mut index = SplitIndex::new(*split, location, store);
        for file_path in files_named(store, field, path, ".safetensors", "file")? {
            let invalid = |problem: String| DataError::invalid(field, file_path.as_str(), problem);
            let tensors = header(store, field, &file_path)?;
            let (Some(inputs), Some(labels)) = (tensors.get("inputs"), tensors.get("labels")) else {
                let names: Vec<_> = tensors.keys().collect();
                return Err(invalid(format!("must hold tensors 'inputs' and 'labels'; it holds {names:?}")));
            };
            let dtype = match inputs.dtype.as_str() {
                "F32" => TensorDtype::F32,
                "U8" => TensorDtype::U8,
                other => return Err(invalid(format!("holds 'inputs' of dtype {other}; it must be F32 or U8"))),
            };
            let Some((&rows, sample_shape)) = inputs.shape.split_first() else {
                return Err(invalid("holds a scalar 'inputs'; it must be [samples, ...]".into()));
            };
            if sample_shape.is_empty() || sample_shape.len() > 3 || sample_shape.contains(&0) {
                return Err(invalid(format!(
                    "holds 'inputs' of shape {:?}; a sample must have 1 to 3 dimensions, none of size 0",
                    inputs.shape
                )));
            }
            let values = sample_shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
            let Some(values) = values.filter(|&v| v <= limits::MAX_SAMPLE_VALUES) else {
                return Err(invalid(format!("holds samples of shape {sample_shape:?}: too many values")));
            };
            let row_bytes = values * dtype.bytes();
            if rows.checked_mul(row_bytes) != Some(inputs.end - inputs.start) {
                return Err(invalid(format!(
                    "holds 'inputs' of shape {:?} in {} bytes",
                    inputs.shape,
                    inputs.end - inputs.start
                )));
            }
            match &layout {
                None => layout = Some((sample_shape.to_vec(), dtype, field)),
                Some((shape, known, first)) if shape != sample_shape || *known != dtype => {
                    return Err(invalid(format!(
                        "holds samples of shape {sample_shape:?} ({dtype:?}); those of {first} are {shape:?} ({known:?})"
                    )));
                }
                Some(_) => {}
            }
            let label_bytes = dtype_bytes(&labels.dtype).filter(|_| labels.dtype != "F32").ok_or_else(|| {
                invalid(format!("holds 'labels' of dtype {}; it must be I64, I32 or U8", labels.dtype))
            })?;
            if labels.shape != [rows] || labels.end - labels.start != rows * label_bytes {
                return Err(invalid(format!(
                    "holds 'labels' of shape {:?} for {rows} samples; it must be [{rows}]",
                    labels.shape
                )));
            }
            if index.samples.len() as u64 + rows > limits::MAX_SAMPLES {
                return Err(invalid("holds too many samples".into()));
            }
            let raw = store
                .read_range(&file_path, labels.start, labels.end - labels.start)
                .map_err(|e| DataError::io(field, file_path.as_str(), &e))?;
            let file = index.files.len() as u32;
            for (row, bytes) in raw.chunks_exact(label_bytes as usize).enumerate() {
                let label: i64 = match label_bytes {
                    8 => i64::from_le_bytes(bytes.try_into().expect("8 bytes")),
                    4 => i64::from(i32::from_le_bytes(bytes.try_into().expect("4 bytes"))),
                    _ => i64::from(bytes[0]),
                };
                let label = u32::try_from(label).ok().filter(|&l| l < limits::MAX_CLASSES).ok_or_else(|| {
                    invalid(format!("has label {label} at row {row}; labels must be class numbers 0, 1, ..."))
                })?;
                let row = row as u64;
                index.samples.push(SampleRef::Row {
                    file,
                    row,
                    offset: inputs.start + row * row_bytes,
                    len: row_bytes,
                });
                index.labels.push(label);
            }
            index.files.push(file_path);
        }
        largest = largest.max(index.labels.iter().copied().max());
        splits.push(index);
    }
    let classes = largest.map_or(0, |l| l + 1);
    let names = (0..classes).map(|c| c.to_string()).collect();
    let mut index = DataIndex::assemble(rwp_spec::DatasetKind::Tensors, names, splits);
    let (shape, dtype, _) = layout.expect("every split has a file");
    index.shape = shape.iter().map(|&d| d as u32).collect();
    index.dtype = Some(dtype);
    Ok(index)
}
