//! The SQLite store: migrations, transactional batches, interrupted runs, cache entries.

use maestro_store::{
    ArtifactRow, AttemptRow, AuditLink, Batch, CacheEntry, JobRow, NewRun, ReproRow, RunStatus,
    SqliteStore, Store, TestRow, WaiverUseRow,
};

fn job(name: &str, status: &str, cache: &str) -> JobRow {
    JobRow {
        name: name.into(),
        gate: Some("unit".into()),
        status: status.into(),
        cache: cache.into(),
        cache_key: Some(format!("key-{name}")),
        reason: None,
        note: None,
        started_at_ms: Some(1),
        duration_ms: 5,
        exit_code: Some(0),
        log_path: Some(format!("logs/{name}.log")),
        flaky: false,
        audit: None,
        attempts: vec![AttemptRow {
            attempt: 1,
            status: status.into(),
            exit_code: Some(0),
            signal: None,
            started_at_ms: 1,
            duration_ms: 5,
            log_path: format!("logs/{name}.log"),
        }],
        artifacts: vec![ArtifactRow {
            path: "out.txt".into(),
            digest: "d1".into(),
            size: 3,
            executable: false,
        }],
        tests: vec![TestRow {
            attempt: 1,
            suite: "s".into(),
            classname: "c".into(),
            name: "t".into(),
            status: "passed".into(),
            duration_ms: 1,
            message: None,
        }],
    }
}

fn entry(key: &str, used: i64) -> CacheEntry {
    CacheEntry {
        key: key.into(),
        job: "unit".into(),
        created_at_ms: used,
        last_used_at_ms: used,
        outputs: vec![ArtifactRow {
            path: "out.txt".into(),
            digest: format!("blob-{key}"),
            size: 10,
            executable: false,
        }],
        log_digest: format!("log-{key}"),
        duration_ms: 5,
        ingredients: "{}".into(),
        size: 10,
    }
}

#[test]
fn runs_round_trip_and_interrupted_runs_are_marked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let run_id;
    {
        let mut s = SqliteStore::open(&path).expect("open");
        assert_eq!(s.schema_version().expect("version"), 4);
        run_id = s
            .begin_run(&NewRun {
                pipeline: "p".into(),
                root: "/r".into(),
                started_at_ms: 10,
                ..NewRun::default()
            })
            .expect("begin");
        let mut deploy = job("b", "failed", "hit");
        deploy.audit = Some(AuditLink {
            started: 7,
            outcome: Some(8),
        });
        let batch = Batch {
            jobs: vec![job("a", "succeeded", "miss"), deploy],
            ..Batch::default()
        };
        s.record(run_id, &batch).expect("record");
        // The process "crashes" here: the run is never finished.
    }
    let mut s = SqliteStore::open(&path).expect("reopen");
    assert_eq!(s.mark_interrupted(99).expect("mark"), vec![run_id]);
    assert_eq!(
        s.mark_interrupted(100).expect("mark again"),
        Vec::<i64>::new()
    );
    let d = s.run_detail(run_id).expect("detail");
    assert_eq!(d.run.status, RunStatus::Interrupted);
    assert_eq!(d.run.finished_at_ms, Some(99));
    assert_eq!((d.run.jobs, d.run.cached, d.run.failed), (2, 1, 1));
    assert_eq!(d.jobs[0].attempts.len(), 1);
    assert_eq!(d.jobs[0].tests[0].name, "t");
    assert_eq!(d.jobs[0].artifacts[0].digest, "d1");
    assert_eq!(d.jobs[0].audit, None);
    assert_eq!(
        d.jobs[1].audit,
        Some(AuditLink {
            started: 7,
            outcome: Some(8)
        })
    );
    assert_eq!(s.latest_run().expect("latest"), Some(run_id));
    assert_eq!(
        s.last_job_record("a").expect("last").map(|(r, _)| r),
        Some(run_id)
    );
}

#[test]
fn a_failing_batch_writes_nothing() {
    let mut s = SqliteStore::open_in_memory().expect("open");
    // Jobs reference runs by foreign key: run 42 does not exist, so the batch fails whole.
    let batch = Batch {
        jobs: vec![job("a", "succeeded", "miss")],
        cache_put: vec![entry("k", 1)],
        ..Batch::default()
    };
    assert!(s.record(42, &batch).is_err());
    assert!(
        s.cache_get("k").expect("get").is_none(),
        "the cache entry of a failed batch must not persist"
    );
}

