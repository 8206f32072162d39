//! Metric families, one module each. Every function takes lazy frames and
//! parameters and returns a lazy frame: no paths, no `collect()`, no clock.

pub mod actions;
pub mod clv;
pub mod cohort;
pub mod customers;
pub mod holdout;
pub mod kpis;
pub mod migration;
pub mod nps;
pub mod pareto;
pub mod rfm;

use chrono::NaiveDate;
use polars::prelude::*;

use crate::config;
use crate::dates::epoch_days;

/// Micro-units (Int64) to currency units (Float64): the one place money becomes a float.
pub fn to_currency(micros: Expr) -> Expr {
    divide(micros.cast(DataType::Float64), lit(1_000_000.0))
}

/// A ratio of two counts or sums as Float64; null when the denominator is zero.
pub fn ratio(num: Expr, den: Expr) -> Expr {
    when(den.clone().eq(lit(0)))
        .then(lit(NULL).cast(DataType::Float64))
        .otherwise(divide(num.cast(DataType::Float64), den.cast(DataType::Float64)))
}

/// Row `i` of a collected column as a literal of the column's type: global numbers
/// (class boundaries, score steps) enter per-row expressions as constants.
pub fn literal_at(column: &Column, i: usize) -> PolarsResult<Expr> {
    Ok(lit(Scalar::new(
        column.dtype().clone(),
        column.get(i)?.into_static(),
    )))
}

/// `num / den` (Float64), each quotient correctly rounded. Polars divides by a
/// single value (a literal, an aggregate) by multiplying with its reciprocal, which
/// is an ulp off for many values (19_280_000 micros became 19.279999999999998), and
/// whether a denominator is a single value depends on the plan and the engine.
pub fn divide(num: Expr, den: Expr) -> Expr {
    num.map_many(
        |columns: &mut [Column]| {
            let num = columns[0].as_materialized_series().f64()?.clone();
            let den = columns[1].as_materialized_series().f64()?.clone();
            let quotient = match (num.len(), den.len()) {
                (n, d) if n == d => &num / &den,
                (_, 1) => match den.get(0) {
                    Some(d) => num.apply_values(|x| x / d),
                    None => Float64Chunked::full_null(num.name().clone(), num.len()),
                },
                (1, _) => match num.get(0) {
                    Some(x) => den.apply_values(|d| x / d).with_name(num.name().clone()),
                    None => Float64Chunked::full_null(num.name().clone(), den.len()),
                },
                (n, d) => polars_bail!(ShapeMismatch: "cannot divide {n} values by {d}"),
            };
            Ok(quotient.into_column())
        },
        &[den],
        |_, fields| Ok(Field::new(fields[0].name().clone(), DataType::Float64)),
    )
}

/// `f` of each date in a Date column, as `dtype` (Int64 or Date), computed once per
/// day of the column's range through a lookup table: calendar arithmetic per row
/// (chrono, or Polars' `dt` functions) cost a tenth of a second per million rows.
pub fn per_day(
    date: Expr,
    dtype: DataType,
    f: fn(NaiveDate, config::Grain) -> i64,
    grain: config::Grain,
) -> Expr {
    let output = dtype.clone();
    date.cast(DataType::Date).map(
        move |dates| {
            let days = dates.cast(&DataType::Int32)?;
            let days = days.i32()?;
            let day = |d: i32| NaiveDate::default() + chrono::Duration::days(d as i64);
            let values: Int64Chunked = match (days.min(), days.max()) {
                (Some(lo), Some(hi)) if (hi as i64 - lo as i64) < 1_000_000 => {
                    let table: Vec<i64> = (lo..=hi).map(|d| f(day(d), grain)).collect();
                    days.iter().map(|d| d.map(|d| table[(d - lo) as usize])).collect()
                }
                _ => days.iter().map(|d| d.map(|d| f(day(d), grain))).collect(),
            };
            values.with_name(dates.name().clone()).into_column().cast(&output)
        },
        move |_, field| Ok(Field::new(field.name().clone(), dtype.clone())),
    )
}

/// The first day of the cohort period containing `date` (ISO week from Monday,
/// month, or calendar quarter), as a Date's value, for [`per_day`].
pub fn period_start_day(date: NaiveDate, grain: config::Grain) -> i64 {
    use chrono::Datelike;
    let start = match grain {
        config::Grain::Week => date - chrono::Days::new(date.weekday().num_days_from_monday() as u64),
        config::Grain::Month => date.with_day(1).unwrap_or(date),
        config::Grain::Quarter => {
            NaiveDate::from_ymd_opt(date.year(), (date.month() - 1) / 3 * 3 + 1, 1).unwrap_or(date)
        }
    };
    epoch_days(start) as i64
}

