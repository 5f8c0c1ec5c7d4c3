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

/// A parsed package URL: type, namespace and name (percent-decoded), version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub ty: String,
    pub namespace: Option<String>,
    pub name: String,
    pub version: Option<String>,
}

impl Parsed {
    /// The name as the ecosystem writes it: `@scope/name` for npm, the module path for Go,
    /// the bare name elsewhere.
    pub fn full_name(&self) -> String {
        match (&self.namespace, self.ty.as_str()) {
            (Some(ns), "npm" | "golang") => format!("{ns}/{}", self.name),
            _ => self.name.clone(),
        }
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS#SUBPATH`; `None` when it is not a
/// purl.
pub fn parse(purl: &str) -> Option<Parsed> {
    let rest = purl.strip_prefix("pkg:")?.trim_start_matches('/');
    let rest = rest.split('#').next()?;
    let rest = rest.split('?').next()?;
    let (ty, path) = rest.split_once('/')?;
    let (path, version) = match path.rsplit_once('@') {
        Some((p, v)) if !v.is_empty() => (p, Some(decode(v))),
        _ => (path, None),
    };
    let path = path.trim_matches('/');
    let (namespace, name) = match path.rsplit_once('/') {
        Some((ns, n)) => (
            Some(ns.split('/').map(decode).collect::<Vec<_>>().join("/")),
            n,
        ),
        None => (None, path),
    };
    if ty.is_empty() || name.is_empty() {
        return None;
    }
    Some(Parsed {
        ty: ty.to_ascii_lowercase(),
        namespace,
        name: decode(name),
        version,
    })
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parses_what_build_writes() {
        for (purl, full, version) in [
            (
                "pkg:npm/%40babel/core@7.24.7",
                "@babel/core",
                Some("7.24.7"),
            ),
            (
                "pkg:cargo/serde@1.0.0?checksum=sha256:ab",
                "serde",
                Some("1.0.0"),
            ),
            (
                "pkg:golang/github.com/pkg/errors@v0.9.1",
                "github.com/pkg/errors",
                Some("v0.9.1"),
            ),
            ("pkg:pypi/requests", "requests", None),
        ] {
            let p = parse(purl).expect(purl);
            assert_eq!(p.full_name(), full);
            assert_eq!(p.version.as_deref(), version);
        }
        let p = parse(&npm("@types/node", "20.1.0")).expect("round trip");
        assert_eq!(p.full_name(), "@types/node");
        assert!(parse("not-a-purl").is_none());
        assert!(parse("pkg:npm/").is_none());
    }
}
