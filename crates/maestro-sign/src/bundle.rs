//! Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`), keyed.
//!
//! A keyed bundle names its key with a public-key hint and carries no transparency-log
//! entry: it verifies offline with the public key alone. Maestro writes v0.3 and reads
//! the older media types too. Certificate-based (keyless) bundles are recognised and
//! refused with a clear message: they need Fulcio and Rekor trust roots.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::dsse::Envelope;
use crate::{PublicKey, SecretKey, SignError};

/// The media type Maestro writes.
pub const MEDIA_TYPE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Media types Maestro reads.
pub const ACCEPTED_MEDIA_TYPES: [&str; 4] = [
    MEDIA_TYPE_V03,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];
/// Largest bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 16 * 1024 * 1024;

/// A Sigstore bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    #[serde(alias = "media_type")]
    pub media_type: String,
    #[serde(alias = "verification_material")]
    pub verification_material: VerificationMaterial,
    #[serde(
        alias = "message_signature",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub message_signature: Option<MessageSignature>,
    #[serde(
        alias = "dsse_envelope",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dsse_envelope: Option<Envelope>,
}

/// What identifies the signer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationMaterial {
    #[serde(alias = "public_key", default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKeyIdentifier>,
    #[serde(
        alias = "x509_certificate_chain",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<serde_json::Value>,
    /// Transparency-log entries: written empty; read but not relied on (keyed offline
    /// verification does not need them).
    #[serde(alias = "tlog_entries", default)]
    pub tlog_entries: Vec<serde_json::Value>,
    #[serde(
        alias = "timestamp_verification_data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timestamp_verification_data: Option<serde_json::Value>,
}

/// An out-of-band key named by a hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyIdentifier {
    #[serde(default)]
    pub hint: String,
}

/// A signature over an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageSignature {
    #[serde(alias = "message_digest")]
    pub message_digest: HashOutput,
    pub signature: String,
}

/// A digest and its algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashOutput {
    pub algorithm: String,
    pub digest: String,
}

impl Bundle {
    fn keyed(key: &PublicKey) -> VerificationMaterial {
        VerificationMaterial {
            public_key: Some(PublicKeyIdentifier { hint: key.hint() }),
            x509_certificate_chain: None,
            certificate: None,
            tlog_entries: Vec::new(),
            timestamp_verification_data: None,
        }
    }

    /// A bundle with a signature over an artifact whose sha256 is `digest`. `message` is
    /// the artifact itself, needed for Ed25519 keys (ECDSA signs the digest).
    ///
    /// # Errors
    /// When signing fails, or an Ed25519 key is given no message.
    pub fn sign_artifact(
        key: &SecretKey,
        digest: &[u8; 32],
        message: Option<&[u8]>,
    ) -> Result<Bundle, SignError> {
        let signature = match (key, message) {
            (SecretKey::P256(_), _) => key.sign_sha256(digest)?,
            (SecretKey::Ed25519(_), Some(message)) => key.sign(message)?,
            (SecretKey::Ed25519(_), None) => return Err(SignError::NeedsMessage),
        };
        Ok(Bundle {
            media_type: MEDIA_TYPE_V03.to_string(),
            verification_material: Bundle::keyed(&key.public()),
            message_signature: Some(MessageSignature {
                message_digest: HashOutput {
                    algorithm: "SHA2_256".to_string(),
                    digest: B64.encode(digest),
                },
                signature: B64.encode(signature),
            }),
            dsse_envelope: None,
        })
    }

    /// A bundle holding a signed DSSE envelope.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign_envelope(
        key: &SecretKey,
        payload_type: &str,
        payload: &[u8],
    ) -> Result<Bundle, SignError> {
        Ok(Bundle {
            media_type: MEDIA_TYPE_V03.to_string(),
            verification_material: Bundle::keyed(&key.public()),
            message_signature: None,
            dsse_envelope: Some(Envelope::sign(payload_type, payload, key)?),
        })
    }

    /// Pretty JSON with a trailing newline.
    #[must_use]
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses and checks the structure: a known media type, a keyed verification
    /// material, and exactly one of a message signature or an envelope.
    ///
    /// # Errors
    /// [`SignError::Bundle`] naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, SignError> {
        let bundle: Bundle = serde_json::from_slice(bytes)
            .map_err(|e| SignError::Bundle(format!("not a valid Sigstore bundle: {e}")))?;
        if !ACCEPTED_MEDIA_TYPES.contains(&bundle.media_type.as_str()) {
            return Err(SignError::Bundle(format!(
                "unsupported mediaType `{}` (expected `{MEDIA_TYPE_V03}`)",
                bundle.media_type
            )));
        }
        let vm = &bundle.verification_material;
        if vm.public_key.is_none() {
            let what = if vm.x509_certificate_chain.is_some() || vm.certificate.is_some() {
                "it is certificate-based (keyless); verifying it needs Fulcio and Rekor trust roots, which offline keyed verification does not use"
            } else {
                "its verificationMaterial has no publicKey"
            };
            return Err(SignError::Bundle(format!("not a keyed bundle: {what}")));
        }
        match (&bundle.message_signature, &bundle.dsse_envelope) {
            (Some(_), None) | (None, Some(_)) => Ok(bundle),
            (None, None) => Err(SignError::Bundle(
                "it has neither a messageSignature nor a dsseEnvelope".into(),
            )),
            (Some(_), Some(_)) => Err(SignError::Bundle(
                "it has both a messageSignature and a dsseEnvelope".into(),
            )),
        }
    }

    /// Checks that the bundle's key hint names `key` (an empty hint names no key).
    ///
    /// # Errors
    /// [`SignError::Bundle`] when it names another key.
    pub fn check_hint(&self, key: &PublicKey) -> Result<(), SignError> {
        let hint = self
            .verification_material
            .public_key
            .as_ref()
            .map_or("", |k| k.hint.as_str());
        if hint.is_empty() || hint == key.hint() {
            Ok(())
        } else {
            Err(SignError::Bundle(format!(
                "signed by the key with hint `{hint}`, not the given key (`{}`)",
                key.hint()
            )))
        }
    }
}
