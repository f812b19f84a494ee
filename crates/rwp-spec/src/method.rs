use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A training method (docs/algorithms.md, "The methods").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Sgd,
    Sam,
    Rwp,
    Arwp,
    MRwp,
    MArwp,
}

impl Method {
    pub const ALL: [Method; 6] = [Method::Sgd, Method::Sam, Method::Rwp, Method::Arwp, Method::MRwp, Method::MArwp];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Method::Sgd => "sgd",
            Method::Sam => "sam",
            Method::Rwp => "rwp",
            Method::Arwp => "arwp",
            Method::MRwp => "m-rwp",
            Method::MArwp => "m-arwp",
        }
    }

    /// Whether an update needs clean gradients `∇L_{B_c}(w)`.
    #[must_use]
    pub fn uses_clean(self) -> bool {
        matches!(self, Method::Sgd | Method::MRwp | Method::MArwp)
    }

    /// Whether an update needs perturbed gradients `∇L_{B_p}(w + ε)`.
    #[must_use]
    pub fn uses_perturbed(self) -> bool {
        matches!(self, Method::Rwp | Method::Arwp | Method::MRwp | Method::MArwp)
    }

    /// Whether ε is scaled by the gradient history `F`.
    #[must_use]
    pub fn is_adaptive(self) -> bool {
        matches!(self, Method::Arwp | Method::MArwp)
    }

    /// Whether the clean and perturbed gradients are mixed with λ.
    #[must_use]
    pub fn is_mixed(self) -> bool {
        matches!(self, Method::MRwp | Method::MArwp)
    }

    /// Methods without a clean pass take BatchNorm running statistics from
    /// their perturbed pass, the only forward pass they make.
    #[must_use]
    pub fn bn_stats_from_perturbed(self) -> bool {
        self.uses_perturbed() && !self.uses_clean()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| SpecError::Unknown {
            what: "method",
            value: s.to_owned(),
            expected: Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// A model architecture, with parameters in a fixed declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Mlp,
    SmallCnn,
    Resnet18,
    /// torchvision's ResNet-50 (ImageNet stem), the papers' ImageNet model.
    Resnet50,
    Vgg16Bn,
    Wrn16_8,
    Wrn28_10,
    /// A TorchScript module uploaded by the user (`JobSpec::model_file`).
    #[serde(rename = "torchscript")]
    TorchScript,
}

impl ModelKind {
    pub const ALL: [ModelKind; 8] = [
        ModelKind::Mlp,
        ModelKind::SmallCnn,
        ModelKind::Resnet18,
        ModelKind::Resnet50,
        ModelKind::Vgg16Bn,
        ModelKind::Wrn16_8,
        ModelKind::Wrn28_10,
        ModelKind::TorchScript,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::SmallCnn => "small-cnn",
            ModelKind::Resnet18 => "resnet18",
            ModelKind::Resnet50 => "resnet50",
            ModelKind::Vgg16Bn => "vgg16-bn",
            ModelKind::Wrn16_8 => "wrn16-8",
            ModelKind::Wrn28_10 => "wrn28-10",
            ModelKind::TorchScript => "torchscript",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| SpecError::Unknown {
            what: "model",
            value: s.to_owned(),
            expected: ModelKind::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// A dataset by name. The built-in file-backed datasets read from `data_dir`;
/// a job's own data (image folders, tar shards, tensor files) is described
/// by the spec's `data` ([`crate::DataSource`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// The built-in generated image set: needs no files.
    Synthetic,
    Mnist,
    Cifar10,
    Cifar100,
    /// One folder per class of JPEG or PNG files (classes sorted by name).
    ImageFolder,
    /// Tar files whose members `KEY.jpg|png` and `KEY.cls` form samples.
    TarShards,
    /// safetensors files holding `inputs` and `labels`.
    Tensors,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 7] = [
        DatasetKind::Synthetic,
        DatasetKind::Mnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::ImageFolder,
        DatasetKind::TarShards,
        DatasetKind::Tensors,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::ImageFolder => "image-folder",
            DatasetKind::TarShards => "tar-shards",
            DatasetKind::Tensors => "tensors",
        }
    }

    /// A built-in dataset read from `data_dir` (MNIST, CIFAR).
    #[must_use]
    pub fn needs_files(self) -> bool {
        matches!(self, DatasetKind::Mnist | DatasetKind::Cifar10 | DatasetKind::Cifar100)
    }

    /// A job's own data, described by the spec's `data`.
    #[must_use]
    pub fn is_own_data(self) -> bool {
        matches!(self, DatasetKind::ImageFolder | DatasetKind::TarShards | DatasetKind::Tensors)
    }

    /// Samples are encoded images (decoded and transformed to `image_size`).
    #[must_use]
    pub fn holds_images(self) -> bool {
        matches!(self, DatasetKind::ImageFolder | DatasetKind::TarShards)
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetKind::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| SpecError::Unknown {
            what: "dataset",
            value: s.to_owned(),
            expected: DatasetKind::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        })
    }
}
