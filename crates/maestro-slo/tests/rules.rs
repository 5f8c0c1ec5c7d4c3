//! The example service's SLOs to rules: the rendered file (snapshot), Prometheus' own
//! checker (`promtool check rules`) and its rule unit tests (`promtool test rules`: the
//! alerts fire on a fast burn, stay quiet under budget, and stop when the burn stops).
//! promtool comes with Debian's `prometheus` package, which `.ci/run` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/hello-service/slo/hello-service.yaml")
}

fn rendered() -> String {
    let path = example();
    let slos = maestro_slo::load(&[path.as_path()]).expect("the example loads");
    maestro_slo::render(&slos, &maestro_slo::rules(&slos))
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (Debian's prometheus package; .ci/run installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_example_renders_to_the_expected_rules() {
    let text = rendered().replace(
        &example().display().to_string(),
        "examples/hello-service/slo/hello-service.yaml",
    );
    insta::assert_snapshot!(text);
}

#[test]
fn promtool_accepts_the_generated_rules() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("rules.yaml"), rendered()).expect("write");
    let (ok, out) = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(ok, "{out}");
    // 3 groups per SLO: 7 + 7 error-ratio windows (30d and 28d), 4 meta rules and 2
    // alerts each.
    assert!(out.contains("SUCCESS: 26 rules found"), "{out}");
}

const SUMMARY: &str = "hello-service is burning its error budget (Greeting availability SLO 99.9%)";
const PAGE: &str = "available: errors are burning the error budget at 14.4× the sustainable error rate over 1h and 5m (2% of the 30d budget in 1h); 6× the sustainable error rate over 6h and 30m (5% of the 30d budget in 6h)";
const TICKET: &str = "available: errors are burning the error budget at 3× the sustainable error rate over 1d and 2h (10% of the 30d budget in 1d); 1× the sustainable error rate over 3d and 6h (10% of the 30d budget in 3d)";

fn alert(severity: &str) -> String {
    format!(
        r#"          - exp_labels: {{severity: {severity}, slo: hello-availability, service: hello-service, objective: "0.999"}}
            exp_annotations: {{summary: "{SUMMARY}", description: "{}"}}
"#,
        if severity == "page" { PAGE } else { TICKET }
    )
}

#[test]
fn the_alerts_fire_on_a_fast_burn_stay_quiet_under_budget_and_stop_with_the_burn() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("rules.yaml"), rendered()).expect("write");
    let name = "HelloAvailabilityErrorBudgetBurn";
    let tests = format!(
        r#"rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  # Six clean hours, then 2% errors against a 99.9% objective (a 20x burn) for an hour,
  # then clean again.
  - interval: 1m
    input_series:
      - series: 'maestro_proxy_requests_total{{service="hello-service",code="200"}}'
        values: '0+980x600'
      - series: 'maestro_proxy_requests_total{{service="hello-service",code="503"}}'
        values: '0+0x360 20+20x59 1200+0x179'
    alert_rule_test:
      - eval_time: 364m
        alertname: {name}
        exp_alerts: []
      - eval_time: 420m
        alertname: {name}
        exp_alerts:
{page}{ticket}      - eval_time: 440m
        alertname: {name}
        exp_alerts:
{ticket}  # 0.05% errors: half the sustainable rate, never an alert.
  - interval: 1m
    input_series:
      - series: 'maestro_proxy_requests_total{{service="hello-service",code="200"}}'
        values: '0+1999x400'
      - series: 'maestro_proxy_requests_total{{service="hello-service",code="500"}}'
        values: '0+1x400'
    alert_rule_test:
      - eval_time: 6h
        alertname: {name}
        exp_alerts: []
    promql_expr_test:
      - expr: slo:error_budget_remaining:ratio{{slo="hello-availability"}}
        eval_time: 6h
        exp_samples:
          - labels: 'slo:error_budget_remaining:ratio{{slo="hello-availability",service="hello-service",objective="0.999"}}'
            value: 0.5
"#,
        page = alert("page"),
        ticket = alert("ticket"),
    );
    std::fs::write(dir.path().join("tests.yaml"), tests).expect("write");
    let (ok, out) = promtool(&["test", "rules", "tests.yaml"], dir.path());
    assert!(ok, "{out}");
}

