//! `maestro secrets`.

use std::time::Instant;

use maestro_secrets::{Config, Finding, Scanner, SecretsError};
use serde_json::json;

use crate::args::SecretsArgs;
use crate::exit::{self, Failure};

fn failure(e: SecretsError) -> Failure {
    match e {
        SecretsError::Config { .. } => Failure::usage(
            e.to_string(),
            "the file must be in gitleaks' configuration format; see docs/secrets.md",
        ),
        SecretsError::Io { .. } => Failure::env(e, "check the path"),
        SecretsError::Git(_) => {
            Failure::env(e, "is the path a git repository, and is git installed?")
        }
    }
}

fn report(f: &Finding) -> serde_json::Value {
    let c = f.commit.clone().unwrap_or_default();
    json!({
        "RuleID": f.rule_id,
        "Description": f.description,
        "File": f.file,
        "StartLine": f.line,
        "EndLine": f.end_line,
        "StartColumn": f.column,
        "EndColumn": f.end_column,
        "Match": f.matched,
        "Secret": f.secret,
        "Entropy": f.entropy,
        "Tags": f.tags,
        "Commit": c.sha,
        "Author": c.author,
        "Email": c.email,
        "Date": c.date,
        "Message": c.message,
        "Fingerprint": f.fingerprint,
    })
}

pub(crate) fn secrets(args: &SecretsArgs) -> Result<u8, Failure> {
    let (config, source) = Config::resolve(args.config.as_deref(), &args.path).map_err(failure)?;
    let rules = config.rules.len();
    let scanner = Scanner::new(config);
    let root_dir = if args.path.is_dir() {
        args.path.clone()
    } else {
        args.path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    };
    let ignore = maestro_secrets::read_ignore(&root_dir.join(".gitleaksignore"));
    let started = Instant::now();
    let (findings, summary) = if args.git {
        let (f, s) =
            maestro_secrets::git::scan_history(&scanner, &args.path, &ignore).map_err(failure)?;
        (
            f,
            format!(
                "{} commits, {:.1} MB of patches",
                s.commits,
                s.bytes as f64 / 1e6
            ),
        )
    } else {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let opts = maestro_secrets::tree::TreeOptions {
            max_file_bytes: args.max_file_mib.saturating_mul(1 << 20),
            threads,
            respect_gitignore: !args.no_ignore,
        };
        let t = maestro_secrets::tree::scan_tree(&scanner, &args.path, &opts, &ignore)
            .map_err(failure)?;
        let s = &t.stats;
        let mut skipped = Vec::new();
        if s.skipped_binary > 0 {
            skipped.push(format!("{} binary", s.skipped_binary));
        }
        if s.skipped_large > 0 {
            skipped.push(format!(
                "{} over {} MiB",
                s.skipped_large, args.max_file_mib
            ));
        }
        if s.skipped_allowlisted > 0 {
            skipped.push(format!("{} allowlisted", s.skipped_allowlisted));
        }
        (
            t.findings,
            format!(
                "{} files, {:.1} MB{}",
                s.files,
                s.bytes as f64 / 1e6,
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" (skipped {})", skipped.join(", "))
                }
            ),
        )
    };
    let elapsed = started.elapsed();
    if args.json {
        let all: Vec<_> = findings.iter().map(report).collect();
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        for f in &findings {
            let at = match &f.commit {
                Some(c) => format!(
                    "{}:{}:{} ({} {})",
                    f.file,
                    f.line,
                    f.column,
                    &c.sha[..c.sha.len().min(12)],
                    c.author
                ),
                None => format!("{}:{}:{}", f.file, f.line, f.column),
            };
            println!("{at} {} {} · {}", f.rule_id, f.secret, f.description);
        }
    }
    eprintln!(
        "secrets: {} finding{} · {summary} · {rules} rules ({source}) · {:.2}s",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        elapsed.as_secs_f64()
    );
    Ok(if findings.is_empty() {
        exit::OK
    } else {
        exit::PIPELINE_FAILED
    })
}
