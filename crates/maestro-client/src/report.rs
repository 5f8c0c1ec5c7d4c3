//! Reporting a run while it runs. [`Reporter::job`] hands a finished job to a thread that
//! sends reports to the conductor in order: each report is frozen with its sequence number
//! once sent, so a retry after a lost answer is applied once; jobs that finish meanwhile
//! wait for the next report. While the conductor is unavailable the thread backs off
//! (1 s doubling to 30 s) and keeps collecting; when nothing finishes for a while it sends
//! an empty report so the conductor knows the run is alive. [`Reporter::finish`] sends
//! what is left with the run's status and waits, at most [`Options::give_up`].

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use maestro_store::{JobLog, JobRow, Report, RunStatus};

use crate::{ClientError, Conductor, Opened};

/// The most test results reported per job (failures first).
pub const MAX_TESTS: usize = 1_000;

/// How the reporter paces itself.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// An empty report is sent when nothing was sent for this long.
    pub heartbeat: Duration,
    /// After [`Reporter::finish`], how long to keep trying.
    pub give_up: Duration,
    /// Jobs per report, at most (the conductor takes 200).
    pub max_jobs: usize,
    /// Bytes of JSON per report, about (the conductor reads 8 MiB).
    pub max_bytes: usize,
    /// The longest wait between two attempts while the conductor is unavailable.
    pub max_backoff: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            heartbeat: Duration::from_secs(30),
            give_up: Duration::from_secs(60),
            max_jobs: 200,
            max_bytes: 4 * 1024 * 1024,
            max_backoff: Duration::from_secs(30),
        }
    }
}

enum Msg {
    Job(Box<JobRow>, Option<JobLog>),
    Finish(RunStatus),
}

/// What reached the conductor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Reports the conductor took (heartbeats included).
    pub reports: i64,
    /// Jobs in them.
    pub jobs: usize,
}

type Outcome = (Delivered, Option<ClientError>);

/// A run being reported.
#[derive(Debug)]
pub struct Reporter {
    run: Opened,
    tx: mpsc::Sender<Msg>,
    thread: std::thread::JoinHandle<Outcome>,
}

impl Reporter {
    /// Starts the reporting thread for a run the conductor opened.
    ///
    /// # Panics
    /// When the thread cannot be spawned.
    #[must_use]
    pub fn start(conductor: Conductor, run: Opened, options: Options) -> Reporter {
        let (tx, rx) = mpsc::channel();
        let id = run.id;
        let thread = std::thread::Builder::new()
            .name("maestro-report".to_owned())
            .spawn(move || Sender::new(conductor, id, options).work(&rx))
            .expect("spawn the reporting thread");
        Reporter { run, tx, thread }
    }

    /// The run on the conductor.
    #[must_use]
    pub fn run(&self) -> &Opened {
        &self.run
    }

    /// A job finished: report it, with the tail of its log if it has one. Never blocks.
    pub fn job(&self, mut row: JobRow, log: Option<JobLog>) {
        trim_tests(&mut row);
        // The thread is gone only after a refusal, which finish() reports.
        let _ = self.tx.send(Msg::Job(Box::new(row), log));
    }

    /// The run ended with `status`: send what is left and close the run on the conductor.
    ///
    /// # Errors
    /// Why the conductor does not have the whole run: it refused a report, or was
    /// unavailable for longer than [`Options::give_up`].
    pub fn finish(self, status: RunStatus) -> Result<Delivered, (Delivered, ClientError)> {
        let _ = self.tx.send(Msg::Finish(status));
        drop(self.tx);
        let (delivered, error) = self.thread.join().unwrap_or((
            Delivered {
                reports: 0,
                jobs: 0,
            },
            Some(ClientError::Unavailable {
                base: String::new(),
                what: "reporting".to_owned(),
                message: "the reporting thread failed".to_owned(),
            }),
        ));
        match error {
            None => Ok(delivered),
            Some(e) => Err((delivered, e)),
        }
    }
}

/// Keeps at most [`MAX_TESTS`] test results, failures first.
fn trim_tests(row: &mut JobRow) {
    if row.tests.len() > MAX_TESTS {
        row.tests
            .sort_by_key(|t| u8::from(matches!(t.status.as_str(), "passed" | "skipped")));
        row.tests.truncate(MAX_TESTS);
    }
}

/// The last lines of the log at `path` within `max` bytes (whole lines only, invalid
/// UTF-8 replaced), and the log's size.
#[must_use]
pub fn log_tail(job: &str, path: &Path, max: usize) -> Option<JobLog> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(max as u64);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(max));
    f.take(max as u64).read_to_end(&mut buf).ok()?;
    let text = if start > 0 {
        // Began inside a line: drop its end.
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => &buf[i + 1..],
            None => &buf[..0],
        }
    } else {
        &buf[..]
    };
    Some(JobLog {
        job: job.to_owned(),
        tail: String::from_utf8_lossy(text).into_owned(),
        bytes: i64::try_from(len).unwrap_or(i64::MAX),
    })
}

struct Sender {
    conductor: Conductor,
    path: String,
    options: Options,
    pending: VecDeque<(Box<JobRow>, Option<JobLog>)>,
    status: Option<RunStatus>,
    inflight: Option<Report>,
    seq: i64,
    delivered: Delivered,
}

