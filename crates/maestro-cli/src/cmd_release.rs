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
    let config = maestro_release::ReleaseConfig {
        tag_prefix: from.tag_prefix.clone(),
        repository_url: from.repository_url.clone(),
        ..maestro_release::ReleaseConfig::default()
    };
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
