//! RWP-family training on libtorch (docs/algorithms.md is the specification).
//!
//! The pieces a distributed run spreads over machines are separate functions
//! over plain tensors, with no state kept between them:
//!
//! - [`grad::clean_gradient`]: `∇L_{B_c}(w)` of one shard, with its updated
//!   BatchNorm statistics;
//! - [`grad::perturbed_gradient`]: `∇L_{B_p}(w + ε)` of one shard, given the
//!   task's noise seed, σ and the adaptive [`perturb::RowFactors`];
//! - [`grad::sam_gradient`]: SAM's two passes on one shard;
//! - [`optim::apply_update`]: aggregation of shard results in shard order,
//!   the history `F`, and the SGD step.
//!
//! [`trainer::LocalTrainer`] runs them all in one process.
//!
//! libtorch models are not `Sync`: callers keep a [`model::Model`]'s tensors on
//! one thread. Functions that draw from torch's generator serialise through
//! one process-wide lock.

pub mod checkpoint;
pub mod data;
pub mod faults;
pub mod grad;
pub mod model;
pub mod optim;
pub mod perturb;
mod torch_rng;
pub mod trainer;
pub mod wire;

pub use rwp_spec as spec;
