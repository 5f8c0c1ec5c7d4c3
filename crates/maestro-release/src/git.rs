//! The history a release is made of, read with `git` as a subprocess (free to compile, and
//! as fast as git itself): the release tags reachable from a commit, and the commits since
//! the last stable one.

use std::path::Path;
use std::process::Command;

use crate::ReleaseError;

/// One commit as git gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCommit {
    pub sha: String,
    pub parents: Vec<String>,
    pub author: String,
    pub email: String,
    /// Author date, strict ISO 8601.
    pub date: String,
    /// The whole message (subject, body, trailers).
    pub message: String,
}

/// A release tag: its name and the version it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub version: semver::Version,
}

/// Largest output read from one git command.
const MAX_OUTPUT: usize = 512 << 20;

fn git(repo: &Path, args: &[&str]) -> Result<String, ReleaseError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| ReleaseError::Git(format!("git cannot run: {e}")))?;
    if !out.status.success() {
        return Err(ReleaseError::Git(format!(
            "git {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    if out.stdout.len() > MAX_OUTPUT {
        return Err(ReleaseError::Git(format!(
            "git {}: more than {MAX_OUTPUT} bytes of output",
            args.first().copied().unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The full id of `rev` (`HEAD`, a branch, a tag).
///
/// # Errors
/// When it names no commit.
pub fn resolve(repo: &Path, rev: &str) -> Result<String, ReleaseError> {
    Ok(git(
        repo,
        &[
            "rev-parse",
            "--verify",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ],
    )?
    .trim()
    .to_owned())
}

/// Paths changed from `since` to `head` (every tracked path when there is no `since`).
///
/// # Errors
/// When git fails.
pub fn changed_paths(
    repo: &Path,
    since: Option<&str>,
    head: &str,
) -> Result<Vec<String>, ReleaseError> {
    let text = match since {
        Some(s) => git(
            repo,
            &["diff", "--name-only", "--no-renames", "-z", s, head, "--"],
        )?,
        None => git(repo, &["ls-tree", "-r", "-z", "--name-only", head])?,
    };
    Ok(text
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The branch `commit` must be on: `branch` itself, else `origin/<branch>`, when `commit`
/// is reachable from it. `Ok(None)` when neither ref contains it.
///
/// # Errors
/// When neither ref exists, or git fails.
pub fn on_branch(repo: &Path, commit: &str, branch: &str) -> Result<Option<String>, ReleaseError> {
    let mut found = false;
    for r in [branch.to_owned(), format!("origin/{branch}")] {
        let Ok(tip) = resolve(repo, &r) else {
            continue;
        };
        found = true;
        let status = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["merge-base", "--is-ancestor", commit, &tip])
            .env("GIT_TERMINAL_PROMPT", "0")
            .status()
            .map_err(|e| ReleaseError::Git(format!("git cannot run: {e}")))?;
        match status.code() {
            Some(0) => return Ok(Some(r)),
            Some(1) => {}
            _ => return Err(ReleaseError::Git(format!("git merge-base failed for {r}"))),
        }
    }
    if found {
        Ok(None)
    } else {
        Err(ReleaseError::Git(format!(
            "neither `{branch}` nor `origin/{branch}` exists here (fetch it, or give --branch)"
        )))
    }
}

/// Creates the annotated tag `name` on `commit` (refused by git when it exists).
///
/// # Errors
/// When git fails (the tag exists, no identity is configured).
pub fn create_tag(
    repo: &Path,
    name: &str,
    commit: &str,
    message: &str,
) -> Result<(), ReleaseError> {
    git(
        repo,
        &[
            "tag",
            "--annotate",
            "--message",
            message,
            "--end-of-options",
            name,
            commit,
        ],
    )
    .map(|_| ())
}

/// Release tags reachable from `rev`: `<prefix><SemVer>`, highest version first. Tags that
/// are not SemVer after the prefix are not releases and are left out.
///
/// # Errors
/// When git fails.
pub fn tags(repo: &Path, rev: &str, prefix: &str) -> Result<Vec<Tag>, ReleaseError> {
    let pattern = format!("{prefix}*");
    let text = git(repo, &["tag", "--merged", rev, "--list", &pattern])?;
    let mut tags: Vec<Tag> = text
        .lines()
        .filter_map(|name| {
            let v = semver::Version::parse(name.strip_prefix(prefix)?).ok()?;
            Some(Tag {
                name: name.to_owned(),
                version: v,
            })
        })
        .collect();
    tags.sort_by(|a, b| b.version.cmp(&a.version));
    Ok(tags)
}

const FIELD: char = '\u{1f}';
const RECORD: char = '\u{1e}';

/// The commits reachable from `rev` and not from `since` (all of them without it), newest
/// first, merges included (the notes skip them, and they carry PR numbers).
///
/// # Errors
/// When git fails.
pub fn commits(
    repo: &Path,
    since: Option<&str>,
    rev: &str,
) -> Result<Vec<RawCommit>, ReleaseError> {
    let range = match since {
        Some(s) => format!("{s}..{rev}"),
        None => rev.to_owned(),
    };
    let text = git(
        repo,
        &[
            "log",
            "--format=%H%x1f%P%x1f%an%x1f%ae%x1f%aI%x1f%B%x1e",
            "--end-of-options",
            &range,
        ],
    )?;
    Ok(text
        .split(RECORD)
        .filter_map(|rec| {
            let rec = rec.trim_start_matches('\n');
            if rec.is_empty() {
                return None;
            }
            let mut f = rec.splitn(6, FIELD);
            Some(RawCommit {
                sha: f.next()?.to_owned(),
                parents: f.next()?.split_whitespace().map(str::to_owned).collect(),
                author: f.next()?.to_owned(),
                email: f.next()?.to_owned(),
                date: f.next()?.to_owned(),
                message: f.next().unwrap_or_default().trim_end().to_owned(),
            })
        })
        .collect())
}

/// `origin`'s web address, for links: `https://host/owner/repo` from an `https://`,
/// `ssh://` or `git@host:owner/repo.git` remote; `None` without one.
#[must_use]
pub fn web_url(repo: &Path) -> Option<String> {
    let url = git(repo, &["remote", "get-url", "origin"]).ok()?;
    remote_to_web(url.trim())
}

/// A remote's URL as a web address (credentials dropped).
#[must_use]
pub fn remote_to_web(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/').trim_end_matches(".git");
    let (host, path) = if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("ssh://"))
    {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let (host, path) = rest.split_once('/')?;
        (host.split(':').next()?.to_owned(), path.to_owned())
    } else {
        let rest = url.rsplit_once('@').map_or(url, |(_, r)| r);
        let (host, path) = rest.split_once(':')?;
        (host.to_owned(), path.to_owned())
    };
    (!host.is_empty() && !path.is_empty()).then(|| format!("https://{host}/{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_become_web_addresses() {
        for (remote, web) in [
            (
                "git@github.com:acme/shop.git",
                "https://github.com/acme/shop",
            ),
            (
                "https://github.com/acme/shop.git",
                "https://github.com/acme/shop",
            ),
            (
                "https://x-token:s3cr3t@github.com/acme/shop",
                "https://github.com/acme/shop",
            ),
            (
                "ssh://git@gitlab.example.com:2222/team/shop.git",
                "https://gitlab.example.com/team/shop",
            ),
        ] {
            assert_eq!(remote_to_web(remote).as_deref(), Some(web), "{remote}");
        }
        assert_eq!(remote_to_web("/srv/git/shop.git"), None);
    }
}
