//! The conductor's environments (process or Kubernetes driver): `[[environments]]` in the configuration,
//! opened when the conductor starts, with REST endpoints to deploy a verified artifact by
//! canary, read a deployment's report, and steer it (pause, resume, abort, promote — each
//! sensitive: a reason, and the audit log before and after).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use maestro_deliver::{EnvSpec, Environment, MetricsSource, Notice, Release, Request};
use serde::Deserialize;
use serde_json::json;

use crate::api::{Answer, ApiError, Ctx, bad_request};
use crate::authz::Resource;
use crate::{ServerError, now_ms};

/// Largest artifact accepted.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// `[[environments]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSettings {
    pub name: String,
    pub service: String,
    /// `process` (the embedded default) or `kubernetes`.
    #[serde(default = "default_driver")]
    pub driver: String,
    /// Where the environment's traffic comes in (the proxy; process driver).
    pub listen: Option<String>,
    /// Where Prometheus scrapes the proxy's signals.
    pub metrics_listen: Option<String>,
    /// Judge canaries from this Prometheus server (`http://127.0.0.1:9090`) instead of the
    /// proxy's own counters.
    pub prometheus: Option<String>,
    /// The release's program and arguments; `{port}` becomes its port (process driver).
    #[serde(default)]
    pub command: Vec<String>,
    /// Where it runs inside the unpacked release.
    pub workdir: Option<PathBuf>,
    #[serde(default = "default_health")]
    pub health: String,
    #[serde(default = "default_ready")]
    pub ready_timeout_seconds: u64,
    /// Variables every release gets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Keys whose signature, provenance and SBOM an artifact must carry (deny by default:
    /// none means nothing deploys).
    #[serde(default)]
    pub trust_keys: Vec<PathBuf>,
    /// Releases, logs and pid files (default: `envs/<name>` beside the SQLite store).
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub canary: maestro_canary::Strategy,
    /// The cluster, namespace and traffic split (kubernetes driver).
    pub kubernetes: Option<KubeSettings>,
    /// The PromQL the canary is judged with (defaults: the proxy's series).
    pub prometheus_queries: Option<QuerySettings>,
    /// The tenant it belongs to: only that tenant's operators deploy to it, steer its
    /// canaries, roll it back and read it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The variables a deploy may set (`maestro deploy --set NAME=VALUE`, the API's
    /// `env`): none by default. A variable not listed is refused, naming it.
    #[serde(default)]
    pub deploy_env: Vec<String>,
}

fn default_tenant() -> String {
    crate::auth::DEFAULT_TENANT.to_owned()
}

/// Variables no configuration may let a deploy set: they change how the dynamic loader,
/// a shell or an interpreter starts, i.e. they run code of the deployer's choosing.
const NEVER_SETTABLE: &[&str] = &[
    "PATH",
    "HOME",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "BROWSER",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "GIT_SSH_COMMAND",
    "GCONV_PATH",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "TMPDIR",
];

/// Prefixes of the same kind (`LD_PRELOAD`, `PYTHONSTARTUP`, `DYLD_…`, `MAESTRO_…`: the
/// conductor's own).
const NEVER_SETTABLE_PREFIXES: &[&str] =
    &["LD_", "DYLD_", "PYTHON", "MAESTRO_", "GLIBC_", "MALLOC_"];

/// Why a deploy may never set `name`, if it may not.
fn never_settable(name: &str) -> Option<&'static str> {
    if NEVER_SETTABLE.contains(&name) || NEVER_SETTABLE_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        return Some(
            "it changes how the release's programs start (loader, shell or interpreter) or is the conductor's own",
        );
    }
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        || name.as_bytes()[0].is_ascii_digit()
    {
        return Some(
            "a variable name is 1 to 128 uppercase letters, digits and _, not starting with a digit",
        );
    }
    None
}

/// `[environments.kubernetes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSettings {
    /// A kubeconfig (its current context, or `context`); relative to the configuration
    /// file. Not with `in_cluster`.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The pod's service account (`/var/run/secrets/kubernetes.io/serviceaccount`).
    #[serde(default)]
    pub in_cluster: bool,
    /// Default: the context's (or the service account's) namespace.
    pub namespace: Option<String>,
    pub port: u16,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// `gateway-api` (HTTPRoute weights, exact) or `replica-ratio` (approximate).
    #[serde(default = "default_traffic")]
    pub traffic: String,
    /// The Gateway the route attaches to: `NAMESPACE/NAME`.
    pub gateway: Option<String>,
    #[serde(default)]
    pub hostnames: Vec<String>,
}

