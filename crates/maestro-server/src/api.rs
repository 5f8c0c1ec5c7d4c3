//! The HTTP API. Every endpoint is a row of [`ENDPOINTS`]; the router is made from that
//! table, so each one passes through [`dispatch`]: authentication, the token's scope, the
//! policy on the action, then the handler, which can only answer through
//! [`Authorized::release`] or [`Authorized::visible`] — the policy again, on the resource.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, RawPathParams, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use serde::Serialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{self, Actor};
use crate::authz::Resource;

/// An answer the policy allowed. Only [`Authorized`] and [`Permit`] make one; only a
/// [`Permit`] makes one a mutating endpoint may give.
#[derive(Debug)]
pub struct Checked(Body, StatusCode, Permitted);

/// Whether an answer came through a [`Permit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permitted {
    No,
    Yes,
}

impl Checked {
    /// The JSON answer, if it is one (the console renders what the API answered).
    #[must_use]
    pub fn json(&self) -> Option<&Value> {
        match &self.0 {
            Body::Json(v) => Some(v),
            Body::Metrics(_) | Body::Bytes { .. } => None,
        }
    }
}

#[derive(Debug)]
enum Body {
    Json(Value),
    /// Prometheus/OpenMetrics exposition text.
    Metrics(String),
    /// A file to download.
    Bytes {
        content_type: &'static str,
        filename: String,
        bytes: Vec<u8>,
    },
}

/// An error answer: status, a stable code and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn store(e: &maestro_store::StoreError) -> ApiError {
        // The cause goes to the log; the client learns only that the store failed.
        crate::log::event(
            "error",
            "store failure",
            &[(
                "error",
                json!(format!("{e}: {:?}", std::error::Error::source(e))),
            )],
        );
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store failed; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({"error": {"code": self.code, "message": self.message}}));
        if self.status == StatusCode::UNAUTHORIZED {
            (self.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status, body).into_response()
        }
    }
}

impl IntoResponse for Checked {
    fn into_response(self) -> Response {
        match self.0 {
            Body::Json(v) => (self.1, axum::Json(v)).into_response(),
            Body::Bytes {
                content_type,
                filename,
                bytes,
            } => (
                self.1,
                [
                    (header::CONTENT_TYPE, content_type.to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{filename}\""),
                    ),
                ],
                bytes,
            )
                .into_response(),
            Body::Metrics(text) => (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
                .into_response(),
        }
    }
}

/// An authenticated request whose action the policy allows.
#[derive(Debug)]
pub struct Authorized {
    pub actor: Actor,
    pub action: &'static str,
    pub(crate) state: Arc<AppState>,
}

impl Authorized {
    /// Whether the policy lets the actor do this request's action on `resource`.
    #[must_use]
    pub fn visible(&self, resource: &Resource) -> bool {
        self.state.policy.allows(&self.actor, self.action, resource)
    }

    /// `value` as the answer when the policy allows the action on `resource`; otherwise
    /// 404, as for a resource that does not exist (its existence is not disclosed).
    ///
    /// # Errors
    /// [`ApiError`] 404 when denied, 500 when `value` does not serialize.
    pub fn release<T: Serialize>(
        &self,
        resource: &Resource,
        value: T,
    ) -> Result<Checked, ApiError> {
        if !self.visible(resource) {
            return Err(not_found(resource));
        }
        checked(value)
    }

    /// As [`Authorized::release`], with the answer's own status (a protocol whose errors
    /// have their own shape: OFREP, Connect).
    ///
    /// # Errors
    /// As [`Authorized::release`].
    pub fn release_status<T: Serialize>(
        &self,
        resource: &Resource,
        value: T,
        status: StatusCode,
    ) -> Result<Checked, ApiError> {
        self.release(resource, value)
            .map(|c| Checked(c.0, status, Permitted::No))
    }

    /// As [`Authorized::release`], answering `201 Created`.
    ///
    /// # Errors
    /// As [`Authorized::release`].
    pub fn release_created<T: Serialize>(
        &self,
        resource: &Resource,
        value: T,
    ) -> Result<Checked, ApiError> {
        self.release(resource, value)
            .map(|c| Checked(c.0, StatusCode::CREATED, Permitted::No))
    }

