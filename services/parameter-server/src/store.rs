//! The embedded database (redb) in the data directory: job records, the
//! metrics history of every job, keyed by (job, step), sweep records, the
//! client request ids of submissions, keyed by (kind, owner, id), and who
//! uploaded which model file, keyed by (owner, sha256).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use serde::{Deserialize, Serialize};

use crate::domain::{now_unix_ms, Evaluation, JobRecord, LogEntry, StepMetrics, StoredModel, SweepRecord};
use crate::error::ServerError;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const STEPS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("step_metrics");
const EVALS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("evaluations");
const SWEEPS: TableDefinition<&str, &[u8]> = TableDefinition::new("sweeps");
const REQUESTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("request_ids");
/// (owner, sha256) → [`ModelEntry`]; the owner is `""` on a server without tokens.
const MODELS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("model_owners");
/// (job, seq) → a [`LogEntry`] of the job's event log.
const LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("job_logs");
/// Facts about the database itself: [`STEP_NUMBERING`].
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Set once step metrics are numbered from 1 (the update's number, as
/// `Job.step` counts); databases written before were numbered from 0 and
/// are renumbered when opened.
const STEP_NUMBERING: (&str, &str) = ("step_numbering", "from-1");

/// How long a client request id keeps naming what it created.
pub const REQUEST_ID_TTL_MS: i64 = 24 * 3600 * 1000;

/// A client's id for one submission: what it creates (`"job"` or
/// `"sweep"`), for whom (the owner; `""` on a server without tokens) and
/// the client's id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub kind: &'static str,
    pub owner: String,
    pub id: String,
}

