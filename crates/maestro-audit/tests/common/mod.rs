//! Shared helpers: entries, keys, and a throwaway PostgreSQL database per test on the
//! server at 127.0.0.1:5432 (user postgres, trust auth), dropped when the test ends.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::allow_attributes,
    reason = "shared by several test binaries"
)]

use maestro_audit::{Actor, Links, LogKey, NewEntry, Outcome};
use serde_json::json;

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub fn actor(id: &str) -> Actor {
    Actor {
        id: id.to_owned(),
        via: "os-user".to_owned(),
    }
}

pub fn entry(n: u64) -> NewEntry {
    NewEntry {
        actor: actor("alice"),
        action: if n.is_multiple_of(3) {
            "deploy"
        } else {
            "note"
        }
        .to_owned(),
        target: format!("service/checkout@stage#{n}"),
        params: json!({"n": n, "artifact": "dist/app.tar.gz"}),
        reason: Some(format!("change {n}: ship the fix")),
        result: Outcome::Success,
        links: Links {
            run: Some(i64::try_from(n).expect("n")),
            ..Links::default()
        },
    }
}

pub fn key() -> LogKey {
    LogKey::generate("example.test/audit").expect("key").0
}

/// A database created for one test and dropped with `WITH (FORCE)` when dropped.
pub struct PgDb {
    pub url: String,
    name: String,
}

impl PgDb {
    pub fn new() -> PgDb {
        let mut admin = postgres::Client::connect(PG_ADMIN, postgres::NoTls)
            .expect("the PostgreSQL server at 127.0.0.1:5432 (user postgres) is reachable");
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).expect("random");
        let name = format!(
            "maestro_audit_test_{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        PgDb {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(PG_ADMIN, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
