//! Policies: which findings fail a gate, and which licenses are acceptable.
//!
//! The policy file (`maestro-policy.toml` by default) has two tables:
//!
//! ```toml
//! [advisories]
//! fail-on = "high"            # none | low | medium | high | critical
//! unknown-severity = "fail"   # fail | warn: an advisory whose severity cannot be read
//! max-db-age = "7d"           # refuse an advisory copy older than this
//! skip-dev = false            # ignore findings in development-only dependencies
//!
//! [[advisories.ignore]]
//! id = "GHSA-xxxx-xxxx-xxxx"  # or any alias (CVE-…)
//! reason = "only reachable with untrusted YAML, which we never parse"
//! until = 2027-01-31
//!
//! [licenses]
//! allow = ["MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-3-Clause"]
//! deny = ["GPL-3.0-or-later"]
//! unknown = "fail"            # fail | warn: a component with no declared license
//!
//! [[licenses.exception]]
//! package = "ring"            # a name or a purl
//! allow = ["OpenSSL"]
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::severity::Level;

pub const DEFAULT_FILE: &str = "maestro-policy.toml";
const MAX_POLICY_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub advisories: AdvisoryPolicy,
    #[serde(default)]
    pub licenses: LicensePolicy,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnUnknown {
    #[default]
    Fail,
    Warn,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AdvisoryPolicy {
    /// `None` (written `"none"`) reports without failing.
    #[serde(default = "default_fail_on", deserialize_with = "fail_on")]
    pub fail_on: Option<Level>,
    #[serde(default)]
    pub unknown_severity: OnUnknown,
    /// `7d`, `48h`…
    pub max_db_age: Option<String>,
    #[serde(default)]
    pub skip_dev: bool,
    #[serde(default)]
    pub ignore: Vec<Ignore>,
}

impl Default for AdvisoryPolicy {
    fn default() -> Self {
        AdvisoryPolicy {
            fail_on: default_fail_on(),
            unknown_severity: OnUnknown::Fail,
            max_db_age: None,
            skip_dev: false,
            ignore: Vec::new(),
        }
    }
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "serde default for an Option field"
)]
fn default_fail_on() -> Option<Level> {
    Some(Level::Low)
}

fn fail_on<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Level>, D::Error> {
    let s = String::deserialize(d)?;
    if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    Level::parse(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "fail-on = \"{s}\": use none, low, medium, high or critical"
        ))
    })
}

/// An accepted risk: which advisory, why, and until when.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ignore {
    pub id: String,
    pub reason: String,
    pub until: toml::value::Datetime,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicensePolicy {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub unknown: OnUnknown,
    #[serde(default)]
    pub exception: Vec<LicenseException>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseException {
    pub package: String,
    pub allow: Vec<String>,
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: String,
        line: Option<usize>,
        message: String,
    },
}

impl PolicyFile {
    /// Reads and checks a policy file: every ignore entry needs a reason and a date, every
    /// license entry must be a valid SPDX license (with an optional `WITH` exception).
    pub fn read(path: &Path) -> Result<PolicyFile, PolicyError> {
        use std::io::Read as _;
        let shown = path.display().to_string();
        let io = |source| PolicyError::Io {
            path: shown.clone(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(MAX_POLICY_BYTES)
            .read_to_string(&mut text)
            .map_err(io)?;
        Self::parse(&shown, &text)
    }

    pub fn parse(shown: &str, text: &str) -> Result<PolicyFile, PolicyError> {
        let invalid = |line: Option<usize>, message: String| PolicyError::Invalid {
            path: shown.to_owned(),
            line,
            message,
        };
        let line_of = |needle: &str| {
            text.find(needle)
                .map(|at| text[..at].matches('\n').count() + 1)
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            invalid(line, e.message().trim().to_owned())
        })?;
        for ig in &file.advisories.ignore {
            if ig.reason.trim().is_empty() {
                return Err(invalid(
                    line_of(&ig.id),
                    format!(
                        "advisories.ignore {}: reason is empty; say why the risk is accepted",
                        ig.id
                    ),
                ));
            }
            if ig.until.date.is_none() || ig.until.time.is_some() {
                return Err(invalid(
                    line_of(&ig.id),
                    format!(
                        "advisories.ignore {}: until must be a date such as 2027-01-31",
                        ig.id
                    ),
                ));
            }
        }
        if let Some(age) = &file.advisories.max_db_age {
            parse_age(age).map_err(|m| invalid(line_of("max-db-age"), m))?;
        }
        let lists = file
            .licenses
            .allow
            .iter()
            .chain(&file.licenses.deny)
            .chain(file.licenses.exception.iter().flat_map(|e| &e.allow));
        for l in lists {
            spdx::Licensee::parse(l).map_err(|e| {
                invalid(
                    line_of(&format!("\"{l}\"")),
                    format!("\"{l}\" is not an SPDX license identifier (with an optional WITH exception): {}", e.reason),
                )
            })?;
        }
        Ok(file)
    }
}

/// `7d`, `36h`, `90m` → a duration.
pub fn parse_age(s: &str) -> Result<jiff::SignedDuration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("max-db-age = \"{s}\": write a number and a unit, e.g. 7d or 36h"))?;
    let secs = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        _ => return Err(format!("max-db-age = \"{s}\": the unit must be d, h or m")),
    };
    Ok(jiff::SignedDuration::from_secs(secs))
}

