//! `maestro release plan` and `maestro release changelog` with the real binary on a git
//! repository: the dry run changes nothing, `--json` carries the version and the notes,
//! nothing releasable exits 1, and the changelog gets each version once.

mod common;

use common::{Repo, text};

fn commit(repo: &Repo, file: &str, message: &str) {
    repo.write(file, message);
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", message]);
}

#[test]
fn plan_is_a_dry_run_and_the_changelog_takes_each_release_once() {
    let repo = Repo::new();
    repo.git(&["init", "-q", "-b", "main"]);
    commit(&repo, "a", "feat: greet in English");
    repo.git(&["tag", "v0.1.0"]);
    commit(&repo, "b", "feat(i18n): greet in Welsh (#3)");
    commit(&repo, "c", "fix: no trailing space");
    commit(&repo, "d", "chore: bump deps");

    let out = repo.run(&[
        "release",
        "plan",
        "--repository-url",
        "https://github.com/acme/hello",
    ]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.starts_with("## [0.2.0](https://github.com/acme/hello/compare/v0.1.0...v0.2.0)"),
        "{shown}"
    );
    assert!(
        shown.contains("- **i18n:** greet in Welsh ([#3](https://github.com/acme/hello/pull/3))"),
        "{shown}"
    );
    assert!(
        !shown.contains("bump deps"),
        "chores are not in the notes: {shown}"
    );
    assert!(
        !repo.path().join("CHANGELOG.md").exists(),
        "plan changes nothing"
    );

    let plan = repo.json(&["release", "plan", "--json", "--pre", "rc"]);
    assert_eq!(plan["version"], "0.2.0-rc.1");
    assert_eq!(plan["previous"], "v0.1.0");
    assert_eq!(plan["notes"]["commits"], 3);
    assert_eq!(plan["notes"]["hidden"], 1);

    let out = repo.run(&["release", "changelog"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = repo.read("CHANGELOG.md");
    assert!(
        log.starts_with("# Changelog\n") && log.contains("## 0.2.0 ("),
        "{log}"
    );
    let out = repo.run(&["release", "changelog"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("0.2.0 is already in it"),
        "{}",
        text(&out)
    );
    assert_eq!(repo.read("CHANGELOG.md"), log, "unchanged");

    // Released; only a chore since: nothing to release (exit 1).
    repo.git(&["tag", "v0.2.0"]);
    commit(&repo, "e", "chore: tidy");
    let out = repo.run(&["release", "plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("nothing to release: 1 commit(s) since v0.2.0"),
        "{}",
        text(&out)
    );

    // Not a repository: a usage error that says so.
    let empty = Repo::new();
    let out = empty.run(&["release", "plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("git repository"), "{}", text(&out));
}

#[test]
fn the_pipeline_release_block_configures_tags_sections_and_links() {
    let repo = Repo::new();
    repo.git(&["init", "-q", "-b", "main"]);
    repo.write(
        "maestro.yaml",
        "version: 1\nrelease:\n  tag-prefix: release-\n  repository-url: https://git.example.com/acme/hello\n  groups:\n    - title: New\n      types: [feat]\n    - title: Docs\n      types: [docs]\n  patch-types: [fix, docs]\njobs:\n  build:\n    run: echo built\n",
    );
    commit(&repo, "a", "feat: greet");
    repo.git(&["tag", "release-1.0.0"]);
    repo.git(&["tag", "v9.9.9"]);
    commit(&repo, "b", "docs: how to greet");
    let plan = repo.json(&["release", "plan", "--json"]);
    assert_eq!(plan["version"], "1.0.1", "docs make a patch here: {plan}");
    assert_eq!(plan["tag"], "release-1.0.1");
    assert_eq!(
        plan["previous"], "release-1.0.0",
        "v9.9.9 is not one of this prefix"
    );
    let md = plan["markdown"].as_str().expect("markdown");
    assert!(md.contains("### Docs\n\n- how to greet"), "{md}");
    assert!(
        md.contains("https://git.example.com/acme/hello/compare/release-1.0.0...release-1.0.1"),
        "{md}"
    );

    // A flag overrides the file; a bad block is named.
    let plan = repo.json(&["release", "plan", "--json", "--tag-prefix", "v"]);
    assert_eq!(plan["previous"], "v9.9.9", "{plan}");
    repo.write(
        "maestro.yaml",
        "version: 1\nrelease:\n  tag-prefx: x\njobs:\n  build:\n    run: echo\n",
    );
    let out = repo.run(&["release", "plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("tag-prefx"), "{}", text(&out));
}
