//! The conductor's API over real HTTP, on SQLite and on a throwaway PostgreSQL database:
//! every endpoint needs a valid token, the right scope and the policy's consent; expired
//! and revoked tokens are refused; runs are read through the store.

#[macro_use]
mod common;

use common::{Backend, Server, concrete, message};
use maestro_server::{AppState, Settings, api::ENDPOINTS};
use maestro_store::{Batch, NewRun};

on_both! {
every_endpoint_needs_a_token_its_scope_and_the_policy(b) {
    let s = Server::start(b, None);
    s.store().begin_run(&NewRun { pipeline: "hello".into(), ..NewRun::default() }).expect("run");
    let (nobody, _) = s.token(&[], &["*"]);
    let (unscoped, _) = s.token(&["admin"], &["nothing:here"]);
    let (admin, _) = s.token(&["admin"], &["*"]);
    assert!(ENDPOINTS.len() >= 3);
    for e in ENDPOINTS {
        let path = concrete(e.path);
        let (status, body, headers) = s.call(e.method, &path, None);
        assert_eq!(status, 401, "{e:?} without a token: {body}");
        assert_eq!(headers.get("www-authenticate").map(String::as_str), Some("Bearer"), "{e:?}");
        let (status, body, _) = s.call(e.method, &path, Some("mst_not-a-real-token"));
        assert_eq!(status, 401, "{e:?} with an unknown token: {body}");
        let (status, body, _) = s.call(e.method, &path, Some(&unscoped));
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("insufficient_scope")), "{e:?}: {body}");
        let (status, body, _) = s.call(e.method, &path, Some(&nobody));
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{e:?} for an actor without roles: {body}");
        assert!(message(&body).contains(e.action), "{body}");
        // Allowed: whatever the handler answers (an empty audit log is a 404, a missing
        // parameter, an empty body or a missing reason a 400), never a refusal.
        let (status, body, _) = s.call(e.method, &path, Some(&admin));
        assert!(![401, 403].contains(&status), "{e:?} for an admin: {status} {body}");
    }
    let (status, _, _) = s.get("/api/v1/nothing", Some(&admin));
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

metrics_count_requests_runs_jobs_and_the_cache_for_operators(b) {
    let s = Server::start(b, None);
    let mut store = s.store();
    let run = store.begin_run(&NewRun { pipeline: "hello".into(), ..NewRun::default() }).expect("run");
    let job = |name: &str, cache: &str, ms: i64| maestro_store::JobRow {
        name: name.into(),
        status: "succeeded".into(),
        cache: cache.into(),
        duration_ms: ms,
        ..maestro_store::JobRow::default()
    };
    store
        .record(run, &Batch { jobs: vec![job("build", "miss", 2_500), job("lint", "hit", 3)], ..Batch::default() })
        .expect("record");
    store.finish_run(run, maestro_store::RunStatus::Succeeded, 10).expect("finish");
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    let (operator, _) = s.token(&["operator"], &["metrics:read", "session:read"]);
    let (status, body, _) = s.get("/metrics", Some(&viewer));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    // A request continuing a trace is answered with the same trace, a new span.
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, headers, _) = s.get_text("/api/v1/whoami", &operator, Some(caller));
    assert_eq!(status, 200);
    let answer = headers.get("traceresponse").expect("traceresponse");
    assert!(answer.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !answer.contains("00f067aa0ba902b7"), "{answer}");
    let (status, headers, text) = s.get_text("/metrics", &operator, None);
    assert_eq!(status, 200, "{text}");
    assert!(headers["content-type"].starts_with("application/openmetrics-text"), "{headers:?}");
    for want in [
        "# TYPE maestro_http_request_duration_seconds histogram",
        "maestro_http_request_duration_seconds_count{route=\"/api/v1/whoami\",method=\"GET\",status=\"200\"} 1",
        "maestro_http_request_duration_seconds_count{route=\"/metrics\",method=\"GET\",status=\"403\"} 1",
        "maestro_runs{status=\"succeeded\"} 1",
        "maestro_job_duration_seconds_bucket{le=\"1.0\"} 0",
        "maestro_job_duration_seconds_bucket{le=\"5.0\"} 1",
        "maestro_job_duration_seconds_sum 2.5",
        "maestro_job_duration_seconds_count 1",
        "maestro_cache_hit_ratio 0.5",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Route patterns, never raw paths: an id does not become a label value.
    let _ = s.get_text(&format!("/api/v1/runs/{run}"), &operator, None);
    let (_, _, text) = s.get_text("/metrics", &operator, None);
    assert!(text.contains("route=\"/api/v1/runs/{id}\""), "{text}");
    assert!(!text.contains(&format!("route=\"/api/v1/runs/{run}\"")), "{text}");
}

