//! OIDC JWTs as credentials, end to end: a conductor trusting an issuer whose JWKS is
//! served over HTTP on loopback (as an IdP serves it), GitHub Actions' documented claim
//! set, key rotation, an issuer that is down, and the same ABAC after authentication.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Server, message};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use maestro_server::Settings;
use maestro_server::oidc::IssuerSettings;
use serde_json::json;

const RSA_A: &str = include_str!("fixtures/oidc/rsa-a.pem");
const RSA_B: &str = include_str!("fixtures/oidc/rsa-b.pem");
const JWKS: &str = include_str!("fixtures/oidc/jwks.json");
const ROTATED: &str = include_str!("fixtures/oidc/jwks-rotated.json");

/// A JWKS endpoint on loopback: serves `body`, counts requests.
struct Idp {
    url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl Idp {
    fn start(body: &str) -> Idp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks",
            listener.local_addr().expect("addr")
        );
        let body = Arc::new(Mutex::new(body.to_owned()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, h) = (Arc::clone(&body), Arc::clone(&hits));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                h.fetch_add(1, Ordering::SeqCst);
                let text = b.lock().expect("lock").clone();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Idp { url, body, hits }
    }

    fn serve(&self, body: &str) {
        *self.body.lock().expect("lock") = body.to_owned();
    }
}

const ISS: &str = "https://token.actions.githubusercontent.com";

fn issuer(jwks_url: &str, tenant: Option<&str>, scopes: &[&str]) -> IssuerSettings {
    IssuerSettings {
        issuer: Some(ISS.to_owned()),
        audience: Some("https://github.com/octo-org".to_owned()),
        jwks_url: Some(jwks_url.to_owned()),
        refetch_seconds: Some(1),
        tenant: tenant.map(str::to_owned),
        tenant_claim: tenant.is_none().then(|| "repository_owner".to_owned()),
        roles: vec!["developer".to_owned()],
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        require: BTreeMap::from([("repository_owner".to_owned(), "octo-org".to_owned())]),
        ..IssuerSettings::default()
    }
}

fn server(issuers: Vec<IssuerSettings>) -> Server {
    Server::configured(
        &Backend::Sqlite,
        Settings {
            oidc: issuers,
            ..Settings::default()
        },
    )
}

/// A GitHub Actions OIDC token (the documented claims) signed with `pem` as `kid`.
fn token(pem: &str, kid: &str, exp_in: i64) -> String {
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time");
    let claims = json!({
        "jti": "example-id", "sub": "repo:octo-org/octo-repo:environment:prod",
        "environment": "prod", "aud": "https://github.com/octo-org", "ref": "refs/heads/main",
        "sha": "example-sha", "repository": "octo-org/octo-repo", "repository_owner": "octo-org",
        "actor_id": "12", "repository_id": "74", "repository_owner_id": "65",
        "run_id": "example-run-id", "run_number": "10", "run_attempt": "2",
        "runner_environment": "github-hosted", "actor": "octocat", "workflow": "example-workflow",
        "event_name": "workflow_dispatch", "ref_type": "branch",
        "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
        "iss": ISS, "nbf": now - 5, "exp": now + exp_in, "iat": now - 5
    });
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).expect("key"),
    )
    .expect("sign")
}

#[test]
fn a_ci_job_authenticates_with_its_oidc_token() {
    let idp = Idp::start(JWKS);
    let s = server(vec![issuer(&idp.url, None, &["session:read", "runs:read"])]);
    let (status, body, _) = s.get("/api/v1/whoami", Some(&token(RSA_A, "rsa-a", 300)));
    assert_eq!(status, 200, "{body}");
    // Namespaced by its tenant, as every actor outside the default tenant.
    assert_eq!(
        body["id"],
        "octo-org/oidc:repo:octo-org/octo-repo:environment:prod"
    );
    assert_eq!(body["tenant"], "octo-org");
    assert_eq!(body["roles"], json!(["developer"]));
    assert_eq!(body["via"], format!("oidc:{ISS}"));
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
    // The key set is kept: more requests, no more fetches.
    for _ in 0..3 {
        let (status, _, _) = s.get("/api/v1/whoami", Some(&token(RSA_A, "rsa-a", 300)));
        assert_eq!(status, 200);
    }
    assert_eq!(idp.hits.load(Ordering::SeqCst), 1);

    // Same ABAC as tokens: its tenant is octo-org, the runs are tenant default's.
    let run = s
        .store()
        .begin_run(&maestro_store::NewRun {
            pipeline: "checkout".into(),
            started_at_ms: maestro_server::now_ms(),
            ..maestro_store::NewRun::default()
        })
        .expect("run");
    let (status, body, _) = s.get("/api/v1/runs", Some(&token(RSA_A, "rsa-a", 300)));
    assert_eq!((status, body), (200, json!([])));
    let (status, _, _) = s.get(
        &format!("/api/v1/runs/{run}"),
        Some(&token(RSA_A, "rsa-a", 300)),
    );
    assert_eq!(status, 404);
}

