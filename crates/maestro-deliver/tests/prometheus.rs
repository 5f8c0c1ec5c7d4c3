//! The canary judged from a real Prometheus server (Debian's `prometheus` package, which
//! `.ci/run` installs) scraping the proxy every second: an error regression rolls back on
//! PromQL answers, and a Prometheus that dies mid-canary holds it, then rolls it back — it
//! never promotes blind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_canary::{Canary, Strategy};
use maestro_deliver::{Environment, MetricsSource, Prometheus, Release, Request};
use maestro_store::pool::StorePool;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// A Prometheus server scraping `target` every second.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path, target: SocketAddr) -> Server {
        let listen = free_addr();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: proxy\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .expect("config");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus runs (Debian's prometheus package; .ci/run installs it)");
        let server = Server {
            child,
            url: format!("http://{listen}"),
        };
        let t = Instant::now();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        while t.elapsed() < Duration::from_secs(30) {
            if agent
                .get(format!("{}/-/ready", server.url))
                .call()
                .is_ok_and(|r| r.status() == 200)
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "prometheus did not get ready: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn release(version: &str, env: &[(&str, &str)]) -> Release {
    maestro_deliver::testing::example_release(version, env)
}

fn request() -> Request {
    maestro_deliver::testing::request("canary judged by Prometheus")
}

/// An environment whose canary reads Prometheus, the server, and a load on it.
async fn setup(dir: &Path) -> (Arc<Environment>, Arc<StorePool>, Server) {
    let metrics = free_addr();
    let prom = Server::start(dir, metrics);
    let pool = StorePool::open(&dir.join("store.db").display().to_string(), 4).expect("store");
    let strategy = Strategy {
        steps: vec![10, 50, 100],
        interval: "3s".into(),
        window: "6s".into(),
        metrics_timeout: "6s".into(),
        progress_deadline: "3m".into(),
        limits: maestro_canary::Limits {
            min_requests: 30,
            ..maestro_canary::Limits::default()
        },
        ..Strategy::default()
    };
    let spec = maestro_deliver::testing::example_spec(
        &dir.join("envs/stage"),
        &strategy,
        MetricsSource::Prometheus(Box::new(Prometheus::new(&prom.url, Duration::from_secs(2)))),
        Some(metrics),
    );
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let env = Environment::open(spec, Arc::clone(&pool), tx, None)
        .await
        .expect("environment");
    env.deploy(release("v1", &[]), request())
        .await
        .expect("stable");
    let addr = env.addr().await.expect("serving");
    for _ in 0..16 {
        tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Empty<bytes::Bytes>>();
            let url: hyper::Uri = format!("http://{addr}/greet?name=Dai")
                .parse()
                .expect("uri");
            loop {
                if let Ok(resp) = client.get(url.clone()).await {
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
    }
    (env, pool, prom)
}

async fn ended(pool: &Arc<StorePool>, id: i64, limit: Duration) -> maestro_store::DeploymentRow {
    let t = Instant::now();
    loop {
        let d = pool
            .with(move |s| s.deployment(id))
            .await
            .expect("store")
            .expect("row");
        if !d.active() || t.elapsed() > limit {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_regression_is_caught_from_prometheus() {
    let dir = tempfile::tempdir().expect("tmp");
    let (env, pool, _prom) = setup(dir.path()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let id = env
        .deploy(release("v2", &[("HELLO_ERROR_RATE", "0.3")]), request())
        .await
        .expect("deploy");
    let d = ended(&pool, id, Duration::from_secs(60)).await;
    assert_eq!(d.status, "rolled_back", "{}", d.state);
    let c: Canary = serde_json::from_str(&d.state).expect("state");
    let reason = c.reason.unwrap_or_default();
    assert!(
        reason.contains("error rate") || reason.contains("5xx spike"),
        "{reason}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_prometheus_holds_the_canary_then_rolls_it_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let (env, pool, prom) = setup(dir.path()).await;
    let id = env
        .deploy(release("v2", &[]), request())
        .await
        .expect("deploy");
    // Let it judge once or twice, then kill the metrics source.
    tokio::time::sleep(Duration::from_secs(4)).await;
    drop(prom);
    let d = ended(&pool, id, Duration::from_secs(60)).await;
    assert_eq!(d.status, "rolled_back", "{}", d.state);
    let c: Canary = serde_json::from_str(&d.state).expect("state");
    assert!(c.timeline.iter().any(|e| e.kind == "blind"), "held first");
    assert!(
        c.reason
            .clone()
            .unwrap_or_default()
            .contains("has not answered for"),
        "{:?}",
        c.reason
    );
    assert_eq!(env.proxy().await.expect("proxy").route().canary, None);
    env.shutdown().await;
}
