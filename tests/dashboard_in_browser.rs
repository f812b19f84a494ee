//! The web dashboard in a real headless browser (Chromium): against a live
//! server with a running job, a finished sweep and a worker, the pages show
//! the jobs with their state and progress, a job's curves, log and
//! settings, the workers, and the sweep's results table; on a server with a
//! tokens file a page without a token asks for one, and one with a user's
//! token shows that user's jobs only. Screenshots of the jobs page and a
//! job page are kept under `test-artefacts/dashboard/` (git-ignored).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rwp_integration_tests::in_process::Cluster;
use rwp_integration_tests::local_run::small_job;
use rwp_integration_tests::sweeps::sigma_grid;
use rwp_integration_tests::tokens::TokensFile;
use rwp_integration_tests::workspace_root;
use rwp_parameter_server::domain::CallerRole;
use rwp_sdk::{Client, ClientConfig, JobState, Method, SubmitOptions};

/// The Chromium binary (Debian's `chromium`; `make test` installs it).
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output() {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !path.is_empty() {
                return PathBuf::from(path);
            }
        }
    }
    panic!("no chromium to run the browser tests: install it (apt-get install chromium; `make test` does)");
}

/// Loads `url` in headless Chromium, lets its script run, and returns the
/// page as rendered (or writes a screenshot of it to `screenshot`).
fn render(url: &str, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium());
    command
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=6000"])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let out = command.arg(url).output().expect("chromium starts");
    assert!(out.status.success(), "chromium failed on {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number in `attribute="N"` after `marker` in `dom`.
fn attribute_after(dom: &str, marker: &str, attribute: &str) -> u64 {
    let start = dom.find(marker).unwrap_or_else(|| panic!("no {marker} in the page:\n{dom}"));
    let rest = &dom[start..];
    let at = rest.find(&format!("{attribute}=\"")).unwrap_or_else(|| panic!("no {attribute} after {marker}"))
        + attribute.len()
        + 2;
    rest[at..].split('"').next().unwrap().parse().unwrap()
}

fn artefacts() -> PathBuf {
    let dir = workspace_root().join("test-artefacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_jobs_a_jobs_curves_log_and_settings_workers_and_sweeps() {
    let cluster = Cluster::start(1).await;
    let client = Client::connect(cluster.url()).await.unwrap();
    let sweep = client.create_sweep("sigma-demo", &sigma_grid(&[0.01, 0.02], 1, 2, None)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !client.get_sweep(&sweep.id).await.unwrap().is_finished() {
        assert!(Instant::now() < deadline, "the sweep did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let options = SubmitOptions { labels: [("team".to_owned(), "vision".to_owned())].into(), init_from: None };
    let job = client.submit_with("dashboard-demo", &small_job(71, Method::MArwp, 100_000), &options).await.unwrap();
    while client.get(&job.id).await.unwrap().step < 5 {
        assert!(Instant::now() < deadline, "the job made no progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = format!("http://{}", cluster.metrics);

    let jobs = render(&format!("{base}/#/jobs"), None);
    assert!(jobs.contains(&format!("data-job-id=\"{}\"", job.id)), "{jobs}");
    for text in
        ["dashboard-demo", "data-state=\"running\"", "m-arwp, small-cnn on synthetic", "team=vision", "<progress"]
    {
        assert!(jobs.contains(text), "the jobs page lacks {text}:\n{jobs}");
    }

    let page = render(&format!("{base}/#/jobs/{}", job.id), None);
    assert!(attribute_after(&page, "data-test=\"loss-chart\"", "data-points") >= 5, "loss curve: {page}");
    assert!(page.contains("data-series=\"train loss\""), "{page}");
    for kind in ["submitted", "leased"] {
        assert!(page.contains(&format!("data-kind=\"{kind}\"")), "the job's log lacks {kind}:\n{page}");
    }
    assert!(page.contains("data-test=\"settings\"") && page.contains(">sigma<") && page.contains(">m-arwp<"), "{page}");

    let workers = render(&format!("{base}/#/workers"), None);
    assert!(workers.contains("data-test=\"workers\"") && workers.contains(">connected<"), "{workers}");
    // Its current job shows while it holds a task (between two it is idle).
    assert!(workers.contains("data-worker=\"in-process-0\"") && workers.contains(">cpu<"), "{workers}");

    let sweeps = render(&format!("{base}/#/sweeps"), None);
    assert!(sweeps.contains(&sweep.id) && sweeps.contains("sigma-demo"), "{sweeps}");
    let table = render(&format!("{base}/#/sweeps/{}", sweep.id), None);
    assert!(table.contains("data-test=\"trials\"") && table.contains(">sigma<") && table.contains("(best)"), "{table}");
    assert_eq!(table.matches("data-state=\"succeeded\"").count(), 3, "the sweep and its two trials: {table}");

    // Screenshots, kept as test artefacts.
    let dir = artefacts();
    for (name, url) in [("jobs.png", format!("{base}/#/jobs")), ("job.png", format!("{base}/#/jobs/{}", job.id))] {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        render(&url, Some(&path));
        assert!(std::fs::metadata(&path).is_ok_and(|m| m.len() > 10_000), "screenshot {}", path.display());
    }
    client.cancel(&job.id).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_dashboard_asks_for_one_and_shows_only_the_users_jobs() {
    let tokens = TokensFile::new(&[("alice", CallerRole::User), ("bob", CallerRole::User)]);
    let cluster = Cluster::start_configured(0, |c| c.tokens_file = Some(tokens.path.clone()), |_| {}).await;
    let submit = |user: &str, name: &'static str| {
        let mut config = ClientConfig::new(cluster.url());
        config.token = Some(tokens.token(user).clone());
        async move {
            let client = Client::connect_with(config).await.unwrap();
            let job = client.submit(name, &small_job(72, Method::Sgd, 10)).await.unwrap();
            assert_eq!(job.state, JobState::Running);
            job
        }
    };
    let alices = submit("alice", "alices-job").await;
    let bobs = submit("bob", "bobs-job").await;
    let base = format!("http://{}", cluster.metrics);

    let without = render(&format!("{base}/#/jobs"), None);
    assert!(without.contains("This server needs a token"), "{without}");
    assert!(!without.contains(&alices.id));

    let with = render(&format!("{base}/#/jobs?token={}", tokens.token("alice").expose()), None);
    assert!(with.contains(&alices.id) && with.contains("alices-job"), "{with}");
    assert!(!with.contains(&bobs.id), "another user's job is not shown: {with}");
    cluster.shutdown().await;
}
