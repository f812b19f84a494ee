//! Sweeps for the tests: a σ grid on the built-in dataset with the MLP, and
//! waiting for a sweep to end.

use std::time::{Duration, Instant};

use rwp_sdk::{Client, EarlyStopping, ParamValue, Search, SearchMode, SearchParam, Sweep, SweepSpec};
use rwp_spec::{JobSpec, Method, ModelKind};

/// Server flags for sweeps: the tests' defaults ([`crate::cluster::SERVER_FLAGS`]),
/// with an evaluation (test and validation) after every epoch so that rungs
/// are judged.
pub const SWEEP_SERVER_FLAGS: &[&str] =
    &["--lease-timeout-ms", "1500", "--checkpoint-every", "2", "--torch-threads", "1", "--eval-every-epochs", "1"];

/// The base of the tests' sweeps: m-ARWP, MLP, built-in dataset, batch 64,
/// 20% held out for validation (800 training samples: 12 updates an epoch).
#[must_use]
pub fn base(epochs: u32) -> JobSpec {
    let mut spec = JobSpec::reference(Method::MArwp);
    spec.model = ModelKind::Mlp;
    spec.batch_size = 64;
    spec.epochs = epochs;
    spec.augment = false;
    spec.validation_fraction = 0.2;
    spec
}

/// A grid over σ.
#[must_use]
pub fn sigma_grid(sigmas: &[f64], epochs: u32, concurrency: u32, early_stopping: Option<EarlyStopping>) -> SweepSpec {
    SweepSpec {
        base: base(epochs),
        search: Search {
            mode: SearchMode::Grid,
            n_trials: None,
            seed: 0,
            params: vec![SearchParam {
                field: "sigma".into(),
                values: sigmas.iter().map(|&s| ParamValue::Number(s)).collect(),
                distribution: None,
                low: None,
                high: None,
            }],
        },
        concurrency,
        early_stopping,
    }
}

/// Polls until the sweep and all its trials have ended.
pub async fn wait_for_sweep(client: &Client, id: &str, timeout: Duration) -> Sweep {
    let deadline = Instant::now() + timeout;
    loop {
        let sweep = client.get_sweep(id).await.expect("the sweep exists");
        if sweep.is_finished() {
            return sweep;
        }
        assert!(Instant::now() < deadline, "sweep {id} not finished in time: {sweep:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
