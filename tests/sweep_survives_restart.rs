//! A sweep survives its server: the real `rwp-server` process is killed
//! with SIGKILL while trials run and others wait, started again on the same
//! data directory, and the sweep completes with every trial accounted for
//! once: the running ones resume from their checkpoints (bit-identical to
//! the local trainer, validation split included), the waiting ones start.

use std::time::{Duration, Instant};

use rwp_integration_tests::cluster::{data_dir, export, start_worker, ServerCommand};
use rwp_integration_tests::local_run::assert_bit_identical;
use rwp_integration_tests::sweeps::{sigma_grid, wait_for_sweep, SWEEP_SERVER_FLAGS};
use rwp_sdk::{Client, JobState, SweepState};

const TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_completes_after_its_server_is_killed_mid_way() {
    let (_tmp, dir) = data_dir();
    let command = ServerCommand::new(&dir, "127.0.0.1:0").flags(SWEEP_SERVER_FLAGS);
    let (mut server, addr) = command.clone().start();
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let client = Client::connect(format!("http://{addr}")).await.unwrap();

    let spec = sigma_grid(&[0.005, 0.01, 0.02, 0.04], 3, 2, None);
    let id = client.create_sweep("restart", &spec).await.unwrap().id;
    // Kill it once the first trial is a few updates in and the last has not started.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let sweep = client.get_sweep(&id).await.unwrap();
        let first = sweep.trials[0].job.as_ref().map_or(0, |j| j.step);
        if first >= 4 {
            assert!(sweep.trials[3].job.is_none(), "the last trial still waits");
            break;
        }
        assert!(Instant::now() < deadline, "the first trial does not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill_hard();

    let (_server, again) = command.listen_on(&addr.to_string()).start();
    assert_eq!(again, addr);
    let client = Client::connect(format!("http://{addr}")).await.unwrap();
    let resumed = client.get_sweep(&id).await.unwrap();
    assert_eq!(resumed.state, SweepState::Running, "the sweep is still running after the restart");
    let sweep = wait_for_sweep(&client, &id, TIMEOUT).await;
    assert_eq!(sweep.state, SweepState::Succeeded, "{:?}", sweep.error);
    assert_eq!(sweep.trials.len(), 4);
    for trial in &sweep.trials {
        let job = trial.job.as_ref().expect("every trial ran");
        assert_eq!(job.state, JobState::Succeeded, "trial {}: {:?}", trial.index, job.error);
        assert_eq!(job.step, job.total_updates);
        assert!(job.last_evaluation.as_ref().and_then(|e| e.validation_accuracy).is_some());
    }
    // Each trial once: no trial was started twice across the restart.
    let trial_jobs: Vec<_> = client.list().await.unwrap().into_iter().filter(|j| j.sweep.is_some()).collect();
    assert_eq!(trial_jobs.len(), 4, "one job per trial: {trial_jobs:#?}");
    let mut indices: Vec<u32> = trial_jobs.iter().map(|j| j.sweep.as_ref().unwrap().1).collect();
    indices.sort_unstable();
    assert_eq!(indices, vec![0, 1, 2, 3]);
    assert!(sweep.best_trial.is_some());
    // The trial the kill interrupted ends where an uninterrupted run would.
    let first = sweep.trials[0].job.as_ref().unwrap();
    let mut raw = rwp_integration_tests::cluster::connect(addr).await;
    assert_bit_identical("trial 0 across the restart", &export(&mut raw, &first.id).await, &first.spec);
}
