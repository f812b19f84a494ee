//! What one update needs computed: its tasks, their samples and their seeds.
//! Every task is a pure function of (spec, step, role, shard); this is what
//! lets any worker compute any task and the result stay the same.

use serde::{Deserialize, Serialize};

use crate::rng::{derive_seed, Rng};
use crate::{JobSpec, Method, Schedule};

const TAG_INIT: u64 = 1;
const TAG_ORDER: u64 = 2;
const TAG_AUGMENT: u64 = 3;
const TAG_NOISE: u64 = 4;
const TAG_VALIDATION: u64 = 5;

/// Which gradient a task computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `∇L_{B_c}(w)` on a shard of the clean batch.
    Clean,
    /// `∇L_{B_p}(w + ε)` on a shard of the perturbed batch.
    Perturbed,
    /// SAM's two sequential passes on a shard of the batch.
    Sam,
}

impl Role {
    /// The sample stream the role draws its batch from: clean and SAM share
    /// stream 0, perturbed batches come from stream 1, so `B_c ≠ B_p`.
    #[must_use]
    pub fn stream(self) -> u64 {
        match self {
            Role::Clean | Role::Sam => 0,
            Role::Perturbed => 1,
        }
    }
}

/// One unit of gradient work of one update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub step: u64,
    pub role: Role,
    pub shard: u32,
    pub num_shards: u32,
    /// Seed of the torch generator that draws ε (perturbed tasks only).
    pub noise_seed: Option<u64>,
    /// σ of this update (perturbed tasks only; 0 otherwise).
    pub sigma: f64,
}

/// The seed the initial weights are drawn from.
#[must_use]
pub fn init_seed(spec: &JobSpec) -> u64 {
    derive_seed(spec.seed, &[TAG_INIT])
}

/// The tasks of update `step`, clean (or SAM) shards first, each group in shard order.
#[must_use]
pub fn tasks_for_step(spec: &JobSpec, schedule: &Schedule, step: u64) -> Vec<Task> {
    let mut tasks = Vec::new();
    let first_role = match spec.method {
        Method::Sam => Some(Role::Sam),
        m if m.uses_clean() => Some(Role::Clean),
        _ => None,
    };
    if let Some(role) = first_role {
        for shard in 0..spec.clean_shards {
            tasks.push(Task { step, role, shard, num_shards: spec.clean_shards, noise_seed: None, sigma: 0.0 });
        }
    }
    if spec.method.uses_perturbed() {
        let sigma = schedule.sigma_at(step);
        for shard in 0..spec.perturbed_shards {
            let noise_shard = if spec.independent_noise { u64::from(shard) } else { 0 };
            tasks.push(Task {
                step,
                role: Role::Perturbed,
                shard,
                num_shards: spec.perturbed_shards,
                noise_seed: Some(derive_seed(spec.seed, &[TAG_NOISE, step, noise_shard])),
                sigma,
            });
        }
    }
    tasks
}

/// The split of a training set of `n` samples into the samples trained on
/// and the held-out validation samples, both as indices into the full
/// training set in increasing order.
///
/// `floor(validation_fraction · n)` samples are held out: the first ones of
/// a permutation of `0..n` drawn from the job's seed (path `(5)`), so the
/// split is the same on the server, every worker and the local trainer. With
/// `validation_fraction = 0` nothing is held out and the training set is
/// `0..n` in its order, exactly as without a split.
#[must_use]
pub fn validation_split(spec: &JobSpec, n: usize) -> (Vec<u32>, Vec<u32>) {
    let held_out = validation_len(spec, n);
    if held_out == 0 {
        return ((0..n as u32).collect(), Vec::new());
    }
    let order = Rng::new(derive_seed(spec.seed, &[TAG_VALIDATION])).permutation(n);
    let mut validation = order[..held_out].to_vec();
    validation.sort_unstable();
    let mut is_held_out = vec![false; n];
    for &i in &validation {
        is_held_out[i as usize] = true;
    }
    let train = (0..n as u32).filter(|&i| !is_held_out[i as usize]).collect();
    (train, validation)
}

/// How many of `n` training samples [`validation_split`] holds out.
#[must_use]
pub fn validation_len(spec: &JobSpec, n: usize) -> usize {
    // Exact for every n a dataset can have (n < 2^53).
    (spec.validation_fraction * n as f64).floor() as usize
}

/// Sample indices of a shard, with one augmentation seed per sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSamples {
    pub indices: Vec<u32>,
    pub augment_seeds: Vec<u64>,
}

/// Deterministic sample order: each stream walks its own permutation of the
/// training set per epoch; update `t` takes the `t`-th run of `b` samples of
/// its epoch (the remainder of an epoch is dropped), and shard `s` of `k`
/// takes the `s`-th contiguous `b/k` of those.
#[derive(Clone, Debug)]
pub struct Sampler {
    seed: u64,
    train_len: usize,
    batch_size: usize,
    updates_per_epoch: u64,
    cache: Option<(u64, u64, Vec<u32>)>,
}

impl Sampler {
    #[must_use]
    pub fn new(spec: &JobSpec, schedule: &Schedule, train_len: usize) -> Self {
        Self {
            seed: spec.seed,
            train_len,
            batch_size: spec.batch_size as usize,
            updates_per_epoch: schedule.updates_per_epoch,
            cache: None,
        }
    }

    fn permutation(&mut self, stream: u64, epoch: u64) -> &[u32] {
        let fresh = !matches!(&self.cache, Some((s, e, _)) if *s == stream && *e == epoch);
        if fresh {
            let mut rng = Rng::new(derive_seed(self.seed, &[TAG_ORDER, stream, epoch]));
            self.cache = Some((stream, epoch, rng.permutation(self.train_len)));
        }
        &self.cache.as_ref().expect("filled above").2
    }

