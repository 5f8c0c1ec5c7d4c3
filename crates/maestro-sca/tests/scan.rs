//! Matching real-format lockfiles against an OSV directory, and the policies on top.

use std::path::PathBuf;

use maestro_sbom::{Inventory, ReadOptions, read_lockfile};
use maestro_sca::osv::Database;
use maestro_sca::policy::{AdvisoryPolicy, PolicyFile, evaluate};
use maestro_sca::severity::Level;
use maestro_sca::{Scan, scan};

fn lockfile(rel: &str) -> Inventory {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../maestro-sbom/tests/data")
        .join(rel);
    read_lockfile(&p, &ReadOptions::default()).expect("fixture reads")
}

fn db() -> Database {
    Database::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/osv"))
        .expect("database opens")
}

fn ids(s: &Scan) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = s
        .findings
        .iter()
        .map(|f| (f.purl.clone(), f.id.clone()))
        .collect();
    v.sort();
    v
}

fn at(date: &str) -> jiff::Timestamp {
    format!("{date}T12:00:00Z").parse().expect("time")
}

#[test]
fn a_bad_advisory_is_skipped_and_reported_never_fatal() {
    let db = db();
    assert_eq!(db.advisories.len(), 11);
    assert_eq!(db.withdrawn, 1);
    let mut skipped: Vec<String> = db
        .skipped
        .iter()
        .map(|s| {
            format!(
                "{}: {}",
                s.file.file_name().expect("name").to_string_lossy(),
                s.reason
            )
        })
        .collect();
    skipped.sort();
    assert_eq!(skipped.len(), 2, "{skipped:#?}");
    assert!(skipped[0].starts_with("bad-version.json: affected[0].ranges[0].events[1]: \"2.x\" is not a valid SemVer version"), "{skipped:#?}");
    assert!(skipped[1].starts_with("not-json.json: EOF"), "{skipped:#?}");
    // A severity in a format Maestro does not know is noted; the advisory still counts.
    assert_eq!(db.notes.len(), 1);
    assert!(db.notes[0].message.contains("CVSS_V5"));
    assert_eq!(
        db.newest,
        Some("2024-11-20T00:00:00Z".parse().expect("time"))
    );
}

#[test]
fn python_findings_with_duplicates_merged_and_fixes_named() {
    let s = scan(&lockfile("poetry/poetry.lock"), &db());
    assert_eq!(
        ids(&s),
        [
            (
                "pkg:pypi/certifi@2024.2.2".to_owned(),
                "GHSA-248v-346w-9cwc".to_owned()
            ),
            (
                "pkg:pypi/idna@3.6".to_owned(),
                "GHSA-jjg7-2v4v-x38h".to_owned()
            ),
            (
                "pkg:pypi/requests@2.31.0".to_owned(),
                "GHSA-9wx4-h78v-vm56".to_owned()
            ),
            (
                "pkg:pypi/urllib3@2.2.1".to_owned(),
                "GHSA-34jh-p97f-mpxf".to_owned()
            ),
        ]
    );
    let req = s
        .findings
        .iter()
        .find(|f| f.name == "requests")
        .expect("requests");
    assert!(
        req.aliases.contains(&"PYSEC-2024-TEST-requests".to_owned()),
        "{:?}",
        req.aliases
    );
    assert_eq!(req.fixed.as_deref(), Some("2.32.0"));
    assert_eq!(req.severity.level, Some(Level::Medium));
    let urllib3 = s
        .findings
        .iter()
        .find(|f| f.name == "urllib3")
        .expect("urllib3");
    assert_eq!(
        urllib3.fixed.as_deref(),
        Some("2.2.2"),
        "the 2.x range, not the 1.26 one"
    );
    let certifi = s
        .findings
        .iter()
        .find(|f| f.name == "certifi")
        .expect("certifi");
    assert_eq!(certifi.severity.level, None);
}

#[test]
fn fixed_versions_at_the_range_edge_are_not_vulnerable() {
    // debug 2.6.9 is the `fixed` of its advisory; ms 2.0.0 likewise.
    let s = scan(&lockfile("npm/package-lock.json"), &db());
    assert_eq!(ids(&s), Vec::<(String, String)>::new());
    assert!(s.unchecked.is_empty(), "{:?}", s.unchecked);
}

#[test]
fn go_incompatible_versions_and_last_affected() {
    let s = scan(&lockfile("go/go.sum"), &db());
    assert_eq!(
        ids(&s),
        [(
            "pkg:golang/github.com/docker/docker@v24.0.7%2Bincompatible".to_owned(),
            "GO-TEST-docker".to_owned()
        )]
    );
    assert_eq!(s.findings[0].severity.level, Some(Level::Critical));
    assert_eq!(s.findings[0].fixed, None);
}

#[test]
fn informational_advisories_are_reported_not_failing() {
    let s = scan(&lockfile("cargo/ws/Cargo.lock"), &db());
    assert_eq!(
        ids(&s),
        [(
            "pkg:cargo/bitflags@1.3.2".to_owned(),
            "RUSTSEC-TEST-0001".to_owned()
        )]
    );
    let v = evaluate(&s, &db(), &AdvisoryPolicy::default(), at("2024-12-01"));
    assert!(v.passed(), "{v:?}");
    assert_eq!(v.reported, [0]);
}

