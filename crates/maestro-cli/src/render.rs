//! Rendering runs for people (live progress, plain CI lines, summary table, Markdown) and
//! machines (JSON lines).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use maestro_engine::{Event, Reporter, Summary};
use maestro_spec::{Gate, Pipeline};
use maestro_store::JobRow;

use crate::settings::Output;

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("{code}{text}{RESET}")
    } else {
        text.to_owned()
    }
}

pub(crate) fn secs(ms: i64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// Short label of a job's outcome.
pub(crate) fn label(row: &JobRow) -> &'static str {
    match (row.status.as_str(), row.cache.as_str()) {
        ("succeeded", "hit") => "cached",
        ("succeeded", _) if row.flaky => "flaky",
        ("succeeded", _) => "ok",
        ("failed", _) => "FAIL",
        ("timed-out", _) => "TIMEOUT",
        ("error", _) => "ERROR",
        ("skipped", _) => "skipped",
        ("cancelled", _) => "cancelled",
        _ => "?",
    }
}

fn label_color(l: &str) -> &'static str {
    match l {
        "ok" => GREEN,
        "cached" => DIM,
        "flaky" | "skipped" | "cancelled" => YELLOW,
        _ => RED,
    }
}

/// The reporter the CLI gives the engine.
pub(crate) struct Console {
    output: Output,
    color: bool,
    bar: Option<ProgressBar>,
    done: usize,
    cached: usize,
    failed: usize,
    /// Plain lines waiting to be written: one write per 100 ms, not one per job.
    pending: String,
    last_flush: std::time::Instant,
}

impl Console {
    pub(crate) fn new(output: Output, color: bool) -> Console {
        Console {
            output,
            color,
            bar: None,
            done: 0,
            cached: 0,
            failed: 0,
            pending: String::new(),
            last_flush: std::time::Instant::now(),
        }
    }

    fn line(&mut self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => {
                self.pending.push_str(text);
                self.pending.push('\n');
                if self.pending.len() > 16 * 1024
                    || self.last_flush.elapsed() >= Duration::from_millis(100)
                {
                    self.flush();
                }
            }
        }
    }

    /// Writes buffered lines now.
    pub(crate) fn flush(&mut self) {
        use std::io::Write as _;
        if !self.pending.is_empty() {
            let _ = std::io::stderr().write_all(self.pending.as_bytes());
            self.pending.clear();
        }
        self.last_flush = std::time::Instant::now();
    }

    fn update(&self) {
        if let Some(b) = &self.bar {
            b.set_position(self.done as u64);
            b.set_message(format!("{} cached · {} failed", self.cached, self.failed));
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.flush();
    }
}

impl Reporter for Console {
    fn event(&mut self, e: Event<'_>) {
        if self.output == Output::Json {
            let v = match &e {
                Event::Started {
                    run_id,
                    pipeline,
                    jobs,
                    recovered,
                } => serde_json::json!({
                    "event": "run-started", "run": run_id, "pipeline": pipeline.name, "jobs": jobs, "recovered": recovered }),
                Event::JobStarted { job, attempt } => serde_json::json!({
                    "event": "job-started", "job": job.name, "gate": job.gate.map(Gate::as_str), "attempt": attempt }),
                Event::JobFinished { job, row } => serde_json::json!({
                    "event": "job-finished", "job": job.name, "gate": job.gate.map(Gate::as_str), "status": row.status,
                    "cache": row.cache, "reason": row.reason, "duration_ms": row.duration_ms, "exit_code": row.exit_code,
                    "attempts": row.attempts.len(), "log": row.log_path }),
                Event::GateRed { gate, job } => serde_json::json!({
                    "event": "gate-red", "gate": gate.map(Gate::as_str), "job": job.name }),
                Event::Interrupted => serde_json::json!({"event": "interrupted"}),
            };
            println!("{v}");
            return;
        }
        match e {
            Event::Started {
                run_id,
                pipeline,
                jobs,
                recovered,
            } => {
                for r in recovered {
                    self.line(&format!("note: run #{r} was left running by a crashed or killed maestro; marked interrupted"));
                }
                self.line(&format!(
                    "{} run #{run_id} · {} · {jobs} jobs",
                    paint(self.color, BOLD, "maestro"),
                    pipeline.name
                ));
                if self.output == Output::Human {
                    let bar = ProgressBar::new(jobs as u64);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{pos}/{len}] {wide_msg} {elapsed}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.flush();
                    self.bar = Some(bar);
                }
            }
            Event::JobStarted { job, attempt } => {
                if attempt > 1 {
                    self.line(&format!(
                        "{} {} attempt {attempt}",
                        paint(self.color, YELLOW, "retry"),
                        job.name
                    ));
                }
                if let Some(b) = &self.bar {
                    b.set_message(format!(
                        "{} · {} cached · {} failed · running {}",
                        job.gate.map_or("-", Gate::as_str),
                        self.cached,
                        self.failed,
                        job.name
                    ));
                }
            }
            Event::JobFinished { job, row } => {
                self.done += 1;
                if row.cache == "hit" {
                    self.cached += 1;
                }
                let l = label(row);
                if matches!(l, "FAIL" | "TIMEOUT" | "ERROR") {
                    self.failed += 1;
                }
                let gate = job.gate.map_or(String::new(), |g| format!(" [{g}]"));
                let mut text = format!(
                    "{} {}{}",
                    paint(self.color, label_color(l), &format!("{l:>9}")),
                    job.name,
                    paint(self.color, DIM, &gate)
                );
                if row.cache != "hit" && !row.attempts.is_empty() {
                    let _ = write!(text, " {}", secs(row.duration_ms));
                }
                if let Some(n) = &row.note {
                    let _ = write!(text, " — {n}");
                } else if l == "flaky" {
                    let _ = write!(text, " — passed after {} attempts", row.attempts.len());
                }
                if let (Some(code), "FAIL") = (row.exit_code, l) {
                    let _ = write!(text, " (exit {code})");
                }
                self.line(&text);
                self.update();
            }
            Event::GateRed { gate, job } => {
                let what = gate.map_or_else(
                    || format!("`{}` failed", job.name),
                    |g| format!("gate {g} is red"),
                );
                self.line(&paint(
                    self.color,
                    RED,
                    &format!("      ✗ {what}: later gates are cancelled"),
                ));
            }
            Event::Interrupted => self.line(&paint(
                self.color,
                YELLOW,
                "interrupted: stopping running jobs (SIGTERM, then SIGKILL)",
            )),
        }
    }
}

