//! `maestro release plan` and `maestro release changelog`: the next version and its notes
//! from the Conventional Commits since the last release tag.

use crate::args::{ReleaseCommand, ReleaseFrom};
use crate::exit::{Failure, OK, PIPELINE_FAILED};

pub(crate) fn release(command: &ReleaseCommand) -> Result<u8, Failure> {
    match command {
        ReleaseCommand::Plan { from, json } => plan(from, *json),
        ReleaseCommand::Changelog { from, file } => changelog(from, file),
    }
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
