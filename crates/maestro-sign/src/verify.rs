//! Verification of bundles against an artifact, a key and a policy.
//!
//! Every failure names the part at fault: `artifact:` (its digest is not what was
//! signed), `bundle:` (malformed, another key), `envelope:` (malformed DSSE),
//! `signature:` (does not verify), `attestation:` (not an in-toto statement about this
//! artifact) or `policy:` (wrong builder, source or predicate).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use crate::bundle::Bundle;
use crate::dsse::IN_TOTO_PAYLOAD_TYPE;
use crate::provenance::{STATEMENT_TYPE, Statement, normalize_source};
use crate::{PublicKey, SignError};

/// The artifact being verified: its sha256 and, for Ed25519 signatures, its bytes.
#[derive(Clone, Debug)]
pub struct Artifact<'a> {
    pub name: &'a str,
    pub sha256: [u8; 32],
    pub bytes: Option<&'a [u8]>,
}

/// What an attestation must say besides being validly signed.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `runDetails.builder.id` must equal this.
    pub builder_id: Option<String>,
    /// `buildDefinition.externalParameters.source.uri` (or a resolved dependency's URI)
    /// must name this repository (compared without scheme, `.git` and `@ref`).
    pub source_uri: Option<String>,
    /// The statement's predicate type (default: SLSA provenance v1 when a builder or
    /// source is required).
    pub predicate_type: Option<String>,
}

/// A successful verification.
#[derive(Clone, Debug, Serialize)]
pub struct Verified {
    pub artifact: String,
    pub sha256: String,
    pub key_id: String,
    pub algorithm: String,
    /// Set for attestations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder_id: Option<String>,
    /// Transparency-log entries present in the bundle but not used.
    pub tlog_entries_ignored: usize,
}

fn decode(what: &str, s: &str) -> Result<Vec<u8>, SignError> {
    B64.decode(s)
        .map_err(|_| SignError::Bundle(format!("{what} is not valid base64")))
}

/// Verifies a signature bundle (`messageSignature`) over `artifact`.
///
/// # Errors
/// A [`SignError`] naming the part at fault.
pub fn verify_signature(
    bundle_json: &[u8],
    artifact: &Artifact<'_>,
    key: &PublicKey,
) -> Result<Verified, SignError> {
    let bundle = Bundle::parse(bundle_json)?;
    bundle.check_hint(key)?;
    let Some(ms) = &bundle.message_signature else {
        return Err(SignError::Bundle(
            "this is an attestation (DSSE envelope), not a signature over the artifact".into(),
        ));
    };
    if ms.message_digest.algorithm != "SHA2_256" {
        return Err(SignError::Bundle(format!(
            "messageDigest algorithm `{}` is not supported (expected SHA2_256)",
            ms.message_digest.algorithm
        )));
    }
    let signed = decode("messageDigest.digest", &ms.message_digest.digest)?;
    if signed.as_slice() != artifact.sha256 {
        return Err(SignError::Artifact(format!(
            "sha256 of {} is {}, but the bundle signs {}: the artifact changed after signing, or the bundle belongs to another artifact",
            artifact.name,
            hex::encode(artifact.sha256),
            hex::encode(&signed)
        )));
    }
    let signature = decode("messageSignature.signature", &ms.signature)?;
    match key {
        PublicKey::P256(_) => key.verify_sha256(&artifact.sha256, &signature)?,
        PublicKey::Ed25519(_) => {
            let Some(bytes) = artifact.bytes else {
                return Err(SignError::NeedsMessage);
            };
            key.verify(bytes, &signature)?;
        }
    }
    Ok(Verified {
        artifact: artifact.name.to_string(),
        sha256: hex::encode(artifact.sha256),
        key_id: key.key_id(),
        algorithm: key.algorithm().to_string(),
        predicate_type: None,
        builder_id: None,
        tlog_entries_ignored: bundle.verification_material.tlog_entries.len(),
    })
}

