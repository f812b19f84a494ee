//! Antialiased bilinear resampling of a crop, straight into normalised CHW
//! floats.
//!
//! The filter is PIL's (and torch's `antialias=True`): a triangle of radius
//! 1 on the source grid, widened by the downscale factor when shrinking, its
//! taps clamped to the crop and normalised to sum to 1. It is separable: for
//! each output row, a vertical pass over the source rows it needs, then a
//! horizontal pass into the output. Everything is f32 in a fixed order (no
//! runtime dispatch, no fused multiply-add), so the bits are the same on
//! every machine.

use crate::decode::RgbView;
use crate::transform::{Geometry, Normalize};

/// The taps of one resampling direction: output `o` reads source
/// `start[o] .. start[o] + len[o]` with `weights[o * stride ..]`.
#[derive(Debug, Default)]
struct Taps {
    start: Vec<u32>,
    len: Vec<u32>,
    weights: Vec<f32>,
    stride: usize,
    /// One output's weights before normalisation.
    unnormalised: Vec<f64>,
}

impl Taps {
    /// Outputs `first .. first + count` of resizing `in_size` samples to
    /// `resized` (PIL's `precompute_coeffs`, bilinear).
    fn compute(&mut self, in_size: u32, resized: u32, first: u32, count: u32) {
        let scale = f64::from(in_size) / f64::from(resized);
        let filter_scale = scale.max(1.0);
        let support = filter_scale;
        let inverse_filter_scale = 1.0 / filter_scale;
        self.stride = support.ceil() as usize * 2 + 1;
        self.start.clear();
        self.len.clear();
        self.weights.clear();
        self.weights.resize(self.stride * count as usize, 0.0);
        self.unnormalised.resize(self.stride, 0.0);
        let weights = &mut self.unnormalised;
        for (o, out_weights) in (first..first + count).zip(self.weights.chunks_exact_mut(self.stride)) {
            let centre = (f64::from(o) + 0.5) * scale;
            // `as i64` truncates toward zero, as C's (int) cast in PIL does.
            let start = ((centre - support + 0.5) as i64).max(0);
            let end = ((centre + support + 0.5) as i64).min(i64::from(in_size));
            let len = (end - start).clamp(0, self.stride as i64) as usize;
            let mut total = 0.0;
            for (j, w) in weights[..len].iter_mut().enumerate() {
                let x = ((j as i64 + start) as f64 - centre + 0.5) * inverse_filter_scale;
                *w = (1.0 - x.abs()).max(0.0);
                total += *w;
            }
            for (out, w) in out_weights.iter_mut().zip(&weights[..len]) {
                *out = if total == 0.0 { 0.0 } else { (w / total) as f32 };
            }
            self.start.push(start as u32);
            self.len.push(len as u32);
        }
    }

    fn get(&self, o: usize) -> (usize, &[f32]) {
        let len = self.len[o] as usize;
        (self.start[o] as usize, &self.weights[o * self.stride..o * self.stride + len])
    }

    /// The source samples `start .. end` that any output reads.
    fn source_range(&self) -> (usize, usize) {
        let last = self.start.len() - 1;
        (self.start[0] as usize, self.start[last] as usize + self.len[last] as usize)
    }
}

/// Buffers one thread reuses from image to image.
#[derive(Debug, Default)]
pub(crate) struct ResampleScratch {
    columns: Taps,
    rows: Taps,
    /// One output row after the vertical pass: the crop's columns that the
    /// horizontal pass reads, interleaved RGB.
    row: Vec<f32>,
}

