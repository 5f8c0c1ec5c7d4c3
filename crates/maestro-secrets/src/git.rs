//! Scanning git history: the lines each commit added, as `git log -p` shows them.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::scan::{Origin, Scanner};
use crate::{Commit, Finding, SecretsError};

const HEADER: &str = "\u{1}maestro-commit\u{1}";

/// The added lines of one file in one commit, with their line numbers in the new file.
#[derive(Default)]
struct Fragment {
    path: Option<String>,
    text: Vec<u8>,
    /// (offset in `text`, line number) at the start of each added line.
    lines: Vec<(usize, usize)>,
}

impl Fragment {
    fn line_of(&self, at: usize) -> usize {
        match self.lines.binary_search_by(|(o, _)| o.cmp(&at)) {
            Ok(i) => self.lines[i].1,
            Err(0) => 0,
            Err(i) => self.lines[i - 1].1,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GitStats {
    pub commits: usize,
    pub bytes: u64,
}

fn flush(scanner: &Scanner, frag: &mut Fragment, commit: &Commit, out: &mut Vec<Finding>) {
    if let Some(path) = frag.path.take()
        && !frag.text.is_empty()
        && !scanner.skips_path(&path)
    {
        let origin = Origin {
            path: &path,
            commit: Some(commit),
        };
        let f = &*frag;
        out.extend(scanner.scan(&f.text, &origin, &|at| f.line_of(at)));
    }
    frag.text.clear();
    frag.lines.clear();
}

/// `b/path` or `"b/pa th"` → `path`.
fn new_path(spec: &str) -> Option<String> {
    let spec = spec.trim();
    if spec == "/dev/null" {
        return None;
    }
    let unquoted = spec
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(spec);
    Some(unquoted.strip_prefix("b/").unwrap_or(unquoted).to_owned())
}

/// Scans every commit reachable from any ref (`git log --all`), reading only added lines,
/// streaming: memory stays bounded by the largest single file diff.
pub fn scan_history(
    scanner: &Scanner,
    repo: &Path,
    ignore: &[String],
) -> Result<(Vec<Finding>, GitStats), SecretsError> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "core.quotePath=false",
            "log",
            "-p",
            "-U0",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            "--full-history",
            "--all",
            &format!("--format={HEADER}%H%x00%an%x00%ae%x00%aI%x00%s"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SecretsError::Git(format!("cannot run git: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| SecretsError::Git("no output pipe".into()))?;
    // Drain stderr concurrently: a git that fills the stderr pipe while we read stdout
    // would otherwise block forever.
    let stderr = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut err = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    });
    let mut reader = std::io::BufReader::with_capacity(1 << 16, stdout);
    let mut out = Vec::new();
    let mut stats = GitStats::default();
    let mut commit = Commit::default();
    let mut frag = Fragment::default();
    let mut new_line = 0usize;
    let mut in_hunk = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| SecretsError::Git(e.to_string()))?;
        if n == 0 {
            break;
        }
        stats.bytes += n as u64;
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(h) = body.strip_prefix(HEADER.as_bytes()) {
            flush(scanner, &mut frag, &commit, &mut out);
            let h = String::from_utf8_lossy(h);
            let mut parts = h.split('\0');
            commit = Commit {
                sha: parts.next().unwrap_or_default().to_owned(),
                author: parts.next().unwrap_or_default().to_owned(),
                email: parts.next().unwrap_or_default().to_owned(),
                date: parts.next().unwrap_or_default().to_owned(),
                message: parts.next().unwrap_or_default().to_owned(),
            };
            stats.commits += 1;
            in_hunk = false;
            continue;
        }
        if body.starts_with(b"diff --git ") {
            flush(scanner, &mut frag, &commit, &mut out);
            in_hunk = false;
            continue;
        }
        if !in_hunk && let Some(p) = body.strip_prefix(b"+++ ") {
            frag.path = new_path(&String::from_utf8_lossy(p));
            continue;
        }
        if let Some(h) = body.strip_prefix(b"@@ ") {
            // @@ -a,b +c,d @@
            let h = String::from_utf8_lossy(h);
            new_line = h
                .split_whitespace()
                .find_map(|w| w.strip_prefix('+'))
                .and_then(|w| w.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            in_hunk = true;
            continue;
        }
        if !in_hunk {
            continue;
        }
        match body.first() {
            Some(b'+') => {
                frag.lines.push((frag.text.len(), new_line));
                frag.text.extend_from_slice(&body[1..]);
                frag.text.push(b'\n');
                new_line += 1;
            }
            Some(b'-' | b'\\') => {}
            _ => in_hunk = false,
        }
    }
    flush(scanner, &mut frag, &commit, &mut out);
    let status = child.wait().map_err(|e| SecretsError::Git(e.to_string()))?;
    let err = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(SecretsError::Git(format!(
            "git log failed in {}: {}",
            repo.display(),
            err.trim()
        )));
    }
    out.retain(|f| !ignore.contains(&f.fingerprint));
    Ok((out, stats))
}
