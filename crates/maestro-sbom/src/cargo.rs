//! `Cargo.lock` (format versions 1 to 4).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::inventory::{Component, Ecosystem, Hash, HashAlg, Inventory, Subject};
use crate::{ReadOptions, SbomError, purl, read_text};

const CRATES_IO: [&str; 2] = [
    "registry+https://github.com/rust-lang/crates.io-index",
    "sparse+https://index.crates.io/",
];

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<Package>,
    /// Format 1 kept checksums here: `"checksum NAME VERSION (SOURCE)" = "HEX"`.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
}

/// The purl qualifiers a source adds: none for crates.io, `repository_url` for another
/// registry, `vcs_url` (with the locked commit) for git.
fn qualifiers(source: Option<&str>) -> Option<(&'static str, String)> {
    let source = source?;
    if CRATES_IO.contains(&source) {
        return None;
    }
    if let Some(url) = source.strip_prefix("git+") {
        let (repo, commit) = url.split_once('#').unwrap_or((url, ""));
        let repo = repo.split('?').next().unwrap_or(repo);
        let vcs = if commit.is_empty() {
            format!("git+{repo}")
        } else {
            format!("git+{repo}@{commit}")
        };
        return Some(("vcs_url", vcs));
    }
    let url = source
        .strip_prefix("registry+")
        .or_else(|| source.strip_prefix("sparse+"))
        .unwrap_or(source);
    Some(("repository_url", url.to_owned()))
}

/// Reads `Cargo.lock`. Path packages (no `source`) are the workspace's own crates: the
/// subject is the root package of the `Cargo.toml` beside the lockfile, or, for a virtual
/// workspace, the directory, depending on every member.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<Inventory, SbomError> {
    let text = read_text(path)?;
    let lock: Lock = toml::from_str(&text).map_err(|e| SbomError::toml(path, &text, &e))?;
    let line_of_package = |i: usize| {
        text.match_indices("[[package]]")
            .nth(i)
            .map(|(at, _)| crate::line_of(&text, at))
    };

    // Resolve `dependencies` entries: "name", "name version", "name version (source)".
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in lock.package.iter().enumerate() {
        by_name.entry(p.name.as_str()).or_default().push(i);
    }
    let resolve = |spec: &str| -> Option<usize> {
        let mut parts = spec.splitn(3, ' ');
        let name = parts.next()?;
        let version = parts.next();
        let source = parts
            .next()
            .map(|s| s.trim_start_matches('(').trim_end_matches(')'));
        let candidates = by_name.get(name)?;
        let hits: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| {
                let p = &lock.package[i];
                version.is_none_or(|v| p.version == v)
                    && source.is_none_or(|s| p.source.as_deref() == Some(s))
            })
            .collect();
        (hits.len() == 1).then(|| hits[0])
    };

    let licenses = LicenseLookup::new(opts.cargo_registry_src.as_deref());
    let mut purls = Vec::with_capacity(lock.package.len());
    for p in &lock.package {
        let q = qualifiers(p.source.as_deref());
        let qs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        purls.push(purl::cargo(&p.name, &p.version, &qs));
    }

    let mut inv = Inventory {
        sources: vec![path.to_owned()],
        ..Inventory::default()
    };
    let mut has_incoming = vec![false; lock.package.len()];
    for (i, p) in lock.package.iter().enumerate() {
        let mut c = Component::new(
            Ecosystem::Cargo,
            &p.name,
            Some(&p.version),
            purls[i].clone(),
        );
        let checksum = p.checksum.clone().or_else(|| {
            let key = format!(
                "checksum {} {} ({})",
                p.name,
                p.version,
                p.source.as_deref().unwrap_or_default()
            );
            lock.metadata.get(&key).cloned()
        });
        if let Some(sum) = checksum {
            let hash = Hash::from_hex(HashAlg::Sha256, &sum).ok_or_else(|| {
                SbomError::parse(
                    path,
                    line_of_package(i),
                    format!(
                        "package {} {}: checksum is not a SHA-256 hex digest",
                        p.name, p.version
                    ),
                )
            })?;
            c.hashes.push(hash);
        }
        match p.source.as_deref() {
            Some(s) if CRATES_IO.contains(&s) => {
                c.download = Some(format!(
                    "https://crates.io/api/v1/crates/{}/{}/download",
                    p.name, p.version
                ));
                c.license = licenses.find(&p.name, &p.version);
            }
            Some(s) => {
                c.download = Some(s.to_owned());
            }
            None => {
                c.properties
                    .insert("maestro:cargo:source".into(), "path".into());
            }
        }
        for d in &p.dependencies {
            let j = resolve(d).ok_or_else(|| {
                SbomError::parse(
                    path,
                    line_of_package(i),
                    format!(
                        "package {} {}: dependency \"{d}\" matches no single package in the lockfile; regenerate it with `cargo generate-lockfile`",
                        p.name, p.version
                    ),
                )
            })?;
            has_incoming[j] = true;
            c.depends_on.insert(purls[j].clone());
        }
        inv.components.push(c);
    }

    let dir = path.parent().unwrap_or(Path::new("."));
    let members: Vec<usize> = (0..lock.package.len())
        .filter(|&i| lock.package[i].source.is_none())
        .collect();
    let root_name = root_package_name(&dir.join("Cargo.toml"));
    let root = root_name.and_then(|n| members.iter().copied().find(|&i| lock.package[i].name == n));
    inv.subject = match root {
        Some(i) => Subject {
            name: lock.package[i].name.clone(),
            version: Some(lock.package[i].version.clone()),
            purl: Some(purls[i].clone()),
            depends_on: inv.components[i].depends_on.clone(),
        },
        None => Subject {
            name: dir_name(dir),
            version: None,
            purl: None,
            // A virtual workspace depends on its members; without a manifest, on the
            // path packages nothing else depends on.
            depends_on: members
                .iter()
                .filter(|&&i| !has_incoming[i] || dir.join("Cargo.toml").is_file())
                .map(|&i| purls[i].clone())
                .collect::<BTreeSet<_>>(),
        },
    };
    inv.finish();
    Ok(inv)
}

