//! The embedded backend: the log's tables live in the store's SQLite file. The log's
//! connection commits with `synchronous=FULL` (the WAL is fsynced at every commit), so an
//! acknowledged append survives power loss, not only a crash.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tlog_tiles::Hash;

use crate::AuditError;
use crate::backend::{
    Backend, COLUMNS, Failpoint, Head, Plan, PlanFn, Query, Stored, hash_of, i, u,
};
use crate::tree::Frontier;

/// Schema versions, kept in `audit_meta.schema`. Never edit a released one: add one.
/// Schema 2: the tenant an entry belongs to, as a column for queries (entries written
/// before it belong to the default tenant, which is what they say: no `tenant` field).
const SCHEMA_TENANT: &str = r"
    ALTER TABLE audit_entries ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX audit_by_tenant ON audit_entries(tenant, idx);
    ";

const SCHEMA: &[&str] = &[
    r"
    CREATE TABLE audit_entries (
        idx INTEGER PRIMARY KEY,
        time_us INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        run_id INTEGER,
        artifact TEXT,
        body BLOB NOT NULL
    );
    CREATE INDEX audit_by_action ON audit_entries(action, idx);
    CREATE INDEX audit_by_actor ON audit_entries(actor, idx);
    CREATE INDEX audit_by_run ON audit_entries(run_id) WHERE run_id IS NOT NULL;
    CREATE INDEX audit_by_artifact ON audit_entries(artifact) WHERE artifact IS NOT NULL;
    CREATE TABLE audit_hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
    CREATE TABLE audit_checkpoints (
        size INTEGER PRIMARY KEY,
        note TEXT NOT NULL,
        created_us INTEGER NOT NULL
    );
    CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: entries cannot be changed'); END;
    CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: entries cannot be deleted'); END;
    CREATE TRIGGER audit_entries_in_order BEFORE INSERT ON audit_entries
        WHEN NEW.idx IS NOT COALESCE((SELECT max(idx) FROM audit_entries), -1) + 1
        BEGIN SELECT RAISE(ABORT, 'audit entries are appended in order, without gaps'); END;
    CREATE TRIGGER audit_hashes_no_update BEFORE UPDATE ON audit_hashes
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: hashes cannot be changed'); END;
    CREATE TRIGGER audit_hashes_no_delete BEFORE DELETE ON audit_hashes
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: hashes cannot be deleted'); END;
    CREATE TRIGGER audit_hashes_in_order BEFORE INSERT ON audit_hashes
        WHEN NEW.idx IS NOT COALESCE((SELECT max(idx) FROM audit_hashes), -1) + 1
        BEGIN SELECT RAISE(ABORT, 'audit hashes are appended in order, without gaps'); END;
    CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: checkpoints cannot be changed'); END;
    CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: checkpoints cannot be deleted'); END;
    CREATE TRIGGER audit_checkpoints_grow BEFORE INSERT ON audit_checkpoints
        WHEN NEW.size <= COALESCE((SELECT max(size) FROM audit_checkpoints), 0)
        BEGIN SELECT RAISE(ABORT, 'audit checkpoints only grow'); END;
    ",
    SCHEMA_TENANT,
];

/// The SQLite log store.
#[derive(Debug)]
pub(crate) struct Sqlite {
    conn: Connection,
}