/// Writes the `size` × `size` window of `geometry` into `out` (3 planes of
/// size × size, normalised). Vertical pass first: it runs along contiguous
/// rows of bytes, which vectorises, and leaves one row at a time for the
/// horizontal pass, which writes the output.
pub(crate) fn resample_into(
    image: RgbView<'_>,
    geometry: &Geometry,
    size: u32,
    norm: &Normalize,
    scratch: &mut ResampleScratch,
    out: &mut [f32],
) {
    let crop = geometry.crop;
    let side = size as usize;
    debug_assert_eq!(out.len(), 3 * side * side);
    debug_assert!(crop.left + crop.width <= image.width && crop.top + crop.height <= image.height);
    scratch.columns.compute(crop.width, geometry.resized_width, geometry.window_left, size);
    scratch.rows.compute(crop.height, geometry.resized_height, geometry.window_top, size);
    // The columns any output reads, relative to the crop.
    let (first_column, end_column) = scratch.columns.source_range();
    scratch.row.clear();
    scratch.row.resize((end_column - first_column) * 3, 0.0);

    let stride = image.width as usize * 3;
    let left = (crop.left as usize + first_column) * 3;
    let row_len = scratch.row.len();
    let normalise: [(f32, f32); 3] =
        std::array::from_fn(|c| (1.0 / (255.0 * norm.std[c]), -norm.mean[c] / norm.std[c]));
    let (red, rest) = out.split_at_mut(side * side);
    let (green, blue) = rest.split_at_mut(side * side);
    for y in 0..side {
        let (start, weights) = scratch.rows.get(y);
        let source_row = |k: usize| {
            let at = (crop.top as usize + start + k) * stride + left;
            &image.pixels[at..at + row_len]
        };
        vertical_row(weights, source_row, &mut scratch.row);
        let planes = [
            &mut red[y * side..(y + 1) * side],
            &mut green[y * side..(y + 1) * side],
            &mut blue[y * side..(y + 1) * side],
        ];
        horizontal_row(&scratch.row, first_column, &scratch.columns, geometry.flip, &normalise, planes);
    }
}

/// The weighted sum of source rows `source_row(0..weights.len())` into `out`.
fn vertical_row<'a>(weights: &[f32], source_row: impl Fn(usize) -> &'a [u8], out: &mut [f32]) {
    for (k, &w) in weights.iter().enumerate() {
        let row = source_row(k);
        if k == 0 {
            for (o, &p) in out.iter_mut().zip(row) {
                *o = w * f32::from(p);
            }
        } else {
            for (o, &p) in out.iter_mut().zip(row) {
                *o += w * f32::from(p);
            }
        }
    }
}

