//! The PostgreSQL backend: the store at scale, shared by several conductors. The same
//! schema as SQLite (migrations in [`crate::migrations::PG_MIGRATIONS`]), every write one
//! transaction, migrations serialised by an advisory lock so replicas starting together
//! do not race.

use std::collections::HashSet;

use postgres::{Client, Row, Transaction};

use crate::migrations::PG_MIGRATIONS;
use crate::pg::Prepared;
use crate::{
    ArtifactRow, AttemptRow, AuditLink, Batch, CacheEntry, CacheStats, DeploymentRefusal,
    DeploymentRow, EnvironmentRow, FlagKillRow, GcResult, JobLog, JobRow, Lease, NewDeployment,
    NewRun, ReleaseRow, Report, ReportOutcome, ReproRow, RunDetail, RunMetrics, RunRow, RunStatus,
    SessionRow, Store, StoreError, TestRow, TokenRow, WaiverUseRow, list_of, list_text,
};

/// Advisory lock key taken while migrating (`'maestro-store'` as bytes).
const MIGRATE_LOCK: i64 = 0x6d61_6573_7472_6f73;

/// The PostgreSQL store.
pub struct PgStore {
    client: Client,
    prepared: Prepared,
    shown: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

fn u32_of(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn count(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl PgStore {
    /// Connects to `url` and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Connect`] naming the server (never the password),
    /// [`StoreError::TooNew`], or a failed migration (nothing of it is applied).
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        let (mut client, shown) = crate::pg::connect(url).map_err(StoreError::Connect)?;
        {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS maestro_schema (version BIGINT NOT NULL)",
            )?;
            let current: i64 = tx
                .query_opt("SELECT version FROM maestro_schema", &[])?
                .map_or(0, |r| r.get(0));
            let supported = i64::try_from(PG_MIGRATIONS.len()).unwrap_or(i64::MAX);
            if current > supported {
                return Err(StoreError::TooNew {
                    path: shown,
                    found: current,
                    supported,
                });
            }
            for sql in PG_MIGRATIONS
                .iter()
                .skip(usize::try_from(current).unwrap_or(0))
            {
                tx.batch_execute(sql)?;
            }
            tx.execute("DELETE FROM maestro_schema", &[])?;
            tx.execute(
                "INSERT INTO maestro_schema (version) VALUES ($1)",
                &[&supported],
            )?;
            tx.commit()?;
        }
        Ok(PgStore {
            client,
            prepared: Prepared::default(),
            shown,
        })
    }

    /// The schema version of the open store.
    ///
    /// # Errors
    /// On database failure.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .client
            .query_one("SELECT version FROM maestro_schema", &[])?
            .get(0))
    }

    /// The database as shown in messages (`postgres://user@host:port/db`).
    #[must_use]
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let st = self.prepared.get(&mut self.client, sql)?;
        Ok(self.client.query(&st, params)?)
    }

    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn job_rows(&mut self, run_id: i64, only: Option<&str>) -> Result<Vec<JobRow>, StoreError> {
        let rows = self.query(
            "SELECT name, gate, status, cache, cache_key, reason, started_at, duration_ms,
             exit_code, log_path, flaky, note, audit_started, audit_outcome FROM jobs
             WHERE run_id = $1 AND ($2::TEXT IS NULL OR name = $2)
             ORDER BY started_at IS NULL, started_at, name",
            &[&run_id, &only],
        )?;
        let mut jobs: Vec<JobRow> = rows
            .iter()
            .map(|r| JobRow {
                name: r.get(0),
                gate: r.get(1),
                status: r.get(2),
                cache: r.get(3),
                cache_key: r.get(4),
                reason: r.get(5),
                started_at_ms: r.get(6),
                duration_ms: r.get(7),
                exit_code: r.get(8),
                log_path: r.get(9),
                flaky: r.get(10),
                note: r.get(11),
                audit: r.get::<_, Option<i64>>(12).map(|started| AuditLink {
                    started,
                    outcome: r.get(13),
                }),
                attempts: Vec::new(),
                artifacts: Vec::new(),
                tests: Vec::new(),
            })
            .collect();
        for j in &mut jobs {
            j.attempts = self
                .query(
                    "SELECT attempt, status, exit_code, signal, started_at, duration_ms, log_path
                     FROM attempts WHERE run_id = $1 AND job = $2 ORDER BY attempt",
                    &[&run_id, &j.name],
                )?
                .iter()
                .map(|r| AttemptRow {
                    attempt: u32_of(r.get(0)),
                    status: r.get(1),
                    exit_code: r.get(2),
                    signal: r.get(3),
                    started_at_ms: r.get(4),
                    duration_ms: r.get(5),
                    log_path: r.get(6),
                })
                .collect();
            j.tests = self
                .query(
                    "SELECT attempt, suite, classname, name, status, duration_ms, message
                     FROM test_results WHERE run_id = $1 AND job = $2 ORDER BY seq",
                    &[&run_id, &j.name],
                )?
                .iter()
                .map(|r| TestRow {
                    attempt: u32_of(r.get(0)),
                    suite: r.get(1),
                    classname: r.get(2),
                    name: r.get(3),
                    status: r.get(4),
                    duration_ms: r.get(5),
                    message: r.get(6),
                })
                .collect();
            j.artifacts = self
                .query(
                    "SELECT path, digest, size FROM artifacts WHERE run_id = $1 AND job = $2 ORDER BY path",
                    &[&run_id, &j.name],
                )?
                .iter()
                .map(|r| ArtifactRow {
                    path: r.get(0),
                    digest: r.get(1),
                    size: r.get(2),
                    executable: false,
                })
                .collect();
        }
        Ok(jobs)
    }

    fn cache_row(row: Option<Row>) -> Result<Option<CacheEntry>, StoreError> {
        let Some(r) = row else { return Ok(None) };
        Ok(Some(CacheEntry {
            key: r.get(0),
            job: r.get(1),
            created_at_ms: r.get(2),
            last_used_at_ms: r.get(3),
            outputs: serde_json::from_str(r.get(4))?,
            log_digest: r.get(5),
            duration_ms: r.get(6),
            ingredients: r.get(7),
            size: r.get(8),
        }))
    }
}

