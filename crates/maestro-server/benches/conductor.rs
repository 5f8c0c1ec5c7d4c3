//! The conductor under load (`bench/conductor`): wrk on loopback against a REST listing
//! (`GET /api/v1/runs?limit=20`) and a persisted GraphQL query (`RunList`, by id over
//! GET), authenticated with a viewer token, on SQLite and on PostgreSQL, with the Rego
//! policy deciding (ABAC on) and with authorization bypassed (a `bench`-feature-only
//! policy) in the same run; the ratio is what authorization costs.
//!
//! The saturating wrk runs alternate ABAC on and off for `--rounds` rounds and report
//! the median, so a noisy neighbour on the two cores cannot decide the ratio. A second,
//! paced load (wrk with a pacing script, `--rate` requests/s spread over the same
//! connections) reports the latency a client sees when the conductor is not saturated: a
//! closed-loop tool at 500 connections measures only its own queue (p50 ≈ connections ÷
//! throughput).
//!
//! `--duration S` (default 10), `--connections N` (default 500), `--rounds N` (default 3),
//! `--rate R` (default 1000), `--no-pg`.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::sync::Arc;

use maestro_bench::{Load, Script, Wrk, middle};

use maestro_server::auth::issue;
use maestro_server::authz::Policy;
use maestro_server::{AppState, Settings, persisted};
use maestro_store::pg::Throwaway;
use maestro_store::{Batch, JobRow, NewRun, RunStatus, TokenRow};

/// 200 runs of 6 jobs each, and a viewer token; the token's secret.
fn populate(location: &str) -> String {
    let mut store = maestro_store::open(location).expect("open the store");
    for i in 0..200 {
        let run = store
            .begin_run(&NewRun {
                pipeline: "checkout".into(),
                commit: Some(format!("{i:040x}")),
                branch: Some("main".into()),
                started_at_ms: maestro_server::now_ms(),
                ..NewRun::default()
            })
            .expect("run");
        let jobs = (0..6)
            .map(|j| JobRow {
                name: format!("job-{j}"),
                gate: Some("fast".into()),
                status: "succeeded".into(),
                cache: if j % 2 == 0 { "hit" } else { "miss" }.into(),
                duration_ms: 1200,
                ..JobRow::default()
            })
            .collect();
        store
            .record(
                run,
                &Batch {
                    jobs,
                    ..Batch::default()
                },
            )
            .expect("record");
        store
            .finish_run(run, RunStatus::Succeeded, maestro_server::now_ms())
            .expect("finish");
    }
    let (secret, row) = issue(
        &TokenRow {
            name: "bench".into(),
            actor: "user:bench".into(),
            roles: vec!["viewer".into()],
            teams: vec!["payments".into()],
            tenant: "default".into(),
            scopes: vec!["*".into()],
            ..TokenRow::default()
        },
        3_600_000,
        maestro_server::now_ms(),
    )
    .expect("issue");
    store.token_create(&row).expect("token");
    secret
}

fn start(location: &str, policy: Policy) -> maestro_server::Background {
    let config = Settings {
        listen: Some("127.0.0.1:0".into()),
        database: Some(location.to_owned()),
        max_connections: Some(16),
        ..Settings::default()
    }
    .validate("unused")
    .expect("settings");
    let state: Arc<AppState> = AppState::with_policy(&config, policy).expect("state");
    maestro_server::Background::start(state, &config, 2).expect("the conductor started")
}

/// One line of the table; `saturated` rows get the cost column (a paced row's req/s is
/// the offered load, not a capacity).
fn row(name: &str, label: &str, on: Load, off: Load, saturated: bool) {
    let cost = if !saturated {
        "paced".to_owned()
    } else if off.rps > 0.0 {
        format!("{:.1}%", (1.0 - on.rps / off.rps) * 100.0)
    } else {
        "n/a".to_owned()
    };
    println!(
        "{name:<11} {label:<40} {:>10.0} {:>8.2} {:>8.2} | {:>10.0} {:>8.2} {:>8.2} | {cost:>6}",
        on.rps, on.p50_ms, on.p99_ms, off.rps, off.p50_ms, off.p99_ms
    );
    if on.errors + off.errors > 0 {
        println!(
            "            ({} failed requests with ABAC, {} without)",
            on.errors, off.errors
        );
    }
}

fn main() {
    let flags = maestro_bench::Flags::from_env();
    let a = maestro_bench::LoadArgs::parse(&flags, 10, 500, 1000);
    let pg = !flags.on("--no-pg");
    let script = Script::paced();
    if !maestro_bench::wrk_installed() {
        println!("wrk is not installed: apt-get install wrk");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("store.db").display().to_string();
    let mut backends: Vec<(&str, String, Option<Throwaway>)> = vec![("SQLite", sqlite, None)];
    if pg {
        let db = Throwaway::new("bench_conductor");
        backends.push(("PostgreSQL", db.url.clone(), Some(db)));
    }
    let run_list = persisted::by_name("RunList").expect("RunList").id;
    let endpoints = [
        (
            "REST /api/v1/runs?limit=20",
            "/api/v1/runs?limit=20".to_owned(),
        ),
        (
            "GraphQL RunList (persisted)",
            format!("/graphql?id={run_list}&variables=%7B%22limit%22%3A20%7D"),
        ),
    ];
    println!(
        "conductor: wrk -t2 -c{c} -d{d}s saturating (median of {r} alternating rounds) and paced at {rate} req/s, viewer token, 200 runs in the store, 2 server threads",
        c = a.connections,
        d = a.duration,
        r = a.rounds,
        rate = a.rate,
    );
    println!(
        "{:<11} {:<40} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>6}",
        "store",
        "endpoint (load)",
        "ABAC req/s",
        "p50 ms",
        "p99 ms",
        "off req/s",
        "p50 ms",
        "p99 ms",
        "cost"
    );
    for (name, location, _guard) in &backends {
        let token = populate(location);
        let load = Wrk {
            threads: 2,
            connections: a.connections,
            duration_s: a.duration,
            headers: vec![format!("Authorization: Bearer {token}")],
        };
        let warm = Wrk {
            connections: 50,
            duration_s: 1,
            ..load.clone()
        };
        for (label, path) in &endpoints {
            let on_server = start(location, Policy::builtin().expect("policy"));
            let off_server = start(location, Policy::bypass_for_benchmark().expect("policy"));
            let urls = [
                format!("http://{}{path}", on_server.addr),
                format!("http://{}{path}", off_server.addr),
            ];
            // Warm up the connection pools, statement caches and per-thread engines.
            for url in &urls {
                let _ = warm.saturate(url);
            }
            let mut rounds: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..a.rounds {
                for (i, url) in urls.iter().enumerate() {
                    rounds[i].push(load.saturate(url));
                }
            }
            row(
                name,
                &format!("{label} wrk"),
                middle(&rounds[0]),
                middle(&rounds[1]),
                true,
            );
            let on = load.paced(&urls[0], a.rate, &script);
            let off = load.paced(&urls[1], a.rate, &script);
            row(name, &format!("{label} @{}/s", a.rate), on, off, false);
        }
    }
    println!(
        "cost = 1 - ABAC req/s ÷ bypassed req/s (target < 10%); p99 target < 20 ms at {} connections",
        a.connections
    );
}
