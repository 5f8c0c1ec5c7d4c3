//! Environments and their drivers. The process driver ([`process`]) runs each release of a
//! service as local processes on loopback ports; the canary proxy (`maestro-proxy`) splits
//! traffic between them and the canary controller (`maestro-canary`) steers the split.

pub mod cluster;
pub mod kubernetes;
pub mod process;
pub mod prometheus;
pub mod runtime;
#[cfg(feature = "testing")]
pub mod testing;

pub use process::{DriverError, Instance, ProcessDriver, ServiceSpec};
pub use prometheus::Prometheus;
pub use runtime::{
    DeployError, Driver, EnvSpec, Environment, MetricsSource, Notice, Release, Request,
};

/// All traffic, in basis points (the canary crate's unit).
pub const ALL_WEIGHT: u32 = maestro_canary::ALL;
