//! The migration gate end to end: `maestro migrate check` and `maestro/migration@1` in a
//! pipeline, on SQLite and on the PostgreSQL server at 127.0.0.1:5432.

mod common;

use common::{Repo, text};

const PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn with_users(repo: &Repo) {
    repo.write(
        "migrations/0001_users.up.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, legacy TEXT);\n",
    );
    repo.write("migrations/0001_users.down.sql", "DROP TABLE users;\n");
    repo.write("migrations/0001_users.plan.md", "Creates users.\n");
}

fn drop_legacy(repo: &Repo) {
    repo.write(
        "migrations/0002_drop_legacy/up.sql",
        "ALTER TABLE users DROP COLUMN legacy;\n",
    );
    repo.write(
        "migrations/0002_drop_legacy/down.sql",
        "ALTER TABLE users ADD COLUMN legacy TEXT;\n",
    );
    repo.write(
        "migrations/0002_drop_legacy/plan.md",
        "legacy is unread since v41; rollback re-adds it empty.\n",
    );
}

#[test]
fn the_pipeline_gate_passes_good_migrations_and_keeps_the_artifacts() {
    let repo = Repo::new();
    with_users(&repo);
    repo.write(
        "migrations/0002_email.up.sql",
        "ALTER TABLE users ADD COLUMN email TEXT;\n",
    );
    repo.write(
        "migrations/0002_email.down.sql",
        "ALTER TABLE users DROP COLUMN email;\n",
    );
    repo.write("migrations/0002_email.plan.md", "Adds email.\n");
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  migrations:\n    uses: maestro/migration@1\n  publish:\n    gate: publish\n    run: echo built > built.txt\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let dry = repo.read("migration-report/dry-run.sql");
    assert!(dry.contains("-- 0002_email: up again"), "{dry}");
    let diff = repo.read("migration-report/schema-diff.txt");
    assert!(diff.contains("+ column users.email #4 TEXT"), "{diff}");
    let report: serde_json::Value =
        serde_json::from_str(&repo.read("migration-report/report.json")).expect("json");
    assert_eq!(report["migrations"][1]["reversible"], true);

    // A migration without its rollback turns the gate red and names it.
    std::fs::remove_file(repo.path().join("migrations/0002_email.down.sql")).expect("rm");
    std::fs::remove_file(repo.path().join("built.txt")).expect("rm");
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("gate migration is red"), "{out}");
    assert!(
        out.contains("migration 0002_email has no rollback (down) script"),
        "{out}"
    );
    assert!(
        !repo.path().join("built.txt").exists(),
        "publish never starts"
    );
}

