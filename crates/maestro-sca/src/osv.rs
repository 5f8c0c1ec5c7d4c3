//! OSV advisories (<https://ossf.github.io/osv-schema/>) from a local directory: the format
//! of the OSV export, of RustSec's OSV branch and of GitHub's advisory database.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use maestro_sbom::Ecosystem;
use serde::Deserialize;

use crate::severity::{Severity, SeverityNote};
use crate::version::Version;

/// Advisories larger than this are skipped (the largest real ones are ~200 KiB).
pub const MAX_ADVISORY_BYTES: u64 = 4 << 20;

#[derive(Deserialize)]
struct RawAdvisory {
    id: String,
    modified: String,
    withdrawn: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    summary: Option<String>,
    #[serde(default)]
    severity: Vec<RawSeverity>,
    #[serde(default)]
    affected: Vec<RawAffected>,
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
pub(crate) struct RawSeverity {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) score: String,
}

#[derive(Deserialize)]
struct RawAffected {
    package: Option<RawPackage>,
    #[serde(default)]
    ranges: Vec<RawRange>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    severity: Vec<RawSeverity>,
    database_specific: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawPackage {
    ecosystem: String,
    name: String,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    introduced: Option<String>,
    fixed: Option<String>,
    last_affected: Option<String>,
    limit: Option<String>,
}

/// How a range's versions are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `SEMVER`: SemVer 2 whatever the ecosystem.
    Semver,
    /// `ECOSYSTEM`: the package ecosystem's own ordering.
    Ecosystem(Ecosystem),
}

