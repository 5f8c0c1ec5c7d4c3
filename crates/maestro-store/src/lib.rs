//! The store: runs, jobs, attempts, cache entries, artifacts and test results.
//!
//! [`Store`] is the interface every backend implements; [`SqliteStore`] is the embedded
//! default (a file under `.maestro/`), [`PgStore`] the store at scale (several conductors
//! on one PostgreSQL). Every write is one transaction; schema changes are versioned
//! migrations with the same versions on both ([`migrations`]).

mod migrations;
pub mod pg;
#[cfg(feature = "pool")]
pub mod pool;
mod postgres;
mod records;
mod sqlite;

pub use crate::postgres::PgStore;
pub use records::*;
pub use sqlite::SqliteStore;

/// Opens the store `location` names: a `postgres://` (or `postgresql://`) URL, or the path
/// of an SQLite file.
///
/// # Errors
/// As [`PgStore::open`] and [`SqliteStore::open`].
pub fn open(location: &str) -> Result<Box<dyn Store>, StoreError> {
    if is_postgres(location) {
        Ok(Box::new(PgStore::open(location)?))
    } else {
        Ok(Box::new(SqliteStore::open(std::path::Path::new(location))?))
    }
}

/// Whether `location` names a PostgreSQL database rather than an SQLite file.
#[must_use]
pub fn is_postgres(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL error")]
    Postgres(#[from] ::postgres::Error),
    #[error("{0}")]
    Connect(String),
    #[error(
        "the store at {path} has schema version {found}, newer than this Maestro ({supported}); upgrade Maestro"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("stored JSON is malformed")]
    Json(#[from] serde_json::Error),
    #[error("run {0} does not exist")]
    NoSuchRun(i64),
}

impl StoreError {
    /// Whether the connection itself failed (closed, terminated by the server, a server
    /// shutting down or unreachable) rather than the statement: the connection is gone,
    /// and any other opened before the same event likely is too.
    #[must_use]
    pub fn is_connection(&self) -> bool {
        match self {
            StoreError::Connect(_) => true,
            StoreError::Postgres(e) => {
                e.is_closed()
                    || match e.code() {
                        Some(code) => {
                            let c = code.code();
                            // connection_exception, admin/crash/cannot-connect-now shutdown
                            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
                        }
                        // Not a server error at all: the socket failed.
                        None => e.as_db_error().is_none(),
                    }
            }
            _ => false,
        }
    }
}

/// The store interface. Implementations make every method one transaction.
pub trait Store: Send + std::fmt::Debug {
    /// Records a new run in state `running` and returns its id; for a remote run whose
    /// reporter began one with the same `remote_key` already, that run's id.
    ///
    /// # Errors
    /// On database failure.
    fn begin_run(&mut self, run: &NewRun) -> Result<i64, StoreError>;
    /// Records finished jobs (with their attempts, artifacts and test results) and new
    /// cache entries, all in one transaction.
    ///
    /// # Errors
    /// On database failure; nothing of the batch is written then.
    fn record(&mut self, run_id: i64, batch: &Batch) -> Result<(), StoreError>;
    /// Sets a run's final status.
    ///
    /// # Errors
    /// On database failure.
    fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        finished_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Marks every run of this machine still `running` as `interrupted` (called while
    /// holding the repository's run lock, so none of them can be alive). Returns their
    /// ids. Remote runs (those with a reporter) are left alone: they are alive elsewhere,
    /// and [`Store::reap_remote`] interrupts those that went quiet.
    ///
    /// # Errors
    /// On database failure.
    fn mark_interrupted(&mut self, now_ms: i64) -> Result<Vec<i64>, StoreError>;
    /// One run, without its jobs.
    ///
    /// # Errors
    /// [`StoreError::NoSuchRun`] or a database failure.
    fn run(&mut self, run_id: i64) -> Result<RunRow, StoreError>;
    /// The newest runs first: of one tenant (filtered in the query, so another tenant's
    /// runs never fill the page), or of all.
    ///
    /// # Errors
    /// On database failure.
    fn list_runs(&mut self, tenant: Option<&str>, limit: usize) -> Result<Vec<RunRow>, StoreError>;
    /// A run with its jobs, attempts and failed tests.
    ///
    /// # Errors
    /// [`StoreError::NoSuchRun`] or a database failure.
    fn run_detail(&mut self, run_id: i64) -> Result<RunDetail, StoreError>;
    /// The id of the newest run.
    ///
    /// # Errors
    /// On database failure.
    fn latest_run(&mut self) -> Result<Option<i64>, StoreError>;
    /// The cache entry for a key.
    ///
    /// # Errors
    /// On database failure.
    fn cache_get(&mut self, key: &str) -> Result<Option<CacheEntry>, StoreError>;
    /// The newest cache entry recorded for a job name (for `cache explain`).
    ///
    /// # Errors
    /// On database failure.
    fn cache_latest_for_job(
        &mut self,
        job: &str,
        before_key: Option<&str>,
    ) -> Result<Option<CacheEntry>, StoreError>;
    /// Removes a cache entry (e.g. when its outputs failed verification).
    ///
    /// # Errors
    /// On database failure.
    fn cache_remove(&mut self, key: &str) -> Result<(), StoreError>;
    /// Hit/miss counts and sizes.
    ///
    /// # Errors
    /// On database failure.
    fn cache_stats(&mut self) -> Result<CacheStats, StoreError>;
    /// Runs by status, and how long executed (cache-miss) jobs took, counted into the
    /// cumulative buckets `le_ms` (ascending upper bounds, in milliseconds).
    ///
    /// # Errors
    /// On database failure.
    fn run_metrics(&mut self, le_ms: &[i64]) -> Result<RunMetrics, StoreError>;
    /// Takes lease `name` for `holder` until `now_ms + ttl_ms`, or renews it when
    /// `holder` has it; `None` while another holder's lease runs. Atomic on both stores:
    /// of several conductors racing, exactly one gets it.
    ///
    /// # Errors
    /// On database failure.
    fn lease_acquire(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Lease>, StoreError>;
    /// Gives lease `name` up if `holder` has it (the token is kept, so the next holder's
    /// is larger); whether it did.
    ///
    /// # Errors
    /// On database failure.
    fn lease_release(&mut self, name: &str, holder: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Applies a report of the remote run `run_id` from `reporter`, all or nothing: its
    /// jobs and log tails, and its final status if it has one. Applied only while the run
    /// runs, only for its own reporter and only once per sequence number; every applied
    /// report also says the reporter is alive (`now_ms`).
    ///
    /// # Errors
    /// [`StoreError::NoSuchRun`] or a database failure.
    fn report(
        &mut self,
        run_id: i64,
        reporter: &str,
        report: &Report,
        now_ms: i64,
    ) -> Result<ReportOutcome, StoreError>;
    /// Marks as interrupted the remote runs still `running` whose reporter has not been
    /// heard from since `quiet_since_ms`, only while `lease` is still held as given (its
    /// fencing token): a conductor whose lease lapsed changes nothing. Returns their ids.
    ///
    /// # Errors
    /// On database failure.
    fn reap_remote(
        &mut self,
        lease: &Lease,
        quiet_since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError>;
    /// The log tail a remote run reported for a job.
    ///
    /// # Errors
    /// On database failure.
    fn job_log(&mut self, run_id: i64, job: &str) -> Result<Option<JobLog>, StoreError>;
    /// Deletes cache entries not used since `cutoff_ms` and returns the blob digests that no
    /// remaining entry references.
    ///
    /// # Errors
    /// On database failure.
    fn cache_gc(&mut self, cutoff_ms: i64) -> Result<GcResult, StoreError>;
    /// Every blob digest referenced by a cache entry or a recorded log/artifact.
    ///
    /// # Errors
    /// On database failure.
    fn referenced_blobs(&mut self) -> Result<std::collections::HashSet<String>, StoreError>;
    /// The latest earlier run in which `job` failed with exactly this cache key (same
    /// inputs): a later pass on the same key is a flake signal.
    ///
    /// # Errors
    /// On database failure.
    fn failed_with_key(
        &mut self,
        job: &str,
        key: &str,
        before_run: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// The job record of the latest run that ran or restored `job`.
    ///
    /// # Errors
    /// On database failure.
    fn last_job_record(&mut self, job: &str) -> Result<Option<(i64, JobRow)>, StoreError>;
    /// Records a reproducibility check; returns its id.
    ///
    /// # Errors
    /// On database failure, or when `run_id` names no run.
    fn repro_record(&mut self, row: &ReproRow) -> Result<i64, StoreError>;
    /// The reproducibility checks attached to a run, oldest first.
    ///
    /// # Errors
    /// On database failure.
    fn repro_for_run(&mut self, run_id: i64) -> Result<Vec<ReproRow>, StoreError>;
    /// Records waiver uses, all or none; a `run_id` naming no run is stored as none.
    ///
    /// # Errors
    /// On database failure.
    fn waiver_record(&mut self, rows: &[WaiverUseRow]) -> Result<(), StoreError>;
    /// The latest waiver uses, newest first.
    ///
    /// # Errors
    /// On database failure.
    fn waiver_uses(&mut self, limit: usize) -> Result<Vec<WaiverUseRow>, StoreError>;
    /// Records a new API token.
    ///
    /// # Errors
    /// On database failure, or when the id or hash exists already.
    fn token_create(&mut self, token: &TokenRow) -> Result<(), StoreError>;
    /// The token whose secret hashes to `hash`, revoked and expired ones included (the
    /// caller decides, and says why it refuses).
    ///
    /// # Errors
    /// On database failure.
    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>, StoreError>;
    /// Every token, newest first.
    ///
    /// # Errors
    /// On database failure.
    fn token_list(&mut self) -> Result<Vec<TokenRow>, StoreError>;
    /// Revokes a token; returns whether a token that was not yet revoked had this id.
    ///
    /// # Errors
    /// On database failure.
    fn token_revoke(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Records a console session.
    ///
    /// # Errors
    /// On database failure, or when the id exists already.
    fn session_create(&mut self, s: &SessionRow) -> Result<(), StoreError>;
    /// The session whose id hashes to `id_hash`, with the token it was signed in with (as
    /// stored: revoked and expired ones included; the caller decides).
    ///
    /// # Errors
    /// On database failure.
    fn session(
        &mut self,
        id_hash: &str,
    ) -> Result<Option<(SessionRow, Option<TokenRow>)>, StoreError>;
    /// Ends a session; returns whether one that had not ended had this id.
    ///
    /// # Errors
    /// On database failure.
    fn session_revoke(&mut self, id_hash: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Opens a deployment in status `progressing`.
    ///
    /// # Errors
    /// On database failure. `Ok(Err(Busy(id)))` while deployment `id` is in progress in the
    /// same environment.
    fn deployment_begin(
        &mut self,
        d: &NewDeployment,
    ) -> Result<Result<i64, DeploymentRefusal>, StoreError>;
    /// Saves a deployment's state and status, only while it is active. Saving status
    /// `promoted` also makes its release the environment's stable one, in the same
    /// transaction.
    ///
    /// With `fence`, only while that lease is still held as given (its fencing token):
    /// a conductor whose lease lapsed or passed on cannot overwrite the new holder's state.
    ///
    /// # Errors
    /// On database failure. `Ok(Err(Ended(status)))` when it has already ended,
    /// `Ok(Err(Fenced))` when the lease is no longer current.
    fn deployment_save(
        &mut self,
        id: i64,
        status: &str,
        state: &str,
        now_ms: i64,
        fence: Option<&Lease>,
    ) -> Result<Result<(), DeploymentRefusal>, StoreError>;
    /// One deployment.
    ///
    /// # Errors
    /// On database failure.
    fn deployment(&mut self, id: i64) -> Result<Option<DeploymentRow>, StoreError>;
    /// Deployments, newest first: of one environment, or all; only active ones with
    /// `active_only`.
    ///
    /// # Errors
    /// On database failure.
    fn deployments(
        &mut self,
        environment: Option<&str>,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<DeploymentRow>, StoreError>;
    /// The deployments a pipeline run started, oldest first.
    ///
    /// # Errors
    /// On database failure.
    fn run_deployments(&mut self, run_id: i64) -> Result<Vec<DeploymentRow>, StoreError>;
    /// Sets a flag's kill switch (killed or restored), with who and why.
    ///
    /// # Errors
    /// On database failure.
    fn flag_kill_set(&mut self, row: &FlagKillRow) -> Result<(), StoreError>;
    /// Every flag's kill switch as last set.
    ///
    /// # Errors
    /// On database failure.
    fn flag_kills(&mut self) -> Result<Vec<FlagKillRow>, StoreError>;
    /// Records a new release; `None` when the tenant's service already has that version.
    ///
    /// # Errors
    /// On database failure.
    fn release_create(&mut self, r: &ReleaseRow) -> Result<Option<i64>, StoreError>;
    /// Saves a release's status and progress — only while its status is still `expect`
    /// when given (a driver must not overwrite a rollback made meanwhile). Returns whether
    /// it saved.
    ///
    /// # Errors
    /// On database failure.
    fn release_save(
        &mut self,
        id: i64,
        expect: Option<&str>,
        status: &str,
        state: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// One release of a tenant's service.
    ///
    /// # Errors
    /// On database failure.
    fn release(
        &mut self,
        tenant: &str,
        service: &str,
        version: &str,
    ) -> Result<Option<ReleaseRow>, StoreError>;
    /// Releases, newest first: every tenant's when `tenant` is `None`.
    ///
    /// # Errors
    /// On database failure.
    fn releases(
        &mut self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ReleaseRow>, StoreError>;
    /// Every release whose train is in progress (`progressing`), oldest first.
    ///
    /// # Errors
    /// On database failure.
    fn releases_progressing(&mut self) -> Result<Vec<ReleaseRow>, StoreError>;
    /// A tenant's runs of a commit (full SHA), newest first (another tenant's runs at the
    /// same commit never push them out of `limit`).
    ///
    /// # Errors
    /// On database failure.
    fn runs_at_commit(
        &mut self,
        tenant: &str,
        commit: &str,
        limit: usize,
    ) -> Result<Vec<RunRow>, StoreError>;
    /// An environment's stable release.
    ///
    /// # Errors
    /// On database failure.
    fn environment(&mut self, name: &str) -> Result<Option<EnvironmentRow>, StoreError>;
    /// Sets an environment's stable release (a first release, or a rollback by hand to an
    /// earlier good one).
    ///
    /// # Errors
    /// On database failure.
    fn environment_set(&mut self, row: &EnvironmentRow) -> Result<(), StoreError>;
}

/// Why a report was not applied: the run's `owner`, `status` and last applied `seq`
/// against the report's reporter and sequence number.
pub(crate) fn refused(
    reporter: &str,
    owner: Option<String>,
    status: &str,
    seq: i64,
    report_seq: i64,
) -> ReportOutcome {
    if owner.as_deref() != Some(reporter) {
        ReportOutcome::NotReporter(owner)
    } else if report_seq <= seq {
        ReportOutcome::Duplicate
    } else {
        ReportOutcome::Closed(RunStatus::parse(status))
    }
}

/// The tenant stored for a run: `default` when none is given.
pub(crate) fn tenant_of(tenant: &str) -> &str {
    if tenant.is_empty() { "default" } else { tenant }
}

/// JSON text of a list column.
pub(crate) fn list_text(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_owned())
}

/// A list column back; malformed text is a store error, never an empty list (an empty
/// `scopes` must not be what a corrupted row silently becomes).
pub(crate) fn list_of(text: &str) -> Result<Vec<String>, StoreError> {
    Ok(serde_json::from_str(text)?)
}
