//! `maestro repro`: the same commit built twice in clean directories, outputs compared,
//! the result recorded on the run.

mod common;

use common::{Repo, text};
use sha2::{Digest, Sha256};

fn committed(spec: &str) -> Repo {
    let repo = Repo::new();
    repo.write("maestro.yaml", spec);
    repo.write("src.txt", "v1\n");
    repo.write(".gitignore", ".maestro/\ndist/\n");
    repo.git(&["init", "-q", "-b", "main"]);
    repo.git(&["add", "."]);
    repo.git(&["commit", "-q", "-m", "feat: first"]);
    repo
}

const REPRODUCIBLE: &str = r#"
version: 1
jobs:
  gen:
    run: mkdir -p gen && tr a-z A-Z < src.txt > gen/upper.txt
    inputs: [src.txt]
    outputs: [gen/upper.txt]
  build:
    needs: [gen]
    run: mkdir -p dist/doc && printf 'from %s at %s\n' "$(cat gen/upper.txt)" "$SOURCE_DATE_EPOCH" > dist/doc/out.txt && cp gen/upper.txt dist/
    outputs: [dist]
"#;

const NOT_REPRODUCIBLE: &str = r#"
version: 1
jobs:
  build:
    run: |
      mkdir -p dist
      printf 'same\nbuilt in %s\n' "$PWD" > dist/info.txt
      head -c 64 /dev/urandom > dist/blob.bin
      echo stable > dist/stable.txt
    outputs: [dist]
"#;

#[test]
fn a_reproducible_build_is_confirmed_and_recorded_on_its_run() {
    let repo = committed(REPRODUCIBLE);
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    // Uncommitted changes are not what repro builds.
    repo.write("src.txt", "v2 (uncommitted)\n");
    let out = repo.run(&["repro", "build"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("reproducible: 2 file(s) identical"), "{t}");
    assert!(t.contains("recorded as check #1 on run #1"), "{t}");

    let run = repo.json(&["runs", "show", "1", "--json"]);
    let check = &run["repro"][0];
    assert_eq!(check["job"], "build");
    assert_eq!(check["reproducible"], true);
    let report = &check["report"];
    let epoch = report["source_date_epoch"].as_i64().expect("epoch");
    assert!(epoch > 1_600_000_000, "the commit's time: {epoch}");
    let expected = format!("from V1 at {epoch}\n");
    assert_eq!(
        report["identical"]["dist/doc/out.txt"],
        hex::encode(Sha256::digest(expected.as_bytes())),
        "{report}"
    );
    let shown = repo.run(&["runs", "show", "1"]);
    assert!(text(&shown).contains("repro check #1 of `build`: reproducible"));
}

#[test]
fn a_non_reproducible_build_names_the_files_and_where_they_differ() {
    let repo = committed(NOT_REPRODUCIBLE);
    let out = repo.run(&["repro", "build", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["reproducible"], false);
    let differing = report["differing"].as_array().expect("differing");
    let paths: Vec<&str> = differing
        .iter()
        .map(|d| d["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["dist/blob.bin", "dist/info.txt"]);
    assert_eq!(differing[0]["first"]["kind"], "byte");
    assert_eq!(differing[1]["first"]["kind"], "line");
    assert_eq!(differing[1]["first"]["line"], 2);
    assert!(
        differing[1]["first"]["a"]
            .as_str()
            .expect("a")
            .contains("maestro-repro-"),
        "{report}"
    );
    assert!(report["identical"]["dist/stable.txt"].is_string());

    let human = repo.run(&["repro", "build"]);
    let t = text(&human);
    assert!(t.contains("NOT reproducible: 2 of 3 file(s) differ"), "{t}");
    assert!(t.contains("dist/info.txt"), "{t}");
    assert!(t.contains("line 2: \"built in "), "{t}");
    assert!(t.contains("first difference at byte"), "{t}");
    assert!(t.contains("no run of `build` at this commit yet"), "{t}");
}

#[test]
fn a_failing_build_or_a_job_without_outputs_is_reported() {
    let repo = committed(
        "version: 1\njobs:\n  build:\n    run: exit 4\n    outputs: [dist]\n  lint:\n    run: 'true'\n",
    );
    let out = repo.run(&["repro", "build"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("failed: `build`"), "{t}");
    assert!(t.contains("build directories kept in"), "{t}");
    let out = repo.run(&["repro", "lint"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("job `lint` declares no outputs"));
    let out = repo.run(&["repro", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no job named `nope`"));
}

#[test]
fn the_builtin_module_checks_a_job_inside_the_pipeline_and_records_it_on_the_run() {
    let spec = format!(
        "{REPRODUCIBLE}  repro:\n    uses: maestro/repro@1\n    needs: [build]\n    with: {{ job: build }}\n"
    );
    let repo = committed(&spec);
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let run = repo.json(&["runs", "show", "1", "--json"]);
    assert_eq!(run["repro"][0]["job"], "build", "{run}");
    assert_eq!(run["repro"][0]["reproducible"], true);
}
