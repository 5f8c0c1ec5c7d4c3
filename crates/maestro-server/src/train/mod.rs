//! The release train: a release (version, commit, artifact, notes) is cut only from a
//! commit whose required gates are green and whose artifact's evidence verifies; promoting
//! it canaries it through each stage in order (`stage`, then `prod`), runs the post-deploy
//! verification after each promotion (a smoke suite and the golden-signal check) and soaks
//! between stages with the golden signals and the SLO's burn rate holding. A failed
//! verification or soak rolls the release back everywhere it went. Every step is saved in
//! the store before it is acted on, so a restarted conductor resumes where it stopped; a
//! lease per release keeps one conductor driving it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use maestro_canary::Observation;
use maestro_store::{ReleaseRow, RunStatus};
use serde::Deserialize;
use serde_json::{Value, json};

mod progress;

pub use progress::{
    During, FORMAT as PROGRESS_FORMAT, GateResult, Progress, ProgressError, ReleaseStatus,
    SignalCheck, SmokeResult, Stage, Step, TrainEvent, Verdict,
};

use crate::api::{Answer, ApiError, Ctx, bad_request};
use crate::authz::Resource;
use crate::{AppState, ServerError, now_ms};

/// How long a conductor's claim on driving a release lasts without renewal…
const LEASE_TTL_MS: i64 = 15_000;
/// …and how often the driver renews it.
const LEASE_RENEW: Duration = Duration::from_secs(5);
/// How often waiting steps look again (a canary's outcome, a lease).
const POLL: Duration = Duration::from_millis(500);
/// The longest one golden-signal observation of a soak lasts.
const SOAK_SLICE: Duration = Duration::from_secs(5);
/// The most of a smoke job's output kept in the release's record.
const SMOKE_TAIL: usize = 4096;
/// The most changed paths a cut may send.
const MAX_CHANGED_PATHS: usize = 100_000;

/// `[[trains]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// The service it releases (the stages' environments must run it).
    pub service: String,
    /// Environments in promotion order (`["stage", "prod"]`).
    pub stages: Vec<String>,
    /// How long a release soaks in each stage before the next (not after the last).
    #[serde(default = "default_soak")]
    pub soak: String,
    /// The golden-signal window of the post-deploy verification.
    #[serde(default = "default_verify")]
    pub verify: String,
    /// Gates that must be green at the commit; empty: every gate the commit's run has.
    #[serde(default)]
    pub required_gates: Vec<String>,
    /// The gate that checks migrations, required when a changed path matches
    /// `migration_paths`.
    pub migration_gate: Option<String>,
    #[serde(default)]
    pub migration_paths: Vec<String>,
    /// The post-deploy smoke suite: jobs run after each promotion.
    #[serde(default)]
    pub smoke: Vec<SmokeSettings>,
    #[serde(default)]
    pub slo: SloSettings,
    /// The tenant its releases belong to.
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

/// `[[trains.smoke]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeSettings {
    pub name: String,
    /// Program and arguments; it gets `MAESTRO_TARGET_URL`, `MAESTRO_ENVIRONMENT`,
    /// `MAESTRO_SERVICE`, `MAESTRO_RELEASE_VERSION`, `PATH` and `HOME`, nothing else.
    pub command: Vec<String>,
    #[serde(default = "default_smoke_timeout")]
    pub timeout: String,
    /// Where it runs (relative to the configuration file); default: there.
    pub workdir: Option<PathBuf>,
}

/// `[trains.slo]`: the availability objective the soak and verification hold the release
/// to, as an error-budget burn rate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloSettings {
    /// Share of requests that must not fail (`0.999`).
    pub objective: f64,
    /// The fastest the error budget may burn (`14.4`: a 30-day budget gone in 2 days).
    pub max_burn_rate: f64,
}

impl Default for SloSettings {
    fn default() -> SloSettings {
        SloSettings {
            objective: 0.999,
            max_burn_rate: 14.4,
        }
    }
}

fn default_soak() -> String {
    "10m".to_owned()
}
fn default_verify() -> String {
    "30s".to_owned()
}
fn default_smoke_timeout() -> String {
    "60s".to_owned()
}
fn default_tenant() -> String {
    "default".to_owned()
}

/// One smoke job, checked.
#[derive(Debug, Clone)]
pub struct Smoke {
    pub name: String,
    pub command: Vec<String>,
    pub timeout: Duration,
    pub workdir: PathBuf,
}

/// A train, checked.
#[derive(Debug, Clone)]
pub struct Train {
    pub service: String,
    pub tenant: String,
    pub stages: Vec<String>,
    pub soak: Duration,
    pub verify: Duration,
    pub required_gates: Vec<String>,
    pub migration_gate: Option<String>,
    pub migration_paths: globset::GlobSet,
    pub smoke: Vec<Smoke>,
    pub slo: SloSettings,
}

fn duration(field: &str, v: &str) -> Result<Duration, ServerError> {
    maestro_canary::strategy::parse_duration_ms(v)
        .map(Duration::from_millis)
        .ok_or_else(|| ServerError::Config {
            source_name: field.to_owned(),
            message: format!("`{v}` is not a duration (a number and ms, s, m or h: `10m`)"),
        })
}

impl TrainSettings {
    /// Checks the train against the configured environments.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming `trains[i].field`.
    pub fn validate(
        self,
        i: usize,
        base: &Path,
        environments: &[crate::environments::EnvConfig],
    ) -> Result<Train, ServerError> {
        let bad = |field: &str, message: String| ServerError::Config {
            source_name: format!("trains[{i}].{field}"),
            message,
        };
        if self.service.trim().is_empty() {
            return Err(bad("service", "is empty: name the service".to_owned()));
        }
        if self.stages.is_empty() {
            return Err(bad(
                "stages",
                "is empty: list the environments in promotion order, e.g. [\"stage\", \"prod\"]"
                    .to_owned(),
            ));
        }
        let mut seen = HashSet::new();
        for (j, s) in self.stages.iter().enumerate() {
            let Some(env) = environments.iter().find(|e| e.spec.name == *s) else {
                return Err(bad(
                    &format!("stages[{j}]"),
                    format!(
                        "`{s}` is not an environment of this conductor: add an [[environments]] table named `{s}`"
                    ),
                ));
            };
            if env.spec.service != self.service {
                return Err(bad(
                    &format!("stages[{j}]"),
                    format!(
                        "environment `{s}` runs service `{}`, not `{}`",
                        env.spec.service, self.service
                    ),
                ));
            }
            if env.tenant != self.tenant {
                return Err(bad(
                    &format!("stages[{j}]"),
                    format!(
                        "environment `{s}` belongs to tenant `{}`, the train to `{}`: a train releases only into its own tenant's environments",
                        env.tenant, self.tenant
                    ),
                ));
            }
            if !seen.insert(s.clone()) {
                return Err(bad(
                    &format!("stages[{j}]"),
                    format!("`{s}` is listed twice"),
                ));
            }
        }
        let soak = duration(&format!("trains[{i}].soak"), &self.soak)?;
        let verify = duration(&format!("trains[{i}].verify"), &self.verify)?;
        let mut globs = globset::GlobSetBuilder::new();
        for (j, p) in self.migration_paths.iter().enumerate() {
            globs.add(
                globset::Glob::new(p)
                    .map_err(|e| bad(&format!("migration_paths[{j}]"), format!("`{p}`: {e}")))?,
            );
        }
        if !self.migration_paths.is_empty() && self.migration_gate.is_none() {
            return Err(bad(
                "migration_gate",
                "is missing: name the gate that checks migrations (e.g. \"migrations\")".to_owned(),
            ));
        }
        let migration_paths = globs
            .build()
            .map_err(|e| bad("migration_paths", e.to_string()))?;
        let mut smoke = Vec::new();
        for (j, s) in self.smoke.into_iter().enumerate() {
            if s.command.is_empty() {
                return Err(bad(
                    &format!("smoke[{j}].command"),
                    "is empty: give the program and its arguments".to_owned(),
                ));
            }
            if smoke.iter().any(|x: &Smoke| x.name == s.name) || s.name.is_empty() {
                return Err(bad(
                    &format!("smoke[{j}].name"),
                    format!("`{}` is empty or used twice", s.name),
                ));
            }
            let timeout = duration(&format!("trains[{i}].smoke[{j}].timeout"), &s.timeout)?;
            // Absolute now: a relative configuration path has an empty parent.
            let dir = match s.workdir {
                Some(w) => base.join(w),
                None => base.to_path_buf(),
            };
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            let workdir = std::path::absolute(&dir).map_err(|e| {
                bad(
                    &format!("smoke[{j}].workdir"),
                    format!("{}: {e}", dir.display()),
                )
            })?;
            smoke.push(Smoke {
                name: s.name,
                command: s.command,
                timeout,
                workdir,
            });
        }
        let slo = self.slo;
        if !(slo.objective > 0.0 && slo.objective < 1.0) {
            return Err(bad(
                "slo.objective",
                format!(
                    "{} is not a share between 0 and 1 (e.g. 0.999)",
                    slo.objective
                ),
            ));
        }
        if !(slo.max_burn_rate.is_finite() && slo.max_burn_rate > 0.0) {
            return Err(bad(
                "slo.max_burn_rate",
                format!(
                    "{} must be a positive number (e.g. 14.4)",
                    slo.max_burn_rate
                ),
            ));
        }
        Ok(Train {
            service: self.service,
            tenant: self.tenant,
            stages: self.stages,
            soak,
            verify,
            required_gates: self.required_gates,
            migration_gate: self.migration_gate,
            migration_paths,
            smoke,
            slo,
        })
    }
}

