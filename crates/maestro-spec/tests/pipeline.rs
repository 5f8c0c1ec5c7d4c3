//! Valid pipelines: modules, shards, gates and defaults come out as documented.

use std::fs;

use maestro_spec::{Gate, load_pipeline};

#[test]
fn modules_shards_and_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("ci/modules/py-test")).expect("mkdir");
    fs::write(
        dir.path().join("ci/modules/py-test/1.2.0.yaml"),
        "params:\n  src:\n    default: src\n  report:\n    required: true\njob:\n  gate: unit\n  run: run-tests ${{ params.src }} --shard ${{ shard.index }}/${{ shard.count }}\n  inputs: [\"${{ params.src }}/**/*.py\"]\n  reports: [\"${{ params.report }}-${{ shard.index }}.xml\"]\n  env:\n    SRC: ${{ params.src }}\n",
    )
    .expect("module");
    fs::write(
        dir.path().join("ci/modules/py-test/1.10.0.yaml"),
        "job:\n  run: newer\n",
    )
    .expect("module");
    fs::write(
        dir.path().join("maestro.yaml"),
        "version: 1\nname: demo\nenv:\n  CI_MODE: \"1\"\ntoolchains:\n  python: \"3.11\"\ntrust:\n  keys: [keys/release.pub]\n  builder-id: https://ci.example.com\njobs:\n  lint:\n    gate: lint\n    run: lint src\n  unit:\n    uses: py-test@1.2\n    with:\n      report: reports/unit\n    shard: 2\n    needs: [lint]\n  deploy:\n    gate: deploy\n    run: ship\n    needs: [unit]\n    deploys: [dist/app.tar]\n",
    )
    .expect("spec");
    let p = load_pipeline(&dir.path().join("maestro.yaml")).expect("valid");
    assert_eq!(p.name, "demo");
    let g = &p.graph;
    let names: Vec<&str> = g.jobs().iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["lint", "unit#1", "unit#2", "deploy"]);
    let u2 = g.find("unit#2").expect("shard 2");
    assert_eq!(u2.run, "run-tests src --shard 2/2");
    assert_eq!(u2.inputs, ["src/**/*.py"]);
    assert_eq!(u2.reports, ["reports/unit-2.xml"]);
    assert_eq!(u2.env["SRC"], "src");
    assert_eq!(u2.env["CI_MODE"], "1");
    assert_eq!(u2.env["MAESTRO_SHARD_INDEX"], "2");
    assert_eq!(u2.gate, Some(Gate::Unit));
    assert_eq!(u2.module.as_deref(), Some("py-test@1.2.0"));
    assert_eq!(u2.toolchains["python"], "3.11");
    assert!(u2.cache);
    let deploy = g.find("deploy").expect("deploy");
    assert_eq!(
        deploy.needs.len(),
        2,
        "needs on a sharded job mean every shard"
    );
    assert!(!deploy.cache, "deploy is not cached by default");
    assert_eq!(deploy.deploys, ["dist/app.tar"]);
    assert_eq!(p.trust.keys, ["keys/release.pub"]);
    assert_eq!(
        p.trust.builder_id.as_deref(),
        Some("https://ci.example.com")
    );
    assert_eq!(g.select("unit").len(), 2);
}

#[test]
fn version_prefix_picks_the_highest_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("ci/modules/m")).expect("mkdir");
    for v in ["1.2.0", "1.10.0", "2.0.0"] {
        fs::write(
            dir.path().join(format!("ci/modules/m/{v}.yaml")),
            format!("job:\n  run: echo {v}\n"),
        )
        .expect("module");
    }
    fs::write(
        dir.path().join("maestro.yaml"),
        "version: 1\njobs:\n  a:\n    uses: m@1\n",
    )
    .expect("spec");
    let p = load_pipeline(&dir.path().join("maestro.yaml")).expect("valid");
    assert_eq!(p.graph.jobs()[0].run, "echo 1.10.0");
}

#[test]
fn schema_is_generated_from_the_types() {
    let schema = maestro_spec::raw::pipeline_schema();
    let text = serde_json::to_string(&schema).expect("json");
    for key in [
        "\"jobs\"",
        "\"needs\"",
        "\"pass-env\"",
        "\"modules-dir\"",
        "\"shard\"",
        "\"deploys\"",
        "\"trust\"",
    ] {
        assert!(text.contains(key), "schema lacks {key}");
    }
    assert_eq!(
        schema["additionalProperties"],
        serde_json::Value::Bool(false)
    );
}

#[test]
fn builtin_modules_need_no_modules_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("maestro.yaml"),
        "version: 1\njobs:\n  sbom:\n    uses: maestro/sbom@1\n    with:\n      output: out/bom.json\n  ev:\n    uses: maestro/evidence@1\n    with:\n      artifact: dist/a.tar\n",
    )
    .expect("spec");
    let p = load_pipeline(&dir.path().join("maestro.yaml")).expect("valid");
    let sbom = p.graph.find("sbom").expect("sbom");
    assert_eq!(sbom.gate, Some(Gate::Sbom));
    assert_eq!(sbom.outputs, ["out/bom.json"]);
    assert!(sbom.run.contains("-o out/bom.json"), "{}", sbom.run);
    assert_eq!(sbom.module.as_deref(), Some("maestro/sbom@1.0.0"));
    assert_eq!(
        sbom.toolchains.get("maestro").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "an upgrade of maestro re-runs built-in jobs"
    );
    let ev = p.graph.find("ev").expect("ev");
    assert!(!ev.cache);
    assert_eq!(
        ev.outputs,
        [
            "dist/a.tar.sigstore.json",
            "dist/a.tar.intoto.sigstore.json",
            "dist/a.tar.sbom.sigstore.json"
        ]
    );
}

/// The documented shape Rego sees under `maestro policy eval --pipeline`.
#[test]
fn the_pipeline_as_a_policy_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(
        dir.path().join("maestro.yaml"),
        "version: 1\nname: checkout\ntags: [critical, payments]\ntrust:\n  keys: [keys/release.pub]\njobs:\n  test:\n    gate: unit\n    run: cargo test\n    shard: 2\n  sbom:\n    uses: maestro/sbom@1\n  ship:\n    gate: deploy\n    needs: [test, sbom]\n    run: ./deploy.sh\n    deploys: [dist/app.tar]\n",
    )
    .expect("spec");
    let p = load_pipeline(&dir.path().join("maestro.yaml")).expect("valid");
    let mut v = p.policy_input();
    v["file"] = "maestro.yaml".into();
    insta::assert_json_snapshot!(v);
}