/// The outcome of applying the advisory policy to a scan.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Findings that fail the policy (indexes into `Scan::findings`).
    pub failing: Vec<usize>,
    /// Findings accepted by an ignore entry, with the entry.
    pub allowed: Vec<(usize, Ignore)>,
    /// Findings below the threshold, informational or in skipped dev dependencies.
    pub reported: Vec<usize>,
    /// Problems with the database or the policy itself that fail the check.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failing.is_empty() && self.errors.is_empty()
    }
}

fn today(now: jiff::Timestamp) -> jiff::civil::Date {
    now.to_zoned(jiff::tz::TimeZone::UTC).date()
}

fn toml_date(d: &toml::value::Datetime) -> Option<jiff::civil::Date> {
    let d = d.date?;
    jiff::civil::Date::new(
        i16::try_from(d.year).ok()?,
        i8::try_from(d.month).ok()?,
        i8::try_from(d.day).ok()?,
    )
    .ok()
}

/// Applies `policy` to `scan` at time `now`.
pub fn evaluate(
    scan: &crate::Scan,
    db: &crate::osv::Database,
    policy: &AdvisoryPolicy,
    now: jiff::Timestamp,
) -> Verdict {
    let mut v = Verdict::default();
    match (db.newest, &policy.max_db_age) {
        (None, _) => v.errors.push(format!(
            "{}: no usable advisory (all {} skipped); the database cannot vouch for anything",
            db.dir.display(),
            db.skipped.len()
        )),
        (Some(newest), Some(max)) => {
            if let Ok(max) = parse_age(max)
                && now.duration_since(newest) > max
            {
                let days = now.duration_since(newest).as_secs() / 86_400;
                v.errors.push(format!(
                    "the advisory database is {days} days old (newest change {}), over max-db-age = \"{}\": sync {}",
                    today(newest),
                    max_text(policy),
                    db.dir.display()
                ));
            }
        }
        (Some(_), None) => {}
    }
    let day = today(now);
    let mut used = vec![false; policy.ignore.len()];
    for (i, f) in scan.findings.iter().enumerate() {
        let entry = policy
            .ignore
            .iter()
            .enumerate()
            .find(|(_, ig)| ig.id == f.id || f.aliases.contains(&ig.id));
        if let Some((k, ig)) = entry {
            used[k] = true;
            match toml_date(&ig.until) {
                Some(until) if until >= day => {
                    v.allowed.push((i, ig.clone()));
                    continue;
                }
                _ => v.warnings.push(format!(
                    "ignore entry for {} expired on {}; it no longer applies",
                    ig.id, ig.until
                )),
            }
        }
        if f.informational.is_some() || (policy.skip_dev && f.dev) {
            v.reported.push(i);
            continue;
        }
        let Some(threshold) = policy.fail_on else {
            v.reported.push(i);
            continue;
        };
        match f.severity.level {
            Some(level) if level >= threshold => v.failing.push(i),
            Some(_) => v.reported.push(i),
            None if policy.unknown_severity == OnUnknown::Fail => v.failing.push(i),
            None => {
                v.warnings
                    .push(format!("{} has no severity Maestro can read", f.id));
                v.reported.push(i);
            }
        }
    }
    for (k, ig) in policy.ignore.iter().enumerate() {
        if !used[k] {
            v.warnings.push(format!(
                "ignore entry for {} matched nothing; remove it",
                ig.id
            ));
        }
    }
    v
}

