//! The evidence an artifact must carry before it is deployed: a signature, SLSA
//! provenance and a signed SBOM, each in a Sigstore bundle beside the artifact, each
//! verified against a set of trusted keys.
//!
//! Bundles are found by name: `ARTIFACT.sigstore.json` (signature),
//! `ARTIFACT.intoto.sigstore.json` (provenance) and `ARTIFACT.sbom.sigstore.json` (an
//! in-toto statement whose predicate is a CycloneDX or SPDX document, as `cosign attest
//! --type cyclonedx|spdxjson` writes it).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::bundle::MAX_BUNDLE_BYTES;
use crate::keys::MAX_ED25519_MESSAGE;
use crate::provenance::{ResourceDescriptor, STATEMENT_TYPE, Statement};
use crate::verify::{Artifact, Policy, Verified, verify_attestation, verify_signature};
use crate::{Algorithm, PublicKey, SignError};

/// `predicateType` of a CycloneDX SBOM attestation (cosign `--type cyclonedx`).
pub const SBOM_CYCLONEDX: &str = "https://cyclonedx.org/bom";
/// `predicateType` of an SPDX SBOM attestation (cosign `--type spdxjson`).
pub const SBOM_SPDX: &str = "https://spdx.dev/Document";

/// One kind of evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Signature,
    Provenance,
    Sbom,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Signature, Kind::Provenance, Kind::Sbom];

    /// The suffix of its bundle's file name.
    #[must_use]
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Signature => ".sigstore.json",
            Kind::Provenance => ".intoto.sigstore.json",
            Kind::Sbom => ".sbom.sigstore.json",
        }
    }

    /// Where its bundle is expected for `artifact`.
    #[must_use]
    pub fn bundle_path(self, artifact: &Path) -> PathBuf {
        let mut s = artifact.as_os_str().to_owned();
        s.push(self.suffix());
        PathBuf::from(s)
    }

    /// How to produce it, for messages.
    #[must_use]
    pub fn how(self) -> &'static str {
        match self {
            Kind::Signature => "maestro sign ARTIFACT --key KEY",
            Kind::Provenance => "maestro attest ARTIFACT --key KEY (in the run that built it)",
            Kind::Sbom => "maestro attest ARTIFACT --sbom SBOM.json --key KEY",
        }
    }

    /// Parses `signature`, `provenance` or `sbom`.
    ///
    /// # Errors
    /// The list of valid names.
    pub fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "signature" => Ok(Kind::Signature),
            "provenance" => Ok(Kind::Provenance),
            "sbom" => Ok(Kind::Sbom),
            _ => Err(format!(
                "unknown evidence `{s}`: expected signature, provenance or sbom"
            )),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Signature => "signature",
            Kind::Provenance => "provenance",
            Kind::Sbom => "SBOM",
        })
    }
}

/// Whom to trust: keys, and what provenance must say.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    pub keys: Vec<PublicKey>,
    /// Builder and source the provenance must name (the predicate type is implied).
    pub policy: Policy,
}

/// The outcome for one kind of evidence.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    Verified(Verified),
    /// No bundle at the expected path.
    Missing,
    /// A bundle that does not verify: the message names the part at fault.
    Invalid {
        error: String,
    },
}

/// One kind of evidence for one artifact.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub kind: Kind,
    /// The bundle's path, shown relative to the artifact's name when it is the default.
    pub bundle: PathBuf,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Everything checked for one artifact.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub artifact: String,
    pub sha256: String,
    pub evidence: Vec<Evidence>,
}

impl Report {
    /// The evidence that is missing or invalid.
    pub fn problems(&self) -> impl Iterator<Item = &Evidence> {
        self.evidence
            .iter()
            .filter(|e| !matches!(e.outcome, Outcome::Verified(_)))
    }

    #[must_use]
    pub fn ok(&self) -> bool {
        self.problems().next().is_none()
    }

    /// One line per problem: what is missing or wrong, and how to fix it.
    #[must_use]
    pub fn describe_problems(&self) -> Vec<String> {
        self.problems()
            .map(|e| match &e.outcome {
                Outcome::Missing => format!(
                    "{}: no {} (expected {}; produce it with `{}`)",
                    self.artifact,
                    e.kind,
                    e.bundle.display(),
                    e.kind.how()
                ),
                Outcome::Invalid { error } => format!(
                    "{}: {} does not verify ({}): {error}",
                    self.artifact,
                    e.kind,
                    e.bundle.display()
                ),
                Outcome::Verified(_) => String::new(),
            })
            .collect()
    }
}

