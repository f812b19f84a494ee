//! Listing each kind of data into a sample index: order, labels, the bytes
//! read back, the digest, and each malformed layout's error.

use std::fs;
use std::path::Path;

use rwp_data::{DataError, DataIndex, Split};
use rwp_spec::{DataSource, DatasetKind};

fn source(train: &Path, test: &Path) -> DataSource {
    DataSource {
        train: train.display().to_string(),
        test: test.display().to_string(),
        validation: None,
        image_size: 32,
        transforms: rwp_spec::Transforms::Imagenet,
        mean: None,
        std: None,
        bad_samples: rwp_spec::BadSamples::Fail,
        summary: None,
    }
}

/// `root/class/name` holding `bytes`.
fn put(root: &Path, class: &str, name: &str, bytes: &[u8]) {
    fs::create_dir_all(root.join(class)).unwrap();
    fs::write(root.join(class).join(name), bytes).unwrap();
}

fn folders(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (train, test) = (dir.join("train"), dir.join("test"));
    put(&train, "dog", "b.jpg", b"dog b");
    put(&train, "dog", "a.PNG", b"dog a");
    put(&train, "dog", "notes.txt", b"not an image");
    put(&train, "cat", "z.jpeg", b"cat z");
    put(&test, "cat", "t.jpg", b"cat t");
    put(&test, "dog", "t.jpg", b"dog t");
    (train, test)
}

fn message(error: DataError) -> String {
    error.to_string()
}

#[test]
fn an_image_folder_lists_classes_and_files_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = folders(dir.path());
    let index = DataIndex::build(DatasetKind::ImageFolder, &source(&train, &test)).unwrap();
    assert_eq!(index.class_names, ["cat", "dog"]);
    assert_eq!(index.train.labels(), [0, 1, 1]);
    assert_eq!(index.test.labels(), [0, 1]);
    let bytes: Vec<_> = (0..3).map(|i| index.read(Split::Train, i).unwrap()).collect();
    assert_eq!(bytes, [b"cat z".to_vec(), b"dog a".to_vec(), b"dog b".to_vec()], "notes.txt is left out");
    assert_eq!(index.shape, [3, 32, 32]);
    let summary = index.summary();
    assert_eq!((summary.classes, summary.train, summary.validation, summary.test), (2, 3, 0, 2));
    assert_eq!(summary.digest.len(), 64);
}

#[test]
fn the_digest_is_the_same_for_the_same_data_and_tells_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = folders(dir.path());
    let data = source(&train, &test);
    let planned = DataIndex::build(DatasetKind::ImageFolder, &data).unwrap().summary();
    let again = DataIndex::build(DatasetKind::ImageFolder, &data).unwrap();
    again.check(&planned).unwrap();
    put(&train, "cat", "new.jpg", b"another cat");
    let changed = DataIndex::build(DatasetKind::ImageFolder, &data).unwrap();
    let error = message(changed.check(&planned).unwrap_err());
    assert!(error.contains("the data changed since the job was submitted"), "{error}");
    assert!(error.contains("4 training") && error.contains("3 training"), "{error}");
}

#[test]
fn image_folder_problems_name_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = folders(dir.path());
    fs::create_dir_all(train.join("emu")).unwrap();
    let error = message(DataIndex::build(DatasetKind::ImageFolder, &source(&train, &test)).unwrap_err());
    assert!(error.starts_with("data.train: ") && error.contains("(class 'emu') holds no .jpg, .jpeg or .png file"));

    put(&train, "emu", "e.jpg", b"emu");
    let error = message(DataIndex::build(DatasetKind::ImageFolder, &source(&train, &test)).unwrap_err());
    assert!(
        error.contains("data.test: its class folders differ from those of data.train: missing [\"emu\"]"),
        "{error}"
    );

    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let error = message(DataIndex::build(DatasetKind::ImageFolder, &source(&empty, &test)).unwrap_err());
    assert!(error.contains("holds no class folders"), "{error}");

    let error =
        message(DataIndex::build(DatasetKind::ImageFolder, &source(&dir.path().join("nope"), &test)).unwrap_err());
    assert!(error.starts_with("data.train: cannot read") && error.contains("no such folder"), "{error}");
}

