//! `package-lock.json` / `npm-shrinkwrap.json`, lockfile versions 2 and 3.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::inventory::{Component, Ecosystem, Hash, HashAlg, Inventory, Scope, Subject};
use crate::{SbomError, purl, read_text};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lock {
    name: Option<String>,
    version: Option<String>,
    lockfile_version: Option<u32>,
    packages: Option<BTreeMap<String, Entry>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Entry {
    name: Option<String>,
    version: Option<String>,
    resolved: Option<String>,
    integrity: Option<String>,
    license: Option<serde_json::Value>,
    #[serde(default)]
    link: bool,
    #[serde(default)]
    dev: bool,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    dev_optional: bool,
    #[serde(default)]
    dependencies: BTreeMap<String, String>,
    #[serde(default)]
    optional_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    peer_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    dev_dependencies: BTreeMap<String, String>,
}

/// The package name an install location holds: the part after the last `node_modules/`.
fn name_at(location: &str) -> &str {
    match location.rfind("node_modules/") {
        Some(at) => &location[at + "node_modules/".len()..],
        None => location.rsplit('/').next().unwrap_or(location),
    }
}

/// The folder whose `node_modules` Node searches next after `location`'s own.
fn parent(location: &str) -> Option<&str> {
    if location.is_empty() {
        return None;
    }
    Some(match location.rfind("/node_modules/") {
        Some(at) => &location[..at],
        None => "",
    })
}

/// `sha512-BASE64 sha1-BASE64` → hashes (Subresource Integrity syntax).
fn integrity(sri: &str) -> Vec<Hash> {
    sri.split_whitespace()
        .filter_map(|item| {
            let (alg, b64) = item.split_once('-')?;
            let alg = HashAlg::parse(alg)?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            Hash::from_hex(alg, &hex::encode(bytes))
        })
        .collect()
}

/// `"MIT"`, or the legacy `{"type": "MIT"}`.
fn license(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("type")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Reads a v2/v3 lockfile. Each install location becomes a component (identical
/// name@version at several locations is one component); dependency edges follow Node's
/// resolution, walking up `node_modules` folders, and through workspace links.
pub fn read(path: &Path) -> Result<Inventory, SbomError> {
    let text = read_text(path)?;
    let lock: Lock = serde_json::from_str(&text).map_err(|e| SbomError::json(path, &e))?;
    let Some(packages) = lock.packages else {
        return Err(SbomError::Unsupported {
            path: path.to_owned(),
            message: format!(
                "lockfileVersion {} has no \"packages\" map; regenerate it with npm 7 or later (`npm install --package-lock-only --lockfile-version 3`)",
                lock.lockfile_version.unwrap_or(1)
            ),
        });
    };

    // Where a location's package really lives (links point at workspace folders).
    let target = |loc: &str| -> Option<String> {
        let e = packages.get(loc)?;
        if e.link {
            let to = e.resolved.as_deref()?;
            packages.contains_key(to).then(|| to.to_owned())
        } else {
            Some(loc.to_owned())
        }
    };
    let resolve = |from: &str, dep: &str| -> Option<String> {
        let mut at = Some(from);
        while let Some(dir) = at {
            let candidate = if dir.is_empty() {
                format!("node_modules/{dep}")
            } else {
                format!("{dir}/node_modules/{dep}")
            };
            if packages.contains_key(&candidate) {
                return target(&candidate);
            }
            at = parent(dir);
        }
        None
    };

    let root_name = packages
        .get("")
        .and_then(|r| r.name.clone())
        .or_else(|| lock.name.clone())
        .unwrap_or_else(|| crate::cargo::dir_name(path.parent().unwrap_or(Path::new("."))));
    let mut purls: BTreeMap<&str, String> = BTreeMap::new();
    for (loc, e) in &packages {
        if e.link {
            continue;
        }
        let name = match (&e.name, loc.as_str()) {
            (_, "") => root_name.clone(),
            (Some(n), _) => n.clone(),
            (None, l) => name_at(l).to_owned(),
        };
        let version = e
            .version
            .clone()
            .or_else(|| loc.is_empty().then(|| lock.version.clone()).flatten());
        let p = match &version {
            Some(v) => purl::npm(&name, v),
            None => purl::build("npm", None, &name, None, &[]),
        };
        purls.insert(loc.as_str(), p);
    }

    let mut inv = Inventory {
        sources: vec![path.to_owned()],
        ..Inventory::default()
    };
    for (loc, e) in &packages {
        if e.link {
            continue;
        }
        let is_root = loc.is_empty();
        let is_workspace = !is_root && !loc.contains("node_modules/");
        let mut edges = BTreeSet::new();
        let mut deps: Vec<(&String, bool)> = e.dependencies.keys().map(|d| (d, true)).collect();
        deps.extend(e.optional_dependencies.keys().map(|d| (d, false)));
        deps.extend(e.peer_dependencies.keys().map(|d| (d, false)));
        // Only the project and its workspaces install their devDependencies.
        if is_root || is_workspace {
            deps.extend(e.dev_dependencies.keys().map(|d| (d, true)));
        }
        for (dep, required) in deps {
            match resolve(loc, dep) {
                Some(to) => {
                    if let Some(p) = purls.get(to.as_str()) {
                        edges.insert(p.clone());
                    }
                }
                None if required => inv.warnings.push(format!(
                    "{}: \"{dep}\" (needed by {}) is not installed anywhere Node would find it",
                    path.display(),
                    if is_root { "the project" } else { loc.as_str() }
                )),
                None => {}
            }
        }
        let purl = purls[loc.as_str()].clone();
        if is_root {
            // The project depends on its workspaces (npm links them into node_modules).
            edges.extend(
                packages
                    .iter()
                    .filter(|(l, w)| !l.is_empty() && !w.link && !l.contains("node_modules/"))
                    .filter_map(|(l, _)| purls.get(l.as_str()).cloned()),
            );
            inv.subject = Subject {
                name: root_name.clone(),
                version: e.version.clone().or_else(|| lock.version.clone()),
                purl: Some(purl),
                depends_on: edges,
            };
            continue;
        }
        let name = e.name.clone().unwrap_or_else(|| name_at(loc).to_owned());
        let mut c = Component::new(Ecosystem::Npm, &name, e.version.as_deref(), purl);
        c.depends_on = edges;
        c.hashes = e.integrity.as_deref().map(integrity).unwrap_or_default();
        c.license = e.license.as_ref().and_then(license);
        c.download = e.resolved.clone().filter(|r| r.contains("://"));
        c.scope = if e.dev || e.dev_optional {
            Scope::Dev
        } else if e.optional {
            Scope::Optional
        } else {
            Scope::Required
        };
        if is_workspace {
            c.properties
                .insert("maestro:npm:workspace".into(), loc.clone());
        }
        inv.components.push(c);
    }
    inv.finish();
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(name_at("node_modules/@babel/core"), "@babel/core");
        assert_eq!(name_at("node_modules/a/node_modules/b"), "b");
        assert_eq!(
            parent("node_modules/a/node_modules/b"),
            Some("node_modules/a")
        );
        assert_eq!(parent("node_modules/a"), Some(""));
        assert_eq!(parent("packages/w"), Some(""));
        assert_eq!(parent(""), None);
    }

    #[test]
    fn subresource_integrity() {
        let h = integrity("sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk= sha512-bogus!");
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }
}
