//! The conductor (`maestro serve`): an HTTP API over the store in which every endpoint is
//! authenticated (API tokens, hashed at rest) and authorized by one Rego policy over
//! actor, action and resource (ABAC, deny by default).
//!
//! The router is built only from [`api::ENDPOINTS`]: an endpoint cannot be added without
//! the authentication and authorization wrapper, and a handler can only return data
//! through [`api::Authorized::release`], which asks the policy about the resource.

pub mod api;
pub mod auth;
pub mod authz;
pub mod config;
pub mod console;
pub mod coverage;
pub mod graphql;
pub mod log;
pub mod matrix;
mod memo;
pub mod metrics;
pub mod oidc;
pub mod persisted;
pub mod pool;

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
        ],
    );
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    log::event("info", "conductor stopped", &[]);
    Ok(())
}
