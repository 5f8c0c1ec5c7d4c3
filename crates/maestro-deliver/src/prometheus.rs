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

/// A Prometheus server's query API.
#[derive(Debug, Clone)]
pub struct Prometheus {
    /// `http://127.0.0.1:9090` (no trailing slash).
    pub base: String,
    pub timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Prometheus {
    #[must_use]
    pub fn new(base: &str, timeout: Duration) -> Prometheus {
        Prometheus {
            base: base.trim_end_matches('/').to_owned(),
            timeout,
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
        let sel = format!(
            "service=\"{}\",version=\"{}\"",
            label(service),
            label(version)
        );
        let total = |extra: &str| {
            format!("sum(increase(maestro_proxy_requests_total{{{sel}{extra}}}[{window_s}s]))")
        };
        let scalar =
            |rows: Vec<(serde_json::Value, f64)>| -> f64 { rows.first().map_or(0.0, |(_, v)| *v) };
        let requests = scalar(self.query(&total("")).await?);
        let errors = scalar(self.query(&total(",code=~\"5..\"")).await?);
        let denied = scalar(self.query(&total(",code=~\"401|403\"")).await?);
        let in_flight = scalar(
            self.query(&format!("sum(maestro_proxy_in_flight{{{sel}}})"))
                .await?,
        );
        let buckets = self
            .query(&format!(
                "sum by (le) (increase(maestro_proxy_request_duration_seconds_bucket{{{sel}}}[{window_s}s]))"
            ))
            .await?;
        let mut cumulative: Vec<(f64, f64)> = buckets
            .iter()
            .filter_map(|(m, v)| {
                let le = m["le"].as_str()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
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
