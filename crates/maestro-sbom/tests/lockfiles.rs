//! Every reader against real-format lockfiles, and every document against the official
//! JSON schemas shipped in `schema/external/`.

use std::path::{Path, PathBuf};

use maestro_sbom::{
    Document, Ecosystem, Format, Inventory, LockfileKind, ReadOptions, SbomError, Scope,
    read_lockfile, render,
};
use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn purls(inv: &Inventory) -> Vec<&str> {
    inv.components.iter().map(|c| c.purl.as_str()).collect()
}

fn read(rel: &str) -> Inventory {
    read_lockfile(&data(rel), &ReadOptions::default()).expect("fixture reads")
}

fn doc(inv: &Inventory) -> Document {
    Document::new(
        inv,
        jiff::Timestamp::from_second(1_700_000_000).expect("time"),
        "0.1.0",
    )
}

fn load(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("schema/external").join(rel))
        .expect("schema shipped");
    serde_json::from_str(&text).expect("schema is JSON")
}

fn schema_errors(format: Format, bom: &Value) -> Vec<String> {
    let validator = match format {
        Format::CycloneDx => {
            let registry = jsonschema::Registry::new()
                .add(
                    "http://cyclonedx.org/schema/spdx.schema.json",
                    load("cyclonedx/spdx.schema.json"),
                )
                .expect("registry")
                .add(
                    "http://cyclonedx.org/schema/jsf-0.82.schema.json",
                    load("cyclonedx/jsf-0.82.schema.json"),
                )
                .expect("registry")
                .prepare()
                .expect("registry");
            jsonschema::options()
                .with_registry(&registry)
                .should_validate_formats(true)
                .build(&load("cyclonedx/bom-1.6.schema.json"))
                .expect("CycloneDX schema compiles")
        }
        Format::Spdx => jsonschema::options()
            .with_draft(jsonschema::Draft::Draft7)
            .should_validate_formats(true)
            .build(&load("spdx/spdx-schema.json"))
            .expect("SPDX schema compiles"),
    };
    validator
        .iter_errors(bom)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Renders both formats and checks each against its schema, plus the invariants every
/// scanner relies on: each component has a purl, each reference resolves.
fn assert_valid(inv: &Inventory) -> (Value, Value) {
    let d = doc(inv);
    let cdx: Value = serde_json::from_slice(&render(inv, Format::CycloneDx, &d)).expect("json");
    let errors = schema_errors(Format::CycloneDx, &cdx);
    assert!(errors.is_empty(), "CycloneDX schema errors: {errors:#?}");
    let spdx: Value = serde_json::from_slice(&render(inv, Format::Spdx, &d)).expect("json");
    let errors = schema_errors(Format::Spdx, &spdx);
    assert!(errors.is_empty(), "SPDX schema errors: {errors:#?}");

    let comps = cdx["components"].as_array().expect("components");
    assert_eq!(comps.len(), inv.components.len());
    let mut refs: Vec<&str> = comps
        .iter()
        .map(|c| c["bom-ref"].as_str().expect("ref"))
        .collect();
    refs.push(
        cdx["metadata"]["component"]["bom-ref"]
            .as_str()
            .expect("subject ref"),
    );
    for c in comps {
        assert!(
            c["purl"].as_str().is_some_and(|p| p.starts_with("pkg:")),
            "{c}"
        );
    }
    for dep in cdx["dependencies"].as_array().expect("deps") {
        assert!(refs.contains(&dep["ref"].as_str().expect("ref")));
        for on in dep["dependsOn"].as_array().expect("dependsOn") {
            assert!(refs.contains(&on.as_str().expect("str")), "dangling {on}");
        }
    }
    let pkgs = spdx["packages"].as_array().expect("packages");
    assert_eq!(pkgs.len(), inv.components.len() + 1);
    // The spec's rule for element ids, which its JSON schema does not encode.
    for p in pkgs {
        let id = p["SPDXID"].as_str().expect("id");
        let rest = id.strip_prefix("SPDXRef-").expect("SPDXRef- prefix");
        assert!(
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "{id}"
        );
    }
    (cdx, spdx)
}

/// The CycloneDX component whose `field` is `value`.
fn cdx_component<'a>(cdx: &'a Value, field: &str, value: &str) -> &'a Value {
    cdx["components"]
        .as_array()
        .expect("components")
        .iter()
        .find(|c| c[field] == value)
        .unwrap_or_else(|| panic!("no component with {field} = {value}"))
}

