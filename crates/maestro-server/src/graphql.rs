//! GraphQL at `/graphql`, for the console.
//!
//! Every field of `Query` is a row of [`FIELDS`] and its resolver starts with [`gate`]:
//! the same [`api::authorize`] wrapper the REST endpoints go through (scope, then the
//! policy on the action), and its answer passes the policy per object
//! ([`Authorized::allow`]/[`Authorized::keep`]); a hidden object is `null`, as a missing
//! one is. A test enumerates the schema by introspection and checks that every field is
//! denied to an actor without a role.
//!
//! Documents come from the persisted-operation manifest ([`crate::persisted`]); in
//! production mode nothing else runs. Depth and complexity are limited for every document.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ErrorExtensions, ID, Object, Schema, SimpleObject,
};
use axum::extract::{Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maestro_store::{AttemptRow, JobRow, RunDetail, RunRow};
use serde::Deserialize;
use serde_json::Value;

use crate::api::{self, ApiError, Authorized};
use crate::auth::Actor;
use crate::authz::Resource;
use crate::{AppState, Mode, persisted};

/// The deepest selection a document may have.
pub const MAX_DEPTH: usize = 8;
/// The most a document may cost: each field costs one, and a list field costs its
/// `limit` times what is selected under it.
pub const MAX_COMPLEXITY: usize = 2_000;
/// The largest `/graphql` request body.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest answer: a document that would return more is refused with a message, not
/// sent (`logTail` and every list also count towards [`MAX_COMPLEXITY`]).
pub const MAX_RESPONSE: usize = 8 << 20;
/// The most runs one `runs` field returns.
pub const MAX_RUNS: i32 = 500;

/// A `Query` field and what the policy decides it by.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub action: &'static str,
    pub scope: &'static str,
    pub kind: &'static str,
}

/// Every field of `Query`. A field missing here is refused at run time and fails the
/// enumeration test.
pub const FIELDS: &[Field] = &[
    Field {
        name: "viewer",
        action: "session.read",
        scope: "session:read",
        kind: "session",
    },
    Field {
        name: "runs",
        action: "runs.list",
        scope: "runs:read",
        kind: "run",
    },
    Field {
        name: "run",
        action: "runs.read",
        scope: "runs:read",
        kind: "run",
    },
    Field {
        name: "auditEntries",
        action: "audit.read",
        scope: "audit:read",
        kind: "audit",
    },
    Field {
        name: "deployments",
        action: "deployments.read",
        scope: "deployments:read",
        kind: "deployment",
    },
    Field {
        name: "deployment",
        action: "deployments.read",
        scope: "deployments:read",
        kind: "deployment",
    },
];

/// The schema type.
pub type MaestroSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// Builds the schema: limits always; introspection only in development mode.
#[must_use]
pub fn schema(mode: Mode) -> MaestroSchema {
    let b = Schema::build(Query, EmptyMutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(8);
    match mode {
        Mode::Production => b.disable_introspection().finish(),
        Mode::Development => b.finish(),
    }
}

/// What each request's resolvers see.
struct Request {
    state: Arc<AppState>,
    actor: Actor,
}

fn refusal(e: &ApiError) -> async_graphql::Error {
    let code = e.code;
    async_graphql::Error::new(e.message.clone()).extend_with(|_, x| x.set("code", code))
}

/// The wrapper every resolver of `Query` starts with.
fn gate(ctx: &Context<'_>, field: &str) -> async_graphql::Result<Authorized> {
    let req = ctx.data::<Request>()?;
    let Some(f) = FIELDS.iter().find(|f| f.name == field) else {
        return Err(refusal(&ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unregistered_field",
            format!("Query.{field} has no row in graphql::FIELDS"),
        )));
    };
    api::authorize(
        Arc::clone(&req.state),
        req.actor.clone(),
        f.action,
        f.scope,
        f.kind,
    )
    .map_err(|e| refusal(&e))
}

/// A list field's `limit`, from 1 to [`MAX_RUNS`].
fn list_limit(limit: i32) -> async_graphql::Result<usize> {
    usize::try_from(limit)
        .ok()
        .filter(|_| (1..=MAX_RUNS).contains(&limit))
        .ok_or_else(|| {
            refusal(&ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("limit {limit} must be from 1 to {MAX_RUNS}"),
            ))
        })
}

fn store_error(e: &maestro_store::StoreError) -> async_graphql::Error {
    refusal(&ApiError::store(e))
}

