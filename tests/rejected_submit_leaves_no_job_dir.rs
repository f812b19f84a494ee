//! A submit the server refuses after it made the job's directory (the
//! engine would not start: the model is over max_model_parameters) leaves
//! no directory behind under `<data_dir>/jobs`, and no job; an accepted one
//! keeps its directory.

use std::path::Path;
use std::process::Command;

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::ServerCommand;
use rwp_sdk::{Client, JobSpecBuilder, Method, ModelKind, SdkError};

fn job_dirs(data: &Path) -> Vec<String> {
    match std::fs::read_dir(data.join("jobs")) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_submit_leaves_no_job_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // small-cnn (29,738 parameters) fits; mlp on the built-in set does not.
    let (_server, addr) =
        ServerCommand::new(&data, "127.0.0.1:0").extra_flags(&["--max-model-parameters", "30000"]).start();
    let url = format!("http://{addr}");
    let client = Client::connect(url.clone()).await.unwrap();

    let big = JobSpecBuilder::new(Method::Sgd).model(ModelKind::Mlp).epochs(1).batch_size(128).build().unwrap();
    for _ in 0..2 {
        match client.submit("too-big", &big).await {
            Err(SdkError::InvalidSpec(message)) => assert!(message.contains("max_model_parameters"), "{message}"),
            other => panic!("an mlp over the limit: {other:?}"),
        }
    }
    let o = Command::new(binary("rwp"))
        .args(["--server", &url, "submit", "--method", "sgd", "--model", "mlp", "--epochs", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("max_model_parameters"));
    assert_eq!(job_dirs(&data), Vec::<String>::new(), "refused jobs left their directories");
    assert!(client.list().await.unwrap().is_empty());

    let fits = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).build().unwrap();
    let job = client.submit("fits", &fits).await.unwrap();
    assert_eq!(job_dirs(&data), vec![job.id.clone()], "an accepted job keeps its directory");
}
