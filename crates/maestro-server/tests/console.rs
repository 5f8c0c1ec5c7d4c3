//! The console in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver): sign in with a token, open a run, see the failing job and its
//! log. And over plain HTTP: sessions, refusals and headers.
//!
//! Without chromedriver the browser test fails under `CI=true`; elsewhere it says it is
//! skipped (install `chromium chromium-driver`, as `.ci/run` does).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Server};
use maestro_store::{Batch, JobRow, NewRun, RunStatus};
use serde_json::{Value, json};

/// A run whose `unit` job failed, with its log on disk.
fn failing_run(s: &Server) -> i64 {
    let mut store = s.store();
    let run = store
        .begin_run(&NewRun {
            pipeline: "checkout".into(),
            commit: Some("9f1c2ab34de5".into()),
            branch: Some("main".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            ..NewRun::default()
        })
        .expect("run");
    let logs = std::path::Path::new(&s.location)
        .parent()
        .expect("dir")
        .join(format!("runs/{run}/logs"));
    std::fs::create_dir_all(&logs).expect("mkdir");
    let log = logs.join("unit.log");
    std::fs::write(
        &log,
        "running 3 tests\ntest total ... FAILED\nassertion failed: cart.total() == 30 <script>alert(1)</script>\n",
    )
    .expect("log");
    let jobs = vec![
        JobRow {
            name: "lint".into(),
            gate: Some("fast".into()),
            status: "succeeded".into(),
            cache: "hit".into(),
            ..JobRow::default()
        },
        JobRow {
            name: "unit".into(),
            gate: Some("fast".into()),
            status: "failed".into(),
            cache: "miss".into(),
            exit_code: Some(101),
            duration_ms: 2300,
            log_path: Some(log.display().to_string()),
            ..JobRow::default()
        },
    ];
    store
        .record(
            run,
            &Batch {
                jobs,
                ..Batch::default()
            },
        )
        .expect("record");
    store
        .finish_run(run, RunStatus::Failed, maestro_server::now_ms())
        .expect("finish");
    run
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

#[test]
fn pages_need_a_session_and_carry_hardened_headers() {
    let s = Server::start(&Backend::Sqlite, None);
    let run = failing_run(&s);
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    let a = agent();
    for p in [
        format!("/console/runs/{run}"),
        "/console/runs".to_owned(),
        "/console/audit".to_owned(),
        "/console/releases".to_owned(),
    ] {
        let resp = a.get(format!("{}{p}", s.base)).call().expect("request");
        assert_eq!(resp.status().as_u16(), 303, "{p} without a session");
        assert_eq!(
            resp.headers().get("location").and_then(|v| v.to_str().ok()),
            Some("/console/login")
        );
    }
    let mut resp = a
        .post(format!("{}/console/login", s.base))
        .send_form([("token", "mst_wrong")])
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let body = resp.body_mut().read_to_string().expect("body");
    assert!(body.contains("not known to this conductor"), "{body}");

    let resp = a
        .post(format!("{}/console/login", s.base))
        .send_form([("token", viewer.as_str())])
        .expect("request");
    assert_eq!(resp.status().as_u16(), 303);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().expect("pair").to_owned();
    // The cookie is a session id, never the token.
    assert!(
        !cookie.contains(viewer.as_str()) && !cookie.contains("mst_"),
        "{cookie}"
    );
    // The run page names the run's tenant and trace.
    let mut resp = a
        .get(format!("{}/console/runs/{run}", s.base))
        .header("Cookie", &session)
        .call()
        .expect("request");
    let body = resp.body_mut().read_to_string().expect("body");
    assert!(
        body.contains("4bf92f3577b34da6a3ce929d0e0e4736") && body.contains("<dd>default</dd>"),
        "{body}"
    );
    let mut resp = a
        .get(format!("{}/console/runs/{run}/jobs/unit", s.base))
        .header("Cookie", &session)
        .call()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let body = resp.body_mut().read_to_string().expect("body");
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !body.contains("<script>"),
        "a log line is escaped, never markup"
    );
    let resp = a
        .get(format!("{}/console/runs/424242", s.base))
        .header("Cookie", &session)
        .call()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 404);

    // Another tenant's admin sees neither the run nor the log.
    let (outsider, _) = s.token_in("globex", &["admin"], &["*"], 60_000);
    let resp = a
        .get(format!("{}/console/runs/{run}/jobs/unit", s.base))
        .header("Cookie", s.console_session(&outsider))
        .call()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 404);
    // An actor without a role is refused the list.
    let (nobody, _) = s.token(&[], &["*"]);
    let resp = a
        .get(format!("{}/console/runs", s.base))
        .header("Cookie", s.console_session(&nobody))
        .call()
        .expect("request");
    assert_eq!(resp.status().as_u16(), 403);
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(name: &str, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| (*p).to_owned())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (!p.is_empty()).then_some(p)
        })
}

