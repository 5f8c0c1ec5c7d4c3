//! Versioned schema migrations, one list per dialect with the same versions: migration
//! `i` of [`MIGRATIONS`] (SQLite) and of [`PG_MIGRATIONS`] (PostgreSQL) make the same
//! tables and columns (a test compares the two schemas). The schema version is SQLite's
//! `user_version` and PostgreSQL's `maestro_schema.version`; each migration runs in its
//! own transaction. Never edit a released migration: add one to both lists.

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: runs, jobs, attempts, artifacts, test results, cache entries.
    r"
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pipeline TEXT NOT NULL,
        root TEXT NOT NULL,
        commit_sha TEXT,
        branch TEXT,
        status TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        pid INTEGER NOT NULL,
        args TEXT NOT NULL,
        trace_id TEXT
    );
    CREATE TABLE jobs (
        run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        gate TEXT,
        status TEXT NOT NULL,
        cache TEXT NOT NULL,
        cache_key TEXT,
        reason TEXT,
        note TEXT,
        started_at INTEGER,
        duration_ms INTEGER NOT NULL,
        exit_code INTEGER,
        log_path TEXT,
        flaky INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (run_id, name)
    );
    CREATE INDEX jobs_by_name ON jobs(name, run_id);
    CREATE INDEX jobs_by_key ON jobs(cache_key, name);
    CREATE TABLE attempts (
        run_id INTEGER NOT NULL,
        job TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        signal INTEGER,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        log_path TEXT NOT NULL,
        PRIMARY KEY (run_id, job, attempt),
        FOREIGN KEY (run_id, job) REFERENCES jobs(run_id, name) ON DELETE CASCADE
    );
    CREATE TABLE artifacts (
        run_id INTEGER NOT NULL,
        job TEXT NOT NULL,
        path TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (run_id, job, path),
        FOREIGN KEY (run_id, job) REFERENCES jobs(run_id, name) ON DELETE CASCADE
    );
    CREATE TABLE test_results (
        run_id INTEGER NOT NULL,
        job TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        suite TEXT NOT NULL,
        classname TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        message TEXT,
        FOREIGN KEY (run_id, job) REFERENCES jobs(run_id, name) ON DELETE CASCADE
    );
    CREATE INDEX tests_by_case ON test_results(classname, name);
    CREATE TABLE cache_entries (
        key TEXT PRIMARY KEY,
        job TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER NOT NULL,
        outputs TEXT NOT NULL,
        log_digest TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        ingredients TEXT NOT NULL,
        size INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX cache_by_job ON cache_entries(job, created_at);
    ",
    // 2: reproducibility checks (`maestro repro`), attached to the run they concern.
    r"
    CREATE TABLE repro_checks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER REFERENCES runs(id) ON DELETE CASCADE,
        job TEXT NOT NULL,
        commit_sha TEXT,
        reproducible INTEGER NOT NULL,
        report TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX repro_by_run ON repro_checks(run_id);
    ",
    // 3: every use of a waiver (policy and migration gates), expired ones included.
    r"
    CREATE TABLE waiver_uses (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
        job TEXT,
        gate TEXT NOT NULL,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        source TEXT NOT NULL,
        waiver_index INTEGER NOT NULL,
        reason TEXT NOT NULL,
        approver TEXT NOT NULL,
        expires TEXT NOT NULL,
        expired INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX waiver_uses_by_time ON waiver_uses(created_at);
    ",
    // 4: the audit entries a privileged job (publish, deploy) wrote: the `started` entry
    // before it ran and the outcome after.
    r"
    ALTER TABLE jobs ADD COLUMN audit_started INTEGER;
    ALTER TABLE jobs ADD COLUMN audit_outcome INTEGER;
    ",
    // 5: the conductor's API tokens: only a SHA-256 of each secret is kept.
    r"
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        actor TEXT NOT NULL,
        roles TEXT NOT NULL,
        teams TEXT NOT NULL,
        tenant TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    ",
    // 6: a run belongs to a tenant (the conductor's ABAC decides on it).
    r"
    ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    ",
    // 7: leases for singleton work shared by several conductors, with a fencing token.
    r"
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        token INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    ",
    // 8: remote runs (`maestro run --server`): who reports a run, when it last did, the
    // last report applied (retries are applied once), the reporter's own key for the run
    // (a retried creation finds the run it made) and the tails of its jobs' logs.
    r"
    ALTER TABLE runs ADD COLUMN reporter TEXT;
    ALTER TABLE runs ADD COLUMN last_seen INTEGER;
    ALTER TABLE runs ADD COLUMN report_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN remote_key TEXT;
    CREATE UNIQUE INDEX runs_by_remote_key ON runs(reporter, remote_key);
    CREATE INDEX runs_remote_running ON runs(last_seen) WHERE status = 'running' AND reporter IS NOT NULL;
    CREATE TABLE job_logs (
        run_id INTEGER NOT NULL,
        job TEXT NOT NULL,
        tail TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (run_id, job),
        FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE CASCADE
    );
    ",
    // 9: progressive delivery — deployments (a canary of one release into one environment:
    // its strategy, its persisted state machine, who started it and why) and each
    // environment's stable release. At most one deployment is active per environment.
    r"
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        environment TEXT NOT NULL,
        service TEXT NOT NULL,
        tenant TEXT NOT NULL DEFAULT 'default',
        version TEXT NOT NULL,
        artifact TEXT NOT NULL,
        release_dir TEXT NOT NULL,
        previous TEXT,
        status TEXT NOT NULL,
        plan TEXT NOT NULL,
        state TEXT NOT NULL,
        env TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        run_id INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX deployments_one_active ON deployments(environment)
        WHERE status IN ('progressing', 'paused');
    CREATE INDEX deployments_by_environment ON deployments(environment, id);
    CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        artifact TEXT NOT NULL,
        release_dir TEXT NOT NULL,
        deployment_id INTEGER,
        updated_at INTEGER NOT NULL
    );
    ",
    // 10: feature-flag kill switches — which flags of the registry are killed, by whom and
    // why (the registry itself is a file in the repository).
    r"
    CREATE TABLE flag_kills (
        key TEXT PRIMARY KEY,
        killed INTEGER NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    ",
    // 11: releases of the release train — one per (tenant, service, version): the commit,
    // the artifact, the notes and the train's progress (a JSON document the conductor owns).
    r"
    CREATE TABLE releases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        service TEXT NOT NULL,
        version TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        artifact TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        state TEXT NOT NULL,
        notes TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (tenant, service, version)
    );
    CREATE INDEX runs_by_commit ON runs(commit_sha, id);
    ",
    // 12: console sessions — the cookie is a random id whose SHA-256 is the key; a session
    // signed in with an API token names it (and ends with it), one signed in with an OIDC
    // token keeps the actor it had.
    r"
    CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY,
        token_id TEXT,
        actor TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    ",
];

