//! `maestro repro JOB`: build the same commit twice, in two clean temporary directories,
//! with a scrubbed environment and a fixed `SOURCE_DATE_EPOCH`, and compare the job's
//! outputs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_engine::repro::{Comparison, FirstDifference};
use maestro_store::{ReproRow, RunStatus, Store as _};

use crate::args::ReproArgs;
use crate::exit::{self, Failure};
use crate::settings;

/// `SOURCE_DATE_EPOCH` outside a git repository: 1980-01-01, the zip epoch.
const DEFAULT_EPOCH: i64 = 315_532_800;

/// The two builds differ in what a reproducible build must not depend on.
const BUILDS: [(&str, &str); 2] = [("a", "UTC"), ("b", "Etc/GMT-14")];

/// What the builds start from.
struct Origin {
    /// The git work tree and the commit, or the plain directory copied.
    git: Option<(PathBuf, String)>,
    /// The pipeline file relative to the work tree (or to the copied directory).
    spec_rel: PathBuf,
    copied_from: PathBuf,
    epoch: i64,
}

fn git(args: &[&str], dir: &Path) -> Result<String, Failure> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| {
            Failure::env(
                e,
                "`maestro repro` runs git to check out the commit; install git",
            )
        })?;
    if !out.status.success() {
        return Err(Failure::env(
            std::io::Error::other(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            "is the repository readable?",
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn origin(spec: &Path) -> Result<Origin, Failure> {
    let spec = std::fs::canonicalize(spec).map_err(|e| Failure::env(e, "check --file"))?;
    let root = spec.parent().unwrap_or(Path::new("/")).to_path_buf();
    let (commit, _) = maestro_engine::git::head(&root);
    match (maestro_engine::git::work_tree(&root), commit) {
        (Some(top), Some(commit)) => {
            let epoch = git(&["show", "-s", "--format=%ct", &commit], &top)?
                .parse()
                .unwrap_or(DEFAULT_EPOCH);
            let spec_rel = spec.strip_prefix(&top).unwrap_or(&spec).to_path_buf();
            Ok(Origin {
                git: Some((top.clone(), commit)),
                spec_rel,
                copied_from: top,
                epoch,
            })
        }
        _ => Ok(Origin {
            git: None,
            spec_rel: PathBuf::from(spec.file_name().unwrap_or_default()),
            copied_from: root,
            epoch: DEFAULT_EPOCH,
        }),
    }
}

/// Copies a directory tree, leaving out Maestro's and git's own directories.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name == ".maestro" || name == ".git" {
            continue;
        }
        let t = e.file_type()?;
        let dst = to.join(&name);
        if t.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &dst)?;
        } else if t.is_file() {
            std::fs::copy(e.path(), &dst)?;
        }
    }
    Ok(())
}

fn checkout(origin: &Origin, dir: &Path) -> Result<(), Failure> {
    match &origin.git {
        Some((top, commit)) => {
            let src = top.display().to_string();
            let dst = dir.display().to_string();
            git(&["clone", "--quiet", "--no-checkout", &src, &dst], top)?;
            git(
                &[
                    "-c",
                    "advice.detachedHead=false",
                    "checkout",
                    "--quiet",
                    "--detach",
                    commit,
                ],
                dir,
            )?;
            // The clone's .git is not part of the build's source.
            let _ = std::fs::remove_dir_all(dir.join(".git"));
            Ok(())
        }
        None => copy_tree(&origin.copied_from, dir)
            .map_err(|e| Failure::env(e, "the pipeline's directory could not be copied")),
    }
}

