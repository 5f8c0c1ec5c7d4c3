//! The local executor: the only place Maestro starts processes. Each attempt runs
//! `/bin/sh -c <run>` in its own process group with a scrubbed environment and its output
//! in a log file; timeouts and cancellation send SIGTERM to the whole group, then SIGKILL
//! after a grace period.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Succeeded,
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
    },
    TimedOut,
    Cancelled,
    /// The process could not be started.
    SpawnError,
}

impl Exit {
    #[must_use]
    pub const fn status(self) -> &'static str {
        match self {
            Exit::Succeeded => "succeeded",
            Exit::Failed { .. } => "failed",
            Exit::TimedOut => "timed-out",
            Exit::Cancelled => "cancelled",
            Exit::SpawnError => "error",
        }
    }
}

/// One attempt to run.
#[derive(Debug)]
pub struct Spec<'a> {
    pub command: &'a str,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: &'a Path,
    /// Written to the log before the process's output (e.g. the deploy check's result).
    pub preamble: &'a str,
    pub timeout: Duration,
    pub grace: Duration,
}

/// The result of an attempt.
#[derive(Debug)]
pub struct Outcome {
    pub exit: Exit,
    pub duration: Duration,
    pub error: Option<String>,
}

fn signal_group(pgid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pgid) {
        // ESRCH (group already gone) is expected and harmless.
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

/// Runs one attempt to completion, timeout or cancellation.
pub async fn run(spec: &Spec<'_>, mut cancel: watch::Receiver<bool>) -> Outcome {
    let started = Instant::now();
    let fail = |e: String| Outcome {
        exit: Exit::SpawnError,
        duration: started.elapsed(),
        error: Some(e),
    };
    let mut log = match File::create(spec.log) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create log {}: {e}", spec.log.display())),
    };
    if !spec.preamble.is_empty() {
        use std::io::Write as _;
        if let Err(e) = log.write_all(spec.preamble.as_bytes()) {
            return fail(format!("cannot write log {}: {e}", spec.log.display()));
        }
    }
    let log_err = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot open log {}: {e}", spec.log.display())),
    };
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(spec.command)
        .current_dir(&spec.dir)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "cannot start /bin/sh in {}: {e}",
                spec.dir.display()
            ));
        }
    };
    let pgid = child.id().unwrap_or(0);
    if *cancel.borrow() {
        signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
        return Outcome {
            exit: Exit::Cancelled,
            duration: started.elapsed(),
            error: None,
        };
    }
    let waited = tokio::select! {
        status = child.wait() => Some(status),
        () = tokio::time::sleep(spec.timeout) => None,
        _ = cancel.changed() => None,
    };
    let exit = match waited {
        Some(Ok(status)) => {
            // The job is over: whatever it left running in its group goes too.
            signal_group(pgid, Signal::SIGKILL);
            if status.success() {
                Exit::Succeeded
            } else {
                use std::os::unix::process::ExitStatusExt;
                Exit::Failed {
                    code: status.code(),
                    signal: status.signal(),
                }
            }
        }
        Some(Err(e)) => {
            signal_group(pgid, Signal::SIGKILL);
            return fail(format!("waiting for the job failed: {e}"));
        }
        None => {
            let exit = if *cancel.borrow() {
                Exit::Cancelled
            } else {
                Exit::TimedOut
            };
            signal_group(pgid, Signal::SIGTERM);
            if tokio::time::timeout(spec.grace, child.wait())
                .await
                .is_err()
            {
                signal_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            signal_group(pgid, Signal::SIGKILL);
            exit
        }
    };
    Outcome {
        exit,
        duration: started.elapsed(),
        error: None,
    }
}
