//! `maestro audit …`: append, list, show, prove, verify, export, checkpoint, key,
//! rotate-key.

use std::io::Write as _;
use std::path::Path;

use maestro_audit::{Entry, Links, NewEntry, Outcome, Query};
use serde_json::{Map, Value};

use crate::args::{AuditAppendArgs, AuditCommand, AuditListArgs, AuditVerifyArgs, StoreArgs};
use crate::audit;
use crate::exit::{self, Failure};
use crate::settings::{self, Paths};

/// The largest parameters file read.
const MAX_PARAMS_BYTES: u64 = 64 * 1024;

pub(crate) fn audit(cmd: &AuditCommand) -> Result<u8, Failure> {
    match cmd {
        AuditCommand::Append(a) => append(a),
        AuditCommand::List(a) => list(a),
        AuditCommand::Show { store, index, json } => show(store, *index, *json),
        AuditCommand::Prove {
            store,
            index,
            from,
            to,
            json,
        } => prove(store, *index, *from, *to, *json),
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Export {
            store,
            out,
            from,
            to,
        } => export(store, out, *from, *to),
        AuditCommand::Checkpoint { store, size } => checkpoint(store, *size),
        AuditCommand::Key { store } => key(store),
        AuditCommand::RotateKey { store, reason } => rotate(store, reason.as_deref()),
    }
}

fn open(store: &StoreArgs) -> Result<(Paths, maestro_audit::Log), Failure> {
    let paths = settings::paths(&store.common);
    let log = audit::open(&paths, store.database.as_deref())?;
    Ok((paths, log))
}

fn failed(e: maestro_audit::AuditError) -> Failure {
    use maestro_audit::AuditError as E;
    match e {
        E::ReasonRequired { .. } | E::Invalid { .. } | E::Key(_) | E::NotFound(_) => {
            Failure::usage(e.to_string(), "see `maestro audit --help`")
        }
        other => Failure::env(other, "the audit log could not be used"),
    }
}

fn params(a: &AuditAppendArgs) -> Result<Value, Failure> {
    let mut map = match &a.params_json {
        None => Map::new(),
        Some(p) => {
            let text = if p == Path::new("-") {
                let mut s = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(std::io::stdin(), MAX_PARAMS_BYTES + 1),
                    &mut s,
                )
                .map_err(|e| Failure::env(e, "reading parameters from standard input"))?;
                s
            } else {
                let len = std::fs::metadata(p)
                    .map_err(|e| {
                        Failure::usage(
                            format!("--params-json {}: {e}", p.display()),
                            "pass a JSON file",
                        )
                    })?
                    .len();
                if len > MAX_PARAMS_BYTES {
                    return Err(Failure::usage(
                        format!("--params-json {} is larger than 64 KiB", p.display()),
                        "record large data as an artifact and link its digest with --artifact",
                    ));
                }
                std::fs::read_to_string(p).map_err(|e| {
                    Failure::usage(
                        format!("--params-json {}: {e}", p.display()),
                        "pass a JSON file",
                    )
                })?
            };
            match serde_json::from_str(&text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(Failure::usage(
                        format!("--params-json {}: not a JSON object", p.display()),
                        "parameters are an object: {\"key\": \"value\"}",
                    ));
                }
                Err(e) => {
                    return Err(Failure::usage(
                        format!("--params-json {}: line {}: {e}", p.display(), e.line()),
                        "parameters are an object: {\"key\": \"value\"}",
                    ));
                }
            }
        }
    };
    for p in &a.params {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Failure::usage(
                format!("--param `{p}` is not KEY=VALUE"),
                "e.g. --param replicas=3",
            ));
        };
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(Value::Object(map))
}

/// The trace id of TRACEPARENT (`00-<trace>-<span>-<flags>`), when well formed.
pub(crate) fn trace_from_env() -> Option<String> {
    let tp = std::env::var("TRACEPARENT").ok()?;
    let mut parts = tp.split('-');
    let (_, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) && trace != "0".repeat(32))
        .then(|| trace.to_ascii_lowercase())
}

