//! `maestro cache stats|gc|explain`.

use maestro_cache::{Cas, Ingredients};
use maestro_store::Store;

use crate::args::Common;
use crate::exit::{self, Failure};
use crate::settings;

pub(crate) fn stats(common: &Common, json: bool) -> Result<u8, Failure> {
    let paths = settings::paths(common);
    let mut store = crate::open_store(&paths)?;
    let s = store
        .cache_stats()
        .map_err(|e| Failure::env(e, "the store is .maestro/store.db"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(exit::OK);
    }
    let pct = |h: i64, m: i64| {
        #[expect(clippy::cast_precision_loss, reason = "display only")]
        let p = if h + m == 0 {
            0.0
        } else {
            h as f64 * 100.0 / (h + m) as f64
        };
        format!("{p:.1}%")
    };
    println!("entries:        {}", s.entries);
    println!("output bytes:   {}", s.bytes);
    println!(
        "hit rate (all): {} ({} hits, {} misses)",
        pct(s.hits, s.misses),
        s.hits,
        s.misses
    );
    println!(
        "hit rate (last run): {} ({} hits, {} misses)",
        pct(s.last_run_hits, s.last_run_misses),
        s.last_run_hits,
        s.last_run_misses
    );
    Ok(exit::OK)
}

pub(crate) fn gc(common: &Common, max_age: &str) -> Result<u8, Failure> {
    let age = settings::duration("--max-age", max_age)?;
    let paths = settings::paths(common);
    // GC must not race a run that is writing blobs.
    let _lock = maestro_engine::lock::RunLock::acquire(&paths.home)
        .map_err(|e| Failure::env(e, "wait for the running maestro to finish"))?;
    let mut store = crate::open_store(&paths)?;
    let cutoff = maestro_engine::now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let removed = store
        .cache_gc(cutoff)
        .map_err(|e| Failure::env(e, "the store is .maestro/store.db"))?;
    let keep = store
        .referenced_blobs()
        .map_err(|e| Failure::env(e, "the store is .maestro/store.db"))?;
    let (blobs, bytes) = Cas::new(paths.cas())
        .sweep(&keep)
        .map_err(|e| Failure::env(e, "check permissions on .maestro/cache"))?;
    println!(
        "removed {} cache entries unused for {max_age} and {blobs} unreferenced blobs ({bytes} bytes)",
        removed.removed_entries
    );
    Ok(exit::OK)
}

pub(crate) fn explain(common: &Common, job: &str, json: bool) -> Result<u8, Failure> {
    let paths = settings::paths(common);
    let mut store = crate::open_store(&paths)?;
    let env = |e| Failure::env(e, "the store is .maestro/store.db");
    let Some((run, row)) = store.last_job_record(job).map_err(env)? else {
        return Err(Failure::usage(
            format!("job `{job}` has not run yet"),
            "`maestro run` first; sharded jobs are named like `unit#1`",
        ));
    };
    let key = row.cache_key.clone().unwrap_or_default();
    let entry = store.cache_get(&key).map_err(env)?;
    let previous = store.cache_latest_for_job(job, Some(&key)).map_err(env)?;
    let changes: Vec<String> = match (&entry, &previous) {
        (Some(now), Some(before)) => {
            let a: Ingredients = serde_json::from_str(&now.ingredients).unwrap_or_default();
            let b: Ingredients = serde_json::from_str(&before.ingredients).unwrap_or_default();
            a.diff(&b).iter().map(ToString::to_string).collect()
        }
        _ => Vec::new(),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "job": job, "run": run, "cache": row.cache, "key": key, "status": row.status,
                "reason": row.reason, "changes_since_previous_entry": changes,
            })
        );
        return Ok(exit::OK);
    }
    println!("job {job} in run #{run}: {}", row.status);
    match row.cache.as_str() {
        "hit" => println!("cache hit: key {key} was already stored; nothing ran"),
        "miss" => println!(
            "cache miss: {}",
            row.reason.as_deref().unwrap_or("no entry for this key")
        ),
        "disabled" => println!(
            "not cached: the job has `cache: false` (publish and deploy jobs default to it)"
        ),
        _ => println!(
            "never reached the cache: {}",
            row.note.as_deref().unwrap_or("")
        ),
    }
    if !changes.is_empty() {
        println!("changes from the previous cache entry of {job}:");
        for c in &changes {
            println!("  - {c}");
        }
    }
    Ok(exit::OK)
}
