//! A tenant's admins manage its API tokens over the API, on SQLite and PostgreSQL:
//! creating and revoking are sensitive — refused without a reason, refused when the
//! audit log cannot be written, and otherwise written to it before and after.

#[macro_use]
mod common;

use std::sync::Arc;

use common::{Backend, Server, message};
use maestro_audit::{Outcome, Query};
use maestro_server::Settings;
use serde_json::json;

fn audited(b: &Backend) -> Server {
    let (key, _) = maestro_audit::LogKey::generate("conductor.test/audit").expect("key");
    let key = Arc::new(key);
    Server::configured_with(b, Settings::default(), move |c| c.audit_key = Some(key))
}

fn entries(s: &Server) -> Vec<maestro_audit::Entry> {
    let mut log = if s.location.starts_with("postgres://") {
        maestro_audit::Log::open_postgres(&s.location)
    } else {
        maestro_audit::Log::open_sqlite(std::path::Path::new(&s.location))
    }
    .expect("log");
    let mut all = log
        .list(&Query {
            limit: 100,
            ..Query::default()
        })
        .expect("list");
    all.sort_by_key(|e| e.index);
    all
}

const WHY: (&str, &str) = ("X-Maestro-Reason", "INC-2231: rotate the leaked CI token");

on_both! {
admins_manage_their_tenants_tokens_with_a_reason_on_the_record(b) {
    let s = audited(b);
    let (admin, _) = s.token_in("acme", &["admin"], &["tokens:read", "tokens:write"], 3_600_000);
    let (_, globex_id) = s.token_in("globex", &["viewer"], &["*"], 3_600_000);
    let new = json!({"name": "ci-deploy", "actor": "ci:shop", "roles": ["developer"], "scopes": ["runs:write"], "expires_in_seconds": 3600});

    let (status, body) = s.post("/api/v1/tokens", Some(&admin), &new);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("reason_required")), "{body}");
    assert!(entries(&s).is_empty(), "nothing happened, nothing is audited");

    let (status, created) = s.post_with("/api/v1/tokens", Some(&admin), &[WHY], &new);
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tenant"], "acme", "the admin's own tenant");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(created.get("hash").is_none());
    let (status, me, _) = s.get("/api/v1/whoami", Some(&secret));
    assert_eq!(status, 403, "the new token has only runs:write: {me}");
    let (status, body) = s.post_with("/api/v1/tokens", Some(&admin), &[WHY], &json!({"name": "x", "actor": "y", "scopes": ["runs:read"], "expires_in_seconds": 60, "tenant": "globex"}));
    assert!(status == 400 && message(&body).contains("unknown field `tenant`"), "{body}");

    let (status, listed, _) = s.get("/api/v1/tokens", Some(&admin));
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed.as_array().expect("list").iter().filter_map(|t| t["id"].as_str()).collect();
    assert!(ids.contains(&id.as_str()) && !ids.contains(&globex_id.as_str()), "only acme's tokens: {ids:?}");
    assert!(!listed.to_string().contains("\"hash\""));

    let (status, body) = s.post_with(&format!("/api/v1/tokens/{id}/revoke"), Some(&admin), &[WHY], &json!({}));
    assert_eq!((status, body["revoked"].as_bool()), (200, Some(true)), "{body}");
    let (status, _) = s.post_with(&format!("/api/v1/tokens/{id}/revoke"), Some(&admin), &[WHY], &json!({}));
    assert_eq!(status, 409);
    let (status, _) = s.post_with(&format!("/api/v1/tokens/{globex_id}/revoke"), Some(&admin), &[WHY], &json!({}));
    assert_eq!(status, 404, "another tenant's token is not there for acme's admin");
    let (status, _, _) = s.get("/api/v1/runs", Some(&secret));
    assert_eq!(status, 401, "revoked at once");

    let log = entries(&s);
    let shape: Vec<(&str, &str, Outcome, Option<u64>)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str(), e.result, e.links.parent))
        .collect();
    let target = format!("token:{id}");
    let globex = format!("token:{globex_id}");
    assert_eq!(
        shape,
        [
            ("tokens.create", "token", Outcome::Started, None),
            ("tokens.create", "token", Outcome::Success, Some(0)),
            // The refused body was audited too: it was an attempt with a reason.
            ("tokens.create", "token", Outcome::Started, None),
            ("tokens.create", "token", Outcome::Failure, Some(2)),
            ("tokens.revoke", target.as_str(), Outcome::Started, None),
            ("tokens.revoke", target.as_str(), Outcome::Success, Some(4)),
            ("tokens.revoke", target.as_str(), Outcome::Started, None),
            ("tokens.revoke", target.as_str(), Outcome::Failure, Some(6)),
            ("tokens.revoke", globex.as_str(), Outcome::Started, None),
            ("tokens.revoke", globex.as_str(), Outcome::Denied, Some(8)),
        ]
    );
    assert!(log.iter().all(|e| e.actor.id == "user:admin" && e.reason.as_deref() == Some(WHY.1)), "{log:?}");
    assert_eq!(log[5].params["status"], 200);
    assert!(!format!("{log:?}").contains(&secret), "the secret is never audited");
    assert!(log.iter().all(|e| e.tenant() == "acme"), "acme's actions are acme's entries");

    // Each tenant's auditors read their own tenant's entries, and the log-wide head.
    let (acme_viewer, _) = s.token_in("acme", &["viewer"], &["audit:read"], 3_600_000);
    let (default_viewer, _) = s.token(&["viewer"], &["audit:read"]);
    let listed = |token: &str| -> Vec<u64> {
        let (status, body) = s.graphql(token, &json!({"query": "{ auditEntries(limit: 100) { index } }"}));
        assert_eq!(status, 200, "{body}");
        body["data"]["auditEntries"].as_array().expect("entries").iter().filter_map(|e| e["index"].as_u64()).collect()
    };
    assert_eq!(listed(&acme_viewer), (0..10).rev().collect::<Vec<u64>>());
    assert!(listed(&default_viewer).is_empty(), "not another tenant's entries");
    let (status, proof, _) = s.get("/api/v1/audit/entries/3/proof", Some(&acme_viewer));
    assert_eq!((status, proof["index"].as_u64()), (200, Some(3)), "{proof}");
    let (status, _, _) = s.get("/api/v1/audit/entries/3/proof", Some(&default_viewer));
    assert_eq!(status, 404, "another tenant's entry is not there");
    for token in [&acme_viewer, &default_viewer] {
        let (status, head, _) = s.get("/api/v1/audit/checkpoint", Some(token));
        assert_eq!((status, head["size"].as_u64()), (200, Some(10)), "{head}");
    }
}

sensitive_actions_are_refused_without_an_audit_key_and_to_non_admins(b) {
    let s = Server::start(b, None);
    let (admin, _) = s.token(&["admin"], &["*"]);
    let (dev, dev_id) = s.token(&["developer"], &["*"]);
    let (status, body) = s.post_with(&format!("/api/v1/tokens/{dev_id}/revoke"), Some(&admin), &[WHY], &json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("audit_unavailable")), "{body}");
    assert!(message(&body).contains("nothing was done"), "{body}");
    let (status, _, _) = s.get("/api/v1/whoami", Some(&dev));
    assert_eq!(status, 200, "the token still works");
    let (status, body) = s.post_with(&format!("/api/v1/tokens/{dev_id}/revoke"), Some(&dev), &[WHY], &json!({}));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
}
}
