//! `maestro run --server URL`: the run is opened on the conductor before the first job,
//! each finished job is reported with the tail of its log (lines holding a secret masked),
//! and the run is closed with its status. A conductor that refuses the credential stops
//! the run before it starts (a configuration error); one that is unreachable only warns:
//! the build goes on and is recorded locally as always.

use std::sync::OnceLock;

use maestro_client::report::{Options, Reporter, log_tail};
use maestro_client::{ClientError, Conductor, Credential, OpenRun};
use maestro_engine::{Event, Reporter as EngineReporter};
use maestro_spec::Pipeline;
use maestro_store::RunStatus;

use crate::exit::{self, Failure};

/// The most of each job's log that is sent (its last lines).
const TAIL_BYTES: usize = 64 * 1024;

/// A run reported to a conductor.
pub(crate) struct Remote {
    reporter: Reporter,
    scanner: OnceLock<maestro_secrets::Scanner>,
    /// Log lines masked because a secret rule matched them.
    pub(crate) masked: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("run", self.reporter.run())
            .finish_non_exhaustive()
    }
}

/// Opens the run on the conductor `server`, if one is given.
///
/// # Errors
/// A usage failure for a bad URL or a missing credential, an environment failure when
/// the conductor refuses the run; `Ok(None)` with a warning when it is unreachable.
pub(crate) fn open(
    server: Option<&str>,
    audience: &str,
    pipeline: &Pipeline,
    args: &str,
    trace_id: Option<String>,
) -> Result<Option<Remote>, Failure> {
    let Some(server) = server.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let credential = Credential::from_env(|k| std::env::var(k).ok(), audience).map_err(|e| {
        Failure::usage(
            e.to_string(),
            "create a token on the conductor with `maestro token create --role developer --scope runs:write`",
        )
    })?;
    let mut conductor = Conductor::new(server, credential)
        .map_err(|e| Failure::usage(e.to_string(), "e.g. --server https://maestro.example.com"))?;
    let (commit, branch) = maestro_engine::git::head(&pipeline.root);
    let run = OpenRun {
        pipeline: pipeline.name.clone(),
        commit,
        branch,
        args: args.to_owned(),
        trace_id,
        key: OpenRun::new_key(),
    };
    match conductor.open_run(&run, 3) {
        Ok(opened) => {
            eprintln!("reporting to {}", opened.url);
            Ok(Some(Remote {
                reporter: Reporter::start(conductor, opened, Options::default()),
                scanner: OnceLock::new(),
                masked: 0,
            }))
        }
        Err(e @ ClientError::Refused { .. }) => Err(Failure {
            code: exit::ENVIRONMENT,
            report: miette::miette!(
                help = "check the token's role (developer, operator or admin), its scope runs:write and its tenant; `maestro token list` on the conductor shows them",
                "{e}"
            ),
        }),
        Err(e) => {
            eprintln!("warning: this run is not reported: {e}");
            Ok(None)
        }
    }
}

impl Remote {
    /// The run's id on the conductor.
    pub(crate) fn id(&self) -> i64 {
        self.reporter.run().id
    }

    /// Closes the run on the conductor; what did not arrive is a warning.
    pub(crate) fn finish(self, status: RunStatus) {
        let url = self.reporter.run().url.clone();
        if self.masked > 0 {
            eprintln!(
                "note: {} line(s) of logs, notes or test messages that looked like secrets were masked before reporting",
                self.masked
            );
        }
        match self.reporter.finish(status) {
            Ok(_) => {}
            Err((delivered, e)) => eprintln!(
                "warning: {url} has {} of this run's jobs, not all: {e}",
                delivered.jobs
            ),
        }
    }
}

impl EngineReporter for Remote {
    fn event(&mut self, event: Event<'_>) {
        let Event::JobFinished { row, .. } = event else {
            return;
        };
        let scanner = self.scanner.get_or_init(|| {
            maestro_secrets::Scanner::new(maestro_secrets::Config::default_rules())
        });
        let log = row
            .log_path
            .as_deref()
            .and_then(|p| log_tail(&row.name, std::path::Path::new(p), TAIL_BYTES))
            .map(|mut l| {
                let (text, n) = maestro_secrets::mask_lines(scanner, &l.tail);
                self.masked += n;
                l.tail = text;
                l
            });
        // Every other text of the job too: reason, note, test names and messages.
        let mut row = row.clone();
        self.masked += maestro_server::remote::mask_job(scanner, &mut row);
        self.reporter.job(row, log);
    }
}

/// A reporter that may not be there.
pub(crate) struct Maybe<'a>(pub(crate) Option<&'a mut Remote>);

impl EngineReporter for Maybe<'_> {
    fn event(&mut self, event: Event<'_>) {
        if let Some(r) = self.0.as_deref_mut() {
            r.event(event);
        }
    }
}
