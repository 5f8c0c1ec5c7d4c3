//! Signing keys: ECDSA P-256 (cosign-compatible) and Ed25519.
//!
//! Private keys are stored the way cosign stores them: PKCS#8 DER sealed with
//! NaCl secretbox (XSalsa20-Poly1305) under a key derived by scrypt from a password, as
//! JSON, in a PEM block labelled `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign's older
//! `ENCRYPTED COSIGN PRIVATE KEY` label is read too). Public keys are SPKI `PUBLIC KEY`
//! PEM. Plain PKCS#8 `PRIVATE KEY` PEM can be imported and exported.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::SignError;

/// PEM label cosign writes since v2.
pub const ENCRYPTED_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label of cosign v1 keys (read only).
pub const LEGACY_ENCRYPTED_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
const PKCS8_LABEL: &str = "PRIVATE KEY";
const PUBLIC_LABEL: &str = "PUBLIC KEY";

/// scrypt cost written into new keys: cosign's current parameters (N = 2^16, r = 8, p = 1).
const SCRYPT_LOG_N: u8 = 16;
/// Highest scrypt cost accepted when reading a key (bounds memory and time an untrusted
/// key file can demand: 2^20 × 8 × 128 B = 1 GiB).
const SCRYPT_MAX_LOG_N: u8 = 20;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// Largest key file read (a PEM key is < 1 KiB).
pub const MAX_KEY_FILE: u64 = 64 * 1024;
/// Ed25519 signs the whole message, so artifacts signed with it are read into memory.
pub const MAX_ED25519_MESSAGE: u64 = 1 << 30;

/// Signature algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// ECDSA over NIST P-256 with SHA-256, ASN.1 DER signatures (cosign's default).
    EcdsaP256,
    /// Ed25519 (RFC 8032), 64-byte signatures over the whole message.
    Ed25519,
}

impl Algorithm {
    /// The name used on the command line and in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A private key.
pub enum SecretKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(
            f,
            "SecretKey({}, {})",
            self.algorithm(),
            self.public().key_id()
        )
    }
}

/// A public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

fn random<const N: usize>() -> Result<[u8; N], SignError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SignError::Random(e.to_string()))?;
    Ok(bytes)
}

impl SecretKey {
    /// A new random key.
    ///
    /// # Errors
    /// When the operating system's random source fails.
    pub fn generate(algorithm: Algorithm) -> Result<SecretKey, SignError> {
        loop {
            let seed = Zeroizing::new(random::<32>()?);
            match algorithm {
                Algorithm::Ed25519 => {
                    return Ok(SecretKey::Ed25519(Box::new(
                        ed25519_dalek::SigningKey::from_bytes(&seed),
                    )));
                }
                Algorithm::EcdsaP256 => {
                    // A scalar ≥ n (probability ~2^-32) is rejected; draw again.
                    if let Ok(key) = p256::ecdsa::SigningKey::from_slice(seed.as_slice()) {
                        return Ok(SecretKey::P256(key));
                    }
                }
            }
        }
    }

    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            SecretKey::P256(_) => Algorithm::EcdsaP256,
            SecretKey::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    #[must_use]
    pub fn public(&self) -> PublicKey {
        match self {
            SecretKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            SecretKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
        }
    }