fn append(a: &AuditAppendArgs) -> Result<u8, Failure> {
    let result = Outcome::parse(&a.result).map_err(|e| Failure::usage(e, "--result"))?;
    let entry = NewEntry {
        actor: audit::actor(),
        action: a.action.clone(),
        target: a.target.clone(),
        params: params(a)?,
        reason: a.reason.clone(),
        result,
        links: Links {
            run: a.run,
            job: a.job.clone(),
            artifact: a.artifact.clone(),
            release: a.release.clone(),
            trace: a.trace.clone().or_else(trace_from_env),
            parent: None,
        },
        tenant: None,
    };
    // Check before a key is created for a new log.
    entry.seal(0, 0).map_err(failed)?;
    let (paths, mut log) = open(&a.store)?;
    let key = audit::key(&paths, &mut log, true)?;
    let r = log.append(&key, &entry).map_err(failed)?;
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    } else {
        println!(
            "audit #{} {} {} by {} at {} (signed checkpoint {})",
            r.index, entry.action, entry.target, entry.actor.id, r.time, r.checkpoint_size
        );
    }
    Ok(exit::OK)
}

fn since(s: &str) -> Result<i64, Failure> {
    if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        return Ok(ts.as_microsecond());
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        Failure::usage(
            format!("--since `{s}`: {e}"),
            "a duration (24h, 7d) or an RFC 3339 time (2026-11-01T00:00:00Z)",
        )
    })?;
    let now = jiff::Timestamp::now().as_microsecond();
    Ok(now - i64::try_from(d.as_micros()).unwrap_or(i64::MAX).min(now))
}

fn line(e: &Entry) -> String {
    format!(
        "#{:<6} {}  {:<16} {:<10} {:<8} {}{}",
        e.index,
        &e.time[..19.min(e.time.len())],
        e.actor.id,
        e.action,
        e.result.as_str(),
        e.target,
        e.reason
            .as_deref()
            .map(|r| format!("  — {r}"))
            .unwrap_or_default()
    )
}

fn list(a: &AuditListArgs) -> Result<u8, Failure> {
    let (_, mut log) = open(&a.store)?;
    let q = Query {
        action: a.action.clone(),
        actor: a.actor.clone(),
        target: a.target.clone(),
        run: a.run,
        artifact: a.artifact.clone(),
        tenant: a.tenant.clone(),
        since_us: a.since.as_deref().map(since).transpose()?,
        before: a.before,
        limit: a.limit.clamp(1, 10_000),
    };
    let entries = log.list(&q).map_err(failed)?;
    if a.json {
        println!("{}", serde_json::to_string(&entries).unwrap_or_default());
    } else if entries.is_empty() {
        println!("no audit entries match");
    } else {
        for e in &entries {
            println!("{}", line(e));
        }
    }
    Ok(exit::OK)
}

fn show(store: &StoreArgs, index: u64, json: bool) -> Result<u8, Failure> {
    let (_, mut log) = open(store)?;
    let (entry, body) = log.entry(index).map_err(failed)?;
    let proof = log.prove(index, None).map_err(failed)?;
    if json {
        let v =
            serde_json::json!({"entry": entry, "leaf": proof.leaf, "checkpoint_size": proof.size});
        println!("{v}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&entry).unwrap_or_default()
        );
        println!(
            "leaf {} ({} bytes), in the signed tree of {} entries",
            proof.leaf,
            body.len(),
            proof.size
        );
    }
    Ok(exit::OK)
}

