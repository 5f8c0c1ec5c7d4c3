//! Canary signals from a Prometheus server (PromQL over its HTTP API) instead of the
//! proxy's own counters: the same series the proxy exports, scraped.
//!
//! Per version and interval: requests, 5xx and 401/403 answers (`increase` over the
//! interval), requests in flight, and the latency histogram's bucket increases, expanded
//! into samples at each bucket's upper bound for the rank test (a histogram keeps no
//! individual requests; ties are what the test's tie correction is for). Any failure — no
//! answer, an error status, a malformed body — makes the whole interval unobserved, so
//! the canary holds and, if it lasts, rolls back: it never promotes blind.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use maestro_canary::Observation;

/// Largest answer read from Prometheus.
const MAX_ANSWER: usize = 1 << 20;
/// Pseudo-samples per version from a histogram (the rank test needs no more).
const MAX_SAMPLES: u64 = 5_000;

/// The PromQL a version's interval is read with. In each, `{service}` and `{version}`
/// become the (escaped) label values and `{window}` the interval (`5s`). The defaults read
/// the series the proxy exports; on Kubernetes, point them at what the mesh or gateway
/// exports (Istio's `istio_requests_total`, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Queries {
    /// Requests answered in the interval.
    pub requests: String,
    /// Of which 5xx.
    pub errors: String,
    /// Of which 401/403 (the authz-deny poison signal).
    pub denied: String,
    /// Requests in flight now (saturation).
    pub in_flight: String,
    /// The latency histogram's bucket increases, `by (le)`.
    pub latency_buckets: String,
    /// The unit of the buckets' `le` bounds: seconds (`1.0`) or milliseconds (`0.001`).
    pub latency_unit_seconds: f64,
}

impl Default for Queries {
    fn default() -> Queries {
        let sel = "service=\"{service}\",version=\"{version}\"";
        let total = |extra: &str| {
            format!("sum(increase(maestro_proxy_requests_total{{{sel}{extra}}}[{{window}}]))")
        };
        Queries {
            requests: total(""),
            errors: total(",code=~\"5..\""),
            denied: total(",code=~\"401|403\""),
            in_flight: format!("sum(maestro_proxy_in_flight{{{sel}}})"),
            latency_buckets: format!(
                "sum by (le) (increase(maestro_proxy_request_duration_seconds_bucket{{{sel}}}[{{window}}]))"
            ),
            latency_unit_seconds: 1.0,
        }
    }
}

impl Queries {
    /// Checks that every query names the version (without it canary and stable would read
    /// the same series).
    ///
    /// # Errors
    /// The first query that does not, by name.
    pub fn check(&self) -> Result<(), String> {
        for (name, q) in [
            ("requests", &self.requests),
            ("errors", &self.errors),
            ("denied", &self.denied),
            ("in_flight", &self.in_flight),
            ("latency_buckets", &self.latency_buckets),
        ] {
            if !q.contains("{version}") {
                return Err(format!(
                    "{name}: `{q}` does not use {{version}}: canary and stable would read the same series"
                ));
            }
        }
        if self.latency_unit_seconds.is_nan() || self.latency_unit_seconds <= 0.0 {
            return Err("latency_unit_seconds: must be above 0".to_owned());
        }
        Ok(())
    }

    fn fill(q: &str, service: &str, version: &str, window_s: u64) -> String {
        q.replace("{service}", &label(service))
            .replace("{version}", &label(version))
            .replace("{window}", &format!("{window_s}s"))
    }
}

