//! One analysis interval judged: the canary's golden signals against stable's and against
//! absolute limits, plus the poison signals.
//!
//! A comparison fails only when the difference is both *significant* (the one-sided test's
//! p-value under `alpha`) and *material* (over a tolerance), so noise alone never fails a
//! canary, and a tiny but significant difference at high traffic does not either. Too
//! little traffic is *inconclusive* — never a pass, never a failure — except for the
//! poison signals, which are conclusive on few requests by design (ten 500s in a row need
//! no statistics).

use serde::{Deserialize, Serialize};

use crate::stats;

/// What the judge is told to hold the canary to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Limits {
    /// Requests each version needs in an interval before the comparisons judge.
    pub min_requests: u64,
    /// Significance level of each comparison.
    pub alpha: f64,
    /// The canary's error (5xx) rate may exceed stable's by this much (absolute).
    pub error_rate_tolerance: f64,
    /// The canary's error rate may never exceed this, whatever stable does.
    pub max_error_rate: f64,
    /// The canary's p95 latency may exceed stable's by this share…
    pub latency_tolerance: f64,
    /// …and by at least this many milliseconds before it counts.
    pub latency_floor_ms: f64,
    /// The canary's p95 latency may never exceed this (milliseconds), when set.
    pub max_p95_ms: Option<f64>,
    /// The canary's authorization-denial (401/403) rate may exceed stable's by this much.
    pub deny_rate_tolerance: f64,
    /// Poison: this share of 5xx answers among at least `spike_min_requests` fails at once.
    pub spike_error_rate: f64,
    pub spike_min_requests: u64,
    /// Poison: more canary requests than this in flight, and more than at the previous
    /// interval, is a growing backlog (saturation).
    pub max_backlog: i64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            min_requests: 50,
            alpha: 0.001,
            error_rate_tolerance: 0.01,
            max_error_rate: 0.05,
            latency_tolerance: 0.2,
            latency_floor_ms: 5.0,
            max_p95_ms: None,
            deny_rate_tolerance: 0.02,
            spike_error_rate: 0.5,
            spike_min_requests: 10,
            max_backlog: 100,
        }
    }
}

impl Limits {
    /// The first limit that makes no sense, named like its key.
    ///
    /// # Errors
    /// The field and why.
    pub fn check(&self) -> Result<(), String> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name}: {v} is not between 0 and 1"))
            }
        };
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(format!(
                "alpha: {} is not a significance level (0 < alpha < 0.5; 0.001 is the default)",
                self.alpha
            ));
        }
        unit("error_rate_tolerance", self.error_rate_tolerance)?;
        unit("max_error_rate", self.max_error_rate)?;
        unit("deny_rate_tolerance", self.deny_rate_tolerance)?;
        unit("spike_error_rate", self.spike_error_rate)?;
        if self.latency_tolerance < 0.0 || self.latency_floor_ms < 0.0 {
            return Err("latency_tolerance and latency_floor_ms cannot be negative".to_owned());
        }
        if self.max_p95_ms.is_some_and(|m| m <= 0.0) {
            return Err("max_p95_ms must be positive".to_owned());
        }
        if self.min_requests < 20 {
            return Err(format!(
                "min_requests: {} is too few to compare distributions (at least 20)",
                self.min_requests
            ));
        }
        Ok(())
    }
}

/// One version's traffic in one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub requests: u64,
    /// 5xx answers (the proxy's 502/504 for an unreachable or silent upstream included).
    pub errors: u64,
    /// 401 and 403 answers.
    pub denied: u64,
    /// Latency samples, milliseconds (a sample of the interval's requests).
    pub latencies_ms: Vec<f64>,
    /// Requests in flight at the end of the interval.
    pub in_flight: i64,
}

impl Observation {
    fn rate(&self, x: u64) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            x as f64 / self.requests as f64
        }
    }
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not enough data to say.
    NoData,
}

/// One check of one interval, with the figures behind it (for the canary report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub canary: f64,
    pub stable: Option<f64>,
    pub p_value: Option<f64>,
    pub detail: String,
}

/// The interval's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Too little traffic: the step holds.
    Inconclusive,
}

/// The judgement of one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub checks: Vec<Check>,
}

