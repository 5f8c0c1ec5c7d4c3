//! Prometheus metrics at `/metrics` (an endpoint like the others: token, scope
//! `metrics:read`, the policy on `metrics.read`): request latency histograms by route,
//! method and status, kept in memory; runs by status, executed jobs' durations and the
//! cache hit ratio, read from the store at each scrape — so every replica on one
//! PostgreSQL reports the same totals, and a restart loses nothing.
//!
//! Every request also gets a trace context: its `traceparent` is continued (a malformed
//! one starts a new trace), and the answer says so in `traceresponse`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use maestro_telemetry::{SpanId, TraceParent};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::AppState;

/// Request latency buckets (seconds): 0.5 ms to 10 s.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Job duration buckets (milliseconds): 100 ms to 1 h.
const JOB_BUCKETS_MS: [i64; 10] = [
    100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

/// The in-memory metrics of one conductor.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(REQUEST_BUCKETS)
        });
        let mut registry = Registry::with_prefix("maestro");
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by matched route, method and status",
            prometheus_client::registry::Unit::Seconds,
            requests.clone(),
        );
        Metrics { registry, requests }
    }
}

/// The middleware: times the request under its route pattern (never the raw path, so
/// ids do not explode the label set), and carries its trace context.
pub async fn layer(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Only the methods HTTP defines become label values (OpenTelemetry's `_OTHER` for
    // the rest): a client cannot grow the label set.
    let method = match *req.method() {
        axum::http::Method::GET
        | axum::http::Method::HEAD
        | axum::http::Method::POST
        | axum::http::Method::PUT
        | axum::http::Method::DELETE
        | axum::http::Method::PATCH
        | axum::http::Method::OPTIONS
        | axum::http::Method::CONNECT
        | axum::http::Method::TRACE => req.method().as_str().to_owned(),
        _ => "_OTHER".to_owned(),
    };
    let caller = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceParent::parse(v).ok());
    let context = match caller {
        Some(c) => c.with_span(SpanId::random()),
        None => TraceParent::root(),
    };
    let start_ns = maestro_telemetry::now_ns();
    let mut resp = crate::tracing::scope(context, next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&context.to_string()) {
        resp.headers_mut().insert("traceresponse", v);
    }
    let status = resp.status().as_u16();
    if let Some(spans) = state.spans.get()
        && context.flags & 1 == 1
    {
        spans.record(maestro_telemetry::Span {
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent: caller.map(|c| c.span_id),
            name: format!("{method} {route}"),
            kind: maestro_telemetry::SpanKind::Server,
            start_ns,
            end_ns: maestro_telemetry::now_ns(),
            attributes: vec![
                ("http.request.method".to_owned(), method.as_str().into()),
                ("http.route".to_owned(), route.as_str().into()),
                (
                    "http.response.status_code".to_owned(),
                    i64::from(status).into(),
                ),
            ],
            status: if status >= 500 {
                maestro_telemetry::Status::Error(format!("HTTP {status}"))
            } else {
                maestro_telemetry::Status::Unset
            },
        });
    }
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status,
        })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The store's figures, as of this scrape.
#[derive(Debug)]
struct StoreFigures {
    runs: maestro_store::RunMetrics,
    hits: i64,
    misses: i64,
}

impl prometheus_client::collector::Collector for StoreFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Status {
            status: String,
        }
        let runs = Family::<Status, prometheus_client::metrics::gauge::Gauge>::default();
        for (status, n) in &self.runs.runs {
            runs.get_or_create(&Status {
                status: status.clone(),
            })
            .set(*n);
        }
        runs.encode(encoder.encode_descriptor(
            "maestro_runs",
            "Runs in the store, by status",
            None,
            runs.metric_type(),
        )?)?;
        let buckets: Vec<(f64, u64)> = JOB_BUCKETS_MS
            .iter()
            .zip(&self.runs.job_buckets)
            .map(|(le, n)| (*le as f64 / 1000.0, u64::try_from(*n).unwrap_or(0)))
            .chain(std::iter::once((
                f64::INFINITY,
                u64::try_from(self.runs.job_count).unwrap_or(0),
            )))
            .collect();
        encoder
            .encode_descriptor(
                "maestro_job_duration",
                "How long executed (cache-miss) jobs took",
                Some(&prometheus_client::registry::Unit::Seconds),
                prometheus_client::metrics::MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                self.runs.job_sum_ms as f64 / 1000.0,
                u64::try_from(self.runs.job_count).unwrap_or(0),
                &buckets,
                None,
            )?;
        let total = self.hits + self.misses;
        let ratio = if total > 0 {
            self.hits as f64 / total as f64
        } else {
            0.0
        };
        encoder
            .encode_descriptor(
                "maestro_cache_hit_ratio",
                "Cache hits over cacheable jobs, every run in the store",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?
            .encode_gauge(&ratio)?;
        for (name, help, v) in [
            (
                "maestro_cache_hits",
                "Jobs restored from the cache",
                self.hits,
            ),
            (
                "maestro_cache_misses",
                "Cacheable jobs that ran",
                self.misses,
            ),
        ] {
            encoder
                .encode_descriptor(
                    name,
                    help,
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?
                .encode_gauge(&v)?;
        }
        Ok(())
    }
}

/// The exposition text (`text/plain; version=0.0.4`): request metrics, then the store's.
///
/// # Errors
/// The store's failure.
pub async fn render(state: &Arc<AppState>) -> Result<String, maestro_store::StoreError> {
    let (runs, cache) = state
        .pool
        .with(|s| Ok((s.run_metrics(&JOB_BUCKETS_MS)?, s.cache_stats()?)))
        .await?;
    let mut text = String::new();
    let mut store = Registry::default();
    store.register_collector(Box::new(StoreFigures {
        runs,
        hits: cache.hits,
        misses: cache.misses,
    }));
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(&mut text, &state.metrics.registry);
    let _ = prometheus_client::encoding::text::encode_registry(&mut text, &store);
    text.push_str("# EOF\n");
    Ok(text)
}
