//! The workers as users see them, through a real server, real workers and
//! the `rwp` CLI: `rwp workers` lists each connected worker with its name,
//! device, current job and task and the tasks it returned, and a killed one
//! as lost; a job that waits because no worker is connected says so (`rwp
//! get`, `rwp watch`, its log) and the wait is not counted in its training
//! time.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{connect, data_dir, start_server, start_worker, submit, wait_for_success};
use rwp_integration_tests::local_run::small_job;
use rwp_spec::Method;

const TIMEOUT: Duration = Duration::from_secs(240);

fn rwp(url: &str, args: &[&str]) -> Output {
    Command::new(binary("rwp")).args(["--server", url]).args(args).output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "rwp failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn find<'a>(workers: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    workers.as_array().unwrap().iter().find(|w| w["name"] == name)
}

fn by_name<'a>(workers: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    find(workers, name).unwrap_or_else(|| panic!("no {name}: {workers}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rwp_workers_lists_two_workers_with_their_tasks_and_a_lost_one() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let url = format!("http://{addr}");
    let mut first = start_worker(addr, "first");
    let _second = start_worker(addr, "second");
    let mut client = connect(addr).await;
    let id = submit(&mut client, "listed", &small_job(61, Method::MArwp, 400)).await;

    // Both busy on the job at some point, each with its device and a task.
    let deadline = Instant::now() + TIMEOUT;
    let busy = loop {
        let workers = json(&rwp(&url, &["workers", "--json"]));
        let both = ["first", "second"].iter().all(|n| find(&workers, n).is_some_and(|w| w["job"] == id.as_str()));
        if both {
            break workers;
        }
        assert!(Instant::now() < deadline, "the workers never both computed the job: {workers}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for name in ["first", "second"] {
        let w = by_name(&busy, name);
        assert_eq!((w["device"].as_str(), w["connected"].as_bool()), (Some("cpu"), Some(true)), "{w}");
        let task = w["task"].as_str().unwrap();
        assert!(task.starts_with("update ") && task.contains(" shard "), "{task}");
    }
    let table = String::from_utf8(rwp(&url, &["workers"]).stdout).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("first ") && l.contains(" cpu ") && l.contains("connected")),
        "{table}"
    );

    first.kill_hard();
    // Lost once it has not been heard from within the lease timeout (1.5 s).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let workers = json(&rwp(&url, &["workers", "--json"]));
        let (lost, second) = (by_name(&workers, "first"), by_name(&workers, "second"));
        if lost["connected"] == false {
            assert!(second["tasks_done"].as_u64().unwrap() > 0, "{second}");
            assert_eq!(second["connected"], true);
            break;
        }
        assert!(Instant::now() < deadline, "the killed worker stays connected: {workers}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(String::from_utf8(rwp(&url, &["workers"]).stdout)
        .unwrap()
        .lines()
        .any(|l| l.starts_with("first ") && l.contains("lost")));
    rwp(&url, &["cancel", &id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_workers_says_it_waits_and_the_wait_is_not_training_time() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let url = format!("http://{addr}");
    let mut client = connect(addr).await;
    let started = Instant::now();
    let id = submit(&mut client, "waiting", &small_job(62, Method::Sgd, 4)).await;

    let watch = Command::new(binary("rwp"))
        .args(["--server", &url, "watch", &id, "--interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let job = json(&rwp(&url, &["get", &id, "--json"]));
        if job["waiting"].as_str().is_some() {
            let why = job["waiting"].as_str().unwrap();
            assert!(why.starts_with("no worker is connected"), "{why}");
            break;
        }
        assert!(Instant::now() < deadline, "the job never said it waits: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = String::from_utf8(rwp(&url, &["get", &id]).stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("waiting") && l.contains("no worker is connected")), "{text}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waited = started.elapsed();
    let _worker = start_worker(addr, "late");
    let ended = wait_for_success(&mut client, &id, TIMEOUT).await;
    let elapsed = started.elapsed();
    let trained = ended.last_step.as_ref().unwrap().wall_time_s;
    assert!(
        trained < (elapsed - waited).as_secs_f64() + 0.5,
        "training time {trained:.2} s includes the {:.2} s without workers (all: {:.2} s)",
        waited.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    let out = watch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("waits: no worker is connected"), "rwp watch said: {stderr}");
    let log = String::from_utf8(rwp(&url, &["logs", &id]).stdout).unwrap();
    let kinds: Vec<&str> = log.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let (waits, back) = (
        kinds.iter().position(|k| *k == "no-workers").expect("the wait is logged"),
        kinds.iter().position(|k| *k == "workers-back").expect("the end of the wait is logged"),
    );
    assert!(waits < back && kinds.last() == Some(&"succeeded"), "{log}");
}
