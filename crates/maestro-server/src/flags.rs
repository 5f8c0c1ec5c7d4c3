//! The conductor's feature flags: the registry of `[flags] file` (flagd format, checked at
//! start), evaluated over OFREP (`/ofrep/v1/evaluate/flags[/{key}]`) and flagd's HTTP
//! evaluation API (`/flagd.evaluation.v1.Service/Resolve*`, Connect's JSON) so OpenFeature
//! SDKs point at the conductor as they would at flagd; kill switches set and restored with
//! a reason and audited (`POST /api/v1/flags/{key}/{kill|restore}`), kept in the store and
//! re-read every [`REFRESH`] so every conductor on one database serves the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use maestro_flags::{Registry, Resolution};
use maestro_store::FlagKillRow;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Answer, ApiError, Ctx, bad_request};
use crate::authz::Resource;
use crate::{ServerError, now_ms};

/// How often a conductor re-reads the kill switches from the store.
pub const REFRESH: Duration = Duration::from_secs(2);

/// `[flags]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsSettings {
    /// The registry (relative to the configuration file).
    pub file: PathBuf,
    /// The tenant the flags belong to (who may read, evaluate and kill them).
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

fn default_tenant() -> String {
    "default".to_owned()
}

/// A loaded registry and its kill switches.
pub struct FlagsConfig {
    registry: RwLock<Arc<Registry>>,
    pub file: PathBuf,
    pub tenant: String,
    kills: RwLock<HashMap<String, FlagKillRow>>,
    /// The file's modification time and length when it was last read.
    stamp: std::sync::Mutex<Option<(std::time::SystemTime, u64)>>,
}

fn stamp_of(file: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl std::fmt::Debug for FlagsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagsConfig")
            .field("file", &self.file)
            .field("flags", &self.registry().flags.len())
            .finish_non_exhaustive()
    }
}

impl FlagsSettings {
    /// Loads and checks the registry.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming `flags.file` with every problem of the registry.
    pub fn validate(self, base: &Path) -> Result<FlagsConfig, ServerError> {
        let file = if self.file.is_relative() {
            base.join(&self.file)
        } else {
            self.file
        };
        let registry = Registry::load(&file).map_err(|e| ServerError::Config {
            source_name: "flags.file".to_owned(),
            message: e.to_string(),
        })?;
        let stamp = stamp_of(&file);
        Ok(FlagsConfig {
            registry: RwLock::new(Arc::new(registry)),
            file,
            tenant: self.tenant,
            kills: RwLock::new(HashMap::new()),
            stamp: std::sync::Mutex::new(stamp),
        })
    }
}

impl FlagsConfig {
    /// The registry now (it is re-read when its file changes).
    #[must_use]
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(
            &self
                .registry
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Re-reads the registry when its file changed since the last read: `None` when it did
    /// not; the new registry, or every problem of the file (the old registry stays).
    fn reload(&self) -> Option<Result<Arc<Registry>, String>> {
        let now = stamp_of(&self.file);
        {
            let mut last = self
                .stamp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last == now {
                return None;
            }
            *last = now;
        }
        Some(match Registry::load(&self.file) {
            Ok(r) => {
                let r = Arc::new(r);
                *self
                    .registry
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&r);
                Ok(r)
            }
            Err(e) => Err(e.to_string()),
        })
    }

    fn killed(&self, key: &str) -> bool {
        self.kills
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .is_some_and(|k| k.killed)
    }

