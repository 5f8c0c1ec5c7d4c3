//! The next version from the changes since the last stable release (SemVer 2): a breaking
//! change bumps major (minor before 1.0.0, unless configured), a `feat` minor, a
//! `fix`/`perf` (the configured patch types) patch; nothing else makes a release. A
//! pre-release (`--pre rc`) is the next version with `-rc.N`, N one more than the highest
//! existing `rc` of that version.

use semver::{Prerelease, Version};

use crate::git::Tag;
use crate::{Classified, ReleaseConfig, ReleaseError};

/// How much a set of changes bumps a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bump {
    Patch,
    Minor,
    Major,
}

/// The largest bump the changes call for; `None` when none makes a release.
#[must_use]
pub fn bump(c: &Classified, config: &ReleaseConfig) -> Option<Bump> {
    c.changes
        .iter()
        .filter_map(|ch| {
            if ch.breaking {
                Some(Bump::Major)
            } else if ch.kind == "feat" {
                Some(Bump::Minor)
            } else if config.patch_types.contains(&ch.kind) {
                Some(Bump::Patch)
            } else {
                None
            }
        })
        .max()
}

/// `base` bumped.
#[must_use]
pub fn apply(base: &Version, bump: Bump, config: &ReleaseConfig) -> Version {
    let bump = match bump {
        Bump::Major if base.major == 0 && !config.breaking_bumps_major_before_1 => Bump::Minor,
        b => b,
    };
    match bump {
        Bump::Major => Version::new(base.major + 1, 0, 0),
        Bump::Minor => Version::new(base.major, base.minor + 1, 0),
        Bump::Patch => Version::new(base.major, base.minor, base.patch + 1),
    }
}

/// The next version after `last` (the last stable release; `None` before the first), or
/// `None` when nothing releasable happened since. `tags` are every release tag, for the
/// pre-release number.
///
/// # Errors
/// [`ReleaseError::Config`] for a bad `initial_version` or pre-release id.
pub fn next(
    last: Option<&Version>,
    tags: &[Tag],
    changes: &Classified,
    config: &ReleaseConfig,
    pre: Option<&str>,
) -> Result<Option<Version>, ReleaseError> {
    let Some(b) = bump(changes, config) else {
        return Ok(None);
    };
    let mut v = match last {
        Some(last) => apply(last, b, config),
        None => Version::parse(&config.initial_version).map_err(|e| {
            ReleaseError::Config(format!(
                "release.initial_version: `{}` is not a version: {e}",
                config.initial_version
            ))
        })?,
    };
    if let Some(id) = pre {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ReleaseError::Config(format!(
                "--pre: `{id}` is not a pre-release id (letters, digits, -): e.g. rc, beta"
            )));
        }
        let n = tags
            .iter()
            .filter(|t| {
                (t.version.major, t.version.minor, t.version.patch) == (v.major, v.minor, v.patch)
            })
            .filter_map(|t| {
                let (tid, n) = t.version.pre.as_str().split_once('.')?;
                (tid == id).then(|| n.parse::<u64>().ok()).flatten()
            })
            .max()
            .map_or(1, |n| n + 1);
        v.pre = Prerelease::new(&format!("{id}.{n}"))
            .map_err(|e| ReleaseError::Config(format!("--pre: {e}")))?;
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Change;

    fn changes(kinds: &[(&str, bool)]) -> Classified {
        Classified {
            changes: kinds
                .iter()
                .map(|(k, breaking)| Change {
                    sha: "0".into(),
                    kind: (*k).into(),
                    scope: None,
                    description: "x".into(),
                    breaking: *breaking,
                    breaking_note: None,
                    pr: None,
                    author: "a".into(),
                })
                .collect(),
            ..Classified::default()
        }
    }

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    #[test]
    fn bumps_follow_the_largest_change() {
        let cfg = ReleaseConfig::default();
        let next = |last: &str, kinds: &[(&str, bool)]| {
            next(Some(&v(last)), &[], &changes(kinds), &cfg, None)
                .expect("ok")
                .map(|v| v.to_string())
        };
        assert_eq!(next("1.2.3", &[("fix", false)]).as_deref(), Some("1.2.4"));
        assert_eq!(
            next("1.2.3", &[("fix", false), ("feat", false)]).as_deref(),
            Some("1.3.0")
        );
        assert_eq!(
            next("1.2.3", &[("docs", true), ("feat", false)]).as_deref(),
            Some("2.0.0")
        );
        assert_eq!(
            next("0.4.1", &[("feat", true)]).as_deref(),
            Some("0.5.0"),
            "before 1.0"
        );
        assert_eq!(next("1.2.3", &[("docs", false), ("chore", false)]), None);
        let major = ReleaseConfig {
            breaking_bumps_major_before_1: true,
            ..ReleaseConfig::default()
        };
        assert_eq!(
            super::next(
                Some(&v("0.4.1")),
                &[],
                &changes(&[("feat", true)]),
                &major,
                None
            )
            .expect("ok")
            .map(|v| v.to_string())
            .as_deref(),
            Some("1.0.0")
        );
    }

    #[test]
    fn pre_releases_count_up() {
        let cfg = ReleaseConfig::default();
        let tags: Vec<Tag> = ["1.3.0-rc.1", "1.3.0-rc.2", "1.3.0-beta.7", "1.2.0"]
            .iter()
            .map(|t| Tag {
                name: format!("v{t}"),
                version: v(t),
            })
            .collect();
        let got = next(
            Some(&v("1.2.0")),
            &tags,
            &changes(&[("feat", false)]),
            &cfg,
            Some("rc"),
        )
        .expect("ok")
        .expect("a release");
        assert_eq!(got.to_string(), "1.3.0-rc.3");
        let got = next(
            Some(&v("1.2.0")),
            &tags,
            &changes(&[("fix", false)]),
            &cfg,
            Some("rc"),
        )
        .expect("ok")
        .expect("a release");
        assert_eq!(got.to_string(), "1.2.1-rc.1");
        assert!(
            next(
                Some(&v("1.2.0")),
                &tags,
                &changes(&[("fix", false)]),
                &cfg,
                Some("r c")
            )
            .is_err()
        );
        let first = next(None, &[], &changes(&[("fix", false)]), &cfg, None).expect("ok");
        assert_eq!(first.map(|v| v.to_string()).as_deref(), Some("0.1.0"));
    }
}