impl Scheme {
    pub fn parse(self, s: &str) -> Option<Version> {
        match self {
            Scheme::Semver => Version::parse(Ecosystem::Go, s),
            Scheme::Ecosystem(e) => Version::parse(e, s),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    /// `None` is `"0"`: every version.
    Introduced(Option<Version>),
    Fixed(Version),
    LastAffected(Version),
    Limit(Version),
}

impl Event {
    fn version(&self) -> Option<&Version> {
        match self {
            Event::Introduced(v) => v.as_ref(),
            Event::Fixed(v) | Event::LastAffected(v) | Event::Limit(v) => Some(v),
        }
    }
}

impl Range {
    /// OSV's evaluation: walking the sorted events, `introduced ≤ v` makes `v` affected,
    /// `fixed ≤ v` or `last_affected < v` unaffected; `limit ≤ v` is outside the range.
    /// Returns the first fix above `v` when `v` is affected.
    pub fn affects(&self, v: &Version) -> Option<Option<String>> {
        use std::cmp::Ordering::{Greater, Less};
        let mut affected = false;
        for e in &self.events {
            let at = e.version().and_then(|x| v.compare(x));
            match e {
                Event::Introduced(None) => affected = true,
                Event::Introduced(Some(_)) if at != Some(Less) && at.is_some() => affected = true,
                Event::Fixed(_) if at != Some(Less) && at.is_some() => affected = false,
                Event::LastAffected(_) if at == Some(Greater) => affected = false,
                Event::Limit(_) if at != Some(Less) && at.is_some() => return None,
                _ => {}
            }
        }
        if !affected {
            return None;
        }
        let fix = self
            .fixed
            .iter()
            .filter_map(|f| self.scheme.parse(f).map(|p| (f, p)))
            .filter(|(_, p)| p.compare(v) == Some(Greater))
            .min_by(|a, b| a.1.compare(&b.1).unwrap_or(std::cmp::Ordering::Equal))
            .map(|(f, _)| f.clone());
        Some(fix)
    }
}

#[derive(Debug, Clone)]
pub struct Range {
    pub scheme: Scheme,
    pub events: Vec<Event>,
    /// The `fixed` versions as written, in event order, for reports.
    pub fixed: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Affected {
    pub ecosystem: Ecosystem,
    /// Normalised as the inventory normalises names (PEP 503 for PyPI).
    pub name: String,
    pub ranges: Vec<Range>,
    /// Exact affected versions as the advisory lists them.
    pub versions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: String,
    pub modified: jiff::Timestamp,
    pub severity: Severity,
    /// RustSec's `informational` kind (`unmaintained`, `unsound`, `notice`): not a
    /// vulnerability, reported but never failing a severity policy.
    pub informational: Option<String>,
    pub affected: Vec<Affected>,
    pub file: PathBuf,
}

/// An advisory file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub file: PathBuf,
    pub reason: String,
}

/// The advisories of one directory, indexed by package.
#[derive(Debug, Default)]
pub struct Database {
    pub dir: PathBuf,
    pub advisories: Vec<Advisory>,
    pub skipped: Vec<Skipped>,
    /// Severity entries that were not understood (the advisory was kept).
    pub notes: Vec<SeverityNote>,
    pub withdrawn: usize,
    /// The newest `modified` of any advisory: how fresh the copy is.
    pub newest: Option<jiff::Timestamp>,
    index: HashMap<(Ecosystem, String), Vec<u32>>,
}

/// Why a database could not be opened at all.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no OSV advisories (*.json) in this directory")]
    Empty(PathBuf),
}

fn ecosystem(name: &str) -> Option<Ecosystem> {
    match name {
        "crates.io" => Some(Ecosystem::Cargo),
        "npm" => Some(Ecosystem::Npm),
        "PyPI" => Some(Ecosystem::PyPI),
        "Go" => Some(Ecosystem::Go),
        _ => None,
    }
}

/// The key a package is indexed and looked up by.
pub fn package_key(eco: Ecosystem, name: &str) -> (Ecosystem, String) {
    match eco {
        Ecosystem::PyPI => (eco, maestro_sbom::purl::pep503(name)),
        _ => (eco, name.to_owned()),
    }
}

fn timestamp(s: &str) -> Option<jiff::Timestamp> {
    s.parse::<jiff::Timestamp>().ok()
}

/// One file → one advisory, or the reason it cannot be used.
fn compile(
    file: &Path,
    bytes: &[u8],
    notes: &mut Vec<SeverityNote>,
) -> Result<Option<Advisory>, String> {
    let raw: RawAdvisory = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if raw.withdrawn.is_some() {
        return Ok(None);
    }
    let modified = timestamp(&raw.modified)
        .ok_or_else(|| format!("modified: \"{}\" is not an RFC 3339 time", raw.modified))?;
    let mut severities: Vec<&RawSeverity> = raw.severity.iter().collect();
    let mut affected = Vec::new();
    let mut informational = informational_of(raw.database_specific.as_ref());
    let mut db_specific = vec![raw.database_specific.as_ref()];
    for (ai, a) in raw.affected.iter().enumerate() {
        severities.extend(a.severity.iter());
        db_specific.push(a.database_specific.as_ref());
        if informational.is_none() {
            informational = informational_of(a.database_specific.as_ref());
        }
        let Some(pkg) = &a.package else { continue };
        let Some(eco) = ecosystem(&pkg.ecosystem) else {
            continue; // Debian, Maven…: not something Maestro inventories.
        };
        let mut ranges = Vec::new();
        for (ri, r) in a.ranges.iter().enumerate() {
            let scheme = match r.kind.as_str() {
                "SEMVER" => Scheme::Semver,
                "ECOSYSTEM" => Scheme::Ecosystem(eco),
                _ => continue, // GIT ranges name commits, not releases.
            };
            let mut events = Vec::new();
            let mut fixed = Vec::new();
            for (ei, e) in r.events.iter().enumerate() {
                let at = || format!("affected[{ai}].ranges[{ri}].events[{ei}]");
                let parse = |v: &str| {
                    scheme.parse(v).ok_or_else(|| {
                        format!(
                            "{}: \"{v}\" is not a valid {} version",
                            at(),
                            scheme_name(scheme)
                        )
                    })
                };
                let ev = match (&e.introduced, &e.fixed, &e.last_affected, &e.limit) {
                    (Some(v), None, None, None) if v == "0" => Event::Introduced(None),
                    (Some(v), None, None, None) => Event::Introduced(Some(parse(v)?)),
                    (None, Some(v), None, None) => {
                        fixed.push(v.clone());
                        Event::Fixed(parse(v)?)
                    }
                    (None, None, Some(v), None) => Event::LastAffected(parse(v)?),
                    (None, None, None, Some(v)) if v == "*" => continue,
                    (None, None, None, Some(v)) => Event::Limit(parse(v)?),
                    _ => {
                        return Err(format!(
                            "{}: an event must have exactly one of introduced, fixed, last_affected, limit",
                            at()
                        ));
                    }
                };
                events.push(ev);
            }
            // Evaluation walks events in version order; `introduced: "0"` comes first and
            // ties keep the advisory's order.
            events.sort_by(|a, b| match (a.version(), b.version()) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Less,
                (Some(_), None) => std::cmp::Ordering::Greater,
                (Some(x), Some(y)) => x.compare(y).unwrap_or(std::cmp::Ordering::Equal),
            });
            ranges.push(Range {
                scheme,
                events,
                fixed,
            });
        }
        let (ecosystem, name) = package_key(eco, &pkg.name);
        affected.push(Affected {
            ecosystem,
            name,
            ranges,
            versions: a.versions.clone(),
        });
    }
    let severity = crate::severity::assess(&raw.id, file, &severities, &db_specific, notes);
    Ok(Some(Advisory {
        id: raw.id,
        aliases: raw.aliases,
        summary: raw.summary.unwrap_or_default(),
        modified,
        severity,
        informational,
        affected,
        file: file.to_owned(),
    }))
}

