//! Statement lint on the parsed SQL (sqlparser's AST), in the spirit of Atlas
//! `migrate lint` and Squawk: destructive, backward-incompatible and data-dependent
//! changes, and PostgreSQL locking hazards. Every rule has a stable code.

use std::collections::HashSet;

use serde::Serialize;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, ObjectName, ObjectType, Set,
    Statement, TableConstraint,
};

use crate::Engine;

/// What kind of risk a rule finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Destructive,
    BackwardIncompatible,
    DataDependent,
    Locking,
    /// The migration itself: missing scripts, failures on the shadow database.
    Structure,
}

/// A lint or structure rule.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rule {
    pub code: &'static str,
    pub name: &'static str,
    pub class: Class,
    /// Blocks the gate (else it is a warning).
    pub blocks: bool,
    /// An approval label (`migration-approved`) can let it pass; otherwise only a waiver.
    pub approvable: bool,
    pub hint: &'static str,
}

const fn lint(code: &'static str, name: &'static str, class: Class, hint: &'static str) -> Rule {
    Rule {
        code,
        name,
        class,
        blocks: true,
        approvable: true,
        hint,
    }
}

const fn structure(
    code: &'static str,
    name: &'static str,
    blocks: bool,
    hint: &'static str,
) -> Rule {
    Rule {
        code,
        name,
        class: Class::Structure,
        blocks,
        approvable: false,
        hint,
    }
}

/// Every rule, by code. Codes are stable: new rules get new codes.
pub const RULES: &[Rule] = &[
    lint(
        "MG101",
        "drop-schema",
        Class::Destructive,
        "dropping a schema loses every table in it; waive with a reason when intended",
    ),
    lint(
        "MG102",
        "drop-table",
        Class::Destructive,
        "the table's data is lost; stop using it in one release, drop it in a later one",
    ),
    lint(
        "MG103",
        "drop-column",
        Class::Destructive,
        "the column's data is lost and running code that reads it breaks; stop using it first, drop it later",
    ),
    lint(
        "MG201",
        "rename-table",
        Class::BackwardIncompatible,
        "running code still uses the old name: add the new table (or a view), migrate readers, then drop the old one",
    ),
    lint(
        "MG202",
        "rename-column",
        Class::BackwardIncompatible,
        "running code still uses the old name: add a column, backfill, switch readers, then drop the old one",
    ),
    lint(
        "MG203",
        "change-column-type",
        Class::BackwardIncompatible,
        "a type change can fail on existing rows, rewrite the table and break clients; add a new column instead",
    ),
    lint(
        "MG301",
        "add-unique",
        Class::DataDependent,
        "fails if existing rows hold duplicates; check the data first (SELECT … GROUP BY … HAVING count(*) > 1)",
    ),
    lint(
        "MG302",
        "add-not-null-column-without-default",
        Class::DataDependent,
        "fails on a table with rows; give the column a DEFAULT, or add it nullable and backfill",
    ),
    lint(
        "MG303",
        "set-not-null",
        Class::DataDependent,
        "fails if any row holds NULL; on PostgreSQL add a CHECK (col IS NOT NULL) NOT VALID constraint, validate it, then SET NOT NULL",
    ),
    lint(
        "MG401",
        "index-without-concurrently",
        Class::Locking,
        "CREATE INDEX blocks writes to the table while it builds; use CREATE INDEX CONCURRENTLY (outside a transaction)",
    ),
    lint(
        "MG402",
        "constraint-without-not-valid",
        Class::Locking,
        "validating the constraint scans the table under lock; ADD … NOT VALID, then VALIDATE CONSTRAINT in a later migration",
    ),
    lint(
        "MG403",
        "missing-lock-timeout",
        Class::Locking,
        "a statement waiting for its lock blocks every query behind it; start the migration with SET lock_timeout = '5s'",
    ),
    structure(
        "MG501",
        "missing-up",
        true,
        "add NAME.up.sql (or NAME/up.sql) beside the migration's other files",
    ),
    structure(
        "MG502",
        "missing-down",
        true,
        "add the rollback script NAME.down.sql (or NAME/down.sql) that undoes the up script",
    ),
    structure(
        "MG503",
        "missing-plan",
        true,
        "add NAME.plan.md (or NAME/plan.md): what the change does, how it is rolled out and rolled back",
    ),
    structure(
        "MG504",
        "unparsed-statement",
        false,
        "the statement ran on the shadow database but could not be linted; check it by hand",
    ),
    structure(
        "MG505",
        "up-failed",
        true,
        "fix the up script: it fails on the shadow database",
    ),
    structure(
        "MG506",
        "down-failed",
        true,
        "fix the down script: it fails on the shadow database right after the up script",
    ),
    structure(
        "MG507",
        "irreversible-down",
        true,
        "the down script must restore the schema exactly as it was before the up script",
    ),
    structure(
        "MG508",
        "up-not-repeatable",
        true,
        "after down, the up script must produce the same schema again",
    ),
];

