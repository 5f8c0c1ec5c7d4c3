//! Secret scanning with rules in gitleaks' configuration format.
//!
//! - [`config`]: the gitleaks TOML format (rules, allowlists, `extend`), and Maestro's
//!   default rules.
//! - [`scan`]: one fragment against the rules, with a keyword prefilter (Aho-Corasick,
//!   ASCII case-insensitive) so that a rule's regex runs only where its keywords occur.
//! - [`tree`]: every file below a directory, in parallel; [`git`]: the lines each commit
//!   added, from `git log -p`.
//!
//! Secrets never leave this crate in clear: a [`Finding`] holds only the redacted secret
//! and the redacted match.

pub mod config;
pub mod git;
pub mod scan;
pub mod tree;

use std::path::PathBuf;

pub use config::Config;
pub use scan::Scanner;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Config {
        file: String,
        line: Option<usize>,
        message: String,
    },
    #[error("git: {0}")]
    Git(String),
}

/// The commit a history finding was added in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Commit {
    pub sha: String,
    pub author: String,
    pub email: String,
    pub date: String,
    pub message: String,
}

/// A secret found. `secret` and `matched` are redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule_id: String,
    pub description: String,
    pub file: String,
    pub line: usize,
    pub end_line: usize,
    pub column: usize,
    pub end_column: usize,
    pub secret: String,
    pub matched: String,
    pub entropy: f64,
    pub tags: Vec<String>,
    pub commit: Option<Commit>,
    /// `[COMMIT:]FILE:RULE:LINE`, as gitleaks writes it; list it in `.gitleaksignore` to
    /// accept the finding.
    pub fingerprint: String,
}

/// Shows at most the first 4 characters of a secret of 16 or more, never more than a
/// quarter of it: `AKIA…[REDACTED]`.
pub fn redact(secret: &str) -> String {
    let n = secret.chars().count();
    let keep = if n >= 16 { 4.min(n / 4) } else { 0 };
    let head: String = secret.chars().take(keep).collect();
    if keep == 0 {
        "[REDACTED]".to_owned()
    } else {
        format!("{head}…[REDACTED]")
    }
}

/// Fingerprints from a `.gitleaksignore` file (one per line, `#` comments).
pub fn read_ignore(path: &std::path::Path) -> Vec<String> {
    config::read_limited(path)
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_never_shows_more_than_a_quarter() {
        assert_eq!(redact("short"), "[REDACTED]");
        assert_eq!(redact("abcdEFGHijklMNOPqrst"), "abcd…[REDACTED]");
        assert_eq!(redact("0123456789abcdef"), "0123…[REDACTED]");
    }

    #[test]
    fn the_default_rules_compile() {
        let c = Config::parse(
            "<default rules>",
            config::DEFAULT_RULES,
            std::path::Path::new("."),
        )
        .expect("default rules compile");
        assert!(c.rules.len() >= 25);
        assert!(
            c.rules.iter().all(|r| !r.keywords.is_empty()),
            "every default rule has keywords"
        );
    }
}
