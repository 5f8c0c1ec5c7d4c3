//! The conductor's API over real HTTP, on SQLite and on a throwaway PostgreSQL database:
//! every endpoint needs a valid token, the right scope and the policy's consent; expired
//! and revoked tokens are refused; runs are read through the store.

use std::collections::HashMap;

use maestro_server::auth::issue;
use maestro_server::{AppState, Settings, api::ENDPOINTS};
use maestro_store::pg::Throwaway;
use maestro_store::{Batch, NewRun, Store, TokenRow};
use serde_json::Value;

struct Server {
    base: String,
    location: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), maestro_server::ServerError>>>,
    _guard: Box<dyn std::any::Any>,
}

enum Backend {
    Sqlite,
    Postgres,
}

impl Server {
    fn start(backend: &Backend, policy: Option<std::path::PathBuf>) -> Server {
        let (location, guard): (String, Box<dyn std::any::Any>) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                (
                    dir.path().join("store.db").display().to_string(),
                    Box::new(dir),
                )
            }
            Backend::Postgres => {
                let db = Throwaway::new("server");
                (db.url.clone(), Box::new(db))
            }
        };
        let config = Settings {
            listen: Some("127.0.0.1:0".into()),
            database: Some(location.clone()),
            policy,
            ..Settings::default()
        }
        .validate("unused")
        .expect("valid settings");
        let state = AppState::open(&config).expect("open");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = maestro_server::bind(&config).await?;
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send");
                maestro_server::serve(state, listener, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        let addr = addr_rx.recv().expect("the server started");
        Server {
            base: format!("http://{addr}"),
            location,
            stop: Some(stop),
            thread: Some(thread),
            _guard: guard,
        }
    }

    fn store(&self) -> Box<dyn Store> {
        maestro_store::open(&self.location).expect("open the store")
    }

    /// A token with these roles and scopes in tenant `default`, valid for an hour.
    fn token(&self, roles: &[&str], scopes: &[&str]) -> (String, String) {
        self.token_in("default", roles, scopes, 3_600_000)
    }

    fn token_in(
        &self,
        tenant: &str,
        roles: &[&str],
        scopes: &[&str],
        ttl_ms: i64,
    ) -> (String, String) {
        let (secret, row) = issue(
            &TokenRow {
                name: "test".into(),
                actor: format!("user:{}", roles.join("+")),
                roles: roles.iter().map(|s| (*s).to_owned()).collect(),
                teams: vec!["payments".into()],
                tenant: tenant.into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ..TokenRow::default()
            },
            ttl_ms,
            maestro_server::now_ms(),
        )
        .expect("issue");
        self.store().token_create(&row).expect("store the token");
        (secret, row.id)
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, Value, HashMap<String, String>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().expect("the request completes");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        (status, body, headers)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

macro_rules! on_both {
    ($($name:ident($b:ident) $body:block)*) => {$(
        mod $name {
            #[allow(clippy::allow_attributes, unused_imports, reason = "shared prelude")]
            use super::*;

            fn case($b: &Backend) $body

            #[test]
            fn sqlite() {
                case(&Backend::Sqlite);
            }

            #[test]
            fn postgres() {
                case(&Backend::Postgres);
            }
        }
    )*};
}

on_both! {
every_endpoint_needs_a_token_its_scope_and_the_policy(b) {
    let s = Server::start(b, None);
    s.store().begin_run(&NewRun { pipeline: "hello".into(), ..NewRun::default() }).expect("run");
    let (nobody, _) = s.token(&[], &["*"]);
    let (unscoped, _) = s.token(&["admin"], &["nothing:here"]);
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    assert!(ENDPOINTS.len() >= 3);
    for e in ENDPOINTS {
        let path = concrete(e.path);
        let (status, body, headers) = s.get(&path, None);
        assert_eq!(status, 401, "{e:?} without a token: {body}");
        assert_eq!(headers.get("www-authenticate").map(String::as_str), Some("Bearer"), "{e:?}");
        let (status, body, _) = s.get(&path, Some("mst_not-a-real-token"));
        assert_eq!(status, 401, "{e:?} with an unknown token: {body}");
        let (status, body, _) = s.get(&path, Some(&unscoped));
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("insufficient_scope")), "{e:?}: {body}");
        let (status, body, _) = s.get(&path, Some(&nobody));
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{e:?} for an actor without roles: {body}");
        assert!(message(&body).contains(e.action), "{body}");
        let (status, body, _) = s.get(&path, Some(&viewer));
        assert_eq!(status, 200, "{e:?} for a viewer: {body}");
    }
    let (status, _, _) = s.get("/api/v1/nothing", Some(&viewer));
    assert_eq!(status, 404);
    for p in maestro_server::api::PUBLIC {
        assert_eq!(s.get(p, None).0, 200, "{p} is a public probe");
    }
}

