//! One environment at run time (the process driver): its proxy, its stable release, and the
//! deployment in progress with its controller.
//!
//! A deployment starts the new release next to stable, opens its row in the store
//! (at most one per environment), and a controller task then judges every interval: the
//! proxy's signals of both versions over the interval (counts and latency samples) go to
//! the judge, the judgement to the state machine, its actions to the proxy and the
//! processes, and the new state to the store — every interval, so a conductor killed at
//! any moment resumes where it was ([`Environment::open`]). The old stable is stopped only
//! after the promotion is committed, so traffic always has somewhere good to go back to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maestro_canary::{Action, Canary, Command, Judgement, Observation, Phase, Plan};
use maestro_proxy::{Counts, Options, Proxy, Route, Upstream};
use maestro_store::pool::StorePool;
use maestro_store::{DeploymentRefusal, EnvironmentRow, Lease, NewDeployment, StoreError};
use tokio::sync::{Mutex, mpsc};

use crate::cluster::KubeError;
use crate::kubernetes::{KubeRelease, KubeTarget};
use crate::process::{DriverError, Instance, ProcessDriver, ServiceSpec};

/// Where an environment's releases run.
#[derive(Debug, Clone)]
pub enum Driver {
    /// Local processes on loopback ports behind the canary proxy (the embedded default).
    Process(ServiceSpec),
    /// Deployments on a Kubernetes cluster, split by a Gateway API route or replica counts;
    /// the canary is judged from Prometheus.
    Kubernetes(Box<KubeTarget>),
}

/// Where the canary's signals are read.
#[derive(Debug, Clone, Default)]
pub enum MetricsSource {
    /// The proxy's own counters and latency samples (the embedded default).
    #[default]
    Proxy,
    /// PromQL against a Prometheus server that scrapes the proxy (`metrics_listen`).
    Prometheus(Box<crate::prometheus::Prometheus>),
}

/// One environment's configuration.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    pub name: String,
    /// The `service` label of its signals.
    pub service: String,
    /// Where its traffic comes in (the proxy).
    pub listen: SocketAddr,
    /// Where Prometheus scrapes the proxy's signals, when set.
    pub metrics_listen: Option<SocketAddr>,
    pub driver: Driver,
    pub plan: Plan,
    pub metrics: MetricsSource,
    /// Logs and the pid file (`.maestro/envs/<name>`).
    pub state_dir: PathBuf,
}

/// A release to deploy: unpacked in `dir`, with its own extra environment.
#[derive(Debug, Clone, Default)]
pub struct Release {
    pub version: String,
    pub artifact: String,
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

/// Who asked, and why (kept with the deployment and its audit entries).
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub actor: String,
    pub tenant: String,
    pub reason: String,
    pub run_id: Option<i64>,
}

/// What happened, for the conductor's audit log and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub environment: String,
    pub deployment: i64,
    /// `deploy.started`, `deploy.promoted`, `deploy.rolled_back`, `deploy.aborted`,
    /// `deploy.paused`, `deploy.resumed`.
    pub action: String,
    pub version: String,
    pub detail: String,
}

