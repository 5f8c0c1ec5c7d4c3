//! A refused call changes nothing. An operator and admin of tenant `globex` (every scope)
//! calls every mutating endpoint of the API (every row of `ENDPOINTS` that is not a GET)
//! against tenant `acme`'s resources: its environment, deployment, release, flags, run and
//! token. Each call is refused as if the resource did not exist, and every row of every
//! table of the store — the audit log's included — is the same after it as before, on
//! SQLite and PostgreSQL.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Backend, Server};
use maestro_server::Settings;
use maestro_store::{NewDeployment, NewRun, ReleaseRow};
use serde_json::{Value, json};

const REGISTRY: &str = r#"{"flags": {"welsh-greetings": {"state": "ENABLED",
  "variants": {"on": true, "off": false}, "defaultVariant": "off",
  "metadata": {"owner": "team-greetings", "killSwitch": "off"}}}}"#;

fn settings(dir: &std::path::Path) -> Settings {
    let file = dir.join("flags.json");
    std::fs::write(&file, REGISTRY).expect("write");
    let env = common::stage(
        &dir.join("stage"),
        json!({"tenant": "acme", "deploy_env": ["HELLO_ERROR_RATE"]}),
    );
    let train: maestro_server::train::TrainSettings = serde_json::from_value(json!({
        "service": "hello-service", "stages": ["stage"], "tenant": "acme",
    }))
    .expect("train");
    Settings {
        flags: Some(maestro_server::flags::FlagsSettings {
            file,
            tenant: "acme".into(),
        }),
        environments: vec![env],
        trains: vec![train],
        ..Settings::default()
    }
}

