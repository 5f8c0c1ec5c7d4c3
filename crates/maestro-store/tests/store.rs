//! The store suite, run on both backends: every test exists as `<name>::sqlite` (a file in
//! a temporary directory) and `<name>::postgres` (a throwaway database on the server at
//! 127.0.0.1:5432). Migrations, transactional batches, interrupted runs, cache entries,
//! reproducibility checks and waiver uses.

use maestro_store::pg::Throwaway;
use maestro_store::{
    ArtifactRow, AttemptRow, AuditLink, Batch, CacheEntry, DeploymentRefusal, EnvironmentRow,
    FlagKillRow, JobLog, JobRow, NewDeployment, NewRun, PgStore, ReleaseRow, Report, ReportOutcome,
    ReproRow, RunStatus, SessionRow, SqliteStore, Store, TestRow, TokenRow, WaiverUseRow,
};

/// Where a test's store lives; `open` opens it again (a new connection, as a restarted
/// process would).
enum Fixture {
    Sqlite(tempfile::TempDir),
    Postgres(Throwaway),
}

impl Fixture {
    fn sqlite() -> Fixture {
        Fixture::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    fn postgres() -> Fixture {
        Fixture::Postgres(Throwaway::new("store"))
    }

    fn location(&self) -> String {
        match self {
            Fixture::Sqlite(d) => d.path().join("store.db").display().to_string(),
            Fixture::Postgres(db) => db.url.clone(),
        }
    }

    fn open(&self) -> Box<dyn Store> {
        maestro_store::open(&self.location()).expect("open the store")
    }

    fn schema_version(&self) -> i64 {
        match self {
            Fixture::Sqlite(d) => SqliteStore::open(&d.path().join("store.db"))
                .expect("open")
                .schema_version()
                .expect("version"),
            Fixture::Postgres(db) => PgStore::open(&db.url)
                .expect("open")
                .schema_version()
                .expect("version"),
        }
    }

    /// Pretends a newer Maestro migrated the store.
    fn bump_schema(&self, to: i64) {
        match self {
            Fixture::Sqlite(d) => rusqlite::Connection::open(d.path().join("store.db"))
                .expect("raw open")
                .pragma_update(None, "user_version", to)
                .expect("bump"),
            Fixture::Postgres(db) => {
                postgres::Client::connect(&db.url, postgres::NoTls)
                    .expect("raw connect")
                    .execute("UPDATE maestro_schema SET version = $1", &[&to])
                    .expect("bump");
            }
        }
    }
}

/// Each test body as `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both {
    ($($name:ident($fx:ident) $body:block)*) => {$(
        mod $name {
            #[allow(clippy::allow_attributes, unused_imports, reason = "shared prelude")]
            use super::*;

            fn case($fx: &Fixture) $body

            #[test]
            fn sqlite() {
                case(&Fixture::sqlite());
            }

            #[test]
            fn postgres() {
                case(&Fixture::postgres());
            }
        }
    )*};
}

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

/// A store with one run begun.
fn store_with_run(fx: &Fixture) -> (Box<dyn Store>, i64) {
    let mut s = fx.open();
    let run = s
        .begin_run(&NewRun {
            pipeline: "p".into(),
            root: "/r".into(),
            ..NewRun::default()
        })
        .expect("begin");
    (s, run)
}

on_both! {
api_tokens_are_found_by_hash_listed_and_revoked_once(fx) {
    let mut s = fx.open();
    let t = TokenRow {
        id: "tok_1".into(),
        hash: "ab".repeat(32),
        name: "ci".into(),
        actor: "ci:checkout".into(),
        roles: vec!["developer".into()],
        teams: vec!["payments".into()],
        tenant: "acme".into(),
        scopes: vec!["runs:write".into(), "runs:read".into()],
        created_at_ms: 1,
        expires_at_ms: 100,
        revoked_at_ms: None,
    };
    s.token_create(&t).expect("create");
    assert!(s.token_create(&t).is_err(), "an id is never reused");
    assert_eq!(s.token_by_hash(&t.hash).expect("find"), Some(t.clone()));
    assert_eq!(s.token_by_hash(&"cd".repeat(32)).expect("find"), None);
    let second = TokenRow { id: "tok_2".into(), hash: "ef".repeat(32), created_at_ms: 2, ..t.clone() };
    s.token_create(&second).expect("create");
    let ids: Vec<String> = s.token_list().expect("list").into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["tok_2", "tok_1"]);
    assert!(s.token_revoke("tok_1", 50).expect("revoke"));
    assert!(!s.token_revoke("tok_1", 60).expect("revoke again"), "revoked once");
    assert!(!s.token_revoke("tok_9", 60).expect("revoke unknown"));
    assert_eq!(s.token_by_hash(&t.hash).expect("find").and_then(|t| t.revoked_at_ms), Some(50));
}

