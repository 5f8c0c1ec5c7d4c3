//! Golden signals of one version, kept with atomics (no lock on the request path but the
//! latency sample ring's): requests by status code, a latency histogram, requests in
//! flight, and the most recent latency samples with their time and status for the
//! canary's statistical tests.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Latency histogram bounds, seconds (Prometheus `le`).
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Latency samples kept per version: the newest win.
pub const SAMPLES: usize = 65_536;

/// One answered request, as the statistics need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When the answer's headers arrived, in milliseconds since the proxy started.
    pub at_ms: u64,
    /// Time to the answer's headers, microseconds.
    pub latency_us: u32,
    pub status: u16,
}

/// The signals of one version.
#[derive(Debug)]
pub struct Signals {
    /// Requests by status code 100–599 (index = code − 100).
    codes: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
    in_flight: AtomicI64,
    samples: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    buf: Vec<Sample>,
    next: usize,
}

impl Default for Signals {
    fn default() -> Signals {
        Signals {
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            samples: Mutex::new(Ring {
                buf: Vec::with_capacity(1024),
                next: 0,
            }),
        }
    }
}

/// Counters of one version at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// (status code, requests), codes with at least one request, ascending.
    pub codes: Vec<(u16, u64)>,
    pub requests: u64,
    pub server_errors: u64,
    /// 401 and 403: the poison signal of an authorization regression.
    pub denied: u64,
    pub in_flight: i64,
    /// Cumulative histogram counts per bucket of [`BUCKETS`].
    pub buckets: Vec<u64>,
    pub latency_sum_us: u64,
}

impl Counts {
    /// What happened between `earlier` and `self`.
    #[must_use]
    pub fn since(&self, earlier: &Counts) -> Counts {
        let before = |code: u16| {
            earlier
                .codes
                .iter()
                .find(|(c, _)| *c == code)
                .map_or(0, |(_, n)| *n)
        };
        Counts {
            codes: self
                .codes
                .iter()
                .map(|&(c, n)| (c, n.saturating_sub(before(c))))
                .filter(|&(_, n)| n > 0)
                .collect(),
            requests: self.requests.saturating_sub(earlier.requests),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            denied: self.denied.saturating_sub(earlier.denied),
            in_flight: self.in_flight,
            buckets: self
                .buckets
                .iter()
                .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            latency_sum_us: self.latency_sum_us.saturating_sub(earlier.latency_sum_us),
        }
    }
}

impl Signals {
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finished(&self, status: u16, latency_us: u64, at_ms: u64) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let code = usize::from(status.clamp(100, 599) - 100);
        self.codes[code].fetch_add(1, Ordering::Relaxed);
        let secs = latency_us as f64 / 1e6;
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(latency_us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let sample = Sample {
            at_ms,
            latency_us: u32::try_from(latency_us).unwrap_or(u32::MAX),
            status,
        };
        let mut ring = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.buf.len() < SAMPLES {
            ring.buf.push(sample);
        } else {
            let i = ring.next;
            ring.buf[i] = sample;
        }
        ring.next = (ring.next + 1) % SAMPLES;
    }

