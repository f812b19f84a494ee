//! The built-in dataset: 10 classes of 3×16×16 images, each class a smooth
//! colour pattern, every sample shifted, rescaled, mixed with a pattern of
//! another class and buried in pixel noise. The training set is small (2,000
//! images) and 20% of its labels are wrong, the test set is large and clean:
//! plain SGD memorises the noise, which is where flat-minimum methods help.

use rwp_spec::rng::Rng;

use super::Split;
use crate::model::InputShape;

pub(super) const SHAPE: InputShape = InputShape { channels: 3, height: 16, width: 16 };
pub(super) const CLASSES: i64 = 10;
pub(super) const TRAIN: usize = 1000;
pub(super) const TEST: usize = 2000;
const LABEL_NOISE: f64 = 0.3;
const SEED: u64 = 0x5EED_DA7A;

type Image = Vec<f64>;

fn prototype(rng: &mut Rng) -> Image {
    let (h, w) = (SHAPE.height as usize, SHAPE.width as usize);
    let mut img = vec![0.0; 3 * h * w];
    for _ in 0..3 {
        let (cy, cx) = (rng.next_f64() * h as f64, rng.next_f64() * w as f64);
        let radius = 1.5 + 3.0 * rng.next_f64();
        let colour: Vec<f64> = (0..3).map(|_| rng.normal()).collect();
        for y in 0..h {
            for x in 0..w {
                let d2 = (y as f64 - cy).powi(2) + (x as f64 - cx).powi(2);
                let v = (-d2 / (2.0 * radius * radius)).exp();
                for c in 0..3 {
                    img[c * h * w + y * w + x] += colour[c] * v;
                }
            }
        }
    }
    let angle = rng.next_f64() * std::f64::consts::PI;
    let freq = 0.4 + 0.8 * rng.next_f64();
    let colour: Vec<f64> = (0..3).map(|_| 0.5 * rng.normal()).collect();
    for y in 0..h {
        for x in 0..w {
            let v = (freq * (x as f64 * angle.cos() + y as f64 * angle.sin())).sin();
            for c in 0..3 {
                img[c * h * w + y * w + x] += colour[c] * v;
            }
        }
    }
    let scale = img.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    img.iter().map(|v| v / scale).collect()
}

fn sample(rng: &mut Rng, prototypes: &[Image], class: usize, out: &mut Vec<u8>) {
    let (h, w) = (SHAPE.height as usize, SHAPE.width as usize);
    let (dy, dx) = (rng.below(5) as usize + h - 2, rng.below(5) as usize + w - 2);
    let amplitude = 0.5 + 0.5 * rng.next_f64();
    let other = (class + 1 + rng.below(CLASSES as u64 - 1) as usize) % CLASSES as usize;
    let distraction = 0.3 * rng.next_f64();
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let at = c * h * w + ((y + dy) % h) * w + (x + dx) % w;
                let v = amplitude * prototypes[class][at] + distraction * prototypes[other][at] + 0.6 * rng.normal();
                out.push((128.0 + 64.0 * v).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
}

fn split(rng: &mut Rng, prototypes: &[Image], len: usize, label_noise: f64) -> Split {
    let mut images = Vec::with_capacity(len * (3 * SHAPE.height * SHAPE.width) as usize);
    let mut labels = Vec::with_capacity(len);
    for i in 0..len {
        let class = i % CLASSES as usize;
        sample(rng, prototypes, class, &mut images);
        let label = if rng.next_f64() < label_noise {
            (class + 1 + rng.below(CLASSES as u64 - 1) as usize) % CLASSES as usize
        } else {
            class
        };
        labels.push(label as i64);
    }
    Split::pixels(images, labels)
}

pub(super) fn generate() -> (Split, Split) {
    let mut rng = Rng::new(SEED);
    let prototypes: Vec<Image> = (0..CLASSES).map(|_| prototype(&mut rng)).collect();
    let train = split(&mut rng, &prototypes, TRAIN, LABEL_NOISE);
    let test = split(&mut rng, &prototypes, TEST, 0.0);
    (train, test)
}
