//! The server's domain types: what a job is, what happened at each update.
//! Free of transport; `grpc.rs` converts them to and from wire messages.

use rwp_spec::sweep::{ParamValue, RungResult, SweepSpec, SweepState};
use rwp_spec::JobSpec;
use serde::{Deserialize, Serialize};

use crate::error::ServerError;

pub use rwp_spec::job::{Evaluation, JobState, StepMetrics};

/// The durable record of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub name: String,
    pub spec: JobSpec,
    pub state: JobState,
    /// Updates applied so far.
    pub step: u64,
    pub total_updates: u64,
    pub updates_per_epoch: u64,
    pub error: Option<String>,
    pub created_unix_ms: i64,
    pub updated_unix_ms: i64,
    pub skipped_updates: u64,
    pub last_step: Option<StepMetrics>,
    pub last_evaluation: Option<Evaluation>,
    /// Running time accumulated before the current server process took the job over.
    #[serde(default)]
    pub wall_time_before_s: f64,
    /// The name of the token that submitted the job; `None` when the server
    /// ran without authentication (and for records written before owners
    /// were recorded): such jobs are an admin's only.
    #[serde(default)]
    pub owner: Option<String>,
    /// The sweep this job is a trial of, and the trial's index there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<(String, u32)>,
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

/// A sweep with the current record of each trial's job.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepView {
    pub record: SweepRecord,
    /// In trial order; `None` for trials not started.
    pub jobs: Vec<Option<JobRecord>>,
    /// The trial with the highest validation accuracy so far.
    pub best_trial: Option<u32>,
}

/// One owner's upload of a model file, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredModel {
    /// The uploading token's name; `""` on a server without tokens.
    pub owner: String,
    pub sha256: String,
    pub size_bytes: u64,
    /// When the owner last uploaded it.
    pub uploaded_unix_ms: i64,
}

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
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

impl Role {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Worker => "worker",
            Role::Anonymous => "anonymous",
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
    pub role: Role,
    pub limits: Limits,
}

impl Principal {
    /// The caller of a server that runs without authentication: no limits
    /// but the server's own.
    #[must_use]
    pub fn anonymous() -> Self {
        Self { name: "anonymous".to_owned(), role: Role::Anonymous, limits: Limits::default() }
    }

    /// Whether this principal's role may call `api`.
    pub fn may_call(&self, api: Api) -> Result<(), ServerError> {
        let allowed = match (self.role, api) {
            (Role::Anonymous, _) | (Role::User | Role::Admin, Api::Jobs) | (Role::Worker, Api::Workers) => true,
            (Role::User | Role::Admin, Api::Workers) | (Role::Worker, Api::Jobs) => false,
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
            Role::Admin | Role::Anonymous => true,
            Role::User => owner == Some(self.name.as_str()),
            Role::Worker => false,
        }
    }

    /// The owner recorded for a job this principal submits.
    #[must_use]
    pub fn owner(&self) -> Option<String> {
        (self.role != Role::Anonymous).then(|| self.name.clone())
    }
}

/// What a watcher sees.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    Step(StepMetrics),
    Evaluation(Evaluation),
    /// The record after a state change; the terminal one is the last event.
    Job(Box<JobRecord>),
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
            last_step: None,
            last_evaluation: None,
            wall_time_before_s: 0.0,
            owner: owner.map(str::to_owned),
            sweep: None,
        }
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
        let (alice, bob) = (principal("alice", Role::User), principal("bob", Role::User));
        let (hers, ownerless) = (record(Some("alice")), record(None));
        assert!(alice.can_see(&hers) && !bob.can_see(&hers) && !alice.can_see(&ownerless));
        for all in [principal("root", Role::Admin), Principal::anonymous()] {
            assert!(all.can_see(&hers) && all.can_see(&ownerless), "{all:?}");
        }
        assert!(!principal("pool", Role::Worker).can_see(&hers));
        assert_eq!(alice.owner().as_deref(), Some("alice"));
        assert_eq!(Principal::anonymous().owner(), None);
    }

    #[test]
    fn each_role_calls_its_own_api() {
        let role = |role| Principal { name: "x".into(), role, limits: Limits::default() };
        for (r, jobs, workers) in [
            (Role::User, true, false),
            (Role::Admin, true, false),
            (Role::Worker, false, true),
            (Role::Anonymous, true, true),
        ] {
            assert_eq!(role(r).may_call(Api::Jobs).is_ok(), jobs, "{r:?} on jobs");
            assert_eq!(role(r).may_call(Api::Workers).is_ok(), workers, "{r:?} on workers");
        }
        let err = role(Role::Worker).may_call(Api::Jobs).unwrap_err();
        assert!(matches!(err, ServerError::PermissionDenied(_)), "{err:?}");
    }
}
