//! SPEC §3: cohort retention, long format, the complete grid.
//!
//! A customer's cohort is the period of their first purchase. For every cohort
//! and every period index from 0 to the period containing obs_end (= as_of − 1),
//! one row — zero rows included — with active customers, purchases and revenue
//! of the cohort's customers in that period. Orders dated before a customer's
//! first purchase (refunds or $0 orders) are left out.

use chrono::{Datelike, Days, NaiveDate};
use polars::prelude::*;

use super::{per_day, ratio, to_currency};
use crate::config::Grain;
use crate::dates::epoch_days;
use crate::schema::cohort::*;
use crate::schema::internal::{CUSTOMER_ID as CID, ORDER_DATE, REVENUE_MICROS, VALUE};
use crate::schema::{ORDERS, REVENUE};

/// Periods since a fixed origin, so index = number(activity) − number(cohort).
pub fn period_number(date: Expr, grain: Grain) -> Expr {
    per_day(date, DataType::Int64, period_number_of, grain)
}

/// [`period_number`] for one date, in Rust.
pub fn period_number_of(date: NaiveDate, grain: Grain) -> i64 {
    let (year, month) = (date.year() as i64, date.month() as i64);
    match grain {
        Grain::Month => year * 12 + month - 1,
        Grain::Quarter => year * 4 + (month - 1) / 3,
        Grain::Week => (epoch_days(date) as i64 + 3).div_euclid(7),
    }
}

/// [`cohort_activity`]'s cell column.
pub const CELL: &str = "__cell";

/// Each cohort × period cell as one integer: cohort number × 2^24 + period index.
const CELL_SHIFT: i64 = 1 << 24;

fn cell(cohort_number: Expr, index: Expr) -> Expr {
    cohort_number * lit(CELL_SHIFT) + index
}

/// [`cell`] of one cohort number and period index.
pub fn cell_number(cohort_number: i64, index: i64) -> i64 {
    cohort_number * CELL_SHIFT + index
}

/// Per cohort × period cell, over the given orders (all of each of their
/// customers'): active customers, purchases and revenue in micro-units. Cells add
/// up over sets of orders that share no customer, distinct customers included, so
/// the orders can be taken a slice at a time ([`super::customer_slices`]), which
/// bounds the memory the window and the distinct counts take.
pub fn cohort_activity(orders: LazyFrame, grain: Grain) -> LazyFrame {
    // The customer's first purchase beside each order (a window over the customer:
    // orders come grouped by customer, so no join is needed).
    let Ok(first_purchase) = col(ORDER_DATE)
        .filter(col(VALUE).gt(lit(0i64)))
        .min()
        .over([col(CID)])
    else {
        unreachable!("a window over a literal column name is valid")
    };
    orders
        .with_columns([first_purchase.alias("__first_purchase")])
        .filter(col(ORDER_DATE).gt_eq(col("__first_purchase")))
        .with_columns([period_number(col("__first_purchase"), grain).alias("__cohort_number")])
        .with_columns([cell(
            col("__cohort_number"),
            period_number(col(ORDER_DATE), grain) - col("__cohort_number"),
        )
        .alias(CELL)])
        .group_by([col(CELL)])
        .agg([
            col(CID)
                .filter(col(VALUE).gt(lit(0i64)))
                .n_unique()
                .cast(DataType::Int64)
                .alias(ACTIVE_CUSTOMERS),
            col(VALUE).gt(lit(0i64)).sum().cast(DataType::Int64).alias(ORDERS),
            col(VALUE).sum().alias(REVENUE_MICROS),
        ])
}

