//! The release train's stored state: a progress that no longer parses stops the driver
//! loudly — the release is blocked with its row kept as it was, the stop is audited —
//! and never reads as an empty progress that "released" it.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Server};
use maestro_server::Settings;
use maestro_store::ReleaseRow;
use serde_json::json;

fn settings(state_dir: &std::path::Path) -> Settings {
    let env = common::stage(state_dir, json!({}));
    let train: maestro_server::train::TrainSettings = serde_json::from_value(json!({
        "service": "hello-service",
        "stages": ["stage"],
    }))
    .expect("train settings");
    Settings {
        environments: vec![env],
        trains: vec![train],
        ..Settings::default()
    }
}

fn audit_log(s: &Server, b: &Backend) -> Box<dyn FnMut() -> Vec<maestro_audit::Entry>> {
    let location = s.location.clone();
    let postgres = matches!(b, Backend::Postgres);
    Box::new(move || {
        let mut log = if postgres {
            maestro_audit::Log::open_postgres(&location)
        } else {
            maestro_audit::Log::open_sqlite(std::path::Path::new(&location))
        }
        .expect("log");
        log.list(&maestro_audit::Query {
            limit: 100,
            ..maestro_audit::Query::default()
        })
        .expect("list")
    })
}

on_both! {
    an_unreadable_progress_stops_the_train_and_is_audited(b) {
        let dir = tempfile::tempdir().expect("tmp");
        let (key, _) = maestro_audit::LogKey::generate("conductor.test/audit").expect("key");
        let key = Arc::new(key);
        let s = Server::configured_with(b, settings(dir.path()), move |c| c.audit_key = Some(key));
        // Progress rows a bug, a manual edit or a newer conductor could leave behind.
        let cases = [
            ("1.0.0", "{}"),
            ("1.0.1", "not json"),
            ("1.0.2", r#"{"format":9,"run":null,"gates":[],"migrations_changed":false,"evidence":null,"stages":[{"environment":"stage","step":"done"}],"reason":null,"events":[]}"#),
            ("1.0.3", r#"{"run":null,"gates":[],"migrations_changed":false,"evidence":null,"stages":[{"environment":"stage","step":"shipped"}],"reason":null,"events":[]}"#),
        ];
        let mut store = s.store();
        for (version, state) in cases {
            store
                .release_create(&ReleaseRow {
                    tenant: "default".into(),
                    service: "hello-service".into(),
                    version: version.into(),
                    commit: "a".repeat(40),
                    artifact: "/nonexistent/hello.tar.gz".into(),
                    digest: format!("sha256:{}", "b".repeat(64)),
                    status: "progressing".into(),
                    state: state.into(),
                    actor: "user:test".into(),
                    reason: "test".into(),
                    ..ReleaseRow::default()
                })
                .expect("create")
                .expect("new");
        }
        // The conductor's resume loop picks each one up within seconds.
        let t = Instant::now();
        let rows = loop {
            let rows = store.releases(Some("default"), 10).expect("releases");
            if rows.iter().all(|r| r.status != "progressing") {
                break rows;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "still progressing: {rows:?}");
            std::thread::sleep(Duration::from_millis(200));
        };
        for (version, state) in cases {
            let r = rows.iter().find(|r| r.version == version).expect("row");
            assert_eq!((r.status.as_str(), r.state.as_str()), ("blocked", state), "{version}");
        }
        // The stop is audited right after the status is saved.
        let mut read = audit_log(&s, b);
        let t = Instant::now();
        let entries = loop {
            let entries = read();
            let blocked = entries.iter().filter(|e| e.action == "release.blocked").count();
            if blocked >= cases.len() {
                break entries;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "not audited: {entries:?}");
            std::thread::sleep(Duration::from_millis(200));
        };
        for (version, _) in cases {
            let target = format!("release:hello-service/{version}");
            let mine: Vec<_> = entries.iter().filter(|e| e.target == target).collect();
            assert!(
                mine.iter().all(|e| e.action != "release.released"),
                "{version}: {mine:?}"
            );
            let blocked = mine
                .iter()
                .find(|e| e.action == "release.blocked")
                .unwrap_or_else(|| panic!("{version}: no release.blocked entry in {mine:?}"));
            assert!(
                blocked.reason.as_deref().unwrap_or_default().contains("stored progress"),
                "{:?}",
                blocked.reason
            );
        }
        // The API shows why, and promoting it again changes nothing.
        let (token, _) = s.token(&["operator"], &["releases:read", "releases:write"]);
        let (status, body, _) = s.get("/api/v1/releases/hello-service/1.0.0", Some(&token));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["progress"], serde_json::Value::Null);
        assert!(body["progress_error"].as_str().is_some_and(|m| m.contains("does not parse")), "{body}");
        let (status, body) = s.post_with(
            "/api/v1/releases/hello-service/1.0.0/promote",
            Some(&token),
            &[("X-Maestro-Reason", "retry")],
            &json!({}),
        );
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("release_unreadable")), "{body}");
        let after = store.release("default", "hello-service", "1.0.0").expect("read").expect("row");
        assert_eq!((after.status.as_str(), after.state.as_str()), ("blocked", "{}"));
    }
}
