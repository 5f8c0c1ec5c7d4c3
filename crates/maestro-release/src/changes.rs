//! What each commit means for a release: its Conventional Commit type, scope, description,
//! whether it breaks (`!`, a `BREAKING CHANGE:` footer, or a breaking PR label), its PR
//! number (`(#12)` at the end of the subject, or a merge of PR 12), and which commits are
//! left out — merges, non-conventional messages, commits reverted in the same range (a
//! revert and what it reverts cancel out), and PRs labelled to be skipped.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::git::RawCommit;
use crate::{Labels, ReleaseConfig};

/// One change in the notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub sha: String,
    /// The commit type, lowercase (`feat`, `fix`, …).
    pub kind: String,
    pub scope: Option<String>,
    pub description: String,
    pub breaking: bool,
    /// The `BREAKING CHANGE:` text (or the description, for a `!` alone).
    pub breaking_note: Option<String>,
    pub pr: Option<u64>,
    pub author: String,
}

/// Commits left out of the notes, counted by why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub merges: usize,
    pub not_conventional: usize,
    /// Reverted in the same range, with the reverts themselves.
    pub reverted: usize,
    pub labelled: usize,
}

/// A range of commits, classified; changes oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Classified {
    pub changes: Vec<Change>,
    pub skipped: Skipped,
    /// Authors of the changes, with their count, most first.
    pub contributors: Vec<(String, usize)>,
    /// Every commit of the range, merges included.
    pub commits: usize,
}

/// `(#123)` at the end of a subject (squash merges).
fn pr_suffix(subject: &str) -> Option<u64> {
    let s = subject.trim_end().strip_suffix(')')?;
    let (_, n) = s.rsplit_once("(#")?;
    n.parse().ok()
}

/// `Merge pull request #123 from …`.
fn merged_pr(subject: &str) -> Option<u64> {
    let rest = subject.strip_prefix("Merge pull request #")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The commit a revert reverts: git's `This reverts commit <sha>.` or a `Refs: <sha>`
/// footer of a `revert:` commit.
fn reverts(message: &str) -> Option<String> {
    for line in message.lines() {
        let line = line.trim();
        let sha = line
            .strip_prefix("This reverts commit ")
            .map(|r| r.trim_end_matches('.'))
            .or_else(|| line.strip_prefix("Refs: "))
            .or_else(|| line.strip_prefix("Reverts: "));
        if let Some(sha) = sha.map(str::trim)
            && sha.len() >= 7
            && sha.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Some(sha.to_ascii_lowercase());
        }
    }
    None
}