console_sessions_carry_their_token_and_end_once(fx) {
    let mut s = fx.open();
    let t = TokenRow {
        id: "tok_1".into(),
        hash: "ab".repeat(32),
        actor: "user:alice".into(),
        tenant: "acme".into(),
        scopes: vec!["*".into()],
        expires_at_ms: 100,
        ..TokenRow::default()
    };
    s.token_create(&t).expect("token");
    let by_token = SessionRow {
        id_hash: "01".repeat(32),
        token_id: Some("tok_1".into()),
        actor: r#"{"id":"acme/user:alice"}"#.into(),
        created_at_ms: 1,
        expires_at_ms: 50,
        revoked_at_ms: None,
    };
    s.session_create(&by_token).expect("create");
    assert!(s.session_create(&by_token).is_err(), "an id is never reused");
    let oidc = SessionRow { id_hash: "02".repeat(32), token_id: None, ..by_token.clone() };
    s.session_create(&oidc).expect("create");
    assert_eq!(s.session(&by_token.id_hash).expect("read"), Some((by_token.clone(), Some(t.clone()))));
    assert_eq!(s.session(&oidc.id_hash).expect("read"), Some((oidc.clone(), None)));
    assert_eq!(s.session(&"03".repeat(32)).expect("read"), None);
    // The token's revocation is what the session sees next.
    s.token_revoke("tok_1", 7).expect("revoke");
    let (_, token) = s.session(&by_token.id_hash).expect("read").expect("there");
    assert_eq!(token.and_then(|t| t.revoked_at_ms), Some(7));
    assert!(s.session_revoke(&by_token.id_hash, 9).expect("end"));
    assert!(!s.session_revoke(&by_token.id_hash, 10).expect("end again"), "ended once");
    assert_eq!(s.session(&by_token.id_hash).expect("read").map(|(r, _)| r.revoked_at_ms), Some(Some(9)));
}

runs_round_trip_and_interrupted_runs_are_marked(fx) {
    let run_id;
    {
        let mut s = fx.open();
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
    assert_eq!(fx.schema_version(), 12);
    let mut s = fx.open();
    assert_eq!(s.mark_interrupted(99).expect("mark"), vec![run_id]);
    assert_eq!(
        s.mark_interrupted(100).expect("mark again"),
        Vec::<i64>::new()
    );
    let d = s.run_detail(run_id).expect("detail");
    assert_eq!(d.run.status, RunStatus::Interrupted);
    assert_eq!(d.run.finished_at_ms, Some(99));
    assert_eq!((d.run.jobs, d.run.cached, d.run.failed), (2, 1, 1));
    assert_eq!(d.jobs[0], job("a", "succeeded", "miss"), "a job comes back as it was recorded");
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
    assert!(s.last_job_record("nope").expect("last").is_none());
    s.finish_run(run_id, RunStatus::Failed, 120).expect("finish");
    let listed = s.list_runs(None, 10).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].status, listed[0].finished_at_ms), (RunStatus::Failed, Some(120)));
    assert!(matches!(
        s.finish_run(run_id + 1, RunStatus::Failed, 1),
        Err(maestro_store::StoreError::NoSuchRun(_))
    ));
    assert!(s.run_detail(run_id + 1).is_err());
}

