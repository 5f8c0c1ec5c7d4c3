//! The PostgreSQL backend: the same tables, with the append lock an advisory
//! transaction lock (so several conductors on one database append in turn) and a commit
//! that returns only once PostgreSQL has made it durable (`synchronous_commit` is forced
//! on for the log's session).

use postgres::Client;
use tlog_tiles::Hash;

use crate::AuditError;
use crate::backend::{
    Backend, COLUMNS, Failpoint, Head, Plan, PlanFn, Query, Stored, hash_of, i, u,
};
use crate::tree::Frontier;

/// The advisory lock key serialising appends (any constant shared by all conductors).
const APPEND_LOCK: i64 = 0x6d61_6573_7472_6f41; // "maestroA"

/// Schema 2: the tenant an entry belongs to, as a column for queries (entries written
/// before it belong to the default tenant, which is what they say: no `tenant` field).
const SCHEMA_TENANT: &str = r"
    ALTER TABLE audit_entries ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX audit_by_tenant ON audit_entries(tenant, idx);
    ";

const SCHEMA: &[&str] = &[
    r"
    CREATE TABLE audit_entries (
        idx BIGINT PRIMARY KEY,
        time_us BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        run_id BIGINT,
        artifact TEXT,
        body BYTEA NOT NULL
    );
    CREATE INDEX audit_by_action ON audit_entries(action, idx);
    CREATE INDEX audit_by_actor ON audit_entries(actor, idx);
    CREATE INDEX audit_by_run ON audit_entries(run_id) WHERE run_id IS NOT NULL;
    CREATE INDEX audit_by_artifact ON audit_entries(artifact) WHERE artifact IS NOT NULL;
    CREATE TABLE audit_hashes (idx BIGINT PRIMARY KEY, hash BYTEA NOT NULL);
    CREATE TABLE audit_checkpoints (
        size BIGINT PRIMARY KEY,
        note TEXT NOT NULL,
        created_us BIGINT NOT NULL
    );
    CREATE FUNCTION maestro_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
    END $$;
    CREATE FUNCTION maestro_audit_in_order() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE top BIGINT;
    BEGIN
        IF TG_TABLE_NAME = 'audit_entries' THEN
            SELECT max(idx) INTO top FROM audit_entries;
        ELSE
            SELECT max(idx) INTO top FROM audit_hashes;
        END IF;
        IF NEW.idx IS DISTINCT FROM COALESCE(top, -1) + 1 THEN
            RAISE EXCEPTION '% are appended in order, without gaps (got %, expected %)',
                TG_TABLE_NAME, NEW.idx, COALESCE(top, -1) + 1;
        END IF;
        RETURN NEW;
    END $$;
    CREATE FUNCTION maestro_audit_grow() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.size <= COALESCE((SELECT max(size) FROM audit_checkpoints), 0) THEN
            RAISE EXCEPTION 'audit checkpoints only grow';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
        FOR EACH ROW EXECUTE FUNCTION maestro_audit_refuse();
    CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
        FOR EACH STATEMENT EXECUTE FUNCTION maestro_audit_refuse();
    CREATE TRIGGER audit_entries_in_order BEFORE INSERT ON audit_entries
        FOR EACH ROW EXECUTE FUNCTION maestro_audit_in_order();
    CREATE TRIGGER audit_hashes_append_only BEFORE UPDATE OR DELETE ON audit_hashes
        FOR EACH ROW EXECUTE FUNCTION maestro_audit_refuse();
    CREATE TRIGGER audit_hashes_no_truncate BEFORE TRUNCATE ON audit_hashes
        FOR EACH STATEMENT EXECUTE FUNCTION maestro_audit_refuse();
    CREATE TRIGGER audit_hashes_in_order BEFORE INSERT ON audit_hashes
        FOR EACH ROW EXECUTE FUNCTION maestro_audit_in_order();
    CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
        FOR EACH ROW EXECUTE FUNCTION maestro_audit_refuse();
    CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION maestro_audit_refuse();
    CREATE TRIGGER audit_checkpoints_grow BEFORE INSERT ON audit_checkpoints
        FOR EACH ROW EXECUTE FUNCTION maestro_audit_grow();
    ",
    SCHEMA_TENANT,
];

