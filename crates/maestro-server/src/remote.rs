//! Remote runs: `maestro run --server URL` on a CI machine opens a run on the conductor
//! (`POST /api/v1/runs`), reports its finished jobs with the tails of their logs
//! (`POST /api/v1/runs/{id}/reports`, numbered so a retry is applied once) and closes it
//! with its status in the last report. The run belongs to the reporter's tenant, and only
//! the reporter may report to it. A reporter that goes quiet (a CI machine that died) has
//! its run interrupted by the reaper, which one conductor at a time runs under a lease.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use maestro_store::{JobRow, Lease, NewRun, Report, ReportOutcome, RunRow, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::api::{Answer, ApiError, Ctx, bad_request, not_found, run_resource};
use crate::authz::Resource;

/// The most jobs one report carries (a client sends several reports for more).
pub const MAX_JOBS: usize = 200;
/// The most of a job's log a report carries: its last lines, up to this many bytes.
pub const MAX_TAIL: usize = 64 * 1024;
/// The lease under which one conductor at a time interrupts quiet remote runs.
pub const REAPER_LEASE: &str = "remote-runs-reaper";

const JOB_STATUSES: &[&str] = &[
    "succeeded",
    "failed",
    "timed-out",
    "cancelled",
    "skipped",
    "error",
];

/// `POST /api/v1/runs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRemoteRun {
    pipeline: String,
    #[serde(default)]
    commit: Option<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    args: String,
    /// The run's W3C trace id, when the client traces it.
    #[serde(default)]
    trace_id: Option<String>,
    /// The client's own key for this run (random per invocation): creating again with
    /// the same key returns the same run.
    key: String,
}

fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(bad_request(format!(
            "request body: {field} is {} bytes long; at most {max}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(bad_request(format!(
            "request body: {field} holds a control character"
        )));
    }
    Ok(())
}

fn required(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(bad_request(format!("request body: {field} is empty")));
    }
    text(field, value, max)
}

impl NewRemoteRun {
    fn check(&self) -> Result<(), ApiError> {
        required("pipeline", &self.pipeline, 200)?;
        required("key", &self.key, 128)?;
        if let Some(c) = &self.commit {
            text("commit", c, 200)?;
        }
        if let Some(b) = &self.branch {
            text("branch", b, 1024)?;
        }
        if self.args.len() > 16 * 1024 {
            return Err(bad_request(
                "request body: args is longer than 16 KiB".to_owned(),
            ));
        }
        if let Some(t) = &self.trace_id {
            let hex = t.len() == 32
                && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && t.bytes().any(|b| b != b'0');
            if !hex {
                return Err(bad_request(format!(
                    "request body: trace_id `{t}` is not a W3C trace id (32 lowercase hex digits, not all zero)"
                )));
            }
        }
        Ok(())
    }
}

/// Opens a remote run for the actor, in the actor's tenant.
pub(crate) fn create(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let body: NewRemoteRun = ctx.json()?;
        body.check()?;
        let actor = &ctx.auth.actor;
        let resource = Resource {
            kind: "run",
            service: Some(body.pipeline.clone()),
            tenant: actor.tenant.clone(),
            ..Resource::default()
        };
        if !ctx.auth.visible(&resource) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} may not run pipeline {} (policy {})",
                    actor.id,
                    body.pipeline,
                    ctx.auth.state.policy.source()
                ),
            ));
        }
        let permit = ctx.permit(&resource).await?;
        let run = NewRun {
            pipeline: body.pipeline,
            root: String::new(),
            commit: body.commit,
            branch: body.branch,
            started_at_ms: crate::now_ms(),
            pid: 0,
            args: body.args,
            trace_id: body.trace_id,
            tenant: actor.tenant.clone(),
            reporter: Some(actor.id.clone()),
            remote_key: Some(body.key),
        };
        let id = ctx
            .auth
            .state
            .pool
            .with(move |s| s.begin_run(&run))
            .await
            .map_err(|e| ApiError::store(&e))?;
        crate::log::event(
            "info",
            "remote run opened",
            &[
                ("run", json!(id)),
                ("actor", json!(actor.id)),
                ("tenant", json!(actor.tenant)),
            ],
        );
        permit.created(json!({"id": id, "url": format!("/console/runs/{id}")}))
    })
}

