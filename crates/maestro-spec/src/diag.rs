//! Diagnostics for `maestro.yaml` and module files: a stable code, the file, line and
//! column, the offending key and a hint. Rendered by the CLI through `miette`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Stable diagnostic codes. Codes are never reused; `codes_are_stable` snapshots the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Io,
    FileTooLarge,
    YamlSyntax,
    UnknownKey,
    WrongType,
    MissingKey,
    DuplicateKey,
    DuplicateJob,
    UnsupportedVersion,
    BadJobName,
    JobWithoutRun,
    RunAndUses,
    UnknownNeed,
    SelfNeed,
    DependencyCycle,
    UnknownGate,
    NeedsLaterGate,
    BadGlob,
    BadPath,
    BadDuration,
    TooManyRetries,
    BadShard,
    BadEnvName,
    BadUses,
    MissingModule,
    MissingModuleVersion,
    ModuleParam,
    BadExpression,
    UnknownToolchain,
    OutputConflict,
    DeployWithoutArtifacts,
    NoTrustedKeys,
}

impl Code {
    /// Every code, for documentation and the stability snapshot.
    pub const ALL: [Code; 32] = [
        Code::Io,
        Code::FileTooLarge,
        Code::YamlSyntax,
        Code::UnknownKey,
        Code::WrongType,
        Code::MissingKey,
        Code::DuplicateKey,
        Code::DuplicateJob,
        Code::UnsupportedVersion,
        Code::BadJobName,
        Code::JobWithoutRun,
        Code::RunAndUses,
        Code::UnknownNeed,
        Code::SelfNeed,
        Code::DependencyCycle,
        Code::UnknownGate,
        Code::NeedsLaterGate,
        Code::BadGlob,
        Code::BadPath,
        Code::BadDuration,
        Code::TooManyRetries,
        Code::BadShard,
        Code::BadEnvName,
        Code::BadUses,
        Code::MissingModule,
        Code::MissingModuleVersion,
        Code::ModuleParam,
        Code::BadExpression,
        Code::UnknownToolchain,
        Code::OutputConflict,
        Code::DeployWithoutArtifacts,
        Code::NoTrustedKeys,
    ];

    /// The kebab-case spelling shown to users (`spec::unknown-need`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::FileTooLarge => "file-too-large",
            Code::YamlSyntax => "yaml-syntax",
            Code::UnknownKey => "unknown-key",
            Code::WrongType => "wrong-type",
            Code::MissingKey => "missing-key",
            Code::DuplicateKey => "duplicate-key",
            Code::DuplicateJob => "duplicate-job",
            Code::UnsupportedVersion => "unsupported-version",
            Code::BadJobName => "bad-job-name",
            Code::JobWithoutRun => "job-without-run",
            Code::RunAndUses => "run-and-uses",
            Code::UnknownNeed => "unknown-need",
            Code::SelfNeed => "self-need",
            Code::DependencyCycle => "dependency-cycle",
            Code::UnknownGate => "unknown-gate",
            Code::NeedsLaterGate => "needs-later-gate",
            Code::BadGlob => "bad-glob",
            Code::BadPath => "bad-path",
            Code::BadDuration => "bad-duration",
            Code::TooManyRetries => "too-many-retries",
            Code::BadShard => "bad-shard",
            Code::BadEnvName => "bad-env-name",
            Code::BadUses => "bad-uses",
            Code::MissingModule => "missing-module",
            Code::MissingModuleVersion => "missing-module-version",
            Code::ModuleParam => "module-param",
            Code::BadExpression => "bad-expression",
            Code::UnknownToolchain => "unknown-toolchain",
            Code::OutputConflict => "output-conflict",
            Code::DeployWithoutArtifacts => "deploy-without-artifacts",
            Code::NoTrustedKeys => "no-trusted-keys",
        }
    }

    /// One line describing what the code means (docs/diagnostics.md is generated from it).
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Code::Io => "a spec or module file could not be read",
            Code::FileTooLarge => "a spec or module file exceeds the size limit",
            Code::YamlSyntax => "the file is not well-formed YAML",
            Code::UnknownKey => "a key that the format does not define",
            Code::WrongType => "a value of the wrong type (e.g. a string where a list is expected)",
            Code::MissingKey => "a required key is absent",
            Code::DuplicateKey => "the same key appears twice in one mapping",
            Code::DuplicateJob => "two jobs have the same name",
            Code::UnsupportedVersion => "the file's `version` is not one this Maestro reads",
            Code::BadJobName => "a job name with characters outside [A-Za-z0-9_.-]",
            Code::JobWithoutRun => "a job has neither `run` nor `uses`",
            Code::RunAndUses => "a job sets both `run` and `uses`",
            Code::UnknownNeed => "`needs` names a job that does not exist",
            Code::SelfNeed => "a job lists itself in `needs`",
            Code::DependencyCycle => "jobs depend on each other in a cycle",
            Code::UnknownGate => "`gate` is not one of the fixed gates",
            Code::NeedsLaterGate => "a job needs a job of a later gate",
            Code::BadGlob => "an `inputs` pattern is not a valid glob",
            Code::BadPath => "a path is absolute, escapes the repository or is empty",
            Code::BadDuration => "a duration such as `timeout` cannot be parsed",
            Code::TooManyRetries => "`retries` above the bound",
            Code::BadShard => "`shard` outside 1..=64",
            Code::BadEnvName => "an environment variable name that is not portable",
            Code::BadUses => "`uses` is not of the form `module@version`",
            Code::MissingModule => "`uses` names a module that is not in the modules directory",
            Code::MissingModuleVersion => "the module exists but not at that version",
            Code::ModuleParam => "a module parameter is unknown, or a required one is missing",
            Code::BadExpression => "a `${{ … }}` expression that cannot be resolved",
            Code::UnknownToolchain => "a job names a toolchain that `toolchains` does not declare",
            Code::OutputConflict => {
                "two jobs (or two shards of one job) declare the same output, or one inside the other"
            }
            Code::DeployWithoutArtifacts => {
                "a `deploy` job does not say which artifacts it deploys (`deploys`), so their evidence cannot be checked"
            }
            Code::NoTrustedKeys => {
                "a job `deploys` artifacts but `trust.keys` names no key to verify them with"
            }
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A position in a source file: 1-based line and column, and a byte span for snippets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
    pub offset: usize,
    pub len: usize,
}

