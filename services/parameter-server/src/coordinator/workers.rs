//! The workers the server knows, for `rwp workers` and the job logs: the
//! name and device each registered with, when it was last heard from, the
//! task it computes and how many results it returned. Whether jobs wait
//! for want of any connected worker is decided here too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rwp_spec::eval::EvalSplit;
use rwp_spec::work::Work;
use rwp_spec::Role;

use super::Coordinator;
use crate::domain::{now_unix_ms, JobEvent, LogKind, Principal, WorkerInfo};
use crate::error::ServerError;

/// A worker not heard from for this long is no longer listed.
pub(super) const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What a running job waits for when no worker is connected.
pub(super) const NO_WORKER: &str = "no worker is connected (start one: rwp-worker --server URL)";

#[derive(Debug)]
struct Entry {
    name: String,
    device: String,
    registered_unix_ms: i64,
    last_seen: Instant,
    last_seen_unix_ms: i64,
    /// Lease calls of this worker under way (it waits for work).
    waiting: u32,
    tasks_done: u64,
    /// The lease it holds now: (lease, job, task).
    current: Option<(String, String, String)>,
}

/// Every worker registered with this server process.
#[derive(Debug, Default)]
pub(super) struct Workers {
    entries: BTreeMap<String, Entry>,
}

/// A task in words: `update 7, clean shard 1/2`, `evaluation of step 14
/// (test shard 2/5)`.
#[must_use]
pub(super) fn describe(work: &Work) -> String {
    match work {
        Work::Gradient { task, .. } => {
            let role = match task.role {
                Role::Clean => "clean",
                Role::Perturbed => "perturbed",
                Role::Sam => "sam",
            };
            format!("update {}, {role} shard {}/{}", task.step + 1, task.shard + 1, task.num_shards)
        }
        Work::Evaluation(task) => {
            let split = match task.split {
                EvalSplit::Test => "test",
                EvalSplit::Validation => "validation",
            };
            format!("evaluation of step {} ({split} shard {}/{})", task.version, task.shard + 1, task.num_shards)
        }
    }
}

impl Workers {
    pub(super) fn register(&mut self, id: &str, name: &str, device: &str, now: Instant) {
        self.entries.insert(
            id.to_owned(),
            Entry {
                name: name.to_owned(),
                device: device.to_owned(),
                registered_unix_ms: now_unix_ms(),
                last_seen: now,
                last_seen_unix_ms: now_unix_ms(),
                waiting: 0,
                tasks_done: 0,
                current: None,
            },
        );
    }

    /// The worker's name as logs show it: its registered name, else its id.
    #[must_use]
    pub(super) fn name(&self, id: &str) -> String {
        self.entries
            .get(id)
            .map_or_else(|| id.to_owned(), |w| if w.name.is_empty() { id.to_owned() } else { w.name.clone() })
    }

    pub(super) fn seen(&mut self, id: &str, now: Instant) {
        if let Some(w) = self.entries.get_mut(id) {
            w.last_seen = now;
            w.last_seen_unix_ms = now_unix_ms();
        }
    }

    /// A lease call of the worker starts (`true`) or ends.
    pub(super) fn waiting(&mut self, id: &str, starts: bool, now: Instant) {
        self.seen(id, now);
        if let Some(w) = self.entries.get_mut(id) {
            w.waiting = if starts { w.waiting + 1 } else { w.waiting.saturating_sub(1) };
        }
    }

    /// The worker that holds `lease` as its current task.
    #[must_use]
    pub(super) fn holder_of(&self, lease: &str) -> Option<String> {
        self.entries
            .iter()
            .find(|(_, w)| w.current.as_ref().is_some_and(|(l, _, _)| l == lease))
            .map(|(id, _)| id.clone())
    }

    pub(super) fn leased(&mut self, id: &str, lease: &str, job: &str, work: &Work) {
        if let Some(w) = self.entries.get_mut(id) {
            w.current = Some((lease.to_owned(), job.to_owned(), describe(work)));
        }
    }

    /// The worker's lease ended by its own call (a push, `done` when its
    /// result was accepted, or a release): it was heard from.
    pub(super) fn lease_ended(&mut self, id: &str, lease: &str, done: bool, now: Instant) {
        self.seen(id, now);
        self.lease_gone(id, lease, done);
    }

    /// The worker's lease lapsed and went to another worker: the worker
    /// was not heard from (it stays lost).
    pub(super) fn lease_lapsed(&mut self, id: &str, lease: &str) {
        self.lease_gone(id, lease, false);
    }

    fn lease_gone(&mut self, id: &str, lease: &str, done: bool) {
        if let Some(w) = self.entries.get_mut(id) {
            if w.current.as_ref().is_some_and(|(l, _, _)| l == lease) {
                w.current = None;
            }
            if done {
                w.tasks_done += 1;
            }
        }
    }

    fn is_connected(w: &Entry, now: Instant, timeout: Duration) -> bool {
        w.waiting > 0 || now.saturating_duration_since(w.last_seen) <= timeout
    }

    /// Whether any worker is connected (heard from within `timeout`, or
    /// waiting for work now).
    #[must_use]
    pub(super) fn any_connected(&self, now: Instant, timeout: Duration) -> bool {
        self.entries.values().any(|w| Self::is_connected(w, now, timeout))
    }

