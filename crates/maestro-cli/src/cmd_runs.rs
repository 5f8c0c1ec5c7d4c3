//! `maestro runs list` and `maestro runs show`.

use std::fmt::Write as _;
use std::path::Path;

use maestro_store::{Store, StoreError};

use crate::args::Common;
use crate::exit::{self, Failure};
use crate::render::{label, log_tail, secs, shown};
use crate::settings;

fn store_err(e: StoreError) -> Failure {
    match e {
        StoreError::NoSuchRun(id) => Failure::usage(
            format!("there is no run #{id}"),
            "`maestro runs list` shows the runs",
        ),
        other => Failure::env(other, "the store is .maestro/store.db"),
    }
}

pub(crate) fn ts(ms: i64) -> String {
    let secs = u64::try_from(ms / 1000).unwrap_or(0);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

pub(crate) fn list(common: &Common, limit: usize, json: bool) -> Result<u8, Failure> {
    let paths = settings::paths(common);
    let mut store = crate::open_store_recovered(&paths)?;
    let runs = store.list_runs(None, limit).map_err(store_err)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    if runs.is_empty() {
        println!("no runs yet: `maestro run` starts one");
        return Ok(exit::OK);
    }
    println!(
        "{:>5}  {:<11}  {:<20}  {:>8}  {:>5}  {:>6}  {:>6}  commit",
        "run", "status", "started", "time", "jobs", "cached", "failed"
    );
    for r in runs {
        let time = r
            .finished_at_ms
            .map_or_else(|| "-".to_owned(), |f| secs(f - r.started_at_ms));
        let commit = r.commit.as_deref().map_or("-", |c| &c[..c.len().min(10)]);
        println!(
            "{:>5}  {:<11}  {:<20}  {:>8}  {:>5}  {:>6}  {:>6}  {commit}{}",
            format!("#{}", r.id),
            r.status.as_str(),
            ts(r.started_at_ms),
            time,
            r.jobs,
            r.cached,
            r.failed,
            r.branch.map(|b| format!(" ({b})")).unwrap_or_default()
        );
    }
    Ok(exit::OK)
}

pub(crate) fn show(common: &Common, id: Option<i64>, json: bool) -> Result<u8, Failure> {
    let paths = settings::paths(common);
    let mut store = crate::open_store_recovered(&paths)?;
    let id = match id {
        Some(i) => i,
        None => store
            .latest_run()
            .map_err(store_err)?
            .ok_or_else(|| Failure::usage("there are no runs yet", "`maestro run` starts one"))?,
    };
    let d = store.run_detail(id).map_err(store_err)?;
    let repro = store.repro_for_run(id).map_err(store_err)?;
    if json {
        let mut v = serde_json::to_value(&d).unwrap_or_default();
        v["repro"] = repro
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "job": r.job,
                    "reproducible": r.reproducible,
                    "report": serde_json::from_str::<serde_json::Value>(&r.report).unwrap_or_default(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(exit::OK);
    }
    let mut out = String::new();
    let r = &d.run;
    let _ = writeln!(
        out,
        "run #{} · {} · {}",
        r.id,
        r.pipeline,
        r.status.as_str()
    );
    let _ = writeln!(
        out,
        "started {}{}",
        ts(r.started_at_ms),
        r.finished_at_ms
            .map(|f| format!(" · took {}", secs(f - r.started_at_ms)))
            .unwrap_or_default()
    );
    if let Some(c) = &r.commit {
        let _ = writeln!(
            out,
            "commit {c}{}",
            r.branch
                .as_deref()
                .map(|b| format!(" on {b}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "args: maestro {}\n", d.args);
    let _ = writeln!(
        out,
        "{:<10} {:<28} {:<12} {:>9} {:>8}  detail",
        "status", "job", "gate", "time", "attempts"
    );
    for j in &d.jobs {
        let detail = match (j.cache.as_str(), &j.note, &j.reason) {
            (_, Some(n), _) => n.clone(),
            ("hit", _, _) => "cache hit".to_owned(),
            ("miss", _, Some(r)) => format!("cache miss: {r}"),
            _ => String::new(),
        };
        let detail = match j.audit {
            Some(a) => {
                let audit = match a.outcome {
                    Some(o) => format!("audit #{} → #{o}", a.started),
                    None => format!("audit #{}", a.started),
                };
                if detail.is_empty() {
                    audit
                } else {
                    format!("{detail} · {audit}")
                }
            }
            None => detail,
        };
        let _ = writeln!(
            out,
            "{:<10} {:<28} {:<12} {:>9} {:>8}  {detail}",
            label(j),
            j.name,
            j.gate.as_deref().unwrap_or("-"),
            secs(j.duration_ms),
            j.attempts.len()
        );
    }
    let hits = d.jobs.iter().filter(|j| j.cache == "hit").count();
    let _ = writeln!(out, "\n{} jobs, {hits} from cache", d.jobs.len());
    for j in d
        .jobs
        .iter()
        .filter(|j| matches!(label(j), "FAIL" | "TIMEOUT" | "ERROR"))
    {
        let _ = writeln!(out, "\n✗ {}", j.name);
        for t in j
            .tests
            .iter()
            .filter(|t| matches!(t.status.as_str(), "failed" | "error"))
        {
            let _ = writeln!(out, "    failing test: {}.{}", t.classname, t.name);
        }
        if let Some(log) = &j.log_path {
            let _ = writeln!(out, "    log: {}", shown(log));
            for l in log_tail(Path::new(log), 20) {
                let _ = writeln!(out, "    │ {l}");
            }
        }
    }
    for r in &repro {
        let verdict = if r.reproducible {
            "reproducible".to_owned()
        } else {
            let n = serde_json::from_str::<serde_json::Value>(&r.report)
                .ok()
                .and_then(|v| v["differing"].as_array().map(Vec::len))
                .unwrap_or(0);
            format!("NOT reproducible ({n} file(s) differ)")
        };
        let _ = writeln!(
            out,
            "repro check #{} of `{}`: {verdict} ({})",
            r.id,
            r.job,
            ts(r.created_at_ms)
        );
    }
    print!("{out}");
    Ok(exit::OK)
}
