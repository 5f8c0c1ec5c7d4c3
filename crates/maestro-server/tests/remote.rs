//! Remote runs over real HTTP, on SQLite and on a throwaway PostgreSQL database: a CI
//! machine opens a run in its own tenant, reports jobs and log tails (a retry applied
//! once), closes it; nobody else may report to it; bad bodies are refused naming the
//! field; the reaper interrupts a run whose reporter went quiet, one conductor at a time.

#[macro_use]
mod common;

use common::{Backend, Server, message};
use maestro_server::persisted;
use maestro_server::remote::{Reaper, reap_once};
use maestro_server::{AppState, Settings};
use serde_json::{Value, json};

fn job(name: &str, status: &str) -> Value {
    json!({
        "name": name, "gate": "test", "status": status, "cache": "miss",
        "cache_key": "k", "reason": null, "note": null, "started_at_ms": 1,
        "duration_ms": 20, "exit_code": if status == "failed" { 1 } else { 0 },
        "log_path": "/home/runner/.maestro/runs/7/logs/x.log", "flaky": false,
        "audit": null, "attempts": [], "artifacts": [],
        "tests": [{"attempt": 1, "suite": "s", "classname": "c", "name": "adds", "status": status.replace("succeeded", "passed"), "duration_ms": 1, "message": null}]
    })
}

