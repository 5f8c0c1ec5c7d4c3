//! The validated pipeline: every value here has been checked, so the engine never
//! re-validates. Built only by [`crate::validate`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::gate::Gate;
use crate::graph::Graph;

/// Host variables passed through to jobs when `pass-env` is not set.
pub const DEFAULT_PASS_ENV: [&str; 10] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR",
];

/// Upper bound of `retries`.
pub const MAX_RETRIES: u32 = 5;
/// Upper bound of `shard`.
pub const MAX_SHARDS: u32 = 64;
/// Default job time limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Upper bound of `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Index of a job in its [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub usize);

/// One shard of a sharded job (1-based index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A validated job.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: JobId,
    /// Unique name; shards are `name#index`.
    pub name: String,
    /// The name as written in the file (same as `name` unless sharded).
    pub base_name: String,
    pub description: Option<String>,
    pub run: String,
    pub gate: Option<Gate>,
    pub needs: Vec<JobId>,
    /// Glob patterns relative to the pipeline root.
    pub inputs: Vec<String>,
    /// Relative paths of files or directories.
    pub outputs: Vec<String>,
    /// Relative paths of JUnit XML reports.
    pub reports: Vec<String>,
    /// Explicit environment: pipeline `env`, then job `env`, then shard variables.
    pub env: BTreeMap<String, String>,
    /// Working directory relative to the pipeline root.
    pub dir: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub shard: Option<Shard>,
    pub cache: bool,
    /// Toolchain name → declared version, for the cache key.
    pub toolchains: BTreeMap<String, String>,
    /// `name@version` of the module the job came from.
    pub module: Option<String>,
    /// Artifacts (relative paths) whose evidence is verified before the job starts.
    pub deploys: Vec<String>,
}

/// Whom deploys trust (`trust:` in `maestro.yaml`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Public key files, relative to the pipeline root.
    pub keys: Vec<String>,
    pub builder_id: Option<String>,
    pub source_uri: Option<String>,
}

/// A validated pipeline with its sealed job graph.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub name: String,
    /// Labels for policies (`tags:`).
    pub tags: Vec<String>,
    /// Directory that holds the pipeline file; paths in jobs are relative to it.
    pub root: PathBuf,
    /// The pipeline file.
    pub file: PathBuf,
    /// Host variables passed through to jobs.
    pub pass_env: Vec<String>,
    pub trust: Trust,
    /// `release:` as written (checked for shape; `maestro release` applies it).
    pub release: Option<crate::raw::RawRelease>,
    pub graph: Graph,
}

impl Pipeline {
    /// The pipeline as a policy input: the documented shape Rego sees under
    /// `maestro policy eval --pipeline` (docs/policy.md, "The pipeline as an input").
    #[must_use]
    pub fn policy_input(&self) -> serde_json::Value {
        let jobs = self.graph.jobs();
        let mut gates: Vec<Gate> = jobs.iter().filter_map(|j| j.gate).collect();
        gates.sort();
        gates.dedup();
        let jobs: Vec<serde_json::Value> = jobs
            .iter()
            .map(|j| {
                serde_json::json!({
                    "name": j.name,
                    "gate": j.gate.map(Gate::as_str),
                    "needs": j.needs.iter().map(|n| self.graph.job(*n).name.clone()).collect::<Vec<_>>(),
                    "uses": j.module,
                    "run": j.run,
                    "inputs": j.inputs,
                    "outputs": j.outputs,
                    "deploys": j.deploys,
                    "cache": j.cache,
                    "retries": j.retries,
                    "timeout_seconds": j.timeout.as_secs(),
                    "shard": j.shard.map(|s| serde_json::json!({"index": s.index, "count": s.count})),
                })
            })
            .collect();
        serde_json::json!({
            "kind": "MaestroPipeline",
            "name": self.name,
            "file": self.file,
            "tags": self.tags,
            "gates": gates.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
            "jobs": jobs,
            "trust": {
                "keys": self.trust.keys.len(),
                "builder_id": self.trust.builder_id,
                "source_uri": self.trust.source_uri,
            },
        })
    }
}
