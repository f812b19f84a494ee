//! The server's domain types: what a job is, what happened at each update.
//! Free of transport; the shared ones (a job as reported, its events, a
//! sweep as reported, a stored model file) come from `rwp-spec`, and
//! `rwp-proto` converts them to and from wire messages.

use std::ops::{Deref, DerefMut};

use rwp_spec::sweep::{ParamValue, RungResult, SweepSpec, SweepState};
use rwp_spec::JobSpec;
use serde::{Deserialize, Serialize};

use crate::error::ServerError;

pub use rwp_spec::job::{
    Evaluation, Job, JobEvent, JobState, LogEntry, LogKind, StepMetrics, SubmitOptions, WorkerInfo,
};
pub use rwp_spec::report::{Sweep, Trial};
pub use rwp_spec::StoredModel;

/// The durable record of a job: the job as clients see it, and the
/// server's own bookkeeping beside it, in one flat JSON object (the same
/// keys as before the job part was shared; older records load).
///
/// It derefs to its [`Job`], so `record.state`, `record.step = ...` read
/// and write the job's fields: a record is a job plus what only the
/// server needs, and the coordinator works on it as on a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    #[serde(flatten)]
    pub job: Job,
    /// Running time accumulated before the current server process took the job over.
    #[serde(default)]
    pub wall_time_before_s: f64,
    /// The job's TensorBoard run directory under `<data_dir>/tensorboard`:
    /// `<name>-<id>`, or `<sweep name>-<sweep id>/<trial>-<id>` for a sweep's
    /// trial; chosen at submit and kept, so a resumed job writes on in the
    /// same run. Unset in records from before it was chosen: the job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensorboard_run: Option<String>,
}

impl JobRecord {
    /// [`Self::tensorboard_run`], or the job's id for older records.
    #[must_use]
    pub fn tensorboard_run(&self) -> &str {
        self.tensorboard_run.as_deref().unwrap_or(&self.job.id)
    }
}

impl Deref for JobRecord {
    type Target = Job;
    fn deref(&self) -> &Job {
        &self.job
    }
}

impl DerefMut for JobRecord {
    fn deref_mut(&mut self) -> &mut Job {
        &mut self.job
    }
}

/// The durable record of a sweep: its spec, its generated trials (each
/// linked to its job once started) and the early-stopping results so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub id: String,
    pub name: String,
    pub spec: SweepSpec,
    pub state: SweepState,
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    pub owner: Option<String>,
    /// The owner's running-job limit when the sweep was created: a trial
    /// waits while the owner has that many jobs running (trials included).
    /// `None`: no limit (and sweeps recorded before trials were counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_jobs: Option<u32>,
    pub trials: Vec<TrialRecord>,
    /// Every rung judgement made, in the order made.
    pub rungs: Vec<RungResult>,
}

/// One trial of a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub index: u32,
    pub params: Vec<(String, ParamValue)>,
    pub spec: JobSpec,
    /// Set when the trial's job is started.
    pub job_id: Option<String>,
}

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallerRole {
    /// Submits jobs; sees and controls its own.
    User,
    /// Sees and controls every job.
    Admin,
    /// Computes tasks: the worker API only.
    Worker,
    /// Every caller of a server without a tokens file (development): the
    /// whole API, owning nothing. No token has this role.
    #[serde(skip)]
    Anonymous,
}

impl CallerRole {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            CallerRole::User => "user",
            CallerRole::Admin => "admin",
            CallerRole::Worker => "worker",
            CallerRole::Anonymous => "anonymous",
        }
    }
}

/// The two APIs of the server, which roles are allowed apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `rwp.v1.JobService`: users and admins.
    Jobs,
    /// `rwp.v1.WorkerService`: workers.
    Workers,
}

/// How fast a principal may call the job API: a token bucket of `burst`
/// requests, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// What one principal may use; `None`: unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Jobs it may have running at once.
    pub max_active_jobs: Option<u32>,
    /// Its request rate on the job API.
    pub rate: Option<Rate>,
}

