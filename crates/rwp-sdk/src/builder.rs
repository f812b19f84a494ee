use std::path::PathBuf;

use rwp_spec::{DatasetKind, GradientEncoding, JobSpec, LrSchedule, Method, ModelKind, NonFinitePolicy, SigmaSchedule};

use crate::SdkError;

/// Builds a [`JobSpec`] starting from the reference hyper-parameters of a
/// method (σ, λ, η, β, lr 0.1, momentum 0.9, weight decay 1e-3, batch 256,
/// cosine schedule; docs/algorithms.md, "Reference hyper-parameters") on the
/// built-in dataset.
#[derive(Clone, Debug)]
pub struct JobSpecBuilder {
    spec: JobSpec,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, value: $ty) -> Self {
                self.spec.$name = value;
                self
            }
        )*
    };
}

impl JobSpecBuilder {
    #[must_use]
    pub fn new(method: Method) -> Self {
        Self { spec: JobSpec::reference(method) }
    }

    setters! {
        model: ModelKind,
        dataset: DatasetKind,
        /// Root seed of initial weights, sample order, augmentation and noise.
        seed: u64,
        epochs: u32,
        batch_size: u32,
        /// Shards (tasks) the clean or SAM batch is split into per update.
        clean_shards: u32,
        /// Shards (tasks) the perturbed batch is split into per update.
        perturbed_shards: u32,
        independent_noise: bool,
        lr: f64,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
        lr_schedule: LrSchedule,
        warmup_updates: u64,
        sigma: f64,
        sigma_schedule: SigmaSchedule,
        lambda: f64,
        eta: f64,
        beta: f64,
        rho: f64,
        augment: bool,
        non_finite: NonFinitePolicy,
        gradient_encoding: GradientEncoding,
        /// Fraction of the training set held out for validation, in [0, 0.5).
        validation_fraction: f64,
    }

    /// Directory of the dataset's files, readable by every worker.
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spec.data_dir = Some(dir.into());
        self
    }

    /// A job's own data (with dataset `image-folder`, `tar-shards` or
    /// `tensors`): where its splits are and how they are read.
    #[must_use]
    pub fn data(mut self, data: rwp_spec::DataSource) -> Self {
        self.spec.data = Some(data);
        self
    }

    /// Stop after this many updates (schedules still span all epochs).
    #[must_use]
    pub fn max_updates(mut self, updates: u64) -> Self {
        self.spec.max_updates = Some(updates);
        self
    }

    /// The spec, validated: an out-of-range value is named.
    pub fn build(self) -> Result<JobSpec, SdkError> {
        if self.spec.model == ModelKind::TorchScript && self.spec.model_file.is_none() {
            return Err(SdkError::InvalidSpec(
                "model torchscript needs its file: build the spec without .model(ModelKind::TorchScript) and \
                 submit it with Client::submit_with_model_file(name, &spec, path), which uploads the file and \
                 names it in the spec"
                    .into(),
            ));
        }
        self.spec.validate().map_err(|e| SdkError::InvalidSpec(e.to_string()))?;
        Ok(self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_from_the_reference_and_validates() {
        let spec = JobSpecBuilder::new(Method::MArwp).epochs(3).sigma(0.02).build().unwrap();
        assert_eq!((spec.epochs, spec.sigma, spec.lambda, spec.eta), (3, 0.02, 0.5, 0.1));
        let err = JobSpecBuilder::new(Method::MRwp).lambda(1.5).build().unwrap_err();
        assert!(err.to_string().contains("lambda = 1.5"), "{err}");
        let err = JobSpecBuilder::new(Method::Sgd).model(ModelKind::TorchScript).build().unwrap_err();
        assert!(err.to_string().contains("Client::submit_with_model_file"), "{err}");
    }
}
