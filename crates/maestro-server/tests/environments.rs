//! Two conductors on one PostgreSQL configured with the same environment: one runs it
//! (it holds the environment's lease), the other stands by and answers 503
//! `runs_elsewhere`; when the first stops, the second takes over.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{Backend, Server};
use maestro_server::Settings;
use serde_json::json;

fn settings(state_dir: &std::path::Path) -> Settings {
    Settings {
        environments: vec![common::stage(state_dir, json!({}))],
        ..Settings::default()
    }
}

#[test]
fn one_conductor_runs_an_environment_and_another_takes_over_when_it_stops() {
    let dirs = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let mut a = Server::configured(&Backend::Postgres, settings(dirs.0.path()));
    let b = Server::joining(&a, settings(dirs.1.path()));
    let (token, _) = a.token(&["operator"], &["deployments:read"]);
    let (status, body, _) = a.get("/api/v1/environments/stage", Some(&token));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stable"], serde_json::Value::Null, "no release yet");
    let (status, body, _) = b.get("/api/v1/environments/stage", Some(&token));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("runs_elsewhere")),
        "{body}"
    );

    a.stop().expect("a stops, giving the lease up");
    let t = Instant::now();
    loop {
        let (status, body, _) = b.get("/api/v1/environments/stage", Some(&token));
        if status == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "b never took over: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
