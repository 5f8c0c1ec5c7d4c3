//! Phase two: turn the file format into a [`Pipeline`] that cannot be invalid, collecting
//! every problem found (not only the first).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path};
use std::time::Duration;

use crate::diag::{Code, Diagnostic, Pos, Source, SpecErrors, closest};
use crate::expr::{self, Lookup};
use crate::gate::Gate;
use crate::graph::Graph;
use crate::model::{
    DEFAULT_PASS_ENV, DEFAULT_TIMEOUT, Job, JobId, MAX_RETRIES, MAX_SHARDS, MAX_TIMEOUT, Pipeline,
    Shard, Trust,
};
use crate::module::ModuleRepo;
use crate::raw::{At, RawJob, RawPipeline, RawTrust};

/// Default modules directory, relative to the pipeline file.
pub const DEFAULT_MODULES_DIR: &str = "ci/modules";

/// Where a value came from: a file and a position in it.
#[derive(Clone, Debug)]
struct Loc {
    source: Source,
    pos: Option<Pos>,
}

impl Loc {
    fn diag(&self, d: Diagnostic, key: impl Into<String>) -> Diagnostic {
        d.at(&self.source, self.pos).key(key)
    }
}

#[derive(Debug)]
struct Draft {
    name: String,
    name_loc: Loc,
    /// Outputs and reports with where they were written, for conflict checks.
    produced: Vec<(String, Loc)>,
    description: Option<String>,
    run: String,
    gate: Option<Gate>,
    needs: Vec<(String, Loc)>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    reports: Vec<String>,
    env: BTreeMap<String, String>,
    dir: Option<String>,
    timeout: Duration,
    retries: u32,
    shard: Option<u32>,
    cache: Option<bool>,
    toolchains: BTreeMap<String, String>,
    module: Option<String>,
    deploys: Vec<(String, Loc)>,
}

struct Ctx<'a> {
    diags: Vec<Diagnostic>,
    toolchains: &'a BTreeMap<String, String>,
}

/// Validates a parsed pipeline file.
///
/// # Errors
/// Every diagnostic found.
pub fn validate(
    source: &Source,
    raw: RawPipeline,
    modules: &mut ModuleRepo,
) -> Result<Pipeline, SpecErrors> {
    let root = match source.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    // Jobs run in the root: make it absolute so nothing depends on the caller's cwd.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let mut ctx = Ctx {
        diags: Vec::new(),
        toolchains: &raw.toolchains,
    };
    let top = |pos| Loc {
        source: source.clone(),
        pos,
    };
    if raw.version.value != 1 {
        ctx.diags.push(
            top(raw.version.pos).diag(
                Diagnostic::new(
                    Code::UnsupportedVersion,
                    format!("unsupported version {}", raw.version.value),
                )
                .hint("this Maestro reads `version: 1`"),
                "version",
            ),
        );
    }
    for name in raw.env.keys() {
        check_env_name(&mut ctx, name, &top(None), "env");
    }
    let pass_env = match &raw.pass_env {
        Some(list) => {
            for n in list {
                check_env_name(&mut ctx, &n.value, &top(n.pos), "pass-env");
            }
            list.iter().map(|n| n.value.clone()).collect()
        }
        None => DEFAULT_PASS_ENV.iter().map(|s| (*s).to_owned()).collect(),
    };
    if raw.jobs.0.is_empty() {
        ctx.diags.push(
            Diagnostic::new(Code::MissingKey, "the pipeline has no jobs")
                .at(source, None)
                .key("jobs")
                .hint("add at least one job under `jobs:`"),
        );
    }

    let mut drafts = Vec::with_capacity(raw.jobs.0.len());
    let mut seen: HashMap<String, Option<Pos>> = HashMap::new();
    let mut declared: Vec<String> = Vec::new();
    for (name, job) in raw.jobs.0 {
        let name_loc = top(name.pos);
        if let Some(first) = seen.get(&name.value) {
            let mut d = name_loc.diag(
                Diagnostic::new(
                    Code::DuplicateJob,
                    format!("job `{}` is defined twice", name.value),
                )
                .hint("job names must be unique: rename or merge one of the two definitions"),
                format!("jobs.{}", name.value),
            );
            if let Some(p) = first {
                d = d.related(*p, "first defined here");
            }
            ctx.diags.push(d);
            continue;
        }
        seen.insert(name.value.clone(), name.pos);
        declared.push(name.value.clone());
        if !valid_job_name(&name.value) {
            ctx.diags.push(
                name_loc.diag(
                    Diagnostic::new(
                        Code::BadJobName,
                        format!("invalid job name `{}`", name.value),
                    )
                    .hint(
                        "use letters, digits, `_`, `-` and `.` (not first), at most 100 characters",
                    ),
                    format!("jobs.{}", name.value),
                ),
            );
            continue;
        }
        if let Some(d) = draft_job(&mut ctx, source, modules, name.value, name_loc, job) {
            drafts.push(d);
        }
    }
    check_output_conflicts(&mut ctx, &drafts);
    let trust = check_trust(&mut ctx, raw.trust.as_ref(), &top, &drafts);
    let graph = build_graph(&mut ctx, drafts, &raw.env, &declared);
    if !ctx.diags.is_empty() {
        return Err(SpecErrors(ctx.diags));
    }
    let name = raw.name.unwrap_or_else(|| {
        std::fs::canonicalize(&root)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "pipeline".to_owned())
    });
    Ok(Pipeline {
        name,
        tags: raw.tags,
        root,
        file: source.path.clone(),
        pass_env,
        trust,
        release: raw.release,
        graph: graph.expect("graph is Some when there are no diagnostics"),
    })
}