fn component<'a>(inv: &'a Inventory, purl: &str) -> &'a maestro_sbom::Component {
    inv.get(purl).unwrap_or_else(|| {
        panic!(
            "no {purl} in {:#?}",
            inv.components.iter().map(|c| &c.purl).collect::<Vec<_>>()
        )
    })
}

#[test]
fn cargo_workspace_with_two_versions_and_a_git_source() {
    let inv = read("cargo/ws/Cargo.lock");
    assert_eq!(inv.subject.name, "ws");
    assert_eq!(inv.subject.purl, None);
    assert_eq!(
        inv.subject.depends_on.iter().collect::<Vec<_>>(),
        ["pkg:cargo/app@0.2.0", "pkg:cargo/corelib@0.2.0"]
    );
    assert_eq!(inv.components.len(), 6);
    let app = component(&inv, "pkg:cargo/app@0.2.0");
    assert_eq!(
        app.depends_on.iter().collect::<Vec<_>>(),
        [
            "pkg:cargo/bitflags@1.3.2",
            "pkg:cargo/corelib@0.2.0",
            "pkg:cargo/serde@1.0.210"
        ]
    );
    let core = component(&inv, "pkg:cargo/corelib@0.2.0");
    assert!(core.depends_on.contains("pkg:cargo/bitflags@2.6.0"));
    let forked = "pkg:cargo/forked@0.9.0?vcs_url=git%2Bhttps://git.example/forked.git%405f3c1e0a9d2b7c4e6f8a1b3d5c7e9f0a2b4d6c8e";
    assert!(core.depends_on.contains(forked), "{:?}", core.depends_on);
    assert!(component(&inv, forked).hashes.is_empty());
    let serde = component(&inv, "pkg:cargo/serde@1.0.210");
    assert_eq!(serde.hashes[0].alg, maestro_sbom::HashAlg::Sha256);
    assert_eq!(
        serde.hashes[0].hex,
        "c8e3592472072e6e22e0a54d5904d9febf8508f65fb8552499a1abc7d1078c3a"
    );
    let (cdx, spdx) = assert_valid(&inv);
    let s = cdx_component(&cdx, "name", "serde");
    assert_eq!(s["hashes"][0]["alg"], "SHA-256");
    assert!(
        spdx["relationships"]
            .as_array()
            .expect("rels")
            .iter()
            .any(|r| {
                r["relationshipType"] == "DEPENDS_ON"
                    && r["spdxElementId"] == "SPDXRef-Package-cargo-app-0.2.0"
                    && r["relatedSpdxElement"] == "SPDXRef-Package-cargo-bitflags-1.3.2"
            })
    );
}

#[test]
fn cargo_format_1_checksums_come_from_metadata() {
    let inv = read("cargo/v1/Cargo.lock");
    let libc = component(&inv, "pkg:cargo/libc@0.2.40");
    assert_eq!(libc.hashes.len(), 1);
    assert!(
        component(&inv, "pkg:cargo/tool@0.1.0")
            .depends_on
            .contains("pkg:cargo/libc@0.2.40")
    );
    assert_valid(&inv);
}

#[test]
fn this_repository_lockfile_with_licenses_from_the_registry() {
    let lock = repo_root().join("Cargo.lock");
    let opts = ReadOptions::from_env();
    let inv = read_lockfile(&lock, &opts).expect("our own lockfile reads");
    let text = std::fs::read_to_string(&lock).expect("lockfile");
    let packages = text.matches("[[package]]").count();
    assert_eq!(inv.components.len(), packages);
    assert!(
        inv.components
            .iter()
            .all(|c| c.ecosystem == Ecosystem::Cargo)
    );
    let serde = inv
        .components
        .iter()
        .find(|c| c.name == "serde")
        .expect("serde is a dependency");
    assert_eq!(serde.hashes.len(), 1);
    // Building this test fetched serde's sources into the registry, so its license is known.
    if let Some(src) = &opts.cargo_registry_src {
        let unpacked = std::fs::read_dir(src)
            .expect("registry src")
            .filter_map(Result::ok)
            .any(|d| {
                d.path()
                    .join(format!("serde-{}", serde.version.as_deref().unwrap_or("")))
                    .is_dir()
            });
        if unpacked {
            assert_eq!(serde.license.as_deref(), Some("MIT OR Apache-2.0"));
        }
    }
    assert_valid(&inv);
}