fn put_job(tx: &mut Transaction<'_>, run_id: i64, j: &JobRow) -> Result<(), StoreError> {
    let flaky = j.flaky;
    tx.execute(
        "INSERT INTO jobs (run_id, name, gate, status, cache, cache_key, reason, started_at,
         duration_ms, exit_code, log_path, flaky, note, audit_started, audit_outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (run_id, name) DO UPDATE SET gate = excluded.gate, status = excluded.status,
         cache = excluded.cache, cache_key = excluded.cache_key, reason = excluded.reason,
         started_at = excluded.started_at, duration_ms = excluded.duration_ms,
         exit_code = excluded.exit_code, log_path = excluded.log_path, flaky = excluded.flaky,
         note = excluded.note, audit_started = excluded.audit_started,
         audit_outcome = excluded.audit_outcome",
        &[
            &run_id,
            &j.name,
            &j.gate,
            &j.status,
            &j.cache,
            &j.cache_key,
            &j.reason,
            &j.started_at_ms,
            &j.duration_ms,
            &j.exit_code,
            &j.log_path,
            &flaky,
            &j.note,
            &j.audit.map(|a| a.started),
            &j.audit.and_then(|a| a.outcome),
        ],
    )?;
    // A job recorded again replaces what it had, as SQLite's INSERT OR REPLACE does.
    tx.execute(
        "DELETE FROM test_results WHERE run_id = $1 AND job = $2",
        &[&run_id, &j.name],
    )?;
    for a in &j.attempts {
        tx.execute(
            "INSERT INTO attempts (run_id, job, attempt, status, exit_code, signal, started_at,
             duration_ms, log_path) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (run_id, job, attempt) DO UPDATE SET status = excluded.status,
             exit_code = excluded.exit_code, signal = excluded.signal,
             started_at = excluded.started_at, duration_ms = excluded.duration_ms,
             log_path = excluded.log_path",
            &[
                &run_id,
                &j.name,
                &i32::try_from(a.attempt).unwrap_or(i32::MAX),
                &a.status,
                &a.exit_code,
                &a.signal,
                &a.started_at_ms,
                &a.duration_ms,
                &a.log_path,
            ],
        )?;
    }
    for a in &j.artifacts {
        tx.execute(
            "INSERT INTO artifacts (run_id, job, path, digest, size) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (run_id, job, path) DO UPDATE SET digest = excluded.digest, size = excluded.size",
            &[&run_id, &j.name, &a.path, &a.digest, &a.size],
        )?;
    }
    for t in &j.tests {
        tx.execute(
            "INSERT INTO test_results (run_id, job, attempt, suite, classname, name, status,
             duration_ms, message) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &run_id,
                &j.name,
                &i32::try_from(t.attempt).unwrap_or(i32::MAX),
                &t.suite,
                &t.classname,
                &t.name,
                &t.status,
                &t.duration_ms,
                &t.message,
            ],
        )?;
    }
    Ok(())
}

const RUN_COLS: &str = "r.id, r.pipeline, r.status, r.commit_sha, r.branch, r.started_at, r.finished_at,
    (SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id),
    (SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id AND j.cache = 'hit'),
    (SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id AND j.status IN ('failed', 'timed-out', 'error')),
    r.tenant, r.trace_id, r.reporter";

