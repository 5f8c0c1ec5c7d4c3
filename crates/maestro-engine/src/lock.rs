//! One run at a time per repository: an exclusive lock on `<home>/run.lock`. Holding it
//! also proves that any run still marked `running` in the store is dead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

/// Lock failures.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another maestro run is in progress in this repository{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy { pid: Option<u32> },
    #[error("cannot open the run lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RunLock {
    /// Takes the lock without waiting.
    ///
    /// # Errors
    /// [`LockError::Busy`] when another process holds it.
    pub fn acquire(home: &Path) -> Result<RunLock, LockError> {
        let path = home.join("run.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(home).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Busy {
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(RunLock { _file: file, path })
    }
}