/// The root query.
#[derive(Debug, Default)]
pub struct Query;

#[Object]
impl Query {
    /// Who this request acts as.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Viewer>> {
        let auth = gate(ctx, "viewer")?;
        let me = Resource {
            kind: "session",
            id: Some(auth.actor.id.clone()),
            tenant: auth.actor.tenant.clone(),
            ..Resource::default()
        };
        let a = &auth.actor;
        Ok(auth.allow(
            &me,
            Viewer {
                id: a.id.clone(),
                roles: a.roles.clone(),
                teams: a.teams.clone(),
                tenant: a.tenant.clone(),
                scopes: a.scopes.clone(),
                via: a.via.clone(),
            },
        ))
    }

    /// The latest runs the actor may see, newest first.
    #[graphql(complexity = "usize::try_from(limit).unwrap_or(0) * child_complexity")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: i32,
    ) -> async_graphql::Result<Vec<Run>> {
        let auth = gate(ctx, "runs")?;
        let n = list_limit(limit)?;
        let tenant = auth.actor.tenant.clone();
        let rows = auth
            .state
            .pool
            .with(move |s| s.list_runs(Some(&tenant), n))
            .await
            .map_err(|e| store_error(&e))?;
        let kept = auth.keep(rows, api::run_resource);
        Ok(kept
            .into_iter()
            .map(|row| Run {
                row,
                detail: tokio::sync::OnceCell::new(),
                state: Arc::clone(&auth.state),
            })
            .collect())
    }

    /// One run, or null when there is none the actor may see.
    async fn run(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Run>> {
        let auth = gate(ctx, "run")?;
        let Ok(n) = id.parse::<i64>() else {
            return Ok(None);
        };
        match auth.state.pool.with(move |s| s.run_detail(n)).await {
            Ok(d) => {
                let r = api::run_resource(&d.run);
                Ok(auth.allow(
                    &r,
                    Run {
                        row: d.run.clone(),
                        detail: tokio::sync::OnceCell::new_with(Some(Arc::new(d))),
                        state: Arc::clone(&auth.state),
                    },
                ))
            }
            Err(maestro_store::StoreError::NoSuchRun(_)) => Ok(None),
            Err(e) => Err(store_error(&e)),
        }
    }

    /// Deployments (canaries), newest first: all environments, or one.
    #[graphql(complexity = "usize::try_from(limit).unwrap_or(0) * child_complexity")]
    async fn deployments(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: i32,
        environment: Option<String>,
    ) -> async_graphql::Result<Vec<Deployment>> {
        let auth = gate(ctx, "deployments")?;
        let n = list_limit(limit)?;
        visible_deployments(&auth, move |s| {
            s.deployments(environment.as_deref(), false, n)
        })
        .await
    }

    /// One deployment with its canary report, or null when there is none the actor may see.
    async fn deployment(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Deployment>> {
        let auth = gate(ctx, "deployment")?;
        let Ok(n) = id.parse::<i64>() else {
            return Ok(None);
        };
        let row = auth
            .state
            .pool
            .with(move |s| s.deployment(n))
            .await
            .map_err(|e| store_error(&e))?;
        Ok(row.and_then(|d| {
            let r = deployment_resource(&d);
            auth.allow(&r, Deployment::from(d))
        }))
    }

    /// Audit log entries, newest first; `before` pages backwards by index.
    #[graphql(complexity = "usize::try_from(limit).unwrap_or(0) * child_complexity")]
    async fn audit_entries(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] limit: i32,
        before: Option<u64>,
    ) -> async_graphql::Result<Vec<AuditEntry>> {
        let auth = gate(ctx, "auditEntries")?;
        let q = maestro_audit::Query {
            before,
            limit: list_limit(limit)?,
            tenant: Some(auth.actor.tenant.clone()),
            ..maestro_audit::Query::default()
        };
        let entries = auth
            .state
            .audit
            .with(move |log| log.list(&q))
            .await
            .map_err(|e| {
                crate::log::event(
                    "error",
                    "audit log failure",
                    &[("error", serde_json::json!(e.to_string()))],
                );
                refusal(&ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the audit log failed; try again",
                ))
            })?;
        let kept = auth.keep(entries, |e| Resource {
            kind: "audit",
            id: Some(e.index.to_string()),
            tenant: e.tenant().to_owned(),
            ..Resource::default()
        });
        Ok(kept
            .into_iter()
            .map(|e| AuditEntry {
                index: e.index,
                time: e.time,
                actor: e.actor.id,
                via: e.actor.via,
                action: e.action,
                target: e.target,
                result: e.result.as_str().to_owned(),
                reason: e.reason,
            })
            .collect())
    }
}

