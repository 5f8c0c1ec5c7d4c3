//! Feature flags over the conductor's API, on SQLite and PostgreSQL: OFREP and flagd's
//! HTTP evaluation API (Connect's JSON) answer as an OpenFeature SDK expects; the kill
//! switch needs a reason and an operator, is audited, and a second conductor on the same
//! database serves it too. A changed registry file is served at once and audited; an
//! invalid one is refused and the registry in service stays.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Server};
use maestro_server::Settings;
use serde_json::json;

const REGISTRY: &str = r#"{
  "flags": {
    "welsh-greetings": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"if": [{"==": [{"var": "region"}, "GB-WLS"]}, "on", null]},
      "metadata": {"owner": "team-greetings", "risk": "high", "expires": "2099-01-01", "killSwitch": "off"}
    },
    "greeting-punctuation": {
      "state": "ENABLED",
      "variants": {"plain": ".", "excited": "!"},
      "defaultVariant": "plain",
      "metadata": {"owner": "team-greetings"}
    },
    "retry-budget": {
      "state": "ENABLED",
      "variants": {"small": 3, "large": 10},
      "defaultVariant": "small",
      "metadata": {"owner": "team-platform"}
    }
  }
}"#;

fn settings(dir: &std::path::Path) -> Settings {
    let file = dir.join("flags.json");
    std::fs::write(&file, REGISTRY).expect("write");
    Settings {
        flags: Some(maestro_server::flags::FlagsSettings {
            file,
            tenant: "default".into(),
        }),
        ..Settings::default()
    }
}

fn audited(b: &Backend, dir: &std::path::Path) -> Server {
    let (key, _) = maestro_audit::LogKey::generate("conductor.test/audit").expect("key");
    let key = Arc::new(key);
    Server::configured_with(b, settings(dir), move |c| c.audit_key = Some(key))
}

const WHY: (&str, &str) = (
    "X-Maestro-Reason",
    "INC-77: Welsh greetings crash old clients",
);

#[test]
fn a_changed_registry_is_served_and_audited_and_an_invalid_one_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = audited(&Backend::Sqlite, dir.path());
    let (app, _) = s.token(&["viewer"], &["flags:evaluate"]);
    let eval = |key: &str| {
        s.post(
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            Some(&app),
            &json!({"context": {}}),
        )
    };
    assert_eq!(eval("dark-mode").0, 404);
    let file = dir.path().join("flags.json");
    let added = REGISTRY.replacen(
        r#""flags": {"#,
        r#""flags": {"dark-mode": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"owner": "team-ui"}},"#,
        1,
    );
    std::fs::write(&file, &added).expect("write");
    let t = Instant::now();
    while eval("dark-mode").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(120), "never reloaded");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(eval("dark-mode").1["value"], true);
    // A broken file: refused, the registry in service stays.
    std::fs::write(&file, "{\"flags\": {\"x\": ").expect("write");
    std::thread::sleep(maestro_server::flags::REFRESH * 2);
    assert_eq!(eval("dark-mode").1["value"], true);
    let mut log = maestro_audit::Log::open_sqlite(std::path::Path::new(&s.location)).expect("log");
    let loads = log
        .list(&maestro_audit::Query {
            action: Some("flags.registry_loaded".into()),
            limit: 10,
            ..maestro_audit::Query::default()
        })
        .expect("list");
    assert_eq!(loads.len(), 1, "{loads:#?}");
    assert_eq!(loads[0].actor.id, "conductor");
    assert_eq!(loads[0].params["flags"], 4);
    assert!(
        loads[0].params["digest"]
            .as_str()
            .expect("digest")
            .starts_with("sha256:")
    );
}

