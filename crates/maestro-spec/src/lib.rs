//! `maestro.yaml`: the file format and its JSON Schema ([`raw`]), diagnostics with file,
//! line, column, key and hint ([`diag`]), reusable modules ([`module`]), validation into a
//! [`Pipeline`] that cannot be invalid ([`validate`]) and the sealed job graph ([`graph`]).
//!
//! This crate reads spec and module files and does no other IO.

pub mod diag;
pub mod expr;
pub mod gate;
pub mod graph;
pub mod load;
pub mod model;
pub mod module;
pub mod raw;
pub mod validate;

use std::path::Path;

pub use diag::{Code, Diagnostic, SpecErrors};
pub use gate::Gate;
pub use graph::Graph;
pub use model::{Job, JobId, Pipeline, Shard};

/// Reads, parses and validates a pipeline file and the modules it uses.
///
/// # Errors
/// Every problem found, as diagnostics pointing into the files.
pub fn load_pipeline(path: &Path) -> Result<Pipeline, SpecErrors> {
    let source = load::read_source(path).map_err(|d| SpecErrors(vec![*d]))?;
    let raw: raw::RawPipeline = load::parse(&source).map_err(|d| SpecErrors(vec![*d]))?;
    let root = path.parent().unwrap_or_else(|| Path::new("."));
    let modules_dir = raw
        .modules_dir
        .as_ref()
        .map_or(validate::DEFAULT_MODULES_DIR, |m| m.value.as_str());
    let mut modules = module::ModuleRepo::new(root.join(modules_dir), modules_dir);
    validate::validate(&source, raw, &mut modules)
}