/// The default secret rules (ours included: API tokens, audit keys), compiled once.
fn scanner() -> &'static maestro_secrets::Scanner {
    static SCANNER: std::sync::OnceLock<maestro_secrets::Scanner> = std::sync::OnceLock::new();
    SCANNER.get_or_init(|| maestro_secrets::Scanner::new(maestro_secrets::Config::default_rules()))
}

fn mask(scanner: &maestro_secrets::Scanner, text: &mut String) -> usize {
    let (masked, n) = maestro_secrets::mask_lines(scanner, text);
    if n > 0 {
        *text = masked;
    }
    n
}

/// Masks every text of a job that came from the build and may hold a secret: its reason
/// and note, and each test's suite, class, name and message (a JUnit failure message
/// often quotes the environment). A line where a secret rule matches becomes
/// `[REDACTED: <rule> secret]`. Returns the lines masked.
pub fn mask_job(scanner: &maestro_secrets::Scanner, j: &mut JobRow) -> usize {
    let mut n = 0;
    for t in [&mut j.reason, &mut j.note].into_iter().flatten() {
        n += mask(scanner, t);
    }
    for t in &mut j.tests {
        for f in [&mut t.suite, &mut t.classname, &mut t.name] {
            n += mask(scanner, f);
        }
        if let Some(m) = &mut t.message {
            n += mask(scanner, m);
        }
    }
    n
}

/// [`mask_job`] over every job of a report, and every log tail. The client masks before
/// it sends; the conductor masks again before it stores (a client may be old, or not ours).
pub fn mask_report(scanner: &maestro_secrets::Scanner, r: &mut Report) -> usize {
    let mut n = 0;
    for j in &mut r.jobs {
        n += mask_job(scanner, j);
    }
    for l in &mut r.logs {
        n += mask(scanner, &mut l.tail);
    }
    n
}

/// What a report must be before it reaches the store: numbered, its jobs named once
/// each with a known status, log tails bounded and naming jobs of the report. Paths of
/// the reporting machine (logs, audit entries of its own log) mean nothing here and are
/// dropped.
fn checked_report(mut r: Report) -> Result<Report, ApiError> {
    if r.seq < 1 {
        return Err(bad_request(format!(
            "request body: seq is {}; reports are numbered from 1",
            r.seq
        )));
    }
    if r.status == Some(maestro_store::RunStatus::Running) {
        return Err(bad_request(
            "request body: status `running` cannot close a run; send succeeded, failed or interrupted"
                .to_owned(),
        ));
    }
    if r.jobs.len() > MAX_JOBS {
        return Err(bad_request(format!(
            "request body: jobs has {} entries; at most {MAX_JOBS} per report",
            r.jobs.len()
        )));
    }
    let mut names = std::collections::HashSet::new();
    for (i, j) in r.jobs.iter_mut().enumerate() {
        required(&format!("jobs[{i}].name"), &j.name, 256)?;
        if !names.insert(j.name.clone()) {
            return Err(bad_request(format!(
                "request body: jobs[{i}].name `{}` is reported twice",
                j.name
            )));
        }
        if !JOB_STATUSES.contains(&j.status.as_str()) {
            return Err(bad_request(format!(
                "request body: jobs[{i}].status `{}` is not one of {}",
                j.status,
                JOB_STATUSES.join(", ")
            )));
        }
        sanitize(j);
    }
    mask_report(scanner(), &mut r);
    if r.logs.len() > r.jobs.len() {
        return Err(bad_request(
            "request body: logs has more entries than jobs".to_owned(),
        ));
    }
    for (i, l) in r.logs.iter().enumerate() {
        if !names.contains(&l.job) {
            return Err(bad_request(format!(
                "request body: logs[{i}].job `{}` is not a job of this report",
                l.job
            )));
        }
        if l.tail.len() > MAX_TAIL {
            return Err(bad_request(format!(
                "request body: logs[{i}].tail is {} bytes; at most {MAX_TAIL} (send the last lines)",
                l.tail.len()
            )));
        }
        if l.bytes < 0 {
            return Err(bad_request(format!(
                "request body: logs[{i}].bytes is negative"
            )));
        }
    }
    Ok(r)
}

