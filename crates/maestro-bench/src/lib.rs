//! What the benchmarks share: wrk on loopback, closed-loop (saturating) or paced (a Lua
//! script draws exponential gaps per connection, so the offered rate has no synchronized
//! bursts), its figures parsed, and medians over rounds.

use std::path::PathBuf;
use std::process::Command;

/// A benchmark's command line: `--name N` numbers and `--name` switches (cargo's own
/// `--bench` is ignored).
#[derive(Debug, Clone)]
pub struct Flags {
    args: Vec<String>,
}

impl Flags {
    /// The process's arguments.
    #[must_use]
    pub fn from_env() -> Flags {
        Flags {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// The number after `name`, or `default`.
    ///
    /// # Panics
    /// When the value is not a number: a benchmark run with a typo should stop at once.
    #[must_use]
    pub fn num(&self, name: &str, default: u32) -> u32 {
        match self.args.iter().position(|a| a == name) {
            None => default,
            Some(i) => self
                .args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number")),
        }
    }

    /// Whether the switch `name` is given.
    #[must_use]
    pub fn on(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }
}

/// The load settings every wrk benchmark takes: `--duration S`, `--connections N`,
/// `--rounds N`, `--rate R` (the paced load's offered requests/s).
#[derive(Debug, Clone, Copy)]
pub struct LoadArgs {
    pub duration: u32,
    pub connections: u32,
    pub rounds: usize,
    pub rate: u32,
}

impl LoadArgs {
    /// From the command line, with these defaults (3 rounds).
    #[must_use]
    pub fn parse(f: &Flags, duration: u32, connections: u32, rate: u32) -> LoadArgs {
        LoadArgs {
            duration: f.num("--duration", duration),
            connections: f.num("--connections", connections),
            rounds: f.num("--rounds", 3).max(1) as usize,
            rate: f.num("--rate", rate).max(1),
        }
    }
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
}

/// How to run wrk.
#[derive(Debug, Clone)]
pub struct Wrk {
    pub threads: u32,
    pub connections: u32,
    pub duration_s: u32,
    /// Extra request headers (`Name: value`).
    pub headers: Vec<String>,
}

/// wrk paces each connection with this script: exponentially distributed gaps with a mean
/// of `connections ÷ rate`, drawn independently per connection, so the offered load is
/// `rate` requests/s without the synchronized bursts of a fixed per-worker ticker.
const PACED_LUA: &str = r#"
local n = 0
function setup(thread)
  n = n + 1
  thread:set("seed", n)
end
function init(args)
  math.randomseed(seed * 7919)
  mean_ms = tonumber(args[1])
end
function delay()
  return math.floor(-math.log(1 - math.random()) * mean_ms)
end
"#;

/// Whether wrk is installed.
#[must_use]
pub fn wrk_installed() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// A duration as wrk prints it, in milliseconds.
#[must_use]
pub fn ms(v: &str) -> f64 {
    let v = v.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

impl Wrk {
    /// A closed-loop (saturating) run against `url`.
    #[must_use]
    pub fn saturate(&self, url: &str) -> Load {
        self.run(&[url.to_owned()])
    }

    /// A closed-loop run sending what `script` says (a POST with a body, say).
    #[must_use]
    pub fn scripted(&self, url: &str, script: &Script) -> Load {
        self.run(&[
            "-s".to_owned(),
            script.path.display().to_string(),
            url.to_owned(),
        ])
    }

    /// `rate` requests/s in all, spread over the connections.
    #[must_use]
    pub fn paced(&self, url: &str, rate: u32, script: &Script) -> Load {
        let mean_ms = f64::from(self.connections) * 1000.0 / f64::from(rate.max(1));
        self.run(&[
            "-s".to_owned(),
            script.path.display().to_string(),
            url.to_owned(),
            "--".to_owned(),
            format!("{mean_ms:.3}"),
        ])
    }

    fn run(&self, tail: &[String]) -> Load {
        let mut cmd = Command::new("wrk");
        cmd.args([
            format!("-t{}", self.threads),
            format!("-c{}", self.connections),
            format!("-d{}s", self.duration_s),
            "--latency".to_owned(),
        ]);
        for h in &self.headers {
            cmd.args(["-H", h]);
        }
        let out = cmd
            .args(tail)
            .output()
            .expect("wrk runs (apt-get install wrk)");
        parse(&String::from_utf8_lossy(&out.stdout))
    }
}

/// wrk's report, parsed.
#[must_use]
pub fn parse(text: &str) -> Load {
    let mut l = Load::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            l.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            l.p50_ms = ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            l.p99_ms = ms(v);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            l.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if t.starts_with("Socket errors:") {
            l.errors += t
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    l
}

/// The pacing script, written to a temporary file for wrk's `-s`.
#[derive(Debug)]
pub struct Script {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Script {
    /// Writes the script.
    ///
    /// # Panics
    /// When no temporary directory can be written (a benchmark has nothing to do then).
    #[must_use]
    pub fn paced() -> Script {
        Script::with(PACED_LUA)
    }

    /// POSTs `body` as JSON on every request: back to back (for [`Wrk::scripted`]), or
    /// `paced` like [`Script::paced`] (for [`Wrk::paced`]).
    ///
    /// # Panics
    /// As [`Script::paced`].
    #[must_use]
    pub fn post_json(body: &str, paced: bool) -> Script {
        let quoted = body.replace('\\', "\\\\").replace('"', "\\\"");
        Script::with(&format!(
            "{}\nwrk.method = \"POST\"\nwrk.body = \"{quoted}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
            if paced { PACED_LUA } else { "" }
        ))
    }

    fn with(lua: &str) -> Script {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("script.lua");
        std::fs::write(&path, lua).expect("write the wrk script");
        Script { _dir: dir, path }
    }
}

/// The median (NaN of nothing).
#[must_use]
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The median of each figure over rounds; errors summed.
#[must_use]
pub fn middle(loads: &[Load]) -> Load {
    Load {
        rps: median(loads.iter().map(|l| l.rps).collect()),
        p50_ms: median(loads.iter().map(|l| l.p50_ms).collect()),
        p99_ms: median(loads.iter().map(|l| l.p99_ms).collect()),
        errors: loads.iter().map(|l| l.errors).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let l = parse(
            "  Latency Distribution\n     50%  812.00us\n     75%    1.20ms\n     99%    2.50ms\n  1000 requests in 1.00s\n  Non-2xx or 3xx responses: 3\nRequests/sec:   9876.54\n",
        );
        assert!((l.p50_ms - 0.812).abs() < 1e-9);
        assert!((l.p99_ms - 2.5).abs() < 1e-9);
        assert!((l.rps - 9876.54).abs() < 1e-9);
        assert_eq!(l.errors, 3);
        assert!((ms("1.5s") - 1500.0).abs() < 1e-9);
        assert!((median(vec![3.0, 1.0, 2.0]) - 2.0).abs() < 1e-9);
    }
}
