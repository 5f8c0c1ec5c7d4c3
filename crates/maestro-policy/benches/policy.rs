//! Policy evaluation: Maestro (`Bundle::eval`, input parsing and result shaping included)
//! against the bare regorus engine doing the same work (the same starter bundle compiled
//! once, the same input text, the same rules), side by side in one run.
//!
//! `bench/policy` runs it; `cargo bench -p maestro-policy --bench policy -- --quick` is the
//! short form.
#![expect(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use maestro_policy::{Bundle, LoadOptions, STARTER};
use serde_json::{Value, json};

/// A `terraform show -json` plan with `n` resource changes: a mix of S3 buckets and ACLs,
/// security-group rules, databases, volumes and instances, a few of them in violation.
fn plan(n: usize) -> String {
    let mut changes = Vec::with_capacity(n);
    let mut planned = Vec::with_capacity(n);
    for i in 0..n {
        let (kind, after) = match i % 6 {
            0 => (
                "aws_s3_bucket",
                json!({"bucket": format!("bucket-{i}"), "force_destroy": false,
                       "tags": {"owner": "team-a", "env": "prod"}}),
            ),
            1 => (
                "aws_s3_bucket_acl",
                json!({"bucket": format!("bucket-{}", i - 1),
                       "acl": if i % 60 == 1 { "public-read" } else { "private" }}),
            ),
            2 => (
                "aws_security_group_rule",
                json!({"type": "ingress", "protocol": "tcp",
                       "from_port": if i % 50 == 2 { 22 } else { 443 },
                       "to_port": if i % 50 == 2 { 22 } else { 443 },
                       "cidr_blocks": ["0.0.0.0/0"], "security_group_id": "sg-1"}),
            ),
            3 => (
                "aws_db_instance",
                json!({"engine": "postgres", "instance_class": "db.t3.micro",
                       "allocated_storage": 20, "storage_encrypted": i % 30 != 3}),
            ),
            4 => (
                "aws_ebs_volume",
                json!({"availability_zone": "eu-west-1a", "size": 100, "encrypted": true}),
            ),
            _ => (
                "aws_instance",
                json!({"ami": "ami-123", "instance_type": "t3.micro",
                       "tags": {"Name": format!("web-{i}")}}),
            ),
        };
        let address = format!("{kind}.r{i}");
        changes.push(json!({
            "address": address, "mode": "managed", "type": kind, "name": format!("r{i}"),
            "provider_name": "registry.terraform.io/hashicorp/aws",
            "change": {"actions": ["create"], "before": null, "after": after,
                       "after_unknown": {"id": true, "arn": true}},
        }));
        planned.push(json!({"address": address, "mode": "managed", "type": kind,
                            "name": format!("r{i}"), "values": after}));
    }
    json!({
        "format_version": "1.2", "terraform_version": "1.9.5",
        "planned_values": {"root_module": {"resources": planned}},
        "resource_changes": changes,
        "configuration": {"provider_config": {"aws": {"name": "aws"}}},
    })
    .to_string()
}

