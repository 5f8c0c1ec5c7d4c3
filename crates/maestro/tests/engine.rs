//! The engine through the real binary: gates, cancellation, timeouts, retries, the cache
//! key, verified restores, crash recovery and the run lock.

mod common;

use std::fs;
use std::io::Read;

use common::Repo;

/// Whether a process is alive (a zombie waiting to be reaped is not).
fn alive(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn job_status(repo: &Repo, name: &str) -> String {
    repo.latest_jobs()[name]["status"]
        .as_str()
        .expect("status")
        .to_owned()
}

#[test]
fn red_gate_cancels_later_gates_and_barrier_jobs_never_start() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  lint:\n    gate: lint\n    run: exit 3\n  lint2:\n    gate: lint\n    run: echo fine\n  test:\n    gate: unit\n    run: echo test > ran-test\n  ship:\n    gate: publish\n    run: echo shipped > shipped\n",
    );
    let (code, out) = repo.maestro_run(&["-j", "1"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(job_status(&repo, "lint"), "failed");
    assert_eq!(
        job_status(&repo, "lint2"),
        "succeeded",
        "jobs of the red gate itself finish"
    );
    assert_eq!(job_status(&repo, "test"), "cancelled");
    assert_eq!(job_status(&repo, "ship"), "cancelled");
    assert!(
        !repo.path().join("shipped").exists(),
        "a deploy job must never run behind a red gate"
    );
    assert!(out.contains("exited with code 3"), "{out}");
}

#[test]
fn dependents_of_a_failed_job_are_skipped() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  build:\n    run: exit 1\n  unit:\n    gate: unit\n    run: echo x\n    needs: [build]\n",
    );
    let (code, _) = repo.maestro_run(&[]);
    assert_eq!(code, 1);
    let jobs = repo.latest_jobs();
    assert_eq!(jobs["unit"]["status"], "skipped");
    assert!(
        jobs["unit"]["note"]
            .as_str()
            .expect("note")
            .contains("needs `build`")
    );
}

#[test]
fn changing_any_ingredient_misses_and_says_why() {
    let repo = Repo::new();
    repo.write("src/a.txt", "a");
    repo.write(
        "maestro.yaml",
        "version: 1\ntoolchains:\n  tool: \"1\"\njobs:\n  build:\n    run: cat src/a.txt > out.txt\n    inputs: [\"src/**\"]\n    outputs: [out.txt]\n  use:\n    run: cat out.txt > final.txt\n    needs: [build]\n    outputs: [final.txt]\n    env:\n      MODE: fast\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let hit = |repo: &Repo, job: &str| {
        repo.latest_jobs()[job]["cache"]
            .as_str()
            .expect("cache")
            .to_owned()
    };
    let reason = |repo: &Repo, job: &str| {
        repo.latest_jobs()[job]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    repo.maestro_run(&[]);
    assert_eq!(hit(&repo, "build"), "hit");
    assert_eq!(hit(&repo, "use"), "hit");

    // An input file.
    repo.write("src/a.txt", "b");
    repo.maestro_run(&[]);
    assert_eq!(hit(&repo, "build"), "miss");
    assert_eq!(reason(&repo, "build"), "file src/a.txt changed");
    assert_eq!(hit(&repo, "use"), "miss", "new upstream outputs");
    assert_eq!(
        reason(&repo, "use"),
        "upstream build produced different outputs"
    );

    // A new input file.
    repo.write("src/b.txt", "new");
    repo.maestro_run(&[]);
    assert_eq!(reason(&repo, "build"), "file src/b.txt added");
    assert_eq!(
        hit(&repo, "use"),
        "hit",
        "same upstream outputs: early cut-off"
    );

    // The environment.
    let spec = repo.read("maestro.yaml");
    repo.write("maestro.yaml", &spec.replace("MODE: fast", "MODE: slow"));
    repo.maestro_run(&[]);
    assert_eq!(hit(&repo, "build"), "hit");
    assert_eq!(reason(&repo, "use"), "env MODE changed");

    // The command.
    let spec = repo.read("maestro.yaml");
    repo.write(
        "maestro.yaml",
        &spec.replace("cat out.txt > final.txt", "cat out.txt out.txt > final.txt"),
    );
    repo.maestro_run(&[]);
    assert_eq!(reason(&repo, "use"), "command changed");

    // A declared toolchain.
    let spec = repo.read("maestro.yaml");
    repo.write("maestro.yaml", &spec.replace("tool: \"1\"", "tool: \"2\""));
    repo.maestro_run(&[]);
    assert_eq!(reason(&repo, "build"), "toolchain tool changed (1 → 2)");

    // `cache explain` says the same.
    let out = repo.run(&["cache", "explain", "build"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("toolchain tool changed (1 → 2)"), "{text}");

    // --no-cache runs everything and says so.
    repo.maestro_run(&["--no-cache"]);
    assert_eq!(hit(&repo, "build"), "miss");
    assert_eq!(reason(&repo, "build"), "cache disabled (--no-cache)");
}

#[test]
fn maestro_files_and_outputs_never_count_as_inputs() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  gen:\n    run: mkdir -p gen && date +%s%N > gen/stamp\n    inputs: [\"**\"]\n    outputs: [gen]\n",
    );
    repo.maestro_run(&[]);
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("0 ran · 1 cached"),
        "outputs and .maestro/ must not change the key:\n{out}"
    );
}

