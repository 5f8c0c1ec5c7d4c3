//! Waivers: a time-bound, attributed excuse for one finding on one resource.
//!
//! A waiver names the rule (a policy rule `package.rule`, or a migration lint code or
//! name), the resource it excuses (a glob), the reason, the approver and an expiry. There
//! are no permanent waivers: `expires` is required, and from that instant on the waiver
//! stops waiving and says so. Whoever applies a waiver records the use ([`Hit`]) so that
//! the audit trail shows who excused what, when, and why.
//!
//! ```yaml
//! # .ci/waivers.yaml
//! waivers:
//!   - rule: terraform.deny_public_s3
//!     resource: aws_s3_bucket.website
//!     reason: static website behind the CDN; INC-2231
//!     approver: alice@example.com
//!     expires: 2026-12-31          # valid through that day (UTC)
//! ```

use std::path::{Path, PathBuf};

use globset::{Glob, GlobMatcher};
use jiff::{Timestamp, ToSpan, civil::Date, tz::TimeZone};
use serde::Serialize;
use serde_json::Value;

/// Where waivers live unless told otherwise.
pub const DEFAULT_PATH: &str = ".ci/waivers.yaml";

/// The largest waiver file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// How close to its expiry a waiver is reported as expiring.
pub const EXPIRING_DAYS: i64 = 7;

#[derive(Debug, thiserror::Error)]
pub enum WaiverError {
    #[error("{path}: cannot be read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is over the {max}-byte limit for a waiver file")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One waiver from the file.
#[derive(Clone, Debug, Serialize)]
pub struct Waiver {
    /// 0-based position in the file's list, shown as `waivers[i]`.
    pub index: usize,
    pub rule: String,
    pub resource: String,
    pub reason: String,
    pub approver: String,
    /// As written in the file.
    pub expires: String,
    /// The first instant at which the waiver no longer applies.
    #[serde(serialize_with = "display")]
    pub expires_at: Timestamp,
    /// Optional glob limiting the waiver to some input files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip)]
    resource_glob: GlobMatcher,
    #[serde(skip)]
    input_glob: Option<GlobMatcher>,
}

fn display<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(t)
}

/// Where a waiver stands at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    /// Active, but expires within [`EXPIRING_DAYS`].
    Expiring,
    Expired,
}

impl Waiver {
    #[must_use]
    pub fn status(&self, now: Timestamp) -> Status {
        if now >= self.expires_at {
            Status::Expired
        } else if self.expires_at.duration_since(now).as_secs() <= EXPIRING_DAYS * 86_400 {
            Status::Expiring
        } else {
            Status::Active
        }
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        if !s.ids.iter().any(|id| *id == self.rule) {
            return false;
        }
        if let (Some(g), Some(input)) = (&self.input_glob, s.input)
            && !g.is_match(input)
        {
            return false;
        }
        match s.resource {
            Some(r) => self.resource_glob.is_match(r),
            // A plain-string message: the waiver's resource must appear in it as a whole
            // name (`aws_s3_bucket.site` does not excuse `aws_s3_bucket.site2`).
            None => self.resource == "*" || mentions(s.message, &self.resource),
        }
    }
}

/// `name` occurs in `text` not as part of a longer name.
fn mentions(text: &str, name: &str) -> bool {
    let inner = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(|c| inner(c) || c == '.') && !after.is_some_and(inner)
    })
}

/// A finding a waiver might excuse.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The names the finding goes by: `terraform.deny_public_s3`, or `MG103` and
    /// `drop-column`.
    pub ids: &'a [&'a str],
    /// The resource, when the finding names one (a structured message's `resource`).
    pub resource: Option<&'a str>,
    /// The finding's message (matched when there is no resource).
    pub message: &'a str,
    /// The input file the finding is about, if any.
    pub input: Option<&'a str>,
}

/// A waiver that matched a finding.
#[derive(Clone, Copy, Debug)]
pub struct Hit<'a> {
    pub waiver: &'a Waiver,
    /// An expired waiver matched: the finding still counts.
    pub expired: bool,
}

impl Hit<'_> {
    /// One line for the report.
    #[must_use]
    pub fn describe(&self, source: &Path) -> String {
        let w = self.waiver;
        if self.expired {
            format!(
                "waiver {}[{}] expired {} (approved by {}: {}); it no longer waives: renew it or fix the finding",
                source.display(),
                w.index,
                w.expires,
                w.approver,
                w.reason
            )
        } else {
            format!(
                "waived until {} by {}: {} ({}[{}])",
                w.expires,
                w.approver,
                w.reason,
                source.display(),
                w.index
            )
        }
    }
}

/// The waivers of one file.
#[derive(Clone, Debug, Default)]
pub struct Waivers {
    /// The file they came from (empty when there is no file).
    pub source: PathBuf,
    pub list: Vec<Waiver>,
}

