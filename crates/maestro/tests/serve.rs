//! `maestro serve` and `maestro token` end to end: the real binary, a real run in the
//! store, HTTP on loopback, SIGTERM.

mod common;

use common::{Repo, text};

fn get(url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("request");
    let status = resp.status().as_u16();
    (
        status,
        resp.body_mut()
            .read_json()
            .unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn a_token_reads_runs_from_the_conductor_until_it_is_revoked_and_sigterm_stops_it() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  hello:\n    run: echo hi\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let created = repo.run(&[
        "token",
        "create",
        "--name",
        "laptop",
        "--actor",
        "user:alice",
        "--role",
        "viewer",
        "--scope",
        "runs:read",
        "--expires",
        "1h",
    ]);
    assert!(created.status.success(), "{}", text(&created));
    let secret = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(secret.starts_with("mst_"), "{secret}");
    let listed = repo.json(&["token", "list", "--json"]);
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    assert!(
        listed[0].get("hash").is_none(),
        "the hash is not listed: {listed}"
    );
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is never stored or listed"
    );

    let (mut child, base, lines) = common::serve(&repo, &[]);

    assert_eq!(get(&format!("{base}/healthz"), None).0, 200);
    assert_eq!(get(&format!("{base}/readyz"), None).0, 200);
    assert_eq!(get(&format!("{base}/api/v1/runs"), None).0, 401);
    let (status, runs) = get(&format!("{base}/api/v1/runs"), Some(&secret));
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    let run_id = runs[0]["id"].as_i64().expect("id");
    let (status, detail) = get(&format!("{base}/api/v1/runs/{run_id}"), Some(&secret));
    assert_eq!(
        (status, detail["jobs"][0]["name"].as_str()),
        (200, Some("hello")),
        "{detail}"
    );
    // The viewer token has no session:read scope. The refusal is logged with the
    // request's trace.
    assert_eq!(get(&format!("{base}/api/v1/whoami"), Some(&secret)).0, 403);
    let traced = ureq::get(format!("{base}/api/v1/whoami"))
        .header("Authorization", format!("Bearer {secret}"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("request");
    assert_eq!(traced.status().as_u16(), 403);

    let revoked = repo.run(&["token", "revoke", &id]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    assert_eq!(get(&format!("{base}/api/v1/runs"), Some(&secret)).0, 401);
    assert_eq!(
        repo.run(&["token", "revoke", &id]).status.code(),
        Some(2),
        "revoked once"
    );

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a graceful stop: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("conductor stopped")),
        "{rest:?}"
    );
    let denied: Vec<serde_json::Value> = rest
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["msg"] == "denied")
        .collect();
    assert!(
        denied
            .iter()
            .any(|v| v["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
                && v["missing_scope"] == "session:read"
                && v["span_id"].as_str().is_some_and(|s| s.len() == 16)),
        "the log line carries the request's trace: {denied:?}"
    );
    assert!(
        !rest.iter().any(|l| l.contains(&secret)),
        "the secret never reaches the log"
    );
}

#[test]
fn bad_configuration_is_refused_before_listening_and_names_the_field() {
    let repo = Repo::new();
    repo.write(
        "conductor.toml",
        "listen = \"127.0.0.1:0\"\nmode = \"staging\"\n",
    );
    let out = repo.run(&["serve", "--config", "conductor.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("mode: `staging` is not a mode"),
        "{}",
        text(&out)
    );

    repo.write("typo.toml", "lisen = \"127.0.0.1:0\"\n");
    let out = repo.run(&["serve", "--config", "typo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("typo.toml") && text(&out).contains("lisen"),
        "{}",
        text(&out)
    );

    // An OIDC issuer without scopes (deny by default: say what its tokens may do), and
    // one whose key file is missing.
    repo.write(
        "oidc.toml",
        "listen = \"127.0.0.1:0\"\n[[oidc]]\nissuer = \"https://idp.example\"\naudience = \"maestro\"\njwks_url = \"https://idp.example/jwks\"\ntenant = \"acme\"\n",
    );
    let out = repo.run(&["serve", "--config", "oidc.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("oidc[0].scopes"), "{}", text(&out));
    repo.write(
        "keys.toml",
        "listen = \"127.0.0.1:0\"\n[[oidc]]\nissuer = \"https://idp.example\"\naudience = \"maestro\"\njwks_file = \"keys/jwks.json\"\ntenant = \"acme\"\nscopes = [\"runs:read\"]\n",
    );
    let out = repo.run(&["serve", "--config", "keys.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("oidc[0].jwks_file") && text(&out).contains("keys/jwks.json"),
        "{}",
        text(&out)
    );

    let out = repo.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database",
        "postgres://postgres@127.0.0.1:1/x",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "an unreachable store is an environment failure: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("postgres://postgres@127.0.0.1:1/x"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_token_needs_a_scope_and_a_bounded_lifetime() {
    let repo = Repo::new();
    let out = repo.run(&["token", "create", "--name", "x", "--actor", "user:a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("at least one --scope"),
        "{}",
        text(&out)
    );
    let out = repo.run(&[
        "token",
        "create",
        "--name",
        "x",
        "--actor",
        "user:a",
        "--scope",
        "*",
        "--expires",
        "1000d",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("out of range"), "{}", text(&out));
}

#[test]
fn the_manifest_lists_persisted_operations_and_the_matrix_catches_a_flipped_cell() {
    let repo = Repo::new();
    let out = repo.run(&["api", "manifest"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
    assert_eq!(m["format"], "apollo-persisted-query-manifest");
    let ops = m["operations"].as_array().expect("operations");
    assert!(ops.iter().any(|o| o["name"] == "RunDetail"));
    for o in ops {
        let body = o["body"].as_str().expect("body");
        let id = o["id"].as_str().expect("id");
        assert_eq!(id.len(), 64);
        assert!(body.starts_with("query "), "{body}");
    }

    let out = repo.run(&["api", "coverage"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("100.0%  console operations persisted (5/5)"),
        "{t}"
    );
    assert!(
        t.contains("100.0%  GraphQL fields under the ABAC wrapper"),
        "{t}"
    );
    assert!(!t.contains("missing:"), "{t}");
    let out = repo.run(&["api", "coverage", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("coverage JSON");
    assert_eq!(r["rest_tested"]["part"], r["rest_tested"]["whole"], "{r}");

    let out = repo.run(&["api", "matrix"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("cells as the matrix says (policy built-in)"),
        "{}",
        text(&out)
    );

    // A policy that also lets viewers into other tenants flips cells, which are named.
    let policy = repo.dir.path().join("policy");
    std::fs::create_dir_all(&policy).expect("mkdir");
    std::fs::write(
        policy.join("authz.rego"),
        "package maestro.authz\nimport rego.v1\ndefault allow := false\n\
         allow if { input.action == \"runs.read\"; \"viewer\" in input.actor.roles }\n",
    )
    .expect("write");
    let out = repo.run(&["api", "matrix", "--policy", policy.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("FLIPPED  role viewer × other tenant × runs.read: the matrix says deny, the policy says allow"),
        "{t}"
    );
    assert!(t.contains("update the matrix"), "{t}");
}

#[test]
fn the_conductor_signs_sensitive_actions_into_its_audit_log() {
    let repo = Repo::new();
    let admin = {
        let out = repo.run(&[
            "token",
            "create",
            "--name",
            "ops",
            "--actor",
            "user:ops",
            "--role",
            "admin",
            "--tenant",
            "acme",
            "--scope",
            "tokens:write",
            "--expires",
            "1h",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let listed = repo.json(&["token", "list", "--json"]);
    let id = listed[0]["id"].as_str().expect("id").to_owned();
    let key = repo.run(&["audit", "key"]);
    assert!(key.status.success(), "{}", text(&key));
    let (_child, base, lines) = common::serve(&repo, &[]);
    std::thread::spawn(move || for _ in lines {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let revoke = |reason: Option<&str>| {
        let mut req = agent
            .post(format!("{base}/api/v1/tokens/{id}/revoke"))
            .header("Authorization", format!("Bearer {admin}"));
        if let Some(r) = reason {
            req = req.header("X-Maestro-Reason", r);
        }
        req.send_json(serde_json::json!({}))
            .expect("request")
            .status()
            .as_u16()
    };
    assert_eq!(revoke(None), 400, "no reason, no action");
    assert_eq!(
        revoke(Some("offboarding ops")),
        200,
        "its own token, revoked by itself"
    );
    let list = repo.run(&["audit", "list", "--tenant", "acme"]);
    let shown = text(&list);
    assert!(list.status.success(), "{shown}");
    assert!(
        shown.contains("tokens.revoke") && shown.contains("offboarding ops"),
        "{shown}"
    );
    let other = repo.run(&["audit", "list", "--tenant", "default"]);
    assert!(
        text(&other).contains("no audit entries match"),
        "the admin's tenant's entries only: {}",
        text(&other)
    );
    let verify = repo.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "the conductor's entries verify: {}",
        text(&verify)
    );

    // A key that is not the log's is refused at start.
    let out = repo
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .env(
            "MAESTRO_AUDIT_KEY",
            "PRIVATE+KEY+other.example/audit+00000000+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("MAESTRO_AUDIT_KEY"), "{}", text(&out));
}
