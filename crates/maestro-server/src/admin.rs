//! Administration over the API: a tenant's API tokens, listed, created and revoked by its
//! admins. Creating and revoking are sensitive: [`crate::api::dispatch`] requires a
//! reason and writes audit entries around them.

use axum::http::StatusCode;
use maestro_store::TokenRow;
use serde::Deserialize;
use serde_json::json;

use crate::api::{Answer, ApiError, Ctx, bad_request};
use crate::authz::Resource;

/// A token as the policy sees it: of its own tenant.
fn token_resource(t: &TokenRow) -> Resource {
    Resource {
        kind: "token",
        id: Some(t.id.clone()),
        tenant: t.tenant.clone(),
        ..Resource::default()
    }
}

/// Every token of the tenants the policy lets the actor see, newest first (hashes never
/// leave the store).
pub(crate) fn tokens_list(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let tokens = ctx
            .auth
            .state
            .pool
            .with(|s| s.token_list())
            .await
            .map_err(|e| ApiError::store(&e))?;
        ctx.auth.filter(tokens, token_resource)
    })
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    actor: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    teams: Vec<String>,
    scopes: Vec<String>,
    /// Lifetime in seconds (1 to 400 days).
    expires_in_seconds: u64,
}

/// A tenant's or role's name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub(crate) fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn words(field: &str, list: &[String]) -> Result<(), ApiError> {
    if list.len() > 32 {
        return Err(bad_request(format!(
            "request body: {field} has more than 32 entries"
        )));
    }
    for (i, w) in list.iter().enumerate() {
        let ok = !w.is_empty()
            && w.len() <= 128
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:*@/".contains(&b));
        if !ok {
            return Err(bad_request(format!(
                "request body: {field}[{i}] `{w}` must be 1 to 128 letters, digits or - _ . : * @ /"
            )));
        }
    }
    Ok(())
}

/// A new token holds no more than its creator. Each role must be known to the conductor,
/// and its roles and teams together grant nothing its creator cannot do: for every action
/// of every endpoint and GraphQL field, where the policy lets the new token do it in the
/// tenant or another, it must let the creator do it too (so an admin may mint a developer
/// token without holding the `developer` role, never an admin token from an operator's). Each scope must be one of
/// the creator's (`*` only from a creator with `*`).
fn within_creator(
    state: &crate::AppState,
    creator: &crate::auth::Actor,
    roles: &[String],
    teams: &[String],
    scopes: &[String],
) -> Result<(), ApiError> {
    let exceeds = |m: String| ApiError::new(StatusCode::FORBIDDEN, "exceeds_creator", m);
    let mut actions: Vec<(&'static str, &'static str)> = crate::api::ENDPOINTS
        .iter()
        .map(|e| (e.action, e.kind))
        .chain(crate::graphql::FIELDS.iter().map(|f| (f.action, f.kind)))
        .collect();
    actions.sort_unstable();
    actions.dedup();
    for (i, r) in roles.iter().enumerate() {
        if !state.roles.contains(r) {
            return Err(bad_request(format!(
                "request body: roles[{i}] `{r}` is not a role of this conductor ({})",
                state.roles.join(", ")
            )));
        }
    }
    // The new token as the policy will see it, against its creator, action by action.
    let probe = crate::auth::Actor {
        roles: roles.to_vec(),
        teams: teams.to_vec(),
        ..creator.clone()
    };
    // Its own tenant, and another (a policy may grant across tenants, by team say).
    let tenants = [
        creator.tenant.clone(),
        format!("{}~another", creator.tenant),
    ];
    for (&(action, kind), tenant) in actions
        .iter()
        .flat_map(|a| tenants.iter().map(move |t| (a, t)))
    {
        let collection = Resource {
            kind,
            tenant: tenant.clone(),
            ..Resource::default()
        };
        if state.policy.allows(&probe, action, &collection)
            && !state.policy.allows(creator, action, &collection)
        {
            return Err(exceeds(format!(
                "roles {roles:?} with teams {teams:?} may {action}, which {} may not: a token cannot hold more than its creator",
                creator.id
            )));
        }
    }
    let all = creator.scopes.iter().any(|s| s == "*");
    for (i, sc) in scopes.iter().enumerate() {
        if !all && !creator.scopes.contains(sc) {
            return Err(exceeds(format!(
                "scopes[{i}]: {} does not hold the scope `{sc}`: a token cannot hold more than its creator",
                creator.id
            )));
        }
    }
    Ok(())
}

