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

/// `text` with every line on which `scanner` finds a secret replaced by
/// `[REDACTED: <rule> secret]`, and how many lines were replaced: for log text about to
/// leave the machine (a remote run's log tails).
pub fn mask_lines(scanner: &Scanner, text: &str) -> (String, usize) {
    let bytes = text.as_bytes();
    let origin = scan::Origin {
        path: "log",
        commit: None,
    };
    let findings = scanner.scan(bytes, &origin, &|at| tree::line_at(bytes, at));
    if findings.is_empty() {
        return (text.to_owned(), 0);
    }
    let mut masked: std::collections::BTreeMap<usize, &str> = std::collections::BTreeMap::new();
    for f in &findings {
        for l in f.line..=f.end_line.max(f.line) {
            masked.entry(l).or_insert(f.rule_id.as_str());
        }
    }
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match masked.get(&(i + 1)) {
            Some(rule) => {
                out.push_str(&format!("[REDACTED: {rule} secret]"));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    (out, masked.len())
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
    fn mask_lines_replaces_only_the_lines_with_secrets() {
        let scanner = Scanner::new(Config::default_rules());
        let text = "step 1\nexport AWS_ACCESS_KEY_ID=AKIAZ7VRSQ5TQDNXKCVB\nstep 3\n";
        let (out, n) = mask_lines(&scanner, text);
        assert_eq!(n, 1, "{out}");
        assert!(
            out.starts_with("step 1\n[REDACTED: ") && out.ends_with(" secret]\nstep 3\n"),
            "{out}"
        );
        assert!(!out.contains("AKIAZ7VRSQ5TQDNXKCVB"), "{out}");
        assert_eq!(
            mask_lines(&scanner, "nothing here"),
            ("nothing here".to_owned(), 0)
        );
    }

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