pub(crate) struct Pg {
    client: Client,
    /// Prepared statements by text: a query then costs one round trip, not two.
    prepared: maestro_store::pg::Prepared,
}

fn pg(e: &postgres::Error) -> AuditError {
    AuditError::Postgres(
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
    )
}

fn stored(r: &postgres::Row) -> Stored {
    Stored {
        index: u(r.get(0)),
        time_us: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        target: r.get(4),
        result: r.get(5),
        run: r.get(6),
        artifact: r.get(7),
        tenant: r.get(8),
        body: r.get(9),
    }
}

const READ_HASHES: &str = "SELECT idx, hash FROM audit_hashes WHERE idx = ANY($1)";
const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
const LAST: &str = "SELECT idx, time_us FROM audit_entries ORDER BY idx DESC LIMIT 1";
const META: &str = "SELECT value FROM audit_meta WHERE key = $1";
const INSERT_ENTRIES: &str = "INSERT INTO audit_entries (idx, time_us, actor, action, target, result, run_id, artifact, tenant, body)
     SELECT a, b, c, d, e, f, g, h, j, i FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                          $6::text[], $7::bigint[], $8::text[], $9::bytea[], $10::text[])
         WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i, j, o) ORDER BY o";
const INSERT_HASHES: &str = "INSERT INTO audit_hashes (idx, hash)
     SELECT a, b FROM unnest($1::bigint[], $2::bytea[]) WITH ORDINALITY AS t(a, b, o) ORDER BY o";
const INSERT_CHECKPOINT: &str =
    "INSERT INTO audit_checkpoints (size, note, created_us) VALUES ($1, $2, $3)";
const LATEST: &str = "SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1";
const ENTRIES: &str = "SELECT idx, time_us, actor, action, target, result, run_id, artifact, tenant, body FROM audit_entries WHERE idx >= $1 ORDER BY idx LIMIT $2";

fn read_hashes_on(
    c: &mut impl postgres::GenericClient,
    stmt: &postgres::Statement,
    indexes: &[u64],
) -> Result<Vec<Hash>, AuditError> {
    let want: Vec<i64> = indexes.iter().map(|&x| i(x)).collect();
    let rows = c.query(stmt, &[&want]).map_err(|e| pg(&e))?;
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        found.insert(r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1));
    }
    want.iter()
        .map(|ix| {
            found
                .get(ix)
                .ok_or_else(|| {
                    AuditError::Corrupt(format!("stored hash {ix} is missing from the tree"))
                })
                .and_then(|b| hash_of(b))
        })
        .collect()
}

