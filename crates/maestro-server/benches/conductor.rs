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

use std::process::Command;
use std::sync::Arc;

use maestro_server::auth::issue;
use maestro_server::authz::Policy;
use maestro_server::{AppState, Settings, persisted};
use maestro_store::pg::Throwaway;
use maestro_store::{Batch, JobRow, NewRun, RunStatus, TokenRow};

struct Args {
    duration: u32,
    connections: u32,
    rounds: usize,
    rate: u32,
    pg: bool,
}

fn args() -> Args {
    let mut a = Args {
        duration: 10,
        connections: 500,
        rounds: 3,
        rate: 1000,
        pg: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--duration" => a.duration = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--connections" => {
                a.connections = it.next().and_then(|v| v.parse().ok()).unwrap_or(500);
            }
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
            "--rate" => {
                a.rate = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000)
                    .max(1)
            }
            "--no-pg" => a.pg = false,
            _ => {}
        }
    }
    a
}

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

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn ms(v: &str) -> f64 {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

fn wrk(url: &str, token: &str, a: &Args) -> Load {
    wrk_with(token, a, &[url.to_owned()])
}

fn wrk_with(token: &str, a: &Args, tail: &[String]) -> Load {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", a.connections),
            &format!("-d{}s", a.duration),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .args(tail)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut l = Load::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            l.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            l.p50_ms = ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            l.p99_ms = ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            l.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if t.starts_with("Socket errors:") {
            l.errors += t
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    l
}

/// wrk paces each connection with this script: exponentially distributed gaps with a mean
/// of `connections ÷ rate`, drawn independently per connection, so the offered load is
/// `rate` requests/s without the synchronized bursts of a fixed per-worker ticker.
const PACED_LUA: &str = r#"
local n = 0
function setup(thread)
  n = n + 1
  thread:set("seed", n)
end
function init(args)
  math.randomseed(seed * 7919)
  mean_ms = tonumber(args[1])
end
function delay()
  return math.floor(-math.log(1 - math.random()) * mean_ms)
end
"#;

/// A paced load: `rate` requests/s in all over `a.connections` connections.
fn paced(url: &str, token: &str, a: &Args, script: &std::path::Path) -> Load {
    let mean_ms = f64::from(a.connections) * 1000.0 / f64::from(a.rate);
    wrk_with(
        token,
        a,
        &[
            "-s".to_owned(),
            script.display().to_string(),
            url.to_owned(),
            "--".to_owned(),
            format!("{mean_ms:.3}"),
        ],
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of each figure over rounds.
fn middle(loads: &[Load]) -> Load {
    Load {
        rps: median(loads.iter().map(|l| l.rps).collect()),
        p50_ms: median(loads.iter().map(|l| l.p50_ms).collect()),
        p99_ms: median(loads.iter().map(|l| l.p99_ms).collect()),
        errors: loads.iter().map(|l| l.errors).sum(),
    }
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
    let a = args();
    let script_dir = tempfile::tempdir().expect("tempdir");
    let script = script_dir.path().join("paced.lua");
    std::fs::write(&script, PACED_LUA).expect("write the pacing script");
    if Command::new("wrk").arg("--version").output().is_err() {
        println!("wrk is not installed: apt-get install wrk");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = dir.path().join("store.db").display().to_string();
    let mut backends: Vec<(&str, String, Option<Throwaway>)> = vec![("SQLite", sqlite, None)];
    if a.pg {
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
        for (label, path) in &endpoints {
            let on_server = start(location, Policy::builtin().expect("policy"));
            let off_server = start(location, Policy::bypass_for_benchmark().expect("policy"));
            let urls = [
                format!("http://{}{path}", on_server.addr),
                format!("http://{}{path}", off_server.addr),
            ];
            // Warm up the connection pools, statement caches and per-thread engines.
            let warm = Args {
                duration: 1,
                connections: 50,
                ..a
            };
            for url in &urls {
                let _ = wrk(url, &token, &warm);
            }
            let mut rounds: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
            for _ in 0..a.rounds {
                for (i, url) in urls.iter().enumerate() {
                    rounds[i].push(wrk(url, &token, &a));
                }
            }
            row(
                name,
                &format!("{label} wrk"),
                middle(&rounds[0]),
                middle(&rounds[1]),
                true,
            );
            let on = paced(&urls[0], &token, &a, &script);
            let off = paced(&urls[1], &token, &a, &script);
            row(name, &format!("{label} @{}/s", a.rate), on, off, false);
        }
    }
    println!(
        "cost = 1 - ABAC req/s ÷ bypassed req/s (target < 10%); p99 target < 20 ms at {} connections",
        a.connections
    );
}
