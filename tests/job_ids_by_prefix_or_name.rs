//! Wherever the CLI takes a job (get, watch, cancel, export, plot) it takes
//! the job's id, a unique prefix of it (with or without `job-`) or its
//! name, resolved on the client against the jobs the caller may see; a
//! prefix or name that fits several jobs is a usage error listing them, one
//! that fits none says so.

use std::process::{Command, Output};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::start_server;
use rwp_sdk::{Client, JobSpecBuilder, JobState, Method};

fn one_error_line(o: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_named_by_id_prefix_or_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, addr) = start_server(&tmp.path().join("data"), "127.0.0.1:0");
    let url = format!("http://{addr}");
    let rwp = |args: &[&str]| Command::new(binary("rwp")).args(["--server", &url]).args(args).output().unwrap();
    let client = Client::connect(url.clone()).await.unwrap();
    // No workers: the jobs stay where they are.
    let spec = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).build().unwrap();
    let alpha = client.submit("alpha", &spec).await.unwrap().id;
    let twins = [client.submit("twin", &spec).await.unwrap().id, client.submit("twin", &spec).await.unwrap().id];
    let ids = [alpha.clone(), twins[0].clone(), twins[1].clone()];
    for id in &ids {
        assert!(id.len() == 16 && id.starts_with("job-"), "the id format the help texts show: {id}");
    }
    // The shortest prefix of alpha's hex digits no other id starts with.
    let hex = alpha.strip_prefix("job-").unwrap();
    let unique = (1..=hex.len())
        .map(|n| &hex[..n])
        .find(|p| ids.iter().filter(|id| id.strip_prefix("job-").unwrap().starts_with(p)).count() == 1)
        .unwrap();

    let get_id = |given: &str| {
        let o = rwp(&["get", given, "--json"]);
        assert!(o.status.success(), "rwp get {given}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(get_id(&alpha), alpha);
    assert_eq!(get_id(unique), alpha, "a unique prefix of the hex digits");
    assert_eq!(get_id(&format!("job-{unique}")), alpha, "a unique prefix of the id");
    assert_eq!(get_id("alpha"), alpha, "the name");

    // Ambiguous: both twins, oldest first, then every job.
    let line = one_error_line(&rwp(&["get", "twin"]), 2);
    assert_eq!(
        line,
        format!(
            "error: 'twin' matches 2 jobs: {} (name 'twin', running), {} (name 'twin', running); \
             give more of the id",
            twins[0], twins[1]
        )
    );
    let line = one_error_line(&rwp(&["watch", "job-"]), 2);
    assert!(line.starts_with("error: 'job-' matches 3 jobs: ") && ids.iter().all(|id| line.contains(id)), "{line}");
    // Unknown.
    let line = one_error_line(&rwp(&["cancel", "nope"]), 1);
    assert_eq!(
        line,
        "error: job nope not found: no job you may see has it as its id, an id prefix or its name \
         (rwp list shows them)"
    );

    // cancel, watch and export by name and prefix.
    let o = rwp(&["cancel", "alpha"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("cancelled job {alpha} ")));
    assert_eq!(client.get(&alpha).await.unwrap().state, JobState::Cancelled);
    assert_eq!(client.get(&twins[0]).await.unwrap().state, JobState::Running, "only alpha");
    let o = rwp(&["watch", unique]);
    assert_eq!(o.status.code(), Some(3), "a cancelled job: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("job {alpha} cancelled")));
    let weights = tmp.path().join("alpha.safetensors");
    let o = rwp(&["export", "alpha", "-o", weights.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&format!("exported job {alpha} at step 0")));
    assert!(std::fs::metadata(&weights).unwrap().len() > 0);
}
