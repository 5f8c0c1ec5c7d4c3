//! Privileged jobs — those of the barrier gates, `publish` and `deploy` — are recorded
//! in the audit log: an entry before the job starts (if it cannot be written, the job
//! does not run) and one with its outcome. The engine calls a [`Privileged`] recorder;
//! the CLI's writes to the audit log.

use maestro_spec::Gate;

/// A privileged job about to run, or just finished.
#[derive(Debug, Clone)]
pub struct PrivilegedJob {
    pub run_id: i64,
    pub pipeline: String,
    pub job: String,
    pub gate: Gate,
    /// What it deploys: `(path, sha256:<hex>)`, as verified before it starts.
    pub artifacts: Vec<(String, String)>,
    pub trace_id: Option<String>,
}

/// Records privileged jobs. Errors are messages for the job's log and note.
pub trait Privileged: Send + Sync + std::fmt::Debug {
    /// Before the job starts; returns the entry's index. An error refuses the job.
    ///
    /// # Errors
    /// When the action may not proceed unrecorded (no reason, the log cannot be written).
    fn before(&self, job: &PrivilegedJob) -> Result<i64, String>;
    /// After it finished with `status` (`succeeded`, `failed`, …); returns the index.
    ///
    /// # Errors
    /// When the outcome cannot be recorded (the job is then reported failed).
    fn after(&self, job: &PrivilegedJob, started: i64, status: &str) -> Result<i64, String>;
}
