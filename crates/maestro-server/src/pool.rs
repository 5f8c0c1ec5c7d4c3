//! The conductor's store connections ([`maestro_store::pool::StorePool`]) and its audit
//! log, opened at first use.

use std::sync::{Arc, Mutex};

pub use maestro_store::pool::{StorePool, close_off_runtime};

/// The audit log in the store's database, opened at first use and kept.
#[derive(Debug)]
pub struct AuditLog {
    location: String,
    log: Mutex<Option<maestro_audit::Log>>,
}

impl AuditLog {
    #[must_use]
    pub fn new(location: &str) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            location: location.to_owned(),
            log: Mutex::new(None),
        })
    }

    /// Runs `f` with the log on a blocking thread.
    ///
    /// # Errors
    /// What `f` returns, or a failure to open the log.
    pub async fn with<T, F>(self: &Arc<Self>, f: F) -> Result<T, maestro_audit::AuditError>
    where
        T: Send + 'static,
        F: FnOnce(&mut maestro_audit::Log) -> Result<T, maestro_audit::AuditError> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut slot = me.log.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                *slot = Some(if maestro_store::is_postgres(&me.location) {
                    maestro_audit::Log::open_postgres(&me.location)?
                } else {
                    maestro_audit::Log::open_sqlite(std::path::Path::new(&me.location))?
                });
            }
            let log = slot.as_mut().expect("opened above");
            let out = f(log);
            if out.is_err() {
                // A failed connection is not reused.
                let failed = slot.take();
                drop(slot);
                drop(failed);
            }
            out
        })
        .await
        .unwrap_or_else(|e| {
            Err(maestro_audit::AuditError::NotFound(format!(
                "an audit task failed: {e}"
            )))
        })
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let log = self.log.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        close_off_runtime(log);
    }
}
