//! CycloneDX 1.6 JSON.

use serde_json::{Map, Value, json};

use crate::inventory::{Component, Ecosystem, Inventory, Scope};
use crate::{Document, license};

/// Renders `inv` as a CycloneDX 1.6 BOM. Every component has a `bom-ref` equal to its
/// purl, so `dependencies` entries are purls too.
pub fn render(inv: &Inventory, doc: &Document) -> Value {
    let subject_ref = inv.subject.bom_ref();
    let mut subject = Map::new();
    subject.insert("type".into(), json!("application"));
    subject.insert("bom-ref".into(), json!(subject_ref));
    subject.insert("name".into(), json!(inv.subject.name));
    if let Some(v) = &inv.subject.version {
        subject.insert("version".into(), json!(v));
    }
    if let Some(p) = &inv.subject.purl {
        subject.insert("purl".into(), json!(p));
    }

    let mut dependencies = vec![json!({
        "ref": subject_ref,
        "dependsOn": inv.subject.depends_on,
    })];
    dependencies.extend(inv.components.iter().map(|c| {
        json!({
            "ref": c.purl,
            "dependsOn": c.depends_on,
        })
    }));

    let mut metadata = Map::new();
    metadata.insert("timestamp".into(), json!(doc.timestamp()));
    metadata.insert(
        "tools".into(),
        json!({"components": [{
            "type": "application",
            "name": "maestro",
            "version": doc.tool_version,
        }]}),
    );
    metadata.insert("component".into(), Value::Object(subject));
    metadata.insert(
        "properties".into(),
        Value::Array(
            inv.sources
                .iter()
                .map(|s| json!({"name": "maestro:lockfile", "value": s.display().to_string()}))
                .collect(),
        ),
    );

    json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", doc.uuid),
        "version": 1,
        "metadata": metadata,
        "components": inv.components.iter().map(component).collect::<Vec<_>>(),
        "dependencies": dependencies,
    })
}

fn hashes(hs: &[crate::Hash]) -> Value {
    hs.iter()
        .map(|h| json!({"alg": h.alg.cyclonedx(), "content": h.hex}))
        .collect()
}

fn component(c: &Component) -> Value {
    let mut m = Map::new();
    m.insert("type".into(), json!("library"));
    m.insert("bom-ref".into(), json!(c.purl));
    // npm scopes are CycloneDX groups (`@babel` / `core`).
    match c.name.split_once('/') {
        Some((scope, name)) if c.ecosystem == Ecosystem::Npm && scope.starts_with('@') => {
            m.insert("group".into(), json!(scope));
            m.insert("name".into(), json!(name));
        }
        _ => {
            m.insert("name".into(), json!(c.name));
        }
    }
    if let Some(v) = &c.version {
        m.insert("version".into(), json!(v));
    }
    m.insert(
        "scope".into(),
        json!(match c.scope {
            Scope::Required => "required",
            Scope::Optional => "optional",
            Scope::Dev => "excluded",
        }),
    );
    if !c.hashes.is_empty() {
        m.insert("hashes".into(), hashes(&c.hashes));
    }
    if let Some(l) = &c.license {
        let entry = match license::spdx_expression(l) {
            Some(expr) => json!({"expression": expr}),
            None => json!({"license": {"name": l}}),
        };
        m.insert("licenses".into(), json!([entry]));
    }
    m.insert("purl".into(), json!(c.purl));
    let mut refs: Vec<Value> = Vec::new();
    if let Some(d) = &c.download {
        refs.push(json!({"type": "distribution", "url": d}));
    }
    refs.extend(
        c.distributions
            .iter()
            .map(|d| json!({"type": "distribution", "url": d.file, "hashes": hashes(&d.hashes)})),
    );
    if !refs.is_empty() {
        m.insert("externalReferences".into(), Value::Array(refs));
    }
    let mut props: Vec<Value> = c
        .properties
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    if c.scope == Scope::Dev {
        props.push(json!({"name": "maestro:dev", "value": "true"}));
    }
    if !props.is_empty() {
        m.insert("properties".into(), Value::Array(props));
    }
    Value::Object(m)
}
