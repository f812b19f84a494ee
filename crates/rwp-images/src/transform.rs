//! The transforms' geometry: which source pixels land where in the output.

use crate::rng::SplitMix64;

/// Per-channel normalisation of the output: `(pixel / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// torchvision's ImageNet statistics.
    pub const IMAGENET: Normalize = Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
}

/// What is done to a decoded image. The output is always 3 × size × size
/// floats, channels first (CHW), normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// torchvision's `RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))`
    /// then `RandomHorizontalFlip(0.5)`.
    ImagenetTrain { size: u32 },
    /// torchvision's `Resize(round(size / 0.875))` of the shorter side, then
    /// `CenterCrop(size)` (256 then 224 for 224).
    ImagenetEval { size: u32 },
    /// The whole image resized to size × size: no crop, no randomness (for
    /// data already cropped).
    Resize { size: u32 },
}

impl Transform {
    /// The output's side.
    #[must_use]
    pub fn size(&self) -> u32 {
        match *self {
            Transform::ImagenetTrain { size } | Transform::ImagenetEval { size } | Transform::Resize { size } => size,
        }
    }

    /// Floats one output holds: 3 × size × size.
    #[must_use]
    pub fn output_len(&self) -> usize {
        let size = self.size() as usize;
        3 * size * size
    }

    /// Where the output of a `width` × `height` image comes from, with the
    /// random choices (for [`Transform::ImagenetTrain`]) drawn from `seed`.
    ///
    /// # Panics
    /// If the image or the output size has a side of 0.
    #[must_use]
    pub fn geometry(&self, width: u32, height: u32, seed: u64) -> Geometry {
        assert!(width > 0 && height > 0 && self.size() > 0, "a side of 0: image {width}x{height}, output {self:?}");
        let whole = CropBox { top: 0, left: 0, height, width };
        let size = self.size();
        match *self {
            Transform::ImagenetTrain { .. } => {
                let mut rng = SplitMix64::new(seed);
                let crop = random_resized_crop(width, height, &mut rng);
                let flip = rng.next_f64() < 0.5;
                Geometry { crop, resized_width: size, resized_height: size, window_left: 0, window_top: 0, flip }
            }
            Transform::ImagenetEval { .. } => {
                let short_side = (f64::from(size) / 0.875).round() as u32;
                let (resized_width, resized_height) = resize_shorter_side(width, height, short_side);
                // torchvision's CenterCrop: int(round((image - crop) / 2.0)).
                let centre = |resized: u32| (f64::from(resized - size) / 2.0).round_ties_even() as u32;
                Geometry {
                    crop: whole,
                    resized_width,
                    resized_height,
                    window_left: centre(resized_width),
                    window_top: centre(resized_height),
                    flip: false,
                }
            }
            Transform::Resize { .. } => Geometry {
                crop: whole,
                resized_width: size,
                resized_height: size,
                window_left: 0,
                window_top: 0,
                flip: false,
            },
        }
    }
}

/// A rectangle of the source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// How a transform places a source image in its output: the `crop` of the
/// source is resized (antialiased bilinear) to `resized_width` ×
/// `resized_height`, the output is the size × size window of that at
/// (`window_left`, `window_top`), mirrored left to right if `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub crop: CropBox,
    pub resized_width: u32,
    pub resized_height: u32,
    pub window_left: u32,
    pub window_top: u32,
    pub flip: bool,
}

/// torchvision's `Resize(short_side)`: the shorter side becomes `short_side`,
/// the longer `int(short_side * long / short)`.
fn resize_shorter_side(width: u32, height: u32, short_side: u32) -> (u32, u32) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (f64::from(short_side) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (short_side, new_long)
    } else {
        (new_long, short_side)
    }
}

const SCALE: (f64, f64) = (0.08, 1.0);
/// ln(4/3), written out so that no libm is involved (its `ln` and `exp` may
/// take a different code path, and round differently, on another CPU).
const LN_4_3: f64 = 0.287_682_072_451_780_9;
const MIN_RATIO: f64 = 3.0 / 4.0;
const MAX_RATIO: f64 = 4.0 / 3.0;