/// Classifies `raw` (newest first, as git gives it).
#[must_use]
pub fn classify(raw: &[RawCommit], config: &ReleaseConfig, labels: &Labels) -> Classified {
    let mut out = Classified {
        commits: raw.len(),
        ..Classified::default()
    };
    // Merges of a PR: the commits they bring in get the PR's number. The mainline is the
    // first-parent chain from the tip (git lists the tip first); each merge, oldest first,
    // claims what its second parent reaches off the mainline and not yet claimed — one
    // pass over the range however many merges there are.
    let by_sha: BTreeMap<&str, &RawCommit> = raw.iter().map(|c| (c.sha.as_str(), c)).collect();
    let mut claimed: HashSet<&str> = HashSet::new();
    let mut at = raw.first().map(|c| c.sha.as_str());
    while let Some(sha) = at {
        let Some((&key, c)) = by_sha.get_key_value(sha) else {
            break;
        };
        claimed.insert(key);
        at = c.parents.first().map(String::as_str);
    }
    let mut pr_of: BTreeMap<&str, u64> = BTreeMap::new();
    for m in raw.iter().rev().filter(|c| c.parents.len() > 1) {
        let n = merged_pr(m.message.lines().next().unwrap_or_default());
        let mut todo: Vec<&str> = m.parents[1..].iter().map(String::as_str).collect();
        while let Some(sha) = todo.pop() {
            let Some((&key, c)) = by_sha.get_key_value(sha) else {
                continue;
            };
            if !claimed.insert(key) {
                continue;
            }
            if let Some(n) = n {
                pr_of.insert(key, n);
            }
            todo.extend(c.parents.iter().map(String::as_str));
        }
    }
    // Reverts within the range cancel what they revert (both leave the notes).
    let mut cancelled: HashSet<String> = HashSet::new();
    for c in raw {
        if let Some(target) = reverts(&c.message)
            && let Some(hit) = raw.iter().find(|o| o.sha.starts_with(&target))
            && !cancelled.contains(&c.sha)
        {
            cancelled.insert(hit.sha.clone());
            cancelled.insert(c.sha.clone());
        }
    }
    let mut authors: BTreeMap<&str, usize> = BTreeMap::new();
    for c in raw.iter().rev() {
        if c.parents.len() > 1 {
            out.skipped.merges += 1;
            continue;
        }
        if cancelled.contains(&c.sha) {
            out.skipped.reverted += 1;
            continue;
        }
        let subject = c.message.lines().next().unwrap_or_default();
        // git's own revert message of a commit released earlier.
        let git_revert = subject
            .strip_prefix("Revert \"")
            .and_then(|s| s.strip_suffix('"'));
        let parsed = git_conventional::Commit::parse(&c.message);
        let (kind, scope, description, mut breaking, mut note) = match (&parsed, git_revert) {
            (Ok(p), _) => (
                p.type_().as_str().to_ascii_lowercase(),
                p.scope().map(|s| s.as_str().to_owned()),
                p.description().trim().to_owned(),
                p.breaking(),
                p.breaking_description()
                    .filter(|_| p.breaking())
                    .map(|d| d.trim().to_owned()),
            ),
            (Err(_), Some(what)) => ("revert".to_owned(), None, what.to_owned(), false, None),
            (Err(_), None) => {
                out.skipped.not_conventional += 1;
                continue;
            }
        };
        let pr = pr_suffix(subject).or_else(|| pr_of.get(c.sha.as_str()).copied());
        let pr_labels = pr.and_then(|n| labels.get(&n));
        if pr_labels.is_some_and(|ls| ls.iter().any(|l| config.skip_labels.contains(l))) {
            out.skipped.labelled += 1;
            continue;
        }
        if pr_labels.is_some_and(|ls| ls.iter().any(|l| config.breaking_labels.contains(l))) {
            breaking = true;
            note.get_or_insert_with(|| description.clone());
        }
        let description = match pr {
            // The PR number is a link of its own in the notes.
            Some(n) => description
                .trim_end()
                .strip_suffix(&format!("(#{n})"))
                .map_or(description.clone(), |d| d.trim_end().to_owned()),
            None => description,
        };
        *authors.entry(c.author.as_str()).or_default() += 1;
        out.changes.push(Change {
            sha: c.sha.clone(),
            kind,
            scope,
            description,
            breaking,
            breaking_note: note,
            pr,
            author: c.author.clone(),
        });
    }
    let mut contributors: Vec<(String, usize)> = authors
        .into_iter()
        .map(|(a, n)| (a.to_owned(), n))
        .collect();
    contributors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.contributors = contributors;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha: &str, parents: &[&str], message: &str) -> RawCommit {
        RawCommit {
            sha: sha.into(),
            parents: parents.iter().map(|p| (*p).to_owned()).collect(),
            author: "Alice".into(),
            email: "alice@example.com".into(),
            date: "2026-12-01T10:00:00+00:00".into(),
            message: message.into(),
        }
    }

    #[test]
    fn pr_numbers_and_reverts_are_read() {
        assert_eq!(pr_suffix("feat: canary buttons (#42)"), Some(42));
        assert_eq!(pr_suffix("feat: canary buttons"), None);
        assert_eq!(merged_pr("Merge pull request #7 from acme/flags"), Some(7));
        assert_eq!(
            reverts(
                "Revert \"feat: x\"\n\nThis reverts commit 0123456789abcdef0123456789abcdef01234567."
            ),
            Some("0123456789abcdef0123456789abcdef01234567".into())
        );
        assert_eq!(
            reverts("revert: x\n\nRefs: abcdef1"),
            Some("abcdef1".into())
        );
    }

    #[test]
    fn a_breaking_label_and_a_skip_label_apply_to_their_pr() {
        let raw = vec![
            commit("c3", &["c2"], "fix: keep the cookie (#9)"),
            commit("c2", &["c1"], "feat: drop the v1 endpoints (#8)"),
            commit("c1", &[], "chore: tidy"),
        ];
        let labels = Labels::from([
            (8, vec!["breaking-change".into()]),
            (9, vec!["skip-changelog".into()]),
        ]);
        let c = classify(&raw, &ReleaseConfig::default(), &labels);
        assert_eq!(c.changes.len(), 2, "{c:#?}");
        assert_eq!(c.skipped.labelled, 1);
        let feat = c.changes.iter().find(|x| x.kind == "feat").expect("feat");
        assert!(feat.breaking);
        assert_eq!(feat.description, "drop the v1 endpoints");
        assert_eq!(feat.pr, Some(8));
    }
}