#[test]
fn unpinned_requirements_are_listed_as_unchecked() {
    let s = scan(&lockfile("requirements/requirements.txt"), &db());
    assert_eq!(s.unchecked.len(), 1);
    assert_eq!(s.unchecked[0].purl, "pkg:pypi/flask");
}

fn policy(text: &str) -> PolicyFile {
    PolicyFile::parse("maestro-policy.toml", text).expect("policy parses")
}

#[test]
fn fail_on_threshold_and_unknown_severity() {
    let db = db();
    let s = scan(&lockfile("poetry/poetry.lock"), &db);
    let names =
        |idx: &[usize]| -> Vec<&str> { idx.iter().map(|&i| s.findings[i].name.as_str()).collect() };

    let p = policy("[advisories]\nfail-on = \"high\"\n");
    let v = evaluate(&s, &db, &p.advisories, at("2024-12-01"));
    // Only certifi: its severity cannot be read, and unknown fails by default.
    assert_eq!(names(&v.failing), ["certifi"]);
    assert!(!v.passed());

    let p = policy("[advisories]\nfail-on = \"high\"\nunknown-severity = \"warn\"\n");
    let v = evaluate(&s, &db, &p.advisories, at("2024-12-01"));
    assert!(v.passed(), "{v:?}");
    assert!(v.warnings.iter().any(|w| w.contains("GHSA-248v-346w-9cwc")));

    let p = policy("[advisories]\nfail-on = \"medium\"\nunknown-severity = \"warn\"\n");
    let v = evaluate(&s, &db, &p.advisories, at("2024-12-01"));
    let mut failing = names(&v.failing);
    failing.sort_unstable();
    assert_eq!(failing, ["idna", "requests", "urllib3"]);

    let p = policy("[advisories]\nfail-on = \"none\"\n");
    assert!(evaluate(&s, &db, &p.advisories, at("2024-12-01")).passed());
}

#[test]
fn allow_list_entries_need_a_reason_and_expire() {
    let db = db();
    let s = scan(&lockfile("poetry/poetry.lock"), &db);
    let text = "[advisories]\nfail-on = \"medium\"\n\n[[advisories.ignore]]\nid = \"CVE-2024-35195\"\nreason = \"we never disable verification\"\nuntil = 2025-01-31\n\n[[advisories.ignore]]\nid = \"GHSA-jjg7-2v4v-x38h\"\nreason = \"inputs are length-limited\"\nuntil = 2024-06-30\n\n[[advisories.ignore]]\nid = \"GHSA-none-none-none\"\nreason = \"stale\"\nuntil = 2030-01-01\n";
    let p = policy(text);
    let v = evaluate(&s, &db, &p.advisories, at("2024-12-01"));
    let allowed: Vec<&str> = v
        .allowed
        .iter()
        .map(|(i, _)| s.findings[*i].name.as_str())
        .collect();
    assert_eq!(allowed, ["requests"], "matched through its CVE alias");
    assert!(
        v.failing.iter().any(|&i| s.findings[i].name == "idna"),
        "expired entry no longer applies"
    );
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("GHSA-jjg7-2v4v-x38h expired on 2024-06-30")),
        "{:?}",
        v.warnings
    );
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("GHSA-none-none-none matched nothing"))
    );
    // After its date, the requests entry stops applying too.
    let later = evaluate(&s, &db, &p.advisories, at("2025-02-01"));
    assert!(later.allowed.is_empty());

    for (bad, expect) in [
        (
            "[[advisories.ignore]]\nid = \"X\"\nreason = \"\"\nuntil = 2030-01-01\n",
            "maestro-policy.toml:2: advisories.ignore X: reason is empty",
        ),
        (
            "[[advisories.ignore]]\nid = \"X\"\nreason = \"r\"\n",
            "maestro-policy.toml:1: missing field `until`",
        ),
        (
            "[advisories]\nfail-on = \"severe\"\n",
            "maestro-policy.toml:2: fail-on = \"severe\": use none, low, medium, high or critical",
        ),
        (
            "[advisories]\nmax-db-age = \"week\"\n",
            "maestro-policy.toml:2: max-db-age = \"week\"",
        ),
        (
            "[licenses]\nallow = [\"MIT\", \"Apache 2\"]\n",
            "maestro-policy.toml:2: \"Apache 2\" is not an SPDX license identifier",
        ),
    ] {
        let err = PolicyFile::parse("maestro-policy.toml", bad)
            .expect_err(bad)
            .to_string();
        assert!(err.starts_with(expect), "{bad}\n→ {err}");
    }
}

#[test]
fn an_old_database_is_refused_when_the_policy_says_so() {
    let db = db();
    let s = scan(&lockfile("go/go.sum"), &db);
    let p = policy("[advisories]\nfail-on = \"none\"\nmax-db-age = \"7d\"\n");
    let fresh = evaluate(&s, &db, &p.advisories, at("2024-11-25"));
    assert!(fresh.passed(), "{fresh:?}");
    let stale = evaluate(&s, &db, &p.advisories, at("2024-12-20"));
    assert!(!stale.passed());
    assert!(
        stale.errors[0].contains("is 30 days old (newest change 2024-11-20)"),
        "{:?}",
        stale.errors
    );
}

#[test]
fn an_empty_directory_is_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Database::open(dir.path()).expect_err("empty");
    assert!(err.to_string().contains("no OSV advisories"), "{err}");
}