/// `[environments.prometheus_queries]`: each overrides one default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySettings {
    pub requests: Option<String>,
    pub errors: Option<String>,
    pub denied: Option<String>,
    pub in_flight: Option<String>,
    pub latency_buckets: Option<String>,
    /// `seconds` (default) or `milliseconds`: the unit of the buckets' `le`.
    pub latency_unit: Option<String>,
}

fn default_driver() -> String {
    "process".to_owned()
}

fn default_replicas() -> u32 {
    2
}

fn default_traffic() -> String {
    "gateway-api".to_owned()
}

fn default_health() -> String {
    "/healthz".to_owned()
}

fn default_ready() -> u64 {
    30
}

/// A checked environment.
#[derive(Debug, Clone)]
pub struct EnvConfig {
    pub spec: EnvSpec,
    pub trust_keys: Vec<PathBuf>,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The variables a deploy may set.
    pub deploy_env: Vec<String>,
}

impl EnvConfig {
    /// The environment as the policy sees it: of its tenant, whoever asks.
    #[must_use]
    pub fn resource(&self) -> Resource {
        Resource {
            kind: "deployment",
            id: None,
            service: Some(self.spec.service.clone()),
            environment: Some(self.spec.name.clone()),
            tenant: self.tenant.clone(),
        }
    }

    /// The deploy's variables, if each is one this environment lets a deploy set.
    ///
    /// # Errors
    /// Names the first variable that is not, and what may be set.
    pub fn check_deploy_env(&self, env: &BTreeMap<String, String>) -> Result<(), String> {
        if env.len() > 64 {
            return Err(format!("env: {} variables; at most 64", env.len()));
        }
        for (k, v) in env {
            if !self.deploy_env.contains(k) {
                let allowed = if self.deploy_env.is_empty() {
                    "none".to_owned()
                } else {
                    self.deploy_env.join(", ")
                };
                return Err(format!(
                    "env.{k}: environment `{}` does not let a deploy set `{k}` (it may set: {allowed}); an operator adds it to the environment's deploy_env",
                    self.spec.name
                ));
            }
            if v.len() > 4096 || v.contains('\0') {
                return Err(format!(
                    "env.{k}: the value must be at most 4096 bytes, without NUL"
                ));
            }
        }
        Ok(())
    }
}