impl Pg {
    pub(crate) fn open(url: &str) -> Result<(Pg, String), AuditError> {
        let (mut client, shown) = maestro_store::pg::connect(url).map_err(AuditError::Postgres)?;
        client
            .batch_execute("SET synchronous_commit = on")
            .map_err(|e| pg(&e))?;
        let mut tx = client.transaction().map_err(|e| pg(&e))?;
        // Schema setup is serialised like appends, so two conductors starting together
        // do not both create the tables.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK])
            .map_err(|e| pg(&e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        )
        .map_err(|e| pg(&e))?;
        let version: i64 = tx
            .query_opt("SELECT value FROM audit_meta WHERE key = 'schema'", &[])
            .map_err(|e| pg(&e))?
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .unwrap_or(0);
        let supported = i64::try_from(SCHEMA.len()).unwrap_or(i64::MAX);
        if version > supported {
            return Err(AuditError::TooNew {
                found: version,
                supported,
            });
        }
        for sql in SCHEMA.iter().skip(usize::try_from(version).unwrap_or(0)) {
            tx.batch_execute(sql).map_err(|e| pg(&e))?;
        }
        tx.execute(
            "INSERT INTO audit_meta (key, value) VALUES ('schema', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&supported.to_string()],
        )
        .map_err(|e| pg(&e))?;
        tx.commit().map_err(|e| pg(&e))?;
        Ok((
            Pg {
                client,
                prepared: maestro_store::pg::Prepared::default(),
            },
            shown,
        ))
    }
}

impl Pg {
    fn st(&mut self, sql: &'static str) -> Result<postgres::Statement, AuditError> {
        self.prepared.get(&mut self.client, sql).map_err(|e| pg(&e))
    }
}

impl Backend for Pg {
    fn append(&mut self, plan: &mut PlanFn<'_>, fail: Failpoint) -> Result<Plan, AuditError> {
        let [lock, last_q, read, meta_q, ins_e, ins_h, ins_c] = [
            LOCK,
            LAST,
            READ_HASHES,
            META,
            INSERT_ENTRIES,
            INSERT_HASHES,
            INSERT_CHECKPOINT,
        ]
        .map(|q| self.st(q));
        let (lock, last_q, read, meta_q, ins_e, ins_h, ins_c) =
            (lock?, last_q?, read?, meta_q?, ins_e?, ins_h?, ins_c?);
        let mut tx = self.client.transaction().map_err(|e| pg(&e))?;
        tx.execute(&lock, &[&APPEND_LOCK]).map_err(|e| pg(&e))?;
        let last = tx
            .query_opt(&last_q, &[])
            .map_err(|e| pg(&e))?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
        let size = last.map_or(0, |(ix, _)| u(ix) + 1);
        let frontier = Frontier::from_hashes(
            size,
            &read_hashes_on(&mut tx, &read, &Frontier::indexes(size))?,
        );
        let mut meta = |k: &str| -> Result<Option<String>, AuditError> {
            Ok(tx
                .query_opt(&meta_q, &[&k])
                .map_err(|e| pg(&e))?
                .map(|r| r.get(0)))
        };
        let head = Head {
            size,
            last_time_us: last.map_or(i64::MIN, |(_, t)| t),
            frontier,
            vkey: meta("vkey")?,
            origin: meta("origin")?,
        };
        let plan = plan(head)?;
        // One statement per table whatever the batch size: arrays, unnested.
        let n = plan.rows.len();
        let mut idx = Vec::with_capacity(n);
        let mut time = Vec::with_capacity(n);
        let (mut actor, mut action, mut target, mut result) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut run, mut artifact, mut tenant, mut body) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in &plan.rows {
            let e = &r.entry;
            idx.push(i(e.index));
            time.push(r.time_us);
            actor.push(e.actor.id.as_str());
            action.push(e.action.as_str());
            target.push(e.target.as_str());
            result.push(e.result.as_str());
            run.push(e.links.run);
            artifact.push(e.links.artifact.as_deref());
            tenant.push(e.tenant());
            body.push(r.body.as_slice());
        }
        tx.execute(
            &ins_e,
            &[
                &idx, &time, &actor, &action, &target, &result, &run, &artifact, &body, &tenant,
            ],
        )
        .map_err(|e| pg(&e))?;
        let hidx: Vec<i64> = (0..plan.hashes.len())
            .map(|k| i(plan.first_hash + k as u64))
            .collect();
        let hashes: Vec<&[u8]> = plan.hashes.iter().map(|h| h.0.as_slice()).collect();
        tx.execute(&ins_h, &[&hidx, &hashes]).map_err(|e| pg(&e))?;
        tx.execute(
            &ins_c,
            &[
                &i(plan.checkpoint_size),
                &plan.checkpoint,
                &plan.rows.last().map_or(0, |r| r.time_us),
            ],
        )
        .map_err(|e| pg(&e))?;
        for (k, v) in &plan.meta {
            tx.execute(
                "INSERT INTO audit_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[k, v],
            )
            .map_err(|e| pg(&e))?;
        }
        fail.hit(Failpoint::BeforeCommit);
        tx.commit().map_err(|e| pg(&e))?;
        fail.hit(Failpoint::AfterCommit);
        Ok(plan)
    }

