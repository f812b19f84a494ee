//! Datasets as 8-bit images in memory, turned into normalised (and for CIFAR,
//! augmented) float batches on demand. Every random choice of a batch comes
//! from the per-sample seeds of [`rwp_spec::plan::ShardSamples`], so a batch
//! is the same on every worker.

mod augment;
mod files;
mod info;
mod own;
mod synthetic;

pub use info::DatasetInfo;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rwp_spec::plan::{validation_split, ShardSamples};
use rwp_spec::{DatasetKind, JobSpec};
use tch::{Device, Tensor};

use crate::model::InputShape;

/// A dataset that cannot be loaded, naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset {dataset} needs a data directory")]
    NoDataDir { dataset: DatasetKind },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not a valid {format} file: {reason}", path.display())]
    Malformed { path: PathBuf, format: &'static str, reason: String },
    /// Files that hold another number of samples than the dataset has
    /// (the parameter server plans the job from the standard sizes).
    #[error("the {split} split of {dataset} has {found} samples; the dataset has {expected}")]
    Size { dataset: DatasetKind, split: &'static str, found: usize, expected: usize },
    /// A job's own data: its owner's locations, files and samples.
    #[error(transparent)]
    Own(#[from] rwp_data::DataError),
}

impl DataError {
    /// The error told without paths or anything read from the files: which
    /// file (by name, in `data_dir`) and what kind of failure. What goes back
    /// to a job's owner.
    #[must_use]
    pub fn redacted(&self) -> String {
        let name =
            |path: &Path| path.file_name().map_or_else(|| "a file".to_owned(), |n| n.to_string_lossy().into_owned());
        match self {
            DataError::NoDataDir { .. } | DataError::Size { .. } | DataError::Own(_) => self.to_string(),
            DataError::Io { path, source } => format!("cannot read {} in data_dir: {}", name(path), source.kind()),
            DataError::Malformed { path, format, .. } => {
                format!("{} in data_dir is not a valid {format} file", name(path))
            }
        }
    }
}

/// One split: images as `u8` in `[N, C, H, W]` order (built-in datasets),
/// or positions in a split of a job's own data, and labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
    /// A job's own data: the split of its index and the positions in it.
    own: Option<(rwp_data::Split, Vec<u32>)>,
}

impl Split {
    pub(crate) fn pixels(images: Vec<u8>, labels: Vec<i64>) -> Self {
        Self { images, labels, own: None }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The samples at `indices`, in that order.
    fn select(&self, indices: &[u32]) -> Split {
        let labels = indices.iter().map(|&i| self.labels[i as usize]).collect();
        if let Some((which, positions)) = &self.own {
            let own = Some((*which, indices.iter().map(|&i| positions[i as usize]).collect()));
            return Split { images: Vec::new(), labels, own };
        }
        let len = self.images.len() / self.labels.len().max(1);
        let mut images = Vec::with_capacity(indices.len() * len);
        for &i in indices {
            let i = i as usize;
            images.extend_from_slice(&self.images[i * len..(i + 1) * len]);
        }
        Split { images, labels, own: None }
    }
}

/// Images and labels of one mini-batch (or shard), ready for a model.
#[derive(Debug)]
pub struct Batch {
    /// `[N, C, H, W]`, float, normalised.
    pub images: Tensor,
    /// `[N]`, int64 class indices.
    pub labels: Tensor,
    /// Samples left out of the batch (a job's own data under
    /// `bad_samples = "skip"`), each named with what is wrong with it.
    pub skipped: Vec<String>,
}

impl Batch {
    #[must_use]
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[must_use]
    pub fn to_device(&self, device: Device) -> Batch {
        Batch {
            images: self.images.to_device(device),
            labels: self.labels.to_device(device),
            skipped: self.skipped.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
    pub shape: InputShape,
    pub classes: i64,
    pub train: Split,
    /// Held out of the training set (`validation_fraction > 0`).
    pub validation: Option<Split>,
    pub test: Split,
    mean: Vec<f32>,
    std: Vec<f32>,
    augment: bool,
    /// A job's own data: its index and how its samples are read.
    own: Option<Arc<own::OwnData>>,
}

const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const CIFAR_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];
const MNIST_MEAN: f32 = 0.1307;
const MNIST_STD: f32 = 0.3081;

impl Dataset {
    /// Loads `kind`. `augment` applies the references' CIFAR augmentation to
    /// training batches; it is ignored for the other datasets.
    pub fn load(kind: DatasetKind, data_dir: Option<&Path>, augment: bool) -> Result<Self, DataError> {
        let dir = || data_dir.ok_or(DataError::NoDataDir { dataset: kind });
        let ds = match kind {
            DatasetKind::Synthetic => {
                let (train, test) = synthetic::generate();
                Dataset {
                    kind,
                    shape: synthetic::SHAPE,
                    classes: synthetic::CLASSES,
                    train,
                    validation: None,
                    test,
                    mean: vec![0.5; 3],
                    std: vec![0.25; 3],
                    augment: false,
                    own: None,
                }
            }
            DatasetKind::Mnist => {
                let (train, test) = files::mnist(dir()?)?;
                Dataset {
                    kind,
                    shape: InputShape { channels: 1, height: 28, width: 28 },
                    classes: 10,
                    train,
                    validation: None,
                    test,
                    mean: vec![MNIST_MEAN],
                    std: vec![MNIST_STD],
                    augment: false,
                    own: None,
                }
            }
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
                let classes = if kind == DatasetKind::Cifar10 { 10 } else { 100 };
                let (train, test) = files::cifar(dir()?, classes)?;
                Dataset {
                    kind,
                    shape: InputShape { channels: 3, height: 32, width: 32 },
                    classes,
                    train,
                    validation: None,
                    test,
                    mean: CIFAR_MEAN.to_vec(),
                    std: CIFAR_STD.to_vec(),
                    augment,
                    own: None,
                }
            }
            DatasetKind::ImageFolder | DatasetKind::TarShards | DatasetKind::Tensors => {
                return Err(DataError::NoDataDir { dataset: kind })
            }
        };
        Ok(ds)
    }

    /// The dataset of `spec`, with its validation samples held out of the
    /// training set ([`rwp_spec::plan::validation_split`]): what the
    /// server, every worker and the local trainer train and evaluate on.
    ///
    /// Files of another size than [`DatasetInfo`] says are refused: the
    /// server plans the job from those sizes without reading the files.
    pub fn for_spec(spec: &JobSpec) -> Result<Self, DataError> {
        if spec.dataset.is_own_data() {
            let mut spec = spec.clone();
            if spec.data.as_ref().is_some_and(|d| d.summary.is_none()) {
                return Err(DataError::Own(rwp_data::DataError::Classes {
                    field: "data",
                    problem: "the job's data has not been inspected (its summary is missing)".to_owned(),
                }));
            }
            return Self::inspect(&mut spec);
        }
        let mut data = Self::load(spec.dataset, spec.data_dir.as_deref(), spec.augment)?;
        let info = DatasetInfo::for_spec(spec);
        let full_train = info.train + info.validation;
        for (split, found, expected) in [("train", data.train.len(), full_train), ("test", data.test.len(), info.test)]
        {
            if found != expected {
                return Err(DataError::Size { dataset: spec.dataset, split, found, expected });
            }
        }
        data.hold_out_validation(spec);
        Ok(data)
    }

    /// The dataset of `spec` as [`Dataset::for_spec`] loads it; a job's own
    /// data is listed and, when `spec` has no summary of it yet (the local
    /// trainer on a new spec), given this listing's.
    pub fn inspect(spec: &mut JobSpec) -> Result<Self, DataError> {
        if !spec.dataset.is_own_data() {
            return Self::for_spec(spec);
        }
        let own = own::OwnData::open(spec)?;
        let source = spec.data.as_ref().expect("checked by OwnData::open");
        let (mean, std) = match (&source.mean, &source.std) {
            (Some(mean), Some(std)) => (mean.clone(), std.clone()),
            _ if spec.dataset.holds_images() => {
                (rwp_spec::data::IMAGENET_MEAN.to_vec(), rwp_spec::data::IMAGENET_STD.to_vec())
            }
            _ => (Vec::new(), Vec::new()),
        };
        let split = |which| own.split(which);
        let mut data = Dataset {
            kind: spec.dataset,
            shape: own.shape,
            classes: i64::from(own.index.classes()),
            train: split(rwp_data::Split::Train).expect("a train split"),
            validation: split(rwp_data::Split::Validation),
            test: split(rwp_data::Split::Test).expect("a test split"),
            mean,
            std,
            augment: spec.augment,
            own: None,
        };
        data.own = Some(Arc::new(own));
        data.hold_out_validation(spec);
        Ok(data)
    }

    /// Moves the validation samples of `spec` out of the training set
    /// (nothing changes when `validation_fraction` is 0).
    pub fn hold_out_validation(&mut self, spec: &JobSpec) {
        let (train, validation) = validation_split(spec, self.train.len());
        if validation.is_empty() {
            return;
        }
        self.validation = Some(self.train.select(&validation));
        self.train = self.train.select(&train);
    }

    fn image_len(&self) -> usize {
        (self.shape.channels * self.shape.height * self.shape.width) as usize
    }

    /// Appends the normalised values of whole images (`[.., C, H, W]`) to `out`.
    fn normalise(&self, pixels: &[u8], out: &mut Vec<f32>) {
        let plane = (self.shape.height * self.shape.width) as usize;
        let channels = self.shape.channels as usize;
        for (i, chunk) in pixels.chunks(plane).enumerate() {
            let c = i % channels;
            let (m, s) = (self.mean[c], self.std[c]);
            out.extend(chunk.iter().map(|&v| (f32::from(v) / 255.0 - m) / s));
        }
    }

    fn make_batch(&self, pixels: &[f32], labels: Vec<i64>) -> Batch {
        let n = labels.len() as i64;
        let InputShape { channels, height, width } = self.shape;
        Batch {
            images: Tensor::from_slice(pixels).view([n, channels, height, width]),
            labels: Tensor::from_slice(&labels),
            skipped: Vec::new(),
        }
    }

    /// The training samples of one shard, augmented when the dataset asks for it.
    pub fn train_batch(&self, samples: &ShardSamples) -> Result<Batch, DataError> {
        if let Some(own) = &self.own {
            let (which, positions) = self.train.own.as_ref().expect("an own-data split");
            let picked: Vec<u32> = samples.indices.iter().map(|&i| positions[i as usize]).collect();
            let seeds = self.augment.then_some(samples.augment_seeds.as_slice());
            return Ok(self.own_batch(own, own.load(*which, &picked, seeds, &self.mean, &self.std)?));
        }
        let len = self.image_len();
        let mut pixels = Vec::with_capacity(samples.indices.len() * len);
        let mut labels = Vec::with_capacity(samples.indices.len());
        for (&index, &seed) in samples.indices.iter().zip(&samples.augment_seeds) {
            let index = index as usize;
            let image = &self.train.images[index * len..(index + 1) * len];
            let start = pixels.len();
            self.normalise(image, &mut pixels);
            if self.augment {
                augment::cifar(&mut pixels[start..], self.shape, &self.mean, &self.std, seed);
            }
            labels.push(self.train.labels[index]);
        }
        Ok(self.make_batch(&pixels, labels))
    }

    fn own_batch(&self, own: &own::OwnData, loaded: own::Loaded) -> Batch {
        let own::Loaded { inputs, labels, skipped } = loaded;
        let mut batch = self.make_batch(&inputs, labels);
        batch.skipped = skipped;
        own.recycle(inputs);
        batch
    }

    /// The test split in order, in batches of at most `batch_size`.
    pub fn test_batches(&self, batch_size: usize) -> impl Iterator<Item = Result<Batch, DataError>> + '_ {
        self.batches(&self.test, batch_size)
    }

    /// `split` in order, not augmented, in batches of at most `batch_size`.
    pub fn batches<'a>(
        &'a self,
        split: &'a Split,
        batch_size: usize,
    ) -> impl Iterator<Item = Result<Batch, DataError>> + 'a {
        (0..split.len())
            .step_by(batch_size.max(1))
            .map(move |start| self.slice(split, start..(start + batch_size).min(split.len())))
    }

    /// The samples `range` of `split`, in order, not augmented.
    pub fn slice(&self, split: &Split, range: std::ops::Range<usize>) -> Result<Batch, DataError> {
        if let (Some(own), Some((which, positions))) = (&self.own, &split.own) {
            return Ok(self.own_batch(own, own.load(*which, &positions[range], None, &self.mean, &self.std)?));
        }
        let len = self.image_len();
        let mut pixels = Vec::with_capacity(range.len() * len);
        self.normalise(&split.images[range.start * len..range.end * len], &mut pixels);
        Ok(self.make_batch(&pixels, split.labels[range].to_vec()))
    }

    /// The split an evaluation task covers; `None`: the job holds no
    /// validation samples out.
    #[must_use]
    pub fn eval_split(&self, split: rwp_spec::eval::EvalSplit) -> Option<&Split> {
        match split {
            rwp_spec::eval::EvalSplit::Test => Some(&self.test),
            rwp_spec::eval::EvalSplit::Validation => self.validation.as_ref(),
        }
    }

    /// How `split` is evaluated: in batches sized for this dataset's samples.
    #[must_use]
    pub fn eval_plan(&self, split: &Split) -> rwp_spec::eval::SplitPlan {
        rwp_spec::eval::SplitPlan::for_samples(split.len(), self.shape.values())
    }
}

#[cfg(test)]
mod tests;
