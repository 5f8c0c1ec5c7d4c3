//! `maestro sca` and `maestro licenses`.

use std::path::{Path, PathBuf};

use maestro_sca::osv::Database;
use maestro_sca::policy::{self, PolicyError, PolicyFile};
use serde_json::json;

use crate::args::{LicensesArgs, ScaArgs};
use crate::cmd_sbom;
use crate::exit::{self, Failure};

/// The policy file: the one named, else `maestro-policy.toml` if it exists, else defaults.
fn load_policy(named: Option<&Path>) -> Result<PolicyFile, Failure> {
    let path = match named {
        Some(p) => p.to_owned(),
        None => {
            let p = PathBuf::from(policy::DEFAULT_FILE);
            if !p.is_file() {
                return Ok(PolicyFile::default());
            }
            p
        }
    };
    PolicyFile::read(&path).map_err(|e| match e {
        PolicyError::Io { .. } => Failure::env(e, "check the --policy path"),
        PolicyError::Invalid { .. } => Failure::usage(
            e.to_string(),
            "see docs/supply-chain.md for the policy file's format",
        ),
    })
}

fn apply_overrides(
    p: &mut PolicyFile,
    fail_on: Option<&str>,
    max_age: Option<&str>,
) -> Result<(), Failure> {
    let mut overrides = String::from("[advisories]\n");
    if let Some(f) = fail_on {
        overrides.push_str(&format!("fail-on = {}\n", toml_string(f)));
    }
    if let Some(a) = max_age {
        overrides.push_str(&format!("max-db-age = {}\n", toml_string(a)));
    }
    let o = PolicyFile::parse("command line", &overrides)
        .map_err(|e| Failure::usage(e.to_string(), "fix the flag's value"))?;
    if fail_on.is_some() {
        p.advisories.fail_on = o.advisories.fail_on;
    }
    if max_age.is_some() {
        p.advisories.max_db_age = o.advisories.max_db_age;
    }
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

pub(crate) fn sca(args: &ScaArgs) -> Result<u8, Failure> {
    let mut policy = load_policy(args.policy.as_deref())?;
    apply_overrides(
        &mut policy,
        args.fail_on.as_deref(),
        args.max_db_age.as_deref(),
    )?;
    let inv = cmd_sbom::inventory(&args.paths, None, false)?;
    let db = Database::open(&args.db).map_err(|e| {
        Failure::env(
            e,
            "point --db (or MAESTRO_OSV_DB) at a directory of OSV JSON advisories, e.g. an unpacked OSV export",
        )
    })?;
    let now = jiff::Timestamp::now();
    let scan = maestro_sca::scan(&inv, &db);
    let verdict = policy::evaluate(&scan, &db, &policy.advisories, now);
    let age_days = db.newest.map(|n| now.duration_since(n).as_secs() / 86_400);

    let status = |i: usize| {
        if verdict.failing.contains(&i) {
            "failing"
        } else if verdict.allowed.iter().any(|(a, _)| *a == i) {
            "allowed"
        } else {
            "reported"
        }
    };
    if args.json {
        let findings: Vec<_> = scan
            .findings
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let allowed = verdict.allowed.iter().find(|(a, _)| *a == i).map(|(_, ig)| {
                    json!({"id": ig.id, "reason": ig.reason, "until": ig.until.to_string()})
                });
                json!({
                    "purl": f.purl, "name": f.name, "version": f.version, "dev": f.dev,
                    "id": f.id, "aliases": f.aliases, "summary": f.summary,
                    "severity": {"level": f.severity.level.map(|l| l.as_str()), "score": f.severity.score, "source": f.severity.source},
                    "informational": f.informational, "fixed": f.fixed,
                    "status": status(i), "allowed": allowed,
                })
            })
            .collect();
        let report = json!({
            "database": {
                "dir": db.dir.display().to_string(),
                "advisories": db.advisories.len(),
                "withdrawn": db.withdrawn,
                "newest": db.newest.map(|n| n.to_string()),
                "age_days": age_days,
                "skipped": db.skipped.iter().map(|s| json!({"file": s.file.display().to_string(), "reason": s.reason})).collect::<Vec<_>>(),
                "notes": db.notes.iter().map(|n| json!({"advisory": n.advisory, "file": n.file.display().to_string(), "message": n.message})).collect::<Vec<_>>(),
            },
            "components": scan.components,
            "findings": findings,
            "unchecked": scan.unchecked.iter().map(|u| json!({"purl": u.purl, "reason": u.reason})).collect::<Vec<_>>(),
            "errors": verdict.errors,
            "warnings": verdict.warnings,
            "passed": verdict.passed(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        eprintln!(
            "advisories: {} in {}{}{}",
            db.advisories.len(),
            db.dir.display(),
            match (db.newest, age_days) {
                (Some(n), Some(d)) =>
                    format!(" (newest change {}, {d} days old)", n.strftime("%Y-%m-%d")),
                _ => String::new(),
            },
            if db.skipped.is_empty() {
                String::new()
            } else {
                format!(" · {} skipped", db.skipped.len())
            }
        );
        for s in &db.skipped {
            eprintln!("  skipped {}: {}", s.file.display(), s.reason);
        }
        for n in &db.notes {
            eprintln!(
                "  note {} ({}): {}",
                n.advisory,
                n.file.display(),
                n.message
            );
        }
        for (i, f) in scan.findings.iter().enumerate() {
            let mark = match status(i) {
                "failing" => "FAIL",
                "allowed" => "allowed",
                _ => "report",
            };
            let aliases = if f.aliases.is_empty() {
                String::new()
            } else {
                format!(" ({})", f.aliases.join(", "))
            };
            let kind = f
                .informational
                .as_deref()
                .map(|k| format!(" [{k}]"))
                .unwrap_or_default();
            println!(
                "{mark:<8} {} {}{aliases}{kind} · {} · {}{}",
                f.purl,
                f.id,
                f.severity.label(),
                f.fixed
                    .as_deref()
                    .map_or_else(|| "no fix".to_owned(), |x| format!("fixed in {x}")),
                if f.dev { " · dev" } else { "" }
            );
            if !f.summary.is_empty() {
                println!("         {}", f.summary);
            }
            if let Some((_, ig)) = verdict.allowed.iter().find(|(a, _)| *a == i) {
                println!("         allowed until {}: {}", ig.until, ig.reason);
            }
        }
        for u in &scan.unchecked {
            eprintln!("warning: {} not checked: {}", u.purl, u.reason);
        }
        for w in inv.warnings.iter().chain(&verdict.warnings) {
            eprintln!("warning: {w}");
        }
        for e in &verdict.errors {
            eprintln!("error: {e}");
        }
        let threshold = policy
            .advisories
            .fail_on
            .map_or("none".to_owned(), |l| l.as_str().to_owned());
        eprintln!(
            "sca: {} findings in {} components · {} failing (fail-on {threshold}) · {} allowed · {} reported{}",
            scan.findings.len(),
            scan.components,
            verdict.failing.len(),
            verdict.allowed.len(),
            verdict.reported.len(),
            if verdict.passed() { "" } else { " · FAILED" }
        );
    }
    Ok(if verdict.passed() {
        exit::OK
    } else {
        exit::PIPELINE_FAILED
    })
}

pub(crate) fn licenses(args: &LicensesArgs) -> Result<u8, Failure> {
    let mut policy = load_policy(args.policy.as_deref())?;
    for (list, flag) in [(&args.allow, "--allow"), (&args.deny, "--deny")] {
        for l in list {
            if let Err(e) = spdx::Licensee::parse(l) {
                return Err(Failure::usage(
                    format!("{flag} {l}: not an SPDX license identifier: {}", e.reason),
                    "use identifiers from https://spdx.org/licenses/, e.g. MIT or Apache-2.0 WITH LLVM-exception",
                ));
            }
        }
    }
    policy.licenses.allow.extend(args.allow.iter().cloned());
    policy.licenses.deny.extend(args.deny.iter().cloned());
    if policy.licenses.allow.is_empty() && policy.licenses.deny.is_empty() {
        return Err(Failure::usage(
            "no license policy: nothing to check against",
            "pass --allow/--deny, or write a [licenses] table in maestro-policy.toml",
        ));
    }
    let inv = cmd_sbom::inventory(&args.paths, None, false)?;
    let report = policy::check_licenses(&inv, &policy.licenses);
    if args.json {
        let out = json!({
            "checked": report.checked,
            "first_party": report.first_party,
            "issues": report.issues.iter().map(|i| json!({"purl": i.purl, "license": i.license, "message": i.message, "fails": i.fails})).collect::<Vec<_>>(),
            "passed": report.passed(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for i in &report.issues {
            println!(
                "{:<8} {} · {}",
                if i.fails { "FAIL" } else { "warning" },
                i.purl,
                i.message
            );
        }
        let failing = report.issues.iter().filter(|i| i.fails).count();
        eprintln!(
            "licenses: {} packages checked ({} first-party skipped) · {failing} failing{}",
            report.checked,
            report.first_party,
            if report.passed() { "" } else { " · FAILED" }
        );
    }
    Ok(if report.passed() {
        exit::OK
    } else {
        exit::PIPELINE_FAILED
    })
}
