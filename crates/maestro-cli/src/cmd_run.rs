//! `maestro run` and `maestro validate`.

use std::io::IsTerminal;
use std::sync::Arc;

use maestro_engine::lock::{LockError, RunLock};
use maestro_spec::Pipeline;
use maestro_store::RunStatus;

use crate::args::{Common, RunArgs};
use crate::exit::{self, Failure};
use crate::render;
use crate::settings::{self, Output};

/// Loads the pipeline, printing every diagnostic on failure.
pub(crate) fn load(paths: &settings::Paths) -> Result<Pipeline, Failure> {
    settings::require_file(&paths.file)?;
    load_file(&paths.file)
}

/// Loads the pipeline at `file`, printing every diagnostic (with its source) on failure.
pub(crate) fn load_file(file: &std::path::Path) -> Result<Pipeline, Failure> {
    maestro_spec::load_pipeline(file).map_err(|errs| {
        for d in &errs.0 {
            eprintln!("{:?}", miette::Report::new(d.clone()));
        }
        Failure::usage(
            format!("{} has {} problem(s)", file.display(), errs.0.len()),
            "fix the problems above; `maestro validate` checks the file without running anything",
        )
    })
}

pub(crate) fn validate(common: &Common, json: bool) -> Result<u8, Failure> {
    let paths = settings::paths(common);
    settings::require_file(&paths.file)?;
    match maestro_spec::load_pipeline(&paths.file) {
        Ok(p) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "jobs": p.graph.len(), "diagnostics": []})
                );
            } else {
                println!("{}: valid, {} jobs", paths.file.display(), p.graph.len());
            }
            Ok(exit::OK)
        }
        Err(errs) => {
            if json {
                let list: Vec<_> = errs
                    .0
                    .iter()
                    .map(maestro_spec::Diagnostic::to_json)
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "diagnostics": list})
                );
            } else {
                for d in &errs.0 {
                    eprintln!("{:?}", miette::Report::new(d.clone()));
                }
                eprintln!("{}: {} problem(s)", paths.file.display(), errs.0.len());
            }
            Ok(exit::USAGE)
        }
    }
}

pub(crate) fn run(a: &RunArgs) -> Result<u8, Failure> {
    let paths = settings::paths(&a.common);
    let parallelism = settings::parallelism(a.parallelism)?;
    let grace = settings::duration("--grace", &a.grace)?;
    let output = settings::output(
        a.log_format,
        std::io::stderr().is_terminal(),
        settings::in_ci(),
    );
    let pipeline = Arc::new(load(&paths)?);
    let mut targets = Vec::new();
    for name in &a.jobs {
        let ids = pipeline.graph.select(name);
        if ids.is_empty() {
            let names: Vec<&str> = pipeline
                .graph
                .jobs()
                .iter()
                .map(|j| j.base_name.as_str())
                .collect();
            let hint = match maestro_spec::diag::closest(name, names.iter().copied()) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("jobs: {}", names.join(", ")),
            };
            return Err(Failure::usage(format!("no job named `{name}`"), hint));
        }
        targets.extend(ids);
    }
    let _lock = RunLock::acquire(&paths.home).map_err(|e| match e {
        LockError::Busy { .. } => Failure {
            code: exit::ENVIRONMENT,
            report: miette::miette!(help = "wait for it to finish, or stop it (Ctrl-C)", "{e}"),
        },
        other => Failure::env(other, "check that the home directory is writable"),
    })?;
    // Spans: continue the caller's trace, export when OTEL_EXPORTER_OTLP_* says where.
    // A wrong OTEL_* variable is a warning, as OpenTelemetry's SDKs treat it: telemetry
    // never fails a build.
    let exporter = maestro_telemetry::otlp::Exporter::from_env(
        |k| std::env::var(k).ok(),
        &format!("maestro {}", pipeline.name),
    )
    .unwrap_or_else(|e| {
        eprintln!("warning: spans will not be exported: {e}");
        None
    });
    let (mut tracer, warning) =
        crate::trace::Tracer::new(std::env::var("TRACEPARENT").ok().as_deref());
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    let mut store = crate::open_store(&paths)?;
    // Absolute, so recorded log paths work from any directory.
    let home = std::fs::canonicalize(&paths.home).unwrap_or_else(|_| paths.home.clone());
    let mut opts = maestro_engine::Options {
        home,
        parallelism,
        no_cache: a.no_cache,
        grace,
        targets,
        args: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        host_env: std::env::vars().collect(),
        fixed_env: Vec::new(),
        trace_id: Some(tracer.run.trace_id.to_string()),
        trace: Some(tracer.run),
        privileged: Some(Arc::new(crate::audit::Recorder::new(
            paths.clone(),
            pipeline.root.clone(),
            a.reason.clone(),
        ))),
    };
    let mut remote = crate::remote::open(
        a.server.as_deref(),
        &a.server_audience,
        &pipeline,
        &opts.args,
        opts.trace_id.clone(),
    )?;
    if let (Some(r), Some(server)) = (&remote, a.server.as_deref()) {
        // Jobs that deploy (`maestro deploy`) link their deployment to this run.
        opts.fixed_env
            .push(("MAESTRO_CONDUCTOR_RUN".to_owned(), r.id().to_string()));
        opts.fixed_env
            .push(("MAESTRO_SERVER".to_owned(), server.to_owned()));
    }
    let runtime = crate::runtime(parallelism)?;
    let color = output == Output::Human && std::env::var_os("NO_COLOR").is_none();
    let mut console = render::Console::new(output, color);
    let summary = runtime.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let term_recv = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = term_recv => {}
            }
            let _ = tx.send(true);
        });
        let mut reported = crate::remote::Maybe(remote.as_mut());
        let mut traced = crate::trace::Both(&mut tracer, &mut reported);
        let mut both = crate::trace::Both(&mut console, &mut traced);
        maestro_engine::run(Arc::clone(&pipeline), &mut store, &opts, &mut both, rx).await
    });
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            if let Some(r) = remote {
                r.finish(RunStatus::Interrupted);
            }
            return Err(Failure::env(
                e,
                "see the cause above; the run is recorded as interrupted on the next start",
            ));
        }
    };
    console.finish();
    if let Some(r) = remote {
        r.finish(summary.status);
    }
    if let Some(e) = &exporter {
        let spans = tracer.finish(summary.status.as_str());
        // A collector that is down must not fail the run: say so and go on.
        if let Err(err) = e.export(&spans) {
            eprintln!("warning: spans not exported: {err}");
        }
    }
    if output != Output::Json {
        render::print_summary(&summary, &pipeline, color);
    } else {
        println!("{}", render::summary_json(&summary));
    }
    let md = render::markdown(&summary, &pipeline);
    if let Some(p) = &a.summary_md {
        std::fs::write(p, &md).map_err(|e| Failure::env(e, "check the --summary-md path"))?;
    }
    if let Some(p) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| Failure::env(e, "GITHUB_STEP_SUMMARY points to an unwritable file"))?;
        f.write_all(md.as_bytes())
            .map_err(|e| Failure::env(e, "cannot append to GITHUB_STEP_SUMMARY"))?;
    }
    Ok(match summary.status {
        RunStatus::Succeeded => exit::OK,
        RunStatus::Interrupted => exit::INTERRUPTED,
        RunStatus::Failed | RunStatus::Running => exit::PIPELINE_FAILED,
    })
}
