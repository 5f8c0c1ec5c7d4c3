//! `requirements.txt` (pip's format) and `poetry.lock`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::inventory::{
    Component, Distribution, Ecosystem, Hash, HashAlg, Inventory, Scope, Subject,
};
use crate::{SbomError, purl, read_text};

/// How deep `-r other.txt` may nest.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Pip's options that take a value; the value is skipped with them.
const OPTIONS_WITH_VALUE: [&str; 10] = [
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--trusted-host",
    "--no-binary",
    "--only-binary",
    "-c",
    "--constraint",
];

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// One logical line (continuations joined) and the physical line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if current.is_empty() {
            start = i + 1;
        }
        // A comment starts at `#` at the line start or after whitespace.
        let mut line = raw;
        if let Some(at) = raw
            .char_indices()
            .find(|&(j, c)| c == '#' && (j == 0 || raw[..j].ends_with(char::is_whitespace)))
            .map(|(j, _)| j)
        {
            line = &raw[..at];
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let done = std::mem::take(&mut current);
                if !done.trim().is_empty() {
                    out.push((start, done.trim().to_owned()));
                }
            }
        }
    }
    if !current.trim().is_empty() {
        out.push((start, current.trim().to_owned()));
    }
    out
}

/// Reads a pip requirements file, following `-r` includes. Pinned requirements (`==`,
/// `===`) become components with versions; `--hash` values are kept. An unpinned
/// requirement is listed without a version and reported as a warning: a scanner cannot
/// match it.
pub fn read_requirements(path: &Path) -> Result<Inventory, SbomError> {
    let mut inv = Inventory {
        sources: vec![path.to_owned()],
        ..Inventory::default()
    };
    let mut seen = BTreeSet::new();
    read_requirements_into(path, 0, &mut seen, &mut inv)?;
    inv.subject = Subject {
        name: crate::cargo::dir_name(path.parent().unwrap_or(Path::new("."))),
        depends_on: inv.components.iter().map(|c| c.purl.clone()).collect(),
        ..Subject::default()
    };
    inv.finish();
    Ok(inv)
}

fn read_requirements_into(
    path: &Path,
    depth: usize,
    seen: &mut BTreeSet<PathBuf>,
    inv: &mut Inventory,
) -> Result<(), SbomError> {
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    if !seen.insert(key) {
        return Ok(());
    }
    let text = read_text(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    for (line_no, line) in logical_lines(&text) {
        let mut words = line.split_whitespace().peekable();
        let Some(first) = words.peek().copied() else {
            continue;
        };
        if first.starts_with('-') {
            let (opt, inline) = first.split_once('=').unwrap_or((first, ""));
            words.next();
            let value = if inline.is_empty() {
                words.next().unwrap_or("")
            } else {
                inline
            };
            match opt {
                "-r" | "--requirement" => {
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(SbomError::parse(
                            path,
                            Some(line_no),
                            format!("-r includes nest deeper than {MAX_INCLUDE_DEPTH} files"),
                        ));
                    }
                    read_requirements_into(&dir.join(value), depth + 1, seen, inv)?;
                    inv.sources.push(dir.join(value));
                }
                "-e" | "--editable" => inv.warnings.push(format!(
                    "{}:{line_no}: editable requirement {value} is not a published package; left out",
                    path.display()
                )),
                o if OPTIONS_WITH_VALUE.contains(&o) => {}
                _ => {} // flags such as --require-hashes, --pre
            }
            continue;
        }
        if first.contains("://") || first.starts_with('.') || first.starts_with('/') {
            inv.warnings.push(format!(
                "{}:{line_no}: {first} is a URL or path, not a named requirement; left out",
                path.display()
            ));
            continue;
        }
        inv.components.push(requirement(path, line_no, &line)?);
    }
    Ok(())
}