impl EnvironmentSettings {
    /// Checks it; relative paths are relative to `base` (the configuration file's
    /// directory), the default state directory is under `store_dir`.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming `environments[i].field`.
    pub fn validate(
        self,
        i: usize,
        base: &Path,
        store_dir: Option<&Path>,
    ) -> Result<EnvConfig, ServerError> {
        let field = |f: &str| format!("environments[{i}].{f}");
        let bad = |f: &str, message: String| ServerError::Config {
            source_name: field(f),
            message,
        };
        if !crate::admin::is_word(&self.tenant) {
            return Err(bad(
                "tenant",
                format!(
                    "`{}` is not a tenant name: letters, digits and - _ .",
                    self.tenant
                ),
            ));
        }
        for (j, v) in self.deploy_env.iter().enumerate() {
            if let Some(why) = never_settable(v) {
                return Err(bad(
                    &format!("deploy_env[{j}]"),
                    format!("`{v}` can never be set by a deploy: {why}"),
                ));
            }
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err(bad(
                "name",
                format!(
                    "`{}` is not a name: lowercase letters, digits and -, at most 63",
                    self.name
                ),
            ));
        }
        let addr = |f: &str, v: &str| -> Result<SocketAddr, ServerError> {
            v.parse()
                .map_err(|_| bad(f, format!("`{v}` is not an address: HOST:PORT")))
        };
        let kube = match self.driver.as_str() {
            "process" => false,
            "kubernetes" => true,
            other => {
                return Err(bad(
                    "driver",
                    format!("`{other}` is not a driver: process or kubernetes"),
                ));
            }
        };
        let listen = match (&self.listen, kube) {
            (Some(l), false) => addr("listen", l)?,
            (None, false) => {
                return Err(bad(
                    "listen",
                    "is missing: the address the environment's traffic comes in at (127.0.0.1:8600)"
                        .to_owned(),
                ));
            }
            (Some(_), true) => {
                return Err(bad(
                    "listen",
                    "is for the process driver: on Kubernetes traffic comes in through the Gateway"
                        .to_owned(),
                ));
            }
            (None, true) => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let metrics_listen = self
            .metrics_listen
            .as_deref()
            .map(|m| addr("metrics_listen", m))
            .transpose()?;
        if self.command.is_empty() && !kube {
            return Err(bad(
                "command",
                "is empty: e.g. [\"python3\", \"-m\", \"app.server\", \"{port}\"]".to_owned(),
            ));
        }
        if !self.command.is_empty() && kube {
            return Err(bad(
                "command",
                "is for the process driver: on Kubernetes a release names its image in maestro-release.json".to_owned(),
            ));
        }
        if !self.health.starts_with('/') {
            return Err(bad("health", format!("`{}` is not a path", self.health)));
        }
        if self.trust_keys.is_empty() {
            return Err(bad(
                "trust_keys",
                "is empty: deploys accept only artifacts signed by a trusted key; list the public keys".to_owned(),
            ));
        }
        let plan = self.canary.plan().map_err(|e| {
            let (key, why) = e.split_once(": ").unwrap_or(("", e.as_str()));
            bad(&format!("canary.{key}"), why.to_owned())
        })?;
        let metrics = match &self.prometheus {
            None if kube => {
                return Err(bad(
                    "prometheus",
                    "is needed with the kubernetes driver: the canary is judged from Prometheus (http://prometheus.monitoring:9090)".to_owned(),
                ));
            }
            None => MetricsSource::Proxy,
            Some(url) => {
                if !url.starts_with("http://") {
                    return Err(bad(
                        "prometheus",
                        format!("`{url}` is not an http:// URL of a Prometheus server"),
                    ));
                }
                if metrics_listen.is_none() && !kube {
                    return Err(bad(
                        "metrics_listen",
                        "is needed with `prometheus`: the address Prometheus scrapes the proxy at"
                            .to_owned(),
                    ));
                }
                let mut p = maestro_deliver::Prometheus::new(url, Duration::from_secs(2));
                if let Some(q) = &self.prometheus_queries {
                    p.queries = queries(q)
                        .map_err(|(f, why)| bad(&format!("prometheus_queries.{f}"), why))?;
                }
                MetricsSource::Prometheus(Box::new(p))
            }
        };
        if self.prometheus.is_none() && self.prometheus_queries.is_some() {
            return Err(bad(
                "prometheus_queries",
                "needs `prometheus`: the server they run on".to_owned(),
            ));
        }
        let state_dir = match (self.state_dir, store_dir) {
            (Some(d), _) if d.is_relative() => base.join(d),
            (Some(d), _) => d,
            (None, Some(s)) => s.join("envs").join(&self.name),
            (None, None) => {
                return Err(bad(
                    "state_dir",
                    "is needed with a PostgreSQL store: where this conductor keeps releases and logs".to_owned(),
                ));
            }
        };
        let trust_keys = self
            .trust_keys
            .into_iter()
            .map(|k| if k.is_relative() { base.join(k) } else { k })
            .collect();
        let ready_timeout = Duration::from_secs(self.ready_timeout_seconds.max(1));
        let driver = if kube {
            // Deployments are `<service>-stable` / `<service>-canary`: DNS labels.
            let label_ok = self.service.len() <= 56
                && self
                    .service
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !self.service.starts_with('-');
            if !label_ok {
                return Err(bad(
                    "service",
                    format!(
                        "`{}` is not a name Kubernetes takes: lowercase letters, digits and -, at most 56",
                        self.service
                    ),
                ));
            }
            let Some(k) = &self.kubernetes else {
                return Err(bad(
                    "kubernetes",
                    "is missing: the cluster (kubeconfig or in_cluster), namespace, port"
                        .to_owned(),
                ));
            };
            maestro_deliver::Driver::Kubernetes(Box::new(kube_target(
                k,
                &self.service,
                &self.health,
                &self.env,
                ready_timeout,
                base,
                &|f, why| bad(&format!("kubernetes.{f}"), why),
            )?))
        } else {
            if self.kubernetes.is_some() {
                return Err(bad(
                    "kubernetes",
                    "is for driver = \"kubernetes\"".to_owned(),
                ));
            }
            maestro_deliver::Driver::Process(maestro_deliver::ServiceSpec {
                command: self.command,
                workdir: self.workdir,
                health: self.health,
                ready_timeout,
                stop_grace: Duration::from_secs(10),
                env: self.env,
            })
        };
        Ok(EnvConfig {
            spec: EnvSpec {
                name: self.name,
                service: self.service,
                listen,
                metrics_listen,
                driver,
                plan,
                metrics,
                state_dir,
            },
            trust_keys,
            tenant: self.tenant,
            deploy_env: self.deploy_env,
        })
    }
}

/// The PromQL of `[environments.prometheus_queries]` over the defaults; (field, why).
fn queries(q: &QuerySettings) -> Result<maestro_deliver::prometheus::Queries, (String, String)> {
    let mut out = maestro_deliver::prometheus::Queries::default();
    for (slot, v) in [
        (&mut out.requests, &q.requests),
        (&mut out.errors, &q.errors),
        (&mut out.denied, &q.denied),
        (&mut out.in_flight, &q.in_flight),
        (&mut out.latency_buckets, &q.latency_buckets),
    ] {
        if let Some(v) = v {
            v.clone_into(slot);
        }
    }
    out.latency_unit_seconds = match q.latency_unit.as_deref() {
        None | Some("seconds") => 1.0,
        Some("milliseconds") => 0.001,
        Some(other) => {
            return Err((
                "latency_unit".to_owned(),
                format!("`{other}` is not a unit: seconds or milliseconds"),
            ));
        }
    };
    out.check().map_err(|e| {
        let (f, why) = e.split_once(": ").unwrap_or(("", e.as_str()));
        (f.to_owned(), why.to_owned())
    })?;
    Ok(out)
}

/// The cluster and how the environment's releases run on it.
fn kube_target(
    k: &KubeSettings,
    service: &str,
    health: &str,
    env: &BTreeMap<String, String>,
    ready_timeout: Duration,
    base: &Path,
    bad: &dyn Fn(&str, String) -> ServerError,
) -> Result<maestro_deliver::kubernetes::KubeTarget, ServerError> {
    use maestro_deliver::cluster::Cluster;
    use maestro_deliver::kubernetes::{KubeSpec, KubeTarget, Weighting};
    let cluster = match (&k.kubeconfig, k.in_cluster) {
        (Some(_), true) => {
            return Err(bad(
                "in_cluster",
                "and kubeconfig exclude each other: choose one".to_owned(),
            ));
        }
        (Some(path), false) => {
            let path = if path.is_relative() {
                base.join(path)
            } else {
                path.clone()
            };
            Cluster::from_kubeconfig(&path, k.context.as_deref())
                .map_err(|e| bad("kubeconfig", e.to_string()))?
        }
        (None, true) => {
            Cluster::in_cluster(Path::new("/var/run/secrets/kubernetes.io/serviceaccount"))
                .map_err(|e| bad("in_cluster", e.to_string()))?
        }
        (None, false) => {
            return Err(bad(
                "kubeconfig",
                "is missing: a kubeconfig file, or in_cluster = true".to_owned(),
            ));
        }
    };
    let dns_label = |v: &str| {
        !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-')
    };
    let namespace = k
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    if !dns_label(&namespace) {
        return Err(bad(
            "namespace",
            format!("`{namespace}` is not a namespace: a DNS label (lowercase letters, digits, -)"),
        ));
    }
    if k.port == 0 {
        return Err(bad(
            "port",
            "must be the container's port (1-65535)".to_owned(),
        ));
    }
    if k.replicas == 0 {
        return Err(bad("replicas", "must be at least 1".to_owned()));
    }
    let weighting = match k.traffic.as_str() {
        "gateway-api" => Weighting::GatewayApi,
        "replica-ratio" => Weighting::ReplicaRatio,
        other => {
            return Err(bad(
                "traffic",
                format!("`{other}` is not a split: gateway-api or replica-ratio"),
            ));
        }
    };
    let gateway = match (&k.gateway, weighting) {
        (Some(g), _) => match g.split_once('/') {
            Some((ns, name)) if dns_label(ns) && !name.is_empty() => {
                (name.to_owned(), ns.to_owned())
            }
            _ => {
                return Err(bad(
                    "gateway",
                    format!("`{g}` is not NAMESPACE/NAME of a Gateway"),
                ));
            }
        },
        (None, Weighting::GatewayApi) => {
            return Err(bad(
                "gateway",
                "is needed with traffic = \"gateway-api\": the Gateway the route attaches to, NAMESPACE/NAME".to_owned(),
            ));
        }
        (None, Weighting::ReplicaRatio) => (String::new(), String::new()),
    };
    Ok(KubeTarget {
        cluster,
        spec: KubeSpec {
            namespace,
            name: service.to_owned(),
            port: k.port,
            health: health.to_owned(),
            replicas: k.replicas,
            gateway,
            hostnames: k.hostnames.clone(),
        },
        weighting,
        env: env.clone(),
        ready_timeout,
    })
}

/// How long an environment's lease runs, and how often its holder renews it.
const LEASE_TTL: Duration = Duration::from_secs(15);
const LEASE_RENEW: Duration = Duration::from_secs(5);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One configured environment: open here while this conductor holds its lease
/// (`environment:<name>`), `None` while another conductor runs it.
#[derive(Debug)]
struct Slot {
    cfg: EnvConfig,
    env: std::sync::RwLock<Option<Arc<Environment>>>,
}

impl Slot {
    fn get(&self) -> Option<Arc<Environment>> {
        self.env
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, env: Option<Arc<Environment>>) -> Option<Arc<Environment>> {
        std::mem::replace(
            &mut *self
                .env
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            env,
        )
    }
}

/// The configured environments. Several conductors on one PostgreSQL may configure the
/// same environment: one at a time runs it (its processes, proxy and controllers), the
/// holder of its lease; the others stand by and take over when the lease lapses.
#[derive(Debug, Default)]
pub struct Environments {
    by_name: HashMap<String, Arc<Slot>>,
    holder: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Environments {
    /// Takes each environment's lease and opens the ones it gets (resuming deployments in
    /// progress); a task per environment renews the lease, or keeps trying to take it.
    ///
    /// # Errors
    /// When an environment whose lease it holds cannot open.
    pub async fn open(
        state: &Arc<crate::AppState>,
        configs: &[EnvConfig],
        holder: &str,
    ) -> Result<Environments, ServerError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut by_name = HashMap::new();
        let mut tasks = Vec::new();
        for c in configs {
            let slot = Arc::new(Slot {
                cfg: c.clone(),
                env: std::sync::RwLock::new(None),
            });
            let mut held_until = if let Some(l) = lease(state, &c.spec.name, holder).await {
                let env =
                    Environment::open(c.spec.clone(), Arc::clone(&state.pool), tx.clone(), Some(l))
                        .await
                        .map_err(|e| ServerError::Config {
                            source_name: format!("environment {}", c.spec.name),
                            message: e.to_string(),
                        })?;
                slot.set(Some(env));
                now_ms() + ms(LEASE_TTL)
            } else {
                crate::log::event(
                    "info",
                    "environment runs on another conductor",
                    &[("environment", json!(c.spec.name))],
                );
                0
            };
            let (state, slot2, holder, tx) = (
                Arc::clone(state),
                Arc::clone(&slot),
                holder.to_owned(),
                tx.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_RENEW).await;
                    let name = slot2.cfg.spec.name.clone();
                    let got = lease(&state, &name, &holder).await;
                    if got.is_some() {
                        held_until = now_ms() + ms(LEASE_TTL);
                    }
                    // Held again under a new token (it lapsed in between, and another may
                    // have run it): what runs here is stale; reopen from the store.
                    if let (Some(l), Some(env)) = (&got, slot2.get())
                        && env.lease_token() != Some(l.token)
                    {
                        slot2.set(None);
                        env.abandon().await;
                    }
                    let open = slot2.get().is_some();
                    match (got, open) {
                        (Some(l), false) => {
                            match Environment::open(
                                slot2.cfg.spec.clone(),
                                Arc::clone(&state.pool),
                                tx.clone(),
                                Some(l),
                            )
                            .await
                            {
                                Ok(env) => {
                                    slot2.set(Some(env));
                                    crate::log::event(
                                        "info",
                                        "environment taken over",
                                        &[("environment", json!(name))],
                                    );
                                }
                                Err(e) => crate::log::event(
                                    "error",
                                    "environment did not open",
                                    &[
                                        ("environment", json!(name)),
                                        ("error", json!(e.to_string())),
                                    ],
                                ),
                            }
                        }
                        // Lost (or could not renew in time): stop before another takes it.
                        (None, true) if now_ms() >= held_until - ms(LEASE_RENEW) => {
                            if let Some(env) = slot2.set(None) {
                                env.abandon().await;
                            }
                            crate::log::event(
                                "error",
                                "environment lease lost: stopped here",
                                &[("environment", json!(name))],
                            );
                        }
                        _ => {}
                    }
                }
            }));
            by_name.insert(c.spec.name.clone(), slot);
        }
        tasks.push(tokio::spawn(record(Arc::clone(state), rx)));
        Ok(Environments {
            by_name,
            holder: holder.to_owned(),
            tasks,
        })
    }

    /// Stops every environment's processes and gives their leases up, so a standing-by
    /// conductor takes over at once (deployments in progress resume there).
    pub async fn shutdown(&self, state: &Arc<crate::AppState>) {
        for t in &self.tasks {
            t.abort();
        }
        for (name, slot) in &self.by_name {
            if let Some(env) = slot.set(None) {
                env.shutdown().await;
                let (n, h) = (format!("environment:{name}"), self.holder.clone());
                let _ = state
                    .pool
                    .with(move |s| s.lease_release(&n, &h, now_ms()))
                    .await;
            }
        }
    }
}