/// torchvision's `RandomResizedCrop.get_params` with its default scale
/// (0.08, 1) and ratio (3/4, 4/3). Up to 10 attempts, each drawing, in
/// this order, `u₁` (area fraction `0.08 + 0.92 u₁`) and `u₂` (log aspect
/// ratio `ln 3/4 + (ln 4/3 − ln 3/4) u₂`); `w = round(√(area · aspect))`,
/// `h = round(√(area / aspect))` (Python's round: ties to even). The first
/// box that fits draws `u₃` (top `⌊u₃ (H − h + 1)⌋`) and `u₄` (left
/// `⌊u₄ (W − w + 1)⌋`). If none fits, the centred box of the whole image
/// with its aspect ratio clamped to [3/4, 4/3], drawing nothing more.
#[must_use]
pub fn random_resized_crop(width: u32, height: u32, rng: &mut SplitMix64) -> CropBox {
    let area = f64::from(width) * f64::from(height);
    for _ in 0..10 {
        let target_area = area * rng.uniform(SCALE.0, SCALE.1);
        let aspect = exp_small(rng.uniform(-LN_4_3, LN_4_3));
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if 0.0 < w && w <= f64::from(width) && 0.0 < h && h <= f64::from(height) {
            let (w, h) = (w as u32, h as u32);
            let top = rng.integer_up_to(height - h);
            let left = rng.integer_up_to(width - w);
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = f64::from(width) / f64::from(height);
    let (w, h) = if in_ratio < MIN_RATIO {
        (width, (f64::from(width) / MIN_RATIO).round_ties_even() as u32)
    } else if in_ratio > MAX_RATIO {
        ((f64::from(height) * MAX_RATIO).round_ties_even() as u32, height)
    } else {
        (width, height)
    };
    // Rounding cannot take a side past the image's, nor to 0 (the clamped
    // side is at least 3/4 of a side >= 1); the bounds keep that explicit.
    let (w, h) = (w.clamp(1, width), h.clamp(1, height));
    CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
}

/// e^x for |x| <= ln(4/3) by its Taylor series to x²⁰/20! (the rest is
/// below 2⁻⁸⁰) in Horner's form, 1 + x(1 + x/2(1 + x/3(…))), with only + ×
/// ÷, which are exactly rounded everywhere.
fn exp_small(x: f64) -> f64 {
    debug_assert!(x.abs() <= LN_4_3 + 1e-12);
    (1..=20).rev().fold(1.0, |inner, n| 1.0 + x * inner / f64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_exp_agrees_with_libm() {
        for i in -100..=100 {
            let x = LN_4_3 * f64::from(i) / 100.0;
            let (ours, libm) = (exp_small(x), x.exp());
            assert!((ours - libm).abs() <= 2.0 * f64::EPSILON * libm, "exp({x}): {ours} against {libm}");
        }
        // ln of the exact 4/3 (libm's is of 4/3 rounded to f64: 1 ulp below).
        assert!((LN_4_3 - (4.0f64 / 3.0).ln()).abs() <= f64::EPSILON * LN_4_3);
    }

    #[test]
    fn eval_geometry_is_torchvisions_resize_then_centre_crop() {
        let eval = Transform::ImagenetEval { size: 224 };
        // 500x375: the shorter side to 256, the longer int(256 * 500 / 375) = 341.
        let g = eval.geometry(500, 375, 0);
        assert_eq!((g.resized_width, g.resized_height), (341, 256));
        // round((341 - 224) / 2) = round(58.5) = 58 (ties to even), round(16.0) = 16.
        assert_eq!((g.window_left, g.window_top), (58, 16));
        assert_eq!(g.crop, CropBox { top: 0, left: 0, height: 375, width: 500 });
        let portrait = eval.geometry(300, 451, 9);
        assert_eq!((portrait.resized_width, portrait.resized_height), (256, 384));
        assert_eq!((portrait.window_left, portrait.window_top), (16, 80));
        // 299 / 0.875 = 341.7: the shorter side goes to 342.
        let g = Transform::ImagenetEval { size: 299 }.geometry(100, 100, 0);
        assert_eq!((g.resized_width, g.resized_height, g.window_left), (342, 342, 22));
    }

    #[test]
    fn resize_takes_the_whole_image() {
        let g = Transform::Resize { size: 32 }.geometry(7, 90, 3);
        assert_eq!(g.crop, CropBox { top: 0, left: 0, height: 90, width: 7 });
        assert_eq!((g.resized_width, g.resized_height, g.window_left, g.window_top, g.flip), (32, 32, 0, 0, false));
    }

    #[test]
    fn train_geometry_depends_on_the_seed_alone() {
        let train = Transform::ImagenetTrain { size: 224 };
        let geometries: Vec<Geometry> = (0..50).map(|seed| train.geometry(500, 375, seed)).collect();
        for (seed, g) in (0..50).zip(&geometries) {
            assert_eq!(train.geometry(500, 375, seed), *g);
        }
        let distinct: std::collections::HashSet<_> = geometries.iter().map(|g| (g.crop.left, g.crop.top)).collect();
        assert!(distinct.len() > 40, "seeds give different crops: {} distinct of 50", distinct.len());
    }

    #[test]
    fn fallback_is_the_centred_box_with_the_ratio_clamped() {
        // Far too wide for any attempt (every box is >= 24 pixels high).
        for seed in 0..20 {
            let crop = random_resized_crop(1000, 10, &mut SplitMix64::new(seed));
            // h = 10, w = round(10 * 4/3) = 13, centred: left (1000 - 13) // 2.
            assert_eq!(crop, CropBox { top: 0, left: 493, height: 10, width: 13 });
        }
        let crop = random_resized_crop(3, 1000, &mut SplitMix64::new(1));
        // w = 3, h = round(3 / (3/4)) = 4.
        assert_eq!(crop, CropBox { top: 498, left: 0, height: 4, width: 3 });
        let crop = random_resized_crop(1, 1, &mut SplitMix64::new(1));
        assert_eq!(crop, CropBox { top: 0, left: 0, height: 1, width: 1 });
    }
}
