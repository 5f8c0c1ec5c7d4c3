//! `maestro run --server` end to end, with the real binary on both sides: a conductor
//! (`maestro serve` on its SQLite store) and a CI checkout that reports a run into it —
//! with an API token in `MAESTRO_TOKEN`, and with GitHub Actions' OIDC token service (a
//! loopback stand-in that answers as GitHub documents, signing with test keys). The
//! conductor ends up with the run, its jobs and their log tails, secrets masked.

mod common;

use std::io::{Read as _, Write as _};
use std::sync::mpsc;

use common::{Repo, text};

/// `maestro serve` in `repo` with `args`; its base URL. Its log is drained so it never
/// blocks on a full pipe.
fn serve(repo: &Repo, args: &[&str]) -> (common::Killed, String) {
    let (child, base, lines) = common::serve(repo, args);
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

/// `maestro run --log-format plain --server URL` plus `args` in `checkout`, with `env`.
fn reported(
    checkout: &Repo,
    server: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut all = vec!["run", "--log-format", "plain", "--server", server];
    all.extend_from_slice(args);
    let mut cmd = checkout.cmd(&all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run")
}

fn token(repo: &Repo, actor: &str, role: &str, scope: &str) -> String {
    let out = repo.run(&[
        "token",
        "create",
        "--name",
        actor,
        "--actor",
        actor,
        "--role",
        role,
        "--scope",
        scope,
        "--expires",
        "1h",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn get(url: &str, token: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("request");
    let status = resp.status().as_u16();
    (
        status,
        resp.body_mut()
            .read_json()
            .unwrap_or(serde_json::Value::Null),
    )
}

const PIPELINE: &str = "version: 1\njobs:\n  build:\n    run: printf 'compiling\\nexport AWS_ACCESS_KEY_ID=AKIAZ7VRSQ5TQDNXKCVB\\nbuilt\\n'; echo \"for run $MAESTRO_CONDUCTOR_RUN on $MAESTRO_SERVER\"\n  test:\n    needs: [build]\n    run: printf 'running 1 test\\nassertion failed (2 + 2 == 5)\\n'; exit 1\n";

#[test]
fn a_ci_run_reports_into_the_conductor_with_masked_log_tails() {
    let conductor = Repo::new();
    let ci = token(&conductor, "ci:shop", "developer", "runs:write");
    let reader = token(&conductor, "user:alice", "viewer", "runs:read");
    let (_server, base) = serve(&conductor, &[]);

    let checkout = Repo::new();
    checkout.write("maestro.yaml", PIPELINE);
    let out = reported(&checkout, &base, &[], &[("MAESTRO_TOKEN", &ci)]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "the test job fails: {shown}");
    assert!(
        shown.contains(&format!("reporting to {base}/console/runs/1")),
        "{shown}"
    );
    assert!(
        shown.contains(
            "1 line(s) of logs, notes or test messages that looked like secrets were masked"
        ),
        "{shown}"
    );
    assert!(!shown.contains(&ci), "the token is never printed");

    let (status, run) = get(&format!("{base}/api/v1/runs/1"), &reader);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["run"]["status"], "failed", "{run}");
    assert_eq!(run["run"]["reporter"], "ci:shop");
    let names: Vec<&str> = run["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert!(
        names.contains(&"build") && names.contains(&"test"),
        "{names:?}"
    );
    assert_eq!(
        run["run"]["trace_id"].as_str().map(str::len),
        Some(32),
        "the run's trace id: {run}"
    );
    let (status, log) = get(&format!("{base}/api/v1/runs/1/jobs/test/log"), &reader);
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["tail"], "running 1 test\nassertion failed (2 + 2 == 5)");
    let (_, log) = get(&format!("{base}/api/v1/runs/1/jobs/build/log"), &reader);
    let tail = log["tail"].as_str().expect("tail");
    assert!(
        tail.starts_with("compiling\n[REDACTED: ")
            && tail.ends_with(&format!("secret]\nbuilt\nfor run 1 on {base}")),
        "a job knows its conductor and run (for `maestro deploy`): {tail}"
    );
    assert!(!tail.contains("AKIAZ7VRSQ5TQDNXKCVB"));
    // The checkout keeps its own full record too.
    assert_eq!(
        checkout.json(&["runs", "show", "--json"])["run"]["status"],
        "failed"
    );

    // A token that may not write runs stops the run before any job starts.
    let out = reported(&checkout, &base, &[], &[("MAESTRO_TOKEN", &reader)]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("insufficient_scope"), "{}", text(&out));
    assert_eq!(
        checkout
            .json(&["runs", "list", "--json"])
            .as_array()
            .map(Vec::len),
        Some(1),
        "no run started"
    );
    // No credential, or plain HTTP to another machine: usage errors.
    let out = checkout.run(&["run", "--server", &base]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("MAESTRO_TOKEN"), "{}", text(&out));
    let out = reported(
        &checkout,
        "http://maestro.example.com",
        &[],
        &[("MAESTRO_TOKEN", &ci)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("plain HTTP"), "{}", text(&out));
    // A conductor that is down: a warning, and the build goes on.
    let out = reported(
        &checkout,
        "http://127.0.0.1:9",
        &[],
        &[("MAESTRO_TOKEN", &ci)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("warning: this run is not reported"),
        "{}",
        text(&out)
    );
}

/// GitHub Actions' OIDC token service, as documented for custom clients: `GET
/// $ACTIONS_ID_TOKEN_REQUEST_URL&audience=…` with the request token as a bearer, answered
/// with `{"count": …, "value": "<ID token>"}`. Hands over each request's line.
fn github_token_service(id_token: String) -> (String, mpsc::Receiver<(String, String)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/_apis/distributedtask/hubs/build/plans/1/jobs/2/idtoken?api-version=2.0",
        listener.local_addr().expect("addr")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = vec![0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let line = head.lines().next().unwrap_or_default().to_owned();
            let auth = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or_default()
                .to_owned();
            let body = if auth == "Bearer runner-request-token" {
                serde_json::json!({"count": 1, "value": id_token}).to_string()
            } else {
                String::new()
            };
            let status = if body.is_empty() {
                "401 Unauthorized"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tx.send((line, auth));
        }
    });
    (url, rx)
}

#[test]
fn a_github_actions_job_reports_with_its_oidc_token() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../maestro-server/tests/fixtures/oidc");
    let conductor = Repo::new();
    conductor.write(
        "conductor.toml",
        &format!(
            "[[oidc]]\nissuer = \"https://token.actions.githubusercontent.com\"\naudience = \"https://maestro.octo-org.test\"\njwks_file = \"{}\"\ntenant_claim = \"repository_owner\"\nroles = [\"developer\"]\nscopes = [\"runs:write\", \"runs:read\"]\nrequire = {{ repository_owner = \"octo-org\" }}\n",
            fixtures.join("jwks.json").display()
        ),
    );
    let (_server, base) = serve(&conductor, &["--config", "conductor.toml"]);
    let now = i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time");
    let claims = serde_json::json!({
        "sub": "repo:octo-org/shop:ref:refs/heads/main", "aud": "https://maestro.octo-org.test",
        "repository": "octo-org/shop", "repository_owner": "octo-org", "ref": "refs/heads/main",
        "iss": "https://token.actions.githubusercontent.com", "nbf": now - 5, "iat": now - 5, "exp": now + 300
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-a".to_owned());
    let pem = std::fs::read(fixtures.join("rsa-a.pem")).expect("key");
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("pem"),
    )
    .expect("sign");
    let (url, requests) = github_token_service(id_token.clone());

    let checkout = Repo::new();
    checkout.write(
        "maestro.yaml",
        "version: 1\njobs:\n  build:\n    run: echo built\n",
    );
    let out = reported(
        &checkout,
        &base,
        &["--server-audience", "https://maestro.octo-org.test"],
        &[
            ("ACTIONS_ID_TOKEN_REQUEST_URL", &url),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "runner-request-token"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(&id_token) && !text(&out).contains("runner-request-token"));
    let (line, auth) = requests.recv().expect("the token service was asked");
    assert!(
        line.starts_with("GET /_apis/distributedtask/hubs/build/plans/1/jobs/2/idtoken?api-version=2.0&audience=https%3A%2F%2Fmaestro.octo-org.test "),
        "{line}"
    );
    assert_eq!(auth, "Bearer runner-request-token");
    // The run is the repository's, in its owner's tenant: readable with the same kind of token.
    let (status, run) = get(&format!("{base}/api/v1/runs/1"), &id_token);
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        (run["run"]["status"].as_str(), run["run"]["tenant"].as_str()),
        (Some("succeeded"), Some("octo-org")),
        "{run}"
    );
    assert_eq!(
        run["run"]["reporter"],
        "octo-org/oidc:repo:octo-org/shop:ref:refs/heads/main"
    );
}
