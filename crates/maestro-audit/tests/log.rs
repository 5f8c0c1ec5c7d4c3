//! The audit log end to end on both stores: appends, proofs checked independently,
//! verification, each tamper case, concurrent appenders, rotation and exports. Every test
//! runs on a SQLite file and on a throwaway database on the real PostgreSQL server at
//! 127.0.0.1:5432.

mod common;

use std::path::PathBuf;

use common::{actor, entry, key};
use maestro_audit::{Log, LogKey, Query, Trust, check_consistency, check_inclusion};
use maestro_store::pg::Throwaway;

/// A log on one of the two stores, with a back door for tampering.
enum Store {
    Sqlite(tempfile::TempDir),
    Pg(Throwaway),
}

impl Store {
    fn sqlite() -> Store {
        Store::Sqlite(tempfile::tempdir().expect("tmp"))
    }

    fn path(d: &tempfile::TempDir) -> PathBuf {
        d.path().join("store.db")
    }

    fn open(&self) -> Log {
        match self {
            Store::Sqlite(d) => Log::open_sqlite(&Self::path(d)).expect("open sqlite"),
            Store::Pg(db) => Log::open_postgres(&db.url).expect("open pg"),
        }
    }

    /// Runs SQL as someone with direct store access. `?1`/`$1` placeholders are written
    /// `$1` here and adapted for SQLite.
    fn exec(&self, sql: &str, blob: Option<&[u8]>) -> Result<u64, String> {
        match self {
            Store::Sqlite(d) => {
                let c = rusqlite::Connection::open(Self::path(d)).map_err(|e| e.to_string())?;
                let sql = sql.replace('$', "?");
                let n = match blob {
                    Some(b) => c.execute(&sql, [b]),
                    None => c.execute_batch(&sql).map(|()| 0),
                };
                n.map(|n| n as u64).map_err(|e| e.to_string())
            }
            Store::Pg(db) => {
                let mut c = postgres::Client::connect(&db.url, postgres::NoTls)
                    .map_err(|e| e.to_string())?;
                match blob {
                    Some(b) => c.execute(sql, &[&b]).map_err(|e| {
                        e.as_db_error()
                            .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                    }),
                    None => c.batch_execute(sql).map(|()| 0).map_err(|e| {
                        e.as_db_error()
                            .map_or_else(|| e.to_string(), |d| d.message().to_owned())
                    }),
                }
            }
        }
    }

    /// What an attacker with store access does first: switch the guards off.
    fn unlock(&self) {
        let sql = match self {
            Store::Sqlite(_) => {
                let mut s = String::new();
                for t in ["entries", "hashes", "checkpoints"] {
                    for k in ["no_update", "no_delete"] {
                        s.push_str(&format!("DROP TRIGGER audit_{t}_{k};"));
                    }
                }
                s.push_str(
                    "DROP TRIGGER audit_entries_in_order; DROP TRIGGER audit_hashes_in_order;",
                );
                s
            }
            Store::Pg(_) => "ALTER TABLE audit_entries DISABLE TRIGGER USER;
                 ALTER TABLE audit_hashes DISABLE TRIGGER USER;
                 ALTER TABLE audit_checkpoints DISABLE TRIGGER USER;"
                .to_owned(),
        };
        self.exec(&sql, None).expect("unlock");
    }
}

fn both(test: fn(&Store)) {
    test(&Store::sqlite());
    test(&Store::Pg(Throwaway::new("audit")));
}

fn filled(store: &Store, n: u64) -> (Log, LogKey) {
    let mut log = store.open();
    let k = key();
    for i in 0..n {
        let r = log.append(&k, &entry(i)).expect("append");
        assert_eq!(r.index, i);
        assert_eq!(r.checkpoint_size, i + 1);
    }
    (log, k)
}

fn trust(k: &LogKey) -> Trust {
    Trust::new(&[k.vkey()]).expect("trust")
}

