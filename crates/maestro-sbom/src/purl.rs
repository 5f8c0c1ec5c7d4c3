//! Package URLs (<https://github.com/package-url/purl-spec>): the identifier scanners
//! match on. Every component Maestro writes carries one.

use std::fmt::Write as _;

/// Percent-encodes everything outside the purl spec's unreserved set (`A-Z a-z 0-9 - . _ ~`),
/// plus whatever `keep` allows through (`/` inside a namespace, `:` in qualifier values).
fn encode(out: &mut String, s: &str, keep: &[u8]) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Builds `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`. The namespace's `/` separators
/// are kept; qualifiers are sorted by key as the spec's canonical form requires.
pub fn build(
    ty: &str,
    namespace: Option<&str>,
    name: &str,
    version: Option<&str>,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut out = String::with_capacity(16 + name.len());
    out.push_str("pkg:");
    out.push_str(ty);
    out.push('/');
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        for (i, seg) in ns.split('/').filter(|s| !s.is_empty()).enumerate() {
            if i > 0 {
                out.push('/');
            }
            encode(&mut out, seg, &[]);
        }
        out.push('/');
    }
    encode(&mut out, name, &[]);
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        out.push('@');
        encode(&mut out, v, &[]);
    }
    let mut qs: Vec<_> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    qs.sort_by_key(|(k, _)| *k);
    for (i, (k, v)) in qs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        encode(&mut out, v, b":/");
    }
    out
}

/// `pkg:cargo/NAME@VERSION`.
pub fn cargo(name: &str, version: &str, qualifiers: &[(&str, &str)]) -> String {
    build("cargo", None, name, Some(version), qualifiers)
}

/// `pkg:npm/%40SCOPE/NAME@VERSION` (scoped) or `pkg:npm/NAME@VERSION`.
pub fn npm(full_name: &str, version: &str) -> String {
    match full_name.split_once('/') {
        Some((scope, name)) if scope.starts_with('@') => {
            build("npm", Some(scope), name, Some(version), &[])
        }
        _ => build("npm", None, full_name, Some(version), &[]),
    }
}

/// The PEP 503 normalised form of a Python project name: lowercase, runs of `-_.` → `-`.
pub fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// `pkg:pypi/NAME@VERSION` with the name normalised as the purl spec says.
pub fn pypi(name: &str, version: Option<&str>) -> String {
    build("pypi", None, &pep503(name), version, &[])
}

/// `pkg:golang/NAMESPACE/NAME@VERSION`: the module path split at its last `/`.
pub fn golang(module: &str, version: Option<&str>) -> String {
    match module.rsplit_once('/') {
        Some((ns, name)) => build("golang", Some(ns), name, version, &[]),
        None => build("golang", None, module, version, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(cargo("serde", "1.0.219", &[]), "pkg:cargo/serde@1.0.219");
        assert_eq!(npm("@babel/core", "7.24.0"), "pkg:npm/%40babel/core@7.24.0");
        assert_eq!(npm("left-pad", "1.3.0"), "pkg:npm/left-pad@1.3.0");
        assert_eq!(
            pypi("Django_REST.framework", Some("3.15.1")),
            "pkg:pypi/django-rest-framework@3.15.1"
        );
        assert_eq!(
            golang("github.com/gorilla/context", Some("v1.1.1")),
            "pkg:golang/github.com/gorilla/context@v1.1.1"
        );
    }

    #[test]
    fn reserved_characters_are_encoded() {
        assert_eq!(
            cargo("x", "1.0.0+build.5", &[]),
            "pkg:cargo/x@1.0.0%2Bbuild.5"
        );
        assert_eq!(
            cargo(
                "x",
                "0.1.0",
                &[("vcs_url", "git+https://g.example/x.git#abc")]
            ),
            "pkg:cargo/x@0.1.0?vcs_url=git%2Bhttps://g.example/x.git%23abc"
        );
        assert_eq!(
            build(
                "generic",
                None,
                "a b",
                None,
                &[("z", "1"), ("a", "2"), ("e", "")]
            ),
            "pkg:generic/a%20b?a=2&z=1"
        );
    }

    #[test]
    fn pep503_runs() {
        assert_eq!(pep503("A__b-.C"), "a-b-c");
        assert_eq!(pep503("zope.interface"), "zope-interface");
    }
}
