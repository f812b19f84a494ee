//! A job's own data (`image-folder`, `tar-shards`, `tensors`): its sample
//! index ([`rwp_data::DataIndex`]), checked against the summary the job was
//! planned with, and batches read from it on demand.
//!
//! Images are decoded and transformed by [`rwp_images`] on a pool of
//! threads, every random choice drawn from the sample's seed, so a batch is
//! the same bits on every worker. Training batches (with `augment`) get the
//! `transforms` training pipeline; evaluation batches, and training ones
//! without `augment`, the evaluation one.
//!
//! Tensor samples are used as stored: uint8 values scaled to [0, 1], then,
//! with `data.mean` and `data.std`, normalised per channel (the first
//! dimension of a 3-dimensional sample, else one channel).

use rwp_data::{DataIndex, Split as IndexSplit, TensorDtype};
use rwp_images::{Loader, Normalize, Transform};
use rwp_spec::{BadSamples, DataSource, DatasetKind, JobSpec, Transforms};

use super::{DataError, Split};
use crate::model::InputShape;

/// The index of a job's own data and how its samples become inputs.
pub(super) struct OwnData {
    pub(super) index: DataIndex,
    source: DataSource,
    pub(super) shape: InputShape,
    /// Decodes images (image kinds).
    loader: Option<Loader>,
}

impl std::fmt::Debug for OwnData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnData").field("kind", &self.index.kind).field("shape", &self.shape).finish_non_exhaustive()
    }
}

/// A batch's inputs and labels; samples that could not be used (under
/// `bad_samples = "skip"`) are left out and named in `skipped`.
pub(super) struct Loaded {
    pub(super) inputs: Vec<f32>,
    pub(super) labels: Vec<i64>,
    pub(super) skipped: Vec<String>,
}

/// The model input shape of a sample of `shape` (`[C, H, W]`, `[H, W]` or `[D]`).
pub(super) fn input_shape(shape: &[u32]) -> InputShape {
    let dims: Vec<i64> = shape.iter().map(|&d| i64::from(d)).collect();
    match dims.as_slice() {
        [c, h, w] => InputShape { channels: *c, height: *h, width: *w },
        [h, w] => InputShape { channels: 1, height: *h, width: *w },
        [d] => InputShape { channels: 1, height: 1, width: *d },
        _ => InputShape { channels: 1, height: 1, width: 1 },
    }
}

