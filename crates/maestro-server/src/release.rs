//! A release from an artifact: its evidence verified with the environment's trusted keys
//! (signature, provenance and signed SBOM — deny by default), its digest taken, and the
//! tarball unpacked into `releases/<digest prefix>` (into a temporary directory first,
//! renamed when complete; entries that would leave it — absolute paths, `..`, links — are
//! refused).

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::environments::MAX_ARTIFACT_BYTES;

/// The largest file a release may hold, unpacked.
pub const MAX_ENTRY_BYTES: u64 = 512 << 20;
/// The most a release may hold, unpacked (a gzip bomb stops here).
pub const MAX_UNPACKED_BYTES: u64 = 4 << 30;
/// The most files and directories a release may hold.
pub const MAX_ENTRIES: usize = 100_000;

/// The artifact path a request names, if it lies under one of the conductor's artifact
/// roots — judged on the path's text before anything on the host is touched (a path
/// elsewhere learns nothing, not even whether it exists), then again on the real path
/// (a link out of the roots is refused). Returns the real path.
///
/// # Errors
/// Why not, naming the roots.
pub fn confine(artifact: &Path, roots: &[PathBuf]) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err(
            "artifact: this conductor reads no artifact from its host: add the directories CI writes artifacts to as `artifact_roots` in its configuration"
                .to_owned(),
        );
    }
    let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    let outside = || {
        format!(
            "artifact: `{}` is not under the conductor's artifact roots ({}): put it there, or add its directory to `artifact_roots`",
            artifact.display(),
            shown.join(", ")
        )
    };
    if !artifact.is_absolute() {
        return Err(format!(
            "artifact: `{}` must be an absolute path on the conductor's host",
            artifact.display()
        ));
    }
    if artifact
        .components()
        .any(|c| matches!(c, Component::ParentDir))
        || !roots.iter().any(|r| artifact.starts_with(r))
    {
        return Err(outside());
    }
    let real = artifact
        .canonicalize()
        .map_err(|e| format!("artifact {}: {e}", artifact.display()))?;
    if !roots.iter().any(|r| real.starts_with(r)) {
        return Err(outside());
    }
    Ok(real)
}

/// An artifact and its three bundles copied into a temporary directory of the
/// conductor's artifact store and verified there ([`stage`]); nothing is in the store
/// until [`Staged::commit`] (dropped, it leaves nothing behind).
#[derive(Debug)]
pub struct Staged {
    tmp: tempfile::TempDir,
    name: String,
    dir: PathBuf,
    /// `sha256:<hex>` of the copy.
    pub digest: String,
    /// What was verified, for people.
    pub summary: String,
    /// The conductor run its signed provenance names (`conductorRun`: the `maestro run
    /// --server` run whose job attested it), if any.
    pub conductor_run: Option<i64>,
}

impl Staged {
    /// The staged copy (its bundles beside it).
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.tmp.path().join(&self.name)
    }

    /// Moves the copy into place, `<store>/sha256/<hex>/<file name>`: returns its path.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn commit(self) -> Result<PathBuf, String> {
        let kept = self.dir.join(&self.name);
        if kept.is_file() {
            // Kept before: the same bytes (the directory is named by their digest).
            return Ok(kept);
        }
        if let Some(parent) = self.dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let from = self.tmp.keep();
        if let Err(e) = std::fs::rename(&from, &self.dir) {
            // Kept meanwhile by another cut of the same bytes: that copy stands.
            let _ = std::fs::remove_dir_all(&from);
            if !kept.is_file() {
                return Err(format!("{}: {e}", self.dir.display()));
            }
        }
        Ok(kept)
    }
}

/// Stages an artifact for the conductor's content-addressed artifact store: the artifact
/// and its three bundles are read once, copied into a temporary directory of `store`, and
/// the copy is verified where it lies (signature, provenance, signed SBOM) — what a
/// release is cut from is the copy, whatever later happens to the path it came from.
///
/// # Errors
/// When the artifact or a bundle cannot be read, the copy does not verify, or the store
/// cannot be written.
pub fn stage(artifact: &Path, trust: &[PathBuf], store: &Path) -> Result<Staged, String> {
    use maestro_sign::evidence::Kind;
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("artifact `{}` names no file", artifact.display()))?;
    let bytes = maestro_sign::read_limited(artifact, MAX_ARTIFACT_BYTES)
        .map_err(|e| format!("artifact {}: {e}", artifact.display()))?;
    let hex = hex::encode(Sha256::digest(&bytes));
    std::fs::create_dir_all(store).map_err(|e| format!("{}: {e}", store.display()))?;
    let tmp = tempfile::tempdir_in(store).map_err(|e| format!("{}: {e}", store.display()))?;
    let copy = tmp.path().join(&name);
    maestro_sign::write_atomic(&copy, &bytes, 0o644)
        .map_err(|e| format!("{}: {e}", copy.display()))?;
    for kind in Kind::ALL {
        let from = kind.bundle_path(artifact);
        let b = maestro_sign::read_limited(&from, maestro_sign::bundle::MAX_BUNDLE_BYTES)
            .map_err(|e| format!("{}: {e}", from.display()))?;
        let to = kind.bundle_path(&copy);
        maestro_sign::write_atomic(&to, &b, 0o644).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    let keys = trust_of(trust)?;
    let digest = verify_with(&copy, &keys)?;
    if digest != hex {
        return Err(format!(
            "artifact {} changed while it was being kept",
            artifact.display()
        ));
    }
    let provenance = maestro_sign::evidence::verified_provenance(&copy, &keys)
        .map_err(|e| format!("{}: provenance: {e}", artifact.display()))?;
    Ok(Staged {
        tmp,
        name,
        dir: store.join("sha256").join(&hex),
        digest: format!("sha256:{hex}"),
        summary: format!(
            "signature, provenance and SBOM attestation verified with {} trusted key(s)",
            trust.len()
        ),
        conductor_run: provenance
            .build_definition
            .internal_parameters
            .get("conductorRun")
            .and_then(serde_json::Value::as_i64),
    })
}

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