/// One output row from the vertical pass's `row` (interleaved RGB from
/// crop column `first_column`): the horizontal taps, the flip, and the
/// normalisation, into the three planes' rows.
fn horizontal_row(
    row: &[f32],
    first_column: usize,
    columns: &Taps,
    flip: bool,
    normalise: &[(f32, f32); 3],
    planes: [&mut [f32]; 3],
) {
    let [red, green, blue] = planes;
    let side = red.len();
    for o in 0..side {
        let (start, weights) = columns.get(o);
        let pixels = &row[(start - first_column) * 3..(start - first_column + weights.len()) * 3];
        let (mut r, mut g, mut b) = (0.0f32, 0.0f32, 0.0f32);
        for (&w, pixel) in weights.iter().zip(pixels.chunks_exact(3)) {
            r += w * pixel[0];
            g += w * pixel[1];
            b += w * pixel[2];
        }
        let at = if flip { side - 1 - o } else { o };
        red[at] = r * normalise[0].0 + normalise[0].1;
        green[at] = g * normalise[1].0 + normalise[1].1;
        blue[at] = b * normalise[2].0 + normalise[2].1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::CropBox;
    use crate::SplitMix64;

    fn image(width: u32, height: u32, seed: u64) -> Vec<u8> {
        let mut rng = SplitMix64::new(seed);
        (0..width * height * 3).map(|_| rng.next_u64() as u8).collect()
    }

    fn run(pixels: &[u8], width: u32, height: u32, geometry: &Geometry, size: u32) -> Vec<f32> {
        let mut out = vec![0.0; 3 * (size * size) as usize];
        let view = RgbView { width, height, pixels };
        resample_into(view, geometry, size, &Normalize::IMAGENET, &mut ResampleScratch::default(), &mut out);
        out
    }

    fn plain(crop: CropBox, size: u32) -> Geometry {
        Geometry { crop, resized_width: size, resized_height: size, window_left: 0, window_top: 0, flip: false }
    }

    #[test]
    fn same_size_copies_the_crop_exactly() {
        let (width, height) = (20, 15);
        let pixels = image(width, height, 1);
        let crop = CropBox { top: 3, left: 5, height: 10, width: 10 };
        let out = run(&pixels, width, height, &plain(crop, 10), 10);
        let norm = Normalize::IMAGENET;
        for c in 0..3 {
            for y in 0..10 {
                for x in 0..10 {
                    let source = pixels[((3 + y) * width as usize + 5 + x) * 3 + c];
                    let expected = f32::from(source) * (1.0 / (255.0 * norm.std[c])) - norm.mean[c] / norm.std[c];
                    assert_eq!(out[c * 100 + y * 10 + x], expected, "channel {c} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn flip_mirrors_the_output_exactly() {
        let pixels = image(50, 40, 2);
        let crop = CropBox { top: 4, left: 7, height: 31, width: 37 };
        let straight = run(&pixels, 50, 40, &plain(crop, 16), 16);
        let mirrored = run(&pixels, 50, 40, &Geometry { flip: true, ..plain(crop, 16) }, 16);
        for (a, b) in straight.chunks_exact(16).zip(mirrored.chunks_exact(16)) {
            assert!(a.iter().eq(b.iter().rev()));
        }
    }

    #[test]
    fn a_window_is_that_part_of_the_whole_resize() {
        // Resizing 90x70 to 40x30 then keeping the 12x12 window at (20, 9).
        let pixels = image(90, 70, 3);
        let whole_image = CropBox { top: 0, left: 0, height: 70, width: 90 };
        let window = Geometry {
            crop: whole_image,
            resized_width: 40,
            resized_height: 30,
            window_left: 20,
            window_top: 9,
            flip: false,
        };
        let part = run(&pixels, 90, 70, &window, 12);
        // The resize from its corner: the 30x30 window at (0, 0), which
        // holds the window's first 10 columns.
        let whole = run(&pixels, 90, 70, &Geometry { window_left: 0, window_top: 0, ..window }, 30);
        let whole = |c: usize, y: usize, x: usize| whole[c * 900 + y * 30 + x];
        for c in 0..3 {
            for y in 0..12 {
                for x in 0..10 {
                    assert_eq!(part[c * 144 + y * 12 + x], whole(c, 9 + y, 20 + x), "channel {c} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat_at_any_scale() {
        let pixels = [200u8, 100, 50].repeat(33 * 17);
        for size in [1, 5, 16, 64] {
            let out = run(&pixels, 33, 17, &plain(CropBox { top: 2, left: 3, height: 15, width: 30 }, size), size);
            let norm = Normalize::IMAGENET;
            for (c, plane) in out.chunks_exact((size * size) as usize).enumerate() {
                let expected = ([200.0, 100.0, 50.0][c] / 255.0 - norm.mean[c]) / norm.std[c];
                assert!(plane.iter().all(|v| (v - expected).abs() < 1e-5), "size {size} channel {c}");
            }
        }
    }

    #[test]
    fn taps_are_normalised_and_widen_when_shrinking() {
        let mut taps = Taps::default();
        taps.compute(1000, 10, 0, 10);
        // Shrinking 100x: a triangle of radius 100 source pixels.
        assert_eq!(taps.stride, 201);
        for o in 0..10 {
            let (start, weights) = taps.get(o);
            assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            assert!(start + weights.len() <= 1000);
            // The first and last outputs' triangles are cut at the edges.
            let expected = if o == 0 || o == 9 { 150 } else { 200 };
            assert_eq!(weights.len(), expected, "output {o}");
        }
        taps.compute(10, 1000, 0, 1000);
        // Enlarging: plain bilinear, two taps (one at the edges).
        for o in 0..1000 {
            let (_, weights) = taps.get(o);
            let nonzero = weights.iter().filter(|&&w| w > 0.0).count();
            assert!((1..=2).contains(&nonzero) && (weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