a_job_recorded_again_replaces_its_rows(fx) {
    let (mut s, run) = store_with_run(fx);
    let first = job("a", "failed", "miss");
    s.record(run, &Batch { jobs: vec![first], ..Batch::default() }).expect("record");
    let mut again = job("a", "succeeded", "miss");
    again.tests[0].name = "t2".into();
    s.record(run, &Batch { jobs: vec![again.clone()], ..Batch::default() }).expect("again");
    let d = s.run_detail(run).expect("detail");
    assert_eq!(d.jobs, vec![again]);
}

tests_keep_their_recorded_order(fx) {
    let (mut s, run) = store_with_run(fx);
    let mut j = job("a", "succeeded", "miss");
    j.tests = ["zeta", "alpha", "mid"]
        .iter()
        .map(|n| TestRow { name: (*n).into(), ..j.tests[0].clone() })
        .collect();
    s.record(run, &Batch { jobs: vec![j], ..Batch::default() }).expect("record");
    let names: Vec<String> = s.run_detail(run).expect("detail").jobs[0]
        .tests
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
}

a_failing_batch_writes_nothing(fx) {
    let mut s = fx.open();
    // Jobs reference runs by foreign key: run 42 does not exist, so the batch fails whole.
    let batch = Batch {
        cache_put: vec![entry("k", 1)],
        jobs: vec![job("a", "succeeded", "miss")],
        ..Batch::default()
    };
    assert!(s.record(42, &batch).is_err());
    assert!(
        s.cache_get("k").expect("get").is_none(),
        "the cache entry of a failed batch must not persist"
    );
}

cache_entries_lookup_explain_and_gc(fx) {
    let mut s = fx.open();
    let run = s.begin_run(&NewRun::default()).expect("begin");
    s.record(
        run,
        &Batch {
            cache_put: vec![entry("old", 1), entry("new", 50)],
            ..Batch::default()
        },
    )
    .expect("put");
    assert_eq!(s.cache_get("new").expect("get"), Some(entry("new", 50)));
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
        (gc.removed_entries, gc.removed_bytes), (1, 10),
        "only `new` was unused since the cutoff"
    );
    assert!(s.cache_get("new").expect("get").is_none());
    let refs = s.referenced_blobs().expect("refs");
    assert!(refs.contains("blob-old") && refs.contains("log-old") && !refs.contains("blob-new"));
    s.record(
        run,
        &Batch {
            jobs: vec![job("a", "succeeded", "hit"), job("b", "succeeded", "miss")],
            ..Batch::default()
        },
    )
    .expect("jobs");
    let stats = s.cache_stats().expect("stats");
    assert_eq!(
        (stats.entries, stats.bytes, stats.hits, stats.misses, stats.last_run_hits, stats.last_run_misses),
        (1, 10, 1, 1, 1, 1)
    );
    s.cache_remove("old").expect("remove");
    assert!(s.cache_get("old").expect("get").is_none());
}

a_lease_has_one_holder_at_a_time_and_its_token_only_grows(fx) {
    let (mut a, mut b) = (fx.open(), fx.open());
    let got = a.lease_acquire("canary:checkout", "conductor-a", 1_000, 0).expect("acquire");
    assert_eq!(got.as_ref().map(|l| (l.holder.as_str(), l.token, l.expires_at_ms)), Some(("conductor-a", 1, 1_000)));
    assert_eq!(b.lease_acquire("canary:checkout", "conductor-b", 1_000, 500).expect("acquire"), None, "a's lease runs");
    assert!(b.lease_acquire("canary:billing", "conductor-b", 1_000, 500).expect("acquire").is_some(), "another name is free");
    // a renews: same token, later expiry.
    let renewed = a.lease_acquire("canary:checkout", "conductor-a", 1_000, 900).expect("renew").expect("held");
    assert_eq!((renewed.token, renewed.expires_at_ms), (1, 1_900));
    // a stalls past expiry: b takes over with a larger token, and a's renewal fails.
    let taken = b.lease_acquire("canary:checkout", "conductor-b", 1_000, 2_000).expect("acquire").expect("lapsed");
    assert_eq!((taken.holder.as_str(), taken.token), ("conductor-b", 2));
    assert_eq!(a.lease_acquire("canary:checkout", "conductor-a", 1_000, 2_100).expect("renew"), None);
    assert!(!a.lease_release("canary:checkout", "conductor-a", 2_100).expect("release"), "not a's to release");
    assert!(b.lease_release("canary:checkout", "conductor-b", 2_200).expect("release"));
    assert!(!b.lease_release("canary:checkout", "conductor-b", 2_200).expect("release"), "released once");
    // Released: the next holder (even the same one) gets a new, larger token at once.
    let again = a.lease_acquire("canary:checkout", "conductor-a", 1_000, 2_300).expect("acquire").expect("free");
    assert_eq!(again.token, 3);
    let back = a.lease_acquire("canary:checkout", "conductor-a", 1_000, 2_400).expect("renew").expect("held");
    assert_eq!(back.token, 3, "a renewal keeps the token");
}

