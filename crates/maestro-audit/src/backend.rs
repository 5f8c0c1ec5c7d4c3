//! What a store must do for the log. Both backends keep the same three append-only
//! tables (entries, stored hashes, signed checkpoints) plus a small metadata table, and
//! refuse updates and deletes of the first three with triggers.

use tlog_tiles::Hash;

use crate::AuditError;
use crate::entry::Entry;
use crate::tree::Frontier;

/// The log's state at the start of an append, read under the append lock.
#[derive(Debug)]
pub(crate) struct Head {
    pub size: u64,
    pub last_time_us: i64,
    pub frontier: Frontier,
    /// The verifier key that signs the log now (`None` for a new log).
    pub vkey: Option<String>,
    pub origin: Option<String>,
}

/// One entry row.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub entry: Entry,
    pub time_us: i64,
    pub body: Vec<u8>,
}

/// Everything one append transaction writes.
#[derive(Debug)]
pub(crate) struct Plan {
    pub rows: Vec<Row>,
    /// Stored hashes, the first at `first_hash`.
    pub first_hash: u64,
    pub hashes: Vec<Hash>,
    pub checkpoint_size: u64,
    pub checkpoint: String,
    /// Metadata to set (origin and key on the first append, the new key on rotation).
    pub meta: Vec<(&'static str, String)>,
}

/// A stored entry with the columns kept beside its bytes for queries.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub index: u64,
    pub time_us: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub run: Option<i64>,
    pub artifact: Option<String>,
    pub tenant: String,
    pub body: Vec<u8>,
}

/// Filters for listing entries (all optional; newest first).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub run: Option<i64>,
    pub artifact: Option<String>,
    /// Only this tenant's entries (entries that name none are [`crate::entry::DEFAULT_TENANT`]'s).
    pub tenant: Option<String>,
    pub since_us: Option<i64>,
    /// Only entries below this index (paging backwards).
    pub before: Option<u64>,
    pub limit: usize,
}

/// A stored hash from its bytes.
pub(crate) fn hash_of(blob: &[u8]) -> Result<Hash, AuditError> {
    let a: [u8; 32] = blob
        .try_into()
        .map_err(|_| AuditError::Corrupt("a stored hash is not 32 bytes".to_owned()))?;
    Ok(Hash(a))
}

/// Database integers are signed; indexes and sizes are not.
pub(crate) fn u(i: i64) -> u64 {
    u64::try_from(i).unwrap_or(0)
}

pub(crate) fn i(u: u64) -> i64 {
    i64::try_from(u).unwrap_or(i64::MAX)
}

/// The entry columns, in [`Stored`] order.
pub(crate) const COLUMNS: &str =
    "idx, time_us, actor, action, target, result, run_id, artifact, tenant, body";

pub(crate) const FAILPOINT_ENV: &str = "MAESTRO_AUDIT_FAILPOINT";

/// A crash injected for the durability tests: `before-commit` aborts the process after
/// the rows are written and before the commit, `after-commit` after the commit and before
/// the append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failpoint {
    None,
    BeforeCommit,
    AfterCommit,
}

impl Failpoint {
    pub(crate) fn from_env() -> Failpoint {
        match std::env::var(FAILPOINT_ENV).as_deref() {
            Ok("before-commit") => Failpoint::BeforeCommit,
            Ok("after-commit") => Failpoint::AfterCommit,
            _ => Failpoint::None,
        }
    }

    pub(crate) fn hit(self, at: Failpoint) {
        if self == at && at != Failpoint::None {
            std::process::abort();
        }
    }
}

pub(crate) type PlanFn<'a> = dyn FnMut(Head) -> Result<Plan, AuditError> + 'a;

/// A log store. Every method is one transaction; `append` holds the log's append lock
/// (SQLite: the write lock; PostgreSQL: an advisory lock) from reading the head to the
/// commit, so concurrent appenders are serialised and never leave gaps or duplicates.
pub(crate) trait Backend: Send {
    /// Reads the head, lets `plan` compute the rows, writes them and commits durably.
    fn append(&mut self, plan: &mut PlanFn<'_>, fail: Failpoint) -> Result<Plan, AuditError>;
    /// Number of entries.
    fn size(&mut self) -> Result<u64, AuditError>;
    /// Stored hashes by stored-hash index, in the order asked.
    fn read_hashes(&mut self, indexes: &[u64]) -> Result<Vec<Hash>, AuditError>;
    /// Entries with index ≥ `from`, in order, at most `limit`.
    fn entries(&mut self, from: u64, limit: usize) -> Result<Vec<Stored>, AuditError>;
    /// Stored hashes with stored index ≥ `from`, in order, at most `limit`.
    fn hashes(&mut self, from: u64, limit: usize) -> Result<Vec<(u64, Hash)>, AuditError>;
    /// Signed checkpoints with size > `after`, by size, at most `limit`.
    fn checkpoints(
        &mut self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, AuditError>;
    /// The newest signed checkpoint.
    fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, AuditError>;
    /// The checkpoint signed for exactly `size` entries.
    fn checkpoint_at(&mut self, size: u64) -> Result<Option<String>, AuditError>;
    /// Entries matching `q`, newest first.
    fn find(&mut self, q: &Query) -> Result<Vec<Stored>, AuditError>;
    /// A metadata value (`origin`, `vkey`).
    fn meta(&mut self, key: &str) -> Result<Option<String>, AuditError>;
}
