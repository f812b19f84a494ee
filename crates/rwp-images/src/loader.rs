//! Batches decoded and transformed on a pool of threads.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Mutex, PoisonError};

use rayon::prelude::*;

use crate::decode::{decode_reusing, RgbView, MAX_PIXELS};
use crate::transform::{Normalize, Transform};
use crate::{transform_view, with_scratch};

/// A batch: the items that decoded, in order, and why the others did not.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedBatch {
    /// `kept.len()` outputs of 3 × size × size floats (CHW), one after another.
    pub pixels: Vec<f32>,
    /// The item indices whose outputs `pixels` holds, ascending.
    pub kept: Vec<usize>,
    /// The items that could not be read or decoded, with the reason.
    pub failed: Vec<(usize, String)>,
}

/// A pool of threads that decode and transform batches of images. Each
/// item's output depends only on its bytes, its seed, the transform and the
/// normalisation: not on the number of threads nor on which thread took it.
pub struct Loader {
    pool: rayon::ThreadPool,
    /// Pixel buffers given back by [`Loader::recycle`], for the next batches.
    spare_buffers: Mutex<Vec<Vec<f32>>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spare = self.spare_buffers.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Loader").field("threads", &self.threads()).field("spare_buffers", &spare).finish()
    }
}

/// Spare buffers kept at most: a batch in use, one prefetched, and slack.
const SPARE_BUFFERS: usize = 4;

impl Loader {
    /// A pool of `threads` threads (at least 1), its own: nothing else runs
    /// on it.
    ///
    /// # Panics
    /// If the operating system refuses to start the threads.
    #[must_use]
    pub fn new(threads: usize) -> Self {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("rwp-images-{i}"))
            .build()
            .expect("the loader's threads start");
        Self { pool, spare_buffers: Mutex::new(Vec::new()) }
    }

    #[must_use]
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Reads, decodes and transforms items `0..n` in parallel into one batch
    /// (item `i` with seed `seeds[i]`). `read(i)` returns item `i`'s encoded
    /// bytes; it runs on the pool's threads, so it may do blocking I/O. Items
    /// that cannot be read or decoded are listed in `failed`, not fatal.
    ///
    /// # Panics
    /// If `seeds.len() != n`, if the transform's size is 0, or if `read` panics.
    pub fn load(
        &self,
        n: usize,
        read: impl Fn(usize) -> Result<Vec<u8>, String> + Sync,
        seeds: &[u64],
        transform: &Transform,
        norm: &Normalize,
    ) -> LoadedBatch {
        let buffer = self.spare_buffer();
        self.pool.install(|| load_batch(buffer, n, &read, seeds, transform, norm))
    }

    /// [`Loader::load`] started now on the pool, to be collected with
    /// [`Pending::wait`]: the next batch loads while the current one computes.
    ///
    /// # Panics
    /// As [`Loader::load`]; a panic of `read` surfaces in [`Pending::wait`].
    pub fn prefetch<R>(&self, n: usize, read: R, seeds: Vec<u64>, transform: Transform, norm: Normalize) -> Pending
    where
        R: Fn(usize) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    {
        check_arguments(n, &seeds, &transform);
        let (sender, receiver) = mpsc::sync_channel(1);
        let buffer = self.spare_buffer();
        self.pool.spawn(move || {
            let batch = catch_unwind(AssertUnwindSafe(|| load_batch(buffer, n, &read, &seeds, &transform, &norm)));
            // The receiver may be gone: nobody waits for the batch any more.
            let _ = sender.send(batch);
        });
        Pending { receiver }
    }

    /// Gives a batch's pixels back (once copied into a tensor), for a later
    /// batch to fill instead of a fresh allocation: a batch of 256 at
    /// 224 x 224 is 154 MB, and faulting in fresh pages for it took a third
    /// as long as decoding its images on the benchmark's machine.
    pub fn recycle(&self, pixels: Vec<f32>) {
        let mut spare = self.spare_buffers.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_BUFFERS {
            spare.push(pixels);
        }
    }

    fn spare_buffer(&self) -> Vec<f32> {
        self.spare_buffers.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default()
    }
}

/// A batch being loaded by [`Loader::prefetch`].
#[derive(Debug)]
pub struct Pending {
    receiver: mpsc::Receiver<std::thread::Result<LoadedBatch>>,
}

impl Pending {
    /// Blocks until the batch is loaded.
    ///
    /// # Panics
    /// With the panic of the `read` given to [`Loader::prefetch`], if it panicked.
    #[must_use]
    pub fn wait(self) -> LoadedBatch {
        match self.receiver.recv() {
            Ok(Ok(batch)) => batch,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(mpsc::RecvError) => unreachable!("a spawned job runs even if its pool is dropped"),
        }
    }
}

fn check_arguments(n: usize, seeds: &[u64], transform: &Transform) {
    assert_eq!(seeds.len(), n, "one seed per item");
    assert!(transform.size() > 0, "a transform to 0x0 pixels: {transform:?}");
}

fn load_batch(
    mut pixels: Vec<f32>,
    n: usize,
    read: &(dyn Fn(usize) -> Result<Vec<u8>, String> + Sync),
    seeds: &[u64],
    transform: &Transform,
    norm: &Normalize,
) -> LoadedBatch {
    check_arguments(n, seeds, transform);
    let item_len = transform.output_len();
    // Every float of a kept item is written, so what a recycled buffer held
    // is never read: only a buffer too short is extended (and zeroed).
    if pixels.len() < n * item_len {
        pixels.resize(n * item_len, 0.0);
    } else {
        pixels.truncate(n * item_len);
    }
    let mut outcomes: Vec<Result<(), String>> = vec![Ok(()); n];
    pixels.par_chunks_mut(item_len).zip(outcomes.par_iter_mut()).enumerate().with_max_len(1).for_each(
        |(i, (out, outcome))| {
            *outcome = load_item(i, read, seeds[i], transform, norm, out);
        },
    );

    let mut kept = Vec::with_capacity(n);
    let mut failed = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(()) => {
                let to = kept.len() * item_len;
                if to != i * item_len {
                    pixels.copy_within(i * item_len..(i + 1) * item_len, to);
                }
                kept.push(i);
            }
            Err(reason) => failed.push((i, reason)),
        }
    }
    pixels.truncate(kept.len() * item_len);
    LoadedBatch { pixels, kept, failed }
}

fn load_item(
    i: usize,
    read: &(dyn Fn(usize) -> Result<Vec<u8>, String> + Sync),
    seed: u64,
    transform: &Transform,
    norm: &Normalize,
    out: &mut [f32],
) -> Result<(), String> {
    let bytes = read(i)?;
    with_scratch(|scratch| {
        let (width, height) =
            decode_reusing(&bytes, MAX_PIXELS, &mut scratch.decoded).map_err(|error| error.to_string())?;
        let image = RgbView { width, height, pixels: &scratch.decoded };
        transform_view(image, transform, norm, seed, &mut scratch.resample, out);
        Ok(())
    })
}
