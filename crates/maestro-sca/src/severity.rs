//! Severity of an advisory: the highest CVSS base score it gives (v2, v3.0, v3.1, v4.0),
//! else the database's own rating (GitHub's `database_specific.severity`).

use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use crate::osv::RawSeverity;

/// The qualitative rating scale of CVSS (and of GitHub's advisories).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    /// `low`, `medium`/`moderate`, `high`, `critical`, `none` (any case).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(Level::None),
            "low" => Some(Level::Low),
            "medium" | "moderate" => Some(Level::Medium),
            "high" => Some(Level::High),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }
}

impl From<cvss::Severity> for Level {
    fn from(s: cvss::Severity) -> Level {
        match s {
            cvss::Severity::None => Level::None,
            cvss::Severity::Low => Level::Low,
            cvss::Severity::Medium => Level::Medium,
            cvss::Severity::High => Level::High,
            cvss::Severity::Critical => Level::Critical,
        }
    }
}

/// How severe an advisory is; `level: None` when nothing in it could be understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Severity {
    pub level: Option<Level>,
    pub score: Option<f64>,
    /// Where the rating came from: `CVSS:3.1/AV:N/…` or `database_specific.severity`.
    pub source: String,
}

impl Severity {
    pub fn unknown() -> Severity {
        Severity {
            level: None,
            score: None,
            source: String::new(),
        }
    }

    /// `high 7.5`, `medium`, `unknown`.
    pub fn label(&self) -> String {
        match (self.level, self.score) {
            (Some(l), Some(s)) => format!("{} {s:.1}", l.as_str()),
            (Some(l), None) => l.as_str().to_owned(),
            (None, _) => "unknown".to_owned(),
        }
    }
}

/// A severity entry that was not understood; the advisory itself was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeverityNote {
    pub advisory: String,
    pub file: PathBuf,
    pub message: String,
}

pub(crate) fn assess(
    id: &str,
    file: &Path,
    entries: &[&RawSeverity],
    database_specific: &[Option<&serde_json::Value>],
    notes: &mut Vec<SeverityNote>,
) -> Severity {
    let mut best: Option<Severity> = None;
    for e in entries {
        let note = |message: String| SeverityNote {
            advisory: id.to_owned(),
            file: file.to_owned(),
            message,
        };
        match e.kind.as_str() {
            "CVSS_V2" | "CVSS_V3" | "CVSS_V4" => match cvss::Cvss::from_str(e.score.trim()) {
                Ok(v) => {
                    let score = v.score();
                    if best
                        .as_ref()
                        .and_then(|b| b.score)
                        .is_none_or(|s| score > s)
                    {
                        best = Some(Severity {
                            level: Some(v.severity().into()),
                            score: Some(score),
                            source: e.score.trim().to_owned(),
                        });
                    }
                }
                Err(err) => notes.push(note(format!(
                    "{} \"{}\" is not a valid vector ({err}); entry ignored",
                    e.kind, e.score
                ))),
            },
            other => notes.push(note(format!(
                "severity type {other} is not understood; entry ignored"
            ))),
        }
    }
    if let Some(b) = best {
        return b;
    }
    for ds in database_specific.iter().flatten() {
        if let Some(level) = ds
            .get("severity")
            .and_then(|s| s.as_str())
            .and_then(Level::parse)
        {
            return Severity {
                level: Some(level),
                score: None,
                source: "database_specific.severity".to_owned(),
            };
        }
    }
    Severity::unknown()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sev(kind: &str, score: &str) -> (Severity, Vec<SeverityNote>) {
        let e = RawSeverity {
            kind: kind.to_owned(),
            score: score.to_owned(),
        };
        let mut notes = Vec::new();
        let s = assess("X-1", Path::new("x.json"), &[&e], &[], &mut notes);
        (s, notes)
    }

    #[test]
    fn cvss_versions_score() {
        let (s, _) = sev("CVSS_V3", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H");
        assert_eq!(s.level, Some(Level::Critical));
        assert_eq!(s.score, Some(9.8));
        let (s, _) = sev("CVSS_V3", "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H");
        assert_eq!(s.label(), "medium 5.9");
        let (s, _) = sev(
            "CVSS_V4",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        );
        assert_eq!(s.level, Some(Level::Critical));
        let (s, _) = sev("CVSS_V2", "AV:N/AC:L/Au:N/C:P/I:P/A:P");
        assert_eq!(s.score, Some(7.5));
    }

    #[test]
    fn unknown_formats_are_noted_not_fatal() {
        let (s, notes) = sev("CVSS_V5", "CVSS:5.0/XX:Y");
        assert_eq!(s.level, None);
        assert!(
            notes[0].message.contains("CVSS_V5 is not understood"),
            "{notes:?}"
        );
        let (s, notes) = sev("CVSS_V3", "CVSS:3.1/AV:Q");
        assert_eq!(s.level, None);
        assert!(notes[0].message.contains("not a valid vector"), "{notes:?}");
    }

    #[test]
    fn falls_back_to_the_database_rating() {
        let ds = serde_json::json!({"severity": "MODERATE"});
        let mut notes = Vec::new();
        let s = assess(
            "G",
            Path::new("g.json"),
            &[],
            &[None, Some(&ds)],
            &mut notes,
        );
        assert_eq!(s.level, Some(Level::Medium));
    }
}
