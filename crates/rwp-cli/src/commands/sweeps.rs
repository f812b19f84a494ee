//! `rwp sweep`: create, follow, list, inspect, plot and cancel sweeps.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rwp_sdk::sweep::{rank, TrialScore};
use rwp_sdk::{Job, JobSpec, ParamValue, Sweep, SweepFile, Trial};
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::{job_json, plot::curves, to_json, Connection};
use crate::cli::{SweepCommand, SweepGetArgs, SweepPlotArgs};
use crate::error::CliError;
use crate::format::{age_seconds, format_age, format_duration, metric, now_unix_ms, printable};
use crate::plot::{render_charts, Chart};
use crate::table::{Align, Table};

pub async fn run(
    command: SweepCommand,
    connect: impl Fn() -> Result<Connection, CliError>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    match command {
        SweepCommand::Submit(args) => {
            let file = SweepFile::read(&args.file)?;
            let name =
                args.name.clone().or(file.name.clone()).unwrap_or_else(|| {
                    args.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
                });
            let connection = connect()?;
            let client = if args.watch { connection.connect_patient().await? } else { connection.connect().await? };
            if let Some(path) = &file.model_path {
                client.upload_model(path).await?;
            }
            let sweep = client.create_sweep(&name, &file.spec).await?;
            writeln!(out, "{}", sweep.id)?;
            eprintln!(
                "sweep {} ({}): {} trials, {} at a time",
                printable(&sweep.id),
                printable(&name),
                sweep.trials.len(),
                file.spec.concurrency
            );
            out.flush()?;
            if !args.watch {
                return Ok(0);
            }
            watch(&client, &sweep.id, None, out).await
        }
        SweepCommand::Watch(args) => {
            let client = connect()?.connect_patient().await?;
            watch(&client, &args.sweep, args.best_job_file.as_deref(), out).await
        }
        SweepCommand::List(args) => {
            let mut sweeps = connect()?.connect().await?.list_sweeps().await?;
            sweeps.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
            if args.json {
                let json: Vec<Value> = sweeps.iter().map(sweep_json).collect();
                writeln!(out, "{}", to_json(&json)?)?;
            } else {
                out.write_all(sweeps_table(&sweeps, now_unix_ms()).as_bytes())?;
            }
            Ok(0)
        }
        SweepCommand::Get(args) => get(&connect()?, &args, out).await,
        SweepCommand::Plot(args) => {
            let client = connect()?.connect().await?;
            plot(&client, &args, out).await?;
            Ok(0)
        }
        SweepCommand::Cancel(args) => {
            let sweep = connect()?.connect().await?.cancel_sweep(&args.sweep).await?;
            writeln!(out, "sweep {} is {}", sweep.id, sweep.state)?;
            Ok(0)
        }
    }
}

async fn get(connection: &Connection, args: &SweepGetArgs, out: &mut dyn Write) -> Result<u8, CliError> {
    let sweep = connection.connect().await?.get_sweep(&args.sweep).await?;
    if args.json {
        writeln!(out, "{}", to_json(&sweep_json(&sweep))?)?;
    } else {
        out.write_all(sweep_report(&sweep).as_bytes())?;
    }
    if let Some(path) = &args.best_job_file {
        write_best(&sweep, path, out)?;
    }
    Ok(0)
}

/// Follows the sweep: a line per trial whenever its state or epoch changes
/// (stderr), then the results table (stdout).
async fn watch(
    client: &rwp_sdk::Client,
    sweep_id: &str,
    best_job_file: Option<&Path>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let mut updates = client.watch_sweep(sweep_id).await?;
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    let mut last = None;
    while let Some(sweep) = updates.next().await {
        let sweep = sweep?;
        for trial in &sweep.trials {
            let line = progress_line(trial);
            if seen.get(&trial.index) != Some(&line) {
                eprintln!("{}", printable(&line));
                seen.insert(trial.index, line);
            }
        }
        last = Some(sweep);
    }
    let sweep = match last {
        Some(s) if s.is_finished() => s,
        _ => client.get_sweep(sweep_id).await?,
    };
    out.write_all(sweep_report(&sweep).as_bytes())?;
    if let Some(path) = best_job_file {
        write_best(&sweep, path, out)?;
    }
    Ok(if sweep.state == rwp_sdk::SweepState::Succeeded { 0 } else { crate::error::EXIT_ERROR })
}