of_many_racing_conductors_exactly_one_gets_the_lease(fx) {
    drop(fx.open());
    let winners: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let mut s = fx.open();
                scope.spawn(move || {
                    s.lease_acquire("release-train", &format!("conductor-{i}"), 60_000, 1_000)
                        .expect("acquire")
                        .is_some()
                })
            })
            .collect();
        handles.into_iter().map(|h| usize::from(h.join().expect("thread"))).sum()
    });
    assert_eq!(winners, 1);
}

a_remote_run_takes_reports_once_in_order_from_its_reporter_only(fx) {
    let mut s = fx.open();
    let run = s
        .begin_run(&NewRun {
            pipeline: "p".into(),
            tenant: "acme".into(),
            started_at_ms: 100,
            reporter: Some("ci@acme".into()),
            remote_key: Some("k-1".into()),
            ..NewRun::default()
        })
        .expect("begin");
    // Begun again with the same key (the first answer was lost): the same run. Another
    // reporter's same key, or another key, is another run.
    let again = NewRun { reporter: Some("ci@acme".into()), remote_key: Some("k-1".into()), ..NewRun::default() };
    assert_eq!(s.begin_run(&again).expect("again"), run);
    let theirs = NewRun { reporter: Some("ci@other".into()), ..again.clone() };
    assert_ne!(s.begin_run(&theirs).expect("theirs"), run);
    let row = s.run(run).expect("row");
    assert_eq!((row.pipeline.as_str(), row.reporter.as_deref(), row.status), ("p", Some("ci@acme"), RunStatus::Running));
    assert!(matches!(s.run(9_999), Err(maestro_store::StoreError::NoSuchRun(9_999))));
    let first = Report {
        seq: 1,
        jobs: vec![job("build", "succeeded", "miss")],
        logs: vec![JobLog { job: "build".into(), tail: "compiling\ndone".into(), bytes: 4_000 }],
        status: None,
    };
    assert_eq!(s.report(run, "ci@acme", &first, 200).expect("report"), ReportOutcome::Applied);
    // The same report again (its answer was lost): applied once, the tests not doubled.
    assert_eq!(s.report(run, "ci@acme", &first, 210).expect("retry"), ReportOutcome::Duplicate);
    assert_eq!(s.run_detail(run).expect("detail").jobs[0].tests.len(), 1);
    // Someone else cannot report to it, nor to a run of the conductor's machine.
    let other = Report { seq: 2, ..Report::default() };
    assert_eq!(
        s.report(run, "mallory", &other, 220).expect("report"),
        ReportOutcome::NotReporter(Some("ci@acme".into()))
    );
    let local = s.begin_run(&NewRun::default()).expect("local run");
    assert_eq!(s.report(local, "ci@acme", &other, 220).expect("report"), ReportOutcome::NotReporter(None));
    assert!(matches!(
        s.report(9_999, "ci@acme", &other, 220),
        Err(maestro_store::StoreError::NoSuchRun(9_999))
    ));
    let last = Report {
        seq: 2,
        jobs: vec![job("test", "failed", "miss")],
        logs: vec![JobLog { job: "test".into(), tail: "assertion failed".into(), bytes: 16 }],
        status: Some(RunStatus::Failed),
    };
    assert_eq!(s.report(run, "ci@acme", &last, 300).expect("close"), ReportOutcome::Applied);
    assert_eq!(s.report(run, "ci@acme", &last, 310).expect("retry"), ReportOutcome::Duplicate);
    let late = Report { seq: 3, ..Report::default() };
    assert_eq!(s.report(run, "ci@acme", &late, 320).expect("late"), ReportOutcome::Closed(RunStatus::Failed));
    let d = s.run_detail(run).expect("detail");
    assert_eq!((d.run.status, d.run.finished_at_ms, d.run.reporter.as_deref()), (RunStatus::Failed, Some(300), Some("ci@acme")));
    assert_eq!((d.run.jobs, d.run.failed, d.run.tenant.as_str()), (2, 1, "acme"));
    let log = s.job_log(run, "build").expect("log").expect("reported");
    assert_eq!((log.tail.as_str(), log.bytes), ("compiling\ndone", 4_000));
    assert_eq!(s.job_log(run, "deploy").expect("log"), None);
    // Nothing of a failed report is kept: a job of another run's name clash aside, a
    // report for a closed run wrote nothing.
    assert_eq!(s.job_log(run, "late").expect("log"), None);
}

