//! One task's slot in an update or an evaluation: its state, its lease,
//! its result and its failures.

use std::time::{Duration, Instant};

use super::{Gauges, ScheduleError};

#[derive(Debug)]
pub(crate) enum Status {
    Pending,
    Leased { lease: String, deadline: Instant },
    Done,
}

#[derive(Debug)]
pub(crate) struct Slot<T, R> {
    pub(crate) planned: T,
    /// When the task became ready for a worker.
    ready_since: Instant,
    pub(crate) status: Status,
    pub(crate) result: Option<R>,
    failures: u32,
    leased_at: Option<Instant>,
}

impl<T, R> Slot<T, R> {
    pub(crate) fn new(planned: T, now: Instant) -> Self {
        Self { planned, ready_since: now, status: Status::Pending, result: None, failures: 0, leased_at: None }
    }

    /// Whether a worker may lease the task now (never leased, given back, or lapsed).
    pub(crate) fn ready(&self, now: Instant) -> bool {
        match &self.status {
            Status::Pending => true,
            Status::Leased { deadline, .. } => *deadline <= now,
            Status::Done => false,
        }
    }

    /// Whether no worker has ever leased the task.
    pub(crate) fn never_leased(&self) -> bool {
        self.leased_at.is_none()
    }

    /// Leases the task as `id`; returns the lease's deadline, how long the
    /// task waited and the lapsed lease it replaces.
    pub(crate) fn take(&mut self, id: &str, now: Instant, timeout: Duration) -> (Instant, Duration, Option<String>) {
        let (ready_since, replaces) = match &self.status {
            Status::Leased { lease, deadline } => (*deadline, Some(lease.clone())),
            _ => (self.ready_since, None),
        };
        let deadline = now + timeout;
        self.status = Status::Leased { lease: id.to_owned(), deadline };
        self.leased_at = Some(now);
        (deadline, now.saturating_duration_since(ready_since), replaces)
    }

    /// Extends the lease `lease` if it still holds the task.
    pub(crate) fn renew(&mut self, lease: &str, deadline: Instant) -> Result<Instant, ScheduleError> {
        match &mut self.status {
            Status::Leased { lease: current, deadline: due } if current == lease => {
                *due = deadline;
                Ok(deadline)
            }
            Status::Done => Ok(deadline),
            _ => Err(ScheduleError::Stale(format!("lease {lease} is no longer held (expired, re-issued or done)"))),
        }
    }

    /// Gives the lease back; with an error, counts the failure. `None`:
    /// the lease no longer held the task.
    pub(crate) fn release(&mut self, lease: &str, error: Option<&str>) -> Option<u32> {
        if !matches!(&self.status, Status::Leased { lease: current, .. } if current == lease) {
            return None;
        }
        self.status = Status::Pending;
        if error.is_some() {
            self.failures += 1;
        }
        Some(self.failures)
    }

    /// Keeps the result; returns how long the task took from its lease.
    pub(crate) fn fill(&mut self, result: R, now: Instant) -> Option<Duration> {
        self.status = Status::Done;
        self.result = Some(result);
        self.leased_at.map(|at| now.saturating_duration_since(at))
    }

    pub(crate) fn count(&self, now: Instant, gauges: &mut Gauges) {
        match &self.status {
            Status::Pending => gauges.pending += 1,
            Status::Leased { deadline, .. } if *deadline <= now => gauges.pending += 1,
            Status::Leased { .. } => gauges.leased += 1,
            Status::Done => {}
        }
    }
}

/// The longest of `slowest` and `took`.
pub(crate) fn slowest(slowest: Option<Duration>, took: Option<Duration>) -> Option<Duration> {
    match (slowest, took) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}
