//! The operations an uploaded TorchScript module may use.
//!
//! Every function of an uploaded module (each method, `__setstate__`
//! included, with the calls it makes inlined) is walked when it is loaded,
//! and every operation must be on the list below. The list is tensor
//! arithmetic, the layers of `torch.nn`, shape and indexing operations and
//! TorchScript's own control flow and containers: what a model's `forward`
//! needs. What it leaves out is refused, naming the operation and the
//! function, and falls in one of the [`Family`] cases:
//! reading or writing files, reaching memory or storage behind a tensor's
//! back, calling code the walk cannot see (custom C++ classes, interfaces,
//! native functions), operators from outside ATen and TorchScript, and any
//! ATen operation that is simply not on the list.
//!
//! The list is the first line of defence; the sandbox (`confine`) is the
//! second, and holds for whatever gets past this one.

use std::fmt;

/// Operations of ATen (`aten::`) a module may call.
const ATEN: &[&str] = &[
    // Layers and their functional forms.
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "_convolution",
    "convolution",
    "linear",
    "bilinear",
    "matmul",
    "mm",
    "bmm",
    "addmm",
    "addbmm",
    "baddbmm",
    "addmv",
    "mv",
    "dot",
    "outer",
    "einsum",
    "batch_norm",
    "instance_norm",
    "layer_norm",
    "group_norm",
    "local_response_norm",
    "embedding",
    "embedding_bag",
    "dropout",
    "dropout_",
    "feature_dropout",
    "feature_dropout_",
    "alpha_dropout",
    "alpha_dropout_",
    "feature_alpha_dropout",
    "feature_alpha_dropout_",
    "lstm",
    "gru",
    "rnn_tanh",
    "rnn_relu",
    "lstm_cell",
    "gru_cell",
    "rnn_tanh_cell",
    "rnn_relu_cell",
    "scaled_dot_product_attention",
    "_native_multi_head_attention",
    "_transformer_encoder_layer_fwd",
    "pixel_shuffle",
    "pixel_unshuffle",
    "channel_shuffle",
    "native_channel_shuffle",
    "pad",
    "constant_pad_nd",
    "reflection_pad1d",
    "reflection_pad2d",
    "replication_pad1d",
    "replication_pad2d",
    "upsample_nearest1d",
    "upsample_nearest2d",
    "upsample_nearest3d",
    "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d",
    "upsample_linear1d",
    "upsample_bilinear2d",
    "upsample_bicubic2d",
    "upsample_trilinear3d",
    "_upsample_bilinear2d_aa",
    "_upsample_bicubic2d_aa",
    "cosine_similarity",
    "pairwise_distance",
    "cdist",
    // Pooling.
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "lp_pool1d",
    "lp_pool2d",
    // Activations.
    "relu",
    "relu_",
    "relu6",
    "relu6_",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "elu_",
    "selu",
    "selu_",
    "celu",
    "celu_",
    "gelu",
    "gelu_",
    "silu",
    "silu_",
    "mish",
    "mish_",
    "hardswish",
    "hardswish_",
    "hardsigmoid",
    "hardsigmoid_",
    "hardtanh",
    "hardtanh_",
    "hardshrink",
    "softshrink",
    "tanhshrink",
    "softplus",
    "softsign",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "prelu",
    "rrelu",
    "glu",
    "threshold",
    "threshold_",
    "log_sigmoid",
    "softmax",
    "log_softmax",
    "_softmax",
    "_log_softmax",
    "softmin",
    // Losses (a module may compute an auxiliary one).
    "cross_entropy_loss",
    "nll_loss",
    "nll_loss_nd",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    // Element-wise arithmetic and math.
    "add",
    "add_",
    "sub",
    "sub_",
    "rsub",
    "mul",
    "mul_",
    "div",
    "div_",
    "true_divide",
    "floor_divide",
    "floordiv",
    "remainder",
    "fmod",
    "neg",
    "neg_",
    "abs",
    "abs_",
    "pow",
    "pow_",
    "sqrt",
    "sqrt_",
    "rsqrt",
    "rsqrt_",
    "exp",
    "exp_",
    "exp2",
    "expm1",
    "log",
    "log_",
    "log2",
    "log10",
    "log1p",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "sinh",
    "cosh",
    "asinh",
    "acosh",
    "atanh",
    "erf",
    "erfc",
    "erfinv",
    "floor",
    "ceil",
    "round",
    "trunc",
    "frac",
    "sign",
    "sgn",
    "reciprocal",
    "reciprocal_",
    "square",
    "clamp",
    "clamp_",
    "clamp_min",
    "clamp_min_",
    "clamp_max",
    "clamp_max_",
    "clip",
    "lerp",
    "addcmul",
    "addcdiv",
    "maximum",
    "minimum",
    "fmax",
    "fmin",
    "hypot",
    "logaddexp",
    "nan_to_num",
    "isnan",
    "isinf",
    "isfinite",
    "logical_and",
    "logical_or",
    "logical_not",
    "logical_xor",
    "bitwise_and",
    "bitwise_or",
    "bitwise_not",
    "bitwise_xor",
    "__and__",
    "__or__",
    "__xor__",
    "__lshift__",
    "__rshift__",
    "__iand__",
    "__ior__",
    "__ixor__",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "eq_",
    "ne_",
    "where",
    "masked_fill",
    "masked_fill_",
    "masked_scatter",
    "masked_select",
    "copysign",
    "square_",
    // Reductions.
    "sum",
    "mean",
    "prod",
    "max",
    "min",
    "amax",
    "amin",
    "argmax",
    "argmin",
    "all",
    "any",
    "std",
    "var",
    "std_mean",
    "var_mean",
    "norm",
    "frobenius_norm",
    "linalg_norm",
    "linalg_vector_norm",
    "logsumexp",
    "cumsum",
    "cumprod",
    "cummax",
    "cummin",
    "median",
    "mode",
    "topk",
    "sort",
    "argsort",
    "kthvalue",
    "count_nonzero",
    "nonzero",
    "unique_dim",
    "_unique2",
    "bincount",
    "histc",
    // Creation (from shapes and values, never from storage or files).
    "zeros",
    "zeros_like",
    "ones",
    "ones_like",
    "full",
    "full_like",
    "empty",
    "empty_like",
    "arange",
    "linspace",
    "logspace",
    "eye",
    "tensor",
    "scalar_tensor",
    "as_tensor",
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
    "rand",
    "rand_like",
    "randn",
    "randn_like",
    "randint",
    "randint_like",
    "randperm",
    "bernoulli",
    "bernoulli_",
    "normal",
    "normal_",
    "uniform_",
    "fill_",
    "zero_",
    "tril",
    "triu",
    "diag",
    "diag_embed",
    "diagonal",
    "one_hot",
    "meshgrid",
    "cartesian_prod",
    // Shapes, views and indexing.
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "unflatten",
    "squeeze",
    "squeeze_",
    "unsqueeze",
    "unsqueeze_",
    "permute",
    "transpose",
    "transpose_",
    "t",
    "t_",
    "contiguous",
    "expand",
    "expand_as",
    "repeat",
    "repeat_interleave",
    "tile",
    "flip",
    "fliplr",
    "flipud",
    "roll",
    "rot90",
    "chunk",
    "split",
    "split_with_sizes",
    "unbind",
    "narrow",
    "slice",
    "select",
    "index",
    "index_select",
    "index_put_",
    "index_put",
    "index_add",
    "index_add_",
    "index_copy",
    "index_fill",
    "index_fill_",
    "gather",
    "scatter",
    "scatter_",
    "scatter_add",
    "scatter_add_",
    "take_along_dim",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "hstack",
    "vstack",
    "dstack",
    "movedim",
    "moveaxis",
    "swapaxes",
    "swapdims",
    "unfold",
    "im2col",
    "col2im",
    "clone",
    "copy_",
    "detach",
    "detach_",
    "to",
    "type_as",
    "float",
    "double",
    "half",
    "bfloat16",
    "long",
    "int",
    "bool",
    "requires_grad_",
    "numel",
    "size",
    "dim",
    "len",
    "stride",
    "is_floating_point",
    "is_contiguous",
    "item",
    "tolist",
    "broadcast_tensors",
    "broadcast_to",
    "atleast_1d",
    "atleast_2d",
    "atleast_3d",
    "masked_fill",
    "_shape_as_tensor",
    "_reshape_from_tensor",
    "numpy_T",
    "mT",
    "mH",
    "adjoint",
    // TorchScript's scalars, lists, dicts and strings.
    "__getitem__",
    "__setitem__",
    "_set_item",
    "__contains__",
    "__is__",
    "__isnot__",
    "__not__",
    "__range_length",
    "__derive_index",
    "append",
    "extend",
    "insert",
    "pop",
    "remove",
    "clear",
    "reverse",
    "copy",
    "count",
    "list",
    "keys",
    "values",
    "items",
    "get",
    "setdefault",
    "dict",
    "Int",
    "Float",
    "Bool",
    "IntImplicit",
    "FloatImplicit",
    "ScalarImplicit",
    "ComplexImplicit",
    "Complex",
    "str",
    "format",
    "join",
    "split",
    "strip",
    "lower",
    "upper",
    "startswith",
    "endswith",
    "__round_to_zero_floordiv",
    "floor",
    "ceil",
    "sqrt",
    "log",
    "exp",
    "sin",
    "cos",
    "gcd",
    "factorial",
    "isnan",
    "warn",
    "is_grad_enabled",
    "_assert",
    "__upsample_nearest",
    "_infer_size",
    "_size_if_not_equal",
    "sym_size",
    "sym_numel",
    "sym_stride",
    "_no_grad_uniform_",
    "_no_grad_normal_",
    "_no_grad_fill_",
    "_no_grad_zero_",
];