    fn size(&mut self) -> Result<u64, AuditError> {
        let r = self
            .client
            .query_one("SELECT max(idx) FROM audit_entries", &[])
            .map_err(|e| pg(&e))?;
        Ok(r.get::<_, Option<i64>>(0).map_or(0, |m| u(m) + 1))
    }

    fn read_hashes(&mut self, indexes: &[u64]) -> Result<Vec<Hash>, AuditError> {
        let st = self.st(READ_HASHES)?;
        read_hashes_on(&mut self.client, &st, indexes)
    }

    fn entries(&mut self, from: u64, limit: usize) -> Result<Vec<Stored>, AuditError> {
        let st = self.st(ENTRIES)?;
        let rows = self
            .client
            .query(&st, &[&i(from), &i(limit as u64)])
            .map_err(|e| pg(&e))?;
        Ok(rows.iter().map(stored).collect())
    }

    fn hashes(&mut self, from: u64, limit: usize) -> Result<Vec<(u64, Hash)>, AuditError> {
        let rows = self
            .client
            .query(
                "SELECT idx, hash FROM audit_hashes WHERE idx >= $1 ORDER BY idx LIMIT $2",
                &[&i(from), &i(limit as u64)],
            )
            .map_err(|e| pg(&e))?;
        rows.iter()
            .map(|r| Ok((u(r.get(0)), hash_of(r.get::<_, &[u8]>(1))?)))
            .collect()
    }

    fn checkpoints(
        &mut self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, AuditError> {
        let rows = self
            .client
            .query(
                "SELECT size, note FROM audit_checkpoints WHERE size > $1 ORDER BY size LIMIT $2",
                &[&after.map_or(-1, i), &i(limit as u64)],
            )
            .map_err(|e| pg(&e))?;
        Ok(rows.iter().map(|r| (u(r.get(0)), r.get(1))).collect())
    }

    fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        let st = self.st(LATEST)?;
        Ok(self
            .client
            .query_opt(&st, &[])
            .map_err(|e| pg(&e))?
            .map(|r| (u(r.get(0)), r.get(1))))
    }

    fn checkpoint_at(&mut self, size: u64) -> Result<Option<String>, AuditError> {
        Ok(self
            .client
            .query_opt(
                "SELECT note FROM audit_checkpoints WHERE size = $1",
                &[&i(size)],
            )
            .map_err(|e| pg(&e))?
            .map(|r| r.get(0)))
    }

    fn find(&mut self, q: &Query) -> Result<Vec<Stored>, AuditError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit_entries WHERE true");
        let mut args: Vec<Box<dyn postgres::types::ToSql + Sync>> = Vec::new();
        let mut add = |cond: &str, v: Box<dyn postgres::types::ToSql + Sync>| {
            args.push(v);
            sql.push_str(&format!(" AND {cond} ${}", args.len()));
        };
        if let Some(a) = &q.action {
            add("action =", Box::new(a.clone()));
        }
        if let Some(a) = &q.actor {
            add("actor =", Box::new(a.clone()));
        }
        if let Some(t) = &q.target {
            add("target =", Box::new(t.clone()));
        }
        if let Some(r) = q.run {
            add("run_id =", Box::new(r));
        }
        if let Some(a) = &q.artifact {
            add("artifact =", Box::new(a.clone()));
        }
        if let Some(t) = &q.tenant {
            add("tenant =", Box::new(t.clone()));
        }
        if let Some(s) = q.since_us {
            add("time_us >=", Box::new(s));
        }
        if let Some(b) = q.before {
            add("idx <", Box::new(i(b)));
        }
        sql.push_str(&format!(" ORDER BY idx DESC LIMIT {}", q.limit.max(1)));
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            args.iter().map(|a| a.as_ref()).collect();
        let rows = self.client.query(&sql, &refs).map_err(|e| pg(&e))?;
        Ok(rows.iter().map(stored).collect())
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, AuditError> {
        Ok(self
            .client
            .query_opt("SELECT value FROM audit_meta WHERE key = $1", &[&key])
            .map_err(|e| pg(&e))?
            .map(|r| r.get(0)))
    }
}
