//! `maestro sbom`.

use std::path::PathBuf;

use maestro_sbom::{Document, Format, Inventory, ReadOptions, SbomError};

use crate::args::{SbomArgs, SbomFormat};
use crate::exit::{self, Failure};

fn failure(err: SbomError) -> Failure {
    match err {
        SbomError::Io { .. } => Failure::env(err, "check that the lockfile exists and is readable"),
        SbomError::TooLarge { .. } => Failure::usage(
            err.to_string(),
            "is this really a lockfile? Maestro reads lockfiles up to 64 MiB",
        ),
        SbomError::Parse { .. } => Failure::usage(
            err.to_string(),
            "fix the file, or regenerate it with its package manager",
        ),
        SbomError::Unsupported { .. } => Failure::usage(
            err.to_string(),
            "pass Cargo.lock, package-lock.json (v2/v3), npm-shrinkwrap.json, requirements*.txt, poetry.lock, go.sum, or a CycloneDX or SPDX JSON SBOM",
        ),
    }
}

/// The lockfiles named on the command line, directories expanded.
fn lockfiles(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths.to_vec()
    };
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let found = maestro_sbom::discover(&p);
            if found.is_empty() {
                return Err(Failure::usage(
                    format!("no lockfile in {}", p.display()),
                    format!(
                        "Maestro looks for {}; pass the lockfile's path, or generate one first",
                        maestro_sbom::LockfileKind::FILE_NAMES.join(", ")
                    ),
                ));
            }
            out.extend(found);
        } else if p.exists() {
            out.push(p);
        } else {
            return Err(Failure::usage(
                format!("{} does not exist", p.display()),
                "pass a lockfile or a directory holding one",
            ));
        }
    }
    Ok(out)
}

/// Reads every lockfile; one inventory per file, merged under one subject when several.
pub(crate) fn inventory(
    paths: &[PathBuf],
    name: Option<&str>,
    no_dev: bool,
) -> Result<Inventory, Failure> {
    let files = lockfiles(paths)?;
    let opts = ReadOptions::from_env();
    let mut inventories = Vec::with_capacity(files.len());
    for f in &files {
        inventories.push(maestro_sbom::read_input(f, &opts).map_err(failure)?);
    }
    let mut inv = if inventories.len() == 1 {
        inventories.pop().unwrap_or_default()
    } else {
        let mut merged = Inventory::default();
        merged.subject.name = std::env::current_dir()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "project".to_owned());
        for i in inventories {
            merged.merge(i);
        }
        merged
    };
    if let Some(n) = name {
        n.clone_into(&mut inv.subject.name);
    }
    if no_dev {
        inv = inv.without_dev();
    }
    Ok(inv)
}

pub(crate) fn sbom(args: &SbomArgs) -> Result<u8, Failure> {
    let inv = inventory(&args.paths, args.name.as_deref(), args.no_dev)?;
    for w in &inv.warnings {
        eprintln!("warning: {w}");
    }
    let format = match args.format {
        SbomFormat::Cyclonedx => Format::CycloneDx,
        SbomFormat::Spdx => Format::Spdx,
    };
    let doc = Document::new(&inv, Document::creation_time(), env!("CARGO_PKG_VERSION"));
    let bytes = maestro_sbom::render(&inv, format, &doc);
    let label = match format {
        Format::CycloneDx => "CycloneDX 1.6",
        Format::Spdx => "SPDX 2.3",
    };
    let sources: Vec<String> = inv
        .sources
        .iter()
        .map(|s| s.display().to_string())
        .collect();
    match &args.output {
        Some(out) => {
            maestro_sign::write_atomic(out, &bytes, 0o644)
                .map_err(|e| Failure::env(e, "check that the directory exists and is writable"))?;
            eprintln!(
                "sbom: {} components from {} → {} ({label})",
                inv.components.len(),
                sources.join(", "),
                out.display()
            );
        }
        None => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| Failure::env(e, "standard output was closed"))?;
        }
    }
    Ok(exit::OK)
}
