//! Canaries end to end with real processes and real traffic: the example service
//! (`examples/hello-service`, failure injection set at start) behind the proxy, a load
//! generator sending greetings, the controller judging every interval against a SQLite
//! store. A healthy canary promotes through every step; an error-rate and a latency
//! regression each roll back; too little traffic holds the step; a conductor killed
//! mid-canary resumes it on restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use maestro_canary::{Canary, Command, Phase, Strategy};
use maestro_deliver::{EnvSpec, Environment, Notice, Release, Request};
use maestro_store::pool::StorePool;
use tokio::sync::mpsc;

struct World {
    dir: tempfile::TempDir,
    pool: Arc<StorePool>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("store.db").display().to_string();
        let pool = StorePool::open(&db, 4).expect("store");
        World { dir, pool }
    }

    fn spec(&self) -> EnvSpec {
        let strategy = Strategy {
            steps: vec![10, 50, 100],
            interval: "1s".into(),
            window: "2s".into(),
            progress_deadline: "2m".into(),
            limits: maestro_canary::Limits {
                min_requests: 30,
                ..maestro_canary::Limits::default()
            },
            ..Strategy::default()
        };
        maestro_deliver::testing::example_spec(
            &self.dir.path().join("envs/stage"),
            &strategy,
            maestro_deliver::MetricsSource::Proxy,
            None,
        )
    }

    async fn open(&self) -> (Arc<Environment>, mpsc::UnboundedReceiver<Notice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let env = Environment::open(self.spec(), Arc::clone(&self.pool), tx, None)
            .await
            .expect("environment");
        (env, rx)
    }

    async fn stable(&self) -> maestro_store::EnvironmentRow {
        self.pool
            .with(|s| s.environment("stage"))
            .await
            .expect("store")
            .expect("a stable release")
    }

    async fn deployment(&self, id: i64) -> maestro_store::DeploymentRow {
        self.pool
            .with(move |s| s.deployment(id))
            .await
            .expect("store")
            .expect("deployment")
    }
}

fn release(version: &str, env: &[(&str, &str)]) -> Release {
    maestro_deliver::testing::example_release(version, env)
}

fn request() -> Request {
    maestro_deliver::testing::request("ship greetings in Welsh")
}

/// Greetings at about `rate` per second through the proxy until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, rate: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let workers = 16;
        for _ in 0..workers {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
                let gap = Duration::from_micros(1_000_000 * workers / rate);
                let url: hyper::Uri = format!("http://{addr}/greet?name=Dai&lang=en")
                    .parse()
                    .expect("uri");
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if let Ok(resp) = client.get(url.clone()).await {
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(gap.saturating_sub(t.elapsed())).await;
                }
            });
        }
        Load { stop, sent }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Waits until the deployment has ended (or `limit` passes); its final row.