    fn kill_row(&self, key: &str) -> Option<FlagKillRow> {
        self.kills
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Replaces the kill switches with the store's.
    pub fn set_kills(&self, rows: Vec<FlagKillRow>) {
        let map = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
        *self
            .kills
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }

    fn resource(&self, key: Option<&str>) -> Resource {
        Resource {
            kind: "flag",
            id: key.map(str::to_owned),
            tenant: self.tenant.clone(),
            ..Resource::default()
        }
    }

    fn evaluate(&self, key: &str, context: &Value) -> Resolution {
        let now_s = now_ms() / 1000;
        self.registry()
            .evaluate(key, context, self.killed(key), now_s)
    }
}

/// Keeps every conductor's kill switches in step with the store, and its registry with its
/// file: a changed file is re-read and, when valid, served at once and audited
/// (`flags.registry_loaded`, with the file's digest); an invalid one is refused and logged
/// with every problem, and the registry in service stays.
pub(crate) async fn refresh(state: Arc<crate::AppState>, cfg: Arc<FlagsConfig>) {
    loop {
        if let Ok(rows) = state.pool.with(|s| s.flag_kills()).await {
            cfg.set_kills(rows);
        }
        let c = Arc::clone(&cfg);
        if let Ok(Some(outcome)) = tokio::task::spawn_blocking(move || c.reload()).await {
            loaded(&state, &cfg, outcome).await;
        }
        tokio::time::sleep(REFRESH).await;
    }
}

async fn loaded(
    state: &Arc<crate::AppState>,
    cfg: &FlagsConfig,
    outcome: Result<Arc<Registry>, String>,
) {
    let file = cfg.file.display().to_string();
    match outcome {
        Ok(r) => {
            let digest = std::fs::read(&cfg.file)
                .map(|b| {
                    use sha2::Digest as _;
                    format!("sha256:{}", hex::encode(sha2::Sha256::digest(&b)))
                })
                .unwrap_or_default();
            crate::log::event(
                "info",
                "flag registry reloaded",
                &[("file", json!(file)), ("flags", json!(r.flags.len()))],
            );
            let entry = maestro_audit::NewEntry {
                actor: crate::conductor_actor("flags"),
                action: "flags.registry_loaded".to_owned(),
                target: format!("flags:{file}"),
                params: json!({"file": file, "digest": digest, "flags": r.flags.len()}),
                reason: Some("the registry file changed".to_owned()),
                result: maestro_audit::Outcome::Success,
                links: maestro_audit::Links::default(),
                tenant: Some(cfg.tenant.clone()),
            };
            crate::audit_conductor(state, entry).await;
        }
        Err(problems) => crate::log::event(
            "error",
            "flag registry not reloaded: the file has problems; the previous registry stays",
            &[("file", json!(file)), ("problems", json!(problems))],
        ),
    }
}

fn configured(ctx: &Ctx) -> Result<Arc<FlagsConfig>, ApiError> {
    ctx.auth.state.flags.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_flags",
            "this conductor has no flag registry: set [flags] file in its configuration",
        )
    })
}

#[derive(Debug, Default, Deserialize)]
struct EvalBody {
    #[serde(default)]
    context: Value,
}

fn eval_body(ctx: &Ctx) -> Result<EvalBody, ApiError> {
    if ctx.body.is_empty() {
        Ok(EvalBody::default())
    } else {
        ctx.json()
    }
}

/// An OFREP success or error object for one resolution.
fn ofrep(r: &Resolution) -> (StatusCode, Value) {
    match r.error_code {
        None => (
            StatusCode::OK,
            json!({"key": r.key, "value": r.value, "reason": r.reason, "variant": r.variant, "metadata": r.metadata}),
        ),
        Some(code) => (
            if code == "FLAG_NOT_FOUND" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            },
            json!({"key": r.key, "errorCode": code, "errorDetails": r.error_message}),
        ),
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`: `{"context": {…}}` → OFREP's evaluation result.
pub(crate) fn ofrep_one(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let cfg = configured(&ctx)?;
        let key = ctx.path.get("key").cloned().unwrap_or_default();
        let body = eval_body(&ctx)?;
        let r = cfg.evaluate(&key, &body.context);
        let (status, v) = ofrep(&r);
        ctx.permit(&cfg.resource(Some(&key)))
            .await?
            .status(v, status)
    })
}

/// `POST /ofrep/v1/evaluate/flags`: every enabled flag for the context (OFREP's bulk
/// evaluation).
pub(crate) fn ofrep_all(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let cfg = configured(&ctx)?;
        let body = eval_body(&ctx)?;
        let registry = cfg.registry();
        let flags: Vec<Value> = registry
            .flags
            .values()
            .filter(|f| f.enabled)
            .map(|f| ofrep(&cfg.evaluate(&f.key, &body.context)).1)
            .collect();
        ctx.permit(&cfg.resource(None))
            .await?
            .answer(json!({"flags": flags}))
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResolveBody {
    #[serde(default)]
    flag_key: String,
    #[serde(default)]
    context: Value,
}

/// A Connect error in its JSON form.
fn connect_error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({"code": code, "message": message}))
}

/// `POST /flagd.evaluation.v1.Service/{method}`: flagd's evaluation API over Connect's
/// JSON protocol — `ResolveBoolean`, `ResolveString`, `ResolveInt`, `ResolveFloat`,
/// `ResolveObject` (`{"flagKey", "context"}` → `{"value", "reason", "variant",
/// "metadata"}`, int64 as a string as protobuf's JSON mapping says) and `ResolveAll`.
pub(crate) fn flagd(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let cfg = configured(&ctx)?;
        let method = ctx.path.get("method").cloned().unwrap_or_default();
        let body: ResolveBody = if ctx.body.is_empty() {
            ResolveBody {
                flag_key: String::new(),
                context: Value::Null,
            }
        } else {
            ctx.json()?
        };
        if method == "ResolveAll" {
            let mut flags = serde_json::Map::new();
            for f in cfg.registry().flags.values().filter(|f| f.enabled) {
                let r = cfg.evaluate(&f.key, &body.context);
                let Some(v) = r.value.filter(|_| r.error_code.is_none()) else {
                    continue;
                };
                let field = match &v {
                    Value::Bool(_) => "boolValue",
                    Value::String(_) => "stringValue",
                    Value::Number(_) => "doubleValue",
                    _ => "objectValue",
                };
                flags.insert(
                    f.key.clone(),
                    json!({"reason": r.reason, "variant": r.variant, field: v, "metadata": r.metadata}),
                );
            }
            return ctx
                .permit(&cfg.resource(None))
                .await?
                .answer(json!({"flags": flags}));
        }
        let want: fn(&Value) -> bool = match method.as_str() {
            "ResolveBoolean" => Value::is_boolean,
            "ResolveString" => Value::is_string,
            "ResolveInt" => |v| v.is_i64() || v.is_u64(),
            "ResolveFloat" => Value::is_number,
            "ResolveObject" => Value::is_object,
            other => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unimplemented",
                    format!("flagd.evaluation.v1.Service/{other} is not a method here"),
                ));
            }
        };
        let r = cfg.evaluate(&body.flag_key, &body.context);
        let (status, v) = match (r.error_code, &r.value) {
            (Some("FLAG_NOT_FOUND"), _) => {
                connect_error(StatusCode::NOT_FOUND, "not_found", "FLAG_NOT_FOUND")
            }
            (Some(code @ ("PARSE_ERROR" | "GENERAL")), _) => {
                connect_error(StatusCode::INTERNAL_SERVER_ERROR, "data_loss", code)
            }
            (Some(code), _) => connect_error(StatusCode::BAD_REQUEST, "invalid_argument", code),
            (None, Some(v)) if !want(v) => {
                connect_error(StatusCode::BAD_REQUEST, "invalid_argument", "TYPE_MISMATCH")
            }
            (None, v) => {
                let value = match (method.as_str(), v) {
                    ("ResolveInt", Some(n)) => Value::String(n.to_string()),
                    (_, v) => v.clone().unwrap_or(Value::Null),
                };
                (
                    StatusCode::OK,
                    json!({"value": value, "reason": r.reason, "variant": r.variant, "metadata": r.metadata}),
                )
            }
        };
        ctx.permit(&cfg.resource(Some(&body.flag_key)))
            .await?
            .status(v, status)
    })
}

