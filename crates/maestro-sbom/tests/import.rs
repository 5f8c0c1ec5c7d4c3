//! SBOMs read back: what Maestro writes round-trips through both formats, and documents
//! from other tools are read with their quirks (nested components, foreign ecosystems,
//! components without purls).

use std::path::PathBuf;

use maestro_sbom::{
    Document, Format, Inventory, ReadOptions, import, read_input, read_lockfile, render,
};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// (purl, version, license, sorted edges) of one component.
type Facts = (String, Option<String>, Option<String>, Vec<String>);

fn facts(inv: &Inventory) -> Vec<Facts> {
    inv.components
        .iter()
        .map(|c| {
            (
                c.purl.clone(),
                c.version.clone(),
                c.license.clone(),
                c.depends_on.iter().cloned().collect(),
            )
        })
        .collect()
}

#[test]
fn maestro_sboms_round_trip_through_both_formats() {
    for lock in [
        "npm/package-lock.json",
        "cargo/ws/Cargo.lock",
        "go/go.sum",
        "poetry/poetry.lock",
    ] {
        let original = read_lockfile(&data(lock), &ReadOptions::default()).expect("fixture");
        let doc = Document::new(&original, jiff::Timestamp::UNIX_EPOCH, "test");
        for (format, name) in [
            (Format::CycloneDx, "bom.cdx.json"),
            (Format::Spdx, "bom.spdx.json"),
        ] {
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join(name);
            std::fs::write(&path, render(&original, format, &doc)).expect("write");
            let back = read_input(&path, &ReadOptions::default()).expect("reads back");
            assert_eq!(facts(&back), facts(&original), "{lock} via {name}");
            assert_eq!(
                back.subject.depends_on, original.subject.depends_on,
                "{lock} via {name}"
            );
            for (a, b) in back.components.iter().zip(&original.components) {
                assert_eq!(a.ecosystem, b.ecosystem);
                assert_eq!(a.name, b.name, "{lock} via {name}");
            }
        }
    }
}

#[test]
fn foreign_cyclonedx_documents_are_read_with_warnings_for_what_cannot_be_checked() {
    let doc = serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "metadata": {"component": {"bom-ref": "app", "name": "shop", "version": "2.0.0"}},
        "components": [
            {"bom-ref": "a", "name": "core", "group": "@babel", "version": "7.24.7",
             "purl": "pkg:npm/%40babel/core@7.24.7",
             "licenses": [{"license": {"id": "MIT"}}, {"expression": "Apache-2.0 OR BSD-3-Clause"}],
             "components": [
                {"bom-ref": "b", "name": "serde", "version": "1.0.0", "purl": "pkg:cargo/serde@1.0.0", "scope": "optional"}
             ]},
            {"name": "guava", "version": "33", "purl": "pkg:maven/com.google.guava/guava@33.0.0"},
            {"name": "vendored-thing", "version": "1"}
        ],
        "dependencies": [
            {"ref": "app", "dependsOn": ["a"]},
            {"ref": "a", "dependsOn": ["b", "unknown-ref"]}
        ]
    });
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("syft.json");
    std::fs::write(&path, doc.to_string()).expect("write");
    let inv = import::read(&path).expect("reads");
    assert_eq!(inv.subject.name, "shop");
    let purls: Vec<&str> = inv.components.iter().map(|c| c.purl.as_str()).collect();
    assert_eq!(
        purls,
        ["pkg:cargo/serde@1.0.0", "pkg:npm/%40babel/core@7.24.7"]
    );
    let babel = &inv.components[1];
    assert_eq!(babel.name, "@babel/core");
    assert_eq!(
        babel.license.as_deref(),
        Some("MIT AND (Apache-2.0 OR BSD-3-Clause)")
    );
    assert_eq!(
        babel.depends_on.iter().collect::<Vec<_>>(),
        ["pkg:cargo/serde@1.0.0"]
    );
    assert_eq!(inv.subject.depends_on.len(), 1);
    assert_eq!(inv.components[0].scope, maestro_sbom::Scope::Optional);
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.contains("pkg:maven") && w.contains("not one Maestro checks")),
        "{:?}",
        inv.warnings
    );
    assert!(
        inv.warnings
            .iter()
            .any(|w| w.contains("`vendored-thing` has no purl")),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn json_that_is_not_an_sbom_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("package.json");
    std::fs::write(&path, "{\"name\": \"x\"}").expect("write");
    let err = read_input(&path, &ReadOptions::default()).expect_err("not an sbom");
    assert!(
        err.to_string()
            .contains("package.json: neither a CycloneDX"),
        "{err}"
    );
    std::fs::write(&path, "{\n\"bomFormat\": \n").expect("write");
    let err = import::read(&path).expect_err("broken");
    assert!(err.to_string().contains("package.json:3"), "{err}");
}
