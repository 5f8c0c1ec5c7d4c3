//! The Kubernetes driver's manifests checked against the published schemas: the
//! Kubernetes OpenAPI (`kubernetes-models`) and the Gateway API CRDs
//! (`@kubernetes-models/gateway-api`), from the npm registry, pinned in
//! `.ci/k8s-models` (`.ci/run` installs them). No cluster runs here.

use std::path::{Path, PathBuf};
use std::process::Command;

use maestro_deliver::kubernetes::{KubeRelease, KubeSpec, Weighting, render};
use serde_json::Value;

fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/k8s-models")
}

/// Runs the validator over `manifests`; (success, its report).
fn validate(manifests: &[Value]) -> (bool, String) {
    let dir = schemas();
    assert!(
        dir.join("node_modules").is_dir(),
        "the schemas are not installed: npm ci --prefix .ci/k8s-models (.ci/run does)"
    );
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), serde_json::to_vec(manifests).expect("json")).expect("write");
    let out = Command::new("node")
        .arg(dir.join("validate.mjs"))
        .arg(file.path())
        .output()
        .expect("node runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn spec() -> KubeSpec {
    KubeSpec {
        namespace: "stage".into(),
        name: "hello-service".into(),
        port: 8080,
        health: "/healthz".into(),
        replicas: 4,
        gateway: ("public".into(), "gateways".into()),
        hostnames: vec!["hello.stage.example.com".into()],
    }
}

fn release(version: &str) -> KubeRelease {
    KubeRelease {
        version: version.into(),
        image: format!(
            "registry.example.com/hello-service@sha256:{}",
            version.repeat(64 / version.len())
        ),
        env: vec![("HELLO_ERROR_RATE".into(), "0".into())],
    }
}

#[test]
fn every_step_renders_manifests_the_published_schemas_accept() {
    let (s, v1, v2) = (spec(), release("a1"), release("b2"));
    let mut all = Vec::new();
    all.extend(render(&s, &v1, None, Weighting::GatewayApi));
    for w in [500, 2_500, 5_000, 10_000] {
        all.extend(render(&s, &v1, Some((&v2, w)), Weighting::GatewayApi));
        all.extend(render(&s, &v1, Some((&v2, w)), Weighting::ReplicaRatio));
    }
    let (ok, report) = validate(&all);
    assert!(ok, "{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        all.len(),
        "{report}"
    );
    assert!(report.contains("ok gateway.networking.k8s.io/v1 HTTPRoute hello-service"));
}