/// The artifact's digest (hex) when its evidence verifies.
fn verify(artifact: &Path, trust: &[PathBuf]) -> Result<String, String> {
    verify_with(artifact, &trust_of(trust)?)
}

fn verify_with(artifact: &Path, trust: &maestro_sign::evidence::Trust) -> Result<String, String> {
    use maestro_sign::evidence;
    let name = artifact.display().to_string();
    let report = evidence::check(artifact, &name, trust).map_err(|e| format!("{name}: {e}"))?;
    let problems = report.describe_problems();
    if problems.is_empty() {
        Ok(report.sha256)
    } else {
        Err(format!("refused: {}", problems.join("; ")))
    }
}

fn unpack(gz: &[u8], into: &Path) -> Result<(), String> {
    unpack_limited(gz, into, MAX_ENTRY_BYTES, MAX_UNPACKED_BYTES)
}

/// Unpacks at most [`MAX_ENTRIES`] entries, each file at most `max_entry` bytes and all of
/// them at most `max_total`, whatever the headers claim (a file is read through a limit).
fn unpack_limited(gz: &[u8], into: &Path, max_entry: u64, max_total: u64) -> Result<(), String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a .tar.gz: {e}"))?;
    let mut total: u64 = 0;
    for (count, entry) in entries.enumerate() {
        if count >= MAX_ENTRIES {
            return Err(format!("the release holds more than {MAX_ENTRIES} entries"));
        }
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
            (&mut entry)
                .take(max_entry.saturating_add(1))
                .read_to_end(&mut data)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let size = data.len() as u64;
            if size > max_entry {
                return Err(format!(
                    "entry `{}` is larger than {} MiB unpacked",
                    path.display(),
                    max_entry >> 20
                ));
            }
            total = total.saturating_add(size);
            if total > max_total {
                return Err(format!(
                    "the release is larger than {} MiB unpacked",
                    max_total >> 20
                ));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A .tar.gz of `files` (path, size of zeros).
    fn tarball(files: &[(&str, usize)]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, size) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(*size as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, std::io::repeat(0).take(*size as u64))
                .expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gz")
    }

    #[test]
    fn an_artifact_outside_the_roots_is_refused_before_the_host_is_asked() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().canonicalize().expect("real").join("dist");
        std::fs::create_dir_all(&root).expect("mkdir");
        let inside = root.join("a.tar.gz");
        std::fs::write(&inside, b"x").expect("write");
        let roots = [root.clone()];
        assert_eq!(confine(&inside, &roots), Ok(inside.clone()));
        // Elsewhere: the same answer whether the file exists or not (no oracle).
        let missing = confine(Path::new("/nonexistent/a.tar.gz"), &roots).expect_err("outside");
        let present = confine(Path::new("/etc/passwd"), &roots).expect_err("outside");
        assert_eq!(
            missing.replace("/nonexistent/a.tar.gz", "X"),
            present.replace("/etc/passwd", "X")
        );
        assert!(
            present.contains("not under the conductor's artifact roots"),
            "{present}"
        );
        // `..` out of a root, and a link out of it.
        let dotdot = root.join("../../etc/passwd");
        assert!(
            confine(&dotdot, &roots)
                .expect_err("..")
                .contains("not under")
        );
        let link = root.join("link.tar.gz");
        std::os::unix::fs::symlink("/etc/passwd", &link).expect("link");
        assert!(
            confine(&link, &roots)
                .expect_err("link")
                .contains("not under")
        );
        assert!(
            confine(&inside, &[])
                .expect_err("no roots")
                .contains("artifact_roots")
        );
    }

    #[test]
    fn an_unpacked_release_is_capped_per_file_and_in_all() {
        let dir = tempfile::tempdir().expect("tmp");
        // Zeros compress ~1000:1: a small artifact that would unpack large.
        let ok = tarball(&[("app/a", 1000), ("app/b", 1000)]);
        unpack_limited(&ok, &dir.path().join("ok"), 1000, 2000).expect("within the caps");
        let big_file = tarball(&[("app/a", 1001)]);
        let err = unpack_limited(&big_file, &dir.path().join("one"), 1000, 1 << 20)
            .expect_err("one file too large");
        assert!(err.contains("`app/a` is larger"), "{err}");
        let bomb = tarball(&[("a", 800), ("b", 800), ("c", 800)]);
        let err = unpack_limited(&bomb, &dir.path().join("all"), 1000, 2000)
            .expect_err("too large in all");
        assert!(err.contains("the release is larger"), "{err}");
        assert!(bomb.len() < 200, "the bomb is small: {} bytes", bomb.len());
    }
}