/// A tar file of `members` (name, bytes), in order.
fn tar(path: &Path, members: &[(&str, &[u8])]) {
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *bytes).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn tar_shards_group_members_by_key_across_a_brace_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tar(
        &d.join("train-00.tar"),
        &[("s/a.jpg", b"image a"), ("s/a.cls", b"2\n"), ("s/a.json", b"{}"), ("b.png", b"image b"), ("b.cls", b"0")],
    );
    tar(&d.join("train-01.tar"), &[("c.cls", b"1"), ("c.jpeg", b"image c")]);
    tar(&d.join("test-00.tar"), &[("t.jpg", b"image t"), ("t.cls", b"1")]);
    let data = source(&d.join("train-{00..01}.tar"), &d.join("test-00.tar"));
    let index = DataIndex::build(DatasetKind::TarShards, &data).unwrap();
    assert_eq!(index.classes(), 3);
    assert_eq!(index.train.labels(), [2, 0, 1]);
    let bytes: Vec<_> = (0..3).map(|i| index.read(Split::Train, i).unwrap()).collect();
    assert_eq!(bytes, [b"image a".to_vec(), b"image b".to_vec(), b"image c".to_vec()]);
    assert_eq!(index.train.describe(0), format!("s/a in {}", d.join("train-00.tar").display()));
    assert_eq!(index.train.files(), 2);

    // A folder of shards reads them all, sorted by name.
    let shards = d.join("shards");
    fs::create_dir_all(&shards).unwrap();
    fs::copy(d.join("train-01.tar"), shards.join("1.tar")).unwrap();
    fs::copy(d.join("train-00.tar"), shards.join("0.tar")).unwrap();
    let from_folder = DataIndex::build(DatasetKind::TarShards, &source(&shards, &d.join("test-00.tar"))).unwrap();
    assert_eq!(from_folder.train.labels(), [2, 0, 1]);
}

#[test]
fn tar_shard_problems_name_the_shard_and_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tar(&d.join("test.tar"), &[("t.jpg", b"image t"), ("t.cls", b"1")]);
    let build = |members: &[(&str, &[u8])]| {
        tar(&d.join("train.tar"), members);
        message(
            DataIndex::build(DatasetKind::TarShards, &source(&d.join("train.tar"), &d.join("test.tar"))).unwrap_err(),
        )
    };
    let error = build(&[("a.jpg", b"image"), ("a.cls", b"0"), ("b.jpg", b"image")]);
    assert!(
        error.starts_with("data.train: ") && error.contains("has a sample 'b' with no .cls member (its label)"),
        "{error}"
    );
    let error = build(&[("a.cls", b"0")]);
    assert!(error.contains("has a sample 'a' with no .jpg, .jpeg or .png member"), "{error}");
    let error = build(&[("a.jpg", b"image"), ("a.cls", b"cat")]);
    assert!(error.contains("whose label \"cat\" (.cls) is not a class number"), "{error}");
    fs::write(d.join("train.tar"), vec![7u8; 1500]).unwrap();
    let error = message(
        DataIndex::build(DatasetKind::TarShards, &source(&d.join("train.tar"), &d.join("test.tar"))).unwrap_err(),
    );
    assert!(error.starts_with("data.train: cannot read") && error.contains("train.tar"), "{error}");
    let error = message(
        DataIndex::build(DatasetKind::TarShards, &source(&d.join("train-{0..1}.tar"), &d.join("test.tar")))
            .unwrap_err(),
    );
    assert!(error.contains("train-0.tar") && error.contains("No such file"), "{error}");
}

