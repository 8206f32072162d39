//! One integration binary: hand-computed fixtures, CLI behaviour, real data, faults.

mod actions;
mod cdnow;
mod cli;
mod common;
mod faults;
mod fixtures;
mod fuzz;
mod metrics;
mod model;
mod money;
mod properties;
mod reliability;
mod report;
mod safety;
mod schemas;
#[cfg(feature = "spark")]
mod spark;
mod storage;
