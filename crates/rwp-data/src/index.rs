//! The sample index of a job's data and the reading of one sample.

use std::fmt::Write as _;

use rwp_spec::{DataSource, DataSummary, DatasetKind, Sha256};

use crate::storage::Store;
use crate::{image_folder, tar_shards, tensors, DataError};

/// A split of a job's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    /// The field of [`DataSource`] that locates the split.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            Split::Train => "data.train",
            Split::Validation => "data.validation",
            Split::Test => "data.test",
        }
    }
}

/// How tensor samples are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorDtype {
    F32,
    U8,
}

impl TensorDtype {
    #[must_use]
    pub fn bytes(self) -> u64 {
        match self {
            TensorDtype::F32 => 4,
            TensorDtype::U8 => 1,
        }
    }
}

/// Where one sample's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SampleRef {
    /// A whole file (an image of an image folder).
    File { file: u32, len: u64 },
    /// A tar member: `len` bytes from `offset` of shard `file`.
    Member { file: u32, key: String, offset: u64, len: u64 },
    /// Row `row` of the inputs of a safetensors file: `len` bytes from `offset`.
    Row { file: u32, row: u64, offset: u64, len: u64 },
}

/// The samples of one split, in order.
#[derive(Clone, Debug)]
pub struct SplitIndex {
    pub(crate) split: Split,
    /// The location as the job gives it.
    pub(crate) location: String,
    /// Files, shards or tensor files, as store paths.
    pub(crate) files: Vec<String>,
    pub(crate) samples: Vec<SampleRef>,
    pub(crate) labels: Vec<u32>,
    /// Where the files are read from.
    store: Store,
}

