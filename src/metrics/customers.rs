//! SPEC §2: the `customers` table, one row per customer with at least one purchase.
//!
//! A purchase is an order whose value is > 0. Dates and counts come from
//! purchases; revenue from *all* of the customer's orders (refunds net in).

use chrono::NaiveDate;
use polars::prelude::*;

use super::{per_day, ratio, to_currency};
use crate::config::Grain;
use crate::dates::epoch_days;
use crate::schema::customers::*;
use crate::schema::internal::{
    BEFORE_WINDOW_LAST, CATEGORY_MAX, CATEGORY_MIN, CHANNEL as CHANNEL_IN, CUSTOMER_ID as CID,
    FIRST_ORDER_MICROS, GROSS_MARGIN_MICROS, MARGIN, ORDER_DATE, ORDER_RANK, REVENUE_MICROS, RFM_ORDERS,
    RFM_REVENUE_MICROS, VALUE,
};
use crate::schema::{CUSTOMER_ID, ORDERS, REVENUE};

#[derive(Clone)]
pub struct CustomerParams {
    pub as_of: NaiveDate,
    pub min_tenure_days: u32,
    pub grain: Grain,
    /// Channel text by channel number, when a channel column is mapped: orders carry
    /// channels as numbers ([`crate::ingest::Ingested`]).
    pub channels: Option<Series>,
}

/// The optional columns of [`customer_aggregates`].
#[derive(Clone, Copy, Default)]
pub struct AggregateWants {
    /// The acquisition channel (orders carry `__channel`).
    pub channel: bool,
    /// The summed gross margin `__gross_margin_micros` (orders carry `__margin_micros`).
    pub margin: bool,
    /// The first day of `rfm.window_days`: the purchases and revenue of the orders
    /// from that day on (`__rfm_orders`, `__rfm_revenue_micros`).
    pub rfm_since: Option<NaiveDate>,
    /// The first day of the current retention window (`kpis.churn_window_days`
    /// before as_of): the latest purchase before it (`__before_window_last`), from
    /// which [`period_activity`] tells who bought in the previous window.
    pub window_start: Option<NaiveDate>,
}

/// Orders whose value is > 0.
pub fn purchases(orders: LazyFrame) -> LazyFrame {
    orders.filter(col(VALUE).gt(lit(0i64)))
}

/// First day of the cohort period (ISO week from Monday, month, or calendar quarter).
pub fn period_start(date: Expr, grain: Grain) -> Expr {
    per_day(date, DataType::Date, super::period_start_day, grain)
}

/// Whole days from `date` to `as_of`.
fn days_until(as_of: NaiveDate, date: Expr) -> Expr {
    lit(epoch_days(as_of) as i64) - date.cast(DataType::Int32).cast(DataType::Int64)
}

/// Per customer with a purchase, sorted by customer key: `customer_id` (the key),
/// first and last purchase date, purchases, `__revenue_micros`, and the acquisition
/// channel. The only per-customer state the pipeline holds: every other column of
/// the table is computed from these row by row ([`customer_columns`]). `orders`
/// holds all of each of its customers' orders; slices of the orders in key order
/// ([`super::customer_slices`]) give the slices of the aggregates in order.
pub fn customer_aggregates(orders: LazyFrame, wants: AggregateWants) -> LazyFrame {
    // One group-by over all orders: the purchase-only aggregates see a purchase's
    // value and null otherwise, which keeps every aggregate on Polars' fast path
    // (a second group-by over the purchases and a join cost 1 s at 2M customers).
    let purchase = || col(VALUE).gt(lit(0i64));
    let if_purchase = |e: Expr| when(purchase()).then(e).otherwise(lit(NULL));
    let mut aggs = vec![
        if_purchase(col(ORDER_DATE)).min().alias(FIRST_ORDER_DATE),
        if_purchase(col(ORDER_DATE)).max().alias(LAST_ORDER_DATE),
        purchase().cast(DataType::Int64).sum().alias(ORDERS),
        col(VALUE).sum().alias(REVENUE_MICROS),
    ];
    // The first purchase by (date, order_id): one integer key, the day in the high
    // bits, the order's rank (order_id order within a customer) in the low 32;
    // `min_by` takes one pass per group.
    let day = col(ORDER_DATE).cast(DataType::Int32).cast(DataType::Int64) * lit(1i64 << 32);
    let first_purchase = || if_purchase(day.clone() + col(ORDER_RANK).cast(DataType::Int64));
    aggs.push(col(VALUE).min_by(first_purchase()).alias(FIRST_ORDER_MICROS));
    if wants.margin {
        aggs.push(col(MARGIN).sum().alias(GROSS_MARGIN_MICROS));
    }
    if wants.channel {
        // Acquisition channel: the first purchase's, ties broken by the smallest order_id.
        aggs.push(col(CHANNEL_IN).min_by(first_purchase()).alias(CHANNEL));
    }
    if let Some(start) = wants.window_start {
        aggs.push(
            when(purchase().and(col(ORDER_DATE).lt(lit(start))))
                .then(col(ORDER_DATE))
                .otherwise(lit(NULL))
                .max()
                .alias(BEFORE_WINDOW_LAST),
        );
    }
    if let Some(since) = wants.rfm_since {
        let in_window = || col(ORDER_DATE).gt_eq(lit(since));
        aggs.push(
            (in_window().and(purchase()))
                .cast(DataType::Int64)
                .sum()
                .alias(RFM_ORDERS),
        );
        aggs.push(
            when(in_window())
                .then(col(VALUE))
                .otherwise(lit(0i64))
                .sum()
                .alias(RFM_REVENUE_MICROS),
        );
    }
    orders
        .group_by([col(CID).alias(CUSTOMER_ID)])
        .agg(aggs)
        .filter(col(ORDERS).gt(lit(0i64)))
        .sort([CUSTOMER_ID], SortMultipleOptions::default())
}

