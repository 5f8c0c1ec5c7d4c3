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
    let (admin, _) = s.token_in("acme", &["admin"], &["tokens:read", "tokens:write", "runs:write"], 3_600_000);
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
    assert_eq!(
        shape,
        [
            ("tokens.create", "token", Outcome::Started, None),
            ("tokens.create", "token", Outcome::Success, Some(0)),
            // A refused call (the bad body, another tenant's token) writes nothing, not
            // even an audit entry: it is refused before its permit.
            ("tokens.revoke", target.as_str(), Outcome::Started, None),
            ("tokens.revoke", target.as_str(), Outcome::Success, Some(2)),
            // Revoking twice got past every check; the store found it revoked already.
            ("tokens.revoke", target.as_str(), Outcome::Started, None),
            ("tokens.revoke", target.as_str(), Outcome::Failure, Some(4)),
        ]
    );
    assert!(log.iter().all(|e| e.actor.id == "acme/user:admin" && e.reason.as_deref() == Some(WHY.1)), "{log:?}");
    assert_eq!(log[3].params["status"], 200);
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
    assert_eq!(listed(&acme_viewer), (0..6).rev().collect::<Vec<u64>>());
    assert!(listed(&default_viewer).is_empty(), "not another tenant's entries");
    let (status, proof, _) = s.get("/api/v1/audit/entries/3/proof", Some(&acme_viewer));
    assert_eq!((status, proof["index"].as_u64()), (200, Some(3)), "{proof}");
    let (status, _, _) = s.get("/api/v1/audit/entries/3/proof", Some(&default_viewer));
    assert_eq!(status, 404, "another tenant's entry is not there");
    for token in [&acme_viewer, &default_viewer] {
        let (status, head, _) = s.get("/api/v1/audit/checkpoint", Some(token));
        assert_eq!((status, head["size"].as_u64()), (200, Some(6)), "{head}");
    }
}

a_token_never_mints_more_than_it_holds(b) {
    let s = audited(b);
    let (admin, _) = s.token_in("acme", &["admin"], &["tokens:write", "runs:read", "session:read"], 3_600_000);
    let (narrow, _) = s.token_in("acme", &["operator", "admin"], &["tokens:write"], 3_600_000);
    let mint = |token: &str, roles: &[&str], scopes: &[&str], actor: &str| {
        s.post_with("/api/v1/tokens", Some(token), &[WHY], &json!({"name": "t", "actor": actor, "roles": roles, "scopes": scopes, "expires_in_seconds": 60}))
    };
    let before = s.store().token_list().expect("tokens").len();
    for (token, roles, scopes, actor, status, code, says) in [
        (&admin, &["admin"][..], &["*"][..], "ci:x", 403, "exceeds_creator", "`*`"),
        (&admin, &["admin"], &["metrics:read"], "ci:x", 403, "exceeds_creator", "`metrics:read`"),
        (&admin, &["root"], &["runs:read"], "ci:x", 400, "bad_request", "`root` is not a role"),
        (&admin, &["viewer"], &["runs:read"], "globex/user:alice", 400, "bad_request", "contains `/`"),
        (&admin, &["viewer"], &["runs:read"], "conductor", 400, "bad_request", "reserved"),
        (&admin, &["viewer"], &["runs:read"], "train:hello-service", 400, "bad_request", "reserved"),
    ] {
        let (got, body) = mint(token, roles, scopes, actor);
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{roles:?} {scopes:?} {actor}: {body}");
        assert!(message(&body).contains(says), "{body}");
    }
    // Nothing was stored by a refusal.
    assert_eq!(s.store().token_list().expect("tokens").len(), before);
    // Within what it holds: a developer token from an admin (the policy grants an admin
    // everything a developer may do), runs:read only.
    let (got, body) = mint(&admin, &["developer"], &["runs:read", "session:read"], "ci:shop");
    assert_eq!(got, 201, "{body}");
    let secret = body["secret"].as_str().expect("secret").to_owned();
    // A token with only tokens:write cannot give out runs:read, even from an admin.
    let (got, body) = mint(&narrow, &["viewer"], &["runs:read"], "ci:y");
    assert_eq!((got, body["error"]["code"].as_str()), (403, Some("exceeds_creator")), "{body}");
    // The new actor is namespaced by its tenant wherever it is recorded.
    let s2 = s.store().token_list().expect("tokens");
    assert!(s2.iter().any(|t| t.actor == "ci:shop" && t.tenant == "acme"));
    let (status, me, _) = s.get("/api/v1/runs", Some(&secret));
    assert_eq!(status, 200, "{me}");
    let (status, me, _) = s.get("/api/v1/whoami", Some(&secret));
    assert_eq!((status, me["id"].as_str()), (200, Some("acme/ci:shop")), "{me}");
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