/// Takes or renews `environment:<name>` for `holder`; `None` when another holds it or the
/// store fails.
async fn lease(
    state: &Arc<crate::AppState>,
    name: &str,
    holder: &str,
) -> Option<maestro_store::Lease> {
    let (n, h) = (format!("environment:{name}"), holder.to_owned());
    let ttl = ms(LEASE_TTL);
    state
        .pool
        .with(move |s| s.lease_acquire(&n, &h, ttl, now_ms()))
        .await
        .ok()
        .flatten()
}

/// Logs every notice and appends it to the audit log (as the conductor) when it has a key.
async fn record(state: Arc<crate::AppState>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Notice>) {
    while let Some(n) = rx.recv().await {
        crate::log::event(
            "info",
            &n.action,
            &[
                ("environment", json!(n.environment)),
                ("deployment", json!(n.deployment)),
                ("version", json!(n.version)),
                ("detail", json!(n.detail)),
            ],
        );
        // The deployment's tenant (so its entries are that tenant's, as the release's are).
        let id = n.deployment;
        let tenant = state
            .pool
            .with(move |s| s.deployment(id))
            .await
            .ok()
            .flatten()
            .map(|d| d.tenant);
        let entry = maestro_audit::NewEntry {
            actor: crate::conductor_actor("controller"),
            action: n.action.clone(),
            target: format!("environment:{}/deployment:{}", n.environment, n.deployment),
            params: json!({"version": n.version, "environment": n.environment}),
            reason: Some(n.detail.clone()),
            result: maestro_audit::Outcome::Success,
            links: maestro_audit::Links {
                release: Some(n.version.clone()),
                ..maestro_audit::Links::default()
            },
            tenant,
        };
        crate::audit_conductor(&state, entry).await;
    }
}