#[test]
fn a_corrupt_cache_blob_is_never_restored() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  build:\n    run: echo good > out.txt\n    outputs: [out.txt]\n",
    );
    repo.maestro_run(&[]);
    // Corrupt every blob in the store.
    let cas = repo.path().join(".maestro/cache/cas");
    for shard in fs::read_dir(&cas).expect("cas") {
        for blob in fs::read_dir(shard.expect("shard").path()).expect("blobs") {
            let p = blob.expect("blob").path();
            let mut perms = fs::metadata(&p).expect("meta").permissions();
            #[expect(
                clippy::permissions_set_readonly_false,
                reason = "the test corrupts the cache"
            )]
            perms.set_readonly(false);
            fs::set_permissions(&p, perms).expect("chmod");
            fs::write(&p, "evil").expect("corrupt");
        }
    }
    fs::remove_file(repo.path().join("out.txt")).expect("rm");
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        repo.read("out.txt"),
        "good\n",
        "the job ran again instead of restoring a corrupt blob"
    );
    let jobs = repo.latest_jobs();
    assert_eq!(jobs["build"]["cache"], "miss");
    assert!(
        jobs["build"]["reason"]
            .as_str()
            .expect("reason")
            .contains("failed verification")
    );
}

#[test]
fn retries_are_recorded_as_attempts_and_flag_flakes() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  flaky:\n    run: if [ -f .seen ]; then echo pass; else touch .seen; echo fail; exit 1; fi\n    retries: 2\n    cache: false\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let job = &repo.latest_jobs()["flaky"];
    assert_eq!(job["flaky"], true);
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[1]["status"], "succeeded");
    assert!(out.contains("flaky"), "{out}");
    assert!(
        fs::read_to_string(attempts[0]["log_path"].as_str().expect("log"))
            .expect("log 1")
            .contains("fail")
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let repo = Repo::new();
    // The job starts a grandchild that would outlive a plain kill of the shell.
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  slow:\n    run: (sleep 30; echo leaked > leaked) & echo $! > child.pid; sleep 30\n    timeout: 1s\n",
    );
    let (code, out) = repo.maestro_run(&["--grace", "200ms"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(job_status(&repo, "slow"), "timed-out");
    assert!(out.contains("timed out after 1s"), "{out}");
    let pid = repo.read("child.pid").trim().to_owned();
    assert!(!alive(&pid), "the grandchild {pid} must be killed");
}

/// Starts `maestro run` whose only job reports its pid through a FIFO, and waits (by a
/// blocking read, no sleep) until the job is running.
fn start_blocking_run(repo: &Repo) -> (std::process::Child, String) {
    let fifo = repo.path().join("ready.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  long:\n    run: echo $$ > ready.fifo; exec sleep 60\n    cache: false\n",
    );
    let child = repo
        .cmd(&["run", "--log-format", "plain", "--grace", "1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut pid = String::new();
    fs::File::open(&fifo)
        .expect("open fifo")
        .read_to_string(&mut pid)
        .expect("read fifo");
    (child, pid.trim().to_owned())
}

#[test]
fn ctrl_c_stops_jobs_and_records_the_run_as_interrupted() {
    let repo = Repo::new();
    let (child, job_pid) = start_blocking_run(&repo);
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!alive(&job_pid), "the job must be stopped");
    let runs = repo.json(&["runs", "list", "--json"]);
    assert_eq!(runs[0]["status"], "interrupted");
    assert_eq!(job_status(&repo, "long"), "cancelled");
}

#[test]
fn a_crashed_run_is_marked_interrupted_on_the_next_start() {
    let repo = Repo::new();
    let (mut child, job_pid) = start_blocking_run(&repo);
    child.kill().expect("SIGKILL maestro");
    child.wait().expect("wait");
    // The orphaned job is still running; stop it so it does not outlive the test.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &job_pid])
        .status();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  quick:\n    run: echo ok\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("run #1 was left running by a crashed or killed maestro; marked interrupted"),
        "{out}"
    );
    let runs = repo.json(&["runs", "list", "--json"]);
    assert_eq!(runs[1]["id"], 1);
    assert_eq!(runs[1]["status"], "interrupted");
}

#[test]
fn a_second_concurrent_run_is_refused() {
    let repo = Repo::new();
    let (child, job_pid) = start_blocking_run(&repo);
    let out = repo.run(&["run", "--log-format", "plain"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another maestro run is in progress"), "{err}");
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait_with_output();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &job_pid])
        .status();
}

#[test]
fn jobs_see_only_the_allowed_environment() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\nenv:\n  GLOBAL: g\njobs:\n  env:\n    run: env | sort > env.txt\n    env:\n      LOCAL: l\n    outputs: [env.txt]\n",
    );
    let out = repo
        .cmd(&["run", "--log-format", "plain"])
        .env("SECRET_TOKEN", "hunter2")
        .output()
        .expect("run");
    assert!(out.status.success());
    let env = repo.read("env.txt");
    assert!(
        env.contains("GLOBAL=g") && env.contains("LOCAL=l") && env.contains("MAESTRO_JOB=env"),
        "{env}"
    );
    assert!(env.contains("PATH="), "PATH passes through by default");
    assert!(
        !env.contains("SECRET_TOKEN"),
        "unlisted host variables are scrubbed:\n{env}"
    );
}

