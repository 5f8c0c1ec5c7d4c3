//! SPDX 2.3 JSON.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::inventory::{Component, Inventory, Scope};
use crate::{Document, license};

const ROOT_ID: &str = "SPDXRef-Root";

/// `SPDXRef-` followed only by letters, digits, `.` and `-`.
fn spdx_id(taken: &mut BTreeSet<String>, c: &Component) -> String {
    let raw = format!(
        "{}-{}-{}",
        c.ecosystem.purl_type(),
        c.name,
        c.version.as_deref().unwrap_or("")
    );
    let clean: String = raw
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' {
                ch
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_end_matches('-');
    let mut id = format!("SPDXRef-Package-{clean}");
    let mut n = 2;
    while !taken.insert(id.clone()) {
        id = format!("SPDXRef-Package-{clean}-{n}");
        n += 1;
    }
    id
}

/// Renders `inv` as an SPDX 2.3 document: one package per component plus the subject,
/// which the document `DESCRIBES`; edges are `DEPENDS_ON`, or `DEV_DEPENDENCY_OF` /
/// `OPTIONAL_DEPENDENCY_OF` (reversed, as SPDX defines them) for dev and optional ones.
pub fn render(inv: &Inventory, doc: &Document) -> Value {
    let mut taken = BTreeSet::from([ROOT_ID.to_owned()]);
    let ids: BTreeMap<&str, String> = inv
        .components
        .iter()
        .map(|c| (c.purl.as_str(), spdx_id(&mut taken, c)))
        .collect();
    let mut refs_used = BTreeSet::new();

    let mut root = Map::new();
    root.insert("name".into(), json!(inv.subject.name));
    root.insert("SPDXID".into(), json!(ROOT_ID));
    if let Some(v) = &inv.subject.version {
        root.insert("versionInfo".into(), json!(v));
    }
    root.insert("downloadLocation".into(), json!("NOASSERTION"));
    root.insert("filesAnalyzed".into(), json!(false));
    root.insert("primaryPackagePurpose".into(), json!("APPLICATION"));
    if let Some(p) = &inv.subject.purl {
        root.insert("externalRefs".into(), json!([purl_ref(p)]));
    }
    let mut packages = vec![Value::Object(root)];
    for c in &inv.components {
        packages.push(package(c, &ids[c.purl.as_str()], &mut refs_used));
    }

    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": ROOT_ID,
    })];
    let scope_of = |purl: &str| inv.get(purl).map_or(Scope::Required, |c| c.scope);
    let mut edge = |from: &str, to: &str, to_purl: &str| {
        relationships.push(match scope_of(to_purl) {
            Scope::Required => json!({
                "spdxElementId": from, "relationshipType": "DEPENDS_ON", "relatedSpdxElement": to,
            }),
            Scope::Dev => json!({
                "spdxElementId": to, "relationshipType": "DEV_DEPENDENCY_OF", "relatedSpdxElement": from,
            }),
            Scope::Optional => json!({
                "spdxElementId": to, "relationshipType": "OPTIONAL_DEPENDENCY_OF", "relatedSpdxElement": from,
            }),
        });
    };
    for d in &inv.subject.depends_on {
        edge(ROOT_ID, &ids[d.as_str()], d);
    }
    for c in &inv.components {
        for d in &c.depends_on {
            edge(&ids[c.purl.as_str()], &ids[d.as_str()], d);
        }
    }

    let mut out = Map::new();
    out.insert("spdxVersion".into(), json!("SPDX-2.3"));
    out.insert("dataLicense".into(), json!("CC0-1.0"));
    out.insert("SPDXID".into(), json!("SPDXRef-DOCUMENT"));
    out.insert("name".into(), json!(inv.subject.name));
    out.insert(
        "documentNamespace".into(),
        json!(format!(
            "https://spdx.org/spdxdocs/maestro-{}-{}",
            inv.subject
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                })
                .collect::<String>(),
            doc.uuid
        )),
    );
    out.insert(
        "creationInfo".into(),
        json!({
            "created": doc.timestamp(),
            "creators": [format!("Tool: maestro-{}", doc.tool_version)],
            "licenseListVersion": spdx::license_version(),
        }),
    );
    if !refs_used.is_empty() {
        out.insert(
            "hasExtractedLicensingInfos".into(),
            refs_used
                .iter()
                .map(|r| {
                    json!({
                        "licenseId": r,
                        "extractedText": "NOASSERTION",
                        "comment": "Declared by the package; its text is not in the lockfile.",
                    })
                })
                .collect(),
        );
    }
    out.insert("packages".into(), Value::Array(packages));
    out.insert("relationships".into(), Value::Array(relationships));
    Value::Object(out)
}

fn purl_ref(purl: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    })
}

fn package(c: &Component, id: &str, refs_used: &mut BTreeSet<String>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(c.name));
    m.insert("SPDXID".into(), json!(id));
    if let Some(v) = &c.version {
        m.insert("versionInfo".into(), json!(v));
    }
    m.insert(
        "downloadLocation".into(),
        json!(
            c.download
                .as_deref()
                .filter(|d| d.contains("://"))
                .unwrap_or("NOASSERTION")
        ),
    );
    m.insert("filesAnalyzed".into(), json!(false));
    if !c.hashes.is_empty() {
        m.insert(
            "checksums".into(),
            c.hashes
                .iter()
                .map(|h| json!({"algorithm": h.alg.spdx(), "checksumValue": h.hex}))
                .collect(),
        );
    }
    let declared = c.license.as_deref().and_then(license::spdx_expression);
    if let Some(expr) = &declared {
        refs_used.extend(license::license_refs(expr));
    }
    m.insert("licenseConcluded".into(), json!("NOASSERTION"));
    m.insert(
        "licenseDeclared".into(),
        json!(declared.as_deref().unwrap_or("NOASSERTION")),
    );
    m.insert("copyrightText".into(), json!("NOASSERTION"));
    m.insert("externalRefs".into(), json!([purl_ref(&c.purl)]));
    m.insert("primaryPackagePurpose".into(), json!("LIBRARY"));
    Value::Object(m)
}