/// The environment the path names, as a resource the actor may act on: of the tenant it
/// belongs to, so another tenant's actor gets 404, as for one that does not exist.
fn visible_environment(
    ctx: &Ctx,
) -> Result<(String, Arc<Environment>, EnvConfig, Resource), ApiError> {
    let name = ctx.path.get("env").cloned().unwrap_or_default();
    let (env, cfg) = find(ctx, &name)?;
    let r = cfg.resource();
    Ok((name, env, cfg, r))
}

/// The environment's stable release and its last `n` deployments.
async fn history(
    ctx: &Ctx,
    name: &str,
    n: usize,
) -> Result<
    (
        Option<maestro_store::EnvironmentRow>,
        Vec<maestro_store::DeploymentRow>,
    ),
    ApiError,
> {
    let name = name.to_owned();
    ctx.auth
        .state
        .pool
        .with(move |s| Ok((s.environment(&name)?, s.deployments(Some(&name), false, n)?)))
        .await
        .map_err(|e| ApiError::store(&e))
}

/// The environment `name`, if the actor may see it (404 otherwise, as for one that does
/// not exist) and it runs here (503 otherwise).
fn find(ctx: &Ctx, name: &str) -> Result<(Arc<Environment>, EnvConfig), ApiError> {
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no environment `{name}` on this conductor"),
        )
    };
    let slot = ctx
        .auth
        .state
        .environments
        .get()
        .and_then(|e| e.by_name.get(name))
        .ok_or_else(missing)?;
    if !ctx.auth.visible(&slot.cfg.resource()) {
        return Err(missing());
    }
    let env = slot.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "runs_elsewhere",
            format!("environment `{name}` runs on another conductor (it holds its lease); ask that one, or retry when it stops"),
        )
    })?;
    Ok((env, slot.cfg.clone()))
}

