//! `maestro serve` (the conductor) and `maestro token create|list|revoke`.

use maestro_server::auth::issue;
use maestro_server::{AppState, Settings};
use maestro_store::Store;

use crate::args::{ApiCommand, ServeArgs, StoreArgs, TokenCommand, TokenCreateArgs};
use crate::exit::{self, Failure};
use crate::settings;

/// The longest a token may live.
const MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_millis(maestro_server::auth::MAX_TOKEN_LIFETIME_MS.unsigned_abs());

fn config_failure(e: maestro_server::ServerError) -> Failure {
    match e {
        maestro_server::ServerError::Config { .. } => Failure::usage(
            e.to_string(),
            "see `maestro serve --help` and docs/conductor.md",
        ),
        other => Failure::env(
            other,
            "check --database / MAESTRO_DATABASE_URL and --listen",
        ),
    }
}

pub(crate) fn serve(a: &ServeArgs) -> Result<u8, Failure> {
    let paths = settings::paths(&a.common);
    let file = match &a.config {
        Some(p) => Settings::from_file(p).map_err(config_failure)?,
        None => Settings::default(),
    };
    let given = Settings {
        listen: a.listen.clone(),
        database: a.database.clone().filter(|d| !d.is_empty()),
        mode: a.mode.clone(),
        policy: a.policy.clone(),
        max_connections: a.max_connections,
        ..Settings::default()
    };
    let default_db = paths.store();
    let mut config = file
        .overridden_by(given)
        .validate(&default_db.display().to_string())
        .map_err(config_failure)?;
    if config.database == default_db.display().to_string() {
        std::fs::create_dir_all(&paths.home)
            .map_err(|e| Failure::env(e, "Maestro's home directory must be writable"))?;
    }
    // The conductor holds the audit key: make it non-dumpable, so no process of the same
    // user (a release runs as one) can read its memory or `/proc/<pid>/environ`.
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false).map_err(|e| {
        Failure::env(
            std::io::Error::from(e),
            "the conductor could not make itself non-dumpable (prctl PR_SET_DUMPABLE)",
        )
    })?;
    config.audit_key = audit_key(&paths, &config.database)?;
    // Request spans go where the OpenTelemetry variables say; a wrong one stops the
    // start, as any other configuration error does.
    config.exporter =
        maestro_telemetry::otlp::Exporter::from_env(|k| std::env::var(k).ok(), "maestro-conductor")
            .map_err(|e| Failure::usage(e.to_string(), "see docs/telemetry.md"))?;
    if let Ok(v) = std::env::var("OTEL_BSP_SCHEDULE_DELAY")
        && !v.is_empty()
    {
        let ms: u64 = v.parse().ok().filter(|ms| (1..=600_000).contains(ms)).ok_or_else(|| {
            Failure::usage(
                format!("OTEL_BSP_SCHEDULE_DELAY `{v}` is not a number of milliseconds from 1 to 600000"),
                "leave it unset for 5000",
            )
        })?;
        config.span_delay = std::time::Duration::from_millis(ms);
    }
    let state = AppState::open(&config).map_err(config_failure)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::env(e, "the async runtime could not start"))?;
    rt.block_on(async move {
        let listener = maestro_server::bind(&config)
            .await
            .map_err(config_failure)?;
        maestro_server::serve(state, listener, shutdown_signal())
            .await
            .map_err(config_failure)
    })?;
    Ok(exit::OK)
}

