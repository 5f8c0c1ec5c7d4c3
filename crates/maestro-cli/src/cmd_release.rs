//! `maestro release plan` and `maestro release changelog`: the next version and its notes
//! from the Conventional Commits since the last release tag. `cut`, `promote`, `status`
//! and `rollback`: the release train on the conductor.

use std::time::Duration;

use serde_json::{Value, json};

use crate::args::{ReleaseCommand, ReleaseFrom, ReleaseRef, ServerArgs};
use crate::cmd_deploy::{conductor, refused};
use crate::exit::{Failure, OK, PIPELINE_FAILED};

pub(crate) fn release(command: &ReleaseCommand) -> Result<u8, Failure> {
    match command {
        ReleaseCommand::Plan { from, json } => plan(from, *json),
        ReleaseCommand::Changelog { from, file } => changelog(from, file),
        ReleaseCommand::Cut {
            from,
            service,
            artifact,
            server,
            reason,
            no_tag,
            promote,
            dry_run,
            branch,
        } => {
            let how = Cut {
                no_tag: *no_tag,
                promote: *promote,
                dry_run: *dry_run,
                branch: branch.clone(),
            };
            cut(from, service, artifact, server.as_deref(), reason, &how)
        }
        ReleaseCommand::Promote {
            release,
            reason,
            detach,
        } => promote(release, reason, *detach),
        ReleaseCommand::Status { release, json } => status(release, *json),
        ReleaseCommand::Rollback { release, reason } => rollback(release, reason),
        ReleaseCommand::Evidence { release, out } => evidence(release, out.as_deref()),
    }
}

fn release_path(service: &str, version: &str) -> String {
    format!("/api/v1/releases/{service}/{version}")
}

/// How `release cut` goes on once the release is computed.
struct Cut {
    no_tag: bool,
    promote: bool,
    dry_run: bool,
    branch: String,
}

fn cut(
    from: &ReleaseFrom,
    service: &str,
    artifact: &std::path::Path,
    server: Option<&str>,
    reason: &str,
    how: &Cut,
) -> Result<u8, Failure> {
    let p = compute(from)?;
    let (Some(version), Some(tag)) = (&p.version, &p.tag) else {
        eprintln!("{}", nothing(&p));
        return Ok(PIPELINE_FAILED);
    };
    let artifact = std::path::absolute(artifact).map_err(|e| {
        Failure::usage(
            format!("{}: {e}", artifact.display()),
            "give the artifact's path",
        )
    })?;
    let on = maestro_release::git::on_branch(&from.repo, &p.head, &how.branch)
        .map_err(|e| Failure::usage(e.to_string(), "cut releases from the release branch"))?;
    if on.is_none() {
        return Err(Failure::usage(
            format!(
                "commit {} is not on `{}`: releases are cut from it",
                &p.head[..12.min(p.head.len())],
                how.branch
            ),
            "merge it first, or give --branch for another release branch",
        ));
    }
    let changed =
        maestro_release::git::changed_paths(&from.repo, p.previous.as_deref(), &p.head)
            .map_err(|e| Failure::usage(e.to_string(), "run it in the repository (or -C DIR)"))?;
    let body = json!({
        "service": service,
        "version": version.to_string(),
        "commit": p.head,
        "artifact": artifact,
        "notes": p.notes.markdown(),
        "changed_paths": changed,
        "branch": how.branch,
    });
    if how.dry_run {
        println!(
            "{}",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        );
        return Ok(OK);
    }
    let server = ServerArgs {
        server: server.map(str::to_owned).ok_or_else(|| {
            Failure::usage(
                "no conductor to cut the release on",
                "give --server URL (or MAESTRO_SERVER), or --dry-run",
            )
        })?,
    };
    let mut c = conductor(&server)?;
    let created = c
        .post_reasoned("/api/v1/releases", "the release", &body, reason)
        .map_err(refused)?;
    println!(
        "release {service} {version} cut from {} ({})",
        &p.head[..12.min(p.head.len())],
        created["digest"].as_str().unwrap_or("?")
    );
    for g in created["progress"]["gates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("  gate {} green", g["gate"].as_str().unwrap_or("?"));
    }
    if !how.no_tag {
        maestro_release::git::create_tag(&from.repo, tag, &p.head, &format!("{service} {version}"))
            .map_err(|e| {
                Failure::env(
                    e,
                    "the release is recorded on the conductor; create the tag by hand (`git tag -a`)",
                )
            })?;
        println!("tagged {tag} (push it: `git push origin {tag}`)");
    }
    if how.promote {
        let r = ReleaseRef {
            version: version.to_string(),
            service: service.to_owned(),
            server,
        };
        return promote(&r, reason, false);
    }
    println!(
        "promote it with `maestro release promote {version} --service {service} --reason ...`"
    );
    Ok(OK)
}