/// The environment `name` when it runs on this conductor (it holds its lease).
pub(crate) fn open_here(
    state: &Arc<crate::AppState>,
    name: &str,
) -> Option<(Arc<Environment>, EnvConfig)> {
    let slot = state.environments.get()?.by_name.get(name)?;
    Some((slot.get()?, slot.cfg.clone()))
}

/// `GET /api/v1/environments/{env}`: its stable release and its deployments, newest first.
pub(crate) fn environment_read(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (name, env, cfg, r) = visible_environment(&ctx)?;
        let (stable, deployments) = history(&ctx, &name, 20).await?;
        let deployments: Vec<_> = deployments
            .iter()
            .filter(|d| d.tenant == cfg.tenant)
            .map(|d| json!({"id": d.id, "version": d.version, "status": d.status, "actor": d.actor, "reason": d.reason, "created_at_ms": d.created_at_ms}))
            .collect();
        ctx.auth.release(
            &r,
            json!({
                "name": name,
                "service": cfg.spec.service,
                "listen": env.addr().await.map(|a| a.to_string()),
                "stable": stable.map(|s| json!({"version": s.version, "artifact": s.artifact, "deployment": s.deployment_id})),
                "deployments": deployments,
            }),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    /// Absolute path of the artifact (a `.tar.gz`) on the conductor's host, with its
    /// evidence bundles beside it.
    artifact: PathBuf,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// The pipeline run deploying it (`MAESTRO_CONDUCTOR_RUN` inside `maestro run
    /// --server`): the deployment is linked from the run, and the run from its report.
    #[serde(default)]
    run: Option<i64>,
}

/// `POST /api/v1/environments/{env}/deployments` (sensitive): verify, unpack, deploy.
pub(crate) fn deploy(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (name, env, cfg, r) = visible_environment(&ctx)?;
        let body: DeployBody = ctx.json()?;
        cfg.check_deploy_env(&body.env)
            .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "env_not_allowed", m))?;
        if let Some(run) = body.run {
            // Only a run of the caller's own tenant: another's is as unknown as a missing one.
            let row = ctx.auth.state.pool.with(move |s| s.run(run)).await;
            let visible = matches!(&row, Ok(r) if r.tenant == ctx.auth.actor.tenant);
            if !visible {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_run",
                    format!("run: {run} is not a run of this conductor you may see"),
                ));
            }
        }
        let artifact = crate::release::confine(&body.artifact, &ctx.auth.state.artifact_roots)
            .map_err(|m| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unverified_artifact", m)
            })?;
        let permit = ctx.permit(&r).await?;
        let trust = cfg.trust_keys.clone();
        let releases = cfg.spec.state_dir.join("releases");
        let unpacked = tokio::task::spawn_blocking(move || {
            crate::release::prepare(&artifact, &trust, &releases)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unverified_artifact", e))?;
        let reason = ctx.reason.clone().unwrap_or_default();
        let id = env
            .deploy(
                Release {
                    version: unpacked.version.clone(),
                    artifact: unpacked.digest.clone(),
                    dir: unpacked.dir,
                    env: body.env,
                },
                Request {
                    actor: ctx.auth.actor.id.clone(),
                    tenant: cfg.tenant.clone(),
                    reason,
                    run_id: body.run,
                },
            )
            .await
            .map_err(|e| match e {
                maestro_deliver::DeployError::Busy(id) => ApiError::new(
                    StatusCode::CONFLICT,
                    "deployment_in_progress",
                    format!("deployment {id} is in progress in {name}: wait for it or abort it"),
                ),
                other => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "deploy_failed",
                    other.to_string(),
                ),
            })?;
        permit.created(
            json!({"id": id, "version": unpacked.version, "artifact": unpacked.digest, "url": format!("/api/v1/deployments/{id}")}),
        )
    })
}