fn scheme_name(s: Scheme) -> &'static str {
    match s {
        Scheme::Semver => "SemVer",
        Scheme::Ecosystem(Ecosystem::PyPI) => "PEP 440",
        Scheme::Ecosystem(e) => e.osv_name(),
    }
}

fn informational_of(v: Option<&serde_json::Value>) -> Option<String> {
    v?.get("informational")?.as_str().map(str::to_owned)
}

/// Every `*.json` below `dir` (hidden directories skipped), sorted for determinism.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, DbError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| DbError::Io {
            path: d.clone(),
            source,
        })?;
        for e in rd.filter_map(Result::ok) {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && p.extension().is_some_and(|x| x == "json") => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

struct Part {
    advisories: Vec<Advisory>,
    skipped: Vec<Skipped>,
    notes: Vec<SeverityNote>,
    withdrawn: usize,
}

fn load_part(files: &[PathBuf]) -> Part {
    let mut part = Part {
        advisories: Vec::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
        withdrawn: 0,
    };
    for f in files {
        let skip = |reason: String| Skipped {
            file: f.clone(),
            reason,
        };
        let bytes = match std::fs::metadata(f) {
            Ok(m) if m.len() > MAX_ADVISORY_BYTES => {
                part.skipped.push(skip(format!(
                    "{} bytes is over the {MAX_ADVISORY_BYTES}-byte limit",
                    m.len()
                )));
                continue;
            }
            Ok(_) => match std::fs::read(f) {
                Ok(b) => b,
                Err(e) => {
                    part.skipped.push(skip(e.to_string()));
                    continue;
                }
            },
            Err(e) => {
                part.skipped.push(skip(e.to_string()));
                continue;
            }
        };
        match compile(f, &bytes, &mut part.notes) {
            Ok(Some(a)) => part.advisories.push(a),
            Ok(None) => part.withdrawn += 1,
            Err(reason) => part.skipped.push(skip(reason)),
        }
    }
    part
}

impl Database {
    /// Reads every advisory below `dir`, in parallel. A file that is not a usable OSV
    /// advisory is listed in `skipped` with the reason; it never fails the whole load.
    pub fn open(dir: &Path) -> Result<Database, DbError> {
        let files = json_files(dir)?;
        if files.is_empty() {
            return Err(DbError::Empty(dir.to_owned()));
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(8);
        let chunk = files.len().div_ceil(threads).max(64);
        let parts: Vec<Part> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|c| s.spawn(move || load_part(c)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut db = Database {
            dir: dir.to_owned(),
            ..Database::default()
        };
        for p in parts {
            db.advisories.extend(p.advisories);
            db.skipped.extend(p.skipped);
            db.notes.extend(p.notes);
            db.withdrawn += p.withdrawn;
        }
        db.newest = db.advisories.iter().map(|a| a.modified).max();
        for (i, a) in db.advisories.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            for af in &a.affected {
                let bucket = db.index.entry((af.ecosystem, af.name.clone())).or_default();
                if bucket.last() != Some(&i) {
                    bucket.push(i);
                }
            }
        }
        Ok(db)
    }

    /// Advisories that name the package (any version).
    pub fn for_package(&self, eco: Ecosystem, name: &str) -> impl Iterator<Item = &Advisory> {
        self.index
            .get(&package_key(eco, name))
            .into_iter()
            .flatten()
            .map(|&i| &self.advisories[i as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisory(eco: &str, kind: &str, events: &str) -> Advisory {
        let json = format!(
            r#"{{"id":"T-1","modified":"2024-01-01T00:00:00Z","affected":[{{"package":{{"ecosystem":"{eco}","name":"p"}},"ranges":[{{"type":"{kind}","events":{events}}}]}}]}}"#
        );
        let mut notes = Vec::new();
        compile(Path::new("t.json"), json.as_bytes(), &mut notes)
            .expect("compiles")
            .expect("not withdrawn")
    }

    fn affects(a: &Advisory, eco: Ecosystem, v: &str) -> Option<Option<String>> {
        let r = &a.affected[0].ranges[0];
        r.affects(
            &r.scheme
                .parse(v)
                .unwrap_or_else(|| Version::parse(eco, v).expect("version parses")),
        )
    }

    #[test]
    fn introduced_and_fixed_edges() {
        let a = advisory(
            "crates.io",
            "SEMVER",
            r#"[{"fixed":"1.2.0"},{"introduced":"1.0.0"}]"#,
        );
        let e = Ecosystem::Cargo;
        assert_eq!(affects(&a, e, "0.9.9"), None);
        assert_eq!(affects(&a, e, "1.0.0"), Some(Some("1.2.0".into())));
        assert_eq!(affects(&a, e, "1.1.9"), Some(Some("1.2.0".into())));
        assert_eq!(
            affects(&a, e, "1.2.0-rc.1"),
            Some(Some("1.2.0".into())),
            "a pre-release of the fix is before it"
        );
        assert_eq!(affects(&a, e, "1.2.0"), None);
        assert_eq!(affects(&a, e, "1.2.1"), None);
    }

    #[test]
    fn last_affected_and_limit() {
        let a = advisory(
            "npm",
            "SEMVER",
            r#"[{"introduced":"0"},{"last_affected":"1.5.0"}]"#,
        );
        assert!(affects(&a, Ecosystem::Npm, "1.5.0").is_some());
        assert!(affects(&a, Ecosystem::Npm, "1.5.1").is_none());
        let a = advisory("npm", "SEMVER", r#"[{"introduced":"0"},{"limit":"2.0.0"}]"#);
        assert!(affects(&a, Ecosystem::Npm, "1.9.9").is_some());
        assert!(affects(&a, Ecosystem::Npm, "2.0.0").is_none());
    }

    #[test]
    fn reintroduced_after_a_fix() {
        let a = advisory(
            "crates.io",
            "SEMVER",
            r#"[{"introduced":"0"},{"fixed":"1.0.0"},{"introduced":"2.0.0"},{"fixed":"2.5.0"}]"#,
        );
        let e = Ecosystem::Cargo;
        assert!(affects(&a, e, "0.1.0").is_some());
        assert!(affects(&a, e, "1.5.0").is_none());
        assert_eq!(affects(&a, e, "2.4.0"), Some(Some("2.5.0".into())));
        assert!(affects(&a, e, "3.0.0").is_none());
    }

    #[test]
    fn pep440_ecosystem_ranges() {
        let a = advisory(
            "PyPI",
            "ECOSYSTEM",
            r#"[{"introduced":"0"},{"fixed":"2.32.0"}]"#,
        );
        let e = Ecosystem::PyPI;
        assert!(affects(&a, e, "2.31").is_some());
        assert!(affects(&a, e, "2.32.0rc1").is_some());
        assert!(
            affects(&a, e, "2.32").is_none(),
            "2.32 == 2.32.0 in PEP 440"
        );
        assert!(affects(&a, e, "2.32.0.post1").is_none());
        assert!(
            affects(&a, e, "1!0.1").is_none(),
            "epoch 1 sorts after every epoch-0 version"
        );
    }

    #[test]
    fn malformed_events_are_reasons_not_panics() {
        let mut notes = Vec::new();
        let bad = br#"{"id":"T","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"p"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1.0.0"}]}]}]}"#;
        let err = compile(Path::new("t.json"), bad, &mut notes).expect_err("two keys in one event");
        assert!(err.contains("exactly one of"), "{err}");
        let bad = br#"{"id":"T","modified":"yesterday"}"#;
        assert!(
            compile(Path::new("t.json"), bad, &mut notes)
                .expect_err("time")
                .contains("modified")
        );
    }
}