/// A path as the user should see it: relative to the current directory when inside it.
pub(crate) fn shown(path: &str) -> String {
    let p = Path::new(path);
    match std::env::current_dir() {
        Ok(cwd) => p
            .strip_prefix(&cwd)
            .map_or_else(|_| path.to_owned(), |r| r.display().to_string()),
        Err(_) => path.to_owned(),
    }
}

/// Up to `n` last lines of a log file (reads at most the last 16 KiB).
pub(crate) fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

struct GateLine {
    jobs: usize,
    ok: usize,
    cached: usize,
    failed: usize,
    not_run: usize,
    first: i64,
    last: i64,
}

fn gate_lines(summary: &Summary, pipeline: &Pipeline) -> BTreeMap<usize, (String, GateLine)> {
    let mut by_gate: BTreeMap<usize, (String, GateLine)> = BTreeMap::new();
    for row in &summary.jobs {
        let gate = pipeline.graph.find(&row.name).and_then(|j| j.gate);
        let (k, name) = gate.map_or((Gate::ALL.len(), "(no gate)".to_owned()), |g| {
            (g.index(), g.to_string())
        });
        let e = by_gate.entry(k).or_insert_with(|| {
            (
                name,
                GateLine {
                    jobs: 0,
                    ok: 0,
                    cached: 0,
                    failed: 0,
                    not_run: 0,
                    first: i64::MAX,
                    last: 0,
                },
            )
        });
        let g = &mut e.1;
        g.jobs += 1;
        match label(row) {
            "ok" | "flaky" => g.ok += 1,
            "cached" => g.cached += 1,
            "skipped" | "cancelled" => g.not_run += 1,
            _ => g.failed += 1,
        }
        if let Some(s) = row.started_at_ms {
            g.first = g.first.min(s);
            g.last = g.last.max(s + row.duration_ms);
        }
    }
    by_gate
}