expired_and_revoked_tokens_are_refused(b) {
    let s = Server::start(b, None);
    let (expired, expired_id) = s.token_in("default", &["viewer"], &["*"], -1);
    let (status, body, _) = s.get("/api/v1/whoami", Some(&expired));
    assert_eq!(status, 401);
    assert!(message(&body).contains(&format!("token {expired_id} expired")), "{body}");
    assert!(!body.to_string().contains(&expired[4..]), "the secret is never echoed");
    let (live, live_id) = s.token(&["viewer"], &["session:read"]);
    let (status, body, _) = s.get("/api/v1/whoami", Some(&live));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "user:viewer");
    assert_eq!(body["via"], format!("token:{live_id}"));
    assert!(s.store().token_revoke(&live_id, maestro_server::now_ms()).expect("revoke"));
    let (status, body, _) = s.get("/api/v1/whoami", Some(&live));
    assert_eq!(status, 401, "a revoked token stops working at once");
    assert!(message(&body).contains("revoked"), "{body}");
}

runs_are_listed_and_read_within_the_actors_tenant(b) {
    let s = Server::start(b, None);
    let mut store = s.store();
    let first = store.begin_run(&NewRun { pipeline: "hello".into(), ..NewRun::default() }).expect("run");
    store.record(first, &Batch::default()).expect("record");
    let second = store.begin_run(&NewRun { pipeline: "checkout".into(), ..NewRun::default() }).expect("run");
    let (viewer, _) = s.token(&["viewer"], &["runs:read"]);
    let (status, body, _) = s.get("/api/v1/runs?limit=10", Some(&viewer));
    assert_eq!(status, 200, "{body}");
    let ids: Vec<i64> = body.as_array().expect("array").iter().map(|r| r["id"].as_i64().expect("id")).collect();
    assert_eq!(ids, vec![second, first]);
    let (status, body, _) = s.get(&format!("/api/v1/runs/{first}"), Some(&viewer));
    assert_eq!((status, body["run"]["pipeline"].as_str()), (200, Some("hello")), "{body}");
    assert_eq!(s.get("/api/v1/runs/999999", Some(&viewer)).0, 404);
    let (status, body, _) = s.get("/api/v1/runs/abc", Some(&viewer));
    assert_eq!(status, 400);
    assert!(message(&body).contains("`abc`"), "{body}");
    let (status, body, _) = s.get("/api/v1/runs?limit=0", Some(&viewer));
    assert_eq!(status, 400, "{body}");
    // Another tenant's actor sees none of them, and a run it asks for does not exist.
    let (outsider, _) = s.token_in("globex", &["admin"], &["*"], 60_000);
    let (status, body, _) = s.get("/api/v1/runs", Some(&outsider));
    assert_eq!((status, body), (200, serde_json::json!([])));
    assert_eq!(s.get(&format!("/api/v1/runs/{first}"), Some(&outsider)).0, 404);
}
}

#[test]
fn a_custom_policy_decides_and_a_policy_without_the_rule_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("authz.rego"),
        "package maestro.authz\n\ndefault allow := false\n\nallow if input.action == \"session.read\"\n",
    )
    .expect("write");
    let s = Server::start(&Backend::Sqlite, Some(dir.path().to_owned()));
    let (admin, _) = s.token(&["admin"], &["*"]);
    assert_eq!(s.get("/api/v1/whoami", Some(&admin)).0, 200);
    assert_eq!(
        s.get("/api/v1/runs", Some(&admin)).0,
        403,
        "the custom policy allows only whoami"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    std::fs::write(empty.path().join("other.rego"), "package other\n\nx := 1\n").expect("write");
    let config = Settings {
        database: Some(dir.path().join("s.db").display().to_string()),
        policy: Some(empty.path().to_owned()),
        ..Settings::default()
    }
    .validate("unused")
    .expect("valid");
    let err = AppState::open(&config)
        .expect_err("no decision rule")
        .to_string();
    assert!(err.contains("data.maestro.authz.allow"), "{err}");

    std::fs::write(
        empty.path().join("other.rego"),
        "package maestro.authz\n\nallow if {\n",
    )
    .expect("write");
    let err = AppState::open(&config)
        .expect_err("does not parse")
        .to_string();
    assert!(err.contains("other.rego"), "{err}");
}

#[test]
fn the_server_stops_gracefully() {
    let mut s = Server::start(&Backend::Sqlite, None);
    assert_eq!(s.get("/healthz", None).0, 200);
    let _ = s.stop.take().expect("stop").send(());
    let done = s.thread.take().expect("thread").join().expect("joined");
    assert!(done.is_ok(), "{done:?}");
}
