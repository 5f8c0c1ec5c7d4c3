//! The audit log under load, on SQLite and PostgreSQL, against the bare `tlog_tiles`
//! hashing rate in the same run:
//!
//! - append throughput with durability on (SQLite `synchronous=FULL` in WAL mode;
//!   PostgreSQL `synchronous_commit=on`): one appender committing each entry, one appender
//!   committing batches of 1,000, 8 concurrent appenders through the group-commit writer,
//!   and 8 concurrent connections each committing its own entries;
//! - inclusion-proof latency (`Log::prove`: checkpoint, leaf and audit path read from the
//!   store) at N entries (default 1,000,000);
//! - full verification of N entries (`Log::verify`: every entry parsed and checked
//!   canonical, the tree recomputed, every stored hash compared, every checkpoint's
//!   signature and head checked).
//!
//! `bench/audit` runs it; `--quick` uses 100,000 entries; `--size N` any size;
//! `--no-pg` skips PostgreSQL (default server: postgres://postgres@127.0.0.1:5432,
//! override with MAESTRO_BENCH_PG).
#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_audit::group::GroupAppender;
use maestro_audit::{Actor, Links, Log, LogKey, NewEntry, Outcome, Trust};
use tlog_tiles::{Hash, HashReader};

fn entry(n: u64) -> NewEntry {
    NewEntry {
        actor: Actor {
            id: format!("user{}", n % 17),
            via: "os-user".to_owned(),
        },
        action: if n.is_multiple_of(10) {
            "deploy"
        } else {
            "note"
        }
        .to_owned(),
        target: format!("service/checkout-{}@stage", n % 50),
        params: serde_json::json!({"replicas": n % 7, "image": "registry.example/checkout:1.4.2"}),
        reason: Some(format!("change {n}: roll out the fix for INC-{}", n % 1000)),
        result: Outcome::Success,
        links: Links {
            run: Some(i64::try_from(n / 10).unwrap_or(0)),
            ..Links::default()
        },
        tenant: None,
    }
}

struct Mem(RefCell<Vec<Hash>>);
impl HashReader for Mem {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let v = self.0.borrow();
        Ok(indexes
            .iter()
            .map(|&i| v[usize::try_from(i).unwrap_or(0)])
            .collect())
    }
}

/// The reference: `tlog_tiles` hashing the same entry bytes into an in-memory tree.
fn bare_rate(bodies: &[Vec<u8>]) -> f64 {
    let mem = Mem(RefCell::new(Vec::with_capacity(bodies.len() * 2)));
    let t = Instant::now();
    for (n, b) in bodies.iter().enumerate() {
        let h = tlog_tiles::stored_hashes(n as u64, b, &mem).unwrap_or_default();
        mem.0.borrow_mut().extend(h);
    }
    let root = tlog_tiles::tree_hash(bodies.len() as u64, &mem);
    assert!(root.is_ok());
    bodies.len() as f64 / t.elapsed().as_secs_f64()
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:>9.0}", r)
    } else {
        format!("{:>9.1}", r)
    }
}

struct Target {
    name: &'static str,
    open: Box<dyn Fn() -> Log>,
    _guard: Box<dyn std::any::Any>,
}

fn sqlite() -> Target {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("store.db");
    Target {
        name: "SQLite",
        open: Box::new(move || Log::open_sqlite(&path).expect("open")),
        _guard: Box::new(dir),
    }
}