    /// Metrics exposition text as the answer when the policy allows the action on
    /// `resource`; otherwise 404.
    ///
    /// # Errors
    /// [`ApiError`] 404 when denied.
    /// A file as the answer (`Content-Disposition: attachment`) when the policy allows it.
    ///
    /// # Errors
    /// [`ApiError`] 404 when denied.
    pub fn release_file(
        &self,
        resource: &Resource,
        content_type: &'static str,
        filename: String,
        bytes: Vec<u8>,
    ) -> Result<Checked, ApiError> {
        if !self.visible(resource) {
            return Err(not_found(resource));
        }
        Ok(Checked(
            Body::Bytes {
                content_type,
                filename,
                bytes,
            },
            StatusCode::OK,
            Permitted::No,
        ))
    }

    pub fn release_metrics(&self, resource: &Resource, text: String) -> Result<Checked, ApiError> {
        if !self.visible(resource) {
            return Err(not_found(resource));
        }
        Ok(Checked(Body::Metrics(text), StatusCode::OK, Permitted::No))
    }

    /// The items the policy allows, as the answer.
    ///
    /// # Errors
    /// 500 when the items do not serialize.
    pub fn filter<T: Serialize>(
        &self,
        items: Vec<T>,
        resource: impl Fn(&T) -> Resource,
    ) -> Result<Checked, ApiError> {
        checked(self.keep(items, resource))
    }

    /// `value` when the policy allows the action on `resource`, else nothing — for
    /// GraphQL, where a hidden object is `null` as a missing one is.
    #[must_use]
    pub fn allow<T>(&self, resource: &Resource, value: T) -> Option<T> {
        self.visible(resource).then_some(value)
    }

    /// The items the policy allows.
    #[must_use]
    pub fn keep<T>(&self, items: Vec<T>, resource: impl Fn(&T) -> Resource) -> Vec<T> {
        items
            .into_iter()
            .filter(|i| self.visible(&resource(i)))
            .collect()
    }
}

fn checked<T: Serialize>(value: T) -> Result<Checked, ApiError> {
    serde_json::to_value(value)
        .map(|v| Checked(Body::Json(v), StatusCode::OK, Permitted::No))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("encoding failed: {e}"),
            )
        })
}

pub(crate) fn not_found(r: &Resource) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "{} {} not found",
            r.kind,
            r.id.as_deref().unwrap_or_default()
        ),
    )
}

/// What a handler gets.
#[derive(Debug)]
pub struct Ctx {
    pub auth: Authorized,
    pub path: HashMap<String, String>,
    pub query: HashMap<String, String>,
    /// The request body (empty for `GET`), read only after the request was authorized,
    /// at most [`MAX_BODY`] bytes of JSON.
    pub body: axum::body::Bytes,
    /// A sensitive action's reason (`X-Maestro-Reason`), audited when the action is
    /// permitted ([`Ctx::permit`]).
    pub reason: Option<String>,
    endpoint: &'static Endpoint,
    /// The sensitive action's audit entries, begun by [`Ctx::permit`].
    audit: Arc<std::sync::Mutex<Option<Audited>>>,
}

/// Proof that the policy allows this request's action on one resource and, for a
/// sensitive action, that its `started` audit entry is durable. Only [`Ctx::permit`] makes
/// one, after every check of the request and before any write; a mutating endpoint can
/// answer only through it, so a call that never got one (refused, invalid, another
/// tenant's resource) has written nothing — not even to the audit log.
#[derive(Debug)]
pub struct Permit {
    _private: (),
}

impl Permit {
    /// `value` as the answer.
    ///
    /// # Errors
    /// 500 when `value` does not serialize.
    pub fn answer<T: Serialize>(&self, value: T) -> Result<Checked, ApiError> {
        checked(value).map(|c| Checked(c.0, c.1, Permitted::Yes))
    }

    /// `value` as the answer, `201 Created`.
    ///
    /// # Errors
    /// As [`Permit::answer`].
    pub fn created<T: Serialize>(&self, value: T) -> Result<Checked, ApiError> {
        self.status(value, StatusCode::CREATED)
    }

    /// `value` as the answer with its own status.
    ///
    /// # Errors
    /// As [`Permit::answer`].
    pub fn status<T: Serialize>(&self, value: T, status: StatusCode) -> Result<Checked, ApiError> {
        checked(value).map(|c| Checked(c.0, status, Permitted::Yes))
    }
}

