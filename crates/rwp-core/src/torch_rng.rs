//! libtorch has one default generator per device. Everything here that draws
//! from it (initial weights, ε) seeds it first and holds this lock while
//! drawing, so concurrent callers in one process cannot interleave draws.

use std::sync::Mutex;

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Runs `f` with the default torch generators seeded with `seed`.
pub fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let _guard = TORCH_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(i64::try_from(seed).expect("derived seeds fit in 63 bits"));
    f()
}
