//! OTLP/HTTP with the JSON encoding: `POST <endpoint>/v1/traces`, body an
//! `ExportTraceServiceRequest` in the protocol's JSON mapping (ids as lowercase hex,
//! 64-bit integers as decimal strings, enums as numbers, camelCase field names).
//!
//! Configuration follows the OpenTelemetry environment variables:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (`/v1/traces` appended), `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`, values never
//! logged), `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds, default 10 000) and
//! `OTEL_SERVICE_NAME`. Only the `http/json` protocol is spoken: an
//! `OTEL_EXPORTER_OTLP_PROTOCOL` naming another is refused with a message.

use std::time::Duration;

use serde_json::{Value, json};

use crate::span::{Attr, Span, SpanKind, Status};

/// Why spans were not exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Config(String),
    #[error("the collector at {endpoint} refused the spans: {message}")]
    Send { endpoint: String, message: String },
}

/// Where and how to export.
#[derive(Clone, PartialEq, Eq)]
pub struct Exporter {
    pub endpoint: String,
    headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub service: String,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values are credentials (API keys of hosted collectors).
        f.debug_struct("Exporter")
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("service", &self.service)
            .finish()
    }
}

impl Exporter {
    /// The exporter the environment configures, if any.
    ///
    /// # Errors
    /// [`ExportError::Config`] naming the variable that is wrong.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        default_service: &str,
    ) -> Result<Option<Exporter>, ExportError> {
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|v| !v.is_empty()),
            get("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|v| !v.is_empty()),
        ) {
            (Some(e), _) => e,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ExportError::Config(format!(
                "OTEL_EXPORTER_OTLP_ENDPOINT `{endpoint}` is not an http:// or https:// URL"
            )));
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(p) = get(var).filter(|p| !p.is_empty() && p != "http/json") {
                return Err(ExportError::Config(format!(
                    "{var} `{p}` is not supported: Maestro exports OTLP over http/json (set {var}=http/json; collectors accept it on port 4318)"
                )));
            }
        }
        let mut headers = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            for pair in get(var)
                .unwrap_or_default()
                .split(',')
                .filter(|p| !p.trim().is_empty())
            {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    ExportError::Config(format!(
                        "{var} holds an entry without `=` (write key=value,key2=value2)"
                    ))
                })?;
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let timeout = match get("OTEL_EXPORTER_OTLP_TIMEOUT").filter(|v| !v.is_empty()) {
            None => Duration::from_secs(10),
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| {
                ExportError::Config(format!(
                    "OTEL_EXPORTER_OTLP_TIMEOUT `{ms}` is not a number of milliseconds"
                ))
            })?),
        };
        Ok(Some(Exporter {
            endpoint,
            headers,
            timeout,
            service: get("OTEL_SERVICE_NAME")
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default_service.to_owned()),
        }))
    }

    /// Sends `spans` in one request.
    ///
    /// # Errors
    /// [`ExportError::Send`] with the collector's status or the connection error (never
    /// the header values).
    pub fn export(&self, spans: &[Span]) -> Result<(), ExportError> {
        if spans.is_empty() {
            return Ok(());
        }
        let body = encode(&self.service, spans).to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(&self.endpoint)
            .header("Content-Type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let fail = |message: String| ExportError::Send {
            endpoint: self.endpoint.clone(),
            message,
        };
        let mut resp = req.send(body.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        Err(fail(format!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        )))
    }
}

fn attr_value(v: &Attr) -> Value {
    match v {
        Attr::Str(s) => json!({"stringValue": s}),
        Attr::Int(i) => json!({"intValue": i.to_string()}),
        Attr::Bool(b) => json!({"boolValue": b}),
        Attr::Float(f) => json!({"doubleValue": f}),
    }
}

fn attributes(attrs: &[(String, Attr)]) -> Value {
    Value::Array(
        attrs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": attr_value(v)}))
            .collect(),
    )
}