/// The largest request body a REST endpoint reads (a remote run's report: up to
/// [`crate::remote::MAX_JOBS`] jobs with their log tails).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

impl Ctx {
    /// The permit to act on `resource`: the policy on the resource itself (404 when it
    /// denies, as for a resource that does not exist), then, for a sensitive action, its
    /// `started` audit entry (503 when it cannot be made durable: no audit, no action).
    /// Call it after every check and before the first write.
    ///
    /// # Errors
    /// 404 when the policy denies; 503 when the audit log cannot be written.
    pub async fn permit(&self, resource: &Resource) -> Result<Permit, ApiError> {
        if !self.auth.visible(resource) {
            crate::log::event(
                "warn",
                "denied",
                &[
                    ("actor", json!(self.auth.actor.id)),
                    ("action", json!(self.auth.action)),
                    ("tenant", json!(resource.tenant)),
                ],
            );
            return Err(not_found(resource));
        }
        if let Some(reason) = &self.reason {
            let begun = self
                .audit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some();
            if !begun {
                let a = Audited::begin(
                    self.endpoint,
                    &self.auth,
                    &self.path,
                    resource,
                    reason.clone(),
                )
                .await?;
                *self
                    .audit
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(a);
            }
        }
        Ok(Permit { _private: () })
    }

    /// The body as JSON of type `T`; an error names the field (`jobs[2].status`) and the
    /// line and column.
    ///
    /// # Errors
    /// 400 when the body is not JSON of that shape.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(&self.body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = if path == "." {
                String::new()
            } else {
                format!("{path}: ")
            };
            bad_request(format!("request body: {at}{inner}"))
        })
    }

    /// A path parameter that must be a number (`what` names it in the error).
    ///
    /// # Errors
    /// 400 when it is not.
    pub fn id(&self, name: &str, what: &str) -> Result<i64, ApiError> {
        let raw = self.path.get(name).map(String::as_str).unwrap_or_default();
        raw.parse()
            .map_err(|_| bad_request(format!("{what} `{raw}` is not a number")))
    }
}

pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<Checked, ApiError>> + Send>>;

/// One endpoint: route, the action the policy decides on, the token scope it needs, the
/// kind of resource, and the handler.
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub action: &'static str,
    pub scope: &'static str,
    pub kind: &'static str,
    /// Sensitive actions need a reason (`X-Maestro-Reason`) and are written to the audit
    /// log: `started` before the handler runs (durably; no audit, no action), then its
    /// outcome.
    pub sensitive: bool,
    handler: fn(Ctx) -> Answer,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.method, self.path, self.action)
    }
}