/// `trust:` and the jobs that rely on it: every `deploy` job names its artifacts, and a
/// job that deploys artifacts has keys to verify them with (deny by default).
fn check_trust(
    ctx: &mut Ctx<'_>,
    raw: Option<&At<RawTrust>>,
    top: &dyn Fn(Option<Pos>) -> Loc,
    drafts: &[Draft],
) -> Trust {
    let mut trust = Trust::default();
    if let Some(t) = raw {
        for k in &t.value.keys {
            // A development key may live in Maestro's own directory (`.maestro/keys/`).
            let checked = k.value.strip_prefix(".maestro/").unwrap_or(&k.value);
            if check_rel_path(ctx, checked, &top(k.pos), "trust.keys") {
                trust.keys.push(k.value.clone());
            }
        }
        trust.builder_id.clone_from(&t.value.builder_id);
        trust.source_uri.clone_from(&t.value.source_uri);
    }
    for d in drafts {
        if d.gate == Some(Gate::Deploy) && d.deploys.is_empty() {
            ctx.diags.push(
                d.name_loc.diag(
                    Diagnostic::new(
                        Code::DeployWithoutArtifacts,
                        format!("deploy job `{}` does not say what it deploys", d.name),
                    )
                    .hint("list the files it deploys in `deploys: [dist/app.tar.gz]`; Maestro checks their signature, provenance and SBOM before the job starts"),
                    format!("jobs.{}", d.name),
                ),
            );
        }
        if let Some((_, loc)) = d.deploys.first()
            && trust.keys.is_empty()
            && raw.is_none_or(|t| t.value.keys.is_empty())
        {
            ctx.diags.push(
                loc.diag(
                    Diagnostic::new(
                        Code::NoTrustedKeys,
                        format!(
                            "job `{}` deploys artifacts, but no key is trusted to verify them",
                            d.name
                        ),
                    )
                    .hint("add `trust: { keys: [maestro.pub] }` at the top level with the public key that signs your artifacts (`maestro keys generate`)"),
                    format!("jobs.{}.deploys", d.name),
                ),
            );
        }
    }
    trust
}

fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn check_env_name(ctx: &mut Ctx<'_>, name: &str, loc: &Loc, key: &str) {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        ctx.diags.push(
            loc.diag(
                Diagnostic::new(
                    Code::BadEnvName,
                    format!("invalid environment variable name `{name}`"),
                )
                .hint("use letters, digits and `_`, not starting with a digit"),
                format!("{key}.{name}"),
            ),
        );
    }
}

/// One positioned string field, after `${{ }}` expansion.
fn expand_field(
    ctx: &mut Ctx<'_>,
    value: &At<String>,
    loc: &Loc,
    key: &str,
    resolve: &dyn Fn(&str, &str) -> Lookup,
) -> Option<String> {
    match expr::expand(&value.value, resolve) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.diags.push(loc.diag(
                Diagnostic::new(
                    Code::BadExpression,
                    format!("cannot expand `{}`: {}", e.expression, e.reason),
                )
                .hint("available: `${{ params.NAME }}` inside modules, `${{ shard.index }}` and `${{ shard.count }}` in sharded jobs"),
                key,
            ));
            None
        }
    }
}