fn sanitize(j: &mut JobRow) {
    j.log_path = None;
    j.audit = None;
    for a in &mut j.attempts {
        a.log_path = String::new();
    }
}

/// The run a path names, as the policy sees it: 404 when missing or not visible.
async fn visible_run(ctx: &Ctx) -> Result<RunRow, ApiError> {
    let id = ctx.id("id", "run id")?;
    let missing = || {
        not_found(&Resource {
            kind: "run",
            id: Some(id.to_string()),
            ..Resource::default()
        })
    };
    let run = match ctx.auth.state.pool.with(move |s| s.run(id)).await {
        Ok(r) => r,
        Err(StoreError::NoSuchRun(_)) => return Err(missing()),
        Err(e) => return Err(ApiError::store(&e)),
    };
    if !ctx.auth.visible(&run_resource(&run)) {
        return Err(missing());
    }
    Ok(run)
}

/// Applies a report of a remote run from its reporter.
pub(crate) fn report(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let report = checked_report(ctx.json()?)?;
        let run = visible_run(&ctx).await?;
        let permit = ctx.permit(&run_resource(&run)).await?;
        let me = ctx.auth.actor.id.clone();
        let id = run.id;
        let (seq, closes) = (report.seq, report.status);
        let outcome = ctx
            .auth
            .state
            .pool
            .with(move |s| s.report(id, &me, &report, crate::now_ms()))
            .await
            .map_err(|e| ApiError::store(&e))?;
        let word = match outcome {
            ReportOutcome::Applied => "applied",
            ReportOutcome::Duplicate => "duplicate",
            ReportOutcome::Closed(status) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "run_closed",
                    format!(
                        "run {id} is {} already; it takes no more reports",
                        status.as_str()
                    ),
                ));
            }
            ReportOutcome::NotReporter(_) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not_reporter",
                    format!(
                        "run {id} is reported by another actor; only the actor that opened it may report to it"
                    ),
                ));
            }
        };
        if let (Some(status), "applied") = (closes, word) {
            crate::log::event(
                "info",
                "remote run closed",
                &[("run", json!(id)), ("status", json!(status.as_str()))],
            );
        }
        permit.answer(json!({"run": id, "seq": seq, "outcome": word}))
    })
}

/// The end of a job's log: reported by a remote run, or read from the conductor's own
/// run directory for a run of its machine.
pub(crate) fn job_log(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let run = visible_run(&ctx).await?;
        let job = ctx.path.get("job").cloned().unwrap_or_default();
        let lines = match ctx.query.get("lines") {
            None => 100,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1_000).contains(n))
                .ok_or_else(|| bad_request(format!("lines `{v}` must be from 1 to 1000")))?,
        };
        let tail = tail(&ctx.auth.state, &run, &job, lines).await?;
        let Some((tail, bytes)) = tail else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("run {} holds no log for job {job}", run.id),
            ));
        };
        ctx.auth.release(
            &run_resource(&run),
            json!({"run": run.id, "job": job, "bytes": bytes, "tail": tail}),
        )
    })
}