on_both! {
a_ci_machine_reports_a_run_into_its_tenant(b) {
    let s = Server::start(b, None);
    let (ci, _) = s.token_in("acme", &["developer"], &["runs:write", "runs:read"], 3_600_000);
    let open = json!({"pipeline": "checkout", "commit": "3f2a9c1", "branch": "main", "args": "run",
                      "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "key": "9b1deb4d3b7d"});
    let (status, body) = s.post("/api/v1/runs", Some(&ci), &open);
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().expect("id");
    assert_eq!(body["url"], format!("/console/runs/{id}"));
    // The answer was lost and the client asks again: the same run.
    let (status, again) = s.post("/api/v1/runs", Some(&ci), &open);
    assert_eq!((status, again["id"].as_i64()), (201, Some(id)), "{again}");

    let reports = format!("/api/v1/runs/{id}/reports");
    let first = json!({"seq": 1, "jobs": [job("build", "succeeded")],
                       "logs": [{"job": "build", "tail": "compiling\nFinished release", "bytes": 9000}]});
    let (status, body) = s.post(&reports, Some(&ci), &first);
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let (status, body) = s.post(&reports, Some(&ci), &first);
    assert_eq!((status, body["outcome"].as_str()), (200, Some("duplicate")), "a retry is applied once: {body}");

    // Another actor of the tenant may read the run but not report to it; another
    // tenant does not see it at all.
    let (colleague, _) = s.token_in("acme", &["developer", "viewer"], &["*"], 3_600_000);
    let (status, body) = s.post(&reports, Some(&colleague), &json!({"seq": 2}));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("not_reporter")), "{body}");
    let (outsider, _) = s.token_in("globex", &["developer"], &["*"], 3_600_000);
    let (status, body) = s.post(&reports, Some(&outsider), &json!({"seq": 2}));
    assert_eq!(status, 404, "{body}");
    let (viewer, _) = s.token_in("acme", &["viewer"], &["*"], 3_600_000);
    let (status, body) = s.post("/api/v1/runs", Some(&viewer), &open);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");

    let last = json!({"seq": 2, "jobs": [job("test", "failed")], "status": "failed",
                      "logs": [{"job": "test", "tail": "running 3 tests\ntest adds ... FAILED\nassertion failed: 2 + 2 == 5", "bytes": 120}]});
    let (status, body) = s.post(&reports, Some(&ci), &last);
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{body}");
    let (status, body) = s.post(&reports, Some(&ci), &json!({"seq": 3}));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_closed")), "{body}");
    assert!(message(&body).contains("failed already"), "{body}");

    let (status, run, _) = s.get(&format!("/api/v1/runs/{id}"), Some(&colleague));
    assert_eq!(status, 200, "{run}");
    assert_eq!((run["run"]["status"].as_str(), run["run"]["tenant"].as_str()), (Some("failed"), Some("acme")));
    assert_eq!(run["run"]["reporter"], "acme/user:developer");
    assert_eq!(run["run"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!((run["run"]["jobs"].as_u64(), run["run"]["failed"].as_u64()), (Some(2), Some(1)));
    let build = run["jobs"].as_array().expect("jobs").iter().find(|j| j["name"] == "build").expect("build");
    assert_eq!(build["log_path"], Value::Null, "the reporter's paths are not kept");
    let (status, body, _) = s.get(&format!("/api/v1/runs/{id}/jobs/test/log?lines=1"), Some(&colleague));
    assert_eq!((status, body["tail"].as_str(), body["bytes"].as_i64()), (200, Some("assertion failed: 2 + 2 == 5"), Some(120)), "{body}");
    let (status, _, _) = s.get(&format!("/api/v1/runs/{id}/jobs/deploy/log"), Some(&colleague));
    assert_eq!(status, 404);
    let (status, _, _) = s.get(&format!("/api/v1/runs/{id}/jobs/test/log"), Some(&outsider));
    assert_eq!(status, 404);
    // The console's persisted query shows the reported tail and who reported the run.
    let (status, body) = s.graphql(&colleague, &json!({"id": persisted::by_name("RunLog").expect("RunLog").id, "variables": {"id": id.to_string(), "job": "test", "lines": 2}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["run"]["job"]["logTail"], "test adds ... FAILED\nassertion failed: 2 + 2 == 5");
    let (_, body) = s.graphql(&colleague, &json!({"id": persisted::by_name("RunDetail").expect("RunDetail").id, "variables": {"id": id.to_string()}}));
    assert_eq!(body["data"]["run"]["reporter"], "acme/user:developer", "{body}");
}

the_conductor_masks_secrets_a_client_did_not(b) {
    // A client that masks nothing (an old one, or not ours) reports a JUnit message, a note
    // and a log tail holding a Maestro token: the conductor stores none of it.
    let s = Server::start(b, None);
    let (ci, _) = s.token_in("acme", &["developer"], &["runs:write", "runs:read"], 3_600_000);
    let (leaked, _) = s.token_in("acme", &["viewer"], &["runs:read"], 3_600_000);
    let (status, body) = s.post("/api/v1/runs", Some(&ci), &json!({"pipeline": "checkout", "key": "k-mask"}));
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().expect("id");
    let mut j = job("test", "failed");
    j["note"] = json!(format!("MAESTRO_TOKEN={leaked}"));
    j["tests"][0]["message"] = json!(format!("assert 401 == 200\nAuthorization: Bearer {leaked}"));
    let report = json!({"seq": 1, "jobs": [j], "status": "failed",
                        "logs": [{"job": "test", "tail": format!("curl -H 'Authorization: Bearer {leaked}'\n"), "bytes": 90}]});
    let (status, body) = s.post(&format!("/api/v1/runs/{id}/reports"), Some(&ci), &report);
    assert_eq!(status, 200, "{body}");
    let detail = s.store().run_detail(id).expect("detail");
    let tail = s.store().job_log(id, "test").expect("log").expect("tail");
    let stored = format!("{detail:?} {tail:?}");
    assert!(!stored.contains(&leaked[4..]), "a secret reached the store: {stored}");
    assert!(stored.contains("[REDACTED: maestro-api-token secret]"), "{stored}");
}

bad_reports_are_refused_naming_the_field(b) {
    let s = Server::start(b, None);
    let (ci, _) = s.token(&["developer"], &["runs:write"]);
    let (status, body) = s.post("/api/v1/runs", Some(&ci), &json!({"pipeline": "p", "key": "k", "comit": "x"}));
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("unknown field `comit`"), "{body}");
    let (status, body) = s.post("/api/v1/runs", Some(&ci), &json!({"pipeline": "p", "key": "k", "trace_id": "xyz"}));
    assert!(status == 400 && message(&body).contains("trace_id `xyz`"), "{body}");
    let (_, body) = s.post("/api/v1/runs", Some(&ci), &json!({"pipeline": "p", "key": "k"}));
    let reports = format!("/api/v1/runs/{}/reports", body["id"]);
    let (status, body) = s.post(&reports, Some(&ci), &json!({"seq": 1, "jobs": [{"name": "build", "status": 3}]}));
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).starts_with("request body: jobs[0].status: invalid type"), "{body}");
    let (status, body) = s.post(&reports, Some(&ci), &json!({"seq": 1, "jobs": [job("build", "exploded")]}));
    assert!(status == 400 && message(&body).contains("jobs[0].status `exploded`"), "{body}");
    let (status, _) = s.post("/api/v1/runs/abc/reports", Some(&ci), &json!({"seq": 1}));
    assert_eq!(status, 400);
    let (status, _) = s.post("/api/v1/runs/424242/reports", Some(&ci), &json!({"seq": 1}));
    assert_eq!(status, 404);
    // Not JSON; and more than the conductor reads.
    let resp = ureq::post(format!("{}{reports}", s.base))
        .header("Authorization", format!("Bearer {ci}"))
        .config()
        .http_status_as_error(false)
        .build()
        .content_type("text/plain")
        .send("seq=1")
        .expect("request");
    assert_eq!(resp.status().as_u16(), 415);
    let huge = json!({"seq": 1, "jobs": [], "pad": "x".repeat(maestro_server::api::MAX_BODY)});
    let (status, body) = s.post(&reports, Some(&ci), &huge);
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("payload_too_large")), "{body}");
}

