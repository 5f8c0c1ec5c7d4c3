//! Reading SBOMs back: CycloneDX (1.2–1.6) and SPDX 2.x JSON documents into an
//! inventory, so `maestro sca` and `maestro licenses` can check an SBOM made elsewhere
//! (or by an earlier build) the way grype reads `sbom:` input.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;

use crate::inventory::{Component, Ecosystem, Inventory, Scope};
use crate::{SbomError, purl};

/// True when the JSON text looks like an SBOM this module reads.
pub fn is_sbom(json: &Value) -> bool {
    json.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX")
        || json
            .get("spdxVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("SPDX-2"))
}

/// Reads a CycloneDX or SPDX JSON SBOM.
///
/// # Errors
/// When the file is unreadable, too large, not JSON, or not an SBOM.
pub fn read(path: &Path) -> Result<Inventory, SbomError> {
    let text = crate::read_text(path)?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| SbomError::parse(path, Some(e.line()), format!("not JSON: {e}")))?;
    let mut inv = if json.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        cyclonedx(&json)
    } else if is_sbom(&json) {
        spdx(&json)
    } else {
        return Err(SbomError::Unsupported {
            path: path.to_owned(),
            message:
                "neither a CycloneDX (`bomFormat`) nor an SPDX 2.x (`spdxVersion`) JSON document"
                    .into(),
        });
    };
    inv.sources.push(path.to_owned());
    inv.finish();
    Ok(inv)
}

/// A component from a purl, or a warning when the ecosystem is not one Maestro matches.
fn component(
    purl: &str,
    doc_name: Option<&str>,
    version: Option<&str>,
    warnings: &mut Vec<String>,
) -> Option<Component> {
    let Some(p) = purl::parse(purl) else {
        warnings.push(format!("`{purl}` is not a package URL; left out"));
        return None;
    };
    let Some(eco) = Ecosystem::of_purl(purl) else {
        warnings.push(format!(
            "{purl}: ecosystem `{}` is not one Maestro checks (cargo, npm, pypi, golang); left out",
            p.ty
        ));
        return None;
    };
    let version = p.version.clone().or_else(|| version.map(str::to_owned));
    // A PyPI purl holds the normalised name; the document's own name keeps the spelling.
    let name = match doc_name {
        Some(n) if eco == Ecosystem::PyPI && purl::pep503(n) == p.name => n.to_owned(),
        _ => p.full_name(),
    };
    Some(Component::new(
        eco,
        &name,
        version.as_deref(),
        purl.to_owned(),
    ))
}

