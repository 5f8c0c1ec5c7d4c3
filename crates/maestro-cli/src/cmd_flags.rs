//! `maestro flags validate|list|eval`: the feature-flag registry from the command line.

use std::path::Path;

use maestro_flags::{Expiry, Registry};

use crate::args::FlagsCommand;
use crate::exit::{Failure, OK, PIPELINE_FAILED};

pub(crate) fn flags(command: &FlagsCommand) -> Result<u8, Failure> {
    match command {
        FlagsCommand::Validate { file } => {
            let r = load(file)?;
            eprintln!("{}: {} flag(s), all valid", file.display(), r.flags.len());
            Ok(OK)
        }
        FlagsCommand::List {
            file,
            json,
            grace_days,
        } => list(&load(file)?, *json, *grace_days),
        FlagsCommand::Lint {
            file,
            repo,
            base,
            risky,
            annotation,
            grace_days,
            json,
        } => {
            let registry_path = if file.is_relative() {
                repo.join(file)
            } else {
                file.clone()
            };
            let r = load(&registry_path)?;
            let config = maestro_flags::lint::LintConfig {
                risky: risky.clone(),
                annotation: annotation.clone(),
                grace_days: *grace_days,
            };
            let found = maestro_flags::lint::lint(
                repo,
                base,
                &r,
                &config,
                jiff::Zoned::now().date(),
            )
            .map_err(|e| {
                Failure::usage(
                    e.to_string(),
                    "run it in the repository (-C DIR) with a base it has (--base origin/main)",
                )
            })?;
            let failed = found
                .iter()
                .any(|f| f.level == maestro_flags::lint::Level::Failure);
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"passed": !failed, "findings": found})
                    )
                    .unwrap_or_default()
                );
            } else {
                for f in &found {
                    let level = match f.level {
                        maestro_flags::lint::Level::Warning => "warning",
                        maestro_flags::lint::Level::Failure => "error",
                    };
                    match (&f.file, f.line) {
                        (Some(file), Some(line)) => {
                            println!("{file}:{line}: {level}: {}", f.message)
                        }
                        _ => println!("{}: {level}: {}", registry_path.display(), f.message),
                    }
                }
                eprintln!(
                    "flag lint: {} ({} finding(s) since {base})",
                    if failed { "failed" } else { "passed" },
                    found.len()
                );
            }
            Ok(if failed { PIPELINE_FAILED } else { OK })
        }
        FlagsCommand::Eval { key, file, context } => {
            let r = load(file)?;
            let ctx: serde_json::Value = serde_json::from_str(context).map_err(|e| {
                Failure::usage(
                    format!("--context: not JSON: {e}"),
                    "e.g. --context '{\"targetingKey\": \"user-1\"}'",
                )
            })?;
            let res = r.evaluate(key, &ctx, false, jiff::Timestamp::now().as_second());
            println!("{}", serde_json::to_string_pretty(&res).unwrap_or_default());
            Ok(if res.error_code.is_some() {
                PIPELINE_FAILED
            } else {
                OK
            })
        }
    }
}

fn load(file: &Path) -> Result<Registry, Failure> {
    Registry::load(file).map_err(|e| {
        Failure::usage(
            e.to_string(),
            "a flagd flag definition (docs/flags.md); every flag needs metadata.owner",
        )
    })
}

fn list(r: &Registry, json: bool, grace_days: i64) -> Result<u8, Failure> {
    let today = jiff::Zoned::now().date();
    if json {
        let flags: Vec<serde_json::Value> = r
            .flags
            .values()
            .map(|f| {
                let mut v = serde_json::to_value(f).unwrap_or_default();
                v["expiry"] = serde_json::to_value(f.expiry(today, grace_days)).unwrap_or_default();
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&flags).unwrap_or_default()
        );
        return Ok(OK);
    }
    println!(
        "{:<28} {:<8} {:<10} {:<10} {:<20} {:<6} EXPIRES",
        "FLAG", "STATE", "DEFAULT", "KILL", "OWNER", "RISK"
    );
    for f in r.flags.values() {
        let expiry = match (f.expires, f.expiry(today, grace_days)) {
            (None, _) => "-".to_owned(),
            (Some(d), Expiry::Live) => d.to_string(),
            (Some(d), Expiry::Warn(n)) => format!("{d} (expired {n} d ago: remove it)"),
            (Some(d), Expiry::Fail(n)) => format!("{d} (EXPIRED {n} d ago)"),
        };
        println!(
            "{:<28} {:<8} {:<10} {:<10} {:<20} {:<6} {expiry}",
            f.key,
            if f.enabled { "enabled" } else { "disabled" },
            f.default_variant,
            f.kill_variant,
            f.owner,
            serde_json::to_value(f.risk)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        );
    }
    Ok(OK)
}