#[test]
fn a_destructive_change_blocks_without_a_waiver_and_passes_with_one() {
    let repo = Repo::new();
    with_users(&repo);
    drop_legacy(&repo);
    let out = repo.run(&["migrate", "check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("BLOCK MG103 drop-column migrations/0002_drop_legacy/up.sql:1: drops column users.legacy (0002_drop_legacy)"),
        "{t}"
    );
    assert!(
        t.contains("or label the change `migration-approved`, or add a waiver"),
        "{t}"
    );

    // Waived (by name or code), for this migration only.
    repo.write(
        ".ci/waivers.yaml",
        "waivers:\n- rule: drop-column\n  resource: 0002_drop_legacy\n  reason: unread since v41 (DATA-17)\n  approver: dba@example.com\n  expires: 2999-01-01\n",
    );
    let out = repo.run(&["migrate", "check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("WAIVED MG103 drop-column"), "{t}");
    assert!(
        t.contains("waived until 2999-01-01 by dba@example.com: unread since v41 (DATA-17)"),
        "{t}"
    );

    // Expired: blocks again, and says so.
    repo.write(
        ".ci/waivers.yaml",
        &repo
            .read(".ci/waivers.yaml")
            .replace("2999-01-01", "2021-01-01"),
    );
    let out = repo.run(&["migrate", "check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("expired 2021-01-01"), "{t}");

    // The approval label lets lint findings through (recorded as well)...
    let out = repo
        .cmd(&["migrate", "check"])
        .env("MAESTRO_LABELS", "db, migration-approved")
        .output()
        .expect("spawn");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("APPROVED MG103"), "{t}");
    assert!(
        t.contains("approved by the `migration-approved` label"),
        "{t}"
    );
    let uses = repo.json(&["policy", "waivers", "--json"]);
    let gates: Vec<&str> = uses["uses"]
        .as_array()
        .expect("uses")
        .iter()
        .map(|u| u["source"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(gates[0], "label migration-approved", "{uses}");
    assert_eq!(uses["uses"][0]["gate"], "migration");

    // ...but not a missing rollback: that needs a waiver.
    std::fs::remove_file(repo.path().join("migrations/0002_drop_legacy/down.sql")).expect("rm");
    let out = repo.run(&["migrate", "check", "--label", "migration-approved"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("BLOCK MG502 missing-down 0002_drop_legacy"),
        "{t}"
    );
}

#[test]
fn postgres_gate_good_and_destructive() {
    let repo = Repo::new();
    repo.write(
        "migrations/0001_users.up.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, legacy text);\n",
    );
    repo.write("migrations/0001_users.down.sql", "DROP TABLE users;\n");
    repo.write("migrations/0001_users.plan.md", "Creates users.\n");
    repo.write(
        "migrations/0002_index.up.sql",
        "CREATE INDEX CONCURRENTLY users_name ON users (name);\n",
    );
    repo.write(
        "migrations/0002_index.down.sql",
        "DROP INDEX CONCURRENTLY users_name;\n",
    );
    repo.write("migrations/0002_index.plan.md", "Index for search.\n");
    let out = repo.run(&["migrate", "check", "--database", PG]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("2 migration(s) replayed on postgres://postgres@127.0.0.1:5432/maestro_shadow_"),
        "{t}"
    );
    let diff = repo.read("migration-report/schema-diff.txt");
    assert!(
        diff.contains(
            "+ index public.users_name: CREATE INDEX users_name ON public.users USING btree (name)"
        ),
        "{diff}"
    );

    drop_legacy(&repo);
    let out = repo.run(&["migrate", "check", "--database", PG, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let codes: Vec<(&str, &str)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap_or(""),
                f["decision"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(codes, [("MG103", "blocked"), ("MG403", "blocked")], "{v}");

    // Waived, both findings pass on PostgreSQL too.
    repo.write(
        ".ci/waivers.yaml",
        "waivers:\n- {rule: MG103, resource: 0002_drop_legacy, reason: unread since v41, approver: dba, expires: 2999-01-01}\n- {rule: missing-lock-timeout, resource: 0002_*, reason: table has 12 rows, approver: dba, expires: 2999-01-01}\n",
    );
    let out = repo.run(&["migrate", "check", "--database", PG]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("0 blocking, 2 waived"), "{t}");
}

#[test]
fn with_a_base_only_changed_migrations_are_checked() {
    let repo = Repo::new();
    with_users(&repo);
    // An old migration that would not pass today's lint.
    drop_legacy(&repo);
    repo.git(&["init", "-q", "-b", "main"]);
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "base"]);
    repo.git(&["checkout", "-qb", "feature"]);
    repo.write(
        "migrations/0003_email.up.sql",
        "ALTER TABLE users ADD COLUMN email TEXT;\n",
    );
    repo.write("migrations/0003_email.plan.md", "Adds email.\n");
    let out = repo.run(&["migrate", "check", "--base", "main"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("BLOCK MG502 missing-down 0003_email"), "{t}");
    assert!(!t.contains("MG103"), "0002 is not under check: {t}");
    assert!(
        t.contains("3 migration(s) replayed on sqlite (in memory), 1 checked"),
        "{t}"
    );

    let out = repo.run(&["migrate", "check", "--base", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
