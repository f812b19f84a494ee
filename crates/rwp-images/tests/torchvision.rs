//! Against torchvision (tests/reference/torchvision_reference.py, run with
//! the repository's Python): the transforms on the same decoded pixels, the
//! JPEG decoder against PIL's, and the crop sampler's distribution against
//! `RandomResizedCrop.get_params`.

mod common;

use std::path::Path;

use common::{encode_png, natural_image, run_reference};
use rwp_images::{decode, random_resized_crop, transform_into, CropBox, Normalize, SplitMix64, Transform};
use serde_json::{json, Value};

/// The largest and the mean absolute difference.
fn differences(ours: &[f32], theirs: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), theirs.len());
    let max = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let mean = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).sum::<f32>() / ours.len() as f32;
    (max, mean)
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn transforms_match_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    // Landscape and portrait, ImageNet-sized, and a small one (its train
    // crops are enlarged, its eval resize too).
    let images = [(500, 375, 1), (333, 500, 2), (120, 90, 3), (224, 224, 4)];
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for (width, height, seed) in images {
        let path = dir.path().join(format!("{width}x{height}.png"));
        std::fs::write(&path, encode_png(width, height, 3, png::BitDepth::Eight, &natural_image(width, height, seed)))
            .unwrap();
        let image = decode(&std::fs::read(&path).unwrap()).unwrap();
        let mut transforms: Vec<(Transform, u64)> =
            (0..8).map(|s| (Transform::ImagenetTrain { size: 224 }, seed * 1000 + s)).collect();
        transforms.push((Transform::ImagenetTrain { size: 32 }, 100));
        transforms.push((Transform::ImagenetEval { size: 224 }, 0));
        transforms.push((Transform::ImagenetEval { size: 160 }, 0));
        transforms.push((Transform::Resize { size: 64 }, 0));
        transforms.push((Transform::Resize { size: 300 }, 0));
        for (transform, seed) in transforms {
            let size = transform.size();
            let mut case = json!({"image": path, "size": size});
            match transform {
                Transform::ImagenetTrain { .. } => {
                    let g = transform.geometry(width, height, seed);
                    let c = g.crop;
                    case = json!({"image": path, "size": size, "kind": "crop", "top": c.top, "left": c.left,
                                  "height": c.height, "width": c.width, "flip": g.flip});
                }
                Transform::ImagenetEval { .. } => case["kind"] = json!("eval"),
                Transform::Resize { .. } => case["kind"] = json!("resize"),
            }
            let mut out = vec![0.0; transform.output_len()];
            transform_into(&image, &transform, &Normalize::IMAGENET, seed, &mut out);
            cases.push(case);
            ours.push(out);
        }
    }
    let flips = cases.iter().filter(|c| c["flip"] == json!(true)).count();
    assert!(flips > 0 && flips < 36, "{flips} of 36 train crops flipped: both kinds are compared");
    let cases_path = dir.path().join("cases.json");
    std::fs::write(&cases_path, serde_json::to_string(&cases).unwrap()).unwrap();
    run_reference(&["transforms".as_ref(), cases_path.as_os_str(), dir.path().as_os_str()]);

    let (mut worst_pil, mut worst_pil_mean, mut worst_float) = (0.0f32, 0.0f32, 0.0f32);
    for (i, (case, ours)) in cases.iter().zip(&ours).enumerate() {
        let (pil_max, pil_mean) = differences(ours, &read_f32(&dir.path().join(format!("{i}.pil.f32"))));
        let (float_max, _) = differences(ours, &read_f32(&dir.path().join(format!("{i}.float.f32"))));
        // The same filter in float (torch's weights are f32, ours f64 rounded
        // to f32): rounding apart, 3.5e-5 at most measured.
        assert!(float_max < 1e-4, "case {i} {case}: {float_max} from torchvision on float tensors");
        // PIL rounds to 8 bits after each pass: at most one level apart
        // (1 / 255 / 0.224 = 0.0175 normalised), 0.3 level on average
        // (measured: 0.0175 and 0.0055 at worst).
        assert!(pil_max < 0.02 && pil_mean < 0.006, "case {i} {case}: max {pil_max} mean {pil_mean} from PIL's");
        worst_pil = worst_pil.max(pil_max);
        worst_pil_mean = worst_pil_mean.max(pil_mean);
        worst_float = worst_float.max(float_max);
    }
    println!("against torchvision: PIL images max {worst_pil} mean {worst_pil_mean}, float tensors max {worst_float}");
}

