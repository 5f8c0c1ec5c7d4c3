//! The console: server-rendered pages under `/console`, no front-end build.
//!
//! A page runs persisted GraphQL operations ([`OPERATIONS`], by name from the manifest)
//! through [`graphql::execute`] as the signed-in actor, so it sees exactly what the API
//! would show that actor, and renders the answer with maud (every interpolation
//! escaped). Signing in takes an API token or an OIDC token and opens a server-side
//! session: the cookie holds only a random session id (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind a declared TLS proxy), the store its SHA-256, the token it was signed
//! in with and its expiry. Every page checks the session and the token again, so signing
//! out or revoking the token ends it at the next click. Sign-in and sign-out refuse
//! cross-site posts (login CSRF).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{self, ApiError};
use crate::auth::Actor;
use crate::graphql::{self, Body};
use crate::{AppState, persisted};

/// Every operation the console's pages run. `maestro api coverage` checks each is in the
/// persisted manifest.
pub const OPERATIONS: &[&str] = &[VIEWER, RUN_LIST, RUN_DETAIL, RUN_LOG, AUDIT_ENTRIES];

const VIEWER: &str = "Viewer";
const RUN_LIST: &str = "RunList";
const RUN_DETAIL: &str = "RunDetail";
const RUN_LOG: &str = "RunLog";
const AUDIT_ENTRIES: &str = "AuditEntries";
const DEPLOYMENTS: &str = "Deployments";
const DEPLOYMENT_DETAIL: &str = "DeploymentDetail";

/// The session cookie: a random session id, never a credential.
const COOKIE: &str = "maestro_session";
/// How long a console session lasts (the token's own expiry still applies).
const SESSION_SECONDS: u32 = 8 * 3600;

const STYLE: &str = include_str!("../console/console.css");

/// The console's routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/runs") }))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/console.css", get(style))
        .route("/console/runs", get(runs_page))
        .route("/console/runs/{id}", get(run_page))
        .route("/console/runs/{id}/jobs/{job}", get(job_page))
        .route("/console/audit", get(audit_page))
        .route("/console/releases", get(releases_page))
        .route(
            "/console/releases/{service}/{version}",
            get(release_page).post(release_control),
        )
        .route(
            "/console/releases/{service}/{version}/evidence",
            get(release_evidence),
        )
        .route("/console/canaries", get(canaries_page))
        .route(
            "/console/canaries/{id}",
            get(canary_page).post(canary_control),
        )
        .route("/console/flags", get(flags_page))
        .route("/console/flags/{key}", post(flag_control))
}

