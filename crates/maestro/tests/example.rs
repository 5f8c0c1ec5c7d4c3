//! The bundled example, as a newcomer runs it: green, then fully cached, then red when a
//! unit test breaks, with later gates cancelled and the failing test named.

mod common;

use common::Repo;

#[test]
fn example_is_green_then_fully_cached() {
    let repo = Repo::example();
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "first run must be green:\n{out}");
    assert!(out.contains("5 jobs · 5 ran · 0 cached"), "{out}");
    let tarball =
        std::fs::read(repo.path().join("dist/hello-service.tar.gz")).expect("package output");

    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("5 jobs · 0 ran · 5 cached (100% hit rate)"),
        "second run must be fully cached:\n{out}"
    );

    // Outputs come back from the cache byte for byte.
    std::fs::remove_file(repo.path().join("dist/hello-service.tar.gz")).expect("rm");
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 ran · 5 cached"), "{out}");
    assert_eq!(
        std::fs::read(repo.path().join("dist/hello-service.tar.gz")).expect("restored"),
        tarball
    );

    // Test results were recorded per test case.
    let jobs = repo.json(&["runs", "show", "1", "--json"]);
    let unit1 = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["name"] == "unit#1")
        .expect("unit#1");
    assert!(
        unit1["tests"].as_array().expect("tests").len() >= 4,
        "{unit1}"
    );
}

#[test]
fn breaking_a_unit_test_turns_the_run_red() {
    let repo = Repo::example();
    let test = repo
        .read("tests/unit/test_greeting.py")
        .replace("\"Hello, Ada!\")", "\"Hello, Bob!\")");
    repo.write("tests/unit/test_greeting.py", &test);
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "a failing test fails the run:\n{out}");
    assert!(out.contains("gate unit is red"), "{out}");
    assert!(
        out.contains("failing test: tests.unit.test_greeting.GreetTest.test_english_is_default"),
        "{out}"
    );
    let jobs = repo.latest_jobs();
    assert_eq!(jobs["contract"]["status"], "cancelled");
    assert_eq!(jobs["package"]["status"], "cancelled");
    assert_eq!(jobs["lint"]["status"], "succeeded");
    assert!(
        !repo.path().join("dist/hello-service.tar.gz").exists(),
        "a cancelled gate produces nothing"
    );
    // Where to look is printed.
    assert!(out.contains("log: .maestro/runs/1/logs/unit#"), "{out}");
}
