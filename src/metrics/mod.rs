//! Metric families, one module each. Every function takes lazy frames and
//! parameters and returns a lazy frame: no paths, no `collect()`, no clock.

pub mod clv;
pub mod cohort;
pub mod customers;
pub mod holdout;
pub mod kpis;
pub mod pareto;
pub mod rfm;

use polars::prelude::*;

/// Micro-units (Int64) to currency units (Float64): the one place money becomes a float.
pub fn to_currency(micros: Expr) -> Expr {
    micros.cast(DataType::Float64) / lit(1_000_000.0)
}

/// A ratio of two counts or sums as Float64; null when the denominator is zero.
pub fn ratio(num: Expr, den: Expr) -> Expr {
    when(den.clone().eq(lit(0)))
        .then(lit(NULL).cast(DataType::Float64))
        .otherwise(num.cast(DataType::Float64) / den.cast(DataType::Float64))
}
