//! Release notes: breaking changes first (with their `BREAKING CHANGE:` text), then the
//! configured sections, each change with its scope in bold and links to its commit and PR;
//! the contributors; a compare link. Rendered as Markdown (what a CHANGELOG and a release
//! page hold) or serialised as JSON; [`update_changelog`] puts a release's section on top
//! of `CHANGELOG.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::{Change, Classified, ReleaseConfig, ReleaseError, Skipped};

/// One entry of the notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub scope: Option<String>,
    pub description: String,
    pub sha: String,
    pub pr: Option<u64>,
    pub author: String,
    /// Breaking entries: what breaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaking_note: Option<String>,
}

/// One section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub title: String,
    pub entries: Vec<Entry>,
}

/// A contributor and their count of changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contributor {
    pub name: String,
    pub changes: usize,
}

/// A release's notes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notes {
    pub version: Option<String>,
    pub tag: Option<String>,
    pub previous: Option<String>,
    pub date: String,
    pub breaking: Vec<Entry>,
    pub sections: Vec<Section>,
    pub contributors: Vec<Contributor>,
    pub commits: usize,
    pub skipped: Skipped,
    /// Changes whose type no section collects (docs, chore, …).
    pub hidden: usize,
    pub compare_url: Option<String>,
    #[serde(skip)]
    repository_url: Option<String>,
}

fn entry(c: &Change) -> Entry {
    Entry {
        scope: c.scope.clone(),
        description: c.description.clone(),
        sha: c.sha.clone(),
        pr: c.pr,
        author: c.author.clone(),
        breaking_note: c.breaking_note.clone(),
    }
}

/// Entries by scope (unscoped first, then by name), in commit order within a scope.
fn by_scope(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| a.scope.cmp(&b.scope));
    entries
}

impl Notes {
    /// The notes of `c`.
    #[must_use]
    pub fn new(
        c: &Classified,
        config: &ReleaseConfig,
        version: Option<&semver::Version>,
        previous: Option<String>,
        tag: Option<String>,
        date: &str,
        repository_url: Option<&str>,
    ) -> Notes {
        let breaking = by_scope(c.changes.iter().filter(|x| x.breaking).map(entry).collect());
        let mut hidden = 0;
        let mut sections: Vec<Section> = config
            .groups
            .iter()
            .map(|g| Section {
                title: g.title.clone(),
                entries: Vec::new(),
            })
            .collect();
        for ch in &c.changes {
            match config
                .groups
                .iter()
                .position(|g| g.types.contains(&ch.kind))
            {
                Some(i) => sections[i].entries.push(entry(ch)),
                None if ch.breaking => {}
                None => hidden += 1,
            }
        }
        for s in &mut sections {
            s.entries = by_scope(std::mem::take(&mut s.entries));
        }
        sections.retain(|s| !s.entries.is_empty());
        let compare_url = match (repository_url, &previous, &tag) {
            (Some(url), Some(p), Some(t)) => Some(format!("{url}/compare/{p}...{t}")),
            _ => None,
        };
        Notes {
            version: version.map(ToString::to_string),
            tag,
            previous,
            date: date.to_owned(),
            breaking,
            sections,
            contributors: c
                .contributors
                .iter()
                .map(|(name, n)| Contributor {
                    name: name.clone(),
                    changes: *n,
                })
                .collect(),
            commits: c.commits,
            skipped: c.skipped.clone(),
            hidden,
            compare_url,
            repository_url: repository_url.map(str::to_owned),
        }
    }

    fn line(&self, out: &mut String, e: &Entry, breaking: bool) {
        out.push_str("- ");
        if let Some(s) = &e.scope {
            let _ = write!(out, "**{}:** ", escape(s));
        }
        let text = if breaking {
            e.breaking_note.as_deref().unwrap_or(&e.description)
        } else {
            &e.description
        };
        out.push_str(&escape(text).replace('\n', "\n  "));
        let short = &e.sha[..e.sha.len().min(7)];
        match (&self.repository_url, e.pr) {
            (Some(url), Some(pr)) => {
                let _ = write!(
                    out,
                    " ([#{pr}]({url}/pull/{pr})) ([{short}]({url}/commit/{}))",
                    e.sha
                );
            }
            (Some(url), None) => {
                let _ = write!(out, " ([{short}]({url}/commit/{}))", e.sha);
            }
            (None, Some(pr)) => {
                let _ = write!(out, " (#{pr}) ({short})");
            }
            (None, None) => {
                let _ = write!(out, " ({short})");
            }
        }
        out.push('\n');
    }

