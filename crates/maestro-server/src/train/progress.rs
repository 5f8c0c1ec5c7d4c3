//! A release's persisted state: its progress through the stages (the release row's
//! `state`, JSON with a format version) and its status (the row's `status`). Both are read
//! back only through [`Progress::parse`] and [`ReleaseStatus::parse`]: a row that does not
//! parse is an error the driver stops on, never an empty progress.

use serde::{Deserialize, Serialize};

use crate::now_ms;

/// The format of [`Progress`] this conductor writes. Rows without a `format` field were
/// written before it was versioned, in format 1.
pub const FORMAT: u32 = 1;

fn format_1() -> u32 {
    1
}

/// A release's progress, kept as the release row's `state`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// The shape of this document ([`FORMAT`]).
    #[serde(default = "format_1")]
    pub format: u32,
    /// The run at the commit whose gates were checked.
    pub run: Option<i64>,
    pub gates: Vec<GateResult>,
    pub migrations_changed: bool,
    /// The artifact's verified evidence (bundles found, keys).
    pub evidence: Option<String>,
    /// One per stage of the train, in order; never empty.
    pub stages: Vec<Stage>,
    /// Why it is blocked or was rolled back.
    pub reason: Option<String>,
    pub events: Vec<TrainEvent>,
}

/// Why a stored progress cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProgressError {
    #[error("its stored progress does not parse: {0}")]
    Syntax(String),
    #[error(
        "its stored progress is format {0}, newer than this conductor's {FORMAT}: upgrade the conductor"
    )]
    Newer(u32),
    #[error("its stored progress has no stages")]
    NoStages,
}

impl Progress {
    /// The progress of a release just cut, every stage pending.
    #[must_use]
    pub fn new(stages: &[String]) -> Progress {
        Progress {
            format: FORMAT,
            run: None,
            gates: Vec::new(),
            migrations_changed: false,
            evidence: None,
            stages: stages
                .iter()
                .map(|e| Stage {
                    environment: e.clone(),
                    step: Step::Pending,
                    deployment: None,
                    previous: None,
                    smoke: Vec::new(),
                    checks: Vec::new(),
                    soak_started_at_ms: None,
                })
                .collect(),
            reason: None,
            events: Vec::new(),
        }
    }

    /// A stored progress, checked.
    ///
    /// # Errors
    /// When the text is not a progress document, is of a newer format, or has no stages.
    pub fn parse(text: &str) -> Result<Progress, ProgressError> {
        let p: Progress =
            serde_json::from_str(text).map_err(|e| ProgressError::Syntax(e.to_string()))?;
        if p.format > FORMAT {
            return Err(ProgressError::Newer(p.format));
        }
        if p.stages.is_empty() {
            return Err(ProgressError::NoStages);
        }
        Ok(p)
    }

    /// The text stored in the row. Every number in it is finite, so it always parses back.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut p = self.clone();
        p.format = FORMAT;
        for c in p.stages.iter_mut().flat_map(|s| s.checks.iter_mut()) {
            c.error_rate = finite(c.error_rate);
            c.burn_rate = finite(c.burn_rate);
            c.p95_ms = c.p95_ms.map(finite);
        }
        // Plain data of strings, integers, booleans and finite floats: cannot fail.
        serde_json::to_string(&p).expect("progress serializes")
    }

    pub fn event(&mut self, message: impl Into<String>) {
        self.events.push(TrainEvent {
            at_ms: now_ms(),
            message: message.into(),
        });
    }
}

/// A non-finite figure (a division by zero) kept as the largest finite one, so the row
/// stays JSON that parses back (serde writes NaN as `null`).
fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else if v.is_nan() {
        0.0
    } else {
        f64::MAX.copysign(v)
    }
}

/// One gate at the commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GateResult {
    pub gate: String,
    pub green: bool,
    /// Its jobs and their statuses.
    pub jobs: Vec<(String, String)>,
}

/// Where a stage is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Pending,
    Canary,
    Verify,
    Soak,
    Done,
    RolledBack,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub environment: String,
    pub step: Step,
    #[serde(default)]
    pub deployment: Option<i64>,
    /// The release that was stable here before (what a rollback returns to).
    #[serde(default)]
    pub previous: Option<String>,
    #[serde(default)]
    pub smoke: Vec<SmokeResult>,
    #[serde(default)]
    pub checks: Vec<SignalCheck>,
    #[serde(default)]
    pub soak_started_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmokeResult {
    pub name: String,
    pub passed: bool,
    pub exit_code: Option<i32>,
    pub duration_ms: i64,
    pub output: String,
}

/// When a golden-signal check was made.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum During {
    /// Before a stage's promotion, on its stable release.
    Precheck,
    /// The post-deploy verification.
    Verify,
    Soak,
}

/// A golden-signal check's outcome.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Too few requests to judge.
    NoData,
}