/// Parses `name[extras] (==|===)version ; marker --hash=alg:hex ...`.
fn requirement(path: &Path, line_no: usize, line: &str) -> Result<Component, SbomError> {
    let err = |m: String| SbomError::parse(path, Some(line_no), m);
    // Options after the requirement (only --hash matters).
    let mut hashes = Vec::new();
    let mut spec_part = String::new();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if let Some(rest) = w.strip_prefix("--hash") {
            let value = match rest.strip_prefix('=') {
                Some(v) => v,
                None => words.next().unwrap_or(""),
            };
            let (alg, hex) = value.split_once(':').unwrap_or(("", ""));
            let hash = HashAlg::parse(alg)
                .and_then(|a| Hash::from_hex(a, hex))
                .ok_or_else(|| {
                    err(format!(
                        "--hash={value} is not ALGORITHM:HEX (e.g. sha256:…)"
                    ))
                })?;
            hashes.push(hash);
        } else if w.starts_with("--") {
            // Per-requirement options such as --global-option take no part in identity.
        } else {
            spec_part.push_str(w);
            spec_part.push(' ');
        }
    }
    let (spec, marker) = match spec_part.split_once(';') {
        Some((s, m)) => (s.trim(), Some(m.trim())),
        None => (spec_part.trim(), None),
    };
    // `name @ url` (a direct reference).
    let (spec, url) = match spec.split_once(" @ ").or_else(|| spec.split_once('@')) {
        Some((n, u)) if u.contains("://") => (n.trim(), Some(u.trim())),
        _ => (spec, None),
    };
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(spec.len());
    let name = &spec[..name_end];
    if !valid_name(name) {
        return Err(err(format!(
            "\"{spec}\" does not start with a valid project name (letters, digits, . _ -)"
        )));
    }
    let mut rest = spec[name_end..].trim();
    if let Some(after) = rest.strip_prefix('[') {
        let close = after
            .find(']')
            .ok_or_else(|| err(format!("{name}: extras are missing their closing `]`")))?;
        rest = after[close + 1..].trim();
    }
    let rest = rest.trim_start_matches('(').trim_end_matches(')').trim();
    let operators = ["===", "==", "!=", "~=", "<=", ">=", "<", ">"];
    if !rest.is_empty()
        && !rest
            .split(',')
            .all(|c| operators.iter().any(|op| c.trim().starts_with(op)))
    {
        return Err(err(format!(
            "{name}: \"{rest}\" is not a version specifier (use ==VERSION to pin it)"
        )));
    }
    let pinned = rest.split(',').map(str::trim).find_map(|c| {
        let v = c
            .strip_prefix("===")
            .or_else(|| c.strip_prefix("=="))?
            .trim();
        (!v.is_empty() && !v.contains('*')).then_some(v)
    });
    let mut c = Component::new(Ecosystem::PyPI, name, pinned, purl::pypi(name, pinned));
    c.hashes = hashes;
    c.download = url.map(str::to_owned);
    if let Some(m) = marker.filter(|m| !m.is_empty()) {
        c.properties
            .insert("maestro:python:marker".into(), m.to_owned());
    }
    if pinned.is_none() {
        c.properties.insert(
            "maestro:unpinned".into(),
            if rest.is_empty() {
                "*".into()
            } else {
                rest.to_owned()
            },
        );
    }
    Ok(c)
}

#[derive(Deserialize)]
struct PoetryLock {
    #[serde(default)]
    package: Vec<PoetryPackage>,
    #[serde(default)]
    metadata: PoetryMetadata,
}

#[derive(Deserialize, Default)]
struct PoetryMetadata {
    /// Lock format 1.x: `name = [{file, hash}]`.
    #[serde(default)]
    files: BTreeMap<String, Vec<PoetryFile>>,
}

#[derive(Deserialize)]
struct PoetryPackage {
    name: String,
    version: String,
    #[serde(default)]
    optional: bool,
    /// Poetry 1.x: "main" or "dev".
    category: Option<String>,
    /// Poetry 2.x: dependency groups.
    groups: Option<Vec<String>>,
    #[serde(default)]
    files: Vec<PoetryFile>,
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Value>,
    source: Option<PoetrySource>,
}

