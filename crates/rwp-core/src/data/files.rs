//! MNIST (IDX) and CIFAR-10/100 (binary version) readers.

use std::path::{Path, PathBuf};

use super::{DataError, Split};

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| DataError::Io { path: path.to_owned(), source })
}

fn malformed(path: &Path, format: &'static str, reason: impl Into<String>) -> DataError {
    DataError::Malformed { path: path.to_owned(), format, reason: reason.into() }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads an IDX file of unsigned bytes with the given number of dimensions,
/// returning the dimensions and the data.
fn idx(path: &Path, dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    const FORMAT: &str = "IDX";
    let bytes = read(path)?;
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(malformed(path, FORMAT, format!("{} bytes is shorter than the header", bytes.len())));
    }
    let magic = be_u32(&bytes, 0);
    let expected = 0x0800 | dims as u32;
    if magic != expected {
        return Err(malformed(path, FORMAT, format!("magic number {magic:#010x}, expected {expected:#010x}")));
    }
    let shape: Vec<usize> = (0..dims).map(|d| be_u32(&bytes, 4 + 4 * d) as usize).collect();
    let Some(want) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(malformed(path, FORMAT, format!("dimensions {shape:?} are too large")));
    };
    let have = bytes.len() - header;
    if have != want {
        return Err(malformed(
            path,
            FORMAT,
            format!("header promises {want} data bytes ({shape:?}) but the file holds {have} (truncated?)"),
        ));
    }
    Ok((shape, bytes[header..].to_vec()))
}

fn mnist_split(dir: &Path, prefix: &str) -> Result<Split, DataError> {
    let images_path = dir.join(format!("{prefix}-images-idx3-ubyte"));
    let labels_path = dir.join(format!("{prefix}-labels-idx1-ubyte"));
    let (shape, images) = idx(&images_path, 3)?;
    if shape[1..] != [28, 28] {
        return Err(malformed(&images_path, "MNIST", format!("images are {}x{}, expected 28x28", shape[1], shape[2])));
    }
    let (label_shape, labels) = idx(&labels_path, 1)?;
    if label_shape[0] != shape[0] {
        return Err(malformed(&labels_path, "MNIST", format!("{} labels for {} images", label_shape[0], shape[0])));
    }
    if let Some(bad) = labels.iter().find(|&&l| l > 9) {
        return Err(malformed(&labels_path, "MNIST", format!("label {bad} is not a digit")));
    }
    Ok(Split::pixels(images, labels.into_iter().map(i64::from).collect()))
}

pub(super) fn mnist(dir: &Path) -> Result<(Split, Split), DataError> {
    Ok((mnist_split(dir, "train")?, mnist_split(dir, "t10k")?))
}

const CIFAR_IMAGE: usize = 3 * 32 * 32;

fn cifar_file(path: &Path, classes: i64, split: &mut Split) -> Result<(), DataError> {
    let label_bytes = if classes == 10 { 1 } else { 2 };
    let record = label_bytes + CIFAR_IMAGE;
    let bytes = read(path)?;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(malformed(
            path,
            "CIFAR binary",
            format!("{} bytes is not a whole number of {record}-byte records (truncated?)", bytes.len()),
        ));
    }
    for chunk in bytes.chunks_exact(record) {
        // CIFAR-100 records hold (coarse, fine) labels: the fine one is used.
        let label = i64::from(chunk[label_bytes - 1]);
        if label >= classes {
            return Err(malformed(path, "CIFAR binary", format!("label {label} is not below {classes}")));
        }
        split.labels.push(label);
        split.images.extend_from_slice(&chunk[label_bytes..]);
    }
    Ok(())
}

pub(super) fn cifar(dir: &Path, classes: i64) -> Result<(Split, Split), DataError> {
    let (subdir, train_files, test_file): (&str, Vec<String>, &str) = if classes == 10 {
        ("cifar-10-batches-bin", (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(), "test_batch.bin")
    } else {
        ("cifar-100-binary", vec!["train.bin".to_owned()], "test.bin")
    };
    let base: PathBuf = if dir.join(subdir).is_dir() { dir.join(subdir) } else { dir.to_owned() };
    let mut train = Split::pixels(Vec::new(), Vec::new());
    for name in &train_files {
        cifar_file(&base.join(name), classes, &mut train)?;
    }
    let mut test = Split::pixels(Vec::new(), Vec::new());
    cifar_file(&base.join(test_file), classes, &mut test)?;
    Ok((train, test))
}