fn field(
    path: &Path,
    i: usize,
    obj: &serde_json::Map<String, Value>,
    name: &str,
    hint: &str,
) -> Result<String, WaiverError> {
    let bad = |message: String| WaiverError::Invalid {
        path: path.to_owned(),
        message,
    };
    match obj.get(name) {
        None | Some(Value::Null) => Err(bad(format!("waivers[{i}].{name} is missing: {hint}"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(bad(format!("waivers[{i}].{name} is empty: {hint}")))
        }
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(bad(format!(
            "waivers[{i}].{name} must be a string, not {other}"
        ))),
    }
}

/// Parses an expiry: a date (valid through that day, UTC) or an RFC 3339 instant.
///
/// # Errors
/// When it is neither.
pub fn parse_expiry(text: &str) -> Result<Timestamp, String> {
    if let Ok(d) = text.parse::<Date>() {
        return d
            .to_zoned(TimeZone::UTC)
            .and_then(|z| z.checked_add(1.day()))
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string());
    }
    text.parse::<Timestamp>().map_err(|_| {
        format!("`{text}` is not a date (2026-12-31) or an RFC 3339 time (2026-12-31T18:00:00Z)")
    })
}

impl Waivers {
    /// Reads a waiver file. `required = false` treats a missing file as no waivers.
    ///
    /// # Errors
    /// Unreadable, oversized or invalid files, naming the waiver and field at fault.
    pub fn load(path: &Path, required: bool) -> Result<Waivers, WaiverError> {
        let io = |source| WaiverError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Waivers {
                    source: path.to_owned(),
                    list: Vec::new(),
                });
            }
            other => other.map_err(io)?,
        };
        if meta.len() > MAX_FILE_BYTES {
            return Err(WaiverError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
                max: MAX_FILE_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(path, &text)
    }

    /// Parses waiver YAML (or JSON): `waivers: [ … ]`, or the list alone.
    ///
    /// # Errors
    /// Invalid YAML or waivers, naming the waiver and field at fault.
    pub fn parse(path: &Path, text: &str) -> Result<Waivers, WaiverError> {
        let bad = |message: String| WaiverError::Invalid {
            path: path.to_owned(),
            message,
        };
        let doc: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|e| bad(format!("not YAML: {e}")))?
        };
        let items = match doc {
            Value::Null => Vec::new(),
            Value::Array(a) => a,
            Value::Object(mut o) => {
                if let Some(k) = o.keys().find(|k| *k != "waivers") {
                    return Err(bad(format!(
                        "unknown key `{k}`: a waiver file holds `waivers:`, a list"
                    )));
                }
                match o.remove("waivers") {
                    Some(Value::Array(a)) => a,
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => {
                        return Err(bad(format!("`waivers` must be a list, not {other}")));
                    }
                }
            }
            other => {
                return Err(bad(format!(
                    "expected `waivers:` with a list of waivers, found {other}"
                )));
            }
        };
        let mut list = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let Value::Object(obj) = item else {
                return Err(bad(format!(
                    "waivers[{i}] must be a mapping with rule, resource, reason, approver and expires"
                )));
            };
            const KNOWN: [&str; 6] = ["rule", "resource", "reason", "approver", "expires", "input"];
            if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
                return Err(bad(format!(
                    "waivers[{i}]: unknown field `{k}` (a waiver has {})",
                    KNOWN.join(", ")
                )));
            }
            let rule = field(
                path,
                i,
                &obj,
                "rule",
                "name the rule (`package.rule`) or lint code it waives",
            )?;
            let resource = field(
                path,
                i,
                &obj,
                "resource",
                "name the resource it excuses (a glob; `*` for all)",
            )?;
            let reason = field(
                path,
                i,
                &obj,
                "reason",
                "say why the finding is acceptable (a ticket helps)",
            )?;
            let approver = field(path, i, &obj, "approver", "name who approved it")?;
            let expires = field(
                path,
                i,
                &obj,
                "expires",
                "waivers are time-bound: give a date such as 2026-12-31",
            )?;
            let expires_at =
                parse_expiry(&expires).map_err(|e| bad(format!("waivers[{i}].expires: {e}")))?;
            let glob = |what: &str, pattern: &str| {
                Glob::new(pattern)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| bad(format!("waivers[{i}].{what}: not a glob: {e}")))
            };
            let resource_glob = glob("resource", &resource)?;
            let input = match obj.get("input") {
                None | Some(Value::Null) => None,
                Some(_) => Some(field(path, i, &obj, "input", "a glob of input files")?),
            };
            let input_glob = input.as_deref().map(|p| glob("input", p)).transpose()?;
            list.push(Waiver {
                index: i,
                rule,
                resource,
                reason,
                approver,
                expires,
                expires_at,
                input,
                resource_glob,
                input_glob,
            });
        }
        Ok(Waivers {
            source: path.to_owned(),
            list,
        })
    }

    /// The waiver for a finding at `now`: an active one if any matches, else an expired
    /// one (so the report can say it expired), else none.
    #[must_use]
    pub fn find(&self, subject: &Subject<'_>, now: Timestamp) -> Option<Hit<'_>> {
        let mut expired = None;
        for w in self.list.iter().filter(|w| w.matches(subject)) {
            if w.status(now) == Status::Expired {
                expired.get_or_insert(Hit {
                    waiver: w,
                    expired: true,
                });
            } else {
                return Some(Hit {
                    waiver: w,
                    expired: false,
                });
            }
        }
        expired
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const FILE: &str = r"
waivers:
  - rule: terraform.deny_public_s3
    resource: aws_s3_bucket.website*
    reason: static site behind the CDN
    approver: alice@example.com
    expires: 2026-12-31
  - rule: MG103
    resource: 0004_drop_legacy
    reason: table unused since 2025
    approver: bob
    expires: 2026-01-01T12:00:00Z
";

    fn waivers() -> Waivers {
        Waivers::parse(Path::new("w.yaml"), FILE).expect("parses")
    }

    #[test]
    fn dates_are_valid_through_the_day() {
        let w = waivers();
        let s = Subject {
            ids: &["terraform.deny_public_s3"],
            resource: Some("aws_s3_bucket.website_logs"),
            message: "",
            input: None,
        };
        let hit = w.find(&s, at("2026-12-31T23:59:59Z")).expect("matches");
        assert!(!hit.expired);
        let hit = w.find(&s, at("2027-01-01T00:00:00Z")).expect("matches");
        assert!(hit.expired);
        assert!(
            hit.describe(Path::new("w.yaml"))
                .contains("expired 2026-12-31")
        );
        assert_eq!(
            w.list[0].status(at("2026-12-28T00:00:00Z")),
            Status::Expiring
        );
        assert_eq!(w.list[0].status(at("2026-11-01T00:00:00Z")), Status::Active);
    }

    #[test]
    fn rule_and_resource_must_both_match() {
        let w = waivers();
        let now = at("2025-06-01T00:00:00Z");
        let other_rule = Subject {
            ids: &["terraform.deny_open_admin_ingress"],
            resource: Some("aws_s3_bucket.website"),
            message: "",
            input: None,
        };
        assert!(w.find(&other_rule, now).is_none());
        let other_resource = Subject {
            ids: &["terraform.deny_public_s3"],
            resource: Some("aws_s3_bucket.data"),
            message: "",
            input: None,
        };
        assert!(w.find(&other_resource, now).is_none());
        // A string message is matched on the resource's text.
        let text = Subject {
            ids: &["drop-table", "MG103"],
            resource: None,
            message: "0004_drop_legacy drops table legacy",
            input: None,
        };
        assert!(w.find(&text, now).is_some());
        let longer = Subject {
            message: "0004_drop_legacy_v2 drops table legacy",
            ..text
        };
        assert!(w.find(&longer, now).is_none());
    }

    #[test]
    fn names_are_found_whole() {
        assert!(mentions("aws_s3_bucket.site: public", "aws_s3_bucket.site"));
        assert!(mentions("Deployment/web: uses latest", "Deployment/web"));
        assert!(!mentions(
            "aws_s3_bucket.site2: public",
            "aws_s3_bucket.site"
        ));
        assert!(!mentions("module.aws_s3_bucket.site", "aws_s3_bucket.site"));
        assert!(mentions(
            "x module.a.aws_s3_bucket.site[0] y",
            "module.a.aws_s3_bucket.site[0]"
        ));
    }

    #[test]
    fn errors_name_the_waiver_and_field() {
        let e = Waivers::parse(
            Path::new("w.yaml"),
            "waivers:\n  - rule: a.b\n    resource: x\n    reason: r\n    expires: 2026-01-01\n",
        )
        .expect_err("no approver");
        assert_eq!(
            e.to_string(),
            "w.yaml: waivers[0].approver is missing: name who approved it"
        );
        let e = Waivers::parse(
            Path::new("w.yaml"),
            "- {rule: a, resource: x, reason: r, approver: b, expires: soon}\n",
        )
        .expect_err("bad date");
        assert!(
            e.to_string()
                .contains("waivers[0].expires: `soon` is not a date"),
            "{e}"
        );
        let e = Waivers::parse(
            Path::new("w.yaml"),
            "- {rule: a, resource: x, reason: r, approver: b, expires: 2026-01-01, owner: c}\n",
        )
        .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `owner`"), "{e}");
    }

    #[test]
    fn a_missing_optional_file_is_no_waivers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = Waivers::load(&dir.path().join("none.yaml"), false).expect("ok");
        assert!(w.is_empty());
        assert!(Waivers::load(&dir.path().join("none.yaml"), true).is_err());
    }
}
