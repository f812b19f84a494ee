//! The parameter server killed (SIGKILL) at the worst moments: while an
//! update is being aggregated, and half-way through writing a checkpoint.
//! Restarted from its data directory on the same port, it resumes from its
//! last good checkpoint and the job ends bit-identical to the local trainer.
//! The moments are hit exactly with the server's fault points
//! (`RWP_TEST_FAULTS`, see rwp_core::faults).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rwp_integration_tests::cluster::{
    chaos_long, connect, data_dir, export, job, start_worker, submit, wait_for_success, Proc, ServerCommand,
};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_spec::Method;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Waits for the process to die of SIGKILL.
fn wait_killed(server: &mut Proc) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert_eq!(status.signal(), Some(9), "the server died of its injected SIGKILL, not {status:?}");
            return;
        }
        assert!(Instant::now() < deadline, "the fault point was never reached");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a job on a server that kills itself at `fault`, restarts it, and
/// checks the result; returns the job's checkpoint folder.
async fn killed_at(fault: &str, seed: u64, inspect_after_death: impl FnOnce(&Path)) {
    let updates = if chaos_long() { 60 } else { 16 };
    let (_tmp, dir) = data_dir();
    let command = ServerCommand::new(&dir, "127.0.0.1:0");
    let (mut server, addr) = command.clone().env("RWP_TEST_FAULTS", fault).start();
    let _workers: Vec<_> = (1..=2).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let spec = small_job(seed, Method::MArwp, updates);
    let id = submit(&mut client, "server-killed", &spec).await;
    wait_killed(&mut server);
    let job_dir = dir.join("jobs").join(&id);
    inspect_after_death(&job_dir);

    let (_server, again) = command.listen_on(&addr.to_string()).start();
    assert_eq!(again, addr);
    let mut client = connect(addr).await;
    let resumed = job(&mut client, &id).await;
    assert!(resumed.step < updates, "resumed mid-run (step {})", resumed.step);
    wait_for_success(&mut client, &id, TIMEOUT).await;
    assert_bit_identical(&format!("server killed at {fault}"), &export(&mut client, &id).await, &spec);
    assert!(!job_dir.join("checkpoint.safetensors.tmp").exists(), "the half-written file was cleared");
    println!("chaos: server SIGKILLed at {fault}, restarted: {updates} updates bit-identical to the local trainer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_during_aggregation() {
    // The sixth update: its results are in, it is not applied yet.
    killed_at("aggregation:kill:after=5", 21, |job_dir| {
        assert!(job_dir.join("checkpoint.safetensors").exists(), "checkpoints were written before");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_while_writing_a_checkpoint() {
    // The third checkpoint (after update 6) is half written when the server dies.
    killed_at("checkpoint-write:kill:after=2", 22, |job_dir| {
        let tmp = job_dir.join("checkpoint.safetensors.tmp");
        let latest = job_dir.join("checkpoint.safetensors");
        let (half, full) = (std::fs::metadata(&tmp).unwrap().len(), std::fs::metadata(&latest).unwrap().len());
        assert!(half > 0 && half < full, "a half-written checkpoint ({half} of {full} bytes) is left");
        let intact = rwp_core::checkpoint::verify(&std::fs::read(&latest).unwrap());
        assert_eq!(intact, Ok(4), "the latest complete checkpoint is untouched");
    })
    .await;
}