fn start_driver() -> Option<(Driver, String)> {
    let driver = find("chromedriver", &["/usr/bin/chromedriver"])?;
    let browser = find("chromium", &["/usr/bin/chromium"])?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut r) = agent().get(format!("{}/status", d.base)).call()
            && r.body_mut()
                .read_json::<Value>()
                .is_ok_and(|v| v["value"]["ready"] == true)
        {
            return Some((d, browser));
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not become ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A WebDriver session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Browser<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver.base, self.session);
        let a = agent();
        let mut resp = match (method, body) {
            ("GET", _) => a.get(&url).call(),
            ("DELETE", _) => a.delete(&url).call(),
            (_, b) => a.post(&url).send_json(b.unwrap_or_else(|| json!({}))),
        }
        .expect("webdriver answers");
        let v: Value = resp.body_mut().read_json().expect("json");
        assert!(
            v["value"]["error"].is_null(),
            "{method} {path}: {}",
            v["value"]
        );
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// Waits for the page at a URL ending in `suffix`: a click or a form post returns
    /// before the navigation it starts has finished.
    fn arrive(&self, suffix: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = self.url();
            if url.ends_with(suffix) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected a page at …{suffix}, still at {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("an element id")
            .to_owned()
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = agent()
            .delete(format!("{}/session/{}", self.driver.base, self.session))
            .call();
    }
}

