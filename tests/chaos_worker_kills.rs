//! Workers SIGKILLed at random every few seconds while a job runs, each
//! replaced by a fresh process: the job completes, bit-identical to the
//! local trainer. A kill comes after a random wait or a random number of
//! updates, whichever is first, so a fast machine sees as many kills as a
//! slow one. Waits, update counts and victims come from a seeded generator;
//! the seed is printed, and `RWP_CHAOS_SEED` replays a run.

use std::time::{Duration, Instant};

use rwp_integration_tests::cluster::{chaos_long, connect, data_dir, export, job, start_server, start_worker, submit};
use rwp_integration_tests::local_run::{assert_bit_identical, small_job};
use rwp_proto::v1::JobState;
use rwp_spec::rng::derive_seed;
use rwp_spec::Method;

const TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_worker_kills_with_replacements() {
    let (updates, workers, min_gap_ms, max_gap_ms) =
        if chaos_long() { (150, 4, 1000, 4000) } else { (30, 3, 700, 1800) };
    let seed = std::env::var("RWP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    println!("chaos: worker kills with RWP_CHAOS_SEED={seed}");
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let mut pool: Vec<_> = (0..workers).map(|i| start_worker(addr, &format!("w{i}"))).collect();
    let mut client = connect(addr).await;
    let spec = small_job(51, Method::MArwp, updates);
    let id = submit(&mut client, "worker-kills", &spec).await;

    let started = Instant::now();
    let mut kills = 0u64;
    let mut spawned = workers as u64;
    let mut last_step = 0;
    loop {
        let draw = derive_seed(seed, &[kills]);
        let gap = min_gap_ms + draw % (max_gap_ms - min_gap_ms);
        let wake = Instant::now() + Duration::from_millis(gap);
        let kill_at_step = last_step + 2 + (draw >> 16) % 4;
        let state = loop {
            let j = job(&mut client, &id).await;
            if j.state != JobState::Running as i32 || Instant::now() >= wake || j.step >= kill_at_step {
                break j;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        if state.state != JobState::Running as i32 {
            assert_eq!(state.state, JobState::Succeeded as i32, "job ended as {:?}: {}", state.state(), state.error);
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "job stuck at step {}", state.step);
        last_step = state.step;
        let victim = (draw >> 32) as usize % pool.len();
        pool[victim].kill_hard();
        kills += 1;
        pool[victim] = start_worker(addr, &format!("w{spawned}"));
        spawned += 1;
    }
    assert!(kills >= 2, "at least two workers died mid-job (seed {seed})");
    assert_bit_identical("random worker kills", &export(&mut client, &id).await, &spec);
    println!(
        "chaos: {kills} workers SIGKILLed and replaced over {:.1} s; {updates} updates bit-identical",
        started.elapsed().as_secs_f64()
    );
}
