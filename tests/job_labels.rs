//! Labels given at submit (`rwp submit --label KEY=VALUE`) are kept with the
//! job, shown by `rwp list` (LABELS) and `rwp get`, and filter `rwp list
//! --label`; labels the rules refuse are refused by the CLI and, for other
//! clients, by the server, naming what is wrong.

use std::process::{Command, Output};

use rwp_integration_tests::binary;
use rwp_integration_tests::cluster::{connect, data_dir, start_server};
use rwp_proto::v1;
use rwp_spec::{JobSpec, Method};
use tonic::Code;

fn rwp(url: &str, args: &[&str]) -> Output {
    Command::new(binary("rwp")).args(["--server", url]).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "rwp failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_kept_shown_and_filter_the_list() {
    let (_tmp, dir) = data_dir();
    // No workers: the jobs wait, running.
    let (_server, addr) = start_server(&dir, "127.0.0.1:0");
    let url = format!("http://{addr}");
    let submit = |name: &str, labels: &[&str]| {
        let mut args = vec!["submit", "--method", "sgd", "--epochs", "1", "--name", name];
        for label in labels {
            args.extend(["--label", label]);
        }
        stdout(&rwp(&url, &args)).trim().to_owned()
    };
    let tuned = submit("tuned", &["team=vision", "stage=tune"]);
    let final_run = submit("final", &["team=vision", "stage=final"]);
    let other = submit("other", &["team=nlp"]);
    let bare = submit("bare", &[]);

    let table = stdout(&rwp(&url, &["list"]));
    let header = table.lines().next().unwrap();
    assert!(header.trim_end().ends_with("LABELS"), "{table}");
    let row = |id: &str| table.lines().find(|l| l.starts_with(id)).unwrap().to_owned();
    assert!(row(&tuned).trim_end().ends_with("stage=tune,team=vision"), "{table}");
    assert!(row(&bare).trim_end().ends_with(" -"), "{table}");

    let listed = |filters: &[&str]| -> Vec<String> {
        let mut args = vec!["list", "--json"];
        for f in filters {
            args.extend(["--label", f]);
        }
        let jobs: Vec<serde_json::Value> = serde_json::from_str(&stdout(&rwp(&url, &args))).unwrap();
        jobs.iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(listed(&["team=vision"]), [tuned.clone(), final_run.clone()]);
    assert_eq!(listed(&["team=vision", "stage=final"]), [final_run]);
    assert_eq!(listed(&["team=nlp"]), [other]);
    assert_eq!(listed(&["team=audio"]), Vec::<String>::new());
    assert_eq!(listed(&[]).len(), 4);

    let shown: serde_json::Value = serde_json::from_str(&stdout(&rwp(&url, &["get", &tuned, "--json"]))).unwrap();
    assert_eq!(shown["labels"], serde_json::json!({"stage": "tune", "team": "vision"}));
    let detail = stdout(&rwp(&url, &["get", &tuned]));
    let line = detail.lines().find(|l| l.starts_with("labels ")).unwrap_or_else(|| panic!("{detail}"));
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["labels", "stage=tune,team=vision"]);

    // The CLI refuses a malformed label before it connects.
    let o = rwp(&url, &["submit", "--method", "sgd", "--label", "team"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("'team' is not KEY=VALUE"));
    let o = rwp(&url, &["list", "--label=-x=1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("must start with a letter or digit"));

    // Other clients meet the same rules on the server.
    let mut client = connect(addr).await;
    let spec = JobSpec::reference(Method::Sgd);
    let request = |labels: &[(&str, &str)]| v1::SubmitJobRequest {
        name: "refused".into(),
        spec: Some((&spec).into()),
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Default::default()
    };
    let err = client.submit_job(request(&[("team", "a\u{1b}[2Jb")])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "invalid labels: the value of label 'team' holds a control character");
    let err = client.submit_job(request(&[("bad key", "x")])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("label key 'bad key' may hold only letters"), "{}", err.message());
}