/// The environment the builds may inherit (the pipeline's `pass-env` still filters it).
fn scrubbed_env(tz: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["PATH", "HOME", "USER", "LOGNAME", "TMPDIR"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    env.push(("LANG".into(), "C.UTF-8".into()));
    env.push(("LC_ALL".into(), "C.UTF-8".into()));
    env.push(("TZ".into(), tz.into()));
    env
}

struct Built {
    root: PathBuf,
    outputs: Vec<String>,
    duration: Duration,
}

fn build(
    origin: &Origin,
    dir: &Path,
    job: &str,
    tz: &str,
    parallelism: usize,
) -> Result<Built, Failure> {
    let started = Instant::now();
    checkout(origin, dir)?;
    let spec = dir.join(&origin.spec_rel);
    let pipeline = Arc::new(maestro_spec::load_pipeline(&spec).map_err(|errs| {
        Failure::usage(
            format!(
                "the pipeline at this commit does not validate ({} problem(s))",
                errs.0.len()
            ),
            "`maestro validate` on a checkout of the commit shows them",
        )
    })?);
    let targets = pipeline.graph.select(job);
    if targets.is_empty() {
        return Err(Failure::usage(
            format!("no job named `{job}` in the pipeline at this commit"),
            "commit the job first: repro builds the commit, not the working tree",
        ));
    }
    let outputs: Vec<String> = targets
        .iter()
        .flat_map(|id| pipeline.graph.job(*id).outputs.clone())
        .collect();
    let home = pipeline.root.join(".maestro");
    std::fs::create_dir_all(&home)
        .map_err(|e| Failure::env(e, "the temporary directory is not writable"))?;
    let mut store = maestro_store::SqliteStore::open(&home.join("store.db"))
        .map_err(|e| Failure::env(e, "the temporary store could not be created"))?;
    let opts = maestro_engine::Options {
        home,
        parallelism,
        no_cache: true,
        grace: Duration::from_secs(10),
        targets,
        args: format!("repro {job}"),
        host_env: scrubbed_env(tz),
        fixed_env: vec![("SOURCE_DATE_EPOCH".into(), origin.epoch.to_string())],
        trace_id: None,
        trace: None,
        // A rebuild in a scratch directory publishes and deploys nothing.
        privileged: None,
    };
    let runtime = crate::runtime(parallelism)?;
    let root = pipeline.root.clone();
    let summary = runtime
        .block_on(async {
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let mut silent = maestro_engine::event::Silent;
            maestro_engine::run(Arc::clone(&pipeline), &mut store, &opts, &mut silent, rx).await
        })
        .map_err(|e| Failure::env(e, "the build could not run"))?;
    if summary.status != RunStatus::Succeeded {
        let failed: Vec<String> = summary
            .jobs
            .iter()
            .filter(|j| j.status == "failed" || j.status == "timed-out")
            .map(|j| {
                format!(
                    "`{}` ({})",
                    j.name,
                    j.log_path.as_deref().unwrap_or("no log")
                )
            })
            .collect();
        return Err(Failure {
            code: exit::PIPELINE_FAILED,
            report: miette::miette!(
                help =
                    "a build that fails cannot be compared; the directory is kept for inspection",
                "build in {} failed: {}",
                root.display(),
                failed.join(", ")
            ),
        });
    }
    Ok(Built {
        root,
        outputs,
        duration: started.elapsed(),
    })
}

fn describe(first: Option<&FirstDifference>) -> String {
    match first {
        Some(FirstDifference::Line { line, a, b }) => {
            format!("line {line}: {a:?} ≠ {b:?}")
        }
        Some(FirstDifference::Byte { offset }) => format!("first difference at byte {offset}"),
        None => "contents differ".to_owned(),
    }
}

fn short(d: Option<&String>) -> String {
    d.map_or_else(
        || "missing".to_owned(),
        |d| format!("sha256:{}", &d[..12.min(d.len())]),
    )
}

pub(crate) fn repro(args: &ReproArgs) -> Result<u8, Failure> {
    let paths = settings::paths(&args.common);
    settings::require_file(&paths.file)?;
    let parallelism = settings::parallelism(args.parallelism)?;
    let origin = origin(&paths.file)?;
    let base = tempfile::Builder::new()
        .prefix("maestro-repro-")
        .tempdir()
        .map_err(|e| Failure::env(e, "the temporary directory is not writable"))?;
    let mut built = Vec::new();
    for (name, tz) in BUILDS {
        let dir = base.path().join(name);
        match build(&origin, &dir, &args.job, tz, parallelism) {
            Ok(b) => built.push(b),
            Err(f) => {
                if f.code == exit::PIPELINE_FAILED {
                    let kept = base.keep();
                    eprintln!("build directories kept in {}", kept.display());
                }
                return Err(f);
            }
        }
    }
    let (a, b) = (&built[0], &built[1]);
    if a.outputs.is_empty() {
        return Err(Failure::usage(
            format!("job `{}` declares no outputs", args.job),
            "repro compares a job's declared `outputs`; name the files it builds",
        ));
    }
    let cmp: Comparison = maestro_engine::repro::compare(&a.root, &b.root, &a.outputs);
    let reproducible = cmp.reproducible();
    let commit = origin.git.as_ref().map(|(_, c)| c.clone());

    // Attach the result to the latest run of this job at this commit, if there is one.
    let mut store = crate::open_store(&paths)?;
    let env = |e| Failure::env(e, "the store is .maestro/store.db");
    let run_id = match store.last_job_record(&args.job).map_err(env)? {
        Some((run, _)) => {
            let detail = store.run_detail(run).map_err(env)?;
            (detail.run.commit == commit).then_some(run)
        }
        None => None,
    };
    let report = serde_json::json!({
        "job": args.job,
        "commit": commit,
        "source_date_epoch": origin.epoch,
        "reproducible": reproducible,
        "identical": cmp.identical,
        "differing": cmp.differing,
        "variations": ["build path", "TZ (UTC, Etc/GMT-14)", "time of build"],
    });
    let id = store
        .repro_record(&ReproRow {
            run_id,
            job: args.job.clone(),
            commit: commit.clone(),
            reproducible,
            report: report.to_string(),
            created_at_ms: maestro_engine::now_ms(),
            ..ReproRow::default()
        })
        .map_err(env)?;

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        let what = commit.as_deref().map_or_else(
            || {
                format!(
                    "the directory {} (not a git repository)",
                    origin.copied_from.display()
                )
            },
            |c| format!("commit {}", &c[..12.min(c.len())]),
        );
        println!(
            "repro {}: {what} built twice ({:.1}s, {:.1}s) with SOURCE_DATE_EPOCH={}; build path and TZ differ",
            args.job,
            a.duration.as_secs_f64(),
            b.duration.as_secs_f64(),
            origin.epoch
        );
        if reproducible {
            println!("reproducible: {} file(s) identical", cmp.identical.len());
            for (p, d) in &cmp.identical {
                println!("  {p}  sha256:{d}");
            }
        } else {
            println!(
                "NOT reproducible: {} of {} file(s) differ",
                cmp.differing.len(),
                cmp.differing.len() + cmp.identical.len()
            );
            for d in &cmp.differing {
                println!(
                    "  {}  {} ≠ {}  {}",
                    d.path,
                    short(d.sha256_a.as_ref()),
                    short(d.sha256_b.as_ref()),
                    describe(d.first.as_ref())
                );
            }
        }
        match run_id {
            Some(r) => println!("recorded as check #{id} on run #{r} (maestro runs show {r})"),
            None => println!(
                "recorded as check #{id} (no run of `{}` at this commit yet)",
                args.job
            ),
        }
    }
    if args.keep {
        let kept = base.keep();
        eprintln!("build directories kept in {}", kept.display());
    }
    Ok(if reproducible {
        exit::OK
    } else {
        exit::PIPELINE_FAILED
    })
}