    /// The notes in Markdown: a `## version (date)` heading and its sections.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let title = self.version.as_deref().unwrap_or("Unreleased");
        match &self.compare_url {
            Some(url) => {
                let _ = writeln!(out, "## [{title}]({url}) ({})", self.date);
            }
            None => {
                let _ = writeln!(out, "## {title} ({})", self.date);
            }
        }
        if !self.breaking.is_empty() {
            out.push_str("\n### ⚠ Breaking changes\n\n");
            for e in &self.breaking {
                self.line(&mut out, e, true);
            }
        }
        for s in &self.sections {
            let _ = write!(out, "\n### {}\n\n", escape(&s.title));
            for e in &s.entries {
                self.line(&mut out, e, false);
            }
        }
        if !self.contributors.is_empty() {
            out.push_str("\n### Contributors\n\n");
            for c in &self.contributors {
                let _ = writeln!(out, "- {} ({})", escape(&c.name), c.changes);
            }
        }
        out
    }

    /// The notes as JSON.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Markdown's inline specials escaped (a commit message is text, not markup).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(
            ch,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|'
        ) {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Puts `section` (a release's Markdown) on top of the changelog at `path` — under its
/// title, above the previous release — creating it with a `# Changelog` title if it is not
/// there. Refuses a version that is already in it. Written to a temporary file, synced,
/// then renamed: the old changelog or the new one, never half of one.
///
/// # Errors
/// [`ReleaseError::Write`] naming the file: unreadable, the version already there, or
/// the write failing.
pub fn update_changelog(path: &Path, version: &str, section: &str) -> Result<(), ReleaseError> {
    let bad = |message: String| ReleaseError::Write {
        path: path.display().to_string(),
        message,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "# Changelog\n\nAll notable changes to this project are documented here.\n".to_owned()
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let already = old.lines().any(|l| {
        l.starts_with("## ")
            && (l[3..].starts_with(&format!("{version} "))
                || l[3..].starts_with(&format!("[{version}]")))
    });
    if already {
        return Err(bad(format!(
            "release {version} is already in it; a version is released once"
        )));
    }
    let at = old
        .match_indices("\n## ")
        .next()
        .map_or(old.len(), |(i, _)| i + 1);
    let (head, rest) = old.split_at(at);
    let mut new = String::with_capacity(old.len() + section.len() + 2);
    new.push_str(head.trim_end());
    new.push_str("\n\n");
    new.push_str(section.trim_end());
    new.push('\n');
    if !rest.is_empty() {
        new.push('\n');
        new.push_str(rest);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("CHANGELOG.md"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(new.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        bad(e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changelog_gets_the_new_release_on_top_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("CHANGELOG.md");
        update_changelog(
            &p,
            "0.1.0",
            "## 0.1.0 (2026-11-01)\n\n### Features\n\n- a (1234567)\n",
        )
        .expect("new");
        update_changelog(
            &p,
            "0.2.0",
            "## 0.2.0 (2026-12-01)\n\n### Bug fixes\n\n- b (89abcde)\n",
        )
        .expect("second");
        let text = std::fs::read_to_string(&p).expect("read");
        let first = text.find("## 0.2.0").expect("0.2.0");
        let second = text.find("## 0.1.0").expect("0.1.0");
        assert!(text.starts_with("# Changelog\n"), "{text}");
        assert!(first < second, "newest on top: {text}");
        let e = update_changelog(&p, "0.2.0", "## 0.2.0 (x)\n").expect_err("twice");
        assert!(e.to_string().contains("already in it"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&p).expect("read"),
            text,
            "unchanged"
        );
    }

    #[test]
    fn markdown_specials_in_messages_are_text() {
        assert_eq!(
            escape("use `x` *now* [a](b) <script>"),
            "use \\`x\\` \\*now\\* \\[a\\](b) \\<script\\>"
        );
    }
}