/// The golden signals of one observation against the canary limits and the SLO.
#[must_use]
pub fn assess(
    during: During,
    o: &Observation,
    limits: &maestro_canary::Limits,
    slo: &SloSettings,
) -> SignalCheck {
    let error_rate = if o.requests == 0 {
        0.0
    } else {
        o.errors as f64 / o.requests as f64
    };
    let burn_rate = error_rate / (1.0 - slo.objective);
    let p95_ms = p95(&o.latencies_ms);
    let mut fails = Vec::new();
    let status = if o.requests < limits.min_requests.max(1) {
        Verdict::NoData
    } else {
        if error_rate > limits.max_error_rate {
            fails.push(format!(
                "error rate {:.2}% is above the limit {:.2}%",
                error_rate * 100.0,
                limits.max_error_rate * 100.0
            ));
        }
        if burn_rate > slo.max_burn_rate {
            fails.push(format!(
                "the error budget burns {burn_rate:.1}× (objective {}), above {}×",
                slo.objective, slo.max_burn_rate
            ));
        }
        if let (Some(max), Some(p)) = (limits.max_p95_ms, p95_ms)
            && p > max
        {
            fails.push(format!("p95 latency {p:.1} ms is above {max} ms"));
        }
        if fails.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    };
    let why = match status {
        Verdict::NoData => format!(
            "{} requests, fewer than the {} the check needs",
            o.requests, limits.min_requests
        ),
        Verdict::Pass => format!(
            "{} requests, error rate {:.2}%, burn rate {burn_rate:.1}×",
            o.requests,
            error_rate * 100.0
        ),
        Verdict::Fail => fails.join("; "),
    };
    SignalCheck {
        during,
        at_ms: now_ms(),
        requests: o.requests,
        errors: o.errors,
        error_rate,
        burn_rate,
        p95_ms,
        status,
        why,
    }
}

fn p95(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64) * 0.95).ceil() as usize;
    v.get(i.saturating_sub(1).min(v.len() - 1)).copied()
}

/// The gates of the newest finished run at `commit` against what the train requires.
///
/// # Errors
/// Why the commit may not be released, naming the gates.
pub fn check_gates(
    train: &Train,
    runs: &[maestro_store::RunDetail],
    commit: &str,
    migrations_changed: bool,
) -> Result<(i64, Vec<GateResult>), String> {
    let short = &commit[..commit.len().min(12)];
    let Some(detail) = runs.first() else {
        return Err(format!(
            "no pipeline run at commit {short} was reported to this conductor: run `maestro run --server URL` on it first"
        ));
    };
    let run = &detail.run;
    if run.status == RunStatus::Running {
        return Err(format!(
            "run {} at commit {short} is still running: wait for its gates",
            run.id
        ));
    }
    let mut gates: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for j in &detail.jobs {
        if let Some(g) = &j.gate {
            gates
                .entry(g.clone())
                .or_default()
                .push((j.name.clone(), j.status.clone()));
        }
    }
    let mut required: Vec<String> = if train.required_gates.is_empty() {
        gates.keys().cloned().collect()
    } else {
        train.required_gates.clone()
    };
    if migrations_changed
        && let Some(g) = &train.migration_gate
        && !required.contains(g)
    {
        required.push(g.clone());
    }
    if gates.is_empty() {
        return Err(format!(
            "run {} at commit {short} has no gates: a run without gates proves nothing (report the pipeline's jobs with `maestro run --server URL`)",
            run.id
        ));
    }
    let mut results = Vec::new();
    let mut problems = Vec::new();
    for g in &required {
        let jobs = gates.get(g).cloned().unwrap_or_default();
        let green = !jobs.is_empty() && jobs.iter().all(|(_, s)| s == "succeeded");
        if jobs.is_empty() {
            problems.push(format!("gate `{g}` did not run"));
        } else if !green {
            let bad: Vec<String> = jobs
                .iter()
                .filter(|(_, s)| s != "succeeded")
                .map(|(n, s)| format!("{n} {s}"))
                .collect();
            let why = if train.migration_gate.as_ref() == Some(g) && migrations_changed {
                " (migrations changed since the last release)"
            } else {
                ""
            };
            problems.push(format!("gate `{g}` is not green{why}: {}", bad.join(", ")));
        }
        results.push(GateResult {
            gate: g.clone(),
            green,
            jobs,
        });
    }
    if problems.is_empty() {
        Ok((run.id, results))
    } else {
        Err(format!(
            "commit {short} (run {}): {}",
            run.id,
            problems.join("; ")
        ))
    }
}

/// The trains of a conductor and the releases it is driving.
#[derive(Debug, Default)]
pub struct Trains {
    pub trains: Vec<Arc<Train>>,
    driving: Mutex<HashMap<i64, tokio::task::AbortHandle>>,
}

