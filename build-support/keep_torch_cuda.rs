//! libtorch_cuda exports nothing this binary calls directly, so the linker's
//! default `--as-needed` drops it, and libtorch then sees no GPU. When the
//! libtorch being built against has CUDA, keep it linked (binaries only: a
//! build-wide flag would also reach proc-macros loaded into rustc).

fn main() {
    println!("cargo:rerun-if-env-changed=RWP_TORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let lib = std::env::var("RWP_TORCH_LIB")
        .ok()
        .or_else(|| std::env::var("LIBTORCH").ok().map(|l| format!("{l}/lib")))
        .map(std::path::PathBuf::from);
    if let Some(lib) = lib.filter(|l| l.join("libtorch_cuda.so").exists()) {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
