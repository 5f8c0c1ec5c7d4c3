//! DSSE (Dead Simple Signing Envelope) v1: the signature covers the pre-authentication
//! encoding of the payload type and the payload, so neither can be swapped.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::{PublicKey, SecretKey, SignError};

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// `PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`.
#[must_use]
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope (JSON form: base64 payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope {
    pub payload: String,
    #[serde(alias = "payload_type")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    pub sig: String,
    #[serde(default)]
    pub keyid: String,
}

impl Envelope {
    /// Signs `payload` with `key`; `keyid` is the key hint.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(
        payload_type: &str,
        payload: &[u8],
        key: &SecretKey,
    ) -> Result<Envelope, SignError> {
        let sig = key.sign(&pae(payload_type, payload))?;
        Ok(Envelope {
            payload: B64.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                sig: B64.encode(sig),
                keyid: key.public().hint(),
            }],
        })
    }

    /// Checks the (single) signature with `key` and returns the payload bytes.
    ///
    /// # Errors
    /// [`SignError::Envelope`] for a malformed envelope, [`SignError::BadSignature`] when
    /// the signature does not verify.
    pub fn verify(&self, key: &PublicKey) -> Result<Vec<u8>, SignError> {
        let [signature] = self.signatures.as_slice() else {
            return Err(SignError::Envelope(format!(
                "expected exactly one signature, found {}",
                self.signatures.len()
            )));
        };
        let payload = B64
            .decode(&self.payload)
            .map_err(|_| SignError::Envelope("the payload is not valid base64".into()))?;
        if !signature.keyid.is_empty() && signature.keyid != key.hint() {
            return Err(SignError::Envelope(format!(
                "the signature's keyid `{}` is not the given key (`{}`)",
                signature.keyid,
                key.hint()
            )));
        }
        let sig = B64
            .decode(&signature.sig)
            .map_err(|_| SignError::Envelope("the signature is not valid base64".into()))?;
        key.verify(&pae(&self.payload_type, &payload), &sig)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_specification_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn a_swapped_payload_type_breaks_the_signature() {
        let key = SecretKey::generate(crate::Algorithm::EcdsaP256).unwrap();
        let mut env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{}", &key).unwrap();
        assert_eq!(env.verify(&key.public()).unwrap(), b"{}");
        env.payload_type = "application/json".into();
        assert!(matches!(
            env.verify(&key.public()),
            Err(SignError::BadSignature)
        ));
    }
}
