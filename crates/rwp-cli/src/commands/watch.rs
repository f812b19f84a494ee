//! `rwp watch`: a progress bar (or plain lines) until the job ends.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rwp_sdk::{Client, Evaluation, Job, JobEvent, JobState, StepMetrics};
use tokio_stream::StreamExt;

use crate::error::{CliError, EXIT_CANCELLED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_STOPPED};
use crate::format::{average_rate, eta_seconds, format_duration, metric, printable, RateMeter};

/// How a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
    /// Stopped early by its sweep's early stopping.
    Stopped,
    /// Ctrl-C stopped the watch; the job goes on.
    Interrupted,
}

impl Outcome {
    #[must_use]
    pub fn of(state: JobState) -> Self {
        match state {
            JobState::Succeeded => Outcome::Succeeded,
            JobState::Cancelled => Outcome::Cancelled,
            JobState::Stopped => Outcome::Stopped,
            // A watch ends only on a terminal state; a running one cannot reach here.
            JobState::Failed | JobState::Running | JobState::Paused => Outcome::Failed,
        }
    }

    /// 0 succeeded, 1 failed, 3 cancelled, 4 stopped early, 130 interrupted.
    #[must_use]
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Succeeded => 0,
            Outcome::Failed => EXIT_ERROR,
            Outcome::Cancelled => EXIT_CANCELLED,
            Outcome::Stopped => EXIT_STOPPED,
            Outcome::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// The last line of a watch, on stdout, stable for scripts:
/// `job ID STATE: step S/T, test accuracy A, wall W s, R updates/s`.
#[must_use]
pub fn summary_line(job: &Job, seen_step: Option<&StepMetrics>, seen_eval: Option<&Evaluation>) -> String {
    let last_step = job.last_step.as_ref().or(seen_step);
    let last_eval = job.last_evaluation.as_ref().or(seen_eval);
    let accuracy = last_eval.map_or_else(|| "n/a".to_owned(), |e| metric(Some(e.test_accuracy), 4));
    let wall = last_step.map(|m| m.wall_time_s).filter(|w| w.is_finite());
    let rate = wall.and_then(|w| average_rate(job.step, w));
    format!(
        "job {} {}: step {}/{}, test accuracy {accuracy}, wall {}, {} updates/s",
        job.id,
        job.state,
        job.step,
        job.total_updates,
        wall.map_or_else(|| "n/a".to_owned(), |w| format!("{w:.1}s")),
        rate.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}")),
    )
}

/// The bar's message: `loss 1.2346  acc 0.5000  5.83 upd/s  ETA 20.6s`.
#[must_use]
pub fn progress_message(m: &StepMetrics, rate: Option<f64>, remaining: u64) -> String {
    format!(
        "loss {}  acc {}  {} upd/s  ETA {}",
        metric(Some(m.loss), 4),
        metric(Some(m.accuracy), 4),
        metric(rate, 2),
        eta_seconds(remaining, rate).map_or_else(|| "-".to_owned(), format_duration)
    )
}

/// An evaluation, printed above the bar.
#[must_use]
pub fn evaluation_line(e: &Evaluation) -> String {
    let test = format!(
        "test after step {} (epoch {}): accuracy {}, loss {}",
        e.step,
        e.epoch,
        metric(Some(e.test_accuracy), 4),
        metric(Some(e.test_loss), 4)
    );
    match (e.validation_accuracy, e.validation_loss) {
        (Some(accuracy), Some(loss)) => {
            format!("{test}; validation: accuracy {}, loss {}", metric(Some(accuracy), 4), metric(Some(loss), 4))
        }
        _ => test,
    }
}

/// Where progress goes: a bar on a terminal, plain lines every `interval` elsewhere.
struct View {
    job_id: String,
    bar: Option<ProgressBar>,
    interval: Duration,
    last_line: Option<Instant>,
    total: u64,
    meter: RateMeter,
    last_step: Option<StepMetrics>,
    last_eval: Option<Evaluation>,
}

