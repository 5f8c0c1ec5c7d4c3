//! The records the store keeps. Plain data; timestamps are Unix milliseconds (UTC).

use serde::{Deserialize, Serialize};

/// A run's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    /// Stopped by Ctrl-C/SIGTERM, or found `running` after a crash.
    Interrupted,
}

impl RunStatus {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> RunStatus {
        match s {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Interrupted,
        }
    }
}

/// What is known when a run starts.
#[derive(Clone, Debug, Default)]
pub struct NewRun {
    pub pipeline: String,
    pub root: String,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub started_at_ms: i64,
    pub pid: u32,
    pub args: String,
    pub trace_id: Option<String>,
    /// The tenant the run belongs to; empty means `default`.
    pub tenant: String,
    /// For a run reported from another machine (`maestro run --server`), the actor that
    /// reports it: only it may report to the run, and the run is interrupted when it
    /// goes quiet. `None` for a run of this machine.
    pub reporter: Option<String>,
    /// The reporter's own key for the run: beginning a run again with the same reporter
    /// and key returns the run begun the first time (a retry whose answer was lost).
    pub remote_key: Option<String>,
}

/// One attempt of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRow {
    pub attempt: u32,
    /// `succeeded`, `failed`, `timed-out`, `cancelled`, `error`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub log_path: String,
}

/// One test case result from a JUnit report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRow {
    pub attempt: u32,
    pub suite: String,
    pub classname: String,
    pub name: String,
    /// `passed`, `failed`, `error`, `skipped`.
    pub status: String,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// An output file recorded as an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRow {
    pub path: String,
    pub digest: String,
    pub size: i64,
    /// Restored with mode 0755 instead of 0644.
    #[serde(default)]
    pub executable: bool,
}

/// The outcome of one job in one run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    pub name: String,
    pub gate: Option<String>,
    /// `succeeded`, `failed`, `timed-out`, `cancelled`, `skipped`, `error`.
    pub status: String,
    /// `hit`, `miss`, `disabled`, or empty when the job never reached the cache.
    pub cache: String,
    pub cache_key: Option<String>,
    /// Why the cache missed, e.g. `file src/app.py changed`.
    pub reason: Option<String>,
    /// Why the job failed, was skipped or cancelled, in words.
    pub note: Option<String>,
    pub started_at_ms: Option<i64>,
    pub duration_ms: i64,
    pub exit_code: Option<i32>,
    pub log_path: Option<String>,
    /// A pass after a failure on the same inputs.
    pub flaky: bool,
    /// For privileged jobs (publish, deploy gates): the audit log entries written before
    /// the job started and with its outcome.
    pub audit: Option<AuditLink>,
    pub attempts: Vec<AttemptRow>,
    pub artifacts: Vec<ArtifactRow>,
    pub tests: Vec<TestRow>,
}

/// Where a job's audit entries are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLink {
    pub started: i64,
    pub outcome: Option<i64>,
}

/// A content-addressed cache entry: the outputs of a job for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    pub key: String,
    pub job: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: i64,
    /// Output files with their digests.
    pub outputs: Vec<ArtifactRow>,
    pub log_digest: String,
    pub duration_ms: i64,
    /// The ingredients of the key, for `maestro cache explain`: JSON object.
    pub ingredients: String,
    pub size: i64,
}

/// What one store transaction writes.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub jobs: Vec<JobRow>,
    pub cache_put: Vec<CacheEntry>,
    pub cache_used: Vec<String>,
    pub used_at_ms: i64,
}

impl Batch {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.cache_put.is_empty() && self.cache_used.is_empty()
    }
}

/// A row of `maestro runs list`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRow {
    pub id: i64,
    pub pipeline: String,
    pub status: RunStatus,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub jobs: u32,
    pub cached: u32,
    pub failed: u32,
    pub tenant: String,
    /// The run's trace (W3C trace id, hex), when it was traced.
    pub trace_id: Option<String>,
    /// Who reports the run from another machine; `None` for a run of this machine.
    #[serde(default)]
    pub reporter: Option<String>,
}

