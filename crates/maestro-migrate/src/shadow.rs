//! Throwaway shadow databases and schema snapshots.
//!
//! A snapshot is a sorted set of lines, one per schema fact (a table, a column with its
//! position, type, nullability and default, an index, a constraint, a view, …), so two
//! snapshots compare exactly and their difference reads as a diff.

use std::collections::BTreeSet;

use sqlparser::ast::Statement;
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

/// A schema as comparable lines.
pub type Schema = BTreeSet<String>;

/// Lines only in `a` (`- …`) and only in `b` (`+ …`).
#[must_use]
pub fn diff(a: &Schema, b: &Schema) -> Vec<String> {
    a.difference(b)
        .map(|l| format!("- {l}"))
        .chain(b.difference(a).map(|l| format!("+ {l}")))
        .collect()
}

/// A database the gate may do anything to.
pub(crate) trait Shadow {
    /// Runs one statement.
    fn exec(&mut self, sql: &str) -> Result<(), String>;
    fn snapshot(&mut self) -> Result<Schema, String>;
    /// Where it is, for reports (no password).
    fn describe(&self) -> String;
}

fn collapse(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// SQLite in memory.
pub(crate) struct Sqlite {
    conn: rusqlite::Connection,
}

impl Sqlite {
    pub(crate) fn open() -> Result<Sqlite, String> {
        let conn = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| e.to_string())?;
        Ok(Sqlite { conn })
    }

    fn rows(&self, sql: &str, args: &[&str], width: usize) -> Result<Vec<Vec<String>>, String> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| e.to_string())?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                (0..width)
                    .map(|i| {
                        let v: rusqlite::types::Value = r.get(i)?;
                        Ok(match v {
                            rusqlite::types::Value::Null => String::new(),
                            rusqlite::types::Value::Integer(i) => i.to_string(),
                            rusqlite::types::Value::Real(f) => f.to_string(),
                            rusqlite::types::Value::Text(t) => t,
                            rusqlite::types::Value::Blob(b) => hex::encode(b),
                        })
                    })
                    .collect::<Result<Vec<String>, rusqlite::Error>>()
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    }
}

impl Shadow for Sqlite {
    fn describe(&self) -> String {
        "sqlite (in memory)".to_owned()
    }

    fn exec(&mut self, sql: &str) -> Result<(), String> {
        self.conn.execute_batch(sql).map_err(|e| e.to_string())
    }

