//! `maestro run`'s trace, received by a local OTLP/HTTP endpoint and read with the
//! protocol's official types: the run continues the caller's `TRACEPARENT`, gates are
//! children of the run, jobs of their gate, and each job process sees its own span.

mod common;

use std::collections::HashMap;

use common::Repo;
use maestro_telemetry::testing::receiver;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

#[test]
fn a_run_exports_its_span_tree_and_jobs_see_their_traceparent() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  lint:\n    gate: lint\n    run: echo \"$TRACEPARENT\" > lint.tp\n  unit:\n    gate: unit\n    run: echo \"$TRACEPARENT\" > unit.tp\n    needs: [lint]\n  broken:\n    gate: unit\n    run: exit 3\n",
    );
    let (base, rx) = receiver();
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let out = repo
        .cmd(&["run", "--log-format", "plain"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &base)
        .env("TRACEPARENT", format!("00-{caller_trace}-{caller_span}-01"))
        .output()
        .expect("maestro runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "broken fails the run: {text}");
    let (path, ctype, body) = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the spans arrive");
    assert_eq!(
        (path.as_str(), ctype.as_str()),
        ("/v1/traces", "application/json")
    );
    let req: ExportTraceServiceRequest = serde_json::from_str(&body).expect("OTLP JSON");
    let spans = &req.resource_spans[0].scope_spans[0].spans;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let by_name: HashMap<&str, _> = spans.iter().map(|s| (s.name.as_str(), s)).collect();
    assert_eq!(spans.len(), 6, "run, 2 gates, 3 jobs: {:?}", by_name.keys());
    for s in spans {
        assert_eq!(hex(&s.trace_id), caller_trace, "one trace: {}", s.name);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{}", s.name);
    }
    let run = spans
        .iter()
        .find(|s| s.name.starts_with("maestro run "))
        .expect("the run's span");
    assert_eq!(
        hex(&run.parent_span_id),
        caller_span,
        "the run continues the caller"
    );
    assert_eq!(
        run.status.as_ref().expect("status").code,
        2,
        "the run failed"
    );
    let id = |name: &str| hex(&by_name[name].span_id);
    let parent = |name: &str| hex(&by_name[name].parent_span_id);
    assert_eq!(parent("gate lint"), hex(&run.span_id));
    assert_eq!(parent("gate unit"), hex(&run.span_id));
    assert_eq!(parent("job lint"), id("gate lint"));
    assert_eq!(parent("job unit"), id("gate unit"));
    assert_eq!(parent("job broken"), id("gate unit"));
    let broken = by_name["job broken"];
    assert_eq!(broken.status.as_ref().expect("status").code, 2);
    assert_eq!(
        by_name["gate unit"].status.as_ref().expect("status").code,
        2,
        "a failed job turns its gate's span red"
    );
    // Each job process got TRACEPARENT naming its own span.
    for job in ["lint", "unit"] {
        let tp = repo.read(&format!("{job}.tp"));
        assert_eq!(
            tp.trim(),
            format!("00-{caller_trace}-{}-01", id(&format!("job {job}"))),
            "{job}"
        );
    }
    // The run record carries the trace id.
    let db = rusqlite::Connection::open(repo.path().join(".maestro/store.db")).expect("store");
    let stored: String = db
        .query_row(
            "SELECT trace_id FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("trace id");
    assert_eq!(stored, caller_trace);
}

#[test]
fn a_malformed_traceparent_starts_a_new_trace_and_a_down_collector_does_not_fail_the_run() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  ok:\n    run: echo \"$TRACEPARENT\" > tp\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let out = repo
        .cmd(&["run"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=sekrit")
        .env("TRACEPARENT", "00-nonsense-01")
        .output()
        .expect("maestro runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("TRACEPARENT") && err.contains("ignored"),
        "{err}"
    );
    assert!(err.contains("spans not exported"), "{err}");
    assert!(!err.contains("sekrit"), "{err}");
    let tp = repo.read("tp");
    assert!(tp.starts_with("00-") && tp.trim().len() == 55, "{tp}");
}
