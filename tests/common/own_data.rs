//! A job's own data, made by the tests: safetensors files of generated
//! samples (and, with the image decoder, folders and tar shards of images).

use std::fs;
use std::path::Path;

use rwp_spec::{BadSamples, DataSource, DatasetKind, JobSpec, Method, ModelKind, Transforms};

use crate::local_run::small_job;

/// Classes of the generated samples.
pub const CLASSES: u8 = 5;

/// Writes a safetensors file of `tensors` (name, dtype, shape, little-endian bytes).
pub fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let text = serde_json::to_vec(&header).unwrap();
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&text);
    file.extend_from_slice(&data);
    fs::write(path, file).unwrap();
}

/// `n` uint8 samples of shape `[3, 16, 16]` from `first` on, whose class
/// (`index % CLASSES`) shows in their brightness, as int64 labels.
pub fn samples(first: u64, n: u64) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for index in first..first + n {
        let class = (index % u64::from(CLASSES)) as u8;
        for p in 0..3 * 16 * 16u64 {
            let noise = (index.wrapping_mul(2_654_435_761).wrapping_add(p * 40_503) >> 7) as u8 % 64;
            pixels.push(class * 40 + noise);
        }
        labels.extend_from_slice(&i64::from(class).to_le_bytes());
    }
    (pixels, labels)
}

/// Writes `n` samples from `first` on to `path` as a tensors file.
pub fn write_samples(path: &Path, first: u64, n: u64) {
    let (pixels, labels) = samples(first, n);
    write_safetensors(path, &[("inputs", "U8", vec![n, 3, 16, 16], pixels), ("labels", "I64", vec![n], labels)]);
}

/// A tensors dataset in `dir`: 320 training samples in two files
/// (`train-{0..1}.safetensors`) and 120 test samples.
pub fn tensors_dataset(dir: &Path) -> DataSource {
    fs::create_dir_all(dir).unwrap();
    write_samples(&dir.join("train-0.safetensors"), 0, 200);
    write_samples(&dir.join("train-1.safetensors"), 200, 120);
    write_samples(&dir.join("test.safetensors"), 1000, 120);
    DataSource {
        train: dir.join("train-{0..1}.safetensors").display().to_string(),
        test: dir.join("test.safetensors").display().to_string(),
        validation: None,
        image_size: rwp_spec::data::DEFAULT_IMAGE_SIZE,
        transforms: Transforms::Imagenet,
        mean: Some(vec![0.5; 3]),
        std: Some(vec![0.25; 3]),
        bad_samples: BadSamples::Fail,
        summary: None,
    }
}

/// A small m-ARWP job (batch 64 in 2 + 2 shards, `updates` updates) of the
/// small CNN on `data`.
pub fn own_data_job(seed: u64, dataset: DatasetKind, data: DataSource, updates: u64) -> JobSpec {
    let mut spec = small_job(seed, Method::MArwp, updates);
    spec.model = ModelKind::SmallCnn;
    spec.dataset = dataset;
    spec.augment = dataset != DatasetKind::Tensors;
    spec.data = Some(data);
    spec
}

/// An RGB image of `width` × `height` for sample `index` of `class`: the
/// class's colour, a gradient and noise (so that crops differ).
fn pixels(class: u8, index: u64, width: u32, height: u32) -> Vec<u8> {
    let class = u32::from(class);
    let base = [(class * 50) % 250, 255 - class * 40, (class * 97) % 250].map(|v| v as u8);
    let mut out = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            for (c, &b) in base.iter().enumerate() {
                let noise = (index.wrapping_mul(2_654_435_761) ^ u64::from(x * 31 + y * 17 + c as u32 * 7)) % 48;
                out.push(b.saturating_add(((x + y) % 32) as u8).saturating_sub(noise as u8));
            }
        }
    }
    out
}