#[test]
fn shards_split_a_job() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  unit:\n    run: echo $MAESTRO_SHARD_INDEX/$MAESTRO_SHARD_COUNT > shard-${{ shard.index }}.txt\n    outputs: [\"shard-${{ shard.index }}.txt\"]\n    shard: 3\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    for i in 1..=3 {
        assert_eq!(repo.read(&format!("shard-{i}.txt")), format!("{i}/3\n"));
    }
}

#[test]
fn markdown_and_json_summaries() {
    let repo = Repo::new();
    repo.write("maestro.yaml", "version: 1\njobs:\n  a:\n    gate: lint\n    run: echo a\n  b:\n    gate: unit\n    run: exit 2\n");
    let out = repo
        .cmd(&["run", "--log-format", "json", "--summary-md", "summary.md"])
        .env("GITHUB_STEP_SUMMARY", repo.path().join("step.md"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    assert_eq!(events[0]["event"], "run-started");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "gate-red" && e["gate"] == "unit")
    );
    let last = events.last().expect("events");
    assert_eq!(last["event"], "run-finished");
    assert_eq!(last["status"], "failed");
    let md = repo.read("summary.md");
    assert!(md.contains("| ❌ unit | 1 | 0 | 0 | 1 | 0 |"), "{md}");
    assert!(md.contains("- **b**: exited with code 2"), "{md}");
    assert_eq!(
        repo.read("step.md"),
        md,
        "GITHUB_STEP_SUMMARY gets the same Markdown"
    );
}

#[test]
fn selecting_jobs_runs_them_and_what_they_need() {
    let repo = Repo::new();
    repo.write("maestro.yaml", "version: 1\njobs:\n  a:\n    run: touch a\n  b:\n    run: touch b\n    needs: [a]\n  c:\n    run: touch c\n");
    let (code, _) = repo.maestro_run(&["b"]);
    assert_eq!(code, 0);
    assert!(repo.path().join("a").exists() && repo.path().join("b").exists());
    assert!(!repo.path().join("c").exists());
    let (code, out) = repo.maestro_run(&["nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no job named `nope`"), "{out}");
}