impl SplitIndex {
    pub(crate) fn new(split: Split, location: &str, store: &Store) -> Self {
        Self {
            split,
            location: location.to_owned(),
            files: Vec::new(),
            samples: Vec::new(),
            labels: Vec::new(),
            store: store.clone(),
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    #[must_use]
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// How many files (images, shards or tensor files) the split reads.
    #[must_use]
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Sample `i` for a reader: its file, and its key in a shard.
    #[must_use]
    pub fn describe(&self, i: usize) -> String {
        match &self.samples[i] {
            SampleRef::File { file, .. } => self.files[*file as usize].clone(),
            SampleRef::Member { file, key, .. } => format!("{} in {}", key, self.files[*file as usize]),
            SampleRef::Row { file, row, .. } => format!("row {row} of {}", self.files[*file as usize]),
        }
    }

    /// Lines that name every sample with its size and label, for the digest.
    fn digest_into(&self, hash: &mut Sha256) {
        let mut line = String::new();
        let _ = writeln!(line, "split {:?} {} files {} samples", self.split, self.files.len(), self.samples.len());
        hash.update(line.as_bytes());
        for (sample, label) in self.samples.iter().zip(&self.labels) {
            line.clear();
            let _ = match sample {
                SampleRef::File { file, len } => writeln!(line, "{} {len} {label}", self.files[*file as usize]),
                SampleRef::Member { file, key, len, .. } => {
                    writeln!(line, "{} {key} {len} {label}", self.files[*file as usize])
                }
                SampleRef::Row { file, row, .. } => writeln!(line, "{} {row} {label}", self.files[*file as usize]),
            };
            hash.update(line.as_bytes());
        }
    }
}

/// A job's data, listed.
#[derive(Clone, Debug)]
pub struct DataIndex {
    pub kind: DatasetKind,
    /// The class names: image folders' names, else the labels as numbers.
    pub class_names: Vec<String>,
    /// A sample's shape as stored (tensors) or as the model sees it (images: `[3, size, size]`).
    pub shape: Vec<u32>,
    /// Tensors: how the inputs are stored.
    pub dtype: Option<TensorDtype>,
    pub train: SplitIndex,
    pub validation: Option<SplitIndex>,
    pub test: SplitIndex,
}

impl DataIndex {
    /// Lists the data of `source` as a `kind` dataset.
    pub fn build(kind: DatasetKind, source: &DataSource) -> Result<Self, DataError> {
        let splits = [Some((Split::Train, source.train.as_str())), Some((Split::Test, source.test.as_str()))]
            .into_iter()
            .chain([source.validation.as_deref().map(|v| (Split::Validation, v))])
            .flatten();
        let mut listed = Vec::new();
        for (split, location) in splits {
            let (store, path) = Store::for_location(split.field(), location)?;
            listed.push((split, location, path, store));
        }
        let mut index = match kind {
            DatasetKind::ImageFolder => image_folder::index(&listed)?,
            DatasetKind::TarShards => tar_shards::index(&listed)?,
            DatasetKind::Tensors => tensors::index(&listed)?,
            other => {
                return Err(DataError::Classes {
                    field: "dataset",
                    problem: format!("{other} is a built-in dataset, not a job's own data"),
                })
            }
        };
        if kind.holds_images() {
            index.shape = vec![3, source.image_size, source.image_size];
        }
        for split in index.splits() {
            if split.is_empty() {
                return Err(DataError::invalid(split.split.field(), &split.location, "holds no samples"));
            }
        }
        Ok(index)
    }

    pub(crate) fn assemble(kind: DatasetKind, class_names: Vec<String>, mut splits: Vec<SplitIndex>) -> Self {
        let take = |splits: &mut Vec<SplitIndex>, which| {
            splits.iter().position(|s| s.split == which).map(|i| splits.swap_remove(i))
        };
        let train = take(&mut splits, Split::Train).expect("a train split");
        let test = take(&mut splits, Split::Test).expect("a test split");
        let validation = take(&mut splits, Split::Validation);
        Self { kind, class_names, shape: Vec::new(), dtype: None, train, validation, test }
    }

    /// The splits: train, test, then validation if there is one.
    pub fn splits(&self) -> impl Iterator<Item = &SplitIndex> {
        [Some(&self.train), Some(&self.test), self.validation.as_ref()].into_iter().flatten()
    }

    #[must_use]
    pub fn split(&self, split: Split) -> Option<&SplitIndex> {
        match split {
            Split::Train => Some(&self.train),
            Split::Validation => self.validation.as_ref(),
            Split::Test => Some(&self.test),
        }
    }

    #[must_use]
    pub fn classes(&self) -> u32 {
        self.class_names.len() as u32
    }

    /// What the data holds, with the digest of the whole index.
    #[must_use]
    pub fn summary(&self) -> DataSummary {
        let mut hash = Sha256::default();
        hash.update(format!("{} {} classes {:?} {:?}\n", self.kind, self.classes(), self.shape, self.dtype).as_bytes());
        for name in &self.class_names {
            hash.update(name.as_bytes());
            hash.update(b"\n");
        }
        for split in self.splits() {
            split.digest_into(&mut hash);
        }
        DataSummary {
            classes: self.classes(),
            train: self.train.len() as u64,
            validation: self.validation.as_ref().map_or(0, |v| v.len() as u64),
            test: self.test.len() as u64,
            shape: self.shape.clone(),
            digest: hash.finish_hex(),
        }
    }

    /// Checks that this index lists the data `expected` was made from.
    pub fn check(&self, expected: &DataSummary) -> Result<(), DataError> {
        let found = self.summary();
        if &found == expected {
            return Ok(());
        }
        let tell = |s: &DataSummary| {
            format!(
                "{} classes, {} training, {} validation and {} test samples (digest {})",
                s.classes,
                s.train,
                s.validation,
                s.test,
                &s.digest[..12.min(s.digest.len())]
            )
        };
        Err(DataError::Changed { expected: tell(expected), found: tell(&found) })
    }

    /// The bytes of sample `i` of `split`: an encoded image, or a tensor
    /// row as stored (little-endian).
    pub fn read(&self, split: Split, i: usize) -> Result<Vec<u8>, DataError> {
        let index = self.split(split).ok_or_else(|| DataError::Classes {
            field: split.field(),
            problem: "the job has no such split".to_owned(),
        })?;
        let (file, offset, len) = match &index.samples[i] {
            SampleRef::File { file, len } => (*file, 0, *len),
            SampleRef::Member { file, offset, len, .. } | SampleRef::Row { file, offset, len, .. } => {
                (*file, *offset, *len)
            }
        };
        let path = &index.files[file as usize];
        index.store.read_range(path, offset, len).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotConnected {
                return DataError::io(split.field(), path.as_str(), &e);
            }
            DataError::BadSample { field: split.field(), sample: index.describe(i), reason: e.to_string() }
        })
    }
}