/// `n` Kubernetes documents as one multi-document YAML file.
fn manifests(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let _ = match i % 4 {
            0 => write!(
                out,
                "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-{i}\n  namespace: shop\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {{app: web-{i}}}\n  template:\n    metadata:\n      labels: {{app: web-{i}}}\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/web:{}\n          ports: [{{containerPort: 8080}}]\n          resources:\n            limits: {{cpu: 500m, memory: 256Mi}}\n            requests: {{cpu: 100m, memory: 128Mi}}\n          securityContext: {{allowPrivilegeEscalation: false}}\n",
                if i % 40 == 0 { "latest" } else { "1.4.2" }
            ),
            1 => write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web-{i}\nspec:\n  selector: {{app: web-{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
            2 => write!(
                out,
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg-{i}\ndata:\n  LOG_LEVEL: info\n  FEATURE_X: \"true\"\n"
            ),
            _ => write!(
                out,
                "---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: job-{i}\nspec:\n  schedule: \"*/5 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n            - name: task\n              image: registry.example.com/task@sha256:{:064x}\n              resources:\n                limits: {{cpu: 100m, memory: 64Mi}}\n",
                i
            ),
        };
    }
    out
}

/// The bare engine: the starter bundle's files added to one regorus engine, once.
fn bare_engine() -> regorus::Engine {
    let mut e = regorus::Engine::new();
    for (name, text) in STARTER {
        if name.ends_with(".rego") && !name.ends_with("_test.rego") {
            e.add_policy((*name).to_owned(), (*text).to_owned())
                .expect("policy");
        } else if name.ends_with(".yaml") {
            let v: Value = serde_saphyr::from_str(text).expect("yaml");
            e.add_data(regorus::Value::from_json_str(&v.to_string()).expect("data"))
                .expect("data");
        }
    }
    e
}

/// What bare regorus does per input: set it, evaluate each rule.
fn bare_eval(engine: &regorus::Engine, rules: &[String], input: &regorus::Value) -> usize {
    let mut e = engine.clone();
    e.set_input(input.clone());
    let mut n = 0;
    for r in rules {
        let v = e.eval_rule(r.clone()).expect("eval");
        if let Ok(s) = v.as_set() {
            n += s.len();
        }
    }
    n
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Stats {
    p50: Duration,
    p99: Duration,
    total: Duration,
}

fn measure(iterations: usize, mut f: impl FnMut() -> usize) -> (Stats, usize) {
    let mut found = f(); // warm-up, and the result both sides must agree on
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        found = std::hint::black_box(f());
        times.push(t.elapsed());
    }
    let total = times.iter().sum();
    times.sort();
    (
        Stats {
            p50: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            total,
        },
        found,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in STARTER {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let t = Instant::now();
    let bundle = Bundle::load(dir.path(), &LoadOptions::default()).expect("bundle");
    let load = t.elapsed();
    let t = Instant::now();
    let bare = bare_engine();
    let bare_load = t.elapsed();
    println!(
        "bundle load (starter, {} files): maestro {} ms, bare regorus {} ms — once per run, reused for every input",
        STARTER.len(),
        ms(load),
        ms(bare_load)
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11}",
        "case", "maestro", "p99", "regorus", "p99", "ratio", "docs/s"
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11}",
        "", "p50 ms", "ms", "p50 ms", "ms", "p50", "(maestro)"
    );
    let tf_ns = vec!["terraform".to_owned()];
    let tf_rules: Vec<String> = bundle
        .checks(Some(&tf_ns))
        .into_iter()
        .map(|(p, r, _)| format!("data.{p}.{r}"))
        .collect();
    let scale = if quick { 5 } else { 1 };
    for (n, iterations) in [(100, 500), (1_000, 100), (5_000, 20)] {
        let text = plan(n);
        let (m, found_m) = measure(iterations / scale, || {
            let input = maestro_policy::Value::from_json_str(&text).expect("json");
            bundle
                .eval(Some(&tf_ns), &input)
                .expect("eval")
                .failures
                .len()
        });
        let (b, found_b) = measure(iterations / scale, || {
            let input = regorus::Value::from_json_str(&text).expect("json");
            bare_eval(&bare, &tf_rules, &input)
        });
        assert_eq!(found_m, found_b, "both sides find the same violations");
        assert!(found_m > 0, "the plan has violations to find");
        println!(
            "{:<34} {:>9} {:>9} {:>9} {:>9} {:>6.2}× {:>11.0}",
            format!("terraform plan, {n} resources"),
            ms(m.p50),
            ms(m.p99),
            ms(b.p50),
            ms(b.p99),
            m.p50.as_secs_f64() / b.p50.as_secs_f64(),
            (iterations / scale) as f64 / m.total.as_secs_f64()
        );
    }
    // A manifest set: each YAML document is its own input (conftest's shape).
    let k8s_ns = vec!["kubernetes".to_owned()];
    let k8s_rules: Vec<String> = bundle
        .checks(Some(&k8s_ns))
        .into_iter()
        .map(|(p, r, _)| format!("data.{p}.{r}"))
        .collect();
    let docs = 2_000;
    let text = manifests(docs);
    let path = dir.path().join("rendered.yaml");
    std::fs::write(&path, &text).expect("write");
    let rounds = if quick { 2 } else { 5 };
    let mut per_doc_m = Vec::new();
    let mut per_doc_b = Vec::new();
    let (mut total_m, mut total_b) = (Duration::ZERO, Duration::ZERO);
    let (mut found_m, mut found_b) = (0, 0);
    for _ in 0..rounds {
        // Maestro: read and split the file, evaluate every document.
        let t = Instant::now();
        let inputs = maestro_policy::read_inputs(&path).expect("inputs");
        found_m = 0;
        for i in &inputs {
            let d = Instant::now();
            found_m += bundle
                .eval(Some(&k8s_ns), &i.value)
                .expect("eval")
                .failures
                .len();
            per_doc_m.push(d.elapsed());
        }
        total_m += t.elapsed();
        // Bare: the same YAML split (regorus reads JSON), then the engine per document.
        let t = Instant::now();
        let values = maestro_policy::yaml_documents(&text).expect("yaml");
        found_b = 0;
        for v in values.iter().filter(|v| **v != maestro_policy::Value::Null) {
            let d = Instant::now();
            found_b += bare_eval(&bare, &k8s_rules, v);
            per_doc_b.push(d.elapsed());
        }
        total_b += t.elapsed();
    }
    assert_eq!(found_m, found_b, "both sides find the same violations");
    per_doc_m.sort();
    per_doc_b.sort();
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9} {:>6.2}× {:>11.0}",
        format!("kubernetes, {docs} documents (per doc)"),
        ms(percentile(&per_doc_m, 0.5)),
        ms(percentile(&per_doc_m, 0.99)),
        ms(percentile(&per_doc_b, 0.5)),
        ms(percentile(&per_doc_b, 0.99)),
        total_m.as_secs_f64() / total_b.as_secs_f64(),
        (docs * rounds) as f64 / total_m.as_secs_f64()
    );
    println!(
        "ratio: maestro ÷ bare regorus on the same input text, bundle and rules (target ≤ 1.5×); \
         the kubernetes ratio is of whole-file time. OPA/conftest: not installable from this \
         machine's registries; regorus publishes ≈1 ms per 100-change and ≈9 ms per \
         1,000-change plan for a three-rule deny policy."
    );
}