/// The rule with `code`.
///
/// # Panics
/// On a code not in [`RULES`] (a programming error, caught by the tests).
#[must_use]
pub fn rule(code: &str) -> &'static Rule {
    RULES
        .iter()
        .find(|r| r.code == code)
        .expect("every code used is in RULES")
}

/// What the linter knows about the migration so far.
#[derive(Debug)]
pub(crate) struct Context {
    engine: Engine,
    /// Tables created by this migration (empty and unseen: no data, no lock contention).
    created: HashSet<String>,
    lock_timeout: bool,
    lock_timeout_reported: bool,
}

impl Context {
    pub(crate) fn new(engine: Engine) -> Context {
        Context {
            engine,
            created: HashSet::new(),
            lock_timeout: false,
            lock_timeout_reported: false,
        }
    }

    fn is_new(&self, table: &ObjectName) -> bool {
        self.created.contains(&key(table))
    }

    /// A statement that takes a heavy lock on an existing table: on PostgreSQL it needs a
    /// lock_timeout first.
    fn locks(&mut self, table: &ObjectName, out: &mut Vec<(&'static str, String)>) {
        if self.engine == Engine::Postgres
            && !self.lock_timeout
            && !self.lock_timeout_reported
            && !self.is_new(table)
        {
            self.lock_timeout_reported = true;
            out.push((
                "MG403",
                format!(
                    "locks {} without a lock_timeout set before it",
                    shown(table)
                ),
            ));
        }
    }
}

/// The last part of a name, unquoted and lower-cased: how tables are compared.
fn key(name: &ObjectName) -> String {
    name.0
        .last()
        .map(|p| {
            p.to_string()
                .trim_matches(['"', '`', '[', ']'])
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn shown(name: &ObjectName) -> String {
    name.to_string()
}

/// Lints one statement; returns (code, message) pairs.
pub(crate) fn statement(s: &Statement, cx: &mut Context) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match s {
        Statement::CreateTable(ct) => {
            cx.created.insert(key(&ct.name));
        }
        Statement::Set(Set::SingleAssignment { variable, .. })
            if variable.to_string().eq_ignore_ascii_case("lock_timeout") =>
        {
            cx.lock_timeout = true;
        }
        Statement::Drop {
            object_type, names, ..
        } => {
            for n in names {
                match object_type {
                    ObjectType::Schema => out.push(("MG101", format!("drops schema {}", shown(n)))),
                    ObjectType::Table if !cx.is_new(n) => {
                        out.push(("MG102", format!("drops table {}", shown(n))));
                        cx.locks(n, &mut out);
                    }
                    _ => {}
                }
            }
        }
        Statement::RenameTable(renames) => {
            for r in renames {
                out.push((
                    "MG201",
                    format!(
                        "renames table {} to {}",
                        shown(&r.old_name),
                        shown(&r.new_name)
                    ),
                ));
            }
        }
        Statement::CreateIndex(ci) => {
            let t = &ci.table_name;
            if !cx.is_new(t) {
                if ci.unique {
                    out.push((
                        "MG301",
                        format!("adds a unique index on existing table {}", shown(t)),
                    ));
                }
                if cx.engine == Engine::Postgres && !ci.concurrently {
                    out.push((
                        "MG401",
                        format!(
                            "creates index {} on {} without CONCURRENTLY",
                            ci.name
                                .as_ref()
                                .map_or_else(|| "(unnamed)".to_owned(), shown),
                            shown(t)
                        ),
                    ));
                    cx.locks(t, &mut out);
                }
            }
        }
        Statement::AlterTable(at) => {
            let t = &at.name;
            if cx.is_new(t) {
                return out;
            }
            for op in &at.operations {
                alter(t, op, cx, &mut out);
            }
            cx.locks(t, &mut out);
        }
        _ => {}
    }
    out
}

fn alter(
    t: &ObjectName,
    op: &AlterTableOperation,
    cx: &Context,
    out: &mut Vec<(&'static str, String)>,
) {
    let pg = cx.engine == Engine::Postgres;
    match op {
        AlterTableOperation::DropColumn { column_names, .. } => {
            for c in column_names {
                out.push(("MG103", format!("drops column {}.{c}", shown(t))));
            }
        }
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => out.push((
            "MG202",
            format!(
                "renames column {}.{old_column_name} to {new_column_name}",
                shown(t)
            ),
        )),
        AlterTableOperation::RenameTable { table_name } => out.push((
            "MG201",
            format!("renames table {} to {table_name}", shown(t)),
        )),
        AlterTableOperation::ChangeColumn {
            old_name, new_name, ..
        } => {
            if old_name.value != new_name.value {
                out.push((
                    "MG202",
                    format!("renames column {}.{old_name} to {new_name}", shown(t)),
                ));
            }
            out.push((
                "MG203",
                format!("changes the type of {}.{old_name}", shown(t)),
            ));
        }
        AlterTableOperation::ModifyColumn { col_name, .. } => {
            out.push((
                "MG203",
                format!("changes the type of {}.{col_name}", shown(t)),
            ));
        }
        AlterTableOperation::AlterColumn { column_name, op } => match op {
            AlterColumnOperation::SetDataType { data_type, .. } => out.push((
                "MG203",
                format!(
                    "changes the type of {}.{column_name} to {data_type}",
                    shown(t)
                ),
            )),
            AlterColumnOperation::SetNotNull => {
                out.push(("MG303", format!("sets {}.{column_name} NOT NULL", shown(t))))
            }
            _ => {}
        },
        AlterTableOperation::AddColumn { column_def, .. } => {
            let opts = || column_def.options.iter().map(|o| &o.option);
            let not_null = opts().any(|o| matches!(o, ColumnOption::NotNull));
            let default = opts().any(|o| {
                matches!(
                    o,
                    ColumnOption::Default(_)
                        | ColumnOption::Generated { .. }
                        | ColumnOption::Identity(_)
                )
            });
            if not_null && !default {
                out.push((
                    "MG302",
                    format!(
                        "adds NOT NULL column {}.{} without a default",
                        shown(t),
                        column_def.name
                    ),
                ));
            }
        }
        AlterTableOperation::AddConstraint {
            constraint,
            not_valid,
        } => match constraint {
            TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_) => out.push((
                "MG301",
                format!("adds a unique constraint to existing table {}", shown(t)),
            )),
            TableConstraint::ForeignKey(_) | TableConstraint::Check(_) if pg && !not_valid => {
                out.push((
                    "MG402",
                    format!(
                        "adds a {} constraint to {} without NOT VALID",
                        if matches!(constraint, TableConstraint::Check(_)) {
                            "CHECK"
                        } else {
                            "FOREIGN KEY"
                        },
                        shown(t)
                    ),
                ));
            }
            _ => {}
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
    use sqlparser::parser::Parser;

    fn codes(engine: Engine, sql: &str) -> Vec<&'static str> {
        let stmts = match engine {
            Engine::Postgres => Parser::parse_sql(&PostgreSqlDialect {}, sql),
            Engine::Sqlite => Parser::parse_sql(&SQLiteDialect {}, sql),
        }
        .expect("parses");
        let mut cx = Context::new(engine);
        stmts
            .iter()
            .flat_map(|s| statement(s, &mut cx))
            .map(|(c, _)| c)
            .collect()
    }

    #[test]
    fn every_code_is_known_and_unique() {
        let mut seen = HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.code), "{} twice", r.code);
        }
        for c in ["MG101", "MG403", "MG508"] {
            assert_eq!(rule(c).code, c);
        }
    }

    #[test]
    fn destructive_and_incompatible_changes() {
        let sql = "DROP SCHEMA old CASCADE; DROP TABLE legacy; ALTER TABLE users DROP COLUMN email;
                   ALTER TABLE users RENAME TO people; ALTER TABLE people RENAME COLUMN name TO full_name;
                   ALTER TABLE people ALTER COLUMN age TYPE bigint;";
        let got = codes(Engine::Sqlite, sql);
        assert_eq!(got, ["MG101", "MG102", "MG103", "MG201", "MG202", "MG203"]);
    }

    #[test]
    fn data_dependent_changes() {
        let sql = "CREATE UNIQUE INDEX u ON users (email);
                   ALTER TABLE users ADD COLUMN tenant int NOT NULL;
                   ALTER TABLE users ADD COLUMN plan text NOT NULL DEFAULT 'free';
                   ALTER TABLE users ALTER COLUMN name SET NOT NULL;";
        assert_eq!(codes(Engine::Sqlite, sql), ["MG301", "MG302", "MG303"]);
    }

    #[test]
    fn postgres_locking_hazards() {
        let sql = "CREATE INDEX i ON orders (user_id);
                   ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);";
        assert_eq!(codes(Engine::Postgres, sql), ["MG401", "MG403", "MG402"]);
        let safe = "SET lock_timeout = '5s';
                    CREATE INDEX CONCURRENTLY i ON orders (user_id);
                    ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
                    ALTER TABLE orders VALIDATE CONSTRAINT fk;";
        assert!(codes(Engine::Postgres, safe).is_empty());
        // The same on SQLite: no PostgreSQL lock rules.
        assert!(codes(Engine::Sqlite, "CREATE INDEX i ON orders (user_id);").is_empty());
    }

    #[test]
    fn a_table_created_in_the_same_migration_is_exempt() {
        let sql = "CREATE TABLE t (id int); CREATE UNIQUE INDEX u ON t (id);
                   ALTER TABLE t ADD COLUMN x int NOT NULL; DROP TABLE t;";
        assert!(codes(Engine::Postgres, sql).is_empty());
    }
}
