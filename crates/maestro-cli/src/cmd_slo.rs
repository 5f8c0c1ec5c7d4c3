//! `maestro slo rules`: OpenSLO v1 files to a Prometheus rule file.

use std::path::{Path, PathBuf};

use crate::args::SloCommand;
use crate::exit::{Failure, OK};

pub(crate) fn slo(command: &SloCommand) -> Result<u8, Failure> {
    match command {
        SloCommand::Rules { files, out } => rules(files, out.as_deref()),
    }
}

fn rules(files: &[PathBuf], out: Option<&Path>) -> Result<u8, Failure> {
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let slos = maestro_slo::load(&paths).map_err(|e| {
        let hint = e
            .hint
            .clone()
            .unwrap_or_else(|| "see docs/slo.md for the fields Maestro reads".to_owned());
        Failure::usage(
            format!(
                "{}: {}{}",
                e.place,
                e.field
                    .as_ref()
                    .map(|f| format!("{f}: "))
                    .unwrap_or_default(),
                e.message
            ),
            hint,
        )
    })?;
    if slos.is_empty() {
        return Err(Failure::usage(
            format!(
                "no SLO document in {}",
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "an SLO is a YAML document with `apiVersion: openslo/v1` and `kind: SLO`",
        ));
    }
    let text = maestro_slo::render(&slos, &maestro_slo::rules(&slos));
    match out {
        None => print!("{text}"),
        Some(path) => {
            maestro_sign::write_atomic(path, text.as_bytes(), 0o644)
                .map_err(|e| Failure::env(e, "check that the directory exists and is writable"))?;
            eprintln!(
                "wrote the Prometheus rules of {} SLOs to {}",
                slos.len(),
                path.display()
            );
        }
    }
    Ok(OK)
}
