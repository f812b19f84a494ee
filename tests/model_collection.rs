//! Model files no running job needs are collected: at start and every
//! `model_gc_interval_ms`, a stored file that no running or paused job
//! names and whose last upload (for a file from before upload records: its
//! modification) is older than `unreferenced_model_retention_ms` is deleted
//! with its records, one log line per file. A real server with small
//! settings.

use std::path::Path;
use std::time::{Duration, Instant};

use rwp_integration_tests::cluster::{data_dir, ServerCommand};
use rwp_integration_tests::models::{client_as, mlp, script_job, stored_files};

/// A file in the server's model store that no upload recorded, as a server
/// from before upload records left it; returns its digest.
fn leftover(data: &Path, bytes: &[u8], age: Option<&str>) -> String {
    let sha256 = rwp_spec::sha256_hex(bytes);
    let path = data.join("models").join(format!("{sha256}.pt"));
    std::fs::write(&path, bytes).unwrap();
    if let Some(age) = age {
        let status = std::process::Command::new("touch").arg("-d").arg(age).arg(&path).status().unwrap();
        assert!(status.success());
    }
    sha256
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_files_are_collected_after_the_retention_and_used_ones_kept() {
    let (_tmp, data) = data_dir();
    std::fs::create_dir_all(data.join("models")).unwrap();
    let old = leftover(&data, b"from an older server, untouched for days", Some("2 days ago"));
    let recent = leftover(&data, b"from an older server, modified just now", None);
    let log = data.parent().unwrap().join("server.log");
    let (_server, addr) = ServerCommand::new(&data, "127.0.0.1:0")
        .extra_flags(&["--model-gc-interval-ms", "200", "--unreferenced-model-retention-ms", "5000"])
        .env("RUST_LOG", "info")
        .log_to(&log)
        .start();
    let url = format!("http://{addr}");
    let client = client_as(&url, None, "").await;

    // The old file goes at start; the recent one is kept for now.
    wait_until("the old file's collection", Duration::from_secs(10), || !stored_files(&data).contains(&old)).await;
    assert!(stored_files(&data).contains(&recent));

    // Two uploads; a job (no workers: it keeps running) names one.
    let tmp = tempfile::tempdir().unwrap();
    let used = client.upload_model(&mlp(tmp.path(), 10)).await.unwrap();
    let job = client.submit("keeps it", &script_job(&used)).await.unwrap();
    let unused = client.upload_model(&mlp(tmp.path(), 5)).await.unwrap();
    wait_until("the unused files' collection", Duration::from_secs(30), || {
        let files = stored_files(&data);
        !files.contains(&unused.sha256) && !files.contains(&recent)
    })
    .await;
    assert_eq!(stored_files(&data), std::slice::from_ref(&used.sha256), "the running job's file is kept");
    let listed: Vec<_> = client.list_models().await.unwrap().into_iter().map(|m| m.sha256).collect();
    assert_eq!(listed, std::slice::from_ref(&used.sha256), "the collected file's record went with it");

    // Once its job ended, the used file is collected too (its upload is old by now).
    client.cancel(&job.id).await.unwrap();
    wait_until("the ended job's file's collection", Duration::from_secs(10), || stored_files(&data).is_empty()).await;
    assert_eq!(client.list_models().await.unwrap(), []);
    let text = std::fs::read_to_string(&log).unwrap();
    for sha256 in [&old, &recent, &unused.sha256, &used.sha256] {
        let lines =
            text.lines().filter(|l| l.contains("unreferenced model file removed") && l.contains(sha256.as_str()));
        assert_eq!(lines.count(), 1, "one log line for {sha256}:\n{text}");
    }
}
