//! `maestro migrate check|rules`: the migration gate.

use std::collections::BTreeSet;
use std::path::Path;

use maestro_migrate::{Database, Finding, MigrateError, Selection};
use maestro_waiver::Subject;
use serde_json::json;

use crate::args::{MigrateCheckArgs, MigrateCommand};
use crate::exit::{self, Failure};
use crate::waive::{Verdict, Waiving, gate_paths};

/// The largest GitHub event payload read.
const MAX_EVENT_BYTES: u64 = 25 * 1024 * 1024;

pub(crate) fn migrate(command: &MigrateCommand) -> Result<u8, Failure> {
    match command {
        MigrateCommand::Check(a) => check(a),
        MigrateCommand::Rules { json } => rules(*json),
    }
}

fn rules(as_json: bool) -> Result<u8, Failure> {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(maestro_migrate::lint::RULES).unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    for r in maestro_migrate::lint::RULES {
        let how = match (r.blocks, r.approvable) {
            (false, _) => "warns",
            (true, true) => "blocks; label or waiver",
            (true, false) => "blocks; waiver only",
        };
        println!("{} {:<38} {how:<24} {}", r.code, r.name, r.hint);
    }
    Ok(exit::OK)
}

fn failure(e: MigrateError) -> Failure {
    match e {
        MigrateError::NoDir(_) => Failure::usage(
            e.to_string(),
            "pass --dir with the directory that holds your migrations",
        ),
        MigrateError::Database(_) => Failure::usage(
            e.to_string(),
            "--database sqlite, or postgres://user@host:5432/postgres (a database is created there for the check and dropped)",
        ),
        MigrateError::Duplicate { .. } => {
            Failure::usage(e.to_string(), "give every migration a unique name")
        }
        MigrateError::Git(_) => Failure::usage(
            e.to_string(),
            "--base needs a git repository and a ref that exists (fetch it first, e.g. git fetch origin main)",
        ),
        MigrateError::Shadow(_) => Failure::env(
            e,
            "check that the database server is running and that the user may create databases",
        ),
        _ => Failure::env(e, "check the migration files named above"),
    }
}