#[test]
fn npm_lockfile_v3_follows_node_resolution_and_workspaces() {
    let inv = read("npm/package-lock.json");
    assert_eq!(
        inv.subject.purl.as_deref(),
        Some("pkg:npm/fixture-app@1.2.0")
    );
    let direct: Vec<&str> = inv.subject.depends_on.iter().map(String::as_str).collect();
    for p in [
        "pkg:npm/%40babel/code-frame@7.24.2",
        "pkg:npm/debug@2.6.9",
        "pkg:npm/ms@2.1.3",
        "pkg:npm/left-pad@1.3.0",
        "pkg:npm/is-number@7.0.0",
        "pkg:npm/%40fixture/a@0.1.0",
    ] {
        assert!(
            direct.contains(&p),
            "subject should depend on {p}: {direct:?}"
        );
    }
    // debug@2 finds its own nested ms@2.0.0, not the project's 2.1.3.
    let debug = component(&inv, "pkg:npm/debug@2.6.9");
    assert_eq!(
        debug.depends_on.iter().collect::<Vec<_>>(),
        ["pkg:npm/ms@2.0.0"]
    );
    // The workspace's nested ms@2.0.0 is the same package: one component.
    let ws = component(&inv, "pkg:npm/%40fixture/a@0.1.0");
    assert_eq!(
        ws.depends_on.iter().collect::<Vec<_>>(),
        ["pkg:npm/ms@2.0.0"]
    );
    assert_eq!(ws.license.as_deref(), Some("Apache-2.0"));
    assert_eq!(inv.components.iter().filter(|c| c.name == "ms").count(), 2);
    assert_eq!(component(&inv, "pkg:npm/left-pad@1.3.0").scope, Scope::Dev);
    assert_eq!(
        component(&inv, "pkg:npm/is-number@7.0.0").scope,
        Scope::Optional
    );
    let cf = component(&inv, "pkg:npm/%40babel/code-frame@7.24.2");
    assert_eq!(cf.hashes[0].alg, maestro_sbom::HashAlg::Sha512);
    assert_eq!(cf.hashes[0].hex.len(), 128);
    assert_eq!(cf.license.as_deref(), Some("MIT"));
    assert!(cf.depends_on.contains("pkg:npm/%40babel/highlight@7.25.9"));
    let (cdx, spdx) = assert_valid(&inv);
    let cf = cdx_component(&cdx, "purl", "pkg:npm/%40babel/code-frame@7.24.2");
    assert_eq!(cf["group"], "@babel");
    assert_eq!(cf["name"], "code-frame");
    assert_eq!(cf["licenses"][0]["expression"], "MIT");
    let lp = cdx_component(&cdx, "name", "left-pad");
    assert_eq!(lp["scope"], "excluded");
    assert!(
        spdx["relationships"]
            .as_array()
            .expect("rels")
            .iter()
            .any(|r| {
                r["relationshipType"] == "DEV_DEPENDENCY_OF"
                    && r["relatedSpdxElement"] == "SPDXRef-Root"
            })
    );
}

#[test]
fn npm_lockfile_v1_is_refused_with_the_upgrade_command() {
    let err = read_lockfile(&data("npm-v1/package-lock.json"), &ReadOptions::default())
        .expect_err("v1 has no packages map");
    let msg = err.to_string();
    assert!(msg.contains("lockfileVersion 1"), "{msg}");
    assert!(msg.contains("--lockfile-version 3"), "{msg}");
    assert!(msg.contains("npm-v1/package-lock.json"), "{msg}");
}

