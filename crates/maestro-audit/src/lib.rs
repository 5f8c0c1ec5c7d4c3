//! The audit log: who did what, why and when, in a form nobody can rewrite unnoticed.
//!
//! Entries are canonical JSON ([`entry`]) appended to an RFC 6962 Merkle tree ([`tree`])
//! whose head is signed after every append as a C2SP checkpoint ([`keys`]). Inclusion and
//! consistency proofs are RFC 9162's, from `tlog_tiles`. The log lives in the store — the
//! SQLite file by default, PostgreSQL at scale — in append-only tables (triggers refuse
//! updates and deletes); [`Log::verify`] recomputes everything from the entries and checks
//! every signature, so tampering done anyway, with store access, is found and located.

pub mod backend;
pub mod entry;
pub mod export;
pub mod group;
pub mod keys;
mod postgres;
mod sqlite;
pub mod tree;
pub mod verify;

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tlog_tiles::{Hash, HashReader};

pub use backend::Query;
use backend::{Backend, Failpoint, Plan, Row, Stored};
pub use entry::{Actor, Entry, Links, NewEntry, Outcome};
pub use keys::{LogKey, Trust};
pub use verify::{KeyIntroduction, Problem, Report};

/// Audit log failures.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "`{action}` is a privileged action: it needs a reason (say why, e.g. --reason \"INC-1234: roll back the bad config\"); an empty reason is refused"
    )]
    ReasonRequired { action: String },
    #[error("invalid audit entry: `{field}` {why}")]
    Invalid { field: String, why: String },
    #[error("audit log key: {0}")]
    Key(String),
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL error: {0}")]
    Postgres(String),
    #[error(
        "the audit log has schema version {found}, newer than this Maestro ({supported}); upgrade Maestro"
    )]
    TooNew { found: i64, supported: i64 },
    #[error("the audit log is damaged: {0}; run `maestro audit verify`")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("cannot encode the entry: {0}")]
    Encoding(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Export(String),
}

/// What the log says back once an append is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub index: u64,
    pub time: String,
    /// Base64 RFC 6962 leaf hash of the entry.
    pub leaf: String,
    /// The size of the signed checkpoint that covers the entry.
    pub checkpoint_size: u64,
}

/// An inclusion proof: entry `index` is in the tree of `size` entries signed by
/// `checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub leaf: String,
    pub proof: Vec<String>,
    pub checkpoint: String,
}

/// A consistency proof: the tree of `from` entries is a prefix of the tree of `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub proof: Vec<String>,
    pub from_checkpoint: String,
    pub to_checkpoint: String,
}

fn b64(h: &Hash) -> String {
    B64.encode(h.0)
}

fn unb64(s: &str) -> Result<Hash, String> {
    let v = B64
        .decode(s)
        .map_err(|e| format!("`{s}` is not base64: {e}"))?;
    let a: [u8; 32] = v
        .try_into()
        .map_err(|_| format!("`{s}` is not a 32-byte hash"))?;
    Ok(Hash(a))
}

/// Checks an inclusion proof for the entry `body` against trusted keys.
///
/// # Errors
/// Says what does not hold.
pub fn check_inclusion(p: &InclusionProof, body: &[u8], trust: &Trust) -> Result<(), String> {
    let v = trust.verify(&p.checkpoint)?;
    if v.size != p.size {
        return Err(format!(
            "the proof is for size {}, its checkpoint for size {}",
            p.size, v.size
        ));
    }
    let leaf = tlog_tiles::record_hash(body);
    if b64(&leaf) != p.leaf {
        return Err("the entry's hash is not the proof's leaf".to_owned());
    }
    let proof = p
        .proof
        .iter()
        .map(|s| unb64(s))
        .collect::<Result<Vec<_>, _>>()?;
    tlog_tiles::check_record(&proof, p.size, v.root, p.index, leaf)
        .map_err(|e| format!("entry {} is not in the signed tree: {e}", p.index))
}

