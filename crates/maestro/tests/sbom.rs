//! `maestro sbom` end to end: discovery, formats, output files, merging, errors.

mod common;

use std::path::Path;

use common::{Repo, copy_dir};

fn fixtures(repo: &Repo, which: &str, into: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../maestro-sbom/tests/data")
        .join(which);
    copy_dir(&src, &repo.path().join(into));
}

#[test]
fn writes_cyclonedx_to_stdout_and_spdx_to_a_file() {
    let repo = Repo::new();
    fixtures(&repo, "npm", "web");
    let bom = repo.json(&["sbom", "web"]);
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    assert_eq!(
        bom["metadata"]["component"]["purl"],
        "pkg:npm/fixture-app@1.2.0"
    );
    let n = bom["components"].as_array().expect("components").len();
    assert!(n > 10, "{n}");

    let out = repo
        .cmd(&[
            "sbom",
            "web/package-lock.json",
            "--format",
            "spdx",
            "-o",
            "sbom.spdx.json",
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("sbom: {n} components")),
        "{stderr}"
    );
    let spdx: serde_json::Value = serde_json::from_str(&repo.read("sbom.spdx.json")).expect("json");
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
    assert_eq!(spdx["creationInfo"]["created"], "2023-11-14T22:13:20Z");
}

#[test]
fn no_dev_leaves_out_development_dependencies() {
    let repo = Repo::new();
    fixtures(&repo, "npm", ".");
    let all = repo.json(&["sbom"]);
    let shipped = repo.json(&["sbom", "--no-dev"]);
    let names = |b: &serde_json::Value| -> Vec<String> {
        b["components"]
            .as_array()
            .expect("components")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert!(names(&all).contains(&"left-pad".to_owned()));
    assert!(!names(&shipped).contains(&"left-pad".to_owned()));
    assert_eq!(names(&all).len(), names(&shipped).len() + 1);
}

#[test]
fn several_lockfiles_merge_under_one_subject() {
    let repo = Repo::new();
    fixtures(&repo, "go", ".");
    fixtures(&repo, "poetry", ".");
    let bom = repo.json(&["sbom", "--name", "mono"]);
    assert_eq!(bom["metadata"]["component"]["name"], "mono");
    let purls: Vec<&str> = bom["components"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| c["purl"].as_str().expect("purl"))
        .collect();
    assert!(purls.contains(&"pkg:golang/github.com/google/uuid@v1.6.0"));
    assert!(purls.contains(&"pkg:pypi/requests@2.31.0"));
    let root_deps = &bom["dependencies"][0];
    assert_eq!(root_deps["ref"], "maestro:subject:mono");
    let on = root_deps["dependsOn"].as_array().expect("dependsOn");
    assert!(on.iter().any(|d| d == "pkg:pypi/requests@2.31.0"));
    assert!(
        on.iter()
            .any(|d| d == "pkg:golang/golang.org/x/text@v0.14.0")
    );
}

#[test]
fn bad_input_exits_2_naming_the_file_and_line() {
    let repo = Repo::new();
    repo.write(
        "go.sum",
        "golang.org/x/text v0.14.0 h1:abc=\nnot a go.sum line at all\n",
    );
    let out = repo.run(&["sbom"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("go.sum:2:"), "{stderr}");

    let empty = Repo::new();
    let out = empty.run(&["sbom"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no lockfile in ."), "{stderr}");

    let out = empty.run(&["sbom", "missing/Cargo.lock"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing/Cargo.lock does not exist"));
    // Nothing half-written.
    assert!(
        std::fs::read_dir(empty.path())
            .expect("dir")
            .next()
            .is_none()
    );
}
