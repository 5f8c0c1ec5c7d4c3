//! The migration gate end to end on a real shadow database: SQLite in memory, and a
//! throwaway database on the PostgreSQL server at 127.0.0.1:5432 (user postgres).

use std::path::{Path, PathBuf};

use maestro_migrate::{Database, Report, Selection, check, discover};

const PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
}

fn run(files: &[(&str, &str)], db: &str) -> (tempfile::TempDir, Report) {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("migrations"), files);
    let ms = discover(&[dir.path().join("migrations")]).expect("discover");
    let report = check(&ms, &Selection::All, &Database::parse(db).expect("db")).expect("check");
    (dir, report)
}

fn codes(r: &Report) -> Vec<(&str, &str)> {
    r.findings
        .iter()
        .map(|f| (f.code, f.migration.as_str()))
        .collect()
}

const PLAN: &str = "Adds the column; rollback drops it.\n";

fn base_sqlite() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "0001_users.up.sql",
            "CREATE TABLE users (\n  id INTEGER PRIMARY KEY,\n  name TEXT NOT NULL CHECK (length(name) > 0)\n);\n",
        ),
        ("0001_users.down.sql", "DROP TABLE users;\n"),
        ("0001_users.plan.md", PLAN),
    ]
}

#[test]
fn sqlite_good_migrations_pass_with_dry_run_and_schema_diff() {
    let mut files = base_sqlite();
    files.extend([
        (
            "0002_email/up.sql",
            "-- nullable, so existing rows are fine\nALTER TABLE users ADD COLUMN email TEXT;\nCREATE INDEX users_email ON users (email);\n",
        ),
        (
            "0002_email/down.sql",
            "DROP INDEX users_email;\nALTER TABLE users DROP COLUMN email;\n",
        ),
        ("0002_email/plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, "sqlite");
    assert!(codes(&r).is_empty(), "{:#?}", r.findings);
    assert_eq!(r.migrations.len(), 2);
    assert!(r.migrations.iter().all(|m| m.reversible == Some(true)));
    assert!(
        r.dry_run.contains("-- 0002_email: up again"),
        "{}",
        r.dry_run
    );
    assert!(
        r.dry_run
            .contains("ALTER TABLE users ADD COLUMN email TEXT;\n-- ok"),
        "{}",
        r.dry_run
    );
    assert!(
        r.schema_diff.contains("+ column users.email #3 TEXT"),
        "{}",
        r.schema_diff
    );
    assert!(
        r.schema_diff
            .contains("+ index users_email on users(email)"),
        "{}",
        r.schema_diff
    );
    assert!(
        r.schema
            .iter()
            .any(|l| l == "constraint users.name CHECK (length(name) > 0)"),
        "{:?}",
        r.schema
    );
}

#[test]
fn sqlite_missing_down_blocks_and_names_the_migration() {
    let mut files = base_sqlite();
    files.extend([
        (
            "0002_email.up.sql",
            "ALTER TABLE users ADD COLUMN email TEXT;",
        ),
        ("0002_email.plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, "sqlite");
    assert_eq!(codes(&r), [("MG502", "0002_email")]);
    let f = &r.findings[0];
    assert!(f.blocks && !f.approvable);
    assert_eq!(
        f.message,
        "migration 0002_email has no rollback (down) script"
    );
}

#[test]
fn sqlite_irreversible_down_is_detected() {
    let mut files = base_sqlite();
    files.extend([
        (
            "0002_email.up.sql",
            "ALTER TABLE users ADD COLUMN email TEXT;\nCREATE INDEX users_email ON users (email);",
        ),
        // Forgets the column.
        ("0002_email.down.sql", "DROP INDEX users_email;"),
        ("0002_email.plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, "sqlite");
    let got = codes(&r);
    assert!(got.contains(&("MG507", "0002_email")), "{got:?}");
    let f = r
        .findings
        .iter()
        .find(|f| f.code == "MG507")
        .expect("MG507");
    assert!(
        f.message.contains("+ column users.email #3 TEXT"),
        "{}",
        f.message
    );
    assert!(
        r.schema_diff
            .contains("before up → after down (must be empty)"),
        "{}",
        r.schema_diff
    );
    assert_eq!(r.migrations[1].reversible, Some(false));
}

#[test]
fn sqlite_destructive_change_is_a_blocking_approvable_finding() {
    let mut files = base_sqlite();
    files.extend([
        (
            "0002_drop_name.up.sql",
            "ALTER TABLE users DROP COLUMN name;",
        ),
        (
            "0002_drop_name.down.sql",
            "ALTER TABLE users ADD COLUMN name TEXT NOT NULL DEFAULT '' CHECK (length(name) > 0);",
        ),
        ("0002_drop_name.plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, "sqlite");
    let f = r
        .findings
        .iter()
        .find(|f| f.code == "MG103")
        .expect("{r:#?}");
    assert_eq!(f.message, "drops column users.name");
    assert!(f.blocks && f.approvable);
    assert_eq!(
        f.location(),
        format!("{}:1", f.file.as_ref().expect("file").display())
    );
    // The default differs after down: caught as well.
    assert!(
        codes(&r).contains(&("MG507", "0002_drop_name")),
        "{:?}",
        codes(&r)
    );
}

#[test]
fn a_failing_up_stops_the_replay_with_its_line() {
    let mut files = base_sqlite();
    files.extend([
        (
            "0002_bad.up.sql",
            "ALTER TABLE users ADD COLUMN a TEXT;\nALTER TABLE nope ADD COLUMN b TEXT;",
        ),
        ("0002_bad.down.sql", "ALTER TABLE users DROP COLUMN a;"),
        ("0002_bad.plan.md", PLAN),
        ("0003_later.up.sql", "CREATE TABLE t (x int);"),
        ("0003_later.down.sql", "DROP TABLE t;"),
        ("0003_later.plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, "sqlite");
    let f = r
        .findings
        .iter()
        .find(|f| f.code == "MG505")
        .expect("MG505");
    assert_eq!(f.line, Some(2));
    assert!(f.message.contains("no such table: nope"), "{}", f.message);
    assert!(
        !r.dry_run.contains("0003_later: up"),
        "stops at the failure"
    );
}

#[test]
fn only_changed_migrations_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("migrations");
    let mut files = base_sqlite();
    files.retain(|(n, _)| !n.ends_with(".plan.md"));
    files.push(("0002_t.up.sql", "CREATE TABLE t (x int);"));
    files.push(("0002_t.down.sql", "DROP TABLE t;"));
    files.push(("0002_t.plan.md", PLAN));
    write(&m, &files);
    let ms = discover(std::slice::from_ref(&m)).expect("discover");
    let changed: std::collections::BTreeSet<PathBuf> = [m.join("0002_t.up.sql")].into();
    let r = check(&ms, &Selection::Changed(changed), &Database::Sqlite).expect("check");
    // 0001 has no plan note but is not under check: it is only replayed.
    assert!(codes(&r).is_empty(), "{:?}", codes(&r));
    assert!(!r.migrations[0].checked && r.migrations[1].checked);
    let all = check(&ms, &Selection::All, &Database::Sqlite).expect("check");
    assert_eq!(codes(&all), [("MG503", "0001_users")]);
}

#[test]
fn numbers_order_migrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        &[
            ("10_b.up.sql", ""),
            ("9_a.up.sql", ""),
            ("README.md", "not a migration"),
            ("fixtures/data.csv", ""),
        ],
    );
    let names: Vec<String> = discover(&[dir.path().to_owned()])
        .expect("discover")
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["9_a", "10_b"]);
}

fn pg_exists(name: &str) -> bool {
    let mut c = postgres::Client::connect(PG, postgres::NoTls).expect("connect to PostgreSQL");
    c.query_one(
        "SELECT count(*) FROM pg_database WHERE datname = $1",
        &[&name],
    )
    .expect("query")
    .get::<_, i64>(0)
        == 1
}

fn pg_base() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "0001_users.up.sql",
            "CREATE TYPE plan AS ENUM ('free', 'pro');\nCREATE TABLE users (\n  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n  name text NOT NULL,\n  plan plan NOT NULL DEFAULT 'free'\n);\n",
        ),
        (
            "0001_users.down.sql",
            "DROP TABLE users;\nDROP TYPE plan;\n",
        ),
        ("0001_users.plan.md", PLAN),
    ]
}

#[test]
fn postgres_good_migration_passes_and_the_shadow_database_is_dropped() {
    let mut files = pg_base();
    files.extend([
        (
            "0002_orders.up.sql",
            "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL);\n\
             SET lock_timeout = '5s';\n\
             CREATE INDEX CONCURRENTLY users_name ON users (name);\n\
             ALTER TABLE orders ADD CONSTRAINT orders_user FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n\
             ALTER TABLE orders VALIDATE CONSTRAINT orders_user;\n\
             CREATE FUNCTION order_count(u bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM orders WHERE user_id = u; $$;\n",
        ),
        (
            "0002_orders.down.sql",
            "DROP FUNCTION order_count(bigint);\nDROP INDEX CONCURRENTLY users_name;\nDROP TABLE orders;\n",
        ),
        ("0002_orders.plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, PG);
    assert!(codes(&r).is_empty(), "{:#?}\n{}", r.findings, r.dry_run);
    assert!(r.migrations.iter().all(|m| m.reversible == Some(true)));
    assert!(
        r.schema_diff.contains(
            "+ constraint public.orders orders_user: FOREIGN KEY (user_id) REFERENCES users(id)"
        ),
        "{}",
        r.schema_diff
    );
    assert!(
        r.schema
            .iter()
            .any(|l| l == "type public.plan enum(free, pro)"),
        "{:?}",
        r.schema
    );
    let shadow = r.database.rsplit('/').next().expect("db name");
    assert!(shadow.starts_with("maestro_shadow_"), "{}", r.database);
    assert!(!pg_exists(shadow), "the shadow database is dropped");
}

#[test]
fn postgres_missing_down_irreversible_down_and_locking_hazards() {
    let mut files = pg_base();
    files.extend([
        // No down script at all.
        ("0002_nodown.up.sql", "ALTER TABLE users ADD COLUMN email text;"),
        ("0002_nodown.plan.md", PLAN),
        // A down that forgets the index; an up with every PostgreSQL locking hazard.
        (
            "0003_index.up.sql",
            "CREATE INDEX users_email ON users (email);\nALTER TABLE users ADD CONSTRAINT name_len CHECK (length(name) > 0);\n",
        ),
        ("0003_index.down.sql", "ALTER TABLE users DROP CONSTRAINT name_len;"),
        ("0003_index.plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, PG);
    let got = codes(&r);
    for want in [
        ("MG502", "0002_nodown"),
        ("MG401", "0003_index"),
        ("MG403", "0003_index"),
        ("MG402", "0003_index"),
        ("MG507", "0003_index"),
    ] {
        assert!(got.contains(&want), "{want:?} in {got:?}");
    }
    let irreversible = r
        .findings
        .iter()
        .find(|f| f.code == "MG507")
        .expect("MG507");
    assert!(
        irreversible.message.contains("+ index public.users_email"),
        "{}",
        irreversible.message
    );
}

#[test]
fn postgres_destructive_change_is_found() {
    let mut files = pg_base();
    files.extend([
        (
            "0002_drop.up.sql",
            "SET lock_timeout = '5s';\nALTER TABLE users DROP COLUMN plan;\nDROP TYPE plan;",
        ),
        (
            "0002_drop.down.sql",
            "CREATE TYPE plan AS ENUM ('free', 'pro');\nALTER TABLE users ADD COLUMN plan plan NOT NULL DEFAULT 'free';",
        ),
        ("0002_drop.plan.md", PLAN),
    ]);
    let (_d, r) = run(&files, PG);
    assert_eq!(codes(&r), [("MG103", "0002_drop")], "{:#?}", r.findings);
    assert_eq!(r.findings[0].message, "drops column users.plan");
}

#[test]
fn a_bad_database_url_never_shows_the_password() {
    let e = Database::parse("mysql://root:hunter2@db:3306/x").expect_err("not postgres");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let d = Database::parse("postgres://u:hunter2@127.0.0.1:5432/app").expect("pg");
    assert_eq!(d.shown(), "postgres://u@127.0.0.1:5432/app");
}
