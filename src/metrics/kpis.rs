//! SPEC §7: the one-row `kpis` table.

use chrono::NaiveDate;
use polars::prelude::*;

use super::{ratio, to_currency};
use crate::dates::date_lit;
use crate::schema::customers::RECENCY_DAYS;
use crate::schema::internal::{FIRST_ORDER_MICROS, REVENUE_MICROS};
use crate::schema::kpis::*;
use crate::schema::{CUSTOMERS, ORDERS, REVENUE};

pub struct KpiInputs {
    /// The customers table (with `__revenue_micros`).
    pub customers: LazyFrame,
    /// One row from [`super::pareto::pareto`].
    pub pareto_summary: LazyFrame,
    /// One row `previous_active`, `retained` (summed).
    pub period_activity: LazyFrame,
    /// One row `upsell_customers`, when a category column is mapped.
    pub upsell: Option<LazyFrame>,
    /// Fitted models (BG/NBD, Gamma-Gamma); empty leaves the model columns null.
    pub models: Vec<crate::model::Fit>,
    /// Holdout accuracy, when `clv.holdout_days` is set.
    pub holdout: Option<super::holdout::HoldoutSummary>,
}

pub fn kpis(inputs: KpiInputs, as_of: NaiveDate, churn_window_days: u32) -> LazyFrame {
    let customers = || len().cast(DataType::Int64);
    let orders = || col(ORDERS).sum();
    let churned = |window: u32| ratio(col(RECENCY_DAYS).gt(lit(window as i64)).sum(), customers());
    let base = inputs.customers.select([
        date_lit(as_of).alias(AS_OF),
        customers().alias(CUSTOMERS),
        orders().alias(ORDERS),
        to_currency(col(REVENUE_MICROS).sum()).alias(REVENUE),
        ratio(to_currency(col(REVENUE_MICROS).sum()), orders()).alias(AOV),
        ratio(to_currency(col(REVENUE_MICROS).sum()), customers()).alias(SALES_PER_CUSTOMER),
        ratio(to_currency(col(FIRST_ORDER_MICROS).sum()), customers()).alias(MEAN_FIRST_ORDER_VALUE),
        ratio(orders(), customers()).alias(PURCHASE_FREQUENCY),
        ratio(col(ORDERS).gt_eq(lit(2i64)).sum(), customers()).alias(REPEAT_PURCHASE_RATE),
        lit(churn_window_days as i64)
            .cast(DataType::Int64)
            .alias(CHURN_WINDOW_DAYS),
        churned(churn_window_days).alias(CHURN_RATE),
        churned(365).alias(ANNUAL_CHURN_RATE),
    ]);
    let with_upsell = match inputs.upsell {
        Some(upsell) => base.cross_join(upsell, None).with_columns([ratio(
            col(super::customers::UPSELL_CUSTOMERS),
            col(CUSTOMERS),
        )
        .alias(UPSELL_RATIO)]),
        None => base.with_columns([lit(NULL).cast(DataType::Float64).alias(UPSELL_RATIO)]),
    };
    let with_upsell = with_upsell
        .cross_join(inputs.period_activity, None)
        .with_columns([ratio(col("retained"), col("previous_active")).alias(PERIOD_RETENTION_RATE)]);
    let mut columns: Vec<Expr> = [
        AS_OF,
        CUSTOMERS,
        ORDERS,
        REVENUE,
        AOV,
        SALES_PER_CUSTOMER,
        MEAN_FIRST_ORDER_VALUE,
        PURCHASE_FREQUENCY,
        REPEAT_PURCHASE_RATE,
        CHURN_WINDOW_DAYS,
        CHURN_RATE,
        PERIOD_RETENTION_RATE,
        ANNUAL_CHURN_RATE,
        UPSELL_RATIO,
        GINI,
        TOP_20PCT_REVENUE_SHARE,
        CUSTOMERS_FOR_80PCT,
        CUSTOMERS_FOR_80PCT_SHARE,
    ]
    .into_iter()
    .map(col)
    .collect();
    // Predictive-model columns: null without a fitted model (SPEC §6.3).
    let count = inputs.models.iter().find(|f| f.model != "gamma_gamma");
    let gg = inputs.models.iter().find(|f| f.model == "gamma_gamma");
    let number = |fit: Option<&crate::model::Fit>, name: &str| match fit
        .and_then(|f| f.parameters.iter().find(|p| p.name == name))
    {
        Some(p) => lit(p.value),
        None => lit(NULL).cast(DataType::Float64),
    };
    columns.push(
        match count {
            Some(fit) => lit(fit.model.as_str()),
            None => lit(NULL).cast(DataType::String),
        }
        .alias(MODEL),
    );
    for (column, parameter) in MODEL_PARAMETERS {
        columns.push(number(count, parameter).alias(column));
    }
    for (column, parameter) in GG_PARAMETERS {
        columns.push(number(gg, parameter).alias(column));
    }
    columns.push(
        match count {
            Some(fit) => lit(fit.log_likelihood),
            None => lit(NULL).cast(DataType::Float64),
        }
        .alias(MODEL_LOG_LIKELIHOOD),
    );
    columns.extend(super::holdout::kpi_columns(inputs.holdout));
    with_upsell
        .cross_join(inputs.pareto_summary, None)
        .select(columns)
}

/// The `kpis` table's columns and types, in order (SPEC §7; one row).
pub fn schema() -> Schema {
    crate::schema::parse(
        "as_of date, customers i64, orders i64, revenue f64, aov f64, sales_per_customer f64, \
         mean_first_order_value f64, purchase_frequency f64, \
         repeat_purchase_rate f64, churn_window_days i64, churn_rate f64, period_retention_rate f64, \
         annual_churn_rate f64, \
         upsell_ratio f64, gini f64, top_20pct_revenue_share f64, customers_for_80pct i64, \
         customers_for_80pct_share f64, model str, model_r f64, model_alpha f64, model_a f64, \
         model_b f64, model_s f64, model_beta f64, gg_p f64, gg_q f64, gg_v f64, \
         model_log_likelihood f64, holdout_days i64, model_holdout_mae f64, model_holdout_rmse f64, \
         model_holdout_error_pct f64, model_holdout_rank_correlation f64, naive_holdout_mae f64, \
         naive_holdout_rmse f64, naive_holdout_error_pct f64, naive_holdout_rank_correlation f64",
    )
}