/// `trial 2 [sigma = 0.01]: running, epoch 3/8, val acc 0.8125 (job-…)`.
#[must_use]
pub fn progress_line(trial: &Trial) -> String {
    let params = rwp_sdk::sweep::describe(&trial.params);
    let Some(job) = &trial.job else { return format!("trial {} [{params}]: waiting", trial.index) };
    let mut line =
        format!("trial {} [{params}]: {}, epoch {}/{}", trial.index, job.state, epochs_run(job), job.spec.epochs);
    if let Some(e) = &job.last_evaluation {
        line.push_str(&format!(
            ", val acc {}, test acc {}",
            metric(e.validation_accuracy, 4),
            metric(Some(e.test_accuracy), 4)
        ));
    }
    if let (rwp_sdk::JobState::Stopped | rwp_sdk::JobState::Failed, Some(reason)) = (job.state, &job.error) {
        line.push_str(&format!(" - {reason}"));
    }
    line.push_str(&format!(" ({})", job.id));
    line
}

fn epochs_run(job: &Job) -> u64 {
    job.step.checked_div(job.updates_per_epoch).unwrap_or(0)
}

fn scores(sweep: &Sweep) -> Vec<TrialScore> {
    sweep
        .trials
        .iter()
        .map(|t| {
            let e = t.job.as_ref().and_then(|j| j.last_evaluation.as_ref());
            TrialScore {
                index: t.index,
                validation_accuracy: e.and_then(|e| e.validation_accuracy),
                test_accuracy: e.map(|e| e.test_accuracy),
            }
        })
        .collect()
}

/// The fields a sweep searches, in search order.
fn swept_fields(sweep: &Sweep) -> Vec<String> {
    sweep.spec.search.params.iter().map(|p| p.field.clone()).collect()
}

/// The results table: trials from best to worst validation accuracy, with
/// test accuracy (never used to rank), epochs and updates run, wall time.
#[must_use]
pub fn sweep_table(sweep: &Sweep) -> String {
    let fields = swept_fields(sweep);
    let mut columns: Vec<(&str, Align)> = vec![("RANK", Align::Right), ("TRIAL", Align::Right)];
    columns.extend(fields.iter().map(|f| (f.as_str(), Align::Right)));
    columns.extend([
        ("STATE", Align::Left),
        ("EPOCHS", Align::Right),
        ("UPDATES", Align::Right),
        ("VAL ACC", Align::Right),
        ("TEST ACC", Align::Right),
        ("WALL", Align::Right),
        ("JOB", Align::Left),
    ]);
    let mut table = Table::new(&columns);
    for (position, index) in rank(&scores(sweep)).into_iter().enumerate() {
        let Some(trial) = sweep.trials.get(index as usize) else { continue };
        let best = sweep.best_trial == Some(index);
        let mut row =
            vec![if best { format!("*{}", position + 1) } else { (position + 1).to_string() }, index.to_string()];
        for field in &fields {
            row.push(
                trial.params.iter().find(|(f, _)| f == field).map_or_else(|| "-".to_owned(), |(_, v)| v.to_string()),
            );
        }
        match &trial.job {
            None => row.extend(["waiting".to_owned()]),
            Some(job) => {
                let e = job.last_evaluation.as_ref();
                row.extend([
                    job.state.to_string(),
                    format!("{}/{}", epochs_run(job), job.spec.epochs),
                    format!("{}/{}", job.step, job.total_updates),
                    metric(e.and_then(|e| e.validation_accuracy), 4),
                    metric(e.map(|e| e.test_accuracy), 4),
                    job.last_step.as_ref().map_or_else(|| "-".to_owned(), |m| format_duration(m.wall_time_s)),
                    job.id.clone(),
                ]);
            }
        }
        table.push(row);
    }
    table.render()
}

