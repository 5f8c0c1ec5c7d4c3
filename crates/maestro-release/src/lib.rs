//! Releases from a repository's history: the Conventional Commits since the last release
//! tag ([`git`]), what each one means for the release ([`changes`]), the next SemVer
//! ([`version`]), and the release notes in Markdown and JSON with the CHANGELOG update
//! ([`notes`]). [`plan`] puts them together and changes nothing.

pub mod changes;
pub mod git;
pub mod notes;
pub mod version;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use changes::{Change, Classified, Skipped};
pub use notes::Notes;

/// A problem computing a release.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    Git(String),
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    #[error("{0}")]
    Config(String),
    #[error("{path}: {message}")]
    Write { path: String, message: String },
}

/// One section of the notes: a title and the commit types it collects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub title: String,
    pub types: Vec<String>,
}

/// How versions and notes are made (git-cliff's and release-please's usual knobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReleaseConfig {
    /// Release tags are `<prefix><version>` (`v1.2.0`).
    pub tag_prefix: String,
    /// The first release's version, when no tag is there yet.
    pub initial_version: String,
    /// Before 1.0.0 a breaking change bumps the minor version (SemVer's "anything may
    /// change"), unless this is set.
    pub breaking_bumps_major_before_1: bool,
    /// The sections, in order; types in none of them are left out of the notes (they
    /// still count for nothing in the version).
    pub groups: Vec<Group>,
    /// Commit types that make a patch release.
    pub patch_types: Vec<String>,
    /// PR labels that leave a change out of the notes.
    pub skip_labels: Vec<String>,
    /// PR labels that make a change breaking.
    pub breaking_labels: Vec<String>,
    /// Web address of the repository for commit, PR and compare links (default: from
    /// `origin`).
    pub repository_url: Option<String>,
}

impl Default for ReleaseConfig {
    fn default() -> ReleaseConfig {
        let g = |title: &str, types: &[&str]| Group {
            title: title.to_owned(),
            types: types.iter().map(|t| (*t).to_owned()).collect(),
        };
        ReleaseConfig {
            tag_prefix: "v".to_owned(),
            initial_version: "0.1.0".to_owned(),
            breaking_bumps_major_before_1: false,
            groups: vec![
                g("Features", &["feat"]),
                g("Bug fixes", &["fix"]),
                g("Performance", &["perf"]),
                g("Reverts", &["revert"]),
            ],
            patch_types: vec!["fix".to_owned(), "perf".to_owned()],
            skip_labels: vec!["skip-changelog".to_owned(), "no-changelog".to_owned()],
            breaking_labels: vec!["breaking-change".to_owned(), "breaking".to_owned()],
            repository_url: None,
        }
    }
}

/// PR labels by PR number.
pub type Labels = BTreeMap<u64, Vec<String>>;

/// Labels from `gh pr list --json number,labels` (`[{"number": 12, "labels": [{"name":
/// "breaking-change"}]}]`) or a plain `{"12": ["breaking-change"]}`.
///
/// # Errors
/// [`ReleaseError::Input`] naming the file and what is wrong.
pub fn read_labels(path: &Path) -> Result<Labels, ReleaseError> {
    use std::io::Read as _;
    let bad = |message: String| ReleaseError::Input {
        file: path.display().to_string(),
        message,
    };
    let mut text = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| bad(e.to_string()))?
        .take(16 << 20)
        .read_to_end(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let mut out = Labels::new();
    match &v {
        serde_json::Value::Array(prs) => {
            for (i, pr) in prs.iter().enumerate() {
                let n = pr["number"]
                    .as_u64()
                    .ok_or_else(|| bad(format!("[{i}].number: not a PR number")))?;
                let labels = pr["labels"]
                    .as_array()
                    .ok_or_else(|| bad(format!("[{i}].labels: not a list")))?
                    .iter()
                    .map(|l| l["name"].as_str().or(l.as_str()).map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(format!("[{i}].labels: a label without a name")))?;
                out.insert(n, labels);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, labels) in map {
                let n: u64 = k
                    .trim_start_matches('#')
                    .parse()
                    .map_err(|_| bad(format!("`{k}`: not a PR number")))?;
                let labels = labels
                    .as_array()
                    .and_then(|a| a.iter().map(|l| l.as_str().map(str::to_owned)).collect())
                    .ok_or_else(|| bad(format!("`{k}`: not a list of label names")))?;
                out.insert(n, labels);
            }
        }
        _ => return Err(bad("neither a list of PRs nor an object".to_owned())),
    }
    Ok(out)
}

/// What a release would be.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The next version; `None` when nothing since the last release makes one.
    pub version: Option<semver::Version>,
    pub tag: Option<String>,
    /// The last stable release tag it is computed from.
    pub previous: Option<String>,
    pub head: String,
    pub notes: Notes,
}

/// The release `rev` would be (nothing is changed): commits since the last stable release
/// tag reachable from it, classified, the next version (`pre`: a pre-release `1.3.0-rc.N`),
/// and the notes dated `date` (`YYYY-MM-DD`).
///
/// # Errors
/// Git failures; a bad `initial_version`.
pub fn plan(
    repo: &Path,
    rev: &str,
    config: &ReleaseConfig,
    labels: &Labels,
    pre: Option<&str>,
    date: &str,
) -> Result<Plan, ReleaseError> {
    let head = git::resolve(repo, rev)?;
    let tags = git::tags(repo, &head, &config.tag_prefix)?;
    let last_stable = tags.iter().find(|t| t.version.pre.is_empty());
    let raw = git::commits(repo, last_stable.map(|t| t.name.as_str()), &head)?;
    let classified = changes::classify(&raw, config, labels);
    let version = version::next(
        last_stable.map(|t| &t.version),
        &tags,
        &classified,
        config,
        pre,
    )?;
    let url = config.repository_url.clone().or_else(|| git::web_url(repo));
    let tag = version
        .as_ref()
        .map(|v| format!("{}{v}", config.tag_prefix));
    let notes = notes::Notes::new(
        &classified,
        config,
        version.as_ref(),
        last_stable.map(|t| t.name.clone()),
        tag.clone(),
        date,
        url.as_deref(),
    );
    Ok(Plan {
        version,
        tag,
        previous: last_stable.map(|t| t.name.clone()),
        head,
        notes,
    })
}
