//! `rwp list` and `rwp get`: jobs as a table, as text and as JSON.

use std::collections::BTreeMap;

use rwp_sdk::{Job, JobSpec, LogEntry, LrSchedule, Method, SigmaSchedule, WorkerInfo};
use serde_json::{json, Value};

use crate::format::{age_seconds, format_age, format_duration, metric, printable, utc_time};
use crate::table::{Align, Table};

/// `k=v,k2=v2`, sorted by key.
#[must_use]
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The `rwp list` table: ID, NAME, OWNER, METHOD, MODEL, STATE, STEP/TOTAL,
/// LOSS, VAL ACC, TEST ACC, AGE, and LABELS when a job listed has labels.
#[must_use]
pub fn jobs_table(jobs: &[Job], now_unix_ms: i64) -> String {
    let with_labels = jobs.iter().any(|j| !j.labels.is_empty());
    let mut columns = vec![
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("OWNER", Align::Left),
        ("METHOD", Align::Left),
        ("MODEL", Align::Left),
        ("STATE", Align::Left),
        ("STEP/TOTAL", Align::Right),
        ("LOSS", Align::Right),
        ("VAL ACC", Align::Right),
        ("TEST ACC", Align::Right),
        ("AGE", Align::Right),
    ];
    if with_labels {
        columns.push(("LABELS", Align::Left));
    }
    let mut table = Table::new(&columns);
    for job in jobs {
        let mut row = vec![
            job.id.clone(),
            if job.name.is_empty() { "-".to_owned() } else { job.name.clone() },
            job.owner.clone().unwrap_or_else(|| "-".to_owned()),
            job.spec.method.to_string(),
            job.spec.model.to_string(),
            job.state.to_string(),
            format!("{}/{}", job.step, job.total_updates),
            metric(job.last_step.as_ref().map(|m| m.loss), 4),
            metric(job.last_evaluation.as_ref().and_then(|e| e.validation_accuracy), 4),
            metric(job.last_evaluation.as_ref().map(|e| e.test_accuracy), 4),
            format_age(age_seconds(job.created_unix_ms, now_unix_ms)),
        ];
        if with_labels {
            row.push(if job.labels.is_empty() { "-".to_owned() } else { labels_text(&job.labels) });
        }
        table.push(row);
    }
    table.render()
}

/// One line of `rwp logs`: `2026-12-07 15:27:26.211  leased          update 7, ...`.
#[must_use]
pub fn log_line(entry: &LogEntry) -> String {
    format!("{}  {:<16}{}", utc_time(entry.unix_ms), entry.kind.name(), printable(&entry.message))
}

/// The `rwp workers` table: NAME, ID, DEVICE, STATE, JOB, TASK, DONE, LAST SEEN.
#[must_use]
pub fn workers_table(workers: &[WorkerInfo], now_unix_ms: i64) -> String {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("ID", Align::Left),
        ("DEVICE", Align::Left),
        ("STATE", Align::Left),
        ("JOB", Align::Left),
        ("TASK", Align::Left),
        ("DONE", Align::Right),
        ("LAST SEEN", Align::Right),
    ]);
    for w in workers {
        let dash = || "-".to_owned();
        table.push(vec![
            if w.name.is_empty() { dash() } else { w.name.clone() },
            w.id.clone(),
            w.device.clone(),
            if w.connected { "connected" } else { "lost" }.to_owned(),
            w.job.clone().unwrap_or_else(dash),
            w.task.clone().unwrap_or_else(|| if w.connected { "idle".to_owned() } else { dash() }),
            w.tasks_done.to_string(),
            format!("{} ago", format_age(age_seconds(w.last_seen_unix_ms, now_unix_ms))),
        ]);
    }
    table.render()
}