/// Labels from flags, MAESTRO_LABELS, and a GitHub pull_request event payload.
fn labels(flags: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = flags.iter().cloned().collect();
    if let Ok(v) = std::env::var("MAESTRO_LABELS") {
        out.extend(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    if let Ok(path) = std::env::var("GITHUB_EVENT_PATH") {
        match github_labels(Path::new(&path)) {
            Ok(l) => out.extend(l),
            Err(e) => eprintln!("migrate: labels from GITHUB_EVENT_PATH not read: {e}"),
        }
    }
    out
}

/// `pull_request.labels[].name` of a GitHub webhook event (pull_request,
/// pull_request_target), as GitHub Actions writes it to GITHUB_EVENT_PATH.
fn github_labels(path: &Path) -> Result<Vec<String>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MAX_EVENT_BYTES {
        return Err(format!("{}: {size} bytes is too large", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    Ok(v["pull_request"]["labels"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// What the gate decided about one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Block,
    Waived,
    Approved,
    Warn,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Block => "blocked",
            Decision::Waived => "waived",
            Decision::Approved => "approved",
            Decision::Warn => "warning",
        }
    }
}

fn check(a: &MigrateCheckArgs) -> Result<u8, Failure> {
    let database = Database::parse(&a.database).map_err(failure)?;
    let migrations = maestro_migrate::discover(&a.dirs).map_err(failure)?;
    let selection = match a.base.as_deref().filter(|b| !b.is_empty()) {
        Some(base) => {
            Selection::Changed(maestro_migrate::changed_since(base, &a.dirs).map_err(failure)?)
        }
        None => Selection::All,
    };
    let mut waiving = Waiving::load("migration", a.waivers.as_deref())?;
    let labels = labels(&a.labels);
    let approved = labels.contains(&a.approval_label);
    let report = maestro_migrate::check(&migrations, &selection, &database).map_err(failure)?;

    let mut decided: Vec<(&Finding, Decision, Option<String>)> = Vec::new();
    for f in &report.findings {
        let verdict = waiving.check(&Subject {
            ids: &[f.code, f.name],
            resource: Some(&f.migration),
            message: &f.message,
            input: f.file.as_deref().and_then(Path::to_str),
        });
        let decision = if !f.blocks {
            Decision::Warn
        } else if verdict.waived() {
            Decision::Waived
        } else if f.approvable && approved {
            Decision::Approved
        } else {
            Decision::Block
        };
        let note = match (&verdict, decision) {
            (Verdict::None | Verdict::Expired(_), Decision::Approved) => {
                waiving.record_label(f.code, &f.migration, &a.approval_label);
                Some(format!("approved by the `{}` label", a.approval_label))
            }
            (v, _) => v.note().map(str::to_owned),
        };
        decided.push((f, decision, note));
    }
    waiving.record(&gate_paths(a.home.clone()))?;

    let findings_json: Vec<serde_json::Value> = decided
        .iter()
        .map(|(f, d, note)| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            v["decision"] = json!(d.as_str());
            if let Some(n) = note {
                v["note"] = json!(n);
            }
            v
        })
        .collect();
    let mut report_json = serde_json::to_value(&report).unwrap_or_default();
    report_json["findings"] = json!(findings_json);
    report_json["labels"] = json!(labels);
    let pretty = serde_json::to_string_pretty(&report_json).unwrap_or_default();
    let artifacts = [
        ("dry-run.sql", report.dry_run.clone()),
        ("schema-diff.txt", report.schema_diff.clone()),
        ("schema.txt", report.schema.join("\n") + "\n"),
        ("report.json", pretty.clone() + "\n"),
    ];
    for (name, text) in &artifacts {
        maestro_sign::write_atomic(&a.out.join(name), text.as_bytes(), 0o644)
            .map_err(|e| Failure::env(e, "choose a writable --out directory"))?;
    }

    let count = |d: Decision| decided.iter().filter(|(_, x, _)| *x == d).count();
    if a.json {
        println!("{pretty}");
    } else {
        for (f, d, note) in &decided {
            let tag = match d {
                Decision::Block => "BLOCK",
                Decision::Waived => "WAIVED",
                Decision::Approved => "APPROVED",
                Decision::Warn => "WARN",
            };
            println!(
                "{tag} {} {} {}: {} ({})",
                f.code,
                f.name,
                f.location(),
                f.message,
                f.migration
            );
            match note {
                Some(n) => println!("     {n}"),
                None if *d == Decision::Block => {
                    let how = if f.approvable {
                        format!(
                            "; or label the change `{}`, or add a waiver",
                            a.approval_label
                        )
                    } else {
                        String::new()
                    };
                    println!("     fix: {}{how}", f.hint);
                }
                None => {}
            }
        }
    }
    let checked = report.migrations.iter().filter(|m| m.checked).count();
    let blocked = count(Decision::Block);
    eprintln!(
        "migrate: {} migration(s) replayed on {}, {checked} checked · {blocked} blocking, {} waived, {} approved, {} warning(s) · artifacts in {}",
        report.migrations.len(),
        report.database,
        count(Decision::Waived),
        count(Decision::Approved),
        count(Decision::Warn),
        a.out.display()
    );
    Ok(if blocked > 0 {
        exit::PIPELINE_FAILED
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_github_pull_request_event() {
        // The shape GitHub documents for the pull_request webhook event (trimmed).
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("event.json");
        std::fs::write(
            &p,
            r#"{"action":"labeled","number":42,
                "label":{"id":1,"name":"migration-approved","color":"0e8a16"},
                "pull_request":{"number":42,"state":"open","title":"Drop legacy",
                  "labels":[{"id":1,"node_id":"LA_1","name":"migration-approved","color":"0e8a16","default":false},
                            {"id":2,"node_id":"LA_2","name":"db","color":"fbca04","default":false}],
                  "head":{"ref":"drop-legacy","sha":"abc"},"base":{"ref":"main","sha":"def"}},
                "sender":{"login":"alice"}}"#,
        )
        .expect("write");
        assert_eq!(
            github_labels(&p).expect("labels"),
            ["migration-approved", "db"]
        );
        std::fs::write(&p, r#"{"push":{}}"#).expect("write");
        assert!(github_labels(&p).expect("no labels").is_empty());
    }
}