#[test]
fn jpeg_decoding_matches_pil() {
    let dir = tempfile::tempdir().unwrap();
    let (width, height) = (500, 375);
    let png_path = dir.path().join("source.png");
    std::fs::write(&png_path, encode_png(width, height, 3, png::BitDepth::Eight, &natural_image(width, height, 7)))
        .unwrap();
    let written: Value =
        serde_json::from_str(&run_reference(&["jpegs".as_ref(), png_path.as_os_str(), dir.path().as_os_str()]))
            .unwrap();
    let kinds = written.as_object().unwrap();
    assert_eq!(kinds.len(), 6);
    for (name, files) in kinds {
        let ours = decode(&std::fs::read(files["jpeg"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!((ours.width(), ours.height()), (width, height), "{name}");
        let pil = std::fs::read(files["rgb"].as_str().unwrap()).unwrap();
        let differences: Vec<u8> = ours.pixels().iter().zip(&pil).map(|(a, b)| a.abs_diff(*b)).collect();
        let mean = differences.iter().map(|&d| f64::from(d)).sum::<f64>() / differences.len() as f64;
        let far = differences.iter().filter(|&&d| d > 4).count() as f64 / differences.len() as f64;
        // Two IDCTs and two chroma upsamplers (zune-jpeg's and libjpeg-turbo's):
        // rounding apart (measured: 0.13 level on average at worst, nothing
        // off by more than 4).
        assert!(mean < 0.25 && far < 0.001, "{name}: mean abs difference {mean}, {far} of samples off by > 4");
        println!("{name}: mean abs difference {mean:.3}, off by > 4: {far:.5}");
    }
}

/// Area fraction, ln(aspect ratio), and the centre's relative position.
fn crop_features(crop: &CropBox, width: u32, height: u32) -> [f64; 4] {
    let (w, h) = (f64::from(crop.width), f64::from(crop.height));
    [
        w * h / (f64::from(width) * f64::from(height)),
        (w / h).ln(),
        (f64::from(crop.left) + w / 2.0) / f64::from(width),
        (f64::from(crop.top) + h / 2.0) / f64::from(height),
    ]
}

/// torchvision's fallback after 10 failed attempts: the centred box with
/// the aspect ratio clamped to [3/4, 4/3] (for wide images here).
fn torchvision_fallback(width: u32, height: u32) -> CropBox {
    assert!(width * 3 >= height * 4, "a landscape image");
    let w = (f64::from(height) * 4.0 / 3.0).round_ties_even() as u32;
    CropBox { top: 0, left: (width - w) / 2, height, width: w }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn crop_sampler_has_torchvisions_distribution() {
    const N: usize = 10_000;
    // A photo's shape, and one too wide for most attempts (the centre-crop
    // fallback about half the time).
    for (width, height) in [(500u32, 375u32), (1000, 120)] {
        let args = ["crop-params".to_string(), width.to_string(), height.to_string(), N.to_string()];
        let params: Vec<[u32; 4]> = serde_json::from_str(&run_reference(&args)).unwrap();
        let theirs: Vec<CropBox> =
            params.iter().map(|&[top, left, height, width]| CropBox { top, left, height, width }).collect();
        let ours: Vec<CropBox> =
            (0..N as u64).map(|seed| random_resized_crop(width, height, &mut SplitMix64::new(seed))).collect();
        for crop in &ours {
            assert!(crop.width >= 1 && crop.left + crop.width <= width, "{crop:?}");
            assert!(crop.height >= 1 && crop.top + crop.height <= height, "{crop:?}");
        }
        let fallback = torchvision_fallback(width, height);
        let fallback_rate = |crops: &[CropBox]| crops.iter().filter(|&&c| c == fallback).count() as f64 / N as f64;
        let (ours_fallback, theirs_fallback) = (fallback_rate(&ours), fallback_rate(&theirs));
        assert!(
            (ours_fallback - theirs_fallback).abs() < 0.025,
            "{width}x{height}: fallback {ours_fallback} against {theirs_fallback}"
        );
        for (feature, name) in ["area fraction", "ln aspect", "centre x", "centre y"].iter().enumerate() {
            let values = |crops: &[CropBox]| {
                let mut v: Vec<f64> = crops.iter().map(|c| crop_features(c, width, height)[feature]).collect();
                v.sort_by(f64::total_cmp);
                v
            };
            let (ours, theirs) = (values(&ours), values(&theirs));
            for q in [0.1, 0.25, 0.5, 0.75, 0.9] {
                let (a, b) = (quantile(&ours, q), quantile(&theirs, q));
                assert!((a - b).abs() < 0.025, "{width}x{height} {name}: quantile {q} {a} against {b}");
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            assert!((mean(&ours) - mean(&theirs)).abs() < 0.015, "{width}x{height} {name}: mean");
            assert!(
                ours[0] >= theirs[0] - 0.02 && ours[N - 1] <= theirs[N - 1] + 0.02,
                "{width}x{height} {name}: range"
            );
        }
        println!("{width}x{height}: fallback {ours_fallback:.3} (torchvision {theirs_fallback:.3})");
    }
}
