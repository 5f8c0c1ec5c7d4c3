//! What the engine tells its reporter. The engine never prints; the CLI renders these.

use maestro_spec::{Gate, Job, Pipeline};
use maestro_store::JobRow;

/// A progress event.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The run is recorded and about to dispatch.
    Started {
        run_id: i64,
        pipeline: &'a Pipeline,
        jobs: usize,
        /// Runs found `running` from an earlier crash and now marked interrupted.
        recovered: &'a [i64],
    },
    /// An attempt of a job started.
    JobStarted { job: &'a Job, attempt: u32 },
    /// A job reached its final state (including cache hits, skips and cancellations).
    JobFinished { job: &'a Job, row: &'a JobRow },
    /// A job failed and turned its gate red; later gates are cancelled.
    GateRed { gate: Option<Gate>, job: &'a Job },
    /// Ctrl-C or SIGTERM: everything running is being stopped.
    Interrupted,
}

/// Receives events.
pub trait Reporter {
    fn event(&mut self, event: Event<'_>);
}

/// Discards every event.
#[derive(Debug, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn event(&mut self, _: Event<'_>) {}
}
