//! Models as pure functions of their parameters: a [`Model`] knows the names,
//! shapes and order of its parameters and BatchNorm buffers, and `forward`
//! takes the tensors to use. This is what lets the same code run at `w`, at
//! `w + ε`, on any worker, with no module state to keep in sync.
//!
//! Parameters are declared in the order PyTorch's `named_parameters()` gives
//! for the reference architectures; that order decides how ε consumes random
//! numbers, so it is part of the determinism contract.

mod arch;
mod script;

use std::path::Path;

use rwp_spec::{JobSpec, ModelKind};
use tch::{Device, Kind, Tensor};

use crate::torch_rng;

pub use script::{Operation, ScriptError, ScriptModule, ScriptSource};

pub const BN_MOMENTUM: f64 = 0.1;
pub const BN_EPS: f64 = 1e-5;

/// Shape of one input image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputShape {
    pub channels: i64,
    pub height: i64,
    pub width: i64,
}

impl InputShape {
    /// Values in one sample.
    #[must_use]
    pub fn values(&self) -> usize {
        (self.channels * self.height * self.width).max(0) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    /// PyTorch's default for conv and linear layers: U(-1/√fan_in, 1/√fan_in).
    Uniform {
        fan_in: i64,
    },
    Ones,
    Zeros,
    /// The value in the TorchScript file.
    Loaded,
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
    /// 3×3 max pooling, stride 2, padding 1 (ResNet-50's stem).
    MaxPool3Stride2,
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

/// Why a model cannot be built; for TorchScript files, what is wrong with
/// the file, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model torchscript needs its model file")]
    NoFile,
    #[error("not a loadable TorchScript module (save it with torch.jit.script(model).save(path)): {0}")]
    NotTorchScript(ScriptError),
    #[error("the TorchScript module has no parameters: there is nothing to train")]
    NoParameters,
    #[error("the TorchScript module's {what} {name} is {kind:?}; only float32 models are supported")]
    NotFloat32 { what: &'static str, name: String, kind: Kind },
    #[error("the TorchScript module does not accept the dataset's input of shape {shape:?}: {message}")]
    Input { shape: Vec<i64>, message: String },
    #[error("the TorchScript module returns {got}; the dataset needs logits of shape {expected:?} (batch, classes)")]
    Output { got: String, expected: Vec<i64> },
    /// The module failed a check of its code (the sandbox's op allowlist).
    #[error("{0}")]
    Refused(String),
}

/// The computation of a model.
#[derive(Debug)]
enum Network {
    /// A built-in architecture, a pure function of the tensors passed in.
    Layers(Vec<Layer>),
    Script(ScriptNet),
    /// The names, shapes and initial values of a model whose code runs
    /// elsewhere (a TorchScript module in its sandbox): enough to hold,
    /// update, checkpoint and serialise its state, never to run it.
    Described {
        initial_params: Vec<Tensor>,
        initial_buffers: Vec<Tensor>,
    },
}

/// A TorchScript module with its trainable tensors.
#[derive(Debug)]
struct ScriptNet {
    module: ScriptModule,
    /// The module's parameters (storage shared with it), in its order.
    params: Vec<Tensor>,
    /// The module's floating-point buffers (BatchNorm running statistics).
    buffers: Vec<Tensor>,
    /// Copies of the file's values: the job's initial weights and buffers.
    initial_params: Vec<Tensor>,
    initial_buffers: Vec<Tensor>,
}

/// A model architecture: its parameter and buffer specs and its forward pass.
#[derive(Debug)]
pub struct Model {
    pub kind: ModelKind,
    pub input: InputShape,
    pub classes: i64,
    params: Vec<TensorSpec>,
    buffers: Vec<TensorSpec>,
    network: Network,
}

impl Model {
    /// A built-in architecture.
    ///
    /// # Panics
    /// For [`ModelKind::TorchScript`], which needs its file: use
    /// [`Model::for_spec`] or [`Model::load_script`].
    #[must_use]
    pub fn new(kind: ModelKind, input: InputShape, classes: i64) -> Self {
        let mut b = Builder::default();
        let layers = match kind {
            ModelKind::Mlp => arch::mlp(&mut b, input, classes),
            ModelKind::SmallCnn => arch::small_cnn(&mut b, input, classes),
            ModelKind::Resnet18 => arch::resnet18(&mut b, input, classes),
            ModelKind::Resnet50 => arch::resnet50(&mut b, input, classes),
            ModelKind::Vgg16Bn => arch::vgg16_bn(&mut b, input, classes),
            ModelKind::Wrn16_8 => arch::wide_resnet(&mut b, input, classes, 16, 8),
            ModelKind::Wrn28_10 => arch::wide_resnet(&mut b, input, classes, 28, 10),
            ModelKind::TorchScript => panic!("a TorchScript model is loaded from its file (Model::load_script)"),
        };
        Self { kind, input, classes, params: b.params, buffers: b.buffers, network: Network::Layers(layers) }
    }

    /// The model of `spec`: a built-in architecture, or the TorchScript file
    /// `script` (the file `spec.model_file` names) loaded onto `device`.
    pub fn for_spec(
        spec: &JobSpec,
        input: InputShape,
        classes: i64,
        script: Option<&Path>,
        device: Device,
    ) -> Result<Self, ModelError> {
        match spec.model {
            ModelKind::TorchScript => Self::load_script(script.ok_or(ModelError::NoFile)?, input, classes, device),
            kind => Ok(Self::new(kind, input, classes)),
        }
    }

    /// Loads a TorchScript module and checks that it can be trained on
    /// inputs of shape `input` with `classes` classes: it has parameters, all
    /// float32, and maps a batch `[2, C, H, W]` to logits `[2, classes]`.
    /// Its trainable state is its parameters in `named_parameters()` order
    /// and its floating-point buffers in `named_buffers()` order (integer
    /// buffers such as BatchNorm's `num_batches_tracked` are not part of it).
    pub fn load_script(path: &Path, input: InputShape, classes: i64, device: Device) -> Result<Self, ModelError> {
        Self::load_script_vetted(ScriptSource::File(path), input, classes, device, |_| Ok(()))
    }

    /// [`Model::load_script`], with `vet` judging the loaded module's code
    /// before anything of it runs (beyond loading it): an `Err` refuses it.
    pub fn load_script_vetted(
        source: ScriptSource<'_>,
        input: InputShape,
        classes: i64,
        device: Device,
        vet: impl FnOnce(&ScriptModule) -> Result<(), String>,
    ) -> Result<Self, ModelError> {
        let (module, named_params) = open_script(source, device)?;
        vet(&module).map_err(ModelError::Refused)?;
        let named_buffers: Vec<(String, Tensor)> = module
            .named_buffers()
            .map_err(ModelError::NotTorchScript)?
            .into_iter()
            .filter(|(_, b)| b.is_floating_point())
            .collect();
        let spec_of = |what, (name, t): &(String, Tensor)| {
            if t.kind() == Kind::Float {
                Ok(TensorSpec { name: name.clone(), shape: t.size(), init: Init::Loaded })
            } else {
                Err(ModelError::NotFloat32 { what, name: name.clone(), kind: t.kind() })
            }
        };
        let params = named_params.iter().map(|p| spec_of("parameter", p)).collect::<Result<Vec<_>, _>>()?;
        let buffers = named_buffers.iter().map(|b| spec_of("buffer", b)).collect::<Result<Vec<_>, _>>()?;
        // Trained in place of whatever the file said (a frozen parameter is
        // still a parameter here).
        let module_params: Vec<Tensor> = named_params.into_iter().map(|(_, p)| p.set_requires_grad(true)).collect();
        let module_buffers: Vec<Tensor> = named_buffers.into_iter().map(|(_, b)| b).collect();
        let net = ScriptNet {
            initial_params: module_params.iter().map(|p| p.detach().copy()).collect(),
            initial_buffers: module_buffers.iter().map(Tensor::copy).collect(),
            module,
            params: module_params,
            buffers: module_buffers,
        };
        let model =
            Self { kind: ModelKind::TorchScript, input, classes, params, buffers, network: Network::Script(net) };
        model.check_shapes(device)?;
        Ok(model)
    }

    fn check_shapes(&self, device: Device) -> Result<(), ModelError> {
        let shape = vec![2, self.input.channels, self.input.height, self.input.width];
        let (params, buffers) = self.init(0, device);
        let images = Tensor::zeros(shape.as_slice(), (Kind::Float, device));
        let logits = tch::no_grad(|| self.try_forward(&params, &buffers, &images, BnMode::Eval))
            .map_err(|e| ModelError::Input { shape: shape.clone(), message: e.0 })?;
        let expected = vec![2, self.classes];
        if logits.size() != expected || logits.kind() != Kind::Float {
            return Err(ModelError::Output { got: describe_output(&logits), expected });
        }
        Ok(())
    }

    /// A model known by its tensors only: `params` and `buffers` (names
    /// and shapes, in order) with their initial values. It can be updated,
    /// checkpointed and serialised like any other; it cannot run a forward
    /// pass (its code runs in a sandbox, see the `rwp-sandbox` crate).
    ///
    /// # Panics
    /// When the initial values do not match the shapes (a bug of the caller).
    #[must_use]
    pub fn described(
        kind: ModelKind,
        input: InputShape,
        classes: i64,
        params: Vec<(String, Vec<i64>)>,
        buffers: Vec<(String, Vec<i64>)>,
        initial_params: Vec<Tensor>,
        initial_buffers: Vec<Tensor>,
    ) -> Self {
        let specs = |named: Vec<(String, Vec<i64>)>, values: &[Tensor]| {
            assert_eq!(named.len(), values.len(), "one initial value per tensor");
            named
                .into_iter()
                .zip(values)
                .map(|((name, shape), value)| {
                    assert_eq!(value.size(), shape, "initial value of {name}");
                    TensorSpec { name, shape, init: Init::Loaded }
                })
                .collect()
        };
        let params = specs(params, &initial_params);
        let buffers = specs(buffers, &initial_buffers);
        Self { kind, input, classes, params, buffers, network: Network::Described { initial_params, initial_buffers } }
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
    /// A TorchScript model's come from its file (`seed` is not used).
    #[must_use]
    pub fn init(&self, seed: u64, device: Device) -> (Vec<Tensor>, Vec<Tensor>) {
        let to = |ts: &[Tensor]| ts.iter().map(|t| t.to_device(device).copy()).collect();
        match &self.network {
            Network::Script(net) => return (to(&net.initial_params), to(&net.initial_buffers)),
            Network::Described { initial_params, initial_buffers } => {
                return (to(initial_params), to(initial_buffers));
            }
            Network::Layers(_) => {}
        }
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
                Init::Loaded => unreachable!("only TorchScript models have loaded tensors"),
            }
        };
        let params = torch_rng::with_seed(seed, || self.params.iter().map(make).collect());
        let buffers = self.buffers.iter().map(make).collect();
        (params, buffers)
    }

    /// The tensors to differentiate with respect to at `weights`: fresh
    /// leaves for a built-in model; for a TorchScript module its own
    /// parameters, set to `weights` (autograd sees only what the module uses).
    #[must_use]
    pub fn leaves(&self, weights: &[Tensor]) -> Vec<Tensor> {
        match &self.network {
            Network::Layers(_) | Network::Described { .. } => {
                weights.iter().map(|w| w.detach().set_requires_grad(true)).collect()
            }
            Network::Script(net) => {
                copy_into(&net.params, weights);
                net.params.iter().map(Tensor::shallow_clone).collect()
            }
        }
    }

    /// Logits for `images` (`[N, C, H, W]`). With [`BnMode::Train`] the
    /// running statistics in `buffers` are updated in place.
    ///
    /// # Panics
    /// When a TorchScript module fails on these inputs (its shapes were
    /// checked at load, so this is a module that fails on some batches only);
    /// the message is libtorch's.
    pub fn forward(&self, params: &[Tensor], buffers: &[Tensor], images: &Tensor, bn: BnMode) -> Tensor {
        self.try_forward(params, buffers, images, bn)
            .unwrap_or_else(|e| panic!("the TorchScript module failed on a batch of shape {:?}: {e}", images.size()))
    }

    fn try_forward(
        &self,
        params: &[Tensor],
        buffers: &[Tensor],
        images: &Tensor,
        bn: BnMode,
    ) -> Result<Tensor, ScriptError> {
        debug_assert_eq!(params.len(), self.params.len());
        debug_assert_eq!(buffers.len(), self.buffers.len());
        match &self.network {
            Network::Layers(layers) => Ok(run(layers, params, buffers, images.shallow_clone(), bn)),
            Network::Script(net) => {
                // The module computes with its own tensors: give it ours.
                copy_into(&net.params, params);
                copy_into(&net.buffers, buffers);
                net.module.set_training(bn != BnMode::Eval)?;
                let logits = net.module.forward(images)?;
                // BatchStats leaves `buffers` as they were: only the module's
                // copies moved, and they are overwritten before the next pass.
                if bn == BnMode::Train {
                    copy_into(buffers, &net.buffers);
                }
                Ok(logits)
            }
            Network::Described { .. } => {
                Err(ScriptError("this model's code runs only in its sandbox, not in this process".to_owned()))
            }
        }
    }
}

/// A forward pass's output for an error message: its kind and shape when
/// they look like logits, never more (a module's output could otherwise
/// smuggle data out through a shape).
fn describe_output(t: &Tensor) -> String {
    let shape = t.size();
    if shape.len() <= 4 && shape.iter().all(|d| (0..=1_000_000).contains(d)) {
        format!("{:?} {:?}", t.kind(), shape)
    } else {
        format!("a {:?} tensor of {} dimensions", t.kind(), shape.len())
    }
}

/// Loads a TorchScript file and its parameters, refusing a file that is not
/// a module and a module without parameters.
fn open_script(source: ScriptSource<'_>, device: Device) -> Result<(ScriptModule, Vec<(String, Tensor)>), ModelError> {
    let module = ScriptModule::open(source, device).map_err(ModelError::NotTorchScript)?;
    let params = module.named_parameters().map_err(ModelError::NotTorchScript)?;
    if params.is_empty() {
        return Err(ModelError::NoParameters);
    }
    Ok((module, params))
}

/// The tensors of a TorchScript file, as an upload check reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptTensors {
    pub params: Vec<(String, Vec<i64>)>,
    pub buffers: Vec<(String, Vec<i64>)>,
}

