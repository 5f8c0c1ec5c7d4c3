//! Helpers for end-to-end tests: a fixture repository in a temporary directory and the
//! real `maestro` binary.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::allow_attributes,
    reason = "shared by several test binaries"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Repo {
    pub dir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_maestro")
}

impl Repo {
    pub fn new() -> Repo {
        Repo {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A copy of `examples/hello-service`.
    pub fn example() -> Repo {
        let repo = Repo::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-service");
        copy_dir(&src, repo.path());
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path().join(rel)).expect("read")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.path())
            .env_remove("MAESTRO_HOME")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITHUB_EVENT_PATH")
            .env_remove("MAESTRO_LABELS")
            .env_remove("MAESTRO_MIGRATE_DATABASE")
            .env_remove("MAESTRO_DATABASE_URL")
            .env_remove("MAESTRO_AUDIT_KEY")
            .env_remove("MAESTRO_AUDIT_ORIGIN")
            .env_remove("MAESTRO_AUDIT_FAILPOINT")
            .env_remove("MAESTRO_REASON")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_ACTOR")
            .env_remove("TRACEPARENT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_EXPORTER_OTLP_HEADERS")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("MAESTRO_CONFIG")
            .env_remove("MAESTRO_LISTEN")
            .env_remove("MAESTRO_MODE")
            .env_remove("MAESTRO_SERVER")
            .env_remove("MAESTRO_TOKEN")
            .env_remove("MAESTRO_SERVER_AUDIENCE")
            .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
            .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
            .env("NO_COLOR", "1");
        c
    }

    /// Runs git in the repository as a fixed test identity; panics on failure.
    pub fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn maestro")
    }

    /// `maestro run --log-format plain` plus `args`; returns (exit code, stderr+stdout).
    /// With a reason for the audit log (publish and deploy jobs need one; tests of the
    /// refusal use `cmd`).
    pub fn maestro_run(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["run", "--log-format", "plain"];
        all.extend_from_slice(args);
        let out = self
            .cmd(&all)
            .env("MAESTRO_REASON", "end-to-end test")
            .output()
            .expect("spawn maestro");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "maestro {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json output")
    }

    /// The jobs of the latest run, by name.
    pub fn latest_jobs(&self) -> serde_json::Map<String, serde_json::Value> {
        let run = self.json(&["runs", "show", "--json"]);
        run["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| (j["name"].as_str().expect("name").to_owned(), j.clone()))
            .collect()
    }
}

/// Standard output then standard error of a finished command, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("mkdir");
    for e in fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name();
        if name == ".maestro" || name == "reports" || name == "dist" || name == "__pycache__" {
            continue;
        }
        let to: PathBuf = dst.join(&name);
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// A child process killed (and reaped) if the test ends before it stops.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    /// SIGTERM first (a conductor stops the processes of its environments then), SIGKILL
    /// if it is still there after 10 s: a failing test leaves nothing running.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(10) {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `maestro serve --listen 127.0.0.1:0` plus `args` in `repo`: the process, its base URL,
/// and its JSON log lines after the first ("conductor listening").
pub fn serve(
    repo: &Repo,
    args: &[&str],
) -> (
    Killed,
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead as _;
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = Killed(
        repo.cmd(&all)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn maestro serve"),
    );
    let mut lines = std::io::BufReader::new(child.0.stderr.take().expect("stderr")).lines();
    let first: serde_json::Value =
        serde_json::from_str(&lines.next().expect("a log line").expect("read")).expect("JSON log");
    assert_eq!(first["msg"], "conductor listening", "{first}");
    let base = format!("http://{}", first["addr"].as_str().expect("addr"));
    (child, base, lines)
}

/// An HTTP client for the tests: statuses are values, not errors; 30 s at most.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into()
}

/// `clients` threads each requesting `url` every 15 ms until `stop` is set.
pub fn traffic(
    url: &str,
    clients: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (stop, url) = (std::sync::Arc::clone(stop), url.to_owned());
            std::thread::spawn(move || {
                let a = agent();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = a
                        .get(&url)
                        .call()
                        .map(|mut r| r.body_mut().read_to_string());
                    std::thread::sleep(std::time::Duration::from_millis(15));
                }
            })
        })
        .collect()
}