/// Verifies an attestation bundle (`dsseEnvelope` with an in-toto statement) about
/// `artifact` and checks `policy`. Returns the statement too.
///
/// # Errors
/// A [`SignError`] naming the part at fault.
pub fn verify_attestation(
    bundle_json: &[u8],
    artifact: &Artifact<'_>,
    key: &PublicKey,
    policy: &Policy,
) -> Result<(Verified, Statement), SignError> {
    let bundle = Bundle::parse(bundle_json)?;
    bundle.check_hint(key)?;
    let Some(envelope) = &bundle.dsse_envelope else {
        return Err(SignError::Bundle(
            "this is a signature over an artifact, not an attestation (no dsseEnvelope)".into(),
        ));
    };
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE {
        return Err(SignError::Envelope(format!(
            "payloadType is `{}`, expected `{IN_TOTO_PAYLOAD_TYPE}`",
            envelope.payload_type
        )));
    }
    let payload = envelope.verify(key)?;
    let statement: Statement = serde_json::from_slice(&payload).map_err(|e| {
        SignError::Statement(format!("the payload is not an in-toto statement: {e}"))
    })?;
    if statement.type_ != STATEMENT_TYPE {
        return Err(SignError::Statement(format!(
            "_type is `{}`, expected `{STATEMENT_TYPE}`",
            statement.type_
        )));
    }
    let want = hex::encode(artifact.sha256);
    if !statement.subject.iter().any(|s| {
        s.digest
            .get("sha256")
            .is_some_and(|d| d.eq_ignore_ascii_case(&want))
    }) {
        let subjects: Vec<String> = statement
            .subject
            .iter()
            .map(|s| {
                format!(
                    "{} sha256:{}",
                    s.name,
                    s.digest.get("sha256").map_or("-", String::as_str)
                )
            })
            .collect();
        return Err(SignError::Artifact(format!(
            "sha256 of {} is {want}, which is not a subject of the attestation (subjects: {})",
            artifact.name,
            subjects.join(", ")
        )));
    }
    let builder_id = check_policy(&statement, policy)?;
    let verified = Verified {
        artifact: artifact.name.to_string(),
        sha256: want,
        key_id: key.key_id(),
        algorithm: key.algorithm().to_string(),
        predicate_type: Some(statement.predicate_type.clone()),
        builder_id,
        tlog_entries_ignored: bundle.verification_material.tlog_entries.len(),
    };
    Ok((verified, statement))
}

fn check_policy(statement: &Statement, policy: &Policy) -> Result<Option<String>, SignError> {
    if let Some(want) = &policy.predicate_type
        && &statement.predicate_type != want
    {
        return Err(SignError::Policy(format!(
            "predicateType is `{}`, the policy requires `{want}`",
            statement.predicate_type
        )));
    }
    if policy.builder_id.is_none() && policy.source_uri.is_none() {
        let builder = statement
            .provenance()
            .ok()
            .map(|p| p.run_details.builder.id);
        return Ok(builder);
    }
    let provenance = statement.provenance().map_err(SignError::Policy)?;
    let builder = provenance.run_details.builder.id.clone();
    if let Some(want) = &policy.builder_id
        && &builder != want
    {
        return Err(SignError::Policy(format!(
            "built by `{builder}`, the policy requires builder `{want}`"
        )));
    }
    if let Some(want) = &policy.source_uri {
        let want_n = normalize_source(want);
        let mut sources: Vec<String> = Vec::new();
        if let Some(uri) = provenance
            .build_definition
            .external_parameters
            .pointer("/source/uri")
            .and_then(serde_json::Value::as_str)
        {
            sources.push(uri.to_string());
        }
        sources.extend(
            provenance
                .build_definition
                .resolved_dependencies
                .iter()
                .filter(|d| !d.uri.is_empty())
                .map(|d| d.uri.clone()),
        );
        if !sources.iter().any(|s| normalize_source(s) == want_n) {
            return Err(SignError::Policy(format!(
                "built from {}, the policy requires source `{want}`",
                if sources.is_empty() {
                    "an unnamed source".to_string()
                } else {
                    sources.join(", ")
                }
            )));
        }
    }
    Ok(Some(builder))
}
