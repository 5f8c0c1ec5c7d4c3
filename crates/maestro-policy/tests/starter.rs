//! The starter bundle: its own Rego tests pass, and it catches what it promises in a real
//! plan and real manifests (and passes compliant ones).

use std::path::PathBuf;

use maestro_policy::{Bundle, LoadOptions, STARTER, read_inputs};

fn starter() -> (tempfile::TempDir, Bundle) {
    let dir = tempfile::tempdir().expect("tmp");
    for (name, text) in STARTER {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let b = Bundle::load(dir.path(), &LoadOptions::default()).expect("starter loads");
    (dir, b)
}

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

#[test]
fn the_starter_bundles_tests_pass() {
    let (_d, b) = starter();
    let results = b.test();
    assert!(results.len() >= 19, "{}", results.len());
    let failed: Vec<_> = results.iter().filter(|t| !t.passed).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn the_starter_bundle_judges_a_plan_and_manifests() {
    let (_d, b) = starter();
    let plan = &read_inputs(&data("inputs/plan.json")).expect("plan")[0];
    let out = b.eval(None, &plan.value).expect("eval");
    let rules: Vec<&str> = out.failures.iter().map(|m| m.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "terraform.deny_open_admin_ingress",
            "terraform.deny_public_s3"
        ]
    );

    let docs = read_inputs(&data("inputs/deploy.yaml")).expect("manifests");
    let out = b.eval(None, &docs[0].value).expect("deployment");
    let mut rules: Vec<&str> = out.failures.iter().map(|m| m.rule.as_str()).collect();
    rules.dedup();
    assert_eq!(
        rules,
        [
            "kubernetes.deny_latest_tag",
            "kubernetes.deny_missing_limits",
            "kubernetes.deny_privileged"
        ]
    );
    let secret = b.eval(None, &docs[1].value).expect("secret");
    assert_eq!(secret.failures[0].rule, "kubernetes.deny_plaintext_secret");
    let service = b.eval(None, &docs[2].value).expect("service");
    assert!(service.failures.is_empty(), "{:?}", service.failures);
}

#[test]
fn the_starter_bundle_is_formatted() {
    for (name, text) in STARTER.iter().filter(|(n, _)| n.ends_with(".rego")) {
        let got = maestro_policy::fmt::format(name, text, false).expect("formats");
        assert_eq!(&got, text, "{name} is not in `maestro policy fmt` layout");
    }
}
