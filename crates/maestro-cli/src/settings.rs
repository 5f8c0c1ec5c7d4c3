//! Flags, environment and defaults merged into one validated value before any domain
//! code runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::args::{Common, LogFormat};
use crate::exit::Failure;

/// Where things are.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) file: PathBuf,
    pub(crate) home: PathBuf,
}

impl Paths {
    pub(crate) fn store(&self) -> PathBuf {
        self.home.join("store.db")
    }

    pub(crate) fn cas(&self) -> PathBuf {
        self.home.join("cache").join("cas")
    }
}

pub(crate) fn paths(common: &Common) -> Paths {
    let file = common.file.clone();
    let home = common.home.clone().unwrap_or_else(|| match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(".maestro"),
        _ => PathBuf::from(".maestro"),
    });
    Paths { file, home }
}

/// The output style actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Human,
    Plain,
    Json,
}

pub(crate) fn output(format: LogFormat, is_tty: bool, ci: bool) -> Output {
    match format {
        LogFormat::Human => Output::Human,
        LogFormat::Plain => Output::Plain,
        LogFormat::Json => Output::Json,
        LogFormat::Auto if is_tty && !ci => Output::Human,
        LogFormat::Auto => Output::Plain,
    }
}

/// `CI=true` (or any non-empty value other than `false`/`0`).
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

pub(crate) fn duration(flag: &str, value: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(value).map_err(|e| {
        Failure::usage(
            format!("cannot read {flag} `{value}`: {e}"),
            "write durations like `10s`, `5m`, `30d`",
        )
    })
}

pub(crate) fn parallelism(flag: Option<usize>) -> Result<usize, Failure> {
    match flag {
        Some(0) => Err(Failure::usage(
            "--jobs must be at least 1",
            "e.g. `--jobs 4`",
        )),
        Some(n) if n > 1024 => Err(Failure::usage("--jobs is at most 1024", "e.g. `--jobs 4`")),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(2, std::num::NonZero::get)),
    }
}

pub(crate) fn require_file(p: &Path) -> Result<(), Failure> {
    if p.is_file() {
        return Ok(());
    }
    Err(Failure::usage(
        format!("no pipeline file at {}", p.display()),
        "run maestro in a directory with a maestro.yaml, or pass --file PATH",
    ))
}
