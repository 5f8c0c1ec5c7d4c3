//! The release train end to end with the real binaries: the example service at v1 runs in
//! `stage` and `prod`; a `feat:` commit is built and its gates reported to the conductor by
//! `maestro run --server`; `maestro release cut --promote` computes 1.1.0, is refused while
//! the gates are not known, then canaries the release to stage under real traffic, runs the
//! smoke suite and the golden-signal check, soaks — the conductor restarting meanwhile,
//! and the train resuming where it was — and does the same in prod. A second
//! test has the post-deploy verification fail in prod: the release rolls back in both
//! stages by itself.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Repo, agent, text};
use serde_json::Value;

/// Two environments of the example service and a train through them. `SMOKE` is the
/// smoke job's shell script.
fn config(smoke: &str) -> String {
    let env = |name: &str| {
        format!(
            r#"
[[environments]]
name = "{name}"
service = "hello-service"
listen = "127.0.0.1:0"
command = ["python3", "-m", "app.server", "{{port}}"]
workdir = "hello-service"
trust_keys = [".maestro/keys/dev.pub"]
env = {{ PYTHONDONTWRITEBYTECODE = "1" }}
deploy_env = ["HELLO_ERROR_RATE", "HELLO_LATENCY_MS"]

[environments.canary]
steps = [50, 100]
interval = "1s"
window = "1s"
progress_deadline = "2m"

[environments.canary.limits]
min_requests = 20
"#
        )
    };
    format!(
        r#"artifact_roots = ["."]
{}{}
[[trains]]
service = "hello-service"
stages = ["stage", "prod"]
soak = "4s"
verify = "2s"

[[trains.smoke]]
name = "greets"
command = ["sh", "-c", {smoke:?}]
timeout = "20s"
"#,
        env("stage"),
        env("prod")
    )
}

const GREETS: &str = r#"python3 -c "import os, urllib.request; urllib.request.urlopen(os.environ['MAESTRO_TARGET_URL'] + '/greet?name=Smoke', timeout=5).read()""#;

struct World {
    repo: Repo,
    base: String,
    token: String,
    server: Option<common::Killed>,
    stop: Arc<AtomicBool>,
    load: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_traffic();
    }
}

impl World {
    fn start(&mut self) {
        let (server, base, lines) = common::serve(&self.repo, &["--config", "conductor.toml"]);
        std::thread::spawn(move || for _ in lines {});
        self.server = Some(server);
        self.base = base;
    }

    /// Clients on both environments' proxies.
    fn traffic(&mut self) {
        for env in ["stage", "prod"] {
            let proxy = self.get(&format!("/api/v1/environments/{env}"))["listen"]
                .as_str()
                .expect("listens")
                .to_owned();
            let clients = common::traffic(&format!("http://{proxy}/greet?name=Dai"), 6, &self.stop);
            self.load.extend(clients);
        }
    }

    fn stop_traffic(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.load.drain(..) {
            let _ = t.join();
        }
        self.stop = Arc::new(AtomicBool::new(false));
    }

    /// The conductor stopped (SIGTERM) and started again on the same store; the proxies
    /// listen on new ports.
    fn restart(&mut self) {
        self.stop_traffic();
        drop(self.server.take());
        self.start();
        self.traffic();
    }

    /// `maestro release VERB 1.1.0 --service hello-service --server BASE` plus `extra`.
    fn release(&self, verb: &str, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec![
            "release",
            verb,
            "1.1.0",
            "--service",
            "hello-service",
            "--server",
            &self.base,
        ];
        args.extend_from_slice(extra);
        self.cli(&args)
    }

    /// Polls the release until `done` says so (two minutes at most).
    fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let t = std::time::Instant::now();
        loop {
            let r = self.get("/api/v1/releases/hello-service/1.1.0");
            if done(&r) {
                return r;
            }
            assert!(t.elapsed().as_secs() < 120, "never {what}: {r}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn cli(&self, args: &[&str]) -> (Option<i32>, String) {
        let out = self
            .repo
            .cmd(args)
            .env("MAESTRO_TOKEN", &self.token)
            .env("MAESTRO_REASON", "end-to-end test")
            .output()
            .expect("maestro");
        (out.status.code(), text(&out))
    }

    fn get(&self, path: &str) -> Value {
        let mut resp = agent()
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .expect("GET");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        resp.body_mut().read_json().expect("json")
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let mut resp = agent()
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body)
            .expect("POST");
        let v: Value = resp.body_mut().read_json().expect("json");
        assert!(resp.status().is_success(), "{path}: {v}");
        v
    }