    /// The workers as `principal` may see them (the job and task only for
    /// jobs it may see, by `may_see`), dropping those long gone.
    pub(super) fn list(
        &mut self,
        now: Instant,
        timeout: Duration,
        principal: &Principal,
        may_see: impl Fn(&Principal, &str) -> bool,
    ) -> Vec<WorkerInfo> {
        self.entries.retain(|_, w| now.saturating_duration_since(w.last_seen) < FORGET_AFTER || w.waiting > 0);
        self.entries
            .iter()
            .map(|(id, w)| {
                let current = w.current.as_ref().filter(|(_, job, _)| may_see(principal, job));
                WorkerInfo {
                    id: id.clone(),
                    name: w.name.clone(),
                    device: w.device.clone(),
                    connected: Self::is_connected(w, now, timeout),
                    registered_unix_ms: w.registered_unix_ms,
                    last_seen_unix_ms: w.last_seen_unix_ms,
                    job: current.map(|(_, job, _)| job.clone()),
                    task: current.map(|(_, _, task)| task.clone()),
                    tasks_done: w.tasks_done,
                }
            })
            .collect()
    }
}

/// How often the server checks whether any worker is connected.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

impl Coordinator {
    /// The workers as `principal` may see them.
    pub fn workers(&self, principal: &Principal) -> Result<Vec<WorkerInfo>, ServerError> {
        self.admit(principal)?;
        let timeout = Duration::from_millis(self.config.lease_timeout_ms);
        let mut guard = self.lock();
        let s = &mut *guard;
        let jobs = &s.jobs;
        let may_see = |p: &Principal, job: &str| jobs.get(job).is_some_and(|j| p.can_see(&j.record));
        Ok(s.workers.list(Instant::now(), timeout, principal, may_see))
    }

    /// Watches whether any worker is connected: while none is, running
    /// jobs wait (their logs and watchers are told), and the time is not
    /// counted as their training time.
    pub(super) fn spawn_worker_watch(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let mut stopping = self.stopping();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                let Some(coordinator) = this.upgrade() else { return };
                coordinator.check_workers(Instant::now());
            }
        });
    }

    fn check_workers(&self, now: Instant) {
        let timeout = Duration::from_millis(self.config.lease_timeout_ms);
        let mut guard = self.lock();
        let s = &mut *guard;
        let connected = s.workers.any_connected(now, timeout);
        let (kind, message) = match (connected, s.no_workers_since) {
            (false, None) => {
                s.no_workers_since = Some(now);
                (LogKind::NoWorkers, format!("waiting: {NO_WORKER}; the time is not counted as training time"))
            }
            (true, Some(since)) => {
                s.no_workers_since = None;
                for entry in s.jobs.entries_mut() {
                    if let Some(run) = entry.run.as_mut() {
                        run.idle += now.saturating_duration_since(since.max(run.started));
                    }
                }
                (LogKind::WorkersBack, "a worker is connected: training goes on".to_owned())
            }
            _ => return,
        };
        let waiting = s.no_workers_since.map(|_| NO_WORKER.to_owned());
        for entry in s.jobs.entries().filter(|j| j.run.is_some()) {
            self.logs.append(&entry.record.id, kind, None, message.clone());
            let mut job = entry.record.job.clone();
            job.waiting.clone_from(&waiting);
            let _ = entry.events.send(JobEvent::State(Box::new(job)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rwp_spec::Task;

    #[test]
    fn workers_are_connected_while_heard_from_or_waiting_and_forgotten_later() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut workers = Workers::default();
        assert!(!workers.any_connected(t0, timeout));
        workers.register("w-1", "gpu-0", "cuda:0", t0);
        workers.register("w-2", "", "cpu", t0);
        assert_eq!(
            (workers.name("w-1"), workers.name("w-2"), workers.name("w-9")),
            ("gpu-0".into(), "w-2".into(), "w-9".into())
        );
        let work = Work::Gradient {
            task: Task { step: 6, role: Role::Clean, shard: 0, num_shards: 2, noise_seed: None, sigma: 0.0 },
            returns_buffers: true,
        };
        assert_eq!(describe(&work), "update 7, clean shard 1/2");
        workers.leased("w-1", "l-1", "job-a", &work);
        let anyone = |_: &Principal, _: &str| true;
        let listed = workers.list(t0, timeout, &Principal::anonymous(), anyone);
        assert_eq!(listed[0].task.as_deref(), Some("update 7, clean shard 1/2"));
        assert_eq!(listed[0].job.as_deref(), Some("job-a"));
        let nobody = |_: &Principal, _: &str| false;
        assert_eq!(workers.list(t0, timeout, &Principal::anonymous(), nobody)[0].job, None, "another user's job");
        workers.lease_ended("w-1", "l-1", true, t0);
        let listed = workers.list(t0, timeout, &Principal::anonymous(), anyone);
        assert_eq!((listed[0].tasks_done, listed[0].task.clone()), (1, None));

        let later = t0 + Duration::from_secs(3);
        assert!(!workers.any_connected(later, timeout));
        // A lease of a lost worker that lapses and goes to another worker
        // does not make it heard from again.
        workers.leased("w-1", "l-2", "job-a", &work);
        workers.lease_lapsed("w-1", "l-2");
        let listed = workers.list(later, timeout, &Principal::anonymous(), anyone);
        assert_eq!((listed[0].connected, listed[0].task.clone()), (false, None));
        workers.waiting("w-2", true, t0);
        assert!(workers.any_connected(later, timeout), "a worker waiting for work is connected");
        let gone = t0 + FORGET_AFTER + Duration::from_secs(1);
        let listed = workers.list(gone, timeout, &Principal::anonymous(), anyone);
        assert_eq!(listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["w-2"]);
        assert!(listed[0].connected);
    }
}
