//! License policy with SPDX expression semantics.

use maestro_sbom::{Component, Ecosystem, Inventory, purl};
use maestro_sca::policy::{PolicyFile, check_licenses};

fn inventory(licenses: &[(&str, Option<&str>)]) -> Inventory {
    let mut inv = Inventory::default();
    for (name, lic) in licenses {
        let mut c = Component::new(
            Ecosystem::Cargo,
            name,
            Some("1.0.0"),
            purl::cargo(name, "1.0.0", &[]),
        );
        c.license = lic.map(str::to_owned);
        inv.components.push(c);
    }
    inv.finish();
    inv
}

fn failures(policy: &str, licenses: &[(&str, Option<&str>)]) -> Vec<String> {
    let p = PolicyFile::parse("maestro-policy.toml", policy).expect("policy");
    let r = check_licenses(&inventory(licenses), &p.licenses);
    r.issues
        .iter()
        .filter(|i| i.fails)
        .map(|i| format!("{}: {}", i.purl, i.message))
        .collect()
}

const POLICY: &str = r#"
[licenses]
allow = ["MIT", "Apache-2.0", "BSD-3-Clause", "Apache-2.0 WITH LLVM-exception"]
deny = ["GPL-3.0-or-later", "GPL-2.0-only"]
"#;

#[test]
fn or_needs_one_side_and_needs_both() {
    assert!(failures(POLICY, &[("a", Some("MIT OR GPL-3.0-or-later"))]).is_empty());
    assert!(failures(POLICY, &[("a", Some("GPL-3.0-or-later OR MIT"))]).is_empty());
    assert_eq!(
        failures(POLICY, &[("b", Some("MIT AND GPL-3.0-or-later"))]),
        ["pkg:cargo/b@1.0.0: MIT AND GPL-3.0-or-later: GPL-3.0-or-later is denied"]
    );
    assert_eq!(
        failures(POLICY, &[("c", Some("(MIT OR ISC) AND BSD-2-Clause"))]),
        [
            "pkg:cargo/c@1.0.0: (MIT OR ISC) AND BSD-2-Clause: ISC is not allowed, BSD-2-Clause is not allowed"
        ]
    );
    assert!(
        failures(
            POLICY,
            &[("d", Some("(MIT OR ISC) AND (Apache-2.0 OR GPL-2.0-only)"))]
        )
        .is_empty()
    );
    // Cargo's legacy slash means OR.
    assert!(failures(POLICY, &[("e", Some("MIT/GPL-2.0-only"))]).is_empty());
}

#[test]
fn with_exceptions_must_be_allowed_as_written() {
    assert!(failures(POLICY, &[("a", Some("Apache-2.0 WITH LLVM-exception"))]).is_empty());
    assert_eq!(
        failures(
            POLICY,
            &[("b", Some("Apache-2.0 WITH Classpath-exception-2.0"))]
        ),
        [
            "pkg:cargo/b@1.0.0: Apache-2.0 WITH Classpath-exception-2.0: Apache-2.0 WITH Classpath-exception-2.0 is not allowed"
        ]
    );
    // A deny entry without an exception denies the license with any exception.
    let f = failures(
        POLICY,
        &[("c", Some("GPL-2.0-only WITH Classpath-exception-2.0"))],
    );
    assert!(f[0].ends_with("is denied"), "{f:?}");
}

#[test]
fn unknown_and_non_spdx_licenses() {
    let f = failures(
        POLICY,
        &[("a", None), ("b", Some("SEE LICENSE IN EULA.txt"))],
    );
    assert_eq!(f.len(), 2);
    assert!(f[0].contains("no declared license"));
    assert!(f[1].contains("is not an SPDX expression"));
    let warn = format!("{POLICY}unknown = \"warn\"\n");
    assert!(failures(&warn, &[("a", None)]).is_empty());
    // Without any policy nothing fails.
    assert!(failures("", &[("a", None), ("b", Some("GPL-3.0-only"))]).is_empty());
}

#[test]
fn per_package_exceptions_and_deny_only_policies() {
    let p =
        format!("{POLICY}\n[[licenses.exception]]\npackage = \"ring\"\nallow = [\"OpenSSL\"]\n");
    assert!(
        failures(&p, &[("ring", Some("MIT AND ISC AND OpenSSL"))]).len() == 1,
        "ISC still not allowed"
    );
    let p2 = format!(
        "{POLICY}\n[[licenses.exception]]\npackage = \"pkg:cargo/ring\"\nallow = [\"OpenSSL\", \"ISC\"]\n"
    );
    assert!(failures(&p2, &[("ring", Some("MIT AND ISC AND OpenSSL"))]).is_empty());
    assert_eq!(
        failures(&p2, &[("other", Some("OpenSSL"))]).len(),
        1,
        "the exception is only for ring"
    );
    let deny_only = "[licenses]\ndeny = [\"AGPL-3.0-only\"]\n";
    assert!(failures(deny_only, &[("a", Some("WTFPL")), ("b", Some("MIT"))]).is_empty());
    assert_eq!(
        failures(deny_only, &[("c", Some("AGPL-3.0-only"))]).len(),
        1
    );
}
