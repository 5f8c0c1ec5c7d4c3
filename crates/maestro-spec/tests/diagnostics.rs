//! Every kind of malformed `maestro.yaml` gets a diagnostic with file, line, column, key
//! and hint. Each case is snapshotted as one line per diagnostic.

use std::fs;
use std::path::Path;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, text).expect("write");
}

/// Loads `maestro.yaml` (plus extra files) and renders each diagnostic on one line.
fn check(yaml: &str, extra: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "maestro.yaml", yaml);
    for (rel, text) in extra {
        write(dir.path(), rel, text);
    }
    let err = maestro_spec::load_pipeline(&dir.path().join("maestro.yaml"))
        .expect_err("the spec must be rejected");
    err.0
        .iter()
        .map(|d| {
            let file = d
                .file()
                .and_then(|f| f.strip_prefix(dir.path()).ok())
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            let pos = d
                .pos
                .map(|p| format!("{}:{}", p.line, p.column))
                .unwrap_or_default();
            format!(
                "[{}] {file}:{pos} key={} :: {} :: hint: {}",
                d.code,
                d.key.as_deref().unwrap_or("-"),
                d.message,
                d.hint.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn unknown_key_suggests_the_closest() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  lint:\n    run: make lint\n    neds: [x]\n",
        &[]
    ));
}

#[test]
fn unknown_top_level_key() {
    insta::assert_snapshot!(check(
        "version: 1\nstages: []\njobs:\n  a:\n    run: x\n",
        &[]
    ));
}

#[test]
fn wrong_type_names_the_key() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  unit:\n    run: x\n    needs: lint\n  lint:\n    run: y\n",
        &[]
    ));
}

#[test]
fn wrong_scalar_type() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  unit:\n    run: x\n    retries: twice\n",
        &[]
    ));
}

#[test]
fn duplicate_job_names() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  lint:\n    run: a\n  lint:\n    run: b\n",
        &[]
    ));
}

#[test]
fn unknown_needs() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  lint:\n    run: a\n  unit:\n    run: b\n    needs: [lnt]\n",
        &[]
    ));
}

#[test]
fn dependency_cycle_is_named() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    needs: [c]\n  b:\n    run: x\n    needs: [a]\n  c:\n    run: x\n    needs: [b]\n",
        &[]
    ));
}

#[test]
fn self_need() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    needs: [a]\n",
        &[]
    ));
}

#[test]
fn unknown_gate() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    gate: unti\n",
        &[]
    ));
}

#[test]
fn needs_later_gate() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  ship:\n    run: x\n    gate: publish\n  test:\n    run: y\n    gate: unit\n    needs: [ship]\n",
        &[]
    ));
}

#[test]
fn bad_glob() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    inputs: [\"src/[a-.py\"]\n",
        &[]
    ));
}

#[test]
fn path_escaping_the_repo() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    outputs: [../secret]\n",
        &[]
    ));
}

#[test]
fn missing_module() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  test:\n    uses: pyhton-test@1\n",
        &[("ci/modules/python-test/1.0.0.yaml", "job:\n  run: x\n")]
    ));
}

#[test]
fn missing_module_version() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  test:\n    uses: python-test@2\n",
        &[
            ("ci/modules/python-test/1.0.0.yaml", "job:\n  run: x\n"),
            ("ci/modules/python-test/1.1.0.yaml", "job:\n  run: x\n")
        ]
    ));
}

#[test]
fn uses_without_version() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  test:\n    uses: python-test\n",
        &[]
    ));
}

#[test]
fn module_parameters_are_checked() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  test:\n    uses: python-test@1\n    with:\n      srcs: lib\n",
        &[(
            "ci/modules/python-test/1.0.0.yaml",
            "params:\n  src:\n    required: true\n    description: source directory\njob:\n  run: python3 -m unittest discover ${{ params.src }}\n"
        )]
    ));
}

#[test]
fn error_inside_a_module_points_into_the_module() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  test:\n    uses: python-test@1\n",
        &[(
            "ci/modules/python-test/1.0.0.yaml",
            "job:\n  run: x\n  gate: nope\n"
        )]
    ));
}

#[test]
fn yaml_syntax_error() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: \"unterminated\n",
        &[]
    ));
}

#[test]
fn missing_version() {
    insta::assert_snapshot!(check("jobs:\n  a:\n    run: x\n", &[]));
}

#[test]
fn job_without_run() {
    insta::assert_snapshot!(check("version: 1\njobs:\n  a:\n    gate: lint\n", &[]));
}

#[test]
fn bounds_on_retries_shard_and_timeout() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    retries: 9\n    shard: 0\n    timeout: forever\n",
        &[]
    ));
}

#[test]
fn unknown_expression() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: echo ${{ params.x }}\n",
        &[]
    ));
}

#[test]
fn several_problems_are_reported_together() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    gate: lnt\n  b:\n    run: y\n    needs: [zz]\n    timeout: 0s\n",
        &[]
    ));
}

#[test]
fn empty_file() {
    insta::assert_snapshot!(check("", &[]));
}

#[test]
fn output_conflicts_between_jobs_and_shards() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  a:\n    run: x\n    outputs: [dist]\n  b:\n    run: y\n    outputs: [dist/app.tar]\n  c:\n    run: z\n    shard: 2\n    reports: [reports/unit.xml]\n  d:\n    run: w\n    outputs: [\"./\"]\n",
        &[]
    ));
}

#[test]
fn deploy_without_artifacts() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  ship:\n    gate: deploy\n    run: ./deploy.sh\n",
        &[]
    ));
}

#[test]
fn deploys_without_trusted_keys() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  ship:\n    gate: deploy\n    run: ./deploy.sh\n    deploys: [dist/app.tar]\n",
        &[]
    ));
}

#[test]
fn unknown_builtin_module() {
    insta::assert_snapshot!(check(
        "version: 1\njobs:\n  sbom:\n    uses: maestro/sbon@1\n",
        &[]
    ));
}
