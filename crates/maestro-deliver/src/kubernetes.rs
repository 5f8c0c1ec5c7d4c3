//! The Kubernetes driver's manifests: a stable and a canary `Deployment`, their
//! `Service`s, and a Gateway API `HTTPRoute` whose backend weights split the traffic — or,
//! on a cluster without the Gateway API, one `Service` over both Deployments with the
//! split approximated by their replica counts.
//!
//! Rendering is pure (JSON objects, which `kubectl apply -f` and server-side apply take as
//! they are); the tests check every manifest against the published Kubernetes and Gateway
//! API schemas. [`KubeDriver`] applies them through the cluster's API ([`crate::cluster`]).
//! No cluster runs in this project's tests: they run the driver against an API server that
//! follows the published API conventions (paths, server-side apply, `Status` errors,
//! Deployment status) and validate every object it was sent against the schemas.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Cluster, KubeError, object_path};

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

/// The `Deployment` of one track (`stable` or `canary`).
#[must_use]
pub fn deployment(spec: &KubeSpec, r: &KubeRelease, track: &str, replicas: u32) -> Value {
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

/// The `Service` of one track (Gateway API: each track is a backend of the route).
#[must_use]
pub fn track_service(spec: &KubeSpec, track: &str) -> Value {
    service(spec, &format!("{}-{track}", spec.name), labels(spec, track))
}

/// The one `Service` over both tracks (replica ratio).
#[must_use]
pub fn shared_service(spec: &KubeSpec) -> Value {
    service(
        spec,
        &spec.name,
        json!({"app.kubernetes.io/name": spec.name}),
    )
}

/// The `HTTPRoute`: all to stable, or `weight` basis points to the canary.
#[must_use]
pub fn route(spec: &KubeSpec, canary_weight: Option<u32>) -> Value {
    let w = canary_weight.map_or(0, |w| w.min(crate::ALL_WEIGHT));
    let mut backends = vec![json!({
        "name": format!("{}-stable", spec.name),
        "port": spec.port,
        "weight": crate::ALL_WEIGHT - w,
    })];
    if canary_weight.is_some() {
        backends.push(json!({
            "name": format!("{}-canary", spec.name),
            "port": spec.port,
            "weight": w,
        }));
    }
    json!({
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
            out.push(deployment(spec, stable, "stable", spec.replicas));
            out.push(track_service(spec, "stable"));
            if let Some((c, _)) = canary {
                out.push(deployment(spec, c, "canary", spec.replicas));
                out.push(track_service(spec, "canary"));
            }
            out.push(route(spec, canary.map(|(_, w)| w)));
        }
        Weighting::ReplicaRatio => {
            let (c_replicas, s_replicas) =
                replica_split(spec.replicas, canary.map_or(0, |(_, w)| w));
            out.push(deployment(spec, stable, "stable", s_replicas));
            if let Some((c, _)) = canary {
                out.push(deployment(spec, c, "canary", c_replicas));
            }
            out.push(shared_service(spec));
        }
    }
    out
}

/// The file in a release that names its container image, pinned by digest. The release's
/// signature covers it, so the cluster runs exactly what was verified.
pub const RELEASE_FILE: &str = "maestro-release.json";

/// The image a release names in [`RELEASE_FILE`] (`{"image": "REPO@sha256:<64 hex>"}`).
///
/// # Errors
/// [`KubeError::Object`] naming the file and what is wrong (missing, not JSON, no image, an
/// image not pinned by digest).
pub fn release_image(dir: &Path) -> Result<String, KubeError> {
    use std::io::Read as _;
    let path = dir.join(RELEASE_FILE);
    let bad = |why: String| KubeError::Object(format!("{}: {why}", path.display()));
    let mut text = Vec::new();
    std::fs::File::open(&path)
        .map_err(|e| {
            bad(format!(
                "{e} (a release for Kubernetes names its image there)"
            ))
        })?
        .take(64 * 1024)
        .read_to_end(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let image = v["image"]
        .as_str()
        .ok_or_else(|| bad("no `image`".to_owned()))?;
    let pinned = image.rsplit_once("@sha256:").is_some_and(|(repo, hex)| {
        !repo.is_empty()
            && hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !pinned {
        return Err(bad(format!(
            "image `{image}` is not pinned by digest: REPO@sha256:<64 hex digits>"
        )));
    }
    Ok(image.to_owned())
}

/// A Kubernetes environment: where and how its releases run.
#[derive(Debug, Clone)]
pub struct KubeTarget {
    pub cluster: Cluster,
    pub spec: KubeSpec,
    pub weighting: Weighting,
    /// Variables every release gets (before its own).
    pub env: BTreeMap<String, String>,
    /// How long a Deployment may take to roll out.
    pub ready_timeout: Duration,
}

impl KubeTarget {
    /// The release in `dir` as it runs here.
    ///
    /// # Errors
    /// When the release names no pinned image.
    pub fn release(
        &self,
        version: &str,
        dir: &Path,
        extra: &BTreeMap<String, String>,
    ) -> Result<KubeRelease, KubeError> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(KubeRelease {
            version: version.to_owned(),
            image: release_image(dir)?,
            env: env.into_iter().collect(),
        })
    }

    fn apply_all(&self, objects: &[Value]) -> Result<(), KubeError> {
        for o in objects {
            self.cluster.apply(o)?;
        }
        Ok(())
    }

    fn delete(&self, obj: &Value) -> Result<(), KubeError> {
        self.cluster.delete(&object_path(obj)?)
    }

    fn rollout(&self, track: &str) -> Result<(), KubeError> {
        self.cluster.rollout(
            &self.spec.namespace,
            &format!("{}-{track}", self.spec.name),
            self.ready_timeout,
        )
    }

    /// Makes `stable` the environment's only release, serving everything: its Deployment
    /// (rolled out), its Service, the route (or the shared Service).
    ///
    /// # Errors
    /// API errors; a Deployment that does not roll out in time.
    pub fn set_stable(&self, stable: &KubeRelease) -> Result<(), KubeError> {
        let s = &self.spec;
        self.cluster
            .apply(&deployment(s, stable, "stable", s.replicas))?;
        match self.weighting {
            Weighting::GatewayApi => {
                self.cluster.apply(&track_service(s, "stable"))?;
                self.rollout("stable")?;
                self.cluster.apply(&route(s, None))?;
            }
            Weighting::ReplicaRatio => {
                self.cluster.apply(&shared_service(s))?;
                self.rollout("stable")?;
            }
        }
        Ok(())
    }

    /// Starts the canary and waits for it to roll out. Behind a route it gets no traffic
    /// yet; with a replica ratio it serves from its first ready pod (one pod, the ratio's
    /// smallest share).
    ///
    /// # Errors
    /// API errors; a canary that does not roll out in time (its progress deadline passed).
    pub fn start_canary(&self, canary: &KubeRelease) -> Result<(), KubeError> {
        let s = &self.spec;
        match self.weighting {
            Weighting::GatewayApi => {
                self.cluster
                    .apply(&deployment(s, canary, "canary", s.replicas))?;
                self.cluster.apply(&track_service(s, "canary"))?;
            }
            Weighting::ReplicaRatio => {
                self.cluster.apply(&deployment(s, canary, "canary", 1))?;
            }
        }
        self.rollout("canary")
    }

    /// Sends `weight` basis points to the canary.
    ///
    /// # Errors
    /// API errors.
    pub fn route(
        &self,
        stable: &KubeRelease,
        canary: &KubeRelease,
        weight: u32,
    ) -> Result<(), KubeError> {
        let s = &self.spec;
        match self.weighting {
            Weighting::GatewayApi => self.cluster.apply(&route(s, Some(weight))).map(drop),
            Weighting::ReplicaRatio => {
                let (c, st) = replica_split(s.replicas, weight);
                // Up before down: the side growing first, so capacity never dips.
                let (grow, shrink) = (
                    deployment(s, canary, "canary", c),
                    deployment(s, stable, "stable", st),
                );
                self.apply_all(&[grow, shrink])
            }
        }
    }

    /// Takes the canary out: all traffic to stable at once (stable back to its full
    /// replicas first, with a replica ratio), then the canary's objects deleted. Stable is
    /// never scaled down here.
    ///
    /// # Errors
    /// API errors (the route is put back before anything is deleted).
    pub fn remove_canary(&self, stable: &KubeRelease) -> Result<(), KubeError> {
        let s = &self.spec;
        match self.weighting {
            Weighting::GatewayApi => {
                self.cluster.apply(&route(s, None))?;
                self.delete(&deployment(s, stable, "canary", 0))?;
                self.delete(&track_service(s, "canary"))?;
            }
            Weighting::ReplicaRatio => {
                self.cluster
                    .apply(&deployment(s, stable, "stable", s.replicas))?;
                self.rollout("stable")?;
                self.delete(&deployment(s, stable, "canary", 0))?;
            }
        }
        Ok(())
    }

    /// Holds the canary without traffic (the conductor is stopping; it resumes at the next
    /// start): the route back to stable, or the canary scaled to zero.
    ///
    /// # Errors
    /// API errors.
    pub fn park_canary(&self, stable: &KubeRelease, canary: &KubeRelease) -> Result<(), KubeError> {
        let s = &self.spec;
        match self.weighting {
            Weighting::GatewayApi => self.cluster.apply(&route(s, None)).map(drop),
            Weighting::ReplicaRatio => self.apply_all(&[
                deployment(s, stable, "stable", s.replicas),
                deployment(s, canary, "canary", 0),
            ]),
        }
    }

    /// The canary passed: stable becomes its release (rolled out while the canary still
    /// serves everything), the route goes back to stable, and the canary is deleted.
    ///
    /// # Errors
    /// API errors; the new stable not rolling out (the canary keeps serving then).
    pub fn promote(&self, canary: &KubeRelease) -> Result<(), KubeError> {
        self.set_stable(canary)?;
        let s = &self.spec;
        self.delete(&deployment(s, canary, "canary", 0))?;
        if self.weighting == Weighting::GatewayApi {
            self.delete(&track_service(s, "canary"))?;
        }
        Ok(())
    }
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