#[derive(Deserialize)]
struct PoetryFile {
    file: String,
    hash: String,
}

#[derive(Deserialize)]
struct PoetrySource {
    #[serde(rename = "type")]
    kind: String,
    url: Option<String>,
    resolved_reference: Option<String>,
}

/// Reads `poetry.lock`; the project's own name and direct dependencies come from
/// `pyproject.toml` beside it when present.
pub fn read_poetry(path: &Path) -> Result<Inventory, SbomError> {
    let text = read_text(path)?;
    let lock: PoetryLock = toml::from_str(&text).map_err(|e| SbomError::toml(path, &text, &e))?;
    let mut inv = Inventory {
        sources: vec![path.to_owned()],
        ..Inventory::default()
    };
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for p in &lock.package {
        by_name.insert(purl::pep503(&p.name), package_purl(p));
    }
    let mut incoming = BTreeSet::new();
    for p in &lock.package {
        let mut c = Component::new(Ecosystem::PyPI, &p.name, Some(&p.version), package_purl(p));
        let files = if p.files.is_empty() {
            lock.metadata
                .files
                .get(&p.name)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        } else {
            &p.files
        };
        for f in files {
            let (alg, hex) = f.hash.split_once(':').unwrap_or(("", ""));
            if let Some(h) = HashAlg::parse(alg).and_then(|a| Hash::from_hex(a, hex)) {
                c.distributions.push(Distribution {
                    file: f.file.clone(),
                    hashes: vec![h],
                });
            }
        }
        let dev = p.category.as_deref() == Some("dev")
            || p.groups
                .as_ref()
                .is_some_and(|g| !g.iter().any(|g| g == "main"));
        c.scope = if dev {
            Scope::Dev
        } else if p.optional {
            Scope::Optional
        } else {
            Scope::Required
        };
        if let Some(src) = &p.source {
            c.download = src.url.clone();
        }
        for d in p.dependencies.keys() {
            if let Some(to) = by_name.get(&purl::pep503(d)) {
                c.depends_on.insert(to.clone());
                incoming.insert(to.clone());
            }
        }
        inv.components.push(c);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let project = pyproject(&dir.join("pyproject.toml"));
    let direct: BTreeSet<String> = match &project {
        Some(p) if !p.dependencies.is_empty() => p
            .dependencies
            .iter()
            .filter_map(|d| by_name.get(&purl::pep503(d)).cloned())
            .collect(),
        _ => inv
            .components
            .iter()
            .map(|c| c.purl.clone())
            .filter(|p| !incoming.contains(p))
            .collect(),
    };
    inv.subject = match project {
        Some(p) => Subject {
            purl: Some(purl::pypi(&p.name, p.version.as_deref())),
            name: p.name,
            version: p.version,
            depends_on: direct,
        },
        None => Subject {
            name: crate::cargo::dir_name(dir),
            depends_on: direct,
            ..Subject::default()
        },
    };
    inv.finish();
    Ok(inv)
}

fn package_purl(p: &PoetryPackage) -> String {
    let name = purl::pep503(&p.name);
    match &p.source {
        Some(s) if s.kind == "git" => {
            let url = s.url.as_deref().unwrap_or_default();
            let vcs = match &s.resolved_reference {
                Some(r) => format!("git+{url}@{r}"),
                None => format!("git+{url}"),
            };
            purl::build("pypi", None, &name, Some(&p.version), &[("vcs_url", &vcs)])
        }
        Some(s) if s.kind == "legacy" => purl::build(
            "pypi",
            None,
            &name,
            Some(&p.version),
            &[("repository_url", s.url.as_deref().unwrap_or_default())],
        ),
        _ => purl::pypi(&p.name, Some(&p.version)),
    }
}

struct Project {
    name: String,
    version: Option<String>,
    /// Names of direct dependencies, every group.
    dependencies: Vec<String>,
}

/// Name, version and direct dependency names from `[project]` (PEP 621) or `[tool.poetry]`.
fn pyproject(path: &Path) -> Option<Project> {
    let text = read_text(path).ok()?;
    let doc: toml::Table = toml::from_str(&text).ok()?;
    let poetry = doc.get("tool").and_then(|t| t.get("poetry"));
    let pep621 = doc.get("project");
    let name = pep621
        .and_then(|p| p.get("name"))
        .or_else(|| poetry.and_then(|p| p.get("name")))?
        .as_str()?
        .to_owned();
    let version = pep621
        .and_then(|p| p.get("version"))
        .or_else(|| poetry.and_then(|p| p.get("version")))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let mut deps = Vec::new();
    let tables = poetry
        .and_then(|p| p.get("dependencies"))
        .into_iter()
        .chain(poetry.and_then(|p| p.get("dev-dependencies")))
        .chain(
            poetry
                .and_then(|p| p.get("group"))
                .and_then(|g| g.as_table())
                .into_iter()
                .flat_map(|g| g.values().filter_map(|v| v.get("dependencies"))),
        );
    for t in tables.filter_map(|t| t.as_table()) {
        deps.extend(t.keys().filter(|k| *k != "python").cloned());
    }
    let pep621_lists = pep621
        .and_then(|p| p.get("dependencies"))
        .and_then(|d| d.as_array())
        .into_iter()
        .flatten()
        .chain(
            pep621
                .and_then(|p| p.get("optional-dependencies"))
                .and_then(|o| o.as_table())
                .into_iter()
                .flat_map(|o| o.values().filter_map(|v| v.as_array()).flatten()),
        );
    for req in pep621_lists.filter_map(|r| r.as_str()) {
        let end = req
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(req.len());
        deps.push(req[..end].to_owned());
    }
    Some(Project {
        name,
        version,
        dependencies: deps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Component {
        requirement(Path::new("r.txt"), 1, line).expect("parses")
    }

    #[test]
    fn requirement_forms() {
        let c = one(
            "Flask[async]==3.0.2 ; python_version >= \"3.8\" --hash=sha256:3232e3b8c5b9b1c5d7a3a4a9f3b7c5e1d2a9f0e1b3c5d7e9f1a3b5c7d9e1f3a5",
        );
        assert_eq!(c.purl, "pkg:pypi/flask@3.0.2");
        assert_eq!(c.hashes.len(), 1);
        assert_eq!(
            c.properties["maestro:python:marker"],
            "python_version >= \"3.8\""
        );
        let c = one("requests>=2,<3");
        assert_eq!(c.purl, "pkg:pypi/requests");
        assert_eq!(c.properties["maestro:unpinned"], ">=2,<3");
        assert_eq!(one("pkg===1.0+local").version.as_deref(), Some("1.0+local"));
        assert_eq!(one("pkg == 1.0").version.as_deref(), Some("1.0"));
        assert_eq!(one("pkg==1.*").version, None);
        let c = one("pkg @ https://files.example/pkg-1.0.tar.gz");
        assert_eq!(
            c.download.as_deref(),
            Some("https://files.example/pkg-1.0.tar.gz")
        );
    }

    #[test]
    fn requirement_errors_name_the_line() {
        let e = requirement(Path::new("r.txt"), 7, "pkg==1 --hash=md5:abc").expect_err("bad hash");
        assert!(e.to_string().starts_with("r.txt:7: --hash=md5:abc"), "{e}");
        let e = requirement(Path::new("r.txt"), 3, "-pkg==1").expect_err("bad name");
        assert!(e.to_string().starts_with("r.txt:3:"), "{e}");
    }

    #[test]
    fn continuation_and_comments() {
        let lines =
            logical_lines("a==1 \\\n  --hash=sha256:00 # c\n# only comment\nb#notcomment==2\n");
        assert_eq!(lines[0].0, 1);
        assert!(lines[0].1.starts_with("a==1"));
        assert!(lines[0].1.contains("--hash=sha256:00"));
        assert_eq!(lines[1], (4, "b#notcomment==2".to_owned()));
    }
}
