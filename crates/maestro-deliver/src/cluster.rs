//! The Kubernetes API as the driver uses it: server-side apply (`PATCH` with
//! `application/apply-patch+yaml`, field manager `maestro`), reads, deletes, and the
//! rollout check `kubectl rollout status` makes — over HTTPS with the cluster's CA, as the
//! kubeconfig's current context or the pod's service account says.
//!
//! Calls block (they run on the blocking pool of the driver's runtime); every answer is read
//! up to [`MAX_ANSWER`] bytes; an error answer's `Status` (reason and message) is what the
//! error says; a bearer token never appears in an error or a log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// Largest answer read from the API server.
pub const MAX_ANSWER: u64 = 4 << 20;
/// Largest kubeconfig read.
const MAX_KUBECONFIG: u64 = 1 << 20;
/// The field manager of everything Maestro applies.
pub const FIELD_MANAGER: &str = "maestro";

/// A problem talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {message}")]
    Config { path: String, message: String },
    #[error("{method} {path}: HTTP {code} {reason}: {message}")]
    Api {
        method: &'static str,
        path: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{method} {path}: {message}")]
    Transport {
        method: &'static str,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Object(String),
    #[error("deployment {namespace}/{name} is not ready after {seconds} s: {why}")]
    NotReady {
        namespace: String,
        name: String,
        seconds: u64,
        why: String,
    },
}

/// How the client proves who it is.
#[derive(Clone, Default)]
enum Credentials {
    #[default]
    None,
    Token(Arc<str>),
    /// Re-read at every request (projected service-account tokens rotate).
    TokenFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Token(_) => "Token(<redacted>)",
            Credentials::TokenFile(_) => "TokenFile",
        })
    }
}

/// A cluster's API server.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `https://10.0.0.1:443` (no trailing slash).
    base: String,
    agent: ureq::Agent,
    credentials: Credentials,
    /// The context's namespace (`default` when it names none).
    pub namespace: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KubeConfig {
    #[serde(default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    value: T,
}

