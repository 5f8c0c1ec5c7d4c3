//! Blobs stored by the sha256 of their content under `<root>/<2 hex>/<62 hex>`.
//! Writes go to a temporary file in the store and are renamed into place; a blob is
//! re-hashed before it is restored, so a corrupt blob is never used.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Blob store failures.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is missing from the cache")]
    Missing { digest: String },
    #[error("blob {digest} is corrupt (its content hashes to {actual})")]
    Corrupt { digest: String, actual: String },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CasError + 'a {
    move |source| CasError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The blob store.
#[derive(Clone, Debug)]
pub struct Cas {
    root: PathBuf,
}

/// Hashes a file's content.
///
/// # Errors
/// When the file cannot be read.
pub fn hash_file(path: &Path) -> Result<(String, i64), CasError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0i64;
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        size += i64::try_from(n).unwrap_or(0);
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

impl Cas {
    /// A store rooted at `root` (created on first write).
    #[must_use]
    pub fn new(root: PathBuf) -> Cas {
        Cas { root }
    }

    /// Where a blob lives.
    #[must_use]
    pub fn path(&self, digest: &str) -> PathBuf {
        let (a, b) = digest.split_at(2.min(digest.len()));
        self.root.join(a).join(b)
    }

    /// Whether the blob is present (not verified).
    #[must_use]
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_file()
    }

    fn tmp_in_root(&self) -> Result<tempfile::NamedTempFile, CasError> {
        fs::create_dir_all(&self.root).map_err(io_err("create", &self.root))?;
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.root)
            .map_err(io_err("create a temporary file in", &self.root))
    }

    fn commit(&self, tmp: tempfile::NamedTempFile, digest: &str) -> Result<(), CasError> {
        let dest = self.path(digest);
        if dest.is_file() {
            return Ok(()); // Same content already stored; the temporary file is dropped.
        }
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        let mut perms = tmp
            .as_file()
            .metadata()
            .map_err(io_err("stat", tmp.path()))?
            .permissions();
        perms.set_readonly(true);
        fs::set_permissions(tmp.path(), perms).map_err(io_err("chmod", tmp.path()))?;
        tmp.persist(&dest).map_err(|e| CasError::Io {
            action: "store",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Stores a file's content; returns its digest and size.
    ///
    /// # Errors
    /// When the file cannot be read or the store cannot be written.
    pub fn put_file(&self, src: &Path) -> Result<(String, i64), CasError> {
        let mut input = File::open(src).map_err(io_err("open", src))?;
        let mut tmp = self.tmp_in_root()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0i64;
        loop {
            let n = input.read(&mut buf).map_err(io_err("read", src))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .map_err(io_err("write", tmp.path()))?;
            size += i64::try_from(n).unwrap_or(0);
        }
        let digest = hex::encode(h.finalize());
        self.commit(tmp, &digest)?;
        Ok((digest, size))
    }

    /// Stores a finished, immutable file (a job's log) by hard-linking it into the store
    /// instead of copying it: no new inode, no data copied. The file becomes read-only.
    /// Falls back to a copy when linking is impossible (another file system).
    ///
    /// # Errors
    /// When the file cannot be read or the store cannot be written.
    pub fn adopt(&self, src: &Path) -> Result<(String, i64), CasError> {
        let (digest, size) = hash_file(src)?;
        let dest = self.path(&digest);
        if dest.is_file() {
            return Ok((digest, size));
        }
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        let mut perms = fs::metadata(src)
            .map_err(io_err("stat", src))?
            .permissions();
        perms.set_readonly(true);
        fs::set_permissions(src, perms).map_err(io_err("chmod", src))?;
        match fs::hard_link(src, &dest) {
            Ok(()) => Ok((digest, size)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((digest, size)),
            Err(_) => self.put_file(src),
        }
    }

    /// Stores bytes; returns the digest.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<String, CasError> {
        let digest = crate::sha256_hex(bytes);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut tmp = self.tmp_in_root()?;
        tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
        self.commit(tmp, &digest)?;
        Ok(digest)
    }

    /// Re-hashes a blob and checks it against its digest.
    ///
    /// # Errors
    /// [`CasError::Missing`] or [`CasError::Corrupt`].
    pub fn verify(&self, digest: &str) -> Result<(), CasError> {
        let p = self.path(digest);
        let actual = match hash_file(&p) {
            Ok((d, _)) => d,
            Err(CasError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(CasError::Missing {
                    digest: digest.to_owned(),
                });
            }
            Err(e) => return Err(e),
        };
        if actual != digest {
            return Err(CasError::Corrupt {
                digest: digest.to_owned(),
                actual,
            });
        }
        Ok(())
    }

    /// Writes a verified blob to `dest` atomically (temporary file beside it, then rename).
    /// A destination that already holds exactly this content is left untouched.
    ///
    /// # Errors
    /// When the blob is missing or corrupt, or `dest` cannot be written.
    pub fn restore(&self, digest: &str, dest: &Path, executable: bool) -> Result<(), CasError> {
        self.verify(digest)?;
        if let Ok((existing, _)) = hash_file(dest)
            && existing == digest
        {
            return Ok(());
        }
        let parent = dest.parent().unwrap_or_else(|| Path::new("."));
        fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".maestro-restore-")
            .tempfile_in(parent)
            .map_err(io_err("create a temporary file in", parent))?;
        let mut src = File::open(self.path(digest)).map_err(io_err("open", &self.path(digest)))?;
        io::copy(&mut src, tmp.as_file_mut()).map_err(io_err("write", dest))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if executable { 0o755 } else { 0o644 };
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", dest))?;
        }
        tmp.persist(dest).map_err(|e| CasError::Io {
            action: "restore",
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }

    /// Makes `dest` (a new path) show a blob without copying: a hard link, which also keeps
    /// the content alive if the blob is later collected. Falls back to a copy.
    ///
    /// # Errors
    /// When the blob is missing or neither a link nor a copy works.
    pub fn link(&self, digest: &str, dest: &Path) -> Result<(), CasError> {
        let src = self.path(digest);
        match fs::hard_link(&src, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CasError::Missing {
                digest: digest.to_owned(),
            }),
            Err(_) => {
                let _ = fs::remove_file(dest);
                fs::copy(&src, dest).map_err(io_err("copy", dest))?;
                Ok(())
            }
        }
    }

    /// Deletes every blob not in `keep`; returns how many blobs and bytes were removed.
    ///
    /// # Errors
    /// When the store cannot be listed.
    pub fn sweep(&self, keep: &std::collections::HashSet<String>) -> Result<(u64, u64), CasError> {
        let mut removed = (0u64, 0u64);
        let Ok(top) = fs::read_dir(&self.root) else {
            return Ok(removed);
        };
        for shard in top.filter_map(Result::ok) {
            let name = shard.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // A temporary file left by a crashed writer.
                let _ = fs::remove_file(shard.path());
                continue;
            }
            let Ok(entries) = fs::read_dir(shard.path()) else {
                continue;
            };
            for e in entries.filter_map(Result::ok) {
                let digest = format!("{name}{}", e.file_name().to_string_lossy());
                if !keep.contains(&digest) {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    if fs::remove_file(e.path()).is_ok() {
                        removed.0 += 1;
                        removed.1 += size;
                    }
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_restore_and_detect_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cas = Cas::new(dir.path().join("cas"));
        let src = dir.path().join("a.txt");
        fs::write(&src, b"hello").expect("write");
        let (digest, size) = cas.put_file(&src).expect("put");
        assert_eq!(size, 5);
        assert_eq!(digest, crate::sha256_hex(b"hello"));
        let out = dir.path().join("out/a.txt");
        cas.restore(&digest, &out, false).expect("restore");
        assert_eq!(fs::read(&out).expect("read"), b"hello");

        // Corrupt the stored blob: restore must refuse it.
        let blob = cas.path(&digest);
        let mut perms = fs::metadata(&blob).expect("meta").permissions();
        #[expect(
            clippy::permissions_set_readonly_false,
            reason = "test corrupts a blob"
        )]
        perms.set_readonly(false);
        fs::set_permissions(&blob, perms).expect("chmod");
        fs::write(&blob, b"hellO").expect("corrupt");
        fs::remove_file(&out).expect("rm");
        let err = cas.restore(&digest, &out, false).expect_err("corrupt");
        assert!(matches!(err, CasError::Corrupt { .. }), "{err}");
        assert!(!out.exists(), "nothing is written from a corrupt blob");
    }

    #[test]
    fn adopt_links_without_copying() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let cas = Cas::new(dir.path().join("cas"));
        let log = dir.path().join("job.log");
        fs::write(&log, b"output").expect("write");
        let (digest, _) = cas.adopt(&log).expect("adopt");
        let a = fs::metadata(&log).expect("log");
        let b = fs::metadata(cas.path(&digest)).expect("blob");
        assert_eq!(a.ino(), b.ino(), "same inode: nothing was copied");
        assert!(a.permissions().readonly());
        cas.verify(&digest).expect("verifies");
    }

    #[test]
    fn sweep_keeps_referenced_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cas = Cas::new(dir.path().join("cas"));
        let a = cas.put_bytes(b"a").expect("a");
        let b = cas.put_bytes(b"b").expect("b");
        let keep = std::iter::once(a.clone()).collect();
        assert_eq!(cas.sweep(&keep).expect("sweep").0, 1);
        assert!(cas.contains(&a) && !cas.contains(&b));
    }
}