/// Header lines, the table, the stopped trials' reasons and the best trial.
#[must_use]
pub fn sweep_report(sweep: &Sweep) -> String {
    let mut text = format!(
        "sweep {}{} {}: {} trials ({} ended), {} at a time{}\n",
        sweep.id,
        if sweep.name.is_empty() { String::new() } else { format!(" ({})", sweep.name) },
        sweep.state,
        sweep.trials.len(),
        sweep.trials.iter().filter(|t| t.job.as_ref().is_some_and(|j| j.state.is_terminal())).count(),
        sweep.spec.concurrency,
        sweep.spec.early_stopping.as_ref().map_or_else(String::new, |es| format!(
            ", early stopping at epochs {:?} (η = {})",
            es.rungs, es.reduction_factor
        )),
    );
    if let Some(error) = &sweep.error {
        text.push_str(&format!("error: {error}\n"));
    }
    text.push_str(&sweep_table(sweep));
    for trial in &sweep.trials {
        if let Some(job) = trial.job.as_ref().filter(|j| j.state == rwp_sdk::JobState::Stopped) {
            text.push_str(&format!("trial {}: {}\n", trial.index, job.error.as_deref().unwrap_or("stopped early")));
        }
    }
    if let Some(table) = seed_table(sweep) {
        text.push_str(
            "\nover seeds (mean ± standard deviation of the trials that reached the end; ranked by validation):\n",
        );
        text.push_str(&table);
    }
    match sweep.best() {
        Some(best) => text.push_str(&format!(
            "best (by validation accuracy): trial {} [{}]\n",
            best.index,
            rwp_sdk::sweep::describe(&best.params)
        )),
        None => text.push_str("best: none yet (no trial has a validation accuracy)\n"),
    }
    text
}

/// The trials of one setting of a seed sweep's other fields.
struct SeedGroup {
    /// The other fields' values.
    key: Vec<String>,
    /// (validation, test) accuracy of each trial that ran to the end.
    finished: Vec<(f64, f64)>,
    trials: usize,
}