impl Trains {
    #[must_use]
    pub fn new(trains: Vec<Train>) -> Trains {
        Trains {
            trains: trains.into_iter().map(Arc::new).collect(),
            driving: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, service: &str) -> Option<Arc<Train>> {
        self.trains.iter().find(|t| t.service == service).cloned()
    }

    fn driving(&self) -> std::sync::MutexGuard<'_, HashMap<i64, tokio::task::AbortHandle>> {
        self.driving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Stops driving every release here and gives their leases up, so another conductor (or
/// this one restarted) resumes them at once. Each step was saved before it began: the step
/// in hand is done again.
pub async fn shutdown(state: &Arc<AppState>) {
    let ids: Vec<i64> = {
        let mut driving = state.trains.driving();
        driving
            .drain()
            .map(|(id, task)| {
                task.abort();
                id
            })
            .collect()
    };
    let holder = state.holder.get().cloned().unwrap_or_default();
    for id in ids {
        let (l, h) = (format!("release:{id}"), holder.clone());
        let _ = state
            .pool
            .with(move |s| s.lease_release(&l, &h, now_ms()))
            .await;
    }
}

fn resource(service: &str, version: Option<&str>, tenant: &str) -> Resource {
    Resource {
        kind: "release",
        id: version.map(str::to_owned),
        service: Some(service.to_owned()),
        environment: None,
        tenant: tenant.to_owned(),
    }
}

/// A release as the API shows it. A progress that does not parse is shown as `null` with
/// the reason beside it (`progress_error`), never as an empty one.
fn view(r: &ReleaseRow) -> Value {
    let (progress, error) = match Progress::parse(&r.state) {
        Ok(p) => (json!(p), Value::Null),
        Err(e) => (Value::Null, json!(e.to_string())),
    };
    let mut v = json!({
        "id": r.id, "service": r.service, "version": r.version, "commit": r.commit,
        "artifact": r.artifact, "digest": r.digest, "status": r.status,
        "actor": r.actor, "reason": r.reason, "notes": r.notes,
        "created_at_ms": r.created_at_ms, "updated_at_ms": r.updated_at_ms,
        "progress": progress,
        "url": format!("/api/v1/releases/{}/{}", r.service, r.version),
    });
    if !error.is_null() {
        v["progress_error"] = error;
    }
    v
}

/// The release's stored progress, or the 409 that says it cannot be read.
fn progress_of(row: &ReleaseRow) -> Result<Progress, ApiError> {
    Progress::parse(&row.state).map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            "release_unreadable",
            format!(
                "{} {}: {e}; nothing was done (the row is kept as it is for inspection)",
                row.service, row.version
            ),
        )
    })
}

/// Runs file work (copying, verifying) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

fn train_of(ctx: &Ctx, service: &str) -> Result<Arc<Train>, ApiError> {
    ctx.auth.state.trains.get(service).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_train",
            format!(
                "no release train for service `{service}` on this conductor: add a [[trains]] table"
            ),
        )
    })
}

/// `GET /api/v1/releases`: the tenant's releases, newest first.
pub(crate) fn list(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let tenant = ctx.auth.actor.tenant.clone();
        let t = tenant.clone();
        let rows = ctx
            .auth
            .state
            .pool
            .with(move |s| s.releases(Some(&t), 100))
            .await
            .map_err(|e| ApiError::store(&e))?;
        let visible: Vec<Value> = rows
            .iter()
            .filter(|r| {
                ctx.auth
                    .visible(&resource(&r.service, Some(&r.version), &r.tenant))
            })
            .map(view)
            .collect();
        ctx.auth
            .release(&resource("*", None, &tenant), json!({"releases": visible}))
    })
}

async fn row(ctx: &Ctx) -> Result<(ReleaseRow, Resource), ApiError> {
    let service = ctx.path.get("service").cloned().unwrap_or_default();
    let version = ctx.path.get("version").cloned().unwrap_or_default();
    let tenant = ctx.auth.actor.tenant.clone();
    let r = resource(&service, Some(&version), &tenant);
    let (s, v) = (service.clone(), version.clone());
    let found = ctx
        .auth
        .state
        .pool
        .with(move |st| st.release(&tenant, &s, &v))
        .await
        .map_err(|e| ApiError::store(&e))?;
    match found {
        Some(row) if ctx.auth.visible(&r) => Ok((row, r)),
        _ => Err(crate::api::not_found(&r)),
    }
}

/// `GET /api/v1/releases/{service}/{version}`.
pub(crate) fn read(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (row, r) = row(&ctx).await?;
        ctx.auth.release(&r, view(&row))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CutBody {
    service: String,
    /// SemVer, without a tag prefix.
    version: String,
    /// The full commit SHA.
    commit: String,
    /// The artifact's absolute path on the conductor's host (evidence beside it).
    artifact: PathBuf,
    #[serde(default)]
    notes: String,
    /// Paths changed since the last release (for the migration gate).
    #[serde(default)]
    changed_paths: Vec<String>,
    /// The release branch the CLI found the commit on (recorded in the events).
    #[serde(default)]
    branch: Option<String>,
}

/// `POST /api/v1/releases` (sensitive): cut a release of a green commit.
pub(crate) fn cut(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let body: CutBody = ctx.json()?;
        let train = train_of(&ctx, &body.service)?;
        let r = resource(&body.service, Some(&body.version), &ctx.auth.actor.tenant);
        if !ctx.auth.visible(&r) || ctx.auth.actor.tenant != train.tenant {
            return Err(crate::api::not_found(&r));
        }
        if semver::Version::parse(&body.version).is_err() {
            return Err(bad_request(format!(
                "version: `{}` is not SemVer (MAJOR.MINOR.PATCH, e.g. 1.4.0 or 2.0.0-rc.1)",
                body.version
            )));
        }
        if body.commit.len() != 40 || !body.commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad_request(format!(
                "commit: `{}` is not a full 40-digit commit SHA (`git rev-parse HEAD`)",
                body.commit
            )));
        }
        if body.changed_paths.len() > MAX_CHANGED_PATHS || body.notes.len() > 1 << 20 {
            return Err(bad_request(format!(
                "changed_paths: at most {MAX_CHANGED_PATHS}; notes: at most 1 MiB"
            )));
        }
        // A version cut once is refused before any work (the store refuses it again at
        // the write, should two cuts race).
        let (t, sv, v) = (
            train.tenant.clone(),
            body.service.clone(),
            body.version.clone(),
        );
        let exists = ctx
            .auth
            .state
            .pool
            .with(move |s| s.release(&t, &sv, &v))
            .await
            .map_err(|e| ApiError::store(&e))?
            .is_some();
        if exists {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "release_exists",
                format!(
                    "{} {} was already cut: cut the next version, or promote it",
                    body.service, body.version
                ),
            ));
        }
        let migrations_changed = body
            .changed_paths
            .iter()
            .any(|p| train.migration_paths.is_match(p));
        let commit = body.commit.to_ascii_lowercase();
        // The artifact first: its signed provenance names the run whose gates decide.
        let unverified =
            |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unverified_artifact", m);
        let artifact = crate::release::confine(&body.artifact, &ctx.auth.state.artifact_roots)
            .map_err(unverified)?;
        // The artifact and its bundles are staged in the store by digest and verified there:
        // the release, its deploys and its evidence use that copy, whatever later happens to
        // the path it came from. Its signed provenance names the run whose gates decide.
        // Nothing is in the store until the permit (a refused cut leaves nothing).
        let Some(store) = ctx.auth.state.artifact_store.clone() else {
            return Err(unverified(
                "this conductor keeps no artifacts: set `artifact_store` (a directory) in its configuration".to_owned(),
            ));
        };
        let keys = trust_keys(
            &ctx.auth.state,
            train.stages.first().map_or("", String::as_str),
        );
        let staged = blocking(move || crate::release::stage(&artifact, &keys, &store))
            .await?
            .map_err(unverified)?;
        let named = staged.conductor_run;
        let runs = match named {
            None => Vec::new(),
            Some(id) => {
                let detail = ctx.auth.state.pool.with(move |s| s.run_detail(id)).await;
                match detail {
                    Ok(d) => vec![d],
                    Err(maestro_store::StoreError::NoSuchRun(_)) => Vec::new(),
                    Err(e) => return Err(ApiError::store(&e)),
                }
            }
        };
        let refuse =
            |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "gates_not_green", m);
        let short = &commit[..12];
        if let Some(d) = runs.first() {
            // Only a run reported to this conductor, of the train's tenant, at this commit.
            if d.run.tenant != train.tenant || d.run.reporter.is_none() {
                return Err(refuse(format!(
                    "no pipeline run at commit {short} was reported to this conductor for this artifact: the run its provenance names ({}) is not one reported to it by tenant `{}`",
                    d.run.id, train.tenant
                )));
            }
            if d.run
                .commit
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
                != Some(commit.as_str())
            {
                return Err(refuse(format!(
                    "the artifact was built by run {} at commit {}, not at {short}: cut the commit it was built from",
                    d.run.id,
                    d.run.commit.as_deref().unwrap_or("(none)")
                )));
            }
        } else if named.is_none() {
            return Err(refuse(format!(
                "no pipeline run at commit {short} was reported to this conductor for this artifact: its provenance names none — build and attest it in `maestro run --server URL`"
            )));
        }
        let (run, gates) = check_gates(&train, &runs, &commit, migrations_changed)
            .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "gates_not_green", m))?;
        let mut progress = Progress {
            run: Some(run),
            gates,
            migrations_changed,
            evidence: Some(staged.summary.clone()),
            ..Progress::new(&train.stages)
        };
        let on = body
            .branch
            .as_ref()
            .map(|b| format!(" on {b}"))
            .unwrap_or_default();
        progress.event(format!(
            "cut from commit {}{on} (run {run}) by {}",
            &commit[..12],
            ctx.auth.actor.id
        ));
        let permit = ctx.permit(&r).await?;
        let digest = staged.digest.clone();
        let artifact = blocking(move || staged.commit())
            .await?
            .map_err(|m| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "artifact_store", m))?;
        let row = ReleaseRow {
            id: 0,
            tenant: train.tenant.clone(),
            service: body.service.clone(),
            version: body.version.clone(),
            commit,
            artifact: artifact.display().to_string(),
            digest,
            status: ReleaseStatus::Cut.as_str().to_owned(),
            state: progress.to_text(),
            notes: body.notes,
            actor: ctx.auth.actor.id.clone(),
            reason: ctx.reason.clone().unwrap_or_default(),
            created_at_ms: now_ms(),
            updated_at_ms: now_ms(),
        };
        let new = row.clone();
        let id = ctx
            .auth
            .state
            .pool
            .with(move |s| s.release_create(&new))
            .await
            .map_err(|e| ApiError::store(&e))?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "release_exists",
                    format!(
                        "{} {} was already cut: cut the next version, or promote it",
                        row.service, row.version
                    ),
                )
            })?;
        let row = ReleaseRow { id, ..row };
        let detail = format!("cut by {}: {}", ctx.auth.actor.id, row.reason);
        audit(&ctx.auth.state, &row, "release.cut", &detail, Some(run)).await;
        permit.created(view(&row))
    })
}

