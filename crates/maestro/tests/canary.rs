//! The demo's canary step with the real binaries: the example pipeline builds and signs
//! the service, `maestro serve` runs a `stage` environment from its configuration, the
//! first release becomes stable, a healthy second one is promoted step by step, a manual
//! rollback returns to the first, the second again with an injected error rate rolls back
//! by itself under real traffic — with audit entries — and an artifact without evidence is
//! refused.

mod common;

use common::{Repo, agent, text};
use serde_json::{Value, json};

const CONFIG: &str = r#"
artifact_roots = ["."]

[[environments]]
name = "stage"
service = "hello-service"
listen = "127.0.0.1:0"
command = ["python3", "-m", "app.server", "{port}"]
workdir = "hello-service"
trust_keys = [".maestro/keys/dev.pub"]
env = { PYTHONDONTWRITEBYTECODE = "1" }
deploy_env = ["HELLO_ERROR_RATE", "HELLO_LATENCY_MS"]

[environments.canary]
steps = [10, 50, 100]
interval = "1s"
window = "2s"
progress_deadline = "2m"

[environments.canary.limits]
min_requests = 30
"#;

fn call(
    method: &str,
    url: &str,
    token: &str,
    reason: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let a = agent();
    let mut resp = match (method, body) {
        ("GET", _) => a
            .get(url)
            .header("Authorization", format!("Bearer {token}"))
            .call(),
        (_, b) => {
            let mut req = a
                .post(url)
                .header("Authorization", format!("Bearer {token}"));
            if let Some(r) = reason {
                req = req.header("X-Maestro-Reason", r);
            }
            req.send_json(b.unwrap_or_else(|| json!({})))
        }
    }
    .expect("request");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn pipeline(repo: &Repo) -> String {
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    repo.path()
        .join("dist/hello-service.tar.gz")
        .display()
        .to_string()
}

#[test]
fn a_canary_with_an_injected_error_rate_rolls_back_by_itself() {
    let repo = Repo::example();
    let first = pipeline(&repo);
    // A second build of different sources: another artifact, another version.
    let greeting = repo.path().join("app/greeting.py");
    let src = std::fs::read_to_string(&greeting).expect("source");
    std::fs::write(&greeting, format!("{src}\n# v2\n")).expect("edit");
    let staged = repo.path().join("stage");
    std::fs::create_dir_all(&staged).expect("mkdir");
    let v1 = staged.join("v1.tar.gz");
    for suffix in [
        "",
        ".sigstore.json",
        ".intoto.sigstore.json",
        ".sbom.sigstore.json",
    ] {
        std::fs::copy(
            format!("{first}{suffix}"),
            format!("{}{suffix}", v1.display()),
        )
        .expect("keep v1");
    }
    let second = pipeline(&repo);
    std::fs::write(repo.path().join("conductor.toml"), CONFIG).expect("config");
    assert!(repo.run(&["audit", "key"]).status.success());
    let token = {
        let out = repo.run(&[
            "token",
            "create",
            "--name",
            "ops",
            "--actor",
            "user:ops",
            "--role",
            "operator",
            "--scope",
            "deployments:read",
            "--scope",
            "deployments:write",
            "--scope",
            "runs:read",
            "--expires",
            "1h",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (mut child, base, lines) = common::serve(&repo, &["--config", "conductor.toml"]);
    std::thread::spawn(move || for _ in lines {});

    // Deploying needs a reason; an artifact without evidence is refused.
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/environments/stage/deployments"),
        &token,
        None,
        Some(json!({"artifact": v1})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("reason_required")),
        "{body}"
    );
    let bare = staged.join("bare.tar.gz");
    std::fs::copy(&v1, &bare).expect("copy");
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/environments/stage/deployments"),
        &token,
        Some("try"),
        Some(json!({"artifact": bare})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unverified_artifact")),
        "{body}"
    );

    // A path outside the conductor's artifact roots: refused the same way whether the
    // file exists or not, and a variable the environment does not allow is refused too.
    for outside in ["/etc/passwd", "/nonexistent/hello.tar.gz"] {
        let (status, body) = call(
            "POST",
            &format!("{base}/api/v1/environments/stage/deployments"),
            &token,
            Some("try"),
            Some(json!({"artifact": outside})),
        );
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("is not under the conductor's artifact roots")),
            "{body}"
        );
    }
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/environments/stage/deployments"),
        &token,
        Some("try"),
        Some(json!({"artifact": v1, "env": {"LD_PRELOAD": "/tmp/evil.so"}})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("env_not_allowed")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("LD_PRELOAD")),
        "{body}"
    );

    // The first release is stable at once.
    let (status, body) = call(
        "POST",
        &format!("{base}/api/v1/environments/stage/deployments"),
        &token,
        Some("first release of the greeter"),
        Some(json!({"artifact": v1})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, env) = call(
        "GET",
        &format!("{base}/api/v1/environments/stage"),
        &token,
        None,
        None,
    );
    assert_eq!(status, 200, "{env}");
    let proxy = env["listen"]
        .as_str()
        .expect("the proxy listens")
        .to_owned();
    assert_eq!(env["stable"]["version"], body["version"]);

    // Real traffic through the proxy.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = common::traffic(&format!("http://{proxy}/greet?name=Dai"), 12, &stop);

    // A healthy second release goes through every step; then back to the first by hand.
    let cli = |args: &[&str]| {
        let out = repo
            .cmd(args)
            .env("MAESTRO_TOKEN", &token)
            .output()
            .expect("maestro");
        (out.status.code(), text(&out))
    };
    let deploy = |reason: &str, extra: &[&str]| {
        let mut args = vec![
            "deploy", "stage", &second, "--server", &base, "--reason", reason, "--wait",
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let (code, shown) = deploy("greetings in Welsh", &[]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("100.00% step: step 3 of 3: 100%") && shown.trim_end().ends_with("promoted"),
        "{shown}"
    );
    let (_, env) = call(
        "GET",
        &format!("{base}/api/v1/environments/stage"),
        &token,
        None,
        None,
    );
    let v2 = env["stable"]["version"]
        .as_str()
        .expect("stable")
        .to_owned();
    let (code, shown) = cli(&[
        "rollback",
        "stage",
        "--server",
        &base,
        "--reason",
        "the Welsh is wrong",
    ]);
    assert_eq!(code, Some(0), "{shown}");
    let (_, env) = call(
        "GET",
        &format!("{base}/api/v1/environments/stage"),
        &token,
        None,
        None,
    );
    let v1 = env["stable"]["version"]
        .as_str()
        .expect("stable")
        .to_owned();
    assert!(shown.contains(&format!("stage: {v2} → {v1}")), "{shown}");
    assert_ne!(v1, v2);
    let (code, shown) = cli(&[
        "rollback",
        "stage",
        "--server",
        &base,
        "--reason",
        "again",
        "--to",
        "0123456789ab",
    ]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("nothing_to_roll_back_to"), "{shown}");

    // The console steers a canary in progress as the signed-in user: pause, then abort,
    // each with its reason; a form from another site is refused.
    let (status, created) = call(
        "POST",
        &format!("{base}/api/v1/environments/stage/deployments"),
        &token,
        Some("the console steers this one"),
        Some(json!({"artifact": second})),
    );
    assert_eq!(status, 201, "{created}");
    let steered = created["id"].as_i64().expect("id");
    // The console's session, opened by signing in (the cookie is a session id).
    let session = {
        let no_redirects: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let resp = no_redirects
            .post(&format!("{base}/console/login"))
            .send_form([("token", token.as_str())])
            .expect("sign in");
        resp.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_owned()
    };
    let form = |action: &str, reason: &str, origin: &str| {
        let no_redirects: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let mut resp = no_redirects
            .post(&format!("{base}/console/canaries/{steered}"))
            .header("Cookie", &session)
            .header("Origin", origin)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(format!("action={action}&reason={reason}"))
            .expect("console");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, answer) = form("abort", "csrf", "http://evil.example");
    assert_eq!(status, 403, "{answer}");
    let page = |path: &str| {
        agent()
            .get(&format!("{base}{path}"))
            .header("Cookie", &session)
            .call()
            .expect("console")
            .body_mut()
            .read_to_string()
            .unwrap_or_default()
    };
    let report_page = || page(&format!("/console/canaries/{steered}"));
    let (status, answer) = form("pause", "looking+at+the+graphs", &base);
    assert_eq!(status, 303, "back to the report: {answer}");
    let shown = report_page();
    assert!(shown.contains("value=\"resume\""), "paused: {shown}");
    let (status, answer) = form("abort", "not+today", &base);
    assert_eq!(status, 303, "{answer}");
    assert!(
        !report_page().contains("form id=\"control\""),
        "ended: no more buttons"
    );
    let (_, report) = call(
        "GET",
        &format!("{base}/api/v1/deployments/{steered}"),
        &token,
        None,
        None,
    );
    assert_eq!(report["status"], "aborted", "{report}");
    assert!(
        report["canary"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("user:ops: not today")),
        "{report}"
    );

    // A deploy from a pipeline run is linked to it (`--run`, MAESTRO_CONDUCTOR_RUN in the
    // jobs of `maestro run --server`); a run that is not there is refused.
    let (_, runs) = call("GET", &format!("{base}/api/v1/runs"), &token, None, None);
    let run = runs[0]["id"].as_i64().expect("the pipeline's last run");
    let (code, shown) = cli(&[
        "deploy", "stage", &second, "--server", &base, "--reason", "x", "--run", "999999",
    ]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(shown.contains("unknown_run"), "{shown}");

    // The second release again, now with a fault: it rolls back by itself.
    let run_text = run.to_string();
    let (code, shown) = deploy(
        "greetings in Welsh, again",
        &["--set", "HELLO_ERROR_RATE=0.3", "--run", &run_text],
    );
    assert_eq!(code, Some(1), "a rollback fails the command:\n{shown}");
    assert!(shown.contains("10.00% started"), "{shown}");
    assert!(shown.contains("rolled back: "), "{shown}");
    let id: i64 = shown
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.trim_end_matches(':').parse().ok())
        .expect("deployment N: in the first line");
    let (_, report) = call(
        "GET",
        &format!("{base}/api/v1/deployments/{id}"),
        &token,
        None,
        None,
    );
    let id = id.to_string();
    let (code, shown) = cli(&["canary", "show", &id, "--server", &base]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("rolled_back (by user:ops: greetings in Welsh, again)"),
        "{shown}"
    );
    let (code, shown) = cli(&[
        "canary", "resume", &id, "--server", &base, "--reason", "again",
    ]);
    assert_eq!(code, Some(2), "an ended canary takes no command: {shown}");
    assert!(shown.contains("not_in_progress"), "{shown}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let _ = l.join();
    }
    assert_eq!(report["status"], "rolled_back", "{report}");
    assert_eq!(report["run_id"], run, "{report}");
    // The run's page links to the canary's report, and the report back to the run.
    let run_page = page(&format!("/console/runs/{run}"));
    assert!(
        run_page.contains(&format!("href=\"/console/canaries/{id}\"")),
        "{run_page}"
    );
    let canary_page = page(&format!("/console/canaries/{id}"));
    assert!(
        canary_page.contains(&format!("href=\"/console/runs/{run}\"")),
        "{canary_page}"
    );
    let reason = report["canary"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("error rate") || reason.contains("5xx spike"),
        "{reason}"
    );
    let (_, env) = call(
        "GET",
        &format!("{base}/api/v1/environments/stage"),
        &token,
        None,
        None,
    );
    assert_ne!(
        env["stable"]["version"], report["version"],
        "stable is still the first release"
    );

    // Stop the conductor (SIGTERM: it stops the environment's processes), then read the log.
    let pid = child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let stopped = child.0.wait().expect("the conductor stops");
    assert!(stopped.success(), "a graceful stop: {stopped}");
    let list = repo.run(&["audit", "list", "--limit", "50"]);
    let shown = text(&list);
    for want in [
        "deployments.create",
        "deployments.control",
        "deploy.started",
        "deploy.promoted",
        "deploy.rolled_back",
    ] {
        assert!(shown.contains(want), "{want} in:\n{shown}");
    }
    assert!(repo.run(&["audit", "verify"]).status.success());
}
