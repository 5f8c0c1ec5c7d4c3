//! The dispatcher: owns the run's state, decides what runs next, and talks to job tasks
//! only through messages. Job tasks (execute or restore from cache) share no state.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use maestro_cache::key::outputs_digest;
use maestro_cache::{Cas, Ingredients, InputIndex, KEY_VERSION};
use maestro_spec::{Gate, Job, JobId, Pipeline};
use maestro_store::{
    ArtifactRow, AttemptRow, Batch, CacheEntry, JobRow, NewRun, RunStatus, Store, TestRow,
};
use tokio::sync::{mpsc, watch};

use crate::event::{Event, Reporter};
use crate::{EngineError, exec, junit, now_ms};

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Maestro's working directory (`.maestro/` by default).
    pub home: PathBuf,
    /// Jobs running at once.
    pub parallelism: usize,
    /// Run everything; use no cache entry (results are still stored).
    pub no_cache: bool,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Only these jobs and what they need (empty: every job).
    pub targets: Vec<JobId>,
    /// The command line, for the run record.
    pub args: String,
    /// The host environment jobs may inherit from (through `pass-env`).
    pub host_env: Vec<(String, String)>,
    /// Set for every job, over everything else (`maestro repro` fixes
    /// `SOURCE_DATE_EPOCH` this way). Not part of cache keys.
    pub fixed_env: Vec<(String, String)>,
    pub trace_id: Option<String>,
    /// The run's span: each job process gets `TRACEPARENT` naming its job's span
    /// ([`job_span`]), a child of this one.
    pub trace: Option<maestro_telemetry::TraceParent>,
    /// Records publish and deploy jobs in the audit log; `None` runs them unrecorded
    /// (only for tools like `maestro repro`, which never deploy).
    pub privileged: Option<Arc<dyn crate::privileged::Privileged>>,
}

/// The end of a run.
#[derive(Debug)]
pub struct Summary {
    pub run_id: i64,
    pub status: RunStatus,
    /// Every selected job, in topological order.
    pub jobs: Vec<JobRow>,
    pub duration: Duration,
    /// The earliest red gate.
    pub red_gate: Option<Gate>,
}