/// Checks a consistency proof between two signed checkpoints.
///
/// # Errors
/// Says what does not hold.
pub fn check_consistency(p: &ConsistencyProof, trust: &Trust) -> Result<(), String> {
    let a = trust.verify(&p.from_checkpoint)?;
    let b = trust.verify(&p.to_checkpoint)?;
    if (a.size, b.size) != (p.from, p.to) {
        return Err("the checkpoints are not for the proof's sizes".to_owned());
    }
    let proof = p
        .proof
        .iter()
        .map(|s| unb64(s))
        .collect::<Result<Vec<_>, _>>()?;
    tlog_tiles::check_tree(&proof, b.size, b.root, a.size, a.root).map_err(|e| {
        format!(
            "the tree of {} entries is not a prefix of the tree of {}: {e}",
            a.size, b.size
        )
    })
}

/// `HashReader` over a backend (tlog's proof functions read hashes through it).
struct Reader<'a>(std::cell::RefCell<&'a mut dyn Backend>);

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0
            .borrow_mut()
            .read_hashes(indexes)
            .map_err(|_| tlog_tiles::Error::IndexesNotInTree)
    }
}

/// A [`Reader`] that fetches one more hash (the proven leaf) in the same query, so a
/// proof is one read of the store (one round trip to PostgreSQL).
struct WithLeaf<'a> {
    inner: Reader<'a>,
    leaf_index: u64,
    leaf: std::cell::Cell<Option<Hash>>,
}

impl HashReader for WithLeaf<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        if self.leaf.get().is_some() {
            return self.inner.read_hashes(indexes);
        }
        let mut all = indexes.to_vec();
        all.push(self.leaf_index);
        let mut got = self.inner.read_hashes(&all)?;
        self.leaf.set(got.pop());
        Ok(got)
    }
}