fn max_text(p: &AdvisoryPolicy) -> &str {
    p.max_db_age.as_deref().unwrap_or("")
}

/// One component's license outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseIssue {
    pub purl: String,
    /// The declared expression, if any.
    pub license: Option<String>,
    pub message: String,
    /// `false` for warnings (`unknown = "warn"`).
    pub fails: bool,
}

/// The license check over an inventory.
#[derive(Debug, Default)]
pub struct LicenseReport {
    pub checked: usize,
    /// The project's own packages (workspace members), not checked.
    pub first_party: usize,
    pub issues: Vec<LicenseIssue>,
}

impl LicenseReport {
    pub fn passed(&self) -> bool {
        !self.issues.iter().any(|i| i.fails)
    }
}

fn licensees(list: &[String]) -> Vec<spdx::Licensee> {
    list.iter()
        .filter_map(|l| spdx::Licensee::parse(l).ok())
        .collect()
}

/// Whether a deny entry hits a requirement: the same license, and, if the entry names an
/// exception, the same exception (`GPL-2.0-only` denies it with or without one).
fn denied(deny: &spdx::Licensee, req: &spdx::LicenseReq) -> bool {
    let d = deny.clone().into_req();
    let same_license = match (&d.license, &req.license) {
        (spdx::LicenseItem::Spdx { id: a, .. }, spdx::LicenseItem::Spdx { id: b, .. }) => a == b,
        (a, b) => a.to_string() == b.to_string(),
    };
    same_license && (d.addition.is_none() || d.addition == req.addition)
}

/// Evaluates each component's declared license against the policy with SPDX semantics:
/// `A OR B` passes if either side passes, `A AND B` only if both do, and
/// `A WITH E` needs an allow entry naming that exception.
pub fn check_licenses(inv: &maestro_sbom::Inventory, policy: &LicensePolicy) -> LicenseReport {
    let allow = licensees(&policy.allow);
    let deny = licensees(&policy.deny);
    let mut r = LicenseReport::default();
    for c in &inv.components {
        if c.properties.contains_key("maestro:cargo:source")
            || c.properties.contains_key("maestro:npm:workspace")
        {
            r.first_party += 1;
            continue;
        }
        r.checked += 1;
        let issue = |message: String, fails: bool| LicenseIssue {
            purl: c.purl.clone(),
            license: c.license.clone(),
            message,
            fails,
        };
        let Some(declared) = &c.license else {
            let fails = policy.unknown == OnUnknown::Fail && !(allow.is_empty() && deny.is_empty());
            r.issues.push(issue("no declared license".into(), fails));
            continue;
        };
        let Some(canonical) = maestro_sbom::license::spdx_expression(declared) else {
            r.issues.push(issue(
                format!("\"{declared}\" is not an SPDX expression; add an exception for the package or fix its metadata"),
                policy.unknown == OnUnknown::Fail,
            ));
            continue;
        };
        let Ok(expr) = spdx::Expression::parse(&canonical) else {
            continue;
        };
        let extra: Vec<spdx::Licensee> = policy
            .exception
            .iter()
            .filter(|e| {
                e.package == c.name
                    || e.package == c.purl
                    || c.purl.starts_with(&format!("{}@", e.package))
            })
            .flat_map(|e| licensees(&e.allow))
            .collect();
        let ok = |req: &spdx::LicenseReq| {
            !deny.iter().any(|d| denied(d, req))
                && (allow.is_empty() || allow.iter().chain(&extra).any(|a| a.satisfies(req)))
        };
        if let Err(failed) = expr.evaluate_with_failures(ok) {
            let parts: Vec<String> = failed
                .iter()
                .map(|f| {
                    let why = if deny.iter().any(|d| denied(d, &f.req)) {
                        "is denied"
                    } else {
                        "is not allowed"
                    };
                    format!("{} {why}", f.req)
                })
                .collect();
            r.issues
                .push(issue(format!("{canonical}: {}", parts.join(", ")), true));
        }
    }
    r
}