fn promote(r: &ReleaseRef, reason: &str, detach: bool) -> Result<u8, Failure> {
    let mut c = conductor(&r.server)?;
    let path = release_path(&r.service, &r.version);
    let started = c
        .post_reasoned(
            &format!("{path}/promote"),
            "the release",
            &json!({}),
            reason,
        )
        .map_err(refused)?;
    if detach {
        println!(
            "release {} {}: {}; follow it with `maestro release status {} --service {}`",
            r.service,
            r.version,
            started["status"].as_str().unwrap_or("?"),
            r.version,
            r.service
        );
        return Ok(OK);
    }
    let mut printed = 0;
    loop {
        let now = c.get(&path, "the release").map_err(refused)?;
        let events = now["progress"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for e in events.iter().skip(printed) {
            println!("{}", e["message"].as_str().unwrap_or_default());
        }
        printed = events.len();
        match now["status"].as_str() {
            Some("released") => return Ok(OK),
            Some("rolled_back" | "blocked") => return Ok(PIPELINE_FAILED),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

fn status(r: &ReleaseRef, as_json: bool) -> Result<u8, Failure> {
    let mut c = conductor(&r.server)?;
    let v = c
        .get(&release_path(&r.service, &r.version), "the release")
        .map_err(refused)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(OK);
    }
    print!("{}", render_status(&v));
    Ok(OK)
}

/// A release's progress in a few lines.
fn render_status(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}: {} (commit {}, {})",
        v["service"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?").replace('_', " "),
        v["commit"].as_str().map_or("?", |c| &c[..12.min(c.len())]),
        v["digest"].as_str().unwrap_or("?"),
    );
    if let Some(why) = v["progress"]["reason"].as_str() {
        let _ = writeln!(out, "  why: {why}");
    }
    for s in v["progress"]["stages"].as_array().into_iter().flatten() {
        let dep = s["deployment"]
            .as_i64()
            .map(|d| format!(", deployment {d}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}: {}{dep}",
            s["environment"].as_str().unwrap_or("?"),
            s["step"].as_str().unwrap_or("?").replace('_', " ")
        );
        for k in s["smoke"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    smoke {}: {}",
                k["name"].as_str().unwrap_or("?"),
                if k["passed"].as_bool() == Some(true) {
                    "passed"
                } else {
                    "failed"
                }
            );
        }
        if let Some(last) = s["checks"].as_array().and_then(|c| c.last()) {
            let _ = writeln!(
                out,
                "    golden signals ({}): {}: {}",
                last["during"].as_str().unwrap_or("?"),
                last["status"].as_str().unwrap_or("?"),
                last["why"].as_str().unwrap_or("")
            );
        }
    }
    out
}

fn rollback(r: &ReleaseRef, reason: &str) -> Result<u8, Failure> {
    let mut c = conductor(&r.server)?;
    let v = c
        .post_reasoned(
            &format!("{}/rollback", release_path(&r.service, &r.version)),
            "the release",
            &json!({}),
            reason,
        )
        .map_err(refused)?;
    print!("{}", render_status(&v));
    Ok(OK)
}

fn compute(from: &ReleaseFrom) -> Result<maestro_release::Plan, Failure> {
    let labels = match &from.labels {
        Some(f) => maestro_release::read_labels(f).map_err(|e| {
            Failure::usage(
                e.to_string(),
                "give `gh pr list --state merged --json number,labels` output, or {\"12\": [\"skip-changelog\"]}",
            )
        })?,
        None => maestro_release::Labels::new(),
    };
    let config = config(from)?;
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    maestro_release::plan(
        &from.repo,
        &from.rev,
        &config,
        &labels,
        from.pre.as_deref(),
        &today,
    )
    .map_err(|e| match e {
        maestro_release::ReleaseError::Git(_) => Failure::usage(
            e.to_string(),
            "run it in a git repository (or -C DIR) with the commit to release (--rev)",
        ),
        other => Failure::usage(other.to_string(), "see docs/release.md"),
    })
}

/// The pipeline's `release:` block over the defaults, then the flags over it.
fn config(from: &ReleaseFrom) -> Result<maestro_release::ReleaseConfig, Failure> {
    let mut c = maestro_release::ReleaseConfig::default();
    let path = match &from.pipeline {
        Some(p) => Some(p.clone()),
        None => Some(from.repo.join("maestro.yaml")).filter(|p| p.is_file()),
    };
    if let Some(path) = path {
        let pipeline = crate::cmd_run::load_file(&path)?;
        if let Some(r) = pipeline.release {
            if let Some(v) = r.tag_prefix {
                c.tag_prefix = v;
            }
            if let Some(v) = r.initial_version {
                c.initial_version = v;
            }
            if let Some(v) = r.breaking_bumps_major_before_1 {
                c.breaking_bumps_major_before_1 = v;
            }
            if let Some(groups) = r.groups {
                c.groups = groups
                    .into_iter()
                    .map(|g| maestro_release::Group {
                        title: g.title,
                        types: g.types,
                    })
                    .collect();
            }
            if let Some(v) = r.patch_types {
                c.patch_types = v;
            }
            if let Some(v) = r.skip_labels {
                c.skip_labels = v;
            }
            if let Some(v) = r.breaking_labels {
                c.breaking_labels = v;
            }
            if r.repository_url.is_some() {
                c.repository_url = r.repository_url;
            }
        }
    }
    if let Some(v) = &from.tag_prefix {
        c.tag_prefix.clone_from(v);
    }
    if from.repository_url.is_some() {
        c.repository_url.clone_from(&from.repository_url);
    }
    Ok(c)
}

fn nothing(p: &maestro_release::Plan) -> String {
    format!(
        "nothing to release: {} commit(s) since {}, none a feat, fix, perf or breaking change",
        p.notes.commits,
        p.previous.as_deref().unwrap_or("the first commit")
    )
}

fn plan(from: &ReleaseFrom, json: bool) -> Result<u8, Failure> {
    let p = compute(from)?;
    if json {
        let v = serde_json::json!({
            "version": p.version.as_ref().map(ToString::to_string),
            "tag": p.tag,
            "previous": p.previous,
            "commit": p.head,
            "notes": p.notes.json(),
            "markdown": p.notes.markdown(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if p.version.is_some() {
        print!("{}", p.notes.markdown());
    } else {
        eprintln!("{}", nothing(&p));
    }
    Ok(if p.version.is_some() {
        OK
    } else {
        PIPELINE_FAILED
    })
}

fn changelog(from: &ReleaseFrom, file: &std::path::Path) -> Result<u8, Failure> {
    let p = compute(from)?;
    let Some(version) = &p.version else {
        eprintln!("{}", nothing(&p));
        return Ok(PIPELINE_FAILED);
    };
    let path = if file.is_relative() {
        from.repo.join(file)
    } else {
        file.to_owned()
    };
    maestro_release::notes::update_changelog(&path, &version.to_string(), &p.notes.markdown())
        .map_err(|e| Failure::usage(e.to_string(), "a version goes into the changelog once"))?;
    eprintln!("{}: {version} added on top", path.display());
    Ok(OK)
}

/// The largest evidence bundle downloaded.
const MAX_BUNDLE: u64 = maestro_evidence::MAX_BUNDLE_BYTES;

fn evidence(r: &ReleaseRef, out: Option<&std::path::Path>) -> Result<u8, Failure> {
    let mut c = conductor(&r.server)?;
    let bytes = c
        .download(
            &format!("{}/evidence", release_path(&r.service, &r.version)),
            "the evidence bundle",
            MAX_BUNDLE,
        )
        .map_err(refused)?;
    let path = out.map_or_else(
        || std::path::PathBuf::from(format!("{}-{}.evidence.tar.gz", r.service, r.version)),
        std::path::Path::to_path_buf,
    );
    maestro_evidence::write_file(&path, &bytes)
        .map_err(|e| Failure::usage(e.to_string(), "choose a writable path with -o"))?;
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    println!(
        "{} ({} bytes, sha256:{digest}); check it with `maestro verify bundle {} --key VKEY`",
        path.display(),
        bytes.len(),
        path.display()
    );
    Ok(OK)
}

/// `maestro verify bundle`: a release's evidence, offline.
pub(crate) fn verify_bundle(
    file: &std::path::Path,
    keys: &[String],
    artifact: Option<&std::path::Path>,
    as_json: bool,
) -> Result<u8, Failure> {
    let mut vkeys = Vec::new();
    for k in keys {
        let p = std::path::Path::new(k);
        if p.is_file() {
            let text = maestro_sign::read_limited(p, 64 * 1024)
                .map_err(|e| Failure::usage(e.to_string(), "give the verifier key or its file"))?;
            vkeys.extend(
                String::from_utf8_lossy(&text)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        } else {
            vkeys.push(k.clone());
        }
    }
    let trust = maestro_audit::Trust::new(&vkeys).map_err(|e| {
        Failure::usage(
            e.to_string(),
            "the conductor's audit verifier key, as `maestro audit key` prints it",
        )
    })?;
    let read = |p: &std::path::Path, limit: u64| {
        maestro_sign::read_limited(p, limit)
            .map_err(|e| Failure::usage(format!("{}: {e}", p.display()), "give the file's path"))
    };
    let bytes = read(file, maestro_evidence::MAX_BUNDLE_BYTES)?;
    let bundle = maestro_evidence::read(&bytes).map_err(|e| {
        Failure::usage(
            format!("{}: {e}", file.display()),
            "download it with `maestro release evidence VERSION --service S`",
        )
    })?;
    let artifact_bytes = artifact.map(|p| read(p, 4 << 30)).transpose()?;
    let report = maestro_evidence::verify(&bundle, &trust, artifact_bytes.as_deref());
    if as_json {
        let v = json!({"ok": report.ok(), "report": report});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{} {} ({}, commit {}, {})",
            report.service,
            report.version,
            report.status.replace('_', " "),
            report.commit.get(..12).unwrap_or(&report.commit),
            report.artifact
        );
        for c in &report.checks {
            println!(
                "  {} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        println!(
            "{}",
            if report.ok() {
                "verified"
            } else {
                "NOT verified"
            }
        );
    }
    Ok(if report.ok() { OK } else { PIPELINE_FAILED })
}
