//! The embedded database (redb) in the data directory: job records, the
//! metrics history of every job, keyed by (job, step), and sweep records.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use crate::domain::{Evaluation, JobRecord, StepMetrics, SweepRecord};
use crate::error::ServerError;

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const STEPS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("step_metrics");
const EVALS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("evaluations");
const SWEEPS: TableDefinition<&str, &[u8]> = TableDefinition::new("sweeps");

#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Self, ServerError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| ServerError::Storage(format!("cannot create {}: {e}", data_dir.display())))?;
        let db = Database::create(data_dir.join("rwp.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(JOBS)?;
        txn.open_table(STEPS)?;
        txn.open_table(EVALS)?;
        txn.open_table(SWEEPS)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    pub fn put_job(&self, record: &JobRecord) -> Result<(), ServerError> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(JOBS)?.insert(record.id.as_str(), bytes.as_slice())?;
        txn.commit()?;
        Ok(())
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

    pub fn put_sweep(&self, record: &SweepRecord) -> Result<(), ServerError> {
        let bytes = serde_json::to_vec(record)?;
        let txn = self.db.begin_write()?;
        txn.open_table(SWEEPS)?.insert(record.id.as_str(), bytes.as_slice())?;
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