/// The key sensitive actions' audit entries are signed with: `MAESTRO_AUDIT_KEY`, else
/// the home's key file if there is one; it must be the key the conductor's audit log is
/// signed with.
fn audit_key(
    paths: &settings::Paths,
    database: &str,
) -> Result<Option<std::sync::Arc<maestro_audit::LogKey>>, Failure> {
    let (text, source) = match std::env::var(crate::audit::KEY_ENV) {
        Ok(t) if !t.trim().is_empty() => (t, crate::audit::KEY_ENV.to_owned()),
        _ => {
            let file = crate::audit::key_file(paths);
            match std::fs::read_to_string(&file) {
                Ok(t) => (t, file.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(Failure::env(
                        e,
                        "the audit log key file could not be read; check its permissions",
                    ));
                }
            }
        }
    };
    let key = maestro_audit::LogKey::parse(&text).map_err(|e| {
        Failure::usage(
            format!("{source}: {e}"),
            "give the audit log's private key (the contents of .maestro/audit/log.key where it was created)",
        )
    })?;
    let mut log = if maestro_store::is_postgres(database) {
        maestro_audit::Log::open_postgres(database)
    } else {
        maestro_audit::Log::open_sqlite(std::path::Path::new(database))
    }
    .map_err(|e| Failure::env(e, "the conductor's audit log could not be opened"))?;
    let current = log
        .current_vkey()
        .map_err(|e| Failure::env(e, "the conductor's audit log could not be read"))?;
    if let Some(v) = current
        && v != key.vkey()
    {
        return Err(Failure::usage(
            format!("{source} is not the key of the conductor's audit log (signed by {v})"),
            "set MAESTRO_AUDIT_KEY to that log's key",
        ));
    }
    Ok(Some(std::sync::Arc::new(key)))
}

/// Ctrl-C or SIGTERM (what a service manager or Kubernetes sends).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

fn open(store: &StoreArgs) -> Result<Box<dyn Store>, Failure> {
    let paths = settings::paths(&store.common);
    let location = match store.database.as_deref().filter(|d| !d.is_empty()) {
        Some(url) => url.to_owned(),
        None => {
            std::fs::create_dir_all(&paths.home)
                .map_err(|e| Failure::env(e, "Maestro's home directory must be writable"))?;
            paths.store().display().to_string()
        }
    };
    maestro_store::open(&location).map_err(|e| {
        Failure::env(
            e,
            "tokens live in the conductor's store: --database postgres://… or .maestro/store.db",
        )
    })
}

pub(crate) fn token(cmd: &TokenCommand) -> Result<u8, Failure> {
    match cmd {
        TokenCommand::Create(a) => create(a),
        TokenCommand::List { store, json } => list(store, *json),
        TokenCommand::Revoke { store, id } => {
            let mut s = open(store)?;
            if s.token_revoke(id, maestro_server::now_ms())
                .map_err(|e| Failure::env(e, "the store could not be written"))?
            {
                eprintln!("revoked {id}");
                Ok(exit::OK)
            } else {
                Err(Failure::usage(
                    format!("no active token has the id {id}"),
                    "`maestro token list` shows the ids and which are revoked already",
                ))
            }
        }
    }
}

fn create(a: &TokenCreateArgs) -> Result<u8, Failure> {
    let usage = |m: String, hint: &str| Failure::usage(m, hint);
    if a.name.trim().is_empty() || a.actor.trim().is_empty() {
        return Err(usage(
            "--name and --actor must not be empty".to_owned(),
            "e.g. --name ci-deploy --actor ci:checkout",
        ));
    }
    maestro_server::auth::check_actor_name(&a.actor)
        .map_err(|m| usage(format!("--actor: {m}"), "the tenant is given with --tenant"))?;
    if a.scopes.is_empty() {
        return Err(usage(
            "a token needs at least one --scope".to_owned(),
            "e.g. --scope runs:read --scope session:read, or --scope '*' for everything its roles allow",
        ));
    }
    let ttl = settings::duration("--expires", &a.expires)?;
    if ttl.is_zero() || ttl > MAX_TOKEN_LIFETIME {
        return Err(usage(
            format!("--expires {} is out of range", a.expires),
            "a token lives from 1 second to 400 days; create a new one to rotate",
        ));
    }
    let (secret, row) = issue(
        &maestro_store::TokenRow {
            name: a.name.clone(),
            actor: a.actor.clone(),
            roles: a.roles.clone(),
            teams: a.teams.clone(),
            tenant: a.tenant.clone(),
            scopes: a.scopes.clone(),
            ..maestro_store::TokenRow::default()
        },
        i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        maestro_server::now_ms(),
    )
    .map_err(|e| {
        Failure::env(
            std::io::Error::other(e.to_string()),
            "no randomness available",
        )
    })?;
    open(&a.store)?
        .token_create(&row)
        .map_err(|e| Failure::env(e, "the store could not be written"))?;
    if a.json {
        let mut v = serde_json::to_value(&row).unwrap_or_default();
        v["secret"] = serde_json::Value::String(secret);
        println!("{v}");
    } else {
        eprintln!(
            "created {} for {} (expires {}); the secret is shown once:",
            row.id,
            row.actor,
            crate::cmd_runs::ts(row.expires_at_ms)
        );
        println!("{secret}");
    }
    Ok(exit::OK)
}