/// TorchScript's own operations (`prim::`): constants, attributes, control
/// flow, containers, type refinements.
const PRIM: &[&str] = &[
    "Constant",
    "GetAttr",
    "SetAttr",
    "If",
    "Loop",
    "ListConstruct",
    "ListUnpack",
    "TupleConstruct",
    "TupleUnpack",
    "TupleIndex",
    "TupleSlice",
    "DictConstruct",
    "DictIndex",
    "CreateObject",
    "RaiseException",
    "Uninitialized",
    "unchecked_cast",
    "unchecked_unwrap_optional",
    "isinstance",
    "device",
    "dtype",
    "layout",
    "is_cuda",
    "is_cpu",
    "is_nested",
    "is_sparse",
    "is_quantized",
    "is_mkldnn",
    "is_meta",
    "requires_grad",
    "grad",
    "data",
    "shape",
    "type",
    "min",
    "max",
    "abs",
    "NumToTensor",
    "ImplicitTensorToNum",
    "AutogradZero",
    "AutogradAdd",
    "BroadcastSizes",
    "EnumName",
    "EnumValue",
    "StringIndex",
    "Print",
    "rangelist",
    "layout",
    "name",
    "id",
    "index",
    "TypeCheck",
    "TupleIndex",
    "ConstantChunk",
    "ListIndex",
];