/// The hyper-parameters that matter for the spec's method, as `key value` pairs.
#[must_use]
pub fn spec_summary(spec: &JobSpec) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("method", spec.method.to_string()),
        ("model", spec.model.to_string()),
        (
            "dataset",
            match &spec.data_dir {
                Some(dir) => format!("{} ({})", spec.dataset, dir.display()),
                None => spec.dataset.to_string(),
            },
        ),
        (
            "epochs",
            match spec.max_updates {
                Some(m) => format!("{} (at most {m} updates)", spec.epochs),
                None => spec.epochs.to_string(),
            },
        ),
        (
            "batch",
            format!("{} ({} clean, {} perturbed shards)", spec.batch_size, spec.clean_shards, spec.perturbed_shards),
        ),
        (
            "lr",
            format!(
                "{} ({}{}), momentum {}{}, weight decay {}",
                spec.lr,
                lr_schedule_name(&spec.lr_schedule),
                if spec.warmup_updates > 0 {
                    format!(", {} warmup updates", spec.warmup_updates)
                } else {
                    String::new()
                },
                spec.momentum,
                if spec.nesterov { " (nesterov)" } else { "" },
                spec.weight_decay
            ),
        ),
    ];
    let mut method = Vec::new();
    if spec.method.uses_perturbed() {
        let schedule = match &spec.sigma_schedule {
            SigmaSchedule::Constant => String::new(),
            SigmaSchedule::CosineIncreasing { inc } => format!(" (cosine-increasing, inc {inc})"),
        };
        method.push(format!("sigma {}{schedule}", spec.sigma));
        if spec.independent_noise {
            method.push("independent noise per shard".to_owned());
        }
    }
    if spec.method.is_mixed() {
        method.push(format!("lambda {}", spec.lambda));
    }
    if spec.method.is_adaptive() {
        method.push(format!("eta {}, beta {}", spec.eta, spec.beta));
    }
    if spec.method == Method::Sam {
        method.push(format!("rho {}", spec.rho));
    }
    if !method.is_empty() {
        rows.push(("perturbation", method.join(", ")));
    }
    rows.push((
        "other",
        format!(
            "seed {}, augment {}, non-finite {}, gradients {}",
            spec.seed,
            if spec.augment { "on" } else { "off" },
            if spec.non_finite == rwp_sdk::NonFinitePolicy::Skip { "skip" } else { "fail" },
            if spec.gradient_encoding == rwp_sdk::GradientEncoding::Bf16 { "bf16" } else { "f32" },
        ),
    ));
    rows
}

fn lr_schedule_name(s: &LrSchedule) -> String {
    match s {
        LrSchedule::Constant => "constant".to_owned(),
        LrSchedule::Step { milestones, gamma } => format!("step: ×{gamma} at epochs {milestones:?}"),
        LrSchedule::CosinePerUpdate => "cosine per update".to_owned(),
        LrSchedule::CosinePerEpoch => "cosine per epoch".to_owned(),
    }
}

