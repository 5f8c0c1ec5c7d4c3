//! Command-line arguments (clap derive). No logic here: `settings` validates and merges.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "maestro",
    version,
    about = "Maestro Conductor: from pull request to production, the same way every time"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    /// The pipeline file.
    #[arg(long, short = 'f', default_value = "maestro.yaml", global = true)]
    pub file: PathBuf,
    /// Maestro's working directory (store, cache, logs). Default: `.maestro/` beside the
    /// pipeline file.
    #[arg(long, env = "MAESTRO_HOME", global = true)]
    pub home: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Live progress on a terminal, plain lines otherwise (and when CI=true).
    Auto,
    /// Live progress with colours.
    Human,
    /// One line per finished job.
    Plain,
    /// One JSON object per event.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the pipeline: gates in order, cached where nothing changed.
    Run(RunArgs),
    /// Check maestro.yaml and the modules it uses; print every problem.
    Validate {
        #[command(flatten)]
        common: Common,
        /// Machine-readable diagnostics.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of maestro.yaml (or of module files).
    Schema {
        /// The schema of module files instead.
        #[arg(long)]
        module: bool,
    },
    /// Past runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// The content-addressed cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Only these jobs (and what they need).
    pub jobs: Vec<String>,
    /// Jobs running at once. Default: the number of cores.
    #[arg(long = "jobs", short = 'j', value_name = "N")]
    pub parallelism: Option<usize>,
    /// Run every job; ignore cache entries (results are still stored).
    #[arg(long)]
    pub no_cache: bool,
    /// Time between SIGTERM and SIGKILL when a job is cancelled or times out.
    #[arg(long, default_value = "10s")]
    pub grace: String,
    /// Output style.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Write a Markdown summary (for PR comments). `$GITHUB_STEP_SUMMARY` is appended to
    /// as well when set.
    #[arg(long)]
    pub summary_md: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// The newest runs.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run: gates, jobs, cache hits, durations, and the failing job's log tail.
    Show {
        #[command(flatten)]
        common: Common,
        /// Run id (default: the latest).
        id: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// Entries, size and hit rate.
    Stats {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        json: bool,
    },
    /// Delete entries unused for longer than --max-age, and blobs nothing references.
    Gc {
        #[command(flatten)]
        common: Common,
        /// e.g. `30d`, `12h`.
        #[arg(long, default_value = "30d")]
        max_age: String,
    },
    /// Why a job hit or missed the cache in its latest run: which ingredient changed.
    Explain {
        #[command(flatten)]
        common: Common,
        job: String,
        #[arg(long)]
        json: bool,
    },
}