impl Sqlite {
    pub(crate) fn open(path: &Path) -> Result<Sqlite, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| AuditError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        }
        let conn = Connection::open(path)?;
        Self::setup(conn)
    }

    pub(crate) fn open_in_memory() -> Result<Sqlite, AuditError> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Sqlite, AuditError> {
        conn.busy_timeout(Duration::from_secs(30))?;
        rusqlite::vtab::array::load_module(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Statement journals (the append-only triggers need them) stay in memory, and a
        // larger page cache keeps the tree's right edge and the indexes resident.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "cache_size", -32_768)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )?;
        let version: i64 = tx
            .query_row(
                "SELECT value FROM audit_meta WHERE key = 'schema'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let supported = i64::try_from(SCHEMA.len()).unwrap_or(i64::MAX);
        if version > supported {
            return Err(AuditError::TooNew {
                found: version,
                supported,
            });
        }
        for sql in SCHEMA.iter().skip(usize::try_from(version).unwrap_or(0)) {
            tx.execute_batch(sql)?;
        }
        tx.execute(
            "INSERT INTO audit_meta (key, value) VALUES ('schema', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [supported.to_string()],
        )?;
        tx.commit()?;
        Ok(Sqlite { conn })
    }

    /// Hashes by stored index, in the order asked, in one query (`rarray`).
    fn read_hashes_on(conn: &Connection, indexes: &[u64]) -> Result<Vec<Hash>, AuditError> {
        if indexes.is_empty() {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare_cached(
            "SELECT idx, hash FROM audit_hashes WHERE idx IN rarray(?1) ORDER BY idx",
        )?;
        let want: rusqlite::vtab::array::Array = std::rc::Rc::new(
            indexes
                .iter()
                .map(|&x| rusqlite::types::Value::Integer(i(x)))
                .collect(),
        );
        let mut found: Vec<(u64, Hash)> = Vec::with_capacity(indexes.len());
        let mut rows = stmt.query([want])?;
        while let Some(r) = rows.next()? {
            let blob = r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
            found.push((u(r.get(0)?), hash_of(blob)?));
        }
        indexes
            .iter()
            .map(|ix| {
                found
                    .binary_search_by_key(ix, |(k, _)| *k)
                    .map(|p| found[p].1)
                    .map_err(|_| {
                        AuditError::Corrupt(format!("stored hash {ix} is missing from the tree"))
                    })
            })
            .collect()
    }

    fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
        Ok(Stored {
            index: u(r.get(0)?),
            time_us: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            result: r.get(5)?,
            run: r.get(6)?,
            artifact: r.get(7)?,
            tenant: r.get(8)?,
            body: r.get(9)?,
        })
    }
}

impl Backend for Sqlite {
    fn append(&mut self, plan: &mut PlanFn<'_>, fail: Failpoint) -> Result<Plan, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<(i64, i64)> = tx
            .query_row(
                "SELECT idx, time_us FROM audit_entries ORDER BY idx DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let size = last.map_or(0, |(ix, _)| u(ix) + 1);
        let frontier =
            Frontier::from_hashes(size, &Self::read_hashes_on(&tx, &Frontier::indexes(size))?);
        let meta = |k: &str| -> Result<Option<String>, AuditError> {
            Ok(tx
                .query_row("SELECT value FROM audit_meta WHERE key = ?1", [k], |r| {
                    r.get(0)
                })
                .optional()?)
        };
        let head = Head {
            size,
            last_time_us: last.map_or(i64::MIN, |(_, t)| t),
            frontier,
            vkey: meta("vkey")?,
            origin: meta("origin")?,
        };
        let plan = plan(head)?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO audit_entries (idx, time_us, actor, action, target, result, run_id, artifact, tenant, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for row in &plan.rows {
                let e = &row.entry;
                ins.execute(params![
                    i(e.index),
                    row.time_us,
                    e.actor.id,
                    e.action,
                    e.target,
                    e.result.as_str(),
                    e.links.run,
                    e.links.artifact,
                    e.tenant(),
                    row.body,
                ])?;
            }
            let mut ins =
                tx.prepare_cached("INSERT INTO audit_hashes (idx, hash) VALUES (?1, ?2)")?;
            for (k, h) in plan.hashes.iter().enumerate() {
                ins.execute(params![i(plan.first_hash + k as u64), h.0.as_slice()])?;
            }
            tx.execute(
                "INSERT INTO audit_checkpoints (size, note, created_us) VALUES (?1, ?2, ?3)",
                params![
                    i(plan.checkpoint_size),
                    plan.checkpoint,
                    plan.rows.last().map_or(0, |r| r.time_us)
                ],
            )?;
            for (k, v) in &plan.meta {
                tx.execute(
                    "INSERT INTO audit_meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![k, v],
                )?;
            }
        }
        fail.hit(Failpoint::BeforeCommit);
        tx.commit()?;
        fail.hit(Failpoint::AfterCommit);
        Ok(plan)
    }

    fn size(&mut self) -> Result<u64, AuditError> {
        let max: Option<i64> =
            self.conn
                .query_row("SELECT max(idx) FROM audit_entries", [], |r| r.get(0))?;
        Ok(max.map_or(0, |m| u(m) + 1))
    }

    fn read_hashes(&mut self, indexes: &[u64]) -> Result<Vec<Hash>, AuditError> {
        Self::read_hashes_on(&self.conn, indexes)
    }

    fn entries(&mut self, from: u64, limit: usize) -> Result<Vec<Stored>, AuditError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM audit_entries WHERE idx >= ?1 ORDER BY idx LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![i(from), i(limit as u64)], Self::stored)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn hashes(&mut self, from: u64, limit: usize) -> Result<Vec<(u64, Hash)>, AuditError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, hash FROM audit_hashes WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![i(from), i(limit as u64)], |r| {
            Ok((u(r.get(0)?), r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (ix, blob) = r?;
            out.push((ix, hash_of(&blob)?));
        }
        Ok(out)
    }

    fn checkpoints(
        &mut self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, AuditError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT size, note FROM audit_checkpoints WHERE size > ?1 ORDER BY size LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after.map_or(-1, i), i(limit as u64)], |r| {
            Ok((u(r.get(0)?), r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        Ok(self
            .conn
            .query_row(
                "SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| Ok((u(r.get(0)?), r.get(1)?)),
            )
            .optional()?)
    }

    fn checkpoint_at(&mut self, size: u64) -> Result<Option<String>, AuditError> {
        Ok(self
            .conn
            .query_row(
                "SELECT note FROM audit_checkpoints WHERE size = ?1",
                [i(size)],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn find(&mut self, q: &Query) -> Result<Vec<Stored>, AuditError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_entries WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut add = |cond: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&format!(" AND {cond} ?{}", args.len()));
        };
        if let Some(a) = &q.action {
            add("action =", a.clone().into());
        }
        if let Some(a) = &q.actor {
            add("actor =", a.clone().into());
        }
        if let Some(t) = &q.target {
            add("target =", t.clone().into());
        }
        if let Some(r) = q.run {
            add("run_id =", r.into());
        }
        if let Some(a) = &q.artifact {
            add("artifact =", a.clone().into());
        }
        if let Some(t) = &q.tenant {
            add("tenant =", t.clone().into());
        }
        if let Some(s) = q.since_us {
            add("time_us >=", s.into());
        }
        if let Some(b) = q.before {
            add("idx <", i(b).into());
        }
        sql.push_str(&format!(" ORDER BY idx DESC LIMIT {}", q.limit.max(1)));
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), Self::stored)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, AuditError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM audit_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }
}
