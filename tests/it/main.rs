//! One integration binary: hand-computed fixtures, CLI behaviour, real data, faults.

mod cdnow;
mod cli;
mod common;
mod faults;
mod fixtures;
mod fuzz;
mod metrics;
mod model;
mod properties;
mod reliability;
mod report;
