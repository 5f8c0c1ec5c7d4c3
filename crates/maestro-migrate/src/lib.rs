//! The migration gate.
//!
//! A migration is a name with an up script, a down (rollback) script and a plan note, in
//! one of two layouts:
//!
//! ```text
//! migrations/0002_add_email.up.sql      migrations/0002_add_email/up.sql
//! migrations/0002_add_email.down.sql    migrations/0002_add_email/down.sql
//! migrations/0002_add_email.plan.md     migrations/0002_add_email/plan.md
//! ```
//!
//! [`check`] replays every migration in order on a throwaway shadow database (SQLite in
//! memory, or a database created for the check on a PostgreSQL server); each migration
//! under check runs up → down → up, and the schema after down must equal the schema
//! before it. The up scripts of checked migrations are parsed (sqlparser) and linted
//! ([`lint::RULES`]). The report carries the dry run (every statement executed, with its
//! outcome) and the schema diff as text for artifacts.

pub mod lint;
pub mod shadow;
pub mod split;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sqlparser::dialect::{Dialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use crate::lint::Class;
use crate::shadow::{Schema, Shadow};

/// Where migrations live unless told otherwise.
pub const DEFAULT_DIR: &str = "migrations";

/// The largest migration script read.
pub const MAX_SCRIPT_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{path}: cannot be read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is over the {max}-byte limit for a migration script")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{0}: no such migrations directory")]
    NoDir(PathBuf),
    #[error("migration {name} is in both {first} and {second}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("shadow database: {0}")]
    Shadow(String),
    #[error("--database {0}: expected `sqlite` or a postgres:// URL")]
    Database(String),
    #[error("git: {0}")]
    Git(String),
}

/// The database engine migrations are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The shadow database to use.
#[derive(Clone, Debug)]
pub enum Database {
    /// SQLite, in memory.
    Sqlite,
    /// A PostgreSQL server: a throwaway database is created on it for the check.
    Postgres(Box<postgres::Config>),
}

impl Database {
    /// `sqlite`, or a `postgres://` / `postgresql://` URL (or key=value string).
    ///
    /// # Errors
    /// Anything else; the error never repeats a password.
    pub fn parse(s: &str) -> Result<Database, MigrateError> {
        if s.eq_ignore_ascii_case("sqlite") {
            return Ok(Database::Sqlite);
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") || s.contains("host=") {
            return s
                .parse::<postgres::Config>()
                .map(|c| Database::Postgres(Box::new(c)))
                .map_err(|e| MigrateError::Database(format!("not a PostgreSQL URL ({e})")));
        }
        Err(MigrateError::Database(
            s.split_once('@').map_or(s, |(_, host)| host).to_owned(),
        ))
    }

    #[must_use]
    pub fn engine(&self) -> Engine {
        match self {
            Database::Sqlite => Engine::Sqlite,
            Database::Postgres(_) => Engine::Postgres,
        }
    }

    /// For reports: never carries the password.
    #[must_use]
    pub fn shown(&self) -> String {
        match self {
            Database::Sqlite => "sqlite (in memory)".to_owned(),
            Database::Postgres(c) => shadow::shown(c),
        }
    }

    fn open(&self) -> Result<Box<dyn Shadow>, MigrateError> {
        Ok(match self {
            Database::Sqlite => Box::new(shadow::Sqlite::open().map_err(MigrateError::Shadow)?),
            Database::Postgres(c) => {
                Box::new(shadow::Postgres::create(c).map_err(MigrateError::Shadow)?)
            }
        })
    }
}

/// One migration's files.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Migration {
    pub name: String,
    pub up: Option<PathBuf>,
    pub down: Option<PathBuf>,
    pub plan: Option<PathBuf>,
    /// SQL files under the name that fit neither layout (`0003_x.sql`).
    pub stray: Vec<PathBuf>,
}

impl Migration {
    /// Every file of the migration.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.up
            .iter()
            .chain(&self.down)
            .chain(&self.plan)
            .chain(&self.stray)
    }
}

/// Orders names by their leading number (`2_x` before `10_x`), then by name.
fn order_key(name: &str) -> (u128, String) {
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    (digits.parse().unwrap_or(0), name.to_owned())
}

