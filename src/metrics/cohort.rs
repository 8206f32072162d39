//! SPEC §3: cohort retention, long format, the complete grid.
//!
//! A customer's cohort is the period of their first purchase. For every cohort
//! and every period index from 0 to the period containing obs_end (= as_of − 1),
//! one row — zero rows included — with active customers, purchases and revenue
//! of the cohort's customers in that period. Orders dated before a customer's
//! first purchase (refunds or $0 orders) are left out.

use chrono::{Datelike, Days, NaiveDate};
use polars::prelude::*;

use super::{ratio, to_currency};
use crate::clean::epoch_days;
use crate::config::Grain;
use crate::schema::cohort::*;
use crate::schema::customers::FIRST_ORDER_DATE;
use crate::schema::internal::{CUSTOMER_ID as CID, ORDER_DATE, VALUE};
use crate::schema::{CUSTOMER_ID, ORDERS, REVENUE};

/// Periods since a fixed origin, so index = number(activity) − number(cohort).
pub fn period_number(date: Expr, grain: Grain) -> Expr {
    let year = || date.clone().dt().year().cast(DataType::Int64);
    let month = || date.clone().dt().month().cast(DataType::Int64);
    match grain {
        Grain::Month => year() * lit(12i64) + month() - lit(1i64),
        Grain::Quarter => year() * lit(4i64) + (month() - lit(1i64)).floor_div(lit(3i64)),
        // 1970-01-01 was a Thursday: day + 3 counts from Monday 1969-12-29.
        Grain::Week => {
            (date.clone().cast(DataType::Int32).cast(DataType::Int64) + lit(3i64)).floor_div(lit(7i64))
        }
    }
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

/// `orders`: internal order columns; `customers`: the customer table (`customer_id`,
/// `first_order_date`, `cohort`).
pub fn cohort_retention(
    orders: LazyFrame,
    customers: LazyFrame,
    grain: Grain,
    as_of: NaiveDate,
) -> LazyFrame {
    let obs_end = as_of - Days::new(1);
    let last_period = period_number_of(obs_end, grain);
    // The last period is complete only when obs_end is its last day, i.e. as_of starts a new one.
    let last_is_complete = period_number_of(as_of, grain) != last_period;

    let cohort_of =
        customers
            .clone()
            .select([col(CUSTOMER_ID).alias(CID), col(FIRST_ORDER_DATE), col(COHORT)]);
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
        );

    let activity = orders
        .join(cohort_of, [col(CID)], [col(CID)], JoinArgs::new(JoinType::Inner))
        .filter(col(ORDER_DATE).gt_eq(col(FIRST_ORDER_DATE)))
        .with_columns([
            (period_number(col(ORDER_DATE), grain) - period_number(col(COHORT), grain)).alias(PERIOD_INDEX),
        ])
        .group_by([col(COHORT), col(PERIOD_INDEX)])
        .agg([
            col(CID)
                .filter(col(VALUE).gt(lit(0i64)))
                .n_unique()
                .cast(DataType::Int64)
                .alias(ACTIVE_CUSTOMERS),
            col(VALUE).gt(lit(0i64)).sum().cast(DataType::Int64).alias(ORDERS),
            col(VALUE).sum().alias("__revenue_micros"),
        ]);

    let by_cohort = |e: Expr| {
        e.over_with_options(
            Some([col(COHORT)]),
            Some(([col(PERIOD_INDEX)], SortOptions::default())),
            WindowMapping::default(),
        )
    };
    let cumulative = by_cohort(col("__revenue_micros").cum_sum(false));
    let first = by_cohort(col("__revenue_micros").first());
    let (Ok(cumulative), Ok(first)) = (cumulative, first) else {
        unreachable!("window expressions over literal column names are valid")
    };

    grid.join(
        activity,
        [col(COHORT), col(PERIOD_INDEX)],
        [col(COHORT), col(PERIOD_INDEX)],
        JoinArgs::new(JoinType::Left),
    )
    .with_columns([
        col(ACTIVE_CUSTOMERS).fill_null(lit(0i64)),
        col(ORDERS).fill_null(lit(0i64)),
        col("__revenue_micros").fill_null(lit(0i64)),
    ])
    .sort([COHORT, PERIOD_INDEX], SortMultipleOptions::default())
    .select([
        col(COHORT),
        col(PERIOD_INDEX),
        col(COHORT_SIZE),
        col(ACTIVE_CUSTOMERS),
        ratio(col(ACTIVE_CUSTOMERS), col(COHORT_SIZE)).alias(RETENTION_RATE),
        col(ORDERS),
        to_currency(col("__revenue_micros")).alias(REVENUE),
        (to_currency(cumulative) / col(COHORT_SIZE).cast(DataType::Float64))
            .alias(CUMULATIVE_REVENUE_PER_CUSTOMER),
        ratio(col("__revenue_micros"), first).alias(REVENUE_RETENTION),
        col(PERIOD_INDEX)
            .lt(col("__last_index"))
            .or(lit(last_is_complete))
            .alias(IS_COMPLETE),
    ])
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
}