fn prove(
    store: &StoreArgs,
    index: Option<u64>,
    from: Option<u64>,
    to: Option<u64>,
    json: bool,
) -> Result<u8, Failure> {
    let (_, mut log) = open(store)?;
    let text = match (index, from) {
        (Some(i), _) => {
            let p = log.prove(i, to).map_err(failed)?;
            if json {
                serde_json::to_string(&p)
            } else {
                serde_json::to_string_pretty(&p)
            }
        }
        (None, Some(f)) => {
            let p = log.consistency(f, to).map_err(failed)?;
            if json {
                serde_json::to_string(&p)
            } else {
                serde_json::to_string_pretty(&p)
            }
        }
        (None, None) => {
            return Err(Failure::usage(
                "nothing to prove",
                "give an entry index, or --from SIZE for a consistency proof",
            ));
        }
    };
    println!("{}", text.unwrap_or_default());
    Ok(exit::OK)
}

fn read_limited(p: &Path, what: &str) -> Result<String, Failure> {
    let len = std::fs::metadata(p)
        .map_err(|e| Failure::usage(format!("{what} {}: {e}", p.display()), "check the path"))?
        .len();
    if len > 1024 * 1024 {
        return Err(Failure::usage(
            format!("{what} {} is larger than 1 MiB", p.display()),
            "a checkpoint is a few hundred bytes",
        ));
    }
    std::fs::read_to_string(p)
        .map_err(|e| Failure::usage(format!("{what} {}: {e}", p.display()), "check the path"))
}

fn verify(a: &AuditVerifyArgs) -> Result<u8, Failure> {
    let paths = settings::paths(&a.store.common);
    let trust = audit::trust(&paths, &a.keys)?;
    let mut external = Vec::new();
    for p in &a.checkpoints {
        external.push((p.display().to_string(), read_limited(p, "--checkpoint")?));
    }
    let (report, what) = match &a.offline {
        Some(file) => {
            let f = std::fs::File::open(file).map_err(|e| {
                Failure::usage(
                    format!("--offline {}: {e}", file.display()),
                    "pass an export file written by `maestro audit export`",
                )
            })?;
            let r =
                maestro_audit::export::verify(&mut std::io::BufReader::new(f), &trust, &external)
                    .map_err(|e| {
                    Failure::usage(
                        format!("{}: {e}", file.display()),
                        "pass an export file written by `maestro audit export`",
                    )
                })?;
            (r, format!("export {}", file.display()))
        }
        None => {
            let mut log = audit::open(&paths, a.store.database.as_deref())?;
            let r = log.verify(&trust, &external).map_err(failed)?;
            (r, format!("audit log {}", log.shown()))
        }
    };
    if a.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let origin = report.origin.clone().unwrap_or_default();
        println!(
            "{what} ({origin}): {} entries, {} signed checkpoints verified{}",
            report.size,
            report.checkpoints,
            if report.external > 0 {
                format!(", {} kept checkpoints consistent", report.external)
            } else {
                String::new()
            }
        );
        if !report.signers.is_empty() {
            println!(
                "signed by {}",
                report
                    .signers
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        // Every key the log rotated to, so an auditor sees each one it now trusts.
        for k in &report.key_introductions {
            println!("key introduced at entry {}: {}", k.index, k.vkey);
        }
        println!("root {}", report.root);
        if report.ok() {
            println!("OK");
        } else {
            match report.first_bad_index() {
                Some(i) => println!("FAILED: the first bad entry is {i}"),
                None => println!("FAILED"),
            }
            for p in &report.problems {
                println!("  - {}", p.message);
            }
        }
    }
    Ok(if report.ok() {
        exit::OK
    } else {
        exit::PIPELINE_FAILED
    })
}

fn export(
    store: &StoreArgs,
    out: &Path,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<u8, Failure> {
    let (_, mut log) = open(store)?;
    if out == Path::new("-") {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        log.export(&mut w, from, to).map_err(failed)?;
        w.flush()
            .map_err(|e| Failure::env(e, "writing the export"))?;
    } else {
        // Written beside the target and renamed: never a half-written export.
        let dir = out
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::env(e, "creating the export's directory"))?;
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Failure::env(e, "creating the export file"))?;
        let mut w = std::io::BufWriter::new(tmp);
        let r = log.export(&mut w, from, to).map_err(failed)?;
        let tmp = w
            .into_inner()
            .map_err(|e| Failure::env(e.into_error(), "writing the export"))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| Failure::env(e, "writing the export"))?;
        tmp.persist(out)
            .map_err(|e| Failure::env(e.error, "writing the export"))?;
        eprintln!(
            "maestro: exported {} of {} audit entries to {}; check it with `maestro audit verify --offline {} --key <verifier key>`",
            r.0,
            r.1,
            out.display(),
            out.display()
        );
    }
    Ok(exit::OK)
}