impl Summary {
    /// Counts of (hits, executed, failed).
    #[must_use]
    pub fn counts(&self) -> (usize, usize, usize) {
        let hits = self.jobs.iter().filter(|j| j.cache == "hit").count();
        let failed = self
            .jobs
            .iter()
            .filter(|j| matches!(j.status.as_str(), "failed" | "timed-out" | "error"))
            .count();
        let executed = self.jobs.iter().filter(|j| !j.attempts.is_empty()).count();
        (hits, executed, failed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Queued,
    Running,
    Done,
}

struct Finished {
    id: JobId,
    row: JobRow,
    /// What dependents see of this job (outputs digest, or key when it has no outputs).
    downstream: Option<String>,
    cache_put: Option<CacheEntry>,
    cache_used: Option<String>,
}

enum Msg {
    Started(JobId, u32),
    Done(Box<Finished>),
}

struct Shared {
    root: PathBuf,
    cas: Cas,
    logs: PathBuf,
    grace: Duration,
    pipeline: Arc<Pipeline>,
    run_id: i64,
    trace_id: Option<String>,
    privileged: Option<Arc<dyn crate::privileged::Privileged>>,
}

fn log_name(job: &str, attempt: u32) -> String {
    if attempt <= 1 {
        format!("{job}.log")
    } else {
        format!("{job}.attempt-{attempt}.log")
    }
}

fn rel(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Hashes every distinct input file once, on `threads` threads.
fn hash_inputs(
    root: &Path,
    index: &InputIndex,
    threads: usize,
) -> Result<HashMap<String, String>, EngineError> {
    let mut files: Vec<&String> = index.per_job.iter().flatten().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Ok(HashMap::new());
    }
    let chunk = files.len().div_ceil(threads.max(1));
    let results: Vec<Result<Vec<(String, String)>, EngineError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|f| {
                            maestro_cache::cas::hash_file(&root.join(f))
                                .map(|(d, _)| ((*f).clone(), d))
                                .map_err(|e| {
                                    EngineError::Input(format!("cannot hash input {f}: {e}"))
                                })
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(EngineError::Input("hashing thread panicked".into())))
            })
            .collect()
    });
    let mut out = HashMap::with_capacity(files.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// The dispatcher's view of a run.
struct Dispatcher<'a> {
    pipeline: Arc<Pipeline>,
    shared: Arc<Shared>,
    store: &'a mut dyn Store,
    reporter: &'a mut dyn Reporter,
    opts: &'a Options,
    run_id: i64,
    selected: Vec<bool>,
    state: Vec<State>,
    rows: Vec<Option<JobRow>>,
    remaining: Vec<usize>,
    downstream: Vec<Option<String>>,
    inputs: Vec<BTreeMap<String, String>>,
    queue: BinaryHeap<Reverse<(usize, usize, usize)>>,
    topo_pos: Vec<usize>,
    barrier_wait: Vec<JobId>,
    cancels: HashMap<JobId, watch::Sender<bool>>,
    /// Per priority level: selected jobs that have not (yet) succeeded.
    unsettled: Vec<usize>,
    /// Why a running job was told to stop, for its record.
    cancelled_why: HashMap<JobId, String>,
    running: usize,
    red: Option<usize>,
    interrupted: bool,
    batch: Batch,
    last_flush: Instant,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Dispatcher<'_> {
    fn job(&self, id: JobId) -> &Job {
        self.pipeline.graph.job(id)
    }

    fn priority(&self, id: JobId) -> usize {
        self.pipeline.graph.priority(id)
    }

    fn enqueue(&mut self, id: JobId) {
        let job = self.job(id);
        if job.gate.is_some_and(Gate::is_barrier) && !self.barrier_open(id) {
            self.barrier_wait.push(id);
            return;
        }
        self.state[id.0] = State::Queued;
        let p = self.priority(id);
        self.queue.push(Reverse((p, self.topo_pos[id.0], id.0)));
    }

    /// A barrier job starts only when every selected job of an earlier priority succeeded.
    fn barrier_open(&self, id: JobId) -> bool {
        self.unsettled[..self.priority(id)].iter().all(|n| *n == 0)
    }

    fn finish_without_running(&mut self, id: JobId, status: &str, reason: String) {
        if self.state[id.0] == State::Done || !self.selected[id.0] {
            return;
        }
        let job = self.job(id);
        let mut row = base_row(job, None);
        row.status = status.to_owned();
        row.note = Some(reason);
        self.state[id.0] = State::Done;
        self.reporter.event(Event::JobFinished {
            job: self.pipeline.graph.job(id),
            row: &row,
        });
        self.batch.jobs.push(row.clone());
        self.rows[id.0] = Some(row);
    }

    /// Skips everything downstream of a job that did not succeed.
    fn skip_dependents(&mut self, id: JobId) {
        let name = self.job(id).name.clone();
        let mut stack: Vec<JobId> = self.pipeline.graph.dependents(id).to_vec();
        let pipeline = Arc::clone(&self.pipeline);
        while let Some(d) = stack.pop() {
            if self.state[d.0] == State::Waiting || self.state[d.0] == State::Queued {
                self.finish_without_running(
                    d,
                    "skipped",
                    format!("needs `{name}`, which did not succeed"),
                );
                stack.extend(pipeline.graph.dependents(d).iter().copied());
            }
        }
    }

    /// A red gate at priority `level`: cancel everything of a later priority.
    fn turn_red(&mut self, id: JobId) {
        let level = self.priority(id);
        let gate = self.job(id).gate;
        let pipeline = Arc::clone(&self.pipeline);
        if self.red.is_some_and(|r| r <= level) {
            return;
        }
        self.reporter.event(Event::GateRed {
            gate,
            job: pipeline.graph.job(id),
        });
        self.red = Some(level);
        let why = match gate {
            Some(g) => format!("gate {g} is red (`{}` failed)", pipeline.graph.job(id).name),
            None => format!("`{}` failed", pipeline.graph.job(id).name),
        };
        for j in pipeline.graph.topo_order() {
            if !self.selected[j.0] || self.priority(*j) <= level {
                continue;
            }
            match self.state[j.0] {
                State::Waiting | State::Queued => {
                    self.finish_without_running(*j, "cancelled", why.clone())
                }
                State::Running => {
                    if let Some(c) = self.cancels.get(j) {
                        let _ = c.send(true);
                        self.cancelled_why.insert(*j, why.clone());
                    }
                }
                State::Done => {}
            }
        }
        self.barrier_wait.retain(|b| self.state[b.0] != State::Done);
    }

    fn ingredients(&self, id: JobId) -> Ingredients {
        let job = self.job(id);
        let mut outputs = job.outputs.clone();
        outputs.extend(job.reports.iter().map(|r| format!("report:{r}")));
        Ingredients {
            version: KEY_VERSION,
            command: job.run.clone(),
            dir: job.dir.clone().unwrap_or_default(),
            env: job
                .env
                .iter()
                .map(|(k, v)| (k.clone(), maestro_cache::sha256_hex(v.as_bytes())))
                .collect(),
            inputs: self.inputs[id.0].clone(),
            toolchains: job.toolchains.clone(),
            outputs,
            upstream: job
                .needs
                .iter()
                .map(|n| {
                    (
                        self.job(*n).name.clone(),
                        self.downstream[n.0].clone().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    /// Why a job missed: what changed since its latest cache entry.
    fn miss_reason(&mut self, job: &str, now: &Ingredients) -> String {
        match self.store.cache_latest_for_job(job, None) {
            Ok(Some(prev)) => match serde_json::from_str::<Ingredients>(&prev.ingredients) {
                Ok(before) => {
                    let changes = now.diff(&before);
                    if changes.is_empty() {
                        "no cache entry for this key".to_owned()
                    } else {
                        changes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    }
                }
                Err(_) => "previous entry unreadable".to_owned(),
            },
            Ok(None) => "first run (no earlier cache entry)".to_owned(),
            Err(e) => format!("cache lookup failed: {e}"),
        }
    }

    fn dispatch(&mut self) -> Result<(), EngineError> {
        while self.running < self.opts.parallelism.max(1) {
            let Some(Reverse((_, _, idx))) = self.queue.pop() else {
                break;
            };
            let id = JobId(idx);
            if self.state[idx] != State::Queued {
                continue;
            }
            let pipeline = Arc::clone(&self.pipeline);
            let job = pipeline.graph.job(id);
            let ingredients = self.ingredients(id);
            let key = ingredients.key();
            let use_cache = job.cache && !self.opts.no_cache;
            let mut reason = None;
            if use_cache {
                if let Some(entry) = self.store.cache_get(&key)? {
                    if entry.size > INLINE_RESTORE_BYTES {
                        self.start_task(id, Task::Restore { key, entry });
                        continue;
                    }
                    match restore_blocking(&self.shared, id, &key, &entry, Instant::now()) {
                        Ok(finished) => {
                            self.state[id.0] = State::Running;
                            self.running += 1;
                            self.on_done(finished);
                            continue;
                        }
                        Err(why) => reason = Some(verification_failed(&why)),
                    }
                } else {
                    reason = Some(self.miss_reason(&job.name, &ingredients));
                }
            } else if job.cache {
                reason = Some("cache disabled (--no-cache)".to_owned());
            }
            // A job may read its upstream jobs' records (`maestro attest` does): commit
            // them before it starts.
            let upstream_pending = job.needs.iter().any(|n| {
                let name = &pipeline.graph.job(*n).name;
                self.batch.jobs.iter().any(|r| &r.name == name)
            });
            if upstream_pending {
                self.flush(true)?;
            }
            self.start_task(
                id,
                Task::Execute {
                    key,
                    ingredients,
                    reason,
                    store_result: job.cache,
                },
            );
        }
        Ok(())
    }

    fn start_task(&mut self, id: JobId, task: Task) {
        let (ctx, crx) = watch::channel(false);
        if self.interrupted {
            let _ = ctx.send(true);
        }
        self.cancels.insert(id, ctx);
        self.state[id.0] = State::Running;
        self.running += 1;
        let shared = Arc::clone(&self.shared);
        let tx = self.tx.clone();
        let mut env = job_env(
            self.job(id),
            &self.pipeline.pass_env,
            &self.opts.host_env,
            self.run_id,
        );
        if !self.opts.fixed_env.is_empty() {
            env.retain(|(k, _)| !self.opts.fixed_env.iter().any(|(f, _)| f == k));
            env.extend(self.opts.fixed_env.iter().cloned());
        }
        if let Some(t) = self.opts.trace {
            env.retain(|(k, _)| k != "TRACEPARENT");
            let span = job_span(t, &self.job(id).name);
            env.push(("TRACEPARENT".to_owned(), t.with_span(span).to_string()));
        }
        tokio::spawn(async move {
            let finished = match task {
                Task::Restore { key, entry } => {
                    restore(&shared, id, key, entry, &tx, crx, env).await
                }
                Task::Execute {
                    key,
                    ingredients,
                    reason,
                    store_result,
                } => {
                    execute(
                        &shared,
                        id,
                        key,
                        &ingredients,
                        reason,
                        store_result,
                        &tx,
                        crx,
                        env,
                    )
                    .await
                }
            };
            let _ = tx.send(Msg::Done(Box::new(finished)));
        });
    }

    fn on_done(&mut self, mut f: Finished) {
        let id = f.id;
        if f.row.status == "cancelled" && f.row.note.is_none() {
            f.row.note = Some(
                self.cancelled_why
                    .remove(&id)
                    .unwrap_or_else(|| "run interrupted".to_owned()),
            );
        }
        self.running -= 1;
        self.cancels.remove(&id);
        self.state[id.0] = State::Done;
        if let Some(e) = f.cache_put {
            self.batch.cache_put.push(e);
        }
        if let Some(k) = f.cache_used {
            self.batch.cache_used.push(k);
        }
        // A pass on inputs that failed in an earlier run: a flake signal.
        if f.row.status == "succeeded"
            && f.row.cache != "hit"
            && !f.row.flaky
            && let Some(key) = f.row.cache_key.as_deref()
            && let Ok(Some(run)) = self.store.failed_with_key(&f.row.name, key, self.run_id)
        {
            f.row.flaky = true;
            f.row.note = Some(format!(
                "passed on the same inputs that failed in run #{run}"
            ));
        }
        let pipeline = Arc::clone(&self.pipeline);
        self.reporter.event(Event::JobFinished {
            job: pipeline.graph.job(id),
            row: &f.row,
        });
        let ok = f.row.status == "succeeded";
        self.batch.jobs.push(f.row.clone());
        self.rows[id.0] = Some(f.row);
        if ok {
            let level = self.priority(id);
            self.unsettled[level] -= 1;
        }
        self.downstream[id.0] = f.downstream;
        if ok {
            for d in pipeline.graph.dependents(id) {
                if !self.selected[d.0] || self.state[d.0] != State::Waiting {
                    continue;
                }
                self.remaining[d.0] -= 1;
                if self.remaining[d.0] == 0 {
                    self.enqueue(*d);
                }
            }
        } else {
            self.skip_dependents(id);
            if !self.interrupted
                && self.rows[id.0]
                    .as_ref()
                    .is_some_and(|r| r.status != "cancelled")
            {
                self.turn_red(id);
            }
        }
        // Barrier jobs whose earlier priorities are now all green.
        let waiting = std::mem::take(&mut self.barrier_wait);
        for b in waiting {
            if self.state[b.0] == State::Waiting && self.barrier_open(b) {
                self.state[b.0] = State::Queued;
                let p = self.priority(b);
                self.queue.push(Reverse((p, self.topo_pos[b.0], b.0)));
            } else if self.state[b.0] == State::Waiting {
                self.barrier_wait.push(b);
            }
        }
    }

    fn flush(&mut self, force: bool) -> Result<(), EngineError> {
        if self.batch.is_empty()
            || (!force && self.last_flush.elapsed() < Duration::from_millis(200))
        {
            return Ok(());
        }
        self.batch.used_at_ms = now_ms();
        self.store.record(self.run_id, &self.batch)?;
        self.batch = Batch::default();
        self.last_flush = Instant::now();
        Ok(())
    }

    fn interrupt(&mut self) {
        if self.interrupted {
            return;
        }
        self.interrupted = true;
        self.reporter.event(Event::Interrupted);
        for c in self.cancels.values() {
            let _ = c.send(true);
        }
        let pipeline = Arc::clone(&self.pipeline);
        for j in pipeline.graph.topo_order() {
            if matches!(self.state[j.0], State::Waiting | State::Queued) {
                self.finish_without_running(*j, "cancelled", "run interrupted".to_owned());
            }
        }
    }
}

enum Task {
    Restore {
        key: String,
        entry: CacheEntry,
    },
    Execute {
        key: String,
        ingredients: Ingredients,
        reason: Option<String>,
        store_result: bool,
    },
}

/// The environment a job sees: passed-through host variables, its explicit env, and
/// Maestro's own variables.
/// The span of job `name` in the run whose span `run` is; its process's `TRACEPARENT`
/// names it, and the tracer records it under the same id.
#[must_use]
pub fn job_span(run: maestro_telemetry::TraceParent, name: &str) -> maestro_telemetry::SpanId {
    maestro_telemetry::SpanId::derived(run.trace_id, run.span_id, &format!("job:{name}"))
}

/// The span of gate `name` (the parent of its jobs' spans).
#[must_use]
pub fn gate_span(run: maestro_telemetry::TraceParent, name: &str) -> maestro_telemetry::SpanId {
    maestro_telemetry::SpanId::derived(run.trace_id, run.span_id, &format!("gate:{name}"))
}

fn job_env(
    job: &Job,
    pass: &[String],
    host: &[(String, String)],
    run_id: i64,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = host
        .iter()
        .filter(|(k, _)| pass.iter().any(|p| p == k))
        .cloned()
        .collect();
    env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("MAESTRO".into(), "1".into());
    // The running maestro, for jobs that call it (`"$MAESTRO_EXE" attest ...`).
    if let Ok(exe) = std::env::current_exe() {
        env.insert("MAESTRO_EXE".into(), exe.display().to_string());
    }
    env.insert("MAESTRO_JOB".into(), job.name.clone());
    env.insert("MAESTRO_RUN_ID".into(), run_id.to_string());
    env.into_iter().collect()
}

/// A job's record before anything is known of its outcome. `key` is set once the job
/// reached the cache (then it also gets a start time).
fn base_row(job: &Job, key: Option<&str>) -> JobRow {
    JobRow {
        name: job.name.clone(),
        gate: job.gate.map(|g| g.as_str().to_owned()),
        status: String::new(),
        cache: String::new(),
        cache_key: key.map(str::to_owned),
        reason: None,
        note: None,
        started_at_ms: key.map(|_| now_ms()),
        duration_ms: 0,
        exit_code: None,
        log_path: None,
        flaky: false,
        audit: None,
        attempts: Vec::new(),
        artifacts: Vec::new(),
        tests: Vec::new(),
    }
}

/// What a succeeded job's dependents see of it, the same whether it ran or came from the
/// cache: the digest of its outputs, or its own key when it declares none.
fn downstream_digest(outputs: &[ArtifactRow], key: &str) -> String {
    if outputs.is_empty() {
        return key.to_owned();
    }
    let pairs: Vec<(String, String)> = outputs
        .iter()
        .map(|o| (o.path.clone(), o.digest.clone()))
        .collect();
    outputs_digest(&pairs)
}

/// Why a hit was run anyway.
fn verification_failed(why: &str) -> String {
    format!("cached outputs failed verification ({why}); ran again")
}

/// Outputs up to this size are restored by the dispatcher itself: for small files a
/// thread hand-off costs more than the copy.
const INLINE_RESTORE_BYTES: i64 = 256 * 1024;

/// Restores a hit: verifies and writes every output, and links the cached log into the
/// run's log directory.
fn restore_blocking(
    shared: &Shared,
    id: JobId,
    key: &str,
    entry: &CacheEntry,
    started: Instant,
) -> Result<Finished, String> {
    for o in &entry.outputs {
        shared
            .cas
            .restore(&o.digest, &shared.root.join(&o.path), o.executable)
            .map_err(|err| err.to_string())?;
    }
    let job = shared.pipeline.graph.job(id);
    let log = shared.logs.join(log_name(&job.name, 1));
    shared
        .cas
        .link(&entry.log_digest, &log)
        .map_err(|err| err.to_string())?;
    let mut row = base_row(job, Some(key));
    row.status = "succeeded".into();
    row.cache = "hit".into();
    row.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    row.log_path = Some(log.display().to_string());
    row.artifacts = entry.outputs.clone();
    Ok(Finished {
        id,
        row,
        downstream: Some(downstream_digest(&entry.outputs, key)),
        cache_put: None,
        cache_used: Some(key.to_owned()),
    })
}

async fn restore(
    shared: &Arc<Shared>,
    id: JobId,
    key: String,
    entry: CacheEntry,
    tx: &mpsc::UnboundedSender<Msg>,
    cancel: watch::Receiver<bool>,
    env: Vec<(String, String)>,
) -> Finished {
    let started = Instant::now();
    let s = Arc::clone(shared);
    let (k, e) = (key.clone(), entry.clone());
    let restored = tokio::task::spawn_blocking(move || restore_blocking(&s, id, &k, &e, started))
        .await
        .unwrap_or_else(|e| Err(format!("restore task failed: {e}")));
    match restored {
        Ok(finished) => finished,
        Err(why) => {
            // Never a stale or corrupt hit: run the job instead, and replace the entry.
            let ingredients: Ingredients =
                serde_json::from_str(&entry.ingredients).unwrap_or_default();
            let reason = Some(verification_failed(&why));
            execute(shared, id, key, &ingredients, reason, true, tx, cancel, env).await
        }
    }
}

/// Collects declared outputs and reports into the blob store.
fn collect_outputs(shared: &Shared, job: &Job) -> Result<Vec<ArtifactRow>, String> {
    let mut out = Vec::new();
    let mut add = |rel_path: String, abs: &Path| -> Result<(), String> {
        let (digest, size) = shared.cas.put_file(abs).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        let executable = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(abs)
                .map(|m| m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        };
        out.push(ArtifactRow {
            path: rel_path,
            digest,
            size,
            executable,
        });
        Ok(())
    };
    for p in job.outputs.iter().chain(job.reports.iter()) {
        let abs = shared.root.join(p);
        let meta = std::fs::metadata(&abs)
            .map_err(|_| format!("declared output `{p}` was not produced"))?;
        if meta.is_dir() {
            let mut stack = vec![abs.clone()];
            while let Some(d) = stack.pop() {
                let rd = std::fs::read_dir(&d)
                    .map_err(|e| format!("cannot read output dir {}: {e}", d.display()))?;
                for e in rd.filter_map(Result::ok) {
                    let path = e.path();
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(path);
                    } else {
                        add(rel(&path, &shared.root), &path)?;
                    }
                }
            }
        } else {
            add(p.clone(), &abs)?;
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn read_reports(shared: &Shared, job: &Job, attempt: u32) -> (Vec<TestRow>, Option<String>) {
    let mut tests = Vec::new();
    let mut problem = None;
    for r in &job.reports {
        let path = shared.root.join(r);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() > junit::MAX_REPORT_BYTES {
            problem = Some(format!("report {r} is larger than the limit"));
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| junit::parse(&b).map_err(|e| e.to_string()))
        {
            Ok(cases) => tests.extend(cases.into_iter().map(|c| TestRow {
                attempt,
                suite: c.suite,
                classname: c.classname,
                name: c.name,
                status: c.status.to_owned(),
                duration_ms: c.duration_ms,
                message: c.message,
            })),
            Err(e) => problem = Some(format!("report {r}: {e}")),
        }
    }
    (tests, problem)
}

/// A job that `deploys` artifacts without valid evidence: it fails without starting,
/// and its log says what is missing.
fn refused(
    shared: &Shared,
    job: &Job,
    mut row: JobRow,
    report: &str,
    first_problem: Option<String>,
    started: Instant,
) -> Finished {
    let log = shared.logs.join(log_name(&job.name, 1));
    let _ = std::fs::write(&log, report);
    let now = now_ms();
    row.status = "failed".into();
    row.note = Some(format!(
        "deploy refused: {}",
        first_problem.unwrap_or_else(|| "evidence missing".to_owned())
    ));
    row.log_path = Some(log.display().to_string());
    row.attempts.push(AttemptRow {
        attempt: 1,
        status: "failed".into(),
        exit_code: None,
        signal: None,
        started_at_ms: now,
        duration_ms: 0,
        log_path: log.display().to_string(),
    });
    row.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    Finished {
        id: job.id,
        row,
        downstream: None,
        cache_put: None,
        cache_used: None,
    }
}

#[expect(clippy::too_many_arguments, reason = "one task's whole context")]
async fn execute(
    shared: &Arc<Shared>,
    id: JobId,
    key: String,
    ingredients: &Ingredients,
    reason: Option<String>,
    store_result: bool,
    tx: &mpsc::UnboundedSender<Msg>,
    cancel: watch::Receiver<bool>,
    env: Vec<(String, String)>,
) -> Finished {
    let job = shared.pipeline.graph.job(id);
    let mut row = base_row(job, Some(&key));
    row.cache = if store_result {
        "miss".into()
    } else {
        "disabled".into()
    };
    row.reason = reason;
    let dir = job
        .dir
        .as_ref()
        .map_or_else(|| shared.root.clone(), |d| shared.root.join(d));
    let started = Instant::now();
    let mut preamble = String::new();
    if !job.deploys.is_empty() {
        let s = Arc::clone(shared);
        let check = tokio::task::spawn_blocking(move || {
            let job = s.pipeline.graph.job(id);
            crate::evidence::check_deploys(&s.root, &s.pipeline.trust, &job.deploys)
        })
        .await
        .unwrap_or_else(|e| crate::evidence::DeployCheck {
            ok: false,
            lines: vec![format!("refused: the evidence check failed: {e}")],
            first_problem: Some(format!("the evidence check failed: {e}")),
        });
        preamble = check
            .lines
            .iter()
            .map(|l| format!("maestro: {l}\n"))
            .collect();
        if !check.ok {
            return refused(shared, job, row, &preamble, check.first_problem, started);
        }
    }
    // A privileged job runs only once its audit entry is durable.
    let mut privileged = None;
    if let (Some(gate), Some(recorder)) = (job.gate.filter(|g| g.is_barrier()), &shared.privileged)
    {
        let pj = crate::privileged::PrivilegedJob {
            run_id: shared.run_id,
            pipeline: shared.pipeline.name.clone(),
            job: job.name.clone(),
            gate,
            artifacts: job
                .deploys
                .iter()
                .filter_map(|a| {
                    maestro_cache::cas::hash_file(&shared.root.join(a))
                        .ok()
                        .map(|(d, _)| (a.clone(), format!("sha256:{d}")))
                })
                .collect(),
            trace_id: shared.trace_id.clone(),
        };
        let r = Arc::clone(recorder);
        let pj2 = pj.clone();
        let before = tokio::task::spawn_blocking(move || r.before(&pj2))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match before {
            Ok(index) => {
                preamble.push_str(&format!(
                    "maestro: audit entry #{index}: {} of {} by this run\n",
                    gate.as_str(),
                    job.name
                ));
                row.audit = Some(maestro_store::AuditLink {
                    started: index,
                    outcome: None,
                });
                privileged = Some((Arc::clone(recorder), pj, index));
            }
            Err(e) => {
                let report = format!("{preamble}maestro: refused: {e}\n");
                return refused(shared, job, row, &report, Some(e), started);
            }
        }
    }
    let mut final_exit = exec::Exit::SpawnError;
    let mut saw_failure = false;
    for attempt in 1..=job.retries + 1 {
        let log = shared.logs.join(log_name(&job.name, attempt));
        // Declared outputs and reports are cleared first, so nothing stale from an earlier
        // attempt or run is read or cached as this attempt's.
        for p in job.outputs.iter().chain(job.reports.iter()) {
            let path = shared.root.join(p);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir_all(&path);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
        let _ = tx.send(Msg::Started(id, attempt));
        let attempt_started = now_ms();
        let outcome = exec::run(
            &exec::Spec {
                command: &job.run,
                dir: dir.clone(),
                env: env.clone(),
                log: &log,
                preamble: &preamble,
                timeout: job.timeout,
                grace: shared.grace,
            },
            cancel.clone(),
        )
        .await;
        let (tests, report_problem) = read_reports(shared, job, attempt);
        row.tests.extend(tests);
        let (code, signal) = match outcome.exit {
            exec::Exit::Failed { code, signal } => (code, signal),
            exec::Exit::Succeeded => (Some(0), None),
            _ => (None, None),
        };
        row.attempts.push(AttemptRow {
            attempt,
            status: outcome.exit.status().to_owned(),
            exit_code: code,
            signal,
            started_at_ms: attempt_started,
            duration_ms: i64::try_from(outcome.duration.as_millis()).unwrap_or(i64::MAX),
            log_path: log.display().to_string(),
        });
        row.exit_code = code;
        row.log_path = Some(log.display().to_string());
        if let Some(e) = outcome.error {
            row.note = Some(e);
        } else if let Some(p) = report_problem {
            row.note = Some(p);
        }
        final_exit = outcome.exit;
        match outcome.exit {
            exec::Exit::Succeeded => break,
            exec::Exit::Cancelled | exec::Exit::SpawnError => break,
            exec::Exit::Failed { .. } | exec::Exit::TimedOut => saw_failure = true,
        }
    }
    row.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    row.status = final_exit.status().to_owned();
    if final_exit == exec::Exit::TimedOut {
        row.note = Some(format!("timed out after {}", humanize(job.timeout)));
    }
    if let Some((recorder, pj, started_index)) = privileged {
        let status = row.status.clone();
        let after =
            tokio::task::spawn_blocking(move || recorder.after(&pj, started_index, &status))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
        match after {
            Ok(index) => {
                row.audit = Some(maestro_store::AuditLink {
                    started: started_index,
                    outcome: Some(index),
                });
            }
            Err(e) => {
                // An outcome nobody can audit is not a success.
                row.status = "failed".into();
                row.note = Some(format!(
                    "the outcome could not be written to the audit log: {e}"
                ));
                final_exit = exec::Exit::Failed {
                    code: None,
                    signal: None,
                };
            }
        }
    }
    let mut finished = Finished {
        id,
        row,
        downstream: None,
        cache_put: None,
        cache_used: None,
    };
    if final_exit != exec::Exit::Succeeded {
        return finished;
    }
    finished.row.flaky = saw_failure;
    let s = Arc::clone(shared);
    let log = PathBuf::from(finished.row.log_path.clone().unwrap_or_default());
    let collected = tokio::task::spawn_blocking(move || {
        let job = s.pipeline.graph.job(id);
        let outputs = collect_outputs(&s, job)?;
        let (log_digest, _) = s.cas.adopt(&log).map_err(|e| e.to_string())?;
        Ok::<_, String>((outputs, log_digest))
    })
    .await
    .unwrap_or_else(|e| Err(format!("collecting outputs failed: {e}")));
    match collected {
        Ok((outputs, log_digest)) => {
            finished.downstream = Some(downstream_digest(&outputs, &key));
            if store_result {
                let now = now_ms();
                finished.cache_put = Some(CacheEntry {
                    key,
                    job: job.name.clone(),
                    created_at_ms: now,
                    last_used_at_ms: now,
                    size: outputs.iter().map(|o| o.size).sum(),
                    outputs: outputs.clone(),
                    log_digest,
                    duration_ms: finished.row.duration_ms,
                    ingredients: serde_json::to_string(ingredients).unwrap_or_default(),
                });
            }
            finished.row.artifacts = outputs;
        }
        Err(e) => {
            finished.row.status = "failed".into();
            finished.row.note = Some(e);
        }
    }
    finished
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Runs a pipeline to the end (or until `interrupt` becomes true).
///
/// # Errors
/// When the store fails, inputs cannot be read, or the home directory cannot be written.
pub async fn run(
    pipeline: Arc<Pipeline>,
    store: &mut dyn Store,
    opts: &Options,
    reporter: &mut dyn Reporter,
    mut interrupt: watch::Receiver<bool>,
) -> Result<Summary, EngineError> {
    let started = Instant::now();
    let root = pipeline.root.clone();
    let recovered = store.mark_interrupted(now_ms())?;
    let (commit, branch) = crate::git::head(&root);
    let run_id = store.begin_run(&NewRun {
        pipeline: pipeline.name.clone(),
        root: root.display().to_string(),
        commit,
        branch,
        started_at_ms: now_ms(),
        pid: std::process::id(),
        args: opts.args.clone(),
        trace_id: opts.trace_id.clone(),
        // A local run belongs to the default tenant; remote runs carry their actor's.
        tenant: String::new(),
        reporter: None,
        remote_key: None,
    })?;
    let logs = opts.home.join("runs").join(run_id.to_string()).join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| EngineError::Home(logs.clone(), e))?;

    let graph = &pipeline.graph;
    let n = graph.len();
    let selected: Vec<bool> = if opts.targets.is_empty() {
        vec![true; n]
    } else {
        let mut s = vec![false; n];
        for id in graph.closure(&opts.targets) {
            s[id.0] = true;
        }
        s
    };
    // Inputs: one walk, one hash per distinct file. Outputs and reports are never inputs.
    let excluded: HashSet<String> = graph
        .jobs()
        .iter()
        .flat_map(|j| j.outputs.iter().chain(j.reports.iter()))
        .map(|p| p.trim_end_matches('/').to_owned())
        .collect();
    let patterns: Vec<Vec<String>> = graph
        .jobs()
        .iter()
        .map(|j| {
            if selected[j.id.0] {
                j.inputs.clone()
            } else {
                Vec::new()
            }
        })
        .collect();
    let index = InputIndex::build(&root, &patterns, &excluded)
        .map_err(|e| EngineError::Input(e.to_string()))?;
    let digests = hash_inputs(&root, &index, opts.parallelism)?;
    let inputs: Vec<BTreeMap<String, String>> = index
        .per_job
        .iter()
        .map(|files| {
            files
                .iter()
                .map(|f| (f.clone(), digests.get(f).cloned().unwrap_or_default()))
                .collect()
        })
        .collect();

    let mut topo_pos = vec![0; n];
    for (i, id) in graph.topo_order().iter().enumerate() {
        topo_pos[id.0] = i;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        root: root.clone(),
        cas: Cas::new(opts.home.join("cache").join("cas")),
        logs: logs.clone(),
        grace: opts.grace,
        pipeline: Arc::clone(&pipeline),
        run_id,
        trace_id: opts.trace_id.clone(),
        privileged: opts.privileged.clone(),
    });
    let total = selected.iter().filter(|s| **s).count();
    let mut unsettled = vec![0usize; Gate::ALL.len() + 1];
    for j in graph.jobs().iter().filter(|j| selected[j.id.0]) {
        unsettled[graph.priority(j.id)] += 1;
    }
    reporter.event(Event::Started {
        run_id,
        pipeline: &pipeline,
        jobs: total,
        recovered: &recovered,
    });
    let mut d = Dispatcher {
        pipeline: Arc::clone(&pipeline),
        shared,
        store,
        reporter,
        opts,
        run_id,
        remaining: graph.jobs().iter().map(|j| j.needs.len()).collect(),
        selected,
        state: vec![State::Waiting; n],
        rows: vec![None; n],
        downstream: vec![None; n],
        inputs,
        queue: BinaryHeap::new(),
        topo_pos,
        barrier_wait: Vec::new(),
        cancels: HashMap::new(),
        unsettled,
        cancelled_why: HashMap::new(),
        running: 0,
        red: None,
        interrupted: false,
        batch: Batch::default(),
        last_flush: Instant::now(),
        tx,
    };
    for id in graph.topo_order() {
        if d.selected[id.0] && d.remaining[id.0] == 0 {
            d.enqueue(*id);
        }
    }
    let result: Result<(), EngineError> = async {
        loop {
            if !d.interrupted {
                d.dispatch()?;
            }
            if d.running == 0 {
                break;
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Started(id, attempt)) => {
                        let job = pipeline.graph.job(id);
                        d.reporter.event(Event::JobStarted { job, attempt });
                    }
                    Some(Msg::Done(f)) => d.on_done(*f),
                    None => break,
                },
                changed = interrupt.changed(), if !d.interrupted => {
                    if changed.is_err() || *interrupt.borrow() {
                        d.interrupt();
                    }
                }
            }
            d.flush(false)?;
        }
        // Jobs never reached (a barrier behind a red gate, or needs that were cancelled).
        for id in pipeline.graph.topo_order() {
            if d.selected[id.0] && d.state[id.0] != State::Done {
                let why = if d.interrupted {
                    "run interrupted"
                } else {
                    "an earlier gate is red"
                };
                d.finish_without_running(*id, "cancelled", why.to_owned());
            }
        }
        d.flush(true)
    }
    .await;
    result?;
    let status = if d.interrupted {
        RunStatus::Interrupted
    } else if d.rows.iter().flatten().all(|r| r.status == "succeeded") {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    d.store.finish_run(run_id, status, now_ms())?;
    let red_gate = d.red.and_then(|r| Gate::ALL.get(r).copied());
    let jobs = pipeline
        .graph
        .topo_order()
        .iter()
        .filter_map(|id| d.rows[id.0].clone())
        .collect();
    Ok(Summary {
        run_id,
        status,
        jobs,
        duration: started.elapsed(),
        red_gate,
    })
}
