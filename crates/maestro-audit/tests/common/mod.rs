//! Shared helpers: entries and keys. A throwaway PostgreSQL database per test is
//! `maestro_store::pg::Throwaway` (the server at 127.0.0.1:5432, user postgres).

#![allow(
    dead_code,
    unreachable_pub,
    clippy::allow_attributes,
    reason = "shared by several test binaries"
)]

use maestro_audit::{Actor, Links, LogKey, NewEntry, Outcome};
use serde_json::json;

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
        tenant: None,
    }
}

pub fn key() -> LogKey {
    LogKey::generate("example.test/audit").expect("key").0
}