fn checkpoint(store: &StoreArgs, size: Option<u64>) -> Result<u8, Failure> {
    let (_, mut log) = open(store)?;
    let note = match size {
        Some(s) => log.checkpoint_at(s).map_err(failed)?,
        None => {
            log.checkpoint()
                .map_err(failed)?
                .ok_or_else(|| Failure::usage("the audit log is empty", "append an entry first"))?
                .1
        }
    };
    print!("{note}");
    Ok(exit::OK)
}

fn key(store: &StoreArgs) -> Result<u8, Failure> {
    // Never a fresh log and key where there is no project: `verify --key "$(maestro audit
    // key)"` run from the wrong directory must fail, not verify against a new key.
    let paths = settings::paths(&store.common);
    let remote = store.database.is_some()
        || std::env::var(crate::audit::DATABASE_ENV).is_ok_and(|u| !u.is_empty());
    if !remote && !paths.store().exists() && !paths.file.exists() {
        return Err(Failure::usage(
            format!(
                "no Maestro project here: neither {} nor {} exists",
                paths.file.display(),
                paths.store().display()
            ),
            "run it in the directory whose pipeline and audit log you mean (or pass --file / --database)",
        ));
    }
    let (paths, mut log) = open(store)?;
    let k = audit::key(&paths, &mut log, true)?;
    println!("{}", k.vkey());
    Ok(exit::OK)
}

fn rotate(store: &StoreArgs, reason: Option<&str>) -> Result<u8, Failure> {
    let (paths, mut log) = open(store)?;
    let reason = reason.unwrap_or_default();
    if reason.trim().is_empty() {
        return Err(failed(maestro_audit::AuditError::ReasonRequired {
            action: "key.rotate".to_owned(),
        }));
    }
    let old = audit::key(&paths, &mut log, false)?;
    let (new, secret) = maestro_audit::LogKey::generate(old.origin()).map_err(failed)?;
    // The new key is on disk before the log names it, so a crash in between never
    // leaves a log signed by a key nobody has.
    let next = audit::key_file(&paths).with_extension("key.next");
    maestro_sign::write_atomic(&next, secret.as_bytes(), 0o600)
        .map_err(|e| Failure::env(e, "the new audit key could not be written"))?;
    let r = log
        .rotate(&old, &new, audit::actor(), reason)
        .map_err(failed)?;
    std::fs::rename(&next, audit::key_file(&paths)).map_err(|e| {
        Failure::env(
            e,
            "the new key is in .maestro/audit/log.key.next: move it to log.key",
        )
    })?;
    let pub_file = audit::pub_file(&paths);
    let mut trusted = std::fs::read_to_string(&pub_file).unwrap_or_default();
    if !trusted.lines().any(|l| l.trim() == old.vkey()) {
        trusted.push_str(&format!("{}\n", old.vkey()));
    }
    trusted.push_str(&format!("{}\n", new.vkey()));
    maestro_sign::write_atomic(&pub_file, trusted.as_bytes(), 0o644)
        .map_err(|e| Failure::env(e, "the verifier keys could not be written"))?;
    println!(
        "audit #{}: key rotated; new verifier key {}",
        r.index,
        new.vkey()
    );
    if std::env::var(audit::KEY_ENV).is_ok_and(|v| !v.trim().is_empty()) {
        eprintln!(
            "maestro: {} still holds the old key: replace it with the contents of {}",
            audit::KEY_ENV,
            audit::key_file(&paths).display()
        );
    }
    Ok(exit::OK)
}
