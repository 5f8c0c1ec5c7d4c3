//! in-toto Statement v1 with the SLSA Provenance v1 predicate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA Provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// The build type of a Maestro pipeline job; its parameters are documented in
/// `docs/supply-chain.md`.
pub const MAESTRO_BUILD_TYPE: &str = "https://maestro.invalid/build-types/pipeline-job/v1";
/// The default builder id of a local run; CI sets its own with `--builder-id`.
pub const DEFAULT_BUILDER_ID: &str = "https://maestro.invalid/builders/local/v1";

/// An in-toto statement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    pub predicate_type: String,
    #[serde(default)]
    pub predicate: serde_json::Value,
}

/// An artifact or dependency: a name or URI and its digests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
}

/// The SLSA Provenance v1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: serde_json::Value,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub internal_parameters: serde_json::Value,
    #[serde(default)]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    #[serde(default)]
    pub metadata: BuildMetadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildMetadata {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub invocation_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub started_on: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finished_on: String,
}

impl Statement {
    /// A statement of SLSA provenance about `subject`.
    #[must_use]
    pub fn slsa(subject: Vec<ResourceDescriptor>, provenance: &Provenance) -> Statement {
        Statement {
            type_: STATEMENT_TYPE.to_string(),
            subject,
            predicate_type: SLSA_PROVENANCE_V1.to_string(),
            predicate: serde_json::to_value(provenance).unwrap_or_default(),
        }
    }

    /// The SLSA provenance predicate, when that is what this statement carries.
    ///
    /// # Errors
    /// When the predicate type is another, or the predicate does not parse.
    pub fn provenance(&self) -> Result<Provenance, String> {
        if self.predicate_type != SLSA_PROVENANCE_V1 {
            return Err(format!(
                "predicateType is `{}`, not SLSA provenance v1 (`{SLSA_PROVENANCE_V1}`)",
                self.predicate_type
            ));
        }
        serde_json::from_value(self.predicate.clone())
            .map_err(|e| format!("the SLSA provenance predicate is malformed: {e}"))
    }
}

/// A subject: an artifact's name and sha256 (hex).
#[must_use]
pub fn subject(name: &str, sha256_hex: &str) -> ResourceDescriptor {
    ResourceDescriptor {
        name: name.to_string(),
        uri: String::new(),
        digest: BTreeMap::from([("sha256".to_string(), sha256_hex.to_string())]),
    }
}

/// Normalises a source URI for comparison: drops a `git+` prefix, the scheme, a
/// trailing `.git`, `/` and an `@ref`.
#[must_use]
pub fn normalize_source(uri: &str) -> String {
    let s = uri.trim();
    let s = s.strip_prefix("git+").unwrap_or(s);
    // `ssh://git@host/path`, `https://host/path`, or scp-like `git@host:path`.
    let rest = match s.split_once("://") {
        Some((_, rest)) => rest.to_string(),
        None => s.replacen(':', "/", 1),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let path = path.split_once('@').map_or(path, |(p, _)| p);
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{host}/{path}")
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_uris_compare_without_scheme_ref_and_suffix() {
        assert_eq!(
            normalize_source("git+https://github.com/Acme/shop.git@refs/heads/main"),
            "github.com/acme/shop"
        );
        assert_eq!(
            normalize_source("github.com/acme/shop/"),
            "github.com/acme/shop"
        );
        assert_eq!(
            normalize_source("git@github.com:acme/shop.git"),
            "github.com/acme/shop"
        );
        assert_eq!(
            normalize_source("ssh://git@github.com/acme/shop@v1"),
            "github.com/acme/shop"
        );
    }
}
