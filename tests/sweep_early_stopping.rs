//! Early stopping through the service: in a σ sweep run one trial at a
//! time, a sane σ runs to the end, a σ far too large is stopped at the first
//! rung by successive halving (its validation accuracy is below the rung's
//! cut), and one so large that its gradients overflow stops at once. Stopped
//! trials end in their own state, with the reason, and keep their metrics.

use std::time::Duration;

use rwp_integration_tests::cluster::{data_dir, start_worker, ServerCommand};
use rwp_integration_tests::sweeps::{sigma_grid, wait_for_sweep, SWEEP_SERVER_FLAGS};
use rwp_sdk::{Client, EarlyStopping, JobEvent, JobState, SweepState};
use tokio_stream::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigma_far_too_large_is_stopped_early_while_a_sane_one_runs_on() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = ServerCommand::new(&dir, "127.0.0.1:0").flags(SWEEP_SERVER_FLAGS).start();
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let client = Client::connect(format!("http://{addr}")).await.unwrap();

    let rungs = EarlyStopping { rungs: vec![1], reduction_factor: 2.0, min_validation_accuracy: None };
    let spec = sigma_grid(&[0.01, 1.0, 100.0], 4, 1, Some(rungs));
    let sweep = client.create_sweep("early-stopping", &spec).await.unwrap();
    let sweep = wait_for_sweep(&client, &sweep.id, TIMEOUT).await;
    assert_eq!(sweep.state, SweepState::Succeeded, "{:?}", sweep.error);
    let jobs: Vec<_> = sweep.trials.iter().map(|t| t.job.clone().expect("every trial ran")).collect();

    let sane = &jobs[0];
    assert_eq!(sane.state, JobState::Succeeded, "{:?}", sane.error);
    assert_eq!(sane.step, sane.total_updates, "the sane trial ran all its updates");
    let sane_validation = sane.last_evaluation.as_ref().unwrap().validation_accuracy.unwrap();

    // σ = 1: finite but hopeless; the second trial at the rung with η = 2 must be the best to go on.
    let large = &jobs[1];
    assert_eq!(large.state, JobState::Stopped, "{:?}", large.error);
    let reason = large.error.as_deref().unwrap();
    assert!(reason.starts_with("stopped early at rung epoch 1: validation accuracy"), "{reason}");
    assert!(reason.contains("below the rung's cut"), "{reason}");
    assert!(large.step >= large.updates_per_epoch && large.step < large.total_updates, "stopped at the rung");
    let at_rung = large.last_evaluation.as_ref().expect("its evaluation is kept");
    assert_eq!(at_rung.epoch, 1);
    assert!(at_rung.validation_accuracy.unwrap() < 0.2, "near chance: {at_rung:?}");
    assert!(at_rung.validation_accuracy.unwrap() < sane_validation);
    // Its metrics stay: the whole history up to the stop replays.
    let mut steps = 0;
    let mut events = client.watch(&large.id, 0).await.unwrap();
    while let Some(event) = events.next().await {
        match event.unwrap() {
            JobEvent::Step(_) => steps += 1,
            JobEvent::State(job) if job.state.is_terminal() => break,
            _ => {}
        }
    }
    assert_eq!(steps, large.step, "every applied update's metrics are kept");

    // σ = 100: the gradients overflow in the first epoch; the trial stops there.
    let huge = &jobs[2];
    assert_eq!(huge.state, JobState::Stopped, "{:?}", huge.error);
    let reason = huge.error.as_deref().unwrap();
    assert!(reason.contains("non-finite gradient"), "{reason}");
    assert!(huge.step < huge.total_updates);

    assert_eq!(sweep.best_trial, Some(0), "the sane σ is the best");
}