/// Mean and (population) standard deviation.
fn mean_std(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    Some((mean, (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()))
}

/// When a sweep searches `seed` next to other fields: one row per setting
/// of the other fields, with the mean and standard deviation over seeds of
/// the validation and test accuracy of the trials that ran to the end (a
/// stopped trial did not), ranked by mean validation accuracy.
#[must_use]
pub fn seed_table(sweep: &Sweep) -> Option<String> {
    let fields = swept_fields(sweep);
    if !fields.iter().any(|f| f == "seed") || fields.len() < 2 {
        return None;
    }
    let others: Vec<&String> = fields.iter().filter(|f| *f != "seed").collect();
    let mut groups: Vec<SeedGroup> = Vec::new();
    for trial in &sweep.trials {
        let key: Vec<String> = others
            .iter()
            .map(|f| trial.params.iter().find(|(g, _)| g == *f).map_or_else(|| "-".into(), |(_, v)| v.to_string()))
            .collect();
        let position = groups.iter().position(|g| g.key == key).unwrap_or_else(|| {
            groups.push(SeedGroup { key, finished: Vec::new(), trials: 0 });
            groups.len() - 1
        });
        let group = &mut groups[position];
        group.trials += 1;
        let finished = trial.job.as_ref().filter(|j| j.state == rwp_sdk::JobState::Succeeded);
        if let Some(e) = finished.and_then(|j| j.last_evaluation.as_ref()) {
            if let Some(v) = e.validation_accuracy {
                group.finished.push((v, e.test_accuracy));
            }
        }
    }
    let validation = |g: &SeedGroup| mean_std(&g.finished.iter().map(|r| r.0).collect::<Vec<_>>());
    groups.sort_by(|a, b| match (validation(a), validation(b)) {
        (Some(x), Some(y)) => y.0.total_cmp(&x.0),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let mut columns: Vec<(&str, Align)> = others.iter().map(|f| (f.as_str(), Align::Right)).collect();
    columns.extend([("FINISHED", Align::Right), ("VAL ACC", Align::Right), ("TEST ACC", Align::Right)]);
    let mut table = Table::new(&columns);
    let cell = |s: Option<(f64, f64)>| s.map_or_else(|| "-".to_owned(), |(m, d)| format!("{m:.4} ± {d:.4}"));
    for group in &groups {
        let test = mean_std(&group.finished.iter().map(|r| r.1).collect::<Vec<_>>());
        let mut row = group.key.clone();
        row.extend([format!("{}/{}", group.finished.len(), group.trials), cell(validation(group)), cell(test)]);
        table.push(row);
    }
    Some(table.render())
}

/// The best trial's spec as a job file, loadable by `rwp submit`.
pub fn best_job_file(sweep: &Sweep) -> Option<String> {
    let best = sweep.best()?;
    let spec: &JobSpec = &best.job.as_ref()?.spec;
    let body = toml::to_string(spec).ok()?;
    let name = format!("{}-best", if sweep.name.is_empty() { &sweep.id } else { &sweep.name });
    Some(format!(
        "# The best trial of sweep {} by validation accuracy: trial {} [{}]\nname = {}\n{body}",
        sweep.id,
        best.index,
        rwp_sdk::sweep::describe(&best.params),
        toml::Value::String(name)
    ))
}

fn write_best(sweep: &Sweep, path: &Path, out: &mut dyn Write) -> Result<(), CliError> {
    let text =
        best_job_file(sweep).ok_or_else(|| CliError::Other(format!("sweep {} has no best trial yet", sweep.id)))?;
    std::fs::write(path, text).map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
    writeln!(out, "wrote the best trial's job file to {}", path.display())?;
    Ok(())
}

/// The `rwp sweep list` table.
#[must_use]
pub fn sweeps_table(sweeps: &[Sweep], now_unix_ms: i64) -> String {
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("NAME", Align::Left),
        ("STATE", Align::Left),
        ("SEARCH", Align::Left),
        ("TRIALS", Align::Right),
        ("RUNNING", Align::Right),
        ("BEST VAL ACC", Align::Right),
        ("AGE", Align::Right),
    ]);
    for sweep in sweeps {
        let ended = sweep.trials.iter().filter(|t| t.job.as_ref().is_some_and(|j| j.state.is_terminal())).count();
        let running = sweep.trials.iter().filter(|t| t.job.as_ref().is_some_and(|j| !j.state.is_terminal())).count();
        let best = sweep.best().and_then(|t| t.job.as_ref()).and_then(|j| j.last_evaluation.as_ref());
        table.push(vec![
            sweep.id.clone(),
            if sweep.name.is_empty() { "-".to_owned() } else { sweep.name.clone() },
            sweep.state.to_string(),
            swept_fields(sweep).join(","),
            format!("{ended}/{}", sweep.trials.len()),
            running.to_string(),
            metric(best.and_then(|e| e.validation_accuracy), 4),
            format_age(age_seconds(sweep.created_unix_ms, now_unix_ms)),
        ]);
    }
    table.render()
}

fn param_json(v: &ParamValue) -> Value {
    match v {
        ParamValue::Number(x) => json!(x),
        ParamValue::Text(t) => json!(t),
        ParamValue::Flag(b) => json!(b),
    }
}

#[must_use]
pub fn sweep_json(sweep: &Sweep) -> Value {
    json!({
        "id": sweep.id,
        "name": sweep.name,
        "state": sweep.state.name(),
        "error": sweep.error,
        "owner": sweep.owner,
        "created_unix_ms": sweep.created_unix_ms,
        "updated_unix_ms": sweep.updated_unix_ms,
        "spec": serde_json::to_value(&sweep.spec).unwrap_or(Value::Null),
        "best_trial": sweep.best_trial,
        "ranking": rank(&scores(sweep)),
        "trials": sweep.trials.iter().map(|t| json!({
            "index": t.index,
            "params": t.params.iter().map(|(f, v)| (f.clone(), param_json(v))).collect::<serde_json::Map<_, _>>(),
            "job": t.job.as_ref().map(job_json),
        })).collect::<Vec<_>>(),
    })
}

/// The x of a trial on a swept field's axis: the number (its log10 when the
/// values span more than 20x and are all positive), or the index of a name.
fn axis(sweep: &Sweep, field: &str) -> (String, Vec<(u32, f64)>) {
    let values: Vec<(u32, &ParamValue)> = sweep
        .trials
        .iter()
        .filter_map(|t| t.params.iter().find(|(f, _)| f == field).map(|(_, v)| (t.index, v)))
        .collect();
    let numbers: Option<Vec<(u32, f64)>> = values.iter().map(|(i, v)| v.as_number().map(|x| (*i, x))).collect();
    if let Some(numbers) = numbers {
        let (lo, hi) = numbers.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), (_, x)| (lo.min(*x), hi.max(*x)));
        if lo > 0.0 && hi / lo > 20.0 {
            return (format!("log10({field})"), numbers.into_iter().map(|(i, x)| (i, x.log10())).collect());
        }
        return (field.to_owned(), numbers);
    }
    let mut names: Vec<String> = Vec::new();
    let mut points = Vec::new();
    for (i, v) in values {
        let name = v.to_string();
        let position = names.iter().position(|n| *n == name).unwrap_or_else(|| {
            names.push(name);
            names.len() - 1
        });
        points.push((i, position as f64));
    }
    let legend: Vec<String> = names.iter().enumerate().map(|(k, n)| format!("{k} = {n}")).collect();
    (format!("{field} ({})", legend.join(", ")), points)
}