a_quiet_remote_run_is_interrupted_by_one_conductor(b) {
    // The test server's own reaper waits a day, so only the conductors below act.
    let s = Server::configured(b, Settings { remote_run_timeout_seconds: Some(86_400), ..Settings::default() });
    let (ci, _) = s.token(&["developer"], &["runs:write", "runs:read"]);
    let now = maestro_server::now_ms();
    // Last heard from ten minutes ago.
    let quiet = s
        .store()
        .begin_run(&maestro_store::NewRun {
            pipeline: "p".into(),
            started_at_ms: now - 600_000,
            reporter: Some("user:developer".into()),
            remote_key: Some("quiet".into()),
            ..maestro_store::NewRun::default()
        })
        .expect("begin");
    let (_, body) = s.post("/api/v1/runs", Some(&ci), &json!({"pipeline": "p", "key": "chatty"}));
    let chatty = body["id"].as_i64().expect("id");
    // Two more conductors on the same store. They look a minute from now: the test
    // server's own reaper took the lease at start, for 45 s.
    let config = Settings { database: Some(s.location.clone()), ..Settings::default() }.validate("unused").expect("config");
    let (a, b2) = (AppState::open(&config).expect("a"), AppState::open(&config).expect("b"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let r = Reaper { quiet: std::time::Duration::from_secs(300), every: std::time::Duration::from_secs(15) };
    rt.block_on(async {
        let (lease, reaped) = reap_once(&a, "conductor-a", r, now + 60_000).await.expect("reap");
        assert!(lease.is_some(), "the lease is free after 45 s");
        assert_eq!(reaped, [quiet], "quiet for 11 min; chatty for 1 min");
        let (lease, reaped) = reap_once(&b2, "conductor-b", r, now + 61_000).await.expect("reap");
        assert!(lease.is_none() && reaped.is_empty(), "a holds the lease: b does nothing");
    });
    let (_, run, _) = s.get(&format!("/api/v1/runs/{quiet}"), Some(&ci));
    assert_eq!(run["run"]["status"], "interrupted", "{run}");
    let (_, run, _) = s.get(&format!("/api/v1/runs/{chatty}"), Some(&ci));
    assert_eq!(run["run"]["status"], "running", "{run}");
    // The reporter that comes back too late is told its run is over.
    let (status, body) = s.post(&format!("/api/v1/runs/{quiet}/reports"), Some(&ci), &json!({"seq": 1}));
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("run_closed")), "{body}");
    drop((a, b2));
}
}