/// The same migrations for PostgreSQL: `BIGINT` for SQLite's 64-bit `INTEGER`, identity
/// columns for `AUTOINCREMENT`, `BOOLEAN` where SQLite stores 0/1, and a `seq` identity
/// on `test_results` where SQLite orders by its implicit `rowid`.
pub(crate) const PG_MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE runs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        pipeline TEXT NOT NULL,
        root TEXT NOT NULL,
        commit_sha TEXT,
        branch TEXT,
        status TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        pid BIGINT NOT NULL,
        args TEXT NOT NULL,
        trace_id TEXT
    );
    CREATE TABLE jobs (
        run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        gate TEXT,
        status TEXT NOT NULL,
        cache TEXT NOT NULL,
        cache_key TEXT,
        reason TEXT,
        note TEXT,
        started_at BIGINT,
        duration_ms BIGINT NOT NULL,
        exit_code INTEGER,
        log_path TEXT,
        flaky BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (run_id, name)
    );
    CREATE INDEX jobs_by_name ON jobs(name, run_id);
    CREATE INDEX jobs_by_key ON jobs(cache_key, name);
    CREATE TABLE attempts (
        run_id BIGINT NOT NULL,
        job TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        signal INTEGER,
        started_at BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        log_path TEXT NOT NULL,
        PRIMARY KEY (run_id, job, attempt),
        FOREIGN KEY (run_id, job) REFERENCES jobs(run_id, name) ON DELETE CASCADE
    );
    CREATE TABLE artifacts (
        run_id BIGINT NOT NULL,
        job TEXT NOT NULL,
        path TEXT NOT NULL,
        digest TEXT NOT NULL,
        size BIGINT NOT NULL,
        PRIMARY KEY (run_id, job, path),
        FOREIGN KEY (run_id, job) REFERENCES jobs(run_id, name) ON DELETE CASCADE
    );
    CREATE TABLE test_results (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id BIGINT NOT NULL,
        job TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        suite TEXT NOT NULL,
        classname TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        message TEXT,
        FOREIGN KEY (run_id, job) REFERENCES jobs(run_id, name) ON DELETE CASCADE
    );
    CREATE INDEX tests_by_case ON test_results(classname, name);
    CREATE INDEX tests_by_job ON test_results(run_id, job);
    CREATE TABLE cache_entries (
        key TEXT PRIMARY KEY,
        job TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT NOT NULL,
        outputs TEXT NOT NULL,
        log_digest TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        ingredients TEXT NOT NULL,
        size BIGINT NOT NULL
    );
    CREATE INDEX cache_by_job ON cache_entries(job, created_at);
    ",
    r"
    CREATE TABLE repro_checks (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id BIGINT REFERENCES runs(id) ON DELETE CASCADE,
        job TEXT NOT NULL,
        commit_sha TEXT,
        reproducible BOOLEAN NOT NULL,
        report TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX repro_by_run ON repro_checks(run_id);
    ",
    r"
    CREATE TABLE waiver_uses (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        run_id BIGINT REFERENCES runs(id) ON DELETE SET NULL,
        job TEXT,
        gate TEXT NOT NULL,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        source TEXT NOT NULL,
        waiver_index BIGINT NOT NULL,
        reason TEXT NOT NULL,
        approver TEXT NOT NULL,
        expires TEXT NOT NULL,
        expired BOOLEAN NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX waiver_uses_by_time ON waiver_uses(created_at);
    ",
    r"
    ALTER TABLE jobs ADD COLUMN audit_started BIGINT;
    ALTER TABLE jobs ADD COLUMN audit_outcome BIGINT;
    ",
    r"
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        actor TEXT NOT NULL,
        roles TEXT NOT NULL,
        teams TEXT NOT NULL,
        tenant TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    ",
    r"
    ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    ",
    r"
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        token BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    ",
    r"
    ALTER TABLE runs ADD COLUMN reporter TEXT;
    ALTER TABLE runs ADD COLUMN last_seen BIGINT;
    ALTER TABLE runs ADD COLUMN report_seq BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN remote_key TEXT;
    CREATE UNIQUE INDEX runs_by_remote_key ON runs(reporter, remote_key);
    CREATE INDEX runs_remote_running ON runs(last_seen) WHERE status = 'running' AND reporter IS NOT NULL;
    CREATE TABLE job_logs (
        run_id BIGINT NOT NULL,
        job TEXT NOT NULL,
        tail TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        PRIMARY KEY (run_id, job),
        FOREIGN KEY (run_id) REFERENCES runs(id) ON DELETE CASCADE
    );
    ",
    r"
    CREATE TABLE deployments (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        environment TEXT NOT NULL,
        service TEXT NOT NULL,
        tenant TEXT NOT NULL DEFAULT 'default',
        version TEXT NOT NULL,
        artifact TEXT NOT NULL,
        release_dir TEXT NOT NULL,
        previous TEXT,
        status TEXT NOT NULL,
        plan TEXT NOT NULL,
        state TEXT NOT NULL,
        env TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        run_id BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX deployments_one_active ON deployments(environment)
        WHERE status IN ('progressing', 'paused');
    CREATE INDEX deployments_by_environment ON deployments(environment, id);
    CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        artifact TEXT NOT NULL,
        release_dir TEXT NOT NULL,
        deployment_id BIGINT,
        updated_at BIGINT NOT NULL
    );
    ",
    // 10: feature-flag kill switches — which flags of the registry are killed, by whom and
    // why (the registry itself is a file in the repository).
    r"
    CREATE TABLE flag_kills (
        key TEXT PRIMARY KEY,
        killed BOOLEAN NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    ",
    // 11: releases of the release train — one per (tenant, service, version): the commit,
    // the artifact, the notes and the train's progress (a JSON document the conductor owns).
    r"
    CREATE TABLE releases (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        tenant TEXT NOT NULL,
        service TEXT NOT NULL,
        version TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        artifact TEXT NOT NULL,
        digest TEXT NOT NULL,
        status TEXT NOT NULL,
        state TEXT NOT NULL,
        notes TEXT NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (tenant, service, version)
    );
    CREATE INDEX runs_by_commit ON runs(commit_sha, id);
    ",
    // 12: console sessions — the cookie is a random id whose SHA-256 is the key; a session
    // signed in with an API token names it (and ends with it), one signed in with an OIDC
    // token keeps the actor it had.
    r"
    CREATE TABLE console_sessions (
        id_hash TEXT PRIMARY KEY,
        token_id TEXT,
        actor TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    ",
];
