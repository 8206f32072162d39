//! `loyalty`: customer-loyalty analytics from order history (see `SPEC.md` in the
//! shared folder for the metric contract every number here implements).

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod dates;
pub mod engine;
pub mod error;
pub mod generate;
pub mod identity;
pub mod ingest;
pub mod io;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod report;
pub mod schema;
pub mod settings;