async fn deployment_row(ctx: &Ctx) -> Result<(maestro_store::DeploymentRow, Resource), ApiError> {
    let id = ctx.id("id", "deployment id")?;
    let row = ctx
        .auth
        .state
        .pool
        .with(move |s| s.deployment(id))
        .await
        .map_err(|e| ApiError::store(&e))?;
    let missing = Resource {
        kind: "deployment",
        id: Some(id.to_string()),
        ..Resource::default()
    };
    let Some(row) = row else {
        return Err(crate::api::not_found(&missing));
    };
    let r = Resource {
        kind: "deployment",
        id: Some(id.to_string()),
        service: Some(row.service.clone()),
        environment: Some(row.environment.clone()),
        tenant: row.tenant.clone(),
    };
    Ok((row, r))
}

/// `GET /api/v1/deployments/{id}`: the canary report (status, steps, analyses, verdict).
pub(crate) fn deployment_read(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (row, r) = deployment_row(&ctx).await?;
        let state: serde_json::Value = serde_json::from_str(&row.state).unwrap_or_default();
        ctx.auth.release(
            &r,
            json!({
                "id": row.id, "environment": row.environment, "service": row.service,
                "version": row.version, "artifact": row.artifact, "previous": row.previous,
                "status": row.status, "actor": row.actor, "reason": row.reason,
                "run_id": row.run_id,
                "run_url": row.run_id.map(|r| format!("/console/runs/{r}")),
                "created_at_ms": row.created_at_ms, "updated_at_ms": row.updated_at_ms,
                "canary": state,
            }),
        )
    })
}

