//! The `maestro` command line. The only crate that knows the terminal: it parses
//! arguments, merges them into validated settings, calls the library crates and renders
//! their results.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is the crate that prints"
)]

mod args;
mod audit;
mod cmd_audit;
mod cmd_cache;
mod cmd_deploy;
mod cmd_flags;
mod cmd_migrate;
mod cmd_policy;
mod cmd_release;
mod cmd_repro;
mod cmd_run;
mod cmd_runs;
mod cmd_sbom;
mod cmd_sca;
mod cmd_secrets;
mod cmd_serve;
mod cmd_sign;
mod cmd_slo;
mod exit;
mod remote;
mod render;
mod settings;
mod trace;
mod waive;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{CacheCommand, Cli, Command, RunsCommand};
use crate::exit::Failure;

/// Runs the command line and returns the process exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd_run::run(&a),
        Command::Validate { common, json } => cmd_run::validate(&common, json),
        Command::Schema { module } => {
            let schema = if module {
                maestro_spec::raw::module_schema()
            } else {
                maestro_spec::raw::pipeline_schema()
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(exit::OK)
        }
        Command::Runs { command } => match command {
            RunsCommand::List {
                common,
                limit,
                json,
            } => cmd_runs::list(&common, limit, json),
            RunsCommand::Show { common, id, json } => cmd_runs::show(&common, id, json),
        },
        Command::Cache { command } => match command {
            CacheCommand::Stats { common, json } => cmd_cache::stats(&common, json),
            CacheCommand::Gc { common, max_age } => cmd_cache::gc(&common, &max_age),
            CacheCommand::Explain { common, job, json } => cmd_cache::explain(&common, &job, json),
        },
        Command::Keys { command } => cmd_sign::keys(&command),
        Command::Sign(a) => cmd_sign::sign(&a),
        Command::Attest(a) => cmd_sign::attest(&a),
        Command::Verify(v) => match v.what {
            Some(crate::args::VerifyWhat::Bundle {
                file,
                keys,
                artifact,
                json,
            }) => cmd_release::verify_bundle(&file, &keys, artifact.as_deref(), json),
            None => cmd_sign::verify(&v.artifact),
        },
        Command::Sbom(a) => cmd_sbom::sbom(&a),
        Command::Sca(a) => cmd_sca::sca(&a),
        Command::Licenses(a) => cmd_sca::licenses(&a),
        Command::Secrets(a) => cmd_secrets::secrets(&a),
        Command::Repro(a) => cmd_repro::repro(&a),
        Command::Policy { command } => cmd_policy::policy(&command),
        Command::Migrate { command } => cmd_migrate::migrate(&command),
        Command::Audit { command } => cmd_audit::audit(&command),
        Command::Serve(a) => cmd_serve::serve(&a),
        Command::Token { command } => cmd_serve::token(&command),
        Command::Api { command } => cmd_serve::api(&command),
        Command::Slo { command } => cmd_slo::slo(&command),
        Command::Release { command } => cmd_release::release(&command),
        Command::Flags { command } => cmd_flags::flags(&command),
        Command::Deploy(a) => cmd_deploy::deploy(&a),
        Command::Rollback(a) => cmd_deploy::rollback(&a),
        Command::Canary { command } => cmd_deploy::canary(&command),
    };
    match result {
        Ok(code) => exit::code(code),
        Err(f) => {
            eprintln!("{:?}", f.report);
            exit::code(f.code)
        }
    }
}

/// Opens the store and, when no run holds the repository's lock, marks runs left
/// `running` by a crashed maestro as interrupted.
fn open_store_recovered(paths: &settings::Paths) -> Result<maestro_store::SqliteStore, Failure> {
    use maestro_store::Store as _;
    let mut store = open_store(paths)?;
    if let Ok(_lock) = maestro_engine::lock::RunLock::acquire(&paths.home) {
        store
            .mark_interrupted(maestro_engine::now_ms())
            .map_err(|e| Failure::env(e, "the store is .maestro/store.db"))?;
    }
    Ok(store)
}

/// The async runtime a pipeline run uses.
fn runtime(parallelism: usize) -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(parallelism.clamp(1, 4))
        .enable_all()
        .build()
        .map_err(|e| Failure::env(e, "the async runtime could not start"))
}

/// Opens the store of a repository.
fn open_store(paths: &settings::Paths) -> Result<maestro_store::SqliteStore, Failure> {
    std::fs::create_dir_all(&paths.home).map_err(|e| {
        Failure::env(
            e,
            "check that Maestro's home directory is writable (--home / MAESTRO_HOME)",
        )
    })?;
    maestro_store::SqliteStore::open(&paths.store()).map_err(|e| {
        Failure::env(
            e,
            "the store is .maestro/store.db; move it aside to start fresh",
        )
    })
}