/// Finds the migrations in `dirs`, in order.
///
/// # Errors
/// A directory that does not exist or cannot be read; a name in two directories.
pub fn discover(dirs: &[PathBuf]) -> Result<Vec<Migration>, MigrateError> {
    let mut all: Vec<(Migration, PathBuf)> = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(MigrateError::NoDir(dir.clone()));
        }
        let io = |source| MigrateError::Io {
            path: dir.clone(),
            source,
        };
        let mut here: std::collections::BTreeMap<String, Migration> = Default::default();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                let m = here.entry(file.clone()).or_default();
                m.name.clone_from(&file);
                for (f, slot) in [
                    ("up.sql", &mut m.up),
                    ("down.sql", &mut m.down),
                    ("plan.md", &mut m.plan),
                ] {
                    let p = path.join(f);
                    if p.is_file() {
                        *slot = Some(p);
                    }
                }
                continue;
            }
            let (name, slot) = if let Some(n) = file.strip_suffix(".up.sql") {
                (n, 0)
            } else if let Some(n) = file.strip_suffix(".down.sql") {
                (n, 1)
            } else if let Some(n) = file.strip_suffix(".plan.md") {
                (n, 2)
            } else if let Some(n) = file.strip_suffix(".sql") {
                (n, 3)
            } else {
                continue;
            };
            let m = here.entry(name.to_owned()).or_default();
            m.name = name.to_owned();
            match slot {
                0 => m.up = Some(path),
                1 => m.down = Some(path),
                2 => m.plan = Some(path),
                _ => m.stray.push(path),
            }
        }
        // A directory with none of the files is not a migration (e.g. `fixtures/`).
        all.extend(
            here.into_values()
                .filter(|m| m.files().next().is_some())
                .map(|m| (m, dir.clone())),
        );
    }
    all.sort_by_key(|(m, _)| order_key(&m.name));
    for w in all.windows(2) {
        if w[0].0.name == w[1].0.name {
            return Err(MigrateError::Duplicate {
                name: w[0].0.name.clone(),
                first: w[0].1.clone(),
                second: w[1].1.clone(),
            });
        }
    }
    Ok(all.into_iter().map(|(m, _)| m).collect())
}

