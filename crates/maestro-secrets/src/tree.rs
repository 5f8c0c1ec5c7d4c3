//! Scanning every file below a directory.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::scan::{Origin, Scanner};
use crate::{Finding, SecretsError};

/// Files larger than this are skipped unless the caller raises it.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub files: usize,
    pub bytes: u64,
    pub skipped_binary: usize,
    pub skipped_large: usize,
    pub skipped_allowlisted: usize,
}

/// How a tree is walked.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    pub max_file_bytes: u64,
    pub threads: usize,
    pub respect_gitignore: bool,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            threads: 1,
            respect_gitignore: true,
        }
    }
}

#[derive(Debug)]
pub struct TreeScan {
    pub findings: Vec<Finding>,
    pub stats: Stats,
}

/// Files below `root`, as (absolute path, path relative to root with `/`), sorted.
/// `.git` is never entered and symbolic links are not followed; with `respect_gitignore`,
/// what `.gitignore` files (and `.git/info/exclude`) ignore is skipped, as git would.
/// Hidden files such as `.env` are scanned.
fn files(root: &Path, respect_gitignore: bool) -> Result<Vec<(PathBuf, String)>, SecretsError> {
    let meta = std::fs::symlink_metadata(root).map_err(|source| SecretsError::Io {
        path: root.to_owned(),
        source,
    })?;
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![(root.to_owned(), name)]);
    }
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .ignore(false)
        .parents(respect_gitignore)
        .git_ignore(respect_gitignore)
        .git_exclude(respect_gitignore)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    let mut out = Vec::new();
    for e in walker {
        let e = e.map_err(|err| SecretsError::Io {
            path: root.to_owned(),
            source: std::io::Error::other(err.to_string()),
        })?;
        if !e.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap_or(e.path())
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        out.push((e.path().to_owned(), rel));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// 1-based line of byte offset `at`.
pub(crate) fn line_at(text: &[u8], at: usize) -> usize {
    text[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Scans every file below `root` on `opts.threads` threads. Binary files (a NUL byte in the
/// first 8 KiB) and files over `max_file_bytes` are skipped and counted. Findings whose
/// fingerprint is in `ignore` are dropped.
pub fn scan_tree(
    scanner: &Scanner,
    root: &Path,
    opts: &TreeOptions,
    ignore: &[String],
) -> Result<TreeScan, SecretsError> {
    let files = files(root, opts.respect_gitignore)?;
    let (max_file_bytes, threads) = (opts.max_file_bytes, opts.threads);
    let next = AtomicUsize::new(0);
    let results: Mutex<(Vec<Finding>, Stats)> = Mutex::new((Vec::new(), Stats::default()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut found = Vec::new();
                let mut stats = Stats::default();
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((abs, rel)) = files.get(i) else {
                        break;
                    };
                    if scanner.skips_path(rel) {
                        stats.skipped_allowlisted += 1;
                        continue;
                    }
                    let Ok(meta) = std::fs::metadata(abs) else {
                        continue;
                    };
                    if meta.len() > max_file_bytes {
                        stats.skipped_large += 1;
                        continue;
                    }
                    buf.clear();
                    let Ok(mut f) = std::fs::File::open(abs) else {
                        continue;
                    };
                    if std::io::Read::read_to_end(&mut f, &mut buf).is_err() {
                        continue;
                    }
                    if buf[..buf.len().min(8192)].contains(&0) {
                        stats.skipped_binary += 1;
                        continue;
                    }
                    stats.files += 1;
                    stats.bytes += buf.len() as u64;
                    let origin = Origin {
                        path: rel,
                        commit: None,
                    };
                    let text = &buf;
                    found.extend(scanner.scan(text, &origin, &|at| line_at(text, at)));
                }
                let mut r = results
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.0.extend(found);
                r.1.files += stats.files;
                r.1.bytes += stats.bytes;
                r.1.skipped_binary += stats.skipped_binary;
                r.1.skipped_large += stats.skipped_large;
                r.1.skipped_allowlisted += stats.skipped_allowlisted;
            });
        }
    });
    let (mut findings, stats) = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    findings.retain(|f| !ignore.contains(&f.fingerprint));
    findings.sort_by(|a, b| {
        (&a.file, a.line, a.column, &a.rule_id).cmp(&(&b.file, b.line, b.column, &b.rule_id))
    });
    Ok(TreeScan { findings, stats })
}