fn check_rel_path(ctx: &mut Ctx<'_>, path: &str, loc: &Loc, key: &str) -> bool {
    let p = Path::new(path);
    let problem = if path.trim().is_empty() {
        Some("is empty")
    } else if p.is_absolute() {
        Some("is absolute")
    } else if p.components().any(|c| matches!(c, Component::ParentDir)) {
        Some("leaves the repository (`..`)")
    } else if p
        .components()
        .next()
        .is_some_and(|c| c.as_os_str() == ".maestro")
    {
        Some("is inside .maestro/, Maestro's own working directory")
    } else {
        None
    };
    if let Some(problem) = problem {
        ctx.diags.push(
            loc.diag(
                Diagnostic::new(Code::BadPath, format!("path `{path}` {problem}"))
                    .hint("paths are relative to the directory of maestro.yaml and stay inside it"),
                key,
            ),
        );
        return false;
    }
    true
}

/// `dist/app/` and `./dist/app` are the same output as `dist/app`.
fn normalize_output(path: &str) -> String {
    let p = path.trim_end_matches('/');
    p.strip_prefix("./").unwrap_or(p).to_owned()
}

/// An output is deleted before its job runs: it must not be the whole repository or git's
/// own directory.
fn check_output_path(ctx: &mut Ctx<'_>, path: &str, loc: &Loc, key: &str) {
    let n = normalize_output(path);
    let first = Path::new(&n)
        .components()
        .next()
        .map(|c| c.as_os_str().to_owned());
    if n.is_empty() || n == "." || first.is_some_and(|c| c == ".git") {
        ctx.diags.push(loc.diag(
            Diagnostic::new(Code::BadPath, format!("output `{path}` would be deleted before the job runs"))
                .hint("declared outputs are cleared before each run of their job: name the files or directory the job writes, e.g. `dist/`"),
            key,
        ));
    }
}

