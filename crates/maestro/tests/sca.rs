//! `maestro sca` and `maestro licenses` end to end.

mod common;

use std::path::{Path, PathBuf};

use common::{Repo, copy_dir, text};

fn osv_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../maestro-sca/tests/data/osv")
}

/// `maestro sca ARGS` against the fixture database, which is old: no age limit.
fn sca(repo: &Repo, args: &[&str]) -> std::process::Output {
    let db = osv_db();
    let mut all = vec!["sca"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--db",
        db.to_str().expect("utf-8 path"),
        "--max-db-age",
        "100000d",
    ]);
    repo.run(&all)
}

fn poetry_repo() -> Repo {
    let repo = Repo::new();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../maestro-sbom/tests/data/poetry"),
        repo.path(),
    );
    repo
}

#[test]
fn sca_fails_at_the_threshold_and_shows_the_database_age() {
    let repo = poetry_repo();
    let out = sca(&repo, &["--fail-on", "medium"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL     pkg:pypi/requests@2.31.0 GHSA-9wx4-h78v-vm56"),
        "{t}"
    );
    assert!(t.contains("fixed in 2.32.0"), "{t}");
    assert!(t.contains("newest change 2024-11-20"), "{t}");
    assert!(t.contains("skipped"), "{t}");

    let db = osv_db();
    let db = db.to_str().expect("utf-8 path");
    let out = repo.run(&["sca", "--db", db, "--fail-on", "none"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = repo.run(&["sca", "--db", db, "--fail-on", "none", "--max-db-age", "7d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("over max-db-age = \"7d\""),
        "{}",
        text(&out)
    );
}

#[test]
fn sca_policy_file_allow_list_and_json() {
    let repo = poetry_repo();
    repo.write(
        "maestro-policy.toml",
        "[advisories]\nfail-on = \"low\"\nunknown-severity = \"warn\"\n\n[[advisories.ignore]]\nid = \"CVE-2024-35195\"\nreason = \"verify is never disabled\"\nuntil = 2999-01-01\n\n[[advisories.ignore]]\nid = \"GHSA-jjg7-2v4v-x38h\"\nreason = \"r\"\nuntil = 2999-01-01\n\n[[advisories.ignore]]\nid = \"GHSA-34jh-p97f-mpxf\"\nreason = \"r\"\nuntil = 2999-01-01\n",
    );
    let db = osv_db();
    let report = repo.json(&["sca", "--db", db.to_str().expect("utf-8"), "--json"]);
    assert_eq!(report["passed"], true, "{report:#}");
    let req = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["name"] == "requests")
        .expect("requests");
    assert_eq!(req["status"], "allowed");
    assert_eq!(req["allowed"]["reason"], "verify is never disabled");
    assert_eq!(
        report["database"]["skipped"]
            .as_array()
            .expect("skipped")
            .len(),
        2
    );

    repo.write(
        "maestro-policy.toml",
        "[advisories]\nfail-on = \"severe\"\n",
    );
    let out = repo.run(&["sca", "--db", db.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("maestro-policy.toml:2: fail-on = \"severe\""),
        "{}",
        text(&out)
    );
}

#[test]
fn sca_without_a_database_is_an_environment_error() {
    let repo = poetry_repo();
    let out = repo.run(&["sca", "--db", "nowhere"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("nowhere"), "{}", text(&out));
    let empty = repo.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out = repo.run(&["sca", "--db", "empty"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("no OSV advisories"), "{}", text(&out));
}

#[test]
fn licenses_name_the_package_and_the_license() {
    let repo = Repo::new();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../maestro-sbom/tests/data/npm"),
        repo.path(),
    );
    let out = repo.run(&[
        "licenses",
        "--allow",
        "MIT",
        "--allow",
        "Apache-2.0",
        "--allow",
        "ISC",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL     pkg:npm/left-pad@1.3.0 · WTFPL: WTFPL is not allowed"),
        "{t}"
    );
    let out = repo.run(&["licenses", "--deny", "WTFPL", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["passed"], false);
    assert_eq!(v["issues"][0]["message"], "WTFPL: WTFPL is denied");
    let out = repo.run(&["licenses"]);
    assert_eq!(out.status.code(), Some(2));
    let out = repo.run(&["licenses", "--allow", "Apache 2"]);
    assert_eq!(out.status.code(), Some(2));
    let out = repo.run(&["licenses", "--deny", "GPL-3.0-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn sca_and_licenses_read_an_sbom_as_well_as_a_lockfile() {
    let repo = poetry_repo();
    let made = repo.run(&["sbom", "--format", "spdx", "-o", "bom.spdx.json"]);
    assert!(made.status.success(), "{}", text(&made));
    let from_lock = text(&sca(&repo, &["--fail-on", "none"]));
    let out = sca(&repo, &["bom.spdx.json", "--fail-on", "medium"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("pkg:pypi/requests@2.31.0 GHSA-9wx4-h78v-vm56"),
        "{t}"
    );
    // The same findings either way.
    let ids = |s: &str| {
        let mut v: Vec<String> = s
            .lines()
            .filter(|l| l.contains(" GHSA-") || l.contains(" PYSEC-"))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&t), ids(&from_lock), "{t}\n---\n{from_lock}");
}
