//! The plan of an evaluation: a split is evaluated in batches of
//! [`EVAL_BATCH`] samples in order, and the batches are grouped into shards
//! of [`BATCHES_PER_SHARD`] consecutive batches, each shard a task a worker
//! can lease. A shard's result is one [`BatchEval`] per batch; the figures
//! are the sums of those in global batch order ([`EvalTotals`]), which is
//! exactly what evaluating the whole split in one pass sums, whatever the
//! number of shards or workers. The local trainer and the parameter server
//! both fold through this module.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Samples per evaluation batch (the last batch of a split may be shorter).
pub const EVAL_BATCH: usize = 500;

/// Batches per evaluation shard (the last shard may have fewer).
pub const BATCHES_PER_SHARD: usize = 2;

/// The split an evaluation task covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    Test,
    /// The samples held out of the training set (`validation_fraction`).
    Validation,
}

/// One shard of the evaluation of weights version `version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalTask {
    /// The weights version evaluated (updates applied before it).
    pub version: u64,
    pub split: EvalSplit,
    pub shard: u32,
    pub num_shards: u32,
}

/// How many batches a split of `samples` samples has.
#[must_use]
pub fn batch_count(samples: usize) -> usize {
    samples.div_ceil(EVAL_BATCH)
}

/// How many shards a split of `samples` samples has (0 for an empty split).
#[must_use]
pub fn shard_count(samples: usize) -> u32 {
    u32::try_from(batch_count(samples).div_ceil(BATCHES_PER_SHARD)).unwrap_or(u32::MAX)
}

/// The batches (global indices) shard `shard` covers.
#[must_use]
pub fn shard_batches(samples: usize, shard: u32) -> Range<usize> {
    let batches = batch_count(samples);
    let start = (shard as usize * BATCHES_PER_SHARD).min(batches);
    start..(start + BATCHES_PER_SHARD).min(batches)
}

/// The samples (indices into the split) of batch `batch`.
#[must_use]
pub fn batch_samples(samples: usize, batch: usize) -> Range<usize> {
    let start = (batch * EVAL_BATCH).min(samples);
    start..(start + EVAL_BATCH).min(samples)
}

/// The shards of an evaluation of version `version`: the test split's,
/// then the validation split's, each in shard order. The server folds
/// their results in this order.
#[must_use]
pub fn eval_tasks(version: u64, test_samples: usize, validation_samples: usize) -> Vec<EvalTask> {
    let shards = |split, samples| {
        let num_shards = shard_count(samples);
        (0..num_shards).map(move |shard| EvalTask { version, split, shard, num_shards })
    };
    shards(EvalSplit::Test, test_samples).chain(shards(EvalSplit::Validation, validation_samples)).collect()
}

/// One batch's contribution: its mean loss times its length, its correct
/// predictions, and its length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchEval {
    pub loss_sum: f64,
    pub correct: f64,
    pub samples: u64,
}

/// Why a shard's result does not fit its task.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalResultError(String);

/// Checks a shard's per-batch results against the plan of a split of
/// `samples` samples: one per batch of the shard, each of the batch's
/// length, with a whole number of correct predictions within it.
pub fn check_shard_result(samples: usize, task: &EvalTask, batches: &[BatchEval]) -> Result<(), EvalResultError> {
    let expected = shard_batches(samples, task.shard);
    if task.num_shards != shard_count(samples) || task.shard >= task.num_shards {
        return Err(EvalResultError(format!(
            "shard {} of {}, where the {:?} split has {} shards",
            task.shard,
            task.num_shards,
            task.split,
            shard_count(samples)
        )));
    }
    if batches.len() != expected.len() {
        return Err(EvalResultError(format!(
            "{} batch results for {:?} shard {}, which has {} batches",
            batches.len(),
            task.split,
            task.shard,
            expected.len()
        )));
    }
    for (batch, result) in expected.zip(batches) {
        let len = batch_samples(samples, batch).len() as u64;
        let whole = result.correct.fract() == 0.0 && (0.0..=len as f64).contains(&result.correct);
        if result.samples != len || !whole {
            return Err(EvalResultError(format!(
                "batch {batch} of the {:?} split: {} samples and {} correct, for a batch of {len}",
                task.split, result.samples, result.correct
            )));
        }
    }
    Ok(())
}