/// No two jobs may produce the same path or one inside the other, and a sharded job's
/// outputs must differ per shard.
fn check_output_conflicts(ctx: &mut Ctx<'_>, drafts: &[Draft]) {
    let mut owner: HashMap<String, (&str, &Loc, String)> = HashMap::new();
    let mut all: Vec<(String, &Draft, &Loc)> = Vec::new();
    for d in drafts {
        for (p, loc) in &d.produced {
            if d.shard.is_some_and(|n| n > 1) && !p.contains("${{") {
                ctx.diags.push(
                    loc.diag(
                        Diagnostic::new(
                            Code::OutputConflict,
                            format!("every shard of `{}` would write `{p}`", d.name),
                        )
                        .hint(
                            "put the shard in the path, e.g. `reports/unit-${{ shard.index }}.xml`",
                        ),
                        format!("jobs.{}", d.name),
                    ),
                );
            }
            all.push((normalize_output(p), d, loc));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, d, loc) in &all {
        let clash = owner.get(path.as_str()).or_else(|| {
            path.match_indices('/')
                .find_map(|(i, _)| owner.get(&path[..i]))
        });
        match clash {
            Some((other, other_loc, other_path)) if *other != d.name => {
                let message = if other_path == path {
                    format!("`{}` and `{other}` both produce `{path}`", d.name)
                } else {
                    format!(
                        "`{}` produces `{path}`, inside `{other}`'s output `{other_path}`",
                        d.name
                    )
                };
                let mut diag = loc.diag(
                    Diagnostic::new(Code::OutputConflict, message)
                    .hint("each path is produced by one job; let the other job `needs` it and read it as an upstream output"),
                    format!("jobs.{}", d.name),
                );
                if let Some(p) = other_loc.pos
                    && other_loc.source.path == loc.source.path
                {
                    diag = diag.related(p, format!("`{other}` declares it here"));
                }
                ctx.diags.push(diag);
            }
            _ => {
                owner
                    .entry(path.clone())
                    .or_insert((d.name.as_str(), loc, path.clone()));
            }
        }
    }
}

/// Validates a glob pattern the way the engine will compile it.
pub(crate) fn compile_glob(pattern: &str) -> Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

#[expect(
    clippy::too_many_lines,
    reason = "one linear pass over the job's fields"
)]
fn draft_job(
    ctx: &mut Ctx<'_>,
    source: &Source,
    modules: &mut ModuleRepo,
    name: String,
    name_loc: Loc,
    job: At<RawJob>,
) -> Option<Draft> {
    let diags_before = ctx.diags.len();
    let key = |field: &str| format!("jobs.{name}.{field}");
    let here = |pos: Option<Pos>| Loc {
        source: source.clone(),
        pos,
    };
    let job_loc = here(job.pos);
    let own = job.value;
    // The key of a field: in the module file when the value came from the template.
    let fkey = |from_module: bool, field: &str| {
        if from_module {
            format!("job.{field}")
        } else {
            format!("jobs.{name}.{field}")
        }
    };

    // Resolve the module, if any: its template is the base the caller's fields extend.
    let (template, module_loc, module_label, params): (
        RawJob,
        Option<Source>,
        Option<String>,
        HashMap<String, String>,
    ) = if let Some(uses) = &own.uses {
        if let Some(run) = &own.run {
            ctx.diags.push(
                here(run.pos).diag(
                    Diagnostic::new(
                        Code::RunAndUses,
                        format!("job `{name}` sets both `run` and `uses`"),
                    )
                    .hint("a job either runs a command or uses a module; remove one"),
                    key("run"),
                ),
            );
            return None;
        }
        let module = match modules.resolve(uses, source, &key("uses")) {
            Ok(m) => m,
            Err(ds) => {
                ctx.diags.extend(ds);
                return None;
            }
        };
        // Parameters: unknown ones, missing required ones, defaults.
        let mut values = HashMap::new();
        let declared: Vec<&str> = module
            .raw
            .params
            .0
            .iter()
            .map(|(k, _)| k.value.as_str())
            .collect();
        for (k, v) in &own.with.0 {
            if declared.contains(&k.value.as_str()) {
                values.insert(k.value.clone(), v.value.clone());
            } else {
                let hint = match closest(&k.value, declared.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if declared.is_empty() => "this module takes no parameters".to_owned(),
                    None => format!(
                        "parameters of {}@{}: {}",
                        module.name,
                        module.version,
                        declared.join(", ")
                    ),
                };
                ctx.diags.push(
                    here(k.pos).diag(
                        Diagnostic::new(
                            Code::ModuleParam,
                            format!(
                                "module {}@{} has no parameter `{}`",
                                module.name, module.version, k.value
                            ),
                        )
                        .hint(hint),
                        format!("jobs.{name}.with.{}", k.value),
                    ),
                );
            }
        }
        for (k, p) in &module.raw.params.0 {
            if values.contains_key(&k.value) {
                continue;
            }
            match &p.value.default {
                Some(d) => {
                    values.insert(k.value.clone(), d.clone());
                }
                None if p.value.required => {
                    values.insert(k.value.clone(), String::new());
                    ctx.diags.push(
                        here(uses.pos).diag(
                            Diagnostic::new(
                                Code::ModuleParam,
                                format!(
                                    "module {}@{} needs parameter `{}`",
                                    module.name, module.version, k.value
                                ),
                            )
                            .hint(format!(
                                "add `with: {{ {}: … }}`{}",
                                k.value,
                                p.value
                                    .description
                                    .as_deref()
                                    .map(|d| format!(" ({d})"))
                                    .unwrap_or_default()
                            )),
                            key("with"),
                        ),
                    );
                }
                None => {
                    values.insert(k.value.clone(), String::new());
                }
            }
        }
        let template = clone_job(&module.raw.job.value);
        (
            template,
            Some(module.source.clone()),
            Some(format!("{}@{}", module.name, module.version)),
            values,
        )
    } else {
        (RawJob::default(), None, None, HashMap::new())
    };

    let sharded = own.shard.is_some() || template.shard.is_some();
    let own_resolver = |ns: &str, _: &str| match ns {
        "shard" if sharded => Lookup::Keep,
        _ => Lookup::Unknown,
    };
    let module_resolver = |ns: &str, n: &str| match ns {
        "params" => params
            .get(n)
            .map_or(Lookup::Unknown, |v| Lookup::Value(v.clone())),
        "shard" if sharded => Lookup::Keep,
        _ => Lookup::Unknown,
    };
    let mloc = |pos: Option<Pos>| Loc {
        source: module_loc.clone().unwrap_or_else(|| source.clone()),
        pos,
    };

    // Strings from the module are expanded with params and point into the module file.
    let strings = |ctx: &mut Ctx<'_>,
                   field: &str,
                   from_module: &[At<String>],
                   from_job: &[At<String>]|
     -> Vec<(String, Loc)> {
        let mut out = Vec::new();
        for v in from_module {
            let loc = mloc(v.pos);
            if let Some(s) = expand_field(ctx, v, &loc, &format!("job.{field}"), &module_resolver) {
                out.push((s, loc));
            }
        }
        for v in from_job {
            let loc = here(v.pos);
            if let Some(s) = expand_field(ctx, v, &loc, &key(field), &own_resolver) {
                out.push((s, loc));
            }
        }
        out
    };

    let run = match (&own.run, &template.run) {
        (Some(r), _) => strings(ctx, "run", &[], std::slice::from_ref(r)).pop(),
        (None, Some(r)) => strings(ctx, "run", std::slice::from_ref(r), &[]).pop(),
        (None, None) => {
            ctx.diags.push(
                job_loc.diag(
                    Diagnostic::new(
                        Code::JobWithoutRun,
                        format!("job `{name}` has neither `run` nor `uses`"),
                    )
                    .hint("add `run: <shell command>` or `uses: <module>@<version>`"),
                    format!("jobs.{name}"),
                ),
            );
            None
        }
    };
    let needs = strings(ctx, "needs", &template.needs, &own.needs);
    let inputs = strings(ctx, "inputs", &template.inputs, &own.inputs);
    let outputs = strings(ctx, "outputs", &template.outputs, &own.outputs);
    let reports = strings(ctx, "reports", &template.reports, &own.reports);
    let dir = match (&own.dir, &template.dir) {
        (Some(d), _) => strings(ctx, "dir", &[], std::slice::from_ref(d)).pop(),
        (None, Some(d)) => strings(ctx, "dir", std::slice::from_ref(d), &[]).pop(),
        (None, None) => None,
    };

    for (p, loc) in &inputs {
        if check_rel_path(ctx, p, loc, &key("inputs"))
            && let Err(e) = compile_glob(p)
        {
            ctx.diags.push(loc.diag(
                Diagnostic::new(Code::BadGlob, format!("invalid glob `{p}`: {}", e.kind()))
                    .hint("globs use `*`, `**`, `?`, `[abc]` and `{a,b}`; `**` must be a whole path component"),
                key("inputs"),
            ));
        }
    }
    for (p, loc) in &outputs {
        if check_rel_path(ctx, p, loc, &key("outputs")) {
            check_output_path(ctx, p, loc, &key("outputs"));
        }
    }
    for (p, loc) in &reports {
        check_rel_path(ctx, p, loc, &key("reports"));
    }
    let deploys = strings(ctx, "deploys", &template.deploys, &own.deploys);
    for (p, loc) in &deploys {
        check_rel_path(ctx, p, loc, &key("deploys"));
    }
    if let Some((d, loc)) = &dir {
        check_rel_path(ctx, d, loc, &key("dir"));
    }

    let gate = match pick(&own.gate, &template.gate, &here, &mloc) {
        Some((g, loc, m)) => match Gate::parse(&g.value) {
            Some(gate) => Some(gate),
            None => {
                let names = Gate::ALL.map(Gate::as_str);
                let hint = match closest(&g.value, names) {
                    Some(c) => {
                        format!("did you mean `{c}`? Gates, in order: {}", names.join(" → "))
                    }
                    None => format!("gates, in order: {}", names.join(" → ")),
                };
                ctx.diags.push(
                    loc.diag(
                        Diagnostic::new(Code::UnknownGate, format!("unknown gate `{}`", g.value))
                            .hint(hint),
                        fkey(m, "gate"),
                    ),
                );
                None
            }
        },
        None => None,
    };

    let mut env = BTreeMap::new();
    for (k, v) in template.env.iter().chain(own.env.iter()) {
        check_env_name(ctx, k, &job_loc, &key("env"));
        let loc = job_loc.clone();
        if let Some(v) = expand_field(
            ctx,
            &At::new(v.clone()),
            &loc,
            &key("env"),
            &module_resolver,
        ) {
            env.insert(k.clone(), v);
        }
    }

    let timeout = match pick(&own.timeout, &template.timeout, &here, &mloc) {
        Some((t, loc, m)) => match humantime::parse_duration(&t.value) {
            Ok(d) if d > Duration::ZERO && d <= MAX_TIMEOUT => d,
            Ok(_) => {
                ctx.diags.push(
                    loc.diag(
                        Diagnostic::new(
                            Code::BadDuration,
                            format!("timeout `{}` is out of range", t.value),
                        )
                        .hint("a timeout is more than 0 and at most 24h"),
                        fkey(m, "timeout"),
                    ),
                );
                DEFAULT_TIMEOUT
            }
            Err(e) => {
                ctx.diags.push(
                    loc.diag(
                        Diagnostic::new(
                            Code::BadDuration,
                            format!("cannot read timeout `{}`: {e}", t.value),
                        )
                        .hint("write durations like `90s`, `10m` or `1h 30m`"),
                        fkey(m, "timeout"),
                    ),
                );
                DEFAULT_TIMEOUT
            }
        },
        None => DEFAULT_TIMEOUT,
    };
    let retries = match pick(&own.retries, &template.retries, &here, &mloc) {
        Some((r, loc, m)) if r.value > MAX_RETRIES => {
            ctx.diags.push(loc.diag(
                Diagnostic::new(Code::TooManyRetries, format!("retries: {} is above the bound of {MAX_RETRIES}", r.value))
                    .hint("retries hide flaky tests; fix or quarantine the test instead of retrying more"),
                fkey(m, "retries"),
            ));
            0
        }
        Some((r, _, _)) => r.value,
        None => 0,
    };
    let shard = match pick(&own.shard, &template.shard, &here, &mloc) {
        Some((s, loc, m)) if s.value == 0 || s.value > MAX_SHARDS => {
            ctx.diags.push(
                loc.diag(
                    Diagnostic::new(
                        Code::BadShard,
                        format!("shard: {} is outside 1..={MAX_SHARDS}", s.value),
                    )
                    .hint("`shard: N` splits the job into N parallel shards"),
                    fkey(m, "shard"),
                ),
            );
            None
        }
        Some((s, _, _)) => Some(s.value),
        None => None,
    };
    let toolchains = match own.toolchains.as_ref().or(template.toolchains.as_ref()) {
        Some(list) => {
            let mut map = BTreeMap::new();
            for t in list {
                match ctx.toolchains.get(&t.value) {
                    Some(v) => {
                        map.insert(t.value.clone(), v.clone());
                    }
                    None => {
                        let declared: Vec<&str> =
                            ctx.toolchains.keys().map(String::as_str).collect();
                        ctx.diags.push(
                            here(t.pos).diag(
                                Diagnostic::new(
                                    Code::UnknownToolchain,
                                    format!("toolchain `{}` is not declared", t.value),
                                )
                                .hint(if declared.is_empty() {
                                    "declare it at the top level: `toolchains: { NAME: VERSION }`"
                                        .to_owned()
                                } else {
                                    format!("declared toolchains: {}", declared.join(", "))
                                }),
                                key("toolchains"),
                            ),
                        );
                    }
                }
            }
            map
        }
        None => ctx.toolchains.clone(),
    };
    // A built-in module runs the maestro that runs the pipeline: its version is part of
    // the job's cache key, so an upgrade re-runs it.
    let mut toolchains = toolchains;
    if module_label
        .as_deref()
        .is_some_and(|m| m.starts_with("maestro/"))
    {
        toolchains.insert("maestro".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    }

    if ctx.diags.len() > diags_before {
        return None;
    }
    let produced = outputs.iter().chain(reports.iter()).cloned().collect();
    Some(Draft {
        name,
        name_loc,
        produced,
        description: own.description.or(template.description),
        run: run?.0,
        gate,
        needs,
        inputs: inputs.into_iter().map(|(s, _)| s).collect(),
        outputs: outputs.into_iter().map(|(s, _)| s).collect(),
        reports: reports.into_iter().map(|(s, _)| s).collect(),
        env,
        dir: dir.map(|(d, _)| d),
        timeout,
        retries,
        shard,
        cache: own.cache.or(template.cache),
        toolchains,
        module: module_label,
        deploys,
    })
}

/// The caller's value of a field, else the module template's: with where it was written
/// and whether that is the module file.
fn pick<'a, T>(
    own: &'a Option<At<T>>,
    template: &'a Option<At<T>>,
    here: &dyn Fn(Option<Pos>) -> Loc,
    in_module: &dyn Fn(Option<Pos>) -> Loc,
) -> Option<(&'a At<T>, Loc, bool)> {
    match (own, template) {
        (Some(v), _) => Some((v, here(v.pos), false)),
        (None, Some(v)) => Some((v, in_module(v.pos), true)),
        (None, None) => None,
    }
}

