//! `rwp plot`: the history of each job from the server, then the chart.

use std::io::Write;
use std::time::Duration;

use rwp_sdk::{Client, Job, JobEvent};
use tokio_stream::StreamExt;

use crate::cli::PlotArgs;
use crate::error::CliError;
use crate::plot::{render, Curves, TestPoint, TrainPoint};

/// How long to wait for more events once a running job's history has been
/// replayed up to the update it was at (its evaluation may follow).
const SETTLE: Duration = Duration::from_millis(300);
/// How long a running job may stay silent before the history is taken as complete.
const QUIET: Duration = Duration::from_secs(10);

/// The legend of a job: its name (or id) and method.
#[must_use]
pub fn label(job: &Job) -> String {
    let name = if job.name.is_empty() { &job.id } else { &job.name };
    format!("{name} ({})", job.spec.method)
}

/// A job's curves from update 0: the whole history of an ended job, and of a
/// running one up to the update it had reached when asked.
pub async fn curves(client: &Client, job_id: &str) -> Result<Curves, CliError> {
    let job = client.get(job_id).await?;
    let mut curves = Curves { label: label(&job), ..Curves::default() };
    let target = job.step;
    let running = !job.state.is_terminal();
    if running && target == 0 {
        return Ok(curves);
    }
    let mut events = client.watch(job_id, 0).await?;
    let mut reached = false;
    loop {
        let wait = match (running, reached) {
            (false, _) => None,
            (true, false) => Some(QUIET),
            (true, true) => Some(SETTLE),
        };
        let event = match wait {
            None => events.next().await,
            Some(limit) => match tokio::time::timeout(limit, events.next()).await {
                Ok(event) => event,
                Err(_) => break,
            },
        };
        match event {
            Some(Ok(JobEvent::Step(m))) => {
                if running && m.step > target {
                    break;
                }
                reached |= m.step >= target;
                curves.train.push(TrainPoint { step: m.step, wall_time_s: m.wall_time_s, loss: m.loss });
            }
            Some(Ok(JobEvent::Evaluation(e))) => {
                if running && e.step > target {
                    break;
                }
                curves.test.push(TestPoint { step: e.step, wall_time_s: e.wall_time_s, accuracy: e.test_accuracy });
                if let Some(accuracy) = e.validation_accuracy {
                    curves.validation.push(TestPoint { step: e.step, wall_time_s: e.wall_time_s, accuracy });
                }
            }
            Some(Ok(JobEvent::State(j))) if j.state.is_terminal() => break,
            Some(Ok(JobEvent::State(_))) => {}
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(curves)
}

pub async fn plot(client: &Client, args: &PlotArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut all = Vec::with_capacity(args.jobs.len());
    for job in &args.jobs {
        all.push(curves(client, &super::resolve::job_id(client, job).await?).await?);
    }
    render(&args.output, &all, (args.width, args.height)).map_err(CliError::Other)?;
    let points: usize = all.iter().map(|c| c.train.len()).sum();
    let evals: usize = all.iter().map(|c| c.test.len()).sum();
    writeln!(
        out,
        "wrote {} ({} job{}, {points} updates, {evals} evaluations)",
        args.output.display(),
        all.len(),
        if all.len() == 1 { "" } else { "s" }
    )?;
    Ok(())
}