    /// Signs a message: ECDSA-P256-SHA256 (DER) or Ed25519.
    ///
    /// # Errors
    /// Never for these algorithms; kept fallible for future key types.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        Ok(match self {
            SecretKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            SecretKey::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
        })
    }

    /// Signs a message given only its SHA-256 digest (ECDSA P-256 only: Ed25519 needs
    /// the message itself).
    ///
    /// # Errors
    /// [`SignError::NeedsMessage`] for Ed25519 keys.
    pub fn sign_sha256(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SignError> {
        match self {
            SecretKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash(digest)
                    .map_err(|_| SignError::Crypto("ECDSA signing failed"))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            SecretKey::Ed25519(_) => Err(SignError::NeedsMessage),
        }
    }

    /// PKCS#8 DER of the key (secret: zeroed on drop).
    ///
    /// # Errors
    /// When encoding fails.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, SignError> {
        let doc = match self {
            SecretKey::P256(k) => k.to_pkcs8_der(),
            SecretKey::Ed25519(k) => k.to_pkcs8_der(),
        }
        .map_err(|_| SignError::Crypto("PKCS#8 encoding failed"))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// Reads PKCS#8 DER of a P-256 or Ed25519 key.
    ///
    /// # Errors
    /// [`SignError::UnsupportedKey`] when it is neither.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SecretKey, SignError> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Ok(SecretKey::P256(k));
        }
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
            return Ok(SecretKey::Ed25519(Box::new(k)));
        }
        Err(SignError::UnsupportedKey(
            "the private key is neither ECDSA P-256 nor Ed25519 PKCS#8".into(),
        ))
    }

    /// The key as cosign's encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`).
    ///
    /// # Errors
    /// When the random source or encoding fails.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, SignError> {
        let plaintext = self.to_pkcs8_der()?;
        let salt = random::<32>()?;
        let nonce = random::<24>()?;
        let box_key = derive_key(password, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)?;
        let cipher = crypto_secretbox::XSalsa20Poly1305::new(box_key.as_slice().into());
        let ciphertext = cipher
            .encrypt(&nonce.into(), plaintext.as_slice())
            .map_err(|_| SignError::Crypto("secretbox sealing failed"))?;
        let sealed = Sealed {
            kdf: Kdf {
                name: "scrypt".into(),
                params: ScryptParams {
                    n: 1u64 << SCRYPT_LOG_N,
                    r: SCRYPT_R,
                    p: SCRYPT_P,
                },
                salt: B64.encode(salt),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: B64.encode(nonce),
            },
            ciphertext: B64.encode(ciphertext),
        };
        let json = serde_json::to_vec(&sealed).map_err(|_| SignError::Crypto("JSON encoding"))?;
        pem_rfc7468::encode_string(ENCRYPTED_LABEL, pem_rfc7468::LineEnding::LF, &json)
            .map_err(|_| SignError::Crypto("PEM encoding failed"))
    }

    /// The key as plain PKCS#8 PEM (`PRIVATE KEY`): unencrypted, for export to tools that
    /// cannot read cosign's format.
    ///
    /// # Errors
    /// When encoding fails.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, SignError> {
        let der = self.to_pkcs8_der()?;
        pem_rfc7468::encode_string(PKCS8_LABEL, pem_rfc7468::LineEnding::LF, &der)
            .map(Zeroizing::new)
            .map_err(|_| SignError::Crypto("PEM encoding failed"))
    }

    /// Reads a private key PEM: cosign's encrypted format (with `password`) or plain
    /// PKCS#8.
    ///
    /// # Errors
    /// A wrong password, a damaged file or an unsupported key, each with its own variant.
    pub fn from_pem(pem: &[u8], password: Option<&[u8]>) -> Result<SecretKey, SignError> {
        let (label, body) = pem_rfc7468::decode_vec(pem)
            .map_err(|e| SignError::KeyFormat(format!("not a PEM file ({e})")))?;
        let body = Zeroizing::new(body);
        match label {
            ENCRYPTED_LABEL | LEGACY_ENCRYPTED_LABEL => {
                let Some(password) = password else {
                    return Err(SignError::PasswordRequired);
                };
                let der = open_sealed(&body, password)?;
                SecretKey::from_pkcs8_der(&der)
            }
            PKCS8_LABEL => SecretKey::from_pkcs8_der(&body),
            PUBLIC_LABEL => Err(SignError::KeyFormat(
                "this is a public key; signing needs the private key".into(),
            )),
            other => Err(SignError::KeyFormat(format!(
                "unsupported PEM block `{other}`: expected `{ENCRYPTED_LABEL}` (cosign) or `{PKCS8_LABEL}` (PKCS#8)"
            ))),
        }
    }
}