/// RFC 6962 MTH, computed independently of `tlog_tiles` (section 2.1).
fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(&leaves[0]);
            h.finalize().into()
        }
        n => {
            let k = n.next_power_of_two() / 2;
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(mth(&leaves[..k]));
            h.update(mth(&leaves[k..]));
            h.finalize().into()
        }
    }
}

/// RFC 6962 PATH(m, D[n]) (section 2.1.1), computed independently.
fn path(m: usize, leaves: &[Vec<u8>]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = n.next_power_of_two() / 2;
    if m < k {
        let mut p = path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

fn b64(h: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h)
}

#[test]
fn roots_and_proofs_agree_with_an_independent_rfc6962_computation() {
    both(|store| {
        let (mut log, k) = filled(store, 37);
        let bodies: Vec<Vec<u8>> = (0..37).map(|i| log.entry(i).expect("entry").1).collect();
        let t = trust(&k);
        for size in [1u64, 2, 3, 7, 8, 16, 33, 37] {
            let note = log.checkpoint_at(size).expect("checkpoint");
            let v = t.verify(&note).expect("signed");
            let expected = mth(&bodies[..usize::try_from(size).expect("size")]);
            assert_eq!(v.root.0, expected, "root of {size}");
            for m in [0u64, size / 2, size - 1] {
                let p = log.prove(m, Some(size)).expect("prove");
                let independent: Vec<String> = path(
                    usize::try_from(m).expect("m"),
                    &bodies[..usize::try_from(size).expect("size")],
                )
                .iter()
                .map(|h| b64(h))
                .collect();
                assert_eq!(p.proof, independent, "PATH({m}, D[{size}])");
                check_inclusion(&p, &bodies[usize::try_from(m).expect("m")], &t)
                    .expect("inclusion");
                assert!(check_inclusion(&p, b"{}", &t).is_err(), "wrong entry");
            }
        }
        for (a, b) in [(1, 37), (7, 8), (16, 33), (37, 37)] {
            let p = log.consistency(a, Some(b)).expect("consistency");
            check_consistency(&p, &t).expect("consistent");
        }
        let mut bad = log.consistency(7, Some(8)).expect("consistency");
        bad.proof.reverse();
        bad.proof.push(b64(&[0u8; 32]));
        assert!(check_consistency(&bad, &t).is_err());
        assert!(log.prove(37, None).is_err());
    });
}

#[test]
fn a_clean_log_verifies() {
    both(|store| {
        let (mut log, k) = filled(store, 12);
        let r = log.verify(&trust(&k), &[]).expect("verify");
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!((r.size, r.checkpoints), (12, 12));
        // Untrusted key: nothing verifies.
        let r = log.verify(&trust(&key()), &[]).expect("verify");
        assert!(!r.ok());
        assert!(
            r.problems[0].message.contains("trusted key"),
            "{:?}",
            r.problems
        );
    });
}

#[test]
fn the_store_refuses_updates_and_deletes() {
    both(|store| {
        let _ = filled(store, 3);
        for sql in [
            "UPDATE audit_entries SET actor = 'mallory' WHERE idx = 1",
            "DELETE FROM audit_entries WHERE idx = 2",
            "UPDATE audit_hashes SET hash = hash WHERE idx = 0",
            "DELETE FROM audit_checkpoints",
            "INSERT INTO audit_entries (idx, time_us, actor, action, target, result, body) VALUES (9, 0, 'm', 'note', 't', 'success', 'x')",
        ] {
            let err = store.exec(sql, None).expect_err(sql);
            assert!(
                err.contains("append-only") || err.contains("in order"),
                "{sql}: {err}"
            );
        }
        if let Store::Pg(_) = store {
            let err = store
                .exec("TRUNCATE audit_entries", None)
                .expect_err("truncate");
            assert!(err.contains("append-only"), "{err}");
        }
    });
}

fn first_bad(store: &Store, k: &LogKey) -> (Option<u64>, Vec<String>) {
    let r = store.open().verify(&trust(k), &[]).expect("verify");
    (
        r.first_bad_index(),
        r.problems.iter().map(|p| p.message.clone()).collect(),
    )
}

#[test]
fn a_changed_byte_is_found_at_its_index() {
    both(|store| {
        let (mut log, k) = filled(store, 10);
        let (_, body) = log.entry(6).expect("entry");
        let text = String::from_utf8(body).expect("utf8");
        let changed = text.replacen("ship the fix", "ship the fiX", 1);
        assert_eq!(changed.len(), text.len());
        store.unlock();
        store
            .exec(
                "UPDATE audit_entries SET body = $1 WHERE idx = 6",
                Some(changed.as_bytes()),
            )
            .expect("tamper");
        let (bad, problems) = first_bad(store, &k);
        assert_eq!(bad, Some(6), "{problems:?}");
    });
}

#[test]
fn a_change_with_the_tree_rewritten_is_still_found_by_the_signatures() {
    both(|store| {
        let (mut log, k) = filled(store, 10);
        let (_, body) = log.entry(4).expect("entry");
        let changed = String::from_utf8(body)
            .expect("utf8")
            .replacen("alice", "carol", 1);
        store.unlock();
        store
            .exec(
                "UPDATE audit_entries SET body = $1, actor = 'carol' WHERE idx = 4",
                Some(changed.as_bytes()),
            )
            .expect("tamper");
        // The attacker recomputes every stored hash from the entries, but cannot sign.
        let mut bodies: Vec<Vec<u8>> = (0..10).map(|i| log.entry(i).expect("e").1).collect();
        bodies[4] = changed.into_bytes();
        let mut f = maestro_audit::tree::Frontier::new();
        let mut ix = 0u64;
        for b in &bodies {
            for h in f.push(b) {
                store
                    .exec(
                        &format!("UPDATE audit_hashes SET hash = $1 WHERE idx = {ix}"),
                        Some(&h.0),
                    )
                    .expect("rewrite hash");
                ix += 1;
            }
        }
        let (bad, problems) = first_bad(store, &k);
        assert_eq!(bad, Some(4), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("signed checkpoint")),
            "{problems:?}"
        );
    });
}

