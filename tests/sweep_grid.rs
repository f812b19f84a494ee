//! A grid sweep over σ on the built-in dataset, through the service: a real
//! parameter server and two real workers (separate processes), the SDK to
//! create it and the `rwp` CLI to read its table, write the best trial as a
//! job file and plot it. Every trial runs, at most `concurrency` at a time,
//! and the best is the trial with the highest validation accuracy.

use std::process::Command;
use std::time::Duration;

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{data_dir, start_worker, ServerCommand};
use rwp_integration_tests::sweeps::{sigma_grid, wait_for_sweep, SWEEP_SERVER_FLAGS};
use rwp_sdk::{Client, JobFile, JobState, SweepState};

const TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigma_grid_runs_every_trial_and_picks_the_best_by_validation_accuracy() {
    let (tmp, dir) = data_dir();
    let (_server, addr) = ServerCommand::new(&dir, "127.0.0.1:0").flags(SWEEP_SERVER_FLAGS).start();
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let client = Client::connect(format!("http://{addr}")).await.unwrap();

    let sigmas = [0.003, 0.03, 0.3];
    let spec = sigma_grid(&sigmas, 2, 2, None);
    let created = client.create_sweep("sigma-grid", &spec).await.unwrap();
    assert_eq!(created.trials.len(), 3);
    let running = created.trials.iter().filter(|t| t.job.is_some()).count();
    assert_eq!(running, 2, "two trials start at once, the third waits for a slot");

    let sweep = wait_for_sweep(&client, &created.id, TIMEOUT).await;
    assert_eq!(sweep.state, SweepState::Succeeded, "{:?}", sweep.error);
    let mut recorded = Vec::new();
    for (trial, sigma) in sweep.trials.iter().zip(sigmas) {
        let job = trial.job.as_ref().expect("every trial ran");
        assert_eq!(job.state, JobState::Succeeded, "trial {}: {:?}", trial.index, job.error);
        assert_eq!(job.spec.sigma, sigma);
        assert_eq!(job.sweep, Some((sweep.id.clone(), trial.index)), "the job is tagged with its sweep");
        assert_eq!(job.step, job.total_updates);
        // The trial's own record of its last evaluation, through the job API.
        let evaluation = client.get(&job.id).await.unwrap().last_evaluation.expect("evaluated");
        assert_eq!(evaluation.epoch, 2);
        let validation = evaluation.validation_accuracy.expect("a validation accuracy");
        recorded.push((trial.index, validation, evaluation.test_accuracy));
    }
    let best = recorded.iter().max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0))).unwrap();
    assert_eq!(sweep.best_trial, Some(best.0), "the best by validation accuracy: {recorded:?}");
    // Trials are ordinary jobs, listed with the others.
    let listed = client.list().await.unwrap().into_iter().filter(|j| j.sweep.is_some()).count();
    assert_eq!(listed, 3);

    // The CLI: the table sorted by validation accuracy, the best as a job file, the plots.
    let rwp = |args: &[&str]| {
        let o = Command::new(binary("rwp")).arg("--server").arg(addr.to_string()).args(args).output().unwrap();
        assert!(o.status.success(), "rwp {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let best_file = tmp.path().join("best.toml");
    let table = rwp(&["sweep", "get", &sweep.id, "--best-job-file", best_file.to_str().unwrap()]);
    let ranked: Vec<u32> = table
        .lines()
        .skip_while(|l| !l.starts_with("RANK"))
        .skip(1)
        .take(3)
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    let mut by_validation = recorded.clone();
    by_validation.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(ranked, by_validation.iter().map(|r| r.0).collect::<Vec<_>>(), "{table}");
    let (_, best_spec) = JobFile::read(&best_file).unwrap().into_spec().unwrap();
    assert_eq!(&best_spec, &sweep.trials[best.0 as usize].job.as_ref().unwrap().spec);
    let plots = tmp.path().join("plots");
    rwp(&["sweep", "plot", &sweep.id, "-o", plots.to_str().unwrap()]);
    for file in ["accuracy_vs_sigma.png", "curves.png"] {
        assert!(std::fs::metadata(plots.join(file)).unwrap().len() > 1000, "{file} written");
    }
    println!("{table}");
}
