//! Images for training from folders of JPEG and PNG files: decoding, the
//! ImageNet augmentations of torchvision, and a batch loader on a pool of
//! threads. The output is plain `f32` buffers (3 × size × size per image,
//! channels first, normalised); turning them into tensors is the caller's
//! business, so this crate needs no libtorch.
//!
//! # Determinism
//!
//! An output's bits depend on four things only: the image's bytes, the
//! [`Transform`], the [`Normalize`] and the item's seed. Not on the number
//! of threads, which thread took the item, the order items finish in, nor
//! the CPU's features:
//!
//! - every random choice of an item is drawn from a [`SplitMix64`] seeded
//!   with that item's seed, in an order documented on
//!   [`random_resized_crop`] (then one draw for the flip: mirrored if < ½);
//! - the JPEG decoder (zune-jpeg, pinned to one release) picks SIMD code by
//!   CPU at run time, but its SIMD and scalar paths give the same bytes
//!   (checked by a test, on this crate's JPEGs, on every machine the tests
//!   run on);
//! - resampling is our own f32 code: every sum in a fixed order, vectorised
//!   (at compile time) only across pixels; the crop sampler uses only
//!   correctly rounded arithmetic (no libm `exp`/`ln`, whose last bit may
//!   depend on the code path the CPU selects).
//!
//! # Transforms
//!
//! [`Transform::ImagenetTrain`] is torchvision's `RandomResizedCrop` (scale
//! 0.08–1, ratio 3/4–4/3) and `RandomHorizontalFlip`;
//! [`Transform::ImagenetEval`] its `Resize(256)` + `CenterCrop(224)` (for
//! size 224); [`Transform::Resize`] squashes the whole image. The resize is
//! PIL's antialiased bilinear filter, computed over the crop only and only
//! for the output pixels kept, straight into the output (one row of
//! scratch, no intermediate image). On the same decoded pixels, outputs are
//! within 1e-4 (normalised) of torchvision's on float tensors, and within
//! one 8-bit level of torchvision's on PIL images (PIL rounds to 8 bits
//! between and after its two passes); the reference tests measure both.
//!
//! # Loading
//!
//! A [`Loader`] owns its threads. [`Loader::load`] fills one batch;
//! [`Loader::prefetch`] starts the next one while the current one is used;
//! [`Loader::recycle`] hands a used batch's buffer back so that the next
//! batch does not fault in 150 MB of fresh pages.
//!
//! # Errors
//!
//! [`decode`] never panics on bad input: it returns a [`DecodeError`] that
//! says what is wrong (not an image, truncated, corrupt, no pixels, too
//! large). A JPEG cut short is an error (as PIL has it); a complete JPEG
//! with corrupt entropy-coded data decodes as far as it can (as libjpeg). Images declaring more than [`MAX_PIXELS`] pixels are refused from
//! their header, before anything is allocated. In a batch, an item that
//! cannot be read or decoded is reported in [`LoadedBatch::failed`] and left
//! out of the pixels; what to do about it (skip, stop) is the caller's
//! policy.

mod decode;
mod loader;
mod resample;
mod rng;
mod transform;

use std::cell::RefCell;

pub use decode::{decode, decode_with_limit, decoded_size, DecodeError, Rgb8Image, MAX_PIXELS};
pub use loader::{LoadedBatch, Loader, Pending};
pub use rng::SplitMix64;
pub use transform::{random_resized_crop, CropBox, Geometry, Normalize, Transform};

use decode::RgbView;
use resample::ResampleScratch;

/// Writes `transform` of `img` into `out` (3 × size × size floats, CHW,
/// normalised with `norm`); every random choice comes from `seed` alone.
///
/// # Panics
/// If `out.len()` is not [`Transform::output_len`], or the size is 0.
pub fn transform_into(img: &Rgb8Image, transform: &Transform, norm: &Normalize, seed: u64, out: &mut [f32]) {
    with_scratch(|scratch| transform_view(img.view(), transform, norm, seed, &mut scratch.resample, out));
}

fn transform_view(
    image: RgbView<'_>,
    transform: &Transform,
    norm: &Normalize,
    seed: u64,
    scratch: &mut ResampleScratch,
    out: &mut [f32],
) {
    assert_eq!(out.len(), transform.output_len(), "output buffer for {transform:?}");
    let geometry = transform.geometry(image.width, image.height, seed);
    resample::resample_into(image, &geometry, transform.size(), norm, scratch, out);
}

/// What a thread keeps from one image to the next.
#[derive(Debug, Default)]
struct Scratch {
    decoded: Vec<u8>,
    resample: ResampleScratch,
}

/// A decode buffer larger than this (a 4-Mpixel image) is not kept for the
/// next image.
const KEPT_DECODE_BUFFER: usize = 12 << 20;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let result = f(&mut scratch);
        if scratch.decoded.capacity() > KEPT_DECODE_BUFFER {
            scratch.decoded = Vec::new();
        }
        result
    })
}