/// Who a request comes from, as the authentication layer resolved it.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// The token's name (a person, a team, a worker pool).
    pub name: String,
    pub role: CallerRole,
    pub limits: Limits,
}

impl Principal {
    /// The caller of a server that runs without authentication: no limits
    /// but the server's own.
    #[must_use]
    pub fn anonymous() -> Self {
        Self { name: "anonymous".to_owned(), role: CallerRole::Anonymous, limits: Limits::default() }
    }

    /// Whether this principal's role may call `api`.
    pub fn may_call(&self, api: Api) -> Result<(), ServerError> {
        let allowed = match (self.role, api) {
            (CallerRole::Anonymous, _)
            | (CallerRole::User | CallerRole::Admin, Api::Jobs)
            | (CallerRole::Worker, Api::Workers) => true,
            (CallerRole::User | CallerRole::Admin, Api::Workers) | (CallerRole::Worker, Api::Jobs) => false,
        };
        if allowed {
            return Ok(());
        }
        let (api, who) = match api {
            Api::Jobs => ("rwp.v1.JobService", "users and admins"),
            Api::Workers => ("rwp.v1.WorkerService", "workers"),
        };
        Err(ServerError::PermissionDenied(format!(
            "token '{}' has the role {} and may not call {api}, which is for {who}",
            self.name,
            self.role.name()
        )))
    }

    /// Whether this principal may see and control `job`: its owner, an
    /// admin, or anyone on a server without authentication.
    #[must_use]
    pub fn can_see(&self, job: &JobRecord) -> bool {
        self.can_see_owned_by(job.owner.as_deref())
    }

    /// Whether this principal may see and control what `owner` owns (a job
    /// or a sweep).
    #[must_use]
    pub fn can_see_owned_by(&self, owner: Option<&str>) -> bool {
        match self.role {
            CallerRole::Admin | CallerRole::Anonymous => true,
            CallerRole::User => owner == Some(self.name.as_str()),
            CallerRole::Worker => false,
        }
    }

    /// The owner recorded for a job this principal submits.
    #[must_use]
    pub fn owner(&self) -> Option<String> {
        (self.role != CallerRole::Anonymous).then(|| self.name.clone())
    }
}

