//! An API server for the Kubernetes driver's tests, following the published API conventions
//! (no cluster runs here): resource paths (`/api/v1/...`, `/apis/{group}/{version}/...`),
//! server-side apply (`PATCH`, `application/apply-patch+yaml`, `fieldManager` required, the
//! body's kind and name must match the URL), `metadata.generation` bumped when a spec
//! changes, `Status` objects for errors, and a Deployment controller that reports the
//! rollout in `status` (`observedGeneration`, updated/ready/available replicas) — or, for an
//! image whose name contains `unready`, the `ProgressDeadlineExceeded` condition.
//! A route kind is served only when the Gateway API CRDs are "installed".
//!
//! Every object applied is kept, so the test can validate them against the schemas.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Debug, Default)]
pub struct State {
    pub objects: BTreeMap<String, Value>,
    /// Every body applied, in order.
    pub applied: Vec<Value>,
    /// `METHOD path` of every request, in order.
    pub log: Vec<String>,
    pub gateway_api: bool,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl ApiServer {
    pub fn start(gateway_api: bool) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            gateway_api,
            ..State::default()
        }));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = Arc::clone(&st);
                std::thread::spawn(move || serve(conn, &st));
            }
        });
        ApiServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().expect("state").objects.get(path).cloned()
    }

    pub fn applied(&self) -> Vec<Value> {
        self.state.lock().expect("state").applied.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().expect("state").log.clone()
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (code, answer) = handle(state, &method, &target, &headers, &body);
        let text = answer.to_string();
        let reason = match code {
            200 => "OK",
            201 => "Created",
            404 => "Not Found",
            _ => "Error",
        };
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            text.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// (group/version as in apiVersion, plural, namespace, name) of a namespaced object path.
fn parse(path: &str) -> Option<(String, String, String, String)> {
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match seg.as_slice() {
        ["api", v, "namespaces", ns, plural, name] => Some((
            (*v).to_owned(),
            (*plural).to_owned(),
            (*ns).to_owned(),
            (*name).to_owned(),
        )),
        ["apis", g, v, "namespaces", ns, plural, name] => Some((
            format!("{g}/{v}"),
            (*plural).to_owned(),
            (*ns).to_owned(),
            (*name).to_owned(),
        )),
        _ => None,
    }
}

fn served(api: &str, plural: &str, gateway_api: bool) -> Option<&'static str> {
    match (api, plural) {
        ("v1", "services") => Some("Service"),
        ("apps/v1", "deployments") => Some("Deployment"),
        ("gateway.networking.k8s.io/v1", "httproutes") if gateway_api => Some("HTTPRoute"),
        _ => None,
    }
}

fn handle(
    state: &Mutex<State>,
    method: &str,
    target: &str,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut st = state.lock().expect("state");
    st.log.push(format!("{method} {path}"));
    let Some((api, plural, ns, name)) = parse(path) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let Some(kind) = served(&api, &plural, st.gateway_api) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    let group = api.split_once('/').map_or("", |(g, _)| g);
    let resource = if group.is_empty() {
        plural.clone()
    } else {
        format!("{plural}.{group}")
    };
    match method {
        "GET" => match st.objects.get(path) {
            Some(o) => (200, o.clone()),
            None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
        },
        "DELETE" => match st.objects.remove(path) {
            Some(_) => (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
        },
        "PATCH" => {
            if headers.get("content-type").map(String::as_str)
                != Some("application/apply-patch+yaml")
            {
                return status(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format",
                );
            }
            if !query
                .split('&')
                .any(|kv| kv.starts_with("fieldManager=") && kv.len() > 13)
            {
                return status(
                    400,
                    "BadRequest",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                );
            }
            let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
                return status(400, "BadRequest", "error decoding the body");
            };
            if obj["apiVersion"] != api.as_str() || obj["kind"] != kind {
                return status(
                    400,
                    "BadRequest",
                    &format!("the body's apiVersion/kind do not match the URL ({api} {kind})"),
                );
            }
            if obj["metadata"]["name"] != name.as_str() {
                return status(
                    400,
                    "BadRequest",
                    &format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        obj["metadata"]["name"]
                    ),
                );
            }
            if obj["metadata"]["namespace"] != ns.as_str() {
                return status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                );
            }
            st.applied.push(obj.clone());
            let prior = st.objects.get(path).cloned();
            let generation = match &prior {
                Some(p) if p["spec"] == obj["spec"] => {
                    p["metadata"]["generation"].as_i64().unwrap_or(1)
                }
                Some(p) => p["metadata"]["generation"].as_i64().unwrap_or(1) + 1,
                None => 1,
            };
            obj["metadata"]["generation"] = json!(generation);
            obj["metadata"]["uid"] = json!(format!("uid-{ns}-{plural}-{name}"));
            if kind == "Deployment" {
                let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                let image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                obj["status"] = if image.contains("unready") {
                    json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                           "availableReplicas": 0, "conditions": [{"type": "Progressing", "status": "False",
                           "reason": "ProgressDeadlineExceeded",
                           "message": format!("ReplicaSet \"{name}-6d4f\" has timed out progressing.")}]})
                } else {
                    json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                           "readyReplicas": replicas, "availableReplicas": replicas})
                };
            }
            let created = prior.is_none();
            st.objects.insert(path.to_owned(), obj.clone());
            (if created { 201 } else { 200 }, obj)
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method",
        ),
    }
}