/// A safetensors file of `tensors` (name, dtype, shape, little-endian bytes).
fn safetensors(path: &Path, tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) {
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

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn tensor_files_list_their_rows_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: Vec<f32> = (0..12).map(|v| v as f32).collect();
    safetensors(
        &d.join("train-0.safetensors"),
        &[("inputs", "F32", vec![2, 2, 3], f32_bytes(&rows)), ("labels", "I64", vec![2], i64_bytes(&[4, 1]))],
    );
    safetensors(
        &d.join("train-1.safetensors"),
        &[("labels", "I64", vec![1], i64_bytes(&[0])), ("inputs", "F32", vec![1, 2, 3], f32_bytes(&rows[..6]))],
    );
    safetensors(
        &d.join("test.safetensors"),
        &[
            ("inputs", "F32", vec![1, 2, 3], f32_bytes(&rows[6..])),
            ("labels", "I32", vec![1], 2i32.to_le_bytes().to_vec()),
        ],
    );
    let data = source(&d.join("train-{0..1}.safetensors"), &d.join("test.safetensors"));
    let index = DataIndex::build(DatasetKind::Tensors, &data).unwrap();
    assert_eq!((index.classes(), index.shape.clone()), (5, vec![2, 3]));
    assert_eq!(index.train.labels(), [4, 1, 0]);
    assert_eq!(index.test.labels(), [2]);
    assert_eq!(index.read(Split::Train, 1).unwrap(), f32_bytes(&rows[6..]));
    assert_eq!(index.read(Split::Train, 2).unwrap(), f32_bytes(&rows[..6]));
    assert_eq!(index.train.describe(1), format!("row 1 of {}", d.join("train-0.safetensors").display()));
}

#[test]
fn tensor_file_problems_name_the_file_and_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    safetensors(
        &d.join("test.safetensors"),
        &[("inputs", "F32", vec![1, 3], f32_bytes(&[1.0, 2.0, 3.0])), ("labels", "I64", vec![1], i64_bytes(&[0]))],
    );
    let build = |tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]| {
        safetensors(&d.join("train.safetensors"), tensors);
        let data = source(&d.join("train.safetensors"), &d.join("test.safetensors"));
        message(DataIndex::build(DatasetKind::Tensors, &data).unwrap_err())
    };
    let inputs = ("inputs", "F32", vec![2, 3], f32_bytes(&[0.0; 6]));
    let error = build(std::slice::from_ref(&inputs));
    assert!(error.starts_with("data.train: ") && error.contains("must hold tensors 'inputs' and 'labels'"), "{error}");
    let error = build(&[inputs.clone(), ("labels", "I64", vec![2], i64_bytes(&[0, -3]))]);
    assert!(error.contains("has label -3 at row 1"), "{error}");
    let error = build(&[("inputs", "F16", vec![2, 3], vec![0; 12]), ("labels", "I64", vec![2], i64_bytes(&[0, 1]))]);
    assert!(error.contains("dtype F16; it must be F32 or U8"), "{error}");
    let error = build(&[inputs.clone(), ("labels", "I64", vec![3], i64_bytes(&[0, 1, 2]))]);
    assert!(error.contains("'labels' of shape [3] for 2 samples"), "{error}");
    let error =
        build(&[("inputs", "F32", vec![2, 2], f32_bytes(&[0.0; 4])), ("labels", "I64", vec![2], i64_bytes(&[0, 1]))]);
    assert!(error.starts_with("data.test: ") && error.contains("those of data.train are [2]"), "{error}");
    fs::write(d.join("train.safetensors"), u64::MAX.to_le_bytes()).unwrap();
    let data = source(&d.join("train.safetensors"), &d.join("test.safetensors"));
    let error = message(DataIndex::build(DatasetKind::Tensors, &data).unwrap_err());
    assert!(error.contains("is not a safetensors file"), "{error}");
}