    /// The counters now.
    #[must_use]
    pub fn counts(&self) -> Counts {
        let codes: Vec<(u16, u64)> = self
            .codes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then(|| (u16::try_from(i + 100).unwrap_or(599), n))
            })
            .collect();
        let mut cumulative = 0;
        Counts {
            requests: codes.iter().map(|(_, n)| n).sum(),
            server_errors: codes
                .iter()
                .filter(|(c, _)| *c >= 500)
                .map(|(_, n)| n)
                .sum(),
            denied: codes
                .iter()
                .filter(|(c, _)| *c == 401 || *c == 403)
                .map(|(_, n)| n)
                .sum(),
            codes,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| {
                    cumulative += b.load(Ordering::Relaxed);
                    cumulative
                })
                .collect(),
            latency_sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }

    /// Samples answered at or after `since_ms` (oldest first), at most [`SAMPLES`].
    #[must_use]
    pub fn samples_since(&self, since_ms: u64) -> Vec<Sample> {
        let ring = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (newer, older) = ring.buf.split_at(ring.next.min(ring.buf.len()));
        older
            .iter()
            .chain(newer.iter())
            .filter(|s| s.at_ms >= since_ms)
            .copied()
            .collect()
    }

    /// Prometheus text exposition lines for this version (no HELP/TYPE headers).
    pub(crate) fn render(&self, service: &str, version: &str, out: &mut Families) {
        let c = self.counts();
        let labels = format!(
            "service=\"{}\",version=\"{}\"",
            escape(service),
            escape(version)
        );
        for (code, n) in &c.codes {
            let _ = writeln!(
                out.requests,
                "maestro_proxy_requests_total{{{labels},code=\"{code}\"}} {n}"
            );
        }
        for (le, n) in BUCKETS.iter().zip(&c.buckets) {
            let _ = writeln!(
                out.duration,
                "maestro_proxy_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out.duration,
            "maestro_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}\nmaestro_proxy_request_duration_seconds_sum{{{labels}}} {}\nmaestro_proxy_request_duration_seconds_count{{{labels}}} {count}",
            c.latency_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out.in_flight,
            "maestro_proxy_in_flight{{{labels}}} {}",
            c.in_flight
        );
    }
}

/// The three metric families being written.
#[derive(Debug, Default)]
pub(crate) struct Families {
    pub requests: String,
    pub duration: String,
    pub in_flight: String,
}

impl Families {
    pub(crate) fn finish(self, route: &str) -> String {
        format!(
            "# HELP maestro_proxy_requests_total Requests answered, by service, version and status code.\n# TYPE maestro_proxy_requests_total counter\n{}# HELP maestro_proxy_request_duration_seconds Time from a request to its answer's headers.\n# TYPE maestro_proxy_request_duration_seconds histogram\n{}# HELP maestro_proxy_in_flight Requests being answered now (a growing backlog is a poison signal).\n# TYPE maestro_proxy_in_flight gauge\n{}# HELP maestro_proxy_route_weight Share of new requests sent to each version, 0 to 1.\n# TYPE maestro_proxy_route_weight gauge\n{route}",
            self.requests, self.duration, self.in_flight
        )
    }
}

/// A label value escaped for the text format.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_samples() {
        let s = Signals::default();
        for (i, status) in [200, 200, 503, 403, 200].into_iter().enumerate() {
            s.started();
            s.finished(status, 1_500 * (i as u64 + 1), i as u64 * 10);
        }
        let c = s.counts();
        assert_eq!(c.requests, 5);
        assert_eq!(c.server_errors, 1);
        assert_eq!(c.denied, 1);
        assert_eq!(c.codes, [(200, 3), (403, 1), (503, 1)]);
        assert_eq!(c.in_flight, 0);
        // 1.5, 3, 4.5, 6 and 7.5 ms: cumulative ≤ 1, 2.5, 5 and 10 ms.
        assert_eq!(&c.buckets[..4], &[0, 1, 3, 5]);
        assert_eq!(c.buckets.last(), Some(&5));
        let recent = s.samples_since(20);
        assert_eq!(
            recent.iter().map(|s| s.status).collect::<Vec<_>>(),
            [503, 403, 200]
        );
        let later = {
            s.started();
            s.finished(500, 100, 50);
            s.counts()
        };
        let d = later.since(&c);
        assert_eq!((d.requests, d.server_errors, d.denied), (1, 1, 0));
        assert_eq!(d.codes, [(500, 1)]);
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let s = Signals::default();
        for i in 0..(SAMPLES as u64 + 10) {
            s.finished(200, 1, i);
        }
        let all = s.samples_since(0);
        assert_eq!(all.len(), SAMPLES);
        assert_eq!(all.first().map(|s| s.at_ms), Some(10));
        assert_eq!(all.last().map(|s| s.at_ms), Some(SAMPLES as u64 + 9));
    }
}
