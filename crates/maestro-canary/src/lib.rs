//! Progressive delivery: the canary's analysis and strategy.
//!
//! [`judge`] decides one analysis interval (pass, fail, inconclusive) from the canary's
//! and stable's golden signals; [`stats`] holds the tests it uses (two-proportion z-test,
//! Mann-Whitney U).

pub mod judge;
pub mod stats;

pub use judge::{Check, Judgement, Limits, Observation, Status, Streak, Verdict, judge};