#[test]
fn a_removed_entry_is_found() {
    both(|store| {
        let (_, k) = filled(store, 10);
        store.unlock();
        store
            .exec("DELETE FROM audit_entries WHERE idx = 3", None)
            .expect("tamper");
        let (bad, problems) = first_bad(store, &k);
        assert_eq!(bad, Some(3), "{problems:?}");
        assert!(problems[0].contains("missing"), "{problems:?}");
    });
}

#[test]
fn a_reordered_pair_is_found() {
    both(|store| {
        let (mut log, k) = filled(store, 10);
        let (_, a) = log.entry(5).expect("5");
        let (_, b) = log.entry(6).expect("6");
        store.unlock();
        store
            .exec("UPDATE audit_entries SET body = $1 WHERE idx = 5", Some(&b))
            .expect("swap");
        store
            .exec("UPDATE audit_entries SET body = $1 WHERE idx = 6", Some(&a))
            .expect("swap");
        let (bad, problems) = first_bad(store, &k);
        assert_eq!(bad, Some(5), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("reordered")),
            "{problems:?}"
        );
    });
}

#[test]
fn a_misleading_query_column_is_found() {
    both(|store| {
        let (_, k) = filled(store, 5);
        store.unlock();
        store
            .exec(
                "UPDATE audit_entries SET actor = 'mallory' WHERE idx = 2",
                None,
            )
            .expect("tamper");
        let (bad, problems) = first_bad(store, &k);
        assert_eq!(bad, Some(2), "{problems:?}");
        assert!(problems[0].contains("`actor` column"), "{problems:?}");
    });
}

