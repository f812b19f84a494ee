//! The update on the CPU as one pass over memory: for each run of elements,
//! the shard means, the mixing, the history `F`, the SGD step and the new
//! weights are computed while the run is in cache, instead of one full pass
//! over the model per operation. Every operation is the IEEE float32 one of
//! the fixed order (module `optim`), applied element by element in that
//! order, so the bits are those of the tensor path, whatever the number of
//! threads: no element's result depends on how the elements are split.
//! (Rust never fuses a multiply and an add into one rounding.)

/// Elements a thread takes at a time.
const UNIT: usize = 32 << 10;
/// Elements processed together in cache within a unit.
const BLOCK: usize = 4 << 10;
/// Below this many elements the update runs on the calling thread: starting
/// threads would cost more than they save.
const PARALLEL_MIN: usize = 256 << 10;

/// The scalars of one update, as float32 (as ATen casts them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coefficients {
    /// `(1 − λ, λ)` when clean and perturbed means are mixed.
    pub mix: Option<(f32, f32)>,
    pub beta: f32,
    pub weight_decay: f32,
    /// `None` without momentum.
    pub momentum: Option<f32>,
    pub nesterov: bool,
    pub lr: f32,
    pub adaptive: bool,
    /// The momentum buffers hold nothing yet (first update).
    pub new_momentum: bool,
}

/// One run of elements of one parameter: the state to update and the
/// shard gradients to read.
pub(crate) struct Unit<'a> {
    pub weights: &'a mut [f32],
    pub momentum: Option<&'a mut [f32]>,
    pub history: Option<&'a mut [f32]>,
    pub clean: Vec<&'a [f32]>,
    pub perturbed: Vec<&'a [f32]>,
}

/// Splits one parameter's slices into units of at most [`UNIT`] elements.
pub(crate) fn units<'a>(
    weights: &'a mut [f32],
    momentum: Option<&'a mut [f32]>,
    history: Option<&'a mut [f32]>,
    clean: &[&'a [f32]],
    perturbed: &[&'a [f32]],
    out: &mut Vec<Unit<'a>>,
) {
    let mut momentum = momentum.map(|m| m.chunks_mut(UNIT));
    let mut history = history.map(|h| h.chunks_mut(UNIT));
    for (i, w) in weights.chunks_mut(UNIT).enumerate() {
        let range = i * UNIT..i * UNIT + w.len();
        out.push(Unit {
            weights: w,
            momentum: momentum.as_mut().map(|m| m.next().expect("as long as the weights")),
            history: history.as_mut().map(|h| h.next().expect("as long as the weights")),
            clean: clean.iter().map(|g| &g[range.clone()]).collect(),
            perturbed: perturbed.iter().map(|g| &g[range.clone()]).collect(),
        });
    }
}

/// Runs `work` on every item, on up to `threads` threads (the calling one
/// included) when there is enough `size` to share; items are dealt round
/// robin, so each thread gets a fixed share independent of timing.
pub(crate) fn for_each_parallel<T: Send>(threads: usize, size: usize, items: Vec<T>, work: impl Fn(T) + Sync) {
    let threads = threads.max(1).min(items.len().max(1));
    if threads == 1 || size < PARALLEL_MIN {
        items.into_iter().for_each(work);
        return;
    }
    let mut shares: Vec<Vec<T>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % threads].push(item);
    }
    let work = &work;
    std::thread::scope(|scope| {
        let mut shares = shares.into_iter();
        let own = shares.next().expect("at least one share");
        for share in shares {
            scope.spawn(move || share.into_iter().for_each(work));
        }
        own.into_iter().for_each(work);
    });
}

/// Whether no element is NaN or ±∞: no exponent with all bits set. No early
/// exit inside a block, so that it vectorises.
pub(crate) fn all_finite(values: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7F80_0000;
    values.chunks(BLOCK).all(|block| !block.iter().fold(false, |any, v| any | (v.to_bits() & EXPONENT == EXPONENT)))
}

/// `((g₀ + g₁) + …) / k` into `out`, in shard order.
fn shard_mean(shards: &[&[f32]], out: &mut [f32]) {
    out.copy_from_slice(shards[0]);
    for shard in &shards[1..] {
        out.iter_mut().zip(*shard).for_each(|(o, g)| *o += g);
    }
    let k = shards.len() as f32;
    out.iter_mut().for_each(|o| *o /= k);
}

/// The mean of one block of the shards: the shard itself when there is
/// one (`x / 1` is `x`), else written into `scratch`.
fn block_mean<'a>(shards: &[&'a [f32]], range: std::ops::Range<usize>, scratch: &'a mut [f32]) -> &'a [f32] {
    match shards {
        [] => &[],
        [one] => &one[range],
        _ => {
            let blocks: Vec<&[f32]> = shards.iter().map(|s| &s[range.clone()]).collect();
            let out = &mut scratch[..blocks[0].len()];
            shard_mean(&blocks, out);
            out
        }
    }
}

/// Which gradient the update follows: `g = g_c`, `g = g_p`, or the mix.
const CLEAN: u8 = 0;
const PERTURBED: u8 = 1;
const MIXED: u8 = 2;
/// Momentum: none, heavy ball, Nesterov; `_FIRST`: the buffers start as `d`.
const NO_MOMENTUM: u8 = 0;
const HEAVY_BALL: u8 = 1;
const NESTEROV: u8 = 2;
const HEAVY_BALL_FIRST: u8 = 3;
const NESTEROV_FIRST: u8 = 4;