/// The last `lines` lines of a job's log and the whole log's size, wherever this
/// conductor holds it.
///
/// # Errors
/// 503 when the store fails.
pub(crate) async fn tail(
    state: &Arc<AppState>,
    run: &RunRow,
    job: &str,
    lines: usize,
) -> Result<Option<(String, i64)>, ApiError> {
    let id = run.id;
    let name = job.to_owned();
    if run.reporter.is_some() {
        let log = state
            .pool
            .with(move |s| s.job_log(id, &name))
            .await
            .map_err(|e| ApiError::store(&e))?;
        return Ok(log.map(|l| (last_lines(&l.tail, lines), l.bytes)));
    }
    let Some(home) = state.logs.clone() else {
        return Ok(None);
    };
    let row = state
        .pool
        .with(move |s| s.run_detail(id))
        .await
        .map_err(|e| ApiError::store(&e))?
        .jobs
        .into_iter()
        .find(|j| j.name == job);
    let Some(path) = row.and_then(|j| j.log_path) else {
        return Ok(None);
    };
    Ok(tokio::task::spawn_blocking(move || {
        let path = std::path::Path::new(&path);
        // read_tail opens only inside the run's log directory; the size is read after.
        let tail = crate::graphql::read_tail(&home, id, path, lines)?;
        let bytes = std::fs::metadata(path).ok()?.len();
        Some((tail, i64::try_from(bytes).unwrap_or(i64::MAX)))
    })
    .await
    .ok()
    .flatten())
}

/// The last `n` lines of `text`.
#[must_use]
pub fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

/// How long a remote run may go without a report before it is interrupted, and how often
/// the reaper looks.
#[derive(Clone, Copy, Debug)]
pub struct Reaper {
    pub quiet: Duration,
    pub every: Duration,
}

impl Default for Reaper {
    fn default() -> Reaper {
        Reaper {
            quiet: Duration::from_secs(300),
            every: Duration::from_secs(15),
        }
    }
}

/// One look: take (or renew) the reaper's lease, then interrupt the remote runs quiet
/// for longer than `quiet`, fenced by the lease's token. Returns the lease if held and
/// the runs interrupted.
///
/// # Errors
/// When the store fails.
pub async fn reap_once(
    state: &Arc<AppState>,
    holder: &str,
    r: Reaper,
    now_ms: i64,
) -> Result<(Option<Lease>, Vec<i64>), StoreError> {
    let holder = holder.to_owned();
    let ttl = i64::try_from(r.every.as_millis().saturating_mul(3)).unwrap_or(i64::MAX);
    let quiet = i64::try_from(r.quiet.as_millis()).unwrap_or(i64::MAX);
    state
        .pool
        .with(move |s| {
            let Some(lease) = s.lease_acquire(REAPER_LEASE, &holder, ttl, now_ms)? else {
                return Ok((None, Vec::new()));
            };
            let reaped = s.reap_remote(&lease, now_ms.saturating_sub(quiet), now_ms)?;
            Ok((Some(lease), reaped))
        })
        .await
}

