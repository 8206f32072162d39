//! SPEC §6.1–6.2 and `clv_by_segment`: historical and rule-of-thumb CLV.
//!
//! formula_clv = aov × purchases per year × expected lifetime × margin, with
//! purchases per year = orders / max(tenure_days, min_tenure_days) × 365.25 and
//! expected lifetime = min(1 / annual_churn_rate, max_lifetime_years) (the cap
//! when nobody churned). annual_churn_rate is the §7 KPI, over all customers,
//! passed in as a number by the pipeline.

use polars::prelude::*;

use crate::config::{ClvConfig, Dimension};
use crate::schema::clv::*;
use crate::schema::customers::{AOV, FORMULA_CLV, HISTORICAL_CLV, TENURE_DAYS};
use crate::schema::{CUSTOMERS, ORDERS, REVENUE};

/// Micro-unit copies of the CLV columns, for exact group sums; dropped before writing.
pub const HISTORICAL_CLV_MICROS: &str = "__historical_clv_micros";
pub const FORMULA_CLV_MICROS: &str = "__formula_clv_micros";

fn micros(currency: &str) -> Expr {
    (col(currency) * lit(1e6) + lit(0.5))
        .floor()
        .cast(DataType::Int64)
}

/// The exact sum of a micro-unit column, in currency.
pub fn money_sum(micros_column: &str) -> Expr {
    super::to_currency(col(micros_column).sum())
}

/// min(1 / annual_churn_rate, cap); the cap when nobody churned.
pub fn expected_lifetime_years(annual_churn_rate: f64, cap: f64) -> f64 {
    if annual_churn_rate > 0.0 {
        (1.0 / annual_churn_rate).min(cap)
    } else {
        cap
    }
}

/// Adds `historical_clv` and `formula_clv` to the customer table; `annual_churn_rate`
/// is the §7 KPI over the same customers.
pub fn customer_clv(
    customers: LazyFrame,
    config: &ClvConfig,
    min_tenure_days: u32,
    annual_churn_rate: f64,
) -> LazyFrame {
    let margin = lit(config.margin);
    let lifetime = lit(expected_lifetime_years(
        annual_churn_rate,
        config.max_lifetime_years,
    ));
    let tenure = when(col(TENURE_DAYS).lt(lit(min_tenure_days as i64)))
        .then(lit(min_tenure_days as i64))
        .otherwise(col(TENURE_DAYS));
    let purchases_per_year =
        col(ORDERS).cast(DataType::Float64) / tenure.cast(DataType::Float64) * lit(365.25);
    customers
        .with_columns([
            (col(REVENUE) * margin.clone()).alias(HISTORICAL_CLV),
            (col(AOV) * purchases_per_year * lifetime * margin).alias(FORMULA_CLV),
        ])
        // Money sums are integer sums (SPEC preamble): group totals add these micro-unit
        // copies, so they do not depend on summation order and reruns are byte-identical.
        .with_columns([
            micros(HISTORICAL_CLV).alias(HISTORICAL_CLV_MICROS),
            micros(FORMULA_CLV).alias(FORMULA_CLV_MICROS),
        ])
}

/// `clv_by_segment`: per dimension and value, customers and sum/mean/median of each CLV.
pub fn clv_by_segment(customers: LazyFrame, dimensions: &[Dimension]) -> LazyFrame {
    let stats = |name: &str, micros_column: &str| {
        [
            money_sum(micros_column).alias(format!("{name}_sum")),
            (money_sum(micros_column) / len().cast(DataType::Float64)).alias(format!("{name}_mean")),
            col(name).median().alias(format!("{name}_median")),
        ]
    };
    let frames: Vec<LazyFrame> = dimensions
        .iter()
        .map(|dimension| {
            let mut aggs = vec![len().cast(DataType::Int64).alias(CUSTOMERS)];
            aggs.extend(stats(HISTORICAL_CLV, HISTORICAL_CLV_MICROS));
            aggs.extend(stats(FORMULA_CLV, FORMULA_CLV_MICROS));
            customers
                .clone()
                .group_by([col(dimension.column()).cast(DataType::String).alias(VALUE)])
                .agg(aggs)
                .with_columns([lit(dimension.column()).alias(DIMENSION)])
        })
        .collect();
    let mut columns = vec![col(DIMENSION), col(VALUE), col(CUSTOMERS)];
    for name in [HISTORICAL_CLV, FORMULA_CLV] {
        for stat in ["sum", "mean", "median"] {
            columns.push(col(format!("{name}_{stat}")));
        }
    }
    match concat(frames, UnionArgs::default()) {
        Ok(all) => all.select(columns).sort(
            [DIMENSION, VALUE],
            SortMultipleOptions::default().with_nulls_last(true),
        ),
        // Unreachable: the config requires at least one dimension.
        Err(_) => DataFrame::empty().lazy(),
    }
}
