//! Resolving every job's input globs to files with one walk of the tree. Only the
//! directories a pattern can match are walked; `.git`, `.maestro` and any path declared as
//! an output or report of a job are never inputs (outputs reach downstream keys through
//! upstream digests instead).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};

/// Input resolution failures.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("invalid input glob `{pattern}`")]
    Glob {
        pattern: String,
        #[source]
        source: globset::Error,
    },
    #[error("cannot read directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// For each job, the sorted list of input files (relative, `/`-separated).
#[derive(Debug, Default)]
pub struct InputIndex {
    pub per_job: Vec<Vec<String>>,
}

/// The part of a pattern before its first glob metacharacter, as a directory to walk.
fn literal_root(pattern: &str) -> &str {
    let Some(meta) = pattern.find(['*', '?', '[', '{', '\\']) else {
        return pattern; // a plain path: walk it (file or directory)
    };
    pattern[..meta].rfind('/').map_or("", |i| &pattern[..i])
}

fn is_excluded(rel: &str, excluded: &HashSet<String>) -> bool {
    if rel == ".git"
        || rel == ".maestro"
        || rel.starts_with(".git/")
        || rel.starts_with(".maestro/")
    {
        return true;
    }
    if excluded.contains(rel) {
        return true;
    }
    // Inside an excluded directory?
    let mut cur = rel;
    while let Some(i) = cur.rfind('/') {
        cur = &cur[..i];
        if excluded.contains(cur) {
            return true;
        }
    }
    false
}

impl InputIndex {
    /// Resolves `patterns[j]` for every job `j` under `root`.
    ///
    /// # Errors
    /// On an invalid glob or an unreadable directory.
    pub fn build(
        root: &Path,
        patterns: &[Vec<String>],
        excluded: &HashSet<String>,
    ) -> Result<InputIndex, InputError> {
        let mut builder = GlobSetBuilder::new();
        let mut owner = Vec::new();
        let mut roots: Vec<String> = Vec::new();
        for (job, pats) in patterns.iter().enumerate() {
            for p in pats {
                let glob = GlobBuilder::new(p)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|source| InputError::Glob {
                        pattern: p.clone(),
                        source,
                    })?;
                builder.add(glob);
                owner.push(job);
                roots.push(literal_root(p).trim_end_matches('/').to_owned());
                // `dir/` or a plain directory path means everything below it.
                if !p.contains(['*', '?', '[', '{']) {
                    let below = format!("{}/**", p.trim_end_matches('/'));
                    if let Ok(g) = GlobBuilder::new(&below).literal_separator(true).build() {
                        builder.add(g);
                        owner.push(job);
                    }
                }
            }
        }
        let set = builder.build().map_err(|source| InputError::Glob {
            pattern: String::new(),
            source,
        })?;
        // Walk the smallest set of roots: drop any root inside another.
        roots.sort();
        roots.dedup();
        // Sorted, so an ancestor is kept before its descendants; checking each ancestor
        // prefix against a set keeps this linear in the number of roots.
        let mut kept: HashSet<&str> = HashSet::new();
        let mut walk_roots: Vec<String> = Vec::new();
        for r in &roots {
            let covered = kept.contains("")
                || kept.contains(r.as_str())
                || r.match_indices('/').any(|(i, _)| kept.contains(&r[..i]));
            if !covered {
                kept.insert(r);
                walk_roots.push(r.clone());
            }
        }
        let mut per_job = vec![Vec::new(); patterns.len()];
        let mut matches = Vec::new();
        let mut visit = |rel: &str| {
            set.matches_into(rel, &mut matches);
            let mut last = usize::MAX;
            for &m in &matches {
                let job = owner[m];
                if job != last {
                    per_job[job].push(rel.to_owned());
                    last = job;
                }
            }
        };
        for r in &walk_roots {
            let start = if r.is_empty() {
                root.to_path_buf()
            } else {
                root.join(r)
            };
            match fs::symlink_metadata(&start) {
                Ok(m) if m.is_file() && !is_excluded(r, excluded) => visit(r),
                Ok(m) if m.is_dir() => walk(&start, r, excluded, &mut visit)?,
                _ => {}
            }
        }
        for files in &mut per_job {
            files.sort();
            files.dedup();
        }
        Ok(InputIndex { per_job })
    }
}

fn walk(
    dir: &Path,
    rel: &str,
    excluded: &HashSet<String>,
    visit: &mut dyn FnMut(&str),
) -> Result<(), InputError> {
    if !rel.is_empty() && is_excluded(rel, excluded) {
        return Ok(());
    }
    let rd = fs::read_dir(dir).map_err(|source| InputError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let child = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&e.path(), &child, excluded, visit)?;
        } else if (ft.is_file() || ft.is_symlink()) && !is_excluded(&child, excluded) {
            visit(&child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_roots() {
        assert_eq!(literal_root("src/**/*.py"), "src");
        assert_eq!(literal_root("*.py"), "");
        assert_eq!(literal_root("a/b/c.txt"), "a/b/c.txt");
        assert_eq!(literal_root("a/b*/c"), "a");
    }

    #[test]
    fn resolves_per_job_and_excludes_outputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        for f in [
            "src/a.py",
            "src/sub/b.py",
            "src/c.txt",
            "tests/t.py",
            "dist/out.py",
            ".maestro/x.py",
            "README",
        ] {
            let p = r.join(f);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, f).expect("write");
        }
        let pats = vec![
            vec!["src/**/*.py".to_owned()],
            vec!["**/*.py".to_owned()],
            vec!["src".to_owned(), "README".to_owned()],
        ];
        let excluded: HashSet<String> = ["dist".to_owned()].into();
        let idx = InputIndex::build(r, &pats, &excluded).expect("index");
        assert_eq!(idx.per_job[0], ["src/a.py", "src/sub/b.py"]);
        assert_eq!(idx.per_job[1], ["src/a.py", "src/sub/b.py", "tests/t.py"]);
        assert_eq!(
            idx.per_job[2],
            ["README", "src/a.py", "src/c.txt", "src/sub/b.py"]
        );
    }
}
