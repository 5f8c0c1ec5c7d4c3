//! The canary strategy as written in configuration: steps, windows, thresholds, deadlines
//! and the judge's limits.

use serde::{Deserialize, Serialize};

use crate::judge::Limits;

/// How a canary progresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Strategy {
    /// Canary traffic at each step, percent, increasing, ending at 100.
    pub steps: Vec<u32>,
    /// How often the judge looks at the last interval's traffic (`5s`, `1m`).
    pub interval: String,
    /// How long each step must stay healthy before the next (the health window).
    pub window: String,
    /// Failed intervals in a row that roll the canary back.
    pub failure_threshold: u32,
    /// The whole canary must finish within this (time paused by hand excluded), or it is
    /// rolled back: no canary stays "progressing" forever.
    pub progress_deadline: String,
    /// A metrics source silent this long rolls back (before that, the canary holds).
    pub metrics_timeout: String,
    pub limits: Limits,
}

impl Default for Strategy {
    fn default() -> Strategy {
        Strategy {
            steps: vec![5, 25, 50, 100],
            interval: "5s".to_owned(),
            window: "30s".to_owned(),
            failure_threshold: 2,
            progress_deadline: "15m".to_owned(),
            metrics_timeout: "60s".to_owned(),
            limits: Limits::default(),
        }
    }
}

/// A strategy with its durations in milliseconds, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Canary weight at each step, basis points.
    pub steps: Vec<u32>,
    pub interval_ms: u64,
    pub window_ms: u64,
    pub failure_threshold: u32,
    pub progress_deadline_ms: u64,
    pub metrics_timeout_ms: u64,
    pub limits: Limits,
}

/// `500ms`, `5s`, `2m`, `1h` in milliseconds.
#[must_use]
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, per) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        return None;
    };
    num.parse::<u64>().ok()?.checked_mul(per).filter(|&v| v > 0)
}

impl Strategy {
    /// Checks the strategy; the error names the key and what to write.
    ///
    /// # Errors
    /// `key: problem`.
    pub fn plan(&self) -> Result<Plan, String> {
        let dur = |key: &str, v: &str| {
            parse_duration_ms(v).ok_or_else(|| {
                format!("{key}: `{v}` is not a duration (a number and ms, s, m or h: `5s`)")
            })
        };
        if self.steps.is_empty() {
            return Err("steps: empty; e.g. [5, 25, 50, 100]".to_owned());
        }
        if self.steps.windows(2).any(|w| w[0] >= w[1]) || self.steps[0] == 0 {
            return Err(format!(
                "steps: {:?} must increase from above 0",
                self.steps
            ));
        }
        if self.steps.last() != Some(&100) {
            return Err(format!(
                "steps: {:?} must end at 100 (the last step sends all traffic to the canary)",
                self.steps
            ));
        }
        let interval_ms = dur("interval", &self.interval)?;
        let window_ms = dur("window", &self.window)?;
        if window_ms < interval_ms {
            return Err(format!(
                "window: `{}` is shorter than the interval `{}`: a step needs at least one analysis",
                self.window, self.interval
            ));
        }
        if self.failure_threshold == 0 {
            return Err("failure_threshold: must be at least 1".to_owned());
        }
        let progress_deadline_ms = dur("progress_deadline", &self.progress_deadline)?;
        let minimum = window_ms * self.steps.len() as u64;
        if progress_deadline_ms < minimum {
            return Err(format!(
                "progress_deadline: `{}` is shorter than the steps need ({} steps × window {})",
                self.progress_deadline,
                self.steps.len(),
                self.window
            ));
        }
        let metrics_timeout_ms = dur("metrics_timeout", &self.metrics_timeout)?;
        self.limits.check().map_err(|e| format!("limits.{e}"))?;
        Ok(Plan {
            steps: self.steps.iter().map(|p| p * 100).collect(),
            interval_ms,
            window_ms,
            failure_threshold: self.failure_threshold,
            progress_deadline_ms,
            metrics_timeout_ms,
            limits: self.limits.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan() {
        let p = Strategy::default().plan().expect("valid");
        assert_eq!(p.steps, [500, 2_500, 5_000, 10_000]);
        assert_eq!((p.interval_ms, p.window_ms), (5_000, 30_000));
    }

    #[test]
    fn bad_strategies_name_the_key() {
        let bad = |f: fn(&mut Strategy)| {
            let mut s = Strategy::default();
            f(&mut s);
            s.plan().expect_err("refused")
        };
        assert!(bad(|s| s.steps = vec![5, 50]).starts_with("steps: [5, 50] must end at 100"));
        assert!(bad(|s| s.steps = vec![50, 25, 100]).contains("must increase"));
        assert!(bad(|s| s.interval = "5".into()).starts_with("interval: `5` is not a duration"));
        assert!(bad(|s| s.window = "1s".into()).starts_with("window: `1s` is shorter"));
        assert!(bad(|s| s.progress_deadline = "1m".into()).starts_with("progress_deadline"));
        assert!(bad(|s| s.limits.alpha = 2.0).starts_with("limits.alpha"));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("0s"), None);
    }
}
