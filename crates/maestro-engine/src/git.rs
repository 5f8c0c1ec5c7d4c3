//! Commit and branch of the repository, read from `.git` directly: no `git` subprocess.

use std::fs;
use std::path::{Path, PathBuf};

/// `(commit, branch)` of the repository containing `root`, when it is a git work tree.
#[must_use]
pub fn head(root: &Path) -> (Option<String>, Option<String>) {
    git_dir(root).map_or((None, None), |git| read_head(&git))
}

/// The top directory of the work tree containing `root` (where `.git` is).
#[must_use]
pub fn work_tree(root: &Path) -> Option<PathBuf> {
    root.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The `.git` directory of the work tree containing `root` (following a worktree's or
/// submodule's `gitdir:` file).
fn git_dir(root: &Path) -> Option<PathBuf> {
    let mut dir = Some(root);
    while let Some(d) = dir {
        let git = d.join(".git");
        if git.is_dir() {
            return Some(git);
        }
        if git.is_file() {
            let text = fs::read_to_string(&git).ok()?;
            let p = text.trim().strip_prefix("gitdir: ")?;
            return Some(d.join(p));
        }
        dir = d.parent();
    }
    None
}

/// The directory holding shared refs and config (a worktree's `commondir`).
fn common_dir(git: &Path) -> PathBuf {
    fs::read_to_string(git.join("commondir"))
        .ok()
        .map_or_else(|| git.to_path_buf(), |c| git.join(c.trim()))
}

/// The URL of the `origin` remote, from the repository's config.
#[must_use]
pub fn origin_url(root: &Path) -> Option<String> {
    let git = git_dir(root)?;
    let config = fs::read_to_string(common_dir(&git).join("config")).ok()?;
    let mut in_origin = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_origin = line.replace(' ', "") == "[remote\"origin\"]";
        } else if in_origin
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == "url"
        {
            return Some(v.trim().to_owned());
        }
    }
    None
}

fn read_head(git: &Path) -> (Option<String>, Option<String>) {
    let Ok(head) = fs::read_to_string(git.join("HEAD")) else {
        return (None, None);
    };
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return (Some(head.to_owned()), None);
    };
    let branch = reference.strip_prefix("refs/heads/").map(str::to_owned);
    // Loose ref, then packed-refs; a worktree keeps refs in the common dir.
    let common = common_dir(git);
    for base in [git, common.as_path()] {
        if let Ok(sha) = fs::read_to_string(base.join(reference)) {
            return (Some(sha.trim().to_owned()), branch);
        }
        if let Ok(packed) = fs::read_to_string(base.join("packed-refs")) {
            for line in packed.lines() {
                if let Some((sha, name)) = line.split_once(' ')
                    && name == reference
                {
                    return (Some(sha.to_owned()), branch);
                }
            }
        }
    }
    (None, branch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loose_and_packed_refs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("refs/heads")).expect("mkdir");
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").expect("head");
        fs::write(git.join("refs/heads/main"), "abc123\n").expect("ref");
        assert_eq!(
            head(&dir.path().join("sub")),
            (Some("abc123".into()), Some("main".into()))
        );
        fs::remove_file(git.join("refs/heads/main")).expect("rm");
        fs::write(
            git.join("packed-refs"),
            "# pack-refs\ndef456 refs/heads/main\n",
        )
        .expect("packed");
        assert_eq!(
            head(dir.path()),
            (Some("def456".into()), Some("main".into()))
        );
        fs::write(
            git.join("config"),
            "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = git@example.com:acme/shop.git\n",
        )
        .expect("config");
        assert_eq!(
            origin_url(dir.path()).as_deref(),
            Some("git@example.com:acme/shop.git")
        );
        fs::write(git.join("HEAD"), "0123abcd\n").expect("detached");
        assert_eq!(head(dir.path()), (Some("0123abcd".into()), None));
    }
}
