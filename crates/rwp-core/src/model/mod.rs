//! Models as pure functions of their parameters: a [`Model`] knows the names,
//! shapes and order of its parameters and BatchNorm buffers, and `forward`
//! takes the tensors to use. This is what lets the same code run at `w`, at
//! `w + ε`, on any worker, with no module state to keep in sync.
//!
//! Parameters are declared in the order PyTorch's `named_parameters()` gives
//! for the reference architectures; that order decides how ε consumes random
//! numbers, so it is part of the determinism contract.

mod arch;

use rwp_spec::ModelKind;
use tch::{Device, Kind, Tensor};

use crate::torch_rng;

pub const BN_MOMENTUM: f64 = 0.1;
pub const BN_EPS: f64 = 1e-5;

/// Shape of one input image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputShape {
    pub channels: i64,
    pub height: i64,
    pub width: i64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    /// PyTorch's default for conv and linear layers: U(-1/√fan_in, 1/√fan_in).
    Uniform {
        fan_in: i64,
    },
    Ones,
    Zeros,
}

/// A named tensor of a model: a trainable parameter or a BatchNorm buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
    init: Init,
}

impl TensorSpec {
    #[must_use]
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }
}

/// How BatchNorm layers behave in a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics, and the running statistics updated in place.
    Train,
    /// Batch statistics; running statistics untouched (perturbed passes).
    BatchStats,
    /// Running statistics (evaluation).
    Eval,
}

#[derive(Debug)]
enum Layer {
    Conv {
        weight: usize,
        bias: Option<usize>,
        stride: i64,
        padding: i64,
    },
    BatchNorm {
        weight: usize,
        bias: usize,
        mean: usize,
        var: usize,
    },
    Linear {
        weight: usize,
        bias: usize,
    },
    Relu,
    MaxPool2,
    GlobalAvgPool,
    Flatten,
    /// `body(x) + shortcut(x)` (an empty shortcut is the identity).
    Residual {
        body: Vec<Layer>,
        shortcut: Vec<Layer>,
    },
}

/// Registers parameters and buffers in declaration order.
#[derive(Debug, Default)]
struct Builder {
    params: Vec<TensorSpec>,
    buffers: Vec<TensorSpec>,
}

impl Builder {
    fn param(&mut self, name: String, shape: Vec<i64>, init: Init) -> usize {
        self.params.push(TensorSpec { name, shape, init });
        self.params.len() - 1
    }

    fn buffer(&mut self, name: String, shape: Vec<i64>, init: Init) -> usize {
        self.buffers.push(TensorSpec { name, shape, init });
        self.buffers.len() - 1
    }

    fn conv(&mut self, name: &str, cin: i64, cout: i64, k: i64, stride: i64, bias: bool) -> Layer {
        let fan_in = cin * k * k;
        let weight = self.param(format!("{name}.weight"), vec![cout, cin, k, k], Init::Uniform { fan_in });
        let bias = bias.then(|| self.param(format!("{name}.bias"), vec![cout], Init::Uniform { fan_in }));
        Layer::Conv { weight, bias, stride, padding: k / 2 }
    }

    fn batch_norm(&mut self, name: &str, c: i64) -> Layer {
        let weight = self.param(format!("{name}.weight"), vec![c], Init::Ones);
        let bias = self.param(format!("{name}.bias"), vec![c], Init::Zeros);
        let mean = self.buffer(format!("{name}.running_mean"), vec![c], Init::Zeros);
        let var = self.buffer(format!("{name}.running_var"), vec![c], Init::Ones);
        Layer::BatchNorm { weight, bias, mean, var }
    }

    fn linear(&mut self, name: &str, fan_in: i64, out: i64) -> Layer {
        let weight = self.param(format!("{name}.weight"), vec![out, fan_in], Init::Uniform { fan_in });
        let bias = self.param(format!("{name}.bias"), vec![out], Init::Uniform { fan_in });
        Layer::Linear { weight, bias }
    }
}

/// A model architecture: its parameter and buffer specs and its forward pass.
#[derive(Debug)]
pub struct Model {
    pub kind: ModelKind,
    pub input: InputShape,
    pub classes: i64,
    params: Vec<TensorSpec>,
    buffers: Vec<TensorSpec>,
    layers: Vec<Layer>,
}

