//! `maestro flags validate|list|eval` with the real binary on the example's registry
//! (`examples/hello-service/admin/feature-flags/flags.json`) and on a broken one.

mod common;

use common::{Repo, text};

#[test]
fn the_example_registry_validates_lists_and_evaluates() {
    let repo = Repo::example();
    let out = repo.run(&["flags", "validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("2 flag(s), all valid"),
        "{}",
        text(&out)
    );

    let out = repo.run(&["flags", "list"]);
    let shown = text(&out);
    assert!(
        shown.contains("welsh-greetings")
            && shown.contains("team-greetings")
            && shown.contains("2027-06-30"),
        "{shown}"
    );
    let listed = repo.json(&["flags", "list", "--json"]);
    assert_eq!(listed[1]["key"], "welsh-greetings");
    assert_eq!(listed[1]["kill_variant"], "off");
    assert_eq!(listed[1]["risk"], "high");

    let outside = repo.json(&[
        "flags",
        "eval",
        "welsh-greetings",
        "--context",
        r#"{"targetingKey": "u1", "region": "FR"}"#,
    ]);
    assert_eq!(
        (outside["value"].clone(), outside["reason"].clone()),
        (false.into(), "DEFAULT".into())
    );
    let mut on = 0;
    for i in 0..200 {
        let ctx = format!(r#"{{"targetingKey": "visitor-{i}", "region": "GB-WLS"}}"#);
        let r = repo.json(&["flags", "eval", "welsh-greetings", "--context", &ctx]);
        assert_eq!(r["reason"], "TARGETING_MATCH", "{r}");
        if r["value"] == true {
            on += 1;
        }
    }
    assert!((5..=40).contains(&on), "about 10% of 200 in Wales: {on}");
    let out = repo.run(&["flags", "eval", "no-such-flag"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FLAG_NOT_FOUND"), "{}", text(&out));
}

#[test]
fn a_broken_registry_names_every_problem() {
    let repo = Repo::new();
    repo.write(
        "admin/feature-flags/flags.json",
        r#"{"flags": {"checkout-v2": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "maybe", "metadata": {"risk": "high"}}}}"#,
    );
    let out = repo.run(&["flags", "validate"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    for want in [
        "admin/feature-flags/flags.json: 3 problem(s)",
        "flags.checkout-v2.defaultVariant: `maybe` is not one of the variants",
        "flags.checkout-v2.metadata.owner: missing",
        "flags.checkout-v2.metadata.expires: missing: a high-risk flag",
    ] {
        assert!(shown.contains(want), "{want} in:\n{shown}");
    }
    let out = repo.run(&["flags", "validate", "--file", "nope.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("nope.json"), "{}", text(&out));
}

#[test]
fn the_flag_lint_gates_a_pipeline() {
    let repo = Repo::new();
    repo.git(&["init", "-q", "-b", "main"]);
    repo.write(
        "admin/feature-flags/flags.json",
        r#"{"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false},
            "defaultVariant": "off", "metadata": {"owner": "team-pay"}}}}"#,
    );
    repo.write("app/payments/charge.py", "def charge():\n    return 1\n");
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  flag-lint:\n    gate: lint\n    run: '\"$MAESTRO_EXE\" flags lint --base HEAD~1 --risky \"app/payments/**\"'\n",
    );
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "base"]);

    repo.write("app/payments/charge.py", "def charge():\n    return 2\n");
    repo.git(&["commit", "-q", "-am", "fix: charge two"]);
    let out = repo.run(&["flags", "lint", "--risky", "app/payments/**"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("app/payments/charge.py:2: error: 1 changed line(s) on a risky path reference no registered flag"),
        "{shown}"
    );
    let (code, run) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "the lint gate fails the pipeline: {run}");

    repo.write(
        "app/payments/charge.py",
        "def charge():\n    if flags.on(\"new-checkout\"):\n        return 3\n    return 2\n",
    );
    repo.git(&[
        "commit",
        "-q",
        "-am",
        "feat: charge three behind new-checkout",
    ]);
    let out = repo.run(&["flags", "lint", "--risky", "app/payments/**", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (code, run) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{run}");
}