#[test]
fn a_fork_and_a_truncation_are_found_with_a_kept_checkpoint() {
    both(|store| {
        let (mut log, k) = filled(store, 8);
        let kept = log.checkpoint().expect("cp").expect("some").1;
        // A key holder rewrites history: a second log, same key, entry 5 different.
        let other = Store::sqlite();
        let mut forked = other.open();
        for i in 0..8 {
            let mut e = entry(i);
            if i == 5 {
                e.reason = Some("nothing to see here".into());
            }
            forked.append(&k, &e).expect("append");
        }
        // On its own the forked log verifies: the key signed it.
        assert!(forked.verify(&trust(&k), &[]).expect("v").ok());
        let r = forked
            .verify(&trust(&k), &[("kept.checkpoint".into(), kept.clone())])
            .expect("verify");
        assert!(!r.ok());
        assert!(r.problems[0].message.contains("fork"), "{:?}", r.problems);

        // Truncation: the last three entries go, with their hashes and checkpoints.
        store.unlock();
        let keep_hashes = tlog_tiles::stored_hash_count(5);
        store
            .exec(
                &format!(
                    "DELETE FROM audit_entries WHERE idx >= 5; DELETE FROM audit_hashes WHERE idx >= {keep_hashes}; DELETE FROM audit_checkpoints WHERE size > 5;"
                ),
                None,
            )
            .expect("truncate");
        let mut log = store.open();
        assert!(
            log.verify(&trust(&k), &[]).expect("v").ok(),
            "a consistent prefix"
        );
        let r = log
            .verify(&trust(&k), &[("kept.checkpoint".into(), kept)])
            .expect("verify");
        assert!(!r.ok());
        assert_eq!(r.first_bad_index(), Some(5), "{:?}", r.problems);
        assert!(
            r.problems[0].message.contains("removed from its end"),
            "{:?}",
            r.problems
        );
    });
}

#[test]
fn concurrent_appenders_leave_no_gaps_or_duplicates() {
    both(|store| {
        let k = key();
        let vkey = k.vkey().to_owned();
        {
            // The first append fixes the log's key.
            store.open().append(&k, &entry(0)).expect("first");
        }
        let skey_holder = std::sync::Arc::new(k);
        let mut threads = Vec::new();
        for t in 0..8u64 {
            let mut log = store.open();
            let k = std::sync::Arc::clone(&skey_holder);
            threads.push(std::thread::spawn(move || {
                (0..25u64)
                    .map(|i| log.append(&k, &entry(t * 100 + i)).expect("append").index)
                    .collect::<Vec<_>>()
            }));
        }
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<_>>());
        let mut log = store.open();
        assert_eq!(log.size().expect("size"), 201);
        let r = log
            .verify(&Trust::new(&[vkey]).expect("t"), &[])
            .expect("v");
        assert!(r.ok(), "{:?}", r.problems);
    });
}

#[test]
fn group_commit_batches_concurrent_callers() {
    both(|store| {
        let k = key();
        let t = trust(&k);
        let group = maestro_audit::group::GroupAppender::spawn(store.open(), k, 256);
        let mut threads = Vec::new();
        for th in 0..8u64 {
            let a = group.appender();
            threads.push(std::thread::spawn(move || {
                for i in 0..50 {
                    a.append(entry(th * 1000 + i)).expect("append");
                }
                // A refused entry gets its own error; the others are unaffected.
                let mut bad = entry(3);
                bad.reason = None;
                assert!(a.append(bad).is_err());
            }));
        }
        for h in threads {
            h.join().expect("thread");
        }
        let mut log = group.finish().expect("finish");
        assert_eq!(log.size().expect("size"), 400);
        let r = log.verify(&t, &[]).expect("v");
        assert!(r.ok(), "{:?}", r.problems);
        assert!(
            r.checkpoints < 400,
            "batched: {} checkpoints",
            r.checkpoints
        );
    });
}