/// Creates a token in the admin's own tenant (never another's); the answer holds the
/// secret, once.
pub(crate) fn tokens_create(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let body: NewToken = ctx.json()?;
        for (field, v) in [("name", &body.name), ("actor", &body.actor)] {
            if v.trim().is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                return Err(bad_request(format!(
                    "request body: {field} must be 1 to 200 printable characters"
                )));
            }
        }
        words("roles", &body.roles)?;
        words("teams", &body.teams)?;
        words("scopes", &body.scopes)?;
        if body.scopes.is_empty() {
            return Err(bad_request(
                "request body: scopes is empty; a token needs at least one (e.g. runs:read)"
                    .to_owned(),
            ));
        }
        crate::auth::check_actor_name(&body.actor)
            .map_err(|m| bad_request(format!("request body: {m}")))?;
        within_creator(
            &ctx.auth.state,
            &ctx.auth.actor,
            &body.roles,
            &body.teams,
            &body.scopes,
        )?;
        let max_s = crate::auth::MAX_TOKEN_LIFETIME_MS / 1000;
        if body.expires_in_seconds == 0 || body.expires_in_seconds > max_s.unsigned_abs() {
            return Err(bad_request(format!(
                "request body: expires_in_seconds must be from 1 to {max_s} (400 days)"
            )));
        }
        let template = TokenRow {
            name: body.name,
            actor: body.actor,
            roles: body.roles,
            teams: body.teams,
            tenant: ctx.auth.actor.tenant.clone(),
            scopes: body.scopes,
            ..TokenRow::default()
        };
        let ttl = i64::try_from(body.expires_in_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
        let (secret, row) = crate::auth::issue(&template, ttl, crate::now_ms()).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_randomness",
                format!("no randomness to make a secret: {e}"),
            )
        })?;
        let resource = token_resource(&row);
        if !ctx.auth.visible(&resource) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{} may not create tokens", ctx.auth.actor.id),
            ));
        }
        let permit = ctx.permit(&resource).await?;
        let stored = row.clone();
        ctx.auth
            .state
            .pool
            .with(move |s| s.token_create(&stored))
            .await
            .map_err(|e| ApiError::store(&e))?;
        let mut answer = serde_json::to_value(&row).unwrap_or_default();
        answer["secret"] = json!(secret);
        permit.created(answer)
    })
}

/// Revokes a token of a tenant the actor administers; at once, for good.
pub(crate) fn tokens_revoke(ctx: Ctx) -> Answer {
    Box::pin(async move {
        let id = ctx.path.get("id").cloned().unwrap_or_default();
        let wanted = id.clone();
        let found = ctx
            .auth
            .state
            .pool
            .with(move |s| Ok(s.token_list()?.into_iter().find(|t| t.id == wanted)))
            .await
            .map_err(|e| ApiError::store(&e))?;
        let missing = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("token {id} not found"),
            )
        };
        let token = found.ok_or_else(missing)?;
        let resource = token_resource(&token);
        if !ctx.auth.visible(&resource) {
            return Err(missing());
        }
        let permit = ctx.permit(&resource).await?;
        let target = id.clone();
        let revoked = ctx
            .auth
            .state
            .pool
            .with(move |s| s.token_revoke(&target, crate::now_ms()))
            .await
            .map_err(|e| ApiError::store(&e))?;
        if !revoked {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_revoked",
                format!("token {id} is revoked already"),
            ));
        }
        permit.answer(json!({"id": id, "actor": token.actor, "revoked": true}))
    })
}