/// The largest artifact evidence bundle or trusted key copied into a release's evidence.
const MAX_EVIDENCE_FILE: u64 = 16 << 20;
/// The most audit entries of one kind (target) a bundle carries.
const MAX_AUDIT_ENTRIES: usize = 1_000;

/// `GET /api/v1/releases/{service}/{version}/evidence`: the release's evidence bundle
/// (`maestro-evidence`), its manifest signed with the conductor's audit log key.
pub(crate) fn evidence(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (row, r) = row(&ctx).await?;
        let state = Arc::clone(&ctx.auth.state);
        let Some(key) = state.audit_key.clone() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "the evidence bundle is signed with the audit log key, and this conductor has none (MAESTRO_AUDIT_KEY)",
            ));
        };
        let bytes = build_evidence(&state, &row, key)
            .await
            .map_err(|m| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "evidence_failed", m))?;
        ctx.auth.release_file(
            &r,
            "application/gzip",
            format!("{}-{}.evidence.tar.gz", row.service, row.version),
            bytes,
        )
    })
}

async fn build_evidence(
    state: &Arc<AppState>,
    row: &ReleaseRow,
    key: Arc<maestro_audit::LogKey>,
) -> Result<Vec<u8>, String> {
    let progress = Progress::parse(&row.state).map_err(|e| e.to_string())?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let json = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    files.push(("release.json".to_owned(), json(&view(row))));
    files.push(("notes.md".to_owned(), row.notes.clone().into_bytes()));

    // The gates and test reports of the run it was cut from, and the waivers it used.
    let run = progress.run;
    let (detail, waivers, deployments) = {
        let ids: Vec<i64> = progress
            .stages
            .iter()
            .filter_map(|s| s.deployment)
            .collect();
        state
            .pool
            .with(move |s| {
                let detail = run.map(|r| s.run_detail(r)).transpose()?;
                let waivers: Vec<_> = s
                    .waiver_uses(10_000)?
                    .into_iter()
                    .filter(|w| run.is_some() && w.run_id == run)
                    .collect();
                let mut deployments = Vec::new();
                for id in ids {
                    if let Some(d) = s.deployment(id)? {
                        deployments.push(d);
                    }
                }
                Ok((detail, waivers, deployments))
            })
            .await
            .map_err(|e| e.to_string())?
    };
    files.push((
        "gates.json".to_owned(),
        json(&json!({"run": detail, "gates": progress.gates, "migrations_changed": progress.migrations_changed})),
    ));
    files.push(("waivers.json".to_owned(), json(&json!(waivers))));
    let mut targets = vec![format!("release:{}/{}", row.service, row.version)];
    for d in &deployments {
        let canary: Value = serde_json::from_str(&d.state).unwrap_or_default();
        files.push((
            format!("canary/{}.json", d.environment),
            json(&json!({
                "id": d.id, "environment": d.environment, "service": d.service,
                "version": d.version, "artifact": d.artifact, "previous": d.previous,
                "status": d.status, "actor": d.actor, "reason": d.reason,
                "created_at_ms": d.created_at_ms, "updated_at_ms": d.updated_at_ms,
                "canary": canary,
            })),
        ));
        targets.push(format!("environment:{}/deployment:{}", d.environment, d.id));
    }

    // The artifact's evidence as the first stage verified it, and the keys it trusted.
    let artifact = PathBuf::from(&row.artifact);
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".to_owned());
    for kind in maestro_sign::evidence::Kind::ALL {
        let path = kind.bundle_path(&artifact);
        let bytes = maestro_sign::read_limited(&path, MAX_EVIDENCE_FILE)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if kind == maestro_sign::evidence::Kind::Sbom {
            let sbom = maestro_evidence::sbom_of(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            files.push((maestro_evidence::SBOM.to_owned(), json(&sbom)));
        }
        files.push((format!("artifact/{name}{}", kind.suffix()), bytes));
    }
    let first = progress
        .stages
        .first()
        .map(|s| s.environment.clone())
        .unwrap_or_default();
    let keys = trust_keys(state, &first);
    for (i, k) in keys.iter().enumerate() {
        let pem = maestro_sign::read_limited(k, MAX_EVIDENCE_FILE)
            .map_err(|e| format!("trusted key {}: {e}", k.display()))?;
        files.push((format!("artifact/keys/{i}.pub"), pem));
    }

    // Its audit entries, each with an inclusion proof against one signed checkpoint.
    let tenant = row.tenant.clone();
    let (items, checkpoint) = state
        .audit
        .with(move |log| {
            let Some((size, note)) = log.checkpoint()? else {
                return Ok((Vec::new(), String::new()));
            };
            let mut indexes = Vec::new();
            for t in targets {
                let q = maestro_audit::Query {
                    target: Some(t),
                    tenant: Some(tenant.clone()),
                    limit: MAX_AUDIT_ENTRIES,
                    ..maestro_audit::Query::default()
                };
                indexes.extend(
                    log.list(&q)?
                        .into_iter()
                        .map(|e| e.index)
                        .filter(|&i| i < size),
                );
            }
            indexes.sort_unstable();
            indexes.dedup();
            let mut items = Vec::new();
            for i in indexes {
                let (_, body) = log.entry(i)?;
                items.push(maestro_evidence::AuditItem {
                    index: i,
                    body: String::from_utf8_lossy(&body).into_owned(),
                    proof: log.prove(i, Some(size))?,
                });
            }
            Ok((items, note))
        })
        .await
        .map_err(|e| e.to_string())?;
    files.push((
        "audit/entries.json".to_owned(),
        serde_json::to_vec_pretty(&items).unwrap_or_default(),
    ));
    files.push(("audit/checkpoint".to_owned(), checkpoint.into_bytes()));
    files.push((
        "audit/vkey".to_owned(),
        format!("{}\n", key.vkey()).into_bytes(),
    ));

    let header = maestro_evidence::Header {
        service: row.service.clone(),
        version: row.version.clone(),
        commit: row.commit.clone(),
        artifact: row.digest.clone(),
        status: row.status.clone(),
        created_at: jiff::Timestamp::now().to_string(),
    };
    tokio::task::spawn_blocking(move || {
        maestro_evidence::write(header, files, |text| {
            key.sign_note(text).map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The artifact's evidence, verified with the first stage's trusted keys: its digest and a
/// summary.
/// The keys the environment `name` trusts.
fn trust_keys(state: &AppState, name: &str) -> Vec<PathBuf> {
    state
        .environment_configs
        .iter()
        .find(|e| e.spec.name == name)
        .map(|e| e.trust_keys.clone())
        .unwrap_or_default()
}

/// `POST /api/v1/releases/{service}/{version}/{action}` (sensitive): `promote` starts or
/// resumes the train; `rollback` returns every stage it reached to its earlier release.
pub(crate) fn control(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (row, r) = row(&ctx).await?;
        let train = train_of(&ctx, &row.service)?;
        let action = ctx.path.get("action").cloned().unwrap_or_default();
        let state = Arc::clone(&ctx.auth.state);
        let who = format!(
            "{}: {}",
            ctx.auth.actor.id,
            ctx.reason.clone().unwrap_or_default()
        );
        let status = ReleaseStatus::parse(&row.status).map_err(|m| {
            ApiError::new(
                StatusCode::CONFLICT,
                "release_unreadable",
                format!("{} {}: {m}", row.service, row.version),
            )
        })?;
        if !matches!(action.as_str(), "promote" | "rollback") {
            return Err(bad_request(format!(
                "`{action}` is not an action: promote or rollback"
            )));
        }
        let mut progress = progress_of(&row)?;
        // Every refusal before the permit, so a refused call writes nothing.
        let promote = action == "promote";
        if promote && status.ended() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "release_ended",
                format!(
                    "{} {} has ended ({}): cut a new release",
                    row.service, row.version, row.status
                ),
            ));
        }
        if !promote && status == ReleaseStatus::RolledBack {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "release_ended",
                format!("{} {} is already rolled back", row.service, row.version),
            ));
        }
        let permit = ctx.permit(&r).await?;
        if promote {
            if status != ReleaseStatus::Progressing {
                progress.reason = None;
                progress.event(format!("promotion started by {who}"));
                let saved = save(
                    &state,
                    row.id,
                    Some(status),
                    ReleaseStatus::Progressing,
                    &progress,
                )
                .await
                .map_err(|e| ApiError::store(&e))?;
                if !saved {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "release_changed",
                        format!(
                            "{} {} changed meanwhile: look at it again",
                            row.service, row.version
                        ),
                    ));
                }
                audit(&state, &row, "release.promoting", &who, progress.run).await;
            }
            spawn_driver(&state, train, row.id, &row.service, &row.version);
        } else {
            // The driver here stops first; one elsewhere stops at its next save.
            if let Some(task) = state.trains.driving().remove(&row.id) {
                task.abort();
            }
            let (t, sv, v) = (row.tenant.clone(), row.service.clone(), row.version.clone());
            let fresh = state
                .pool
                .with(move |st| st.release(&t, &sv, &v))
                .await
                .map_err(|e| ApiError::store(&e))?
                .unwrap_or_else(|| row.clone());
            let progress = progress_of(&fresh)?;
            roll_back(&state, &fresh, progress, &format!("rolled back by {who}"))
                .await
                .map_err(|m| ApiError::new(StatusCode::CONFLICT, "rollback_failed", m))?;
        }
        let (t, s, v) = (row.tenant.clone(), row.service.clone(), row.version.clone());
        let now = ctx
            .auth
            .state
            .pool
            .with(move |st| st.release(&t, &s, &v))
            .await
            .map_err(|e| ApiError::store(&e))?
            .unwrap_or(row);
        permit.answer(view(&now))
    })
}

