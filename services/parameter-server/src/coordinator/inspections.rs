//! Inspections of a job's own data. The server never reads a job's data: a
//! submission (or an InspectData call) hands the data's locations to a
//! worker, which lists them as the job's workers will (and, when asked,
//! decodes every image) and pushes back its report, whose summary the job
//! is planned from (or the first problem, which the call returns).
//! An inspection is leased like a task: a lease not renewed lapses and the
//! next worker that asks takes it; one given back with an error three
//! times ends the submission with that error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rwp_scheduler::MAX_TASK_FAILURES;
use rwp_spec::work::{Inspection, InspectionPush};
use rwp_spec::{DataReport, DataSource, DatasetKind};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Coordinator;
use crate::domain::now_unix_ms;
use crate::error::ServerError;

/// Lease ids of inspections start with this; the scheduler's never do.
const LEASE_PREFIX: &str = "inspect-";

type Reply = oneshot::Sender<Result<DataReport, String>>;

#[derive(Debug)]
struct Pending {
    dataset: DatasetKind,
    data: DataSource,
    decode: bool,
    /// The worker holding the lease, and when the lease lapses.
    holder: Option<(String, Instant)>,
    failures: u32,
    reply: Reply,
}

/// The inspections under way, by lease id.
#[derive(Debug, Default)]
pub(super) struct Inspections {
    issued: u64,
    pending: BTreeMap<String, Pending>,
}

impl Inspections {
    fn add(
        &mut self,
        dataset: DatasetKind,
        data: DataSource,
        decode: bool,
    ) -> (String, oneshot::Receiver<Result<DataReport, String>>) {
        self.issued += 1;
        let id = format!("{LEASE_PREFIX}{}-{}", std::process::id(), self.issued);
        let (reply, receiver) = oneshot::channel();
        self.pending.insert(id.clone(), Pending { dataset, data, decode, holder: None, failures: 0, reply });
        (id, receiver)
    }

    /// Leases the oldest inspection no worker holds (or whose lease lapsed).
    pub(super) fn lease(&mut self, worker: &str, now: Instant, timeout: Duration) -> Option<Inspection> {
        let (id, pending) =
            self.pending.iter_mut().find(|(_, p)| p.holder.as_ref().is_none_or(|(_, deadline)| *deadline <= now))?;
        if let Some((lapsed, _)) = &pending.holder {
            warn!(lease = %id, worker = %lapsed, "inspection lease lapsed; re-issuing");
        }
        let deadline = now + timeout;
        pending.holder = Some((worker.to_owned(), deadline));
        Some(Inspection {
            lease_id: id.clone(),
            dataset: pending.dataset,
            data: pending.data.clone(),
            deadline_unix_ms: now_unix_ms() + timeout.as_millis() as i64,
            decode: pending.decode,
        })
    }

    /// Whether `lease` names an inspection (held or not).
    pub(super) fn owns(lease: &str) -> bool {
        lease.starts_with(LEASE_PREFIX)
    }

    fn held(&mut self, worker: &str, lease: &str) -> Result<&mut Pending, ServerError> {
        match self.pending.get_mut(lease) {
            Some(p) if p.holder.as_ref().is_some_and(|(w, _)| w == worker) => Ok(p),
            Some(_) => Err(ServerError::StaleTask(format!("inspection {lease} is held by another worker"))),
            None => Err(ServerError::UnknownLease(lease.to_owned())),
        }
    }

    pub(super) fn renew(
        &mut self,
        worker: &str,
        lease: &str,
        now: Instant,
        timeout: Duration,
    ) -> Result<Instant, ServerError> {
        let pending = self.held(worker, lease)?;
        let deadline = now + timeout;
        pending.holder = Some((worker.to_owned(), deadline));
        Ok(deadline)
    }

    /// Gives an inspection back: at once to the next worker, or with an
    /// error counted (the third ends the submission with it).
    pub(super) fn release(&mut self, worker: &str, lease: &str, error: Option<&str>) -> Result<(), ServerError> {
        let pending = self.held(worker, lease)?;
        pending.holder = None;
        let Some(error) = error else { return Ok(()) };
        pending.failures += 1;
        if pending.failures >= MAX_TASK_FAILURES {
            let pending = self.pending.remove(lease).expect("held above");
            let reason =
                format!("inspecting the data failed {} times; last error (worker {worker}): {error}", pending.failures);
            let _ = pending.reply.send(Err(reason));
        }
        Ok(())
    }

    pub(super) fn complete(&mut self, push: InspectionPush) -> Result<(), ServerError> {
        self.held(&push.worker_id, &push.lease_id)?;
        let pending = self.pending.remove(&push.lease_id).expect("held above");
        let _ = pending.reply.send(push.result);
        Ok(())
    }

    fn forget(&mut self, lease: &str) {
        self.pending.remove(lease);
    }

    /// Whether a worker holds `lease` now.
    fn is_held(&self, lease: &str) -> bool {
        self.pending.get(lease).is_some_and(|p| p.holder.is_some())
    }
}

/// Forgets an inspection whose caller stopped waiting (a client that went
/// away, a timeout), so that no worker takes it after all.
struct Forget<'a> {
    coordinator: &'a Coordinator,
    lease: Option<String>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.coordinator.lock().inspections.forget(&lease);
        }
    }
}

impl Coordinator {
    /// What a worker finds inspecting `data` as a `dataset` (listing it,
    /// and with `decode` reading and decoding every image); the first
    /// problem it finds is an invalid spec. A worker must take it within
    /// `data_inspection_timeout_ms`; a decoding one may then take as long
    /// as it needs, renewing its lease.
    pub(super) async fn inspect_data(
        &self,
        dataset: DatasetKind,
        data: &DataSource,
        decode: bool,
    ) -> Result<DataReport, ServerError> {
        let (lease, found) = self.lock().inspections.add(dataset, data.clone(), decode);
        let mut forget = Forget { coordinator: self, lease: Some(lease.clone()) };
        info!(lease, %dataset, train = %data.train, decode, "inspecting data on a worker");
        self.work.notify_waiters();
        let limit = Duration::from_millis(self.config.data_inspection_timeout_ms);
        let mut found = found;
        let outcome = match tokio::time::timeout(limit, &mut found).await {
            Err(_) if decode && self.lock().inspections.is_held(&lease) => found.await.map_err(|_| ()),
            Err(_) => {
                return Err(ServerError::DataNotInspected(format!(
                    "no worker inspected the data within {} ms (data_inspection_timeout_ms): the server never \
                     reads a job's data itself; start workers, or try again once they are up",
                    limit.as_millis()
                )))
            }
            Ok(outcome) => outcome.map_err(|_| ()),
        };
        forget.lease = None;
        match outcome {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(problem)) => Err(ServerError::InvalidSpec(problem)),
            Err(()) => Err(ServerError::ShuttingDown),
        }
    }

    /// What a worker found inspecting data.
    pub fn push_inspection(&self, push: InspectionPush) -> Result<(), ServerError> {
        let outcome = match &push.result {
            Ok(r) => format!(
                "{} classes, {} training and {} test samples, {} unreadable",
                r.summary.classes,
                r.summary.train,
                r.summary.test,
                r.unreadable.len()
            ),
            Err(problem) => problem.clone(),
        };
        info!(lease = %push.lease_id, worker = %push.worker_id, outcome, "data inspected");
        self.lock().inspections.complete(push)
    }
}
