//! The process driver: a release runs as a local process (its own process group) on a
//! loopback port, and counts as up once its health path answers 200.
//!
//! The process gets a clean environment — `PATH`, `HOME`, `LANG`, `TZ`, the service's
//! configured variables, the release's (failure injection, say) and `PORT` — so the
//! conductor's own secrets never reach a service. Its output goes to a log file per
//! instance. Stopping sends SIGTERM to the group, then SIGKILL after the grace period.
//! Every running instance's process group is listed in a pid file, so a conductor that
//! was killed can stop what it left behind before it starts again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How a service's releases run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The program and its arguments; `{port}` in any of them becomes the port.
    pub command: Vec<String>,
    /// Where it runs, relative to the release's directory (`.` when unset).
    pub workdir: Option<PathBuf>,
    /// Answers 200 when the instance is ready (`/healthz`).
    pub health: String,
    pub ready_timeout: Duration,
    /// SIGTERM, then SIGKILL after this.
    pub stop_grace: Duration,
    /// Variables every release gets.
    pub env: BTreeMap<String, String>,
}

/// A problem starting or stopping a release.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot start `{command}` in {dir}: {source}")]
    Spawn {
        command: String,
        dir: String,
        source: std::io::Error,
    },
    #[error(
        "release {version} exited before it was ready ({status}); the end of its log ({log}):\n{tail}"
    )]
    Exited {
        version: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error(
        "release {version} did not answer 200 on {health} within {seconds} s (last: {last}); its log: {log}"
    )]
    NotReady {
        version: String,
        health: String,
        seconds: u64,
        last: String,
        log: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A running release.
#[derive(Debug)]
pub struct Instance {
    pub version: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pgid: u32,
    child: tokio::process::Child,
}

impl Instance {
    /// The process group id (the pid of its leader).
    #[must_use]
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

/// Starts and stops releases of one service; `state_dir` keeps the logs and the pid file.
#[derive(Debug, Clone)]
pub struct ProcessDriver {
    spec: ServiceSpec,
    state_dir: PathBuf,
    /// Serialises the pid file's read-modify-write between concurrent starts and stops.
    pid_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

const KEEP_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

impl ProcessDriver {
    #[must_use]
    pub fn new(spec: ServiceSpec, state_dir: &Path) -> ProcessDriver {
        ProcessDriver {
            spec,
            state_dir: state_dir.to_owned(),
            pid_lock: std::sync::Arc::default(),
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.state_dir.join("instances.pid")
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
        move |source| DriverError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Stops every process group a previous conductor left running (listed in the pid
    /// file), then empties the list. Returns how many were signalled.
    ///
    /// # Errors
    /// When the pid file cannot be read or rewritten.
    pub async fn reap_leftovers(&self) -> Result<usize, DriverError> {
        let file = self.pid_file();
        let _held = self.pid_lock.lock().await;
        let text = match tokio::fs::read_to_string(&file).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Self::io(&file)(e)),
        };
        let groups: Vec<i32> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .filter(|&g: &i32| g > 1)
            .collect();
        for &g in &groups {
            let _ = killpg(Pid::from_raw(g), Signal::SIGTERM);
        }
        let deadline = Instant::now() + self.spec.stop_grace;
        while Instant::now() < deadline
            && groups
                .iter()
                .any(|&g| killpg(Pid::from_raw(g), None).is_ok())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for &g in &groups {
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
        tokio::fs::write(&file, b"")
            .await
            .map_err(Self::io(&file))?;
        Ok(groups.len())
    }

    async fn remember(&self, pgid: u32, version: &str, add: bool) -> Result<(), DriverError> {
        let _held = self.pid_lock.lock().await;
        let file = self.pid_file();
        let old = tokio::fs::read_to_string(&file).await.unwrap_or_default();
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| l.split_whitespace().next() != Some(&pgid.to_string()))
            .map(str::to_owned)
            .collect();
        if add {
            lines.push(format!("{pgid} {version}"));
        }
        let tmp = file.with_extension("pid.tmp");
        tokio::fs::write(&tmp, lines.join("\n") + "\n")
            .await
            .map_err(Self::io(&tmp))?;
        tokio::fs::rename(&tmp, &file)
            .await
            .map_err(Self::io(&file))
    }

    /// Starts `version` from `release_dir` with `extra_env` on a free loopback port and
    /// waits until its health path answers 200.
    ///
    /// # Errors
    /// When it cannot start, exits, or is not ready in time (the log's end is in the
    /// message); it is stopped then.
    pub async fn start(
        &self,
        version: &str,
        release_dir: &Path,
        extra_env: &BTreeMap<String, String>,
    ) -> Result<Instance, DriverError> {
        let logs = self.state_dir.join("logs");
        tokio::fs::create_dir_all(&logs)
            .await
            .map_err(Self::io(&logs))?;
        let port = free_port().map_err(Self::io(Path::new("127.0.0.1:0")))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = logs.join(format!("{version}-{port}.log"));
        let out = std::fs::File::create(&log).map_err(Self::io(&log))?;
        let err = out.try_clone().map_err(Self::io(&log))?;
        let dir = match &self.spec.workdir {
            Some(w) => release_dir.join(w),
            None => release_dir.to_owned(),
        };
        let argv: Vec<String> = self
            .spec
            .command
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(DriverError::Spawn {
                command: String::new(),
                dir: dir.display().to_string(),
                source: std::io::Error::other("the service has no command"),
            });
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(&dir)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        for k in KEEP_ENV {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(&self.spec.env)
            .envs(extra_env)
            .env("PORT", port.to_string());
        let child = cmd.spawn().map_err(|source| DriverError::Spawn {
            command: argv.join(" "),
            dir: dir.display().to_string(),
            source,
        })?;
        let pgid = child.id().unwrap_or(0);
        let mut inst = Instance {
            version: version.to_owned(),
            addr,
            log,
            pgid,
            child,
        };
        self.remember(pgid, version, true).await?;
        match self.wait_ready(&mut inst).await {
            Ok(()) => Ok(inst),
            Err(e) => {
                self.stop(inst).await;
                Err(e)
            }
        }
    }

    async fn wait_ready(&self, inst: &mut Instance) -> Result<(), DriverError> {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let url: hyper::Uri = format!("http://{}{}", inst.addr, self.spec.health)
            .parse()
            .map_err(|e| DriverError::NotReady {
                version: inst.version.clone(),
                health: self.spec.health.clone(),
                seconds: 0,
                last: format!("not a path: {e}"),
                log: inst.log.display().to_string(),
            })?;
        let deadline = Instant::now() + self.spec.ready_timeout;
        loop {
            if let Ok(Some(status)) = inst.child.try_wait() {
                return Err(DriverError::Exited {
                    version: inst.version.clone(),
                    status: status.to_string(),
                    log: inst.log.display().to_string(),
                    tail: tail(&inst.log, 20),
                });
            }
            let last =
                match tokio::time::timeout(Duration::from_secs(1), client.get(url.clone())).await {
                    Ok(Ok(resp)) if resp.status() == 200 => return Ok(()),
                    Ok(Ok(resp)) => format!("HTTP {}", resp.status().as_u16()),
                    Ok(Err(e)) => format!("{e}"),
                    Err(_) => "no answer within 1 s".to_owned(),
                };
            if Instant::now() >= deadline {
                return Err(DriverError::NotReady {
                    version: inst.version.clone(),
                    health: self.spec.health.clone(),
                    seconds: self.spec.ready_timeout.as_secs(),
                    last,
                    log: inst.log.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops an instance: SIGTERM to its group, SIGKILL after the grace period.
    pub async fn stop(&self, mut inst: Instance) {
        let g = Pid::from_raw(i32::try_from(inst.pgid).unwrap_or(0));
        if g.as_raw() > 1 {
            let _ = killpg(g, Signal::SIGTERM);
            if tokio::time::timeout(self.spec.stop_grace, inst.child.wait())
                .await
                .is_err()
            {
                let _ = killpg(g, Signal::SIGKILL);
                let _ = inst.child.wait().await;
            }
            // Whatever it started in its group goes too.
            let _ = killpg(g, Signal::SIGKILL);
        }
        let _ = self.remember(inst.pgid, &inst.version, false).await;
    }
}

/// A free loopback port (bound, then released for the service to take).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