/// Saves the release — only while its status is still `expect`, when given. Returns
/// whether it saved.
async fn save(
    state: &Arc<AppState>,
    id: i64,
    expect: Option<ReleaseStatus>,
    status: ReleaseStatus,
    progress: &Progress,
) -> Result<bool, maestro_store::StoreError> {
    let text = progress.to_text();
    state
        .pool
        .with(move |s| {
            s.release_save(
                id,
                expect.map(ReleaseStatus::as_str),
                status.as_str(),
                &text,
                now_ms(),
            )
        })
        .await
}

/// The driver's save of a step: `false` when the release is no longer `progressing` (rolled
/// back or blocked meanwhile, by hand or by another conductor): the driver stops.
async fn advance(
    state: &Arc<AppState>,
    id: i64,
    status: ReleaseStatus,
    p: &Progress,
) -> Result<bool, String> {
    save(state, id, Some(ReleaseStatus::Progressing), status, p)
        .await
        .map_err(|e| e.to_string())
}

async fn load(
    state: &Arc<AppState>,
    id: i64,
    tenant: &str,
    service: &str,
    version: &str,
) -> Option<ReleaseRow> {
    let (t, s, v) = (tenant.to_owned(), service.to_owned(), version.to_owned());
    state
        .pool
        .with(move |st| st.release(&t, &s, &v))
        .await
        .ok()
        .flatten()
        .filter(|r| r.id == id)
}

/// Starts driving a release here unless this conductor already does: the lease
/// `release:<id>` first (another conductor may hold it), renewed every [`LEASE_RENEW`]; the
/// driver stops when it cannot renew.
fn spawn_driver(state: &Arc<AppState>, train: Arc<Train>, id: i64, service: &str, version: &str) {
    let mut driving = state.trains.driving();
    if driving.contains_key(&id) {
        return;
    }
    let (st, service, version) = (Arc::clone(state), service.to_owned(), version.to_owned());
    let task = tokio::spawn(async move {
        let state = st;
        let holder = state.holder.get().cloned().unwrap_or_default();
        let lease = format!("release:{id}");
        if renew(&state, &lease, &holder).await {
            let renewing = async {
                loop {
                    tokio::time::sleep(LEASE_RENEW).await;
                    if !renew(&state, &lease, &holder).await {
                        return;
                    }
                }
            };
            let outcome = tokio::select! {
                o = drive(&state, &train, id, &service, &version) => o,
                () = renewing => Err("the lease could not be renewed: another conductor may drive it now".to_owned()),
            };
            if let Err(e) = outcome {
                crate::log::event(
                    "error",
                    "release train stopped",
                    &[("release", json!(version)), ("error", json!(e))],
                );
            }
            let (l, h) = (lease.clone(), holder.clone());
            let _ = state
                .pool
                .with(move |s| s.lease_release(&l, &h, now_ms()))
                .await;
        }
        state.trains.driving().remove(&id);
    });
    driving.insert(id, task.abort_handle());
}

