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
use crate::schema::model::{P_ALIVE, PREDICTED_CLV};
use crate::schema::{CUSTOMERS, ORDERS, REVENUE};

/// CLV values in units of 10⁻¹² currency, Int128: fine enough that a group mean
/// stays within 1e-9 of the exact one, coarse enough to add exactly.
pub const FIXED_SCALE: f64 = 1e12;

/// A CLV column in fixed point (Int128).
pub fn fixed(currency: &str) -> Expr {
    (col(currency) * lit(FIXED_SCALE) + lit(0.5))
        .floor()
        .cast(DataType::Int128)
}

/// The exact sum of a CLV column, added in fixed point, in currency (null when
/// all are null). The fixed-point values are made inside the aggregation: as
/// columns they cost 16 bytes per customer each.
pub fn fixed_sum(currency: &str) -> Expr {
    fixed(currency).sum().cast(DataType::Float64) / lit(FIXED_SCALE)
}

/// Mean of a CLV column over its non-null values, from its fixed-point sum.
pub fn fixed_mean(currency: &str) -> Expr {
    fixed_sum(currency) / col(currency).count().cast(DataType::Float64)
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
    customers.with_columns([
        (col(REVENUE) * margin.clone()).alias(HISTORICAL_CLV),
        (col(AOV) * purchases_per_year * lifetime * margin).alias(FORMULA_CLV),
    ])
}

/// The only columns [`by_dimension`] reads: the dimension's and the CLVs.
pub fn dimension_values(customers: LazyFrame, dimension: Dimension) -> LazyFrame {
    customers.select([
        col(dimension.column()),
        col(HISTORICAL_CLV),
        col(FORMULA_CLV),
        col(PREDICTED_CLV),
        col(P_ALIVE),
    ])
}

/// The rows of `clv_by_segment` for one dimension. Collected one dimension at a time
/// (see the pipeline), each computes only its own columns of a sliced customer table.
pub fn by_dimension(customers: LazyFrame, dimension: Dimension) -> LazyFrame {
    // Means over the customers that have a value (predicted_clv may be null).
    // Money sums are integer sums (SPEC preamble): group totals add fixed-point
    // values, so they do not depend on summation order and reruns are byte-identical.
    // Each CLV column's fixed-point sum is made once per group (a fixed-point column
    // is 16 bytes per customer while it lasts); its sum and mean are derived after.
    let stats = |name: &str| {
        [
            fixed_sum(name).alias(format!("__{name}_fixed_sum")),
            col(name).count().alias(format!("__{name}_count")),
            col(name).median().alias(format!("{name}_median")),
        ]
    };
    let sum_and_mean = |name: &str| {
        let (sum, count) = (col(format!("__{name}_fixed_sum")), col(format!("__{name}_count")));
        [
            when(count.clone().gt(lit(0)))
                .then(sum.clone())
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias(format!("{name}_sum")),
            (sum / count.cast(DataType::Float64)).alias(format!("{name}_mean")),
        ]
    };
    let mut aggs = vec![len().cast(DataType::Int64).alias(CUSTOMERS)];
    aggs.extend(stats(HISTORICAL_CLV));
    aggs.extend(stats(FORMULA_CLV));
    aggs.extend(stats(PREDICTED_CLV));
    aggs.push(fixed_mean(P_ALIVE).alias(MEAN_P_ALIVE));
    let mut columns = vec![col(DIMENSION), col(VALUE), col(CUSTOMERS)];
    for name in [HISTORICAL_CLV, FORMULA_CLV, PREDICTED_CLV] {
        for stat in ["sum", "mean", "median"] {
            columns.push(col(format!("{name}_{stat}")));
        }
    }
    columns.push(col(MEAN_P_ALIVE));
    // Grouped on the typed column; only the few group keys become text.
    customers
        .group_by([col(dimension.column()).alias(VALUE)])
        .agg(aggs)
        .with_columns(
            [HISTORICAL_CLV, FORMULA_CLV, PREDICTED_CLV]
                .iter()
                .flat_map(|name| sum_and_mean(name))
                .collect::<Vec<_>>(),
        )
        .with_columns([
            col(VALUE).cast(DataType::String),
            lit(dimension.column()).alias(DIMENSION),
        ])
        .select(columns)
}

/// [`by_dimension`] frames as the `clv_by_segment` table, sorted by dimension and value.
pub fn combine(frames: Vec<LazyFrame>) -> LazyFrame {
    match concat(frames, UnionArgs::default()) {
        Ok(all) => all.sort(
            [DIMENSION, VALUE],
            SortMultipleOptions::default().with_nulls_last(true),
        ),
        // Unreachable: the config requires at least one dimension.
        Err(_) => DataFrame::empty().lazy(),
    }
}
