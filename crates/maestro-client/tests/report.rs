//! The reporter against a real conductor on loopback (SQLite): jobs arrive in order with
//! their log tails, many jobs are split over several reports, a conductor that goes down
//! in the middle of a run and comes back loses nothing and doubles nothing, and a refusal
//! is reported, not retried.

use std::time::Duration;

use maestro_client::report::{Options, Reporter};
use maestro_client::{ClientError, Conductor, Credential, OpenRun};
use maestro_server::{AppState, Background, Settings};
use maestro_store::{JobLog, JobRow, RunStatus, TokenRow};
use zeroize::Zeroizing;

/// A conductor on `port` (0: any) over the SQLite file `db`, stopped when dropped.
fn start(db: &std::path::Path, port: u16) -> Background {
    let config = Settings {
        listen: Some(format!("127.0.0.1:{port}")),
        database: Some(db.display().to_string()),
        ..Settings::default()
    }
    .validate("unused")
    .expect("config");
    let state = AppState::open(&config).expect("open");
    Background::start(state, &config, 2).expect("the conductor started")
}

fn token(db: &std::path::Path, actor: &str) -> String {
    let (secret, row) = maestro_server::auth::issue(
        &TokenRow {
            name: "ci".into(),
            actor: actor.into(),
            roles: vec!["developer".into()],
            tenant: "acme".into(),
            scopes: vec!["runs:write".into(), "runs:read".into()],
            ..TokenRow::default()
        },
        3_600_000,
        maestro_server::now_ms(),
    )
    .expect("issue");
    maestro_store::open(&db.display().to_string())
        .expect("store")
        .token_create(&row)
        .expect("token");
    secret
}

fn job(name: &str, status: &str) -> JobRow {
    JobRow {
        name: name.into(),
        status: status.into(),
        cache: "miss".into(),
        duration_ms: 5,
        ..JobRow::default()
    }
}

fn quick() -> Options {
    Options {
        heartbeat: Duration::from_secs(30),
        give_up: Duration::from_secs(20),
        max_backoff: Duration::from_millis(200),
        ..Options::default()
    }
}

fn conductor(base: &str, secret: &str) -> Conductor {
    Conductor::new(base, Credential::Static(Zeroizing::new(secret.to_owned()))).expect("client")
}

fn new_run() -> OpenRun {
    OpenRun {
        pipeline: "shop".into(),
        commit: Some("3f2a9c1".into()),
        branch: Some("main".into()),
        args: "run".into(),
        trace_id: None,
        key: OpenRun::new_key(),
    }
}

/// A conductor on a fresh store, a CI token for it, and a run opened with that token.
struct Setup {
    db: std::path::PathBuf,
    server: Background,
    conductor: Conductor,
    opened: maestro_client::Opened,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("conductor.db");
    let server = start(&db, 0);
    let secret = token(&db, "ci:shop");
    let mut conductor = conductor(&server.base(), &secret);
    let opened = conductor.open_run(&new_run(), 3).expect("open");
    Setup {
        db,
        server,
        conductor,
        opened,
        _dir: dir,
    }
}

#[test]
fn many_jobs_arrive_in_several_reports_with_their_tails() {
    let Setup {
        db,
        server,
        conductor: c,
        opened,
        _dir,
    } = setup();
    assert_eq!(
        opened.url,
        format!("{}/console/runs/{}", server.base(), opened.id)
    );
    let reporter = Reporter::start(
        c,
        opened.clone(),
        Options {
            max_jobs: 10,
            ..quick()
        },
    );
    for i in 0..25 {
        let log = JobLog {
            job: format!("job-{i:02}"),
            tail: format!("building {i}\ndone"),
            bytes: 100,
        };
        reporter.job(job(&format!("job-{i:02}"), "succeeded"), Some(log));
    }
    reporter.job(job("test", "failed"), None);
    let delivered = reporter.finish(RunStatus::Failed).expect("delivered");
    assert_eq!(delivered.jobs, 26);
    assert!(
        delivered.reports >= 3,
        "at most 10 jobs a report: {delivered:?}"
    );
    let mut store = maestro_store::open(&db.display().to_string()).expect("store");
    let detail = store.run_detail(opened.id).expect("detail");
    assert_eq!(
        (detail.run.status, detail.run.jobs, detail.run.failed),
        (RunStatus::Failed, 26, 1)
    );
    assert_eq!(
        (detail.run.reporter.as_deref(), detail.run.tenant.as_str()),
        (Some("acme/ci:shop"), "acme")
    );
    let tail = store
        .job_log(opened.id, "job-24")
        .expect("log")
        .expect("tail");
    assert_eq!(tail.tail, "building 24\ndone");
}

#[test]
fn a_conductor_that_goes_down_and_comes_back_gets_every_job_once() {
    let Setup {
        db,
        server: first,
        conductor: c,
        opened,
        _dir,
    } = setup();
    let port = first.addr.port();
    let reporter = Reporter::start(c, opened.clone(), quick());
    reporter.job(job("build", "succeeded"), None);
    // Wait until the first job is in, then take the conductor down.
    let mut store = maestro_store::open(&db.display().to_string()).expect("store");
    for _ in 0..1200 {
        if store.run(opened.id).expect("run").jobs == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        store.run(opened.id).expect("run").jobs,
        1,
        "the first report arrived"
    );
    drop(first);
    reporter.job(job("lint", "succeeded"), None);
    reporter.job(job("test", "succeeded"), None);
    std::thread::sleep(Duration::from_millis(700));
    // Back on the same address and store.
    let _second = start(&db, port);
    let delivered = reporter
        .finish(RunStatus::Succeeded)
        .expect("delivered after the outage");
    assert_eq!(delivered.jobs, 3);
    let detail = store.run_detail(opened.id).expect("detail");
    let mut names: Vec<&str> = detail.jobs.iter().map(|j| j.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["build", "lint", "test"]);
    assert_eq!(detail.run.status, RunStatus::Succeeded);
}

#[test]
fn a_refusal_is_reported_not_retried() {
    let Setup {
        db,
        server,
        conductor: c,
        opened,
        _dir,
    } = setup();
    // The conductor closes the run (as its reaper would) before the reporter is done.
    let mut store = maestro_store::open(&db.display().to_string()).expect("store");
    store
        .finish_run(opened.id, RunStatus::Interrupted, 1)
        .expect("close");
    // A give-up far beyond any slow machine: returning before it means the refusal was
    // not retried (a retried one only ends at the give-up).
    let give_up = Duration::from_secs(300);
    let reporter = Reporter::start(c, opened, Options { give_up, ..quick() });
    reporter.job(job("build", "succeeded"), None);
    let started = std::time::Instant::now();
    let (delivered, error) = reporter.finish(RunStatus::Succeeded).expect_err("refused");
    assert_eq!(delivered.jobs, 0);
    assert!(
        matches!(&error, ClientError::Refused { status: 409, code, .. } if code == "run_closed"),
        "{error}"
    );
    assert!(started.elapsed() < give_up, "retried until the give-up");
    // A token the conductor does not know opens nothing.
    let mut stranger = conductor(&server.base(), "mst_unknown");
    let e = stranger.open_run(&new_run(), 3).expect_err("unauthorized");
    assert!(matches!(e, ClientError::Refused { status: 401, .. }), "{e}");
    assert!(!e.to_string().contains("mst_unknown"), "{e}");
}