/// Resumes, every few seconds, the releases in progress that no conductor drives (after a
/// restart, or when the one driving it stopped).
pub async fn resume(state: Arc<AppState>) {
    loop {
        let rows = state
            .pool
            .with(|s| s.releases_progressing())
            .await
            .unwrap_or_default();
        for r in rows {
            if let Some(train) = state
                .trains
                .get(&r.service)
                .filter(|t| t.tenant == r.tenant)
            {
                spawn_driver(&state, train, r.id, &r.service, &r.version);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Renews the driver's lease; `false` when another conductor holds it now.
async fn renew(state: &Arc<AppState>, lease: &str, holder: &str) -> bool {
    let (l, h) = (lease.to_owned(), holder.to_owned());
    state
        .pool
        .with(move |s| s.lease_acquire(&l, &h, LEASE_TTL_MS, now_ms()))
        .await
        .ok()
        .flatten()
        .is_some()
}

type Env = (
    Arc<maestro_deliver::Environment>,
    crate::environments::EnvConfig,
);

async fn environment(state: &Arc<AppState>, name: &str) -> Result<Env, String> {
    // An environment another conductor runs may come here when its lease lapses.
    for _ in 0..20 {
        if let Some(e) = crate::environments::open_here(state, name) {
            return Ok(e);
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!(
        "environment `{name}` does not run on this conductor (another holds its lease)"
    ))
}

/// Drives a release from its saved step to the end. `Err` only for a store failure or a
/// lost lease: the release stays `progressing` and is resumed.
async fn drive(
    state: &Arc<AppState>,
    train: &Arc<Train>,
    id: i64,
    service: &str,
    version: &str,
) -> Result<(), String> {
    loop {
        let Some(row) = load(state, id, &train.tenant, service, version).await else {
            return Err("the release cannot be read".to_owned());
        };
        if row.status != ReleaseStatus::Progressing.as_str() {
            return Ok(());
        }
        let mut p = match Progress::parse(&row.state) {
            Ok(p) => p,
            Err(e) => return unreadable(state, &row, &e).await,
        };
        let Some(i) = p.stages.iter().position(|s| s.step != Step::Done) else {
            p.event("released: every stage promoted, verified and soaked");
            if !advance(state, id, ReleaseStatus::Released, &p).await? {
                return Ok(());
            }
            let stages = train.stages.join(", ");
            audit(
                state,
                &row,
                "release.released",
                &format!("promoted, verified and soaked in {stages}"),
                p.run,
            )
            .await;
            return Ok(());
        };
        let name = p.stages[i].environment.clone();
        let last = i + 1 == p.stages.len();
        match p.stages[i].step {
            Step::Pending => {
                let (env, cfg) = match environment(state, &name).await {
                    Ok(e) => e,
                    Err(m) => return block(state, &row, &mut p, m).await,
                };
                // Deployed before a restart, the step not yet saved: carry on with it.
                let (n, since) = (name.clone(), row.created_at_ms);
                let (actor, why) = (
                    format!("train:{service}"),
                    format!("release {version} to {name}"),
                );
                let earlier = state
                    .pool
                    .with(move |s| s.deployments(Some(&n), false, 20))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|d| d.actor == actor && d.reason == why && d.created_at_ms >= since);
                if let Some(d) = earlier {
                    p.stages[i].deployment = Some(d.id);
                    p.stages[i].step = Step::Canary;
                    p.event(format!(
                        "{name}: canary deployment {} of {} (resumed)",
                        d.id, d.version
                    ));
                    if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
                        return Ok(());
                    }
                    continue;
                }
                // Promotion blocks: the evidence still verifies with this stage's keys, and
                // the stage is not already burning its error budget.
                let keys = cfg.trust_keys.clone();
                let kept = Path::new(&row.artifact);
                let in_store = state
                    .artifact_store
                    .as_ref()
                    .is_some_and(|s| kept.starts_with(s));
                let artifact = match if in_store {
                    Ok(kept.to_path_buf())
                } else {
                    crate::release::confine(kept, &state.artifact_roots)
                } {
                    Ok(a) => a,
                    Err(m) => return block(state, &row, &mut p, format!("{name}: {m}")).await,
                };
                let unpacked = {
                    let releases = cfg.spec.state_dir.join("releases");
                    tokio::task::spawn_blocking(move || {
                        crate::release::prepare(&artifact, &keys, &releases)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                };
                let unpacked = match unpacked {
                    Ok(u) if u.digest == row.digest => u,
                    Ok(u) => {
                        let m = format!(
                            "{name}: the artifact is now {} (cut as {}): it changed after the cut",
                            u.digest, row.digest
                        );
                        return block(state, &row, &mut p, m).await;
                    }
                    Err(m) => {
                        return block(state, &row, &mut p, format!("{name}: evidence: {m}")).await;
                    }
                };
                let limits = env.limits().clone();
                let window = Duration::from_millis(cfg.spec.plan.interval_ms.max(1_000));
                if let Ok((stable, o)) = env.observe_stable(window).await {
                    let c = assess(During::Precheck, &o, &limits, &train.slo);
                    let failed = c.status == Verdict::Fail;
                    let why = c.why.clone();
                    p.stages[i].checks.push(c);
                    if failed {
                        let m = format!(
                            "{name}: its SLO is not healthy before the promotion (stable {stable}): {why}"
                        );
                        return block(state, &row, &mut p, m).await;
                    }
                    p.stages[i].previous = Some(stable);
                }
                let request = maestro_deliver::Request {
                    actor: format!("train:{service}"),
                    tenant: train.tenant.clone(),
                    reason: format!("release {version} to {name}"),
                    run_id: p.run,
                };
                let release = maestro_deliver::Release {
                    version: unpacked.version.clone(),
                    artifact: unpacked.digest.clone(),
                    dir: unpacked.dir,
                    env: BTreeMap::new(),
                };
                // Saved first as `canary` with no deployment: a crash between the two is
                // resumed by finding the deployment of this artifact.
                match env.deploy(release, request).await {
                    Ok(dep) => {
                        p.stages[i].deployment = Some(dep);
                        p.stages[i].step = Step::Canary;
                        p.event(format!(
                            "{name}: canary deployment {dep} of {}",
                            unpacked.version
                        ));
                    }
                    Err(maestro_deliver::DeployError::Busy(other)) => {
                        let m = format!(
                            "{name}: deployment {other} is in progress there: wait for it or abort it, then promote again"
                        );
                        return block(state, &row, &mut p, m).await;
                    }
                    Err(e) => {
                        return block(state, &row, &mut p, format!("{name}: {e}")).await;
                    }
                }
                if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
                    return Ok(());
                }
            }
            Step::Canary => {
                let Some(dep) = p.stages[i].deployment else {
                    p.stages[i].step = Step::Pending;
                    if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
                        return Ok(());
                    }
                    continue;
                };
                let d = state
                    .pool
                    .with(move |s| s.deployment(dep))
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(d) = d else {
                    return Err(format!("deployment {dep} is missing"));
                };
                if d.active() {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                if d.status == "promoted" {
                    p.stages[i].step = Step::Verify;
                    p.event(format!("{name}: canary promoted"));
                    if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
                        return Ok(());
                    }
                } else {
                    let why = format!(
                        "{name}: the canary was {} ({})",
                        d.status.replace('_', " "),
                        d.reason
                    );
                    p.stages[i].step = Step::RolledBack;
                    return fail(state, id, &row, p, why).await;
                }
            }
            Step::Verify => {
                let (env, _) = environment(state, &name).await?;
                let addr = env.addr().await;
                let mut failed = Vec::new();
                // A verification interrupted by a restart is done again from the start.
                p.stages[i].smoke.clear();
                for s in &train.smoke {
                    let r = smoke(s, addr, &name, service, version).await;
                    if !r.passed {
                        failed.push(match r.exit_code {
                            Some(c) => format!("smoke `{}` failed (exit {c})", r.name),
                            None => format!("smoke `{}` failed: {}", r.name, r.output),
                        });
                    }
                    p.stages[i].smoke.push(r);
                }
                match env.observe_stable(train.verify).await {
                    Ok((_, o)) => {
                        let c = assess(During::Verify, &o, env.limits(), &train.slo);
                        if c.status == Verdict::Fail {
                            failed.push(format!("golden signals: {}", c.why));
                        }
                        p.stages[i].checks.push(c);
                    }
                    Err(m) => failed.push(format!("golden signals: {m}")),
                }
                if !failed.is_empty() {
                    let why = format!(
                        "{name}: post-deploy verification failed: {}",
                        failed.join("; ")
                    );
                    return fail(state, id, &row, p, why).await;
                }
                p.stages[i].step = if last { Step::Done } else { Step::Soak };
                if !last {
                    p.stages[i].soak_started_at_ms = Some(now_ms());
                }
                p.event(format!("{name}: post-deploy verification passed"));
                if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
                    return Ok(());
                }
            }
            Step::Soak => {
                let (env, _) = environment(state, &name).await?;
                let started = *p.stages[i].soak_started_at_ms.get_or_insert_with(now_ms);
                let soak_ms = i64::try_from(train.soak.as_millis()).unwrap_or(i64::MAX);
                let left = started.saturating_add(soak_ms) - now_ms();
                if left <= 0 {
                    p.stages[i].step = Step::Done;
                    p.event(format!("{name}: soaked {}", humanize(train.soak)));
                    if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
                        return Ok(());
                    }
                    continue;
                }
                let slice = SOAK_SLICE.min(Duration::from_millis(u64::try_from(left).unwrap_or(0)));
                match env
                    .observe_stable(slice.max(Duration::from_millis(200)))
                    .await
                {
                    Ok((_, o)) => {
                        let c = assess(During::Soak, &o, env.limits(), &train.slo);
                        let (failed, why) = (c.status == Verdict::Fail, c.why.clone());
                        // Keep the failures and a bounded history of the rest.
                        if failed || p.stages[i].checks.len() < 200 {
                            p.stages[i].checks.push(c);
                        }
                        if failed {
                            let why = format!("{name}: soak failed: {why}");
                            return fail(state, id, &row, p, why).await;
                        }
                    }
                    Err(m) => {
                        let why = format!("{name}: soak failed: {m}");
                        return fail(state, id, &row, p, why).await;
                    }
                }
                if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
                    return Ok(());
                }
            }
            Step::Done => unreachable!("the first stage not done"),
            Step::RolledBack => {
                // A rollback was saved for a stage while the release stayed progressing:
                // finish it.
                let why = p
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("{name} was rolled back"));
                return roll_back(state, &row, p, &why).await;
            }
        }
    }
}

