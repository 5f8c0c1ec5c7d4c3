//! The bundle against a Terraform plan (`terraform show -json` shape) and multi-document
//! Kubernetes manifests: deny, violation and warn, namespaces, data files, Rego tests, and
//! the package-name trap that conftest passes silently.

use std::path::PathBuf;

use maestro_policy::{Bundle, Kind, LoadOptions, PolicyError, read_inputs};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn bundle() -> Bundle {
    Bundle::load(&data("policies"), &LoadOptions::default()).expect("bundle loads")
}

fn ns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_terraform_plan_is_denied_for_public_buckets_and_open_admin_ports() {
    let b = bundle();
    let inputs = read_inputs(&data("inputs/plan.json")).expect("plan");
    assert_eq!(inputs.len(), 1);
    let out = b
        .eval(Some(&ns(&["main"])), &inputs[0].value)
        .expect("eval");
    assert_eq!(out.rules_evaluated, 3, "deny, deny_open_admin_ports, warn");
    let msgs: Vec<&str> = out.failures.iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "aws_s3_bucket_acl.site: S3 bucket ACL \"public-read\" makes the bucket public",
            "aws_security_group_rule.ssh: ingress from 0.0.0.0/0 on admin ports 22-22",
        ]
    );
    // An object message keeps its fields; the admin ports come from the data file.
    assert_eq!(out.failures[1].rule, "main.deny_open_admin_ports");
    assert_eq!(
        out.failures[1].details["resource"],
        "aws_security_group_rule.ssh"
    );
    // The deleted instance is not judged; the bucket lacks an owner tag.
    let warns: Vec<&str> = out.warnings.iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(warns, ["aws_s3_bucket.site: no `owner` tag"]);
}

#[test]
fn a_compliant_plan_passes() {
    let b = bundle();
    let plan = serde_json::json!({"format_version": "1.2", "resource_changes": [{
        "address": "aws_s3_bucket_acl.site", "type": "aws_s3_bucket_acl",
        "change": {"actions": ["update"], "after": {"acl": "private"}}
    }]});
    let out = b.eval_json(Some(&ns(&["main"])), &plan).expect("eval");
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
}

#[test]
fn each_manifest_document_is_its_own_input() {
    let b = bundle();
    let docs = read_inputs(&data("inputs/deploy.yaml")).expect("manifests");
    assert_eq!(docs.len(), 3);
    let k8s = ns(&["kubernetes"]);
    let deployment = b.eval(Some(&k8s), &docs[0].value).expect("eval");
    let msgs: Vec<&str> = deployment.failures.iter().map(|m| m.msg.as_str()).collect();
    assert_eq!(
        msgs,
        [
            "Deployment/web: container \"web\" is privileged",
            "Deployment/web: container \"web\" uses a `latest` image tag",
        ]
    );
    assert_eq!(deployment.warnings.len(), 1, "only `web` lacks limits");
    let secret = b.eval(Some(&k8s), &docs[1].value).expect("eval");
    assert_eq!(secret.failures.len(), 1);
    assert_eq!(secret.failures[0].kind, Kind::Violation);
    let service = b.eval(Some(&k8s), &docs[2].value).expect("eval");
    assert!(service.failures.is_empty() && service.warnings.is_empty());
    assert_eq!(docs[2].document, 2);
}

#[test]
fn a_namespace_without_rules_is_an_error_not_a_pass() {
    let b = bundle();
    let docs = read_inputs(&data("inputs/deploy.yaml")).expect("manifests");
    let err = b
        .eval(Some(&ns(&["k8s"])), &docs[0].value)
        .expect_err("no rules");
    let text = err.to_string();
    assert!(
        text.contains("no deny, violation or warn rule in package(s) k8s"),
        "{text}"
    );
    assert!(text.contains("kubernetes"), "{text}");
    // Every package at once (conftest --all-namespaces).
    let out = b.eval(None, &docs[0].value).expect("all");
    assert_eq!(out.rules_evaluated, 6, "3 in main, 3 in kubernetes");
}

#[test]
fn rego_unit_tests_run_and_report_each_result() {
    let results = bundle().test();
    let names: Vec<(&str, bool)> = results
        .iter()
        .map(|t| (t.name.as_str(), t.passed))
        .collect();
    assert_eq!(
        names,
        [
            ("test_deleted_resources_are_not_judged", true),
            ("test_private_acl_is_allowed", true),
            ("test_public_acl_is_denied", true),
        ]
    );
    // A failing test says so.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("p.rego"),
        "package main\nimport rego.v1\ndeny contains \"x\" if input.bad\ntest_fails if { count(deny) == 1 with input as {} }\n",
    )
    .expect("write");
    let results = Bundle::load(dir.path(), &LoadOptions::default())
        .expect("load")
        .test();
    assert_eq!(results.len(), 1);
    assert!(!results[0].passed);
    assert!(
        results[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("undefined")),
        "{results:?}"
    );
}

#[test]
fn broken_policies_and_inputs_name_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("bad.rego"),
        "package main\n\ndeny contains msg if {\n  input.x ==\n}\n",
    )
    .expect("write");
    let err = Bundle::load(dir.path(), &LoadOptions::default()).expect_err("bad rego");
    assert!(matches!(err, PolicyError::Policy { .. }), "{err}");
    assert!(err.to_string().contains("bad.rego"), "{err}");

    let empty = tempfile::tempdir().expect("tmp");
    assert!(matches!(
        Bundle::load(empty.path(), &LoadOptions::default()),
        Err(PolicyError::Empty(_))
    ));

    std::fs::write(
        dir.path().join("plan.json"),
        "{\n  \"resource_changes\": [\n",
    )
    .expect("write");
    let err = read_inputs(&dir.path().join("plan.json")).expect_err("bad json");
    assert!(
        err.to_string().contains("plan.json: not JSON: line 3"),
        "{err}"
    );
}

#[test]
fn rego_v0_policies_load_when_asked() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("old.rego"),
        "package main\n\ndeny[msg] {\n  input.kind == \"Pod\"\n  msg := \"no bare pods\"\n}\n",
    )
    .expect("write");
    assert!(
        Bundle::load(dir.path(), &LoadOptions::default()).is_err(),
        "v0 syntax is not v1"
    );
    let b = Bundle::load(
        dir.path(),
        &LoadOptions {
            rego_v0: true,
            ..LoadOptions::default()
        },
    )
    .expect("v0");
    let out = b
        .eval_json(None, &serde_json::json!({"kind": "Pod"}))
        .expect("eval");
    assert_eq!(out.failures[0].msg, "no bare pods");
}

#[test]
fn a_rendered_chart_with_thousands_of_documents_is_read_whole() {
    // serde-saphyr's default budget stops at 1,024 documents: a large `helm template`
    // output failed with "budget breached" before the budget was sized for it.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("rendered.yaml");
    let doc = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: b\n";
    std::fs::write(&p, doc.repeat(3_000)).expect("write");
    let inputs = read_inputs(&p).expect("reads");
    assert_eq!(inputs.len(), 3_000);
    assert_eq!(inputs[2_999].document, 2_999);
}
