//! `maestro policy eval|test`.

use maestro_policy::{Bundle, LoadOptions, PolicyError};
use serde_json::json;

use crate::args::{PolicyBundleArgs, PolicyCommand, PolicyEvalArgs};
use crate::exit::{self, Failure};
use crate::waive::{Waiving, gate_paths};
use maestro_waiver::Subject;

fn failure(e: PolicyError) -> Failure {
    match e {
        PolicyError::Io { .. } => Failure::env(e, "check the path"),
        PolicyError::Empty(_) => Failure::usage(
            e.to_string(),
            "put your *.rego files in .ci/policies/ or pass --policy DIR",
        ),
        PolicyError::Eval(_) => Failure::usage(
            e.to_string(),
            "check the packages your policies declare: pass --namespace PACKAGE or --all-namespaces",
        ),
        _ => Failure::usage(e.to_string(), "fix the file named above"),
    }
}

fn load(a: &PolicyBundleArgs) -> Result<Bundle, Failure> {
    Bundle::load(
        &a.policy,
        &LoadOptions {
            rego_v0: a.rego_v0,
            data: a.data.clone(),
        },
    )
    .map_err(failure)
}

pub(crate) fn policy(command: &PolicyCommand) -> Result<u8, Failure> {
    match command {
        PolicyCommand::Eval(a) => eval(a),
        PolicyCommand::Test(a) => test(a),
        PolicyCommand::Init { dir, force } => init(dir, *force),
        PolicyCommand::Fmt {
            paths,
            write,
            rego_v0,
        } => fmt(paths, *write, *rego_v0),
        PolicyCommand::Waivers {
            file,
            uses,
            home,
            json,
        } => waivers(file, *uses, home.clone(), *json),
    }
}

fn init(dir: &std::path::Path, force: bool) -> Result<u8, Failure> {
    let existing: Vec<String> = maestro_policy::STARTER
        .iter()
        .filter(|(name, _)| dir.join(name).exists())
        .map(|(name, _)| name.to_string())
        .collect();
    if !existing.is_empty() && !force {
        return Err(Failure::usage(
            format!("{} already holds {}", dir.display(), existing.join(", ")),
            "pass --force to replace them, or --dir to write elsewhere",
        ));
    }
    for (name, text) in maestro_policy::STARTER {
        maestro_sign::write_atomic(&dir.join(name), text.as_bytes(), 0o644)
            .map_err(|e| Failure::env(e, "choose a writable --dir"))?;
    }
    println!(
        "wrote the starter bundle ({} files) to {}: `maestro policy test --policy {}` runs its tests",
        maestro_policy::STARTER.len(),
        dir.display(),
        dir.display()
    );
    Ok(exit::OK)
}

fn eval(a: &PolicyEvalArgs) -> Result<u8, Failure> {
    let bundle = load(&a.bundle)?;
    let namespaces: Option<Vec<String>> = if a.all_namespaces {
        None
    } else if a.namespace.is_empty() {
        Some(vec!["main".to_owned()])
    } else {
        Some(a.namespace.clone())
    };
    let mut waiving = Waiving::load("policy", a.waivers.as_deref())?;
    let mut report = Vec::new();
    let (mut failures, mut warnings, mut waived, mut inputs) = (0usize, 0usize, 0usize, 0usize);
    let mut files: Vec<(std::path::PathBuf, Vec<maestro_policy::Input>)> = Vec::new();
    if let Some(file) = &a.pipeline {
        files.push((file.clone(), vec![pipeline_input(file)?]));
    }
    for path in &a.inputs {
        files.push((
            path.clone(),
            maestro_policy::read_inputs(path).map_err(failure)?,
        ));
    }
    for (path, docs) in &files {
        for input in docs {
            let out = bundle
                .eval(namespaces.as_deref(), &input.value)
                .map_err(failure)?;
            inputs += 1;
            let shown = if input.document > 0 || path.extension().is_some_and(|e| e != "json") {
                format!("{} (document {})", path.display(), input.document + 1)
            } else {
                path.display().to_string()
            };
            let input_name = path.display().to_string();
            let mut counted = Vec::new();
            let mut excused = Vec::new();
            for m in out.failures {
                let verdict = waiving.check(&Subject {
                    ids: &[m.rule.as_str()],
                    resource: m.details.get("resource").and_then(|r| r.as_str()),
                    message: &m.msg,
                    input: Some(&input_name),
                });
                let mut entry = serde_json::to_value(&m).unwrap_or_default();
                if let Some(note) = verdict.note() {
                    entry["waiver"] = json!(note);
                }
                if verdict.waived() {
                    excused.push((m, verdict, entry));
                } else {
                    counted.push((m, verdict, entry));
                }
            }
            failures += counted.len();
            waived += excused.len();
            warnings += out.warnings.len();
            if !a.bundle.json {
                for (m, verdict, _) in &counted {
                    println!("FAIL {shown}: {} ({})", m.msg, m.rule);
                    if let Some(note) = verdict.note() {
                        println!("     {note}");
                    }
                }
                for (m, verdict, _) in &excused {
                    println!("WAIVED {shown}: {} ({})", m.msg, m.rule);
                    if let Some(note) = verdict.note() {
                        println!("     {note}");
                    }
                }
                for m in &out.warnings {
                    println!("WARN {shown}: {} ({})", m.msg, m.rule);
                }
            }
            report.push(json!({
                "input": path,
                "document": input.document,
                "rules_evaluated": out.rules_evaluated,
                "failures": counted.into_iter().map(|(_, _, e)| e).collect::<Vec<_>>(),
                "waived": excused.into_iter().map(|(_, _, e)| e).collect::<Vec<_>>(),
                "warnings": out.warnings,
            }));
        }
    }
    waiving.record(&gate_paths(a.home.clone()))?;
    if a.bundle.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    let rules = bundle.checks(namespaces.as_deref()).len();
    eprintln!(
        "policy: {inputs} input(s), {rules} rule(s) each from {} · {failures} failure(s), {waived} waived, {warnings} warning(s)",
        namespaces.map_or_else(|| "every package".to_owned(), |n| n.join(", "))
    );
    Ok(if failures > 0 {
        exit::PIPELINE_FAILED
    } else {
        exit::OK
    })
}