/// An SBOM attestation statement about `subjects`, from an SBOM document (CycloneDX or
/// SPDX JSON); the predicate is the document itself.
///
/// # Errors
/// When the document is neither a CycloneDX nor an SPDX JSON document.
pub fn sbom_statement(
    subjects: Vec<ResourceDescriptor>,
    document: serde_json::Value,
) -> Result<Statement, String> {
    let predicate_type = sbom_type(&document)?;
    Ok(Statement {
        type_: STATEMENT_TYPE.to_string(),
        subject: subjects,
        predicate_type: predicate_type.to_string(),
        predicate: document,
    })
}

fn sbom_type(document: &serde_json::Value) -> Result<&'static str, String> {
    if document
        .get("bomFormat")
        .and_then(serde_json::Value::as_str)
        == Some("CycloneDX")
    {
        if document.get("specVersion").is_none() {
            return Err("a CycloneDX document without `specVersion`".into());
        }
        Ok(SBOM_CYCLONEDX)
    } else if document
        .get("spdxVersion")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|v| v.starts_with("SPDX-"))
    {
        Ok(SBOM_SPDX)
    } else {
        Err("neither a CycloneDX (`bomFormat`) nor an SPDX (`spdxVersion`) JSON document".into())
    }
}

/// Verifies one bundle with every trusted key until one accepts it. The error reported
/// is the one from the key the bundle names (its hint), else from the first key.
fn with_keys<T>(
    keys: &[PublicKey],
    mut verify: impl FnMut(&PublicKey) -> Result<T, SignError>,
) -> Result<T, SignError> {
    let mut first: Option<SignError> = None;
    let mut named: Option<SignError> = None;
    for key in keys {
        match verify(key) {
            Ok(v) => return Ok(v),
            Err(e) => {
                let other_key = matches!(&e, SignError::Bundle(m) if m.starts_with("signed by the key with hint"));
                if !other_key && named.is_none() {
                    named = Some(e);
                } else if first.is_none() {
                    first = Some(e);
                }
            }
        }
    }
    Err(named
        .or(first)
        .unwrap_or_else(|| SignError::Bundle("no trusted key to verify with".into())))
}

/// The SLSA provenance beside the artifact at `path`, once its bundle verified with one
/// of `trust`'s keys: what it says can be believed (the run that built the artifact).
///
/// # Errors
/// When the artifact or its provenance bundle cannot be read, the bundle does not verify,
/// or it is not SLSA provenance.
pub fn verified_provenance(
    path: &Path,
    trust: &Trust,
) -> Result<crate::provenance::Provenance, SignError> {
    let (sha256, _) = crate::sha256_file(path)?;
    let bundle = crate::read_limited(&Kind::Provenance.bundle_path(path), MAX_BUNDLE_BYTES)?;
    let name = path.display().to_string();
    let artifact = Artifact {
        name: &name,
        sha256,
        bytes: None,
    };
    let (_, statement) = with_keys(&trust.keys, |k| {
        verify_attestation(&bundle, &artifact, k, &trust.policy)
    })?;
    statement.provenance().map_err(SignError::Policy)
}

/// One bundle to check: its kind, its path, and whether its absence is a problem.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub kind: Kind,
    pub bundle: PathBuf,
    pub required: bool,
}

/// Checks every kind of evidence, at the default paths, for the artifact at `path`
/// (shown as `name`): what a deploy requires.
///
/// # Errors
/// Only when the artifact itself cannot be read; every problem with evidence is in the
/// report.
pub fn check(path: &Path, name: &str, trust: &Trust) -> Result<Report, SignError> {
    let wanted: Vec<Wanted> = Kind::ALL
        .iter()
        .map(|&kind| Wanted {
            kind,
            bundle: kind.bundle_path(path),
            required: true,
        })
        .collect();
    check_bundles(path, name, trust, &wanted)
}