#[test]
fn a_key_that_is_not_the_logs_is_refused_and_rotation_is_followed() {
    both(|store| {
        let (mut log, old) = filled(store, 3);
        let err = log.append(&key(), &entry(3)).expect_err("foreign key");
        assert!(err.to_string().contains("rotate"), "{err}");
        let (new, _) = LogKey::generate("example.test/audit").expect("new");
        let err = log
            .rotate(&old, &new, actor("alice"), " ")
            .expect_err("reason");
        assert!(err.to_string().contains("needs a reason"), "{err}");
        let r = log
            .rotate(
                &old,
                &new,
                actor("alice"),
                "yearly key rotation, ticket SEC-7",
            )
            .expect("rotate");
        assert_eq!(r.index, 3);
        assert!(
            log.append(&old, &entry(4)).is_err(),
            "the old key no longer signs"
        );
        log.append(&new, &entry(4)).expect("new key signs");
        assert_eq!(
            log.current_vkey().expect("vkey").as_deref(),
            Some(new.vkey())
        );
        // An auditor who trusts only the first key follows the rotation.
        let r = log.verify(&trust(&old), &[]).expect("verify");
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(r.signers.len(), 2);
        let listed = log
            .list(&Query {
                action: Some("key.rotate".into()),
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].params["vkey"], new.vkey());
    });
}