impl Judgement {
    /// The failed checks' details, joined: why the canary failed.
    #[must_use]
    pub fn why(&self) -> String {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

const LATENCY_CAP: usize = 5_000;

/// Judges one interval. `previous_backlog` is the canary's in-flight count at the end of
/// the interval before (for the growth check).
#[must_use]
pub fn judge(
    canary: &Observation,
    stable: &Observation,
    previous_backlog: i64,
    l: &Limits,
) -> Judgement {
    judge_against(canary, stable, previous_backlog, l, Against::Concurrent)
}

/// What the canary is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Against {
    /// Stable's traffic of the same interval.
    Concurrent,
    /// Stable's last interval with enough traffic (the last step, where stable has none):
    /// rates still compare, latency does not — the canary now carries all the load stable
    /// carried only part of, so it is held to the absolute latency limit instead.
    Baseline,
}

/// As [`judge`], saying what `stable` is.
#[must_use]
pub fn judge_against(
    canary: &Observation,
    stable: &Observation,
    previous_backlog: i64,
    l: &Limits,
    against: Against,
) -> Judgement {
    let mut checks = Vec::new();

    // Poison signals first: conclusive on few requests.
    let spike = canary.rate(canary.errors);
    checks.push(Check {
        name: "5xx spike".to_owned(),
        status: if canary.requests < l.spike_min_requests {
            Status::NoData
        } else if spike >= l.spike_error_rate {
            Status::Fail
        } else {
            Status::Pass
        },
        canary: spike,
        stable: None,
        p_value: None,
        detail: format!(
            "{} of {} canary requests failed ({}; poison at {} of at least {})",
            canary.errors,
            canary.requests,
            pct(spike),
            pct(l.spike_error_rate),
            l.spike_min_requests
        ),
    });
    let growing = canary.in_flight > l.max_backlog && canary.in_flight > previous_backlog;
    checks.push(Check {
        name: "backlog".to_owned(),
        status: if growing { Status::Fail } else { Status::Pass },
        canary: canary.in_flight as f64,
        stable: Some(stable.in_flight as f64),
        p_value: None,
        detail: format!(
            "{} canary requests in flight (was {previous_backlog}; limit {} and growing)",
            canary.in_flight, l.max_backlog
        ),
    });

    let enough = canary.requests >= l.min_requests && stable.requests >= l.min_requests;
    let thin = format!(
        "{} canary and {} stable requests; {} each needed",
        canary.requests, stable.requests, l.min_requests
    );

    // Error rate against stable and against the absolute limit.
    let ce = canary.rate(canary.errors);
    checks.push(if enough {
        compare_rates(
            "error rate",
            (canary.errors, canary.requests),
            (stable.errors, stable.requests),
            l.error_rate_tolerance,
            l.alpha,
        )
    } else {
        no_data("error rate", ce, &thin)
    });
    checks.push(if canary.requests >= l.min_requests {
        let t = stats::rate_over(canary.errors, canary.requests, l.max_error_rate);
        Check {
            name: "error rate limit".to_owned(),
            status: if t.p_value < l.alpha {
                Status::Fail
            } else {
                Status::Pass
            },
            canary: ce,
            stable: None,
            p_value: Some(t.p_value),
            detail: format!(
                "canary {} (limit {}; p = {:.2e} that the true rate is over it)",
                pct(ce),
                pct(l.max_error_rate),
                t.p_value
            ),
        }
    } else {
        no_data("error rate limit", ce, &thin)
    });

    // Latency: distributions compared, p95 for the effect and the limit.
    let cl = stats::thin(&canary.latencies_ms, LATENCY_CAP);
    let sl = stats::thin(&stable.latencies_ms, LATENCY_CAP);
    let (c95, s95) = (stats::quantile(&cl, 0.95), stats::quantile(&sl, 0.95));
    let samples_ok = cl.len() >= 20 && sl.len() >= 20;
    if against == Against::Concurrent {
        checks.push(if enough && samples_ok {
        let r = stats::mann_whitney(&cl, &sl);
        let material = c95 > s95 * (1.0 + l.latency_tolerance) && c95 - s95 > l.latency_floor_ms;
        let fail = r.test.p_value < l.alpha && material;
        Check {
            name: "latency p95".to_owned(),
            status: if fail { Status::Fail } else { Status::Pass },
            canary: c95,
            stable: Some(s95),
            p_value: Some(r.test.p_value),
            detail: format!(
                "canary {c95:.1} ms vs stable {s95:.1} ms (Mann-Whitney p = {:.2e}, P(canary slower) = {:.2}; fails when p < {} and over stable by {:.0}% and {} ms)",
                r.test.p_value,
                r.effect,
                l.alpha,
                l.latency_tolerance * 100.0,
                l.latency_floor_ms
            ),
        }
    } else {
        no_data("latency p95", c95, &thin)
    });
    }
    if let Some(max) = l.max_p95_ms {
        checks.push(if canary.requests >= l.min_requests && cl.len() >= 20 {
            // A p95 over the limit means more than 5% of requests over it: judged on
            // evidence, like the error limit.
            let over = cl.iter().filter(|&&v| v > max).count() as u64;
            let t = stats::rate_over(over, cl.len() as u64, 0.05);
            Check {
                name: "latency p95 limit".to_owned(),
                status: if t.p_value < l.alpha {
                    Status::Fail
                } else {
                    Status::Pass
                },
                canary: c95,
                stable: None,
                p_value: Some(t.p_value),
                detail: format!(
                    "canary {c95:.1} ms (limit {max} ms; {over} of {} samples over it, p = {:.2e})",
                    cl.len(),
                    t.p_value
                ),
            }
        } else {
            no_data("latency p95 limit", c95, &thin)
        });
    }

    // Poison: an authorization regression shows as denials (401/403) stable does not give.
    checks.push(if enough {
        compare_rates(
            "authz denials",
            (canary.denied, canary.requests),
            (stable.denied, stable.requests),
            l.deny_rate_tolerance,
            l.alpha,
        )
    } else {
        no_data("authz denials", canary.rate(canary.denied), &thin)
    });

    // No samples make a NaN quantile; JSON has no NaN (it would be written as null and
    // refused when the state is read back after a restart).
    for c in &mut checks {
        c.canary = finite(c.canary);
        c.stable = c.stable.map(finite);
        c.p_value = c.p_value.map(finite);
    }
    let verdict = if checks.iter().any(|c| c.status == Status::Fail) {
        Verdict::Fail
    } else if checks
        .iter()
        .any(|c| c.status == Status::NoData && c.name != "5xx spike")
    {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    };
    Judgement { verdict, checks }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// The canary's rate of some answers against stable's: fails when higher with p < alpha
/// (Fisher's exact test, or the z-test at high counts) and by more than `tolerance`.
fn compare_rates(
    name: &str,
    (x1, n1): (u64, u64),
    (x2, n2): (u64, u64),
    tolerance: f64,
    alpha: f64,
) -> Check {
    let rate = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    let (c, s) = (rate(x1, n1), rate(x2, n2));
    let t = stats::rate_increase(x1, n1, x2, n2);
    let fail = t.p_value < alpha && c - s > tolerance;
    Check {
        name: name.to_owned(),
        status: if fail { Status::Fail } else { Status::Pass },
        canary: c,
        stable: Some(s),
        p_value: Some(t.p_value),
        detail: format!(
            "canary {} vs stable {} (p = {:.2e}; fails when p < {alpha} and over stable by more than {})",
            pct(c),
            pct(s),
            t.p_value,
            pct(tolerance)
        ),
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

fn no_data(name: &str, canary: f64, why: &str) -> Check {
    Check {
        name: name.to_owned(),
        status: Status::NoData,
        canary,
        stable: None,
        p_value: None,
        detail: why.to_owned(),
    }
}

/// Consecutive failed intervals: a canary is rolled back when `threshold` intervals in a
/// row fail (an inconclusive interval neither counts nor resets; a pass resets). With the
/// default of 2 and independent intervals, noise alone rolls back with probability about
/// alpha² per interval, while a real regression costs one extra interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streak {
    pub failures: u32,
}

impl Streak {
    /// Counts `verdict`; true when the streak reaches `threshold`.
    pub fn record(&mut self, verdict: Verdict, threshold: u32) -> bool {
        match verdict {
            Verdict::Pass => self.failures = 0,
            Verdict::Fail => self.failures += 1,
            Verdict::Inconclusive => {}
        }
        self.failures >= threshold.max(1)
    }
}