/// An open audit log.
pub struct Log {
    backend: Box<dyn Backend>,
    fail: Failpoint,
    shown: String,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").field("store", &self.shown).finish()
    }
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Log {
    /// Opens (creating if needed) the log in a SQLite file (the store's).
    ///
    /// # Errors
    /// When the file cannot be opened or is from a newer Maestro.
    pub fn open_sqlite(path: &Path) -> Result<Log, AuditError> {
        Ok(Log {
            backend: Box::new(sqlite::Sqlite::open(path)?),
            fail: Failpoint::from_env(),
            shown: path.display().to_string(),
        })
    }

    /// A log in memory, for tests and benchmarks.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn open_in_memory() -> Result<Log, AuditError> {
        Ok(Log {
            backend: Box::new(sqlite::Sqlite::open_in_memory()?),
            fail: Failpoint::None,
            shown: ":memory:".to_owned(),
        })
    }

    /// Opens (creating the tables if needed) the log in a PostgreSQL database
    /// (`postgres://user@host:port/db`).
    ///
    /// # Errors
    /// When the server cannot be reached or the schema cannot be created.
    pub fn open_postgres(url: &str) -> Result<Log, AuditError> {
        let (pg, shown) = postgres::Pg::open(url)?;
        Ok(Log {
            backend: Box::new(pg),
            fail: Failpoint::from_env(),
            shown,
        })
    }

    /// Where the log is (a path or a URL without password).
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The log's name, once it has entries.
    ///
    /// # Errors
    /// On database failure.
    pub fn origin(&mut self) -> Result<Option<String>, AuditError> {
        self.backend.meta("origin")
    }

    /// The verifier key that signs the log now.
    ///
    /// # Errors
    /// On database failure.
    pub fn current_vkey(&mut self) -> Result<Option<String>, AuditError> {
        self.backend.meta("vkey")
    }

    /// Appends one entry; returns once it is durable and covered by a signed checkpoint.
    ///
    /// # Errors
    /// A refused entry (no reason for a privileged action, invalid field), a key that is
    /// not this log's, or a database failure (then nothing was written).
    pub fn append(&mut self, key: &LogKey, entry: &NewEntry) -> Result<Receipt, AuditError> {
        let mut r = self.append_batch(key, std::slice::from_ref(entry))?;
        r.pop()
            .ok_or_else(|| AuditError::Corrupt("an append returned no receipt".to_owned()))
    }

    /// Appends entries in one transaction (one fsync, one checkpoint): all or none.
    ///
    /// # Errors
    /// As [`Log::append`]; one refused entry refuses the batch.
    pub fn append_batch(
        &mut self,
        key: &LogKey,
        entries: &[NewEntry],
    ) -> Result<Vec<Receipt>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(e) = entries
            .iter()
            .find(|e| entry::RESERVED.contains(&e.action.as_str()))
        {
            return Err(AuditError::Invalid {
                field: "action".to_owned(),
                why: format!(
                    "`{}` is reserved: only `maestro audit rotate-key` writes it",
                    e.action
                ),
            });
        }
        let plan = self
            .backend
            .append(&mut |head| plan(head, entries, key, None), self.fail)?;
        Ok(receipts(&plan))
    }

    /// Rotates the log's key: appends a `key.rotate` entry naming the new verifier key,
    /// whose checkpoint both keys sign, and signs with `new` from then on. An auditor who
    /// trusts the old key follows the rotation through that entry.
    ///
    /// # Errors
    /// As [`Log::append`]; `old` must be the log's current key.
    pub fn rotate(
        &mut self,
        old: &LogKey,
        new: &LogKey,
        actor: Actor,
        reason: &str,
    ) -> Result<Receipt, AuditError> {
        if old.origin() != new.origin() {
            return Err(AuditError::Key(format!(
                "the new key is for `{}`, this log is `{}`",
                new.origin(),
                old.origin()
            )));
        }
        let e = NewEntry {
            actor,
            action: "key.rotate".to_owned(),
            target: format!("log/{}", old.origin()),
            params: serde_json::json!({"previous": old.vkey(), "vkey": new.vkey()}),
            reason: Some(reason.to_owned()),
            result: Outcome::Success,
            links: Links::default(),
            tenant: None,
        };
        let plan = self.backend.append(
            &mut |head| plan(head, std::slice::from_ref(&e), old, Some(new)),
            self.fail,
        )?;
        receipts(&plan)
            .pop()
            .ok_or_else(|| AuditError::Corrupt("an append returned no receipt".to_owned()))
    }

    /// Number of entries.
    ///
    /// # Errors
    /// On database failure.
    pub fn size(&mut self) -> Result<u64, AuditError> {
        self.backend.size()
    }

    /// One entry, parsed, with its stored bytes.
    ///
    /// # Errors
    /// [`AuditError::NotFound`], or a damaged entry.
    pub fn entry(&mut self, index: u64) -> Result<(Entry, Vec<u8>), AuditError> {
        let s = self
            .backend
            .entries(index, 1)?
            .into_iter()
            .find(|s| s.index == index)
            .ok_or_else(|| AuditError::NotFound(format!("the audit log has no entry {index}")))?;
        let e = Entry::parse(&s.body)
            .map_err(|e| AuditError::Corrupt(format!("entry {index}: {e}")))?;
        Ok((e, s.body))
    }

    /// Entries matching `q`, newest first.
    ///
    /// # Errors
    /// On database failure or a damaged entry.
    pub fn list(&mut self, q: &Query) -> Result<Vec<Entry>, AuditError> {
        self.backend
            .find(q)?
            .into_iter()
            .map(|s: Stored| {
                Entry::parse(&s.body)
                    .map_err(|e| AuditError::Corrupt(format!("entry {}: {e}", s.index)))
            })
            .collect()
    }

    /// The newest signed checkpoint `(size, note)`.
    ///
    /// # Errors
    /// On database failure.
    pub fn checkpoint(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        self.backend.latest_checkpoint()
    }

    /// The checkpoint signed for exactly `size` entries.
    ///
    /// # Errors
    /// On database failure, or when none was signed for that size.
    pub fn checkpoint_at(&mut self, size: u64) -> Result<String, AuditError> {
        self.backend.checkpoint_at(size)?.ok_or_else(|| {
            AuditError::NotFound(format!(
                "no checkpoint was signed for size {size}; `maestro audit checkpoint --all` lists them"
            ))
        })
    }

    /// Proves entry `index` is in the tree of `size` entries (default: the latest
    /// checkpoint).
    ///
    /// # Errors
    /// When the entry or checkpoint does not exist.
    pub fn prove(&mut self, index: u64, size: Option<u64>) -> Result<InclusionProof, AuditError> {
        let (size, checkpoint) = match size {
            Some(s) => (s, self.checkpoint_at(s)?),
            None => self
                .checkpoint()?
                .ok_or_else(|| AuditError::NotFound("the audit log is empty".to_owned()))?,
        };
        if index >= size {
            return Err(AuditError::NotFound(format!(
                "entry {index} is not in the tree of {size} entries"
            )));
        }
        let reader = WithLeaf {
            inner: Reader(std::cell::RefCell::new(self.backend.as_mut())),
            leaf_index: tlog_tiles::stored_hash_index(0, index),
            leaf: std::cell::Cell::new(None),
        };
        let proof = tlog_tiles::prove_record(size, index, &reader)
            .map_err(|e| AuditError::Corrupt(format!("cannot prove entry {index}: {e}")))?;
        let leaf = match reader.leaf.get() {
            Some(l) => l,
            None => reader
                .read_hashes(&[reader.leaf_index])
                .ok()
                .and_then(|v| v.first().copied())
                .ok_or_else(|| AuditError::Corrupt(format!("entry {index}'s hash is missing")))?,
        };
        Ok(InclusionProof {
            index,
            size,
            leaf: b64(&leaf),
            proof: proof.iter().map(b64).collect(),
            checkpoint,
        })
    }

    /// Proves the tree of `from` entries is a prefix of the tree of `to` (default: the
    /// latest checkpoint); both sizes must have signed checkpoints.
    ///
    /// # Errors
    /// When a checkpoint does not exist or `from > to`.
    pub fn consistency(
        &mut self,
        from: u64,
        to: Option<u64>,
    ) -> Result<ConsistencyProof, AuditError> {
        let (to, to_checkpoint) = match to {
            Some(s) => (s, self.checkpoint_at(s)?),
            None => self
                .checkpoint()?
                .ok_or_else(|| AuditError::NotFound("the audit log is empty".to_owned()))?,
        };
        if from > to {
            return Err(AuditError::NotFound(format!(
                "--from {from} is after --to {to}"
            )));
        }
        let from_checkpoint = self.checkpoint_at(from)?;
        let reader = Reader(std::cell::RefCell::new(self.backend.as_mut()));
        let proof = tlog_tiles::prove_tree(to, from, &reader)
            .map_err(|e| AuditError::Corrupt(format!("cannot prove consistency: {e}")))?;
        Ok(ConsistencyProof {
            from,
            to,
            proof: proof.iter().map(b64).collect(),
            from_checkpoint,
            to_checkpoint,
        })
    }

    /// The bytes of a tlog-tiles tile (hash tiles only; `tile/<L>/<N>[.p/<W>]`), read
    /// from the stored hashes as they are.
    ///
    /// # Errors
    /// When the tile is beyond the tree.
    pub fn tile(&mut self, tile: &tlog_tiles::Tile) -> Result<Vec<u8>, AuditError> {
        let reader = Reader(std::cell::RefCell::new(self.backend.as_mut()));
        tile.read_data(&reader)
            .map_err(|e| AuditError::NotFound(format!("tile {}: {e}", tile.path())))
    }

    /// Recomputes the whole tree from the entries and checks every stored hash and every
    /// signed checkpoint against `trust` (and the `external` checkpoints an auditor kept).
    ///
    /// # Errors
    /// On database failure; what is wrong with the log is in the report.
    pub fn verify(
        &mut self,
        trust: &Trust,
        external: &[(String, String)],
    ) -> Result<Report, AuditError> {
        verify::store(self.backend.as_mut(), trust, external)
    }

    /// Writes an export: a header line with the latest signed checkpoint, then one line
    /// per entry in `[from, to)` (default: all), each with its inclusion proof when the
    /// export is not the whole log. Returns `(entries written, log size)`.
    ///
    /// # Errors
    /// On database or write failure.
    pub fn export(
        &mut self,
        out: &mut dyn std::io::Write,
        from: Option<u64>,
        to: Option<u64>,
    ) -> Result<(u64, u64), AuditError> {
        export::write(self, out, from, to)
    }

    fn backend(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }
}