/// An encoded image: PNG for even `index`, JPEG (quality 90) for odd.
pub fn encoded_image(class: u8, index: u64) -> (Vec<u8>, &'static str) {
    let (width, height) = (24 + (index % 5) as u32 * 4, 20 + (index % 3) as u32 * 6);
    let rgb = pixels(class, index, width, height);
    let mut bytes = Vec::new();
    if index % 2 == 0 {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().unwrap().write_image_data(&rgb).unwrap();
        (bytes, "png")
    } else {
        let encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
        encoder.encode(&rgb, width as u16, height as u16, jpeg_encoder::ColorType::Rgb).unwrap();
        (bytes, "jpg")
    }
}

/// An image folder at `dir`: `CLASSES` class folders (`class-0`, ...) of
/// `per_class` images each, numbered from `first`.
pub fn write_image_folder(dir: &Path, first: u64, per_class: u64) {
    for class in 0..CLASSES {
        let folder = dir.join(format!("class-{class}"));
        fs::create_dir_all(&folder).unwrap();
        for k in 0..per_class {
            let index = first + k * u64::from(CLASSES) + u64::from(class);
            let (bytes, extension) = encoded_image(class, index);
            fs::write(folder.join(format!("{index:05}.{extension}")), bytes).unwrap();
        }
    }
}

/// A dataset of images in `dir`: `train/` (64 per class) and `val/` (16 per class).
pub fn image_folder_dataset(dir: &Path) -> DataSource {
    write_image_folder(&dir.join("train"), 0, 64);
    write_image_folder(&dir.join("val"), 10_000, 16);
    image_source(&dir.join("train").display().to_string(), &dir.join("val").display().to_string())
}

/// Images seen at 16 × 16, the ImageNet transforms.
pub fn image_source(train: &str, test: &str) -> DataSource {
    DataSource {
        train: train.to_owned(),
        test: test.to_owned(),
        validation: None,
        image_size: 16,
        transforms: Transforms::Imagenet,
        mean: None,
        std: None,
        bad_samples: BadSamples::Fail,
        summary: None,
    }
}

/// Packs the image folder `folder` into WebDataset shards `prefix-NN.tar`
/// of `per_shard` samples (`KEY.png|jpg` and `KEY.cls`), in the folder's
/// order; returns the brace pattern naming them.
pub fn pack_shards(folder: &Path, prefix: &Path, per_shard: usize) -> String {
    let mut samples = Vec::new();
    let mut classes: Vec<_> = fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()).collect();
    classes.sort();
    for (label, class) in classes.iter().enumerate() {
        let mut files: Vec<_> = fs::read_dir(class).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        samples.extend(files.into_iter().map(|f| (f, label)));
    }
    let shards = samples.len().div_ceil(per_shard);
    for (n, chunk) in samples.chunks(per_shard).enumerate() {
        let mut builder = tar::Builder::new(fs::File::create(format!("{}-{n:02}.tar", prefix.display())).unwrap());
        for (file, label) in chunk {
            let key = format!(
                "{}/{}",
                file.parent().unwrap().file_name().unwrap().to_string_lossy(),
                file.file_stem().unwrap().to_string_lossy()
            );
            let extension = file.extension().unwrap().to_string_lossy();
            for (name, bytes) in [
                (format!("{key}.{extension}"), fs::read(file).unwrap()),
                (format!("{key}.cls"), label.to_string().into_bytes()),
            ] {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, name, bytes.as_slice()).unwrap();
            }
        }
        builder.finish().unwrap();
    }
    format!("{}-{{00..{:02}}}.tar", prefix.display(), shards - 1)
}

/// Replaces the first JPEG of class 0 of the split folder `split` with its
/// first 100 bytes; returns its path.
pub fn corrupt_an_image(split: &Path) -> std::path::PathBuf {
    let class = split.join("class-0");
    let mut jpegs: Vec<_> = fs::read_dir(&class)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    jpegs.sort();
    let bytes = fs::read(&jpegs[0]).unwrap();
    fs::write(&jpegs[0], &bytes[..100]).unwrap();
    jpegs[0].clone()
}
