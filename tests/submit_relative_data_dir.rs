//! `rwp submit --data-dir` with a relative path: the CLI makes it absolute
//! against its own working directory, so the server (which runs elsewhere,
//! in a directory of its own) checks and stores the directory the user
//! meant. The same relative path sent as it is names nothing the server can
//! check: it is refused.

use std::path::Path;
use std::process::{Command, Output};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::ServerCommand;
use rwp_sdk::{Client, DatasetKind, JobSpecBuilder, Method, SdkError};

fn rwp(cwd: &Path, server: &str, args: &[&str]) -> Output {
    Command::new(binary("rwp")).current_dir(cwd).args(["--server", server]).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_data_dir_is_made_absolute_by_the_client() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("datasets");
    std::fs::create_dir_all(root.join("mnist")).unwrap();
    let server_cwd = base.join("elsewhere");
    std::fs::create_dir_all(&server_cwd).unwrap();
    let (_server, addr) = ServerCommand::new(&base.join("data"), "127.0.0.1:0")
        .extra_flags(&["--data-roots", root.to_str().unwrap()])
        .current_dir(&server_cwd)
        .start();
    let url = format!("http://{addr}");
    let client = Client::connect(url.clone()).await.unwrap();
    let job = ["submit", "--method", "sgd", "--dataset", "mnist", "--epochs", "1", "--batch-size", "128"];

    // From the directory above the datasets, and from inside one (`..`).
    for (cwd, relative, stored) in [
        (base.clone(), "datasets/mnist", root.join("mnist")),
        (root.join("mnist"), "../mnist", root.join("mnist/../mnist")),
    ] {
        let o = rwp(&cwd, &url, &[&job[..], &["--data-dir", relative]].concat());
        assert!(o.status.success(), "{relative} from {}: {}", cwd.display(), String::from_utf8_lossy(&o.stderr));
        let id = String::from_utf8(o.stdout).unwrap().trim().to_owned();
        let submitted = client.get(&id).await.unwrap();
        assert_eq!(submitted.spec.data_dir.as_deref(), Some(stored.as_path()), "{relative}");
        assert!(submitted.spec.data_dir.unwrap().is_absolute());
    }

    // What the server would have been given without the client's resolution.
    let mut spec = JobSpecBuilder::new(Method::Sgd).epochs(1).batch_size(128).build().unwrap();
    spec.dataset = DatasetKind::Mnist;
    spec.data_dir = Some("datasets/mnist".into());
    match client.submit("as-is", &spec).await {
        Err(SdkError::InvalidSpec(message)) => assert!(message.contains("data_roots"), "{message}"),
        other => panic!("a relative data_dir sent as it is: {other:?}"),
    }
    assert_eq!(client.list().await.unwrap().len(), 2);
}