#[test]
fn the_route_weights_and_replicas_follow_the_step() {
    let (s, v1, v2) = (spec(), release("a1"), release("b2"));
    let m = render(&s, &v1, Some((&v2, 500)), Weighting::GatewayApi);
    let route = m.iter().find(|m| m["kind"] == "HTTPRoute").expect("route");
    assert_eq!(
        weights(route),
        [
            ("hello-service-stable".to_owned(), 9_500),
            ("hello-service-canary".to_owned(), 500)
        ]
    );
    let m = render(&s, &v1, Some((&v2, 2_500)), Weighting::ReplicaRatio);
    let replicas: Vec<(String, u64)> = m
        .iter()
        .filter(|m| m["kind"] == "Deployment")
        .map(|d| {
            (
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                d["spec"]["replicas"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        replicas,
        [
            ("hello-service-stable".to_owned(), 3),
            ("hello-service-canary".to_owned(), 1)
        ]
    );
    let service = m.iter().find(|m| m["kind"] == "Service").expect("service");
    assert_eq!(
        service["spec"]["selector"],
        serde_json::json!({"app.kubernetes.io/name": "hello-service"})
    );
}

#[test]
fn the_validator_refuses_what_the_schemas_refuse() {
    let mut m = render(
        &spec(),
        &release("a1"),
        Some((&release("b2"), 500)),
        Weighting::GatewayApi,
    );
    let route = m
        .iter_mut()
        .find(|m| m["kind"] == "HTTPRoute")
        .expect("route");
    route["spec"]["rules"][0]["backendRefs"][0]["port"] = Value::from("eighty");
    let deploy = m
        .iter_mut()
        .find(|m| m["kind"] == "Deployment")
        .expect("deployment");
    deploy["spec"]["replicas"] = Value::from("three");
    let (ok, report) = validate(&m);
    assert!(!ok, "{report}");
    assert!(
        report.contains("INVALID gateway.networking.k8s.io/v1 HTTPRoute hello-service"),
        "{report}"
    );
    assert!(report.contains("port must be integer"), "{report}");
    assert!(
        report.contains("INVALID apps/v1 Deployment hello-service-stable"),
        "{report}"
    );
}

// ---- The driver against an API server that follows the published conventions -------------

mod apiserver;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use apiserver::ApiServer;
use maestro_deliver::cluster::{Cluster, KubeError};
use maestro_deliver::kubernetes::{KubeTarget, RELEASE_FILE};

const STABLE: &str = "/apis/apps/v1/namespaces/stage/deployments/hello-service-stable";
const CANARY: &str = "/apis/apps/v1/namespaces/stage/deployments/hello-service-canary";
const CANARY_SVC: &str = "/api/v1/namespaces/stage/services/hello-service-canary";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/stage/httproutes/hello-service";

/// Every object sent is one the published schemas accept.
fn schemas_accept(objects: &[Value]) {
    let (ok, report) = validate(objects);
    assert!(ok, "{report}");
}

fn target(api: &ApiServer, weighting: Weighting) -> KubeTarget {
    KubeTarget {
        cluster: Cluster::unauthenticated(&api.url(), "stage").expect("cluster"),
        spec: spec(),
        weighting,
        env: BTreeMap::from([("LOG_LEVEL".to_owned(), "info".to_owned())]),
        ready_timeout: Duration::from_secs(5),
    }
}

fn image(d: &Value) -> String {
    d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn weights(route: &Value) -> Vec<(String, u64)> {
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_owned(),
                b["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn a_canary_on_a_gateway_route_promotes_and_a_second_one_is_removed() {
    let api = ApiServer::start(true);
    let t = target(&api, Weighting::GatewayApi);
    let (v1, v2, v3) = (release("a1"), release("b2"), release("c3"));
    t.set_stable(&v1).expect("stable");
    assert_eq!(
        weights(&api.object(ROUTE).expect("route")),
        [("hello-service-stable".to_owned(), 10_000)]
    );

    t.start_canary(&v2).expect("canary rolls out");
    assert!(api.object(CANARY_SVC).is_some());
    t.route(&v1, &v2, 2_500).expect("route");
    assert_eq!(
        weights(&api.object(ROUTE).expect("route")),
        [
            ("hello-service-stable".to_owned(), 7_500),
            ("hello-service-canary".to_owned(), 2_500)
        ]
    );
    t.route(&v1, &v2, 10_000).expect("route");
    t.promote(&v2).expect("promote");
    let stable = api.object(STABLE).expect("stable");
    assert_eq!(
        image(&stable),
        v2.image,
        "stable now runs the canary's image"
    );
    assert_eq!(stable["metadata"]["generation"], 2, "updated in place");
    assert_eq!(
        weights(&api.object(ROUTE).expect("route")),
        [("hello-service-stable".to_owned(), 10_000)]
    );
    assert!(api.object(CANARY).is_none() && api.object(CANARY_SVC).is_none());
    // While the new stable rolled out, the canary still had all the traffic: the route went
    // back to stable only after the stable rollout, and the canary was deleted last.
    let log = api.log();
    let last_route = log
        .iter()
        .rposition(|l| l == &format!("PATCH {ROUTE}"))
        .expect("route applied");
    let stable_patch = log
        .iter()
        .rposition(|l| l == &format!("PATCH {STABLE}"))
        .expect("stable applied");
    let delete = log
        .iter()
        .position(|l| l == &format!("DELETE {CANARY}"))
        .expect("canary deleted");
    assert!(stable_patch < last_route && last_route < delete, "{log:#?}");

    // A second canary, taken out: the route back first, stable untouched.
    t.start_canary(&v3).expect("canary");
    t.route(&v2, &v3, 500).expect("route");
    t.remove_canary(&v2).expect("removed");
    assert_eq!(image(&api.object(STABLE).expect("stable")), v2.image);
    assert_eq!(
        weights(&api.object(ROUTE).expect("route")),
        [("hello-service-stable".to_owned(), 10_000)]
    );
    assert!(api.object(CANARY).is_none());

    schemas_accept(&api.applied());
}

#[test]
fn a_replica_ratio_never_scales_stable_down_on_removal() {
    let api = ApiServer::start(false);
    let t = target(&api, Weighting::ReplicaRatio);
    let (v1, v2) = (release("a1"), release("b2"));
    t.set_stable(&v1).expect("stable");
    t.start_canary(&v2).expect("canary");
    t.route(&v1, &v2, 5_000).expect("route");
    let replicas = |p: &str| api.object(p).expect("object")["spec"]["replicas"].clone();
    assert_eq!((replicas(STABLE), replicas(CANARY)), (2.into(), 2.into()));
    t.remove_canary(&v1).expect("removed");
    assert_eq!(replicas(STABLE), 4);
    assert!(api.object(CANARY).is_none());
    let stable_sizes: Vec<i64> = api
        .applied()
        .iter()
        .filter(|o| o["metadata"]["name"] == "hello-service-stable")
        .map(|o| o["spec"]["replicas"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(
        stable_sizes,
        [4, 2, 4],
        "down only for a step, back up before the canary goes"
    );
    schemas_accept(&api.applied());
}

#[test]
fn the_cluster_refusals_are_named() {
    // A canary that never becomes ready: the progress deadline, at once.
    let api = ApiServer::start(true);
    let t = target(&api, Weighting::GatewayApi);
    t.set_stable(&release("a1")).expect("stable");
    let mut bad = release("b2");
    bad.image = format!("registry.example.com/unready@sha256:{}", "b".repeat(64));
    let e = t.start_canary(&bad).expect_err("never ready");
    assert!(
        matches!(&e, KubeError::NotReady { why, .. } if why.contains("progress deadline exceeded")),
        "{e}"
    );

    // No Gateway API on the cluster: the route's apply says so.
    let api = ApiServer::start(false);
    let t = target(&api, Weighting::GatewayApi);
    let e = t.set_stable(&release("a1")).expect_err("no CRD");
    let text = e.to_string();
    assert!(
        text.contains("HTTP 404") && text.contains("httproutes"),
        "{text}"
    );
}

#[test]
fn a_release_names_its_image_pinned_by_digest() {
    let dir = tempfile::tempdir().expect("tmp");
    let e = maestro_deliver::kubernetes::release_image(dir.path()).expect_err("no file");
    assert!(e.to_string().contains(RELEASE_FILE), "{e}");
    std::fs::write(
        dir.path().join(RELEASE_FILE),
        r#"{"image": "registry.example.com/hello:latest"}"#,
    )
    .expect("write");
    let e = maestro_deliver::kubernetes::release_image(dir.path()).expect_err("a tag");
    assert!(e.to_string().contains("not pinned by digest"), "{e}");
    let pinned = format!("registry.example.com/hello@sha256:{}", "0a".repeat(32));
    std::fs::write(
        dir.path().join(RELEASE_FILE),
        format!(r#"{{"image": "{pinned}"}}"#),
    )
    .expect("write");
    assert_eq!(
        maestro_deliver::kubernetes::release_image(dir.path()).expect("pinned"),
        pinned
    );
}

// ---- The environment on Kubernetes: the runtime's controller steering the cluster ----------

fn kube_release_dir(root: &std::path::Path, version: &str, digit: char) -> std::path::PathBuf {
    let dir = root.join(version);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join(RELEASE_FILE),
        format!(
            r#"{{"image": "registry.example.com/hello-service@sha256:{}"}}"#,
            digit.to_string().repeat(64)
        ),
    )
    .expect("write");
    dir
}

async fn kube_env(
    api: &ApiServer,
    root: &std::path::Path,
    prometheus: &str,
) -> (
    Arc<maestro_deliver::Environment>,
    Arc<maestro_store::pool::StorePool>,
    tokio::sync::mpsc::UnboundedReceiver<maestro_deliver::Notice>,
) {
    let strategy = maestro_canary::Strategy {
        steps: vec![10, 50, 100],
        interval: "1s".into(),
        window: "2s".into(),
        metrics_timeout: "3s".into(),
        progress_deadline: "2m".into(),
        ..maestro_canary::Strategy::default()
    };
    let mut spec = maestro_deliver::testing::example_spec(
        &root.join("envs/stage"),
        &strategy,
        maestro_deliver::MetricsSource::Prometheus(Box::new(maestro_deliver::Prometheus::new(
            prometheus,
            Duration::from_millis(500),
        ))),
        None,
    );
    spec.driver = maestro_deliver::Driver::Kubernetes(Box::new(target(api, Weighting::GatewayApi)));
    let db = root.join("store.db").display().to_string();
    let pool = maestro_store::pool::StorePool::open(&db, 4).expect("store");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let env = maestro_deliver::Environment::open(spec, Arc::clone(&pool), tx, None)
        .await
        .expect("environment");
    (env, pool, rx)
}

fn kube_release(root: &std::path::Path, version: &str, digit: char) -> maestro_deliver::Release {
    maestro_deliver::Release {
        version: version.into(),
        artifact: format!("sha256:{version}"),
        dir: kube_release_dir(root, version, digit),
        env: BTreeMap::from([("HELLO_ERROR_RATE".to_owned(), "0".to_owned())]),
    }
}

async fn ended(
    pool: &Arc<maestro_store::pool::StorePool>,
    id: i64,
    limit: Duration,
) -> maestro_store::DeploymentRow {
    let start = std::time::Instant::now();
    loop {
        let d = pool
            .with(move |s| s.deployment(id))
            .await
            .expect("store")
            .expect("deployment");
        if !matches!(d.status.as_str(), "progressing" | "paused") || start.elapsed() > limit {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_kubernetes_a_dead_metrics_source_rolls_the_canary_back_and_a_manual_promote_lands() {
    let api = ApiServer::start(true);
    let root = tempfile::tempdir().expect("tmp");
    // Nothing listens at this Prometheus: the canary may never promote blind.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let (env, pool, _rx) = kube_env(&api, root.path(), &dead).await;
    let req = maestro_deliver::testing::request("ship");
    env.deploy(kube_release(root.path(), "v1", '1'), req.clone())
        .await
        .expect("first release");
    assert!(env.addr().await.is_none(), "no local proxy on Kubernetes");
    assert_eq!(
        weights(&api.object(ROUTE).expect("route")),
        [("hello-service-stable".to_owned(), 10_000)]
    );

    let id = env
        .deploy(kube_release(root.path(), "v2", '2'), req.clone())
        .await
        .expect("canary");
    assert_eq!(
        weights(&api.object(ROUTE).expect("route"))[1],
        ("hello-service-canary".to_owned(), 1_000),
        "the first step's weight on the route"
    );
    let d = ended(&pool, id, Duration::from_secs(90)).await;
    assert_eq!(d.status, "rolled_back", "{}", d.state);
    assert!(d.state.contains("metrics"), "{}", d.state);
    assert!(api.object(CANARY).is_none(), "the canary was deleted");
    assert_eq!(
        weights(&api.object(ROUTE).expect("route")),
        [("hello-service-stable".to_owned(), 10_000)]
    );
    assert_eq!(
        image(&api.object(STABLE).expect("stable")),
        format!(
            "registry.example.com/hello-service@sha256:{}",
            "1".repeat(64)
        )
    );

    // A release promoted by hand (an audited override) lands on the cluster as stable.
    let id = env
        .deploy(kube_release(root.path(), "v3", '3'), req)
        .await
        .expect("canary");
    env.command(
        id,
        maestro_canary::Command::Promote,
        "stable is broken; shipping the fix",
    )
    .await
    .expect("promote");
    let d = ended(&pool, id, Duration::from_secs(60)).await;
    assert_eq!(d.status, "promoted");
    assert_eq!(
        image(&api.object(STABLE).expect("stable")),
        format!(
            "registry.example.com/hello-service@sha256:{}",
            "3".repeat(64)
        )
    );
    assert!(api.object(CANARY).is_none());
    schemas_accept(&api.applied());
    env.shutdown().await;
}