/// `maestro runs show`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunDetail {
    pub run: RunRow,
    pub root: String,
    pub args: String,
    pub jobs: Vec<JobRow>,
}

/// A held lease: singleton work (a canary controller, a scheduled job) that only one of
/// several conductors on one store may do at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Fencing token: grows every time the lease changes hands or is taken again after it
    /// lapsed. Work that writes elsewhere passes it along so a stale holder's late writes
    /// can be refused.
    pub token: i64,
    pub expires_at_ms: i64,
}

/// The conductor's `/metrics`: runs by status and executed jobs' durations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// `(status, runs)`, every status that has runs.
    pub runs: Vec<(String, i64)>,
    /// Jobs that took at most each bound asked for (cumulative, same order).
    pub job_buckets: Vec<i64>,
    pub job_count: i64,
    pub job_sum_ms: i64,
}

/// `maestro cache stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CacheStats {
    pub entries: i64,
    pub bytes: i64,
    /// Over every job ever recorded that could be cached.
    pub hits: i64,
    pub misses: i64,
    /// Of the latest run.
    pub last_run_hits: i64,
    pub last_run_misses: i64,
}

/// What `cache gc` removed.
#[derive(Clone, Debug, Default)]
pub struct GcResult {
    pub removed_entries: i64,
    pub removed_bytes: i64,
}

/// One `maestro repro` result: the job built twice, and whether the outputs matched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReproRow {
    pub id: i64,
    /// The run of this repository the check concerns (same job and commit), if any.
    pub run_id: Option<i64>,
    pub job: String,
    pub commit: Option<String>,
    pub reproducible: bool,
    /// The comparison, as JSON (files, digests, first differences).
    pub report: String,
    pub created_at_ms: i64,
}

/// One use of a waiver: a finding it excused, or tried to excuse after it expired.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaiverUseRow {
    pub id: i64,
    /// The pipeline run whose gate used it (`MAESTRO_RUN_ID`), if it ran in one.
    pub run_id: Option<i64>,
    pub job: Option<String>,
    /// Which check: `policy` or `migration`.
    pub gate: String,
    /// The finding's rule or code.
    pub rule: String,
    /// What the finding was about: its resource, or its message.
    pub subject: String,
    /// The waiver file and the waiver's position in it.
    pub source: String,
    pub waiver_index: i64,
    pub reason: String,
    pub approver: String,
    pub expires: String,
    /// True when the waiver had expired, so it did not waive.
    pub expired: bool,
    pub created_at_ms: i64,
}

/// A console session: the SHA-256 of the cookie's random id, and who signed in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// SHA-256 of the session id, lowercase hex (the id itself is only in the cookie).
    pub id_hash: String,
    /// The API token it was signed in with: the session ends when the token does.
    pub token_id: Option<String>,
    /// The actor at sign-in, as JSON (what an OIDC session acts as).
    pub actor: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// An API token of the conductor. The secret itself is never stored: `hash` is the
/// lowercase hex SHA-256 of it. Lists (`roles`, `teams`, `scopes`) are kept as JSON arrays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// Public identifier (`tok_…`), shown in listings and used to revoke.
    pub id: String,
    /// SHA-256 of the secret, lowercase hex.
    #[serde(skip_serializing)]
    pub hash: String,
    /// What the token is for (`ci-deploy`).
    pub name: String,
    /// The actor requests with this token act as (`ci:checkout`, `user:alice`).
    pub actor: String,
    /// Actor attributes for authorization.
    pub roles: Vec<String>,
    pub teams: Vec<String>,
    pub tenant: String,
    /// What the token may be used for (`runs:read`, `runs:write`, `audit:read`, `*`).
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// One report of a remote run (`maestro run --server`): the jobs that finished since the
/// previous report with the tails of their logs, and in the last one the run's status.
/// Reports carry a sequence number so a retried one is applied once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// 1 for the first report of a run, then one more each time.
    pub seq: i64,
    #[serde(default)]
    pub jobs: Vec<JobRow>,
    #[serde(default)]
    pub logs: Vec<JobLog>,
    /// The run's final status: the last report closes the run.
    #[serde(default)]
    pub status: Option<RunStatus>,
}

