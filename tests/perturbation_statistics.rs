//! ε drawn by the core has, per output row, the standard deviation the spec
//! gives: `σ·r_j / sqrt(1 + η·F̄_j)` for ≥2-D parameters and
//! `σ·(‖p‖ + 1e-16) / sqrt(1 + η·F_i)` for 1-D ones. The expected values are
//! computed here in f64 from the raw numbers, independently of the core.

use rwp_core::perturb::{perturbation, Noise, RowFactors};
use tch::{Device, Kind, Tensor};

const SIGMA: f64 = 0.05;
const ETA: f64 = 0.1;

fn values(t: &Tensor) -> Vec<f64> {
    let t = t.to_kind(Kind::Double).contiguous().view([-1]);
    Vec::<f64>::try_from(&t).unwrap()
}

/// A weight `[rows, 32, 3, 3]` whose rows have very different norms, a bias,
/// and a positive history for each.
fn fixture() -> (Vec<Tensor>, Vec<Tensor>) {
    let rows = 6;
    let row_scale = Tensor::from_slice(&[0.1f32, 0.5, 1.0, 2.0, 4.0, 8.0]).view([rows, 1, 1, 1]);
    let weight = Tensor::arange(rows * 32 * 9, (Kind::Float, Device::Cpu)).sin().view([rows, 32, 3, 3]) * row_scale;
    let bias = Tensor::from_slice(&[0.3f32, -1.2, 0.7, 2.0, -0.1]);
    let weight_history =
        Tensor::arange(rows * 32 * 9, (Kind::Float, Device::Cpu)).cos().square().view([rows, 32, 3, 3])
            * Tensor::from_slice(&[0.0f32, 0.01, 0.1, 0.5, 1.0, 3.0]).view([rows, 1, 1, 1]);
    let bias_history = Tensor::from_slice(&[0.0f32, 1.0, 5.0, 20.0, 100.0]);
    (vec![weight, bias], vec![weight_history, bias_history])
}

/// Empirical per-row (2-D) or per-element (1-D) standard deviations over `draws`.
fn empirical_std(weights: &[Tensor], factors: Option<&RowFactors>, draws: u64) -> (Vec<f64>, Vec<f64>) {
    let rows = weights[0].size()[0] as usize;
    let per_row = (weights[0].numel() / rows) as f64;
    let bias_len = weights[1].numel();
    let (mut row_sq, mut row_sum) = (vec![0.0; rows], vec![0.0; rows]);
    let (mut bias_sq, mut bias_sum) = (vec![0.0; bias_len], vec![0.0; bias_len]);
    for seed in 0..draws {
        let eps = perturbation(weights, &Noise { seed: 1000 + seed, sigma: SIGMA, factors });
        for (j, chunk) in values(&eps[0]).chunks(per_row as usize).enumerate() {
            row_sum[j] += chunk.iter().sum::<f64>();
            row_sq[j] += chunk.iter().map(|v| v * v).sum::<f64>();
        }
        for (i, v) in values(&eps[1]).into_iter().enumerate() {
            bias_sum[i] += v;
            bias_sq[i] += v * v;
        }
    }
    let std = |sq: &[f64], sum: &[f64], n: f64| -> Vec<f64> {
        sq.iter().zip(sum).map(|(q, s)| (q / n - (s / n).powi(2)).sqrt()).collect()
    };
    (std(&row_sq, &row_sum, draws as f64 * per_row), std(&bias_sq, &bias_sum, draws as f64))
}

fn expected_std(weights: &[Tensor], history: Option<&[Tensor]>) -> (Vec<f64>, Vec<f64>) {
    let rows = weights[0].size()[0] as usize;
    let w = values(&weights[0]);
    let per_row = w.len() / rows;
    let row_history: Vec<f64> = match history {
        Some(h) => values(&h[0]).chunks(per_row).map(|c| c.iter().sum()).collect(),
        None => vec![0.0; rows],
    };
    let weight_std = w
        .chunks(per_row)
        .zip(&row_history)
        .map(|(row, f)| SIGMA * row.iter().map(|v| v * v).sum::<f64>().sqrt() / (1.0 + ETA * f).sqrt())
        .collect();
    let b = values(&weights[1]);
    let norm = b.iter().map(|v| v * v).sum::<f64>().sqrt();
    let bias_history = history.map_or(vec![0.0; b.len()], |h| values(&h[1]));
    let bias_std = bias_history.iter().map(|f| SIGMA * (norm + 1e-16) / (1.0 + ETA * f).sqrt()).collect();
    (weight_std, bias_std)
}

fn assert_within(label: &str, got: &[f64], want: &[f64], tolerance: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let rel = (g - w).abs() / w;
        assert!(rel < tolerance, "{label}[{i}]: empirical std {g:.6e}, expected {w:.6e} ({:.2}% off)", rel * 100.0);
    }
}

#[test]
fn adaptive_epsilon_has_the_specified_row_std() {
    tch::set_num_threads(1);
    let (weights, history) = fixture();
    let factors = RowFactors::from_history(&history, ETA);
    let (rows, bias) = empirical_std(&weights, Some(&factors), 20_000);
    let (want_rows, want_bias) = expected_std(&weights, Some(&history));
    // The history must actually shrink some rows, or the test would not tell
    // adaptive noise from plain noise.
    assert!(want_rows[5] < 0.5 * SIGMA * values(&weights[0].get(5).norm())[0]);
    assert_within("weight row", &rows, &want_rows, 0.02);
    assert_within("bias element", &bias, &want_bias, 0.02);
}

#[test]
fn plain_epsilon_has_std_sigma_times_row_norm() {
    tch::set_num_threads(1);
    let (weights, _) = fixture();
    let (rows, bias) = empirical_std(&weights, None, 20_000);
    let (want_rows, want_bias) = expected_std(&weights, None);
    assert_within("weight row", &rows, &want_rows, 0.02);
    assert_within("bias element", &bias, &want_bias, 0.02);
}

#[test]
fn epsilon_is_a_function_of_the_seed() {
    let (weights, _) = fixture();
    let draw = |seed| perturbation(&weights, &Noise { seed, sigma: SIGMA, factors: None });
    let (a, b, c) = (draw(7), draw(7), draw(8));
    assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
    assert!(!a[0].equal(&c[0]) && !a[1].equal(&c[1]));
}
