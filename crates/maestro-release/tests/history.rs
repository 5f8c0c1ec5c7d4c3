//! Versions and notes computed from a real git history built here: a release tag, then
//! breaking, feat, fix and perf commits with scopes, a PR merged with a merge commit, a
//! revert within the range (which cancels), a revert of an earlier release's commit, a
//! non-conventional commit, a docs commit. Dates and authors are fixed, so the commit ids
//! and the rendered notes are the same on every run.

use std::path::Path;
use std::process::Command;

use maestro_release::{Labels, ReleaseConfig, plan};

struct Repo {
    dir: tempfile::TempDir,
    tick: std::cell::Cell<u32>,
}

impl Repo {
    fn new() -> Repo {
        let r = Repo {
            dir: tempfile::tempdir().expect("tmp"),
            tick: std::cell::Cell::new(0),
        };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_as("Alice Example", args)
    }

    fn git_as(&self, author: &str, args: &[&str]) -> String {
        self.tick.set(self.tick.get() + 1);
        let date = format!("2026-11-01T10:{:02}:00+00:00", self.tick.get());
        let out = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", author)
            .env("GIT_AUTHOR_EMAIL", "dev@example.com")
            .env("GIT_COMMITTER_NAME", author)
            .env("GIT_COMMITTER_EMAIL", "dev@example.com")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A commit touching its own file.
    fn commit(&self, author: &str, message: &str) -> String {
        let n = self.tick.get();
        std::fs::write(self.path().join(format!("f{n}.txt")), message).expect("write");
        self.git_as(author, &["add", "-A"]);
        self.git_as(author, &["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

fn config() -> ReleaseConfig {
    ReleaseConfig {
        repository_url: Some("https://github.com/acme/shop".into()),
        ..ReleaseConfig::default()
    }
}

/// The plan of `r`'s HEAD with no labels and no pre-release.
fn planned(r: &Repo) -> maestro_release::Plan {
    plan(
        r.path(),
        "HEAD",
        &config(),
        &Labels::new(),
        None,
        "2026-12-03",
    )
    .expect("plan")
}

fn history() -> Repo {
    let r = Repo::new();
    r.commit("Alice Example", "initial import");
    let old = r.commit("Alice Example", "feat: the old greeting");
    r.git(&["tag", "v1.2.0"]);
    r.git(&["tag", "not-a-release"]);
    r.commit("Alice Example", "feat(api): the flags endpoint (#12)");
    r.commit("Bob Builder", "fix: keep the session cookie");
    r.commit(
        "Alice Example",
        "feat(console)!: a new layout\n\nBREAKING CHANGE: the /ui pages moved to /console; update bookmarks",
    );
    r.commit("Bob Builder", "docs: a typo");
    r.commit("Carol", "wip stuff");
    let shiny = r.commit("Carol", "feat: a shiny thing");
    r.git(&["revert", "--no-edit", &shiny]);
    // A PR merged with a merge commit.
    r.git(&["checkout", "-q", "-b", "retry"]);
    r.commit("Bob Builder", "fix(store): retry when the database is busy");
    r.git(&["checkout", "-q", "main"]);
    r.commit("Alice Example", "perf: faster cache keys");
    r.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge pull request #15 from acme/retry",
        "retry",
    ]);
    r.git(&["revert", "--no-edit", &old]);
    r
}

#[test]
fn the_next_version_and_the_notes_come_from_the_commits_since_the_last_release() {
    let r = history();
    let p = planned(&r);
    assert_eq!(p.previous.as_deref(), Some("v1.2.0"));
    assert_eq!(
        p.version.as_ref().map(ToString::to_string).as_deref(),
        Some("2.0.0"),
        "a breaking change"
    );
    assert_eq!(p.tag.as_deref(), Some("v2.0.0"));
    let n = &p.notes;
    assert_eq!(
        n.commits, 11,
        "every commit since v1.2.0, the merge included"
    );
    assert_eq!(
        (
            n.skipped.merges,
            n.skipped.not_conventional,
            n.skipped.reverted,
            n.hidden
        ),
        (1, 1, 2, 1),
        "{:?}",
        n.skipped
    );
    let fixes = n
        .sections
        .iter()
        .find(|s| s.title == "Bug fixes")
        .expect("fixes");
    let store = fixes
        .entries
        .iter()
        .find(|e| e.scope.as_deref() == Some("store"))
        .expect("store fix");
    assert_eq!(store.pr, Some(15), "the merged PR's number");
    insta::assert_snapshot!("notes.md", n.markdown());
    insta::assert_json_snapshot!("notes.json", n.json());
}

#[test]
fn a_pre_release_counts_from_the_last_one_and_labels_apply() {
    let r = history();
    r.git(&["tag", "v2.0.0-rc.1"]);
    let labels = Labels::from([(12, vec!["skip-changelog".to_owned()])]);
    let p = plan(
        r.path(),
        "HEAD",
        &config(),
        &labels,
        Some("rc"),
        "2026-12-03",
    )
    .expect("plan");
    assert_eq!(
        p.version.map(|v| v.to_string()).as_deref(),
        Some("2.0.0-rc.2")
    );
    assert_eq!(
        p.previous.as_deref(),
        Some("v1.2.0"),
        "notes since the last stable release"
    );
    assert_eq!(p.notes.skipped.labelled, 1);
    assert!(!p.notes.markdown().contains("flags endpoint"));

    // Released: nothing since makes another release.
    r.git(&["tag", "v2.0.0"]);
    r.commit("Alice Example", "docs: after the release");
    let p = planned(&r);
    assert_eq!((p.version, p.previous.as_deref()), (None, Some("v2.0.0")));
}

#[test]
fn the_first_release_has_the_initial_version_and_a_bad_revision_is_named() {
    let r = Repo::new();
    r.commit("Alice Example", "feat: hello");
    let p = planned(&r);
    assert_eq!(p.version.map(|v| v.to_string()).as_deref(), Some("0.1.0"));
    assert_eq!(p.previous, None);
    let e = plan(
        r.path(),
        "no-such-branch",
        &config(),
        &Labels::new(),
        None,
        "x",
    )
    .expect_err("bad rev");
    assert!(e.to_string().contains("rev-parse"), "{e}");
}

#[test]
fn pr_labels_are_read_from_gh_output_or_a_plain_map() {
    let dir = tempfile::tempdir().expect("tmp");
    let gh = dir.path().join("prs.json");
    std::fs::write(
        &gh,
        r#"[{"number": 12, "labels": [{"name": "breaking-change"}, {"name": "api"}]}]"#,
    )
    .expect("write");
    let l = maestro_release::read_labels(&gh).expect("gh shape");
    assert_eq!(l[&12], ["breaking-change", "api"]);
    let plain = dir.path().join("labels.json");
    std::fs::write(&plain, r##"{"#15": ["skip-changelog"]}"##).expect("write");
    assert_eq!(
        maestro_release::read_labels(&plain).expect("plain")[&15],
        ["skip-changelog"]
    );
    std::fs::write(&plain, r#"[{"number": "x"}]"#).expect("write");
    let e = maestro_release::read_labels(&plain).expect_err("bad");
    assert!(e.to_string().contains("labels.json: [0].number"), "{e}");
}