/// The deployments `read` finds that the actor may see.
async fn visible_deployments(
    auth: &Authorized,
    read: impl FnOnce(
        &mut dyn maestro_store::Store,
    ) -> Result<Vec<maestro_store::DeploymentRow>, maestro_store::StoreError>
    + Send
    + 'static,
) -> async_graphql::Result<Vec<Deployment>> {
    let rows = auth
        .state
        .pool
        .with(read)
        .await
        .map_err(|e| store_error(&e))?;
    Ok(auth
        .keep(rows, deployment_resource)
        .into_iter()
        .map(Deployment::from)
        .collect())
}

fn deployment_resource(d: &maestro_store::DeploymentRow) -> Resource {
    Resource {
        kind: "deployment",
        id: Some(d.id.to_string()),
        service: Some(d.service.clone()),
        environment: Some(d.environment.clone()),
        tenant: d.tenant.clone(),
    }
}

/// A deployment: a release going out to an environment by canary.
#[derive(Debug, SimpleObject)]
pub struct Deployment {
    id: ID,
    environment: String,
    service: String,
    /// The release (a digest prefix).
    version: String,
    /// `sha256:<hex>` of the artifact.
    artifact: String,
    /// The stable release it started against.
    previous: Option<String>,
    /// progressing, paused, promoted, rolled_back or aborted.
    status: String,
    actor: String,
    reason: String,
    /// UTC, RFC 3339.
    created_at: String,
    updated_at: String,
    /// Why it ended (a rollback's verdict, an abort's reason).
    outcome: Option<String>,
    /// The canary's share of the traffic now, percent.
    weight: f64,
    /// Steps, analyses and the verdict, oldest first.
    timeline: Vec<CanaryEvent>,
    /// The pipeline run that started it (`maestro deploy` inside `maestro run --server`).
    run_id: Option<ID>,
}

/// One line of a canary's report.
#[derive(Debug, SimpleObject)]
pub struct CanaryEvent {
    /// UTC, RFC 3339.
    at: String,
    /// started, analysis, step, blind, sighted, paused, resumed, promoted, rolled_back, aborted.
    kind: String,
    /// The canary's share after it, percent.
    weight: f64,
    /// pass, fail or inconclusive, for an analysis.
    verdict: Option<String>,
    detail: String,
    /// The checks behind a failed (or the first inconclusive) analysis, with their figures.
    checks: Vec<CanaryCheck>,
}

/// One check of an analysis: the canary's figure, stable's, and the test's p-value.
#[derive(Debug, SimpleObject)]
pub struct CanaryCheck {
    name: String,
    /// pass, fail or no_data.
    status: String,
    canary: f64,
    stable: Option<f64>,
    p_value: Option<f64>,
    detail: String,
}