/// What is checked of an uploaded file before the dataset is known: a
/// TorchScript module whose code `vet` accepts, with float32 parameters
/// ([`Model::load_script_vetted`] checks the rest when a job uses it).
pub fn inspect_script(
    source: ScriptSource<'_>,
    vet: impl FnOnce(&ScriptModule) -> Result<(), String>,
) -> Result<ScriptTensors, ModelError> {
    let (module, params) = open_script(source, Device::Cpu)?;
    vet(&module).map_err(ModelError::Refused)?;
    let buffers: Vec<(String, Tensor)> = module
        .named_buffers()
        .map_err(ModelError::NotTorchScript)?
        .into_iter()
        .filter(|(_, b)| b.is_floating_point())
        .collect();
    let describe = |what: &'static str, named: Vec<(String, Tensor)>| {
        named
            .into_iter()
            .map(|(name, t)| {
                if t.kind() == Kind::Float {
                    Ok((name, t.size()))
                } else {
                    Err(ModelError::NotFloat32 { what, name, kind: t.kind() })
                }
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(ScriptTensors { params: describe("parameter", params)?, buffers: describe("buffer", buffers)? })
}

/// `dst[i] ← src[i]` without autograd, skipping tensors that already are
/// the same storage (the module's own leaves passed back in).
fn copy_into(dst: &[Tensor], src: &[Tensor]) {
    tch::no_grad(|| {
        for (d, s) in dst.iter().zip(src) {
            if d.data_ptr() != s.data_ptr() {
                d.shallow_clone().copy_(s);
            }
        }
    });
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
            Layer::MaxPool3Stride2 => x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false),
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