/// Sums of batch results, in the order they are added.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalTotals {
    loss: f64,
    correct: f64,
    samples: u64,
}

impl EvalTotals {
    pub fn add(&mut self, batch: &BatchEval) {
        self.loss += batch.loss_sum;
        self.correct += batch.correct;
        self.samples += batch.samples;
    }

    /// The mean loss over the samples added.
    #[must_use]
    pub fn loss(&self) -> f64 {
        self.loss / self.samples as f64
    }

    /// The fraction of samples predicted right.
    #[must_use]
    pub fn accuracy(&self) -> f64 {
        self.correct / self.samples as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_batch_once_in_order() {
        for samples in [0, 1, 499, 500, 501, 1000, 1999, 2000, 2001, 10_000] {
            let shards = shard_count(samples);
            let covered: Vec<usize> = (0..shards).flat_map(|s| shard_batches(samples, s)).collect();
            assert_eq!(covered, (0..batch_count(samples)).collect::<Vec<_>>(), "{samples} samples");
            let seen: Vec<usize> = covered.iter().flat_map(|&b| batch_samples(samples, b)).collect();
            assert_eq!(seen, (0..samples).collect::<Vec<_>>(), "{samples} samples");
            assert!((0..shards).all(|s| !shard_batches(samples, s).is_empty()), "no empty shard");
        }
        assert_eq!((shard_count(2000), shard_batches(2000, 1)), (2, 2..4));
        assert_eq!((shard_count(2001), shard_batches(2001, 2)), (3, 4..5));
        assert_eq!(batch_samples(2001, 4), 2000..2001);
    }

    #[test]
    fn tasks_list_test_then_validation_shards() {
        let tasks = eval_tasks(12, 2000, 200);
        let listed: Vec<_> = tasks.iter().map(|t| (t.version, t.split, t.shard, t.num_shards)).collect();
        assert_eq!(
            listed,
            vec![(12, EvalSplit::Test, 0, 2), (12, EvalSplit::Test, 1, 2), (12, EvalSplit::Validation, 0, 1)]
        );
        assert_eq!(eval_tasks(3, 2000, 0).len(), 2, "no validation split, no validation shard");
    }

    #[test]
    fn results_are_checked_against_the_plan() {
        let task = EvalTask { version: 0, split: EvalSplit::Test, shard: 1, num_shards: 3 };
        let batch = |samples, correct| BatchEval { loss_sum: 1.5, correct, samples };
        let samples = 2100;
        assert_eq!(check_shard_result(samples, &task, &[batch(500, 3.0), batch(500, 500.0)]), Ok(()));
        let last = EvalTask { shard: 2, ..task };
        assert_eq!(check_shard_result(samples, &last, &[batch(100, 0.0)]), Ok(()));
        for (wrong, why) in [
            (vec![batch(500, 3.0)], "1 batch results"),
            (vec![batch(500, 3.0), batch(499, 3.0)], "499 samples"),
            (vec![batch(500, 3.5), batch(500, 3.0)], "3.5 correct"),
            (vec![batch(500, 501.0), batch(500, 3.0)], "501 correct"),
        ] {
            let err = check_shard_result(samples, &task, &wrong).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        let err = check_shard_result(samples, &EvalTask { num_shards: 2, ..task }, &[]).unwrap_err();
        assert!(err.to_string().contains("has 3 shards"), "{err}");
    }

    #[test]
    fn totals_are_means_over_the_samples() {
        let mut totals = EvalTotals::default();
        totals.add(&BatchEval { loss_sum: 250.0, correct: 400.0, samples: 500 });
        totals.add(&BatchEval { loss_sum: 50.0, correct: 20.0, samples: 100 });
        assert_eq!((totals.loss(), totals.accuracy()), (0.5, 0.7));
    }
}