audit_checkpoints_and_proofs_are_served_and_verify_offline(b) {
    let s = Server::start(b, None);
    let (reader, _) = s.token(&["viewer"], &["audit:read"]);
    let (status, body, _) = s.get("/api/v1/audit/checkpoint", Some(&reader));
    assert_eq!((status, message(&body)), (404, "the audit log is empty".to_owned()), "{body}");
    let mut log = if s.location.starts_with("postgres://") {
        maestro_audit::Log::open_postgres(&s.location)
    } else {
        maestro_audit::Log::open_sqlite(std::path::Path::new(&s.location))
    }
    .expect("the audit log");
    let (key, _) = maestro_audit::LogKey::generate("maestro.test/audit").expect("key");
    for action in ["deploy", "rollback"] {
        log.append(
            &key,
            &maestro_audit::NewEntry {
                actor: maestro_audit::Actor { id: "alice".into(), via: "token".into() },
                action: action.into(),
                target: "checkout".into(),
                params: serde_json::json!({}),
                reason: Some("INC-1: test".into()),
                result: maestro_audit::Outcome::Success,
                links: maestro_audit::Links::default(),
                tenant: None,
            },
        )
        .expect("append");
    }
    let trust = maestro_audit::Trust::new(&[key.vkey()]).expect("trust");
    let (status, body, _) = s.get("/api/v1/audit/checkpoint", Some(&reader));
    assert_eq!((status, body["size"].as_u64()), (200, Some(2)), "{body}");
    let note = body["checkpoint"].as_str().expect("note");
    assert!(trust.verify(note).is_ok(), "the checkpoint is signed by the log's key: {note}");
    // An inclusion proof over REST checks out against the entry's own bytes.
    let (status, body, _) = s.get("/api/v1/audit/entries/0/proof", Some(&reader));
    assert_eq!(status, 200, "{body}");
    let proof: maestro_audit::InclusionProof = serde_json::from_value(body).expect("proof");
    let (_, bytes) = log.entry(0).expect("entry 0");
    maestro_audit::check_inclusion(&proof, &bytes, &trust).expect("inclusion verifies");
    assert!(maestro_audit::check_inclusion(&proof, b"{}", &trust).is_err(), "other bytes fail");
    // A consistency proof from the first checkpoint to the latest.
    let (status, body, _) = s.get("/api/v1/audit/consistency?from=1", Some(&reader));
    assert_eq!(status, 200, "{body}");
    let proof: maestro_audit::ConsistencyProof = serde_json::from_value(body).expect("proof");
    maestro_audit::check_consistency(&proof, &trust).expect("consistency verifies");
    for (path, code) in [
        ("/api/v1/audit/entries/9/proof", 404),
        ("/api/v1/audit/entries/x/proof", 400),
        ("/api/v1/audit/consistency", 400),
        ("/api/v1/audit/consistency?from=1&to=7", 404),
    ] {
        assert_eq!(s.get(path, Some(&reader)).0, code, "{path}");
    }
    // Another tenant's reader sees the log-wide head (sizes and hashes), not the entries.
    let (outsider, _) = s.token_in("globex", &["viewer"], &["audit:read"], 60_000);
    assert_eq!(s.get("/api/v1/audit/checkpoint", Some(&outsider)).0, 200);
    assert_eq!(s.get("/api/v1/audit/entries/1/proof", Some(&outsider)).0, 404);
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
    // A run of its own tenant it sees, and the default tenant's viewer does not.
    let theirs = store
        .begin_run(&NewRun { pipeline: "billing".into(), tenant: "globex".into(), ..NewRun::default() })
        .expect("run");
    let (status, body, _) = s.get("/api/v1/runs", Some(&outsider));
    assert_eq!((status, body[0]["id"].as_i64(), body[0]["tenant"].as_str()), (200, Some(theirs), Some("globex")), "{body}");
    assert_eq!(s.get(&format!("/api/v1/runs/{theirs}"), Some(&outsider)).0, 200);
    assert_eq!(s.get(&format!("/api/v1/runs/{theirs}"), Some(&viewer)).0, 404);
    let (_, body, _) = s.get("/api/v1/runs", Some(&viewer));
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
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
    let done = s.stop();
    assert!(done.is_ok(), "{done:?}");
}