/// The §2 columns from [`customer_aggregates`], each computed row by row, so any
/// slice of the aggregates gives the same rows of the table. Columns other than the
/// aggregates' (model summary, predictions) come after the §2 ones, unchanged.
pub fn customer_columns(aggregates: LazyFrame, params: &CustomerParams) -> LazyFrame {
    let tenure = days_until(params.as_of, col(FIRST_ORDER_DATE));
    let annualised_days = when(tenure.clone().lt(lit(params.min_tenure_days as i64)))
        .then(lit(params.min_tenure_days as i64))
        .otherwise(tenure.clone());
    let revenue = || to_currency(col(REVENUE_MICROS));
    let mut computed = vec![
        revenue().alias(REVENUE),
        (revenue() / col(ORDERS).cast(DataType::Float64)).alias(AOV),
        to_currency(col(FIRST_ORDER_MICROS)).alias(FIRST_ORDER_VALUE),
        days_until(params.as_of, col(LAST_ORDER_DATE)).alias(RECENCY_DAYS),
        tenure.alias(TENURE_DAYS),
        (ratio(revenue(), annualised_days) * lit(365.25)).alias(ANNUAL_VALUE),
        period_start(col(FIRST_ORDER_DATE), params.grain).alias(COHORT),
    ];
    let mut order = vec![
        CUSTOMER_ID,
        FIRST_ORDER_DATE,
        LAST_ORDER_DATE,
        ORDERS,
        REVENUE,
        AOV,
        FIRST_ORDER_VALUE,
        RECENCY_DAYS,
        TENURE_DAYS,
        ANNUAL_VALUE,
        COHORT,
    ];
    if let Some(labels) = &params.channels {
        // The acquisition channel's number, named (null stays null).
        computed.push(lit(labels.clone()).gather(col(CHANNEL), false).alias(CHANNEL));
        order.push(CHANNEL);
    }
    // The aggregates' other columns (revenue micros, attached model columns) follow.
    let rest = all().exclude_cols(order.clone()).as_expr();
    aggregates
        .with_columns(computed)
        .select([cols(order).as_expr(), rest])
}

/// [`upsell_customers`]' one column.
pub const UPSELL_CUSTOMERS: &str = "upsell_customers";

/// Customers with at least 2 distinct non-null categories among the positive lines
/// of their purchases (SPEC §7 upsell_ratio numerator), as a one-row frame. Each
/// order carries the smallest and largest category number of its positive lines;
/// a customer has two distinct categories exactly when their range is not a point.
/// Counts add up over sets of orders that share no customer (slices).
pub fn upsell_customers(orders: LazyFrame) -> LazyFrame {
    purchases(orders)
        .group_by([col(CID)])
        .agg([col(CATEGORY_MIN).min(), col(CATEGORY_MAX).max()])
        .select([col(CATEGORY_MIN)
            .neq(col(CATEGORY_MAX))
            .fill_null(lit(false))
            .sum()
            .cast(DataType::Int64)
            .alias(UPSELL_CUSTOMERS)])
}

/// Customers with a purchase in the previous window, and of those the ones with a
/// purchase in the current window too, as a one-row frame (`previous_active`,
/// `retained`): the windows are the `window_days` before as_of and the
/// `window_days` before those. From [`customer_aggregates`] made with
/// `window_start` = as_of − `window_days`: the current window holds a purchase when
/// the last one is in it, the previous one when the last purchase before the
/// current window is. Counts add up over slices of whole customers.
pub fn period_activity(aggregates: LazyFrame, as_of: NaiveDate, window_days: u32) -> LazyFrame {
    let window = chrono::Days::new(window_days.into());
    let (current_start, previous_start) = (as_of - window, as_of - window - window);
    let previous = col(BEFORE_WINDOW_LAST)
        .gt_eq(lit(previous_start))
        .fill_null(lit(false));
    let current = col(LAST_ORDER_DATE).gt_eq(lit(current_start));
    aggregates.select([
        previous
            .clone()
            .cast(DataType::Int64)
            .sum()
            .alias("previous_active"),
        previous
            .and(current)
            .cast(DataType::Int64)
            .sum()
            .alias("retained"),
    ])
}

/// The written `customers` table's columns and types, in order (SPEC §2, §4–§6);
/// `channel` only when `input.columns.channel` is mapped, the latest survey score
/// and its date only with `input.surveys`.
pub fn schema(has_channel: bool, has_surveys: bool) -> Schema {
    let channel = if has_channel { "channel str, " } else { "" };
    let surveys = if has_surveys {
        "nps_score i64, nps_response_date date, "
    } else {
        ""
    };
    crate::schema::parse(&format!(
        "customer_id str, first_order_date date, last_order_date date, orders i64, revenue f64, \
         aov f64, first_order_value f64, recency_days i64, tenure_days i64, annual_value f64, cohort date, \
         {channel}frequency f64, t_x f64, T f64, monetary_value f64, p_alive f64, \
         expected_purchases f64, expected_spend f64, predicted_clv f64, {surveys}abc_class str, r_score i64, \
         f_score i64, m_score i64, fm i64, rfm_cell str, segment str, historical_clv f64, \
         formula_clv f64"
    ))
}
