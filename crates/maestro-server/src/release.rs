//! A release from an artifact: its evidence verified with the environment's trusted keys
//! (signature, provenance and signed SBOM — deny by default), its digest taken, and the
//! tarball unpacked into `releases/<digest prefix>` (into a temporary directory first,
//! renamed when complete; entries that would leave it — absolute paths, `..`, links — are
//! refused).

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::environments::MAX_ARTIFACT_BYTES;

/// An unpacked, verified release.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// The first 12 hex digits of the digest: the release's version label.
    pub version: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub dir: PathBuf,
}

/// Verifies and unpacks `artifact`.
///
/// # Errors
/// A message naming the problem (a missing or untrusted piece of evidence, a bad path, an
/// unsafe entry).
pub fn prepare(artifact: &Path, trust: &[PathBuf], releases: &Path) -> Result<Unpacked, String> {
    if !artifact.is_absolute() {
        return Err(format!(
            "artifact: `{}` must be an absolute path on the conductor's host",
            artifact.display()
        ));
    }
    let meta =
        std::fs::metadata(artifact).map_err(|e| format!("artifact {}: {e}", artifact.display()))?;
    if !meta.is_file() || meta.len() > MAX_ARTIFACT_BYTES {
        return Err(format!(
            "artifact {}: not a file of at most {MAX_ARTIFACT_BYTES} bytes",
            artifact.display()
        ));
    }
    let verified = verify(artifact, trust)?;
    // Read once: what is unpacked must be the bytes that were verified.
    let bytes = std::fs::read(artifact).map_err(|e| format!("artifact: {e}"))?;
    let hex = hex::encode(Sha256::digest(&bytes));
    if hex != verified {
        return Err(format!(
            "artifact {} changed while it was being verified",
            artifact.display()
        ));
    }
    let version = hex[..12].to_owned();
    let dir = releases.join(&version);
    if !dir.is_dir() {
        std::fs::create_dir_all(releases).map_err(|e| format!("{}: {e}", releases.display()))?;
        let tmp =
            tempfile::tempdir_in(releases).map_err(|e| format!("{}: {e}", releases.display()))?;
        unpack(&bytes, tmp.path())?;
        let kept = tmp.keep();
        std::fs::rename(&kept, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(Unpacked {
        version,
        digest: format!("sha256:{hex}"),
        dir,
    })
}

/// The artifact's `sha256:` digest and what was verified, when its evidence (signature,
/// provenance, signed SBOM) verifies with `trust`.
///
/// # Errors
/// What is missing or does not verify.
pub fn verified_digest(artifact: &Path, trust: &[PathBuf]) -> Result<(String, String), String> {
    if !artifact.is_absolute() {
        return Err(format!(
            "artifact: `{}` must be an absolute path on the conductor's host",
            artifact.display()
        ));
    }
    let hex = verify(artifact, trust)?;
    Ok((
        format!("sha256:{hex}"),
        format!(
            "signature, provenance and SBOM attestation verified with {} trusted key(s)",
            trust.len()
        ),
    ))
}

/// The trusted keys, loaded.
fn trust_of(trust: &[PathBuf]) -> Result<maestro_sign::evidence::Trust, String> {
    let mut keys = Vec::new();
    for k in trust {
        let key = maestro_sign::read_limited(k, maestro_sign::keys::MAX_KEY_FILE)
            .and_then(|pem| maestro_sign::PublicKey::from_pem(&pem))
            .map_err(|e| format!("trusted key {} cannot be used: {e}", k.display()))?;
        keys.push(key);
    }
    Ok(maestro_sign::evidence::Trust {
        keys,
        policy: maestro_sign::verify::Policy::default(),
    })
}

/// The conductor run the artifact's signed provenance names (`conductorRun`: the
/// `maestro run --server` run whose job attested it), once the provenance verified with
/// a trusted key; `None` when it names none.
///
/// # Errors
/// When the provenance cannot be read or does not verify.
pub fn provenance_run(artifact: &Path, trust: &[PathBuf]) -> Result<Option<i64>, String> {
    let trust = trust_of(trust)?;
    let p = maestro_sign::evidence::verified_provenance(artifact, &trust)
        .map_err(|e| format!("{}: provenance: {e}", artifact.display()))?;
    Ok(p.build_definition
        .internal_parameters
        .get("conductorRun")
        .and_then(serde_json::Value::as_i64))
}

/// The artifact's digest (hex) when its evidence verifies.
fn verify(artifact: &Path, trust: &[PathBuf]) -> Result<String, String> {
    use maestro_sign::evidence;
    let trust = trust_of(trust)?;
    let name = artifact.display().to_string();
    let report = evidence::check(artifact, &name, &trust).map_err(|e| format!("{name}: {e}"))?;
    let problems = report.describe_problems();
    if problems.is_empty() {
        Ok(report.sha256)
    } else {
        Err(format!("refused: {}", problems.join("; ")))
    }
}

fn unpack(gz: &[u8], into: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a .tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a .tar.gz: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("an entry's path: {e}"))?
            .into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "unsafe entry `{}` (absolute, or ..)",
                path.display()
            ));
        }
        let kind = entry.header().entry_type();
        let target = into.join(&path);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            std::fs::write(&target, data).map_err(|e| format!("{}: {e}", target.display()))?;
        } else if !matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Err(format!(
                "entry `{}` is a link or a device: releases hold files and directories only",
                path.display()
            ));
        }
    }
    Ok(())
}