impl View {
    fn new(job: &Job, interval: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(job.total_updates), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {pos}/{len}  {msg}")
                .map_or_else(|_| ProgressStyle::default_bar(), |s| s.progress_chars("=> "));
            bar.set_style(style);
            bar.set_prefix(printable(&job.id).into_owned());
            bar.set_position(job.step);
            bar.set_message("waiting for the next update");
            bar
        });
        Self {
            job_id: job.id.clone(),
            bar,
            interval,
            last_line: None,
            total: job.total_updates,
            meter: RateMeter::new(20),
            last_step: job.last_step.clone(),
            last_eval: job.last_evaluation.clone(),
        }
    }

    fn step(&mut self, m: StepMetrics) {
        let done = m.step;
        self.meter.record(done, m.wall_time_s);
        let rate = self.meter.rate();
        let message = progress_message(&m, rate, self.total.saturating_sub(done));
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(message);
            }
            None => {
                if self.last_line.is_none_or(|t| t.elapsed() >= self.interval) {
                    self.last_line = Some(Instant::now());
                    eprintln!("job {}: step {done}/{}  {message}", printable(&self.job_id), self.total);
                }
            }
        }
        self.last_step = Some(m);
    }

    fn evaluation(&mut self, e: Evaluation) {
        self.note(&evaluation_line(&e));
        self.last_eval = Some(e);
    }

    fn note(&self, line: &str) {
        let line = printable(line);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Leaves the bar as it is (watch interrupted or failed).
    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Follows `job_id` until it ends or Ctrl-C; prints the summary line on `out`.
pub async fn watch(
    client: &Client,
    job_id: &str,
    interval: Duration,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let job = client.get(job_id).await?;
    let mut view = View::new(&job, interval);
    view.note(&format!(
        "watching job {} ({}{} on {}, {}): step {}/{}",
        job.id,
        if job.name.is_empty() { String::new() } else { format!("{}: ", job.name) },
        job.spec.method,
        job.spec.dataset,
        job.spec.model,
        job.step,
        job.total_updates
    ));
    if let Some(e) = &job.last_evaluation {
        view.note(&evaluation_line(e));
    }
    if let Some(why) = &job.waiting {
        view.note(&format!("job {} waits: {why}; the time is not counted as training time", job.id));
    }
    let mut events = client.watch(job_id, job.step).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut ctrl_c_live = true;
    let last = loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(JobEvent::Step(m))) => view.step(m),
                Some(Ok(JobEvent::Evaluation(e))) => view.evaluation(e),
                Some(Ok(JobEvent::State(j))) if j.state.is_terminal() => break *j,
                Some(Ok(JobEvent::State(j))) => view.note(&match (&j.waiting, &j.error) {
                    (Some(why), _) => format!("job {} waits: {why}; the time is not counted as training time", j.id),
                    (None, Some(why)) => format!("job {} is {}: {why}", j.id, j.state),
                    (None, None) => format!("job {} is {}", j.id, j.state),
                }),
                Some(Err(e)) => {
                    view.abandon();
                    return Err(e.into());
                }
                None => {
                    view.abandon();
                    return Err(CliError::Other(format!("the watch of job {job_id} ended before the job did")));
                }
            },
            signal = &mut ctrl_c, if ctrl_c_live => match signal {
                Ok(()) => {
                    view.abandon();
                    eprintln!("stopped watching job {job_id}; it goes on (`rwp cancel {job_id}` stops it)");
                    return Ok(Outcome::Interrupted);
                }
                // No signal handler: watch without one.
                Err(_) => ctrl_c_live = false,
            },
        }
    };
    view.finish();
    let outcome = Outcome::of(last.state);
    writeln!(out, "{}", summary_line(&last, view.last_step.as_ref(), view.last_eval.as_ref()))?;
    out.flush()?;
    if outcome == Outcome::Failed {
        let reason = last.error.as_deref().unwrap_or("no reason given");
        eprintln!("error: job {} failed: {}", printable(&last.id), printable(reason));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::jobs::tests::sample_job;

    #[test]
    fn outcomes_map_to_exit_codes() {
        assert_eq!(Outcome::of(JobState::Succeeded).exit_code(), 0);
        assert_eq!(Outcome::of(JobState::Failed).exit_code(), 1);
        assert_eq!(Outcome::of(JobState::Cancelled).exit_code(), 3);
        assert_eq!(Outcome::Interrupted.exit_code(), 130);
    }

    #[test]
    fn the_summary_line_is_stable() {
        let mut job = sample_job();
        job.state = JobState::Succeeded;
        job.step = 240;
        job.last_step.as_mut().unwrap().wall_time_s = 41.16;
        job.last_evaluation.as_mut().unwrap().test_accuracy = 0.81234;
        assert_eq!(
            summary_line(&job, None, None),
            "job j-000001 succeeded: step 240/240, test accuracy 0.8123, wall 41.2s, 5.83 updates/s"
        );
        // What the watch saw fills in for what the record lacks.
        let (seen_step, seen_eval) = (job.last_step.take(), job.last_evaluation.take());
        assert_eq!(
            summary_line(&job, seen_step.as_ref(), seen_eval.as_ref()),
            summary_line(&sample_done(), None, None)
        );
        job.step = 0;
        job.state = JobState::Cancelled;
        assert_eq!(
            summary_line(&job, None, None),
            "job j-000001 cancelled: step 0/240, test accuracy n/a, wall n/a, n/a updates/s"
        );
    }

    fn sample_done() -> Job {
        let mut job = sample_job();
        job.state = JobState::Succeeded;
        job.step = 240;
        job.last_step.as_mut().unwrap().wall_time_s = 41.16;
        job.last_evaluation.as_mut().unwrap().test_accuracy = 0.81234;
        job
    }

    #[test]
    fn progress_and_evaluation_lines() {
        let m = sample_job().last_step.unwrap();
        assert_eq!(progress_message(&m, Some(4.0), 120), "loss 1.2346  acc 0.5000  4.00 upd/s  ETA 30.0s");
        assert_eq!(progress_message(&m, None, 120), "loss 1.2346  acc 0.5000  - upd/s  ETA -");
        let e = sample_job().last_evaluation.unwrap();
        assert_eq!(evaluation_line(&e), "test after step 120 (epoch 15): accuracy 0.6123, loss 1.1000");
    }
}
