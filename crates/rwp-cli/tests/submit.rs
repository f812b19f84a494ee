//! `rwp submit` against a scripted server: only the job id on stdout, the
//! spec built from the job file and the flags, and `--watch`.

mod common;

use common::mock::MockServer;
use common::{rwp, stderr, stdout, write_file};
use rwp_sdk::{JobSpec, LrSchedule, Method, SigmaSchedule};

#[test]
fn flags_alone_submit_the_methods_reference_spec() {
    let server = MockServer::start(vec![]);
    let o = rwp(&["--server", &server.url, "submit", "--method", "m-arwp", "--epochs", "3", "--name", "quick"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "j-000001\n", "only the id on stdout");
    let submitted = &server.recorded.lock().unwrap().submitted;
    let mut expected = JobSpec::reference(Method::MArwp);
    expected.epochs = 3;
    assert_eq!(submitted.as_slice(), [("quick".to_owned(), expected)]);
}

#[test]
fn flags_override_the_job_file() {
    let server = MockServer::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "cifar.toml",
        "name = \"from-file\"\nmethod = \"m-rwp\"\ndataset = \"cifar10\"\ndata_dir = \"/data/c10\"\n\
         epochs = 200\nsigma = 0.02\nlr_schedule = { kind = \"step\", milestones = [60, 120], gamma = 0.2 }\n",
    );
    let o = rwp(&["--server", &server.url, "submit", &path, "--epochs", "2", "--perturbed-shards", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "j-000001\n");
    let recorded = server.recorded.lock().unwrap();
    let (name, spec) = &recorded.submitted[0];
    assert_eq!(name, "from-file");
    assert_eq!((spec.method, spec.epochs, spec.sigma, spec.perturbed_shards), (Method::MRwp, 2, 0.02, 2));
    assert_eq!(spec.data_dir.as_deref(), Some(std::path::Path::new("/data/c10")));
}

/// `--lr-schedule` and `--sigma-schedule` take the names job files and
/// rwp-train use, with their settings; over a job file they change its schedule.
#[test]
fn schedule_flags_set_the_schedules_by_name() {
    let server = MockServer::start(vec![]);
    let o = rwp(&[
        "--server",
        &server.url,
        "submit",
        "--method",
        "m-rwp",
        "--lr-schedule",
        "step",
        "--milestones",
        "2,4",
        "--lr-gamma",
        "0.5",
        "--sigma-schedule",
        "cosine-increasing",
        "--sigma-inc",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "step.toml",
        "method = \"sgd\"\nlr_schedule = { kind = \"step\", milestones = [60, 120], gamma = 0.2 }\n",
    );
    let o = rwp(&["--server", &server.url, "submit", &path, "--lr-gamma", "0.3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = rwp(&["--server", &server.url, "submit", &path, "--lr-schedule", "cosine-per-update"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let recorded = server.recorded.lock().unwrap();
    let schedules: Vec<_> =
        recorded.submitted.iter().map(|(_, spec)| (spec.lr_schedule.clone(), spec.sigma_schedule.clone())).collect();
    assert_eq!(
        schedules,
        [
            (LrSchedule::Step { milestones: vec![2, 4], gamma: 0.5 }, SigmaSchedule::CosineIncreasing { inc: 3.0 }),
            (LrSchedule::Step { milestones: vec![60, 120], gamma: 0.3 }, SigmaSchedule::Constant),
            (LrSchedule::CosinePerUpdate, SigmaSchedule::Constant),
        ]
    );
}

#[test]
fn a_torchscript_model_file_is_uploaded_then_named_by_its_digest() {
    let server = MockServer::start(vec![]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/net.pt"), b"abc").unwrap();
    let job = write_file(
        dir.path(),
        "job.toml",
        "method = \"m-arwp\"\nmodel = \"torchscript\"\nmodel_file = \"models/net.pt\"\n",
    );
    // The job file's model_file is relative to the job file, wherever rwp runs.
    let o = rwp(&["--server", &server.url, "submit", &job]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    {
        let recorded = server.recorded.lock().unwrap();
        assert_eq!(recorded.uploads, [(sha256.to_owned(), b"abc".to_vec())]);
        let file = recorded.submitted[0].1.model_file.clone().expect("the spec names the file");
        assert_eq!((file.sha256.as_str(), file.size_bytes), (sha256, 3));
    }
    // A missing file is reported before anything is sent.
    let o = rwp(&[
        "--server",
        &server.url,
        "submit",
        "--method",
        "sgd",
        "--model",
        "torchscript",
        "--model-file",
        "/no/net.pt",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("/no/net.pt"), "{}", stderr(&o));
    assert_eq!(server.recorded.lock().unwrap().uploads.len(), 1);
}

#[test]
fn watch_follows_the_new_job() {
    let server = MockServer::start(vec![]);
    let o = rwp(&["--server", &server.url, "submit", "--method", "sgd", "--watch"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "j-000001", "{out}");
    assert_eq!(lines[1], "job j-000001 succeeded: step 8/8, test accuracy 0.5500, wall 0.4s, 20.00 updates/s", "{out}");
    assert_eq!(lines.len(), 2, "{out}");
    assert!(stderr(&o).contains("watching job j-000001"), "{}", stderr(&o));
}