#[test]
fn poetry_lock_with_groups_and_pyproject_roots() {
    let inv = read("poetry/poetry.lock");
    assert_eq!(
        inv.subject.purl.as_deref(),
        Some("pkg:pypi/fixture-svc@0.3.0")
    );
    assert_eq!(
        inv.subject.depends_on.iter().collect::<Vec<_>>(),
        [
            "pkg:pypi/pytest@8.0.0",
            "pkg:pypi/pyyaml@6.0.1",
            "pkg:pypi/requests@2.31.0"
        ]
    );
    let requests = component(&inv, "pkg:pypi/requests@2.31.0");
    assert_eq!(requests.depends_on.len(), 4);
    assert!(
        requests
            .depends_on
            .contains("pkg:pypi/charset-normalizer@3.3.2")
    );
    assert_eq!(requests.distributions.len(), 1);
    assert_eq!(
        requests.distributions[0].file,
        "requests-2.31.0-py3-none-any.whl"
    );
    assert_eq!(component(&inv, "pkg:pypi/pytest@8.0.0").scope, Scope::Dev);
    assert_eq!(component(&inv, "pkg:pypi/pyyaml@6.0.1").name, "PyYAML");
    let (cdx, _) = assert_valid(&inv);
    let req = cdx_component(&cdx, "name", "requests");
    assert_eq!(req["externalReferences"][0]["hashes"][0]["alg"], "SHA-256");
}

#[test]
fn requirements_follow_includes_pins_and_hashes() {
    let inv = read("requirements/requirements.txt");
    let purls = purls(&inv);
    assert_eq!(
        purls,
        [
            "pkg:pypi/certifi@2024.2.2",
            "pkg:pypi/django-rest-framework@3.15.1",
            "pkg:pypi/flask",
            "pkg:pypi/idna@3.6",
            "pkg:pypi/requests@2.31.0",
            "pkg:pypi/urllib3@2.2.1",
        ]
    );
    let urllib3 = component(&inv, "pkg:pypi/urllib3@2.2.1");
    assert_eq!(urllib3.hashes.len(), 1);
    assert_eq!(
        urllib3.properties["maestro:python:marker"],
        "python_version >= \"3.8\""
    );
    assert_eq!(
        component(&inv, "pkg:pypi/flask").properties["maestro:unpinned"],
        ">=2.0"
    );
    assert!(
        inv.warnings.iter().any(|w| w.contains("local-package")),
        "{:?}",
        inv.warnings
    );
    assert_eq!(inv.subject.depends_on.len(), 6);
    assert_valid(&inv);
}

#[test]
fn go_sum_lists_built_modules_and_go_mod_roots() {
    let inv = read("go/go.sum");
    let purls = purls(&inv);
    assert_eq!(
        purls,
        [
            "pkg:golang/github.com/BurntSushi/toml@v1.3.2",
            "pkg:golang/github.com/docker/docker@v24.0.7%2Bincompatible",
            "pkg:golang/github.com/google/uuid@v1.6.0",
            "pkg:golang/golang.org/x/text@v0.14.0",
        ]
    );
    assert_eq!(
        inv.subject.purl.as_deref(),
        Some("pkg:golang/example.com/fixture/svc")
    );
    assert_eq!(
        inv.subject.depends_on.iter().collect::<Vec<_>>(),
        [
            "pkg:golang/github.com/google/uuid@v1.6.0",
            "pkg:golang/golang.org/x/text@v0.14.0"
        ]
    );
    assert!(
        component(&inv, "pkg:golang/github.com/google/uuid@v1.6.0").properties["maestro:go:h1"]
            .starts_with("h1:")
    );
    assert_valid(&inv);
}

#[test]
fn the_validators_reject_what_the_schemas_forbid() {
    // The schema checks above could pass vacuously if the validators accepted anything.
    let inv = read("go/go.sum");
    let d = doc(&inv);
    let mut cdx: Value =
        serde_json::from_slice(&render(&inv, Format::CycloneDx, &d)).expect("json");
    cdx["components"][0]["hashes"] = serde_json::json!([{"alg": "SHA-256", "content": "xyz"}]);
    assert!(!schema_errors(Format::CycloneDx, &cdx).is_empty());
    let mut spdx: Value = serde_json::from_slice(&render(&inv, Format::Spdx, &d)).expect("json");
    spdx["packages"][1]["filesAnalyzed"] = serde_json::json!("no");
    assert!(!schema_errors(Format::Spdx, &spdx).is_empty());
    spdx["packages"][1]["filesAnalyzed"] = serde_json::json!(false);
    assert!(schema_errors(Format::Spdx, &spdx).is_empty());
    spdx.as_object_mut().expect("object").remove("dataLicense");
    assert!(!schema_errors(Format::Spdx, &spdx).is_empty());
}