#[test]
fn cache_entries_lookup_explain_and_gc() {
    let mut s = SqliteStore::open_in_memory().expect("open");
    let run = s.begin_run(&NewRun::default()).expect("begin");
    s.record(
        run,
        &Batch {
            cache_put: vec![entry("old", 1), entry("new", 50)],
            ..Batch::default()
        },
    )
    .expect("put");
    assert_eq!(
        s.cache_get("new").expect("get").expect("hit").outputs[0].digest,
        "blob-new"
    );
    assert_eq!(
        s.cache_latest_for_job("unit", Some("new"))
            .expect("latest")
            .map(|e| e.key),
        Some("old".to_owned())
    );
    s.record(
        run,
        &Batch {
            cache_used: vec!["old".into()],
            used_at_ms: 100,
            ..Batch::default()
        },
    )
    .expect("touch");
    let gc = s.cache_gc(60).expect("gc");
    assert_eq!(
        gc.removed_entries, 1,
        "only `new` was unused since the cutoff"
    );
    assert!(s.cache_get("new").expect("get").is_none());
    let refs = s.referenced_blobs().expect("refs");
    assert!(refs.contains("blob-old") && refs.contains("log-old") && !refs.contains("blob-new"));
    assert_eq!(s.cache_stats().expect("stats").entries, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    drop(SqliteStore::open(&path).expect("open"));
    rusqlite::Connection::open(&path)
        .expect("raw open")
        .pragma_update(None, "user_version", 99)
        .expect("bump the schema version past what this build knows");
    let err = SqliteStore::open(&path).expect_err("too new");
    assert!(err.to_string().contains("newer than this Maestro"), "{err}");
}

/// A store in a temporary directory with one run begun.
fn store_with_run() -> (tempfile::TempDir, SqliteStore, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = SqliteStore::open(&dir.path().join("store.db")).expect("open");
    let run = s
        .begin_run(&NewRun {
            pipeline: "p".into(),
            root: "/r".into(),
            ..NewRun::default()
        })
        .expect("begin");
    (dir, s, run)
}

#[test]
fn repro_checks_attach_to_their_run() {
    let (_dir, mut s, run) = store_with_run();
    let row = ReproRow {
        run_id: Some(run),
        job: "package".into(),
        commit: Some("abc".into()),
        reproducible: false,
        report: "{\"differing\":[]}".into(),
        created_at_ms: 5,
        ..ReproRow::default()
    };
    let id = s.repro_record(&row).expect("record");
    let unattached = ReproRow {
        run_id: None,
        ..row.clone()
    };
    s.repro_record(&unattached).expect("record without a run");
    let got = s.repro_for_run(run).expect("list");
    assert_eq!(got, vec![ReproRow { id, ..row.clone() }]);
    // A run that does not exist is refused, not silently dangling.
    let dangling = ReproRow {
        run_id: Some(run + 100),
        ..row
    };
    assert!(s.repro_record(&dangling).is_err());
}

#[test]
fn waiver_uses_are_recorded_newest_first() {
    let (_dir, mut s, run) = store_with_run();
    let used = WaiverUseRow {
        run_id: Some(run),
        job: Some("infra-plan".into()),
        gate: "policy".into(),
        rule: "terraform.deny_public_s3".into(),
        subject: "aws_s3_bucket.site".into(),
        source: ".ci/waivers.yaml".into(),
        waiver_index: 0,
        reason: "CDN".into(),
        approver: "alice".into(),
        expires: "2026-12-31".into(),
        expired: false,
        created_at_ms: 10,
        ..WaiverUseRow::default()
    };
    // A run id from another store is kept as no run rather than refused: the use itself
    // must never be lost.
    let elsewhere = WaiverUseRow {
        run_id: Some(run + 100),
        expired: true,
        created_at_ms: 11,
        ..used.clone()
    };
    s.waiver_record(&[used.clone(), elsewhere.clone()])
        .expect("record");
    let got = s.waiver_uses(10).expect("list");
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0],
        WaiverUseRow {
            id: got[0].id,
            run_id: None,
            ..elsewhere
        }
    );
    assert_eq!(
        got[1],
        WaiverUseRow {
            id: got[1].id,
            ..used
        }
    );
    assert_eq!(s.waiver_uses(1).expect("list").len(), 1);
}