remote_runs_are_not_interrupted_by_a_local_restart_but_when_they_go_quiet(fx) {
    let mut s = fx.open();
    let remote = |s: &mut Box<dyn Store>, at: i64| {
        s.begin_run(&NewRun { reporter: Some("ci".into()), started_at_ms: at, ..NewRun::default() }).expect("begin")
    };
    let quiet = remote(&mut s, 1_000);
    let chatty = remote(&mut s, 1_000);
    let local = s.begin_run(&NewRun { started_at_ms: 1_000, ..NewRun::default() }).expect("local");
    assert_eq!(s.mark_interrupted(2_000).expect("recover"), [local], "remote runs are alive elsewhere");
    assert_eq!(
        s.report(chatty, "ci", &Report { seq: 1, ..Report::default() }, 50_000).expect("heartbeat"),
        ReportOutcome::Applied
    );
    let lease = s.lease_acquire("remote-reaper", "conductor-a", 10_000, 60_000).expect("lease").expect("free");
    // Quiet since before 30 000: only `quiet` (last heard at 1 000; `chatty` at 50 000).
    assert_eq!(s.reap_remote(&lease, 30_000, 60_000).expect("reap"), [quiet]);
    assert_eq!(s.reap_remote(&lease, 30_000, 61_000).expect("again"), Vec::<i64>::new());
    let d = s.run_detail(quiet).expect("detail");
    assert_eq!((d.run.status, d.run.finished_at_ms), (RunStatus::Interrupted, Some(60_000)));
    assert_eq!(s.run_detail(chatty).expect("detail").run.status, RunStatus::Running);
    // A conductor whose lease lapsed (or was taken over: another token) changes nothing.
    let stale = remote(&mut s, 1_000);
    assert_eq!(s.reap_remote(&lease, 30_000, 80_000).expect("lapsed"), Vec::<i64>::new());
    let mut other = fx.open();
    let taken = other.lease_acquire("remote-reaper", "conductor-b", 10_000, 80_000).expect("lease").expect("lapsed");
    assert_eq!(s.reap_remote(&lease, 30_000, 80_500).expect("fenced"), Vec::<i64>::new());
    assert_eq!(s.run_detail(stale).expect("detail").run.status, RunStatus::Running);
    assert_eq!(other.reap_remote(&taken, 30_000, 81_000).expect("reap"), [stale]);
}