/// Every REST endpoint. Routes outside this table are the [`PUBLIC`] probes and
/// `/graphql`, whose fields are the rows of [`crate::graphql::FIELDS`].
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "POST",
        path: "/ofrep/v1/evaluate/flags/{key}",
        action: "flags.evaluate",
        scope: "flags:evaluate",
        kind: "flag",
        sensitive: false,
        handler: crate::flags::ofrep_one,
    },
    Endpoint {
        method: "POST",
        path: "/ofrep/v1/evaluate/flags",
        action: "flags.evaluate",
        scope: "flags:evaluate",
        kind: "flag",
        sensitive: false,
        handler: crate::flags::ofrep_all,
    },
    Endpoint {
        method: "POST",
        path: "/flagd.evaluation.v1.Service/{method}",
        action: "flags.evaluate",
        scope: "flags:evaluate",
        kind: "flag",
        sensitive: false,
        handler: crate::flags::flagd,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/flags",
        action: "flags.read",
        scope: "flags:read",
        kind: "flag",
        sensitive: false,
        handler: crate::flags::list,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/flags/{key}/{action}",
        action: "flags.kill",
        scope: "flags:write",
        kind: "flag",
        sensitive: true,
        handler: crate::flags::kill,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/environments/{env}",
        action: "deployments.read",
        scope: "deployments:read",
        kind: "deployment",
        sensitive: false,
        handler: crate::environments::environment_read,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/environments/{env}/deployments",
        action: "deployments.create",
        scope: "deployments:write",
        kind: "deployment",
        sensitive: true,
        handler: crate::environments::deploy,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/environments/{env}/rollback",
        action: "deployments.control",
        scope: "deployments:write",
        kind: "deployment",
        sensitive: true,
        handler: crate::environments::rollback,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/deployments/{id}",
        action: "deployments.read",
        scope: "deployments:read",
        kind: "deployment",
        sensitive: false,
        handler: crate::environments::deployment_read,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/deployments/{id}/{action}",
        action: "deployments.control",
        scope: "deployments:write",
        kind: "deployment",
        sensitive: true,
        handler: crate::environments::deployment_control,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/releases",
        action: "releases.read",
        scope: "releases:read",
        kind: "release",
        sensitive: false,
        handler: crate::train::list,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/releases",
        action: "releases.create",
        scope: "releases:write",
        kind: "release",
        sensitive: true,
        handler: crate::train::cut,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/releases/{service}/{version}",
        action: "releases.read",
        scope: "releases:read",
        kind: "release",
        sensitive: false,
        handler: crate::train::read,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/releases/{service}/{version}/evidence",
        action: "releases.read",
        scope: "releases:read",
        kind: "release",
        sensitive: false,
        handler: crate::train::evidence,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/releases/{service}/{version}/{action}",
        action: "releases.promote",
        scope: "releases:write",
        kind: "release",
        sensitive: true,
        handler: crate::train::control,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/whoami",
        action: "session.read",
        scope: "session:read",
        kind: "session",
        sensitive: false,
        handler: whoami,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/runs",
        action: "runs.list",
        scope: "runs:read",
        kind: "run",
        sensitive: false,
        handler: runs_list,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/runs",
        action: "runs.create",
        scope: "runs:write",
        kind: "run",
        sensitive: false,
        handler: crate::remote::create,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/runs/{id}/reports",
        action: "runs.report",
        scope: "runs:write",
        kind: "run",
        sensitive: false,
        handler: crate::remote::report,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/runs/{id}/jobs/{job}/log",
        action: "runs.read",
        scope: "runs:read",
        kind: "run",
        sensitive: false,
        handler: crate::remote::job_log,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/runs/{id}",
        action: "runs.read",
        scope: "runs:read",
        kind: "run",
        sensitive: false,
        handler: runs_read,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/audit/checkpoint",
        action: "audit.read",
        scope: "audit:read",
        kind: "audit",
        sensitive: false,
        handler: audit_checkpoint,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/audit/entries/{index}/proof",
        action: "audit.read",
        scope: "audit:read",
        kind: "audit",
        sensitive: false,
        handler: audit_proof,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/audit/consistency",
        action: "audit.read",
        scope: "audit:read",
        kind: "audit",
        sensitive: false,
        handler: audit_consistency,
    },
    Endpoint {
        method: "GET",
        path: "/api/v1/tokens",
        action: "tokens.list",
        scope: "tokens:read",
        kind: "token",
        sensitive: false,
        handler: crate::admin::tokens_list,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/tokens",
        action: "tokens.create",
        scope: "tokens:write",
        kind: "token",
        sensitive: true,
        handler: crate::admin::tokens_create,
    },
    Endpoint {
        method: "POST",
        path: "/api/v1/tokens/{id}/revoke",
        action: "tokens.revoke",
        scope: "tokens:write",
        kind: "token",
        sensitive: true,
        handler: crate::admin::tokens_revoke,
    },
    Endpoint {
        method: "GET",
        path: "/metrics",
        action: "metrics.read",
        scope: "metrics:read",
        kind: "metrics",
        sensitive: false,
        handler: metrics_read,
    },
];

/// Unauthenticated routes: liveness and readiness probes, which disclose nothing.
pub const PUBLIC: &[&str] = &["/healthz", "/readyz"];

