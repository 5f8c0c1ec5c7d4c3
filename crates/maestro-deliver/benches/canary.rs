//! How fast a bad canary is caught (`bench/canary`): the example service as stable behind
//! the proxy under a steady paced load (wrk), then a canary started with a regression
//! injected (20% errors, or 200 ms added latency) under the default strategy (5 s
//! interval, two failed intervals to roll back). Measured per round: injection (the
//! canary takes traffic) → the first failed analysis → the rollback verdict → traffic fully
//! back on stable (route without canary and no canary request in flight).
//!
//! `--rounds N` (default 3), `--rate R` (default 500 req/s), `--interval S` (default 5).

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_bench::{Script, Wrk, median};
use maestro_canary::{Canary, Strategy};
use maestro_deliver::testing::{example_release as release, example_spec};
use maestro_deliver::{Environment, Request};
use maestro_store::pool::StorePool;

struct Round {
    first_fail_s: f64,
    verdict_s: f64,
    back_s: f64,
}

async fn round(dir: &Path, fault: (&str, &str), rate: u32, interval: u32) -> Round {
    let pool = StorePool::open(&dir.join("store.db").display().to_string(), 4).expect("store");
    let strategy = Strategy {
        interval: format!("{interval}s"),
        window: format!("{}s", interval * 6),
        progress_deadline: "30m".into(),
        ..Strategy::default()
    };
    let spec = example_spec(
        &dir.join("envs/stage"),
        &strategy,
        maestro_deliver::MetricsSource::Proxy,
        None,
    );
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let env = Environment::open(spec, Arc::clone(&pool), tx, None)
        .await
        .expect("environment");
    let req = Request {
        actor: "bench".into(),
        reason: "bench".into(),
        ..Request::default()
    };
    env.deploy(release("v1", &[]), req.clone())
        .await
        .expect("stable");
    let addr = env.addr().await.expect("serving");
    // A steady load for the whole round (wrk stops on its own; its thread is left to end).
    std::thread::spawn(move || {
        let script = Script::paced();
        Wrk {
            threads: 1,
            connections: 50,
            duration_s: 20 + 4 * interval,
            headers: Vec::new(),
        }
        .paced(&format!("http://{addr}/greet?name=Dai"), rate, &script)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = env
        .deploy(release("v2", &[fault]), req)
        .await
        .expect("canary");
    let injected = Instant::now();
    let proxy = env.proxy().await.expect("proxy");
    let (mut first_fail, mut verdict, mut back) = (None, None, None);
    while back.is_none() && injected.elapsed() < Duration::from_secs(120) {
        let d = pool
            .with(move |s| s.deployment(id))
            .await
            .expect("store")
            .expect("row");
        let c: Canary = serde_json::from_str(&d.state).expect("state");
        if first_fail.is_none()
            && c.timeline
                .iter()
                .any(|e| e.verdict == Some(maestro_canary::Verdict::Fail))
        {
            first_fail = Some(injected.elapsed());
        }
        if !d.active() && verdict.is_none() {
            verdict = Some(injected.elapsed());
        }
        if verdict.is_some()
            && proxy.route().canary.is_none()
            && proxy.signals("v2").counts().in_flight == 0
        {
            back = Some(injected.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    env.shutdown().await;
    let s = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    Round {
        first_fail_s: s(first_fail),
        verdict_s: s(verdict),
        back_s: s(back),
    }
}

fn main() {
    let flags = maestro_bench::Flags::from_env();
    let rounds = flags.num("--rounds", 3).max(1);
    let rate = flags.num("--rate", 500).max(1);
    let interval = flags.num("--interval", 5).max(1);
    if !maestro_bench::wrk_installed() {
        println!("wrk is not installed: apt-get install wrk");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "canary: the example service under {rate} req/s (wrk, paced), default strategy with a {interval} s interval; median of {rounds} rounds"
    );
    println!(
        "{:<20} {:>13} {:>12} {:>19} {:>10}",
        "regression", "1st fail (s)", "verdict (s)", "back on stable (s)", "intervals"
    );
    for (label, fault) in [
        ("error rate 20%", ("HELLO_ERROR_RATE", "0.2")),
        ("latency +200 ms", ("HELLO_LATENCY_MS", "200")),
    ] {
        let mut got = Vec::new();
        for _ in 0..rounds {
            let dir = tempfile::tempdir().expect("tmp");
            got.push(rt.block_on(round(dir.path(), fault, rate, interval)));
        }
        let m = |f: fn(&Round) -> f64| median(got.iter().map(f).collect());
        let verdict = m(|r| r.verdict_s);
        println!(
            "{label:<20} {:>13.1} {:>12.1} {:>19.2} {:>10.1}",
            m(|r| r.first_fail_s),
            verdict,
            m(|r| r.back_s),
            verdict / f64::from(interval)
        );
    }
    println!(
        "targets: verdict within 2 intervals of the injection, traffic back on stable within 1 s of the verdict (under 15 s end to end at a 5 s interval)"
    );
}
