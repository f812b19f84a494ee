//! TorchScript modules (`torch.jit.script(model).save(...)`) through the small
//! C API in `csrc/script_module.cpp`: tch loads and runs modules but does not
//! list their buffers, which BatchNorm's running statistics live in.
//!
//! A module is stateful: its parameters and buffers are tensors it owns. To
//! run it as a function of given weights (`w`, `w + ε`, any snapshot), the
//! caller's tensors are copied into the module's before each pass, and the
//! running statistics copied back out after a pass that updates them.

// The FFI boundary to csrc/script_module.cpp, the one place unsafe code is
// allowed; every block says why it holds.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;

use tch::{Device, Tensor};
use torch_sys::C_tensor;

type NamedTensorCallback = extern "C" fn(*mut c_void, *const c_char, *mut C_tensor);
type OperationCallback = extern "C" fn(*mut c_void, *const c_char, *const c_char);

extern "C" {
    fn rwp_free_string(s: *mut c_char);
    fn rwp_script_load(path: *const c_char, device: i32, error: *mut *mut c_char) -> *mut c_void;
    fn rwp_script_load_bytes(data: *const c_char, len: usize, device: i32, error: *mut *mut c_char) -> *mut c_void;
    fn rwp_script_free(module: *mut c_void);
    fn rwp_script_named_parameters(
        module: *mut c_void,
        data: *mut c_void,
        f: NamedTensorCallback,
        error: *mut *mut c_char,
    ) -> bool;
    fn rwp_script_named_buffers(
        module: *mut c_void,
        data: *mut c_void,
        f: NamedTensorCallback,
        error: *mut *mut c_char,
    ) -> bool;
    fn rwp_script_operations(
        module: *mut c_void,
        data: *mut c_void,
        f: OperationCallback,
        error: *mut *mut c_char,
    ) -> bool;
    fn rwp_script_set_training(module: *mut c_void, training: bool, error: *mut *mut c_char) -> bool;
    fn rwp_script_forward(module: *mut c_void, input: *const C_tensor, error: *mut *mut c_char) -> *mut C_tensor;
}

/// What libtorch said when a TorchScript operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScriptError(pub String);

/// Turns the C side's error string into a [`ScriptError`] (freeing it).
fn take_error(error: *mut c_char) -> ScriptError {
    if error.is_null() {
        return ScriptError("libtorch reported an error without a message".to_owned());
    }
    // SAFETY: a non-null `error` is a NUL-terminated string malloc'ed by the
    // C side; it is freed exactly once, here.
    let message = unsafe { CStr::from_ptr(error) }.to_string_lossy().trim().to_owned();
    unsafe { rwp_free_string(error) };
    ScriptError(summarise(&message))
}

/// The part of a libtorch message a user needs, bounded: an error raised
/// inside a module's code comes after a TorchScript traceback (its last
/// lines say what went wrong, with the line of the module that did it);
/// other messages end with a C++ call stack (their first lines say it).
fn summarise(message: &str) -> String {
    let lines: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).collect();
    let kept: Vec<&str> = if message.contains("Traceback of TorchScript") {
        let from = lines.len().saturating_sub(3);
        lines[from..].to_vec()
    } else {
        lines.into_iter().take(6).collect()
    };
    let mut out = kept.join("\n");
    if out.len() > 2000 {
        let mut end = 2000;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str(" ...");
    }
    out
}

extern "C" fn collect_named(data: *mut c_void, name: *const c_char, tensor: *mut C_tensor) {
    // SAFETY: `data` is the `&mut Vec` passed below, `name` a valid C string
    // for the duration of the call, `tensor` a new handle we now own.
    let out = unsafe { &mut *data.cast::<Vec<(String, Tensor)>>() };
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    out.push((name, unsafe { Tensor::from_ptr(tensor) }));
}

extern "C" fn collect_operation(data: *mut c_void, function: *const c_char, op: *const c_char) {
    // SAFETY: `data` is the `&mut Vec` passed by `operations`; both strings
    // are valid C strings for the duration of the call.
    let out = unsafe { &mut *data.cast::<Vec<Operation>>() };
    let function = unsafe { CStr::from_ptr(function) }.to_string_lossy().into_owned();
    let op = unsafe { CStr::from_ptr(op) }.to_string_lossy().into_owned();
    out.push(Operation { function, op });
}

/// One operation a function of a TorchScript module runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The function's qualified name (`__torch__.Net.forward`).
    pub function: String,
    /// The operation (`aten::conv2d`, `prim::If`); a call the walk could not
    /// follow names its target in parentheses.
    pub op: String,
}

/// A loaded TorchScript module.
pub struct ScriptModule {
    ptr: *mut c_void,
}

