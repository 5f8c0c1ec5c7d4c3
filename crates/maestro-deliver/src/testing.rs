//! The example service as an environment, for tests and benchmarks (feature `testing`):
//! `examples/hello-service` run by `python3 -m app.server {port}` behind the proxy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use maestro_canary::Strategy;

use crate::{Driver, EnvSpec, MetricsSource, Release, Request, ServiceSpec};

/// `examples/hello-service` in this repository.
#[must_use]
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello-service")
}

/// A release of the example with these variables (failure injection, say).
#[must_use]
pub fn example_release(version: &str, env: &[(&str, &str)]) -> Release {
    Release {
        version: version.into(),
        artifact: format!("sha256:{version}"),
        dir: example_dir(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// Who deploys, and why.
#[must_use]
pub fn request(reason: &str) -> Request {
    Request {
        actor: "user:alice".into(),
        reason: reason.into(),
        ..Request::default()
    }
}

/// The `stage` environment of the example under `strategy`, its state in `state_dir`.
///
/// # Panics
/// When the strategy is invalid (a test's mistake).
#[must_use]
pub fn example_spec(
    state_dir: &Path,
    strategy: &Strategy,
    metrics: MetricsSource,
    metrics_listen: Option<SocketAddr>,
) -> EnvSpec {
    EnvSpec {
        name: "stage".into(),
        service: "hello-service".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen,
        driver: Driver::Process(ServiceSpec {
            command: ["python3", "-m", "app.server", "{port}"]
                .map(str::to_owned)
                .to_vec(),
            workdir: None,
            health: "/healthz".into(),
            ready_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(3),
            env: BTreeMap::from([("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned())]),
        }),
        plan: strategy.plan().expect("a valid strategy"),
        metrics,
        state_dir: state_dir.to_owned(),
    }
}