/// A Prometheus server's query API.
#[derive(Debug, Clone)]
pub struct Prometheus {
    /// `http://127.0.0.1:9090` (no trailing slash).
    pub base: String,
    pub timeout: Duration,
    pub queries: Queries,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Prometheus {
    #[must_use]
    pub fn new(base: &str, timeout: Duration) -> Prometheus {
        Prometheus {
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            queries: Queries::default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// One instant query's vector, as (labels, value) pairs.
    ///
    /// # Errors
    /// A message naming what went wrong (never the whole body).
    pub async fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(promql));
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let resp = tokio::time::timeout(self.timeout, self.client.get(uri))
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
            .map_err(|e| format!("unreachable: {e}"))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "query failed: {}",
                v["error"].as_str().unwrap_or("no error message")
            ));
        }
        let Some(result) = v["data"]["result"].as_array() else {
            return Err("no result vector".to_owned());
        };
        result
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| "a sample without a value".to_owned())?;
                Ok((r["metric"].clone(), value))
            })
            .collect()
    }

    /// One version's interval: the last `window_s` seconds of its series.
    ///
    /// # Errors
    /// When any query fails.
    pub async fn observe(
        &self,
        service: &str,
        version: &str,
        window_s: u64,
    ) -> Result<Observation, String> {
        let q = &self.queries;
        let fill = |t: &str| Queries::fill(t, service, version, window_s);
        let scalar =
            |rows: Vec<(serde_json::Value, f64)>| -> f64 { rows.first().map_or(0.0, |(_, v)| *v) };
        let requests = scalar(self.query(&fill(&q.requests)).await?);
        let errors = scalar(self.query(&fill(&q.errors)).await?);
        let denied = scalar(self.query(&fill(&q.denied)).await?);
        let in_flight = scalar(self.query(&fill(&q.in_flight)).await?);
        let buckets = self.query(&fill(&q.latency_buckets)).await?;
        let mut cumulative: Vec<(f64, f64)> = buckets
            .iter()
            .filter_map(|(m, v)| {
                let le = m["le"].as_str()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse::<f64>().ok()? * q.latency_unit_seconds
                };
                Some((bound, *v))
            })
            .collect();
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Observation {
            requests: count(requests),
            errors: count(errors),
            denied: count(denied),
            latencies_ms: samples(&cumulative),
            in_flight: in_flight.round() as i64,
        })
    }
}

/// `increase` extrapolates: round to whole requests.
fn count(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.round() as u64
    } else {
        0
    }
}

/// Cumulative (upper bound in seconds, count) buckets → samples in milliseconds at each
/// bucket's upper bound (the last finite one for `+Inf`), thinned to [`MAX_SAMPLES`].
fn samples(cumulative: &[(f64, f64)]) -> Vec<f64> {
    let total = cumulative.last().map_or(0.0, |(_, c)| *c).max(0.0);
    if total < 1.0 {
        return Vec::new();
    }
    let scale = (MAX_SAMPLES as f64 / total).min(1.0);
    let mut out = Vec::new();
    let (mut prev, mut last_finite) = (0.0, 0.0);
    for &(bound, c) in cumulative {
        let n = ((c - prev).max(0.0) * scale).round() as usize;
        prev = c;
        let at = if bound.is_finite() {
            last_finite = bound;
            bound
        } else {
            last_finite
        };
        out.extend(std::iter::repeat_n(at * 1000.0, n));
    }
    out
}

/// A label value escaped for PromQL's double-quoted strings.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Percent-encoding for a query parameter (RFC 3986 unreserved characters stay).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_become_samples_at_bucket_bounds() {
        let s = samples(&[(0.005, 10.0), (0.05, 12.0), (f64::INFINITY, 13.0)]);
        assert_eq!(s.len(), 13);
        assert_eq!(s.iter().filter(|&&v| v == 5.0).count(), 10);
        assert_eq!(
            s.iter().filter(|&&v| v == 50.0).count(),
            3,
            "+Inf at the last bound"
        );
        let many = samples(&[(0.1, 1_000_000.0)]);
        assert_eq!(many.len(), 5_000);
        assert!(samples(&[]).is_empty());
    }

    #[test]
    fn the_default_queries_read_the_proxy_series() {
        let q = Queries::default();
        q.check().expect("the defaults name the version");
        assert_eq!(
            Queries::fill(&q.errors, "hello", "v\"2", 5),
            "sum(increase(maestro_proxy_requests_total{service=\"hello\",version=\"v\\\"2\",code=~\"5..\"}[5s]))"
        );
        let bad = Queries {
            errors: "sum(rate(http_errors_total[1m]))".into(),
            ..Queries::default()
        };
        assert!(bad.check().expect_err("no version").starts_with("errors:"));
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(
            encode("sum(x{a=\"b c\"})"),
            "sum%28x%7Ba%3D%22b%20c%22%7D%29"
        );
        assert_eq!(label("a\"b"), "a\\\"b");
        assert_eq!(count(2.6), 3);
        assert_eq!(count(f64::NAN), 0);
    }
}