/// The end of a job's log, as a remote run reports it (the whole log stays on the machine
/// that ran the job).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLog {
    pub job: String,
    /// The last lines of the log, whole lines only.
    pub tail: String,
    /// The size of the whole log in bytes.
    pub bytes: i64,
}

/// What became of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Recorded.
    Applied,
    /// A report with this sequence number (or a later one) was recorded already: a retry
    /// whose first answer was lost. Nothing changed.
    Duplicate,
    /// The run is no longer running (it finished or was interrupted for going quiet).
    Closed(RunStatus),
    /// The run is reported by someone else (or is a run of the conductor's own machine).
    NotReporter(Option<String>),
}

/// A deployment to open: a canary of `version` into `environment`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewDeployment {
    pub environment: String,
    pub service: String,
    pub tenant: String,
    /// The canary's release id.
    pub version: String,
    /// `sha256:<hex>` of the artifact it was unpacked from.
    pub artifact: String,
    pub release_dir: String,
    /// The stable release it started against.
    pub previous: Option<String>,
    /// The strategy, as JSON.
    pub plan: String,
    /// The state machine's first state, as JSON.
    pub state: String,
    /// Extra environment of the release (failure injection, say), as a JSON object.
    pub env: String,
    pub actor: String,
    pub reason: String,
    pub run_id: Option<i64>,
    pub now_ms: i64,
}

/// A deployment as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRow {
    pub id: i64,
    pub environment: String,
    pub service: String,
    pub tenant: String,
    pub version: String,
    pub artifact: String,
    pub release_dir: String,
    pub previous: Option<String>,
    /// `progressing`, `paused`, `promoted`, `rolled_back` or `aborted`.
    pub status: String,
    pub plan: String,
    pub state: String,
    pub env: String,
    pub actor: String,
    pub reason: String,
    pub run_id: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl DeploymentRow {
    /// Whether it is still running (progressing or paused).
    #[must_use]
    pub fn active(&self) -> bool {
        self.status == "progressing" || self.status == "paused"
    }
}

/// An environment's stable release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRow {
    pub name: String,
    pub version: String,
    pub artifact: String,
    pub release_dir: String,
    /// The deployment that made it stable (none for a first release set by hand).
    pub deployment_id: Option<i64>,
    pub updated_at_ms: i64,
}

/// Why a deployment was not opened or saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeploymentRefusal {
    /// Another deployment is in progress in the environment.
    Busy(i64),
    /// The deployment has already ended (promoted, rolled back or aborted): its state is
    /// final and a late writer cannot change it.
    Ended(String),
    NotFound,
    /// The writer's lease (its fencing token) is no longer current: another conductor
    /// runs the environment now, and this late write changes nothing.
    Fenced,
}

/// A flag's kill switch as set by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlagKillRow {
    pub key: String,
    pub killed: bool,
    pub actor: String,
    pub reason: String,
    pub updated_at_ms: i64,
}

/// A release of the release train.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRow {
    pub id: i64,
    pub tenant: String,
    pub service: String,
    /// SemVer, without the tag prefix.
    pub version: String,
    pub commit: String,
    /// The artifact's path on the conductor's host.
    pub artifact: String,
    /// `sha256:<hex>` of the artifact.
    pub digest: String,
    /// `cut`, `progressing`, `blocked`, `released`, `rolled_back`.
    pub status: String,
    /// The train's progress (JSON, owned by the conductor).
    pub state: String,
    /// The release notes (Markdown).
    pub notes: String,
    pub actor: String,
    pub reason: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