fn cdx_license(c: &Value) -> Option<String> {
    let list = c.get("licenses")?.as_array()?;
    let parts: Vec<String> = list
        .iter()
        .filter_map(|l| {
            l.get("expression")
                .and_then(Value::as_str)
                .or_else(|| l.pointer("/license/id").and_then(Value::as_str))
                .or_else(|| l.pointer("/license/name").and_then(Value::as_str))
                .map(str::to_owned)
        })
        .collect();
    match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => Some(
            parts
                .iter()
                .map(|p| {
                    if p.contains(' ') {
                        format!("({p})")
                    } else {
                        p.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

fn cyclonedx(json: &Value) -> Inventory {
    let mut inv = Inventory::default();
    if let Some(m) = json.pointer("/metadata/component") {
        inv.subject.name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("sbom")
            .to_owned();
        inv.subject.version = m.get("version").and_then(Value::as_str).map(str::to_owned);
        inv.subject.purl = m.get("purl").and_then(Value::as_str).map(str::to_owned);
    }
    // bom-ref → purl, for the dependency graph.
    let mut refs: HashMap<String, String> = HashMap::new();
    let mut stack: Vec<&Value> = json
        .get("components")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    while let Some(c) = stack.pop() {
        if let Some(children) = c.get("components").and_then(Value::as_array) {
            stack.extend(children);
        }
        let Some(p) = c.get("purl").and_then(Value::as_str) else {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
            inv.warnings
                .push(format!("component `{name}` has no purl; left out"));
            continue;
        };
        let version = c.get("version").and_then(Value::as_str);
        let doc_name = c.get("name").and_then(Value::as_str);
        let Some(mut comp) = component(p, doc_name, version, &mut inv.warnings) else {
            continue;
        };
        comp.license = cdx_license(c);
        comp.scope = match c.get("scope").and_then(Value::as_str) {
            Some("optional") => Scope::Optional,
            Some("excluded") => Scope::Dev,
            _ => Scope::Required,
        };
        if let Some(r) = c.get("bom-ref").and_then(Value::as_str) {
            refs.insert(r.to_owned(), p.to_owned());
        }
        inv.components.push(comp);
    }
    let subject_ref = json
        .pointer("/metadata/component/bom-ref")
        .and_then(Value::as_str);
    let mut edges: HashMap<String, BTreeSet<String>> = HashMap::new();
    for d in json
        .get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(from) = d.get("ref").and_then(Value::as_str) else {
            continue;
        };
        let to: BTreeSet<String> = d
            .get("dependsOn")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|r| refs.get(r).cloned())
            .collect();
        if Some(from) == subject_ref {
            inv.subject.depends_on.extend(to);
        } else if let Some(p) = refs.get(from) {
            edges.entry(p.clone()).or_default().extend(to);
        }
    }
    for c in &mut inv.components {
        if let Some(e) = edges.remove(&c.purl) {
            c.depends_on.extend(e);
        }
    }
    inv
}

fn spdx_license(p: &Value) -> Option<String> {
    ["licenseConcluded", "licenseDeclared"]
        .iter()
        .filter_map(|k| p.get(*k).and_then(Value::as_str))
        .find(|l| !matches!(*l, "NOASSERTION" | "NONE" | ""))
        .map(str::to_owned)
}

fn spdx(json: &Value) -> Inventory {
    let mut inv = Inventory::default();
    inv.subject.name = json
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("sbom")
        .to_owned();
    let described: BTreeSet<&str> = json
        .get("documentDescribes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .chain(
            json.get("relationships")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|r| r.get("relationshipType").and_then(Value::as_str) == Some("DESCRIBES"))
                .filter_map(|r| r.get("relatedSpdxElement").and_then(Value::as_str)),
        )
        .collect();
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut subject_ids: BTreeSet<String> = BTreeSet::new();
    for p in json
        .get("packages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = p.get("SPDXID").and_then(Value::as_str).unwrap_or_default();
        let purl = p
            .get("externalRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| r.get("referenceType").and_then(Value::as_str) == Some("purl"))
            .and_then(|r| r.get("referenceLocator").and_then(Value::as_str));
        if described.contains(id) {
            subject_ids.insert(id.to_owned());
            if let Some(n) = p.get("name").and_then(Value::as_str) {
                n.clone_into(&mut inv.subject.name);
            }
            inv.subject.version = p
                .get("versionInfo")
                .and_then(Value::as_str)
                .map(str::to_owned);
            inv.subject.purl = purl.map(str::to_owned);
            continue;
        }
        let Some(purl) = purl else {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("?");
            inv.warnings.push(format!(
                "package `{name}` has no purl external reference; left out"
            ));
            continue;
        };
        let version = p.get("versionInfo").and_then(Value::as_str);
        let doc_name = p.get("name").and_then(Value::as_str);
        let Some(mut comp) = component(purl, doc_name, version, &mut inv.warnings) else {
            continue;
        };
        comp.license = spdx_license(p);
        ids.insert(id.to_owned(), purl.to_owned());
        inv.components.push(comp);
    }
    let mut edges: HashMap<String, BTreeSet<String>> = HashMap::new();
    let (mut dev, mut optional, mut required) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for r in json
        .get("relationships")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = r
            .get("relationshipType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (a, b) = (
            r.get("spdxElementId")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            r.get("relatedSpdxElement")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let (from, to) = match kind {
            "DEPENDS_ON" => (a, b),
            k if k.ends_with("DEPENDENCY_OF") => (b, a),
            _ => continue,
        };
        let Some(to) = ids.get(to).cloned() else {
            continue;
        };
        match kind {
            "DEV_DEPENDENCY_OF" | "TEST_DEPENDENCY_OF" | "BUILD_DEPENDENCY_OF" => {
                dev.insert(to.clone());
            }
            "OPTIONAL_DEPENDENCY_OF" => {
                optional.insert(to.clone());
            }
            _ => {
                required.insert(to.clone());
            }
        }
        if subject_ids.contains(from) {
            inv.subject.depends_on.insert(to);
        } else if let Some(f) = ids.get(from) {
            edges.entry(f.clone()).or_default().insert(to);
        }
    }
    for c in &mut inv.components {
        if let Some(e) = edges.remove(&c.purl) {
            c.depends_on.extend(e);
        }
        // Reached only through dev or optional edges: that is its scope.
        if !required.contains(&c.purl) {
            if optional.contains(&c.purl) {
                c.scope = Scope::Optional;
            } else if dev.contains(&c.purl) {
                c.scope = Scope::Dev;
            }
        }
    }
    inv
}