/// One block, every operation of the fixed order per element, in registers.
/// The variant is in the type so that each loop is branch-free and
/// vectorises. `F` starts as zeros, and `0 · β + x` is `x` bit for bit
/// (`x = g_p²` is never −0), so its first update needs no variant of its own.
#[allow(clippy::too_many_arguments)]
fn block<const G: u8, const ADAPTIVE: bool, const M: u8>(
    gc: &[f32],
    gp: &[f32],
    w: &mut [f32],
    m: &mut [f32],
    f: &mut [f32],
    c: &Coefficients,
) {
    let (keep, mix) = c.mix.unwrap_or((1.0, 0.0));
    let (beta, wd, lr) = (c.beta, c.weight_decay, c.lr);
    let mu = c.momentum.unwrap_or(0.0);
    // Every slice the variant reads cut to the block's length, so that the
    // loop has no bounds checks left and vectorises.
    let n = w.len();
    let gc = if G == PERTURBED { gc } else { &gc[..n] };
    let gp = if G == CLEAN { gp } else { &gp[..n] };
    let m = if M == NO_MOMENTUM { m } else { &mut m[..n] };
    let f = if ADAPTIVE { &mut f[..n] } else { f };
    for j in 0..n {
        let g = match G {
            CLEAN => gc[j],
            PERTURBED => gp[j],
            _ => gc[j] * keep + gp[j] * mix,
        };
        if ADAPTIVE {
            f[j] = f[j] * beta + gp[j] * gp[j];
        }
        let mut d = w[j] * wd + g;
        if M != NO_MOMENTUM {
            let b = if M == HEAVY_BALL_FIRST || M == NESTEROV_FIRST { d } else { m[j] * mu + d };
            m[j] = b;
            d = if M == NESTEROV || M == NESTEROV_FIRST { d + b * mu } else { b };
        }
        w[j] -= d * lr;
    }
}

/// Picks the instance of [`block`] for the update's variant.
fn run_block(gc: &[f32], gp: &[f32], w: &mut [f32], m: &mut [f32], f: &mut [f32], c: &Coefficients) {
    let g = match (gc.is_empty(), gp.is_empty()) {
        (false, true) => CLEAN,
        (true, false) => PERTURBED,
        _ => MIXED,
    };
    let momentum = match (c.momentum.is_some(), c.nesterov, c.new_momentum) {
        (false, _, _) => NO_MOMENTUM,
        (true, false, false) => HEAVY_BALL,
        (true, true, false) => NESTEROV,
        (true, false, true) => HEAVY_BALL_FIRST,
        (true, true, true) => NESTEROV_FIRST,
    };
    macro_rules! momenta {
        ($g:expr, $a:expr) => {
            match momentum {
                NO_MOMENTUM => block::<{ $g }, { $a }, NO_MOMENTUM>(gc, gp, w, m, f, c),
                HEAVY_BALL => block::<{ $g }, { $a }, HEAVY_BALL>(gc, gp, w, m, f, c),
                NESTEROV => block::<{ $g }, { $a }, NESTEROV>(gc, gp, w, m, f, c),
                HEAVY_BALL_FIRST => block::<{ $g }, { $a }, HEAVY_BALL_FIRST>(gc, gp, w, m, f, c),
                _ => block::<{ $g }, { $a }, NESTEROV_FIRST>(gc, gp, w, m, f, c),
            }
        };
    }
    match (g, c.adaptive) {
        (CLEAN, _) => momenta!(CLEAN, false),
        (PERTURBED, false) => momenta!(PERTURBED, false),
        (PERTURBED, true) => momenta!(PERTURBED, true),
        (_, false) => momenta!(MIXED, false),
        (_, true) => momenta!(MIXED, true),
    }
}

/// Applies the update to one unit, a block at a time.
pub(crate) fn update(unit: Unit<'_>, c: &Coefficients) {
    let Unit { weights, mut momentum, mut history, clean, perturbed } = unit;
    let mut clean_scratch = if clean.len() > 1 { vec![0f32; BLOCK] } else { Vec::new() };
    let mut perturbed_scratch = if perturbed.len() > 1 { vec![0f32; BLOCK] } else { Vec::new() };
    let len = weights.len();
    let mut start = 0;
    while start < len {
        let end = (start + BLOCK).min(len);
        let gc = block_mean(&clean, start..end, &mut clean_scratch);
        let gp = block_mean(&perturbed, start..end, &mut perturbed_scratch);
        let m = momentum.as_mut().map_or(&mut [][..], |m| &mut m[start..end]);
        let f = history.as_mut().map_or(&mut [][..], |f| &mut f[start..end]);
        run_block(gc, gp, &mut weights[start..end], m, f, c);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finiteness_is_seen_anywhere_in_a_slice() {
        let mut values = vec![1.0f32; 3 * BLOCK + 5];
        assert!(all_finite(&values));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, BLOCK - 1, 3 * BLOCK + 4] {
                values[at] = bad;
                assert!(!all_finite(&values), "{bad} at {at}");
                values[at] = f32::MAX;
            }
        }
        assert!(all_finite(&values) && all_finite(&[]));
    }

    #[test]
    fn parallel_work_covers_every_item_once() {
        let seen = std::sync::Mutex::new(Vec::new());
        for threads in [1, 2, 3, 8] {
            seen.lock().unwrap().clear();
            for_each_parallel(threads, PARALLEL_MIN, (0..10).collect(), |i| seen.lock().unwrap().push(i));
            let mut all = seen.lock().unwrap().clone();
            all.sort_unstable();
            assert_eq!(all, (0..10).collect::<Vec<_>>(), "{threads} threads");
        }
    }
}
