//! The Kubernetes driver's manifests: a stable and a canary `Deployment`, their
//! `Service`s, and a Gateway API `HTTPRoute` whose backend weights split the traffic — or,
//! on a cluster without the Gateway API, one `Service` over both Deployments with the
//! split approximated by their replica counts.
//!
//! Rendering is pure (JSON objects, which `kubectl apply -f` and server-side apply take as
//! they are); the tests check every manifest against the published Kubernetes and Gateway
//! API schemas. No cluster runs in this project's tests.

use serde_json::{Value, json};

/// How the traffic is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// `HTTPRoute` backend weights (exact).
    GatewayApi,
    /// Replica counts behind one Service (approximate: the canary gets its share of pods).
    ReplicaRatio,
}

/// A service on Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSpec {
    pub namespace: String,
    /// The service's name: Deployments are `<name>-stable` / `<name>-canary`.
    pub name: String,
    pub port: u16,
    /// Path of the readiness probe (`/healthz`).
    pub health: String,
    /// Replicas of the whole service (split by the ratio in [`Weighting::ReplicaRatio`]).
    pub replicas: u32,
    /// The Gateway the route attaches to: (name, namespace).
    pub gateway: (String, String),
    pub hostnames: Vec<String>,
}

/// One release: its version label and image (by digest, ideally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeRelease {
    pub version: String,
    pub image: String,
    pub env: Vec<(String, String)>,
}

const TRACK: &str = "maestro.dev/track";

fn labels(spec: &KubeSpec, track: &str) -> Value {
    json!({
        "app.kubernetes.io/name": spec.name,
        "app.kubernetes.io/managed-by": "maestro",
        TRACK: track,
    })
}

fn deployment(spec: &KubeSpec, r: &KubeRelease, track: &str, replicas: u32) -> Value {
    let mut pod_labels = labels(spec, track);
    pod_labels["app.kubernetes.io/version"] = json!(r.version);
    let env: Vec<Value> = r
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("{}-{track}", spec.name),
            "namespace": spec.namespace,
            "labels": pod_labels,
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels(spec, track)},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [{
                        "name": spec.name,
                        "image": r.image,
                        "ports": [{"name": "http", "containerPort": spec.port}],
                        "env": env,
                        "readinessProbe": {
                            "httpGet": {"path": spec.health, "port": "http"},
                            "periodSeconds": 2,
                            "failureThreshold": 3,
                        },
                    }],
                },
            },
        },
    })
}

fn service(spec: &KubeSpec, name: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/managed-by": "maestro"},
        },
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http"}],
        },
    })
}

/// Canary and stable replicas for a canary weight (basis points) out of `total`: the
/// canary's share rounded up (a canary with traffic has at least one pod), stable keeping
/// at least one while the canary is not at 100%.
#[must_use]
pub fn replica_split(total: u32, weight: u32) -> (u32, u32) {
    let total = total.max(1);
    if weight == 0 {
        return (0, total);
    }
    if weight >= crate::ALL_WEIGHT {
        return (total, 0);
    }
    let canary = (u64::from(total) * u64::from(weight)).div_ceil(u64::from(crate::ALL_WEIGHT));
    let canary = u32::try_from(canary).unwrap_or(total).clamp(1, total);
    let stable = total.saturating_sub(canary).max(1);
    (canary, stable)
}

/// The manifests for `stable` alone or with `canary` at `weight` basis points.
#[must_use]
pub fn render(
    spec: &KubeSpec,
    stable: &KubeRelease,
    canary: Option<(&KubeRelease, u32)>,
    weighting: Weighting,
) -> Vec<Value> {
    let mut out = Vec::new();
    match weighting {
        Weighting::GatewayApi => {
            let w = canary.map_or(0, |(_, w)| w.min(crate::ALL_WEIGHT));
            out.push(deployment(spec, stable, "stable", spec.replicas));
            out.push(service(
                spec,
                &format!("{}-stable", spec.name),
                labels(spec, "stable"),
            ));
            let mut backends = vec![json!({
                "name": format!("{}-stable", spec.name),
                "port": spec.port,
                "weight": crate::ALL_WEIGHT - w,
            })];
            if let Some((c, _)) = canary {
                out.push(deployment(spec, c, "canary", spec.replicas));
                out.push(service(
                    spec,
                    &format!("{}-canary", spec.name),
                    labels(spec, "canary"),
                ));
                backends.push(json!({
                    "name": format!("{}-canary", spec.name),
                    "port": spec.port,
                    "weight": w,
                }));
            }
            out.push(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {
                    "name": spec.name,
                    "namespace": spec.namespace,
                    "labels": {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/managed-by": "maestro"},
                },
                "spec": {
                    "parentRefs": [{"name": spec.gateway.0, "namespace": spec.gateway.1}],
                    "hostnames": spec.hostnames,
                    "rules": [{"backendRefs": backends}],
                },
            }));
        }
        Weighting::ReplicaRatio => {
            let (c_replicas, s_replicas) =
                replica_split(spec.replicas, canary.map_or(0, |(_, w)| w));
            out.push(deployment(spec, stable, "stable", s_replicas));
            if let Some((c, _)) = canary {
                out.push(deployment(spec, c, "canary", c_replicas));
            }
            out.push(service(
                spec,
                &spec.name,
                json!({"app.kubernetes.io/name": spec.name}),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ratios() {
        assert_eq!(replica_split(10, 500), (1, 9), "5% still gets a pod");
        assert_eq!(replica_split(10, 2_500), (3, 7));
        assert_eq!(replica_split(10, 5_000), (5, 5));
        assert_eq!(
            replica_split(4, 9_000),
            (4, 1),
            "stable keeps one pod below 100%"
        );
        assert_eq!(replica_split(10, 10_000), (10, 0));
        assert_eq!(replica_split(10, 0), (0, 10));
    }
}