fn receipts(plan: &Plan) -> Vec<Receipt> {
    plan.rows
        .iter()
        .map(|r| Receipt {
            index: r.entry.index,
            time: r.entry.time.clone(),
            leaf: b64(&tlog_tiles::record_hash(&r.body)),
            checkpoint_size: plan.checkpoint_size,
        })
        .collect()
}

/// Computes what an append writes: entries at the next indexes with times that never go
/// backwards, their stored hashes, and the checkpoint signed by `key` (and `rotate_to`).
fn plan(
    head: backend::Head,
    entries: &[NewEntry],
    key: &LogKey,
    rotate_to: Option<&LogKey>,
) -> Result<Plan, AuditError> {
    let mut meta = Vec::new();
    match head.origin.as_deref() {
        None => meta.push(("origin", key.origin().to_owned())),
        Some(o) if o != key.origin() => {
            return Err(AuditError::Key(format!(
                "this log is `{o}`; the key given signs for `{}`",
                key.origin()
            )));
        }
        Some(_) => {}
    }
    match head.vkey.as_deref() {
        None => meta.push(("vkey", key.vkey().to_owned())),
        Some(v) if v != key.vkey() => {
            return Err(AuditError::Key(format!(
                "this log is signed by {v}; the key given is {}: use the log's key (MAESTRO_AUDIT_KEY or .maestro/audit/log.key), or rotate with `maestro audit rotate-key`",
                key.vkey()
            )));
        }
        Some(_) => {}
    }
    if let Some(new) = rotate_to {
        meta.retain(|(k, _)| *k != "vkey");
        meta.push(("vkey", new.vkey().to_owned()));
    }
    let mut frontier = head.frontier;
    let first_hash = tlog_tiles::stored_hash_index(0, head.size);
    let time_us = now_us().max(head.last_time_us);
    let mut rows = Vec::with_capacity(entries.len());
    let mut hashes = Vec::with_capacity(entries.len() * 2);
    for (k, n) in entries.iter().enumerate() {
        let (entry, body) = n.seal(head.size + k as u64, time_us)?;
        hashes.extend(frontier.push(&body));
        rows.push(Row {
            entry,
            time_us,
            body,
        });
    }
    let size = frontier.size();
    let checkpoint = match rotate_to {
        Some(new) => new.sign_checkpoint(size, frontier.root(), &[key])?,
        None => key.sign_checkpoint(size, frontier.root(), &[])?,
    };
    Ok(Plan {
        rows,
        first_hash,
        hashes,
        checkpoint_size: size,
        checkpoint,
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Actor {
        Actor {
            id: "alice".to_owned(),
            via: "test".to_owned(),
        }
    }

    fn rotation(old: &LogKey, new: &LogKey) -> NewEntry {
        NewEntry {
            actor: alice(),
            action: "key.rotate".to_owned(),
            target: format!("log/{}", old.origin()),
            params: serde_json::json!({"previous": old.vkey(), "vkey": new.vkey()}),
            reason: Some("planted".to_owned()),
            result: Outcome::Success,
            links: Links::default(),
            tenant: None,
        }
    }

    #[test]
    fn a_rotation_the_new_key_never_signed_introduces_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = Log::open_sqlite(&dir.path().join("store.db")).expect("log");
        let (old, _) = LogKey::generate("example.test/audit").expect("old");
        let (new, _) = LogKey::generate("example.test/audit").expect("new");
        let note = NewEntry {
            action: "note".to_owned(),
            reason: None,
            params: serde_json::json!({}),
            target: "x".to_owned(),
            ..rotation(&old, &new)
        };
        log.append(&old, &note).expect("append");
        // Through the API a rotation is only `rotate`'s to write.
        let err = log
            .append(&old, &rotation(&old, &new))
            .expect_err("reserved");
        assert!(err.to_string().contains("reserved"), "{err}");
        // Someone holding the key writes one anyway, below the API: signed by the old key
        // alone.
        let planted = rotation(&old, &new);
        log.backend
            .append(
                &mut |head| plan(head, std::slice::from_ref(&planted), &old, None),
                Failpoint::None,
            )
            .expect("planted");
        let r = log
            .verify(&Trust::new(&[old.vkey()]).expect("trust"), &[])
            .expect("verify");
        assert!(r.key_introductions.is_empty(), "{:?}", r.key_introductions);
        assert!(
            r.problems
                .iter()
                .any(|p| p.index == Some(1) && p.message.contains("planted")),
            "{:?}",
            r.problems
        );
        // A real rotation is signed by both and listed.
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = Log::open_sqlite(&dir.path().join("store.db")).expect("log");
        log.append(&old, &note).expect("append");
        log.rotate(&old, &new, alice(), "yearly rotation")
            .expect("rotate");
        let r = log
            .verify(&Trust::new(&[old.vkey()]).expect("trust"), &[])
            .expect("verify");
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(
            r.key_introductions,
            [KeyIntroduction {
                index: 1,
                vkey: new.vkey().to_owned()
            }]
        );
    }
}