fn run_row(r: &Row) -> RunRow {
    RunRow {
        id: r.get(0),
        pipeline: r.get(1),
        status: RunStatus::parse(r.get(2)),
        commit: r.get(3),
        branch: r.get(4),
        started_at_ms: r.get(5),
        finished_at_ms: r.get(6),
        jobs: count(r.get(7)),
        cached: count(r.get(8)),
        failed: count(r.get(9)),
        tenant: r.get(10),
        trace_id: r.get(11),
        reporter: r.get(12),
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

const CACHE_COLS: &str =
    "key, job, created_at, last_used_at, outputs, log_digest, duration_ms, ingredients, size";

impl Store for PgStore {
    fn begin_run(&mut self, run: &NewRun) -> Result<i64, StoreError> {
        let params: [&(dyn postgres::types::ToSql + Sync); 11] = [
            &run.pipeline,
            &run.root,
            &run.commit,
            &run.branch,
            &run.started_at_ms,
            &i64::from(run.pid),
            &run.args,
            &run.trace_id,
            &crate::tenant_of(&run.tenant),
            &run.reporter,
            &run.remote_key,
        ];
        // A retried creation (same reporter and key) gets the run made the first time; of
        // two racing, the loser's INSERT waits for the winner's and then finds its row.
        let row = self.query_opt(
            "WITH made AS (
               INSERT INTO runs (pipeline, root, commit_sha, branch, status, started_at, pid,
                 args, trace_id, tenant, reporter, last_seen, remote_key)
               VALUES ($1, $2, $3, $4, 'running', $5, $6, $7, $8, $9, $10::TEXT,
                       CASE WHEN $10::TEXT IS NULL THEN NULL ELSE $5::BIGINT END, $11::TEXT)
               ON CONFLICT (reporter, remote_key) DO NOTHING
               RETURNING id
             )
             SELECT id FROM made
             UNION ALL
             SELECT id FROM runs WHERE reporter = $10::TEXT AND remote_key = $11::TEXT
             LIMIT 1",
            &params,
        )?;
        match row {
            Some(r) => Ok(r.get(0)),
            // Inserted by a transaction committed after this statement's snapshot: read
            // again with a new one.
            None => Ok(self
                .query_opt(
                    "SELECT id FROM runs WHERE reporter = $1 AND remote_key = $2",
                    &[&run.reporter, &run.remote_key],
                )?
                .ok_or_else(|| StoreError::Connect("a remote run vanished while begun".to_owned()))?
                .get(0)),
        }
    }

    fn record(&mut self, run_id: i64, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.client.transaction()?;
        for j in &batch.jobs {
            put_job(&mut tx, run_id, j)?;
        }
        for e in &batch.cache_put {
            tx.execute(
                "INSERT INTO cache_entries (key, job, created_at, last_used_at, outputs, log_digest,
                 duration_ms, ingredients, size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (key) DO UPDATE SET job = excluded.job, created_at = excluded.created_at,
                 last_used_at = excluded.last_used_at, outputs = excluded.outputs,
                 log_digest = excluded.log_digest, duration_ms = excluded.duration_ms,
                 ingredients = excluded.ingredients, size = excluded.size",
                &[
                    &e.key,
                    &e.job,
                    &e.created_at_ms,
                    &e.last_used_at_ms,
                    &serde_json::to_string(&e.outputs)?,
                    &e.log_digest,
                    &e.duration_ms,
                    &e.ingredients,
                    &e.size,
                ],
            )?;
        }
        for k in &batch.cache_used {
            tx.execute(
                "UPDATE cache_entries SET last_used_at = $2 WHERE key = $1",
                &[k, &batch.used_at_ms],
            )?;
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
        let n = self.client.execute(
            "UPDATE runs SET status = $2, finished_at = $3 WHERE id = $1",
            &[&run_id, &status.as_str(), &finished_at_ms],
        )?;
        if n == 0 {
            return Err(StoreError::NoSuchRun(run_id));
        }
        Ok(())
    }

    fn mark_interrupted(&mut self, now_ms: i64) -> Result<Vec<i64>, StoreError> {
        let mut ids: Vec<i64> = self
            .client
            .query(
                "UPDATE runs SET status = 'interrupted', finished_at = $1
                 WHERE status = 'running' AND reporter IS NULL RETURNING id",
                &[&now_ms],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn run(&mut self, run_id: i64) -> Result<RunRow, StoreError> {
        let sql = format!("SELECT {RUN_COLS} FROM runs r WHERE r.id = $1");
        let row = self
            .client
            .query_opt(&sql, &[&run_id])?
            .ok_or(StoreError::NoSuchRun(run_id))?;
        Ok(run_row(&row))
    }

    fn list_runs(&mut self, tenant: Option<&str>, n: usize) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs r WHERE $1::TEXT IS NULL OR r.tenant = $1 ORDER BY r.id DESC LIMIT $2"
        );
        let tenant = tenant.map(crate::tenant_of);
        Ok(self
            .client
            .query(&sql, &[&tenant, &limit(n)])?
            .iter()
            .map(run_row)
            .collect())
    }

    fn run_detail(&mut self, run_id: i64) -> Result<RunDetail, StoreError> {
        let sql = format!("SELECT {RUN_COLS}, r.root, r.args FROM runs r WHERE r.id = $1");
        let r = self
            .client
            .query_opt(&sql, &[&run_id])?
            .ok_or(StoreError::NoSuchRun(run_id))?;
        let (run, root, args) = (run_row(&r), r.get(13), r.get(14));
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
            .client
            .query_one("SELECT MAX(id) FROM runs", &[])?
            .get(0))
    }

    fn cache_get(&mut self, key: &str) -> Result<Option<CacheEntry>, StoreError> {
        let sql = format!("SELECT {CACHE_COLS} FROM cache_entries WHERE key = $1");
        let row = self.client.query_opt(&sql, &[&key])?;
        Self::cache_row(row)
    }

    fn cache_latest_for_job(
        &mut self,
        job: &str,
        before_key: Option<&str>,
    ) -> Result<Option<CacheEntry>, StoreError> {
        let sql = format!(
            "SELECT {CACHE_COLS} FROM cache_entries WHERE job = $1 AND ($2::TEXT IS NULL OR key <> $2)
             ORDER BY last_used_at DESC, created_at DESC LIMIT 1"
        );
        let row = self.client.query_opt(&sql, &[&job, &before_key])?;
        Self::cache_row(row)
    }

    fn cache_remove(&mut self, key: &str) -> Result<(), StoreError> {
        self.client
            .execute("DELETE FROM cache_entries WHERE key = $1", &[&key])?;
        Ok(())
    }

    fn run_metrics(&mut self, le_ms: &[i64]) -> Result<RunMetrics, StoreError> {
        let runs = self
            .query(
                "SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status",
                &[],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // The bounds are integers we format ourselves, never text from outside.
        let buckets: String = le_ms
            .iter()
            .map(|b| format!(", COUNT(*) FILTER (WHERE duration_ms <= {b})"))
            .collect();
        let r = self.client.query_one(
            &format!(
                "SELECT COUNT(*), COALESCE(SUM(duration_ms), 0)::BIGINT{buckets} FROM jobs WHERE cache = 'miss'"
            ),
            &[],
        )?;
        Ok(RunMetrics {
            runs,
            job_buckets: (0..le_ms.len()).map(|i| r.get(i + 2)).collect(),
            job_count: r.get(0),
            job_sum_ms: r.get(1),
        })
    }

    fn lease_acquire(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Lease>, StoreError> {
        let row = self.query_opt(
            "INSERT INTO leases (name, holder, token, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE SET
               token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at > $4
                            THEN leases.token ELSE leases.token + 1 END,
               holder = excluded.holder,
               expires_at = excluded.expires_at
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4
             RETURNING holder, token, expires_at",
            &[&name, &holder, &now_ms.saturating_add(ttl_ms), &now_ms],
        )?;
        Ok(row.map(|r| Lease {
            name: name.to_owned(),
            holder: r.get(0),
            token: r.get(1),
            expires_at_ms: r.get(2),
        }))
    }

    fn lease_release(&mut self, name: &str, holder: &str, now_ms: i64) -> Result<bool, StoreError> {
        let st = self.prepared.get(
            &mut self.client,
            "UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2 AND expires_at > $3",
        )?;
        Ok(self.client.execute(&st, &[&name, &holder, &now_ms])? > 0)
    }

    fn report(
        &mut self,
        run_id: i64,
        reporter: &str,
        report: &Report,
        now_ms: i64,
    ) -> Result<ReportOutcome, StoreError> {
        let mut tx = self.client.transaction()?;
        // The UPDATE locks the run's row: a concurrent retry of the same report waits,
        // then finds the sequence number taken.
        let claimed = tx.execute(
            "UPDATE runs SET report_seq = $3, last_seen = $4
             WHERE id = $1 AND reporter = $2 AND status = 'running' AND report_seq < $3",
            &[&run_id, &reporter, &report.seq, &now_ms],
        )?;
        if claimed == 0 {
            let found = tx.query_opt(
                "SELECT reporter, status, report_seq FROM runs WHERE id = $1",
                &[&run_id],
            )?;
            let r = found.ok_or(StoreError::NoSuchRun(run_id))?;
            return Ok(crate::refused(
                reporter,
                r.get(0),
                r.get(1),
                r.get(2),
                report.seq,
            ));
        }
        for j in &report.jobs {
            put_job(&mut tx, run_id, j)?;
        }
        for l in &report.logs {
            tx.execute(
                "INSERT INTO job_logs (run_id, job, tail, bytes) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (run_id, job) DO UPDATE SET tail = excluded.tail, bytes = excluded.bytes",
                &[&run_id, &l.job, &l.tail, &l.bytes],
            )?;
        }
        if let Some(status) = report.status {
            tx.execute(
                "UPDATE runs SET status = $2, finished_at = $3 WHERE id = $1",
                &[&run_id, &status.as_str(), &now_ms],
            )?;
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
        // One statement: the lease check and the update see the same snapshot, and the
        // lease row is locked against a concurrent take-over until it commits.
        let mut ids: Vec<i64> = self
            .query(
                "WITH held AS (
                   SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3
                   AND expires_at > $4 FOR UPDATE
                 )
                 UPDATE runs SET status = 'interrupted', finished_at = $4
                 WHERE status = 'running' AND reporter IS NOT NULL AND last_seen < $5
                   AND EXISTS (SELECT 1 FROM held)
                 RETURNING id",
                &[
                    &lease.name,
                    &lease.holder,
                    &lease.token,
                    &now_ms,
                    &quiet_since_ms,
                ],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn job_log(&mut self, run_id: i64, job: &str) -> Result<Option<JobLog>, StoreError> {
        Ok(self
            .query_opt(
                "SELECT job, tail, bytes FROM job_logs WHERE run_id = $1 AND job = $2",
                &[&run_id, &job],
            )?
            .map(|r| JobLog {
                job: r.get(0),
                tail: r.get(1),
                bytes: r.get(2),
            }))
    }

    fn cache_stats(&mut self) -> Result<CacheStats, StoreError> {
        let r = self.client.query_one(
            "SELECT (SELECT COUNT(*) FROM cache_entries),
                    (SELECT COALESCE(SUM(size), 0)::BIGINT FROM cache_entries),
                    COUNT(*) FILTER (WHERE cache = 'hit'),
                    COUNT(*) FILTER (WHERE cache = 'miss'),
                    COUNT(*) FILTER (WHERE cache = 'hit' AND run_id = (SELECT MAX(id) FROM runs)),
                    COUNT(*) FILTER (WHERE cache = 'miss' AND run_id = (SELECT MAX(id) FROM runs))
             FROM jobs",
            &[],
        )?;
        Ok(CacheStats {
            entries: r.get(0),
            bytes: r.get(1),
            hits: r.get(2),
            misses: r.get(3),
            last_run_hits: r.get(4),
            last_run_misses: r.get(5),
        })
    }

    fn cache_gc(&mut self, cutoff_ms: i64) -> Result<GcResult, StoreError> {
        let r = self.client.query_one(
            "WITH gone AS (DELETE FROM cache_entries WHERE last_used_at < $1 RETURNING size)
             SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT FROM gone",
            &[&cutoff_ms],
        )?;
        Ok(GcResult {
            removed_entries: r.get(0),
            removed_bytes: r.get(1),
        })
    }

    fn referenced_blobs(&mut self) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        for r in self
            .client
            .query("SELECT outputs, log_digest FROM cache_entries", &[])?
        {
            let outputs: Vec<ArtifactRow> = serde_json::from_str(r.get(0))?;
            out.extend(outputs.into_iter().map(|a| a.digest));
            out.insert(r.get(1));
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
            .query(
                "SELECT MAX(run_id) FROM jobs WHERE cache_key = $1 AND name = $2 AND run_id < $3
                 AND status IN ('failed', 'timed-out')",
                &[&key, &job, &before_run],
            )?
            .first()
            .and_then(|r| r.get(0)))
    }

    fn last_job_record(&mut self, job: &str) -> Result<Option<(i64, JobRow)>, StoreError> {
        let run: Option<i64> = self
            .query_opt("SELECT MAX(run_id) FROM jobs WHERE name = $1", &[&job])?
            .and_then(|r| r.get(0));
        let Some(run) = run else { return Ok(None) };
        Ok(self
            .job_rows(run, Some(job))?
            .into_iter()
            .next()
            .map(|j| (run, j)))
    }

    fn repro_record(&mut self, row: &ReproRow) -> Result<i64, StoreError> {
        Ok(self
            .client
            .query_one(
                "INSERT INTO repro_checks (run_id, job, commit_sha, reproducible, report, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &row.run_id,
                    &row.job,
                    &row.commit,
                    &row.reproducible,
                    &row.report,
                    &row.created_at_ms,
                ],
            )?
            .get(0))
    }

    fn repro_for_run(&mut self, run_id: i64) -> Result<Vec<ReproRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT id, run_id, job, commit_sha, reproducible, report, created_at
                 FROM repro_checks WHERE run_id = $1 ORDER BY id",
                &[&run_id],
            )?
            .iter()
            .map(|r| ReproRow {
                id: r.get(0),
                run_id: r.get(1),
                job: r.get(2),
                commit: r.get(3),
                reproducible: r.get(4),
                report: r.get(5),
                created_at_ms: r.get(6),
            })
            .collect())
    }

    fn waiver_record(&mut self, rows: &[WaiverUseRow]) -> Result<(), StoreError> {
        let mut tx = self.client.transaction()?;
        let st = tx.prepare(
            "INSERT INTO waiver_uses (run_id, job, gate, rule, subject, source, waiver_index,
                 reason, approver, expires, expired, created_at)
             VALUES ((SELECT id FROM runs WHERE id = $1), $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 $11, $12)",
        )?;
        for r in rows {
            tx.execute(
                &st,
                &[
                    &r.run_id,
                    &r.job,
                    &r.gate,
                    &r.rule,
                    &r.subject,
                    &r.source,
                    &r.waiver_index,
                    &r.reason,
                    &r.approver,
                    &r.expires,
                    &r.expired,
                    &r.created_at_ms,
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn waiver_uses(&mut self, n: usize) -> Result<Vec<WaiverUseRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT id, run_id, job, gate, rule, subject, source, waiver_index, reason, approver,
                        expires, expired, created_at
                 FROM waiver_uses ORDER BY id DESC LIMIT $1",
                &[&limit(n)],
            )?
            .iter()
            .map(|r| WaiverUseRow {
                id: r.get(0),
                run_id: r.get(1),
                job: r.get(2),
                gate: r.get(3),
                rule: r.get(4),
                subject: r.get(5),
                source: r.get(6),
                waiver_index: r.get(7),
                reason: r.get(8),
                approver: r.get(9),
                expires: r.get(10),
                expired: r.get(11),
                created_at_ms: r.get(12),
            })
            .collect())
    }

    fn token_create(&mut self, t: &TokenRow) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO api_tokens (id, hash, name, actor, roles, teams, tenant, scopes,
             created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &t.id,
                &t.hash,
                &t.name,
                &t.actor,
                &list_text(&t.roles),
                &list_text(&t.teams),
                &t.tenant,
                &list_text(&t.scopes),
                &t.created_at_ms,
                &t.expires_at_ms,
                &t.revoked_at_ms,
            ],
        )?;
        Ok(())
    }

    fn token_by_hash(&mut self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        self.query_opt(
            "SELECT id, hash, name, actor, roles, teams, tenant, scopes, created_at, expires_at,
             revoked_at FROM api_tokens WHERE hash = $1",
            &[&hash],
        )?
        .map(|r| token_row(&r))
        .transpose()
    }

    fn token_list(&mut self) -> Result<Vec<TokenRow>, StoreError> {
        self.client
            .query(
                "SELECT id, hash, name, actor, roles, teams, tenant, scopes, created_at,
                 expires_at, revoked_at FROM api_tokens ORDER BY created_at DESC, id",
                &[],
            )?
            .iter()
            .map(token_row)
            .collect()
    }

    fn session_create(&mut self, s: &SessionRow) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO console_sessions (id_hash, token_id, actor, created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&s.id_hash, &s.token_id, &s.actor, &s.created_at_ms, &s.expires_at_ms, &s.revoked_at_ms],
        )?;
        Ok(())
    }

    fn session(
        &mut self,
        id_hash: &str,
    ) -> Result<Option<(SessionRow, Option<TokenRow>)>, StoreError> {
        let Some(r) = self.query_opt(
            "SELECT id_hash, token_id, actor, created_at, expires_at, revoked_at
             FROM console_sessions WHERE id_hash = $1",
            &[&id_hash],
        )?
        else {
            return Ok(None);
        };
        let session = SessionRow {
            id_hash: r.try_get(0)?,
            token_id: r.try_get(1)?,
            actor: r.try_get(2)?,
            created_at_ms: r.try_get(3)?,
            expires_at_ms: r.try_get(4)?,
            revoked_at_ms: r.try_get(5)?,
        };
        let token = match &session.token_id {
            None => None,
            Some(id) => self
                .query_opt(
                    "SELECT id, hash, name, actor, roles, teams, tenant, scopes, created_at,
                     expires_at, revoked_at FROM api_tokens WHERE id = $1",
                    &[id],
                )?
                .map(|r| token_row(&r))
                .transpose()?,
        };
        Ok(Some((session, token)))
    }

    fn session_revoke(&mut self, id_hash: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.client.execute(
            "UPDATE console_sessions SET revoked_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL",
            &[&id_hash, &now_ms],
        )? == 1)
    }

    fn token_revoke(&mut self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self.client.execute(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &now_ms],
        )? == 1)
    }

    fn deployment_begin(
        &mut self,
        d: &NewDeployment,
    ) -> Result<Result<i64, DeploymentRefusal>, StoreError> {
        let busy = |c: &mut Client| -> Result<Option<i64>, StoreError> {
            Ok(c.query_opt(
                "SELECT id FROM deployments WHERE environment = $1 AND status IN ('progressing', 'paused')",
                &[&d.environment],
            )?
            .map(|r| r.get(0)))
        };
        if let Some(id) = busy(&mut self.client)? {
            return Ok(Err(DeploymentRefusal::Busy(id)));
        }
        let inserted = self.client.query_one(
            "INSERT INTO deployments (environment, service, tenant, version, artifact, release_dir,
             previous, status, plan, state, env, actor, reason, run_id, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'progressing', $8, $9, $10, $11, $12, $13, $14, $14)
             RETURNING id",
            &[
                &d.environment,
                &d.service,
                &crate::tenant_of(&d.tenant),
                &d.version,
                &d.artifact,
                &d.release_dir,
                &d.previous,
                &d.plan,
                &d.state,
                &d.env,
                &d.actor,
                &d.reason,
                &d.run_id,
                &d.now_ms,
            ],
        );
        match inserted {
            Ok(row) => Ok(Ok(row.get(0))),
            // Another conductor opened one between the check and the insert: the partial
            // unique index decides.
            Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => Ok(Err(
                DeploymentRefusal::Busy(busy(&mut self.client)?.unwrap_or(0)),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn deployment_save(
        &mut self,
        id: i64,
        status: &str,
        state: &str,
        now_ms: i64,
        fence: Option<&Lease>,
    ) -> Result<Result<(), DeploymentRefusal>, StoreError> {
        let mut tx = self.client.transaction()?;
        if let Some(l) = fence {
            // The lease row is locked to the commit: it cannot change hands in between.
            let current = tx
                .query_opt(
                    "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3
                     AND expires_at > $4 FOR SHARE",
                    &[&l.name, &l.holder, &l.token, &now_ms],
                )?
                .is_some();
            if !current {
                return Ok(Err(DeploymentRefusal::Fenced));
            }
        }
        let changed = tx.execute(
            "UPDATE deployments SET status = $2, state = $3, updated_at = $4
             WHERE id = $1 AND status IN ('progressing', 'paused')",
            &[&id, &status, &state, &now_ms],
        )?;
        if changed == 0 {
            let now: Option<String> = tx
                .query_opt("SELECT status FROM deployments WHERE id = $1", &[&id])?
                .map(|r| r.get(0));
            return Ok(Err(
                now.map_or(DeploymentRefusal::NotFound, DeploymentRefusal::Ended)
            ));
        }
        if status == "promoted" {
            tx.execute(
                "INSERT INTO environments (name, version, artifact, release_dir, deployment_id, updated_at)
                 SELECT environment, version, artifact, release_dir, id, $2 FROM deployments WHERE id = $1
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version, artifact = excluded.artifact,
                   release_dir = excluded.release_dir, deployment_id = excluded.deployment_id,
                   updated_at = excluded.updated_at",
                &[&id, &now_ms],
            )?;
        }
        tx.commit()?;
        Ok(Ok(()))
    }

    fn deployment(&mut self, id: i64) -> Result<Option<DeploymentRow>, StoreError> {
        Ok(self
            .client
            .query_opt(
                &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = $1"),
                &[&id],
            )?
            .map(|r| deployment_row(&r)))
    }

    fn deployments(
        &mut self,
        environment: Option<&str>,
        active_only: bool,
        limit: usize,
    ) -> Result<Vec<DeploymentRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .client
            .query(
                &format!(
                    "SELECT {DEPLOYMENT_COLS} FROM deployments
                     WHERE ($1::TEXT IS NULL OR environment = $1)
                       AND (NOT $2 OR status IN ('progressing', 'paused'))
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&environment, &active_only, &limit],
            )?
            .iter()
            .map(deployment_row)
            .collect())
    }

    fn run_deployments(&mut self, run_id: i64) -> Result<Vec<DeploymentRow>, StoreError> {
        Ok(self
            .client
            .query(
                &format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE run_id = $1 ORDER BY id"),
                &[&run_id],
            )?
            .iter()
            .map(deployment_row)
            .collect())
    }

    fn release_create(&mut self, r: &ReleaseRow) -> Result<Option<i64>, StoreError> {
        let row = self.client.query_opt(
            "INSERT INTO releases (tenant, service, version, commit_sha, artifact, digest, status,
             state, notes, actor, reason, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             ON CONFLICT (tenant, service, version) DO NOTHING RETURNING id",
            &[
                &crate::tenant_of(&r.tenant),
                &r.service,
                &r.version,
                &r.commit,
                &r.artifact,
                &r.digest,
                &r.status,
                &r.state,
                &r.notes,
                &r.actor,
                &r.reason,
                &r.created_at_ms,
            ],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn release_save(
        &mut self,
        id: i64,
        expect: Option<&str>,
        status: &str,
        state: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self.client.execute(
            "UPDATE releases SET status = $2, state = $3, updated_at = $4
             WHERE id = $1 AND ($5::TEXT IS NULL OR status = $5)",
            &[&id, &status, &state, &now_ms, &expect],
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
            .client
            .query_opt(
                "SELECT id, tenant, service, version, commit_sha, artifact, digest, status, state, notes, actor, reason, created_at, updated_at FROM releases WHERE tenant = $1 AND service = $2 AND version = $3",
                &[&crate::tenant_of(tenant), &service, &version],
            )?
            .map(|r| release_row(&r)))
    }

    fn releases(&mut self, tenant: Option<&str>, n: usize) -> Result<Vec<ReleaseRow>, StoreError> {
        let tenant = tenant.map(crate::tenant_of);
        Ok(self
            .client
            .query(
                "SELECT id, tenant, service, version, commit_sha, artifact, digest, status, state, notes, actor, reason, created_at, updated_at FROM releases WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY id DESC LIMIT $2",
                &[&tenant, &limit(n)],
            )?
            .iter()
            .map(release_row)
            .collect())
    }

    fn releases_progressing(&mut self) -> Result<Vec<ReleaseRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT id, tenant, service, version, commit_sha, artifact, digest, status, state, notes, actor, reason, created_at, updated_at FROM releases WHERE status = 'progressing' ORDER BY id",
                &[],
            )?
            .iter()
            .map(release_row)
            .collect())
    }

    fn runs_at_commit(
        &mut self,
        tenant: &str,
        commit: &str,
        n: usize,
    ) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs r WHERE r.tenant = $1 AND r.commit_sha = $2 ORDER BY r.id DESC LIMIT $3"
        );
        let tenant = crate::tenant_of(tenant);
        Ok(self
            .client
            .query(&sql, &[&tenant, &commit, &limit(n)])?
            .iter()
            .map(run_row)
            .collect())
    }

    fn environment(&mut self, name: &str) -> Result<Option<EnvironmentRow>, StoreError> {
        Ok(self
            .client
            .query_opt(
                "SELECT name, version, artifact, release_dir, deployment_id, updated_at
                 FROM environments WHERE name = $1",
                &[&name],
            )?
            .map(|r| EnvironmentRow {
                name: r.get(0),
                version: r.get(1),
                artifact: r.get(2),
                release_dir: r.get(3),
                deployment_id: r.get(4),
                updated_at_ms: r.get(5),
            }))
    }

    fn flag_kill_set(&mut self, row: &FlagKillRow) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO flag_kills (key, killed, actor, reason, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET killed = excluded.killed, actor = excluded.actor,
               reason = excluded.reason, updated_at = excluded.updated_at",
            &[&row.key, &row.killed, &row.actor, &row.reason, &row.updated_at_ms],
        )?;
        Ok(())
    }

    fn flag_kills(&mut self) -> Result<Vec<FlagKillRow>, StoreError> {
        Ok(self
            .client
            .query(
                "SELECT key, killed, actor, reason, updated_at FROM flag_kills ORDER BY key",
                &[],
            )?
            .iter()
            .map(|r| FlagKillRow {
                key: r.get(0),
                killed: r.get(1),
                actor: r.get(2),
                reason: r.get(3),
                updated_at_ms: r.get(4),
            })
            .collect())
    }

    fn environment_set(&mut self, e: &EnvironmentRow) -> Result<(), StoreError> {
        self.client.execute(
            "INSERT INTO environments (name, version, artifact, release_dir, deployment_id, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, artifact = excluded.artifact,
               release_dir = excluded.release_dir, deployment_id = excluded.deployment_id,
               updated_at = excluded.updated_at",
            &[&e.name, &e.version, &e.artifact, &e.release_dir, &e.deployment_id, &e.updated_at_ms],
        )?;
        Ok(())
    }
}