/// Headers every console answer carries: no framing, no sniffing, only our own
/// resources, and no caching of pages that show a tenant's data.
fn hardened(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn page(status: StatusCode, title: &str, actor: Option<&Actor>, body: &Markup) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Maestro" }
                link rel="stylesheet" href="/console/console.css";
            }
            body {
                header {
                    a.brand href="/console/runs" { "Maestro" }
                    @if actor.is_some() {
                        nav {
                            a href="/console/runs" { "Runs" }
                            a href="/console/audit" { "Audit" }
                            a href="/console/releases" { "Releases" }
                            a href="/console/canaries" { "Canaries" }
                            a href="/console/flags" { "Flags" }
                        }
                    }
                    @if let Some(a) = actor {
                        form.who method="post" action="/console/logout" {
                            span #actor { (a.id) " · " (a.tenant) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    hardened((status, axum::response::Html(doc.into_string())).into_response())
}

async fn style() -> Response {
    hardened(([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response())
}

fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The signed-in actor, or the way to the sign-in page: the session must exist, be
/// neither ended nor expired, and the token it was opened with must still be valid (the
/// actor is the token's as it is now).
async fn signed_in(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Actor, Response> {
    let to_login = || Redirect::to("/console/login").into_response();
    let id = session_secret(headers).ok_or_else(to_login)?;
    let hash = crate::auth::hash_secret(&id);
    let found = state
        .pool
        .with(move |s| s.session(&hash))
        .await
        .map_err(|e| failure(None, &ApiError::store(&e)))?;
    let Some((session, token)) = found else {
        return Err(to_login());
    };
    let now = crate::now_ms();
    if session.revoked_at_ms.is_some() || session.expires_at_ms <= now {
        return Err(to_login());
    }
    match (session.token_id, token) {
        (Some(_), Some(t)) => crate::auth::actor_of(Some(t), now).map_err(|_| to_login()),
        (Some(_), None) => Err(to_login()),
        (None, _) => serde_json::from_str::<Actor>(&session.actor).map_err(|e| {
            crate::log::event(
                "error",
                "console session unreadable",
                &[("error", json!(e.to_string()))],
            );
            failure(
                None,
                &ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "session_unreadable",
                    "this session's record does not parse: sign in again",
                ),
            )
        }),
    }
}

fn failure(actor: Option<&Actor>, e: &ApiError) -> Response {
    page(
        e.status,
        "Error",
        actor,
        &html! { h1 { "Something went wrong" } p.error { (e.message) } },
    )
}

/// Runs a persisted operation by name as `actor`; `data`, or the first error as a page.
async fn run_op(
    state: &Arc<AppState>,
    actor: &Actor,
    name: &str,
    variables: Value,
) -> Result<Value, Response> {
    let op = persisted::by_name(name).ok_or_else(|| {
        failure(
            Some(actor),
            &ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the console's operation {name} is not in the manifest"),
            ),
        )
    })?;
    let body = Body {
        id: Some(op.id.to_owned()),
        variables: Some(variables),
        ..Body::default()
    };
    let v = graphql::execute(state, actor.clone(), &body)
        .await
        .map_err(|e| failure(Some(actor), &e))?;
    if let Some(err) = v["errors"].as_array().and_then(|a| a.first()) {
        let code = err["extensions"]["code"].as_str().unwrap_or("error");
        let status = match code {
            "forbidden" | "insufficient_scope" => StatusCode::FORBIDDEN,
            "bad_request" => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = err["message"].as_str().unwrap_or("the request failed");
        return Err(page(
            status,
            "Not allowed",
            Some(actor),
            &html! { h1 { "Not allowed" } p.error { (message) } },
        ));
    }
    Ok(v["data"].clone())
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_page() -> Response {
    login_form(StatusCode::OK, None)
}

fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    page(
        status,
        "Sign in",
        None,
        &html! {
            h1 { "Sign in" }
            p { "Paste an API token (" code { "maestro token create" } ") or an OIDC token from an issuer this conductor trusts." }
            @if let Some(e) = error { p.error #login-error { (e) } }
            form.login method="post" action="/console/login" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The cookie's attributes: `Secure` when the conductor is declared to be behind TLS.
fn cookie(state: &AppState, value: &str, max_age: i64) -> Option<HeaderValue> {
    let secure = if state.tls_proxy { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// When an OIDC token says it expires (its `exp`, already verified), in milliseconds.
fn jwt_expiry_ms(token: &str) -> Option<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_i64()?.checked_mul(1000)
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if let Some(e) = cross_origin(&headers) {
        return failure(None, &e);
    }
    let secret = f.token.trim();
    let actor = match api::actor_for_secret(&state, secret).await {
        Ok(actor) => actor,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            return login_form(StatusCode::UNAUTHORIZED, Some(&e.message));
        }
        Err(e) => return failure(None, &e),
    };
    let mut id = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut id) {
        return failure(
            None,
            &ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_randomness",
                format!("no randomness for a session: {e}"),
            ),
        );
    }
    let id = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
    };
    let now = crate::now_ms();
    let mut expires = now + i64::from(SESSION_SECONDS) * 1000;
    let token_id = actor.via.strip_prefix("token:").map(str::to_owned);
    if token_id.is_none()
        && let Some(exp) = jwt_expiry_ms(secret)
    {
        // An OIDC session lasts no longer than the token it was opened with.
        expires = expires.min(exp);
    }
    let row = maestro_store::SessionRow {
        id_hash: crate::auth::hash_secret(&id),
        token_id,
        actor: serde_json::to_string(&actor).unwrap_or_default(),
        created_at_ms: now,
        expires_at_ms: expires,
        revoked_at_ms: None,
    };
    if let Err(e) = state.pool.with(move |s| s.session_create(&row)).await {
        return failure(None, &ApiError::store(&e));
    }
    crate::log::event(
        "info",
        "console sign-in",
        &[("actor", json!(actor.id)), ("via", json!(actor.via))],
    );
    let mut resp = Redirect::to("/console/runs").into_response();
    if let Some(v) = cookie(&state, &id, (expires - now) / 1000) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    hardened(resp)
}

/// Ends the session on the server (the cookie alone would not), and clears the cookie.
async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(e) = cross_origin(&headers) {
        return failure(None, &e);
    }
    if let Some(id) = session_secret(&headers) {
        let hash = crate::auth::hash_secret(&id);
        if let Err(e) = state
            .pool
            .with(move |s| s.session_revoke(&hash, crate::now_ms()))
            .await
        {
            return failure(None, &ApiError::store(&e));
        }
    }
    let mut resp = Redirect::to("/console/login").into_response();
    if let Some(v) = cookie(&state, "", 0) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    hardened(resp)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(commit: &Value) -> String {
    text(commit).chars().take(12).collect()
}

fn status_badge(status: &Value) -> Markup {
    let s = text(status);
    html! { span class={ "status status-" (s) } { (s) } }
}

fn seconds(ms: &Value) -> String {
    #[expect(
        clippy::cast_precision_loss,
        reason = "durations are far below 2^52 ms"
    )]
    let s = ms.as_i64().unwrap_or(0) as f64 / 1000.0;
    format!("{s:.1} s")
}

async fn runs_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let data = match run_op(&state, &actor, RUN_LIST, json!({"limit": 50})).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let runs = data["runs"].as_array().cloned().unwrap_or_default();
    page(
        StatusCode::OK,
        "Runs",
        Some(&actor),
        &html! {
            h1 { "Runs" }
            @if runs.is_empty() {
                p.empty { "No runs yet. Run " code { "maestro run" } " in a repository that uses this store." }
            } @else {
                table #runs {
                    thead { tr { th { "Run" } th { "Pipeline" } th { "Status" } th { "Commit" } th { "Branch" } th { "Started" } th { "Jobs" } th { "Cached" } th { "Failed" } } }
                    tbody {
                        @for r in &runs {
                            tr class={ "run run-" (text(&r["status"])) } {
                                td { a href={ "/console/runs/" (text(&r["id"])) } { "#" (text(&r["id"])) } }
                                td { (text(&r["pipeline"])) }
                                td { (status_badge(&r["status"])) }
                                td { code { (short(&r["commit"])) } }
                                td { (text(&r["branch"])) }
                                td { time { (text(&r["startedAt"])) } }
                                td.num { (text(&r["jobCount"])) }
                                td.num { (text(&r["cachedCount"])) }
                                td.num { (text(&r["failedCount"])) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn not_found(actor: &Actor, what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        Some(actor),
        &html! { h1 { "Not found" } p { (what) " does not exist, or you may not see it." } },
    )
}

async fn run_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let data = match run_op(&state, &actor, RUN_DETAIL, json!({"id": id})).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let run = &data["run"];
    if run.is_null() {
        return not_found(&actor, &format!("Run #{id}"));
    }
    let jobs = run["jobs"].as_array().cloned().unwrap_or_default();
    let mut gates: Vec<String> = Vec::new();
    for j in &jobs {
        let g = text(&j["gate"]);
        if !gates.contains(&g) {
            gates.push(g);
        }
    }
    let failed: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "failed").collect();
    page(
        StatusCode::OK,
        &format!("Run #{id}"),
        Some(&actor),
        &html! {
            h1 { "Run #" (text(&run["id"])) " · " (text(&run["pipeline"])) " " (status_badge(&run["status"])) }
            dl.facts {
                dt { "Commit" } dd { code { (text(&run["commit"])) } }
                dt { "Branch" } dd { (text(&run["branch"])) }
                dt { "Tenant" } dd { (text(&run["tenant"])) }
                dt { "Trace" } dd #trace { code { (text(&run["traceId"])) } }
                dt { "Reported by" } dd #reporter {
                    @if run["reporter"].is_null() { "this conductor's machine" } @else { (text(&run["reporter"])) }
                }
                dt { "Started" } dd { (text(&run["startedAt"])) }
                dt { "Finished" } dd { (text(&run["finishedAt"])) }
                dt { "Jobs" } dd { (text(&run["jobCount"])) " (" (text(&run["cachedCount"])) " from cache, " (text(&run["failedCount"])) " failed)" }
            }
            @if let Some(deps) = run["deployments"].as_array().filter(|d| !d.is_empty()) {
                section #deployments {
                    h2 { "Deployments" }
                    table.deployments {
                        thead { tr { th { "Deployment" } th { "Environment" } th { "Release" } th { "Status" } th { "Why it ended" } } }
                        tbody {
                            @for d in deps {
                                tr data-deployment=(text(&d["id"])) {
                                    td { a href={ "/console/canaries/" (text(&d["id"])) } { "#" (text(&d["id"])) } }
                                    td { (text(&d["environment"])) }
                                    td { code { (text(&d["version"])) } }
                                    td { (status_badge(&d["status"])) }
                                    td { (text(&d["outcome"])) }
                                }
                            }
                        }
                    }
                }
            }
            @if !failed.is_empty() {
                section #failures {
                    h2 { "Failed" }
                    ul {
                        @for j in &failed {
                            li.failed-job {
                                a href={ "/console/runs/" (id) "/jobs/" (text(&j["name"])) } { (text(&j["name"])) }
                                " exited " (text(&j["exitCode"]))
                                @if !j["reason"].is_null() { " — " (text(&j["reason"])) }
                            }
                        }
                    }
                }
            }
            @for g in &gates {
                section.gate {
                    h2 { @if g.is_empty() { "Jobs" } @else { "Gate " (g) } }
                    table.jobs {
                        thead { tr { th { "Job" } th { "Status" } th { "Cache" } th { "Duration" } th { "Exit" } th { "Attempts" } th { "Note" } } }
                        tbody {
                            @for j in jobs.iter().filter(|j| text(&j["gate"]) == *g) {
                                tr class={ "job job-" (text(&j["status"])) } data-job=(text(&j["name"])) {
                                    td { a href={ "/console/runs/" (id) "/jobs/" (text(&j["name"])) } { (text(&j["name"])) } }
                                    td { (status_badge(&j["status"])) @if j["flaky"] == true { " " span.flaky { "flaky" } } }
                                    td { (text(&j["cache"])) }
                                    td.num { (seconds(&j["durationMs"])) }
                                    td.num { (text(&j["exitCode"])) }
                                    td.num { (j["attempts"].as_array().map_or(0, Vec::len)) }
                                    td { (text(&j["reason"])) " " (text(&j["note"])) }
                                }
                            }
                        }
                    }
                }
            }
            section #artifacts {
                h2 { "Artifacts" }
                @let arts: Vec<(&Value, &Value)> = jobs.iter().flat_map(|j| j["artifacts"].as_array().into_iter().flatten().map(move |a| (j, a))).collect();
                @if arts.is_empty() {
                    p.empty { "This run produced no artifacts." }
                } @else {
                    table {
                        thead { tr { th { "Job" } th { "Path" } th { "Digest" } th { "Size" } } }
                        tbody {
                            @for (j, a) in &arts {
                                tr { td { (text(&j["name"])) } td { code { (text(&a["path"])) } } td { code.digest { (text(&a["digest"])) } } td.num { (text(&a["size"])) } }
                            }
                        }
                    }
                    p.note { "Signatures, SBOM and provenance for an artifact: " code { "maestro verify" } " with its digest; the release evidence bundle collects them." }
                }
            }
        },
    )
}

async fn job_page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((id, job)): Path<(String, String)>,
) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let vars = json!({"id": id, "job": job, "lines": 400});
    let data = match run_op(&state, &actor, RUN_LOG, vars).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let j = &data["run"]["job"];
    if j.is_null() {
        return not_found(&actor, &format!("Job {job} of run #{id}"));
    }
    page(
        StatusCode::OK,
        &format!("{job} · run #{id}"),
        Some(&actor),
        &html! {
            h1 { a href={ "/console/runs/" (id) } { "Run #" (id) } " · " (text(&j["name"])) " " (status_badge(&j["status"])) }
            h2 { "Log (last 400 lines)" }
            @if j["logTail"].is_null() {
                p.empty { "This conductor does not hold this run's logs." }
            } @else {
                pre.log { (text(&j["logTail"])) }
            }
        },
    )
}

async fn audit_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let data = match run_op(&state, &actor, AUDIT_ENTRIES, json!({"limit": 100})).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let entries = data["auditEntries"].as_array().cloned().unwrap_or_default();
    page(
        StatusCode::OK,
        "Audit",
        Some(&actor),
        &html! {
            h1 { "Audit log" }
            p.note { "Newest first. Every entry is in a signed Merkle log: " code { "maestro audit verify" } " checks them all, " code { "maestro audit prove N" } " proves one." }
            @if entries.is_empty() {
                p.empty { "No entries yet." }
            } @else {
                table #audit {
                    thead { tr { th { "#" } th { "Time" } th { "Actor" } th { "Action" } th { "Target" } th { "Result" } th { "Reason" } } }
                    tbody {
                        @for e in &entries {
                            tr.entry {
                                td.num { (text(&e["index"])) }
                                td { (text(&e["time"])) }
                                td { (text(&e["actor"])) }
                                td { code { (text(&e["action"])) } }
                                td { (text(&e["target"])) }
                                td { (status_badge(&e["result"])) }
                                td { (text(&e["reason"])) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(String::new, |p| format!("{p:.0}%"))
}

async fn canaries_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let data = match run_op(&state, &actor, DEPLOYMENTS, json!({"limit": 50})).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let deployments = data["deployments"].as_array().cloned().unwrap_or_default();
    page(
        StatusCode::OK,
        "Canaries",
        Some(&actor),
        &html! {
            h1 { "Canaries" }
            @if deployments.is_empty() {
                p.empty { "No deployments yet. " code { "maestro deploy ENV ARTIFACT" } " sends a release to an environment by canary." }
            } @else {
                table #deployments {
                    thead { tr { th { "Deployment" } th { "Environment" } th { "Service" } th { "Release" } th { "Status" } th { "Canary traffic" } th { "By" } th { "Why" } th { "Started" } } }
                    tbody {
                        @for d in &deployments {
                            tr class={ "deployment deployment-" (text(&d["status"])) } {
                                td { a href={ "/console/canaries/" (text(&d["id"])) } { "#" (text(&d["id"])) } }
                                td { (text(&d["environment"])) }
                                td { (text(&d["service"])) }
                                td { code { (text(&d["version"])) } }
                                td { (status_badge(&d["status"])) }
                                td.num { (percent(&d["weight"])) }
                                td { (text(&d["actor"])) }
                                td { (text(&d["reason"])) }
                                td { time { (text(&d["createdAt"])) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

async fn canary_page(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let data = match run_op(&state, &actor, DEPLOYMENT_DETAIL, json!({"id": id})).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let d = &data["deployment"];
    if d.is_null() {
        return not_found(&actor, &format!("Deployment {id}"));
    }
    let events = d["timeline"].as_array().cloned().unwrap_or_default();
    // The figures of the analysis that decided (the last one with checks).
    let deciding = events
        .iter()
        .rev()
        .find(|e| e["checks"].as_array().is_some_and(|c| !c.is_empty()));
    page(
        StatusCode::OK,
        &format!("Deployment {id}"),
        Some(&actor),
        &html! {
            h1 { "Deployment #" (text(&d["id"])) " — " (text(&d["service"])) " to " (text(&d["environment"])) }
            p { (status_badge(&d["status"])) " release " code { (text(&d["version"])) } " (" code { (text(&d["artifact"])) } "), against " code { (text(&d["previous"])) } }
            p { "By " (text(&d["actor"])) ": " (text(&d["reason"])) }
            @if !d["runId"].is_null() {
                p #run { "Started by " a href={ "/console/runs/" (text(&d["runId"])) } { "run #" (text(&d["runId"])) } }
            }
            @if d["status"] == "progressing" || d["status"] == "paused" {
                form #control method="post" action={ "/console/canaries/" (text(&d["id"])) } {
                    label { "Reason (audited) " input type="text" name="reason" required maxlength="1024" placeholder="why" ; }
                    @if d["status"] == "progressing" {
                        button type="submit" name="action" value="pause" { "Pause" }
                    } @else {
                        button type="submit" name="action" value="resume" { "Resume" }
                    }
                    button type="submit" name="action" value="promote" { "Promote" }
                    button.danger type="submit" name="action" value="abort" { "Abort" }
                }
            }
            @if !d["outcome"].is_null() {
                p #outcome { strong { "Why it ended: " } (text(&d["outcome"])) }
            }
            table #timeline {
                thead { tr { th { "Time" } th { "Event" } th { "Canary traffic" } th { "Verdict" } th { "Detail" } } }
                tbody {
                    @for e in &events {
                        tr class={ "event event-" (text(&e["kind"])) } {
                            td { time { (text(&e["at"])) } }
                            td { (text(&e["kind"])) }
                            td.num { (percent(&e["weight"])) }
                            td { (text(&e["verdict"])) }
                            td { (text(&e["detail"])) }
                        }
                    }
                }
            }
            @if let Some(e) = deciding {
                h2 { "Checks at " time { (text(&e["at"])) } " (" (text(&e["verdict"])) ")" }
                table #checks {
                    thead { tr { th { "Check" } th { "Status" } th { "Canary" } th { "Stable" } th { "p-value" } th { "Detail" } } }
                    tbody {
                        @for c in e["checks"].as_array().into_iter().flatten() {
                            tr class={ "check check-" (text(&c["status"])) } {
                                td { (text(&c["name"])) }
                                td { (text(&c["status"])) }
                                td.num { (figure(&c["canary"])) }
                                td.num { (figure(&c["stable"])) }
                                td.num { (figure(&c["pValue"])) }
                                td { (text(&c["detail"])) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A check's figure: four significant digits, scientific below 0.001.
fn figure(v: &Value) -> String {
    match v.as_f64() {
        None => "—".to_owned(),
        Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{x:.2e}"),
        Some(x) => format!("{x:.4}"),
    }
}

/// `/console/flags`: every flag with its owner, state, safe default, kill switch and
/// expiry (the `GET /api/v1/flags` answer, as the signed-in user), with Kill and Restore
/// buttons for those who may.
async fn flags_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let answer = rest_get(
        &state,
        &actor,
        "/api/v1/flags",
        std::collections::HashMap::new(),
    )
    .await;
    let data = match answer {
        Ok(c) => c.json().cloned().unwrap_or_default(),
        Err(e) if e.code == "no_flags" => json!({"flags": []}),
        Err(e) => return failure(Some(&actor), &e),
    };
    let flags = data["flags"].as_array().cloned().unwrap_or_default();
    page(
        StatusCode::OK,
        "Feature flags",
        Some(&actor),
        &html! {
            h1 { "Feature flags" }
            @if flags.is_empty() {
                p.empty { "No flag registry: set " code { "[flags] file" } " in the conductor's configuration (docs/flags.md)." }
            } @else {
                p { "From " code { (text(&data["file"])) } "." }
                table #flags {
                    thead { tr { th { "Flag" } th { "State" } th { "Owner" } th { "Risk" } th { "Safe default" } th { "Kill variant" } th { "Expires" } th { "Kill switch" } } }
                    tbody {
                        @for f in &flags {
                            tr class={ "flag" @if f["killed"] == true { " flag-killed" } } data-flag=(text(&f["key"])) {
                                td { code { (text(&f["key"])) } @if !f["description"].is_null() { br; small { (text(&f["description"])) } } }
                                td { @if f["killed"] == true { (status_badge(&json!("killed"))) } @else if f["enabled"] == true { (status_badge(&json!("enabled"))) } @else { (status_badge(&json!("disabled"))) } }
                                td { (text(&f["owner"])) }
                                td { (text(&f["risk"])) }
                                td { code { (text(&f["default_variant"])) } }
                                td { code { (text(&f["kill_variant"])) } }
                                td.nowrap { (text(&f["expires"])) @if f["expiry"]["status"] != "live" { " " (status_badge(&json!("expired"))) } }
                                td {
                                    @if !f["kill_switch"].is_null() {
                                        small { (text(&f["kill_switch"]["actor"])) ": " (text(&f["kill_switch"]["reason"])) } br;
                                    }
                                    form.flag-control method="post" action={ "/console/flags/" (text(&f["key"])) } {
                                        input type="text" name="reason" required maxlength="1024" placeholder="reason (audited)";
                                        @if f["killed"] == true {
                                            button type="submit" name="action" value="restore" { "Restore" }
                                        } @else {
                                            button.danger type="submit" name="action" value="kill" { "Kill" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Refuses a form posted from another site (the session cookie is `SameSite=Strict` too).
/// A browser says where a request comes from in `Sec-Fetch-Site`, which a page cannot
/// forge: only `same-origin` (or `none`, the user's own navigation) passes. A browser too
/// old to send it sends `Origin`, which must then be this host (`null`, what a sandboxed
/// frame sends, is refused). Clients that are not browsers send neither, and are no
/// vector for a forged form.
fn cross_origin(headers: &HeaderMap) -> Option<ApiError> {
    let refuse = |from: &str| {
        Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!("a form posted from {from} may not change anything here"),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|h| h.to_str().ok()) {
        return match site {
            "same-origin" | "none" => None,
            other => refuse(&format!("a {other} page")),
        };
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok())?;
    let same =
        host.is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
    if same { None } else { refuse(origin) }
}

/// A console form's action: signed in, same origin, then the REST endpoint `template`
/// with `path` as the signed-in user (its scope, policy, reason and audit entries), and
/// back to `back`.
async fn submit(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    template: &str,
    path: std::collections::HashMap<String, String>,
    reason: &str,
    back: &str,
) -> Response {
    let actor = match signed_in(state, headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if let Some(e) = cross_origin(headers) {
        return failure(Some(&actor), &e);
    }
    match api::dispatch_as(
        Arc::clone(state),
        actor.clone(),
        "POST",
        template,
        path,
        json!({}),
        reason,
    )
    .await
    {
        Ok(_) => hardened(Redirect::to(back).into_response()),
        Err(e) => failure(Some(&actor), &e),
    }
}

#[derive(Debug, Deserialize)]
struct ControlForm {
    action: String,
    reason: String,
}

/// `POST /console/flags/{key}`: kill or restore.
async fn flag_control(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ControlForm>,
) -> Response {
    let path = [("key".to_owned(), key), ("action".to_owned(), f.action)]
        .into_iter()
        .collect();
    submit(
        &state,
        &headers,
        "/api/v1/flags/{key}/{action}",
        path,
        &f.reason,
        "/console/flags",
    )
    .await
}

/// `POST /console/canaries/{id}`: pause, resume, promote or abort. The session cookie is
/// `SameSite=Strict`, and a request whose `Origin` is another site is refused as well.
async fn canary_control(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ControlForm>,
) -> Response {
    let back = format!("/console/canaries/{}", urlencode_id(&id));
    let path = [("id".to_owned(), id), ("action".to_owned(), f.action)]
        .into_iter()
        .collect();
    submit(
        &state,
        &headers,
        "/api/v1/deployments/{id}/{action}",
        path,
        &f.reason,
        &back,
    )
    .await
}

/// A deployment id for a redirect: digits only.
fn urlencode_id(id: &str) -> String {
    id.chars().filter(char::is_ascii_digit).collect()
}

/// Milliseconds since the epoch as RFC 3339 (seconds).
fn at_ms(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|m| jiff::Timestamp::from_millisecond(m).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A GET of the REST API as the signed-in user.
async fn rest_get(
    state: &Arc<AppState>,
    actor: &Actor,
    template: &str,
    path: std::collections::HashMap<String, String>,
) -> Result<api::Checked, ApiError> {
    api::dispatch_as(
        Arc::clone(state),
        actor.clone(),
        "GET",
        template,
        path,
        json!({}),
        "",
    )
    .await
}

fn release_path(service: &str, version: &str) -> std::collections::HashMap<String, String> {
    [
        ("service".to_owned(), service.to_owned()),
        ("version".to_owned(), version.to_owned()),
    ]
    .into_iter()
    .collect()
}

/// A path segment for a link or redirect: the characters a service or SemVer may hold.
fn segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '+'))
        .collect()
}

async fn releases_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let data = match rest_get(
        &state,
        &actor,
        "/api/v1/releases",
        std::collections::HashMap::new(),
    )
    .await
    {
        Ok(c) => c.json().cloned().unwrap_or_default(),
        Err(e) => return failure(Some(&actor), &e),
    };
    let releases = data["releases"].as_array().cloned().unwrap_or_default();
    page(
        StatusCode::OK,
        "Releases",
        Some(&actor),
        &html! {
            h1 { "Releases" }
            @if releases.is_empty() {
                p.empty { "No release yet. " code { "maestro release cut" } " cuts one from a green commit (docs/release.md)." }
            } @else {
                table #releases {
                    thead { tr { th { "Release" } th { "Status" } th { "Stages" } th { "Commit" } th { "By" } th { "Why" } th { "Cut" } } }
                    tbody {
                        @for r in &releases {
                            tr class={ "release release-" (text(&r["status"])) } {
                                td { a href={ "/console/releases/" (segment(&text(&r["service"]))) "/" (segment(&text(&r["version"]))) } { (text(&r["service"])) " " (text(&r["version"])) } }
                                td { (status_badge(&r["status"])) }
                                td {
                                    @for s in r["progress"]["stages"].as_array().into_iter().flatten() {
                                        span.stage { (text(&s["environment"])) ": " (status_badge(&s["step"])) } " "
                                    }
                                }
                                td { code { (text(&r["commit"]).get(..12).unwrap_or_default()) } }
                                td { (text(&r["actor"])) }
                                td { (text(&r["reason"])) }
                                td.nowrap { time { (at_ms(&r["created_at_ms"])) } }
                            }
                        }
                    }
                }
            }
        },
    )
}

async fn release_page(
    State(state): State<Arc<AppState>>,
    Path((service, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let r = match rest_get(
        &state,
        &actor,
        "/api/v1/releases/{service}/{version}",
        release_path(&service, &version),
    )
    .await
    {
        Ok(c) => c.json().cloned().unwrap_or_default(),
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            return not_found(&actor, &format!("Release {service} {version}"));
        }
        Err(e) => return failure(Some(&actor), &e),
    };
    let p = &r["progress"];
    let link = format!(
        "/console/releases/{}/{}",
        segment(&service),
        segment(&version)
    );
    let ended = matches!(r["status"].as_str(), Some("released" | "rolled_back"));
    page(
        StatusCode::OK,
        &format!("Release {service} {version}"),
        Some(&actor),
        &html! {
            h1 { (text(&r["service"])) " " (text(&r["version"])) }
            p { (status_badge(&r["status"])) " from commit " code { (text(&r["commit"])) } @if !p["run"].is_null() { " — " a href={ "/console/runs/" (text(&p["run"])) } { "run #" (text(&p["run"])) } } }
            p { "Artifact " code.digest { (text(&r["digest"])) } }
            @if !p["reason"].is_null() { p #why .error { (text(&p["reason"])) } }
            p { "Cut by " (text(&r["actor"])) ": " (text(&r["reason"])) " — " a #evidence href={ (link) "/evidence" } { "evidence bundle" } }
            @if !ended {
                form #control method="post" action=(link) {
                    input type="text" name="reason" required maxlength="1024" placeholder="reason (audited)";
                    button type="submit" name="action" value="promote" { @if r["status"] == "progressing" { "Resume" } @else { "Promote" } }
                    button.danger type="submit" name="action" value="rollback" { "Roll back" }
                }
            }
            h2 { "Gates" }
            table #gates {
                thead { tr { th { "Gate" } th { "Status" } th { "Jobs" } } }
                tbody {
                    @for g in p["gates"].as_array().into_iter().flatten() {
                        tr {
                            td { (text(&g["gate"])) }
                            td { @if g["green"] == true { (status_badge(&json!("succeeded"))) } @else { (status_badge(&json!("failed"))) } }
                            td { @for j in g["jobs"].as_array().into_iter().flatten() { code { (text(&j[0])) } " " (text(&j[1])) "; " } }
                        }
                    }
                }
            }
            h2 { "Stages" }
            table #stages {
                thead { tr { th { "Environment" } th { "Step" } th { "Canary" } th { "Smoke" } th { "Golden signals" } } }
                tbody {
                    @for st in p["stages"].as_array().into_iter().flatten() {
                        tr class={ "stage stage-" (text(&st["step"])) } {
                            td { (text(&st["environment"])) }
                            td { (status_badge(&st["step"])) }
                            td { @if !st["deployment"].is_null() { a href={ "/console/canaries/" (text(&st["deployment"])) } { "#" (text(&st["deployment"])) } } }
                            td { @for k in st["smoke"].as_array().into_iter().flatten() {
                                (text(&k["name"])) " " @if k["passed"] == true { (status_badge(&json!("succeeded"))) } @else { (status_badge(&json!("failed"))) } br;
                            } }
                            td { @if let Some(c) = st["checks"].as_array().and_then(|c| c.last()) {
                                (text(&c["during"])) " " (status_badge(&c["status"])) br; small { (text(&c["why"])) }
                            } }
                        }
                    }
                }
            }
            h2 { "Events" }
            ol #events {
                @for e in p["events"].as_array().into_iter().flatten() {
                    li { time { (at_ms(&e["at_ms"])) } " " (text(&e["message"])) }
                }
            }
            h2 { "Notes" }
            pre #notes { (text(&r["notes"])) }
        },
    )
}

/// `POST /console/releases/{service}/{version}`: promote (or resume) or roll back.
async fn release_control(
    State(state): State<Arc<AppState>>,
    Path((service, version)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<ControlForm>,
) -> Response {
    let back = format!(
        "/console/releases/{}/{}",
        segment(&service),
        segment(&version)
    );
    let mut path = release_path(&service, &version);
    path.insert("action".to_owned(), f.action);
    submit(
        &state,
        &headers,
        "/api/v1/releases/{service}/{version}/{action}",
        path,
        &f.reason,
        &back,
    )
    .await
}

/// The evidence bundle, downloaded with the console's session.
async fn release_evidence(
    State(state): State<Arc<AppState>>,
    Path((service, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let actor = match signed_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match rest_get(
        &state,
        &actor,
        "/api/v1/releases/{service}/{version}/evidence",
        release_path(&service, &version),
    )
    .await
    {
        Ok(c) => hardened(c.into_response()),
        Err(e) => failure(Some(&actor), &e),
    }
}