/// `POST /api/v1/deployments/{id}/{action}` (sensitive): pause, resume, abort, promote.
pub(crate) fn deployment_control(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (row, r) = deployment_row(&ctx).await?;
        if !ctx.auth.visible(&r) {
            return Err(crate::api::not_found(&r));
        }
        let action = ctx.path.get("action").cloned().unwrap_or_default();
        let cmd = match action.as_str() {
            "pause" => maestro_canary::Command::Pause,
            "resume" => maestro_canary::Command::Resume,
            "abort" => maestro_canary::Command::Abort,
            "promote" => maestro_canary::Command::Promote,
            other => {
                return Err(bad_request(format!(
                    "`{other}` is not a command: pause, resume, abort or promote"
                )));
            }
        };
        let (env, _) = find(&ctx, &row.environment)?;
        let permit = ctx.permit(&r).await?;
        let why = format!(
            "{}: {}",
            ctx.auth.actor.id,
            ctx.reason.clone().unwrap_or_default()
        );
        env.command(row.id, cmd, &why).await.map_err(|e| match e {
            maestro_deliver::DeployError::NotFound(_) => ApiError::new(
                StatusCode::CONFLICT,
                "not_in_progress",
                format!("deployment {} is not in progress ({})", row.id, row.status),
            ),
            other => ApiError::new(StatusCode::CONFLICT, "refused", other.to_string()),
        })?;
        permit.answer(json!({"id": row.id, "command": cmd.as_str(), "done": true}))
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// The release to go back to (a version); default: the last one promoted before the
    /// current stable release.
    #[serde(default)]
    to: Option<String>,
}

/// `POST /api/v1/environments/{env}/rollback` (sensitive): the stable release becomes an
/// earlier good one (promoted before, still unpacked), at once.
pub(crate) fn rollback(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let (name, env, cfg, r) = visible_environment(&ctx)?;
        let body: RollbackBody = if ctx.body.is_empty() {
            RollbackBody::default()
        } else {
            ctx.json()?
        };
        let (stable, mut history) = history(&ctx, &name, 200).await?;
        history.retain(|d| d.tenant == cfg.tenant);
        let current = stable.map(|s| s.version).unwrap_or_default();
        let target = history.iter().find(|d| {
            d.status == "promoted"
                && d.version != current
                && body.to.as_ref().is_none_or(|v| *v == d.version)
        });
        let Some(target) = target else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "nothing_to_roll_back_to",
                match &body.to {
                    Some(v) => format!("release {v} was never promoted in {name}"),
                    None => format!("no release before {current} was promoted in {name}"),
                },
            ));
        };
        let extra = serde_json::from_str(&target.env).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "state_unreadable",
                format!(
                    "deployment {}: its stored variables do not parse ({e}); nothing was done",
                    target.id
                ),
            )
        })?;
        let release = Release {
            version: target.version.clone(),
            artifact: target.artifact.clone(),
            dir: PathBuf::from(&target.release_dir),
            env: extra,
        };
        let permit = ctx.permit(&r).await?;
        env.set_stable(release).await.map_err(|e| match e {
            maestro_deliver::DeployError::Busy(id) => ApiError::new(
                StatusCode::CONFLICT,
                "deployment_in_progress",
                format!("deployment {id} is in progress in {name}: abort it instead"),
            ),
            other => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rollback_failed",
                other.to_string(),
            ),
        })?;
        permit.answer(
            json!({"environment": name, "from": current, "to": target.version, "deployment": target.id}),
        )
    })
}
