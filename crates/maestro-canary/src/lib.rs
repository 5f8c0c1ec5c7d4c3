//! Progressive delivery: the canary's analysis, strategy and state machine.
//!
//! [`judge`] decides one analysis interval (pass, fail, inconclusive) from the canary's
//! and stable's golden signals; [`stats`] holds the tests it uses (Fisher's exact test,
//! binomial tails, two-proportion z-test, Mann-Whitney U). [`strategy`] is the
//! configuration (steps, windows, deadlines, limits) and [`controller`] the canary as a
//! pure state machine whose state the caller persists.

pub mod controller;
pub mod judge;
pub mod stats;
pub mod strategy;

pub use controller::{Action, Canary, Command, Event, Phase};
pub use judge::{
    Against, Check, Judgement, Limits, Observation, Status, Streak, Verdict, judge, judge_against,
};
pub use strategy::{Plan, Strategy};

/// Weights are in basis points: 10,000 = all traffic.
pub const ALL: u32 = 10_000;
