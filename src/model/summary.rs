//! The per-customer summary the models are fitted on (SPEC §6.3): repeat
//! purchase days x, recency t_x, age T (in the configured time unit) and the mean
//! value of the repeat purchase days.

use std::collections::BTreeMap;

use rayon::prelude::*;

/// One customer's summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
    pub monetary: f64,
}

/// A distinct (x, t_x, T) with how many customers share it: fits run over these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Triple {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
    pub weight: f64,
}

/// Groups customers by exact (x, t_x, T).
pub fn triples(customers: &[Summary]) -> Vec<Triple> {
    let mut counts: BTreeMap<(u64, u64, u64), f64> = BTreeMap::new();
    for c in customers {
        *counts
            .entry((c.x.to_bits(), c.t_x.to_bits(), c.t.to_bits()))
            .or_default() += 1.0;
    }
    counts
        .into_iter()
        .map(|((x, t_x, t), weight)| Triple {
            x: f64::from_bits(x),
            t_x: f64::from_bits(t_x),
            t: f64::from_bits(t),
            weight,
        })
        .collect()
}

/// Σ f(item) in parallel, in fixed chunks added in order: the same data gives the
/// same bits whatever the thread count, so fits (and outputs) are reproducible.
pub fn deterministic_sum<T: Sync>(items: &[T], f: impl Fn(&T) -> f64 + Sync) -> f64 {
    items
        .par_chunks(1024)
        .map(|chunk| chunk.iter().map(&f).sum::<f64>())
        .collect::<Vec<f64>>()
        .into_iter()
        .sum()
}

/// [`deterministic_sum`] of several quantities at once: one pass over the items.
pub fn deterministic_sums<T: Sync, const N: usize>(
    items: &[T],
    f: impl Fn(&T) -> [f64; N] + Sync,
) -> [f64; N] {
    let add = |mut acc: [f64; N], v: [f64; N]| {
        for k in 0..N {
            acc[k] += v[k];
        }
        acc
    };
    items
        .par_chunks(1024)
        .map(|chunk| chunk.iter().map(&f).fold([0.0; N], add))
        .collect::<Vec<_>>()
        .into_iter()
        .fold([0.0; N], add)
}

/// Reads a summary CSV: columns `frequency` or `x`, `recency` or `t_x`, `T`, and
/// optionally `monetary_value` or `zbar` (the published CDNOW files use either).
pub fn read_csv(text: &str) -> Result<Vec<Summary>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or("the summary file is empty")?
        .split(',')
        .map(str::trim)
        .collect();
    let find = |names: &[&str]| header.iter().position(|h| names.contains(h));
    let x = find(&["frequency", "x"]).ok_or("no `frequency` (or `x`) column")?;
    let t_x = find(&["recency", "t_x"]).ok_or("no `recency` (or `t_x`) column")?;
    let t = find(&["T"]).ok_or("no `T` column")?;
    let monetary = find(&["monetary_value", "zbar"]);
    lines
        .enumerate()
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let number = |col: usize| -> Result<f64, String> {
                fields
                    .get(col)
                    .and_then(|f| f.parse::<f64>().ok())
                    .ok_or_else(|| format!("line {}: column {} is not a number", i + 2, header[col]))
            };
            Ok(Summary {
                x: number(x)?,
                t_x: number(t_x)?,
                t: number(t)?,
                monetary: monetary.map(number).transpose()?.unwrap_or(0.0),
            })
        })
        .collect()
}

/// SPEC §6.3's summary per customer, from the orders (internal columns): over
/// purchases, by purchase *day*; `frequency` = distinct days − 1, `t_x` = last −
/// first day, `T` = obs_end − first day (in `unit_days`), `monetary_value` = mean
/// value of the repeat days (0 when there are none). Sorted by customer_id.
pub fn summary_frame(
    orders: polars::prelude::LazyFrame,
    obs_end: chrono::NaiveDate,
    unit_days: f64,
) -> polars::prelude::LazyFrame {
    use crate::clean::epoch_days;
    use crate::schema::CUSTOMER_ID;
    use crate::schema::internal::{CUSTOMER_ID as CID, ORDER_DATE, VALUE};
    use crate::schema::model::*;
    use polars::prelude::*;

    let day = || col(ORDER_DATE).cast(DataType::Int32).cast(DataType::Float64);
    let days = orders
        .filter(col(VALUE).gt(lit(0i64)))
        .group_by([col(CID), col(ORDER_DATE)])
        .agg([col(VALUE).sum()]);
    days.group_by([col(CID)])
        .agg([
            (len().cast(DataType::Int64) - lit(1i64)).alias("__x"),
            day().min().alias("__first"),
            day().max().alias("__last"),
            col(VALUE).sum().alias("__total"),
            col(VALUE)
                .sort_by([col(ORDER_DATE)], SortMultipleOptions::default())
                .first()
                .alias("__first_value"),
        ])
        .select([
            col(CID).alias(CUSTOMER_ID),
            col("__x").cast(DataType::Float64).alias(FREQUENCY),
            ((col("__last") - col("__first")) / lit(unit_days)).alias(T_X),
            ((lit(epoch_days(obs_end) as f64) - col("__first")) / lit(unit_days)).alias(BIG_T),
            when(col("__x").gt(lit(0i64)))
                .then(
                    (col("__total") - col("__first_value")).cast(DataType::Float64)
                        / lit(1e6)
                        / col("__x").cast(DataType::Float64),
                )
                .otherwise(lit(0.0))
                .alias(MONETARY_VALUE),
        ])
        .sort([CUSTOMER_ID], SortMultipleOptions::default())
}
