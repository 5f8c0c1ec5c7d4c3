//! Software bills of materials from lockfiles.
//!
//! - Readers ([`cargo`], [`npm`], [`python`], [`golang`]) turn a lockfile into an
//!   [`Inventory`]: every resolved package as a [`Component`] with a purl, its hashes where
//!   the lockfile records them, its declared license where known, and its dependency edges.
//! - Writers ([`cyclonedx`], [`spdx`]) render an inventory as CycloneDX 1.6 JSON or
//!   SPDX 2.3 JSON. Output is deterministic: same lockfiles, same `SOURCE_DATE_EPOCH`,
//!   same bytes.
//!
//! Inputs come from outside: every file is read with a size limit, and every parse error
//! names the file and, where the format has lines, the line.

pub mod cargo;
pub mod cyclonedx;
pub mod golang;
pub mod import;
mod inventory;
pub mod license;
pub mod npm;
pub mod purl;
pub mod python;
pub mod spdx;

use std::path::{Path, PathBuf};

pub use inventory::{Component, Distribution, Ecosystem, Hash, HashAlg, Inventory, Scope, Subject};

/// The largest lockfile Maestro reads (the largest real npm lockfiles are ~30 MiB).
pub const MAX_LOCKFILE_BYTES: u64 = 64 << 20;

/// Why a lockfile could not become an inventory.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is over the {limit}-byte limit for lockfiles")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
}

impl SbomError {
    pub(crate) fn parse(path: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        SbomError::Parse {
            path: path.to_owned(),
            line,
            message: message.into(),
        }
    }

    /// A `toml` error, with the line computed from its byte span.
    pub(crate) fn toml(path: &Path, text: &str, err: &toml::de::Error) -> Self {
        let line = err.span().map(|s| line_of(text, s.start));
        SbomError::parse(path, line, err.message().trim().to_owned())
    }

    /// A `serde_json` error, with its line.
    pub(crate) fn json(path: &Path, err: &serde_json::Error) -> Self {
        SbomError::parse(path, Some(err.line()).filter(|l| *l > 0), err.to_string())
    }
}

/// 1-based line number of byte offset `at`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads a text file of at most [`MAX_LOCKFILE_BYTES`].
pub fn read_text(path: &Path) -> Result<String, SbomError> {
    use std::io::Read as _;
    let io = |source| SbomError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    if size > MAX_LOCKFILE_BYTES {
        return Err(SbomError::TooLarge {
            path: path.to_owned(),
            size,
            limit: MAX_LOCKFILE_BYTES,
        });
    }
    let mut text = String::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_LOCKFILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                SbomError::parse(path, None, "not UTF-8 text")
            } else {
                io(e)
            }
        })?;
    Ok(text)
}

/// The lockfile formats Maestro reads, by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockfileKind {
    Cargo,
    Npm,
    Requirements,
    Poetry,
    GoSum,
}

impl LockfileKind {
    /// The kind a file name says, if any: `Cargo.lock`, `package-lock.json`,
    /// `npm-shrinkwrap.json`, `requirements*.txt`, `poetry.lock`, `go.sum`.
    pub fn of(path: &Path) -> Option<LockfileKind> {
        let name = path.file_name()?.to_str()?;
        Some(match name {
            "Cargo.lock" => LockfileKind::Cargo,
            "package-lock.json" | "npm-shrinkwrap.json" => LockfileKind::Npm,
            "poetry.lock" => LockfileKind::Poetry,
            "go.sum" => LockfileKind::GoSum,
            n if n.starts_with("requirements") && n.ends_with(".txt") => LockfileKind::Requirements,
            _ => return None,
        })
    }

    /// Lockfile names looked for in a directory, in this order.
    pub const FILE_NAMES: [&'static str; 6] = [
        "Cargo.lock",
        "package-lock.json",
        "npm-shrinkwrap.json",
        "poetry.lock",
        "requirements.txt",
        "go.sum",
    ];
}