/// The router: [`PUBLIC`] probes, [`ENDPOINTS`] and `/graphql`, nothing else.
pub fn router(state: Arc<AppState>) -> Router {
    let mut by_path: Vec<(&'static str, Vec<&'static Endpoint>)> = Vec::new();
    for e in ENDPOINTS {
        match by_path.iter_mut().find(|(p, _)| *p == e.path) {
            Some((_, v)) => v.push(e),
            None => by_path.push((e.path, vec![e])),
        }
    }
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            "/graphql",
            get(crate::graphql::get).post(crate::graphql::post).layer(
                axum::extract::DefaultBodyLimit::max(crate::graphql::MAX_BODY),
            ),
        );
    for (path, endpoints) in by_path {
        let mut mr = axum::routing::MethodRouter::new();
        for e in endpoints {
            let filter = match Method::from_bytes(e.method.as_bytes()) {
                Ok(Method::POST) => MethodFilter::POST,
                Ok(Method::PUT) => MethodFilter::PUT,
                Ok(Method::DELETE) => MethodFilter::DELETE,
                Ok(Method::PATCH) => MethodFilter::PATCH,
                _ => MethodFilter::GET,
            };
            mr = mr.merge(on(
                filter,
                move |State(s): State<Arc<AppState>>,
                      params: RawPathParams,
                      Query(query): Query<HashMap<String, String>>,
                      headers: HeaderMap,
                      body: axum::body::Body| async move {
                    let path = params
                        .iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    match dispatch(e, s, path, query, &headers, body).await {
                        Ok(c) => c.into_response(),
                        Err(err) => err.into_response(),
                    }
                },
            ));
        }
        r = r.route(path, mr);
    }
    r.merge(crate::console::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::metrics::layer,
        ))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}

/// Authentication, scope, the policy on the action, then the body (so nobody unknown
/// makes the conductor read megabytes), then the handler.
async fn dispatch(
    e: &'static Endpoint,
    state: Arc<AppState>,
    path: HashMap<String, String>,
    query: HashMap<String, String>,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Checked, ApiError> {
    let actor = authenticate(&state, headers).await?;
    let auth = authorize(state, actor, e.action, e.scope, e.kind)?;
    let reason = if e.sensitive {
        Some(reason_of(headers, e.action)?)
    } else {
        None
    };
    let body = if e.method == "GET" {
        axum::body::Bytes::new()
    } else {
        read_json_body(headers, body).await?
    };
    run_endpoint(e, auth, path, query, body, reason).await
}

/// Runs the endpoint `method path` as `actor` (the console's signed-in user): the same
/// scope, policy, reason and audit as over REST.
///
/// # Errors
/// The endpoint's refusal; 500 when no endpoint has that method and path.
pub(crate) async fn dispatch_as(
    state: Arc<AppState>,
    actor: Actor,
    method: &str,
    template: &str,
    path: HashMap<String, String>,
    body: Value,
    reason: &str,
) -> Result<Checked, ApiError> {
    let Some(e) = ENDPOINTS
        .iter()
        .find(|e| e.method == method && e.path == template)
    else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("no endpoint {method} {template}"),
        ));
    };
    let auth = authorize(state, actor, e.action, e.scope, e.kind)?;
    let reason = if e.sensitive {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "reason_required",
                format!("{} is audited: say why", e.action),
            ));
        }
        if reason.len() > maestro_audit::entry::MAX_REASON_BYTES {
            return Err(bad_request(format!(
                "the reason is longer than {} bytes",
                maestro_audit::entry::MAX_REASON_BYTES
            )));
        }
        Some(reason.to_owned())
    } else {
        None
    };
    let body = axum::body::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    run_endpoint(e, auth, path, HashMap::new(), body, reason).await
}

/// The handler; a sensitive one between its audit entries (the first written by
/// [`Ctx::permit`]). A mutating endpoint's answer must come through a [`Permit`].
async fn run_endpoint(
    e: &'static Endpoint,
    auth: Authorized,
    path: HashMap<String, String>,
    query: HashMap<String, String>,
    body: axum::body::Bytes,
    reason: Option<String>,
) -> Result<Checked, ApiError> {
    let audit = Arc::new(std::sync::Mutex::new(None));
    let mut answer = (e.handler)(Ctx {
        auth,
        path,
        query,
        body,
        reason,
        endpoint: e,
        audit: Arc::clone(&audit),
    })
    .await;
    if e.method != "GET" && matches!(&answer, Ok(c) if c.2 != Permitted::Yes) {
        crate::log::event(
            "error",
            "answered without a permit",
            &[("action", json!(e.action)), ("path", json!(e.path))],
        );
        answer = Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{} answered without a permit", e.action),
        ));
    }
    let begun = audit
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(a) = begun {
        a.end(&answer).await;
    }
    answer
}

