//! The conductor's request spans over OTLP/HTTP: a request continuing a caller's trace is
//! exported as a server span under the caller's span, named by its route pattern, with
//! the id the answer's `traceresponse` gave; a batch leaves after the schedule delay.

#[macro_use]
mod common;

use common::{Backend, Server};
use maestro_server::Settings;

#[test]
fn requests_are_exported_as_server_spans_under_the_callers_span() {
    let (endpoint, exports) = maestro_telemetry::testing::receiver();
    let exporter = maestro_telemetry::otlp::Exporter::from_env(
        |k| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| endpoint.clone()),
        "maestro-conductor",
    )
    .expect("exporter")
    .expect("configured");
    let s = Server::configured_with(&Backend::Sqlite, Settings::default(), move |c| {
        c.exporter = Some(exporter);
        c.span_delay = std::time::Duration::from_millis(100);
    });
    let (viewer, _) = s.token(&["viewer"], &["session:read"]);
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, headers, _) = s.get_text("/api/v1/whoami", &viewer, Some(caller));
    assert_eq!(status, 200);
    let answered = headers["traceresponse"].clone();
    let span_id = answered.split('-').nth(2).expect("span id").to_owned();
    // Not sampled by the caller: not exported.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let _ = s.get_text("/api/v1/whoami", &viewer, Some(unsampled));

    let (path, _, body) = exports
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("an export within the schedule delay");
    assert_eq!(path, "/v1/traces");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let rs = &v["resourceSpans"][0];
    let service = rs["resource"]["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .find(|a| a["key"] == "service.name")
        .map(|a| a["value"]["stringValue"].clone());
    assert_eq!(service, Some(serde_json::json!("maestro-conductor")));
    let spans = rs["scopeSpans"][0]["spans"].as_array().expect("spans");
    assert_eq!(
        spans.len(),
        1,
        "the unsampled request is not exported: {body}"
    );
    let span = &spans[0];
    assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(
        span["spanId"],
        span_id.as_str(),
        "the span traceresponse named"
    );
    assert_eq!(span["name"], "GET /api/v1/whoami");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    let attrs = span["attributes"].to_string();
    assert!(
        attrs.contains("\"http.route\"")
            && attrs.contains("/api/v1/whoami")
            && attrs.contains("\"http.response.status_code\""),
        "{attrs}"
    );
}