#[test]
fn in_chromium_sign_in_open_a_run_and_see_the_failing_job() {
    let Some((driver, chromium)) = start_driver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs chromium and chromium-driver (Debian packages) for the console test"
        );
        eprintln!("SKIPPED: no chromedriver/chromium; apt-get install chromium chromium-driver");
        return;
    };
    let s = Server::start(&Backend::Sqlite, None);
    let run = failing_run(&s);
    let (viewer, _) = s.token(&["viewer"], &["*"]);
    let profile = tempfile::tempdir().expect("tempdir");
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "timeouts": {"implicit": 5000},
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--user-data-dir={}", profile.path().display())]
        }
    }}});
    let mut resp = agent()
        .post(format!("{}/session", driver.base))
        .send_json(&caps)
        .expect("new session");
    let v: Value = resp.body_mut().read_json().expect("json");
    let session = v["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {v}"))
        .to_owned();
    let b = Browser {
        driver: &driver,
        session,
    };

    b.go(&format!("{}/console/runs/{run}", s.base));
    b.arrive("/console/login");
    b.type_into("#token", "mst_not-a-token");
    b.click("form.login button");
    assert!(
        b.text("#login-error")
            .contains("not known to this conductor")
    );
    b.type_into("#token", &viewer);
    b.click("form.login button");
    b.arrive("/console/runs");
    assert_eq!(b.text("#actor"), "user:viewer · default");
    let row = b.text("#runs tbody tr");
    assert!(row.contains("checkout") && row.contains("failed"), "{row}");

    b.click(&format!("a[href='/console/runs/{run}']"));
    b.arrive(&format!("/console/runs/{run}"));
    let failed = b.text("#failures li.failed-job");
    assert!(
        failed.contains("unit") && failed.contains("exited 101"),
        "{failed}"
    );
    let row = b.text("tr.job-failed");
    assert!(row.contains("unit") && row.contains("failed"), "{row}");
    assert!(b.text("tr.job-succeeded").contains("lint"));

    b.click("#failures li.failed-job a");
    let log = b.text("pre.log");
    assert!(
        log.contains("assertion failed: cart.total() == 30"),
        "{log}"
    );
    assert!(
        log.contains("<script>alert(1)</script>"),
        "shown as text: {log}"
    );

    // A canary that rolled back: the list, its report and why it ended.
    let id = rolled_back_deployment(&s);
    b.go(&format!("{}/console/canaries", s.base));
    let row = b.text("#deployments tbody tr");
    assert!(
        row.contains("stage") && row.contains("rolled_back"),
        "{row}"
    );
    b.click(&format!("a[href='/console/canaries/{id}']"));
    b.arrive(&format!("/console/canaries/{id}"));
    let outcome = b.text("#outcome");
    assert!(
        outcome.contains("2 failed analyses in a row at step 1 (5%)"),
        "{outcome}"
    );
    assert!(b.text("tr.event-started").contains("5%"));
    assert!(b.text("tr.event-rolled_back").contains("0%"));
    // The figures behind the verdict.
    let check = b.text("table#checks tr.check-fail");
    assert!(
        check.contains("error rate") && check.contains("0.2000") && check.contains("1.00e-9"),
        "{check}"
    );

    // A release that went through both stages: the list, its gates, stages and events.
    released(&s);
    b.go(&format!("{}/console/releases", s.base));
    let row = b.text("#releases tbody tr");
    assert!(
        row.contains("hello-service 1.1.0")
            && row.contains("released")
            && row.contains("prod: done"),
        "{row}"
    );
    b.click("a[href='/console/releases/hello-service/1.1.0']");
    b.arrive("/console/releases/hello-service/1.1.0");
    assert!(b.text("#gates").contains("unit succeeded"));
    let stage = b.text("tr.stage-done");
    assert!(
        stage.contains("stage") && stage.contains("greets") && stage.contains("verify pass"),
        "{stage}"
    );
    assert!(
        b.text("#events")
            .contains("released: every stage promoted, verified and soaked")
    );
    assert!(b.text("#notes").contains("prepare Welsh greetings"));
    assert!(b.text("a#evidence").contains("evidence bundle"));

    b.click("form.who button");
    b.arrive("/console/login");
    b.go(&format!("{}/console/runs", s.base));
    b.arrive("/console/login");
}

/// Release 1.1.0 of hello-service, promoted through stage and prod.
fn released(s: &Server) {
    let progress = json!({
        "run": null,
        "gates": [{"gate": "test", "green": true, "jobs": [["unit", "succeeded"]]}],
        "migrations_changed": false,
        "stages": (["stage", "prod"].iter().map(|e| json!({
            "environment": e, "step": "done", "deployment": null,
            "smoke": [{"name": "greets", "passed": true, "exit_code": 0, "duration_ms": 40, "output": ""}],
            "checks": [{"during": "verify", "at_ms": 1, "requests": 120, "errors": 0, "error_rate": 0.0, "burn_rate": 0.0, "p95_ms": 3.0, "status": "pass", "why": "120 requests, error rate 0.00%, burn rate 0.0×"}],
        })).collect::<Vec<_>>()),
        "events": [{"at_ms": 1_795_000_000_000_i64, "message": "released: every stage promoted, verified and soaked"}],
    });
    s.store()
        .release_create(&maestro_store::ReleaseRow {
            tenant: "default".into(),
            service: "hello-service".into(),
            version: "1.1.0".into(),
            commit: "c".repeat(40),
            artifact: "/dist/hello-service.tar.gz".into(),
            digest: format!("sha256:{}", "3f".repeat(32)),
            status: "released".into(),
            state: progress.to_string(),
            notes: "## 1.1.0\n### Features\n- prepare Welsh greetings\n".into(),
            actor: "user:rm".into(),
            reason: "weekly".into(),
            created_at_ms: 1_795_000_000_000,
            updated_at_ms: 1_795_000_000_000,
            id: 0,
        })
        .expect("store")
        .expect("created");
}

