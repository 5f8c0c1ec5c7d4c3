//! Version ordering per ecosystem: SemVer 2 for crates.io, npm and Go; PEP 440 for PyPI.

use std::cmp::Ordering;
use std::str::FromStr as _;

use maestro_sbom::Ecosystem;

/// A version parsed by its ecosystem's rules; versions of different schemes never compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Version {
    Semver(semver::Version),
    Pep440(pep440_rs::Version),
}

impl Version {
    /// Parses `s` the way `eco` orders versions. Go's `v` prefix and `+incompatible` are
    /// dropped (OSV writes Go versions without them); npm's leading `v`/`=` is tolerated.
    pub fn parse(eco: Ecosystem, s: &str) -> Option<Version> {
        let s = s.trim();
        match eco {
            Ecosystem::PyPI => pep440_rs::Version::from_str(s).ok().map(Version::Pep440),
            Ecosystem::Go => {
                let s = s.strip_prefix('v').unwrap_or(s);
                let s = s.strip_suffix("+incompatible").unwrap_or(s);
                semver::Version::parse(s).ok().map(Version::Semver)
            }
            Ecosystem::Npm => {
                let s = s.trim_start_matches(['v', '=']);
                semver::Version::parse(s).ok().map(Version::Semver)
            }
            Ecosystem::Cargo => semver::Version::parse(s).ok().map(Version::Semver),
        }
    }

    /// Precedence order: SemVer ignores build metadata; PEP 440 is total.
    pub fn compare(&self, other: &Version) -> Option<Ordering> {
        match (self, other) {
            (Version::Semver(a), Version::Semver(b)) => Some(a.cmp_precedence(b)),
            (Version::Pep440(a), Version::Pep440(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(eco: Ecosystem, a: &str, b: &str) -> Ordering {
        let a = Version::parse(eco, a).expect("a parses");
        let b = Version::parse(eco, b).expect("b parses");
        a.compare(&b).expect("same scheme")
    }

    #[test]
    fn semver_prereleases_sort_before_the_release() {
        assert_eq!(
            cmp(Ecosystem::Cargo, "1.0.0-alpha.1", "1.0.0"),
            Ordering::Less
        );
        assert_eq!(
            cmp(Ecosystem::Cargo, "1.0.0-alpha.10", "1.0.0-alpha.9"),
            Ordering::Greater
        );
        assert_eq!(
            cmp(Ecosystem::Npm, "1.0.0+build.1", "1.0.0"),
            Ordering::Equal
        );
    }

    #[test]
    fn pep440_orders_dev_pre_post_and_epochs() {
        assert_eq!(cmp(Ecosystem::PyPI, "2.0.dev1", "2.0a1"), Ordering::Less);
        assert_eq!(cmp(Ecosystem::PyPI, "2.0rc1", "2.0"), Ordering::Less);
        assert_eq!(cmp(Ecosystem::PyPI, "2.0.post1", "2.0"), Ordering::Greater);
        assert_eq!(cmp(Ecosystem::PyPI, "1!1.0", "2.0"), Ordering::Greater);
        assert_eq!(cmp(Ecosystem::PyPI, "2.31", "2.31.0"), Ordering::Equal);
    }

    #[test]
    fn go_versions_drop_v_and_incompatible() {
        assert_eq!(
            cmp(Ecosystem::Go, "v24.0.7+incompatible", "24.0.7"),
            Ordering::Equal
        );
        assert_eq!(
            cmp(Ecosystem::Go, "v0.0.0-20230124172434-306776ec8161", "0.0.1"),
            Ordering::Less
        );
    }
}
