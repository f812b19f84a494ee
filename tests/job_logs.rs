//! Each job's event log, through a real server, real workers and the `rwp`
//! CLI: `rwp logs JOB --follow` shows, live, a worker killed mid-task and
//! its task re-issued to another worker, and ends with the job's end;
//! `rwp logs JOB --json` gives the whole log, numbered from 1.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{connect, data_dir, job, start_server, start_worker, submit, wait_for_success};
use rwp_integration_tests::local_run::small_job;
use rwp_proto::v1;
use rwp_spec::Method;

const TIMEOUT: Duration = Duration::from_secs(240);

/// Waits until one of `lines` satisfies `found`; returns its index.
fn wait_for_line(lines: &Mutex<Vec<String>>, what: &str, found: impl Fn(&str) -> bool) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(i) = lines.lock().unwrap().iter().position(|l| found(l)) {
            return i;
        }
        assert!(Instant::now() < deadline, "no line {what} in:\n{}", lines.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_worker_killed_and_its_task_reissued_live() {
    let (_tmp, dir) = data_dir();
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let url = format!("http://{addr}");
    let mut doomed = start_worker(addr, "doomed");
    let mut client = connect(addr).await;
    let id = submit(&mut client, "logged", &small_job(51, Method::MArwp, 30)).await;

    let mut follow = Command::new(binary("rwp"))
        .args(["--server", &url, "logs", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (stdout, lines) = (follow.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    wait_for_line(&lines, "submitted", |l| l.contains("submitted") && l.contains("m-arwp"));
    wait_for_line(&lines, "leasing a task to doomed", |l| l.contains(" leased ") && l.contains("worker doomed"));
    // Freeze the worker while the server counts a task as its (a lease it
    // can no longer renew), then kill it: its lease must lapse.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        doomed.signal("STOP");
        let o = Command::new(binary("rwp")).args(["--server", &url, "workers", "--json"]).output().unwrap();
        let workers: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if workers.as_array().unwrap().iter().any(|w| w["name"] == "doomed" && w["task"].is_string()) {
            break;
        }
        doomed.signal("CONT");
        assert!(Instant::now() < deadline, "the worker never held a task: {workers}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    doomed.kill_hard();
    let killed_at = job(&mut client, &id).await.step;
    assert!(killed_at < 30, "killed before the end");
    let _steady = start_worker(addr, "steady");
    let lapsed = wait_for_line(&lines, "for the lapsed lease", |l| l.contains("lease-lapsed") && l.contains("doomed"));
    // Live: the job had not ended when the follower printed it.
    let during = job(&mut client, &id).await;
    assert_eq!(during.state, v1::JobState::Running as i32, "the lapse was shown while the job ran");
    {
        let lines = lines.lock().unwrap();
        // Its task stream broke with it: the task went out again at once.
        assert!(lines[lapsed].contains("worker doomed's task stream closed while it held lease"), "{}", lines[lapsed]);
        assert!(lines[lapsed].contains("re-issued at once"), "{}", lines[lapsed]);
    }

    wait_for_success(&mut client, &id, TIMEOUT).await;
    let status = follow.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "rwp logs --follow: {status}");
    let lines = lines.lock().unwrap().clone();
    assert!(lines.last().unwrap().contains("succeeded"), "the follow ends with the end: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("evaluated") && l.contains("test accuracy")), "{lines:?}");

    // The whole log as JSON lines: numbered from 1, in order, the same entries.
    let o = Command::new(binary("rwp")).args(["--server", &url, "logs", &id, "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let entries: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>());
    assert_eq!(entries.len(), lines.len(), "the follower saw every entry once");
    assert_eq!(entries[0]["kind"], "submitted");
    let lapse = entries.iter().find(|e| e["kind"] == "lease-lapsed").expect("the lapse is kept");
    assert_eq!(lapse["worker"], "doomed");
    assert_eq!(entries.last().unwrap()["kind"], "succeeded");
}