fn fmt(paths: &[std::path::PathBuf], write: bool, rego_v0: bool) -> Result<u8, Failure> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            files.extend(
                maestro_policy::rego_files(p).map_err(|e| Failure::env(e, "check the path"))?,
            );
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err(Failure::usage(
            "no *.rego files to format",
            "name the files or directories that hold your policies",
        ));
    }
    let mut unformatted = 0usize;
    for f in &files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| Failure::env(e, &format!("{} cannot be read", f.display())))?;
        let shown = f.display().to_string();
        let formatted = maestro_policy::fmt::format(&shown, &text, rego_v0).map_err(|e| {
            Failure::usage(
                e,
                "fix the policy first: `maestro policy test` names the line",
            )
        })?;
        if formatted == text {
            continue;
        }
        unformatted += 1;
        if write {
            maestro_sign::write_atomic(f, formatted.as_bytes(), 0o644)
                .map_err(|e| Failure::env(e, "check that the file is writable"))?;
            println!("formatted {shown}");
        } else {
            let line = text
                .lines()
                .zip(formatted.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| text.lines().count().min(formatted.lines().count()))
                + 1;
            println!(
                "{shown}: not formatted (from line {line}); `maestro policy fmt --write` fixes it"
            );
        }
    }
    eprintln!(
        "policy fmt: {} file(s), {unformatted} {}",
        files.len(),
        if write { "rewritten" } else { "to format" }
    );
    Ok(if unformatted > 0 && !write {
        exit::PIPELINE_FAILED
    } else {
        exit::OK
    })
}

/// The pipeline file, validated, as the documented policy input.
fn pipeline_input(file: &std::path::Path) -> Result<maestro_policy::Input, Failure> {
    let p = crate::cmd_run::load_file(file)?;
    let value = maestro_policy::to_value(&p.policy_input())
        .map_err(|e| Failure::usage(e, "report this as a bug"))?;
    Ok(maestro_policy::Input {
        path: file.to_owned(),
        document: 0,
        value,
    })
}

fn waivers(
    file: &std::path::Path,
    limit: usize,
    home: Option<std::path::PathBuf>,
    as_json: bool,
) -> Result<u8, Failure> {
    use maestro_store::Store as _;
    let w = maestro_waiver::Waivers::load(file, true).map_err(crate::waive::waiver_failure)?;
    let now = jiff::Timestamp::now();
    let paths = gate_paths(home);
    let uses = if paths.store().exists() {
        crate::open_store(&paths)?
            .waiver_uses(limit)
            .map_err(|e| Failure::env(e, "the store is .maestro/store.db"))?
    } else {
        Vec::new()
    };
    if as_json {
        let list: Vec<_> = w
            .list
            .iter()
            .map(|x| {
                let mut v = serde_json::to_value(x).unwrap_or_default();
                v["status"] = json!(x.status(now));
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"waivers": list, "uses": uses}))
                .unwrap_or_default()
        );
        return Ok(exit::OK);
    }
    for x in &w.list {
        let status = match x.status(now) {
            maestro_waiver::Status::Active => "active",
            maestro_waiver::Status::Expiring => "EXPIRING",
            maestro_waiver::Status::Expired => "EXPIRED",
        };
        println!(
            "[{}] {status:<8} {} on {} until {} (approved by {}): {}",
            x.index, x.rule, x.resource, x.expires, x.approver, x.reason
        );
    }
    if !uses.is_empty() {
        println!("recent uses:");
        for u in &uses {
            let when = jiff::Timestamp::from_millisecond(u.created_at_ms)
                .map(|t| t.to_string())
                .unwrap_or_default();
            println!(
                "  {when} {} {} on {} by {}[{}]{}{}",
                u.gate,
                u.rule,
                u.subject,
                u.source,
                u.waiver_index,
                u.run_id.map(|r| format!(" in run {r}")).unwrap_or_default(),
                if u.expired {
                    " (EXPIRED: not waived)"
                } else {
                    ""
                }
            );
        }
    }
    eprintln!(
        "waivers: {} in {}, {} recorded use(s) shown",
        w.list.len(),
        file.display(),
        uses.len()
    );
    Ok(exit::OK)
}

fn test(a: &PolicyBundleArgs) -> Result<u8, Failure> {
    let bundle = load(a)?;
    let results = bundle.test();
    if results.is_empty() {
        return Err(Failure::usage(
            format!("no Rego tests (`test_*` rules) in {}", a.policy.display()),
            "write tests as `test_name if { … }` in *_test.rego files beside the policies",
        ));
    }
    let failed = results.iter().filter(|t| !t.passed).count();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    } else {
        for t in &results {
            match &t.error {
                None => println!("PASS data.{}.{}", t.package, t.name),
                Some(e) => println!("FAIL data.{}.{}: {e}", t.package, t.name),
            }
        }
    }
    eprintln!(
        "policy test: {} passed, {failed} failed",
        results.len() - failed
    );
    Ok(if failed > 0 {
        exit::PIPELINE_FAILED
    } else {
        exit::OK
    })
}