fn clean(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn git(args: &[&str]) -> Result<String, MigrateError> {
    let out = std::process::Command::new("git")
        .args(args)
        .output()
        .map_err(|e| MigrateError::Git(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(MigrateError::Git(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Files under `dirs` that differ from the merge base of `base` and HEAD (committed,
/// staged, unstaged and untracked), relative to the current directory.
///
/// # Errors
/// Not a git repository, or an unknown `base`.
pub fn changed_since(base: &str, dirs: &[PathBuf]) -> Result<BTreeSet<PathBuf>, MigrateError> {
    let merge_base = git(&["merge-base", base, "HEAD"])?;
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let mut args = vec!["diff", "--name-only", "--relative", merge_base.trim(), "--"];
    args.extend(dirs.iter().map(String::as_str));
    let mut out: BTreeSet<PathBuf> = git(&args)?.lines().map(PathBuf::from).collect();
    let mut args = vec!["ls-files", "--others", "--exclude-standard", "--"];
    args.extend(dirs.iter().map(String::as_str));
    out.extend(git(&args)?.lines().map(PathBuf::from));
    Ok(out)
}

/// Which migrations are under check.
#[derive(Clone, Debug, Default)]
pub enum Selection {
    /// Every migration (a first adoption, or no base to compare with).
    #[default]
    All,
    /// Those with a file in this set (from [`changed_since`]).
    Changed(BTreeSet<PathBuf>),
}

impl Selection {
    fn includes(&self, m: &Migration) -> bool {
        match self {
            Selection::All => true,
            Selection::Changed(set) => m.files().any(|f| set.contains(&clean(f))),
        }
    }
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub name: &'static str,
    pub class: Class,
    /// Blocks the gate unless excused (else a warning).
    pub blocks: bool,
    /// An approval label may excuse it (lint findings); structure findings need a waiver.
    pub approvable: bool,
    pub migration: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
    pub hint: &'static str,
}

impl Finding {
    /// A finding of the rule with `code` (one of [`lint::RULES`]).
    fn new(
        code: &str,
        m: &Migration,
        file: Option<&Path>,
        line: Option<usize>,
        message: String,
    ) -> Finding {
        let rule = lint::rule(code);
        Finding {
            code: rule.code,
            name: rule.name,
            class: rule.class,
            blocks: rule.blocks,
            approvable: rule.approvable,
            migration: m.name.clone(),
            file: file.map(Path::to_owned),
            line,
            message,
            hint: rule.hint,
        }
    }

    /// `file:line` or the migration's name.
    #[must_use]
    pub fn location(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{}:{l}", f.display()),
            (Some(f), None) => f.display().to_string(),
            _ => self.migration.clone(),
        }
    }
}

/// What happened to one migration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub name: String,
    /// Under check (changed), or only replayed to build the schema.
    pub checked: bool,
    pub statements: usize,
    /// Schema changes the up script makes (`+ …` / `- …` lines).
    pub schema_changes: Vec<String>,
    /// `Some(true)` when the down script restored the schema exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversible: Option<bool>,
    pub up_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_ms: Option<f64>,
}

/// The gate's result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub engine: Engine,
    /// The shadow database used (and dropped), without password.
    pub database: String,
    pub migrations: Vec<Outcome>,
    pub findings: Vec<Finding>,
    /// Every statement run on the shadow database, in order, with its outcome.
    #[serde(skip)]
    pub dry_run: String,
    /// Per checked migration: the schema before → after up (and after down when it differs).
    #[serde(skip)]
    pub schema_diff: String,
    /// The schema after every migration.
    #[serde(skip)]
    pub schema: Vec<String>,
}

fn read_script(path: &Path) -> Result<String, MigrateError> {
    let io = |source| MigrateError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_SCRIPT_BYTES {
        return Err(MigrateError::TooLarge {
            path: path.to_owned(),
            size,
            max: MAX_SCRIPT_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// A script split into statements, and the findings of reading it.
struct Script {
    path: PathBuf,
    pieces: Vec<split::Piece>,
}

fn dialect(engine: Engine) -> Box<dyn Dialect> {
    match engine {
        Engine::Sqlite => Box::new(SQLiteDialect {}),
        Engine::Postgres => Box::new(PostgreSqlDialect {}),
    }
}

/// Reads, splits and (for a checked up script) lints a script.
fn load_script(
    m: &Migration,
    path: &Path,
    engine: Engine,
    lint_it: bool,
    findings: &mut Vec<Finding>,
) -> Result<Script, MigrateError> {
    let text = read_script(path)?;
    let d = dialect(engine);
    let pieces = match split::split(d.as_ref(), &text) {
        Ok(p) => p,
        Err((line, message)) => {
            findings.push(Finding::new(
                "MG504",
                m,
                Some(path),
                Some(line),
                format!("cannot be tokenized: {message}"),
            ));
            // Run it whole: the database is the judge of what it accepts.
            vec![split::Piece {
                line: 1,
                column: 1,
                text,
            }]
        }
    };
    if lint_it {
        let mut cx = lint::Context::new(engine);
        for p in &pieces {
            // Pad so the parser's line and column are the file's.
            let padded = format!(
                "{}{}{}",
                "\n".repeat(p.line.saturating_sub(1)),
                " ".repeat(p.column.saturating_sub(1)),
                p.text
            );
            match Parser::parse_sql(d.as_ref(), &padded) {
                Ok(stmts) => {
                    for s in &stmts {
                        for (code, message) in lint::statement(s, &mut cx) {
                            findings.push(Finding::new(code, m, Some(path), Some(p.line), message));
                        }
                    }
                }
                Err(e) => findings.push(Finding::new(
                    "MG504",
                    m,
                    Some(path),
                    Some(p.line),
                    format!("the SQL parser does not understand this statement ({e})"),
                )),
            }
        }
    }
    Ok(Script {
        path: path.to_owned(),
        pieces,
    })
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Runs a script on the shadow database, logging each statement; the first failure stops it.
fn run_script(
    db: &mut dyn Shadow,
    s: &Script,
    label: &str,
    log: &mut String,
) -> Result<f64, (usize, String)> {
    let _ = writeln!(log, "-- {label} ({})", s.path.display());
    let start = Instant::now();
    for p in &s.pieces {
        let t = Instant::now();
        let _ = writeln!(log, "{};", p.text);
        match db.exec(&p.text) {
            Ok(()) => {
                let _ = writeln!(log, "-- ok ({} ms)", ms(t));
            }
            Err(e) => {
                let _ = writeln!(log, "-- FAILED: {e}");
                return Err((p.line, e));
            }
        }
    }
    Ok(ms(start))
}

fn snapshot(db: &mut dyn Shadow) -> Result<Schema, MigrateError> {
    db.snapshot()
        .map_err(|e| MigrateError::Shadow(format!("cannot read the schema: {e}")))
}

/// Checks `migrations` (in order) on a fresh shadow database.
///
/// # Errors
/// Unreadable scripts, or a shadow database that cannot be created or read. What the
/// migrations themselves do wrong is in the report's findings.
pub fn check(
    migrations: &[Migration],
    selection: &Selection,
    database: &Database,
) -> Result<Report, MigrateError> {
    let engine = database.engine();
    let mut findings = Vec::new();
    let mut outcomes = Vec::new();
    let mut log = String::new();
    let mut diff_text = String::new();
    let mut db = database.open()?;
    let shadow_db = db.describe();
    let _ = writeln!(
        log,
        "-- maestro migrate check: {} migration(s) on {shadow_db}",
        migrations.len(),
    );
    let mut stopped = false;
    for m in migrations {
        let checked = selection.includes(m);
        let mut out = Outcome {
            name: m.name.clone(),
            checked,
            ..Outcome::default()
        };
        if checked {
            for stray in &m.stray {
                findings.push(Finding::new(
                    "MG501",
                    m,
                    Some(stray),
                    None,
                    format!(
                        "{} is neither {n}.up.sql nor {n}.down.sql: name the up and down scripts",
                        stray.display(),
                        n = m.name
                    ),
                ));
            }
            let missing = [
                (m.up.is_none() && m.stray.is_empty(), "MG501", "up script"),
                (m.down.is_none(), "MG502", "rollback (down) script"),
                (m.plan.is_none(), "MG503", "plan note"),
            ];
            for (_, code, what) in missing.into_iter().filter(|(absent, _, _)| *absent) {
                findings.push(Finding::new(
                    code,
                    m,
                    None,
                    None,
                    format!("migration {} has no {what}", m.name),
                ));
            }
        }
        let up = match &m.up {
            Some(p) => Some(load_script(m, p, engine, checked, &mut findings)?),
            None => None,
        };
        let down = match (&m.down, checked) {
            (Some(p), true) => Some(load_script(m, p, engine, false, &mut findings)?),
            _ => None,
        };
        if stopped {
            outcomes.push(out);
            continue;
        }
        let Some(up) = up else {
            let _ = writeln!(
                log,
                "-- {}: no up script; the shadow run stops here",
                m.name
            );
            stopped = true;
            outcomes.push(out);
            continue;
        };
        out.statements = up.pieces.len();
        let before = if checked {
            Some(snapshot(db.as_mut())?)
        } else {
            None
        };
        match run_script(db.as_mut(), &up, &format!("{}: up", m.name), &mut log) {
            Ok(t) => out.up_ms = t,
            Err((line, e)) => {
                findings.push(Finding::new(
                    "MG505",
                    m,
                    Some(&up.path),
                    Some(line),
                    format!("fails on the shadow database: {e}"),
                ));
                stopped = true;
                outcomes.push(out);
                continue;
            }
        }
        let Some(before) = before else {
            outcomes.push(out);
            continue;
        };
        let after_up = snapshot(db.as_mut())?;
        out.schema_changes = shadow::diff(&before, &after_up);
        let _ = writeln!(diff_text, "== {}: up", m.name);
        write_lines(&mut diff_text, &out.schema_changes);
        let Some(down) = down else {
            outcomes.push(out);
            continue;
        };
        match run_script(db.as_mut(), &down, &format!("{}: down", m.name), &mut log) {
            Ok(t) => out.down_ms = Some(t),
            Err((line, e)) => {
                findings.push(Finding::new(
                    "MG506",
                    m,
                    Some(&down.path),
                    Some(line),
                    format!("fails on the shadow database right after up: {e}"),
                ));
                stopped = true;
                outcomes.push(out);
                continue;
            }
        }
        let after_down = snapshot(db.as_mut())?;
        let left = shadow::diff(&before, &after_down);
        out.reversible = Some(left.is_empty());
        if !left.is_empty() {
            let _ = writeln!(
                diff_text,
                "== {}: before up → after down (must be empty)",
                m.name
            );
            write_lines(&mut diff_text, &left);
            findings.push(Finding::new(
                "MG507",
                m,
                Some(&down.path),
                None,
                format!(
                    "after down the schema differs from before up: {}",
                    summary(&left)
                ),
            ));
        }
        match run_script(db.as_mut(), &up, &format!("{}: up again", m.name), &mut log) {
            Ok(_) => {
                let again = snapshot(db.as_mut())?;
                let d = shadow::diff(&after_up, &again);
                if !d.is_empty() {
                    findings.push(Finding::new(
                        "MG508",
                        m,
                        Some(&up.path),
                        None,
                        format!("up after down gives another schema: {}", summary(&d)),
                    ));
                }
            }
            Err((line, e)) => {
                findings.push(Finding::new(
                    "MG508",
                    m,
                    Some(&up.path),
                    Some(line),
                    format!("up fails when run again after down: {e}"),
                ));
                stopped = true;
            }
        }
        outcomes.push(out);
    }
    let schema: Vec<String> = snapshot(db.as_mut())?.into_iter().collect();
    drop(db);
    Ok(Report {
        engine,
        database: shadow_db,
        migrations: outcomes,
        findings,
        dry_run: log,
        schema_diff: diff_text,
        schema,
    })
}

fn write_lines(out: &mut String, lines: &[String]) {
    if lines.is_empty() {
        out.push_str("  (no schema change)\n");
    }
    for l in lines {
        let _ = writeln!(out, "  {l}");
    }
}

fn summary(lines: &[String]) -> String {
    let mut s: Vec<&str> = lines.iter().take(3).map(String::as_str).collect();
    let more = lines.len().saturating_sub(3);
    let tail = if more > 0 {
        format!(" (and {more} more; see the schema diff)")
    } else {
        String::new()
    };
    s.dedup();
    format!("{}{tail}", s.join("; "))
}