fn error_of(yaml: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("slo.yaml");
    std::fs::write(&path, yaml).expect("write");
    maestro_slo::load(&[path.as_path()])
        .expect_err("refused")
        .to_string()
        .replace(&path.display().to_string(), "slo.yaml")
}

const GOOD: &str = r#"apiVersion: openslo/v1
kind: SLO
metadata: {name: checkout}
spec:
  service: checkout
  indicator:
    metadata: {name: checkout-ok}
    spec:
      ratioMetric:
        counter: true
        bad: {metricSource: {type: Prometheus, spec: {query: 'http_requests_total{code=~"5.."}'}}}
        total: {metricSource: {type: Prometheus, spec: {query: http_requests_total}}}
  timeWindow: [{duration: 30d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{target: 0.999}]
"#;

#[test]
fn a_good_file_loads() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("slo.yaml");
    std::fs::write(&path, GOOD).expect("write");
    let slos = maestro_slo::load(&[path.as_path()]).expect("loads");
    assert_eq!(slos.len(), 1);
    assert_eq!(slos[0].period_minutes, 43_200);
    assert_eq!(
        slos[0].total.rate("5m"),
        "sum(rate(http_requests_total[5m]))"
    );
}

#[test]
fn bad_files_are_refused_naming_the_place_and_the_field() {
    let cases: [(&str, &str, &str); 11] = [
        (
            "apiVersion: openslo/v1",
            "apiVersion: openslo/v2",
            "slo.yaml:1 (SLO checkout): apiVersion: `openslo/v2` is not supported",
        ),
        (
            "  objectives: [{target: 0.999}]",
            "  objectives: [{target: 99.9}]",
            "spec.objectives[0].target: 99.9 is not between 0 and 1",
        ),
        (
            "  objectives: [{target: 0.999}]",
            "  objectives: [{targt: 0.999}]",
            "spec.objectives[0].targt: unknown field `targt`",
        ),
        (
            "  budgetingMethod: Occurrences",
            "  budgetingMethod: Timeslices",
            "spec.budgetingMethod: `Timeslices` is not supported",
        ),
        (
            "duration: 30d",
            "duration: 30 days",
            "spec.timeWindow[0].duration: `30 days` is not a duration",
        ),
        (
            "isRolling: true",
            "isRolling: false",
            "calendar windows are not supported",
        ),
        (
            "type: Prometheus, spec: {query: http_requests_total}",
            "type: Datadog, spec: {query: http_requests_total}",
            "total.metricSource.type: `Datadog` is not supported",
        ),
        (
            "query: http_requests_total}",
            "query: 'sum(rate(http_requests_total[5m]))'}",
            "spec.indicator.spec.ratioMetric.total.metricSource.spec.query: `sum(rate(http_requests_total[5m]))` is not a metric selector",
        ),
        (
            "        counter: true\n",
            "",
            "ratioMetric.counter: must be true",
        ),
        (
            "metadata: {name: checkout}",
            "metadata: {name: Checkout}",
            "metadata.name: `Checkout` is not a valid name",
        ),
        (
            "  service: checkout\n",
            "",
            "slo.yaml:1 (SLO checkout): spec: missing field `service`",
        ),
    ];
    for (from, to, want) in cases {
        assert!(GOOD.contains(from), "{from}");
        let got = error_of(&GOOD.replacen(from, to, 1));
        assert!(got.contains(want), "{to}\n  got:  {got}\n  want: {want}");
    }
    let two = format!("{GOOD}---\n{GOOD}");
    let got = error_of(&two);
    assert!(
        got.contains("slo.yaml:16 (SLO checkout): metadata.name: SLO `checkout` is also defined at slo.yaml:1"),
        "{got}"
    );
    let got = error_of(&GOOD.replace("  indicator:\n", "  indicatorRef: missing\n  indicatr:\n"));
    assert!(got.contains("unknown field `indicatr`"), "{got}");
    let got = error_of("kind: [\n");
    assert!(got.starts_with("slo.yaml: not YAML"), "{got}");
}