a_run_carries_its_tenant_and_trace(fx) {
    let mut s = fx.open();
    let plain = s.begin_run(&NewRun { pipeline: "p".into(), ..NewRun::default() }).expect("begin");
    let acme = s
        .begin_run(&NewRun {
            pipeline: "p".into(),
            tenant: "acme".into(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ..NewRun::default()
        })
        .expect("begin");
    let runs = s.list_runs(None, 10).expect("list");
    let of = |id: i64| runs.iter().find(|r| r.id == id).expect("listed").clone();
    assert_eq!((of(plain).tenant.as_str(), of(plain).trace_id), ("default", None));
    assert_eq!(of(acme).tenant, "acme");
    let detail = s.run_detail(acme).expect("detail");
    assert_eq!(detail.run.trace_id.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!((detail.root.as_str(), detail.run.tenant.as_str()), ("", "acme"));
}

run_metrics_count_runs_by_status_and_bucket_executed_jobs(fx) {
    let (mut s, run) = store_with_run(fx);
    let slow = JobRow { duration_ms: 2_500, ..job("slow", "failed", "miss") };
    s.record(
        run,
        &Batch {
            jobs: vec![job("a", "succeeded", "hit"), job("b", "succeeded", "miss"), slow],
            ..Batch::default()
        },
    )
    .expect("jobs");
    s.finish_run(run, RunStatus::Failed, 10).expect("finish");
    s.begin_run(&NewRun::default()).expect("a running one");
    let m = s.run_metrics(&[1, 100, 1_000, 10_000]).expect("metrics");
    assert_eq!(m.runs, [("failed".to_owned(), 1), ("running".to_owned(), 1)]);
    // Only executed jobs (misses): b took 5 ms, slow 2.5 s.
    assert_eq!((m.job_count, m.job_sum_ms), (2, 2_505));
    assert_eq!(m.job_buckets, [0, 1, 1, 2]);
}

a_flaky_failure_is_found_by_its_key(fx) {
    let (mut s, first) = store_with_run(fx);
    s.record(first, &Batch { jobs: vec![job("a", "failed", "miss")], ..Batch::default() })
        .expect("record");
    let second = s.begin_run(&NewRun::default()).expect("begin");
    assert_eq!(s.failed_with_key("a", "key-a", second).expect("query"), Some(first));
    assert_eq!(s.failed_with_key("a", "key-a", first).expect("query"), None);
    assert_eq!(s.failed_with_key("a", "other", second).expect("query"), None);
}

a_newer_schema_is_refused(fx) {
    drop(fx.open());
    fx.bump_schema(99);
    let err = maestro_store::open(&fx.location()).expect_err("too new");
    assert!(err.to_string().contains("newer than this Maestro"), "{err}");
}

flag_kill_switches_are_set_and_restored_with_who_and_why(fx) {
    let mut s = fx.open();
    assert!(s.flag_kills().expect("list").is_empty());
    let row = |killed: bool, at: i64| FlagKillRow { key: "welsh-greetings".into(), killed, actor: "user:ops".into(), reason: format!("at {at}"), updated_at_ms: at };
    s.flag_kill_set(&row(true, 1_000)).expect("kill");
    s.flag_kill_set(&FlagKillRow { key: "banner".into(), ..row(true, 1_100) }).expect("kill another");
    s.flag_kill_set(&row(false, 2_000)).expect("restore");
    assert_eq!(s.flag_kills().expect("list"), [FlagKillRow { key: "banner".into(), ..row(true, 1_100) }, row(false, 2_000)]);
}

releases_are_one_per_version_and_save_their_progress(fx) {
    let mut s = fx.open();
    let r = ReleaseRow { tenant: "acme".into(), service: "hello-service".into(), version: "1.2.0".into(), commit: "c".repeat(40), artifact: "/a.tar.gz".into(), digest: "sha256:00".into(), status: "cut".into(), state: "{}".into(), notes: "## 1.2.0".into(), actor: "user:ops".into(), reason: "weekly".into(), created_at_ms: 5, updated_at_ms: 5, id: 0 };
    let id = s.release_create(&r).expect("create").expect("new");
    assert_eq!(s.release_create(&r).expect("again"), None, "one release per version");
    let other = ReleaseRow { tenant: "other".into(), ..r.clone() };
    assert!(s.release_create(&other).expect("another tenant").is_some());
    assert!(s.release_save(id, None, "progressing", r#"{"step":1}"#, 9).expect("save"));
    // A driver saving as `progressing` after a rollback meanwhile changes nothing.
    assert!(!s.release_save(id, Some("blocked"), "released", "{}", 10).expect("save"));
    let got = s.release("acme", "hello-service", "1.2.0").expect("read").expect("found");
    assert_eq!(got, ReleaseRow { id, status: "progressing".into(), state: r#"{"step":1}"#.into(), updated_at_ms: 9, ..r });
    assert_eq!(s.release("acme", "hello-service", "9.9.9").expect("read"), None);
    assert_eq!(s.releases(Some("acme"), 10).expect("list").len(), 1);
    assert_eq!(s.releases(None, 10).expect("list").len(), 2);
    let progressing: Vec<i64> = s.releases_progressing().expect("query").iter().map(|r| r.id).collect();
    assert_eq!(progressing, [id]);
}

runs_are_found_by_commit_newest_first(fx) {
    let mut s = fx.open();
    let sha = "a".repeat(40);
    let mut ids = Vec::new();
    for commit in [Some(sha.clone()), None, Some(sha.clone()), Some("b".repeat(40))] {
        ids.push(s.begin_run(&NewRun { pipeline: "p".into(), root: "/r".into(), commit, ..NewRun::default() }).expect("begin"));
    }
    let got: Vec<i64> = s.runs_at_commit("default", &sha, 10).expect("query").iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[2], ids[0]]);
    assert_eq!(s.runs_at_commit("default", &sha, 1).expect("query").len(), 1);
    // Another tenant's runs at the same commit, newer and more: they starve nothing.
    for _ in 0..5 {
        s.begin_run(&NewRun { pipeline: "p".into(), root: "/r".into(), commit: Some(sha.clone()), tenant: "globex".into(), ..NewRun::default() }).expect("begin");
    }
    let got: Vec<i64> = s.runs_at_commit("default", &sha, 2).expect("query").iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[2], ids[0]]);
    assert_eq!(s.runs_at_commit("globex", &sha, 10).expect("query").len(), 5);
    let mine: Vec<i64> = s.list_runs(Some("default"), 3).expect("list").iter().map(|r| r.id).collect();
    assert_eq!(mine, [ids[3], ids[2], ids[1]], "a page of one's own runs, however many the other has");
    assert_eq!(s.list_runs(None, 100).expect("list").len(), 9);
}

repro_checks_attach_to_their_run(fx) {
    let (mut s, run) = store_with_run(fx);
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

waiver_uses_are_recorded_newest_first(fx) {
    let (mut s, run) = store_with_run(fx);
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

deployments_one_active_per_environment_promotion_sets_stable_and_an_ended_one_is_final(fx) {
    let mut s = fx.open();
    let new = |env: &str, version: &str, now: i64| NewDeployment {
        environment: env.into(),
        service: "hello-service".into(),
        tenant: String::new(),
        version: version.into(),
        artifact: format!("sha256:{version}"),
        release_dir: format!("/envs/{env}/releases/{version}"),
        previous: Some("v1".into()),
        plan: "{}".into(),
        state: "{\"step\":0}".into(),
        env: "{}".into(),
        actor: "user:alice".into(),
        reason: "ship the fix".into(),
        run_id: None,
        now_ms: now,
    };
    let first = s.deployment_begin(&new("stage", "v2", 1_000)).expect("begin").expect("opened");
    assert_eq!(s.deployment_begin(&new("stage", "v3", 1_100)).expect("begin"), Err(DeploymentRefusal::Busy(first)), "one at a time per environment");
    let other = s.deployment_begin(&new("prod", "v2", 1_200)).expect("begin").expect("another environment is free");
    let row = s.deployment(first).expect("read").expect("there");
    assert_eq!((row.status.as_str(), row.tenant.as_str(), row.active()), ("progressing", "default", true));

    s.deployment_save(first, "paused", "{\"step\":1}", 2_000, None).expect("save").expect("saved");
    assert_eq!(s.environment("stage").expect("read"), None, "nothing stable until a promotion");
    s.deployment_save(first, "promoted", "{\"step\":3}", 3_000, None).expect("save").expect("saved");
    let stable = s.environment("stage").expect("read").expect("stable");
    assert_eq!((stable.version.as_str(), stable.deployment_id, stable.updated_at_ms), ("v2", Some(first), 3_000));
    assert_eq!(stable.release_dir, "/envs/stage/releases/v2");
    // Ended is final: a late writer (a controller that lost its lease) changes nothing.
    assert_eq!(s.deployment_save(first, "rolled_back", "{}", 4_000, None).expect("save"), Err(DeploymentRefusal::Ended("promoted".into())));
    assert_eq!(s.deployment(first).expect("read").expect("there").state, "{\"step\":3}");
    assert_eq!(s.deployment_save(999, "paused", "{}", 4_000, None).expect("save"), Err(DeploymentRefusal::NotFound));

    // A rollback leaves stable where it was.
    let second = s.deployment_begin(&new("stage", "v3", 5_000)).expect("begin").expect("free again");
    s.deployment_save(second, "rolled_back", "{}", 6_000, None).expect("save").expect("saved");
    assert_eq!(s.environment("stage").expect("read").expect("stable").version, "v2");

    let all: Vec<i64> = s.deployments(Some("stage"), false, 10).expect("list").iter().map(|d| d.id).collect();
    assert_eq!(all, [second, first]);
    let active: Vec<i64> = s.deployments(None, true, 10).expect("list").iter().map(|d| d.id).collect();
    assert_eq!(active, [other]);

    // Fenced: only the current holder of the environment's lease writes.
    let dev = s.deployment_begin(&new("qa", "v2", 6_400)).expect("begin").expect("opened");
    let mine = s.lease_acquire("environment:qa", "conductor-a", 1_000, 6_400).expect("lease").expect("free");
    s.deployment_save(dev, "progressing", "{\"step\":1}", 6_500, Some(&mine)).expect("save").expect("current lease");
    // a's lease lapses and b takes it: a's late write changes nothing.
    let theirs = s.lease_acquire("environment:qa", "conductor-b", 1_000, 7_500).expect("lease").expect("lapsed");
    assert!(theirs.token > mine.token);
    assert_eq!(s.deployment_save(dev, "rolled_back", "{}", 7_600, Some(&mine)).expect("save"), Err(DeploymentRefusal::Fenced));
    assert_eq!(s.deployment(dev).expect("read").expect("there").state, "{\"step\":1}");
    s.deployment_save(dev, "paused", "{\"step\":2}", 7_700, Some(&theirs)).expect("save").expect("the new holder writes");

    // The deployments a pipeline run started.
    let from_run = s.deployment_begin(&NewDeployment { run_id: Some(42), ..new("dev", "v2", 6_500) }).expect("begin").expect("opened");
    assert_eq!(s.run_deployments(42).expect("list").iter().map(|d| (d.id, d.run_id)).collect::<Vec<_>>(), [(from_run, Some(42))]);
    assert!(s.run_deployments(7).expect("list").is_empty());

    // A release set by hand (a first deploy, a rollback to an earlier good one).
    s.environment_set(&EnvironmentRow { name: "stage".into(), version: "v1".into(), artifact: "sha256:v1".into(), release_dir: "/r/v1".into(), deployment_id: None, updated_at_ms: 7_000 }).expect("set");
    assert_eq!(s.environment("stage").expect("read").expect("stable").version, "v1");
}
}

/// Both dialects make the same tables with the same columns (PostgreSQL's `test_results`
/// adds `seq`, the insertion order SQLite keeps in its implicit `rowid`).
#[test]
fn both_backends_have_the_same_schema() {
    let sqlite = Fixture::sqlite();
    drop(sqlite.open());
    let conn = rusqlite::Connection::open(sqlite.location()).expect("raw open");
    let mut lite: Vec<(String, String)> = conn
        .prepare(
            "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let pg = Fixture::postgres();
    drop(pg.open());
    let mut client = postgres::Client::connect(&pg.location(), postgres::NoTls).expect("connect");
    let mut theirs: Vec<(String, String)> = client
        .query(
            "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name <> 'maestro_schema'
             AND NOT (table_name = 'test_results' AND column_name = 'seq')",
            &[],
        )
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    lite.sort();
    theirs.sort();
    assert!(lite.len() > 40, "{lite:?}");
    assert_eq!(lite, theirs);
}
