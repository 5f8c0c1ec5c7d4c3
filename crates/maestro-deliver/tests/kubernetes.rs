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
    let weights: Vec<(String, u64)> = route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_owned(),
                b["weight"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        weights,
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