/// Runs the reaper until the process ends: every `every`, one [`reap_once`]. Failures are
/// logged and retried at the next tick.
pub fn spawn_reaper(
    state: Arc<AppState>,
    holder: String,
    r: Reaper,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(r.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut held: Option<i64> = None;
        loop {
            tick.tick().await;
            match reap_once(&state, &holder, r, crate::now_ms()).await {
                Ok((lease, reaped)) => {
                    let token = lease.map(|l| l.token);
                    if token != held {
                        crate::log::event(
                            "info",
                            if token.is_some() {
                                "reaper lease taken"
                            } else {
                                "reaper lease held elsewhere"
                            },
                            &[("holder", json!(holder)), ("token", json!(token))],
                        );
                        held = token;
                    }
                    if !reaped.is_empty() {
                        crate::log::event(
                            "warn",
                            "quiet remote runs interrupted",
                            &[
                                ("runs", json!(reaped)),
                                ("quiet_seconds", json!(r.quiet.as_secs())),
                            ],
                        );
                    }
                }
                Err(e) => {
                    crate::log::event("error", "reaper failed", &[("error", json!(e.to_string()))])
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_store::{AttemptRow, JobLog, RunStatus};

    fn job(name: &str, status: &str) -> JobRow {
        JobRow {
            name: name.into(),
            status: status.into(),
            log_path: Some("/home/ci/.maestro/runs/4/logs/x.log".into()),
            audit: Some(maestro_store::AuditLink {
                started: 3,
                outcome: None,
            }),
            attempts: vec![AttemptRow {
                attempt: 1,
                status: status.into(),
                exit_code: Some(0),
                signal: None,
                started_at_ms: 0,
                duration_ms: 1,
                log_path: "/home/ci/x.log".into(),
            }],
            ..JobRow::default()
        }
    }

    #[test]
    fn our_own_credentials_are_masked_in_every_reported_text() {
        let (token, _) =
            crate::auth::issue(&maestro_store::TokenRow::default(), 1, 0).expect("token");
        let (_, audit_key) =
            maestro_audit::LogKey::generate("conductor.example/audit").expect("key");
        let mut j = job("test", "failed");
        j.reason = Some(format!("exited 1 with MAESTRO_TOKEN={token}"));
        j.note = Some(format!("key {}", audit_key.as_str()));
        j.tests = vec![maestro_store::TestRow {
            attempt: 1,
            suite: "s".into(),
            classname: "c".into(),
            name: "talks to the conductor".into(),
            status: "failed".into(),
            duration_ms: 1,
            message: Some(format!("expected 200\nAuthorization: Bearer {token}\nend")),
        }];
        let mut r = Report {
            seq: 1,
            jobs: vec![j],
            logs: vec![JobLog {
                job: "test".into(),
                tail: format!("ok\n{}\n", audit_key.as_str()),
                bytes: 10,
            }],
            status: None,
        };
        assert_eq!(mask_report(scanner(), &mut r), 4);
        let text = serde_json::to_string(&r).expect("json");
        assert!(
            !text.contains(&token[4..]) && !text.contains(audit_key.as_str()),
            "{text}"
        );
        assert!(
            text.contains("[REDACTED: maestro-api-token secret]"),
            "{text}"
        );
        assert!(
            text.contains("[REDACTED: signed-note-private-key secret]"),
            "{text}"
        );
        // The lines around a secret are kept.
        assert_eq!(
            r.jobs[0].tests[0].message.as_deref(),
            Some("expected 200\n[REDACTED: maestro-api-token secret]\nend")
        );
    }

    fn message(r: Result<Report, ApiError>) -> String {
        r.map(|_| String::new()).unwrap_or_else(|e| e.message)
    }

    #[test]
    fn a_report_drops_the_reporters_paths() {
        let r = checked_report(Report {
            seq: 1,
            jobs: vec![job("build", "succeeded")],
            ..Report::default()
        })
        .expect("valid");
        let j = &r.jobs[0];
        assert_eq!((j.log_path.as_deref(), j.audit), (None, None));
        assert_eq!(j.attempts[0].log_path, "");
    }

    #[test]
    fn bad_reports_name_the_field() {
        let base = || Report {
            seq: 1,
            jobs: vec![job("build", "succeeded")],
            ..Report::default()
        };
        assert!(message(checked_report(Report { seq: 0, ..base() })).contains("seq is 0"));
        assert!(
            message(checked_report(Report {
                status: Some(RunStatus::Running),
                ..base()
            }))
            .contains("status `running`")
        );
        assert!(
            message(checked_report(Report {
                jobs: vec![job("build", "succeeded"), job("build", "failed")],
                ..base()
            }))
            .contains("jobs[1].name `build` is reported twice")
        );
        assert!(
            message(checked_report(Report {
                jobs: vec![job("build", "exploded")],
                ..base()
            }))
            .contains("jobs[0].status `exploded`")
        );
        assert!(
            message(checked_report(Report {
                logs: vec![JobLog {
                    job: "deploy".into(),
                    ..JobLog::default()
                }],
                ..base()
            }))
            .contains("logs[0].job `deploy` is not a job of this report")
        );
        assert!(
            message(checked_report(Report {
                logs: vec![JobLog {
                    job: "build".into(),
                    tail: "x".repeat(MAX_TAIL + 1),
                    bytes: 1,
                }],
                ..base()
            }))
            .contains("logs[0].tail is 65537 bytes")
        );
        assert!(
            message(checked_report(Report {
                jobs: vec![job("", "succeeded")],
                ..base()
            }))
            .contains("jobs[0].name is empty")
        );
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }
}