/// The end-of-run table and what failed, with log tails and failing tests.
pub(crate) fn print_summary(summary: &Summary, pipeline: &Pipeline, color: bool) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<12} {:>5} {:>5} {:>7} {:>7} {:>8} {:>9}",
        "gate", "jobs", "ok", "cached", "failed", "not run", "time"
    );
    for (_, (name, g)) in gate_lines(summary, pipeline) {
        let time = if g.first == i64::MAX {
            "-".to_owned()
        } else {
            secs(g.last - g.first)
        };
        let status = if g.failed > 0 {
            paint(color, RED, &name)
        } else if g.not_run > 0 {
            paint(color, YELLOW, &name)
        } else {
            paint(color, GREEN, &name)
        };
        let pad = 12usize.saturating_sub(name.chars().count());
        let _ = writeln!(
            out,
            "{status}{} {:>5} {:>5} {:>7} {:>7} {:>8} {:>9}",
            " ".repeat(pad),
            g.jobs,
            g.ok,
            g.cached,
            g.failed,
            g.not_run,
            time
        );
    }
    let (hits, executed, failed) = summary.counts();
    let total = summary.jobs.len();
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let rate = if total == 0 {
        0.0
    } else {
        hits as f64 * 100.0 / total as f64
    };
    let _ = writeln!(
        out,
        "\nrun #{} {} in {} · {total} jobs · {executed} ran · {hits} cached ({rate:.0}% hit rate) · {failed} failed",
        summary.run_id,
        match summary.status {
            maestro_store::RunStatus::Succeeded => paint(color, GREEN, "succeeded"),
            maestro_store::RunStatus::Failed => paint(color, RED, "FAILED"),
            _ => paint(color, YELLOW, "interrupted"),
        },
        secs(i64::try_from(summary.duration.as_millis()).unwrap_or(i64::MAX)),
    );
    if let Some(g) = summary.red_gate {
        let _ = writeln!(out, "gate {g} is red; every later gate was cancelled");
    }
    for row in summary
        .jobs
        .iter()
        .filter(|r| matches!(label(r), "FAIL" | "TIMEOUT" | "ERROR"))
    {
        let _ = writeln!(
            out,
            "\n{} {} — {}",
            paint(color, RED, "✗"),
            paint(color, BOLD, &row.name),
            failure_line(row)
        );
        let failing: Vec<_> = row
            .tests
            .iter()
            .filter(|t| matches!(t.status.as_str(), "failed" | "error"))
            .collect();
        for t in failing.iter().take(20) {
            let _ = writeln!(
                out,
                "    failing test: {}.{}{}",
                t.classname,
                t.name,
                t.message
                    .as_deref()
                    .map(|m| format!(" — {}", m.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            );
        }
        if let Some(log) = &row.log_path {
            let _ = writeln!(out, "    log: {}", shown(log));
            for l in log_tail(Path::new(log), 15) {
                let _ = writeln!(out, "    │ {l}");
            }
        }
    }
    eprint!("{out}");
}

fn failure_line(row: &JobRow) -> String {
    let mut s = match (row.status.as_str(), row.exit_code) {
        ("failed", Some(c)) => format!("exited with code {c}"),
        ("failed", None) => match row.attempts.last().and_then(|a| a.signal) {
            Some(sig) => format!("was killed by signal {sig}"),
            None => "did not start".to_owned(),
        },
        ("timed-out", _) => "timed out".to_owned(),
        _ => row.status.clone(),
    };
    if let Some(n) = &row.note {
        let _ = write!(s, " ({n})");
    }
    if row.attempts.len() > 1 {
        let _ = write!(s, " after {} attempts", row.attempts.len());
    }
    s
}

/// Markdown summary for a pull-request comment or `$GITHUB_STEP_SUMMARY`.
pub(crate) fn markdown(summary: &Summary, pipeline: &Pipeline) -> String {
    let mut md = String::new();
    let icon = match summary.status {
        maestro_store::RunStatus::Succeeded => "✅",
        maestro_store::RunStatus::Failed => "❌",
        _ => "⚠️",
    };
    let (hits, executed, failed) = summary.counts();
    let _ = writeln!(
        md,
        "## {icon} maestro run #{} — {}\n",
        summary.run_id, pipeline.name
    );
    let _ = writeln!(
        md,
        "{} jobs · {executed} ran · {hits} cached · {failed} failed · {}\n",
        summary.jobs.len(),
        secs(i64::try_from(summary.duration.as_millis()).unwrap_or(0))
    );
    let _ = writeln!(
        md,
        "| gate | jobs | ok | cached | failed | not run |\n|---|---:|---:|---:|---:|---:|"
    );
    for (_, (name, g)) in gate_lines(summary, pipeline) {
        let mark = if g.failed > 0 {
            "❌"
        } else if g.not_run > 0 {
            "⏭️"
        } else {
            "✅"
        };
        let _ = writeln!(
            md,
            "| {mark} {name} | {} | {} | {} | {} | {} |",
            g.jobs, g.ok, g.cached, g.failed, g.not_run
        );
    }
    let failures: Vec<&JobRow> = summary
        .jobs
        .iter()
        .filter(|r| matches!(label(r), "FAIL" | "TIMEOUT" | "ERROR"))
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\n### Failures\n");
        for row in failures {
            let _ = writeln!(md, "- **{}**: {}", row.name, failure_line(row));
            for t in row
                .tests
                .iter()
                .filter(|t| matches!(t.status.as_str(), "failed" | "error"))
                .take(20)
            {
                let _ = writeln!(md, "  - `{}.{}`", t.classname, t.name);
            }
        }
    }
    md
}

pub(crate) fn summary_json(summary: &Summary) -> serde_json::Value {
    let (hits, executed, failed) = summary.counts();
    serde_json::json!({
        "event": "run-finished",
        "run": summary.run_id,
        "status": summary.status.as_str(),
        "red_gate": summary.red_gate.map(Gate::as_str),
        "duration_ms": summary.duration.as_millis(),
        "jobs": summary.jobs.len(),
        "executed": executed,
        "cached": hits,
        "failed": failed,
    })
}