impl Model {
    #[must_use]
    pub fn new(kind: ModelKind, input: InputShape, classes: i64) -> Self {
        let mut b = Builder::default();
        let layers = match kind {
            ModelKind::Mlp => arch::mlp(&mut b, input, classes),
            ModelKind::SmallCnn => arch::small_cnn(&mut b, input, classes),
            ModelKind::Resnet18 => arch::resnet18(&mut b, input, classes),
            ModelKind::Vgg16Bn => arch::vgg16_bn(&mut b, input, classes),
            ModelKind::Wrn16_8 => arch::wide_resnet(&mut b, input, classes, 16, 8),
            ModelKind::Wrn28_10 => arch::wide_resnet(&mut b, input, classes, 28, 10),
        };
        Self { kind, input, classes, params: b.params, buffers: b.buffers, layers }
    }

    /// Trainable parameters in declaration order.
    #[must_use]
    pub fn params(&self) -> &[TensorSpec] {
        &self.params
    }

    /// BatchNorm running statistics in declaration order.
    #[must_use]
    pub fn buffers(&self) -> &[TensorSpec] {
        &self.buffers
    }

    #[must_use]
    pub fn num_parameters(&self) -> i64 {
        self.params.iter().map(TensorSpec::numel).sum()
    }

    /// Initial parameters drawn from torch's generator seeded with `seed`, and
    /// initial buffers (mean 0, variance 1).
    #[must_use]
    pub fn init(&self, seed: u64, device: Device) -> (Vec<Tensor>, Vec<Tensor>) {
        let make = |spec: &TensorSpec| {
            let opts = (Kind::Float, device);
            match spec.init {
                Init::Uniform { fan_in } => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    let mut t = Tensor::empty(spec.shape.as_slice(), opts);
                    let _ = t.uniform_(-bound, bound);
                    t
                }
                Init::Ones => Tensor::ones(spec.shape.as_slice(), opts),
                Init::Zeros => Tensor::zeros(spec.shape.as_slice(), opts),
            }
        };
        let params = torch_rng::with_seed(seed, || self.params.iter().map(make).collect());
        let buffers = self.buffers.iter().map(make).collect();
        (params, buffers)
    }

    /// Logits for `images` (`[N, C, H, W]`). With [`BnMode::Train`] the
    /// running statistics in `buffers` are updated in place.
    pub fn forward(&self, params: &[Tensor], buffers: &[Tensor], images: &Tensor, bn: BnMode) -> Tensor {
        debug_assert_eq!(params.len(), self.params.len());
        debug_assert_eq!(buffers.len(), self.buffers.len());
        run(&self.layers, params, buffers, images.shallow_clone(), bn)
    }
}

fn run(layers: &[Layer], p: &[Tensor], b: &[Tensor], mut x: Tensor, bn: BnMode) -> Tensor {
    for layer in layers {
        x = match layer {
            Layer::Conv { weight, bias, stride, padding } => {
                x.conv2d(&p[*weight], bias.map(|i| &p[i]), [*stride, *stride], [*padding, *padding], [1, 1], 1)
            }
            Layer::BatchNorm { weight, bias, mean, var } => {
                let (running_mean, running_var, training) = match bn {
                    BnMode::Train => (Some(&b[*mean]), Some(&b[*var]), true),
                    BnMode::BatchStats => (None, None, true),
                    BnMode::Eval => (Some(&b[*mean]), Some(&b[*var]), false),
                };
                x.batch_norm(
                    Some(&p[*weight]),
                    Some(&p[*bias]),
                    running_mean,
                    running_var,
                    training,
                    BN_MOMENTUM,
                    BN_EPS,
                    true,
                )
            }
            Layer::Linear { weight, bias } => x.linear(&p[*weight], Some(&p[*bias])),
            Layer::Relu => x.relu(),
            Layer::MaxPool2 => x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            Layer::GlobalAvgPool => x.adaptive_avg_pool2d([1, 1]),
            Layer::Flatten => x.flatten(1, -1),
            Layer::Residual { body, shortcut } => {
                let short =
                    if shortcut.is_empty() { x.shallow_clone() } else { run(shortcut, p, b, x.shallow_clone(), bn) };
                run(body, p, b, x, bn) + short
            }
        };
    }
    x
}

#[cfg(test)]
mod tests;
