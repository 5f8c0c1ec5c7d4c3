//! `/graphql` over real HTTP on SQLite and PostgreSQL: the whole schema, enumerated by
//! introspection, is behind the authorization wrapper; production mode runs persisted
//! operations only; depth and complexity limits hold; runs, jobs and logs read through.

#[macro_use]
mod common;

use common::{Backend, Server};
use maestro_server::graphql::FIELDS;
use maestro_server::persisted;
use maestro_store::{Batch, JobRow, NewRun, RunStatus};
use serde_json::{Value, json};

const INTROSPECT: &str = "{ __schema { queryType { fields { name args { name type { kind name ofType { kind name } } } type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

/// A document selecting `field` with a value for each argument it requires.
fn probe(field: &Value) -> String {
    let name = field["name"].as_str().expect("name");
    let args: Vec<String> = field["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter(|a| a["type"]["kind"] == "NON_NULL")
        .map(|a| {
            let ty = a["type"]["ofType"]["name"].as_str().unwrap_or_default();
            let value = match ty {
                "Int" => "1".to_owned(),
                "Boolean" => "true".to_owned(),
                _ => "\"1\"".to_owned(),
            };
            format!("{}: {value}", a["name"].as_str().expect("arg name"))
        })
        .collect();
    let mut ty = &field["type"];
    while ty["name"].is_null() {
        assert!(
            ty.is_object(),
            "INTROSPECT reads too few levels of ofType for {name}"
        );
        ty = &ty["ofType"];
    }
    let selection = if ty["kind"] == "OBJECT" {
        " { __typename }"
    } else {
        ""
    };
    if args.is_empty() {
        format!("{{ {name}{selection} }}")
    } else {
        format!("{{ {name}({}){selection} }}", args.join(", "))
    }
}

fn code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .or_else(|| body["error"]["code"].as_str())
}

fn persisted_id(name: &str) -> &'static str {
    persisted::by_name(name).expect("a persisted operation").id
}

on_both! {
every_field_of_the_schema_is_behind_the_wrapper(b) {
    let s = Server::start(b, None);
    s.store().begin_run(&NewRun { pipeline: "hello".into(), ..NewRun::default() }).expect("run");
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    let (nobody, _) = s.token(&[], &["*"]);
    let (unscoped, _) = s.token(&["admin"], &["nothing:here"]);
    let (status, schema) = s.graphql(&viewer, &json!({"query": INTROSPECT}));
    assert_eq!(status, 200, "{schema}");
    let fields = schema["data"]["__schema"]["queryType"]["fields"].as_array().expect("fields").clone();
    assert_eq!(fields.len(), FIELDS.len(), "every Query field has a row in FIELDS");
    for f in &fields {
        let name = f["name"].as_str().expect("name");
        let row = FIELDS.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("Query.{name} has no row"));
        let doc = probe(f);
        let (status, body) = s.post("/graphql", None, &json!({"query": doc}));
        assert_eq!((status, code(&body)), (401, Some("unauthorized")), "{doc} without a token");
        let (status, body) = s.graphql(&nobody, &json!({"query": doc}));
        assert_eq!((status, code(&body)), (200, Some("forbidden")), "{doc} for an actor without roles: {body}");
        assert!(body["data"].is_null() || body["data"][name].is_null(), "{doc} leaked data: {body}");
        assert!(body["errors"][0]["message"].as_str().unwrap_or_default().contains(row.action), "{body}");
        let (status, body) = s.graphql(&unscoped, &json!({"query": doc}));
        assert_eq!((status, code(&body)), (200, Some("insufficient_scope")), "{doc}: {body}");
        let (status, body) = s.graphql(&viewer, &json!({"query": doc}));
        assert_eq!(status, 200, "{doc}: {body}");
        assert!(body["errors"].is_null(), "{doc} for a viewer: {body}");
    }
}

