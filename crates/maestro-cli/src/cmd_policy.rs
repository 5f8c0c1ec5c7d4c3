//! `maestro policy eval|test`.

use maestro_policy::{Bundle, LoadOptions, PolicyError};
use serde_json::json;

use crate::args::{PolicyBundleArgs, PolicyCommand, PolicyEvalArgs};
use crate::exit::{self, Failure};

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
    let mut report = Vec::new();
    let (mut failures, mut warnings, mut inputs) = (0usize, 0usize, 0usize);
    for path in &a.inputs {
        for input in maestro_policy::read_inputs(path).map_err(failure)? {
            let out = bundle
                .eval(namespaces.as_deref(), &input.value)
                .map_err(failure)?;
            inputs += 1;
            failures += out.failures.len();
            warnings += out.warnings.len();
            let shown = if input.document > 0 || path.extension().is_some_and(|e| e != "json") {
                format!("{} (document {})", path.display(), input.document + 1)
            } else {
                path.display().to_string()
            };
            if !a.bundle.json {
                for m in &out.failures {
                    println!("FAIL {shown}: {} ({})", m.msg, m.rule);
                }
                for m in &out.warnings {
                    println!("WARN {shown}: {} ({})", m.msg, m.rule);
                }
            }
            report.push(json!({
                "input": path,
                "document": input.document,
                "rules_evaluated": out.rules_evaluated,
                "failures": out.failures,
                "warnings": out.warnings,
            }));
        }
    }
    if a.bundle.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    let rules = bundle.checks(namespaces.as_deref()).len();
    eprintln!(
        "policy: {inputs} input(s), {rules} rule(s) each from {} · {failures} failure(s), {warnings} warning(s)",
        namespaces.map_or_else(|| "every package".to_owned(), |n| n.join(", "))
    );
    Ok(if failures > 0 {
        exit::PIPELINE_FAILED
    } else {
        exit::OK
    })
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
