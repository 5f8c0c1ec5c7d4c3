//! `maestro slo rules` end to end: the example service's SLOs to a rule file on standard
//! output and with `--out`, and a bad file refused with exit 2, naming file, line and field.

mod common;

use std::path::Path;

use common::{Repo, text};

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/hello-service/slo/hello-service.yaml")
}

#[test]
fn rules_are_printed_or_written_atomically() {
    let repo = Repo::new();
    let example = example();
    let file = example.to_str().expect("utf-8 path");
    let out = repo.run(&["slo", "rules", file]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("alert: \"HelloAvailabilityErrorBudgetBurn\""),
        "{printed}"
    );
    assert!(printed.contains("record: \"slo:error_budget_remaining:ratio\""));

    let out = repo.run(&["slo", "rules", file, "--out", "rules/slo.rules.yaml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("wrote the Prometheus rules of 2 SLOs to rules/slo.rules.yaml"));
    let written =
        std::fs::read_to_string(repo.path().join("rules/slo.rules.yaml")).expect("written");
    assert_eq!(written, printed);
}

#[test]
fn a_bad_slo_is_refused_with_its_place_and_field() {
    let repo = Repo::new();
    let good = std::fs::read_to_string(example()).expect("example");
    std::fs::write(
        repo.path().join("slo.yaml"),
        good.replace("target: 0.999", "target: 99.9"),
    )
    .expect("write");
    let out = repo.run(&["slo", "rules", "slo.yaml", "--out", "rules.yaml"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("slo.yaml:22 (SLO hello-availability): spec.objectives[0].target: 99.9 is"),
        "{t}"
    );
    assert!(
        t.contains("a target of 0.999 means 99.9% of events are good"),
        "{t}"
    );
    assert!(!repo.path().join("rules.yaml").exists(), "nothing written");

    let out = repo.run(&["slo", "rules", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("missing.yaml: cannot read"),
        "{}",
        text(&out)
    );
}
