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