impl From<maestro_store::DeploymentRow> for Deployment {
    fn from(d: maestro_store::DeploymentRow) -> Deployment {
        let state: Option<maestro_canary::Canary> = serde_json::from_str(&d.state).ok();
        let timeline = state
            .as_ref()
            .map(|c| {
                c.timeline
                    .iter()
                    .map(|e| CanaryEvent {
                        at: rfc3339(i64::try_from(e.at_ms).unwrap_or(i64::MAX)).unwrap_or_default(),
                        kind: e.kind.clone(),
                        weight: f64::from(e.weight) / 100.0,
                        verdict: e.verdict.map(|v| {
                            match v {
                                maestro_canary::Verdict::Pass => "pass",
                                maestro_canary::Verdict::Fail => "fail",
                                maestro_canary::Verdict::Inconclusive => "inconclusive",
                            }
                            .to_owned()
                        }),
                        detail: e.detail.clone(),
                        checks: e
                            .checks
                            .iter()
                            .map(|c| CanaryCheck {
                                name: c.name.clone(),
                                status: match c.status {
                                    maestro_canary::Status::Pass => "pass",
                                    maestro_canary::Status::Fail => "fail",
                                    maestro_canary::Status::NoData => "no_data",
                                }
                                .to_owned(),
                                canary: c.canary,
                                stable: c.stable,
                                p_value: c.p_value,
                                detail: c.detail.clone(),
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let weight = state
            .as_ref()
            .and_then(|c| c.timeline.last())
            .map_or(0.0, |e| f64::from(e.weight) / 100.0);
        Deployment {
            id: ID(d.id.to_string()),
            environment: d.environment,
            service: d.service,
            version: d.version,
            artifact: d.artifact,
            previous: d.previous,
            status: d.status,
            actor: d.actor,
            reason: d.reason,
            created_at: rfc3339(d.created_at_ms).unwrap_or_default(),
            updated_at: rfc3339(d.updated_at_ms).unwrap_or_default(),
            outcome: state.and_then(|c| c.reason),
            weight,
            timeline,
            run_id: d.run_id.map(|r| ID(r.to_string())),
        }
    }
}

/// One audit log entry.
#[derive(Debug, SimpleObject)]
pub struct AuditEntry {
    /// Its position in the log (`maestro audit prove INDEX`).
    index: u64,
    /// UTC, RFC 3339 with microseconds.
    time: String,
    actor: String,
    /// How the actor was identified.
    via: String,
    action: String,
    target: String,
    /// started, success, failure or denied.
    result: String,
    reason: Option<String>,
}

/// The actor behind the request.
#[derive(Debug, SimpleObject)]
pub struct Viewer {
    id: String,
    roles: Vec<String>,
    teams: Vec<String>,
    tenant: String,
    scopes: Vec<String>,
    /// How it authenticated.
    via: String,
}

fn rfc3339(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

/// A pipeline run (its object was released by the policy before it got here).
pub struct Run {
    row: RunRow,
    detail: tokio::sync::OnceCell<Arc<RunDetail>>,
    state: Arc<AppState>,
}

impl Run {
    async fn detail(&self) -> async_graphql::Result<&Arc<RunDetail>> {
        let id = self.row.id;
        let state = Arc::clone(&self.state);
        self.detail
            .get_or_try_init(|| async move {
                state
                    .pool
                    .with(move |s| s.run_detail(id))
                    .await
                    .map(Arc::new)
                    .map_err(|e| store_error(&e))
            })
            .await
    }
}

#[Object]
impl Run {
    async fn id(&self) -> ID {
        ID(self.row.id.to_string())
    }
    async fn pipeline(&self) -> &str {
        &self.row.pipeline
    }
    /// running, succeeded, failed or interrupted.
    async fn status(&self) -> &str {
        self.row.status.as_str()
    }
    async fn commit(&self) -> Option<&str> {
        self.row.commit.as_deref()
    }
    async fn branch(&self) -> Option<&str> {
        self.row.branch.as_deref()
    }
    /// The tenant the run belongs to (the policy decided on it).
    async fn tenant(&self) -> &str {
        &self.row.tenant
    }
    /// The run's W3C trace id (hex), when it was traced.
    async fn trace_id(&self) -> Option<&str> {
        self.row.trace_id.as_deref()
    }
    /// Who reports the run from another machine (`maestro run --server`); null for a
    /// run of the conductor's own machine.
    async fn reporter(&self) -> Option<&str> {
        self.row.reporter.as_deref()
    }
    /// RFC 3339, UTC.
    async fn started_at(&self) -> Option<String> {
        rfc3339(self.row.started_at_ms)
    }
    async fn finished_at(&self) -> Option<String> {
        self.row.finished_at_ms.and_then(rfc3339)
    }
    async fn job_count(&self) -> u32 {
        self.row.jobs
    }
    async fn cached_count(&self) -> u32 {
        self.row.cached
    }
    async fn failed_count(&self) -> u32 {
        self.row.failed
    }
    /// Every job of the run, in the order they were recorded.
    async fn jobs(&self) -> async_graphql::Result<Vec<Job>> {
        let d = self.detail().await?;
        Ok((0..d.jobs.len())
            .map(|i| Job {
                run: Arc::clone(d),
                index: i,
                state: Arc::clone(&self.state),
            })
            .collect())
    }
    /// The deployments the run started, oldest first: those the actor may see (none
    /// without `deployments:read`).
    async fn deployments(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Deployment>> {
        let Ok(auth) = gate(ctx, "deployments") else {
            return Ok(Vec::new());
        };
        let id = self.row.id;
        visible_deployments(&auth, move |s| s.run_deployments(id)).await
    }
    /// One job by name.
    async fn job(&self, name: String) -> async_graphql::Result<Option<Job>> {
        let d = self.detail().await?;
        Ok(d.jobs.iter().position(|j| j.name == name).map(|i| Job {
            run: Arc::clone(d),
            index: i,
            state: Arc::clone(&self.state),
        }))
    }
}

/// One job of a run.
pub struct Job {
    run: Arc<RunDetail>,
    index: usize,
    state: Arc<AppState>,
}

impl Job {
    fn row(&self) -> &JobRow {
        &self.run.jobs[self.index]
    }
}

/// The most of a log `logTail` reads.
const LOG_TAIL_BYTES: u64 = 256 * 1024;

#[Object]
impl Job {
    async fn name(&self) -> &str {
        &self.row().name
    }
    async fn gate(&self) -> Option<&str> {
        self.row().gate.as_deref()
    }
    /// succeeded, failed, skipped, cancelled, …
    async fn status(&self) -> &str {
        &self.row().status
    }
    /// hit, miss or off.
    async fn cache(&self) -> &str {
        &self.row().cache
    }
    async fn reason(&self) -> Option<&str> {
        self.row().reason.as_deref()
    }
    async fn note(&self) -> Option<&str> {
        self.row().note.as_deref()
    }
    async fn started_at(&self) -> Option<String> {
        self.row().started_at_ms.and_then(rfc3339)
    }
    async fn duration_ms(&self) -> i64 {
        self.row().duration_ms
    }
    async fn exit_code(&self) -> Option<i32> {
        self.row().exit_code
    }
    async fn flaky(&self) -> bool {
        self.row().flaky
    }
    async fn attempts(&self) -> Vec<Attempt> {
        self.row().attempts.iter().map(Attempt::from).collect()
    }
    async fn artifacts(&self) -> Vec<Artifact> {
        self.row()
            .artifacts
            .iter()
            .map(|a| Artifact {
                path: a.path.clone(),
                digest: a.digest.clone(),
                size: a.size,
            })
            .collect()
    }
    async fn tests(&self) -> Vec<TestCase> {
        self.row()
            .tests
            .iter()
            .map(|t| TestCase {
                suite: t.suite.clone(),
                name: t.name.clone(),
                status: t.status.clone(),
                message: t.message.clone(),
            })
            .collect()
    }
    /// The last `lines` lines of the job's log, when this conductor holds the logs of
    /// the run: the tail a remote run reported, or for a run of this machine its log
    /// file (a SQLite store beside its `runs/` directory); null otherwise.
    #[graphql(complexity = "1 + usize::try_from(lines.clamp(1, 1_000)).unwrap_or(1) / 10")]
    async fn log_tail(&self, #[graphql(default = 100)] lines: i32) -> Option<String> {
        let run = self.run.run.id;
        let lines = usize::try_from(lines.clamp(1, 1_000)).unwrap_or(100);
        if self.run.run.reporter.is_some() {
            let job = self.row().name.clone();
            let log = self
                .state
                .pool
                .with(move |s| s.job_log(run, &job))
                .await
                .ok()
                .flatten()?;
            return Some(crate::remote::last_lines(&log.tail, lines));
        }
        let path = self.row().log_path.clone()?;
        let logs = self.state.logs.clone()?;
        tokio::task::spawn_blocking(move || read_tail(&logs, run, Path::new(&path), lines))
            .await
            .ok()
            .flatten()
    }
}

/// The tail of a run's log, only from inside `<home>/runs/<run>/logs/`: a path recorded
/// in the store never opens anything else.
pub(crate) fn read_tail(home: &Path, run: i64, path: &Path, lines: usize) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let allowed = home
        .join("runs")
        .join(run.to_string())
        .join("logs")
        .canonicalize()
        .ok()?;
    let real = path.canonicalize().ok()?;
    if !real.starts_with(&allowed) {
        return None;
    }
    let mut f = std::fs::File::open(&real).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    f.take(LOG_TAIL_BYTES).read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    Some(all[from..].join("\n"))
}

/// One attempt of a job.
#[derive(Debug, SimpleObject)]
pub struct Attempt {
    attempt: u32,
    status: String,
    exit_code: Option<i32>,
    duration_ms: i64,
}

impl From<&AttemptRow> for Attempt {
    fn from(a: &AttemptRow) -> Attempt {
        Attempt {
            attempt: a.attempt,
            status: a.status.clone(),
            exit_code: a.exit_code,
            duration_ms: a.duration_ms,
        }
    }
}

/// A file a job produced, by digest.
#[derive(Debug, SimpleObject)]
pub struct Artifact {
    path: String,
    /// `sha256:…`
    digest: String,
    size: i64,
}

/// A test case from a job's JUnit report.
#[derive(Debug, SimpleObject)]
pub struct TestCase {
    suite: String,
    name: String,
    status: String,
    message: Option<String>,
}

/// A `/graphql` request: a persisted operation's `id` (or Apollo's
/// `extensions.persistedQuery.sha256Hash`), or in development mode a `query`.
#[derive(Debug, Default, Deserialize)]
pub struct Body {
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, rename = "operationName")]
    pub operation_name: Option<String>,
    #[serde(default)]
    pub variables: Option<Value>,
    #[serde(default)]
    pub extensions: Option<Value>,
}

/// `GET /graphql?id=…&variables=…`: persisted operations only.
#[derive(Debug, Deserialize)]
pub struct GetParams {
    pub id: Option<String>,
    pub variables: Option<String>,
    #[serde(rename = "operationName")]
    pub operation_name: Option<String>,
    pub query: Option<String>,
}

static PARSED: LazyLock<HashMap<&'static str, ExecutableDocument>> = LazyLock::new(|| {
    persisted::operations()
        .filter_map(|o| {
            async_graphql::parser::parse_query(o.document)
                .ok()
                .map(|d| (o.id, d))
        })
        .collect()
});

fn request_error(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Which document a request runs: a persisted one (parsed once) or, in development mode,
/// its own.
fn document_of(mode: Mode, body: &Body) -> Result<async_graphql::Request, ApiError> {
    let apq = body
        .extensions
        .as_ref()
        .and_then(|e| e.pointer("/persistedQuery/sha256Hash"))
        .and_then(Value::as_str);
    let id = body.id.as_deref().or(apq);
    let mut req = match (id, body.query.as_deref()) {
        (Some(id), query) => {
            let Some(op) = persisted::by_id(id) else {
                return Err(request_error(
                    "persisted_query_not_found",
                    format!("no persisted operation has the id {id}"),
                ));
            };
            if let Some(q) = query
                && persisted::id_of(q) != id
            {
                return Err(request_error(
                    "persisted_query_mismatch",
                    format!("the query sent is not the document of {id}"),
                ));
            }
            let mut r = async_graphql::Request::new(op.document);
            if let Some(doc) = PARSED.get(op.id) {
                r.set_parsed_query(doc.clone());
            }
            r
        }
        (None, Some(q)) => {
            let known = persisted::by_id(&persisted::id_of(q));
            if mode == Mode::Production && known.is_none() {
                return Err(request_error(
                    "persisted_query_required",
                    "this conductor runs in production mode and only runs persisted \
                     operations: send {\"id\": \"<sha256>\"} from the manifest \
                     (`maestro api manifest`)",
                ));
            }
            async_graphql::Request::new(q)
        }
        (None, None) => {
            return Err(request_error(
                "bad_request",
                "send a persisted operation's `id` (or `query` in development mode)",
            ));
        }
    };
    if let Some(name) = &body.operation_name {
        req = req.operation_name(name);
    }
    match &body.variables {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => {
            req = req.variables(async_graphql::Variables::from_json(v.clone()));
        }
        Some(_) => {
            return Err(request_error(
                "bad_request",
                "`variables` must be an object",
            ));
        }
    }
    Ok(req)
}

/// Runs a request for `actor`.
pub async fn execute(state: &Arc<AppState>, actor: Actor, body: &Body) -> Result<Value, ApiError> {
    let req = document_of(state.mode, body)?.data(Request {
        state: Arc::clone(state),
        actor,
    });
    let resp = state.graphql.execute(req).await;
    let v = serde_json::to_value(&resp).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding failed: {e}"),
        )
    })?;
    let mut size = Counter(0);
    let _ = serde_json::to_writer(&mut size, &v);
    if size.0 > MAX_RESPONSE {
        return Err(request_error(
            "response_too_large",
            format!(
                "the answer would be {} MiB, more than the {} MiB a query may return: ask for fewer runs, jobs or log lines",
                size.0 >> 20,
                MAX_RESPONSE >> 20
            ),
        ));
    }
    Ok(v)
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn answer(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => {
            // Errors before execution (parse, validation, limits) have no `path` and
            // leave no `data`: the request was bad, not a field.
            let request_error = v.get("data").is_none_or(Value::is_null)
                && v["errors"]
                    .as_array()
                    .is_some_and(|es| es.iter().all(|e| e.get("path").is_none()));
            let status = if request_error {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            (status, axum::Json(v)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /graphql`.
pub async fn post(State(state): State<Arc<AppState>>, headers: HeaderMap, raw: String) -> Response {
    let result = async {
        let actor = api::authenticate(&state, &headers).await?;
        let body: Body = serde_json::from_str(&raw)
            .map_err(|e| request_error("bad_request", format!("the request body: {e}")))?;
        execute(&state, actor, &body).await
    }
    .await;
    answer(result)
}

/// `GET /graphql`: persisted operations by id only, never a document.
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    UrlQuery(p): UrlQuery<GetParams>,
) -> Response {
    let result = async {
        let actor = api::authenticate(&state, &headers).await?;
        if p.query.is_some() {
            return Err(request_error(
                "bad_request",
                "GET runs persisted operations only: send `id`, or POST a query",
            ));
        }
        let variables = p
            .variables
            .as_deref()
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(|e| request_error("bad_request", format!("`variables`: {e}")))?;
        let body = Body {
            id: p.id,
            operation_name: p.operation_name,
            variables,
            ..Body::default()
        };
        execute(&state, actor, &body).await
    }
    .await;
    answer(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_persisted_operation_validates_against_the_schema() {
        let sdl = schema(Mode::Development).sdl();
        for op in persisted::operations() {
            assert!(PARSED.contains_key(op.id), "{} does not parse", op.name);
        }
        assert!(sdl.contains("logTail"), "{sdl}");
    }

    #[test]
    fn every_query_field_has_a_row() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let resp = rt.block_on(
            schema(Mode::Development).execute("{ __schema { queryType { fields { name } } } }"),
        );
        let v = serde_json::to_value(&resp).expect("json");
        let fields: Vec<&str> = v["data"]["__schema"]["queryType"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        let mut rows: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
        let mut seen = fields.clone();
        rows.sort_unstable();
        seen.sort_unstable();
        assert_eq!(seen, rows, "Query's fields and graphql::FIELDS differ");
    }

    #[test]
    fn production_refuses_documents_outside_the_manifest() {
        let body = Body {
            query: Some("{ runs { id } }".into()),
            ..Body::default()
        };
        let e = document_of(Mode::Production, &body).expect_err("refused");
        assert_eq!(e.code, "persisted_query_required");
        assert!(document_of(Mode::Development, &body).is_ok());
        let op = persisted::by_name("RunList").expect("RunList");
        let by_doc = Body {
            query: Some(op.document.into()),
            ..Body::default()
        };
        assert!(document_of(Mode::Production, &by_doc).is_ok());
        let bad = Body {
            id: Some("0".repeat(64)),
            ..Body::default()
        };
        assert_eq!(
            document_of(Mode::Production, &bad)
                .expect_err("unknown")
                .code,
            "persisted_query_not_found"
        );
        let mismatch = Body {
            id: Some(op.id.into()),
            query: Some("{ runs { id } }".into()),
            ..Body::default()
        };
        assert_eq!(
            document_of(Mode::Development, &mismatch)
                .expect_err("mismatch")
                .code,
            "persisted_query_mismatch"
        );
    }

    #[test]
    fn a_log_outside_the_runs_logs_is_never_read() {
        let home = tempfile::tempdir().expect("tempdir");
        let logs = home.path().join("runs/7/logs");
        std::fs::create_dir_all(&logs).expect("mkdir");
        std::fs::write(logs.join("build.log"), "one\ntwo\nthree\n").expect("write");
        std::fs::write(home.path().join("secret"), "key").expect("write");
        assert_eq!(
            read_tail(home.path(), 7, &logs.join("build.log"), 2).as_deref(),
            Some("two\nthree")
        );
        assert_eq!(
            read_tail(home.path(), 7, &home.path().join("secret"), 2),
            None
        );
        assert_eq!(
            read_tail(home.path(), 7, &logs.join("../../../secret"), 2),
            None
        );
        assert_eq!(read_tail(home.path(), 8, &logs.join("build.log"), 2), None);
    }
}
