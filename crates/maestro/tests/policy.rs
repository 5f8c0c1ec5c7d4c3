//! `maestro policy eval|test` end to end, on the policy crate's fixtures.

mod common;

use std::path::Path;

use common::{Repo, copy_dir, text};

fn repo() -> Repo {
    let repo = Repo::new();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../maestro-policy/tests/data");
    copy_dir(&data.join("policies"), &repo.path().join(".ci/policies"));
    copy_dir(&data.join("inputs"), repo.path());
    repo
}

#[test]
fn eval_fails_on_deny_and_names_rule_input_and_document() {
    let repo = repo();
    let out = repo.run(&["policy", "eval", "plan.json"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL plan.json: aws_s3_bucket_acl.site: S3 bucket ACL \"public-read\" makes the bucket public (main.deny)"), "{t}");
    assert!(
        t.contains("WARN plan.json: aws_s3_bucket.site: no `owner` tag (main.warn)"),
        "{t}"
    );
    assert!(
        t.contains("1 input(s), 3 rule(s) each from main · 2 failure(s), 1 warning(s)"),
        "{t}"
    );

    let out = repo.run(&[
        "policy",
        "eval",
        "deploy.yaml",
        "-n",
        "kubernetes",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        report.as_array().map(Vec::len),
        Some(3),
        "one entry per document"
    );
    assert_eq!(report[1]["failures"][0]["kind"], "violation");
}

#[test]
fn a_package_that_matches_nothing_is_an_error() {
    let repo = repo();
    let out = repo.run(&["policy", "eval", "deploy.yaml", "-n", "k8s"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("no deny, violation or warn rule in package(s) k8s"),
        "{t}"
    );
    assert!(t.contains("--all-namespaces"), "{t}");
}

#[test]
fn policy_test_runs_the_bundles_tests() {
    let repo = repo();
    let out = repo.run(&["policy", "test"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("PASS data.main.test_public_acl_is_denied"),
        "{t}"
    );
    assert!(t.contains("policy test: 3 passed, 0 failed"), "{t}");
    // Break the policy: the test that guards it fails.
    let p = repo.path().join(".ci/policies/terraform.rego");
    let broken = std::fs::read_to_string(&p)
        .expect("read")
        .replace("\"public-read\", ", "");
    std::fs::write(&p, broken).expect("write");
    let out = repo.run(&["policy", "test"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL data.main.test_public_acl_is_denied"),
        "{t}"
    );
}