    pub fn shard(&mut self, task: &Task) -> ShardSamples {
        let stream = task.role.stream();
        let epoch = task.step / self.updates_per_epoch;
        let in_epoch = (task.step % self.updates_per_epoch) as usize;
        let shard_len = self.batch_size / task.num_shards as usize;
        let start = in_epoch * self.batch_size + task.shard as usize * shard_len;
        let seed = self.seed;
        let indices = self.permutation(stream, epoch)[start..start + shard_len].to_vec();
        let augment_seeds = (start..start + shard_len)
            .map(|pos| derive_seed(seed, &[TAG_AUGMENT, stream, epoch, pos as u64]))
            .collect();
        ShardSamples { indices, augment_seeds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: Method) -> JobSpec {
        let mut s = JobSpec::reference(method);
        s.batch_size = 8;
        s.epochs = 2;
        s
    }

    #[test]
    fn m_arwp_has_clean_then_perturbed_tasks_sharing_noise() {
        let mut s = spec(Method::MArwp);
        s.clean_shards = 2;
        s.perturbed_shards = 4;
        let sched = Schedule::new(&s, 64).unwrap();
        let tasks = tasks_for_step(&s, &sched, 3);
        let roles: Vec<_> = tasks.iter().map(|t| (t.role, t.shard)).collect();
        assert_eq!(
            roles,
            vec![
                (Role::Clean, 0),
                (Role::Clean, 1),
                (Role::Perturbed, 0),
                (Role::Perturbed, 1),
                (Role::Perturbed, 2),
                (Role::Perturbed, 3)
            ]
        );
        let seeds: Vec<_> = tasks[2..].iter().map(|t| t.noise_seed.unwrap()).collect();
        assert!(seeds.windows(2).all(|w| w[0] == w[1]));
        s.independent_noise = true;
        let seeds: Vec<_> = tasks_for_step(&s, &sched, 3)[2..].iter().map(|t| t.noise_seed.unwrap()).collect();
        assert!(seeds.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn sgd_and_sam_have_no_perturbed_tasks() {
        for (m, role) in [(Method::Sgd, Role::Clean), (Method::Sam, Role::Sam)] {
            let s = spec(m);
            let sched = Schedule::new(&s, 64).unwrap();
            let tasks = tasks_for_step(&s, &sched, 0);
            assert_eq!(tasks.len(), 1);
            assert_eq!(tasks[0].role, role);
        }
        let s = spec(Method::Rwp);
        let sched = Schedule::new(&s, 64).unwrap();
        let tasks = tasks_for_step(&s, &sched, 0);
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0].role, Role::Perturbed);
    }

    #[test]
    fn shards_partition_the_batch_and_streams_differ() {
        let mut s = spec(Method::MRwp);
        s.clean_shards = 4;
        let sched = Schedule::new(&s, 64).unwrap();
        let mut sampler = Sampler::new(&s, &sched, 64);
        let whole = {
            let mut one = s.clone();
            one.clean_shards = 1;
            let t = &tasks_for_step(&one, &sched, 5)[0];
            sampler.shard(t)
        };
        let tasks = tasks_for_step(&s, &sched, 5);
        let mut joined = ShardSamples { indices: vec![], augment_seeds: vec![] };
        for t in tasks.iter().filter(|t| t.role == Role::Clean) {
            let part = sampler.shard(t);
            joined.indices.extend(part.indices);
            joined.augment_seeds.extend(part.augment_seeds);
        }
        assert_eq!(joined, whole);
        let perturbed = sampler.shard(tasks.iter().find(|t| t.role == Role::Perturbed).unwrap());
        assert_ne!(perturbed.indices, whole.indices[..8].to_vec());
    }

    #[test]
    fn validation_split_is_seeded_disjoint_and_complete() {
        let mut s = spec(Method::Sgd);
        let (train, validation) = validation_split(&s, 1000);
        assert_eq!(train, (0..1000).collect::<Vec<u32>>(), "fraction 0 keeps the training set as it is");
        assert!(validation.is_empty());

        s.validation_fraction = 0.25;
        let (train, validation) = validation_split(&s, 1000);
        assert_eq!((train.len(), validation.len()), (750, 250));
        assert_eq!(validation_len(&s, 1000), 250);
        assert!(train.windows(2).all(|w| w[0] < w[1]) && validation.windows(2).all(|w| w[0] < w[1]));
        let mut all: Vec<u32> = train.iter().chain(&validation).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<u32>>(), "disjoint and covering");
        assert_eq!(validation_split(&s, 1000), (train.clone(), validation.clone()), "same seed, same split");
        // Not a prefix or suffix: drawn at random.
        assert!(validation.first() < Some(&100) && validation.last() > Some(&900));
        s.seed += 1;
        assert_ne!(validation_split(&s, 1000).1, validation, "another seed, another split");
        s.validation_fraction = 0.0005;
        assert_eq!(validation_split(&s, 1000).1.len(), 0, "floor(0.5) samples");
    }

    #[test]
    fn an_epoch_visits_each_sample_once_per_stream() {
        let s = spec(Method::Sgd);
        let sched = Schedule::new(&s, 64).unwrap();
        let mut sampler = Sampler::new(&s, &sched, 64);
        let mut seen = Vec::new();
        for step in 0..sched.updates_per_epoch {
            seen.extend(sampler.shard(&tasks_for_step(&s, &sched, step)[0]).indices);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..64).collect::<Vec<u32>>());
        let next = sampler.shard(&tasks_for_step(&s, &sched, sched.updates_per_epoch)[0]);
        let first = sampler.shard(&tasks_for_step(&s, &sched, 0)[0]);
        assert_ne!(next.indices, first.indices, "each epoch reshuffles");
    }
}