/// The reason header of a sensitive request.
const REASON_HEADER: &str = "x-maestro-reason";

fn reason_of(headers: &HeaderMap, action: &str) -> Result<String, ApiError> {
    let reason = headers
        .get(REASON_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if reason.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reason_required",
            format!("{action} is audited: say why in the X-Maestro-Reason header"),
        ));
    }
    if reason.len() > maestro_audit::entry::MAX_REASON_BYTES {
        return Err(bad_request(format!(
            "X-Maestro-Reason is longer than {} bytes",
            maestro_audit::entry::MAX_REASON_BYTES
        )));
    }
    Ok(reason.to_owned())
}

/// The audit entries of one sensitive request.
#[derive(Debug)]
struct Audited {
    state: Arc<AppState>,
    started: u64,
    entry: maestro_audit::NewEntry,
}

impl Audited {
    /// Writes the `started` entry; refuses (503) when it cannot be made durable.
    async fn begin(
        e: &'static Endpoint,
        auth: &Authorized,
        path: &HashMap<String, String>,
        resource: &Resource,
        reason: String,
    ) -> Result<Audited, ApiError> {
        let unavailable = |why: &str| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                format!("{} is audited and {why}; nothing was done", e.action),
            )
        };
        let Some(key) = auth.state.audit_key.clone() else {
            return Err(unavailable(
                "this conductor has no audit log key (MAESTRO_AUDIT_KEY)",
            ));
        };
        let target = match (
            path.get("id").or_else(|| path.get("key")),
            path.get("service").zip(path.get("version")),
        ) {
            (Some(id), _) => format!("{}:{id}", e.kind),
            (None, Some((service, version))) => format!("{}:{service}/{version}", e.kind),
            // A resource the body named (a release being cut): the same target the
            // release's own entries have, so its evidence carries the cut request too.
            (None, None) => match (&resource.service, &resource.id) {
                (Some(service), Some(id)) if e.kind == "release" => {
                    format!("{}:{service}/{id}", e.kind)
                }
                _ => e.kind.to_owned(),
            },
        };
        let entry = maestro_audit::NewEntry {
            actor: maestro_audit::Actor {
                id: auth.actor.id.clone(),
                via: auth.actor.via.clone(),
            },
            action: e.action.to_owned(),
            target,
            params: json!({"tenant": auth.actor.tenant, "method": e.method, "path": e.path, "args": path}),
            reason: Some(reason),
            result: maestro_audit::Outcome::Started,
            links: maestro_audit::Links::default(),
            tenant: Some(auth.actor.tenant.clone()),
        };
        let first = entry.clone();
        let k = Arc::clone(&key);
        let receipt = auth
            .state
            .audit
            .with(move |log| log.append(&k, &first))
            .await
            .map_err(|err| {
                crate::log::event(
                    "error",
                    "audit append failed",
                    &[
                        ("action", json!(e.action)),
                        ("error", json!(err.to_string())),
                    ],
                );
                unavailable("the audit log could not be written")
            })?;
        Ok(Audited {
            state: Arc::clone(&auth.state),
            started: receipt.index,
            entry,
        })
    }

    /// Writes the outcome entry, linked to the `started` one. A failure here is logged:
    /// the action happened, and its `started` entry says so.
    async fn end(self, answer: &Result<Checked, ApiError>) {
        let mut entry = self.entry;
        let (result, status) = match answer {
            Ok(c) => (maestro_audit::Outcome::Success, c.1.as_u16()),
            Err(e) if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::NOT_FOUND => {
                (maestro_audit::Outcome::Denied, e.status.as_u16())
            }
            Err(e) => (maestro_audit::Outcome::Failure, e.status.as_u16()),
        };
        entry.result = result;
        entry.params["status"] = json!(status);
        entry.links.parent = Some(self.started);
        let Some(key) = self.state.audit_key.clone() else {
            return;
        };
        if let Err(err) = self
            .state
            .audit
            .with(move |log| log.append(&key, &entry))
            .await
        {
            crate::log::event(
                "error",
                "audit outcome not written",
                &[
                    ("started", json!(self.started)),
                    ("error", json!(err.to_string())),
                ],
            );
        }
    }
}