const DEPLOYMENT_COLS: &str =
    "id, environment, service, tenant, version, artifact, release_dir, previous,
    status, plan, state, env, actor, reason, run_id, created_at, updated_at";

fn deployment_row(r: &Row) -> DeploymentRow {
    DeploymentRow {
        id: r.get(0),
        environment: r.get(1),
        service: r.get(2),
        tenant: r.get(3),
        version: r.get(4),
        artifact: r.get(5),
        release_dir: r.get(6),
        previous: r.get(7),
        status: r.get(8),
        plan: r.get(9),
        state: r.get(10),
        env: r.get(11),
        actor: r.get(12),
        reason: r.get(13),
        run_id: r.get(14),
        created_at_ms: r.get(15),
        updated_at_ms: r.get(16),
    }
}

fn token_row(r: &Row) -> Result<TokenRow, StoreError> {
    Ok(TokenRow {
        id: r.get(0),
        hash: r.get(1),
        name: r.get(2),
        actor: r.get(3),
        roles: list_of(r.get(4))?,
        teams: list_of(r.get(5))?,
        tenant: r.get(6),
        scopes: list_of(r.get(7))?,
        created_at_ms: r.get(8),
        expires_at_ms: r.get(9),
        revoked_at_ms: r.get(10),
    })
}

fn release_row(r: &Row) -> ReleaseRow {
    ReleaseRow {
        id: r.get(0),
        tenant: r.get(1),
        service: r.get(2),
        version: r.get(3),
        commit: r.get(4),
        artifact: r.get(5),
        digest: r.get(6),
        status: r.get(7),
        state: r.get(8),
        notes: r.get(9),
        actor: r.get(10),
        reason: r.get(11),
        created_at_ms: r.get(12),
        updated_at_ms: r.get(13),
    }
}
