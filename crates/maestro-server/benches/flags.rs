//! Flag evaluation under load (`bench/flags`): wrk on loopback POSTing OFREP evaluations
//! (`/ofrep/v1/evaluate/flags/{key}`) with a viewer token holding `flags:evaluate`, for a
//! static flag and for one with JsonLogic targeting and a `fractional` split, side by side
//! with the conductor's cheapest authenticated endpoint (`GET /api/v1/whoami`: the HTTP,
//! token and policy floor) in the same run; the ratio is what evaluation costs on top. A
//! paced run reports the latency a client sees when the conductor is not saturated.
//!
//! `--duration S` (default 10), `--connections N` (default 100), `--rounds N` (default 3),
//! `--rate R` (default 5000).

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::sync::Arc;

use maestro_bench::{Load, Script, Wrk, middle};
use maestro_server::auth::issue;
use maestro_server::{AppState, Settings};
use maestro_store::TokenRow;

const REGISTRY: &str = r#"{"flags": {
  "static-flag": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                  "metadata": {"owner": "bench"}},
  "targeted-flag": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue", "green": "green"},
                    "defaultVariant": "red",
                    "targeting": {"if": [{"in": [{"var": "region"}, ["GB-WLS", "GB-SCT"]]},
                                         {"fractional": [["red", 50], ["blue", 30], ["green", 20]]}, null]},
                    "metadata": {"owner": "bench"}}
}}"#;

fn main() {
    let flags = maestro_bench::Flags::from_env();
    let a = maestro_bench::LoadArgs::parse(&flags, 10, 100, 5000);
    if !maestro_bench::wrk_installed() {
        println!("wrk is not installed: apt-get install wrk");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("flags.json");
    std::fs::write(&registry, REGISTRY).expect("registry");
    let location = dir.path().join("store.db").display().to_string();
    let config = Settings {
        listen: Some("127.0.0.1:0".into()),
        database: Some(location.clone()),
        max_connections: Some(16),
        flags: Some(maestro_server::flags::FlagsSettings {
            file: registry,
            tenant: "default".into(),
        }),
        ..Settings::default()
    }
    .validate("unused")
    .expect("settings");
    let state: Arc<AppState> = AppState::open(&config).expect("state");
    let server = maestro_server::Background::start(state, &config, 2).expect("started");
    let (secret, row) = issue(
        &TokenRow {
            name: "app".into(),
            actor: "service:checkout".into(),
            roles: vec!["viewer".into()],
            tenant: "default".into(),
            scopes: vec!["flags:evaluate".into(), "session:read".into()],
            ..TokenRow::default()
        },
        3_600_000,
        maestro_server::now_ms(),
    )
    .expect("issue");
    maestro_store::open(&location)
        .expect("store")
        .token_create(&row)
        .expect("token");
    let load = Wrk {
        threads: 2,
        connections: a.connections,
        duration_s: a.duration,
        headers: vec![format!("Authorization: Bearer {secret}")],
    };
    let base = format!("http://{}", server.addr);
    let body = r#"{"context": {"targetingKey": "user-42", "region": "GB-WLS"}}"#;
    let post = Script::post_json(body, false);
    let paced_post = Script::post_json(body, true);
    let paced_get = Script::paced();
    let whoami = format!("{base}/api/v1/whoami");
    println!(
        "flags: wrk -t2 -c{c} -d{d}s saturating (median of {r} rounds) and paced at {rate} req/s, a viewer token with flags:evaluate, 2 server threads",
        c = a.connections,
        d = a.duration,
        r = a.rounds,
        rate = a.rate
    );
    println!(
        "{:<44} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>6}",
        "OFREP evaluation", "req/s", "p50 ms", "p99 ms", "whoami", "p50 ms", "p99 ms", "ratio"
    );
    let warm = Wrk {
        connections: 20,
        duration_s: 1,
        ..load.clone()
    };
    let _ = warm.saturate(&whoami);
    for key in ["static-flag", "targeted-flag"] {
        let url = format!("{base}/ofrep/v1/evaluate/flags/{key}");
        let _ = warm.scripted(&url, &post);
        let mut rounds: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..a.rounds {
            rounds[0].push(load.scripted(&url, &post));
            rounds[1].push(load.saturate(&whoami));
        }
        let (e, w) = (middle(&rounds[0]), middle(&rounds[1]));
        report(&format!("{key} wrk"), e, w, true);
        let e = load.paced(&url, a.rate, &paced_post);
        let w = load.paced(&whoami, a.rate, &paced_get);
        report(&format!("{key} @{}/s", a.rate), e, w, false);
    }
    println!("ratio = evaluation req/s ÷ whoami req/s; target ≥ 20,000 evaluations/s on 2 cores");
}

fn report(label: &str, e: Load, w: Load, saturated: bool) {
    let ratio = if saturated && w.rps > 0.0 {
        format!("{:.2}", e.rps / w.rps)
    } else {
        "paced".to_owned()
    };
    println!(
        "{label:<44} {:>10.0} {:>8.2} {:>8.2} | {:>10.0} {:>8.2} {:>8.2} | {ratio:>6}",
        e.rps, e.p50_ms, e.p99_ms, w.rps, w.p50_ms, w.p99_ms
    );
    if e.errors + w.errors > 0 {
        println!(
            "    ({} failed evaluations, {} failed whoami)",
            e.errors, w.errors
        );
    }
}