/// `activity`: [`cohort_activity`] of every order, or of slices of the orders that
/// share no customer, stacked; `customers`: the customer table (`customer_id`,
/// `first_order_date`, `cohort`).
pub fn cohort_retention(
    activity: LazyFrame,
    customers: LazyFrame,
    grain: Grain,
    as_of: NaiveDate,
) -> LazyFrame {
    let obs_end = as_of - Days::new(1);
    let last_period = period_number_of(obs_end, grain);
    // The last period is complete only when obs_end is its last day, i.e. as_of starts a new one.
    let last_is_complete = period_number_of(as_of, grain) != last_period;

    let grid = customers
        .group_by([col(COHORT)])
        .agg([len().cast(DataType::Int64).alias(COHORT_SIZE)])
        .with_columns([(lit(last_period) - period_number(col(COHORT), grain)).alias("__last_index")])
        .with_columns([int_ranges(
            lit(0i64),
            col("__last_index") + lit(1i64),
            lit(1i64),
            DataType::Int64,
        )
        .alias(PERIOD_INDEX)])
        .explode(
            cols([PERIOD_INDEX]),
            ExplodeOptions {
                empty_as_null: false,
                keep_nulls: false,
            },
        )
        .with_columns([cell(period_number(col(COHORT), grain), col(PERIOD_INDEX)).alias(CELL)]);

    let activity = activity.group_by([col(CELL)]).agg([
        col(ACTIVE_CUSTOMERS).sum(),
        col(ORDERS).sum(),
        col(REVENUE_MICROS).sum(),
    ]);

    let by_cohort = |e: Expr| {
        e.over_with_options(
            Some([col(COHORT)]),
            Some(([col(PERIOD_INDEX)], SortOptions::default())),
            WindowMapping::default(),
        )
    };
    let cumulative = by_cohort(col(REVENUE_MICROS).cum_sum(false));
    let first = by_cohort(col(REVENUE_MICROS).first());
    let (Ok(cumulative), Ok(first)) = (cumulative, first) else {
        unreachable!("window expressions over literal column names are valid")
    };

    grid.join(activity, [col(CELL)], [col(CELL)], JoinArgs::new(JoinType::Left))
        .with_columns([
            col(ACTIVE_CUSTOMERS).fill_null(lit(0i64)),
            col(ORDERS).fill_null(lit(0i64)),
            col(REVENUE_MICROS).fill_null(lit(0i64)),
        ])
        .sort([COHORT, PERIOD_INDEX], SortMultipleOptions::default())
        .select([
            col(COHORT),
            col(PERIOD_INDEX),
            col(COHORT_SIZE),
            col(ACTIVE_CUSTOMERS),
            ratio(col(ACTIVE_CUSTOMERS), col(COHORT_SIZE)).alias(RETENTION_RATE),
            col(ORDERS),
            to_currency(col(REVENUE_MICROS)).alias(REVENUE),
            (to_currency(cumulative) / col(COHORT_SIZE).cast(DataType::Float64))
                .alias(CUMULATIVE_REVENUE_PER_CUSTOMER),
            ratio(col(REVENUE_MICROS), first).alias(REVENUE_RETENTION),
            col(PERIOD_INDEX)
                .lt(col("__last_index"))
                .or(lit(last_is_complete))
                .alias(IS_COMPLETE),
        ])
}

/// The `cohort_retention` table's columns and types, in order (SPEC §3).
pub fn schema() -> Schema {
    crate::schema::parse(
        "cohort date, period_index i64, cohort_size i64, active_customers i64, retention_rate f64, \
         orders i64, revenue f64, cumulative_revenue_per_customer f64, revenue_retention f64, \
         is_complete bool",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn period_numbers_count_whole_periods() {
        assert_eq!(
            period_number_of(d("2024-01-31"), Grain::Month) - period_number_of(d("2023-12-01"), Grain::Month),
            1
        );
        assert_eq!(
            period_number_of(d("2024-04-01"), Grain::Quarter)
                - period_number_of(d("2024-03-31"), Grain::Quarter),
            1
        );
        // Sunday 2023-12-31 and Monday 2024-01-01 are in different ISO weeks.
        assert_eq!(
            period_number_of(d("2024-01-01"), Grain::Week) - period_number_of(d("2023-12-31"), Grain::Week),
            1
        );
        assert_eq!(
            period_number_of(d("2023-12-31"), Grain::Week),
            period_number_of(d("2023-12-25"), Grain::Week)
        );
    }

    /// The integer-arithmetic period numbers agree with the calendar's, every day of
    /// 1900–2100 and around the ends of the date range.
    #[test]
    fn period_number_expression_matches_the_calendar() {
        let mut dates: Vec<NaiveDate> = d("1900-01-01")
            .iter_days()
            .take_while(|x| *x <= d("2100-12-31"))
            .collect();
        dates.extend([
            d("0001-01-01"),
            d("0001-03-01"),
            d("9999-12-31"),
            d("-0001-02-28"),
        ]);
        let days: Vec<i32> = dates.iter().map(|x| epoch_days(*x)).collect();
        for grain in [Grain::Week, Grain::Month, Grain::Quarter] {
            let frame = df!("day" => &days).unwrap().lazy();
            let got = frame
                .select([period_number(col("day").cast(DataType::Date), grain)])
                .collect()
                .unwrap();
            let got: Vec<i64> = got.columns()[0].i64().unwrap().into_no_null_iter().collect();
            let want: Vec<i64> = dates.iter().map(|x| period_number_of(*x, grain)).collect();
            assert_eq!(got, want, "{grain:?}");
        }
    }
}