/// A problem deploying or steering.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("kubernetes: {0}")]
    Kube(#[from] KubeError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("deployment {0} is in progress in this environment; wait for it, or abort it")]
    Busy(i64),
    #[error("deployment {0} does not exist")]
    NotFound(i64),
    #[error("this conductor's lease on the environment is no longer current: another runs it now")]
    Fenced,
    #[error("deployment {id} has already ended ({status})")]
    Ended { id: i64, status: String },
    #[error("{0}")]
    Refused(String),
    #[error("proxy: {0}")]
    Proxy(#[from] maestro_proxy::ProxyError),
}

/// What runs one release.
enum Running {
    Process(Box<Instance>),
    Kube(KubeRelease),
}

enum Backend {
    Process(ProcessDriver),
    Kube(Arc<KubeTarget>),
}

struct Active {
    id: i64,
    version: String,
    canary: Canary,
    instance: Running,
}

struct Live {
    stable: Option<(String, Running)>,
    active: Option<Active>,
    proxy: Option<Arc<Proxy>>,
}

/// An environment and what runs in it.
pub struct Environment {
    spec: EnvSpec,
    backend: Backend,
    pool: Arc<StorePool>,
    /// The lease this environment runs under: every save is fenced by it.
    lease: Option<Lease>,
    notices: mpsc::UnboundedSender<Notice>,
    live: Mutex<Live>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn status_of(phase: Phase) -> &'static str {
    match phase {
        Phase::Progressing => "progressing",
        Phase::Paused => "paused",
        Phase::Promoted => "promoted",
        Phase::RolledBack => "rolled_back",
        Phase::Aborted => "aborted",
    }
}

impl Environment {
    /// Opens the environment: stops what a killed conductor left running, starts the
    /// stable release and its proxy, and resumes the deployment in progress (or rolls it
    /// back when its release cannot start again).
    ///
    /// # Errors
    /// When the store cannot be read, the stable release cannot start, or the proxy
    /// cannot listen.
    pub async fn open(
        spec: EnvSpec,
        pool: Arc<StorePool>,
        notices: mpsc::UnboundedSender<Notice>,
        lease: Option<Lease>,
    ) -> Result<Arc<Environment>, DeployError> {
        let backend = match &spec.driver {
            Driver::Process(p) => {
                let driver = ProcessDriver::new(p.clone(), &spec.state_dir);
                driver.reap_leftovers().await?;
                Backend::Process(driver)
            }
            Driver::Kubernetes(k) => Backend::Kube(Arc::new((**k).clone())),
        };
        let env = Arc::new(Environment {
            spec,
            backend,
            pool,
            lease,
            notices,
            live: Mutex::new(Live {
                stable: None,
                active: None,
                proxy: None,
            }),
        });
        let name = env.spec.name.clone();
        let stable = env.pool.with(move |s| s.environment(&name)).await?;
        if let Some(row) = stable {
            let extra = env.release_env(row.deployment_id).await?;
            let inst = env
                .start(
                    Track::Stable,
                    &row.version,
                    std::path::Path::new(&row.release_dir),
                    &extra,
                )
                .await?;
            let mut live = env.live.lock().await;
            env.serve_only(&mut live, &row.version, &inst).await?;
            live.stable = Some((row.version, inst));
        }
        let name = env.spec.name.clone();
        let active = env
            .pool
            .with(move |s| s.deployments(Some(&name), true, 1))
            .await?;
        if let Some(d) = active.into_iter().next() {
            env.resume(d).await?;
        }
        Ok(env)
    }

    async fn release_env(
        &self,
        deployment: Option<i64>,
    ) -> Result<BTreeMap<String, String>, DeployError> {
        let Some(id) = deployment else {
            return Ok(BTreeMap::new());
        };
        let row = self.pool.with(move |s| s.deployment(id)).await?;
        Ok(row
            .and_then(|d| serde_json::from_str(&d.env).ok())
            .unwrap_or_default())
    }

    /// Starts a release: a process, or a Deployment rolled out (stable: with its route).
    async fn start(
        &self,
        track: Track,
        version: &str,
        dir: &std::path::Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Running, DeployError> {
        match &self.backend {
            Backend::Process(d) => Ok(Running::Process(Box::new(
                d.start(version, dir, env).await?,
            ))),
            Backend::Kube(k) => {
                let release = k.release(version, dir, env)?;
                let (k, r) = (Arc::clone(k), release.clone());
                blocking(move || match track {
                    Track::Stable => k.set_stable(&r),
                    Track::Canary => k.start_canary(&r),
                })
                .await?;
                Ok(Running::Kube(release))
            }
        }
    }

    /// Stops a release's processes (a Deployment is removed by the actions themselves).
    async fn stop(&self, r: Running) {
        if let (Backend::Process(d), Running::Process(inst)) = (&self.backend, r) {
            d.stop(*inst).await;
        }
    }

    /// All traffic to `version` alone (the proxy's route; on Kubernetes the route was set
    /// when the release started as stable).
    async fn serve_only(
        &self,
        live: &mut Live,
        version: &str,
        r: &Running,
    ) -> Result<(), DeployError> {
        match r {
            Running::Process(inst) => self.serve(live, Route::only(upstream(version, inst))).await,
            Running::Kube(_) => Ok(()),
        }
    }

    /// Starts the proxy on first use, or re-routes it.
    async fn serve(&self, live: &mut Live, route: Route) -> Result<(), DeployError> {
        match &live.proxy {
            Some(p) => p.set_route(route)?,
            None => {
                let proxy = Arc::new(
                    Proxy::start(
                        self.spec.listen,
                        route,
                        Options {
                            service: self.spec.service.clone(),
                            ..Options::default()
                        },
                    )
                    .await?,
                );
                if let Some(m) = self.spec.metrics_listen {
                    proxy.serve_metrics(m).await?;
                }
                live.proxy = Some(proxy);
            }
        }
        Ok(())
    }

    /// The proxy's address (none before the first release).
    pub async fn addr(&self) -> Option<SocketAddr> {
        self.live.lock().await.proxy.as_ref().map(|p| p.addr())
    }

    /// The proxy itself (for its signals).
    pub async fn proxy(&self) -> Option<Arc<Proxy>> {
        self.live.lock().await.proxy.clone()
    }

    /// The stable release's golden signals over the next `window` (proxy: counted from now
    /// until then; Prometheus: the window ending then). Returns the stable version with
    /// them; `Err` says why nothing could be read.
    ///
    /// # Errors
    /// No stable release, no proxy, or the metrics source did not answer.
    pub async fn observe_stable(&self, window: Duration) -> Result<(String, Observation), String> {
        let stable = || async {
            let live = self.live.lock().await;
            (
                live.stable.as_ref().map(|(v, _)| v.clone()),
                live.proxy.clone(),
            )
        };
        let (Some(version), proxy) = stable().await else {
            return Err(format!("{}: no stable release", self.spec.name));
        };
        let observation = match &self.spec.metrics {
            MetricsSource::Proxy => {
                let proxy = proxy.ok_or_else(|| format!("{}: no proxy", self.spec.name))?;
                let signals = proxy.signals(&version);
                let (before, since) = (signals.counts(), proxy.now_ms());
                tokio::time::sleep(window).await;
                observe(
                    &signals.counts().since(&before),
                    &signals.samples_since(since),
                )
            }
            MetricsSource::Prometheus(p) => {
                tokio::time::sleep(window).await;
                p.observe(&self.spec.service, &version, window.as_secs().max(1))
                    .await
                    .map_err(|e| format!("{}: prometheus: {e}", self.spec.name))?
            }
        };
        // The stable release changed meanwhile (rolled back, another promoted): the figures
        // are not the release's.
        match stable().await {
            (Some(now), _) if now == version => Ok((version, observation)),
            (now, _) => Err(format!(
                "{}: the stable release changed from {version} to {} while it was observed",
                self.spec.name,
                now.unwrap_or_else(|| "none".to_owned())
            )),
        }
    }

    /// The canary plan's limits (what the post-deploy checks hold the stable release to).
    #[must_use]
    pub fn limits(&self) -> &maestro_canary::Limits {
        &self.spec.plan.limits
    }

    fn notify(&self, deployment: i64, action: &str, version: &str, detail: String) {
        let _ = self.notices.send(Notice {
            environment: self.spec.name.clone(),
            deployment,
            action: action.to_owned(),
            version: version.to_owned(),
            detail,
        });
    }

    /// Deploys `release`: the first release of an environment becomes stable at once (there
    /// is nothing to compare a canary with); later ones go through the canary. Returns the
    /// deployment's id.
    ///
    /// # Errors
    /// When a deployment is already in progress, the release does not start (nothing
    /// changes then), or the store fails.
    pub async fn deploy(
        self: &Arc<Self>,
        release: Release,
        req: Request,
    ) -> Result<i64, DeployError> {
        let mut live = self.live.lock().await;
        if let Some(a) = &live.active {
            return Err(DeployError::Busy(a.id));
        }
        if live
            .stable
            .as_ref()
            .is_some_and(|(v, _)| *v == release.version)
        {
            return Err(DeployError::Refused(format!(
                "release {} is already stable in {}",
                release.version, self.spec.name
            )));
        }
        let (canary, first_actions) = Canary::start(&self.spec.plan, now_ms());
        let first = live.stable.is_none();
        let new = NewDeployment {
            environment: self.spec.name.clone(),
            service: self.spec.service.clone(),
            tenant: req.tenant.clone(),
            version: release.version.clone(),
            artifact: release.artifact.clone(),
            release_dir: release.dir.display().to_string(),
            previous: live.stable.as_ref().map(|(v, _)| v.clone()),
            plan: serde_json::to_string(&self.spec.plan.steps).unwrap_or_default(),
            state: serde_json::to_string(&canary).unwrap_or_default(),
            env: serde_json::to_string(&release.env).unwrap_or_default(),
            actor: req.actor.clone(),
            reason: req.reason.clone(),
            run_id: req.run_id,
            now_ms: i(now_ms()),
        };
        let id = match self.pool.with(move |s| s.deployment_begin(&new)).await? {
            Ok(id) => id,
            Err(DeploymentRefusal::Busy(other)) => return Err(DeployError::Busy(other)),
            Err(other) => return Err(DeployError::Refused(format!("{other:?}"))),
        };
        let track = if first { Track::Stable } else { Track::Canary };
        let instance = match self
            .start(track, &release.version, &release.dir, &release.env)
            .await
        {
            Ok(inst) => inst,
            Err(e) => {
                let mut failed = canary.clone();
                let _ = failed.command(
                    &self.spec.plan,
                    now_ms(),
                    Command::Abort,
                    &format!("the release did not start: {e}"),
                );
                self.save(id, &failed).await?;
                return Err(e);
            }
        };
        self.notify(id, "deploy.started", &release.version, req.reason.clone());
        if first {
            // Nothing to compare with: the first release is stable at once.
            let mut done = canary;
            let _ = done.command(
                &self.spec.plan,
                now_ms(),
                Command::Promote,
                "the environment's first release",
            );
            self.save(id, &done).await?;
            self.serve_only(&mut live, &release.version, &instance)
                .await?;
            live.stable = Some((release.version.clone(), instance));
            self.notify(
                id,
                "deploy.promoted",
                &release.version,
                "first release".to_owned(),
            );
            return Ok(id);
        }
        live.active = Some(Active {
            id,
            version: release.version,
            canary,
            instance,
        });
        self.apply(&mut live, &first_actions).await?;
        drop(live);
        self.spawn_controller(id);
        Ok(id)
    }

    /// Resumes a deployment found in progress at start.
    async fn resume(self: &Arc<Self>, d: maestro_store::DeploymentRow) -> Result<(), DeployError> {
        let canary: Canary = serde_json::from_str(&d.state).map_err(|e| {
            DeployError::Refused(format!("deployment {}: state unreadable: {e}", d.id))
        })?;
        let extra: BTreeMap<String, String> = serde_json::from_str(&d.env).unwrap_or_default();
        let started = self
            .start(
                Track::Canary,
                &d.version,
                std::path::Path::new(&d.release_dir),
                &extra,
            )
            .await;
        let mut live = self.live.lock().await;
        match started {
            Ok(instance) => {
                let weight = canary.weight(&self.spec.plan);
                live.active = Some(Active {
                    id: d.id,
                    version: d.version.clone(),
                    canary,
                    instance,
                });
                self.apply(&mut live, &[Action::Route(weight)]).await?;
                drop(live);
                self.notify(
                    d.id,
                    "deploy.resumed",
                    &d.version,
                    "resumed after a restart".to_owned(),
                );
                self.spawn_controller(d.id);
            }
            Err(e) => {
                let mut failed = canary;
                let _ = failed.command(
                    &self.spec.plan,
                    now_ms(),
                    Command::Abort,
                    &format!("the canary could not be restarted: {e}"),
                );
                self.save(d.id, &failed).await?;
                self.notify(
                    d.id,
                    "deploy.aborted",
                    &d.version,
                    format!("the canary could not be restarted: {e}"),
                );
            }
        }
        Ok(())
    }

    /// The fencing token of the lease it runs under.
    #[must_use]
    pub fn lease_token(&self) -> Option<i64> {
        self.lease.as_ref().map(|l| l.token)
    }

    /// [`Environment::save`] for the controller: a store that fails (a restart, a second's
    /// blip) is tried again with backoff for about ten seconds before the controller gives
    /// up — a deployment is never left `progressing` for want of one retry.
    async fn save_patiently(&self, id: i64, canary: &Canary) -> Result<(), DeployError> {
        let mut wait = Duration::from_millis(100);
        let mut tried = 0;
        loop {
            match self.save(id, canary).await {
                Err(DeployError::Store(_)) if tried < 7 => {
                    tried += 1;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(3));
                }
                other => return other,
            }
        }
    }

    async fn save(&self, id: i64, canary: &Canary) -> Result<(), DeployError> {
        let status = status_of(canary.phase).to_owned();
        let state = serde_json::to_string(canary).unwrap_or_default();
        let fence = self.lease.clone();
        match self
            .pool
            .with(move |s| s.deployment_save(id, &status, &state, i(now_ms()), fence.as_ref()))
            .await?
        {
            Ok(()) => Ok(()),
            Err(DeploymentRefusal::Fenced) => Err(DeployError::Fenced),
            Err(DeploymentRefusal::Ended(status)) => Err(DeployError::Ended { id, status }),
            Err(DeploymentRefusal::NotFound | DeploymentRefusal::Busy(_)) => {
                Err(DeployError::NotFound(id))
            }
        }
    }

    /// Carries out the state machine's actions. `Finalize` and `Stop` end the deployment.
    async fn apply(&self, live: &mut Live, actions: &[Action]) -> Result<(), DeployError> {
        for a in actions {
            let (Some(active), Some((stable_version, stable))) = (&live.active, &live.stable)
            else {
                return Ok(());
            };
            match (&active.instance, stable) {
                (Running::Process(canary), Running::Process(stable)) => {
                    let stable_up = upstream(stable_version, stable);
                    let canary_up = upstream(&active.version, canary);
                    match a {
                        Action::Route(w) => {
                            let route = Route {
                                stable: stable_up,
                                canary: Some(canary_up),
                                canary_weight: *w,
                            };
                            self.serve(live, route).await?;
                        }
                        Action::Stop => self.serve(live, Route::only(stable_up)).await?,
                        Action::Finalize => self.serve(live, Route::only(canary_up)).await?,
                    }
                }
                (Running::Kube(canary), Running::Kube(stable)) => {
                    let Backend::Kube(k) = &self.backend else {
                        return Ok(());
                    };
                    let (k, c, st, a) = (Arc::clone(k), canary.clone(), stable.clone(), *a);
                    blocking(move || match a {
                        Action::Route(w) => k.route(&st, &c, w),
                        Action::Stop => k.remove_canary(&st),
                        Action::Finalize => k.promote(&c),
                    })
                    .await?;
                }
                _ => return Ok(()),
            }
            match a {
                Action::Route(_) => {}
                Action::Stop => {
                    if let Some(gone) = live.active.take() {
                        self.stop(gone.instance).await;
                    }
                }
                Action::Finalize => {
                    if let Some(done) = live.active.take()
                        && let Some((_, old)) = live.stable.replace((done.version, done.instance))
                    {
                        self.stop(old).await;
                    }
                }
            }
        }
        Ok(())
    }

    fn spawn_controller(self: &Arc<Self>, id: i64) {
        let me = Arc::clone(self);
        tokio::spawn(async move { me.control(id).await });
    }

    /// The controller of one deployment: every interval, judge, step, save.
    async fn control(self: Arc<Self>, id: i64) {
        let interval = Duration::from_millis(self.spec.plan.interval_ms);
        // The first interval starts now: the counters at the start of the canary.
        let mut marks: Option<(Counts, Counts, u64)> = {
            let live = self.live.lock().await;
            match (&live.proxy, &live.active, &live.stable) {
                (Some(p), Some(a), Some((sv, _))) => Some((
                    p.signals(&a.version).counts(),
                    p.signals(sv).counts(),
                    p.now_ms(),
                )),
                _ => None,
            }
        };
        loop {
            tokio::time::sleep(interval).await;
            let (version, stable_version, backlog, weight, baseline, proxy) = {
                let live = self.live.lock().await;
                let proxy = live.proxy.clone();
                match (&live.active, &live.stable) {
                    (Some(a), Some((sv, _))) if a.id == id => (
                        a.version.clone(),
                        sv.clone(),
                        a.canary.backlog,
                        a.canary.weight(&self.spec.plan),
                        a.canary.baseline.clone(),
                        proxy,
                    ),
                    _ => return,
                }
            };
            // Observed without holding the environment (a query may take a while).
            let observed: Option<(Observation, Observation)> = match &self.spec.metrics {
                MetricsSource::Proxy => {
                    let Some(proxy) = proxy else {
                        return;
                    };
                    let (cs, ss) = (proxy.signals(&version), proxy.signals(&stable_version));
                    let (cc, sc, at) = (cs.counts(), ss.counts(), proxy.now_ms());
                    let o = marks.as_ref().map(|(c0, s0, since)| {
                        (
                            observe(&cc.since(c0), &cs.samples_since(*since)),
                            observe(&sc.since(s0), &ss.samples_since(*since)),
                        )
                    });
                    marks = Some((cc, sc, at));
                    if o.is_none() {
                        continue;
                    }
                    o
                }
                MetricsSource::Prometheus(p) => {
                    let window = interval.as_secs().max(1);
                    let c = p.observe(&self.spec.service, &version, window).await;
                    let st = p.observe(&self.spec.service, &stable_version, window).await;
                    c.and_then(|c| st.map(|s| (c, s))).ok()
                }
            };
            let mut live = self.live.lock().await;
            if live.active.as_ref().map(|a| a.id) != Some(id) {
                return;
            }
            let Some((canary_obs, stable_obs)) = observed else {
                // The metrics source did not answer: hold, and roll back if it lasts.
                let Some(active) = live.active.as_mut() else {
                    return;
                };
                let actions = active.canary.analysed(&self.spec.plan, now_ms(), None);
                let snapshot = active.canary.clone();
                match self.save_patiently(id, &snapshot).await {
                    Ok(()) => {}
                    // Another conductor runs it now: touch nothing.
                    Err(DeployError::Fenced) => return,
                    Err(_) => {
                        let _ = self.apply(&mut live, &[Action::Stop]).await;
                        return;
                    }
                }
                let _ = self.apply(&mut live, &actions).await;
                if snapshot.done() {
                    self.notify(
                        id,
                        "deploy.rolled_back",
                        &version,
                        snapshot.reason.clone().unwrap_or_default(),
                    );
                    return;
                }
                continue;
            };
            let limits = &self.spec.plan.limits;
            let enough = stable_obs.requests >= limits.min_requests;
            // At the last step stable gets no traffic: the canary is held to stable's last
            // interval with enough of it.
            let (against, kind) = match (&baseline, weight == maestro_canary::ALL && !enough) {
                (Some(b), true) => (b.clone(), maestro_canary::Against::Baseline),
                _ => (stable_obs.clone(), maestro_canary::Against::Concurrent),
            };
            let judgement: Judgement =
                maestro_canary::judge_against(&canary_obs, &against, backlog, limits, kind);
            let Some(active) = live.active.as_mut() else {
                return;
            };
            if enough {
                active.canary.baseline = Some(stable_obs);
            }
            let actions = active
                .canary
                .analysed(&self.spec.plan, now_ms(), Some(judgement));
            let snapshot = active.canary.clone();
            match self.save_patiently(id, &snapshot).await {
                Ok(()) => {}
                // Another conductor runs it now: touch nothing (its controller steers).
                Err(DeployError::Fenced) => return,
                Err(e) => {
                    // Ended elsewhere (aborted by hand on another path) or the store failed:
                    // the route goes back to stable, never left split unwatched.
                    let _ = self.apply(&mut live, &[Action::Stop]).await;
                    self.notify(
                        id,
                        "deploy.aborted",
                        &version,
                        format!("the controller stopped: {e}"),
                    );
                    return;
                }
            }
            if let Err(e) = self.apply(&mut live, &actions).await {
                self.notify(
                    id,
                    "deploy.aborted",
                    &version,
                    format!("could not apply {actions:?}: {e}"),
                );
            }
            if snapshot.done() {
                let action = match snapshot.phase {
                    Phase::Promoted => "deploy.promoted",
                    Phase::Aborted => "deploy.aborted",
                    _ => "deploy.rolled_back",
                };
                self.notify(
                    id,
                    action,
                    &version,
                    snapshot
                        .reason
                        .clone()
                        .unwrap_or_else(|| "every step healthy".to_owned()),
                );
                return;
            }
        }
    }

    /// A manual command on the deployment in progress.
    ///
    /// # Errors
    /// When no such deployment is in progress here, or the command does not apply.
    pub async fn command(&self, id: i64, cmd: Command, why: &str) -> Result<(), DeployError> {
        let mut live = self.live.lock().await;
        let Some(active) = live.active.as_mut().filter(|a| a.id == id) else {
            return Err(DeployError::NotFound(id));
        };
        let actions = active
            .canary
            .command(&self.spec.plan, now_ms(), cmd, why)
            .map_err(DeployError::Refused)?;
        let snapshot = active.canary.clone();
        let version = active.version.clone();
        self.save(id, &snapshot).await?;
        self.apply(&mut live, &actions).await?;
        self.notify(
            id,
            &format!(
                "deploy.{}",
                match cmd {
                    Command::Pause => "paused",
                    Command::Resume => "resumed",
                    Command::Abort => "aborted",
                    Command::Promote => "promoted",
                }
            ),
            &version,
            why.to_owned(),
        );
        Ok(())
    }

    /// Stops every process of the environment (the conductor is shutting down; the
    /// deployment in progress resumes at the next start).
    pub async fn shutdown(&self) {
        self.stop_here(true).await;
    }

    /// Stops what runs on this host without touching what another conductor now steers
    /// (the lease was lost): the process driver's processes stop; on Kubernetes the
    /// cluster is left to the new holder.
    pub async fn abandon(&self) {
        self.stop_here(false).await;
    }

    async fn stop_here(&self, park: bool) {
        let mut live = self.live.lock().await;
        live.proxy = None;
        if let (true, Backend::Kube(k), Some(a), Some((_, Running::Kube(stable)))) =
            (park, &self.backend, &live.active, &live.stable)
            && let Running::Kube(canary) = &a.instance
        {
            // The cluster keeps serving: never split with nobody watching.
            let (k, st, c) = (Arc::clone(k), stable.clone(), canary.clone());
            if let Err(e) = blocking(move || k.park_canary(&st, &c)).await {
                self.notify(
                    a.id,
                    "deploy.paused",
                    &a.version,
                    format!("parking the canary at shutdown failed: {e}"),
                );
            }
        }
        if let Some(a) = live.active.take() {
            self.stop(a.instance).await;
        }
        if let Some((_, s)) = live.stable.take() {
            self.stop(s).await;
        }
    }

    /// Sets the environment's stable release by hand (a rollback to the last known-good).
    ///
    /// # Errors
    /// While a deployment is in progress, or when the release does not start.
    pub async fn set_stable(&self, release: Release) -> Result<(), DeployError> {
        let mut live = self.live.lock().await;
        if let Some(a) = &live.active {
            return Err(DeployError::Busy(a.id));
        }
        let inst = self
            .start(Track::Stable, &release.version, &release.dir, &release.env)
            .await?;
        let row = EnvironmentRow {
            name: self.spec.name.clone(),
            version: release.version.clone(),
            artifact: release.artifact.clone(),
            release_dir: release.dir.display().to_string(),
            deployment_id: None,
            updated_at_ms: i(now_ms()),
        };
        self.pool.with(move |s| s.environment_set(&row)).await?;
        self.serve_only(&mut live, &release.version, &inst).await?;
        if let Some((_, old)) = live.stable.replace((release.version, inst)) {
            self.stop(old).await;
        }
        Ok(())
    }
}

/// Which side of the split a release starts on.
#[derive(Debug, Clone, Copy)]
enum Track {
    Stable,
    Canary,
}

/// Runs a cluster call on the blocking pool.
async fn blocking(
    f: impl FnOnce() -> Result<(), KubeError> + Send + 'static,
) -> Result<(), DeployError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DeployError::Refused(format!("the driver's task failed: {e}")))?
        .map_err(DeployError::Kube)
}

fn upstream(version: &str, inst: &Instance) -> Upstream {
    Upstream {
        version: version.to_owned(),
        addr: inst.addr,
    }
}

/// One version's interval, as the judge reads it.
fn observe(c: &Counts, samples: &[maestro_proxy::Sample]) -> Observation {
    Observation {
        requests: c.requests,
        errors: c.server_errors,
        denied: c.denied,
        latencies_ms: samples
            .iter()
            .map(|s| f64::from(s.latency_us) / 1000.0)
            .collect(),
        in_flight: c.in_flight,
    }
}
