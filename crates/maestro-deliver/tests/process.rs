//! The process driver with real processes: a release starts on a free port and is up when
//! its health path answers, sees only the environment it is given, a release that exits
//! or never gets healthy is reported with its log, stopping ends the whole process group,
//! and a new driver stops what a killed one left behind.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use maestro_deliver::{DriverError, ProcessDriver, ServiceSpec};

/// A release: a Python server answering /healthz (200, or 500 with UNHEALTHY set) and
/// /env (its environment as JSON); with CRASH set it exits at once.
const SERVER: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
if os.environ.get("CRASH"):
    sys.stderr.write("crashing on purpose\n")
    sys.exit(3)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            code, body = (500 if os.environ.get("UNHEALTHY") else 200), b"{}"
        else:
            code, body = 200, json.dumps(dict(os.environ)).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn release(dir: &Path) {
    std::fs::create_dir_all(dir.join("svc")).expect("mkdir");
    std::fs::write(dir.join("svc/server.py"), SERVER).expect("write");
}

fn driver(state: &Path) -> ProcessDriver {
    ProcessDriver::new(
        ServiceSpec {
            command: vec!["python3".into(), "server.py".into(), "{port}".into()],
            workdir: Some("svc".into()),
            health: "/healthz".into(),
            ready_timeout: Duration::from_secs(2),
            stop_grace: Duration::from_secs(2),
            env: BTreeMap::from([("SERVICE_NAME".to_owned(), "hello".to_owned())]),
        },
        state,
    )
}

fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    agent
        .get(format!("http://{addr}{path}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
}

#[tokio::test]
async fn a_release_runs_with_only_its_environment_and_stops_with_its_group() {
    let dir = tempfile::tempdir().expect("tmp");
    release(&dir.path().join("r1"));
    let d = driver(&dir.path().join("state"));
    let inst = d
        .start(
            "v1",
            &dir.path().join("r1"),
            &BTreeMap::from([("HELLO_ERROR_RATE".to_owned(), "0.2".to_owned())]),
        )
        .await
        .expect("started");
    let addr = inst.addr;
    let env: serde_json::Value = tokio::task::spawn_blocking(move || get(addr, "/env"))
        .await
        .expect("join")
        .and_then(|t| serde_json::from_str(&t).ok())
        .expect("env answered");
    assert_eq!(env["PORT"], addr.port().to_string());
    assert_eq!(env["SERVICE_NAME"], "hello");
    assert_eq!(env["HELLO_ERROR_RATE"], "0.2");
    assert!(
        env.get("CARGO_MANIFEST_DIR").is_none(),
        "the conductor's environment stays out: {env}"
    );
    let pid_file =
        std::fs::read_to_string(dir.path().join("state/instances.pid")).expect("pid file");
    assert!(
        pid_file.contains(&format!("{} v1", inst.pgid())),
        "{pid_file}"
    );

    d.stop(inst).await;
    let gone = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .expect("join");
    assert!(gone.is_none(), "stopped");
    let pid_file =
        std::fs::read_to_string(dir.path().join("state/instances.pid")).expect("pid file");
    assert!(pid_file.trim().is_empty(), "{pid_file}");
}

#[tokio::test]
async fn a_release_that_exits_or_stays_unhealthy_is_reported_with_its_log() {
    let dir = tempfile::tempdir().expect("tmp");
    release(&dir.path().join("r1"));
    let d = driver(&dir.path().join("state"));
    let crash = BTreeMap::from([("CRASH".to_owned(), "1".to_owned())]);
    let err = d
        .start("v2", &dir.path().join("r1"), &crash)
        .await
        .expect_err("exits");
    assert!(matches!(err, DriverError::Exited { .. }), "{err}");
    assert!(err.to_string().contains("crashing on purpose"), "{err}");
    assert!(err.to_string().contains("exit status: 3"), "{err}");

    let sick = BTreeMap::from([("UNHEALTHY".to_owned(), "1".to_owned())]);
    let err = d
        .start("v3", &dir.path().join("r1"), &sick)
        .await
        .expect_err("unhealthy");
    assert!(
        err.to_string()
            .contains("did not answer 200 on /healthz within 2 s (last: HTTP 500)"),
        "{err}"
    );
    let pid_file =
        std::fs::read_to_string(dir.path().join("state/instances.pid")).expect("pid file");
    assert!(
        pid_file.trim().is_empty(),
        "a failed start leaves nothing running: {pid_file}"
    );
}

#[tokio::test]
async fn a_new_driver_stops_what_a_killed_one_left_behind() {
    let dir = tempfile::tempdir().expect("tmp");
    release(&dir.path().join("r1"));
    let state = dir.path().join("state");
    let inst = driver(&state)
        .start("v1", &dir.path().join("r1"), &BTreeMap::new())
        .await
        .expect("started");
    let addr = inst.addr;
    // The conductor dies without stopping it (nothing runs on drop).
    std::mem::forget(inst);
    assert!(
        tokio::task::spawn_blocking(move || get(addr, "/healthz"))
            .await
            .expect("join")
            .is_some()
    );
    let reaped = driver(&state).reap_leftovers().await.expect("reap");
    assert_eq!(reaped, 1);
    let gone = tokio::task::spawn_blocking(move || get(addr, "/healthz"))
        .await
        .expect("join");
    assert!(gone.is_none(), "the leftover was stopped");
    assert_eq!(driver(&state).reap_leftovers().await.expect("reap"), 0);
}