/// A deployment whose canary failed two analyses at its first step.
fn rolled_back_deployment(s: &Server) -> i64 {
    use maestro_canary::{Canary, Check, Judgement, Status, Strategy, Verdict};
    let plan = Strategy::default().plan().expect("plan");
    let t = 1_795_000_000_000;
    let (mut c, _) = Canary::start(&plan, t);
    let failed = Judgement {
        verdict: Verdict::Fail,
        checks: vec![Check {
            name: "error rate".into(),
            status: Status::Fail,
            canary: 0.2,
            stable: Some(0.0),
            p_value: Some(1e-9),
            detail: "canary 20.00% vs stable 0.00%".into(),
        }],
    };
    c.analysed(&plan, t + 5_000, Some(failed.clone()));
    c.analysed(&plan, t + 10_000, Some(failed));
    let mut store = s.store();
    let id = store
        .deployment_begin(&maestro_store::NewDeployment {
            environment: "stage".into(),
            service: "hello-service".into(),
            version: "3f9a1c0d2b7e".into(),
            artifact: "sha256:3f9a1c0d2b7e".into(),
            release_dir: "/envs/stage/releases/3f9a1c0d2b7e".into(),
            previous: Some("0a1b2c3d4e5f".into()),
            plan: "[]".into(),
            state: "{}".into(),
            env: "{}".into(),
            actor: "user:ops".into(),
            reason: "greetings in Welsh".into(),
            now_ms: t.cast_signed(),
            ..maestro_store::NewDeployment::default()
        })
        .expect("store")
        .expect("opened");
    store
        .deployment_save(
            id,
            "rolled_back",
            &serde_json::to_string(&c).expect("json"),
            (t + 10_000).cast_signed(),
            None,
        )
        .expect("store")
        .expect("saved");
    id
}

/// A console session is the server's: the cookie is a random id, signing out ends it for
/// whoever kept the cookie, revoking the token ends it, a cross-site sign-in is refused,
/// and behind a declared TLS proxy the cookie is `Secure`.
#[test]
fn console_sessions_are_server_side_and_end_with_logout_and_the_token() {
    let s = Server::start(&Backend::Sqlite, None);
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let page = |cookie: &str| {
        a.get(format!("{}/console/runs", s.base))
            .header("Cookie", cookie)
            .call()
            .expect("request")
            .status()
            .as_u16()
    };
    let (viewer, viewer_id) = s.token(&["viewer"], &["*"]);
    // The token itself is no cookie.
    assert_eq!(
        page(&format!("maestro_session={viewer}")),
        303,
        "a token is not a session"
    );
    let first = s.console_session(&viewer);
    let second = s.console_session(&viewer);
    assert_ne!(first, second, "each sign-in is its own session");
    assert_eq!((page(&first), page(&second)), (200, 200));
    // Signing out ends that session on the server: the kept cookie opens nothing.
    let resp = a
        .post(format!("{}/console/logout", s.base))
        .header("Cookie", &first)
        .send_empty()
        .expect("logout");
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(page(&first), 303, "a replayed cookie after sign-out");
    assert_eq!(page(&second), 200, "another session goes on");
    // Revoking the token ends every session opened with it.
    s.store()
        .token_revoke(&viewer_id, maestro_server::now_ms())
        .expect("revoke");
    assert_eq!(page(&second), 303, "the token was revoked");

    // A sign-in posted from another site (login CSRF) is refused, and opens nothing.
    let (other, _) = s.token(&["viewer"], &["*"]);
    for (name, value) in [
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "same-site"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let resp = a
            .post(format!("{}/console/login", s.base))
            .header(name, value)
            .send_form([("token", other.as_str())])
            .expect("request");
        assert_eq!(resp.status().as_u16(), 403, "{name}: {value}");
        assert!(resp.headers().get("set-cookie").is_none());
    }

    // Behind a declared TLS proxy the cookie is Secure.
    let tls = Server::configured(
        &Backend::Sqlite,
        maestro_server::Settings {
            tls_proxy: Some(true),
            ..maestro_server::Settings::default()
        },
    );
    let (t, _) = tls.token(&["viewer"], &["*"]);
    let resp = a
        .post(format!("{}/console/login", tls.base))
        .send_form([("token", t.as_str())])
        .expect("request");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}