/// Orders per slice of [`customer_slices`]: a few hundred MB of intermediates each.
pub const ORDER_SLICE_ROWS: usize = 4 << 20;

/// `orders` cut into slices of about `rows` rows that share no customer, so that a
/// metric that adds up over customers can run a slice at a time. The orders must
/// come grouped by customer key (as the fold writes them, sorted); otherwise, or when
/// there are no more than `rows`, the whole frame is the one slice.
pub fn customer_slices(orders: &DataFrame, rows: usize) -> PolarsResult<Vec<DataFrame>> {
    use crate::schema::internal::CUSTOMER_ID;
    let series = orders.column(CUSTOMER_ID)?.as_materialized_series().rechunk();
    let Some(keys) = (series.u32().ok())
        .and_then(|keys| keys.cont_slice().ok())
        .filter(|keys| keys.len() > rows && keys.is_sorted())
    else {
        return Ok(vec![orders.clone()]);
    };
    let mut slices = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let mut end = (start + rows.max(1)).min(keys.len());
        // Past the cut, the rest of the last customer's orders.
        end += keys[end..].partition_point(|&key| key == keys[end - 1]);
        slices.push(orders.slice(start as i64, end - start));
        start = end;
    }
    Ok(slices)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slices share no customer, and together are every row once, in order; orders
    /// not grouped by customer stay whole.
    #[test]
    fn customer_slices_cut_between_customers() {
        use crate::schema::internal::CUSTOMER_ID;
        let keys = [0u32, 0, 0, 1, 2, 2, 2, 2, 3, 4, 4];
        let orders = df!(CUSTOMER_ID => keys, "row" => (0..keys.len() as u32).collect::<Vec<_>>()).unwrap();
        let cut = |rows: usize| -> Vec<Vec<u32>> {
            customer_slices(&orders, rows)
                .unwrap()
                .iter()
                .map(|slice| {
                    slice
                        .column(CUSTOMER_ID)
                        .unwrap()
                        .u32()
                        .unwrap()
                        .into_no_null_iter()
                        .collect()
                })
                .collect()
        };
        assert_eq!(cut(2), [vec![0, 0, 0], vec![1, 2, 2, 2, 2], vec![3, 4, 4]]);
        assert_eq!(cut(4), [vec![0, 0, 0, 1], vec![2, 2, 2, 2], vec![3, 4, 4]]);
        assert_eq!(
            cut(1),
            [vec![0, 0, 0], vec![1], vec![2, 2, 2, 2], vec![3], vec![4, 4]]
        );
        assert_eq!(cut(11), [keys.to_vec()]);
        let unsorted = df!(CUSTOMER_ID => [1u32, 0, 1], "row" => [0u32, 1, 2]).unwrap();
        assert_eq!(customer_slices(&unsorted, 1).unwrap().len(), 1);
    }

    #[test]
    fn division_is_correctly_rounded_whatever_the_shape() {
        let frame = df!(
            "micros" => [19_280_000i64, 15, 43, 10_500_000],
            "n" => [4.0, 7.0, 3.0, 2.0],
        )
        .unwrap();
        let out = frame
            .lazy()
            .select([
                to_currency(col("micros")).alias("currency"),
                ratio(col("n"), col("n").sum()).alias("share"),
                ratio(lit(1.0), col("n")).alias("inverse"),
            ])
            .collect()
            .unwrap();
        let values = |name: &str| -> Vec<f64> {
            out.column(name)
                .unwrap()
                .f64()
                .unwrap()
                .into_no_null_iter()
                .collect()
        };
        // Multiplying by the reciprocal gives 19.279999999999998 and 1.4999999999999999e-5.
        assert_eq!(values("currency"), [19.28, 15.0 / 1e6, 43.0 / 1e6, 10.5]);
        assert_eq!(values("share"), [4.0 / 16.0, 7.0 / 16.0, 3.0 / 16.0, 2.0 / 16.0]);
        assert_eq!(values("inverse"), [1.0 / 4.0, 1.0 / 7.0, 1.0 / 3.0, 1.0 / 2.0]);
    }
}