on_both! {
ofrep_and_flagd_evaluate_and_the_kill_switch_is_audited(b) {
    let dir = tempfile::tempdir().expect("tmp");
    let s = audited(b, dir.path());
    let (app, _) = s.token(&["viewer"], &["flags:evaluate"]);
    let (ops, _) = s.token(&["operator"], &["flags:read", "flags:write"]);
    let wales = json!({"context": {"targetingKey": "u1", "region": "GB-WLS"}});

    // OFREP.
    let (status, r) = s.post("/ofrep/v1/evaluate/flags/welsh-greetings", Some(&app), &wales);
    assert_eq!(status, 200, "{r}");
    assert_eq!((r["key"].clone(), r["value"].clone(), r["variant"].clone(), r["reason"].clone()),
        (json!("welsh-greetings"), json!(true), json!("on"), json!("TARGETING_MATCH")));
    assert_eq!(r["metadata"]["owner"], "team-greetings");
    let (status, r) = s.post("/ofrep/v1/evaluate/flags/nope", Some(&app), &json!({"context": {}}));
    assert_eq!((status, r["errorCode"].as_str()), (404, Some("FLAG_NOT_FOUND")), "{r}");
    let (status, r) = s.post("/ofrep/v1/evaluate/flags/welsh-greetings", Some(&app), &json!({"context": [1]}));
    assert_eq!((status, r["errorCode"].as_str()), (400, Some("INVALID_CONTEXT")), "{r}");
    let (status, r) = s.post("/ofrep/v1/evaluate/flags", Some(&app), &wales);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["flags"].as_array().map(Vec::len), Some(3), "{r}");

    // flagd's evaluation API, Connect's JSON.
    let resolve = |method: &str, key: &str| {
        s.post(&format!("/flagd.evaluation.v1.Service/{method}"), Some(&app),
            &json!({"flagKey": key, "context": {"targetingKey": "u1", "region": "GB-WLS"}}))
    };
    let (status, r) = resolve("ResolveBoolean", "welsh-greetings");
    assert_eq!((status, r["value"].clone(), r["reason"].clone()), (200, json!(true), json!("TARGETING_MATCH")), "{r}");
    let (status, r) = resolve("ResolveString", "greeting-punctuation");
    assert_eq!((status, r["value"].clone(), r["reason"].clone()), (200, json!("."), json!("STATIC")), "{r}");
    let (status, r) = resolve("ResolveInt", "retry-budget");
    assert_eq!((status, r["value"].clone()), (200, json!("3")), "int64 is a string in protobuf's JSON: {r}");
    let (status, r) = resolve("ResolveBoolean", "greeting-punctuation");
    assert_eq!((status, r["code"].as_str(), r["message"].as_str()), (400, Some("invalid_argument"), Some("TYPE_MISMATCH")), "{r}");
    let (status, r) = resolve("ResolveBoolean", "nope");
    assert_eq!((status, r["code"].as_str()), (404, Some("not_found")), "{r}");
    let (status, r) = resolve("ResolveAll", "");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["flags"]["welsh-greetings"]["boolValue"], true, "{r}");
    assert_eq!(r["flags"]["retry-budget"]["doubleValue"], 3, "{r}");

    // The app's token may evaluate, not kill; the kill switch needs a reason.
    let (status, _) = s.post_with("/api/v1/flags/welsh-greetings/kill", Some(&app), &[WHY], &json!({}));
    assert_eq!(status, 403);
    let (status, r) = s.post("/api/v1/flags/welsh-greetings/kill", Some(&ops), &json!({}));
    assert_eq!((status, r["error"]["code"].as_str()), (400, Some("reason_required")), "{r}");
    let (status, r) = s.post_with("/api/v1/flags/welsh-greetings/kill", Some(&ops), &[WHY], &json!({}));
    assert_eq!((status, r["serves"].as_str()), (200, Some("off")), "{r}");
    let (_, r) = s.post("/ofrep/v1/evaluate/flags/welsh-greetings", Some(&app), &wales);
    assert_eq!((r["value"].clone(), r["reason"].clone()), (json!(false), json!("DISABLED")), "killed: {r}");
    let (status, listed, _) = s.get("/api/v1/flags", Some(&ops));
    assert_eq!(status, 200, "{listed}");
    let w = listed["flags"].as_array().expect("flags").iter().find(|f| f["key"] == "welsh-greetings").cloned().expect("listed");
    assert_eq!((w["killed"].clone(), w["owner"].clone()), (json!(true), json!("team-greetings")));
    assert_eq!(w["kill_switch"]["reason"], WHY.1);

    // Another conductor on the same database serves the kill within its refresh.
    let other = Server::joining(&s, settings(dir.path()));
    let started = Instant::now();
    loop {
        let (_, r) = other.post("/ofrep/v1/evaluate/flags/welsh-greetings", Some(&app), &wales);
        if r["reason"] == "DISABLED" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "never saw the kill: {r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = s.post_with("/api/v1/flags/welsh-greetings/restore", Some(&ops), &[WHY], &json!({}));
    assert_eq!(status, 200);
    let (_, r) = s.post("/ofrep/v1/evaluate/flags/welsh-greetings", Some(&app), &wales);
    assert_eq!(r["reason"], "TARGETING_MATCH", "{r}");

    // The console shows every flag with its owner and kills one as the signed-in user.
    let cookie = s.console_session(&ops);
    let console = |method: &str, path: &str, form: Option<&str>| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let url = format!("{}{path}", s.base);
        let mut resp = match (method, form) {
            ("POST", Some(f)) => agent
                .post(&url)
                .header("Cookie", &cookie)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .send(f.to_owned()),
            _ => agent.get(&url).header("Cookie", &cookie).call(),
        }
        .expect("console");
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, page) = console("GET", "/console/flags", None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-flag=\"welsh-greetings\"") && page.contains("team-greetings"), "{page}");
    let (status, _) = console("POST", "/console/flags/greeting-punctuation", Some("action=kill&reason=too+loud"));
    assert_eq!(status, 303);
    let (_, page) = console("GET", "/console/flags", None);
    assert!(page.contains("flag flag-killed\" data-flag=\"greeting-punctuation\""), "{page}");
    assert!(page.contains("user:operator: too loud"), "{page}");

    // Both changes are in the audit log, before and after, with the reason.
    let mut log = if s.location.starts_with("postgres://") {
        maestro_audit::Log::open_postgres(&s.location)
    } else {
        maestro_audit::Log::open_sqlite(std::path::Path::new(&s.location))
    }
    .expect("log");
    let mut all = log.list(&maestro_audit::Query { limit: 100, ..maestro_audit::Query::default() }).expect("list");
    all.sort_by_key(|e| e.index);
    let kills: Vec<&maestro_audit::Entry> = all.iter().filter(|e| e.action == "flags.kill" && e.target == "flag:welsh-greetings").collect();
    assert_eq!(kills.len(), 4, "started and succeeded, twice: {kills:#?}");
    assert!(kills.iter().all(|e| e.reason.as_deref() == Some(WHY.1) && e.target == "flag:welsh-greetings"), "{kills:#?}");
    let actions: Vec<&str> = kills.iter().filter_map(|e| e.params["args"]["action"].as_str()).collect();
    assert_eq!(actions, ["kill", "kill", "restore", "restore"]);
}
}