/// The `ExportTraceServiceRequest` for `spans`, with `service.name` = `service`.
#[must_use]
pub fn encode(service: &str, spans: &[Span]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut v = json!({
                "traceId": s.trace_id.to_string(),
                "spanId": s.span_id.to_string(),
                "name": s.name,
                "kind": match s.kind {
                    SpanKind::Internal => 1,
                    SpanKind::Server => 2,
                    SpanKind::Client => 3,
                },
                "startTimeUnixNano": s.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": attributes(&s.attributes),
                "status": match &s.status {
                    Status::Unset => json!({}),
                    Status::Ok => json!({"code": 1}),
                    Status::Error(m) => json!({"code": 2, "message": m}),
                },
            });
            if let Some(p) = s.parent {
                v["parentSpanId"] = json!(p.to_string());
            }
            v
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": attributes(&[
            ("service.name".to_owned(), Attr::from(service)),
            ("telemetry.sdk.name".to_owned(), Attr::from("maestro")),
            ("telemetry.sdk.language".to_owned(), Attr::from("rust")),
            ("telemetry.sdk.version".to_owned(), Attr::from(env!("CARGO_PKG_VERSION"))),
        ])},
        "scopeSpans": [{"scope": {"name": "maestro", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}]
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SpanId, TraceParent};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_json_is_what_the_official_protocol_types_read() {
        let t = TraceParent::root();
        let child = SpanId::derived(t.trace_id, t.span_id, "job");
        let spans = [
            Span {
                trace_id: t.trace_id,
                span_id: t.span_id,
                parent: None,
                name: "run".into(),
                kind: SpanKind::Internal,
                start_ns: 1_700_000_000_000_000_000,
                end_ns: 1_700_000_001_000_000_000,
                attributes: vec![("maestro.run.id".into(), Attr::Int(7))],
                status: Status::Ok,
            },
            Span {
                trace_id: t.trace_id,
                span_id: child,
                parent: Some(t.span_id),
                name: "job unit".into(),
                kind: SpanKind::Internal,
                start_ns: 1_700_000_000_100_000_000,
                end_ns: 1_700_000_000_900_000_000,
                attributes: vec![
                    ("maestro.job".into(), Attr::from("unit")),
                    ("maestro.cache.hit".into(), Attr::Bool(false)),
                ],
                status: Status::Error("exited 1".into()),
            },
        ];
        let json = encode("checkout", &spans).to_string();
        let req: ExportTraceServiceRequest = serde_json::from_str(&json).expect("OTLP JSON");
        let rs = &req.resource_spans[0];
        let service = &rs.resource.as_ref().expect("resource").attributes[0];
        assert_eq!(service.key, "service.name");
        let got = &rs.scope_spans[0].spans;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].trace_id, t.trace_id.0.to_vec());
        assert_eq!(got[1].parent_span_id, t.span_id.0.to_vec());
        assert_eq!(got[0].end_time_unix_nano, 1_700_000_001_000_000_000);
        assert_eq!(got[1].status.as_ref().expect("status").code, 2);
        assert_eq!(got[1].status.as_ref().expect("status").message, "exited 1");
    }

    #[test]
    fn the_environment_configures_the_exporter_and_names_a_wrong_variable() {
        assert_eq!(Exporter::from_env(env(&[]), "maestro").expect("ok"), None);
        let e = Exporter::from_env(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "x-api-key=sekrit, x-team = ci",
                ),
                ("OTEL_SERVICE_NAME", "checkout-ci"),
            ]),
            "maestro",
        )
        .expect("ok")
        .expect("configured");
        assert_eq!(e.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(e.service, "checkout-ci");
        assert!(!format!("{e:?}").contains("sekrit"), "{e:?}");
        let traces = Exporter::from_env(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:4318/custom"),
            ]),
            "m",
        )
        .expect("ok")
        .expect("configured");
        assert_eq!(traces.endpoint, "http://b:4318/custom");
        for (vars, named) in [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
                ],
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "5s"),
                ],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ),
        ] {
            let err = Exporter::from_env(env(&vars), "m")
                .expect_err(named)
                .to_string();
            assert!(err.contains(named), "{err}");
        }
    }
}