/// The `rwp get` text: one `key  value` line each.
#[must_use]
pub fn job_detail(job: &Job, now_unix_ms: i64) -> String {
    let mut rows: Vec<(&str, String)> = vec![("job", job.id.clone())];
    if !job.name.is_empty() {
        rows.push(("name", job.name.clone()));
    }
    if let Some(owner) = &job.owner {
        rows.push(("owner", owner.clone()));
    }
    rows.push(("state", job.state.to_string()));
    let percent = if job.total_updates > 0 { 100.0 * job.step as f64 / job.total_updates as f64 } else { 0.0 };
    let mut progress = format!("{}/{} updates ({percent:.1}%)", job.step, job.total_updates);
    if let Some(epoch) = job.step.checked_div(job.updates_per_epoch) {
        progress.push_str(&format!(", epoch {epoch} of {}", job.spec.epochs));
    }
    if job.skipped_updates > 0 {
        progress.push_str(&format!(", {} skipped", job.skipped_updates));
    }
    rows.push(("progress", progress));
    if job.skipped_samples > 0 {
        let distinct = job.skipped_sample_examples.len();
        let mut text = format!("{} times left out of a batch (bad_samples = skip)", job.skipped_samples);
        if let Some(first) = job.skipped_sample_examples.first() {
            let more = if distinct >= rwp_spec::job::MAX_SKIPPED_EXAMPLES { "+" } else { "" };
            text.push_str(&format!("; {distinct}{more} distinct, the first: {first}"));
        }
        rows.push(("bad samples", text));
    }
    if let Some(why) = &job.waiting {
        rows.push(("waiting", format!("{why}; the time is not counted as training time")));
    }
    rows.extend(spec_summary(&job.spec));
    if let Some(m) = &job.last_step {
        let mut text =
            format!("update {}: loss {}, accuracy {}", m.step, metric(Some(m.loss), 4), metric(Some(m.accuracy), 4));
        if let Some(p) = m.perturbed_loss {
            text.push_str(&format!(", perturbed loss {}", metric(Some(p), 4)));
        }
        text.push_str(&format!(", lr {:.5}, sigma {:.5}, wall {}", m.lr, m.sigma, format_duration(m.wall_time_s)));
        rows.push(("last update", text));
    }
    if let Some((sweep, trial)) = &job.sweep {
        rows.push(("sweep", format!("{sweep}, trial {trial}")));
    }
    if let Some(source) = &job.init_from {
        rows.push(("started from", format!("the weights of job {source}")));
    }
    if !job.labels.is_empty() {
        rows.push(("labels", labels_text(&job.labels)));
    }
    if let Some(e) = &job.last_evaluation {
        if let (Some(accuracy), Some(loss)) = (e.validation_accuracy, e.validation_loss) {
            rows.push((
                "last validation",
                format!(
                    "after {} updates (epoch {}): accuracy {}, loss {}",
                    e.step,
                    e.epoch,
                    metric(Some(accuracy), 4),
                    metric(Some(loss), 4)
                ),
            ));
        }
        rows.push((
            "last test",
            format!(
                "after {} updates (epoch {}): accuracy {}, loss {}",
                e.step,
                e.epoch,
                metric(Some(e.test_accuracy), 4),
                metric(Some(e.test_loss), 4)
            ),
        ));
    }
    rows.push(("created", format!("{} ago", format_age(age_seconds(job.created_unix_ms, now_unix_ms)))));
    rows.push(("updated", format!("{} ago", format_age(age_seconds(job.updated_unix_ms, now_unix_ms)))));
    if let Some(error) = &job.error {
        rows.push(("error", error.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter().map(|(k, v)| format!("{k:width$}  {}\n", printable(v))).collect()
}

/// A job as JSON: the server's record, with the spec as in job files.
#[must_use]
pub fn job_json(job: &Job) -> Value {
    json!({
        "id": job.id,
        "name": job.name,
        "owner": job.owner,
        "state": job.state.name(),
        "step": job.step,
        "total_updates": job.total_updates,
        "updates_per_epoch": job.updates_per_epoch,
        "skipped_updates": job.skipped_updates,
        "skipped_samples": job.skipped_samples,
        "skipped_sample_examples": job.skipped_sample_examples,
        "error": job.error,
        "created_unix_ms": job.created_unix_ms,
        "updated_unix_ms": job.updated_unix_ms,
        "spec": serde_json::to_value(&job.spec).unwrap_or(Value::Null),
        "last_step": job.last_step.as_ref().map(|m| json!({
            "step": m.step,
            "loss": finite(m.loss),
            "accuracy": finite(m.accuracy),
            "perturbed_loss": m.perturbed_loss.and_then(finite),
            "lr": m.lr,
            "sigma": m.sigma,
            "wall_time_s": m.wall_time_s,
            "skipped": m.skipped,
        })),
        "last_evaluation": job.last_evaluation.as_ref().map(|e| json!({
            "step": e.step,
            "epoch": e.epoch,
            "test_loss": finite(e.test_loss),
            "test_accuracy": finite(e.test_accuracy),
            "validation_loss": e.validation_loss.and_then(finite),
            "validation_accuracy": e.validation_accuracy.and_then(finite),
            "wall_time_s": e.wall_time_s,
        })),
        "sweep": job.sweep.as_ref().map(|(id, trial)| json!({"id": id, "trial": trial})),
        "labels": job.labels,
        "init_from": job.init_from,
        "waiting": job.waiting,
    })
}

/// JSON has no NaN: a non-finite metric is written as null.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use rwp_sdk::{Evaluation, JobState, StepMetrics};

    use super::*;

    pub(crate) fn sample_job() -> Job {
        Job {
            id: "j-000001".into(),
            name: "demo".into(),
            spec: JobSpec::reference(Method::MArwp),
            state: JobState::Running,
            step: 120,
            total_updates: 240,
            updates_per_epoch: 8,
            error: None,
            created_unix_ms: 1_000_000,
            updated_unix_ms: 1_290_000,
            skipped_updates: 0,
            skipped_samples: 0,
            skipped_sample_examples: Vec::new(),
            last_step: Some(StepMetrics {
                step: 120,
                loss: 1.23456,
                accuracy: 0.5,
                perturbed_loss: Some(1.3),
                lr: 0.05,
                sigma: 0.015,
                wall_time_s: 20.5,
                skipped: false,
            }),
            last_evaluation: Some(Evaluation {
                step: 120,
                epoch: 15,
                test_loss: 1.1,
                test_accuracy: 0.61234,
                wall_time_s: 21.0,
                validation_loss: None,
                validation_accuracy: None,
            }),
            owner: Some("alice".into()),
            sweep: None,
            labels: Default::default(),
            init_from: None,
            waiting: None,
        }
    }

    #[test]
    fn the_table_has_every_column() {
        let mut other = sample_job();
        other.id = "j-000002".into();
        other.name = String::new();
        other.spec = JobSpec::reference(Method::Sgd);
        other.state = JobState::Failed;
        other.last_step = None;
        other.last_evaluation = None;
        other.owner = None;
        let text = jobs_table(&[sample_job(), other], 1_000_000 + 300_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "ID        NAME  OWNER  METHOD  MODEL      STATE    STEP/TOTAL    LOSS  VAL ACC  TEST ACC  AGE"
        );
        assert_eq!(
            lines[1],
            "j-000001  demo  alice  m-arwp  small-cnn  running     120/240  1.2346        -    0.6123   5m"
        );
        assert_eq!(
            lines[2],
            "j-000002  -     -      sgd     small-cnn  failed      120/240       -        -         -   5m"
        );
    }

    #[test]
    fn detail_shows_spec_progress_metrics_and_error() {
        let mut job = sample_job();
        job.state = JobState::Failed;
        job.error = Some("shard 0: data directory /x is missing".into());
        job.skipped_samples = 6;
        job.skipped_sample_examples = vec!["train/cat/1.jpg: not a JPEG".into(), "train/dog/2.png: truncated".into()];
        let text = job_detail(&job, 1_300_000);
        for want in [
            "job           j-000001",
            "owner         alice",
            "state         failed",
            "progress      120/240 updates (50.0%), epoch 15 of 30",
            "method        m-arwp",
            "perturbation  sigma 0.015, lambda 0.5, eta 0.1, beta 0.99",
            "last update   update 120: loss 1.2346, accuracy 0.5000, perturbed loss 1.3000",
            "last test     after 120 updates (epoch 15): accuracy 0.6123, loss 1.1000",
            "created       5m ago",
            "error         shard 0: data directory /x is missing",
            "bad samples   6 times left out of a batch (bad_samples = skip); 2 distinct, the first: train/cat/1.jpg: not a JPEG",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let sgd = spec_summary(&JobSpec::reference(Method::Sgd));
        assert!(sgd.iter().all(|(k, _)| *k != "perturbation"), "{sgd:?}");
        let sam = spec_summary(&JobSpec::reference(Method::Sam));
        assert!(sam.iter().any(|(k, v)| *k == "perturbation" && v == "rho 0.05"), "{sam:?}");
    }

    #[test]
    fn json_round_trips_the_spec_and_has_no_nan() {
        let mut job = sample_job();
        job.last_step.as_mut().unwrap().loss = f64::NAN;
        let value = job_json(&job);
        assert_eq!(value["id"], "j-000001");
        assert_eq!(value["owner"], "alice");
        assert_eq!(value["state"], "running");
        assert_eq!(value["last_step"]["loss"], Value::Null);
        assert_eq!(value["last_evaluation"]["test_accuracy"], 0.61234);
        let spec: JobSpec = serde_json::from_value(value["spec"].clone()).unwrap();
        assert_eq!(spec, job.spec);
    }
}