fn clone_job(j: &RawJob) -> RawJob {
    RawJob {
        description: j.description.clone(),
        run: j.run.clone(),
        uses: None,
        with: crate::raw::OrderedMap::default(),
        gate: j.gate.clone(),
        needs: j.needs.clone(),
        inputs: j.inputs.clone(),
        outputs: j.outputs.clone(),
        reports: j.reports.clone(),
        env: j.env.clone(),
        dir: j.dir.clone(),
        timeout: j.timeout.clone(),
        retries: j.retries.clone(),
        shard: j.shard.clone(),
        cache: j.cache,
        toolchains: j.toolchains.clone(),
        deploys: j.deploys.clone(),
    }
}

fn shard_value(text: &str, shard: Shard) -> String {
    expr::expand(text, &|ns, n| match (ns, n) {
        ("shard", "index") => Lookup::Value(shard.index.to_string()),
        ("shard", "count") => Lookup::Value(shard.count.to_string()),
        _ => Lookup::Keep,
    })
    .unwrap_or_else(|_| text.to_owned())
}

#[expect(
    clippy::too_many_lines,
    reason = "expansion, resolution and ordering checks in one place"
)]
fn build_graph(
    ctx: &mut Ctx<'_>,
    drafts: Vec<Draft>,
    pipeline_env: &BTreeMap<String, String>,
    declared: &[String],
) -> Option<Graph> {
    // Expand shards; remember which ids each written name stands for.
    let mut ids_of: HashMap<String, Vec<JobId>> = HashMap::new();
    let mut next = 0usize;
    for d in &drafts {
        let n = d.shard.unwrap_or(1) as usize;
        ids_of.insert(d.name.clone(), (next..next + n).map(JobId).collect());
        next += n;
    }
    let names: Vec<&str> = declared.iter().map(String::as_str).collect();
    let mut jobs = Vec::with_capacity(next);
    let mut need_locs: HashMap<(usize, usize), Loc> = HashMap::new();
    for d in &drafts {
        let mut needs = Vec::new();
        let mut dep_names = Vec::new();
        for (need, loc) in &d.needs {
            if *need == d.name {
                ctx.diags.push(
                    loc.diag(
                        Diagnostic::new(Code::SelfNeed, format!("job `{}` needs itself", d.name))
                            .hint("remove it from `needs`"),
                        format!("jobs.{}.needs", d.name),
                    ),
                );
                continue;
            }
            match ids_of.get(need) {
                Some(ids) => {
                    needs.extend(ids.iter().copied());
                    dep_names.push((ids.clone(), loc.clone()));
                }
                // A job that exists but had its own errors: already reported.
                None if declared.contains(need) => {}
                None => {
                    let hint = match closest(need, names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("jobs in this pipeline: {}", names.join(", ")),
                    };
                    ctx.diags.push(
                        loc.diag(
                            Diagnostic::new(
                                Code::UnknownNeed,
                                format!("job `{}` needs `{need}`, which is not a job", d.name),
                            )
                            .hint(hint),
                            format!("jobs.{}.needs", d.name),
                        ),
                    );
                }
            }
        }
        needs.sort();
        needs.dedup();
        let count = d.shard.unwrap_or(1);
        for index in 1..=count {
            let id = JobId(jobs.len());
            for (ids, loc) in &dep_names {
                for dep in ids {
                    need_locs.insert((id.0, dep.0), loc.clone());
                }
            }
            let shard = d.shard.map(|_| Shard { index, count });
            let fix = |s: &String| shard.map_or_else(|| s.clone(), |sh| shard_value(s, sh));
            let mut env = pipeline_env.clone();
            env.extend(d.env.iter().map(|(k, v)| (k.clone(), fix(v))));
            if let Some(sh) = shard {
                env.insert("MAESTRO_SHARD_INDEX".into(), sh.index.to_string());
                env.insert("MAESTRO_SHARD_COUNT".into(), sh.count.to_string());
            }
            let cache = d.cache.unwrap_or(!d.gate.is_some_and(Gate::is_barrier));
            jobs.push(Job {
                id,
                name: if shard.is_some() {
                    format!("{}#{index}", d.name)
                } else {
                    d.name.clone()
                },
                base_name: d.name.clone(),
                description: d.description.clone(),
                run: fix(&d.run),
                gate: d.gate,
                needs: needs.clone(),
                inputs: d.inputs.iter().map(fix).collect(),
                outputs: d.outputs.iter().map(fix).collect(),
                reports: d.reports.iter().map(fix).collect(),
                env,
                dir: d.dir.as_ref().map(fix),
                timeout: d.timeout,
                retries: d.retries,
                shard,
                cache,
                toolchains: d.toolchains.clone(),
                module: d.module.clone(),
                deploys: d.deploys.iter().map(|(p, _)| fix(p)).collect(),
            });
        }
    }
    if !ctx.diags.is_empty() {
        return None;
    }
    let job_loc = |i: usize| -> &Loc {
        let base = &jobs[i].base_name;
        &drafts
            .iter()
            .find(|d| &d.name == base)
            .expect("every job comes from a draft")
            .name_loc
    };
    let graph = match Graph::seal(jobs.clone()) {
        Ok(g) => g,
        Err(cycle) => {
            let ids = &cycle.0;
            let mut names: Vec<String> = ids.iter().map(|i| jobs[i.0].base_name.clone()).collect();
            names.push(names[0].clone());
            let mut d = Diagnostic::new(
                Code::DependencyCycle,
                format!("dependency cycle: {}", names.join(" → ")),
            )
            .hint("remove one of these `needs` entries to break the cycle");
            let first = job_loc(ids[0].0);
            d = first.diag(d, format!("jobs.{}.needs", jobs[ids[0].0].base_name));
            for w in 0..ids.len() {
                let (from, to) = (ids[w], ids[(w + 1) % ids.len()]);
                if let Some(loc) = need_locs.get(&(from.0, to.0))
                    && let Some(p) = loc.pos
                    && loc.source.path == first.source.path
                {
                    d = d.related(
                        p,
                        format!(
                            "`{}` needs `{}`",
                            jobs[from.0].base_name, jobs[to.0].base_name
                        ),
                    );
                }
            }
            ctx.diags.push(d);
            return None;
        }
    };
    // A gated job must not wait for a later gate, directly or through ungated jobs.
    let mut latest = vec![None::<Gate>; graph.len()];
    for id in graph.topo_order() {
        let job = graph.job(*id);
        let upstream = job.needs.iter().filter_map(|n| latest[n.0]).max();
        if let (Some(g), Some(up)) = (job.gate, upstream)
            && up > g
        {
            let culprit = job
                .needs
                .iter()
                .find(|n| latest[n.0] == Some(up))
                .map_or_else(String::new, |n| graph.job(*n).base_name.clone());
            let loc = need_locs
                .iter()
                .find(|((a, b), _)| *a == id.0 && graph.job(JobId(*b)).base_name == culprit)
                .map_or_else(|| job_loc(id.0).clone(), |(_, l)| l.clone());
            ctx.diags.push(loc.diag(
                Diagnostic::new(
                    Code::NeedsLaterGate,
                    format!(
                        "job `{}` (gate {g}) needs `{culprit}`, which waits for gate {up}",
                        job.base_name
                    ),
                )
                .hint(format!(
                    "gates run in order ({}); move `{culprit}` to an earlier gate or `{}` to a later one",
                    Gate::ALL.map(Gate::as_str).join(" → "),
                    job.base_name
                )),
                format!("jobs.{}.needs", job.base_name),
            ));
        }
        latest[id.0] = job.gate.max(upstream);
    }
    // Only report each job once (shards repeat the same diagnostic).
    ctx.diags.dedup_by(|a, b| a.message == b.message);
    Some(graph)
}
