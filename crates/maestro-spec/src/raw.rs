//! The file format of `maestro.yaml` and module files, as read (phase one). These types
//! keep source positions and generate the published JSON Schema; [`crate::validate`]
//! turns them into a [`crate::Pipeline`] that cannot be invalid.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::diag::Pos;

/// A value with the position it was read from (no position when read from JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub pos: Option<Pos>,
}

impl<T> At<T> {
    pub fn new(value: T) -> At<T> {
        At { value, pos: None }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(At {
            pos: Pos::from_location(&s.referenced),
            value: s.value,
        })
    }
}

impl<T: JsonSchema> JsonSchema for At<T> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
}

/// A mapping whose keys keep their positions and their order (jobs, module parameters).
#[derive(Clone, Debug)]
pub struct OrderedMap<V>(pub Vec<(At<String>, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<At<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(OrderedMap(entries))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<V>();
        json_schema!({
            "type": "object",
            "additionalProperties": value,
        })
    }
}

/// `maestro.yaml`: a pipeline.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "maestro.yaml", rename = "Pipeline")]
pub struct RawPipeline {
    /// Format version of this file. Must be `1`.
    pub version: At<u32>,
    /// Name of the pipeline (defaults to the directory name).
    #[serde(default)]
    pub name: Option<String>,
    /// Labels of the service for policies (e.g. `critical`): `maestro policy eval
    /// --pipeline` shows them to Rego as `input.tags`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Environment variables set for every job. They are part of every job's cache key.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Host environment variables passed through to jobs (not part of the cache key).
    /// Replaces the default list: PATH, HOME, USER, LOGNAME, LANG, LC_ALL, LC_CTYPE, TZ,
    /// TERM, TMPDIR.
    #[serde(default)]
    pub pass_env: Option<Vec<At<String>>>,
    /// Declared toolchain versions, e.g. `python: "3.11"`. Part of the cache key of every job
    /// (or of the jobs that list them in their own `toolchains`).
    #[serde(default)]
    pub toolchains: BTreeMap<String, String>,
    /// Directory of reusable modules, relative to this file. Default: `ci/modules`.
    #[serde(default)]
    pub modules_dir: Option<At<String>>,
    /// Whom deploys trust: the keys that must have signed an artifact's signature,
    /// provenance and SBOM, and what the provenance must say.
    #[serde(default)]
    pub trust: Option<At<RawTrust>>,
    /// How `maestro release` makes versions and notes from Conventional Commits.
    #[serde(default)]
    pub release: Option<RawRelease>,
    /// The jobs, by name.
    pub jobs: OrderedMap<At<RawJob>>,
}

/// `trust:`: the keys and provenance policy a deploy verifies evidence against.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Trust")]
pub struct RawTrust {
    /// Public key files (PEM, from `maestro keys generate` or cosign), relative to this
    /// file. Evidence signed by any of them is accepted.
    #[serde(default)]
    pub keys: Vec<At<String>>,
    /// The provenance's `runDetails.builder.id` must equal this.
    #[serde(default)]
    pub builder_id: Option<String>,
    /// The provenance must name this source repository (e.g. `github.com/acme/app`).
    #[serde(default)]
    pub source_uri: Option<String>,
}

/// `release:`: versions and release notes (every field optional; the defaults are
/// git-cliff's and release-please's usual ones).
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Release")]
pub struct RawRelease {
    /// Release tags are this prefix and the version (default `v`).
    #[serde(default)]
    pub tag_prefix: Option<String>,
    /// The first release's version (default `0.1.0`).
    #[serde(default)]
    pub initial_version: Option<String>,
    /// Before 1.0.0 a breaking change bumps minor, unless this is true.
    #[serde(default)]
    pub breaking_bumps_major_before_1: Option<bool>,
    /// The notes' sections in order: a title and the commit types it collects (default:
    /// Features feat, Bug fixes fix, Performance perf, Reverts revert).
    #[serde(default)]
    pub groups: Option<Vec<RawReleaseGroup>>,
    /// Commit types that make a patch release (default `fix`, `perf`).
    #[serde(default)]
    pub patch_types: Option<Vec<String>>,
    /// PR labels that leave a change out (default `skip-changelog`, `no-changelog`).
    #[serde(default)]
    pub skip_labels: Option<Vec<String>>,
    /// PR labels that make a change breaking (default `breaking-change`, `breaking`).
    #[serde(default)]
    pub breaking_labels: Option<Vec<String>>,
    /// The repository's web address for links (default: from `origin`).
    #[serde(default)]
    pub repository_url: Option<String>,
}

