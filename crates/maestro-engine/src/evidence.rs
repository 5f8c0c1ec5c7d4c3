//! SLSA provenance of a pipeline job, from what the run recorded: the job's command,
//! the digests of every input file and upstream output (its cache-key ingredients), the
//! source commit, and the run that built it.

use std::collections::BTreeMap;
use std::path::Path;

use maestro_cache::Ingredients;
use maestro_sign::provenance::{
    BuildDefinition, BuildMetadata, Builder, MAESTRO_BUILD_TYPE, Provenance, ResourceDescriptor,
    RunDetails,
};
use maestro_store::{JobRow, RunDetail};

/// Where the build's source came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `git+<remote>@refs/heads/<branch>`, or `git+file://<root>` without a remote.
    pub uri: String,
    pub commit: Option<String>,
}

/// The source of the repository at `root`: its `origin` remote, branch and commit.
#[must_use]
pub fn source(root: &Path, commit: Option<&str>, branch: Option<&str>) -> Source {
    let base = crate::git::origin_url(root).unwrap_or_else(|| format!("file://{}", root.display()));
    let uri = match branch {
        Some(b) => format!("git+{base}@refs/heads/{b}"),
        None => format!("git+{base}"),
    };
    Source {
        uri,
        commit: commit.map(str::to_owned),
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| String::new(),
        |t| {
            t.round(jiff::Unit::Second)
                .map_or_else(|_| t.to_string(), |t| t.to_string())
        },
    )
}

fn sha256(hex: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_owned(), hex.to_owned())])
}

/// The SLSA Provenance v1 predicate for `job` of run `detail`.
#[must_use]
pub fn job_provenance(
    detail: &RunDetail,
    job: &JobRow,
    ingredients: Option<&Ingredients>,
    source: &Source,
    builder_id: &str,
) -> Provenance {
    let mut source_param = serde_json::json!({ "uri": source.uri });
    let mut deps = Vec::new();
    if let Some(commit) = &source.commit {
        source_param["digest"] = serde_json::json!({ "gitCommit": commit });
        deps.push(ResourceDescriptor {
            name: String::new(),
            uri: source.uri.clone(),
            digest: BTreeMap::from([("gitCommit".to_owned(), commit.clone())]),
        });
    }
    let mut internal = serde_json::json!({
        "run": detail.run.id,
        "cache": job.cache,
        "cacheKey": job.cache_key,
    });
    if let Some(ing) = ingredients {
        deps.extend(ing.inputs.iter().map(|(path, digest)| ResourceDescriptor {
            name: path.clone(),
            uri: String::new(),
            digest: sha256(digest),
        }));
        deps.extend(ing.upstream.iter().map(|(up, digest)| ResourceDescriptor {
            name: format!("job:{up}"),
            uri: String::new(),
            digest: sha256(digest),
        }));
        internal["command"] = serde_json::Value::String(ing.command.clone());
        internal["dir"] = serde_json::Value::String(ing.dir.clone());
        internal["env"] = serde_json::json!(ing.env.keys().collect::<Vec<_>>());
        internal["toolchains"] = serde_json::json!(ing.toolchains);
    }
    let started = job.started_at_ms.unwrap_or(detail.run.started_at_ms);
    Provenance {
        build_definition: BuildDefinition {
            build_type: MAESTRO_BUILD_TYPE.to_owned(),
            external_parameters: serde_json::json!({
                "pipeline": detail.run.pipeline,
                "job": job.name,
                "source": source_param,
            }),
            internal_parameters: internal,
            resolved_dependencies: deps,
        },
        run_details: RunDetails {
            builder: Builder {
                id: builder_id.to_owned(),
                version: BTreeMap::from([(
                    "maestro".to_owned(),
                    env!("CARGO_PKG_VERSION").to_owned(),
                )]),
            },
            metadata: BuildMetadata {
                invocation_id: format!("maestro-run-{}/{}", detail.run.id, job.name),
                started_on: rfc3339(started),
                finished_on: rfc3339(started + job.duration_ms),
            },
            byproducts: Vec::new(),
        },
    }
}

/// What the deploy check found: one line per artifact and kind of evidence, and whether
/// everything verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployCheck {
    pub ok: bool,
    /// Verified evidence (`ok …`) and problems (`refused: …`), in order.
    pub lines: Vec<String>,
    /// The first problem, for the job's note.
    pub first_problem: Option<String>,
}

/// Verifies, before a job that `deploys` artifacts starts, that each artifact carries a
/// signature, SLSA provenance and a signed SBOM, verified with a key of `trust`. Deny by
/// default: no keys, an unreadable key or a missing artifact refuse the deploy too.
#[must_use]
pub fn check_deploys(
    root: &Path,
    trust: &maestro_spec::model::Trust,
    artifacts: &[String],
) -> DeployCheck {
    use maestro_sign::evidence::{self, Outcome};
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut keys = Vec::new();
    for k in &trust.keys {
        let loaded = maestro_sign::read_limited(&root.join(k), maestro_sign::keys::MAX_KEY_FILE)
            .and_then(|pem| maestro_sign::PublicKey::from_pem(&pem));
        match loaded {
            Ok(key) => keys.push(key),
            Err(e) => problems.push(format!("trusted key {k} (trust.keys) cannot be used: {e}")),
        }
    }
    if trust.keys.is_empty() {
        problems.push("no trusted key: set `trust.keys` in maestro.yaml".to_owned());
    }
    let policy = maestro_sign::verify::Policy {
        builder_id: trust.builder_id.clone(),
        source_uri: trust.source_uri.clone(),
        predicate_type: None,
    };
    let trust = evidence::Trust { keys, policy };
    if problems.is_empty() {
        for a in artifacts {
            let path = root.join(a);
            if !path.is_file() {
                problems.push(format!(
                    "{a}: no such file (the job deploys it: an earlier job must build it)"
                ));
                continue;
            }
            match evidence::check(&path, a, &trust) {
                Ok(report) => {
                    for e in &report.evidence {
                        if let Outcome::Verified(v) = &e.outcome {
                            lines.push(format!(
                                "ok {a}: {} verified ({} key {})",
                                e.kind,
                                v.algorithm,
                                &v.key_id[..16.min(v.key_id.len())]
                            ));
                        }
                    }
                    problems.extend(report.describe_problems());
                }
                Err(e) => problems.push(format!("{a}: cannot be read: {e}")),
            }
        }
    }
    let first_problem = problems.first().cloned();
    lines.extend(problems.iter().map(|p| format!("refused: {p}")));
    DeployCheck {
        ok: problems.is_empty(),
        lines,
        first_problem,
    }
}