fn derive_key(
    password: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, SignError> {
    let params = scrypt::Params::new(log_n, r, p)
        .map_err(|_| SignError::KeyFormat("invalid scrypt parameters".into()))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, key.as_mut_slice())
        .map_err(|_| SignError::Crypto("scrypt failed"))?;
    Ok(key)
}

fn open_sealed(json: &[u8], password: &[u8]) -> Result<Zeroizing<Vec<u8>>, SignError> {
    let sealed: Sealed = serde_json::from_slice(json)
        .map_err(|e| SignError::KeyFormat(format!("the encrypted key's JSON is malformed: {e}")))?;
    if sealed.kdf.name != "scrypt" {
        return Err(SignError::KeyFormat(format!(
            "unsupported key derivation `{}` (expected scrypt)",
            sealed.kdf.name
        )));
    }
    if sealed.cipher.name != "nacl/secretbox" {
        return Err(SignError::KeyFormat(format!(
            "unsupported cipher `{}` (expected nacl/secretbox)",
            sealed.cipher.name
        )));
    }
    let n = sealed.kdf.params.n;
    if !n.is_power_of_two() || n < 2 {
        return Err(SignError::KeyFormat(format!(
            "scrypt N = {n} is not a power of two"
        )));
    }
    let log_n = u8::try_from(n.trailing_zeros()).unwrap_or(u8::MAX);
    if log_n > SCRYPT_MAX_LOG_N || sealed.kdf.params.r != SCRYPT_R || sealed.kdf.params.p > 4 {
        return Err(SignError::KeyFormat(format!(
            "scrypt parameters N={n} r={} p={} are outside the accepted range (N ≤ 2^{SCRYPT_MAX_LOG_N}, r = 8, p ≤ 4)",
            sealed.kdf.params.r, sealed.kdf.params.p
        )));
    }
    let decode = |what: &str, s: &str| {
        B64.decode(s)
            .map_err(|_| SignError::KeyFormat(format!("the encrypted key's {what} is not base64")))
    };
    let salt = decode("salt", &sealed.kdf.salt)?;
    let nonce = decode("nonce", &sealed.cipher.nonce)?;
    let ciphertext = decode("ciphertext", &sealed.ciphertext)?;
    let nonce: [u8; 24] = nonce
        .try_into()
        .map_err(|_| SignError::KeyFormat("the secretbox nonce is not 24 bytes".into()))?;
    let box_key = derive_key(
        password,
        &salt,
        log_n,
        sealed.kdf.params.r,
        sealed.kdf.params.p,
    )?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(box_key.as_slice().into());
    cipher
        .decrypt(&nonce.into(), ciphertext.as_slice())
        .map(Zeroizing::new)
        .map_err(|_| SignError::WrongPassword)
}

/// cosign's sealed-key JSON.
#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

