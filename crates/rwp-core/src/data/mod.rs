//! Datasets as 8-bit images in memory, turned into normalised (and for CIFAR,
//! augmented) float batches on demand. Every random choice of a batch comes
//! from the per-sample seeds of [`rwp_spec::plan::ShardSamples`], so a batch
//! is the same on every worker.

mod augment;
mod files;
mod info;
mod synthetic;

pub use info::DatasetInfo;

use std::path::{Path, PathBuf};

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
            DataError::NoDataDir { .. } | DataError::Size { .. } => self.to_string(),
            DataError::Io { path, source } => format!("cannot read {} in data_dir: {}", name(path), source.kind()),
            DataError::Malformed { path, format, .. } => {
                format!("{} in data_dir is not a valid {format} file", name(path))
            }
        }
    }
}

/// One split: images as `u8` in `[N, C, H, W]` order, and labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
}

impl Split {
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
        let len = self.images.len() / self.labels.len().max(1);
        let mut images = Vec::with_capacity(indices.len() * len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let i = i as usize;
            images.extend_from_slice(&self.images[i * len..(i + 1) * len]);
            labels.push(self.labels[i]);
        }
        Split { images, labels }
    }
}

/// Images and labels of one mini-batch (or shard), ready for a model.
#[derive(Debug)]
pub struct Batch {
    /// `[N, C, H, W]`, float, normalised.
    pub images: Tensor,
    /// `[N]`, int64 class indices.
    pub labels: Tensor,
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
        Batch { images: self.images.to_device(device), labels: self.labels.to_device(device) }
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
                }
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

    fn make_batch(&self, pixels: Vec<f32>, labels: Vec<i64>) -> Batch {
        let n = labels.len() as i64;
        let InputShape { channels, height, width } = self.shape;
        Batch {
            images: Tensor::from_slice(&pixels).view([n, channels, height, width]),
            labels: Tensor::from_slice(&labels),
        }
    }

    /// The training samples of one shard, augmented when the dataset asks for it.
    #[must_use]
    pub fn train_batch(&self, samples: &ShardSamples) -> Batch {
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
        self.make_batch(pixels, labels)
    }

    /// The test split in order, in batches of at most `batch_size`.
    pub fn test_batches(&self, batch_size: usize) -> impl Iterator<Item = Batch> + '_ {
        self.batches(&self.test, batch_size)
    }

    /// `split` in order, not augmented, in batches of at most `batch_size`.
    pub fn batches<'a>(&'a self, split: &'a Split, batch_size: usize) -> impl Iterator<Item = Batch> + 'a {
        (0..split.len())
            .step_by(batch_size.max(1))
            .map(move |start| self.slice(split, start..(start + batch_size).min(split.len())))
    }

    /// The samples `range` of `split`, in order, not augmented.
    #[must_use]
    pub fn slice(&self, split: &Split, range: std::ops::Range<usize>) -> Batch {
        let len = self.image_len();
        let mut pixels = Vec::with_capacity(range.len() * len);
        self.normalise(&split.images[range.start * len..range.end * len], &mut pixels);
        self.make_batch(pixels, split.labels[range].to_vec())
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
}

#[cfg(test)]
mod tests;