/// Charts of validation accuracy against each swept field (one dot per
/// trial that has an evaluation).
#[must_use]
pub fn accuracy_charts(sweep: &Sweep) -> Vec<(String, Chart)> {
    let accuracy: BTreeMap<u32, f64> = scores(sweep)
        .into_iter()
        .filter_map(|s| s.validation_accuracy.filter(|v| v.is_finite()).map(|v| (s.index, v)))
        .collect();
    swept_fields(sweep)
        .into_iter()
        .map(|field| {
            let (x_desc, xs) = axis(sweep, &field);
            let points: Vec<(f64, f64)> =
                xs.into_iter().filter_map(|(i, x)| accuracy.get(&i).map(|a| (x, *a))).collect();
            let chart = Chart {
                title: format!("Validation accuracy vs {field}"),
                x_desc,
                y_desc: "validation accuracy (latest evaluation)".into(),
                series: vec![("trials".into(), points)],
                scatter: true,
                log_y: false,
            };
            (field.replace(|c: char| !c.is_ascii_alphanumeric(), "_"), chart)
        })
        .collect()
}

async fn plot(client: &rwp_sdk::Client, args: &SweepPlotArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let sweep = client.get_sweep(&args.sweep).await?;
    std::fs::create_dir_all(&args.output)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", args.output.display())))?;
    let mut written = Vec::new();
    for (name, chart) in accuracy_charts(&sweep) {
        let path = args.output.join(format!("accuracy_vs_{name}.{}", args.format));
        render_charts(&path, &[chart], 1, (1000, 700)).map_err(CliError::Other)?;
        written.push(path);
    }
    let (mut validation, mut loss) = (Vec::new(), Vec::new());
    for trial in &sweep.trials {
        let Some(job) = &trial.job else { continue };
        let c = curves(client, &job.id).await?;
        let per_epoch = job.updates_per_epoch.max(1) as f64;
        let label = format!("{} [{}]", trial.index, rwp_sdk::sweep::describe(&trial.params));
        validation
            .push((label.clone(), c.validation.iter().map(|p| (p.step as f64 / per_epoch, p.accuracy)).collect()));
        loss.push((label, c.train.iter().map(|p| (p.step as f64 / per_epoch, p.loss)).collect()));
    }
    let charts = [
        Chart {
            title: "Validation accuracy of every trial".into(),
            x_desc: "epoch".into(),
            y_desc: "validation accuracy".into(),
            series: validation,
            scatter: false,
            log_y: false,
        },
        Chart {
            title: "Train loss of every trial".into(),
            x_desc: "epoch".into(),
            y_desc: "train loss".into(),
            series: loss,
            scatter: false,
            log_y: true,
        },
    ];
    let path = args.output.join(format!("curves.{}", args.format));
    render_charts(&path, &charts, 2, (1800, 700)).map_err(CliError::Other)?;
    written.push(path);
    for path in written {
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rwp_sdk::{Evaluation, JobState, Method, SweepSpec};

    fn job(index: u32, state: JobState, val: f64, test: f64) -> Job {
        let mut spec = JobSpec::reference(Method::MArwp);
        spec.validation_fraction = 0.2;
        spec.sigma = [0.001, 0.01, 0.1][index as usize];
        Job {
            id: format!("job-{index}"),
            name: String::new(),
            spec,
            state,
            step: 40,
            total_updates: 80,
            updates_per_epoch: 10,
            error: (state == JobState::Stopped).then(|| "stopped early at rung epoch 4: ...".to_owned()),
            created_unix_ms: 0,
            updated_unix_ms: 0,
            skipped_updates: 0,
            skipped_samples: 0,
            skipped_sample_examples: Vec::new(),
            last_step: None,
            last_evaluation: Some(Evaluation {
                step: 40,
                epoch: 4,
                test_loss: 1.0,
                test_accuracy: test,
                wall_time_s: 3.0,
                validation_loss: Some(1.0),
                validation_accuracy: Some(val),
            }),
            owner: None,
            sweep: Some(("sweep-1".into(), index)),
            labels: Default::default(),
            init_from: None,
            waiting: None,
        }
    }

    fn sweep() -> Sweep {
        let text = "concurrency = 2\nmethod = \"m-arwp\"\nvalidation_fraction = 0.2\n[search]\n[[search.param]]\n\
                    field = \"sigma\"\nvalues = [0.001, 0.01, 0.1]\n";
        let spec: SweepSpec = SweepFile::parse(text, "s.toml").unwrap().spec;
        let trials = spec
            .trials()
            .unwrap()
            .into_iter()
            .map(|t| Trial {
                index: t.index,
                params: t.params,
                job: Some(match t.index {
                    0 => job(0, JobState::Succeeded, 0.70, 0.90),
                    1 => job(1, JobState::Succeeded, 0.85, 0.60),
                    _ => job(2, JobState::Stopped, 0.30, 0.95),
                }),
            })
            .collect();
        Sweep {
            id: "sweep-1".into(),
            name: "sigma".into(),
            spec,
            state: rwp_sdk::SweepState::Succeeded,
            error: None,
            created_unix_ms: 0,
            updated_unix_ms: 0,
            owner: None,
            trials,
            best_trial: Some(1),
        }
    }

    #[test]
    fn the_table_is_sorted_by_validation_accuracy_not_test_accuracy() {
        let text = sweep_table(&sweep());
        let trials: Vec<&str> = text.lines().skip(1).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
        assert_eq!(trials, vec!["1", "0", "2"], "{text}");
        assert!(text.lines().nth(1).unwrap().trim_start().starts_with("*1"), "the best is marked: {text}");
        let header: Vec<&str> =
            text.lines().next().unwrap().split("  ").filter(|c| !c.is_empty()).map(str::trim).collect();
        assert_eq!(
            header,
            ["RANK", "TRIAL", "sigma", "STATE", "EPOCHS", "UPDATES", "VAL ACC", "TEST ACC", "WALL", "JOB"]
        );
        let report = sweep_report(&sweep());
        assert!(report.contains("trial 2: stopped early at rung epoch 4"), "{report}");
        assert!(report.contains("best (by validation accuracy): trial 1 [sigma = 0.01]"), "{report}");
    }

    #[test]
    fn the_best_job_file_loads_back_as_the_best_spec() {
        let s = sweep();
        let text = best_job_file(&s).unwrap();
        let (name, spec) = rwp_sdk::JobFile::parse(&text, "best.toml").unwrap().into_spec().unwrap();
        assert_eq!(name.as_deref(), Some("sigma-best"));
        assert_eq!(spec, s.trials[1].job.as_ref().unwrap().spec);
    }

    #[test]
    fn accuracy_charts_use_a_log_axis_for_wide_numeric_ranges() {
        let charts = accuracy_charts(&sweep());
        assert_eq!(charts.len(), 1);
        let (name, chart) = &charts[0];
        assert_eq!(name, "sigma");
        assert_eq!(chart.x_desc, "log10(sigma)");
        let xs: Vec<f64> = chart.series[0].1.iter().map(|p| p.0.round()).collect();
        assert_eq!(xs, vec![-3.0, -2.0, -1.0]);
        let progress = progress_line(&sweep().trials[2]);
        assert!(progress.starts_with("trial 2 [sigma = 0.1]: stopped, epoch 4/30, val acc 0.3000"), "{progress}");
    }

    #[test]
    fn a_seed_sweep_is_summarised_per_setting_over_seeds() {
        assert_eq!(seed_table(&sweep()), None, "no seed searched");
        let text = "concurrency = 2\nmethod = \"m-arwp\"\nvalidation_fraction = 0.2\n[search]\n[[search.param]]\n\
                    field = \"sigma\"\nvalues = [0.01, 0.1]\n[[search.param]]\nfield = \"seed\"\nvalues = [0, 1]\n";
        let mut s = sweep();
        s.spec = SweepFile::parse(text, "s.toml").unwrap().spec;
        let outcome = [
            (JobState::Succeeded, 0.6, 0.7),
            (JobState::Succeeded, 0.4, 0.5),
            (JobState::Succeeded, 0.3, 0.9),
            (JobState::Stopped, 0.1, 0.1),
        ];
        s.trials = s
            .spec
            .trials()
            .unwrap()
            .into_iter()
            .zip(outcome)
            .map(|(t, (state, val, test))| {
                let mut j = job(0, state, val, test);
                j.spec = t.spec.clone();
                Trial { index: t.index, params: t.params, job: Some(j) }
            })
            .collect();
        let table = seed_table(&s).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(first, ["0.01", "2/2", "0.5000", "±", "0.1000", "0.6000", "±", "0.1000"], "{table}");
        let second: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            second,
            ["0.1", "1/2", "0.3000", "±", "0.0000", "0.9000", "±", "0.0000"],
            "the stopped seed is left out: {table}"
        );
    }
}
