//! The pipeline engine: the dispatcher ([`run`]), the local executor ([`exec`], the only
//! place processes start), JUnit reports ([`junit`]), repository metadata ([`git`]) and
//! the one-run-per-repository lock ([`lock`]). It reports progress through
//! [`event::Reporter`] and never prints.

pub mod event;
pub mod evidence;
pub mod exec;
pub mod git;
pub mod junit;
pub mod lock;
pub mod privileged;
pub mod repro;
pub mod run;

pub use event::{Event, Reporter, Silent};
pub use run::{Options, Summary, run};

use std::path::PathBuf;

/// Engine failures (a failing job is not one: it is a result).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] maestro_store::StoreError),
    #[error("{0}")]
    Input(String),
    #[error("cannot write Maestro's working directory {0}")]
    Home(PathBuf, #[source] std::io::Error),
}

/// Now, as Unix milliseconds.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