struct PgDb {
    admin: String,
    name: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn pg() -> Option<Target> {
    let base = std::env::var("MAESTRO_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let admin = format!("{base}/postgres");
    let mut c = postgres::Client::connect(&admin, postgres::NoTls).ok()?;
    let name = format!("maestro_audit_bench_{}", std::process::id());
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .ok()?;
    c.batch_execute(&format!("CREATE DATABASE {name}")).ok()?;
    let url = format!("{base}/{name}");
    Some(Target {
        name: "PostgreSQL",
        open: Box::new(move || Log::open_postgres(&url).expect("open")),
        _guard: Box::new(PgDb { admin, name }),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut size: u64 = 1_000_000;
    if args.iter().any(|a| a == "--quick") {
        size = 100_000;
    }
    if let Some(i) = args.iter().position(|a| a == "--size") {
        size = args
            .get(i + 1)
            .and_then(|s| s.replace('_', "").parse().ok())
            .unwrap_or(size);
    }
    let with_pg = !args.iter().any(|a| a == "--no-pg");

    let (key, _) = LogKey::generate("bench.example/audit").expect("key");
    let key = Arc::new(key);
    let trust = Trust::new(&[key.vkey()]).expect("trust");

    // The reference, on the same bytes the log stores.
    let sample = 200_000.min(size);
    let bodies: Vec<Vec<u8>> = (0..sample)
        .map(|n| entry(n).seal(n, 1_700_000_000_000_000).expect("seal").1)
        .collect();
    let avg = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1);
    let bare = bare_rate(&bodies);
    println!("audit log benchmark: {size} entries (~{avg} bytes each), durability on");
    println!();
    println!(
        "reference: tlog_tiles hashing in memory      {} leaves/s",
        fmt_rate(bare)
    );
    println!();

    let mut targets = vec![sqlite()];
    if with_pg {
        match pg() {
            Some(t) => targets.push(t),
            None => println!("(PostgreSQL unreachable: skipped; --no-pg to silence)\n"),
        }
    }
    println!(
        "{:<11} {:>12} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "store",
        "1×commit/s",
        "1×batch/s",
        "8×group/s",
        "8×conn/s",
        "bare/batch",
        "proof p50",
        "proof p99",
        "verify"
    );
    for t in &targets {
        // 1: one appender, one commit per entry.
        let mut log = (t.open)();
        let n1 = 2_000u64;
        let s = Instant::now();
        for i in 0..n1 {
            log.append(&key, &entry(i)).expect("append");
        }
        let single = rate(n1, s.elapsed());

        // 2: one appender, batches of 1,000 (this also fills the log to `size`).
        let mut next = n1;
        let batch_n = 1_000u64;
        let s = Instant::now();
        let mut timed = 0u64;
        let timed_target = 100_000.min(size);
        while timed < timed_target {
            let b: Vec<NewEntry> = (next..next + batch_n).map(entry).collect();
            log.append_batch(&key, &b).expect("batch");
            next += batch_n;
            timed += batch_n;
        }
        let batched = rate(timed, s.elapsed());

        // 3: 8 threads through the group-commit writer.
        let group = GroupAppender::spawn(log, (*key).clone(), 1024);
        let per = 2_000u64;
        let s = Instant::now();
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let a = group.appender();
                std::thread::spawn(move || {
                    for i in 0..per {
                        a.append(entry(t * 1_000_000 + i)).expect("append");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let grouped = rate(8 * per, s.elapsed());
        let mut log = group.finish().expect("finish");

        // 4: 8 connections, each committing its own entries (as separate processes do).
        let per_conn = 250u64;
        let logs: Vec<Log> = (0..8).map(|_| (t.open)()).collect();
        let s = Instant::now();
        let handles: Vec<_> = logs
            .into_iter()
            .enumerate()
            .map(|(t, mut l)| {
                let k = Arc::clone(&key);
                std::thread::spawn(move || {
                    for i in 0..per_conn {
                        l.append(&k, &entry(t as u64 * 1_000 + i)).expect("append");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let conns = rate(8 * per_conn, s.elapsed());

        // Fill to `size` in batches (not timed).
        let mut have = log.size().expect("size");
        while have < size {
            let m = (size - have).min(5_000);
            let b: Vec<NewEntry> = (have..have + m).map(entry).collect();
            log.append_batch(&key, &b).expect("fill");
            have += m;
        }

        // Proof latency at `size`.
        let mut lat = Vec::with_capacity(5_000);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x % have;
            let s = Instant::now();
            let p = log.prove(i, None).expect("prove");
            lat.push(s.elapsed());
            assert_eq!(p.size, have);
        }
        lat.sort();
        let p50 = lat[lat.len() / 2];
        let p99 = lat[lat.len() * 99 / 100];

        // Full verification.
        let s = Instant::now();
        let r = log.verify(&trust, &[]).expect("verify");
        let verify = s.elapsed();
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.size, have);

        println!(
            "{:<11} {:>12} {:>12} {:>12} {:>12} {:>11.1}× {:>8.1}µs {:>8.1}µs {:>9.2}s",
            t.name,
            fmt_rate(single),
            fmt_rate(batched),
            fmt_rate(grouped),
            fmt_rate(conns),
            bare / batched,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            verify.as_secs_f64()
        );
    }
}
