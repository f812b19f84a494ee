//! A sweep's trials are its owner's running jobs like any other: with a
//! limit of 2, three sweeps of concurrency 2 run 2 jobs at once, not 6. A
//! trial at the limit waits (its sweep keeps running) and starts as soon as
//! one of the owner's jobs ends; a plain submit at the limit is still
//! refused with RESOURCE_EXHAUSTED.

use std::time::{Duration, Instant};

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::sweeps::sigma_grid;
use rwp_integration_tests::tokens::TokensFile;
use rwp_parameter_server::domain::CallerRole;
use rwp_sdk::{Client, ClientConfig, JobSpecBuilder, JobState, Method, SdkError, SweepState};

async fn running_jobs(client: &Client) -> Vec<rwp_sdk::Job> {
    client.list().await.unwrap().into_iter().filter(|j| j.state == JobState::Running).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_trials_wait_for_a_slot_under_the_owners_running_job_limit() {
    let tokens = TokensFile::new(&[("alice", CallerRole::User)]);
    let cluster = Cluster::start_configured(
        0,
        |c| {
            c.tokens_file = Some(tokens.path.clone());
            c.max_active_jobs_per_token = 2;
        },
        |_| {},
    )
    .await;
    let mut config = ClientConfig::new(cluster.url());
    config.token = Some(tokens.token("alice").clone());
    let alice = Client::connect_with(config).await.unwrap();

    // No workers: every trial that starts stays running.
    let mut sweeps = Vec::new();
    for i in 0..3 {
        let sweep = alice.create_sweep(&format!("s{i}"), &sigma_grid(&[0.01, 0.02], 1, 2, None)).await.unwrap();
        sweeps.push(sweep.id);
    }
    let running = running_jobs(&alice).await;
    assert_eq!(running.len(), 2, "two running jobs under a limit of two: {running:#?}");
    for id in &sweeps {
        let sweep = alice.get_sweep(id).await.unwrap();
        assert_eq!(sweep.state, SweepState::Running, "a waiting trial does not fail its sweep: {:?}", sweep.error);
    }

    // A plain submit at the limit keeps its error.
    let job = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).max_updates(3).build().unwrap();
    let err = alice.submit("plain", &job).await.unwrap_err();
    assert!(
        matches!(&err, SdkError::ResourceExhausted(m) if m.starts_with("'alice' already has 2 running jobs")),
        "{err:?}"
    );

    // One running trial ends: a waiting trial takes its slot, and no more.
    alice.cancel(&running[0].id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = alice.list().await.unwrap();
        let now_running = jobs.iter().filter(|j| j.state == JobState::Running).count();
        assert!(now_running <= 2, "never more than two running: {jobs:#?}");
        if jobs.len() == 3 && now_running == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no waiting trial started after a slot freed: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running_jobs(&alice).await.len(), 2);
    for id in &sweeps {
        alice.cancel_sweep(id).await.unwrap();
    }
    cluster.shutdown().await;
}
