//! Stable exit codes (documented in docs/exit-codes.md).

use std::process::ExitCode;

/// Everything went green.
pub(crate) const OK: u8 = 0;
/// The pipeline ran and a job failed (a gate is red).
pub(crate) const PIPELINE_FAILED: u8 = 1;
/// The command line, maestro.yaml or a module is invalid: fix the input.
pub(crate) const USAGE: u8 = 2;
/// Something outside the pipeline failed: the store, the file system, a busy lock.
pub(crate) const ENVIRONMENT: u8 = 3;
/// Interrupted by Ctrl-C or SIGTERM.
pub(crate) const INTERRUPTED: u8 = 130;

/// An error with its exit code and a rendered diagnostic.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) report: miette::Report,
}

impl Failure {
    pub(crate) fn usage(msg: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            code: USAGE,
            report: miette::miette!(help = hint.into(), "{}", msg.into()),
        }
    }

    pub(crate) fn env(err: impl std::error::Error + Send + Sync + 'static, hint: &str) -> Failure {
        let mut chain = err.to_string();
        let mut src = err.source();
        while let Some(s) = src {
            chain.push_str(&format!("\n  caused by: {s}"));
            src = s.source();
        }
        Failure {
            code: ENVIRONMENT,
            report: miette::miette!(help = hint.to_owned(), "{chain}"),
        }
    }
}

#[must_use]
pub(crate) fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