/// A release whose stored progress does not parse: the driver stops. The release is marked
/// blocked with its stored text kept byte for byte (nothing is rewritten or guessed), the
/// refusal is audited, and the error goes to the log.
async fn unreadable(
    state: &Arc<AppState>,
    row: &ReleaseRow,
    e: &ProgressError,
) -> Result<(), String> {
    let why =
        format!("{e}; the train stopped and changed nothing (the row is kept for inspection)");
    let (id, text) = (row.id, row.state.clone());
    let blocked = state
        .pool
        .with(move |s| {
            s.release_save(
                id,
                Some(ReleaseStatus::Progressing.as_str()),
                ReleaseStatus::Blocked.as_str(),
                &text,
                now_ms(),
            )
        })
        .await
        .map_err(|e| e.to_string())?;
    if blocked {
        audit(state, row, "release.blocked", &why, None).await;
    }
    Err(format!("{} {}: {why}", row.service, row.version))
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

async fn block(
    state: &Arc<AppState>,
    row: &ReleaseRow,
    p: &mut Progress,
    why: String,
) -> Result<(), String> {
    p.event(format!("blocked: {why}"));
    audit(state, row, "release.blocked", &why, p.run).await;
    p.reason = Some(why);
    advance(state, row.id, ReleaseStatus::Blocked, p)
        .await
        .map(|_| ())
}

/// An audit entry of the release, by the conductor (target `release:<service>/<version>`,
/// linked to the artifact, the version and the run whose gates it was cut from).
async fn audit(
    state: &Arc<AppState>,
    row: &ReleaseRow,
    action: &str,
    detail: &str,
    run: Option<i64>,
) {
    let entry = maestro_audit::NewEntry {
        actor: crate::conductor_actor("train"),
        action: action.to_owned(),
        target: format!("release:{}/{}", row.service, row.version),
        params: json!({"service": row.service, "version": row.version, "commit": row.commit}),
        reason: Some(detail.to_owned()),
        result: maestro_audit::Outcome::Success,
        links: maestro_audit::Links {
            artifact: Some(row.digest.clone()),
            release: Some(row.version.clone()),
            run,
            ..maestro_audit::Links::default()
        },
        tenant: Some(row.tenant.clone()),
    };
    crate::audit_conductor(state, entry).await;
}

/// A failed verification or soak, or a rolled-back canary: every stage the release reached
/// returns to its earlier release.
async fn fail(
    state: &Arc<AppState>,
    id: i64,
    row: &ReleaseRow,
    mut p: Progress,
    why: String,
) -> Result<(), String> {
    p.event(format!("failed: {why}"));
    if !advance(state, id, ReleaseStatus::Progressing, &p).await? {
        return Ok(());
    }
    roll_back(state, row, p, &why).await
}

/// Returns every stage where this release is stable (or canarying) to the release before
/// it, and marks it rolled back.
async fn roll_back(
    state: &Arc<AppState>,
    row: &ReleaseRow,
    mut p: Progress,
    why: &str,
) -> Result<(), String> {
    let label = row
        .digest
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or_default()
        .to_owned();
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    for stage in p.stages.iter_mut().rev() {
        if stage.step == Step::Pending {
            continue;
        }
        let Some(env) = crate::environments::open_here(state, &stage.environment) else {
            problems.push(format!("{}: runs on another conductor", stage.environment));
            continue;
        };
        let (env, _) = env;
        if let Some(dep) = stage.deployment {
            // A canary still in progress is aborted (its controller restores stable).
            let _ = env.command(dep, maestro_canary::Command::Abort, why).await;
        }
        let name = stage.environment.clone();
        let current = state
            .pool
            .with(move |s| s.environment(&name))
            .await
            .map_err(|e| e.to_string())?;
        if current.as_ref().map(|c| c.version.as_str()) == Some(label.as_str()) {
            let name = stage.environment.clone();
            let history = state
                .pool
                .with(move |s| s.deployments(Some(&name), false, 200))
                .await
                .map_err(|e| e.to_string())?;
            let target = history.iter().find(|d| {
                d.status == "promoted"
                    && d.version != label
                    && stage.previous.as_ref().is_none_or(|v| *v == d.version)
            });
            match target {
                Some(t) => {
                    let release = maestro_deliver::Release {
                        version: t.version.clone(),
                        artifact: t.artifact.clone(),
                        dir: PathBuf::from(&t.release_dir),
                        env: serde_json::from_str(&t.env).unwrap_or_default(),
                    };
                    match env.set_stable(release).await {
                        Ok(()) => {
                            // Every switch of an environment is on the record.
                            let entry = maestro_audit::NewEntry {
                                actor: crate::conductor_actor("train"),
                                action: "environment.stable_set".to_owned(),
                                target: format!("environment:{}", stage.environment),
                                params: json!({"from": label, "to": t.version, "deployment": t.id}),
                                reason: Some(format!(
                                    "release {} {} rolled back: {why}",
                                    row.service, row.version
                                )),
                                result: maestro_audit::Outcome::Success,
                                links: maestro_audit::Links {
                                    release: Some(row.version.clone()),
                                    ..maestro_audit::Links::default()
                                },
                                tenant: Some(row.tenant.clone()),
                            };
                            crate::audit_conductor(state, entry).await;
                            notes.push(format!("{}: back to {}", stage.environment, t.version));
                        }
                        Err(e) => problems.push(format!("{}: {e}", stage.environment)),
                    }
                }
                None => problems.push(format!(
                    "{}: no earlier release to return to",
                    stage.environment
                )),
            }
        }
        stage.step = Step::RolledBack;
    }
    for n in notes {
        p.event(n);
    }
    p.reason = Some(why.to_owned());
    p.event(format!("rolled back: {why}"));
    if !problems.is_empty() {
        p.event(format!("rollback incomplete: {}", problems.join("; ")));
    }
    save(state, row.id, None, ReleaseStatus::RolledBack, &p)
        .await
        .map_err(|e| e.to_string())?;
    audit(state, row, "release.rolled_back", why, p.run).await;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Runs one smoke job against the environment: a clean environment (no conductor secret
/// reaches it), a timeout, its output's tail kept.
async fn smoke(
    s: &Smoke,
    addr: Option<std::net::SocketAddr>,
    environment: &str,
    service: &str,
    version: &str,
) -> SmokeResult {
    let started = std::time::Instant::now();
    let mut cmd = tokio::process::Command::new(&s.command[0]);
    cmd.args(&s.command[1..])
        .current_dir(&s.workdir)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned()),
        )
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/".to_owned()),
        )
        .env(
            "MAESTRO_TARGET_URL",
            addr.map(|a| format!("http://{a}")).unwrap_or_default(),
        )
        .env("MAESTRO_ENVIRONMENT", environment)
        .env("MAESTRO_SERVICE", service)
        .env("MAESTRO_RELEASE_VERSION", version)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let ran = tokio::time::timeout(s.timeout, cmd.output()).await;
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let (passed, exit_code, output) = match ran {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), out.status.code(), tail(&text))
        }
        Ok(Err(e)) => (false, None, format!("{}: {e}", s.command[0])),
        Err(_) => (
            false,
            None,
            format!("timed out after {}", humanize(s.timeout)),
        ),
    };
    SmokeResult {
        name: s.name.clone(),
        passed,
        exit_code,
        duration_ms,
        output,
    }
}