/// The path parameters and body that name `acme`'s resource for an endpoint, or `None`
/// for an endpoint that only ever creates in the caller's own tenant.
fn aim(path: &str, ids: &HashMap<&str, String>) -> Option<(HashMap<&'static str, String>, Value)> {
    let p = |pairs: &[(&'static str, &str)]| -> HashMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    };
    Some(match path {
        "/ofrep/v1/evaluate/flags/{key}" => (
            p(&[("key", "welsh-greetings")]),
            json!({"context": {"targetingKey": "u1"}}),
        ),
        "/ofrep/v1/evaluate/flags" => (p(&[]), json!({"context": {"targetingKey": "u1"}})),
        "/flagd.evaluation.v1.Service/{method}" => (
            p(&[("method", "ResolveBoolean")]),
            json!({"flagKey": "welsh-greetings", "context": {}}),
        ),
        "/api/v1/flags/{key}/{action}" => (
            p(&[("key", "welsh-greetings"), ("action", "kill")]),
            json!({}),
        ),
        "/api/v1/environments/{env}/deployments" => (
            p(&[("env", "stage")]),
            json!({"artifact": "/nonexistent/hello.tar.gz", "env": {"HELLO_ERROR_RATE": "1"}}),
        ),
        "/api/v1/environments/{env}/rollback" => (p(&[("env", "stage")]), json!({})),
        "/api/v1/deployments/{id}/{action}" => (
            p(&[("id", &ids["deployment"]), ("action", "promote")]),
            json!({}),
        ),
        "/api/v1/releases" => (
            p(&[]),
            json!({"service": "hello-service", "version": "2.0.0", "commit": "c".repeat(40), "artifact": "/nonexistent/hello.tar.gz"}),
        ),
        "/api/v1/releases/{service}/{version}/{action}" => (
            p(&[
                ("service", "hello-service"),
                ("version", "1.0.0"),
                ("action", "rollback"),
            ]),
            json!({}),
        ),
        "/api/v1/runs/{id}/reports" => (
            p(&[("id", &ids["run"])]),
            json!({"seq": 1, "jobs": [], "status": "succeeded"}),
        ),
        "/api/v1/tokens/{id}/revoke" => (p(&[("id", &ids["token"])]), json!({})),
        // These create in the caller's own tenant: there is no other tenant's resource to
        // name (that the new token or run is the caller's own is tested in admin.rs and
        // remote.rs).
        "/api/v1/tokens" | "/api/v1/runs" => return None,
        other => panic!("{other}: a mutating endpoint this test does not aim yet; add it"),
    })
}

on_both! {
    every_mutating_endpoint_refuses_another_tenant_and_changes_nothing(b) {
        let dir = tempfile::tempdir().expect("tmp");
        let (key, _) = maestro_audit::LogKey::generate("conductor.test/audit").expect("key");
        let key = Arc::new(key);
        let s = Server::configured_with(b, settings(dir.path()), move |c| c.audit_key = Some(key));
        let mut store = s.store();
        // acme's resources.
        let (_, token) = s.token_in("acme", &["admin"], &["*"], 3_600_000);
        let run = store
            .begin_run(&NewRun {
                pipeline: "hello-service".into(),
                root: String::new(),
                commit: None,
                branch: None,
                // Now, so the reaper finds it alive for the whole test.
                started_at_ms: maestro_server::now_ms(),
                pid: 0,
                args: String::new(),
                trace_id: None,
                tenant: "acme".into(),
                reporter: Some("acme/ci:shop".into()),
                remote_key: Some("k1".into()),
            })
            .expect("run");
        let deployment = store
            .deployment_begin(&NewDeployment {
                environment: "stage".into(),
                service: "hello-service".into(),
                tenant: "acme".into(),
                version: "v1".into(),
                artifact: format!("sha256:{}", "a".repeat(64)),
                release_dir: "/nonexistent".into(),
                previous: None,
                plan: "{}".into(),
                state: "{}".into(),
                env: "{}".into(),
                actor: "acme/user:ops".into(),
                reason: "test".into(),
                run_id: None,
                now_ms: 1,
            })
            .expect("store")
            .expect("begun");
        store
            .deployment_save(deployment, "rolled_back", "{}", 2, None)
            .expect("store")
            .expect("saved");
        let progress = maestro_server::train::Progress::new(&["stage".to_owned()]).to_text();
        store
            .release_create(&ReleaseRow {
                tenant: "acme".into(),
                service: "hello-service".into(),
                version: "1.0.0".into(),
                commit: "a".repeat(40),
                artifact: "/nonexistent/hello.tar.gz".into(),
                digest: format!("sha256:{}", "b".repeat(64)),
                status: "blocked".into(),
                state: progress,
                actor: "acme/user:ops".into(),
                reason: "test".into(),
                ..ReleaseRow::default()
            })
            .expect("create")
            .expect("new");
        let ids: HashMap<&str, String> = [
            ("run", run.to_string()),
            ("deployment", deployment.to_string()),
            ("token", token),
        ]
        .into();
        // globex's operator and admin, with every scope.
        let (attacker, _) = s.token_in("globex", &["admin", "operator", "developer"], &["*"], 3_600_000);
        let why = ("X-Maestro-Reason", "INC-1: testing the tenant boundary");
        let mut aimed = 0;
        for e in maestro_server::api::ENDPOINTS.iter().filter(|e| e.method != "GET") {
            let Some((params, body)) = aim(e.path, &ids) else {
                continue;
            };
            let mut path = e.path.to_owned();
            for (k, v) in &params {
                path = path.replace(&format!("{{{k}}}"), v);
            }
            assert!(!path.contains('{'), "{path}: a parameter is not aimed");
            let before = maestro_store::pg::dump(&s.location);
            let (status, answer) = s.post_with(&path, Some(&attacker), &[why], &body);
            let after = maestro_store::pg::dump(&s.location);
            assert!(
                matches!(status, 403 | 404),
                "{} {path}: {status} {answer}",
                e.method
            );
            for (table, rows) in &before {
                // The conductor's own heartbeats (environment and reaper leases renewed
                // every few seconds) are not the call's doing.
                if table == "leases" {
                    continue;
                }
                assert_eq!(
                    Some(rows),
                    after.get(table),
                    "{} {path} ({status}) changed table {table}",
                    e.method
                );
            }
            assert_eq!(before.len(), after.len());
            aimed += 1;
        }
        assert_eq!(aimed, 11, "every mutating endpoint that names a resource was tried");
        // The same token works in its own tenant (the refusals were about the tenant).
        let (status, body, _) = s.get("/api/v1/whoami", Some(&attacker));
        assert_eq!((status, body["tenant"].as_str()), (200, Some("globex")), "{body}");
    }
}