impl PublicKey {
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::P256(_) => Algorithm::EcdsaP256,
            PublicKey::Ed25519(_) => Algorithm::Ed25519,
        }
    }

    /// DER SubjectPublicKeyInfo.
    #[must_use]
    pub fn spki_der(&self) -> Vec<u8> {
        let doc = match self {
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::Ed25519(k) => k.to_public_key_der(),
        };
        // Encoding a valid in-memory key cannot fail.
        doc.map(|d| d.as_bytes().to_vec()).unwrap_or_default()
    }

    /// `PUBLIC KEY` PEM.
    #[must_use]
    pub fn to_pem(&self) -> String {
        pem_rfc7468::encode_string(PUBLIC_LABEL, pem_rfc7468::LineEnding::LF, &self.spki_der())
            .unwrap_or_default()
    }

    /// Reads a `PUBLIC KEY` PEM (SPKI) of a P-256 or Ed25519 key.
    ///
    /// # Errors
    /// [`SignError::KeyFormat`] or [`SignError::UnsupportedKey`].
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, SignError> {
        let (label, der) = pem_rfc7468::decode_vec(pem)
            .map_err(|e| SignError::KeyFormat(format!("not a PEM file ({e})")))?;
        if label != PUBLIC_LABEL {
            return Err(SignError::KeyFormat(format!(
                "expected a `{PUBLIC_LABEL}` PEM block, found `{label}`"
            )));
        }
        PublicKey::from_spki_der(&der)
    }

    /// Reads DER SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`SignError::UnsupportedKey`].
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, SignError> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::Ed25519(k));
        }
        Err(SignError::UnsupportedKey(
            "the public key is neither ECDSA P-256 nor Ed25519".into(),
        ))
    }

    /// sha256 of the DER SPKI, hex: the key's fingerprint in reports.
    #[must_use]
    pub fn key_id(&self) -> String {
        hex::encode(Sha256::digest(self.spki_der()))
    }

    /// The Sigstore bundle's public-key hint: base64 of sha256 of the DER SPKI (the
    /// RFC 6962 §3.2 key id that the bundle specification recommends).
    #[must_use]
    pub fn hint(&self) -> String {
        B64.encode(Sha256::digest(self.spki_der()))
    }

    /// Verifies a signature over `message`.
    ///
    /// # Errors
    /// [`SignError::BadSignature`] when the signature is malformed or does not verify.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignError> {
        match self {
            PublicKey::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| SignError::BadSignature)?;
                k.verify(message, &sig).map_err(|_| SignError::BadSignature)
            }
            PublicKey::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| SignError::BadSignature)?;
                k.verify_strict(message, &sig)
                    .map_err(|_| SignError::BadSignature)
            }
        }
    }

    /// Verifies an ECDSA signature given the message's SHA-256 digest.
    ///
    /// # Errors
    /// [`SignError::BadSignature`], or [`SignError::NeedsMessage`] for Ed25519.
    pub fn verify_sha256(&self, digest: &[u8; 32], signature: &[u8]) -> Result<(), SignError> {
        match self {
            PublicKey::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| SignError::BadSignature)?;
                k.verify_prehash(digest, &sig)
                    .map_err(|_| SignError::BadSignature)
            }
            PublicKey::Ed25519(_) => Err(SignError::NeedsMessage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_cosign_pem_and_sign() {
        for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
            let key = SecretKey::generate(alg).unwrap();
            let pem = key.to_encrypted_pem(b"hunter2").unwrap();
            assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
            let back = SecretKey::from_pem(pem.as_bytes(), Some(b"hunter2")).unwrap();
            assert_eq!(back.public(), key.public());
            assert!(matches!(
                SecretKey::from_pem(pem.as_bytes(), Some(b"hunter3")),
                Err(SignError::WrongPassword)
            ));
            let sig = back.sign(b"message").unwrap();
            key.public().verify(b"message", &sig).unwrap();
            assert!(key.public().verify(b"messagf", &sig).is_err());
            let pub_pem = key.public().to_pem();
            assert_eq!(
                PublicKey::from_pem(pub_pem.as_bytes()).unwrap(),
                key.public()
            );
            let plain = key.to_pkcs8_pem().unwrap();
            assert_eq!(
                SecretKey::from_pem(plain.as_bytes(), None)
                    .unwrap()
                    .public(),
                key.public()
            );
        }
    }

    #[test]
    fn prehash_and_message_signatures_agree_for_p256() {
        let key = SecretKey::generate(Algorithm::EcdsaP256).unwrap();
        let digest: [u8; 32] = Sha256::digest(b"artifact").into();
        let sig = key.sign_sha256(&digest).unwrap();
        key.public().verify(b"artifact", &sig).unwrap();
        let sig = key.sign(b"artifact").unwrap();
        key.public().verify_sha256(&digest, &sig).unwrap();
    }

    #[test]
    fn hostile_scrypt_parameters_are_refused_before_deriving() {
        let json = br#"{"kdf":{"name":"scrypt","params":{"N":1073741824,"r":8,"p":1},"salt":"AA=="},"cipher":{"name":"nacl/secretbox","nonce":"AA=="},"ciphertext":"AA=="}"#;
        let err = open_sealed(json, b"").unwrap_err();
        assert!(
            err.to_string().contains("outside the accepted range"),
            "{err}"
        );
    }
}
