//! Test images and the reference script's interpreter, shared by the tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use rwp_images::SplitMix64;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with torch and torchvision that `scripts/setup-libtorch.sh`
/// installs: `RWP_PYTHON` (which `make setup` writes into
/// .cargo/config.toml), else the active virtualenv's, else the repository's
/// `.venv`.
pub fn python() -> Command {
    let path = std::env::var_os("RWP_PYTHON")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("VIRTUAL_ENV").map(|venv| PathBuf::from(venv).join("bin/python")))
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(path.exists(), "{} is missing: run `make setup` first", path.display());
    Command::new(path)
}

/// Runs `tests/reference/torchvision_reference.py` with `args`; its stdout.
pub fn run_reference<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/torchvision_reference.py");
    let output = python().arg(script).args(args).output().expect("python starts");
    assert!(output.status.success(), "reference script failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// An RGB image with what photographs have: smooth gradients, a few hard
/// edged shapes and sensor-like noise; different for each seed.
pub fn natural_image(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let base: Vec<f64> = (0..9).map(|_| rng.uniform(0.0, 1.0)).collect();
    let circles: Vec<(f64, f64, f64, [f64; 3])> = (0..4)
        .map(|_| {
            let colour = [rng.uniform(0.0, 255.0), rng.uniform(0.0, 255.0), rng.uniform(0.0, 255.0)];
            (rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0), rng.uniform(0.05, 0.3), colour)
        })
        .collect();
    let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            let (u, v) = (f64::from(x) / f64::from(width), f64::from(y) / f64::from(height));
            for c in 0..3 {
                let gradient = 255.0 * (base[c] * u + base[c + 3] * v + base[c + 6] * (1.0 - u) * v);
                let mut value = gradient / (base[c] + base[c + 3] + base[c + 6]).max(0.5);
                for &(cx, cy, r, colour) in &circles {
                    if (u - cx).powi(2) + (v - cy).powi(2) < r * r {
                        value = 0.3 * value + 0.7 * colour[c];
                    }
                }
                value += rng.uniform(-12.0, 12.0);
                pixels.push(value.clamp(0.0, 255.0) as u8);
            }
        }
    }
    pixels
}

/// A PNG of `pixels` (`channels` per pixel: 1 grey, 2 grey + alpha, 3 RGB,
/// 4 RGBA) at `depth` bits.
pub fn encode_png(width: u32, height: u32, channels: usize, depth: png::BitDepth, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    });
    encoder.set_depth(depth);
    encoder.write_header().unwrap().write_image_data(pixels).unwrap();
    bytes
}

pub fn encode_jpeg(
    width: u32,
    height: u32,
    color: jpeg_encoder::ColorType,
    pixels: &[u8],
    configure: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>),
) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, 90);
    configure(&mut encoder);
    encoder.encode(pixels, width as u16, height as u16, color).unwrap();
    bytes
}
