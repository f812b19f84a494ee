//! The references' CIFAR training augmentation: random crop 32 with zero
//! padding 4, horizontal flip with probability 1/2, then (after
//! normalisation) Cutout of one 16×16 square with probability 1/2.

use rwp_spec::rng::Rng;

use crate::model::InputShape;

const PAD: i64 = 4;
const CUTOUT: i64 = 16;

/// Augments one normalised image in place (`[C, H, W]`).
pub(super) fn cifar(image: &mut [f32], shape: InputShape, mean: &[f32], std: &[f32], seed: u64) {
    let mut rng = Rng::new(seed);
    let (h, w) = (shape.height, shape.width);
    let top = rng.below(2 * PAD as u64 + 1) as i64 - PAD;
    let left = rng.below(2 * PAD as u64 + 1) as i64 - PAD;
    let flip = rng.next_f64() < 0.5;
    let cutout = rng.next_f64() < 0.5;
    let (cy, cx) = (rng.below(h as u64) as i64, rng.below(w as u64) as i64);

    let source = image.to_vec();
    let plane = (h * w) as usize;
    for c in 0..shape.channels as usize {
        // A zero pixel before normalisation, as torchvision's padding gives.
        let fill = (0.0 - mean[c]) / std[c];
        for y in 0..h {
            for x in 0..w {
                let sx = if flip { w - 1 - x } else { x };
                let (py, px) = (y + top, sx + left);
                let value = if (0..h).contains(&py) && (0..w).contains(&px) {
                    source[c * plane + (py * w + px) as usize]
                } else {
                    fill
                };
                image[c * plane + (y * w + x) as usize] = value;
            }
        }
        if cutout {
            for y in (cy - CUTOUT / 2).max(0)..(cy + CUTOUT / 2).min(h) {
                for x in (cx - CUTOUT / 2).max(0)..(cx + CUTOUT / 2).min(w) {
                    image[c * plane + (y * w + x) as usize] = 0.0;
                }
            }
        }
    }
}