/// Operations that read or write files (`torch.from_file`, `torch.save`, ...).
const FILE_IO: &[&str] = &["aten::from_file", "aten::save", "aten::load", "aten::_load", "prim::Load", "prim::Store"];

/// Operations that reach storage or raw memory behind a tensor's back:
/// with them a module can view memory its tensors do not own.
const MEMORY: &[&str] = &[
    "aten::as_strided",
    "aten::as_strided_",
    "aten::as_strided_scatter",
    "aten::set_",
    "aten::_set_",
    "aten::storage_offset",
    "aten::data_ptr",
    "aten::_make_per_tensor_quantized_tensor",
    "aten::from_blob",
    "aten::resize_",
    "aten::resize_as_",
    "aten::_unsafe_view",
    "aten::_debug_has_internal_overlap",
    "aten::_nested_view_from_buffer",
];

/// Why an operation is refused: the families the tests hold one case of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Reads or writes files.
    FileAccess,
    /// Reaches storage or memory behind a tensor's back.
    MemoryAccess,
    /// A call the walk cannot follow: a custom C++ class's method, an
    /// interface, a native function.
    OpaqueCall,
    /// An operator outside ATen and TorchScript (`quantized::`,
    /// `torchvision::`, a custom op library).
    UnknownNamespace,
    /// An ATen or TorchScript operation not on the list.
    NotAllowed,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FileAccess => "it reads or writes files",
            Self::MemoryAccess => "it reaches memory behind a tensor's back",
            Self::OpaqueCall => "it calls code outside the module that cannot be checked (a custom class, an interface or a native function)",
            Self::UnknownNamespace => "its namespace is neither aten nor prim (custom operators are not allowed)",
            Self::NotAllowed => "it is not on the list of tensor operations uploaded models may use",
        })
    }
}

/// A refused operation, with the function that calls it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The function, without TorchScript's `__torch__.` prefix (`Net.forward`).
    pub function: String,
    pub op: String,
    pub family: Family,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the module's {} calls {}, which uploaded models may not use: {} (see docs/security.md)",
            self.function, self.op, self.family
        )
    }
}