#[test]
fn scopes_and_tenant_come_from_the_issuer_configuration() {
    let idp = Idp::start(JWKS);
    let s = server(vec![issuer(&idp.url, Some("default"), &["session:read"])]);
    s.store()
        .begin_run(&maestro_store::NewRun {
            pipeline: "checkout".into(),
            started_at_ms: maestro_server::now_ms(),
            ..maestro_store::NewRun::default()
        })
        .expect("run");
    let t = token(RSA_A, "rsa-a", 300);
    let (status, body, _) = s.get("/api/v1/runs", Some(&t));
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("insufficient_scope"))
    );
    let (status, body, _) = s.get("/api/v1/whoami", Some(&t));
    assert_eq!((status, body["tenant"].clone()), (200, json!("default")));
}

#[test]
fn a_rotated_key_is_fetched_and_a_refused_token_says_why() {
    let idp = Idp::start(JWKS);
    let s = server(vec![issuer(&idp.url, None, &["session:read"])]);
    let (status, _, _) = s.get("/api/v1/whoami", Some(&token(RSA_A, "rsa-a", 300)));
    assert_eq!(status, 200);
    // The IdP rotates in key rsa-b; a token signed with it names a kid the conductor has
    // not seen, which refetches the set (once the refetch interval has passed).
    idp.serve(ROTATED);
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body, _) = s.get("/api/v1/whoami", Some(&token(RSA_B, "rsa-b", 300)));
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.hits.load(Ordering::SeqCst), 2);

    let refused = |t: &str| {
        let (status, body, headers) = s.get("/api/v1/whoami", Some(t));
        assert_eq!(status, 401, "{body}");
        assert_eq!(
            headers.get("www-authenticate").map(String::as_str),
            Some("Bearer")
        );
        let m = message(&body);
        assert!(!m.contains(t), "{m}");
        m
    };
    assert!(refused(&token(RSA_A, "rsa-a", -600)).contains("expired"));
    // Unknown kid again, within the refetch interval: no fetch, a clear refusal.
    let before = idp.hits.load(Ordering::SeqCst);
    assert!(refused(&token(RSA_B, "rsa-c", 300)).contains("has no key `rsa-c`"));
    assert_eq!(idp.hits.load(Ordering::SeqCst), before);
    // A token from an issuer nobody configured.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-a".into());
    let other = encode(
        &h,
        &json!({"iss": "https://idp.example", "sub": "x", "aud": "a", "exp": 4_000_000_000_u64}),
        &EncodingKey::from_rsa_pem(RSA_A.as_bytes()).expect("key"),
    )
    .expect("sign");
    assert!(refused(&other).contains("issuer `https://idp.example` is not trusted"));
}

#[test]
fn an_issuer_that_is_down_refuses_until_it_answers() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let s = server(vec![issuer(
        &format!("http://127.0.0.1:{port}/jwks"),
        None,
        &["session:read"],
    )]);
    let (status, body, _) = s.get("/api/v1/whoami", Some(&token(RSA_A, "rsa-a", 300)));
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("could not be fetched"), "{body}");
}

#[test]
fn without_issuers_a_jwt_is_refused_and_bad_configuration_names_the_field() {
    let s = Server::start(&Backend::Sqlite, None);
    let (status, body, _) = s.get("/api/v1/whoami", Some(&token(RSA_A, "rsa-a", 300)));
    assert_eq!(status, 401);
    assert!(message(&body).contains("trusts no OIDC issuer"), "{body}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("conductor.toml");
    std::fs::write(
        &file,
        "[[oidc]]\nissuer = \"https://idp.example\"\naudience = \"maestro\"\njwks_file = \"missing.json\"\ntenant = \"acme\"\nscopes = [\"runs:read\"]\n",
    )
    .expect("write");
    let settings = Settings::from_file(&file).expect("parses");
    let config = Settings {
        database: Some(dir.path().join("s.db").display().to_string()),
        ..settings
    }
    .validate("unused")
    .expect("valid");
    let err = maestro_server::AppState::open(&config)
        .expect_err("the key file is missing")
        .to_string();
    assert!(
        err.contains("oidc[0].jwks_file") && err.contains("missing.json"),
        "{err}"
    );
}