// SAFETY: libtorch modules may move between threads. The type is not `Sync`
// (raw pointer): a pass mutates the module, so two threads must never share one.
unsafe impl Send for ScriptModule {}

impl std::fmt::Debug for ScriptModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptModule").finish_non_exhaustive()
    }
}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from rwp_script_load and is freed once.
        unsafe { rwp_script_free(self.ptr) }
    }
}

/// Where a module comes from: its file, or the file's bytes.
#[derive(Clone, Copy, Debug)]
pub enum ScriptSource<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

fn device_index(device: Device) -> Result<i32, ScriptError> {
    match device {
        Device::Cpu => Ok(-1),
        Device::Cuda(i) => Ok(i32::try_from(i).unwrap_or(i32::MAX)),
        other => Err(ScriptError(format!("TorchScript models run on the CPU or CUDA, not {other:?}"))),
    }
}

impl ScriptModule {
    /// Loads a TorchScript file onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Self, ScriptError> {
        Self::open(ScriptSource::File(path), device)
    }

    /// Loads a TorchScript module from its file or its bytes onto `device`.
    pub fn open(source: ScriptSource<'_>, device: Device) -> Result<Self, ScriptError> {
        let index = device_index(device)?;
        // Graph optimisations (fusion, specialisation) would change the
        // floating-point order between runs; off, a module computes exactly
        // what PyTorch's eager kernels do.
        tch::jit::set_graph_executor_optimize(false);
        let mut error = std::ptr::null_mut();
        let ptr = match source {
            ScriptSource::File(path) => {
                let c_path = CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|_| ScriptError(format!("{} contains a NUL byte", path.display())))?;
                // SAFETY: valid C string and out-pointer.
                unsafe { rwp_script_load(c_path.as_ptr(), index, &mut error) }
            }
            // SAFETY: `bytes` is valid for `len` bytes during the call, which copies them.
            ScriptSource::Bytes(bytes) => unsafe {
                rwp_script_load_bytes(bytes.as_ptr().cast(), bytes.len(), index, &mut error)
            },
        };
        if ptr.is_null() {
            return Err(take_error(error));
        }
        Ok(Self { ptr })
    }

    fn named(
        &self,
        f: unsafe extern "C" fn(*mut c_void, *mut c_void, NamedTensorCallback, *mut *mut c_char) -> bool,
    ) -> Result<Vec<(String, Tensor)>, ScriptError> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let mut error = std::ptr::null_mut();
        // SAFETY: the callback casts `data` back to this Vec.
        let ok = unsafe { f(self.ptr, std::ptr::from_mut(&mut out).cast(), collect_named, &mut error) };
        if ok {
            Ok(out)
        } else {
            Err(take_error(error))
        }
    }

    /// Parameters in the module's own (`named_parameters()`) order; the
    /// tensors share storage with the module.
    pub fn named_parameters(&self) -> Result<Vec<(String, Tensor)>, ScriptError> {
        self.named(rwp_script_named_parameters)
    }

    /// Buffers in `named_buffers()` order, sharing storage with the module.
    pub fn named_buffers(&self) -> Result<Vec<(String, Tensor)>, ScriptError> {
        self.named(rwp_script_named_buffers)
    }

    /// Every operation of every function the module's archive defines
    /// (each submodule's methods, `__setstate__` included, and the functions
    /// they call), in program order per function; calls that lead to
    /// TorchScript code are followed, not reported.
    pub fn operations(&self) -> Result<Vec<Operation>, ScriptError> {
        let mut out: Vec<Operation> = Vec::new();
        let mut error = std::ptr::null_mut();
        // SAFETY: the callback casts `data` back to this Vec.
        let ok = unsafe {
            rwp_script_operations(self.ptr, std::ptr::from_mut(&mut out).cast(), collect_operation, &mut error)
        };
        if ok {
            Ok(out)
        } else {
            Err(take_error(error))
        }
    }

    /// `module.train(training)`.
    pub fn set_training(&self, training: bool) -> Result<(), ScriptError> {
        let mut error = std::ptr::null_mut();
        // SAFETY: valid module and out-pointer.
        if unsafe { rwp_script_set_training(self.ptr, training, &mut error) } {
            Ok(())
        } else {
            Err(take_error(error))
        }
    }

    /// `module.forward(input)`, which must return one tensor.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor, ScriptError> {
        let mut error = std::ptr::null_mut();
        // SAFETY: `input` outlives the call; a non-null result is a new handle.
        let out = unsafe { rwp_script_forward(self.ptr, input.as_ptr(), &mut error) };
        if out.is_null() {
            Err(take_error(error))
        } else {
            Ok(unsafe { Tensor::from_ptr(out) })
        }
    }
}