impl OwnData {
    /// Lists the data of `spec` and checks it against `spec`'s summary; a
    /// spec without one gets this listing's (the local trainer inspects
    /// the data itself).
    pub(super) fn open(spec: &mut JobSpec) -> Result<Self, DataError> {
        let source = spec.data.as_mut().ok_or(DataError::NoDataDir { dataset: spec.dataset })?;
        let index = DataIndex::build(spec.dataset, source)?;
        match &source.summary {
            Some(expected) => index.check(expected)?,
            None => source.summary = Some(index.summary()),
        }
        let shape = input_shape(&index.shape);
        if spec.dataset == DatasetKind::Tensors {
            let channels = shape.channels as usize;
            if let Some(mean) = &source.mean {
                if mean.len() != channels {
                    return Err(DataError::Own(rwp_data::DataError::Classes {
                        field: "data.mean",
                        problem: format!(
                            "holds {} values; the samples, of shape {:?}, have {channels} channel(s)",
                            mean.len(),
                            index.shape
                        ),
                    }));
                }
            }
        }
        let loader = spec
            .dataset
            .holds_images()
            .then(|| Loader::new(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)));
        Ok(Self { index, source: source.clone(), shape, loader })
    }

    /// Every sample of split `which`, in index order.
    pub(super) fn split(&self, which: IndexSplit) -> Option<Split> {
        let index = self.index.split(which)?;
        let positions: Vec<u32> = (0..index.len() as u32).collect();
        let labels = index.labels().iter().map(|&l| i64::from(l)).collect();
        Some(Split { images: Vec::new(), labels, own: Some((which, positions)) })
    }

    /// The samples at `positions` of split `which`, in order; `seeds`: the
    /// training samples' augmentation seeds (`None`: evaluation, or no
    /// augmentation). `mean` and `std` normalise images.
    pub(super) fn load(
        &self,
        which: IndexSplit,
        positions: &[u32],
        seeds: Option<&[u64]>,
        mean: &[f32],
        std: &[f32],
    ) -> Result<Loaded, DataError> {
        let loaded = match &self.loader {
            Some(loader) => self.images(loader, which, positions, seeds, mean, std)?,
            None => self.tensors(which, positions)?,
        };
        if loaded.labels.is_empty() {
            return Err(DataError::Own(rwp_data::DataError::BadSample {
                field: which.field(),
                sample: format!("every one of a batch of {}", positions.len()),
                reason: "none could be used".to_owned(),
            }));
        }
        Ok(loaded)
    }

    fn images(
        &self,
        loader: &Loader,
        which: IndexSplit,
        positions: &[u32],
        seeds: Option<&[u64]>,
        mean: &[f32],
        std: &[f32],
    ) -> Result<Loaded, DataError> {
        let index = self.index.split(which).expect("the splits of the index");
        let size = self.source.image_size;
        let transform = match (self.source.transforms, seeds.is_some()) {
            (Transforms::Imagenet, true) => Transform::ImagenetTrain { size },
            (Transforms::Imagenet, false) => Transform::ImagenetEval { size },
            (Transforms::Cifar | Transforms::Resize, _) => Transform::Resize { size },
        };
        let channel = |values: &[f32], c: usize| values.get(c).copied().unwrap_or(0.0);
        let norm = Normalize {
            mean: [channel(mean, 0), channel(mean, 1), channel(mean, 2)],
            std: [channel(std, 0), channel(std, 1), channel(std, 2)],
        };
        let no_seeds = vec![0; positions.len()];
        // Unreachable storage is no bad sample: it fails the batch whatever
        // the bad-samples policy.
        let unavailable = std::sync::Mutex::new(None);
        let read = |k: usize| {
            self.index.read(which, positions[k] as usize).map_err(|e| match e {
                rwp_data::DataError::BadSample { reason, .. } => reason,
                other => {
                    let told = other.to_string();
                    if other.is_unavailable() {
                        *unavailable.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(other);
                    }
                    told
                }
            })
        };
        let batch = loader.load(positions.len(), read, seeds.unwrap_or(&no_seeds), &transform, &norm);
        if let Some(e) = unavailable.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            loader.recycle(batch.pixels);
            return Err(e.into());
        }
        let mut skipped = Vec::new();
        for (k, reason) in batch.failed {
            let sample = index.describe(positions[k] as usize);
            let error = rwp_data::DataError::BadSample { field: which.field(), sample, reason };
            if self.source.bad_samples == BadSamples::Fail {
                return Err(error.into());
            }
            skipped.push(error.to_string());
        }
        let mut inputs = batch.pixels;
        if let (Transforms::Cifar, Some(seeds)) = (self.source.transforms, seeds) {
            let len = (3 * size * size) as usize;
            for (image, &k) in inputs.chunks_mut(len).zip(&batch.kept) {
                super::augment::cifar(image, self.shape, mean, std, seeds[k]);
            }
        }
        let labels = batch.kept.iter().map(|&k| i64::from(index.labels()[positions[k] as usize])).collect();
        Ok(Loaded { inputs, labels, skipped })
    }

    fn tensors(&self, which: IndexSplit, positions: &[u32]) -> Result<Loaded, DataError> {
        let index = self.index.split(which).expect("the splits of the index");
        let values = (self.shape.channels * self.shape.height * self.shape.width) as usize;
        let mut inputs = Vec::with_capacity(positions.len() * values);
        let mut labels = Vec::with_capacity(positions.len());
        let mut skipped = Vec::new();
        for &position in positions {
            let i = position as usize;
            match self.index.read(which, i) {
                Ok(bytes) => {
                    self.tensor_values(&bytes, &mut inputs);
                    labels.push(i64::from(index.labels()[i]));
                }
                Err(e) if self.source.bad_samples == BadSamples::Skip && !e.is_unavailable() => {
                    skipped.push(e.to_string());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Loaded { inputs, labels, skipped })
    }

    /// Gives a batch's input buffer back to the image loader, which fills
    /// it again for a later batch instead of faulting in fresh pages.
    pub(super) fn recycle(&self, inputs: Vec<f32>) {
        if let Some(loader) = &self.loader {
            loader.recycle(inputs);
        }
    }

    /// Appends a tensor row's values, scaled and normalised.
    fn tensor_values(&self, bytes: &[u8], out: &mut Vec<f32>) {
        let start = out.len();
        match self.index.dtype {
            Some(TensorDtype::U8) => out.extend(bytes.iter().map(|&v| f32::from(v) / 255.0)),
            _ => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        }
        if let (Some(mean), Some(std)) = (&self.source.mean, &self.source.std) {
            let plane = (self.shape.height * self.shape.width) as usize;
            for (i, chunk) in out[start..].chunks_mut(plane).enumerate() {
                let c = i % mean.len();
                chunk.iter_mut().for_each(|v| *v = (*v - mean[c]) / std[c]);
            }
        }
    }
}
