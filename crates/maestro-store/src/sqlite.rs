//! The embedded SQLite backend: one file, WAL journal, every write in a transaction.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::migrations::MIGRATIONS;
use crate::{
    ArtifactRow, AttemptRow, Batch, CacheEntry, CacheStats, DeploymentRefusal, DeploymentRow,
    EnvironmentRow, FlagKillRow, GcResult, JobLog, JobRow, Lease, NewDeployment, NewRun,
    ReleaseRow, Report, ReportOutcome, ReproRow, RunDetail, RunMetrics, RunRow, RunStatus,
    SessionRow, Store, StoreError, TestRow, TokenRow, WaiverUseRow, list_of, list_text,
};

/// The embedded store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

impl SqliteStore {
    /// Opens (creating if needed) the store file and brings its schema up to date.
    ///
    /// # Errors
    /// When the file cannot be opened, is from a newer Maestro, or a migration fails.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL: readers never block the writer; NORMAL: a commit survives a process crash
        // (the OS still has it), which is the guarantee a local run needs.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every statement is prepared once per connection (`prepare_cached`); room for all.
        conn.set_prepared_statement_cache_capacity(64);
        Self::migrate(conn, &path.display().to_string())
    }

    /// An in-memory store, for tests.
    ///
    /// # Errors
    /// When a migration fails.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Self::migrate(conn, ":memory:")
    }

    fn migrate(mut conn: Connection, shown: &str) -> Result<SqliteStore, StoreError> {
        let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current > supported {
            return Err(StoreError::TooNew {
                path: shown.to_owned(),
                found: current,
                supported,
            });
        }
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(i + 1).unwrap_or(i64::MAX),
            )?;
            tx.commit()?;
        }
        Ok(SqliteStore { conn })
    }

    /// The schema version of the open store.
    ///
    /// # Errors
    /// On database failure.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

fn put_job(tx: &Transaction<'_>, run_id: i64, j: &JobRow) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO jobs (run_id, name, gate, status, cache, cache_key, reason,
         started_at, duration_ms, exit_code, log_path, flaky, note, audit_started, audit_outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        run_id,
        j.name,
        j.gate,
        j.status,
        j.cache,
        j.cache_key,
        j.reason,
        j.started_at_ms,
        j.duration_ms,
        j.exit_code,
        j.log_path,
        j.flaky,
        j.note,
        j.audit.map(|a| a.started),
        j.audit.and_then(|a| a.outcome)
    ])?;
    for a in &j.attempts {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO attempts (run_id, job, attempt, status, exit_code, signal,
             started_at, duration_ms, log_path) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            run_id,
            j.name,
            a.attempt,
            a.status,
            a.exit_code,
            a.signal,
            a.started_at_ms,
            a.duration_ms,
            a.log_path
        ])?;
    }
    for a in &j.artifacts {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO artifacts (run_id, job, path, digest, size) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![run_id, j.name, a.path, a.digest, a.size])?;
    }
    for t in &j.tests {
        tx.prepare_cached(
            "INSERT INTO test_results (run_id, job, attempt, suite, classname, name, status,
             duration_ms, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            run_id,
            j.name,
            t.attempt,
            t.suite,
            t.classname,
            t.name,
            t.status,
            t.duration_ms,
            t.message
        ])?;
    }
    Ok(())
}

fn cache_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(CacheEntry, String)> {
    Ok((
        CacheEntry {
            key: r.get(0)?,
            job: r.get(1)?,
            created_at_ms: r.get(2)?,
            last_used_at_ms: r.get(3)?,
            outputs: Vec::new(),
            log_digest: r.get(5)?,
            duration_ms: r.get(6)?,
            ingredients: r.get(7)?,
            size: r.get(8)?,
        },
        r.get(4)?,
    ))
}

const CACHE_COLS: &str =
    "key, job, created_at, last_used_at, outputs, log_digest, duration_ms, ingredients, size";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        status: RunStatus::parse(&r.get::<_, String>(2)?),
        commit: r.get(3)?,
        branch: r.get(4)?,
        started_at_ms: r.get(5)?,
        finished_at_ms: r.get(6)?,
        jobs: r.get(7)?,
        cached: r.get(8)?,
        failed: r.get(9)?,
        tenant: r.get(10)?,
        trace_id: r.get(11)?,
        reporter: r.get(12)?,
    })
}

