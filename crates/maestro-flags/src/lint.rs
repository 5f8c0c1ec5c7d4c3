//! The flag lint, a pipeline gate: a change to a risky code path — a file matching one of
//! the configured globs, or marked with the annotation (`maestro:risky`) — must reference
//! a registered flag in the lines it adds; and flags past their expiry warn for a grace
//! period, then fail. The changes are `git diff BASE...HEAD` (since the merge base), read
//! with `git` as a subprocess.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::{Expiry, Registry};

/// What the lint checks.
#[derive(Debug, Clone)]
pub struct LintConfig {
    /// Globs of risky paths (`app/payments/**`), relative to the repository.
    pub risky: Vec<String>,
    /// A file containing this text is risky wherever it is.
    pub annotation: String,
    /// Days an expired flag warns before it fails.
    pub grace_days: i64,
}

impl Default for LintConfig {
    fn default() -> LintConfig {
        LintConfig {
            risky: Vec::new(),
            annotation: "maestro:risky".to_owned(),
            grace_days: 14,
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Warning,
    Failure,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    /// The file and its first changed line, for a risky change.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The flag, for an expiry.
    pub flag: Option<String>,
    pub message: String,
}

/// A problem running the lint (not a finding).
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error("{0}")]
    Git(String),
    #[error("risky glob `{glob}`: {message}")]
    Glob { glob: String, message: String },
}

fn git(repo: &Path, args: &[&str]) -> Result<String, LintError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| LintError::Git(format!("git cannot run: {e}")))?;
    if !out.status.success() {
        return Err(LintError::Git(format!(
            "git {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The added lines of `file` in `range`: (line number in the new file, text).
fn added_lines(repo: &Path, range: &str, file: &str) -> Result<Vec<(u32, String)>, LintError> {
    let diff = git(
        repo,
        &[
            "diff",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            range,
            "--",
            file,
        ],
    )?;
    let mut out = Vec::new();
    let mut next = 0u32;
    for line in diff.lines() {
        if let Some(h) = line.strip_prefix("@@ ") {
            // @@ -a,b +c,d @@
            next = h
                .split_whitespace()
                .find_map(|p| p.strip_prefix('+'))
                .and_then(|p| p.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if let Some(text) = line.strip_prefix('+')
            && !line.starts_with("+++")
        {
            out.push((next, text.to_owned()));
            next += 1;
        }
    }
    Ok(out)
}

/// Whether `text` names `key` as a whole word (not as part of a longer key).
fn names(text: &str, key: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.match_indices(key).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + key.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// Runs the lint on `repo` for the changes since `base` (`BASE...HEAD`) on `today`.
///
/// # Errors
/// Git failures (an unknown base, not a repository) and bad globs.
pub fn lint(
    repo: &Path,
    base: &str,
    registry: &Registry,
    config: &LintConfig,
    today: jiff::civil::Date,
) -> Result<Vec<Finding>, LintError> {
    let mut builder = globset::GlobSetBuilder::new();
    for g in &config.risky {
        builder.add(globset::Glob::new(g).map_err(|e| LintError::Glob {
            glob: g.clone(),
            message: e.to_string(),
        })?);
    }
    let risky = builder.build().map_err(|e| LintError::Glob {
        glob: config.risky.join(", "),
        message: e.to_string(),
    })?;
    let range = format!("{base}...HEAD");
    let changed = git(
        repo,
        &[
            "diff",
            "--name-only",
            "--diff-filter=AMR",
            "--no-renames",
            &range,
        ],
    )?;
    let mut findings = Vec::new();
    for file in changed.lines().filter(|l| !l.is_empty()) {
        let marked = !config.annotation.is_empty()
            && std::fs::read(repo.join(file)).is_ok_and(|b| {
                b.len() <= 4 << 20 && String::from_utf8_lossy(&b).contains(&config.annotation)
            });
        if !risky.is_match(file) && !marked {
            continue;
        }
        let added = added_lines(repo, &range, file)?;
        let Some(first) = added.first().map(|(n, _)| *n) else {
            continue;
        };
        let flagged = added
            .iter()
            .any(|(_, t)| registry.flags.keys().any(|k| names(t, k)));
        if !flagged {
            let why = if marked {
                format!("marked `{}`", config.annotation)
            } else {
                "a risky path".to_owned()
            };
            findings.push(Finding {
                level: Level::Failure,
                file: Some(file.to_owned()),
                line: Some(first),
                flag: None,
                message: format!(
                    "{} changed line(s) on {why} reference no registered flag: put the change behind a flag of the registry (its key in the code that checks it), or register one",
                    added.len()
                ),
            });
        }
    }
    for f in registry.flags.values() {
        let (level, days) = match f.expiry(today, config.grace_days) {
            Expiry::Live => continue,
            Expiry::Warn(d) => (Level::Warning, d),
            Expiry::Fail(d) => (Level::Failure, d),
        };
        findings.push(Finding {
            level,
            file: None,
            line: None,
            flag: Some(f.key.clone()),
            message: format!(
                "flag `{}` (owner {}) expired {} day(s) ago on {}: remove it and its code paths, or move metadata.expires{}",
                f.key,
                f.owner,
                days,
                f.expires.map(|d| d.to_string()).unwrap_or_default(),
                if level == Level::Warning {
                    format!(
                        "; this fails after {} day(s)",
                        config.grace_days - days + 1
                    )
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_named_whole() {
        assert!(names(r#"if flags.on("new-checkout"):"#, "new-checkout"));
        assert!(names("NEW_CHECKOUT = 'new-checkout'", "new-checkout"));
        assert!(!names("new-checkout-v2", "new-checkout"));
        assert!(!names("old-new-checkout", "new-checkout"));
    }
}