production_runs_persisted_operations_only(b) {
    let s = Server::with(b, None, Some("production"));
    let run = s.store().begin_run(&NewRun { pipeline: "hello".into(), ..NewRun::default() }).expect("run");
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    let (status, body) = s.graphql(&viewer, &json!({"query": "{ runs { id } }"}));
    assert_eq!((status, code(&body)), (400, Some("persisted_query_required")), "{body}");
    let (status, body) = s.graphql(&viewer, &json!({"query": INTROSPECT}));
    assert_eq!((status, code(&body)), (400, Some("persisted_query_required")), "no introspection: {body}");
    let (status, body) = s.graphql(&viewer, &json!({"id": persisted_id("RunList"), "variables": {"limit": 5}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["runs"][0]["id"], run.to_string(), "{body}");
    // Apollo's automatic-persisted-query shape, and the document itself, are the same operation.
    let apq = json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": persisted_id("Viewer")}}});
    let (status, body) = s.graphql(&viewer, &apq);
    assert_eq!((status, body["data"]["viewer"]["tenant"].as_str()), (200, Some("default")), "{body}");
    let doc = persisted::by_name("Viewer").expect("Viewer").document;
    assert_eq!(s.graphql(&viewer, &json!({"query": doc})).0, 200);
    let (status, body) = s.graphql(&viewer, &json!({"id": "0".repeat(64)}));
    assert_eq!((status, code(&body)), (400, Some("persisted_query_not_found")), "{body}");
    // GET takes ids, never documents.
    let vars = "%7B%22limit%22%3A1%7D";
    let (status, body, _) = s.get(&format!("/graphql?id={}&variables={vars}", persisted_id("RunList")), Some(&viewer));
    assert_eq!((status, body["data"]["runs"].as_array().map(Vec::len)), (200, Some(1)), "{body}");
    let (status, body, _) = s.get("/graphql?query=%7Bruns%7Bid%7D%7D", Some(&viewer));
    assert_eq!((status, code(&body)), (400, Some("bad_request")), "{body}");
}

runs_jobs_and_logs_read_through_within_the_tenant(b) {
    let s = Server::start(b, None);
    let mut store = s.store();
    let run = store.begin_run(&NewRun { pipeline: "checkout".into(), ..NewRun::default() }).expect("run");
    let mut log_path = None;
    if let Backend::Sqlite = b {
        let dir = std::path::Path::new(&s.location).parent().expect("dir").join(format!("runs/{run}/logs"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("test.log");
        std::fs::write(&p, "compiling\nassertion failed: total == 3\n").expect("log");
        log_path = Some(p.display().to_string());
    }
    let batch = Batch {
        jobs: vec![
            JobRow { name: "lint".into(), status: "succeeded".into(), cache: "hit".into(), ..JobRow::default() },
            JobRow { name: "test".into(), status: "failed".into(), cache: "miss".into(), exit_code: Some(101), log_path, ..JobRow::default() },
        ],
        ..Batch::default()
    };
    store.record(run, &batch).expect("record");
    store.finish_run(run, RunStatus::Failed, maestro_server::now_ms()).expect("finish");
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    let (status, body) = s.graphql(&viewer, &json!({"id": persisted_id("RunDetail"), "variables": {"id": run.to_string()}}));
    assert_eq!(status, 200, "{body}");
    let r = &body["data"]["run"];
    assert_eq!((r["pipeline"].as_str(), r["status"].as_str()), (Some("checkout"), Some("failed")), "{body}");
    assert_eq!(r["jobs"][1]["exitCode"], 101, "{body}");
    assert!(r["startedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    let (status, body) = s.graphql(&viewer, &json!({"id": persisted_id("RunLog"), "variables": {"id": run.to_string(), "job": "test", "lines": 1}}));
    assert_eq!(status, 200, "{body}");
    let tail = &body["data"]["run"]["job"]["logTail"];
    match b {
        Backend::Sqlite => assert_eq!(tail, "assertion failed: total == 3", "{body}"),
        Backend::Postgres => assert!(tail.is_null(), "no local logs behind PostgreSQL: {body}"),
    }
    let (outsider, _) = s.token_in("globex", &["admin"], &["*"], 60_000);
    let (status, body) = s.graphql(&outsider, &json!({"id": persisted_id("RunDetail"), "variables": {"id": run.to_string()}}));
    assert_eq!((status, &body["data"]["run"]), (200, &Value::Null), "another tenant's run is null, as a missing one: {body}");
    let (_, body) = s.graphql(&outsider, &json!({"id": persisted_id("RunList"), "variables": {"limit": 10}}));
    assert_eq!(body["data"]["runs"], json!([]), "{body}");
    let (_, body) = s.graphql(&viewer, &json!({"id": persisted_id("RunDetail"), "variables": {"id": "424242"}}));
    assert!(body["data"]["run"].is_null() && body["errors"].is_null(), "{body}");
}
}

#[test]
fn depth_complexity_and_size_are_limited() {
    let s = Server::start(&Backend::Sqlite, None);
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } }";
    let (status, body) = s.graphql(&viewer, &json!({"query": deep}));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("nested too deep"), "{body}");
    let costly = "{ runs(limit: 500) { id pipeline status jobs { name status attempts { attempt status } } } }";
    let (status, body) = s.graphql(&viewer, &json!({"query": costly}));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("too complex"), "{body}");
    let (status, body) = s.graphql(&viewer, &json!({"query": "{ runs(limit: 20) { id } }"}));
    assert_eq!(status, 200, "a modest list is fine: {body}");
    let (status, body) = s.graphql(&viewer, &json!({"query": "{ runs(limit: 501) { id } }"}));
    assert_eq!((status, code(&body)), (200, Some("bad_request")), "{body}");
    let huge = format!("{{ runs {{ id }} }} #{}", "x".repeat(70 * 1024));
    let (status, _) = s.graphql(&viewer, &json!({"query": huge}));
    assert_eq!(status, 413, "bodies over 64 KiB are refused");
}