/// One golden-signal / SLO look at the stable release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SignalCheck {
    pub during: During,
    pub at_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub burn_rate: f64,
    pub p95_ms: Option<f64>,
    pub status: Verdict,
    pub why: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainEvent {
    pub at_ms: i64,
    pub message: String,
}

/// A release's status (the row's `status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseStatus {
    /// Cut, not yet promoted.
    Cut,
    Progressing,
    /// Stopped by a promotion block; promote again to retry.
    Blocked,
    Released,
    RolledBack,
}

impl ReleaseStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Cut => "cut",
            ReleaseStatus::Progressing => "progressing",
            ReleaseStatus::Blocked => "blocked",
            ReleaseStatus::Released => "released",
            ReleaseStatus::RolledBack => "rolled_back",
        }
    }

    /// A stored status.
    ///
    /// # Errors
    /// Names a status this conductor does not know.
    pub fn parse(s: &str) -> Result<ReleaseStatus, String> {
        Ok(match s {
            "cut" => ReleaseStatus::Cut,
            "progressing" => ReleaseStatus::Progressing,
            "blocked" => ReleaseStatus::Blocked,
            "released" => ReleaseStatus::Released,
            "rolled_back" => ReleaseStatus::RolledBack,
            other => {
                return Err(format!(
                    "its stored status `{other}` is not a release status"
                ));
            }
        })
    }

    /// Released or rolled back: nothing more happens to it.
    #[must_use]
    pub fn ended(self) -> bool {
        matches!(self, ReleaseStatus::Released | ReleaseStatus::RolledBack)
    }
}

impl std::fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut() -> Progress {
        let mut p = Progress::new(&["stage".to_owned(), "prod".to_owned()]);
        p.run = Some(7);
        p.event("cut");
        p
    }

    #[test]
    fn a_row_that_does_not_parse_is_an_error_never_an_empty_progress() {
        for bad in [
            "",
            "null",
            "{}",
            "{\"stages\": []}",
            "[1]",
            "{\"stages\": 5}",
        ] {
            assert!(Progress::parse(bad).is_err(), "{bad:?} parsed");
        }
        let text = cut().to_text();
        // An unknown step, an unknown field, a newer format: refused, named.
        let bad_step = text.replace("\"pending\"", "\"launched\"");
        assert!(
            matches!(Progress::parse(&bad_step), Err(ProgressError::Syntax(m)) if m.contains("launched")),
        );
        let extra = text.replacen('{', "{\"surprise\":1,", 1);
        assert!(matches!(
            Progress::parse(&extra),
            Err(ProgressError::Syntax(_))
        ));
        let newer = text.replace("\"format\":1", "\"format\":2");
        assert_eq!(Progress::parse(&newer), Err(ProgressError::Newer(2)));
        assert_eq!(
            Progress::parse(
                "{\"run\":null,\"gates\":[],\"migrations_changed\":false,\"evidence\":null,\"stages\":[],\"reason\":null,\"events\":[]}"
            ),
            Err(ProgressError::NoStages)
        );
    }

    #[test]
    fn what_is_written_parses_back_and_rows_before_the_format_field_are_format_1() {
        let mut p = cut();
        p.stages[0].step = Step::Soak;
        p.stages[0].checks.push(SignalCheck {
            during: During::Soak,
            at_ms: 1,
            requests: 0,
            errors: 0,
            error_rate: f64::NAN,
            burn_rate: f64::INFINITY,
            p95_ms: Some(f64::NAN),
            status: Verdict::NoData,
            why: "nothing".to_owned(),
        });
        let back = Progress::parse(&p.to_text()).expect("parses back");
        assert_eq!(back.stages[0].step, Step::Soak);
        assert_eq!(back.stages[0].checks[0].burn_rate, f64::MAX);
        // A row as the conductor wrote it before the format was versioned.
        let old = r#"{"run":3,"gates":[{"gate":"unit","green":true,"jobs":[["unit","succeeded"]]}],"migrations_changed":false,"evidence":"ok","stages":[{"environment":"stage","step":"verify","deployment":4,"previous":"1.0.0","smoke":[],"checks":[{"during":"precheck","at_ms":1,"requests":50,"errors":0,"error_rate":0.0,"burn_rate":0.0,"p95_ms":3.5,"status":"pass","why":"ok"}],"soak_started_at_ms":null}],"reason":null,"events":[{"at_ms":1,"message":"cut"}]}"#;
        let p = Progress::parse(old).expect("format 1");
        assert_eq!((p.format, p.stages[0].step), (1, Step::Verify));
    }

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_named() {
        for s in [
            ReleaseStatus::Cut,
            ReleaseStatus::Progressing,
            ReleaseStatus::Blocked,
            ReleaseStatus::Released,
            ReleaseStatus::RolledBack,
        ] {
            assert_eq!(ReleaseStatus::parse(s.as_str()), Ok(s));
        }
        assert!(
            ReleaseStatus::parse("shipped")
                .unwrap_err()
                .contains("shipped")
        );
    }
}
