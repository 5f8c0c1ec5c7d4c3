//! The command line surface: validate, schema, exit codes and the rendered summary.

mod common;

use common::Repo;

#[test]
fn validate_reports_every_problem_as_json_and_exits_2() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  a:\n    run: x\n    gate: lnt\n  b:\n    run: y\n    needs: [zz]\n",
    );
    let out = repo.run(&["validate", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], false);
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["code"].as_str().expect("code"))
        .collect();
    assert_eq!(codes, ["unknown-gate", "unknown-need"]);
    assert_eq!(v["diagnostics"][1]["line"], 8);
    assert_eq!(v["diagnostics"][1]["column"], 13);
    assert_eq!(v["diagnostics"][1]["hint"], "jobs in this pipeline: a, b");
}

#[test]
fn run_on_an_invalid_file_prints_the_diagnostic_with_its_source() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  a:\n    run: x\n    neds: [b]\n",
    );
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("spec::unknown-key"), "{err}");
    assert!(err.contains("maestro.yaml:5:5"), "{err}");
    assert!(err.contains("did you mean `needs`?"), "{err}");
}

#[test]
fn missing_pipeline_file_is_a_usage_error() {
    let repo = Repo::new();
    let out = repo.run(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pipeline file at maestro.yaml"));
}

#[test]
fn the_published_schema_is_up_to_date() {
    let out = Repo::new().run(&["schema"]);
    let generated = String::from_utf8_lossy(&out.stdout).into_owned();
    let published = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/maestro.schema.json"
    ))
    .expect("schema/maestro.schema.json is published");
    assert_eq!(
        generated, published,
        "regenerate with: cargo run -p maestro -- schema > schema/maestro.schema.json"
    );
    let out = Repo::new().run(&["schema", "--module"]);
    let published = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/maestro-module.schema.json"
    ))
    .expect("module schema is published");
    assert_eq!(String::from_utf8_lossy(&out.stdout), published);
}

#[test]
fn the_plain_summary_is_stable() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\nname: demo\njobs:\n  lint:\n    gate: lint\n    run: echo linted\n  unit:\n    gate: unit\n    run: echo 'assertion failed' >&2; exit 4\n  pkg:\n    gate: package\n    run: echo never\n",
    );
    let (code, out) = repo.maestro_run(&["-j", "1"]);
    assert_eq!(code, 1);
    insta::with_settings!({filters => vec![
        (r"\d+\.\d\ds", "[time]"),
        (r"\d+m\d\ds", "[time]"),
    ]}, {
        insta::assert_snapshot!(out);
    });
}

#[test]
fn jobs_flag_is_validated() {
    let repo = Repo::new();
    repo.write("maestro.yaml", "version: 1\njobs:\n  a:\n    run: echo a\n");
    let out = repo.run(&["run", "--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jobs must be at least 1"));
    let (code, _) = repo.maestro_run(&["--jobs", "3"]);
    assert_eq!(code, 0);
}
