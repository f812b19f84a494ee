//! The plan of an evaluation: a split is evaluated in batches of a fixed
//! size in order ([`SplitPlan`]: [`EVAL_BATCH`] samples, fewer for large
//! samples), and the batches are grouped into shards of
//! [`BATCHES_PER_SHARD`] consecutive batches, each shard a task a worker
//! can lease. A shard's result is one [`BatchEval`] per batch; the figures
//! are the sums of those in global batch order ([`EvalTotals`]), which is
//! exactly what evaluating the whole split in one pass sums, whatever the
//! number of shards or workers. The local trainer and the parameter server
//! both fold through this module.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Samples per evaluation batch of small samples (the last batch of a
/// split may be shorter).
pub const EVAL_BATCH: usize = 500;

/// Input values an evaluation batch holds at most: 64 MiB of float32, so
/// that 224×224 images go 104 to a batch rather than 500 (300 MB of input
/// and gigabytes of activations for ResNet-50).
pub const EVAL_BATCH_VALUES: usize = 16 << 20;

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

/// How a split of `samples` samples is cut into evaluation batches of
/// `batch` samples and shards of [`BATCHES_PER_SHARD`] batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPlan {
    pub samples: usize,
    pub batch: usize,
}

impl SplitPlan {
    /// The plan of a split of `samples` samples of `values` input values
    /// each: batches of [`EVAL_BATCH`], or of as many as fit
    /// [`EVAL_BATCH_VALUES`] (a multiple of 8 where that is at least 8).
    #[must_use]
    pub fn for_samples(samples: usize, values: usize) -> Self {
        let fit = EVAL_BATCH_VALUES / values.max(1);
        let batch = if fit >= 8 { fit / 8 * 8 } else { fit.max(1) };
        Self { samples, batch: batch.min(EVAL_BATCH) }
    }

    /// How many batches the split has.
    #[must_use]
    pub fn batch_count(&self) -> usize {
        self.samples.div_ceil(self.batch)
    }

    /// How many shards the split has (0 for an empty split).
    #[must_use]
    pub fn shard_count(&self) -> u32 {
        u32::try_from(self.batch_count().div_ceil(BATCHES_PER_SHARD)).unwrap_or(u32::MAX)
    }

    /// The batches (global indices) shard `shard` covers.
    #[must_use]
    pub fn shard_batches(&self, shard: u32) -> Range<usize> {
        let batches = self.batch_count();
        let start = (shard as usize * BATCHES_PER_SHARD).min(batches);
        start..(start + BATCHES_PER_SHARD).min(batches)
    }

    /// The samples (indices into the split) of batch `batch`.
    #[must_use]
    pub fn batch_samples(&self, batch: usize) -> Range<usize> {
        let start = (batch * self.batch).min(self.samples);
        start..(start + self.batch).min(self.samples)
    }
}