#[derive(Debug, Default, Deserialize)]
struct ContextEntry {
    cluster: String,
    #[serde(default)]
    user: String,
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterEntry {
    server: String,
    certificate_authority_data: Option<String>,
    certificate_authority: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct UserEntry {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    client_certificate: Option<PathBuf>,
    client_key: Option<PathBuf>,
    exec: Option<serde_json::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_json::Value>,
}

fn read_limited(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut out = Vec::new();
    file.take(MAX_KUBECONFIG + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if out.len() as u64 > MAX_KUBECONFIG {
        return Err(format!(
            "{what} {}: larger than {MAX_KUBECONFIG} bytes",
            path.display()
        ));
    }
    Ok(out)
}

fn base64_field(field: &str, v: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|e| format!("{field} is not base64: {e}"))
}

fn pem_certs(field: &str, pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let ureq::tls::PemItem::Certificate(c) =
            item.map_err(|e| format!("{field} is not PEM: {e}"))?
        {
            certs.push(c);
        }
    }
    if certs.is_empty() {
        return Err(format!("{field} holds no certificate"));
    }
    Ok(certs)
}

impl Cluster {
    /// The cluster of the kubeconfig's current context (`KUBECONFIG`'s first file, else
    /// `~/.kube/config`), or `context` when given.
    ///
    /// # Errors
    /// [`KubeError::Config`] naming the file and the field: an unreadable file, a context,
    /// cluster or user that is not there, credentials Maestro cannot use (exec and
    /// auth-provider plugins: give the context a token or a client certificate).
    pub fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Cluster, KubeError> {
        let bad = |message: String| KubeError::Config {
            path: path.display().to_string(),
            message,
        };
        let text = read_limited(path, "file").map_err(bad)?;
        let cfg: KubeConfig = serde_saphyr::from_str(&String::from_utf8_lossy(&text))
            .map_err(|e| bad(format!("not a kubeconfig: {e}")))?;
        let want = context.unwrap_or(&cfg.current_context);
        if want.is_empty() {
            return Err(bad(
                "current-context is not set: set it, or name a context".to_owned()
            ));
        }
        let ctx = cfg
            .contexts
            .iter()
            .find(|c| c.name == want)
            .ok_or_else(|| bad(format!("contexts: no context `{want}`")))?;
        let cluster = cfg
            .clusters
            .iter()
            .find(|c| c.name == ctx.value.cluster)
            .ok_or_else(|| bad(format!("clusters: no cluster `{}`", ctx.value.cluster)))?;
        let user = cfg
            .users
            .iter()
            .find(|u| u.name == ctx.value.user)
            .map(|u| &u.value);
        let dir = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_relative() {
                dir.join(p)
            } else {
                p.to_owned()
            }
        };
        let c = &cluster.value;
        let ca = match (&c.certificate_authority_data, &c.certificate_authority) {
            (Some(data), _) => Some(
                base64_field("certificate-authority-data", data)
                    .and_then(|pem| pem_certs("certificate-authority-data", &pem))
                    .map_err(bad)?,
            ),
            (None, Some(file)) => Some(
                read_limited(&rel(file), "certificate-authority")
                    .and_then(|pem| pem_certs("certificate-authority", &pem))
                    .map_err(bad)?,
            ),
            (None, None) => None,
        };
        let mut credentials = Credentials::None;
        let mut client_cert = None;
        if let Some(u) = user {
            if u.exec.is_some() || u.auth_provider.is_some() {
                return Err(bad(format!(
                    "users.{}: exec and auth-provider credentials are not supported; give this context a token (or tokenFile) or a client certificate",
                    ctx.value.user
                )));
            }
            if let Some(t) = &u.token {
                credentials = Credentials::Token(Arc::from(t.trim()));
            } else if let Some(f) = &u.token_file {
                credentials = Credentials::TokenFile(rel(f));
            }
            let cert = match (&u.client_certificate_data, &u.client_certificate) {
                (Some(d), _) => Some(base64_field("client-certificate-data", d).map_err(bad)?),
                (None, Some(f)) => Some(read_limited(&rel(f), "client-certificate").map_err(bad)?),
                (None, None) => None,
            };
            let key = match (&u.client_key_data, &u.client_key) {
                (Some(d), _) => Some(base64_field("client-key-data", d).map_err(bad)?),
                (None, Some(f)) => Some(read_limited(&rel(f), "client-key").map_err(bad)?),
                (None, None) => None,
            };
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    let chain = pem_certs("client-certificate", &cert).map_err(bad)?;
                    let key = ureq::tls::PrivateKey::from_pem(&key)
                        .map_err(|e| bad(format!("client-key is not a PEM private key: {e}")))?;
                    client_cert = Some(ureq::tls::ClientCert::new_with_certs(&chain, key));
                }
                (None, None) => {}
                _ => {
                    return Err(bad(format!(
                        "users.{}: a client certificate needs both its certificate and its key",
                        ctx.value.user
                    )));
                }
            }
        }
        Cluster::new(
            &c.server,
            ca,
            client_cert,
            credentials,
            c.insecure_skip_tls_verify,
            ctx.value
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
        )
        .map_err(bad)
    }

    /// The cluster a pod runs in: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's
    /// token (re-read at every request), CA and namespace under `dir`
    /// (`/var/run/secrets/kubernetes.io/serviceaccount`).
    ///
    /// # Errors
    /// [`KubeError::Config`] when not in a pod, or the account's files cannot be read.
    pub fn in_cluster(dir: &Path) -> Result<Cluster, KubeError> {
        let bad = |message: String| KubeError::Config {
            path: dir.display().to_string(),
            message,
        };
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| bad("KUBERNETES_SERVICE_HOST is not set: not in a pod".to_owned()))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_owned());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let ca = read_limited(&dir.join("ca.crt"), "ca.crt")
            .and_then(|pem| pem_certs("ca.crt", &pem))
            .map_err(bad)?;
        let namespace = read_limited(&dir.join("namespace"), "namespace")
            .map(|n| String::from_utf8_lossy(&n).trim().to_owned())
            .unwrap_or_else(|_| "default".to_owned());
        Cluster::new(
            &format!("https://{host}:{port}"),
            Some(ca),
            None,
            Credentials::TokenFile(dir.join("token")),
            false,
            namespace,
        )
        .map_err(bad)
    }

    fn new(
        server: &str,
        ca: Option<Vec<ureq::tls::Certificate<'static>>>,
        client_cert: Option<ureq::tls::ClientCert>,
        credentials: Credentials,
        insecure: bool,
        namespace: String,
    ) -> Result<Cluster, String> {
        let base = server.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(format!("server `{server}` is not an http(s):// URL"));
        }
        if base.starts_with("http://") && !matches!(credentials, Credentials::None) {
            return Err(format!(
                "server `{server}`: a token is never sent over plain http://; use https://"
            ));
        }
        let mut tls = ureq::tls::TlsConfig::builder()
            .client_cert(client_cert)
            .disable_verification(insecure);
        if let Some(ca) = ca {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&ca));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(concat!("maestro/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Cluster {
            base,
            agent,
            credentials,
            namespace,
        })
    }

    /// A cluster at `server` with no credentials (a local API server, or a test's).
    ///
    /// # Errors
    /// When `server` is not an http(s) URL.
    pub fn unauthenticated(server: &str, namespace: &str) -> Result<Cluster, KubeError> {
        Cluster::new(
            server,
            None,
            None,
            Credentials::None,
            false,
            namespace.to_owned(),
        )
        .map_err(|message| KubeError::Config {
            path: server.to_owned(),
            message,
        })
    }

    fn token(&self) -> Result<Option<String>, String> {
        match &self.credentials {
            Credentials::None => Ok(None),
            Credentials::Token(t) => Ok(Some(t.to_string())),
            Credentials::TokenFile(f) => read_limited(f, "token file")
                .map(|t| Some(String::from_utf8_lossy(&t).trim().to_owned())),
        }
    }

    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, Value), KubeError> {
        let transport = |message: String| KubeError::Transport {
            method,
            path: path.to_owned(),
            message,
        };
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("accept", "application/json");
        if let Some(t) = self.token().map_err(transport)? {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let result = match body {
            Some((ctype, bytes)) => {
                let req = req
                    .header("content-type", ctype)
                    .body(bytes)
                    .map_err(|e| transport(e.to_string()))?;
                self.agent.run(req)
            }
            None => {
                let req = req.body(()).map_err(|e| transport(e.to_string()))?;
                self.agent.run(req)
            }
        };
        let mut resp = result.map_err(|e| transport(format!("unreachable: {e}")))?;
        let code = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|e| transport(format!("reading the answer: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| transport(format!("HTTP {code}, not JSON: {e}")))?
        };
        if (200..300).contains(&code) || code == 404 {
            return Ok((code, value));
        }
        Err(KubeError::Api {
            method,
            path: path.to_owned(),
            code,
            reason: value["reason"].as_str().unwrap_or("").to_owned(),
            message: value["message"]
                .as_str()
                .unwrap_or("no message")
                .chars()
                .take(500)
                .collect(),
        })
    }

    /// Server-side apply of `obj` (field manager `maestro`, taking over conflicting fields:
    /// Maestro owns what it renders). Returns the object as the server now has it.
    ///
    /// # Errors
    /// The API server's refusal (its `Status`), or no answer.
    pub fn apply(&self, obj: &Value) -> Result<Value, KubeError> {
        let path = object_path(obj)?;
        let body = serde_json::to_vec(obj).map_err(|e| KubeError::Object(e.to_string()))?;
        let (code, v) = self.call(
            "PATCH",
            &format!("{path}?fieldManager={FIELD_MANAGER}&force=true"),
            Some(("application/apply-patch+yaml", body)),
        )?;
        if code == 404 {
            return Err(KubeError::Api {
                method: "PATCH",
                path,
                code,
                reason: v["reason"].as_str().unwrap_or("NotFound").to_owned(),
                message: v["message"]
                    .as_str()
                    .unwrap_or("the resource type is not served: is its CRD installed?")
                    .to_owned(),
            });
        }
        Ok(v)
    }

    /// The object at `path`, `None` when there is none.
    ///
    /// # Errors
    /// The API server's refusal, or no answer.
    pub fn get(&self, path: &str) -> Result<Option<Value>, KubeError> {
        let (code, v) = self.call("GET", path, None)?;
        Ok((code != 404).then_some(v))
    }

    /// Deletes the object at `path` (its pods in the background); nothing to delete is
    /// not an error.
    ///
    /// # Errors
    /// The API server's refusal, or no answer.
    pub fn delete(&self, path: &str) -> Result<(), KubeError> {
        self.call(
            "DELETE",
            &format!("{path}?propagationPolicy=Background"),
            None,
        )?;
        Ok(())
    }

    /// Waits until the Deployment has rolled out as `kubectl rollout status` judges it: the
    /// controller has seen the latest spec, every replica is updated and available, no old
    /// one is left. Fails at once when the Deployment's progress deadline is exceeded.
    ///
    /// # Errors
    /// [`KubeError::NotReady`] after `timeout` or on a passed progress deadline; API errors.
    pub fn rollout(&self, namespace: &str, name: &str, timeout: Duration) -> Result<(), KubeError> {
        let path = format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}");
        let start = Instant::now();
        let not_ready = |why: String| KubeError::NotReady {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            seconds: timeout.as_secs(),
            why,
        };
        loop {
            let why = match self.get(&path)? {
                None => "it does not exist".to_owned(),
                Some(d) => match rollout_state(&d) {
                    Rollout::Done => return Ok(()),
                    Rollout::Failed(why) => return Err(not_ready(why)),
                    Rollout::Waiting(why) => why,
                },
            };
            if start.elapsed() >= timeout {
                return Err(not_ready(why));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Where a Deployment's rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Done,
    Waiting(String),
    Failed(String),
}

/// A Deployment's rollout from its status (the logic of `kubectl rollout status`).
#[must_use]
pub fn rollout_state(d: &Value) -> Rollout {
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let status = &d["status"];
    if let Some(conds) = status["conditions"].as_array()
        && let Some(c) = conds
            .iter()
            .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
    {
        return Rollout::Failed(format!(
            "progress deadline exceeded: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    let generation = n(&d["metadata"]["generation"]);
    if n(&status["observedGeneration"]) < generation {
        return Rollout::Waiting("the controller has not seen the latest spec".to_owned());
    }
    let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
    let (updated, total, available) = (
        n(&status["updatedReplicas"]),
        n(&status["replicas"]),
        n(&status["availableReplicas"]),
    );
    if updated < want {
        return Rollout::Waiting(format!("{updated} of {want} replicas updated"));
    }
    if total > updated {
        return Rollout::Waiting(format!(
            "{} old replicas pending termination",
            total - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas available"
        ));
    }
    Rollout::Done
}

/// The plural resource name of a kind Maestro applies.
fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "deployments",
        "Service" => "services",
        "HTTPRoute" => "httproutes",
        "ConfigMap" => "configmaps",
        _ => return None,
    })
}

/// The REST path of a namespaced object: `/api/v1/namespaces/{ns}/services/{name}` for the
/// core group, `/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}` otherwise.
///
/// # Errors
/// [`KubeError::Object`] when the object lacks apiVersion, kind, name or namespace, or is
/// of a kind Maestro does not apply.
pub fn object_path(obj: &Value) -> Result<String, KubeError> {
    let s = |v: &Value, what: &str| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| KubeError::Object(format!("the object has no {what}")))
    };
    let api = s(&obj["apiVersion"], "apiVersion")?;
    let kind = s(&obj["kind"], "kind")?;
    let name = s(&obj["metadata"]["name"], "metadata.name")?;
    let ns = s(&obj["metadata"]["namespace"], "metadata.namespace")?;
    let plural = plural(&kind)
        .ok_or_else(|| KubeError::Object(format!("kind {kind} is not one Maestro applies")))?;
    let root = if api.contains('/') {
        format!("/apis/{api}")
    } else {
        format!("/api/{api}")
    };
    Ok(format!("{root}/namespaces/{ns}/{plural}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_follow_the_api_conventions() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "hello-canary", "namespace": "stage"}});
        assert_eq!(
            object_path(&d).expect("path"),
            "/apis/apps/v1/namespaces/stage/deployments/hello-canary"
        );
        let s = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "stage"}});
        assert_eq!(
            object_path(&s).expect("path"),
            "/api/v1/namespaces/stage/services/hello"
        );
        let r = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "hello", "namespace": "stage"}});
        assert_eq!(
            object_path(&r).expect("path"),
            "/apis/gateway.networking.k8s.io/v1/namespaces/stage/httproutes/hello"
        );
        let e = object_path(&json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "x", "namespace": "y"}}))
        .expect_err("not applied");
        assert!(e.to_string().contains("Secret"), "{e}");
        let e =
            object_path(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}))
                .expect_err("no namespace");
        assert!(e.to_string().contains("metadata.namespace"), "{e}");
    }

    #[test]
    fn rollout_reads_like_kubectl() {
        let d = |generation: i64, status: Value| json!({"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status});
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            )),
            Rollout::Waiting("the controller has not seen the latest spec".into())
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 4, "availableReplicas": 3})
            )),
            Rollout::Waiting("1 of 3 replicas updated".into())
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4, "availableReplicas": 3})
            )),
            Rollout::Waiting("1 old replicas pending termination".into())
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2})
            )),
            Rollout::Waiting("2 of 3 updated replicas available".into())
        );
        assert_eq!(
            rollout_state(&d(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
            )),
            Rollout::Done
        );
        let failed = d(
            2,
            json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]}),
        );
        assert!(matches!(rollout_state(&failed), Rollout::Failed(w) if w.contains("timed out")));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn kubeconfig_errors_name_the_field() {
        let dir = tempfile::tempdir().expect("tmp");
        let base = "apiVersion: v1\nkind: Config\ncurrent-context: stage\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n";
        let p = write(dir.path(), "a", base);
        let e = Cluster::from_kubeconfig(&p, None).expect_err("no context");
        assert!(e.to_string().contains("no context `stage`"), "{e}");

        let p = write(
            dir.path(),
            "b",
            &format!(
                "{base}contexts:\n- name: stage\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    exec:\n      command: aws\n"
            ),
        );
        let e = Cluster::from_kubeconfig(&p, None).expect_err("exec");
        assert!(e.to_string().contains("exec and auth-provider"), "{e}");

        let p = write(
            dir.path(),
            "c",
            &format!(
                "{base}contexts:\n- name: stage\n  context:\n    cluster: c\n    user: u\n    namespace: shop\nusers:\n- name: u\n  user:\n    token: s3cr3t-token\n"
            ),
        );
        let c = Cluster::from_kubeconfig(&p, None).expect("a usable context");
        assert_eq!(c.namespace, "shop");
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "the token never shows"
        );

        let p = write(
            dir.path(),
            "d",
            "current-context: x\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:8080\nusers:\n- name: u\n  user:\n    token: t\n",
        );
        let e = Cluster::from_kubeconfig(&p, None).expect_err("token over http");
        assert!(e.to_string().contains("never sent over plain http"), "{e}");

        let p = write(
            dir.path(),
            "e",
            "current-context: x\ncontexts:\n- name: x\n  context:\n    cluster: c\nclusters:\n- name: c\n  cluster:\n    server: https://k\n    certificate-authority-data: bm90IGEgY2VydA==\n",
        );
        let e = Cluster::from_kubeconfig(&p, None).expect_err("bad CA");
        assert!(e.to_string().contains("certificate-authority-data"), "{e}");
    }
}
