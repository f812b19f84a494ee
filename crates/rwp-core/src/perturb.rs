//! Filter-wise random perturbation ε (docs/algorithms.md, "Filter-wise random
//! perturbation" and "Adaptive perturbation (ARWP, m-ARWP)").
//!
//! Floating-point order, fixed so that every implementation gets the same bits:
//! - ≥2-D: `r = ‖p.view(d0, -1)‖₂` per row; `std = r · σ`; with history
//!   `std = std / a` where `a = sqrt(1 + η · F̄)` per row; `ε = randn(shape) · std`
//!   (std broadcast over the row).
//! - 1-D: `s = σ · (‖p‖₂ + 1e-16)` in double precision; `ε = normal_(0, s)`;
//!   with history `ε = ε / a` element-wise.

use tch::{Kind, Tensor};

use crate::torch_rng;

/// Per-parameter adaptive divisors `sqrt(1 + η · F̄)`, one per output row
/// (one per element for 1-D parameters). Small: this is what the server sends
/// to workers instead of `F` itself.
#[derive(Debug)]
pub struct RowFactors(pub Vec<Tensor>);

impl RowFactors {
    /// Factors from the history `F` (one tensor per parameter).
    #[must_use]
    pub fn from_history(history: &[Tensor], eta: f64) -> Self {
        Self(
            history
                .iter()
                .map(|f| {
                    let row_sum = if f.dim() >= 2 {
                        f.view([f.size()[0], -1]).sum_dim_intlist(1, false, Kind::Float)
                    } else {
                        f.shallow_clone()
                    };
                    (row_sum * eta + 1.0).sqrt()
                })
                .collect(),
        )
    }

    #[must_use]
    pub fn to_device(&self, device: tch::Device) -> Self {
        Self(self.0.iter().map(|t| t.to_device(device)).collect())
    }
}

/// The noise of one perturbed task.
#[derive(Debug)]
pub struct Noise<'a> {
    pub seed: u64,
    pub sigma: f64,
    /// `None` before the first update of an adaptive method, and always for
    /// non-adaptive ones.
    pub factors: Option<&'a RowFactors>,
}

fn row_shape(p: &Tensor) -> Vec<i64> {
    let mut shape = vec![1; p.dim()];
    shape[0] = p.size()[0];
    shape
}

/// Draws ε for every parameter, in parameter order, from torch's generator
/// seeded with `noise.seed`.
#[must_use]
pub fn perturbation(weights: &[Tensor], noise: &Noise<'_>) -> Vec<Tensor> {
    if let Some(f) = noise.factors {
        assert_eq!(f.0.len(), weights.len(), "one row-factor tensor per parameter");
    }
    let _no_grad = tch::no_grad_guard();
    torch_rng::with_seed(noise.seed, || {
        weights
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let factor = noise.factors.map(|f| &f.0[i]);
                if p.dim() >= 2 {
                    let rows = p.view([p.size()[0], -1]).norm_scalaropt_dim(2, [1], false);
                    let mut std = rows * noise.sigma;
                    if let Some(a) = factor {
                        std /= a;
                    }
                    let z = Tensor::randn(p.size(), (p.kind(), p.device()));
                    z * std.view(row_shape(p).as_slice())
                } else {
                    let norm = p.norm().double_value(&[]);
                    let s = noise.sigma * (norm + 1e-16);
                    let mut eps = Tensor::empty(p.size(), (p.kind(), p.device()));
                    let _ = eps.normal_(0.0, s);
                    match factor {
                        Some(a) => eps / a,
                        None => eps,
                    }
                }
            })
            .collect()
    })
}
