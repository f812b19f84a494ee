//! Checking data before training: the dataset a folder holds (its splits
//! and kind found from its files), its summary, and every sample that
//! cannot be read or decoded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rwp_spec::{BadSamples, DataReport, DataSource, DatasetKind, SplitReport, Transforms, UnreadableSample};

use crate::index::{DataIndex, Split};
use crate::storage::Store;
use crate::DataError;

/// The split folders [`layout`] looks for, by the split they hold.
const TRAIN: &[&str] = &["train"];
const TEST: &[&str] = &["test"];
const VALIDATION: &[&str] = &["validation", "valid"];
/// ImageNet's convention: `val` is the test split when there is no `test`,
/// else the validation split.
const VAL: &str = "val";

/// The dataset in the folder `root`: its `train` folder, its `test` folder
/// (or `val`, ImageNet's), and its `validation` folder (or `val` beside a
/// `test`); the kind from the training folder's files: `.tar` files are
/// tar shards, `.safetensors` files tensors, class folders an image folder.
pub fn layout(root: &str, image_size: u32) -> Result<(DatasetKind, DataSource), DataError> {
    let field = "location";
    let (store, path) = Store::for_location(field, root)?;
    if !store.is_dir(&path).map_err(|e| DataError::io(field, path.as_str(), &e))? {
        return Err(DataError::unreadable(field, path.as_str(), "no such folder"));
    }
    let entries = store.list(&path).map_err(|e| DataError::io(field, path.as_str(), &e))?;
    let find = |names: &[&str]| entries.iter().find(|e| e.is_dir && names.contains(&e.name.as_str()));
    let train = find(TRAIN).ok_or_else(|| {
        DataError::invalid(
            field,
            path.as_str(),
            "holds no train folder (a dataset folder holds train and test, or val)",
        )
    })?;
    let test = find(TEST).or_else(|| find(&[VAL])).ok_or_else(|| {
        DataError::invalid(field, path.as_str(), "holds no test (or val) folder beside its train folder")
    })?;
    let validation = find(VALIDATION).or_else(|| (test.name != VAL).then(|| find(&[VAL])).flatten());
    let train = store.join(&path, &train.name);
    let inside = store.list(&train).map_err(|e| DataError::io("data.train", train.as_str(), &e))?;
    let kind = if inside.iter().any(|e| !e.is_dir && e.name.ends_with(".tar")) {
        DatasetKind::TarShards
    } else if inside.iter().any(|e| !e.is_dir && e.name.ends_with(".safetensors")) {
        DatasetKind::Tensors
    } else {
        DatasetKind::ImageFolder
    };
    let source = DataSource {
        train,
        test: store.join(&path, &test.name),
        validation: validation.map(|v| store.join(&path, &v.name)),
        image_size,
        transforms: Transforms::Imagenet,
        mean: None,
        std: None,
        bad_samples: BadSamples::Fail,
        summary: None,
    };
    Ok((kind, source))
}

/// Decodes an image, returning its width and height.
pub type Decoder = dyn Fn(&[u8]) -> Result<(u32, u32), String> + Sync;

/// Lists `source` as a `kind` dataset and, with `decode`, reads and
/// decodes every image on `threads` threads, gathering the ones that fail.
pub fn inspect(
    kind: DatasetKind,
    source: &DataSource,
    decode: Option<&Decoder>,
    threads: usize,
) -> Result<DataReport, DataError> {
    let index = DataIndex::build(kind, source)?;
    let mut unreadable = Vec::new();
    let mut first_image = None;
    let decode = decode.filter(|_| kind.holds_images());
    if let Some(decode) = decode {
        for split in index.splits() {
            let which = split.split;
            let found = Mutex::new(Vec::new());
            let next = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..threads.max(1) {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= split.len() {
                            break;
                        }
                        let outcome = index.read(which, i).map_err(|e| match e {
                            DataError::BadSample { reason, .. } => reason,
                            other => other.to_string(),
                        });
                        let outcome = outcome.and_then(|bytes| decode(&bytes));
                        found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((i, outcome));
                    });
                }
            });
            let mut found = found.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
            found.sort_by_key(|(i, _)| *i);
            for (i, outcome) in found {
                match outcome {
                    Ok((width, height)) => {
                        if which == Split::Train && first_image.is_none() {
                            first_image = Some([height, width]);
                        }
                    }
                    Err(reason) => unreadable.push(UnreadableSample { sample: split.describe(i), reason }),
                }
            }
        }
    }
    let splits = index
        .splits()
        .map(|s| SplitReport {
            field: s.split.field().to_owned(),
            location: s.location.clone(),
            samples: s.len() as u64,
            files: s.files() as u64,
        })
        .collect();
    Ok(DataReport {
        kind,
        class_names: index.class_names.clone(),
        splits,
        shape: index.shape.clone(),
        first_image,
        unreadable,
        decoded: decode.is_some(),
        summary: index.summary(),
    })
}