/// One section of the release notes.
#[derive(Debug, Default, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "ReleaseGroup")]
pub struct RawReleaseGroup {
    pub title: String,
    pub types: Vec<String>,
}

/// One job of a pipeline, or the job template of a module.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Job")]
pub struct RawJob {
    /// What the job does, shown in summaries.
    #[serde(default)]
    pub description: Option<String>,
    /// Shell command run with `/bin/sh -c` in the job's directory.
    #[serde(default)]
    pub run: Option<At<String>>,
    /// A reusable module, `name@version`, from the modules directory.
    #[serde(default)]
    pub uses: Option<At<String>>,
    /// Parameters for the module named by `uses`.
    #[serde(default)]
    pub with: OrderedMap<At<String>>,
    /// The gate this job belongs to: lint, unit, contract, e2e-smoke, sca, sast, sbom,
    /// infra-plan, migration, package, publish or deploy. Jobs without a gate run as soon as
    /// their `needs` are met.
    #[serde(default)]
    pub gate: Option<At<String>>,
    /// Jobs that must succeed before this one starts.
    #[serde(default)]
    pub needs: Vec<At<String>>,
    /// Glob patterns (relative to the pipeline root) of the files this job reads. Their
    /// contents are part of the cache key. Files declared as any job's outputs never count.
    #[serde(default)]
    pub inputs: Vec<At<String>>,
    /// Files or directories the job produces; stored by content digest and restored on a hit.
    #[serde(default)]
    pub outputs: Vec<At<String>>,
    /// JUnit XML files the job writes; every test case result is recorded.
    #[serde(default)]
    pub reports: Vec<At<String>>,
    /// Environment variables for this job (part of the cache key).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory relative to the pipeline root.
    #[serde(default)]
    pub dir: Option<At<String>>,
    /// Time limit, e.g. `90s`, `10m`, `1h 30m`. Default: 1h.
    #[serde(default)]
    pub timeout: Option<At<String>>,
    /// Times a failed job is run again (0 to 5). Every attempt is recorded.
    #[serde(default)]
    pub retries: Option<At<u32>>,
    /// Split the job into N shards (1 to 64); each sees MAESTRO_SHARD_INDEX (1-based) and
    /// MAESTRO_SHARD_COUNT, and `${{ shard.index }}` / `${{ shard.count }}` in its fields.
    #[serde(default)]
    pub shard: Option<At<u32>>,
    /// Whether results may come from the cache. Default: true, except publish and deploy.
    #[serde(default)]
    pub cache: Option<bool>,
    /// Which declared toolchains enter this job's cache key (default: all of them).
    #[serde(default)]
    pub toolchains: Option<Vec<At<String>>>,
    /// Artifacts this job deploys or publishes. Before it starts, each must carry a
    /// signature, SLSA provenance and a signed SBOM (`ARTIFACT.sigstore.json`,
    /// `ARTIFACT.intoto.sigstore.json`, `ARTIFACT.sbom.sigstore.json`) that verify with a
    /// key of `trust.keys`; otherwise the job is refused. Required for `deploy` jobs.
    #[serde(default)]
    pub deploys: Vec<At<String>>,
}

/// A module file: `<modules-dir>/<name>/<version>.yaml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "Maestro module", rename = "Module")]
pub struct RawModule {
    /// What the module does.
    #[serde(default)]
    pub description: Option<String>,
    /// Parameters, referenced as `${{ params.NAME }}` in the job template.
    #[serde(default)]
    pub params: OrderedMap<At<RawParam>>,
    /// The job template. `uses` is not allowed here.
    pub job: At<RawJob>,
}

/// A module parameter.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(rename = "Param")]
pub struct RawParam {
    #[serde(default)]
    pub description: Option<String>,
    /// Value used when the caller does not set the parameter.
    #[serde(default)]
    pub default: Option<String>,
    /// The caller must set it.
    #[serde(default)]
    pub required: bool,
}

/// The JSON Schema of `maestro.yaml`, as published in `schema/maestro.schema.json`.
#[must_use]
pub fn pipeline_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(RawPipeline);
    schema.to_value()
}

/// The JSON Schema of module files, as published in `schema/maestro-module.schema.json`.
#[must_use]
pub fn module_schema() -> serde_json::Value {
    schemars::schema_for!(RawModule).to_value()
}
