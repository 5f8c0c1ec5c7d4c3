//! What the conductor's test suites share: a server on a SQLite file or a throwaway
//! PostgreSQL database, tokens, and requests.

#![allow(
    clippy::allow_attributes,
    dead_code,
    unused_macros,
    unreachable_pub,
    reason = "each test binary uses part of it"
)]

use std::collections::HashMap;

use maestro_server::auth::issue;
use maestro_server::{AppState, Settings};
use maestro_store::pg::Throwaway;
use maestro_store::{Store, TokenRow};
use serde_json::Value;

pub struct Server {
    pub base: String,
    pub location: String,
    server: Option<maestro_server::Background>,
    _guard: Box<dyn std::any::Any>,
}

pub enum Backend {
    Sqlite,
    Postgres,
}

impl Server {
    pub fn start(backend: &Backend, policy: Option<std::path::PathBuf>) -> Server {
        Server::with(backend, policy, None)
    }

    /// A server in `mode` (`development` or `production`).
    pub fn with(
        backend: &Backend,
        policy: Option<std::path::PathBuf>,
        mode: Option<&str>,
    ) -> Server {
        Server::configured(
            backend,
            Settings {
                policy,
                mode: mode.map(str::to_owned),
                ..Settings::default()
            },
        )
    }

    /// A server with these settings, on its own listener and store.
    pub fn configured(backend: &Backend, settings: Settings) -> Server {
        Server::configured_with(backend, settings, |_| {})
    }

    /// As [`Server::configured`], with `tweak` applied to the validated configuration.
    pub fn configured_with(
        backend: &Backend,
        settings: Settings,
        tweak: impl FnOnce(&mut maestro_server::Config),
    ) -> Server {
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
        let mut config = Settings {
            listen: Some("127.0.0.1:0".into()),
            database: Some(location.clone()),
            ..settings
        }
        .validate("unused")
        .expect("valid settings");
        tweak(&mut config);
        let state = AppState::open(&config).expect("open");
        let server =
            maestro_server::Background::start(state, &config, 2).expect("the server started");
        Server {
            base: server.base(),
            location,
            server: Some(server),
            _guard: guard,
        }
    }

    /// Stops the server gracefully; what it stopped with.
    /// Another conductor on `first`'s store.
    pub fn joining(first: &Server, settings: Settings) -> Server {
        let config = Settings {
            listen: Some("127.0.0.1:0".into()),
            database: Some(first.location.clone()),
            ..settings
        }
        .validate("unused")
        .expect("valid settings");
        let state = AppState::open(&config).expect("open");
        let server =
            maestro_server::Background::start(state, &config, 2).expect("the server started");
        Server {
            base: server.base(),
            location: first.location.clone(),
            server: Some(server),
            _guard: Box::new(()),
        }
    }

    pub fn stop(&mut self) -> Result<(), maestro_server::ServerError> {
        self.server
            .take()
            .map_or(Ok(()), maestro_server::Background::stop)
    }

    pub fn store(&self) -> Box<dyn Store> {
        maestro_store::open(&self.location).expect("open the store")
    }

    /// A token with these roles and scopes in tenant `default`, valid for an hour.
    pub fn token(&self, roles: &[&str], scopes: &[&str]) -> (String, String) {
        self.token_in("default", roles, scopes, 3_600_000)
    }

    pub fn token_in(
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

    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, Value, HashMap<String, String>) {
        let mut req = agent().get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        answer(req.call().expect("the request completes"))
    }

    /// `GET path` with a token and, if given, a `traceparent`: status, headers, body text.
    pub fn get_text(
        &self,
        path: &str,
        token: &str,
        traceparent: Option<&str>,
    ) -> (u16, HashMap<String, String>, String) {
        let mut req = agent()
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {token}"));
        if let Some(t) = traceparent {
            req = req.header("traceparent", t);
        }
        let mut resp = req.call().expect("the request completes");
        let (status, headers) = head(&resp);
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (status, headers, text)
    }

    /// `method path` (as an endpoint row names it): `GET`, or a JSON body of `{}`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
    ) -> (u16, Value, HashMap<String, String>) {
        if method == "GET" {
            return self.get(path, token);
        }
        let mut req = agent().post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        answer(
            req.send_json(serde_json::json!({}))
                .expect("the request completes"),
        )
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.post_with(path, token, &[], body)
    }

    /// `POST path` with a JSON body and these headers.
    pub fn post_with(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Value) {
        let mut req = agent().post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (status, body, _) = answer(req.send_json(body).expect("the request completes"));
        (status, body)
    }

    /// Signs in to the console with `token`: the `maestro_session=…` cookie pair.
    pub fn console_session(&self, token: &str) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let resp = agent
            .post(format!("{}/console/login", self.base))
            .send_form([("token", token)])
            .expect("sign in");
        assert_eq!(resp.status().as_u16(), 303, "signed in");
        resp.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned()
    }

    /// A GraphQL request (`POST /graphql`).
    pub fn graphql(&self, token: &str, body: &Value) -> (u16, Value) {
        self.post("/graphql", Some(token), body)
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Status and headers (names lowercase).
fn head(resp: &ureq::http::Response<ureq::Body>) -> (u16, HashMap<String, String>) {
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    (resp.status().as_u16(), headers)
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value, HashMap<String, String>) {
    let (status, headers) = head(&resp);
    let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    (status, body, headers)
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stopped before the store it serves (the guard) goes away.
        drop(self.server.take());
    }
}

/// A route pattern with every `{param}` set to 1.
pub fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        out.push('1');
        rest = rest[open..].split_once('}').map_or("", |(_, after)| after);
    }
    out.push_str(rest);
    out
}

pub fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The example service's `stage` environment (process driver, a key that is never
/// there), with `extra` fields over it (`tenant`, `deploy_env`, …).
pub fn stage(
    state_dir: &std::path::Path,
    extra: Value,
) -> maestro_server::environments::EnvironmentSettings {
    let mut v = serde_json::json!({
        "name": "stage",
        "service": "hello-service",
        "listen": "127.0.0.1:0",
        "command": ["python3", "-m", "app.server", "{port}"],
        "trust_keys": ["/nonexistent/dev.pub"],
        "state_dir": state_dir,
    });
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    serde_json::from_value(v).expect("environment settings")
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