    fn snapshot(&mut self) -> Result<Schema, String> {
        let mut out = Schema::new();
        let objects = self.rows(
            "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_schema
             WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
            &[],
            4,
        )?;
        for o in &objects {
            let (kind, name, table, sql) = (&o[0], &o[1], &o[2], &o[3]);
            match kind.as_str() {
                "table" => {
                    out.insert(format!("table {name}"));
                    for c in self.rows(
                        "SELECT cid, name, type, \"notnull\", COALESCE(dflt_value, ''), pk, hidden
                         FROM pragma_table_xinfo(?1)",
                        &[name],
                        7,
                    )? {
                        let position = c[0].parse::<u64>().unwrap_or(0) + 1;
                        let mut line = format!("column {name}.{} #{position} {}", c[1], c[2]);
                        if c[3] == "1" {
                            line.push_str(" NOT NULL");
                        }
                        if !c[4].is_empty() {
                            line.push_str(&format!(" DEFAULT {}", c[4]));
                        }
                        if c[5] != "0" {
                            line.push_str(&format!(" PRIMARY KEY {}", c[5]));
                        }
                        if c[6] != "0" {
                            line.push_str(" GENERATED");
                        }
                        out.insert(line);
                    }
                    let fks = self.rows(
                        "SELECT id, \"table\", \"from\", COALESCE(\"to\", ''), on_update, on_delete
                         FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
                        &[name],
                        6,
                    )?;
                    let mut ids: Vec<&String> = fks.iter().map(|f| &f[0]).collect();
                    ids.dedup();
                    for id in ids {
                        let parts: Vec<&Vec<String>> = fks.iter().filter(|f| &f[0] == id).collect();
                        let from: Vec<&str> = parts.iter().map(|f| f[2].as_str()).collect();
                        let to: Vec<&str> = parts.iter().map(|f| f[3].as_str()).collect();
                        out.insert(format!(
                            "foreign key {name}({}) references {}({}) on update {} on delete {}",
                            from.join(", "),
                            parts[0][1],
                            to.join(", "),
                            parts[0][4],
                            parts[0][5]
                        ));
                    }
                    // CHECK constraints are only in the table's SQL: read them with the parser.
                    if let Ok(stmts) = Parser::parse_sql(&SQLiteDialect {}, sql)
                        && let Some(Statement::CreateTable(ct)) = stmts.first()
                    {
                        for c in &ct.constraints {
                            if matches!(c, sqlparser::ast::TableConstraint::Check(_)) {
                                out.insert(format!("constraint {name} {c}"));
                            }
                        }
                        for col in &ct.columns {
                            for o in &col.options {
                                if matches!(o.option, sqlparser::ast::ColumnOption::Check(_)) {
                                    out.insert(format!(
                                        "constraint {name}.{} {}",
                                        col.name, o.option
                                    ));
                                }
                            }
                        }
                    }
                }
                "index" => {
                    let cols = self.rows(
                        "SELECT COALESCE(name, '<expr>') FROM pragma_index_info(?1) ORDER BY seqno",
                        &[name],
                        1,
                    )?;
                    let cols: Vec<&str> = cols.iter().map(|c| c[0].as_str()).collect();
                    out.insert(format!(
                        "index {name} on {table}({}): {}",
                        cols.join(", "),
                        collapse(sql)
                    ));
                }
                other => {
                    out.insert(format!("{other} {name} on {table}: {}", collapse(sql)));
                }
            }
            if kind == "table" {
                // Implicit indexes (UNIQUE, PRIMARY KEY) are named after the table.
                for i in self.rows(
                    "SELECT name, \"unique\", origin FROM pragma_index_list(?1) WHERE origin <> 'c'",
                    &[name],
                    3,
                )? {
                    let cols = self.rows(
                        "SELECT COALESCE(name, '<expr>') FROM pragma_index_info(?1) ORDER BY seqno",
                        &[&i[0]],
                        1,
                    )?;
                    let cols: Vec<&str> = cols.iter().map(|c| c[0].as_str()).collect();
                    out.insert(format!(
                        "{} {name}({})",
                        if i[2] == "pk" { "primary key" } else { "unique" },
                        cols.join(", ")
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A database created for this check on a PostgreSQL server, dropped when done.
pub(crate) struct Postgres {
    client: Option<postgres::Client>,
    admin: postgres::Client,
    name: String,
    shown: String,
}

pub(crate) use maestro_store::pg::shown;

impl Postgres {
    pub(crate) fn create(config: &postgres::Config) -> Result<Postgres, String> {
        let mut admin = config
            .connect(postgres::NoTls)
            .map_err(|e| format!("cannot connect to {}: {e}", shown(config)))?;
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
        let name = format!("maestro_shadow_{}", hex::encode(bytes));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| {
                format!(
                    "cannot create the shadow database on {}: {e}",
                    shown(config)
                )
            })?;
        let mut cfg = config.clone();
        cfg.dbname(&name);
        let client = cfg
            .connect(postgres::NoTls)
            .map_err(|e| format!("cannot connect to the shadow database {name}: {e}"));
        let mut me = Postgres {
            client: None,
            admin,
            shown: shown(&cfg),
            name,
        };
        me.client = Some(client?);
        Ok(me)
    }

    fn client(&mut self) -> Result<&mut postgres::Client, String> {
        self.client
            .as_mut()
            .ok_or_else(|| "the shadow database is closed".to_owned())
    }

    fn lines(&mut self, sql: &str, out: &mut Schema) -> Result<(), String> {
        for row in self.client()?.query(sql, &[]).map_err(|e| e.to_string())? {
            out.insert(row.get::<_, String>(0));
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        drop(self.client.take());
        // Best effort: WITH (FORCE) ends any session still attached (PostgreSQL 13+).
        let _ = self.admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

const USER_SCHEMAS: &str = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'";

impl Shadow for Postgres {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn exec(&mut self, sql: &str) -> Result<(), String> {
        self.client()?.batch_execute(sql).map_err(|e| {
            e.as_db_error().map_or_else(
                || e.to_string(),
                |d| format!("{}: {}", d.severity(), d.message()),
            )
        })
    }

    fn snapshot(&mut self) -> Result<Schema, String> {
        let mut out = Schema::new();
        self.lines(
            &format!("SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE {USER_SCHEMAS}"),
            &mut out,
        )?;
        self.lines(
            &format!(
                "SELECT CASE c.relkind WHEN 'r' THEN 'table ' WHEN 'p' THEN 'table (partitioned) '
                          WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view '
                          WHEN 'f' THEN 'foreign table ' END
                        || n.nspname || '.' || c.relname
                        || CASE WHEN c.relkind IN ('v', 'm') THEN ': ' || pg_get_viewdef(c.oid) ELSE '' END
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS}"
            ),
            &mut out,
        )?;
        // Positions count live columns only: a dropped column leaves a hole in attnum.
        self.lines(
            &format!(
                "SELECT 'column ' || n.nspname || '.' || c.relname || '.' || a.attname
                        || ' #' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum)
                        || ' ' || format_type(a.atttypid, a.atttypmod)
                        || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
                        || COALESCE(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
                        || CASE WHEN a.attidentity <> '' THEN ' IDENTITY' ELSE '' END
                 FROM pg_attribute a
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 WHERE a.attnum > 0 AND NOT a.attisdropped
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS}"
            ),
            &mut out,
        )?;
        self.lines(
            &format!(
                "SELECT 'constraint ' || n.nspname || '.' || c.relname || ' ' || con.conname
                        || ': ' || pg_get_constraintdef(con.oid)
                 FROM pg_constraint con
                 JOIN pg_class c ON c.oid = con.conrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE {USER_SCHEMAS}"
            ),
            &mut out,
        )?;
        self.lines(
            "SELECT 'index ' || schemaname || '.' || indexname || ': ' || indexdef
             FROM pg_indexes WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema'",
            &mut out,
        )?;
        self.lines(
            &format!(
                "SELECT 'sequence ' || n.nspname || '.' || c.relname
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind = 'S' AND {USER_SCHEMAS}"
            ),
            &mut out,
        )?;
        self.lines(
            &format!(
                "SELECT 'type ' || n.nspname || '.' || t.typname || ' enum('
                        || string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder) || ')'
                 FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
                 JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE {USER_SCHEMAS} GROUP BY n.nspname, t.typname"
            ),
            &mut out,
        )?;
        self.lines(
            &format!(
                "SELECT 'function ' || n.nspname || '.' || p.proname
                        || '(' || pg_get_function_identity_arguments(p.oid) || ') '
                        || md5(pg_get_functiondef(p.oid))
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                 WHERE p.prokind IN ('f', 'p') AND {USER_SCHEMAS}"
            ),
            &mut out,
        )?;
        self.lines(
            "SELECT 'trigger ' || c.relname || '.' || t.tgname || ': ' || pg_get_triggerdef(t.oid)
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal",
            &mut out,
        )?;
        self.lines(
            "SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'",
            &mut out,
        )?;
        Ok(out)
    }
}