/// `GET /api/v1/flags`: every flag with its owner, safe default, kill switch and expiry.
pub(crate) fn list(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let cfg = configured(&ctx)?;
        let today = jiff::Zoned::now().date();
        let registry = cfg.registry();
        let flags: Vec<Value> = registry
            .flags
            .values()
            .map(|f| {
                let kill = cfg.kill_row(&f.key);
                json!({
                    "key": f.key, "enabled": f.enabled, "owner": f.owner, "risk": f.risk,
                    "description": f.description,
                    "default_variant": f.default_variant, "kill_variant": f.kill_variant,
                    "expires": f.expires.map(|d| d.to_string()),
                    "expiry": f.expiry(today, 14),
                    "killed": kill.as_ref().is_some_and(|k| k.killed),
                    "kill_switch": kill.map(|k| json!({"killed": k.killed, "actor": k.actor, "reason": k.reason, "at_ms": k.updated_at_ms})),
                })
            })
            .collect();
        let r = cfg.resource(None);
        ctx.auth
            .release(&r, json!({"file": cfg.file, "flags": flags}))
    })
}

/// `POST /api/v1/flags/{key}/{kill|restore}` (sensitive): the kill switch, with the
/// reason, in the store and the audit log; every conductor serves it within [`REFRESH`].
pub(crate) fn kill(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let cfg = configured(&ctx)?;
        let key = ctx.path.get("key").cloned().unwrap_or_default();
        let killed = match ctx.path.get("action").map(String::as_str) {
            Some("kill") => true,
            Some("restore") => false,
            other => {
                return Err(bad_request(format!(
                    "`{}` is not kill or restore",
                    other.unwrap_or_default()
                )));
            }
        };
        let r = cfg.resource(Some(&key));
        let registry = cfg.registry();
        if !registry.flags.contains_key(&key) {
            return Err(crate::api::not_found(&r));
        }
        // Every check before the first write: a flag of another tenant is refused here,
        // and nothing is stored or audited.
        let permit = ctx.permit(&r).await?;
        let row = FlagKillRow {
            key: key.clone(),
            killed,
            actor: ctx.auth.actor.id.clone(),
            reason: ctx.reason.clone().unwrap_or_default(),
            updated_at_ms: now_ms(),
        };
        let stored = row.clone();
        ctx.auth
            .state
            .pool
            .with(move |s| s.flag_kill_set(&stored))
            .await
            .map_err(|e| ApiError::store(&e))?;
        let mut kills = cfg
            .kills
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        kills.insert(key.clone(), row.clone());
        drop(kills);
        let flag = &registry.flags[&key];
        permit.answer(json!({
            "key": key, "killed": killed, "actor": row.actor, "reason": row.reason,
            "serves": if killed { &flag.kill_variant } else { &flag.default_variant },
        }))
    })
}