/// A JSON request body of at most [`MAX_BODY`] bytes.
async fn read_json_body(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is larger than {} MiB; send fewer jobs per report",
                MAX_BODY >> 20
            ),
        )
    })
}

/// The one authorization wrapper, for endpoints and GraphQL fields alike: the token's
/// scope, then the policy on the action over the actor's own tenant's collection of
/// `kind`. What it returns answers only through the policy on each resource.
///
/// # Errors
/// 403 `insufficient_scope` or `forbidden`.
pub fn authorize(
    state: Arc<AppState>,
    actor: Actor,
    action: &'static str,
    scope: &'static str,
    kind: &'static str,
) -> Result<Authorized, ApiError> {
    if !actor.has_scope(scope) {
        crate::log::event(
            "warn",
            "denied",
            &[
                ("actor", json!(actor.id)),
                ("action", json!(action)),
                ("missing_scope", json!(scope)),
            ],
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this token lacks the scope {scope} that {action} needs"),
        ));
    }
    let collection = Resource {
        kind,
        tenant: actor.tenant.clone(),
        ..Resource::default()
    };
    if !state.policy.allows(&actor, action, &collection) {
        crate::log::event(
            "warn",
            "denied",
            &[("actor", json!(actor.id)), ("action", json!(action))],
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} may not {} (policy {})",
                actor.id,
                action,
                state.policy.source()
            ),
        ));
    }
    Ok(Authorized {
        actor,
        action,
        state,
    })
}

/// The actor a request's `Authorization: Bearer` token stands for.
///
/// # Errors
/// 401 when the header is missing or malformed or the token unknown, expired or revoked;
/// 503 when the store fails.
pub async fn authenticate(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Actor, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| unauthorized(&auth::AuthError::Malformed))
        })
        .transpose()?;
    let credential = auth::bearer(value).map_err(|e| unauthorized(&e))?;
    actor_for(state, credential).await
}

fn unauthorized(e: &auth::AuthError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
}

/// The actor a credential's secret stands for (an API token or an OIDC JWT).
///
/// # Errors
/// As [`authenticate`].
pub async fn actor_for_secret(state: &Arc<AppState>, secret: &str) -> Result<Actor, ApiError> {
    let credential = auth::credential(secret).map_err(|e| unauthorized(&e))?;
    actor_for(state, credential).await
}

async fn actor_for(
    state: &Arc<AppState>,
    credential: auth::Credential<'_>,
) -> Result<Actor, ApiError> {
    match credential {
        auth::Credential::Token(secret) => {
            let hash = auth::hash_secret(secret);
            let row = state
                .pool
                .with(move |s| s.token_by_hash(&hash))
                .await
                .map_err(|e| ApiError::store(&e))?;
            auth::actor_of(row, crate::now_ms()).map_err(|e| unauthorized(&e))
        }
        auth::Credential::Jwt(_) if state.oidc.is_empty() => Err(unauthorized(
            &auth::AuthError::Jwt("this conductor trusts no OIDC issuer".to_owned()),
        )),
        auth::Credential::Jwt(token) => state.oidc.verify(token).await.map_err(|e| {
            crate::log::event(
                "warn",
                "oidc token refused",
                &[("reason", json!(e.to_string()))],
            );
            unauthorized(&e)
        }),
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    match s.pool.with(|st| st.latest_run()).await {
        Ok(_) => axum::Json(json!({"status": "ready"})).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "store unavailable"})),
        )
            .into_response(),
    }
}

/// A run as the policy sees it: its pipeline is the service, and its own tenant.
pub(crate) fn run_resource(r: &maestro_store::RunRow) -> Resource {
    Resource {
        kind: "run",
        id: Some(r.id.to_string()),
        service: Some(r.pipeline.clone()),
        environment: None,
        tenant: r.tenant.clone(),
    }
}

fn whoami(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let me = Resource {
            kind: "session",
            id: Some(ctx.auth.actor.id.clone()),
            tenant: ctx.auth.actor.tenant.clone(),
            ..Resource::default()
        };
        ctx.auth.release(&me, &ctx.auth.actor)
    })
}

