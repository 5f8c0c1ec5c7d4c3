//! Store connections for async code (the conductor's handlers, the canary controllers). The store interface is synchronous, so each
//! use runs on tokio's blocking threads; at most `max` connections exist (PostgreSQL's
//! connection limit is shared by every replica), idle ones are reused, and one that
//! failed is dropped rather than reused.

use std::sync::{Arc, Mutex};

use crate::{Store, StoreError};
use tokio::sync::Semaphore;

/// A bounded set of store connections to one location.
#[derive(Debug)]
pub struct StorePool {
    location: String,
    idle: Mutex<Vec<Box<dyn Store>>>,
    permits: Semaphore,
}

impl StorePool {
    /// Opens one connection now (so a bad location fails at start, not at the first
    /// request) and keeps it.
    ///
    /// # Errors
    /// As [`maestro_store::open`].
    pub fn open(location: &str, max: usize) -> Result<Arc<StorePool>, StoreError> {
        let first = crate::open(location)?;
        Ok(Arc::new(StorePool {
            location: location.to_owned(),
            idle: Mutex::new(vec![first]),
            permits: Semaphore::new(max),
        }))
    }

    /// Runs `f` with a connection on a blocking thread.
    ///
    /// # Errors
    /// What `f` returns, or a failure to open a connection.
    pub async fn with<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Connect("the store pool is closed".to_owned()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let taken = pool.idle.lock().ok().and_then(|mut v| v.pop());
            let mut store = match taken {
                Some(s) => s,
                None => crate::open(&pool.location)?,
            };
            let out = f(store.as_mut());
            match &out {
                Ok(_) => {
                    if let Ok(mut idle) = pool.idle.lock() {
                        idle.push(store);
                    }
                }
                // The connection died (a server restart, backends terminated): the idle
                // ones were opened before the same event, so none is handed out again —
                // the next calls open fresh connections instead of failing one by one.
                Err(e) if e.is_connection() => {
                    let stale = pool
                        .idle
                        .lock()
                        .map(|mut v| std::mem::take(&mut *v))
                        .unwrap_or_default();
                    drop(stale);
                    drop(store);
                }
                Err(_) => drop(store),
            }
            out
        })
        .await
        .map_err(|e| StoreError::Connect(format!("a store task failed: {e}")))?
    }
}

impl Drop for StorePool {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        close_off_runtime(idle);
    }
}

/// Drops `value` where a blocking close is allowed. A PostgreSQL connection closes by
/// running its own small runtime, which tokio forbids inside a runtime's thread; the last
/// handler to let go of a connection may be on one, so it is closed on a thread of its own.
pub fn close_off_runtime<T: Send + 'static>(value: T) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let closing = std::thread::spawn(move || drop(value));
        let _ = closing.join();
    } else {
        drop(value);
    }
}