impl Sender {
    fn new(conductor: Conductor, run: i64, options: Options) -> Sender {
        Sender {
            conductor,
            path: format!("/api/v1/runs/{run}/reports"),
            options,
            pending: VecDeque::new(),
            status: None,
            inflight: None,
            seq: 0,
            delivered: Delivered {
                reports: 0,
                jobs: 0,
            },
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Job(row, log) => self.pending.push_back((row, log)),
            Msg::Finish(s) => self.status = Some(s),
        }
    }

    /// The next report: as many pending jobs as fit, and the status once none is left.
    fn next_report(&mut self) -> Report {
        let mut jobs = Vec::new();
        let mut logs = Vec::new();
        let mut bytes = 64;
        while let Some((row, log)) = self.pending.front() {
            let size = serde_json::to_vec(row).map_or(0, |v| v.len())
                + log.as_ref().map_or(0, |l| l.tail.len() + l.job.len() + 64);
            if !jobs.is_empty()
                && (jobs.len() >= self.options.max_jobs || bytes + size > self.options.max_bytes)
            {
                break;
            }
            bytes += size;
            let Some((row, log)) = self.pending.pop_front() else {
                break;
            };
            jobs.push(*row);
            logs.extend(log);
        }
        self.seq += 1;
        Report {
            seq: self.seq,
            jobs,
            logs,
            status: if self.pending.is_empty() {
                self.status
            } else {
                None
            },
        }
    }

    fn work(mut self, rx: &mpsc::Receiver<Msg>) -> Outcome {
        let mut last_sent = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Duration::from_secs(1);
        let mut give_up_at: Option<Instant> = None;
        let mut open = true;
        let mut last_error: Option<ClientError> = None;
        loop {
            let now = Instant::now();
            let ready =
                self.inflight.is_some() || !self.pending.is_empty() || self.status.is_some();
            let mut wake = last_sent + self.options.heartbeat;
            if ready {
                wake = retry_at.unwrap_or(now);
            }
            if let Some(g) = give_up_at {
                wake = wake.min(g);
            }
            if open {
                match rx.recv_timeout(wake.saturating_duration_since(now)) {
                    Ok(m) => {
                        self.take(m);
                        while let Ok(m) = rx.try_recv() {
                            self.take(m);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        open = false;
                        // Dropped without finish(): the run did not end normally.
                        if self.status.is_none() {
                            self.status = Some(RunStatus::Interrupted);
                        }
                    }
                }
            } else {
                std::thread::sleep(wake.saturating_duration_since(now));
            }
            if self.status.is_some() && give_up_at.is_none() {
                give_up_at = Some(Instant::now() + self.options.give_up);
            }
            let now = Instant::now();
            if give_up_at.is_some_and(|g| now >= g) {
                let error = last_error.unwrap_or_else(|| ClientError::Unavailable {
                    base: self.conductor.base().to_owned(),
                    what: "reporting".to_owned(),
                    message: "gave up before every report was taken".to_owned(),
                });
                return (self.delivered, Some(error));
            }
            if retry_at.is_some_and(|r| now < r) {
                continue;
            }
            let heartbeat_due = now >= last_sent + self.options.heartbeat;
            if self.inflight.is_none() {
                if self.pending.is_empty() && self.status.is_none() && !heartbeat_due {
                    continue;
                }
                self.inflight = Some(self.next_report());
            }
            let Some(report) = self.inflight.as_ref() else {
                continue;
            };
            let what = format!("report {}", report.seq);
            match self.conductor.post(&self.path, &what, report) {
                Ok(_) => {
                    let closes = report.status.is_some();
                    self.delivered.reports += 1;
                    self.delivered.jobs += report.jobs.len();
                    self.inflight = None;
                    last_sent = Instant::now();
                    retry_at = None;
                    backoff = Duration::from_secs(1);
                    last_error = None;
                    if closes {
                        return (self.delivered, None);
                    }
                }
                Err(e) if e.is_transient() => {
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(self.options.max_backoff);
                    last_error = Some(e);
                }
                Err(e) => return (self.delivered, Some(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_store::TestRow;

    #[test]
    fn a_tail_holds_whole_lines_and_the_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("job.log");
        std::fs::write(&p, "first line\nsecond line\nthird\n").expect("write");
        let t = log_tail("build", &p, 15).expect("tail");
        assert_eq!((t.tail.as_str(), t.bytes), ("third\n", 29));
        let whole = log_tail("build", &p, 1_000).expect("tail");
        assert_eq!(whole.tail, "first line\nsecond line\nthird\n");
        assert!(log_tail("build", &dir.path().join("missing"), 10).is_none());
    }

    #[test]
    fn many_tests_keep_the_failures() {
        let t = |i: usize, status: &str| TestRow {
            attempt: 1,
            suite: "s".into(),
            classname: "c".into(),
            name: format!("t{i}"),
            status: status.into(),
            duration_ms: 1,
            message: None,
        };
        let mut row = JobRow {
            tests: (0..MAX_TESTS + 10)
                .map(|i| t(i, if i % 500 == 7 { "failed" } else { "passed" }))
                .collect(),
            ..JobRow::default()
        };
        trim_tests(&mut row);
        assert_eq!(row.tests.len(), MAX_TESTS);
        assert_eq!(
            row.tests.iter().filter(|t| t.status == "failed").count(),
            3,
            "t7, t507, t1007 kept"
        );
    }
}
