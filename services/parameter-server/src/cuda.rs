//! libtorch sees GPUs only once `libtorch_cuda` is loaded. The server does
//! not link it: its CUDA libraries would cost every CPU-only server about
//! 230 MiB of resident memory at start (an idle server: 351 MiB against 121).
//! It is loaded here, on demand, when `engine_device` names a GPU.

// dlopen is the one unsafe call; the block says why it holds.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// Loads libtorch's CUDA library (once per process) from the loader's path:
/// the binary's run path beside libtorch, or `LD_LIBRARY_PATH`. A libtorch
/// built without CUDA has none to load; libtorch then sees no GPU, which is
/// what the caller asks it next.
pub fn load_torch_cuda() {
    static LOADED: OnceLock<()> = OnceLock::new();
    LOADED.get_or_init(|| {
        // SAFETY: a NUL-terminated name; the handle is never closed, so the
        // library's code stays mapped for the life of the process, as a
        // linked library would.
        unsafe { libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    });
}