#[test]
fn exports_verify_offline_and_tampering_is_found() {
    both(|store| {
        let (mut log, k) = filled(store, 20);
        let t = trust(&k);
        let mut whole = Vec::new();
        assert_eq!(
            log.export(&mut whole, None, None).expect("export"),
            (20, 20)
        );
        let r = maestro_audit::export::verify(&mut whole.as_slice(), &t, &[]).expect("verify");
        assert!(r.ok(), "{:?}", r.problems);
        assert_eq!(
            r.checkpoints, 20,
            "every signed checkpoint travels with a whole export"
        );

        let mut part = Vec::new();
        log.export(&mut part, Some(5), Some(9))
            .expect("export part");
        let text = String::from_utf8(part.clone()).expect("utf8");
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().nth(1).expect("line").contains("\"proof\":["));
        let r = maestro_audit::export::verify(&mut part.as_slice(), &t, &[]).expect("verify");
        assert!(r.ok(), "{:?}", r.problems);

        let whole_text = String::from_utf8(whole).expect("utf8");
        let tampered = whole_text.replacen("change 11:", "change 1l:", 1);
        let r = maestro_audit::export::verify(&mut tampered.as_bytes(), &t, &[]).expect("v");
        assert_eq!(
            r.first_bad_index(),
            Some(11),
            "located by the checkpoints: {:?}",
            r.problems
        );
        let tampered = text.replacen("change 7:", "change 8:", 1);
        let r = maestro_audit::export::verify(&mut tampered.as_bytes(), &t, &[]).expect("v");
        assert_eq!(r.first_bad_index(), Some(7), "{:?}", r.problems);
        let dropped: String = whole_text
            .lines()
            .filter(|l| !l.starts_with("{\"index\":3,"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(dropped.lines().count() + 1, whole_text.lines().count());
        let r = maestro_audit::export::verify(&mut dropped.as_bytes(), &t, &[]).expect("v");
        assert_eq!(r.first_bad_index(), Some(3), "{:?}", r.problems);
        let r = maestro_audit::export::verify(&mut whole_text.as_bytes(), &trust(&key()), &[])
            .expect("v");
        assert!(!r.ok(), "an untrusted key verifies nothing");
        let err =
            maestro_audit::export::verify(&mut &b"not json\n"[..], &t, &[]).expect_err("junk");
        assert!(err.to_string().contains("line 1"), "{err}");
    });
}

#[test]
fn tiles_are_read_from_stored_hashes() {
    both(|store| {
        let (mut log, _) = filled(store, 300);
        let size = log.size().expect("size");
        let bodies: Vec<Vec<u8>> = (0..size).map(|i| log.entry(i).expect("e").1).collect();
        for tile in tlog_tiles::Tile::new_tiles(8, 0, size) {
            let data = log.tile(&tile).expect("tile");
            assert_eq!(data.len(), 32 * tile.width() as usize, "{}", tile.path());
            if tile.level() == 0 {
                let first = tile.level_index() * 256;
                for (i, chunk) in data.chunks(32).enumerate() {
                    let leaf =
                        tlog_tiles::record_hash(&bodies[usize::try_from(first).expect("n") + i]);
                    assert_eq!(chunk, leaf.0.as_slice());
                }
            } else {
                // A level-1 tile hash is the root of the 256 leaves below it.
                assert_eq!(&data[..32], mth(&bodies[..256]).as_slice());
            }
        }
    });
}

#[test]
fn queries_filter_and_page() {
    both(|store| {
        let (mut log, _) = filled(store, 9);
        let deploys = log
            .list(&Query {
                action: Some("deploy".into()),
                limit: 100,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(
            deploys.iter().map(|e| e.index).collect::<Vec<_>>(),
            [6, 3, 0]
        );
        let page = log
            .list(&Query {
                before: Some(5),
                limit: 2,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(page.iter().map(|e| e.index).collect::<Vec<_>>(), [4, 3]);
        let by_run = log
            .list(&Query {
                run: Some(7),
                limit: 5,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(by_run.len(), 1);
        assert_eq!(by_run[0].links.run, Some(7));
    });
}

#[test]
fn entries_belong_to_a_tenant_and_queries_keep_to_one() {
    both(|store| {
        let mut log = store.open();
        let k = key();
        for n in 0..6 {
            let mut e = entry(n);
            e.tenant = (n % 2 == 1).then(|| "acme".to_owned());
            log.append(&k, &e).expect("append");
        }
        let of = |log: &mut Log, tenant: &str| -> Vec<u64> {
            log.list(&Query {
                tenant: Some(tenant.to_owned()),
                limit: 100,
                ..Query::default()
            })
            .expect("list")
            .iter()
            .map(|e| e.index)
            .collect()
        };
        assert_eq!(of(&mut log, "acme"), [5, 3, 1]);
        assert_eq!(of(&mut log, "default"), [4, 2, 0]);
        assert!(of(&mut log, "globex").is_empty());
        let (e, body) = log.entry(3).expect("entry");
        assert_eq!(e.tenant(), "acme");
        assert!(String::from_utf8_lossy(&body).contains(r#""tenant":"acme""#));
        // An entry without a tenant has no `tenant` field: its bytes (and hash) are what
        // they were before tenants were recorded.
        let (e, body) = log.entry(2).expect("entry");
        assert_eq!(e.tenant(), "default");
        assert!(!String::from_utf8_lossy(&body).contains("tenant"));
        assert!(
            log.verify(&trust(&k), &[])
                .expect("verify")
                .problems
                .is_empty()
        );

        // The column is checked against the entry like the others.
        store.unlock();
        store
            .exec(
                "UPDATE audit_entries SET tenant = 'acme' WHERE idx = 4",
                None,
            )
            .expect("tamper");
        let (bad, problems) = first_bad(store, &k);
        assert_eq!(bad, Some(4), "{problems:?}");
        assert!(problems[0].contains("`tenant` column"), "{problems:?}");
    });
}

#[test]
fn a_log_from_before_tenants_is_upgraded_in_place() {
    both(|store| {
        let (log, k) = filled(store, 4);
        drop(log);
        // Back to schema 1: no tenant column.
        store
            .exec(
                "DROP INDEX audit_by_tenant; ALTER TABLE audit_entries DROP COLUMN tenant;
                 UPDATE audit_meta SET value = '1' WHERE key = 'schema';",
                None,
            )
            .expect("downgrade");
        let mut log = store.open();
        assert!(
            log.verify(&trust(&k), &[])
                .expect("verify")
                .problems
                .is_empty()
        );
        let mine = log
            .list(&Query {
                tenant: Some("default".to_owned()),
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(mine.len(), 4);
        log.append(&k, &entry(4)).expect("append after the upgrade");
    });
}
