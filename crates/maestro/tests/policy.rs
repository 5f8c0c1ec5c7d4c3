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
        t.contains("1 input(s), 3 rule(s) each from main · 2 failure(s), 0 waived, 1 warning(s)"),
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

#[test]
fn init_writes_the_starter_bundle_whose_tests_pass() {
    let repo = Repo::new();
    let out = repo.run(&["policy", "init"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = repo.run(&["policy", "test"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("PASS data.kubernetes.test_privileged_denied"),
        "{t}"
    );
    // Nothing is overwritten by accident.
    let again = repo.run(&["policy", "init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("--force"));
}

#[test]
fn the_infra_plan_gate_blocks_a_bad_plan_and_passes_a_good_one() {
    let repo = Repo::new();
    assert!(repo.run(&["policy", "init"]).status.success());
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../maestro-policy/tests/data/inputs");
    std::fs::copy(data.join("plan.json"), repo.path().join("plan.json")).expect("copy");
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  policy:\n    uses: maestro/infra-plan@1\n    with: { inputs: plan.json }\n  publish:\n    gate: publish\n    run: echo built > built.txt\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("gate infra-plan is red"), "{out}");
    assert!(out.contains("makes the S3 bucket public"), "{out}");
    assert!(
        !repo.path().join("built.txt").exists(),
        "publish never starts"
    );

    repo.write(
        "plan.json",
        r#"{"format_version": "1.2", "resource_changes": [{"address": "aws_s3_bucket_acl.site", "type": "aws_s3_bucket_acl", "change": {"actions": ["create"], "after": {"acl": "private"}}}]}"#,
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn waivers_excuse_named_findings_until_they_expire_and_every_use_is_recorded() {
    let repo = repo();
    repo.write(
        ".ci/waivers.yaml",
        "waivers:\n\
         - rule: main.deny\n\
         \x20 resource: aws_s3_bucket_acl.site\n\
         \x20 reason: static website behind the CDN (INC-2231)\n\
         \x20 approver: alice@example.com\n\
         \x20 expires: 2999-12-31\n",
    );
    let out = repo.run(&["policy", "eval", "plan.json"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "one finding is left: {t}");
    assert!(
        t.contains("WAIVED plan.json: aws_s3_bucket_acl.site: S3 bucket ACL \"public-read\" makes the bucket public (main.deny)"),
        "{t}"
    );
    assert!(
        t.contains(
            "waived until 2999-12-31 by alice@example.com: static website behind the CDN (INC-2231)"
        ),
        "{t}"
    );
    assert!(t.contains("1 failure(s), 1 waived, 1 warning(s)"), "{t}");

    // The same waiver, expired: it stops waiving and says so.
    repo.write(
        ".ci/waivers.yaml",
        &repo
            .read(".ci/waivers.yaml")
            .replace("2999-12-31", "2020-01-31"),
    );
    let out = repo.run(&["policy", "eval", "plan.json"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("FAIL plan.json: aws_s3_bucket_acl.site: S3 bucket ACL"),
        "{t}"
    );
    assert!(
        t.contains("waiver .ci/waivers.yaml[0] expired 2020-01-31 (approved by alice@example.com"),
        "{t}"
    );
    assert!(t.contains("it no longer waives"), "{t}");
    assert!(t.contains("2 failure(s), 0 waived"), "{t}");

    // Both uses are in the store, newest first, the expired one marked.
    let out = repo.run(&["policy", "waivers", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["waivers"][0]["status"], "expired");
    let uses = v["uses"].as_array().expect("uses");
    assert_eq!(uses.len(), 2, "{v}");
    assert_eq!(uses[0]["expired"], true);
    assert_eq!(uses[1]["expired"], false);
    assert_eq!(uses[1]["rule"], "main.deny");
    assert_eq!(uses[1]["approver"], "alice@example.com");

    // And in the audit log: the waiver's reason is the entry's reason.
    let out = repo.run(&["audit", "list", "--action", "waive", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v[0]["result"], "denied",
        "the expired waiver waived nothing: {v}"
    );
    assert_eq!(v[1]["result"], "success");
    assert!(
        v[1]["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("aws_s3_bucket_acl.site: S3 bucket ACL")),
        "{v}"
    );
    assert_eq!(v[1]["reason"], "static website behind the CDN (INC-2231)");
    assert_eq!(v[1]["params"]["approver"], "alice@example.com");
    let out = repo.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn an_invalid_waiver_names_the_waiver_and_field() {
    let repo = repo();
    repo.write(
        "w.yaml",
        "waivers:\n- rule: main.deny\n  resource: x\n  reason: r\n  approver: a\n",
    );
    let out = repo.run(&["policy", "eval", "plan.json", "--waivers", "w.yaml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("w.yaml: waivers[0].expires is missing: waivers are time-bound"),
        "{t}"
    );
}

#[test]
fn policy_can_demand_gates_of_the_pipeline_itself() {
    let repo = Repo::new();
    assert!(repo.run(&["policy", "init"]).status.success());
    repo.write(
        "maestro.yaml",
        "version: 1\nname: checkout\ntags: [critical]\njobs:\n  test:\n    gate: unit\n    run: 'true'\n  deps:\n    uses: maestro/sca@1\n    with: { db: osv }\n  sbom:\n    uses: maestro/sbom@1\n",
    );
    let out = repo.run(&["policy", "eval", "--pipeline", "-n", "pipeline", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["input"], "maestro.yaml");
    assert_eq!(
        v[0]["failures"][0]["msg"],
        "checkout: tagged critical, but no job runs in the e2e-smoke gate"
    );
    assert_eq!(v[0]["failures"][0]["rule"], "pipeline.deny_missing_gate");

    repo.write(
        "maestro.yaml",
        &(repo.read("maestro.yaml")
            + "  smoke:\n    gate: e2e-smoke\n    needs: [test]\n    run: 'true'\n"),
    );
    let out = repo.run(&["policy", "eval", "--pipeline", "-n", "pipeline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // An invalid pipeline is reported as such, not judged.
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  a:\n    needs: [nope]\n    run: 'true'\n",
    );
    let out = repo.run(&["policy", "eval", "--pipeline", "-n", "pipeline"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("maestro validate"), "{}", text(&out));
}

#[test]
fn fmt_checks_then_rewrites_layout_only() {
    let repo = Repo::new();
    repo.write(
        ".ci/policies/main.rego",
        "package main\nimport rego.v1\n\n\n\ndeny contains msg if {  # public buckets\n    input.acl==\"public-read\"\n  msg := sprintf(\"%s is public\",[input.name])\n}\n",
    );
    repo.write(
        ".ci/policies/ok.rego",
        "package ok\n\nimport rego.v1\n\nwarn contains \"x\" if {\n\tinput.x\n}\n",
    );
    let out = repo.run(&["policy", "fmt"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(".ci/policies/main.rego: not formatted (from line 4)"),
        "{t}"
    );
    assert!(!t.contains("ok.rego"), "{t}");
    assert!(t.contains("policy fmt: 2 file(s), 1 to format"), "{t}");

    let out = repo.run(&["policy", "fmt", "--write"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        repo.read(".ci/policies/main.rego"),
        "package main\nimport rego.v1\n\ndeny contains msg if { # public buckets\n\tinput.acl == \"public-read\"\n\tmsg := sprintf(\"%s is public\", [input.name])\n}\n"
    );
    let out = repo.run(&["policy", "fmt"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A policy that does not parse is named, and left alone.
    repo.write(".ci/policies/bad.rego", "package bad\n\ndeny if {\n");
    let out = repo.run(&["policy", "fmt", "--write"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("bad.rego"), "{}", text(&out));
    assert_eq!(
        repo.read(".ci/policies/bad.rego"),
        "package bad\n\ndeny if {\n"
    );
}