#[test]
fn documents_are_deterministic_under_source_date_epoch() {
    let inv = read("npm/package-lock.json");
    let t = jiff::Timestamp::from_second(1_700_000_000).expect("time");
    let a = render(&inv, Format::CycloneDx, &Document::new(&inv, t, "0.1.0"));
    let b = render(
        &read("npm/package-lock.json"),
        Format::CycloneDx,
        &Document::new(&inv, t, "0.1.0"),
    );
    assert_eq!(a, b);
    let later = Document::new(
        &inv,
        jiff::Timestamp::from_second(1_700_000_001).expect("time"),
        "0.1.0",
    );
    let c = render(&inv, Format::CycloneDx, &later);
    assert_ne!(a, c);
    let v: Value = serde_json::from_slice(&a).expect("json");
    assert_eq!(v["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
}

#[test]
fn license_refs_are_defined_in_spdx_and_unknown_strings_kept_as_names() {
    let mut inv = read("go/go.sum");
    inv.components[0].license = Some("MIT AND LicenseRef-Acme-EULA".into());
    inv.components[1].license = Some("SEE LICENSE IN LICENSE.md".into());
    let (cdx, spdx) = assert_valid(&inv);
    assert_eq!(
        spdx["hasExtractedLicensingInfos"][0]["licenseId"],
        "LicenseRef-Acme-EULA"
    );
    assert_eq!(spdx["packages"][2]["licenseDeclared"], "NOASSERTION");
    assert_eq!(
        cdx["components"][1]["licenses"][0]["license"]["name"],
        "SEE LICENSE IN LICENSE.md"
    );
}

fn parse_error(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    read_lockfile(&path, &ReadOptions::default())
        .expect_err("malformed input is refused")
        .to_string()
}

#[test]
fn malformed_lockfiles_name_the_file_and_line() {
    let e = parse_error(
        "Cargo.lock",
        "version = 4\n\n[[package]]\nname = \"a\"\nversion = 1\n",
    );
    assert!(e.contains("Cargo.lock:5:"), "{e}");
    let e = parse_error(
        "Cargo.lock",
        "version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"zz\"\n",
    );
    assert!(e.contains("Cargo.lock:3:") && e.contains("checksum"), "{e}");
    let e = parse_error(
        "Cargo.lock",
        "[[package]]\nname = \"a\"\nversion = \"1.0.0\"\ndependencies = [\"ghost\"]\n",
    );
    assert!(
        e.contains("\"ghost\"") && e.contains("cargo generate-lockfile"),
        "{e}"
    );
    let e = parse_error(
        "package-lock.json",
        "{\n  \"lockfileVersion\": 3,\n  \"packages\": {\n}}}\n",
    );
    assert!(e.contains("package-lock.json:4"), "{e}");
    let e = parse_error("go.sum", "golang.org/x/text v0.14.0 h1:abc\nbroken line\n");
    assert!(e.contains("go.sum:2:"), "{e}");
    let e = parse_error("requirements.txt", "ok==1\n\nnot a name!==2\n");
    assert!(e.contains("requirements.txt:3:"), "{e}");
    let e = parse_error("poetry.lock", "[[package]]\nname = \"x\"\n");
    assert!(e.contains("poetry.lock"), "{e}");
}

#[test]
fn oversized_and_unknown_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("go.sum");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(maestro_sbom::MAX_LOCKFILE_BYTES + 1)
        .expect("sparse file");
    let err = read_lockfile(&big, &ReadOptions::default()).expect_err("too large");
    assert!(matches!(err, SbomError::TooLarge { .. }), "{err}");
    let err = read_lockfile(Path::new("yarn.lock"), &ReadOptions::default()).expect_err("unknown");
    assert!(
        err.to_string().contains("Cargo.lock, package-lock.json"),
        "{err}"
    );
    assert_eq!(
        LockfileKind::of(Path::new("requirements-dev.txt")),
        Some(LockfileKind::Requirements)
    );
}

#[test]
fn discovery_prefers_the_real_lockfile() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["poetry.lock", "requirements.txt", "Cargo.lock", "README.md"] {
        std::fs::write(dir.path().join(f), "").expect("write");
    }
    let found: Vec<String> = maestro_sbom::discover(dir.path())
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(found, ["Cargo.lock", "poetry.lock"]);
}