#[test]
fn cache_gc_removes_old_entries_and_blobs() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  a:\n    run: echo big > out.txt\n    outputs: [out.txt]\n",
    );
    repo.maestro_run(&[]);
    let stats = repo.json(&["cache", "stats", "--json"]);
    assert_eq!(stats["entries"], 1);
    let out = repo.run(&["cache", "gc", "--max-age", "1h"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 0 cache entries"));
    let out = repo.run(&["cache", "gc", "--max-age", "0s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("removed 1 cache entries") && text.contains("2 unreferenced blobs"),
        "{text}"
    );
    assert_eq!(repo.json(&["cache", "stats", "--json"])["entries"], 0);
}

#[test]
fn a_red_gate_stops_running_jobs_of_later_gates() {
    let repo = Repo::new();
    let status = std::process::Command::new("mkfifo")
        .arg(repo.path().join("started.fifo"))
        .status()
        .expect("mkfifo");
    assert!(status.success());
    // `unit` starts speculatively beside `lint`; `lint` fails only once `unit` is running
    // (it reads unit's pid from the FIFO), so the cancellation hits a live process.
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  lint:\n    gate: lint\n    run: read pid < started.fifo; echo $pid > unit.pid; exit 1\n  unit:\n    gate: unit\n    run: echo $$ > started.fifo; exec sleep 60\n    cache: false\n",
    );
    let (code, out) = repo.maestro_run(&["-j", "2", "--grace", "5s"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(job_status(&repo, "lint"), "failed");
    assert_eq!(job_status(&repo, "unit"), "cancelled");
    let pid = repo.read("unit.pid").trim().to_owned();
    assert!(
        !alive(&pid),
        "the running unit job ({pid}) must have been stopped"
    );
    let attempts = &repo.latest_jobs()["unit"]["attempts"];
    assert_eq!(attempts[0]["status"], "cancelled");
    assert_eq!(
        repo.latest_jobs()["unit"]["note"],
        "gate lint is red (`lint` failed)"
    );
}

#[test]
fn a_pass_on_inputs_that_failed_in_an_earlier_run_is_flagged_flaky() {
    let repo = Repo::new();
    repo.write("src/x.txt", "same inputs");
    // Fails the first time it ever runs, passes afterwards: inputs never change.
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  test:\n    gate: unit\n    run: if [ -f .ran ]; then exit 0; else touch .ran; exit 1; fi\n    inputs: [\"src/**\"]\n",
    );
    let (code, _) = repo.maestro_run(&[]);
    assert_eq!(code, 1);
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let job = &repo.latest_jobs()["test"];
    assert_eq!(job["flaky"], true);
    assert_eq!(
        job["note"],
        "passed on the same inputs that failed in run #1"
    );
    assert!(out.contains("flaky test"), "{out}");
}

#[test]
fn declared_outputs_are_cleared_before_a_job_runs() {
    let repo = Repo::new();
    repo.write("mode", "a");
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  gen:\n    run: mkdir -p dist && touch dist/$(cat mode)\n    inputs: [mode]\n    outputs: [dist]\n",
    );
    repo.maestro_run(&[]);
    repo.write("mode", "b");
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(repo.path().join("dist/b").exists());
    assert!(
        !repo.path().join("dist/a").exists(),
        "a stale output must not survive, nor be cached"
    );
    let artifacts = &repo.latest_jobs()["gen"]["artifacts"];
    assert_eq!(
        artifacts.as_array().expect("artifacts").len(),
        1,
        "{artifacts}"
    );
}

#[test]
fn a_hit_restores_the_log_into_the_run_and_it_survives_gc() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  a:\n    run: echo hello from a\n",
    );
    repo.maestro_run(&[]);
    repo.maestro_run(&[]);
    let job = &repo.latest_jobs()["a"];
    assert_eq!(job["cache"], "hit");
    let log = job["log_path"].as_str().expect("log").to_owned();
    assert!(log.contains("/runs/2/logs/"), "{log}");
    repo.run(&["cache", "gc", "--max-age", "0s"]);
    assert_eq!(
        fs::read_to_string(&log).expect("log survives gc"),
        "hello from a\n"
    );
}

#[test]
fn dependents_of_a_job_without_outputs_are_cached_on_the_second_run() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  check:\n    gate: lint\n    run: echo checked\n  build:\n    gate: unit\n    run: echo built > out.txt\n    needs: [check]\n    outputs: [out.txt]\n",
    );
    let (code, _) = repo.maestro_run(&[]);
    assert_eq!(code, 0);
    for run in 2..=3 {
        let (code, out) = repo.maestro_run(&[]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("0 ran · 2 cached"),
            "run {run} must be fully cached:\n{out}"
        );
    }
}

#[test]
fn barrier_jobs_start_once_every_earlier_gate_is_green() {
    let repo = Repo::new();
    repo.write(
        "maestro.yaml",
        "version: 1\njobs:\n  build:\n    run: echo b\n  lint:\n    gate: lint\n    run: echo l\n  test:\n    gate: unit\n    run: echo t\n    needs: [build]\n  ship:\n    gate: publish\n    run: echo shipped > shipped\n  ship2:\n    gate: publish\n    run: echo s2\n    needs: [build]\n",
    );
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(repo.path().join("shipped").exists());
    assert_eq!(job_status(&repo, "ship2"), "succeeded");
}