/// The family `op` is refused for, or `None` when it is allowed.
#[must_use]
pub fn refused(op: &str) -> Option<Family> {
    if FILE_IO.contains(&op) {
        return Some(Family::FileAccess);
    }
    if MEMORY.contains(&op) {
        return Some(Family::MemoryAccess);
    }
    if op.starts_with("prim::CallMethod") || op.starts_with("prim::CallFunction") || op.starts_with('<') {
        return Some(Family::OpaqueCall);
    }
    let (namespace, name) = op.split_once("::")?;
    let allowed = match namespace {
        // aten's overloads and in-place forms share the base name's rights
        // only when listed; `name` never carries an overload suffix here.
        "aten" => ATEN.contains(&name),
        "prim" => PRIM.contains(&name),
        _ => return Some(Family::UnknownNamespace),
    };
    (!allowed).then_some(Family::NotAllowed)
}

/// Every refused operation of a module, each once, in program order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusals(pub Vec<Refusal>);

/// How many refused operations a message lists after the first.
const LISTED: usize = 8;

impl fmt::Display for Refusals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((first, rest)) = self.0.split_first() else { return Ok(()) };
        write!(f, "{first}")?;
        if !rest.is_empty() {
            let listed: Vec<String> = rest.iter().take(LISTED).map(|r| format!("{} ({})", r.op, r.function)).collect();
            let more = rest.len().saturating_sub(LISTED);
            write!(f, "; also refused: {}", listed.join(", "))?;
            if more > 0 {
                write!(f, " and {more} more")?;
            }
        }
        Ok(())
    }
}

/// Checks every `(function, op)` pair: `Err` lists each refused operation
/// once, with the first function that calls it.
pub fn check<'a>(operations: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), Refusals> {
    let mut refusals: Vec<Refusal> = Vec::new();
    for (function, op) in operations {
        let family = refused(op).or_else(|| (!op.contains("::")).then_some(Family::UnknownNamespace));
        if let Some(family) = family {
            if refusals.iter().all(|r| r.op != op) {
                let function = function.strip_prefix("__torch__.").unwrap_or(function).to_owned();
                refusals.push(Refusal { function, op: op.to_owned(), family });
            }
        }
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(Refusals(refusals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(op: &str) -> Option<Family> {
        check([("__torch__.Net.forward", op)]).err().map(|r| r.0[0].family)
    }

    #[test]
    fn the_layers_of_a_cnn_are_allowed() {
        for op in ["aten::conv2d", "aten::batch_norm", "aten::relu", "aten::max_pool2d", "aten::linear", "prim::If"] {
            assert_eq!(family(op), None, "{op}");
        }
    }

    #[test]
    fn file_operations_are_refused() {
        assert_eq!(family("aten::from_file"), Some(Family::FileAccess));
        assert_eq!(family("aten::save"), Some(Family::FileAccess));
    }

    #[test]
    fn views_of_raw_memory_are_refused() {
        assert_eq!(family("aten::as_strided"), Some(Family::MemoryAccess));
        assert_eq!(family("aten::set_"), Some(Family::MemoryAccess));
    }

    #[test]
    fn calls_the_walk_cannot_follow_are_refused() {
        assert_eq!(
            family("prim::CallMethod(__torch__.torch.classes.quantized.Conv2dPackedParamsBase.unpack)"),
            Some(Family::OpaqueCall)
        );
        assert_eq!(family("<native function>"), Some(Family::OpaqueCall));
    }

    #[test]
    fn other_namespaces_are_refused() {
        assert_eq!(family("quantized::conv2d"), Some(Family::UnknownNamespace));
        assert_eq!(family("torchvision::nms"), Some(Family::UnknownNamespace));
        assert_eq!(family("nonsense"), Some(Family::UnknownNamespace));
    }

    #[test]
    fn unlisted_aten_operations_are_refused() {
        assert_eq!(family("aten::_fused_dropout_backward"), Some(Family::NotAllowed));
        assert_eq!(family("prim::Enter"), Some(Family::NotAllowed));
    }

    #[test]
    fn every_refused_operation_is_listed_once() {
        let refusals = check([
            ("__torch__.Net.forward", "aten::save"),
            ("__torch__.Net.f", "aten::relu"),
            ("__torch__.Net.g", "aten::save"),
            ("__torch__.Net.h", "quantized::linear"),
        ])
        .unwrap_err();
        let ops: Vec<&str> = refusals.0.iter().map(|r| r.op.as_str()).collect();
        assert_eq!(ops, ["aten::save", "quantized::linear"]);
        assert!(refusals.to_string().contains("also refused: quantized::linear (Net.h)"), "{refusals}");
    }

    #[test]
    fn a_refusal_names_the_function_and_the_operation() {
        let refusal = check([("__torch__.Net.__setstate__", "aten::save")]).unwrap_err();
        let message = refusal.to_string();
        assert!(message.contains("Net.__setstate__") && message.contains("aten::save"), "{message}");
        assert!(!message.contains("__torch__"), "{message}");
    }
}