/// The lockfiles directly inside `dir`. A `requirements.txt` beside a `poetry.lock` is
/// usually an export of it and is left out.
pub fn discover(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = LockfileKind::FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file())
        .collect();
    if found.iter().any(|p| p.ends_with("poetry.lock")) {
        found.retain(|p| !p.ends_with("requirements.txt"));
    }
    if found.iter().any(|p| p.ends_with("npm-shrinkwrap.json")) {
        found.retain(|p| !p.ends_with("package-lock.json"));
    }
    found
}

/// Options for reading lockfiles.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Where to look up license fields of crates: `$CARGO_HOME/registry/src`.
    pub cargo_registry_src: Option<PathBuf>,
}

impl ReadOptions {
    /// Looks up the Cargo registry sources from `CARGO_HOME` (or `~/.cargo`).
    pub fn from_env() -> ReadOptions {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
        ReadOptions {
            cargo_registry_src: home
                .map(|h| h.join("registry").join("src"))
                .filter(|p| p.is_dir()),
        }
    }
}

/// Reads one lockfile, choosing the reader by file name.
pub fn read_lockfile(path: &Path, opts: &ReadOptions) -> Result<Inventory, SbomError> {
    let kind = LockfileKind::of(path).ok_or_else(|| SbomError::Unsupported {
        path: path.to_owned(),
        message: "not a lockfile Maestro reads (Cargo.lock, package-lock.json, npm-shrinkwrap.json, requirements*.txt, poetry.lock, go.sum)".into(),
    })?;
    match kind {
        LockfileKind::Cargo => cargo::read(path, opts),
        LockfileKind::Npm => npm::read(path),
        LockfileKind::Requirements => python::read_requirements(path),
        LockfileKind::Poetry => python::read_poetry(path),
        LockfileKind::GoSum => golang::read(path),
    }
}

/// Reads a lockfile, or an SBOM (CycloneDX or SPDX JSON) made by Maestro or another tool.
///
/// # Errors
/// As [`read_lockfile`] and [`import::read`].
pub fn read_input(path: &Path, opts: &ReadOptions) -> Result<Inventory, SbomError> {
    if LockfileKind::of(path).is_none()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return import::read(path);
    }
    read_lockfile(path, opts)
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    CycloneDx,
    Spdx,
}

/// What a document says about itself: when it was made, by which Maestro, and its
/// identity (a UUID derived from the content and the time, so that the same inputs at the
/// same `SOURCE_DATE_EPOCH` give the same bytes).
#[derive(Debug, Clone)]
pub struct Document {
    pub created: jiff::Timestamp,
    pub tool_version: String,
    pub uuid: String,
}

impl Document {
    pub fn new(inv: &Inventory, created: jiff::Timestamp, tool_version: &str) -> Document {
        use sha2::Digest as _;
        let created = jiff::Timestamp::from_second(created.as_second()).unwrap_or(created);
        let mut h = sha2::Sha256::new();
        h.update(created.as_second().to_be_bytes());
        h.update(tool_version.as_bytes());
        h.update(inv.subject.bom_ref().as_bytes());
        for c in &inv.components {
            h.update(c.purl.as_bytes());
            h.update([0]);
            for d in &c.depends_on {
                h.update(d.as_bytes());
                h.update([1]);
            }
            for x in &c.hashes {
                h.update(x.hex.as_bytes());
            }
        }
        let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([0; 16]);
        // RFC 9562 layout: version 5 (name-based, SHA), variant 10.
        b[6] = (b[6] & 0x0f) | 0x50;
        b[8] = (b[8] & 0x3f) | 0x80;
        let x = hex::encode(b);
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &x[0..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..32]
        );
        Document {
            created,
            tool_version: tool_version.to_owned(),
            uuid,
        }
    }

    /// RFC 3339, UTC, whole seconds.
    pub fn timestamp(&self) -> String {
        self.created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
    pub fn creation_time() -> jiff::Timestamp {
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .unwrap_or_else(jiff::Timestamp::now)
    }
}

/// Renders `inv` in `format` as pretty-printed JSON with a final newline.
pub fn render(inv: &Inventory, format: Format, doc: &Document) -> Vec<u8> {
    let value = match format {
        Format::CycloneDx => cyclonedx::render(inv, doc),
        Format::Spdx => spdx::render(inv, doc),
    };
    let mut out = serde_json::to_vec_pretty(&value).unwrap_or_default();
    out.push(b'\n');
    out
}
