//! The conductor (`maestro serve`): an HTTP API over the store in which every endpoint is
//! authenticated (API tokens, hashed at rest) and authorized by one Rego policy over
//! actor, action and resource (ABAC, deny by default).
//!
//! The router is built only from [`api::ENDPOINTS`]: an endpoint cannot be added without
//! the authentication and authorization wrapper, and a handler can only return data
//! through [`api::Authorized::release`], which asks the policy about the resource.

pub mod admin;
pub mod api;
pub mod auth;
pub mod authz;
pub mod config;
pub mod console;
pub mod coverage;
pub mod environments;
pub mod flags;
pub mod graphql;
pub mod listen;
pub mod log;
pub mod matrix;
mod memo;
pub mod metrics;
pub mod oidc;
pub mod persisted;
pub mod pool;
pub mod release;
pub mod remote;
pub mod tracing;
pub mod train;

use std::future::Future;
use std::sync::Arc;

pub use config::{Config, Mode, Settings};

/// Server failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    #[error("the store could not be opened")]
    Store(#[from] maestro_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
}

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The conductor itself as an audit actor, acting through `via` (`train`, `flags`, …).
pub(crate) fn conductor_actor(via: &str) -> maestro_audit::Actor {
    maestro_audit::Actor {
        id: "conductor".to_owned(),
        via: via.to_owned(),
    }
}

/// Appends an entry by the conductor itself to the audit log, when it has a key (its reason
/// cut to what the log takes); a failure is logged, never fatal to what happened.
pub(crate) async fn audit_conductor(state: &Arc<AppState>, entry: maestro_audit::NewEntry) {
    let Some(key) = state.audit_key.clone() else {
        return;
    };
    let mut entry = entry;
    if let Some(r) = &mut entry.reason
        && r.len() > maestro_audit::entry::MAX_REASON_BYTES / 4
    {
        *r = r
            .chars()
            .take(maestro_audit::entry::MAX_REASON_BYTES / 4)
            .collect();
    }
    if let Err(e) = state.audit.with(move |log| log.append(&key, &entry)).await {
        log::event(
            "error",
            "audit append failed",
            &[("error", serde_json::json!(e.to_string()))],
        );
    }
}

/// What every request handler shares.
pub struct AppState {
    pub pool: Arc<pool::StorePool>,
    pub policy: authz::Policy,
    pub mode: Mode,
    pub graphql: graphql::MaestroSchema,
    /// The audit log in the store's database.
    pub audit: Arc<pool::AuditLog>,
    /// The directory whose `runs/<id>/logs/` hold the logs of the runs in the store: the
    /// SQLite store's own directory; none for PostgreSQL.
    pub logs: Option<std::path::PathBuf>,
    /// The OIDC issuers whose JWTs are credentials (none by default).
    pub oidc: oidc::Oidc,
    /// Request metrics for `/metrics`.
    pub metrics: metrics::Metrics,
    /// When quiet remote runs are interrupted.
    pub reaper: remote::Reaper,
    /// The key sensitive actions' audit entries are signed with; without one they are
    /// refused.
    pub audit_key: Option<Arc<maestro_audit::LogKey>>,
    /// Where request spans go, once [`serve`] started the exporter (when configured).
    pub spans: std::sync::OnceLock<tracing::Spans>,
    /// The feature-flag registry it evaluates (`[flags]`), with its kill switches.
    pub flags: Option<Arc<flags::FlagsConfig>>,
    /// The environments this conductor runs, opened by [`serve`].
    pub environments: std::sync::OnceLock<environments::Environments>,
    /// The release trains (`[[trains]]`) and the releases this conductor drives.
    pub trains: train::Trains,
    /// This conductor among several on one store (set by [`serve`]).
    pub holder: std::sync::OnceLock<String>,
    pub(crate) environment_configs: Vec<environments::EnvConfig>,
    /// The roles a token may hold.
    pub(crate) roles: Vec<String>,
    /// How many connections it serves and how long it waits for a request.
    pub(crate) limits: listen::Limits,
    /// The console's cookie is `Secure` (a TLS proxy serves it).
    pub(crate) tls_proxy: bool,
    /// Where artifacts may be read from.
    pub(crate) artifact_roots: Vec<std::path::PathBuf>,
    /// Where released artifacts are kept, by digest.
    pub(crate) artifact_store: Option<std::path::PathBuf>,
    exporter: Option<maestro_telemetry::otlp::Exporter>,
    span_delay: std::time::Duration,
}

impl AppState {
    /// Opens the store and loads the policy a configuration names.
    ///
    /// # Errors
    /// When the store cannot be opened or the policy does not load.
    pub fn open(config: &Config) -> Result<Arc<AppState>, ServerError> {
        let policy = match &config.policy {
            Some(dir) => authz::Policy::load(dir)?,
            None => authz::Policy::builtin()?,
        };
        Self::with_policy(config, policy)
    }

