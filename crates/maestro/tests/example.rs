//! The bundled example, as a newcomer runs it: green with its evidence (SBOM, signature,
//! provenance) verified before the deploy, then cached, then red when a unit test breaks,
//! with later gates cancelled and the failing test named.

mod common;

use common::Repo;

#[test]
fn example_is_green_then_fully_cached() {
    let repo = Repo::example();
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "first run must be green:\n{out}");
    assert!(out.contains("9 jobs · 9 ran · 0 cached"), "{out}");
    let tarball =
        std::fs::read(repo.path().join("dist/hello-service.tar.gz")).expect("package output");
    // The green path ends in evidence, verified before the deploy ran.
    for f in [
        "dist/sbom.cdx.json",
        "dist/hello-service.tar.gz.sigstore.json",
        "dist/hello-service.tar.gz.intoto.sigstore.json",
        "dist/hello-service.tar.gz.sbom.sigstore.json",
        ".maestro/envs/local/current/hello-service/app/greeting.py",
    ] {
        assert!(repo.path().join(f).exists(), "{f} missing:\n{out}");
    }
    let verified = repo.run(&[
        "verify",
        "dist/hello-service.tar.gz",
        "--key",
        ".maestro/keys/dev.pub",
        "--require",
        "signature,provenance,sbom",
    ]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // Everything but the secret scan, the signing and the deploy comes from the cache.
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("9 jobs · 3 ran · 6 cached (67% hit rate)"),
        "second run must be cached:\n{out}"
    );

    // Outputs come back from the cache byte for byte.
    std::fs::remove_file(repo.path().join("dist/hello-service.tar.gz")).expect("rm");
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 ran · 6 cached"), "{out}");
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
    assert_eq!(jobs["deploy"]["status"], "cancelled");
    assert_eq!(jobs["lint"]["status"], "succeeded");
    assert!(
        !repo.path().join("dist/hello-service.tar.gz").exists(),
        "a cancelled gate produces nothing"
    );
    // Where to look is printed.
    assert!(out.contains("log: .maestro/runs/1/logs/unit#"), "{out}");
}
