//! The `clv_holdout` table and holdout KPIs: how well the model predicts the
//! last `clv.holdout_days` when fitted on what came before (see `model::holdout`).

use chrono::{Days, NaiveDate};
use polars::prelude::*;

use crate::config::ClvConfig;
use crate::dates::date_lit;
use crate::error::{Error, Result};
use crate::model::holdout::{self, Accuracy};
use crate::model::summary::{Summary, summary_frame};
use crate::schema::holdout::*;
use crate::schema::internal::{CUSTOMER_ID as CID, ORDER_DATE, VALUE};
use crate::schema::model::{BIG_T, FREQUENCY, MONETARY_VALUE, T_X};
use crate::schema::{CUSTOMER_ID, CUSTOMERS};

/// What the holdout adds to the outputs.
pub struct Holdout {
    pub table: LazyFrame,
    pub summary: HoldoutSummary,
}

#[derive(Debug, Clone, Copy)]
pub struct HoldoutSummary {
    pub days: u32,
    pub model: Accuracy,
    pub naive: Accuracy,
}

/// What the holdout is scored on, for the customers of `orders` (all of each of
/// their orders) with a purchase before the calibration end (as_of − `days`): the
/// model summary of the orders before it, and `actual_purchases`, the purchase
/// days from it on. Rows add up over slices of whole customers, in no particular
/// order.
pub fn calibration(orders: &DataFrame, as_of: NaiveDate, days: u32, unit_days: f64) -> Result<DataFrame> {
    let calibration_end = as_of - Days::new(days as u64);
    let calibration_orders = orders
        .clone()
        .lazy()
        .filter(col(ORDER_DATE).lt(date_lit(calibration_end)))
        .collect()?;
    let calibration = summary_frame(&calibration_orders, calibration_end - Days::new(1), unit_days)?.lazy();
    // Holdout purchases counted by day, as the summary counts them.
    let actual = orders
        .clone()
        .lazy()
        .filter(
            col(ORDER_DATE)
                .gt_eq(date_lit(calibration_end))
                .and(col(VALUE).gt(lit(0i64))),
        )
        .group_by([col(CID).alias(CUSTOMER_ID)])
        .agg([col(ORDER_DATE).n_unique().cast(DataType::Float64).alias(ACTUAL)]);
    Ok(calibration
        .join(
            actual,
            [col(CUSTOMER_ID)],
            [col(CUSTOMER_ID)],
            JoinArgs::new(JoinType::Left),
        )
        .with_columns([col(ACTUAL).fill_null(lit(0.0))])
        .collect()?)
}

/// Fits on the [`calibration`] summaries (of every customer) and scores the
/// held-out days.
pub fn validate(calibration: DataFrame, as_of: NaiveDate, days: u32, config: &ClvConfig) -> Result<Holdout> {
    let calibration_end = as_of - Days::new(days as u64);
    let unit_days = config.time_unit.days();
    // The summary's rows come in no particular order; the accuracy sums want one.
    let joined = calibration.sort([CUSTOMER_ID], SortMultipleOptions::default())?;
    let column =
        |name: &str| -> Result<Vec<f64>> { Ok(joined.column(name)?.f64()?.into_no_null_iter().collect()) };
    let (x, t_x, t, m, actual) = (
        column(FREQUENCY)?,
        column(T_X)?,
        column(BIG_T)?,
        column(MONETARY_VALUE)?,
        column(ACTUAL)?,
    );
    if x.is_empty() {
        return Err(Error::Model(format!(
            "clv.holdout_days = {days} leaves no purchases before {calibration_end} to fit on"
        )));
    }
    let summaries: Vec<Summary> = (0..x.len())
        .map(|i| Summary {
            x: x[i],
            t_x: t_x[i],
            t: t[i],
            monetary: m[i],
        })
        .collect();
    let scored = holdout::score(
        config.model,
        &summaries,
        &actual,
        days as f64 / unit_days,
        config.penalizer,
    )
    .map_err(|e| Error::Model(format!("holdout calibration fit: {e}")))?;
    let predicted: Vec<f64> = scored.iter().map(|s| s.predicted).collect();
    let naive: Vec<f64> = scored.iter().map(|s| s.naive).collect();
    let summary = HoldoutSummary {
        days,
        model: holdout::accuracy(&predicted, &actual),
        naive: holdout::accuracy(&naive, &actual),
    };
    let frame = DataFrame::new_infer_height(vec![
        Column::new(
            CALIBRATION_FREQUENCY.into(),
            scored.iter().map(|s| holdout::bucket(s.x)).collect::<Vec<_>>(),
        ),
        Column::new(ACTUAL.into(), actual),
        Column::new(PREDICTED.into(), predicted),
        Column::new(NAIVE.into(), naive),
    ])?;
    let table = frame
        .lazy()
        .group_by([col(CALIBRATION_FREQUENCY)])
        .agg([
            len().cast(DataType::Int64).alias(CUSTOMERS),
            // Sorted before summing, so reruns give the same bits.
            mean_sorted(ACTUAL),
            mean_sorted(PREDICTED),
            mean_sorted(NAIVE),
        ])
        .sort([CALIBRATION_FREQUENCY], SortMultipleOptions::default())
        // Collected here, by the in-memory engine whatever `engine` says: the
        // streaming engine adds a group's values in the order its morsels arrive, so
        // two runs gave means that differed in the last bit.
        .collect()?
        .lazy();
    Ok(Holdout { table, summary })
}

fn mean_sorted(name: &str) -> Expr {
    (col(name).sort(SortOptions::default()).sum() / len().cast(DataType::Float64)).alias(name)
}

/// The table's columns with no rows, when no holdout is configured.
pub fn empty_table() -> LazyFrame {
    DataFrame::new_infer_height(vec![
        Column::new(CALIBRATION_FREQUENCY.into(), Vec::<String>::new()),
        Column::new(CUSTOMERS.into(), Vec::<i64>::new()),
        Column::new(ACTUAL.into(), Vec::<f64>::new()),
        Column::new(PREDICTED.into(), Vec::<f64>::new()),
        Column::new(NAIVE.into(), Vec::<f64>::new()),
    ])
    .map(IntoLazy::lazy)
    .unwrap_or_default()
}

/// The kpis columns: holdout_days and each predictor's accuracy (null without a holdout).
pub fn kpi_columns(summary: Option<HoldoutSummary>) -> Vec<Expr> {
    let number = |v: Option<f64>| v.map_or_else(|| lit(NULL).cast(DataType::Float64), lit);
    let mut columns = vec![
        summary
            .map_or_else(|| lit(NULL), |s| lit(s.days as i64))
            .cast(DataType::Int64)
            .alias(HOLDOUT_DAYS),
    ];
    for predictor in PREDICTORS {
        let accuracy = summary.map(|s| if predictor == "model" { s.model } else { s.naive });
        let values = [
            accuracy.map(|a| a.mae),
            accuracy.map(|a| a.rmse),
            accuracy.and_then(|a| a.aggregate_error_pct),
            accuracy.and_then(|a| a.rank_correlation),
        ];
        for (measure, value) in MEASURES.iter().zip(values) {
            columns.push(number(value).alias(format!("{predictor}_holdout_{measure}")));
        }
    }
    columns
}

/// The `clv_holdout` table's columns and types, in order (`clv.holdout_days`).
pub fn schema() -> Schema {
    crate::schema::parse(
        "calibration_frequency str, customers i64, actual_purchases f64, predicted_purchases f64, \
         naive_purchases f64",
    )
}