async fn ended(w: &World, id: i64, limit: Duration) -> maestro_store::DeploymentRow {
    let t = Instant::now();
    loop {
        let d = w.deployment(id).await;
        if !d.active() || t.elapsed() > limit {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn state(d: &maestro_store::DeploymentRow) -> Canary {
    serde_json::from_str(&d.state).expect("state")
}

async fn with_stable(w: &World) -> (Arc<Environment>, mpsc::UnboundedReceiver<Notice>, Load) {
    let (env, rx) = w.open().await;
    let first = env
        .deploy(release("v1", &[]), request())
        .await
        .expect("first release");
    assert_eq!(
        w.deployment(first).await.status,
        "promoted",
        "a first release is stable at once"
    );
    let load = Load::start(env.addr().await.expect("serving"), 600);
    (env, rx, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_promotes_through_every_step() {
    let w = World::new();
    let (env, mut rx, load) = with_stable(&w).await;
    let id = env
        .deploy(release("v2", &[]), request())
        .await
        .expect("deploy");
    let d = ended(&w, id, Duration::from_secs(60)).await;
    assert_eq!(d.status, "promoted", "{}", d.state);
    let c = state(&d);
    let steps: Vec<u32> = c
        .timeline
        .iter()
        .filter(|e| e.kind == "step" || e.kind == "started")
        .map(|e| e.weight)
        .collect();
    assert_eq!(steps, [1_000, 5_000, 10_000]);
    let stable = w.stable().await;
    assert_eq!(stable.version, "v2");
    let proxy = env.proxy().await.expect("proxy");
    let before = proxy.signals("v2").counts().requests;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(proxy.signals("v2").counts().requests > before, "v2 serves");
    assert_eq!(proxy.route().canary, None);
    assert!(load.sent.load(Ordering::Relaxed) > 1_000);
    let mut actions = Vec::new();
    while let Ok(n) = rx.try_recv() {
        actions.push(n.action);
    }
    assert!(
        actions.ends_with(&["deploy.started".to_owned(), "deploy.promoted".to_owned()]),
        "{actions:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_regression_rolls_back_to_stable() {
    let w = World::new();
    let (env, _rx, _load) = with_stable(&w).await;
    // How fast the rollback comes is measured by bench/canary, not asserted here: a busy
    // machine may take longer, and the outcome is what this test checks.
    let id = env
        .deploy(release("v2", &[("HELLO_ERROR_RATE", "0.3")]), request())
        .await
        .expect("deploy");
    let d = ended(&w, id, Duration::from_secs(120)).await;
    assert_eq!(d.status, "rolled_back", "{}", d.state);
    let c = state(&d);
    assert_eq!(c.phase, Phase::RolledBack);
    let reason = c.reason.clone().expect("reason");
    assert!(
        reason.contains("error rate") || reason.contains("5xx spike"),
        "{reason}"
    );
    let proxy = env.proxy().await.expect("proxy");
    assert_eq!(proxy.route().canary, None, "all traffic on stable");
    assert_eq!(proxy.route().stable.version, "v1");
    let stable = w.stable().await;
    assert_eq!(stable.version, "v1");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_regression_rolls_back() {
    let w = World::new();
    let (env, _rx, _load) = with_stable(&w).await;
    let id = env
        .deploy(release("v2", &[("HELLO_LATENCY_MS", "150")]), request())
        .await
        .expect("deploy");
    let d = ended(&w, id, Duration::from_secs(60)).await;
    assert_eq!(d.status, "rolled_back", "{}", d.state);
    let reason = state(&d).reason.unwrap_or_default();
    assert!(reason.contains("latency p95"), "{reason}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_holds_the_step_and_abort_returns_to_stable() {
    let w = World::new();
    let (env, _rx) = w.open().await;
    env.deploy(release("v1", &[]), request())
        .await
        .expect("first release");
    // A trickle: a few requests a second, far under 50 per interval.
    let _load = Load::start(env.addr().await.expect("serving"), 8);
    let id = env
        .deploy(release("v2", &[("HELLO_ERROR_RATE", "0.3")]), request())
        .await
        .expect("deploy");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let d = w.deployment(id).await;
    assert_eq!(
        d.status, "progressing",
        "no verdict on thin traffic: {}",
        d.state
    );
    let c = state(&d);
    assert_eq!(c.step, 0, "held at the first step");
    assert!(
        c.timeline
            .iter()
            .any(|e| e.verdict == Some(maestro_canary::Verdict::Inconclusive))
    );
    env.command(
        id,
        Command::Abort,
        "alice: not enough traffic in stage today",
    )
    .await
    .expect("abort");
    let d = w.deployment(id).await;
    assert_eq!(d.status, "aborted");
    assert_eq!(env.proxy().await.expect("proxy").route().canary, None);
    env.shutdown().await;
}

#[test]
fn a_conductor_killed_mid_canary_resumes_it_on_restart() {
    let w = World::new();
    let id = {
        // The first conductor, on a runtime of its own that dies mid-canary.
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let id = rt.block_on(async {
            let (env, _rx, load) = with_stable(&w).await;
            let id = env
                .deploy(release("v2", &[]), request())
                .await
                .expect("deploy");
            // Wait for the second step, then die without stopping anything.
            let t = Instant::now();
            while state(&w.deployment(id).await).step < 1 && t.elapsed() < Duration::from_secs(90) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::mem::forget(load);
            std::mem::forget(env);
            id
        });
        rt.shutdown_background();
        id
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let before = w.deployment(id).await;
        assert_eq!(before.status, "progressing");
        assert!(state(&before).step >= 1);
        let (env, mut rx) = w.open().await;
        let n = rx.recv().await.expect("notice");
        assert_eq!(n.action, "deploy.resumed");
        let route = env.proxy().await.expect("proxy").route();
        assert_eq!(
            route.canary.map(|c| c.version),
            Some("v2".to_owned()),
            "the split is back"
        );
        assert!(route.canary_weight >= 5_000);
        let _load = Load::start(env.addr().await.expect("serving"), 600);
        let d = ended(&w, id, Duration::from_secs(60)).await;
        assert_eq!(d.status, "promoted", "{}", d.state);
        env.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_whose_lease_lapsed_writes_nothing_more() {
    let w = World::new();
    let now = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms")
    };
    let t0 = now();
    let lease = w
        .pool
        .with(move |s| s.lease_acquire("environment:stage", "conductor-a", 4_000, t0))
        .await
        .expect("store")
        .expect("free");
    let expires = lease.expires_at_ms;
    let (tx, _rx) = mpsc::unbounded_channel();
    let env = Environment::open(w.spec(), Arc::clone(&w.pool), tx, Some(lease))
        .await
        .expect("environment");
    env.deploy(release("v1", &[]), request())
        .await
        .expect("first release");
    let load = Load::start(env.addr().await.expect("serving"), 300);
    let id = env
        .deploy(release("v2", &[]), request())
        .await
        .expect("canary");
    // a's lease lapses (nobody renews it) and b takes the environment over.
    let wait = u64::try_from(expires - now() + 200).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let taken = now();
    w.pool
        .with(move |s| s.lease_acquire("environment:stage", "conductor-b", 60_000, taken))
        .await
        .expect("store")
        .expect("lapsed: b gets it");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = w.deployment(id).await;
    assert_eq!(d.status, "progressing", "a did not end it: {}", d.state);
    assert!(
        d.updated_at_ms < expires,
        "a wrote nothing after its lease lapsed ({} ≥ {expires})",
        d.updated_at_ms
    );
    // A command on the fenced environment is refused too.
    let e = env
        .command(id, Command::Abort, "from the old holder")
        .await
        .expect_err("fenced");
    assert!(e.to_string().contains("lease"), "{e}");
    assert_eq!(w.deployment(id).await.status, "progressing");
    drop(load);
    env.abandon().await;
}
