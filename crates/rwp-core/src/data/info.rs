//! What a job's dataset is like without reading it: the input shape, the
//! classes and the length of each split. The parameter server plans a job
//! (its schedule, its evaluation shards, its model) from this alone and
//! never opens a dataset; the loaders check their files against it.

use rwp_spec::eval::{EvalSplit, SplitPlan};
use rwp_spec::plan::validation_len;
use rwp_spec::{DatasetKind, JobSpec};

use super::synthetic;
use crate::model::InputShape;

/// A dataset's shape and split lengths, as [`super::Dataset::for_spec`] loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatasetInfo {
    pub shape: InputShape,
    pub classes: i64,
    /// Training samples, the validation samples held out.
    pub train: usize,
    /// Samples held out of the training set (`validation_fraction`).
    pub validation: usize,
    pub test: usize,
}

impl DatasetInfo {
    /// The dataset of `spec`: its own data's as inspected (the spec's
    /// `data.summary`), the built-in one's sizes, or the standard
    /// sizes of MNIST (60,000 + 10,000) and CIFAR (50,000 + 10,000), with
    /// the validation samples held out of the training set as
    /// [`rwp_spec::plan::validation_split`] does.
    #[must_use]
    pub fn for_spec(spec: &JobSpec) -> Self {
        if let Some(summary) = spec.data.as_ref().and_then(|d| d.summary.as_ref()) {
            let held_out = validation_len(spec, summary.train as usize);
            return Self {
                shape: super::own::input_shape(&summary.shape),
                classes: i64::from(summary.classes),
                train: summary.train as usize - held_out,
                validation: held_out + summary.validation as usize,
                test: summary.test as usize,
            };
        }
        let (shape, classes, full_train, test) = match spec.dataset {
            DatasetKind::Synthetic => (synthetic::SHAPE, synthetic::CLASSES, synthetic::TRAIN, synthetic::TEST),
            DatasetKind::Mnist => (InputShape { channels: 1, height: 28, width: 28 }, 10, 60_000, 10_000),
            DatasetKind::Cifar10 => (InputShape { channels: 3, height: 32, width: 32 }, 10, 50_000, 10_000),
            DatasetKind::Cifar100 => (InputShape { channels: 3, height: 32, width: 32 }, 100, 50_000, 10_000),
            // Known once the data is inspected (the summary above); the
            // service plans such a job only after that.
            DatasetKind::ImageFolder | DatasetKind::TarShards | DatasetKind::Tensors => {
                (InputShape { channels: 0, height: 0, width: 0 }, 0, 0, 0)
            }
        };
        let validation = validation_len(spec, full_train);
        Self { shape, classes, train: full_train - validation, validation, test }
    }

    /// How `split` is evaluated: in batches sized for this dataset's samples.
    #[must_use]
    pub fn eval_plan(&self, split: EvalSplit) -> SplitPlan {
        let samples = match split {
            EvalSplit::Test => self.test,
            EvalSplit::Validation => self.validation,
        };
        SplitPlan::for_samples(samples, self.shape.values())
    }
}