fn tail(s: &str) -> String {
    if s.len() <= SMOKE_TAIL {
        return s.to_owned();
    }
    let mut at = s.len() - SMOKE_TAIL;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    s[at..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(requests: u64, errors: u64) -> Observation {
        Observation {
            requests,
            errors,
            latencies_ms: vec![10.0; 20],
            ..Observation::default()
        }
    }

    #[test]
    fn the_golden_signals_hold_the_error_rate_and_the_burn_rate() {
        let limits = maestro_canary::Limits {
            min_requests: 10,
            max_error_rate: 0.05,
            ..maestro_canary::Limits::default()
        };
        let slo = SloSettings {
            objective: 0.99,
            max_burn_rate: 2.0,
        };
        assert_eq!(
            assess(During::Soak, &obs(100, 1), &limits, &slo).status,
            Verdict::Pass
        );
        let burning = assess(During::Soak, &obs(100, 3), &limits, &slo);
        assert_eq!(burning.status, Verdict::Fail);
        assert!(burning.why.contains("burns 3.0×"), "{}", burning.why);
        let failing = assess(During::Soak, &obs(100, 10), &limits, &slo);
        assert!(failing.why.contains("error rate 10.00%"), "{}", failing.why);
        assert_eq!(
            assess(During::Soak, &obs(5, 5), &limits, &slo).status,
            Verdict::NoData
        );
    }

    fn detail(status: RunStatus, jobs: &[(&str, Option<&str>, &str)]) -> maestro_store::RunDetail {
        maestro_store::RunDetail {
            run: maestro_store::RunRow {
                id: 7,
                pipeline: "p".into(),
                status,
                commit: None,
                branch: None,
                started_at_ms: 0,
                finished_at_ms: None,
                jobs: 0,
                cached: 0,
                failed: 0,
                tenant: "default".into(),
                trace_id: None,
                reporter: None,
            },
            root: String::new(),
            args: String::new(),
            jobs: jobs
                .iter()
                .map(|(n, g, s)| maestro_store::JobRow {
                    name: (*n).into(),
                    gate: g.map(str::to_owned),
                    status: (*s).into(),
                    ..maestro_store::JobRow::default()
                })
                .collect(),
        }
    }

    fn train() -> Train {
        Train {
            service: "s".into(),
            tenant: "default".into(),
            stages: vec!["stage".into()],
            soak: Duration::from_secs(1),
            verify: Duration::from_secs(1),
            required_gates: Vec::new(),
            migration_gate: Some("migrations".into()),
            migration_paths: globset::GlobSet::empty(),
            smoke: Vec::new(),
            slo: SloSettings::default(),
        }
    }

    #[test]
    fn a_run_without_gates_never_satisfies_a_cut() {
        let sha = "a".repeat(40);
        // A run reported with no jobs at all, or only jobs outside any gate, "succeeded".
        for jobs in [&[][..], &[("pkg", None, "succeeded")][..]] {
            let empty = detail(RunStatus::Succeeded, jobs);
            let err = check_gates(&train(), &[empty], &sha, false).expect_err("no gates");
            assert!(err.contains("has no gates"), "{err}");
        }
    }

    #[test]
    fn a_commit_is_releasable_only_with_its_gates_green_and_the_refusal_names_them() {
        let sha = "a".repeat(40);
        let t = train();
        let green = detail(
            RunStatus::Succeeded,
            &[
                ("unit", Some("test"), "succeeded"),
                ("lint", Some("test"), "succeeded"),
                ("pkg", None, "succeeded"),
            ],
        );
        let (run, gates) =
            check_gates(&t, std::slice::from_ref(&green), &sha, false).expect("green");
        assert_eq!((run, gates.len(), gates[0].green), (7, 1, true));
        let red = detail(
            RunStatus::Failed,
            &[
                ("unit", Some("test"), "failed"),
                ("sca", Some("supply-chain"), "succeeded"),
            ],
        );
        let err = check_gates(&t, &[red], &sha, false).expect_err("red");
        assert!(
            err.contains("gate `test` is not green: unit failed"),
            "{err}"
        );
        assert!(!err.contains("supply-chain"), "{err}");
        // Migrations changed: the migration gate is required, and it did not run.
        let err = check_gates(&t, std::slice::from_ref(&green), &sha, true)
            .expect_err("no migration gate");
        assert!(err.contains("gate `migrations` did not run"), "{err}");
        let required = Train {
            required_gates: vec!["test".into(), "security".into()],
            ..train()
        };
        let err = check_gates(&required, &[green], &sha, false).expect_err("missing");
        assert!(err.contains("gate `security` did not run"), "{err}");
        let err = check_gates(&t, &[], &sha, false).expect_err("no run");
        assert!(
            err.contains("no pipeline run at commit aaaaaaaaaaaa"),
            "{err}"
        );
        let running = detail(RunStatus::Running, &[]);
        let err = check_gates(&t, &[running], &sha, false).expect_err("running");
        assert!(err.contains("still running"), "{err}");
    }
}