/// The audit log as a resource: one entry is its tenant's; the log's signed head and
/// consistency proofs (sizes and hashes, no content) are readable by every tenant's
/// auditors, as the actor's own tenant's view of the one log.
fn audit_resource(id: Option<String>, tenant: &str) -> Resource {
    Resource {
        kind: "audit",
        id,
        tenant: tenant.to_owned(),
        ..Resource::default()
    }
}

/// An audit log failure: a missing entry or checkpoint is 404, anything else 503 (the
/// cause goes to the log).
fn audit_error(e: &maestro_audit::AuditError) -> ApiError {
    match e {
        maestro_audit::AuditError::NotFound(m) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", m.clone())
        }
        other => {
            crate::log::event(
                "error",
                "audit log failure",
                &[("error", json!(other.to_string()))],
            );
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the audit log failed; try again",
            )
        }
    }
}

/// A query parameter that must be a non-negative integer, if given.
fn number(ctx: &Ctx, name: &str) -> Result<Option<u64>, ApiError> {
    ctx.query
        .get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| bad_request(format!("{name} `{v}` is not a non-negative integer")))
        })
        .transpose()
}

fn audit_checkpoint(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let latest = ctx
            .auth
            .state
            .audit
            .with(|log| log.checkpoint())
            .await
            .map_err(|e| audit_error(&e))?
            .ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "the audit log is empty")
            })?;
        let (size, checkpoint) = latest;
        ctx.auth.release(
            &audit_resource(None, &ctx.auth.actor.tenant),
            json!({"size": size, "checkpoint": checkpoint}),
        )
    })
}

fn audit_proof(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let raw = ctx
            .path
            .get("index")
            .map(String::as_str)
            .unwrap_or_default();
        let index: u64 = raw
            .parse()
            .map_err(|_| bad_request(format!("entry index `{raw}` is not a number")))?;
        let size = number(&ctx, "size")?;
        let (entry, proof) = ctx
            .auth
            .state
            .audit
            .with(move |log| Ok((log.entry(index)?.0, log.prove(index, size)?)))
            .await
            .map_err(|e| audit_error(&e))?;
        ctx.auth.release(
            &audit_resource(Some(index.to_string()), entry.tenant()),
            proof,
        )
    })
}

fn audit_consistency(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let from = number(&ctx, "from")?
            .ok_or_else(|| bad_request("from is required: ?from=SIZE[&to=SIZE]".to_owned()))?;
        let to = number(&ctx, "to")?;
        let proof = ctx
            .auth
            .state
            .audit
            .with(move |log| log.consistency(from, to))
            .await
            .map_err(|e| audit_error(&e))?;
        ctx.auth
            .release(&audit_resource(None, &ctx.auth.actor.tenant), proof)
    })
}

fn metrics_read(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let scope = Resource {
            kind: "metrics",
            tenant: ctx.auth.actor.tenant.clone(),
            ..Resource::default()
        };
        let text = crate::metrics::render(&ctx.auth.state)
            .await
            .map_err(|e| ApiError::store(&e))?;
        ctx.auth.release_metrics(&scope, text)
    })
}

pub(crate) fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn runs_list(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let limit = match ctx.query.get("limit") {
            None => 50,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=500).contains(n))
                .ok_or_else(|| {
                    bad_request(format!("limit `{v}` must be a number from 1 to 500"))
                })?,
        };
        let tenant = ctx.auth.actor.tenant.clone();
        let runs = ctx
            .auth
            .state
            .pool
            .with(move |s| s.list_runs(Some(&tenant), limit))
            .await
            .map_err(|e| ApiError::store(&e))?;
        ctx.auth.filter(runs, run_resource)
    })
}

fn runs_read(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let raw = ctx.path.get("id").map(String::as_str).unwrap_or_default();
        let id: i64 = raw
            .parse()
            .map_err(|_| bad_request(format!("run id `{raw}` is not a number")))?;
        let detail = ctx.auth.state.pool.with(move |s| s.run_detail(id)).await;
        match detail {
            Ok(d) => {
                let r = run_resource(&d.run);
                ctx.auth.release(&r, d)
            }
            Err(maestro_store::StoreError::NoSuchRun(_)) => Err(not_found(&Resource {
                kind: "run",
                id: Some(id.to_string()),
                ..Resource::default()
            })),
            Err(e) => Err(ApiError::store(&e)),
        }
    })
}
