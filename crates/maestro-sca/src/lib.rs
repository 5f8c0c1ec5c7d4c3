//! Software composition analysis over an SBOM inventory.
//!
//! - [`osv`]: OSV advisories from a local directory, indexed by package; a file that is
//!   not a usable advisory is reported and skipped.
//! - [`version`]: SemVer and PEP 440 ordering; [`osv::Range::affects`] is OSV's range
//!   evaluation.
//! - [`severity`]: CVSS v2/v3/v4 base scores, else the database's rating.
//! - [`policy`]: fail-on severity, allow-list entries with a reason and an expiry, a
//!   maximum database age; the license policy over SPDX expressions.

pub mod osv;
pub mod policy;
pub mod severity;
pub mod version;

use maestro_sbom::{Inventory, Scope};

use crate::osv::{Advisory, Database, Scheme};
use crate::severity::Severity;
use crate::version::Version;

/// A component affected by an advisory.
#[derive(Debug, Clone)]
pub struct Finding {
    pub purl: String,
    pub name: String,
    pub version: String,
    pub dev: bool,
    pub id: String,
    /// Other ids of the same vulnerability (CVE, GHSA…), including merged duplicates.
    pub aliases: Vec<String>,
    pub summary: String,
    pub severity: Severity,
    pub informational: Option<String>,
    /// The lowest fixed version above the installed one, if the advisory names one.
    pub fixed: Option<String>,
}

/// A component that could not be checked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    pub purl: String,
    pub reason: String,
}

/// What `scan` found.
#[derive(Debug, Default)]
pub struct Scan {
    pub findings: Vec<Finding>,
    pub unchecked: Vec<Unchecked>,
    pub components: usize,
}

/// Does `adv` affect this version? `Some(fix)` if so.
fn affected_by(
    adv: &Advisory,
    c: &maestro_sbom::Component,
    raw: &str,
) -> Result<Option<Option<String>>, String> {
    let key = osv::package_key(c.ecosystem, &c.name);
    for a in adv
        .affected
        .iter()
        .filter(|a| (a.ecosystem, &a.name) == (key.0, &key.1))
    {
        let eco = Version::parse(c.ecosystem, raw);
        if a.versions.iter().any(|listed| {
            listed == raw
                || eco.as_ref().is_some_and(|v| {
                    Version::parse(c.ecosystem, listed).and_then(|l| l.compare(v))
                        == Some(std::cmp::Ordering::Equal)
                })
        }) {
            let fix = a.ranges.iter().find_map(|r| {
                let v = r.scheme.parse(raw)?;
                r.affects(&v).flatten()
            });
            return Ok(Some(fix));
        }
        for r in &a.ranges {
            let v = r.scheme.parse(raw).ok_or_else(|| {
                format!(
                    "version {raw} is not {} (needed by {})",
                    match r.scheme {
                        Scheme::Semver => "SemVer",
                        Scheme::Ecosystem(maestro_sbom::Ecosystem::PyPI) => "PEP 440",
                        Scheme::Ecosystem(_) => "valid for its ecosystem",
                    },
                    adv.id
                )
            })?;
            if let Some(fix) = r.affects(&v) {
                return Ok(Some(fix));
            }
        }
    }
    Ok(None)
}

/// Matches every component with a version against the advisories for its package.
/// Duplicates of one vulnerability (an advisory listing another's id as an alias) are
/// reported once, under the most severe of them.
pub fn scan(inv: &Inventory, db: &Database) -> Scan {
    let mut out = Scan {
        components: inv.components.len(),
        ..Scan::default()
    };
    for c in &inv.components {
        let Some(raw) = c.version.as_deref() else {
            out.unchecked.push(Unchecked {
                purl: c.purl.clone(),
                reason: "no pinned version: pin it (==) so it can be matched".into(),
            });
            continue;
        };
        let mut hits: Vec<Finding> = Vec::new();
        for adv in db.for_package(c.ecosystem, &c.name) {
            match affected_by(adv, c, raw) {
                Ok(Some(fixed)) => hits.push(Finding {
                    purl: c.purl.clone(),
                    name: c.name.clone(),
                    version: raw.to_owned(),
                    dev: c.scope == Scope::Dev,
                    id: adv.id.clone(),
                    aliases: adv.aliases.clone(),
                    summary: adv.summary.clone(),
                    severity: adv.severity.clone(),
                    informational: adv.informational.clone(),
                    fixed,
                }),
                Ok(None) => {}
                Err(reason) => out.unchecked.push(Unchecked {
                    purl: c.purl.clone(),
                    reason,
                }),
            }
        }
        // Most severe first, then by id, so the kept representative is stable.
        hits.sort_by(|a, b| {
            b.severity
                .level
                .cmp(&a.severity.level)
                .then(
                    b.severity
                        .score
                        .partial_cmp(&a.severity.score)
                        .unwrap_or(std::cmp::Ordering::Equal),
                )
                .then(a.id.cmp(&b.id))
        });
        let mut kept: Vec<Finding> = Vec::new();
        for h in hits {
            let dup = kept.iter_mut().find(|k| {
                k.aliases.contains(&h.id)
                    || h.aliases.contains(&k.id)
                    || k.aliases.iter().any(|a| h.aliases.contains(a))
            });
            match dup {
                Some(k) => {
                    for a in std::iter::once(h.id).chain(h.aliases) {
                        if a != k.id && !k.aliases.contains(&a) {
                            k.aliases.push(a);
                        }
                    }
                    if k.fixed.is_none() {
                        k.fixed = h.fixed;
                    }
                }
                None => kept.push(h),
            }
        }
        out.findings.extend(kept);
    }
    out
}
