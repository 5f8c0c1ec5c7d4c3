//! Signatures and provenance that other tools can check.
//!
//! - [`keys`]: ECDSA P-256 (cosign-compatible encrypted key files) and Ed25519 keys.
//! - [`dsse`]: DSSE envelopes (pre-authentication encoding, sign, verify).
//! - [`bundle`]: Sigstore bundle v0.3 JSON, keyed (public-key hint, no transparency-log
//!   entry), for blobs (`messageSignature`) and attestations (`dsseEnvelope`).
//! - [`provenance`]: in-toto Statement v1 with the SLSA Provenance v1 predicate.
//! - [`verify`]: checks a bundle against an artifact, a key and a policy, and says which
//!   part failed: the artifact, the envelope, the signature or the policy.
//! - [`evidence`]: the signature, provenance and SBOM an artifact must carry before it
//!   is deployed, checked against a set of trusted keys.

pub mod bundle;
pub mod dsse;
pub mod evidence;
pub mod keys;
pub mod provenance;
pub mod verify;

use std::io::Read;
use std::path::Path;

pub use keys::{Algorithm, PublicKey, SecretKey};

/// Signing and verification failures. Messages never contain key material or passwords.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the random number source failed: {0}")]
    Random(String),
    #[error("{0}")]
    Crypto(&'static str),
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    #[error("malformed key file: {0}")]
    KeyFormat(String),
    #[error("the key is encrypted and no password was given")]
    PasswordRequired,
    #[error("wrong password for the encrypted key (or the key file is damaged)")]
    WrongPassword,
    #[error("Ed25519 signs the whole message: this operation needs the message, not its digest")]
    NeedsMessage,
    #[error("signature: does not verify with the given key")]
    BadSignature,
    #[error("artifact: {0}")]
    Artifact(String),
    #[error("bundle: {0}")]
    Bundle(String),
    #[error("envelope: {0}")]
    Envelope(String),
    #[error("attestation: {0}")]
    Statement(String),
    #[error("policy: {0}")]
    Policy(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl SignError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> SignError {
        SignError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// sha256 of a file, streamed; returns the raw digest and the size.
///
/// # Errors
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<([u8; 32], u64), SignError> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|e| SignError::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| SignError::io(path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().into(), size))
}

/// Reads a file of at most `limit` bytes.
///
/// # Errors
/// When it cannot be read or is larger than `limit`.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, SignError> {
    let file = std::fs::File::open(path).map_err(|e| SignError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SignError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(SignError::io(
            path,
            std::io::Error::other(format!("larger than the {limit}-byte limit")),
        ));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced,
/// then renamed over `path`. `mode` is the Unix permission of the result (0o600 for
/// private keys). Missing parent directories are created.
///
/// # Errors
/// When the directory is not writable.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| SignError::io(path, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| SignError::io(path, e))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| SignError::io(path, e))?;
    tmp.write_all(bytes).map_err(|e| SignError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| SignError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| SignError::io(path, e.error))?;
    Ok(())
}