fn list(store: &StoreArgs, json: bool) -> Result<u8, Failure> {
    let tokens = open(store)?
        .token_list()
        .map_err(|e| Failure::env(e, "the store could not be read"))?;
    if json {
        println!("{}", serde_json::to_string(&tokens).unwrap_or_default());
        return Ok(exit::OK);
    }
    let now = maestro_server::now_ms();
    println!(
        "{:<21} {:<16} {:<20} {:<20} {:<24} STATE",
        "ID", "NAME", "ACTOR", "ROLES", "SCOPES"
    );
    for t in tokens {
        let state = match t.revoked_at_ms {
            Some(at) => format!("revoked {}", crate::cmd_runs::ts(at)),
            None if t.expires_at_ms <= now => {
                format!("expired {}", crate::cmd_runs::ts(t.expires_at_ms))
            }
            None => format!("active until {}", crate::cmd_runs::ts(t.expires_at_ms)),
        };
        println!(
            "{:<21} {:<16} {:<20} {:<20} {:<24} {state}",
            t.id,
            t.name,
            t.actor,
            t.roles.join(","),
            t.scopes.join(",")
        );
    }
    Ok(exit::OK)
}

pub(crate) fn api(cmd: &ApiCommand) -> Result<u8, Failure> {
    match cmd {
        ApiCommand::Manifest => {
            println!(
                "{}",
                serde_json::to_string_pretty(&maestro_server::persisted::manifest())
                    .unwrap_or_default()
            );
            Ok(exit::OK)
        }
        ApiCommand::Coverage { json } => coverage(*json),
        ApiCommand::Matrix { policy, matrix } => {
            let p = match policy {
                Some(dir) => maestro_server::authz::Policy::load(dir),
                None => maestro_server::authz::Policy::builtin(),
            }
            .map_err(config_failure)?;
            let m = match matrix {
                Some(f) => maestro_server::matrix::Matrix::load(f),
                None => maestro_server::matrix::Matrix::builtin(),
            }
            .map_err(config_failure)?;
            let flips = m.check(&p);
            for f in &flips {
                println!("FLIPPED  {f}");
            }
            println!(
                "{} of {} cells as the matrix says (policy {})",
                m.cells() - flips.len(),
                m.cells(),
                p.source()
            );
            if flips.is_empty() {
                Ok(exit::OK)
            } else {
                eprintln!(
                    "{} cell(s) flipped: if the policy change is meant, update the matrix to \
                     say so; otherwise fix the policy",
                    flips.len()
                );
                Ok(exit::PIPELINE_FAILED)
            }
        }
    }
}

fn coverage(json: bool) -> Result<u8, Failure> {
    use maestro_server::coverage::{self, Share};
    let matrix = maestro_server::matrix::Matrix::builtin().map_err(config_failure)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Failure::env(e, "a runtime could not start"))?;
    let fields = rt.block_on(coverage::query_fields());
    let r = coverage::report(maestro_server::console::OPERATIONS, &fields, &matrix);
    let shares: [(&str, &Share); 5] = [
        ("console operations persisted", &r.console_persisted),
        ("REST endpoints under the ABAC wrapper", &r.rest_wrapped),
        ("REST endpoints with a policy-matrix test", &r.rest_tested),
        ("GraphQL fields under the ABAC wrapper", &r.graphql_wrapped),
        (
            "GraphQL fields with a policy-matrix test",
            &r.graphql_tested,
        ),
    ];
    let complete = shares.iter().all(|(_, s)| s.outside.is_empty());
    if json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        for (label, s) in shares {
            println!("{:>6.1}%  {label} ({}/{})", s.percent(), s.part, s.whole);
            for o in &s.outside {
                println!("         missing: {o}");
            }
        }
        println!("policy matrix: {} cells", r.matrix_cells);
    }
    Ok(if complete {
        exit::OK
    } else {
        exit::PIPELINE_FAILED
    })
}