    fn stable(&self, env: &str) -> String {
        self.get(&format!("/api/v1/environments/{env}"))["stable"]["version"]
            .as_str()
            .expect("a stable release")
            .to_owned()
    }
}

/// v1 built, committed, tagged `v1.0.0` and running in both stages under traffic; then a
/// `feat:` commit built (not yet reported to the conductor).
fn world(smoke: &str) -> World {
    world_with(smoke, &[])
}

/// As [`world`], v1 in prod started with `prod_set` (`KEY=VALUE` for its processes).
fn world_with(smoke: &str, prod_set: &[&str]) -> World {
    let repo = Repo::example();
    repo.git(&["init", "-q", "-b", "main"]);
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "feat: the greeter"]);
    repo.git(&["tag", "-a", "-m", "1.0.0", "v1.0.0"]);
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let v1 = repo.path().join("v1");
    std::fs::create_dir_all(&v1).expect("mkdir");
    for suffix in [
        "",
        ".sigstore.json",
        ".intoto.sigstore.json",
        ".sbom.sigstore.json",
    ] {
        std::fs::copy(
            repo.path()
                .join(format!("dist/hello-service.tar.gz{suffix}")),
            v1.join(format!("hello-service.tar.gz{suffix}")),
        )
        .expect("keep v1");
    }
    std::fs::write(repo.path().join("conductor.toml"), config(smoke)).expect("config");
    assert!(repo.run(&["audit", "key"]).status.success());
    let out = repo.run(&[
        "token",
        "create",
        "--name",
        "release-manager",
        "--actor",
        "user:rm",
        "--role",
        "operator",
        "--scope",
        "releases:read",
        "--scope",
        "releases:write",
        "--scope",
        "deployments:read",
        "--scope",
        "deployments:write",
        "--scope",
        "runs:read",
        "--scope",
        "runs:write",
        "--expires",
        "1h",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut w = World {
        repo,
        base: String::new(),
        token,
        server: None,
        stop: Arc::new(AtomicBool::new(false)),
        load: Vec::new(),
    };
    w.start();
    let v1_artifact = v1.join("hello-service.tar.gz").display().to_string();
    for env in ["stage", "prod"] {
        let mut args = vec![
            "deploy",
            env,
            &v1_artifact,
            "--server",
            &w.base,
            "--reason",
            "v1",
            "--wait",
        ];
        if env == "prod" {
            for kv in prod_set {
                args.extend(["--set", kv]);
            }
        }
        let (code, out) = w.cli(&args);
        assert_eq!(code, Some(0), "{out}");
    }
    w.traffic();
    let greeting = w.repo.path().join("app/greeting.py");
    let src = std::fs::read_to_string(&greeting).expect("source");
    std::fs::write(&greeting, format!("{src}\n# greetings in Welsh next\n")).expect("edit");
    w.repo.git(&[
        "commit",
        "-q",
        "-am",
        "feat(greet): prepare Welsh greetings",
    ]);
    w
}

/// A diagnostic's text with miette's line wrapping and gutter taken out.
fn unwrapped(out: &str) -> String {
    out.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn cut(w: &World, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "release",
        "cut",
        "--service",
        "hello-service",
        "--artifact",
        "dist/hello-service.tar.gz",
        "--server",
        &w.base,
        "--reason",
        "weekly release",
    ];
    args.extend_from_slice(extra);
    w.cli(&args)
}

#[test]
fn a_release_is_cut_canaried_to_stage_soaked_and_promoted_to_prod() {
    let mut w = world(GREETS);
    let v1 = w.stable("prod");

    // The commit's gates are unknown to the conductor: refused, and it says why.
    let (code, out) = cut(&w, &[]);
    assert_eq!(code, Some(2), "{out}");
    let flat = unwrapped(&out);
    assert!(
        flat.contains("422 gates_not_green: no pipeline run at commit"),
        "{out}"
    );
    // A refused cut keeps nothing: the artifact store has no copy of it.
    assert!(
        !w.repo.path().join(".maestro/artifacts/sha256").exists(),
        "a refused cut left a copy in the artifact store"
    );

    // The dry run: what the cut would send, nothing sent or tagged.
    let (code, out) = cut(&w, &["--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    let sent: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(sent["version"], "1.1.0", "{sent}");
    assert_eq!(
        sent["changed_paths"],
        serde_json::json!(["app/greeting.py"]),
        "{sent}"
    );
    assert!(
        sent["notes"]
            .as_str()
            .expect("notes")
            .contains("prepare Welsh greetings")
    );

    // A commit that is not on main is not released.
    w.repo.git(&["checkout", "-q", "-b", "topic"]);
    w.repo
        .git(&["commit", "-q", "--allow-empty", "-m", "feat: an experiment"]);
    let (code, out) = cut(&w, &["--dry-run"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is not on `main`"), "{out}");
    w.repo.git(&["checkout", "-q", "main"]);

    // Built and reported: the gates are green there.
    let (code, out) = w.cli(&["run", "--log-format", "plain", "--server", &w.base]);
    assert_eq!(code, Some(0), "{out}");
    // A newer run at the same commit, reported by hand with a red gate, does not decide:
    // the cut trusts the run the artifact's signed provenance names.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(w.repo.path())
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let forged = w.post(
        "/api/v1/runs",
        &serde_json::json!({"pipeline": "hello-service", "commit": head, "key": "forged"}),
    );
    let forged = forged["id"].as_i64().expect("id");
    w.post(
        &format!("/api/v1/runs/{forged}/reports"),
        &serde_json::json!({"seq": 1, "status": "failed", "jobs": [{
            "name": "unit", "gate": "unit", "status": "failed", "cache": "miss",
            "duration_ms": 1, "flaky": false, "attempts": [], "artifacts": [], "tests": []}]}),
    );
    let (code, out) = cut(&w, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("release hello-service 1.1.0 cut from"),
        "{out}"
    );
    assert!(out.contains("gate contract green"), "{out}");
    assert!(out.contains("tagged v1.1.0"), "{out}");
    let (code, out) = w.release("promote", &["--reason", "weekly release", "--detach"]);
    assert_eq!(code, Some(0), "{out}");

    // The conductor restarts while stage soaks: the train resumes where it was, by itself.
    let soaking = w.wait_for("soaking in stage", |r| {
        r["progress"]["stages"][0]["step"] == "soak"
    });
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    w.restart();
    let r = w.wait_for("released", |r| {
        matches!(
            r["status"].as_str(),
            Some("released" | "rolled_back" | "blocked")
        )
    });
    assert_eq!(r["status"], "released", "{r}");
    let started = soaking["progress"]["stages"][0]["soak_started_at_ms"]
        .as_u64()
        .expect("soak start");
    assert_eq!(
        r["progress"]["stages"][0]["soak_started_at_ms"].as_u64(),
        Some(started)
    );
    assert!(u128::from(started) < restarted_at);
    let events: Vec<&str> = r["progress"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for line in [
        "stage: canary promoted",
        "stage: post-deploy verification passed",
        "stage: soaked 4s",
        "prod: canary promoted",
        "prod: post-deploy verification passed",
        "released: every stage promoted, verified and soaked",
    ] {
        assert!(events.contains(&line), "`{line}` missing: {events:?}");
    }
    let v2 = r["digest"].as_str().expect("digest")["sha256:".len()..][..12].to_owned();
    assert_eq!(
        (w.stable("stage"), w.stable("prod")),
        (v2.clone(), v2.clone())
    );
    assert_ne!(v1, v2);
    for s in r["progress"]["stages"].as_array().expect("stages") {
        assert_eq!(s["step"], "done", "{s}");
        assert_eq!(s["smoke"][0]["passed"], true, "{s}");
        assert!(
            s["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .any(|c| c["during"] == "verify" && c["status"] == "pass"),
            "{s}"
        );
        assert_eq!(s["previous"].as_str(), Some(v1.as_str()), "{s}");
    }
    assert!(
        r["notes"]
            .as_str()
            .expect("notes")
            .contains("prepare Welsh greetings")
    );

    // The next build overwrites dist/ (a new artifact and new bundles at the same path):
    // the release keeps what it was cut from, and its evidence is built from that.
    let cut_from = w.repo.path().join("cut.tar.gz");
    std::fs::copy(w.repo.path().join("dist/hello-service.tar.gz"), &cut_from).expect("keep");
    let greeting = w.repo.path().join("app/greeting.py");
    let src = std::fs::read_to_string(&greeting).expect("source");
    std::fs::write(&greeting, format!("{src}\n# and in Cornish\n")).expect("edit");
    let (code, out) = w.cli(&["run", "--log-format", "plain"]);
    assert_eq!(code, Some(0), "{out}");
    assert_ne!(
        std::fs::read(&cut_from).expect("cut"),
        std::fs::read(w.repo.path().join("dist/hello-service.tar.gz")).expect("rebuilt"),
        "the second build made another artifact"
    );

    // The evidence bundle, downloaded and verified offline with the log's verifier key.
    let (code, out) = w.cli(&[
        "release",
        "evidence",
        "1.1.0",
        "--service",
        "hello-service",
        "--server",
        &w.base,
        "-o",
        "evidence.tar.gz",
    ]);
    assert_eq!(code, Some(0), "{out}");
    let vkey = String::from_utf8_lossy(&w.repo.run(&["audit", "key"]).stdout)
        .trim()
        .to_owned();
    let (code, out) = w.cli(&[
        "verify",
        "bundle",
        "evidence.tar.gz",
        "--key",
        &vkey,
        "--artifact",
        "cut.tar.gz",
    ]);
    assert_eq!(code, Some(0), "{out}");
    for line in [
        "hello-service 1.1.0 (released, commit",
        "ok   manifest signature",
        "ok   artifact evidence: signature, provenance and SBOM attestation of hello-service.tar.gz verify",
        "ok   sbom document: sbom.json is the signed CycloneDX document",
        "ok   gates: 7 gate(s) green",
        "ok   canary reports: 2 canary report(s)",
        "verified",
    ] {
        assert!(out.contains(line), "`{line}` missing:\n{out}");
    }
    let bundle = maestro_evidence::read(
        &std::fs::read(w.repo.path().join("evidence.tar.gz")).expect("bundle"),
    )
    .expect("read");
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&bundle.files["audit/entries.json"]).expect("entries");
    let actions: Vec<String> = entries
        .iter()
        .map(|e| {
            let body: Value =
                serde_json::from_str(e["body"].as_str().expect("body")).expect("entry");
            body["action"].as_str().expect("action").to_owned()
        })
        .collect();
    for a in [
        // The cut request itself (sensitive: started and its outcome), then the train's.
        "releases.create",
        "release.cut",
        "release.promoting",
        "releases.promote",
        "deploy.started",
        "deploy.promoted",
        "release.released",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} missing: {actions:?}");
    }
    assert!(bundle.files.contains_key("notes.md"));
    // The gates come with the test reports of the run they were cut from.
    let gates: Value = serde_json::from_slice(&bundle.files["gates.json"]).expect("gates");
    let tested: Vec<&str> = gates["run"]["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .filter(|j| j["tests"].as_array().is_some_and(|t| !t.is_empty()))
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert!(tested.iter().any(|n| n.starts_with("unit")), "{tested:?}");

    // Nothing new to release; the same version twice is refused; a released release
    // cannot be promoted again.
    let (code, out) = cut(&w, &["--no-tag"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("nothing to release: 0 commit(s) since v1.1.0"),
        "{out}"
    );
    w.repo.git(&["tag", "-d", "v1.1.0"]);
    let (code, out) = cut(&w, &["--no-tag"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("release_exists"), "{out}");
    let (code, out) = w.release("promote", &["--reason", "again"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("has ended (released)"), "{out}");
    let (code, status) = w.release("status", &[]);
    assert_eq!(code, Some(0), "{status}");
    assert!(status.contains("hello-service 1.1.0: released"), "{status}");
    assert!(status.contains("prod: done"), "{status}");

    // Rolled back by hand: both stages return to v1 at once.
    let (code, out) = w.release("rollback", &["--reason", "the Welsh is wrong"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("hello-service 1.1.0: rolled back"), "{out}");
    assert!(
        out.contains("why: rolled back by user:rm: the Welsh is wrong"),
        "{out}"
    );
    assert_eq!((w.stable("stage"), w.stable("prod")), (v1.clone(), v1));
    // Each environment the rollback switched is on the record.
    let (code, listed) = w.cli(&["audit", "list", "--action", "environment.stable_set"]);
    assert_eq!(code, Some(0), "{listed}");
    for env in ["environment:stage", "environment:prod"] {
        assert!(listed.contains(env), "{env} missing:\n{listed}");
    }
}

#[test]
fn a_failed_post_deploy_verification_rolls_the_release_back_everywhere() {
    // The smoke suite fails in prod only.
    let w = world(&format!(
        r#"test "$MAESTRO_ENVIRONMENT" != prod || {{ echo "prod says no"; exit 3; }}; {GREETS}"#
    ));
    let v1 = w.stable("prod");
    let (code, out) = w.cli(&["run", "--log-format", "plain", "--server", &w.base]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = cut(&w, &["--promote"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("stage: soaked"), "{out}");
    assert!(
        out.contains("prod: post-deploy verification failed: smoke `greets` failed (exit 3)"),
        "{out}"
    );
    let r = w.get("/api/v1/releases/hello-service/1.1.0");
    assert_eq!(r["status"], "rolled_back", "{r}");
    assert_eq!((w.stable("stage"), w.stable("prod")), (v1.clone(), v1));
    let prod = &r["progress"]["stages"][1];
    assert!(
        prod["smoke"][0]["output"]
            .as_str()
            .expect("output")
            .contains("prod says no"),
        "{prod}"
    );
    let events: Vec<&str> = r["progress"]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        events.iter().any(|e| e.starts_with("stage: back to")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.starts_with("prod: back to")),
        "{events:?}"
    );
}

#[test]
fn promotion_is_blocked_without_verified_evidence_or_with_an_unhealthy_stage_and_says_why() {
    // Prod's stable release fails half its requests: it is burning its error budget.
    let w = world_with(GREETS, &["HELLO_ERROR_RATE=0.5"]);
    let (code, out) = w.cli(&["run", "--log-format", "plain", "--server", &w.base]);
    assert_eq!(code, Some(0), "{out}");

    // An artifact without its signed SBOM is refused at the cut, naming what is missing.
    let bare = w.repo.path().join("bare");
    std::fs::create_dir_all(&bare).expect("mkdir");
    for suffix in ["", ".sigstore.json", ".intoto.sigstore.json"] {
        std::fs::copy(
            w.repo
                .path()
                .join(format!("dist/hello-service.tar.gz{suffix}")),
            bare.join(format!("hello-service.tar.gz{suffix}")),
        )
        .expect("copy");
    }
    let (code, out) = w.cli(&[
        "release",
        "cut",
        "--service",
        "hello-service",
        "--artifact",
        "bare/hello-service.tar.gz",
        "--server",
        &w.base,
        "--reason",
        "weekly",
        "--no-tag",
    ]);
    assert_eq!(code, Some(2), "{out}");
    let flat = unwrapped(&out);
    assert!(flat.contains("422 unverified_artifact"), "{out}");
    assert!(flat.contains("sbom"), "{out}");

    // With its evidence: stage goes through; prod is blocked before anything is deployed
    // there, and the block says why. Promoting again meets the same block.
    let (code, out) = cut(&w, &["--promote"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("stage: soaked"), "{out}");
    assert!(
        out.contains("blocked: prod: its SLO is not healthy before the promotion"),
        "{out}"
    );
    let r = w.get("/api/v1/releases/hello-service/1.1.0");
    assert_eq!(r["status"], "blocked", "{r}");
    assert!(
        r["progress"]["reason"]
            .as_str()
            .expect("why")
            .contains("error rate"),
        "{r}"
    );
    assert_eq!(r["progress"]["stages"][1]["step"], "pending", "{r}");
    assert!(r["progress"]["stages"][1]["deployment"].is_null(), "{r}");
    let (code, out) = w.release("promote", &["--reason", "try again"]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(
        w.get("/api/v1/releases/hello-service/1.1.0")["status"],
        "blocked"
    );
}