impl Pos {
    /// Converts a serde-saphyr location (character based, byte offsets for string input).
    #[must_use]
    pub fn from_location(loc: &serde_saphyr::Location) -> Option<Pos> {
        if loc.line() == 0 {
            return None;
        }
        let span = loc.span();
        Some(Pos {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            column: u32::try_from(loc.column()).unwrap_or(u32::MAX),
            offset: usize::try_from(span.byte_offset().unwrap_or(0)).unwrap_or(0),
            len: usize::try_from(span.byte_len().unwrap_or(0)).unwrap_or(0),
        })
    }
}

/// A source file shared by every diagnostic that points into it.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: Arc<str>,
    named: miette::NamedSource<Arc<str>>,
}

impl Source {
    #[must_use]
    pub fn new(path: impl Into<PathBuf>, text: impl Into<Arc<str>>) -> Source {
        let path = path.into();
        let text = text.into();
        let named = miette::NamedSource::new(path.display().to_string(), Arc::clone(&text))
            .with_language("yaml");
        Source { path, text, named }
    }
}

/// A secondary label, e.g. each edge of a dependency cycle.
#[derive(Clone, Debug)]
pub struct Related {
    pub pos: Pos,
    pub label: String,
}

/// One finding about a spec file.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub source: Option<Source>,
    pub pos: Option<Pos>,
    /// Dotted path of the offending key, e.g. `jobs.unit.needs`.
    pub key: Option<String>,
    pub hint: Option<String>,
    pub related: Vec<Related>,
}

impl Diagnostic {
    #[must_use]
    pub fn new(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            source: None,
            pos: None,
            key: None,
            hint: None,
            related: Vec::new(),
        }
    }

    #[must_use]
    pub fn at(mut self, source: &Source, pos: Option<Pos>) -> Diagnostic {
        self.source = Some(source.clone());
        self.pos = pos;
        self
    }

    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Diagnostic {
        self.key = Some(key.into());
        self
    }

    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    #[must_use]
    pub fn related(mut self, pos: Pos, label: impl Into<String>) -> Diagnostic {
        self.related.push(Related {
            pos,
            label: label.into(),
        });
        self
    }

    /// The file the diagnostic points into, if any.
    #[must_use]
    pub fn file(&self) -> Option<&Path> {
        self.source.as_ref().map(|s| s.path.as_path())
    }

    /// `file:line:column` for plain output and JSON.
    #[must_use]
    pub fn location(&self) -> String {
        match (&self.source, self.pos) {
            (Some(s), Some(p)) => format!("{}:{}:{}", s.path.display(), p.line, p.column),
            (Some(s), None) => s.path.display().to_string(),
            _ => String::new(),
        }
    }

    /// Machine-readable form for `maestro validate --json`.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
            "file": self.file().map(|p| p.display().to_string()),
            "line": self.pos.map(|p| p.line),
            "column": self.pos.map(|p| p.column),
            "key": self.key,
            "hint": self.hint,
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(key) = &self.key {
            write!(f, " (at `{key}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(format!("spec::{}", self.code.as_str())))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.hint
            .as_ref()
            .map(|h| Box::new(h.as_str()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source
            .as_ref()
            .map(|s| &s.named as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let pos = self.pos?;
        self.source.as_ref()?;
        let primary = miette::LabeledSpan::new_primary_with_span(
            Some(self.code.description().to_owned()),
            (pos.offset, pos.len.max(1)),
        );
        let related = self.related.iter().map(|r| {
            miette::LabeledSpan::new_with_span(
                Some(r.label.clone()),
                (r.pos.offset, r.pos.len.max(1)),
            )
        });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// Every diagnostic found while loading a pipeline (never empty).
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in the pipeline spec", .0.len())]
pub struct SpecErrors(pub Vec<Diagnostic>);

/// Edit distance with adjacent transpositions (optimal string alignment), for "did you
/// mean" hints: `unti` is one edit from `unit`.
#[must_use]
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
#[must_use]
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit && *d < len)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let listed: Vec<String> = Code::ALL
            .iter()
            .map(|c| format!("{}: {}", c.as_str(), c.description()))
            .collect();
        insta::assert_snapshot!(listed.join("\n"));
    }

    #[test]
    fn closest_suggests_typos_only() {
        assert_eq!(closest("neeeds", ["needs", "run"]), Some("needs"));
        assert_eq!(closest("zzzzzz", ["needs", "run"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("unti", "unit"), 1);
        assert_eq!(closest("zz", ["a", "b"]), None);
        assert_eq!(closest("lnt", ["lint", "unit"]), Some("lint"));
    }
}