/// Checks the `wanted` bundles for the artifact at `path` (shown as `name`). A bundle
/// that is absent and not required is left out of the report.
///
/// # Errors
/// Only when the artifact itself cannot be read.
pub fn check_bundles(
    path: &Path,
    name: &str,
    trust: &Trust,
    wanted: &[Wanted],
) -> Result<Report, SignError> {
    let (sha256, _) = crate::sha256_file(path)?;
    let bytes = if trust
        .keys
        .iter()
        .any(|k| k.algorithm() == Algorithm::Ed25519)
    {
        Some(crate::read_limited(path, MAX_ED25519_MESSAGE)?)
    } else {
        None
    };
    let artifact = Artifact {
        name,
        sha256,
        bytes: bytes.as_deref(),
    };
    let mut evidence = Vec::new();
    for w in wanted {
        let outcome = if w.bundle.is_file() {
            match crate::read_limited(&w.bundle, MAX_BUNDLE_BYTES)
                .and_then(|b| verify_kind(w.kind, &b, &artifact, trust))
            {
                Ok(v) => Outcome::Verified(v),
                Err(e) => Outcome::Invalid {
                    error: e.to_string(),
                },
            }
        } else if w.required {
            Outcome::Missing
        } else {
            continue;
        };
        // Shown beside the artifact's name as given, not as resolved.
        let bundle = if w.bundle == w.kind.bundle_path(path) {
            PathBuf::from(format!("{name}{}", w.kind.suffix()))
        } else {
            w.bundle.clone()
        };
        evidence.push(Evidence {
            kind: w.kind,
            bundle,
            outcome,
        });
    }
    Ok(Report {
        artifact: name.to_string(),
        sha256: hex::encode(sha256),
        evidence,
    })
}

/// Checks bundles already read (`kind`, bytes) for an artifact known only by its SHA-256:
/// what an auditor does with a release's evidence bundle, which carries the bundles but not
/// the artifact. Ed25519 signatures cover the artifact's bytes, so they need `bytes`.
#[must_use]
pub fn check_digest(
    sha256: [u8; 32],
    bytes: Option<&[u8]>,
    name: &str,
    trust: &Trust,
    bundles: &[(Kind, Vec<u8>)],
) -> Report {
    let artifact = Artifact {
        name,
        sha256,
        bytes,
    };
    let evidence = Kind::ALL
        .iter()
        .map(|&kind| {
            let outcome = match bundles.iter().find(|(k, _)| *k == kind) {
                Some((_, b)) => match verify_kind(kind, b, &artifact, trust) {
                    Ok(v) => Outcome::Verified(v),
                    Err(e) => Outcome::Invalid {
                        error: e.to_string(),
                    },
                },
                None => Outcome::Missing,
            };
            Evidence {
                kind,
                bundle: PathBuf::from(format!("{name}{}", kind.suffix())),
                outcome,
            }
        })
        .collect();
    Report {
        artifact: name.to_owned(),
        sha256: hex::encode(sha256),
        evidence,
    }
}

fn verify_kind(
    kind: Kind,
    bundle: &[u8],
    artifact: &Artifact<'_>,
    trust: &Trust,
) -> Result<Verified, SignError> {
    match kind {
        Kind::Signature => with_keys(&trust.keys, |k| verify_signature(bundle, artifact, k)),
        Kind::Provenance => {
            let policy = Policy {
                predicate_type: Some(crate::provenance::SLSA_PROVENANCE_V1.to_string()),
                ..trust.policy.clone()
            };
            with_keys(&trust.keys, |k| {
                verify_attestation(bundle, artifact, k, &policy).map(|(v, _)| v)
            })
        }
        Kind::Sbom => with_keys(&trust.keys, |k| {
            let (v, statement) = verify_attestation(bundle, artifact, k, &Policy::default())?;
            match sbom_type(&statement.predicate) {
                Ok(t) if t == statement.predicate_type => Ok(v),
                Ok(t) => Err(SignError::Policy(format!(
                    "predicateType is `{}` but the predicate is a {t} document",
                    statement.predicate_type
                ))),
                Err(e) => Err(SignError::Policy(format!(
                    "predicateType `{}` is not an SBOM: {e}",
                    statement.predicate_type
                ))),
            }
        }),
    }
}