const RUN_COLS: &str = "r.id, r.pipeline, r.status, r.commit_sha, r.branch, r.started_at, r.finished_at,
    (SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id),
    (SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id AND j.cache = 'hit'),
    (SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id AND j.status IN ('failed', 'timed-out', 'error')),
    r.tenant, r.trace_id, r.reporter";

impl SqliteStore {
    fn job_rows(&self, run_id: i64, only: Option<&str>) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, gate, status, cache, cache_key, reason, started_at, duration_ms,
             exit_code, log_path, flaky, note, audit_started, audit_outcome FROM jobs WHERE run_id = ?1 AND (?2 IS NULL OR name = ?2)
             ORDER BY started_at IS NULL, started_at, name",
        )?;
        let mut jobs: Vec<JobRow> = stmt
            .query_map(params![run_id, only], |r| {
                Ok(JobRow {
                    name: r.get(0)?,
                    gate: r.get(1)?,
                    status: r.get(2)?,
                    cache: r.get(3)?,
                    cache_key: r.get(4)?,
                    reason: r.get(5)?,
                    started_at_ms: r.get(6)?,
                    duration_ms: r.get(7)?,
                    exit_code: r.get(8)?,
                    log_path: r.get(9)?,
                    flaky: r.get(10)?,
                    note: r.get(11)?,
                    audit: r
                        .get::<_, Option<i64>>(12)?
                        .map(|started| crate::AuditLink {
                            started,
                            outcome: r.get(13).ok().flatten(),
                        }),
                    attempts: Vec::new(),
                    artifacts: Vec::new(),
                    tests: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        for j in &mut jobs {
            let mut a = self.conn.prepare_cached(
                "SELECT attempt, status, exit_code, signal, started_at, duration_ms, log_path
                 FROM attempts WHERE run_id = ?1 AND job = ?2 ORDER BY attempt",
            )?;
            j.attempts = a
                .query_map(params![run_id, j.name], |r| {
                    Ok(AttemptRow {
                        attempt: r.get(0)?,
                        status: r.get(1)?,
                        exit_code: r.get(2)?,
                        signal: r.get(3)?,
                        started_at_ms: r.get(4)?,
                        duration_ms: r.get(5)?,
                        log_path: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut t = self.conn.prepare_cached(
                "SELECT attempt, suite, classname, name, status, duration_ms, message
                 FROM test_results WHERE run_id = ?1 AND job = ?2 ORDER BY rowid",
            )?;
            j.tests = t
                .query_map(params![run_id, j.name], |r| {
                    Ok(TestRow {
                        attempt: r.get(0)?,
                        suite: r.get(1)?,
                        classname: r.get(2)?,
                        name: r.get(3)?,
                        status: r.get(4)?,
                        duration_ms: r.get(5)?,
                        message: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            let mut f = self.conn.prepare_cached(
                "SELECT path, digest, size FROM artifacts WHERE run_id = ?1 AND job = ?2 ORDER BY path",
            )?;
            j.artifacts = f
                .query_map(params![run_id, j.name], |r| {
                    Ok(ArtifactRow {
                        path: r.get(0)?,
                        digest: r.get(1)?,
                        size: r.get(2)?,
                        executable: false,
                    })
                })?
                .collect::<Result<_, _>>()?;
        }
        Ok(jobs)
    }

    fn cache_query(
        &self,
        sql: &str,
        p: impl rusqlite::Params,
    ) -> Result<Option<CacheEntry>, StoreError> {
        let row = self
            .conn
            .prepare_cached(sql)?
            .query_row(p, cache_from_row)
            .optional()?;
        match row {
            Some((mut e, outputs)) => {
                e.outputs = serde_json::from_str(&outputs)?;
                Ok(Some(e))
            }
            None => Ok(None),
        }
    }
}

impl Store for SqliteStore {
    fn begin_run(&mut self, run: &NewRun) -> Result<i64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO runs (pipeline, root, commit_sha, branch, status, started_at, pid, args,
             trace_id, tenant, reporter, last_seen, remote_key)
             VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?9, ?10,
                     CASE WHEN ?10 IS NULL THEN NULL ELSE ?5 END, ?11)
             ON CONFLICT (reporter, remote_key) DO NOTHING",
            params![
                run.pipeline,
                run.root,
                run.commit,
                run.branch,
                run.started_at_ms,
                run.pid,
                run.args,
                run.trace_id,
                crate::tenant_of(&run.tenant),
                run.reporter,
                run.remote_key,
            ],
        )?;
        let id = if inserted == 1 {
            tx.last_insert_rowid()
        } else {
            tx.query_row(
                "SELECT id FROM runs WHERE reporter = ?1 AND remote_key = ?2",
                params![run.reporter, run.remote_key],
                |r| r.get(0),
            )?
        };
        tx.commit()?;
        Ok(id)
    }

    fn record(&mut self, run_id: i64, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        for j in &batch.jobs {
            put_job(&tx, run_id, j)?;
        }
        for e in &batch.cache_put {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO cache_entries (key, job, created_at, last_used_at, outputs,
                 log_digest, duration_ms, ingredients, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                e.key,
                e.job,
                e.created_at_ms,
                e.last_used_at_ms,
                serde_json::to_string(&e.outputs)?,
                e.log_digest,
                e.duration_ms,
                e.ingredients,
                e.size
            ])?;
        }
        for k in &batch.cache_used {
            tx.prepare_cached("UPDATE cache_entries SET last_used_at = ?2 WHERE key = ?1")?
                .execute(params![k, batch.used_at_ms])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn finish_run(
        &mut self,
        run_id: i64,
        status: RunStatus,
        finished_at_ms: i64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1",
            params![run_id, status.as_str(), finished_at_ms],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchRun(run_id));
        }
        tx.commit()?;
        Ok(())
    }

    fn mark_interrupted(&mut self, now_ms: i64) -> Result<Vec<i64>, StoreError> {
        let tx = self.conn.transaction()?;
        let ids: Vec<i64> = tx
            .prepare_cached(
                "SELECT id FROM runs WHERE status = 'running' AND reporter IS NULL ORDER BY id",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute(
            "UPDATE runs SET status = 'interrupted', finished_at = ?1
             WHERE status = 'running' AND reporter IS NULL",
            params![now_ms],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    fn run(&mut self, run_id: i64) -> Result<RunRow, StoreError> {
        let sql = format!("SELECT {RUN_COLS} FROM runs r WHERE r.id = ?1");
        self.conn
            .prepare_cached(&sql)?
            .query_row(params![run_id], run_row)
            .optional()?
            .ok_or(StoreError::NoSuchRun(run_id))
    }

    fn list_runs(&mut self, tenant: Option<&str>, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs r WHERE ?1 IS NULL OR r.tenant = ?1 ORDER BY r.id DESC LIMIT ?2"
        );
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                params![
                    tenant.map(crate::tenant_of),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                run_row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn run_detail(&mut self, run_id: i64) -> Result<RunDetail, StoreError> {
        let sql = format!("SELECT {RUN_COLS}, r.root, r.args FROM runs r WHERE r.id = ?1");
        let (run, root, args) = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![run_id], |r| {
                Ok((run_row(r)?, r.get(13)?, r.get(14)?))
            })
            .optional()?
            .ok_or(StoreError::NoSuchRun(run_id))?;
        let jobs = self.job_rows(run_id, None)?;
        Ok(RunDetail {
            run,
            root,
            args,
            jobs,
        })
    }

    fn latest_run(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT MAX(id) FROM runs", [], |r| r.get(0))?)
    }

    fn cache_get(&mut self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        self.cache_query(
            &format!("SELECT {CACHE_COLS} FROM cache_entries WHERE key = ?1"),
            params![key],
        )
    }

    fn cache_latest_for_job(
        &mut self,
        job: &str,
        before_key: Option<&str>,
    ) -> Result<Option<CacheEntry>, StoreError> {
        self.cache_query(
            &format!(
                "SELECT {CACHE_COLS} FROM cache_entries WHERE job = ?1 AND (?2 IS NULL OR key <> ?2)
                 ORDER BY last_used_at DESC, created_at DESC LIMIT 1"
            ),
            params![job, before_key],
        )
    }

    fn cache_remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM cache_entries WHERE key = ?1", params![key])?;
        Ok(())
    }

    fn run_metrics(&mut self, le_ms: &[i64]) -> Result<RunMetrics, StoreError> {
        let runs = self
            .conn
            .prepare_cached("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        // The bounds are integers we format ourselves, never text from outside.
        let buckets: String = le_ms
            .iter()
            .map(|b| format!(", COALESCE(SUM(CASE WHEN duration_ms <= {b} THEN 1 ELSE 0 END), 0)"))
            .collect();
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(duration_ms), 0){buckets} FROM jobs WHERE cache = 'miss'"
        );
        let (job_count, job_sum_ms, job_buckets) =
            self.conn.prepare_cached(&sql)?.query_row([], |r| {
                let counts = (0..le_ms.len())
                    .map(|i| r.get(i + 2))
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok((r.get(0)?, r.get(1)?, counts))
            })?;
        Ok(RunMetrics {
            runs,
            job_buckets,
            job_count,
            job_sum_ms,
        })
    }

    fn lease_acquire(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "INSERT INTO leases (name, holder, token, expires_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (name) DO UPDATE SET
               token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > ?4
                            THEN leases.token ELSE leases.token + 1 END,
               holder = excluded.holder,
               expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= ?4
             RETURNING holder, token, expires_at",
            )?
            .query_row(
                params![name, holder, now_ms.saturating_add(ttl_ms), now_ms],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(row.map(|(holder, token, expires_at_ms)| Lease {
            name: name.to_owned(),
            holder,
            token,
            expires_at_ms,
        }))
    }

    fn lease_release(&mut self, name: &str, holder: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self.conn.prepare_cached(
            "UPDATE leases SET expires_at = ?3 WHERE name = ?1 AND holder = ?2 AND expires_at > ?3",
        )?
        .execute(params![name, holder, now_ms])?;
        Ok(n > 0)
    }

    fn report(
        &mut self,
        run_id: i64,
        reporter: &str,
        report: &Report,
        now_ms: i64,
    ) -> Result<ReportOutcome, StoreError> {
        // IMMEDIATE: the check and the writes are one writer's, never a read lock that
        // has to be upgraded while another writer waits.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let claimed = tx
            .prepare_cached(
                "UPDATE runs SET report_seq = ?3, last_seen = ?4
                 WHERE id = ?1 AND reporter = ?2 AND status = 'running' AND report_seq < ?3",
            )?
            .execute(params![run_id, reporter, report.seq, now_ms])?;
        if claimed == 0 {
            let found: Option<(Option<String>, String, i64)> = tx
                .prepare_cached("SELECT reporter, status, report_seq FROM runs WHERE id = ?1")?
                .query_row(params![run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let (owner, status, seq) = found.ok_or(StoreError::NoSuchRun(run_id))?;
            return Ok(crate::refused(reporter, owner, &status, seq, report.seq));
        }
        for j in &report.jobs {
            put_job(&tx, run_id, j)?;
        }
        for l in &report.logs {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO job_logs (run_id, job, tail, bytes) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![run_id, l.job, l.tail, l.bytes])?;
        }
        if let Some(status) = report.status {
            tx.prepare_cached("UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1")?
                .execute(params![run_id, status.as_str(), now_ms])?;
        }
        tx.commit()?;
        Ok(ReportOutcome::Applied)
    }

    fn reap_remote(
        &mut self,
        lease: &Lease,
        quiet_since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut ids: Vec<i64> = tx
            .prepare_cached(
                "UPDATE runs SET status = 'interrupted', finished_at = ?4
                 WHERE status = 'running' AND reporter IS NOT NULL AND last_seen < ?5
                   AND EXISTS (SELECT 1 FROM leases l WHERE l.name = ?1 AND l.holder = ?2
                               AND l.token = ?3 AND l.expires_at > ?4)
                 RETURNING id",
            )?
            .query_map(
                params![
                    lease.name,
                    lease.holder,
                    lease.token,
                    now_ms,
                    quiet_since_ms
                ],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        tx.commit()?;
        ids.sort_unstable();
        Ok(ids)
    }

    fn job_log(&mut self, run_id: i64, job: &str) -> Result<Option<JobLog>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT job, tail, bytes FROM job_logs WHERE run_id = ?1 AND job = ?2")?
            .query_row(params![run_id, job], |r| {
                Ok(JobLog {
                    job: r.get(0)?,
                    tail: r.get(1)?,
                    bytes: r.get(2)?,
                })
            })
            .optional()?)
    }

    fn cache_stats(&mut self) -> Result<CacheStats, StoreError> {
        let (entries, bytes): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache_entries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (hits, misses): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(cache = 'hit'), 0), COALESCE(SUM(cache = 'miss'), 0) FROM jobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (last_run_hits, last_run_misses): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(cache = 'hit'), 0), COALESCE(SUM(cache = 'miss'), 0) FROM jobs
             WHERE run_id = (SELECT MAX(id) FROM runs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(CacheStats {
            entries,
            bytes,
            hits,
            misses,
            last_run_hits,
            last_run_misses,
        })
    }

    fn cache_gc(&mut self, cutoff_ms: i64) -> Result<GcResult, StoreError> {
        let tx = self.conn.transaction()?;
        let (removed_entries, removed_bytes): (i64, i64) = tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM cache_entries WHERE last_used_at < ?1",
            params![cutoff_ms],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute(
            "DELETE FROM cache_entries WHERE last_used_at < ?1",
            params![cutoff_ms],
        )?;
        tx.commit()?;
        Ok(GcResult {
            removed_entries,
            removed_bytes,
        })
    }

    fn referenced_blobs(&mut self) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT outputs, log_digest FROM cache_entries")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (outputs, log) = row?;
            let outputs: Vec<ArtifactRow> = serde_json::from_str(&outputs)?;
            out.extend(outputs.into_iter().map(|a| a.digest));
            out.insert(log);
        }
        Ok(out)
    }

    fn failed_with_key(
        &mut self,
        job: &str,
        key: &str,
        before_run: i64,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT MAX(run_id) FROM jobs WHERE cache_key = ?1 AND name = ?2 AND run_id < ?3
                 AND status IN ('failed', 'timed-out')",
            )?
            .query_row(params![key, job, before_run], |r| r.get(0))?)
    }

    fn repro_record(&mut self, row: &ReproRow) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO repro_checks (run_id, job, commit_sha, reproducible, report, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                row.run_id,
                row.job,
                row.commit,
                row.reproducible,
                row.report,
                row.created_at_ms
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    fn repro_for_run(&mut self, run_id: i64) -> Result<Vec<ReproRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, run_id, job, commit_sha, reproducible, report, created_at
             FROM repro_checks WHERE run_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![run_id], |r| {
            Ok(ReproRow {
                id: r.get(0)?,
                run_id: r.get(1)?,
                job: r.get(2)?,
                commit: r.get(3)?,
                reproducible: r.get(4)?,
                report: r.get(5)?,
                created_at_ms: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn waiver_record(&mut self, rows: &[WaiverUseRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO waiver_uses (run_id, job, gate, rule, subject, source, waiver_index,
                     reason, approver, expires, expired, created_at)
                 VALUES ((SELECT id FROM runs WHERE id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                     ?11, ?12)",
            )?;
            for r in rows {
                stmt.execute(params![
                    r.run_id,
                    r.job,
                    r.gate,
                    r.rule,
                    r.subject,
                    r.source,
                    r.waiver_index,
                    r.reason,
                    r.approver,
                    r.expires,
                    r.expired,
                    r.created_at_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn waiver_uses(&mut self, limit: usize) -> Result<Vec<WaiverUseRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, run_id, job, gate, rule, subject, source, waiver_index, reason, approver,
                    expires, expired, created_at
             FROM waiver_uses ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok(WaiverUseRow {
                id: r.get(0)?,
                run_id: r.get(1)?,
                job: r.get(2)?,
                gate: r.get(3)?,
                rule: r.get(4)?,
                subject: r.get(5)?,
                source: r.get(6)?,
                waiver_index: r.get(7)?,
                reason: r.get(8)?,
                approver: r.get(9)?,
                expires: r.get(10)?,
                expired: r.get(11)?,
                created_at_ms: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn last_job_record(&mut self, job: &str) -> Result<Option<(i64, JobRow)>, StoreError> {
        let run: Option<i64> = self.conn.query_row(
            "SELECT MAX(run_id) FROM jobs WHERE name = ?1",
            params![job],
            |r| r.get(0),
        )?;
        let Some(run) = run else { return Ok(None) };
        Ok(self
            .job_rows(run, Some(job))?
            .into_iter()
            .next()
            .map(|j| (run, j)))
    }

    fn token_create(&mut self, t: &TokenRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO api_tokens (id, hash, name, actor, roles, teams, tenant, scopes,
             created_at, expires_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                t.id,
                t.hash,
                t.name,
                t.actor,
                list_text(&t.roles),
                list_text(&t.teams),
                t.tenant,
                list_text(&t.scopes),
                t.created_at_ms,
                t.expires_at_ms,
                t.revoked_at_ms
            ],
        )?;
        Ok(())
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE hash = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![hash], token_texts)
            .optional()?;
        row.map(token_row).transpose()
    }

    fn token_list(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens ORDER BY created_at DESC, id");
        let rows: Vec<TokenTexts> = self
            .conn
            .prepare_cached(&sql)?
            .query_map([], token_texts)?
            .collect::<Result<_, _>>()?;
        rows.into_iter().map(token_row).collect()
    }

    fn session_create(&mut self, s: &SessionRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO console_sessions (id_hash, token_id, actor, created_at, expires_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![s.id_hash, s.token_id, s.actor, s.created_at_ms, s.expires_at_ms, s.revoked_at_ms],
        )?;
        Ok(())
    }

    fn session(
        &mut self,
        id_hash: &str,
    ) -> Result<Option<(SessionRow, Option<TokenRow>)>, StoreError> {
        let row = self
            .conn
            .prepare_cached(
                "SELECT id_hash, token_id, actor, created_at, expires_at, revoked_at
                 FROM console_sessions WHERE id_hash = ?1",
            )?
            .query_row(params![id_hash], |r| {
                Ok(SessionRow {
                    id_hash: r.get(0)?,
                    token_id: r.get(1)?,
                    actor: r.get(2)?,
                    created_at_ms: r.get(3)?,
                    expires_at_ms: r.get(4)?,
                    revoked_at_ms: r.get(5)?,
                })
            })
            .optional()?;
        let Some(session) = row else {
            return Ok(None);
        };
        let token = match &session.token_id {
            None => None,
            Some(id) => {
                let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE id = ?1");
                self.conn
                    .prepare_cached(&sql)?
                    .query_row(params![id], token_texts)
                    .optional()?
                    .map(token_row)
                    .transpose()?
            }
        };
        Ok(Some((session, token)))
    }

    fn session_revoke(&mut self, id_hash: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE console_sessions SET revoked_at = ?2 WHERE id_hash = ?1 AND revoked_at IS NULL",
            params![id_hash, now_ms],
        )? == 1)
    }

    fn token_revoke(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_ms],
        )? == 1)
    }

    fn deployment_begin(
        &mut self,
        d: &NewDeployment,
    ) -> Result<Result<i64, DeploymentRefusal>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let busy: Option<i64> = tx
            .query_row(
                "SELECT id FROM deployments WHERE environment = ?1 AND status IN ('progressing', 'paused')",
                [&d.environment],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = busy {
            return Ok(Err(DeploymentRefusal::Busy(id)));
        }
        tx.execute(
            "INSERT INTO deployments (environment, service, tenant, version, artifact, release_dir,
             previous, status, plan, state, env, actor, reason, run_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'progressing', ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
            params![
                d.environment,
                d.service,
                crate::tenant_of(&d.tenant),
                d.version,
                d.artifact,
                d.release_dir,
                d.previous,
                d.plan,
                d.state,
                d.env,
                d.actor,
                d.reason,
                d.run_id,
                d.now_ms
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Ok(id))
    }

    fn deployment_save(
        &mut self,
        id: i64,
        status: &str,
        state: &str,
        now_ms: i64,
        fence: Option<&Lease>,
    ) -> Result<Result<(), DeploymentRefusal>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some(l) = fence {
            // The write lock is held from here to the commit: the lease cannot change hands
            // in between.
            let current: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2
                                AND token = ?3 AND expires_at > ?4)",
                params![l.name, l.holder, l.token, now_ms],
                |r| r.get(0),
            )?;
            if !current {
                return Ok(Err(DeploymentRefusal::Fenced));
            }
        }
        let changed = tx.execute(
            "UPDATE deployments SET status = ?2, state = ?3, updated_at = ?4
             WHERE id = ?1 AND status IN ('progressing', 'paused')",
            params![id, status, state, now_ms],
        )?;
        if changed == 0 {
            let now: Option<String> = tx
                .query_row("SELECT status FROM deployments WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .optional()?;
            return Ok(Err(
                now.map_or(DeploymentRefusal::NotFound, DeploymentRefusal::Ended)
            ));
        }
        if status == "promoted" {
            tx.execute(
                "INSERT INTO environments (name, version, artifact, release_dir, deployment_id, updated_at)
                 SELECT environment, version, artifact, release_dir, id, ?2 FROM deployments WHERE id = ?1
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version, artifact = excluded.artifact,
                   release_dir = excluded.release_dir, deployment_id = excluded.deployment_id,
                   updated_at = excluded.updated_at",
                params![id, now_ms],
            )?;
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    fn deployment(&mut self, id: i64) -> Result<Option<DeploymentRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1"),
                [id],
                deployment_row,
            )
            .optional()?)
    }

    fn deployments(
        &mut self,
        environment: Option<&str>,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<DeploymentRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments
             WHERE (?1 IS NULL OR environment = ?1)
               AND (?2 = 0 OR status IN ('progressing', 'paused'))
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![
                environment,
                i64::from(active_only),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            deployment_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn run_deployments(&mut self, run_id: i64) -> Result<Vec<DeploymentRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE run_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([run_id], deployment_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn flag_kill_set(&mut self, row: &FlagKillRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO flag_kills (key, killed, actor, reason, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (key) DO UPDATE SET killed = excluded.killed, actor = excluded.actor,
               reason = excluded.reason, updated_at = excluded.updated_at",
            params![row.key, row.killed, row.actor, row.reason, row.updated_at_ms],
        )?;
        Ok(())
    }

    fn flag_kills(&mut self) -> Result<Vec<FlagKillRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, killed, actor, reason, updated_at FROM flag_kills ORDER BY key",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(FlagKillRow {
                key: r.get(0)?,
                killed: r.get(1)?,
                actor: r.get(2)?,
                reason: r.get(3)?,
                updated_at_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn release_create(&mut self, r: &ReleaseRow) -> Result<Option<i64>, StoreError> {
        let n = self.conn.execute(
            "INSERT INTO releases (tenant, service, version, commit_sha, artifact, digest, status,
             state, notes, actor, reason, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT (tenant, service, version) DO NOTHING",
            params![
                crate::tenant_of(&r.tenant),
                r.service,
                r.version,
                r.commit,
                r.artifact,
                r.digest,
                r.status,
                r.state,
                r.notes,
                r.actor,
                r.reason,
                r.created_at_ms
            ],
        )?;
        Ok((n == 1).then(|| self.conn.last_insert_rowid()))
    }

    fn release_save(
        &mut self,
        id: i64,
        expect: Option<&str>,
        status: &str,
        state: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE releases SET status = ?2, state = ?3, updated_at = ?4
             WHERE id = ?1 AND (?5 IS NULL OR status = ?5)",
            params![id, status, state, now_ms, expect],
        )?;
        Ok(n == 1)
    }

    fn release(
        &mut self,
        tenant: &str,
        service: &str,
        version: &str,
    ) -> Result<Option<ReleaseRow>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT id, tenant, service, version, commit_sha, artifact, digest, status, state, notes, actor, reason, created_at, updated_at FROM releases WHERE tenant = ?1 AND service = ?2 AND version = ?3",
            )?
            .query_row(
                params![crate::tenant_of(tenant), service, version],
                release_row,
            )
            .optional()?)
    }

    fn releases(
        &mut self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ReleaseRow>, StoreError> {
        let n = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, tenant, service, version, commit_sha, artifact, digest, status, state, notes, actor, reason, created_at, updated_at FROM releases WHERE ?1 IS NULL OR tenant = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![tenant.map(crate::tenant_of), n], release_row)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn releases_progressing(&mut self) -> Result<Vec<ReleaseRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, tenant, service, version, commit_sha, artifact, digest, status, state, notes, actor, reason, created_at, updated_at FROM releases WHERE status = 'progressing' ORDER BY id",
        )?;
        let rows = stmt.query_map([], release_row)?.collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn runs_at_commit(
        &mut self,
        tenant: &str,
        commit: &str,
        limit: usize,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs r WHERE r.tenant = ?1 AND r.commit_sha = ?2 ORDER BY r.id DESC LIMIT ?3"
        );
        let rows = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                params![
                    crate::tenant_of(tenant),
                    commit,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                run_row,
            )?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    fn environment(&mut self, name: &str) -> Result<Option<EnvironmentRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, version, artifact, release_dir, deployment_id, updated_at
                 FROM environments WHERE name = ?1",
                [name],
                |r| {
                    Ok(EnvironmentRow {
                        name: r.get(0)?,
                        version: r.get(1)?,
                        artifact: r.get(2)?,
                        release_dir: r.get(3)?,
                        deployment_id: r.get(4)?,
                        updated_at_ms: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    fn environment_set(&mut self, e: &EnvironmentRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO environments (name, version, artifact, release_dir, deployment_id, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, artifact = excluded.artifact,
               release_dir = excluded.release_dir, deployment_id = excluded.deployment_id,
               updated_at = excluded.updated_at",
            params![e.name, e.version, e.artifact, e.release_dir, e.deployment_id, e.updated_at_ms],
        )?;
        Ok(())
    }
}

const DEPLOYMENT_COLS: &str =
    "id, environment, service, tenant, version, artifact, release_dir, previous,
    status, plan, state, env, actor, reason, run_id, created_at, updated_at";

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRow> {
    Ok(DeploymentRow {
        id: r.get(0)?,
        environment: r.get(1)?,
        service: r.get(2)?,
        tenant: r.get(3)?,
        version: r.get(4)?,
        artifact: r.get(5)?,
        release_dir: r.get(6)?,
        previous: r.get(7)?,
        status: r.get(8)?,
        plan: r.get(9)?,
        state: r.get(10)?,
        env: r.get(11)?,
        actor: r.get(12)?,
        reason: r.get(13)?,
        run_id: r.get(14)?,
        created_at_ms: r.get(15)?,
        updated_at_ms: r.get(16)?,
    })
}

const TOKEN_COLS: &str =
    "id, hash, name, actor, roles, teams, tenant, scopes, created_at, expires_at, revoked_at";

/// A token row with its list columns still JSON text.
type TokenTexts = (TokenRow, [String; 3]);

fn token_texts(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenTexts> {
    Ok((
        TokenRow {
            id: r.get(0)?,
            hash: r.get(1)?,
            name: r.get(2)?,
            actor: r.get(3)?,
            tenant: r.get(6)?,
            created_at_ms: r.get(8)?,
            expires_at_ms: r.get(9)?,
            revoked_at_ms: r.get(10)?,
            ..TokenRow::default()
        },
        [r.get(4)?, r.get(5)?, r.get(7)?],
    ))
}

fn token_row((mut t, [roles, teams, scopes]): TokenTexts) -> Result<TokenRow, StoreError> {
    t.roles = list_of(&roles)?;
    t.teams = list_of(&teams)?;
    t.scopes = list_of(&scopes)?;
    Ok(t)
}

fn release_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRow> {
    Ok(ReleaseRow {
        id: r.get(0)?,
        tenant: r.get(1)?,
        service: r.get(2)?,
        version: r.get(3)?,
        commit: r.get(4)?,
        artifact: r.get(5)?,
        digest: r.get(6)?,
        status: r.get(7)?,
        state: r.get(8)?,
        notes: r.get(9)?,
        actor: r.get(10)?,
        reason: r.get(11)?,
        created_at_ms: r.get(12)?,
        updated_at_ms: r.get(13)?,
    })
}
