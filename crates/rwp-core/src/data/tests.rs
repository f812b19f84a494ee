use std::path::Path;

use rwp_spec::rng::Rng;
use tch::Kind;
use tempfile::TempDir;

use super::*;

const MNIST_PIXELS: usize = 28 * 28;
const CIFAR_PIXELS: usize = 3 * 32 * 32;

fn tensor_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

fn tensor_i64(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

/// `(v / 255 - mean) / std`, computed in f32 the way the loader does.
fn norm(v: u8, mean: f32, std: f32) -> f32 {
    (f32::from(v) / 255.0 - mean) / std
}

/// Normalises whole `[C, H, W]` images with per-channel statistics.
fn normalised(images: &[u8], mean: &[f32], std: &[f32], plane: usize) -> Vec<f32> {
    images
        .iter()
        .enumerate()
        .map(|(i, &v)| norm(v, mean[(i / plane) % mean.len()], std[(i / plane) % std.len()]))
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn samples(indices: &[u32], seeds: &[u64]) -> ShardSamples {
    ShardSamples { indices: indices.to_vec(), augment_seeds: seeds.to_vec() }
}

// ---------------------------------------------------------------- MNIST

fn idx_images(n: u32, rows: u32, cols: u32, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in [0x0000_0803u32, n, rows, cols] {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in [0x0000_0801u32, labels.len() as u32] {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    bytes.extend_from_slice(labels);
    bytes
}

/// `n` 28×28 images whose pixels differ from image to image.
fn mnist_pixels(n: usize, salt: usize) -> Vec<u8> {
    (0..n * MNIST_PIXELS).map(|i| ((i * 7 + salt * 13 + i / MNIST_PIXELS * 29) % 256) as u8).collect()
}

struct MnistFiles {
    dir: TempDir,
    train_images: Vec<u8>,
    train_labels: Vec<u8>,
    test_images: Vec<u8>,
    test_labels: Vec<u8>,
}

fn mnist_files() -> MnistFiles {
    let dir = TempDir::new().unwrap();
    let train_images = mnist_pixels(3, 1);
    let train_labels = vec![5, 0, 9];
    let mut test_images = mnist_pixels(2, 2);
    // A known value at (row 3, column 5) of the second test image.
    test_images[MNIST_PIXELS + 3 * 28 + 5] = 200;
    test_images[0] = 0;
    test_images[1] = 255;
    let test_labels = vec![7, 2];
    write(&dir.path().join("train-images-idx3-ubyte"), &idx_images(3, 28, 28, &train_images));
    write(&dir.path().join("train-labels-idx1-ubyte"), &idx_labels(&train_labels));
    write(&dir.path().join("t10k-images-idx3-ubyte"), &idx_images(2, 28, 28, &test_images));
    write(&dir.path().join("t10k-labels-idx1-ubyte"), &idx_labels(&test_labels));
    MnistFiles { dir, train_images, train_labels, test_images, test_labels }
}

fn load_mnist(dir: &Path) -> Result<Dataset, DataError> {
    Dataset::load(DatasetKind::Mnist, Some(dir), false)
}

/// Expects a `Malformed` error on the file `name`; returns its Display.
fn expect_malformed(result: Result<Dataset, DataError>, name: &str) -> String {
    let err = result.expect_err("loading should fail");
    let text = err.to_string();
    match &err {
        DataError::Malformed { path, .. } => {
            assert_eq!(path.file_name().unwrap(), name, "wrong file blamed: {text}");
        }
        other => panic!("expected Malformed for {name}, got {other:?}"),
    }
    assert!(text.contains(name), "'{text}' does not name {name}");
    text
}

#[test]
fn mnist_loads_lengths_labels_and_pixels() {
    let files = mnist_files();
    let ds = load_mnist(files.dir.path()).unwrap();
    assert_eq!(ds.kind, DatasetKind::Mnist);
    assert_eq!(ds.shape, InputShape { channels: 1, height: 28, width: 28 });
    assert_eq!(ds.classes, 10);
    assert_eq!((ds.train.len(), ds.test.len()), (3, 2));
    assert!(!ds.train.is_empty());
    assert_eq!(ds.train.labels, vec![5, 0, 9]);
    assert_eq!(ds.test.labels, vec![7, 2]);
    assert_eq!(ds.train.images, files.train_images);
    assert_eq!(ds.test.images, files.test_images);
    assert_eq!(ds.train.labels, files.train_labels.iter().map(|&l| i64::from(l)).collect::<Vec<_>>());
}

#[test]
fn mnist_test_batches_are_normalised() {
    let files = mnist_files();
    let ds = load_mnist(files.dir.path()).unwrap();
    let batches: Vec<Batch> = ds.test_batches(1).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().all(|b| b.len() == 1 && !b.is_empty()));
    assert_eq!(batches[0].images.size(), [1, 1, 28, 28]);
    assert_eq!(batches[0].images.kind(), Kind::Float);
    assert_eq!(batches[0].labels.kind(), Kind::Int64);
    assert_eq!(tensor_i64(&batches[1].labels), vec![2]);

    let second = &batches[1].images;
    let got = second.double_value(&[0, 0, 3, 5]);
    let want = (200.0 / 255.0 - 0.1307) / 0.3081;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    let first = &batches[0].images;
    assert!((first.double_value(&[0, 0, 0, 0]) - (-0.1307 / 0.3081)).abs() < 1e-5);
    assert!((first.double_value(&[0, 0, 0, 1]) - ((1.0 - 0.1307) / 0.3081)).abs() < 1e-5);

    // The whole split in one batch: every pixel of both images.
    let all: Vec<Batch> = ds.test_batches(10).map(Result::unwrap).collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].images.size(), [2, 1, 28, 28]);
    assert_eq!(tensor_i64(&all[0].labels), vec![7, 2]);
    let want = normalised(&files.test_images, &[MNIST_MEAN], &[MNIST_STD], MNIST_PIXELS);
    assert_eq!(tensor_f32(&all[0].images), want);
}

#[test]
fn mnist_ignores_augment() {
    let files = mnist_files();
    let ds = Dataset::load(DatasetKind::Mnist, Some(files.dir.path()), true).unwrap();
    let batch = ds.train_batch(&samples(&[2, 0], &[1, 2])).unwrap();
    assert_eq!(batch.images.size(), [2, 1, 28, 28]);
    assert_eq!(tensor_i64(&batch.labels), vec![9, 5]);
    let mut images = files.train_images[2 * MNIST_PIXELS..].to_vec();
    images.extend_from_slice(&files.train_images[..MNIST_PIXELS]);
    assert_eq!(tensor_f32(&batch.images), normalised(&images, &[MNIST_MEAN], &[MNIST_STD], MNIST_PIXELS));
}

#[test]
fn mnist_without_data_dir_is_refused() {
    let err = Dataset::load(DatasetKind::Mnist, None, false).unwrap_err();
    assert!(matches!(err, DataError::NoDataDir { dataset: DatasetKind::Mnist }), "{err:?}");
    assert!(err.to_string().contains("mnist"), "{err}");
}

#[test]
fn mnist_truncated_image_file_is_malformed() {
    let files = mnist_files();
    let path = files.dir.path().join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.pop();
    write(&path, &bytes);
    let text = expect_malformed(load_mnist(files.dir.path()), "train-images-idx3-ubyte");
    assert!(text.contains("truncated"), "{text}");
    assert!(text.contains("IDX"), "{text}");
}

#[test]
fn mnist_extra_bytes_are_malformed() {
    let files = mnist_files();
    let path = files.dir.path().join("t10k-labels-idx1-ubyte");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(1);
    write(&path, &bytes);
    expect_malformed(load_mnist(files.dir.path()), "t10k-labels-idx1-ubyte");
}

#[test]
fn mnist_short_header_is_malformed() {
    let files = mnist_files();
    write(&files.dir.path().join("t10k-images-idx3-ubyte"), &[0, 0, 8, 3, 0, 0]);
    let text = expect_malformed(load_mnist(files.dir.path()), "t10k-images-idx3-ubyte");
    assert!(text.contains("header"), "{text}");
}

#[test]
fn mnist_absurd_header_is_malformed_not_a_panic() {
    // Dimensions whose product overflows: a corrupt file, not a crash.
    let files = mnist_files();
    write(&files.dir.path().join("train-images-idx3-ubyte"), &idx_images(u32::MAX, u32::MAX, u32::MAX, &[1, 2, 3]));
    expect_malformed(load_mnist(files.dir.path()), "train-images-idx3-ubyte");
}

#[test]
fn mnist_wrong_magic_is_malformed() {
    let files = mnist_files();
    // A labels header (magic 0x801) on the images file.
    let mut bytes = idx_images(3, 28, 28, &files.train_images);
    bytes[3] = 0x01;
    write(&files.dir.path().join("train-images-idx3-ubyte"), &bytes);
    let text = expect_malformed(load_mnist(files.dir.path()), "train-images-idx3-ubyte");
    assert!(text.contains("magic"), "{text}");

    // A gzip header (the files as downloaded) is also refused cleanly.
    let files = mnist_files();
    let mut bytes = idx_labels(&files.test_labels);
    bytes[..4].copy_from_slice(&[0x1f, 0x8b, 0x08, 0x00]);
    write(&files.dir.path().join("t10k-labels-idx1-ubyte"), &bytes);
    expect_malformed(load_mnist(files.dir.path()), "t10k-labels-idx1-ubyte");
}

#[test]
fn mnist_missing_file_is_an_io_error_naming_the_path() {
    let files = mnist_files();
    let path = files.dir.path().join("t10k-labels-idx1-ubyte");
    std::fs::remove_file(&path).unwrap();
    let err = load_mnist(files.dir.path()).unwrap_err();
    match &err {
        DataError::Io { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn mnist_label_out_of_range_is_malformed() {
    let files = mnist_files();
    write(&files.dir.path().join("train-labels-idx1-ubyte"), &idx_labels(&[5, 12, 9]));
    let text = expect_malformed(load_mnist(files.dir.path()), "train-labels-idx1-ubyte");
    assert!(text.contains("12"), "{text}");
}

#[test]
fn mnist_label_count_mismatch_is_malformed() {
    let files = mnist_files();
    write(&files.dir.path().join("t10k-labels-idx1-ubyte"), &idx_labels(&[7, 2, 1]));
    let text = expect_malformed(load_mnist(files.dir.path()), "t10k-labels-idx1-ubyte");
    assert!(text.contains("3 labels for 2 images"), "{text}");
}

#[test]
fn mnist_wrong_image_size_is_malformed() {
    let files = mnist_files();
    let data = vec![1u8; 2 * 32 * 32];
    write(&files.dir.path().join("t10k-images-idx3-ubyte"), &idx_images(2, 32, 32, &data));
    let text = expect_malformed(load_mnist(files.dir.path()), "t10k-images-idx3-ubyte");
    assert!(text.contains("32x32"), "{text}");
}

// ---------------------------------------------------------------- CIFAR

/// One CIFAR record: label byte(s) then `[3, 32, 32]` pixels.
fn cifar_record(labels: &[u8], image: &[u8]) -> Vec<u8> {
    assert_eq!(image.len(), CIFAR_PIXELS);
    let mut bytes = labels.to_vec();
    bytes.extend_from_slice(image);
    bytes
}

/// A CIFAR image that differs for every `id`.
fn cifar_image(id: usize) -> Vec<u8> {
    (0..CIFAR_PIXELS).map(|i| ((i * 3 + id * 41 + i / 1024 * 17) % 256) as u8).collect()
}

/// Writes CIFAR-10 files into `dir`: 5 train batches of 2 records and a test
/// batch of 3; returns (train images, train labels, test images, test labels).
fn write_cifar10(dir: &Path) -> (Vec<u8>, Vec<i64>, Vec<u8>, Vec<i64>) {
    let (mut train_images, mut train_labels) = (Vec::new(), Vec::new());
    for batch in 1..=5usize {
        let mut bytes = Vec::new();
        for j in 0..2 {
            let id = (batch - 1) * 2 + j;
            let label = ((id * 3) % 10) as u8;
            let image = cifar_image(id);
            bytes.extend(cifar_record(&[label], &image));
            train_images.extend(image);
            train_labels.push(i64::from(label));
        }
        write(&dir.join(format!("data_batch_{batch}.bin")), &bytes);
    }
    let (mut test_images, mut test_labels) = (Vec::new(), Vec::new());
    let mut bytes = Vec::new();
    for (k, label) in [4u8, 9, 0].into_iter().enumerate() {
        let image = cifar_image(100 + k);
        bytes.extend(cifar_record(&[label], &image));
        test_images.extend(image);
        test_labels.push(i64::from(label));
    }
    write(&dir.join("test_batch.bin"), &bytes);
    (train_images, train_labels, test_images, test_labels)
}

fn load_cifar10(dir: &Path, augment: bool) -> Result<Dataset, DataError> {
    Dataset::load(DatasetKind::Cifar10, Some(dir), augment)
}

#[test]
fn cifar10_loads_all_batches_in_order() {
    let dir = TempDir::new().unwrap();
    let (train_images, train_labels, test_images, test_labels) = write_cifar10(dir.path());
    let ds = load_cifar10(dir.path(), false).unwrap();
    assert_eq!(ds.kind, DatasetKind::Cifar10);
    assert_eq!(ds.shape, InputShape { channels: 3, height: 32, width: 32 });
    assert_eq!(ds.classes, 10);
    assert_eq!((ds.train.len(), ds.test.len()), (10, 3));
    assert_eq!(ds.train.labels, train_labels);
    assert_eq!(ds.train.images, train_images);
    assert_eq!(ds.test.labels, test_labels);
    assert_eq!(ds.test.images, test_images);
}

#[test]
fn cifar10_test_batches_use_per_channel_statistics() {
    let dir = TempDir::new().unwrap();
    let (_, _, test_images, test_labels) = write_cifar10(dir.path());
    let ds = load_cifar10(dir.path(), true).unwrap();
    let want = normalised(&test_images, &CIFAR_MEAN, &CIFAR_STD, 1024);
    for batch_size in [1, 2, 3, 500] {
        let batches: Vec<Batch> = ds.test_batches(batch_size).map(Result::unwrap).collect();
        assert_eq!(batches.len(), 3usize.div_ceil(batch_size), "batch size {batch_size}");
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for b in &batches {
            assert_eq!(b.images.size()[1..], [3, 32, 32]);
            pixels.extend(tensor_f32(&b.images));
            labels.extend(tensor_i64(&b.labels));
        }
        // Test batches are never augmented.
        assert_eq!(pixels, want, "batch size {batch_size}");
        assert_eq!(labels, test_labels);
    }
    // A known value in each channel of the first test image.
    let first = ds.test_batches(1).map(Result::unwrap).next().unwrap().images;
    for c in 0..3 {
        let at = c * 1024 + 5 * 32 + 7;
        let got = first.double_value(&[0, c as i64, 5, 7]);
        let want = (f64::from(test_images[at]) / 255.0 - f64::from(CIFAR_MEAN[c])) / f64::from(CIFAR_STD[c]);
        assert!((got - want).abs() < 1e-5, "channel {c}: {got} vs {want}");
    }
}

#[test]
fn cifar10_reads_the_batches_subdirectory() {
    let dir = TempDir::new().unwrap();
    let sub = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&sub).unwrap();
    let (train_images, train_labels, _, test_labels) = write_cifar10(&sub);
    let ds = load_cifar10(dir.path(), false).unwrap();
    assert_eq!(ds.train.labels, train_labels);
    assert_eq!(ds.train.images, train_images);
    assert_eq!(ds.test.labels, test_labels);
    // The directory itself works too.
    let direct = load_cifar10(&sub, false).unwrap();
    assert_eq!(direct.train.images, ds.train.images);
}

#[test]
fn cifar10_truncated_record_is_malformed() {
    let dir = TempDir::new().unwrap();
    write_cifar10(dir.path());
    let path = dir.path().join("data_batch_3.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.pop();
    write(&path, &bytes);
    let text = expect_malformed(load_cifar10(dir.path(), false), "data_batch_3.bin");
    assert!(text.contains("truncated"), "{text}");
    assert!(text.contains("3073"), "record size is named: {text}");
}

#[test]
fn cifar10_empty_file_is_malformed() {
    let dir = TempDir::new().unwrap();
    write_cifar10(dir.path());
    write(&dir.path().join("test_batch.bin"), &[]);
    expect_malformed(load_cifar10(dir.path(), false), "test_batch.bin");
}

#[test]
fn cifar10_label_out_of_range_is_malformed() {
    let dir = TempDir::new().unwrap();
    write_cifar10(dir.path());
    write(&dir.path().join("data_batch_5.bin"), &cifar_record(&[10], &cifar_image(0)));
    let text = expect_malformed(load_cifar10(dir.path(), false), "data_batch_5.bin");
    assert!(text.contains("10"), "{text}");
}

#[test]
fn cifar10_missing_batch_is_an_io_error() {
    let dir = TempDir::new().unwrap();
    write_cifar10(dir.path());
    let path = dir.path().join("data_batch_4.bin");
    std::fs::remove_file(&path).unwrap();
    let err = load_cifar10(dir.path(), false).unwrap_err();
    assert!(matches!(&err, DataError::Io { path: p, .. } if *p == path), "{err:?}");
    assert!(err.to_string().contains("data_batch_4.bin"), "{err}");
}

#[test]
fn cifar10_without_data_dir_is_refused() {
    let err = load_cifar10_none();
    assert!(matches!(err, DataError::NoDataDir { dataset: DatasetKind::Cifar10 }), "{err:?}");
}

fn load_cifar10_none() -> DataError {
    Dataset::load(DatasetKind::Cifar10, None, true).unwrap_err()
}

/// CIFAR-100 files: `(coarse, fine)` label pairs.
fn write_cifar100(dir: &Path, train: &[(u8, u8)], test: &[(u8, u8)]) {
    for (name, records) in [("train.bin", train), ("test.bin", test)] {
        let mut bytes = Vec::new();
        for (k, &(coarse, fine)) in records.iter().enumerate() {
            bytes.extend(cifar_record(&[coarse, fine], &cifar_image(k + usize::from(fine))));
        }
        write(&dir.join(name), &bytes);
    }
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = TempDir::new().unwrap();
    write_cifar100(dir.path(), &[(3, 17), (19, 99), (0, 0), (7, 42)], &[(11, 55), (2, 8)]);
    let ds = Dataset::load(DatasetKind::Cifar100, Some(dir.path()), false).unwrap();
    assert_eq!(ds.kind, DatasetKind::Cifar100);
    assert_eq!(ds.classes, 100);
    assert_eq!(ds.train.labels, vec![17, 99, 0, 42]);
    assert_eq!(ds.test.labels, vec![55, 8]);
    assert_eq!(&ds.train.images[..CIFAR_PIXELS], cifar_image(17).as_slice());
    assert_eq!(&ds.train.images[CIFAR_PIXELS..2 * CIFAR_PIXELS], cifar_image(1 + 99).as_slice());
    assert_eq!(ds.train.images.len(), 4 * CIFAR_PIXELS);
}

#[test]
fn cifar100_reads_its_subdirectory_and_checks_records() {
    let dir = TempDir::new().unwrap();
    let sub = dir.path().join("cifar-100-binary");
    std::fs::create_dir(&sub).unwrap();
    write_cifar100(&sub, &[(1, 2), (3, 4)], &[(5, 6)]);
    let ds = Dataset::load(DatasetKind::Cifar100, Some(dir.path()), false).unwrap();
    assert_eq!(ds.train.labels, vec![2, 4]);
    assert_eq!(ds.test.labels, vec![6]);

    // A CIFAR-10 style record (one label byte) is not a whole CIFAR-100 record.
    let mut bytes = cifar_record(&[1, 2], &cifar_image(0));
    bytes.extend(cifar_record(&[3], &cifar_image(1)));
    write(&sub.join("train.bin"), &bytes);
    let text = expect_malformed(Dataset::load(DatasetKind::Cifar100, Some(dir.path()), false), "train.bin");
    assert!(text.contains("truncated") && text.contains("3074"), "{text}");

    write_cifar100(&sub, &[(1, 100)], &[(5, 6)]);
    let text = expect_malformed(Dataset::load(DatasetKind::Cifar100, Some(dir.path()), false), "train.bin");
    assert!(text.contains("100"), "{text}");
}

// ---------------------------------------------------------------- augmentation

/// A CIFAR-10 data set whose first training image encodes its coordinates:
/// channel 0 holds `10 + 7·y`, channel 1 `10 + 7·x`, channel 2 `(x + y) % 2 + 1`.
/// The other images are the usual patterns.
fn coordinate_cifar(augment: bool) -> (TempDir, Dataset, Vec<u8>) {
    let dir = TempDir::new().unwrap();
    write_cifar10(dir.path());
    let mut coords = vec![0u8; CIFAR_PIXELS];
    for y in 0..32 {
        for x in 0..32 {
            coords[y * 32 + x] = (10 + 7 * y) as u8;
            coords[1024 + y * 32 + x] = (10 + 7 * x) as u8;
            coords[2048 + y * 32 + x] = ((x + y) % 2 + 1) as u8;
        }
    }
    let mut bytes = cifar_record(&[3], &coords);
    bytes.extend(cifar_record(&[4], &cifar_image(77)));
    write(&dir.path().join("data_batch_1.bin"), &bytes);
    let ds = load_cifar10(dir.path(), augment).unwrap();
    assert_eq!(&ds.train.images[..CIFAR_PIXELS], coords.as_slice());
    (dir, ds, coords)
}

/// The crop of `source` at offset `(top, left)` with zero padding, flipped
/// horizontally when `flip`, before normalisation.
fn crop(source: &[u8], top: i64, left: i64, flip: bool) -> Vec<u8> {
    let mut out = vec![0u8; CIFAR_PIXELS];
    for c in 0..3i64 {
        for y in 0..32i64 {
            for x in 0..32i64 {
                let sx = if flip { 31 - x } else { x };
                let (py, px) = (y + top, sx + left);
                if (0..32).contains(&py) && (0..32).contains(&px) {
                    out[(c * 1024 + y * 32 + x) as usize] = source[(c * 1024 + py * 32 + px) as usize];
                }
            }
        }
    }
    out
}

/// What an augmented image was made of.
#[derive(Debug, PartialEq)]
struct Recovered {
    top: i64,
    left: i64,
    flip: bool,
    /// Rows and columns (half-open) zeroed by Cutout.
    cutout: Option<((i64, i64), (i64, i64))>,
}

/// Finds the crop offset and flip that explain `image` (an augmented copy of
/// `source`), with every other pixel zeroed by a Cutout rectangle.
fn recover(image: &[f32], source: &[u8]) -> Recovered {
    let mut found = Vec::new();
    for top in -4..=4 {
        for left in -4..=4 {
            for flip in [false, true] {
                let want = normalised(&crop(source, top, left, flip), &CIFAR_MEAN, &CIFAR_STD, 1024);
                assert!(want.iter().all(|&v| v != 0.0), "no crop pixel normalises to exactly 0");
                let explained = want.iter().zip(image).all(|(&w, &v)| v == w || v == 0.0);
                let matching = want.iter().zip(image).filter(|(&w, &v)| v == w).count();
                // Cutout hides at most 16×16 pixels per channel.
                if explained && matching >= CIFAR_PIXELS - 3 * 256 {
                    found.push((top, left, flip));
                }
            }
        }
    }
    assert_eq!(found.len(), 1, "exactly one crop explains the image: {found:?}");
    let (top, left, flip) = found[0];

    let zero: Vec<(i64, i64)> = (0..32i64)
        .flat_map(|y| (0..32i64).map(move |x| (y, x)))
        .filter(|&(y, x)| image[(y * 32 + x) as usize] == 0.0)
        .collect();
    for c in 1..3 {
        for y in 0..32 {
            for x in 0..32 {
                let z = image[c * 1024 + y * 32 + x] == 0.0;
                assert_eq!(z, image[y * 32 + x] == 0.0, "Cutout covers all channels alike at ({y}, {x})");
            }
        }
    }
    let cutout = (!zero.is_empty()).then(|| {
        let rows = (zero.iter().map(|p| p.0).min().unwrap(), zero.iter().map(|p| p.0).max().unwrap() + 1);
        let cols = (zero.iter().map(|p| p.1).min().unwrap(), zero.iter().map(|p| p.1).max().unwrap() + 1);
        assert_eq!(zero.len() as i64, (rows.1 - rows.0) * (cols.1 - cols.0), "Cutout is a rectangle");
        for (lo, hi) in [rows, cols] {
            let len = hi - lo;
            // A 16-wide window centred in the image, clipped at its border.
            assert!((8..=16).contains(&len), "cutout side {len}");
            assert!(len == 16 || lo == 0 || hi == 32, "a clipped cutout touches the border: {lo}..{hi}");
        }
        (rows, cols)
    });
    Recovered { top, left, flip, cutout }
}

/// The augmentation parameters the seed draws, in the order of `augment::cifar`.
fn drawn(seed: u64) -> Recovered {
    let mut rng = Rng::new(seed);
    let top = rng.below(9) as i64 - 4;
    let left = rng.below(9) as i64 - 4;
    let flip = rng.next_f64() < 0.5;
    let cutout = rng.next_f64() < 0.5;
    let (cy, cx) = (rng.below(32) as i64, rng.below(32) as i64);
    let cutout = cutout.then(|| (((cy - 8).max(0), (cy + 8).min(32)), ((cx - 8).max(0), (cx + 8).min(32))));
    Recovered { top, left, flip, cutout }
}

#[test]
fn augmentation_is_a_function_of_the_seed() {
    let (_dir, ds, _) = coordinate_cifar(true);
    let s = samples(&[0, 1, 0, 5, 9], &[11, 12, 13, 14, 15]);
    let a = ds.train_batch(&s).unwrap();
    let b = ds.train_batch(&s).unwrap();
    assert!(a.images.equal(&b.images));
    assert!(a.labels.equal(&b.labels));
    assert_eq!(tensor_i64(&a.labels), vec![3, 4, 3, ds.train.labels[5], ds.train.labels[9]]);

    // Other seeds change at least one image.
    let other = ds.train_batch(&samples(&[0, 1, 0, 5, 9], &[21, 22, 23, 24, 25])).unwrap();
    let n = a.len() as i64;
    let changed = (0..n).filter(|&i| !a.images.get(i).equal(&other.images.get(i))).count();
    assert!(changed >= 1, "new seeds changed no image");
    // Same image and seed in another position of the batch: the same result.
    let single = ds.train_batch(&samples(&[5], &[14])).unwrap();
    assert!(single.images.get(0).equal(&a.images.get(3)));
}

#[test]
fn without_augment_train_batches_are_plain_normalised_images() {
    let (_dir, ds, coords) = coordinate_cifar(false);
    let batch = ds.train_batch(&samples(&[0, 7, 0], &[1, 2, 3])).unwrap();
    assert_eq!(batch.images.size(), [3, 3, 32, 32]);
    let mut images = coords.clone();
    images.extend_from_slice(&ds.train.images[7 * CIFAR_PIXELS..8 * CIFAR_PIXELS]);
    images.extend_from_slice(&coords);
    assert_eq!(tensor_f32(&batch.images), normalised(&images, &CIFAR_MEAN, &CIFAR_STD, 1024));
}

#[test]
fn augmented_images_are_crops_flips_and_cutouts_of_the_source() {
    let (_dir, ds, coords) = coordinate_cifar(true);
    let seeds: Vec<u64> = (0..48).map(|i| 1000 + i * 7919).collect();
    let batch = ds.train_batch(&samples(&vec![0; seeds.len()], &seeds)).unwrap();
    let pixels = tensor_f32(&batch.images);
    let (mut flips, mut cutouts, mut offsets, mut identity) = (0, 0, std::collections::HashSet::new(), 0);
    for (i, &seed) in seeds.iter().enumerate() {
        let image = &pixels[i * CIFAR_PIXELS..(i + 1) * CIFAR_PIXELS];
        let got = recover(image, &coords);
        // The cutout rectangle, if any, must match what the seed drew.
        assert_eq!(got, drawn(seed), "sample {i} (seed {seed})");
        flips += usize::from(got.flip);
        cutouts += usize::from(got.cutout.is_some());
        offsets.insert((got.top, got.left));
        identity += usize::from(got.top == 0 && got.left == 0 && !got.flip && got.cutout.is_none());
        // The padding is a zero pixel before normalisation.
        let fill0 = -CIFAR_MEAN[0] / CIFAR_STD[0];
        if got.top < 0 && got.cutout.is_none_or(|((r0, _), _)| r0 > 0) {
            assert_eq!(image[0], fill0, "sample {i}: padded corner");
        }
    }
    assert!((12..=36).contains(&flips), "{flips} of 48 flipped");
    assert!((12..=36).contains(&cutouts), "{cutouts} of 48 cut out");
    assert!(offsets.len() >= 15, "only {} distinct offsets", offsets.len());
    assert!(identity < 10, "{identity} images left untouched");
}

#[test]
fn augmentation_only_applies_to_cifar_training_batches() {
    let (_dir, ds, coords) = coordinate_cifar(true);
    // Test batches of an augmented data set are plain.
    let test: Vec<f32> = ds.test_batches(100).map(Result::unwrap).flat_map(|b| tensor_f32(&b.images)).collect();
    assert_eq!(test, normalised(&ds.test.images, &CIFAR_MEAN, &CIFAR_STD, 1024));
    // And a seed that draws no change leaves the image as it is.
    let seed = (0..10_000u64)
        .find(|&s| drawn(s) == Recovered { top: 0, left: 0, flip: false, cutout: None })
        .expect("some seed draws the identity");
    let batch = ds.train_batch(&samples(&[0], &[seed])).unwrap();
    assert_eq!(tensor_f32(&batch.images), normalised(&coords, &CIFAR_MEAN, &CIFAR_STD, 1024));
}

// ---------------------------------------------------------------- synthetic

#[test]
fn synthetic_is_deterministic_and_shaped() {
    let a = Dataset::load(DatasetKind::Synthetic, None, true).unwrap();
    let b = Dataset::load(DatasetKind::Synthetic, None, true).unwrap();
    assert_eq!(a.kind, DatasetKind::Synthetic);
    assert_eq!(a.shape, InputShape { channels: 3, height: 16, width: 16 });
    assert_eq!(a.classes, 10);
    assert_eq!((a.train.len(), a.test.len()), (1000, 2000));
    assert_eq!(a.train.images.len(), 1000 * 3 * 16 * 16);
    assert_eq!(a.test.images.len(), 2000 * 3 * 16 * 16);
    assert_eq!(a.train.labels, b.train.labels);
    assert_eq!(a.train.images, b.train.images);
    assert_eq!(a.test.labels, b.test.labels);
    assert_eq!(a.test.images, b.test.images);
    assert_ne!(a.train.images[..768], a.test.images[..768]);
    // Augmentation is a CIFAR thing: asked for, it is not applied here.
    assert!(!a.augment);
    let batch = a.train_batch(&samples(&[3, 999], &[1, 2])).unwrap();
    assert_eq!(batch.images.size(), [2, 3, 16, 16]);
    let mut images = a.train.images[3 * 768..4 * 768].to_vec();
    images.extend_from_slice(&a.train.images[999 * 768..]);
    assert_eq!(tensor_f32(&batch.images), normalised(&images, &[0.5; 3], &[0.25; 3], 256));
}

#[test]
fn synthetic_test_set_is_clean_and_balanced() {
    let ds = Dataset::load(DatasetKind::Synthetic, None, false).unwrap();
    let mut counts = [0usize; 10];
    for (i, &l) in ds.test.labels.iter().enumerate() {
        assert_eq!(l, (i % 10) as i64, "test label {i} is clean");
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [200; 10]);
    // The images are not degenerate: they use a good part of the byte range.
    let (lo, hi) = (ds.test.images.iter().min().unwrap(), ds.test.images.iter().max().unwrap());
    assert!(*lo < 40 && *hi > 215, "pixel range {lo}..{hi}");
}

#[test]
fn synthetic_training_labels_are_about_three_tenths_noisy() {
    let ds = Dataset::load(DatasetKind::Synthetic, None, false).unwrap();
    assert!(ds.train.labels.iter().all(|l| (0..10).contains(l)));
    let wrong = ds.train.labels.iter().enumerate().filter(|&(i, &l)| l != (i % 10) as i64).count();
    let rate = wrong as f64 / ds.train.len() as f64;
    assert!((0.25..=0.35).contains(&rate), "label noise rate {rate}");
    // Every class still appears among the (noisy) training labels.
    for class in 0..10 {
        assert!(ds.train.labels.contains(&class), "class {class}");
    }
}

#[test]
fn synthetic_classes_are_separable_by_their_mean_image() {
    // Nearest class mean (of the clean test set) classifies most test
    // samples correctly: the classes carry signal.
    let ds = Dataset::load(DatasetKind::Synthetic, None, false).unwrap();
    let len = 768;
    let mut means = vec![vec![0f64; len]; 10];
    for (i, image) in ds.test.images.chunks(len).enumerate() {
        for (m, &v) in means[i % 10].iter_mut().zip(image) {
            *m += f64::from(v) / 200.0;
        }
    }
    let correct = ds
        .train
        .images
        .chunks(len)
        .enumerate()
        .filter(|(i, image)| {
            let dist = |m: &Vec<f64>| m.iter().zip(image.iter()).map(|(a, &b)| (a - f64::from(b)).powi(2)).sum::<f64>();
            let best = (0..10).min_by(|&a, &b| dist(&means[a]).total_cmp(&dist(&means[b]))).unwrap();
            best == i % 10
        })
        .count();
    assert!(correct > 500, "{correct} of 1000 training images are nearest their class mean");
}

#[test]
fn batch_helpers() {
    let ds = Dataset::load(DatasetKind::Synthetic, None, false).unwrap();
    let batches: Vec<Batch> = ds.test_batches(300).map(Result::unwrap).collect();
    assert_eq!(batches.len(), 7);
    assert!(batches[..6].iter().all(|b| b.len() == 300));
    assert_eq!(batches[6].len(), 200);
    let labels: Vec<i64> = batches.iter().flat_map(|b| tensor_i64(&b.labels)).collect();
    assert_eq!(labels, ds.test.labels);
    let moved = batches[0].to_device(Device::Cpu);
    assert!(moved.images.equal(&batches[0].images));
    let empty = ds.train_batch(&samples(&[], &[])).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.images.size(), [0, 3, 16, 16]);
}