/// The directory's name, for subjects that have no package name of their own.
pub(crate) fn dir_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "project".to_owned())
}

/// `[package] name` of a manifest, if it has one (a virtual workspace has none).
fn root_package_name(manifest: &Path) -> Option<String> {
    let text = read_text(manifest).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table
        .get("package")?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

/// Finds `license` of crates in the local registry sources (`$CARGO_HOME/registry/src`).
struct LicenseLookup {
    roots: Vec<PathBuf>,
}

impl LicenseLookup {
    fn new(src: Option<&Path>) -> Self {
        let roots = src
            .and_then(|s| std::fs::read_dir(s).ok())
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        LicenseLookup { roots }
    }

    fn find(&self, name: &str, version: &str) -> Option<String> {
        let dir = format!("{name}-{version}");
        self.roots.iter().find_map(|r| {
            let text = std::fs::read_to_string(r.join(&dir).join("Cargo.toml")).ok()?;
            manifest_license(&text)
        })
    }
}

/// The `[package] license` of a published (normalised) manifest, as an SPDX expression:
/// the legacy `/` separator becomes `OR`.
fn manifest_license(text: &str) -> Option<String> {
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package && line.starts_with("license") {
            let t: toml::Table = toml::from_str(line).ok()?;
            let raw = t.get("license")?.as_str()?;
            return Some(crate::license::normalize_legacy(raw));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_license_reads_the_package_table_only() {
        let m = "[package]\nname = \"x\"\nlicense = \"MIT/Apache-2.0\"\n[dependencies]\nlicense = \"no\"\n";
        assert_eq!(manifest_license(m).as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(
            manifest_license("[dependencies]\nlicense = \"MIT\"\n"),
            None
        );
    }

    #[test]
    fn source_qualifiers() {
        assert_eq!(qualifiers(Some(CRATES_IO[0])), None);
        assert_eq!(qualifiers(Some(CRATES_IO[1])), None);
        assert_eq!(
            qualifiers(Some("git+https://g.example/x.git?branch=main#0123abc")),
            Some(("vcs_url", "git+https://g.example/x.git@0123abc".to_owned()))
        );
        assert_eq!(
            qualifiers(Some("sparse+https://my.example/index/")),
            Some(("repository_url", "https://my.example/index/".to_owned()))
        );
    }
}