#[must_use]
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(owner: Option<&str>) -> JobRecord {
        JobRecord {
            job: Job {
                id: "job-1".into(),
                name: String::new(),
                spec: JobSpec::reference(rwp_spec::Method::Sgd),
                state: JobState::Running,
                step: 0,
                total_updates: 7,
                updates_per_epoch: 7,
                error: None,
                created_unix_ms: 0,
                updated_unix_ms: 0,
                skipped_updates: 0,
                skipped_samples: 0,
                skipped_sample_examples: Vec::new(),
                last_step: None,
                last_evaluation: None,
                owner: owner.map(str::to_owned),
                sweep: None,
                labels: Default::default(),
                init_from: None,
                waiting: None,
            },
            wall_time_before_s: 0.0,
            tensorboard_run: None,
        }
    }

    /// A record as the server wrote it before `JobRecord` held a shared
    /// `Job`: every field at the top level, `wall_time_before_s` between
    /// `last_evaluation` and `owner`.
    const OLD_RECORD: &str = r#"{"id":"job-1","name":"n","spec":SPEC,"state":"succeeded","step":20,"total_updates":20,"updates_per_epoch":10,"error":null,"created_unix_ms":1700000000000,"updated_unix_ms":1700000005000,"skipped_updates":1,"last_step":{"step":19,"loss":0.5,"accuracy":0.75,"perturbed_loss":null,"lr":0.1,"sigma":0.0,"wall_time_s":4.5,"skipped":false},"last_evaluation":{"step":20,"epoch":2,"test_loss":0.25,"test_accuracy":0.875,"wall_time_s":5.0,"validation_accuracy":0.8},"wall_time_before_s":1.5,"owner":"alice","sweep":["sweep-1",3]}"#;

    #[test]
    fn records_written_before_the_shared_job_type_load_and_write_back_the_same_keys() {
        let spec = serde_json::to_string(&JobSpec::reference(rwp_spec::Method::Sgd)).unwrap();
        let old = OLD_RECORD.replace("SPEC", &spec);
        let read: JobRecord = serde_json::from_str(&old).unwrap();
        assert_eq!(read.wall_time_before_s, 1.5);
        assert_eq!((read.state, read.step, read.skipped_updates), (JobState::Succeeded, 20, 1));
        assert_eq!(read.owner.as_deref(), Some("alice"));
        assert_eq!(read.sweep, Some(("sweep-1".to_owned(), 3)));
        let evaluation = read.last_evaluation.as_ref().unwrap();
        assert_eq!((evaluation.validation_loss, evaluation.validation_accuracy), (None, Some(0.8)));
        assert_eq!(read.last_step.as_ref().unwrap().perturbed_loss, None);
        // Written back: the same JSON document (keys in another order).
        let written: serde_json::Value = serde_json::to_value(&read).unwrap();
        assert_eq!(written, serde_json::from_str::<serde_json::Value>(&old).unwrap());

        // The oldest records: no owner, no sweep, no wall time before.
        let mut oldest: serde_json::Value = serde_json::from_str(&old).unwrap();
        for key in ["owner", "sweep", "wall_time_before_s"] {
            oldest.as_object_mut().unwrap().remove(key);
        }
        let read: JobRecord = serde_json::from_value(oldest.clone()).unwrap();
        assert_eq!((read.owner.as_deref(), read.sweep.as_ref(), read.wall_time_before_s), (None, None, 0.0));
        let written = serde_json::to_value(&read).unwrap();
        assert_eq!(written.get("sweep"), None, "no sweep: left out, as before");
        assert_eq!(written.get("owner"), Some(&serde_json::Value::Null), "no owner: null, as before");
    }

    #[test]
    fn records_written_before_owners_read_as_ownerless() {
        let mut old = serde_json::to_value(record(Some("alice"))).unwrap();
        old.as_object_mut().unwrap().remove("owner");
        let read: JobRecord = serde_json::from_value(old).unwrap();
        assert_eq!(read.owner, None);
    }

    #[test]
    fn users_see_their_own_jobs_admins_and_anonymous_all_workers_none() {
        let principal = |name: &str, role| Principal { name: name.into(), role, limits: Limits::default() };
        let (alice, bob) = (principal("alice", CallerRole::User), principal("bob", CallerRole::User));
        let (hers, ownerless) = (record(Some("alice")), record(None));
        assert!(alice.can_see(&hers) && !bob.can_see(&hers) && !alice.can_see(&ownerless));
        for all in [principal("root", CallerRole::Admin), Principal::anonymous()] {
            assert!(all.can_see(&hers) && all.can_see(&ownerless), "{all:?}");
        }
        assert!(!principal("pool", CallerRole::Worker).can_see(&hers));
        assert_eq!(alice.owner().as_deref(), Some("alice"));
        assert_eq!(Principal::anonymous().owner(), None);
    }

    #[test]
    fn each_role_calls_its_own_api() {
        let role = |role| Principal { name: "x".into(), role, limits: Limits::default() };
        for (r, jobs, workers) in [
            (CallerRole::User, true, false),
            (CallerRole::Admin, true, false),
            (CallerRole::Worker, false, true),
            (CallerRole::Anonymous, true, true),
        ] {
            assert_eq!(role(r).may_call(Api::Jobs).is_ok(), jobs, "{r:?} on jobs");
            assert_eq!(role(r).may_call(Api::Workers).is_ok(), workers, "{r:?} on workers");
        }
        let err = role(CallerRole::Worker).may_call(Api::Jobs).unwrap_err();
        assert!(matches!(err, ServerError::PermissionDenied(_)), "{err:?}");
    }
}