impl RequestKey {
    fn key(&self) -> (&str, &str, &str) {
        (self.kind, self.owner.as_str(), self.id.as_str())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestEntry {
    /// The job or sweep the request created.
    target: String,
    created_unix_ms: i64,
}

/// One owner's upload of a model file.
#[derive(Debug, Serialize, Deserialize)]
struct ModelEntry {
    size_bytes: u64,
    uploaded_unix_ms: i64,
}

fn stored_model(owner: &str, sha256: &str, bytes: &[u8]) -> Result<StoredModel, ServerError> {
    let entry: ModelEntry = serde_json::from_slice(bytes)?;
    Ok(StoredModel {
        owner: (!owner.is_empty()).then(|| owner.to_owned()),
        sha256: sha256.to_owned(),
        size_bytes: entry.size_bytes,
        uploaded_unix_ms: entry.uploaded_unix_ms,
    })
}

#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Self, ServerError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ServerError::Storage(format!("cannot create {}: {e}", data_dir.display())))?;
        let db = Database::create(data_dir.join("rwp.redb")).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => ServerError::Storage(format!(
                "another rwp-server holds data directory {} (its database is locked): stop that server, or give \
                 this one another data_dir",
                data_dir.display()
            )),
            other => other.into(),
        })?;
        let txn = db.begin_write()?;
        txn.open_table(JOBS)?;
        txn.open_table(STEPS)?;
        txn.open_table(EVALS)?;
        txn.open_table(SWEEPS)?;
        txn.open_table(MODELS)?;
        txn.open_table(LOGS)?;
        Self::number_steps_from_one(&txn)?;
        // Request ids older than a day name nothing any more.
        {
            let mut requests = txn.open_table(REQUESTS)?;
            let expired = now_unix_ms() - REQUEST_ID_TTL_MS;
            requests.retain(|_, value| {
                serde_json::from_slice::<RequestEntry>(value).is_ok_and(|e| e.created_unix_ms > expired)
            })?;
        }
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Renumbers the step metrics of a database written when they were
    /// numbered from 0 (keys, values, and each job's `last_step`), once.
    fn number_steps_from_one(txn: &redb::WriteTransaction) -> Result<(), ServerError> {
        let mut meta = txn.open_table(META)?;
        let (key, numbering) = STEP_NUMBERING;
        if meta.get(key)?.is_some_and(|v| v.value() == numbering) {
            return Ok(());
        }
        let mut steps = txn.open_table(STEPS)?;
        let mut renumbered = Vec::new();
        for entry in steps.iter()? {
            let (k, v) = entry?;
            let (job, step) = k.value();
            let mut value: serde_json::Value = serde_json::from_slice(v.value())?;
            value["step"] = serde_json::json!(step + 1);
            renumbered.push((job.to_owned(), step + 1, serde_json::to_vec(&value)?));
        }
        steps.retain(|_, _| false)?;
        for (job, step, value) in &renumbered {
            steps.insert((job.as_str(), *step), value.as_slice())?;
        }
        let mut jobs = txn.open_table(JOBS)?;
        let mut records = Vec::new();
        for entry in jobs.iter()? {
            let (k, v) = entry?;
            let mut value: serde_json::Value = serde_json::from_slice(v.value())?;
            if let Some(step) = value["last_step"]["step"].as_u64() {
                value["last_step"]["step"] = serde_json::json!(step + 1);
                records.push((k.value().to_owned(), serde_json::to_vec(&value)?));
            }
        }
        for (job, value) in &records {
            jobs.insert(job.as_str(), value.as_slice())?;
        }
        meta.insert(key, numbering)?;
        Ok(())
    }

    pub fn put_job(&self, record: &JobRecord) -> Result<(), ServerError> {
        self.put_job_for(record, None)
    }

    /// Records a new job and, in the same transaction, the request id that created it.
    pub fn put_job_for(&self, record: &JobRecord, request: Option<&RequestKey>) -> Result<(), ServerError> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(JOBS)?.insert(record.id.as_str(), bytes.as_slice())?;
        if let Some(request) = request {
            Self::put_request(&txn, request, &record.id)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn put_request(txn: &redb::WriteTransaction, request: &RequestKey, target: &str) -> Result<(), ServerError> {
        let entry = RequestEntry { target: target.to_owned(), created_unix_ms: now_unix_ms() };
        txn.open_table(REQUESTS)?.insert(request.key(), serde_json::to_vec(&entry)?.as_slice())?;
        Ok(())
    }

    /// The job or sweep `request` created, if it did within the last 24 hours.
    pub fn request(&self, request: &RequestKey) -> Result<Option<String>, ServerError> {
        let txn = self.db.begin_read()?;
        let Some(value) = txn.open_table(REQUESTS)?.get(request.key())? else { return Ok(None) };
        let entry: RequestEntry = serde_json::from_slice(value.value())?;
        Ok((entry.created_unix_ms > now_unix_ms() - REQUEST_ID_TTL_MS).then_some(entry.target))
    }

    /// Records an update's metrics (and evaluation) together with the job's record.
    pub fn put_step(
        &self,
        record: &JobRecord,
        step: &StepMetrics,
        evaluation: Option<&Evaluation>,
    ) -> Result<(), ServerError> {
        let txn = self.db.begin_write()?;
        txn.open_table(JOBS)?.insert(record.id.as_str(), serde_json::to_vec(record)?.as_slice())?;
        txn.open_table(STEPS)?.insert((record.id.as_str(), step.step), serde_json::to_vec(step)?.as_slice())?;
        if let Some(e) = evaluation {
            txn.open_table(EVALS)?.insert((record.id.as_str(), e.step), serde_json::to_vec(e)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records an evaluation together with the job's record.
    pub fn put_evaluation(&self, record: &JobRecord, evaluation: &Evaluation) -> Result<(), ServerError> {
        let txn = self.db.begin_write()?;
        txn.open_table(JOBS)?.insert(record.id.as_str(), serde_json::to_vec(record)?.as_slice())?;
        let key = (record.id.as_str(), evaluation.step);
        txn.open_table(EVALS)?.insert(key, serde_json::to_vec(evaluation)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn put_sweep(&self, record: &SweepRecord) -> Result<(), ServerError> {
        self.put_sweep_for(record, None)
    }

    /// Records a new sweep and, in the same transaction, the request id that created it.
    pub fn put_sweep_for(&self, record: &SweepRecord, request: Option<&RequestKey>) -> Result<(), ServerError> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(SWEEPS)?.insert(record.id.as_str(), bytes.as_slice())?;
        if let Some(request) = request {
            Self::put_request(&txn, request, &record.id)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn sweeps(&self) -> Result<Vec<SweepRecord>, ServerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SWEEPS)?;
        let mut sweeps = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            sweeps.push(serde_json::from_slice(value.value())?);
        }
        Ok(sweeps)
    }

    pub fn jobs(&self) -> Result<Vec<JobRecord>, ServerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOBS)?;
        let mut jobs = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            jobs.push(serde_json::from_slice(value.value())?);
        }
        Ok(jobs)
    }

    /// Deletes a job's record, its metrics and evaluations, and the request
    /// ids that name it, in one transaction.
    pub fn delete_job(&self, job: &str) -> Result<(), ServerError> {
        let txn = self.db.begin_write()?;
        txn.open_table(JOBS)?.remove(job)?;
        txn.open_table(STEPS)?.retain_in((job, 0)..=(job, u64::MAX), |_, _| false)?;
        txn.open_table(EVALS)?.retain_in((job, 0)..=(job, u64::MAX), |_, _| false)?;
        txn.open_table(LOGS)?.retain_in((job, 0)..=(job, u64::MAX), |_, _| false)?;
        txn.open_table(REQUESTS)?.retain(|(kind, _, _), value| {
            kind != "job" || serde_json::from_slice::<RequestEntry>(value).map_or(true, |e| e.target != job)
        })?;
        txn.commit()?;
        Ok(())
    }

    /// Appends log entries (of any jobs) in one transaction; keeps the
    /// newest `keep` entries of each job.
    pub fn put_log_entries(&self, entries: &[(String, LogEntry)], keep: u64) -> Result<(), ServerError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(LOGS)?;
            let mut newest: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
            for (job, entry) in entries {
                table.insert((job.as_str(), entry.seq), serde_json::to_vec(entry)?.as_slice())?;
                newest.insert(job.as_str(), entry.seq);
            }
            for (job, seq) in newest {
                if seq > keep {
                    table.retain_in((job, 0)..=(job, seq - keep), |_, _| false)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The log entries of `job` from number `from` on, in order.
    pub fn log_entries(&self, job: &str, from: u64) -> Result<Vec<LogEntry>, ServerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        let mut out = Vec::new();
        for entry in table.range((job, from)..=(job, u64::MAX))? {
            let (_, value) = entry?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    /// The number of the last entry of `job`'s log (0: none).
    pub fn last_log_seq(&self, job: &str) -> Result<u64, ServerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(LOGS)?;
        let last = table.range((job, 0)..=(job, u64::MAX))?.next_back().transpose()?;
        Ok(last.map_or(0, |(key, _)| key.value().1))
    }

    /// Step metrics of `job` from update `from` on, in step order.
    pub fn steps(&self, job: &str, from: u64) -> Result<Vec<StepMetrics>, ServerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(STEPS)?;
        let mut out = Vec::new();
        for entry in table.range((job, from)..=(job, u64::MAX))? {
            let (_, value) = entry?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }

    /// Records (or renews) `model.owner`'s upload of a model file (no
    /// owner: `""`, a server without tokens).
    pub fn put_model(&self, model: &StoredModel) -> Result<(), ServerError> {
        let entry = ModelEntry { size_bytes: model.size_bytes, uploaded_unix_ms: model.uploaded_unix_ms };
        let owner = model.owner.as_deref().unwrap_or_default();
        let txn = self.db.begin_write()?;
        txn.open_table(MODELS)?.insert((owner, model.sha256.as_str()), serde_json::to_vec(&entry)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// `owner`'s upload of the file `sha256`, if it has one.
    pub fn model(&self, owner: &str, sha256: &str) -> Result<Option<StoredModel>, ServerError> {
        let txn = self.db.begin_read()?;
        let Some(value) = txn.open_table(MODELS)?.get((owner, sha256))? else { return Ok(None) };
        stored_model(owner, sha256, value.value()).map(Some)
    }

    /// Every upload record (`owner`'s alone when given), by owner then digest.
    pub fn models(&self, owner: Option<&str>) -> Result<Vec<StoredModel>, ServerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MODELS)?;
        let mut out = Vec::new();
        let entries = match owner {
            Some(owner) => table.range((owner, "")..)?,
            None => table.iter()?,
        };
        for entry in entries {
            let (key, value) = entry?;
            let (who, sha256) = key.value();
            if owner.is_some_and(|o| o != who) {
                break;
            }
            out.push(stored_model(who, sha256, value.value())?);
        }
        Ok(out)
    }

    /// Drops `owner`'s record of `sha256`; `false` when it had none.
    pub fn delete_model(&self, owner: &str, sha256: &str) -> Result<bool, ServerError> {
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(MODELS)?.remove((owner, sha256))?.is_some();
        txn.commit()?;
        Ok(removed)
    }

    /// Drops every owner's record of `sha256`.
    pub fn delete_model_records(&self, sha256: &str) -> Result<(), ServerError> {
        let txn = self.db.begin_write()?;
        txn.open_table(MODELS)?.retain(|(_, digest), _| digest != sha256)?;
        txn.commit()?;
        Ok(())
    }

    /// Evaluations of `job` at or after update `from`, in step order.
    pub fn evaluations(&self, job: &str, from: u64) -> Result<Vec<Evaluation>, ServerError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVALS)?;
        let mut out = Vec::new();
        for entry in table.range((job, from)..=(job, u64::MAX))? {
            let (_, value) = entry?;
            out.push(serde_json::from_slice(value.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(owner: &str, sha256: &str, size_bytes: u64, uploaded_unix_ms: i64) -> StoredModel {
        StoredModel { owner: Some(owner.into()), sha256: sha256.into(), size_bytes, uploaded_unix_ms }
    }

    #[test]
    fn model_records_are_per_owner_and_several_owners_may_hold_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        store.put_model(&model("alice", &a, 10, 1)).unwrap();
        store.put_model(&model("alice", &b, 20, 2)).unwrap();
        store.put_model(&model("bob", &a, 10, 3)).unwrap();
        store.put_model(&model("al", &b, 20, 4)).unwrap();
        assert_eq!(store.model("alice", &a).unwrap(), Some(model("alice", &a, 10, 1)));
        assert_eq!(store.model("bob", &b).unwrap(), None);
        let alices = store.models(Some("alice")).unwrap();
        assert_eq!(alices, vec![model("alice", &a, 10, 1), model("alice", &b, 20, 2)]);
        assert_eq!(store.models(None).unwrap().len(), 4);

        // Renewed, then dropped by one owner: the other keeps it.
        store.put_model(&model("alice", &a, 10, 5)).unwrap();
        assert_eq!(store.model("alice", &a).unwrap().unwrap().uploaded_unix_ms, 5);
        assert!(store.delete_model("alice", &a).unwrap());
        assert!(!store.delete_model("alice", &a).unwrap());
        assert_eq!(store.model("bob", &a).unwrap(), Some(model("bob", &a, 10, 3)));

        // Collection drops every owner's record of a file.
        store.delete_model_records(&b).unwrap();
        drop(store);
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.models(None).unwrap(), vec![model("bob", &a, 10, 3)]);
    }

    /// A database whose step metrics were numbered from 0 is renumbered
    /// from 1 when opened, once: keys, values and the job's `last_step`.
    #[test]
    fn step_metrics_numbered_from_zero_are_renumbered_once() {
        let dir = tempfile::tempdir().unwrap();
        let record = |last_step: serde_json::Value| -> Vec<u8> {
            serde_json::to_vec(&serde_json::json!({
                "id": "job-1", "name": "n", "spec": rwp_spec::JobSpec::reference(rwp_spec::Method::Sgd),
                "state": "succeeded", "step": 2, "total_updates": 2, "updates_per_epoch": 2, "error": null,
                "created_unix_ms": 0, "updated_unix_ms": 0, "skipped_updates": 0, "last_step": last_step,
                "last_evaluation": null, "wall_time_before_s": 0.0
            }))
            .unwrap()
        };
        let metrics = |step: u64, loss: f64| StepMetrics {
            step,
            loss,
            accuracy: 0.5,
            perturbed_loss: None,
            lr: 0.1,
            sigma: 0.0,
            wall_time_s: 1.0,
            skipped: false,
        };
        {
            // As an older server left it: steps 0 and 1, no numbering mark.
            let db = Database::create(dir.path().join("rwp.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut steps = txn.open_table(STEPS).unwrap();
                for (step, loss) in [(0, 2.5), (1, 1.5)] {
                    steps
                        .insert(("job-1", step), serde_json::to_vec(&metrics(step, loss)).unwrap().as_slice())
                        .unwrap();
                }
                let last = serde_json::to_value(metrics(1, 1.5)).unwrap();
                txn.open_table(JOBS).unwrap().insert("job-1", record(last).as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let store = Store::open(dir.path()).unwrap();
            let steps = store.steps("job-1", 0).unwrap();
            assert_eq!(steps, vec![metrics(1, 2.5), metrics(2, 1.5)]);
            assert_eq!(store.steps("job-1", 2).unwrap(), vec![metrics(2, 1.5)]);
            assert_eq!(store.jobs().unwrap()[0].last_step, Some(metrics(2, 1.5)));
        }
    }

    #[test]
    fn job_logs_keep_their_newest_entries_and_go_with_the_job() {
        use crate::domain::LogKind;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entry =
            |seq: u64| LogEntry { seq, unix_ms: 0, kind: LogKind::Leased, worker: None, message: format!("{seq}") };
        let batch: Vec<(String, LogEntry)> =
            (1..=5).map(|seq| ("job-a".to_owned(), entry(seq))).chain([("job-b".to_owned(), entry(1))]).collect();
        store.put_log_entries(&batch, 3).unwrap();
        let seqs =
            |job: &str, from: u64| store.log_entries(job, from).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs("job-a", 0), [3, 4, 5], "the newest 3");
        assert_eq!(seqs("job-a", 5), [5]);
        assert_eq!((store.last_log_seq("job-a").unwrap(), store.last_log_seq("job-b").unwrap()), (5, 1));
        assert_eq!(store.last_log_seq("job-c").unwrap(), 0);
        store.delete_job("job-a").unwrap();
        assert_eq!((seqs("job-a", 0), seqs("job-b", 0)), (vec![], vec![1]));
    }

    #[test]
    fn evaluations_come_back_to_the_bit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record: JobRecord = serde_json::from_value(serde_json::json!({
            "id": "job-1", "name": "n", "spec": rwp_spec::JobSpec::reference(rwp_spec::Method::Sgd),
            "state": "running", "step": 24, "total_updates": 24, "updates_per_epoch": 12, "error": null,
            "created_unix_ms": 0, "updated_unix_ms": 0, "skipped_updates": 0, "last_step": null,
            "last_evaluation": null, "wall_time_before_s": 0.0
        }))
        .unwrap();
        // The shortest decimal of this loss parses to a neighbour without
        // serde_json's float_roundtrip.
        let evaluation = Evaluation {
            step: 24,
            epoch: 2,
            test_loss: 2.828_424_751_758_575_4,
            test_accuracy: 0.168,
            wall_time_s: 1.0,
            validation_loss: Some(0.1 + 0.2),
            validation_accuracy: None,
        };
        let step = StepMetrics {
            step: 24,
            loss: 0.1 + 0.2,
            accuracy: 0.5,
            perturbed_loss: None,
            lr: 0.05,
            sigma: 0.0,
            wall_time_s: 1.0,
            skipped: false,
        };
        store.put_step(&record, &step, Some(&evaluation)).unwrap();
        assert_eq!(store.steps("job-1", 0).unwrap()[0].loss.to_bits(), step.loss.to_bits());
        let back = store.evaluations("job-1", 0).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].test_loss.to_bits(), evaluation.test_loss.to_bits());
        assert_eq!(back[0].validation_loss.map(f64::to_bits), evaluation.validation_loss.map(f64::to_bits));
    }
}