    /// As [`AppState::open`], with this policy instead of the configured one.
    ///
    /// # Errors
    /// When the store cannot be opened or an OIDC key file does not load.
    pub fn with_policy(
        config: &Config,
        policy: authz::Policy,
    ) -> Result<Arc<AppState>, ServerError> {
        let pool = pool::StorePool::open(&config.database, config.max_connections)?;
        let logs = (!maestro_store::is_postgres(&config.database))
            .then(|| {
                std::path::Path::new(&config.database).parent().map(|p| {
                    if p.as_os_str().is_empty() {
                        std::path::PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
            })
            .flatten();
        Ok(Arc::new(AppState {
            pool,
            policy,
            mode: config.mode,
            graphql: graphql::schema(config.mode),
            audit: pool::AuditLog::new(&config.database),
            logs,
            oidc: oidc::Oidc::load(&config.oidc)?,
            metrics: metrics::Metrics::default(),
            reaper: config.reaper,
            audit_key: config.audit_key.clone(),
            spans: std::sync::OnceLock::new(),
            environments: std::sync::OnceLock::new(),
            environment_configs: config.environments.clone(),
            roles: config.roles.clone(),
            limits: config.limits,
            tls_proxy: config.tls_proxy,
            artifact_roots: config.artifact_roots.clone(),
            artifact_store: config.artifact_store.clone(),
            trains: train::Trains::new(config.trains.clone()),
            holder: std::sync::OnceLock::new(),
            flags: config.flags.clone(),
            exporter: config.exporter.clone(),
            span_delay: config.span_delay,
        }))
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("pool", &self.pool)
            .field("policy", &self.policy)
            .field("mode", &self.mode)
            .field("logs", &self.logs)
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

/// This conductor among several on one store: host, listening address, process and a
/// random part (two processes never share one, even across restarts with a reused pid).
fn holder_id(addr: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "conductor".to_owned());
    let mut nonce = [0u8; 6];
    let _ = getrandom::fill(&mut nonce);
    format!(
        "{host}/{addr}/{}/{}",
        std::process::id(),
        hex::encode(nonce)
    )
}

/// Binds the configured address.
///
/// # Errors
/// [`ServerError::Listen`] when the address is taken or not ours.
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen.to_string(),
            source,
        })
}

/// Serves until `shutdown` completes, then stops accepting and lets requests in flight
/// finish.
///
/// # Errors
/// [`ServerError::Serve`] when the listener fails.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log::event(
        "info",
        "conductor listening",
        &[
            ("addr", serde_json::json!(addr)),
            ("policy", serde_json::json!(state.policy.source())),
            (
                "mode",
                serde_json::json!(format!("{:?}", state.mode).to_lowercase()),
            ),
            (
                "sensitive_actions",
                serde_json::json!(if state.audit_key.is_some() {
                    "audited"
                } else {
                    "refused: no audit log key (MAESTRO_AUDIT_KEY)"
                }),
            ),
        ],
    );
    if let Some(e) = state.exporter.clone() {
        let _ = state.spans.set(tracing::Spans::start(e, state.span_delay));
    }
    let holder = holder_id(&addr);
    let _ = state.holder.set(holder.clone());
    // Each conductor is a candidate for the reaper's lease; one holds it at a time.
    let reaper = remote::spawn_reaper(Arc::clone(&state), holder.clone(), state.reaper);
    if !state.environment_configs.is_empty() {
        let envs =
            environments::Environments::open(&state, &state.environment_configs, &holder).await?;
        let _ = state.environments.set(envs);
    }
    let trains =
        (!state.trains.trains.is_empty()).then(|| tokio::spawn(train::resume(Arc::clone(&state))));
    let kills = state
        .flags
        .clone()
        .map(|cfg| tokio::spawn(flags::refresh(Arc::clone(&state), cfg)));
    let served = listen::serve(
        listener,
        api::router(Arc::clone(&state)),
        state.limits,
        shutdown,
    )
    .await;
    reaper.abort();
    if let Some(t) = trains {
        t.abort();
        train::shutdown(&state).await;
    }
    if let Some(k) = kills {
        k.abort();
    }
    if let Some(envs) = state.environments.get() {
        envs.shutdown(&state).await;
    }
    served.map_err(ServerError::Serve)?;
    log::event("info", "conductor stopped", &[]);
    Ok(())
}

/// A conductor serving on a thread and runtime of its own (tests, benchmarks, embedding);
/// stopped gracefully when dropped.
#[derive(Debug)]
pub struct Background {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl Background {
    /// Binds `config.listen` and serves `state` on `workers` threads.
    ///
    /// # Errors
    /// When the runtime cannot be built or the address not bound.
    pub fn start(
        state: Arc<AppState>,
        config: &Config,
        workers: usize,
    ) -> Result<Background, ServerError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        let config = config.clone();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers.max(1))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(ServerError::Serve(e)));
                    return Ok(());
                }
            };
            rt.block_on(async move {
                let listener = match bind(&config).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return Ok(());
                    }
                };
                let addr = listener.local_addr().map_err(ServerError::Serve);
                let _ = tx.send(addr);
                serve(state, listener, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        let addr = rx
            .recv()
            .map_err(|_| ServerError::Serve(std::io::Error::other("the server thread ended")))??;
        Ok(Background {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://ADDR`.
    #[must_use]
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it and waits until requests in flight finished.
    ///
    /// # Errors
    /// What the server stopped with.
    pub fn stop(mut self) -> Result<(), ServerError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), ServerError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServerError::Serve(std::io::Error::other(
                "the server thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
