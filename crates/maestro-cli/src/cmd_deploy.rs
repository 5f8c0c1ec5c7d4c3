//! `maestro deploy` and `maestro canary`: the conductor's deployments from the command
//! line (token from `MAESTRO_TOKEN`).

use std::time::Duration;

use maestro_client::{Conductor, Credential};
use serde_json::{Value, json};

use crate::args::{CanaryCommand, CanaryControl, DeployArgs, RollbackArgs, ServerArgs};
use crate::exit::{Failure, OK, PIPELINE_FAILED};

pub(crate) fn conductor(s: &ServerArgs) -> Result<Conductor, Failure> {
    let credential = Credential::from_env(|k| std::env::var(k).ok(), &s.server).map_err(|e| {
        Failure::usage(
            e.to_string(),
            "create one with `maestro token create --role operator --scope deployments:read --scope deployments:write`",
        )
    })?;
    Conductor::new(&s.server, credential)
        .map_err(|e| Failure::usage(e.to_string(), "e.g. --server http://127.0.0.1:7070"))
}

pub(crate) fn refused(e: maestro_client::ClientError) -> Failure {
    let hint = match &e {
        maestro_client::ClientError::Refused { code, .. } if code == "unverified_artifact" => {
            "sign it and attest its provenance and SBOM with a key the environment trusts (the example's `evidence` job does)"
        }
        maestro_client::ClientError::Refused { code, .. } if code == "audit_unavailable" => {
            "the conductor needs its audit key (MAESTRO_AUDIT_KEY or `maestro audit key`)"
        }
        maestro_client::ClientError::Refused { code, .. } if code == "gates_not_green" => {
            "make the commit's gates green (`maestro run --server URL` on it), then cut again"
        }
        maestro_client::ClientError::Refused { .. } => "see the conductor's message above",
        _ => "is the conductor running? (`maestro serve --config FILE`)",
    };
    if e.is_transient() {
        Failure::env(e, hint)
    } else {
        Failure::usage(e.to_string(), hint)
    }
}

pub(crate) fn deploy(a: &DeployArgs) -> Result<u8, Failure> {
    let mut env = serde_json::Map::new();
    for kv in &a.set {
        let Some((k, v)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(Failure::usage(
                format!("--set {kv}: not KEY=VALUE"),
                "e.g. --set HELLO_ERROR_RATE=0.2",
            ));
        };
        env.insert(k.to_owned(), Value::from(v));
    }
    let artifact = std::path::absolute(&a.artifact).map_err(|e| {
        Failure::usage(
            format!("{}: {e}", a.artifact.display()),
            "give the artifact's path",
        )
    })?;
    let mut c = conductor(&a.server)?;
    let created = c
        .post_reasoned(
            &format!("/api/v1/environments/{}/deployments", a.environment),
            "the deployment",
            &json!({"artifact": artifact, "env": env, "run": a.run}),
            &a.reason,
        )
        .map_err(refused)?;
    let id = created["id"].as_i64().unwrap_or(0);
    println!(
        "deployment {id}: {} to {} ({})",
        created["version"].as_str().unwrap_or("?"),
        a.environment,
        created["artifact"].as_str().unwrap_or("?")
    );
    if !a.wait {
        println!("follow it with `maestro canary show {id}`");
        return Ok(OK);
    }
    follow(&mut c, id)
}

/// Prints the canary's timeline as it grows, until it ends.
fn follow(c: &mut Conductor, id: i64) -> Result<u8, Failure> {
    let mut printed = 0;
    loop {
        let d = c
            .get(&format!("/api/v1/deployments/{id}"), "the deployment")
            .map_err(refused)?;
        let timeline = d["canary"]["timeline"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for e in timeline.iter().skip(printed) {
            println!("{}", event_line(e));
        }
        printed = timeline.len();
        match d["status"].as_str() {
            Some("promoted") => {
                println!("promoted");
                return Ok(OK);
            }
            Some("rolled_back" | "aborted") => {
                println!(
                    "{}: {}",
                    d["status"].as_str().unwrap_or_default().replace('_', " "),
                    d["canary"]["reason"].as_str().unwrap_or("")
                );
                return Ok(PIPELINE_FAILED);
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn event_line(e: &Value) -> String {
    let weight = e["weight"].as_u64().unwrap_or(0);
    let verdict = e["verdict"]
        .as_str()
        .map(|v| format!(" {v}"))
        .unwrap_or_default();
    format!(
        "{:>6.2}% {}{verdict}: {}",
        weight as f64 / 100.0,
        e["kind"].as_str().unwrap_or("?"),
        e["detail"].as_str().unwrap_or("")
    )
}

pub(crate) fn canary(command: &CanaryCommand) -> Result<u8, Failure> {
    match command {
        CanaryCommand::Show { id, server, json } => {
            let mut c = conductor(server)?;
            let d = c
                .get(&format!("/api/v1/deployments/{id}"), "the deployment")
                .map_err(refused)?;
            if *json {
                println!("{d}");
            } else {
                println!(
                    "deployment {id}: {} to {} — {} (by {}: {})",
                    d["version"].as_str().unwrap_or("?"),
                    d["environment"].as_str().unwrap_or("?"),
                    d["status"].as_str().unwrap_or("?"),
                    d["actor"].as_str().unwrap_or("?"),
                    d["reason"].as_str().unwrap_or("")
                );
                for e in d["canary"]["timeline"].as_array().into_iter().flatten() {
                    println!("{}", event_line(e));
                }
                if let Some(r) = d["canary"]["reason"].as_str() {
                    println!("why: {r}");
                }
            }
            Ok(OK)
        }
        CanaryCommand::Pause(a) => control(a, "pause"),
        CanaryCommand::Resume(a) => control(a, "resume"),
        CanaryCommand::Abort(a) => control(a, "abort"),
        CanaryCommand::Promote(a) => control(a, "promote"),
    }
}

fn control(a: &CanaryControl, action: &str) -> Result<u8, Failure> {
    let mut c = conductor(&a.server)?;
    c.post_reasoned(
        &format!("/api/v1/deployments/{}/{action}", a.id),
        &format!("{action} of deployment {}", a.id),
        &json!({}),
        &a.reason,
    )
    .map_err(refused)?;
    println!("deployment {}: {action} done", a.id);
    Ok(OK)
}

pub(crate) fn rollback(a: &RollbackArgs) -> Result<u8, Failure> {
    let mut c = conductor(&a.server)?;
    let body = match &a.to {
        Some(v) => json!({"to": v}),
        None => json!({}),
    };
    let done = c
        .post_reasoned(
            &format!("/api/v1/environments/{}/rollback", a.environment),
            &format!("the rollback of {}", a.environment),
            &body,
            &a.reason,
        )
        .map_err(refused)?;
    println!(
        "{}: {} → {} (promoted by deployment {})",
        a.environment,
        done["from"].as_str().unwrap_or("?"),
        done["to"].as_str().unwrap_or("?"),
        done["deployment"]
    );
    Ok(OK)
}