/// The shards of an evaluation of version `version`: the test split's,
/// then the validation split's, each in shard order. The server folds
/// their results in this order.
#[must_use]
pub fn eval_tasks(version: u64, test: SplitPlan, validation: SplitPlan) -> Vec<EvalTask> {
    let shards = |split, plan: SplitPlan| {
        let num_shards = plan.shard_count();
        (0..num_shards).map(move |shard| EvalTask { version, split, shard, num_shards })
    };
    shards(EvalSplit::Test, test).chain(shards(EvalSplit::Validation, validation)).collect()
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

/// Checks a shard's per-batch results against the plan of its split: one
/// per batch of the shard, each of the batch's length less the samples
/// left out of it (`skipped` in the whole shard, under
/// `bad_samples = "skip"`), with a whole number of correct predictions
/// within it.
pub fn check_shard_result(
    plan: SplitPlan,
    task: &EvalTask,
    batches: &[BatchEval],
    skipped: usize,
) -> Result<(), EvalResultError> {
    let expected = plan.shard_batches(task.shard);
    if task.num_shards != plan.shard_count() || task.shard >= task.num_shards {
        return Err(EvalResultError(format!(
            "shard {} of {}, where the {:?} split has {} shards",
            task.shard,
            task.num_shards,
            task.split,
            plan.shard_count()
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
    let planned: usize = expected.clone().map(|batch| plan.batch_samples(batch).len()).sum();
    let counted: u64 = batches.iter().map(|b| b.samples).sum();
    if counted + skipped as u64 != planned as u64 {
        return Err(EvalResultError(format!(
            "{counted} samples evaluated and {skipped} left out in {:?} shard {}, which has {planned}",
            task.split, task.shard
        )));
    }
    for (batch, result) in expected.zip(batches) {
        let len = plan.batch_samples(batch).len() as u64;
        // Fewer samples where some were left out (`bad_samples = "skip"`).
        let whole = result.correct.fract() == 0.0 && (0.0..=result.samples as f64).contains(&result.correct);
        if result.samples == 0 || result.samples > len || !whole {
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

    fn plan(samples: usize) -> SplitPlan {
        SplitPlan { samples, batch: EVAL_BATCH }
    }

    #[test]
    fn shards_cover_every_batch_once_in_order() {
        for batch in [EVAL_BATCH, 104, 7] {
            for samples in [0, 1, 499, 500, 501, 1000, 1999, 2000, 2001, 10_000] {
                let plan = SplitPlan { samples, batch };
                let shards = plan.shard_count();
                let covered: Vec<usize> = (0..shards).flat_map(|s| plan.shard_batches(s)).collect();
                assert_eq!(covered, (0..plan.batch_count()).collect::<Vec<_>>(), "{plan:?}");
                let seen: Vec<usize> = covered.iter().flat_map(|&b| plan.batch_samples(b)).collect();
                assert_eq!(seen, (0..samples).collect::<Vec<_>>(), "{plan:?}");
                assert!((0..shards).all(|s| !plan.shard_batches(s).is_empty()), "no empty shard");
                assert!(covered.iter().all(|&b| plan.batch_samples(b).len() <= batch), "{plan:?}");
            }
        }
        assert_eq!((plan(2000).shard_count(), plan(2000).shard_batches(1)), (2, 2..4));
        assert_eq!((plan(2001).shard_count(), plan(2001).shard_batches(2)), (3, 4..5));
        assert_eq!(plan(2001).batch_samples(4), 2000..2001);
    }

    #[test]
    fn large_samples_are_evaluated_in_smaller_batches() {
        let batch = |values| SplitPlan::for_samples(1000, values).batch;
        // MNIST and CIFAR keep batches of 500.
        assert_eq!((batch(28 * 28), batch(3 * 32 * 32)), (500, 500));
        // 16 Mi values / 150,528 = 111, down to a multiple of 8.
        assert_eq!(batch(3 * 224 * 224), 104);
        assert_eq!(batch(3 * 512 * 512), 16);
        assert_eq!(batch(EVAL_BATCH_VALUES / 3), 3, "under 8: as many as fit");
        assert_eq!(batch(EVAL_BATCH_VALUES * 2), 1, "a sample over the limit: one a batch");
    }

    #[test]
    fn tasks_list_test_then_validation_shards() {
        let tasks = eval_tasks(12, plan(2000), plan(200));
        let listed: Vec<_> = tasks.iter().map(|t| (t.version, t.split, t.shard, t.num_shards)).collect();
        assert_eq!(
            listed,
            vec![(12, EvalSplit::Test, 0, 2), (12, EvalSplit::Test, 1, 2), (12, EvalSplit::Validation, 0, 1)]
        );
        assert_eq!(eval_tasks(3, plan(2000), plan(0)).len(), 2, "no validation split, no validation shard");
    }

    #[test]
    fn results_are_checked_against_the_plan() {
        let task = EvalTask { version: 0, split: EvalSplit::Test, shard: 1, num_shards: 3 };
        let batch = |samples, correct| BatchEval { loss_sum: 1.5, correct, samples };
        let samples = plan(2100);
        assert_eq!(check_shard_result(samples, &task, &[batch(500, 3.0), batch(500, 500.0)], 0), Ok(()));
        let last = EvalTask { shard: 2, ..task };
        assert_eq!(check_shard_result(samples, &last, &[batch(100, 0.0)], 0), Ok(()));
        // Two samples left out of the first batch.
        assert_eq!(check_shard_result(samples, &task, &[batch(498, 498.0), batch(500, 0.0)], 2), Ok(()));
        for (wrong, skipped, why) in [
            (vec![batch(500, 3.0)], 0, "1 batch results"),
            (vec![batch(500, 3.0), batch(499, 3.0)], 0, "999 samples evaluated and 0 left out"),
            (vec![batch(500, 3.0), batch(499, 3.0)], 2, "999 samples evaluated and 2 left out"),
            (vec![batch(501, 3.0), batch(498, 3.0)], 1, "501 samples"),
            (vec![batch(500, 3.5), batch(500, 3.0)], 0, "3.5 correct"),
            (vec![batch(499, 500.0), batch(500, 3.0)], 1, "500 correct"),
        ] {
            let err = check_shard_result(samples, &task, &wrong, skipped).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        let err = check_shard_result(samples, &EvalTask { num_shards: 2, ..task }, &[], 0).unwrap_err();
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
