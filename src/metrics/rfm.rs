//! SPEC §4: RFM scores and segments.
//!
//! Scores use SQL `RANK()` semantics (ties share the lowest 1-based rank) on
//! exact values: recency in whole days, frequency in purchases, monetary in
//! integer micro-units (or the exact ratio for `monetary: average`), so equal
//! values always get equal scores. score = 1 + floor(B × (rank − 1) / N), in
//! integers; recency is ranked descending so the most recent customers get B.
//! The ranks are never materialised: each score's B − 1 step values are read from
//! the sorted columns once ([`rfm_thresholds`]), and scoring compares with them.

use polars::prelude::*;

use super::clv::{mean_from_parts, money_sum, sum_parts, total_parts};
use super::{divide, ratio};
use crate::config::{Monetary, RfmConfig, SegmentRule};
use crate::schema::customers::{FORMULA_CLV, HISTORICAL_CLV, RECENCY_DAYS};
use crate::schema::internal::{REVENUE_MICROS, RFM_ORDERS, RFM_REVENUE_MICROS};
use crate::schema::model::PREDICTED_CLV;
use crate::schema::rfm::*;
use crate::schema::{CUSTOMERS, ORDERS, REVENUE};

/// The columns frequency and monetary count: all orders, or with `rfm.window_days`
/// the window's ([`crate::metrics::customers::customer_aggregates`]).
fn counted(config: &RfmConfig) -> (&'static str, &'static str) {
    match config.window_days {
        None => (ORDERS, REVENUE_MICROS),
        Some(_) => (RFM_ORDERS, RFM_REVENUE_MICROS),
    }
}

/// With `rfm.window_days`, the customers RFM scores: those with a purchase in the
/// window. The others have no scores and the segment [`INACTIVE`].
fn in_window(config: &RfmConfig) -> Option<Expr> {
    config.window_days.map(|_| col(RFM_ORDERS).gt(lit(0i64)))
}

/// The segment of customers with no purchase in `rfm.window_days`.
pub const INACTIVE: &str = "Inactive";

/// How many customers RFM ranks: all of them, or those with a purchase in the window.
pub fn scored_customers(aggregates: &DataFrame, config: &RfmConfig) -> PolarsResult<u64> {
    match config.window_days {
        None => Ok(aggregates.height() as u64),
        Some(_) => Ok(aggregates
            .column(RFM_ORDERS)?
            .as_materialized_series()
            .gt(0)?
            .sum()
            .unwrap_or(0) as u64),
    }
}

/// The frequency RFM ranks: purchases.
fn frequency(config: &RfmConfig) -> Expr {
    col(counted(config).0)
}

/// The monetary value RFM ranks: revenue in micro-units, or the exact ratio.
fn monetary(config: &RfmConfig) -> Expr {
    let (orders, revenue) = counted(config);
    match config.monetary {
        Monetary::Total => col(revenue),
        // Equal ratios of integers give bit-identical doubles, so ties stay ties. No
        // purchase in the window averages 0, with the refunds-only customers.
        Monetary::Average => when(col(orders).gt(lit(0i64)))
            .then(col(revenue).cast(DataType::Float64) / col(orders).cast(DataType::Float64))
            .otherwise(lit(0.0)),
    }
}

/// With c = rank − 1 (the customers ranked strictly ahead), score − 1 =
/// floor(B × c / N) counts the steps s in 1..B with c ≥ ceil(s × N / B). And c ≥ k
/// exactly when the value at 0-based position k − 1 of the column sorted in rank
/// order is strictly ahead of the customer's: these positions' values are the steps.
/// No customer to score (none bought in `rfm.window_days`) has no steps.
fn step_positions(bins: u32, customers: u64) -> Vec<IdxSize> {
    let n = customers;
    if n == 0 {
        return Vec::new();
    }
    (1..bins as u64)
        .map(|s| ((s * n).div_ceil(bins as u64) - 1) as IdxSize)
        .collect()
}

/// The values where each RFM score steps up: one column per score (`r_score`,
/// `f_score`, `m_score`), B − 1 rows. Needs `recency_days`, `orders` and
/// `__revenue_micros` of all customers, of which `count` are scored
/// ([`scored_customers`]). With these, a customer's scores are
/// comparisons with constants ([`rfm_scores`]): no rank over the whole table, so any
/// slice of customers is scored on its own.
pub fn rfm_thresholds(customers: LazyFrame, config: &RfmConfig, count: u64) -> LazyFrame {
    let positions = Series::new("positions".into(), step_positions(config.bins, count));
    let at_steps = |values: Expr, descending: bool, name: &str| {
        values
            .sort(SortOptions::default().with_order_descending(descending))
            .gather(lit(positions.clone()), false)
            .alias(name)
    };
    let customers = match in_window(config) {
        Some(scored) => customers.filter(scored),
        None => customers,
    };
    customers.select([
        at_steps(col(RECENCY_DAYS), RECENCY_RANKED_DESCENDING, R_SCORE),
        at_steps(frequency(config), false, F_SCORE),
        at_steps(monetary(config), false, M_SCORE),
    ])
}

/// Recency is ranked descending: the longest-lapsed customers rank first and score 1.
const RECENCY_RANKED_DESCENDING: bool = true;

/// 1 + the steps ranked strictly ahead of the value: null for a null value, except
/// with no step at all, where the definition's sum is the literal 1 for every row.
///
/// Counted per value in one pass ([`count_steps`]): as one comparison, cast and sum
/// per step over the whole column, the three scores cost 13 passes, each writing a
/// new column (most of the scores stage at 1M customers). The steps' own type is
/// compared; a null step, or a type counted otherwise, takes the comparisons.
fn score(value: Expr, steps: &Column, descending: bool) -> PolarsResult<Expr> {
    let steps = steps.as_materialized_series().clone();
    let counted = matches!(
        steps.dtype(),
        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::Int128 | DataType::Float64
    );
    if steps.null_count() > 0 || !counted {
        return compared_score(value, &steps.into_column(), descending);
    }
    Ok(value.map(
        move |values| {
            let values = values.as_materialized_series();
            let steps = steps.cast(values.dtype())?;
            let scores = match values.dtype() {
                DataType::Int32 => count_steps(values.i32()?, steps.i32()?, descending),
                DataType::Int64 => count_steps(values.i64()?, steps.i64()?, descending),
                DataType::UInt32 => count_steps(values.u32()?, steps.u32()?, descending),
                DataType::Int128 => count_steps(values.i128()?, steps.i128()?, descending),
                DataType::Float64 => count_steps(values.f64()?, steps.f64()?, descending),
                other => polars_bail!(InvalidOperation: "RFM scores of {other} values"),
            };
            Ok(scores.with_name(values.name().clone()).into_column())
        },
        |_, field| Ok(Field::new(field.name().clone(), DataType::Int64)),
    ))
}

/// [`score`] as one comparison per step, summed: the definition.
fn compared_score(value: Expr, steps: &Column, descending: bool) -> PolarsResult<Expr> {
    let mut score = lit(1i64);
    for i in 0..steps.len() {
        let step = super::literal_at(steps, i)?;
        let behind = if descending {
            value.clone().lt(step)
        } else {
            value.clone().gt(step)
        };
        score = score + behind.cast(DataType::Int64);
    }
    Ok(score)
}

/// Per value, 1 + the steps it lies strictly behind (`descending`: below) or ahead
/// of (above), as [`score`]'s comparisons count them: in Polars' total order, where
/// NaN is above every number and equal to itself.
fn count_steps<T>(values: &ChunkedArray<T>, steps: &ChunkedArray<T>, descending: bool) -> Int64Chunked
where
    T: PolarsNumericType,
{
    use polars::polars_utils::total_ord::TotalOrd;
    let steps: Vec<T::Native> = steps.into_no_null_iter().collect();
    if steps.is_empty() {
        // As the comparisons' sum: the literal 1, for a null value too.
        return Int64Chunked::full(values.name().clone(), 1, values.len());
    }
    let behind = |value: T::Native| {
        let passed = if descending {
            steps.iter().filter(|step| value.tot_lt(step)).count()
        } else {
            steps.iter().filter(|step| value.tot_gt(step)).count()
        };
        1 + passed as i64
    };
    if values.null_count() == 0 {
        let scores: Vec<i64> = values.into_no_null_iter().map(behind).collect();
        return Int64Chunked::from_vec(values.name().clone(), scores);
    }
    values.iter().map(|value| value.map(behind)).collect()
}

/// Adds `r_score, f_score, m_score, rfm_cell, fm, segment` to a customer frame
/// (needs `recency_days`, `orders`, `__revenue_micros`); `thresholds` is
/// [`rfm_thresholds`] of all customers. Row by row: a slice gets the same scores.
pub fn rfm_scores(
    customers: LazyFrame,
    config: &RfmConfig,
    thresholds: &DataFrame,
) -> PolarsResult<LazyFrame> {
    let steps = |name: &str| thresholds.column(name);
    let only_scored = |score: Expr| match in_window(config) {
        Some(scored) => when(scored)
            .then(score)
            .otherwise(lit(NULL).cast(DataType::Int64)),
        None => score,
    };
    let [cell, segment] = cell_columns(&config.segments, config.bins);
    let segment = match in_window(config) {
        Some(_) => segment.fill_null(lit(INACTIVE)).alias(SEGMENT),
        None => segment,
    };
    Ok(customers
        .with_columns([
            only_scored(score(
                col(RECENCY_DAYS),
                steps(R_SCORE)?,
                RECENCY_RANKED_DESCENDING,
            )?)
            .alias(R_SCORE),
            only_scored(score(frequency(config), steps(F_SCORE)?, false)?).alias(F_SCORE),
            only_scored(score(monetary(config), steps(M_SCORE)?, false)?).alias(M_SCORE),
        ])
        .with_columns([(col(F_SCORE) + col(M_SCORE) + lit(1i64))
            .floor_div(lit(2i64))
            .alias(FM)])
        .with_columns([cell, segment]))
}

/// `rfm_cell` and `segment` looked up from the B³ possible (r, f, m) cells: the
/// rules are matched once per cell here, not once per customer (11 when/then
/// passes over every customer cost a fifth of a second at 2M customers).
fn cell_columns(rules: &[SegmentRule], bins: u32) -> [Expr; 2] {
    let (mut cells, mut segments) = (Vec::new(), Vec::new());
    for r in 1..=bins {
        for f in 1..=bins {
            for m in 1..=bins {
                let fm = (f + m).div_ceil(2); // = floor((f + m + 1) / 2)
                cells.push(format!("{r}{f}{m}"));
                segments.push(
                    rules
                        .iter()
                        .find(|rule| rule.matches(r, f, m, fm))
                        .map_or(OTHER, |rule| rule.name.as_str())
                        .to_string(),
                );
            }
        }
    }
    let b = bins as i64;
    let index =
        ((col(R_SCORE) - lit(1i64)) * lit(b * b) + (col(F_SCORE) - lit(1i64)) * lit(b) + col(M_SCORE)
            - lit(1i64))
        .cast(DataType::UInt32);
    let lookup = |name: &str, values: Vec<String>| {
        lit(Series::new(name.into(), values))
            .gather(index.clone(), false)
            .alias(name)
    };
    [lookup(RFM_CELL, cells), lookup(SEGMENT, segments)]
}

/// Rules that no score combination can reach because earlier rules take all of
/// their cells: one warning each, naming the rule and the rules that shadow it.
pub fn unreachable_segments(rules: &[SegmentRule], bins: u32) -> Vec<String> {
    let scores = 1..=bins;
    let mut warnings = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let mut reachable = false;
        let mut shadowing = std::collections::BTreeSet::new();
        for r in scores.clone() {
            for f in scores.clone() {
                for m in scores.clone() {
                    let fm = (f + m).div_ceil(2); // = floor((f + m + 1) / 2)
                    if !rule.matches(r, f, m, fm) {
                        continue;
                    }
                    match rules[..i].iter().position(|earlier| earlier.matches(r, f, m, fm)) {
                        Some(j) => {
                            shadowing.insert(j);
                        }
                        None => reachable = true,
                    }
                }
            }
        }
        if !reachable {
            let names: Vec<String> = shadowing
                .iter()
                .map(|&j| format!("rfm.segments[{j}] `{}`", rules[j].name))
                .collect();
            let why = if names.is_empty() {
                "its ranges match no score combination".to_string()
            } else {
                format!(
                    "every score combination it matches is taken first by {}",
                    names.join(", ")
                )
            };
            warnings.push(format!(
                "segment rule rfm.segments[{i}] `{}` can never match: {why}",
                rule.name
            ));
        }
    }
    warnings
}

/// Warnings for RFM dimensions with one value among all customers (every customer
/// bought once, say): equal values get equal scores (SPEC §4), so everyone gets 1.
pub fn collapsed_bins(customers: LazyFrame, config: &RfmConfig) -> PolarsResult<Vec<String>> {
    let monetary_name = match config.monetary {
        Monetary::Total => "revenue",
        Monetary::Average => "aov",
    };
    let window = config
        .window_days
        .map(|days| format!(" in the last {days} days (rfm.window_days)"))
        .unwrap_or_default();
    let dimensions = [
        (R_SCORE, col(RECENCY_DAYS), RECENCY_DAYS.to_string()),
        (F_SCORE, frequency(config), format!("{ORDERS}{window}")),
        (M_SCORE, monetary(config), format!("{monetary_name}{window}")),
    ];
    let customers = match in_window(config) {
        Some(scored) => customers.filter(scored),
        None => customers,
    };
    let counts = customers
        .select(
            dimensions
                .iter()
                .map(|(score, value, _)| value.clone().n_unique().cast(DataType::Int64).alias(*score))
                .collect::<Vec<_>>(),
        )
        .collect()?;
    let mut warnings = Vec::new();
    for (score, _, shown) in dimensions {
        let distinct = counts.column(score)?.i64()?.get(0).unwrap_or(0);
        if distinct == 1 {
            warnings.push(format!(
                "every customer has the same {shown}: {score} is 1 for everyone (the RFM bins collapse)"
            ));
        }
    }
    Ok(warnings)
}

/// The columns of the CLV means in `rfm_segments`.
const CLV_COLUMNS: [&str; 4] = [
    HISTORICAL_CLV,
    FORMULA_CLV,
    PREDICTED_CLV,
    crate::schema::model::P_ALIVE,
];

/// Per segment, the counts and exact sums `rfm_segments` is made of: integer sums,
/// and fixed-point sums of the CLV columns. They add up over any split of the
/// customers, so they can be taken a slice of customers at a time and stacked.
pub fn segment_sums(customers: LazyFrame) -> LazyFrame {
    let mut aggs = vec![
        len().cast(DataType::Int64).alias(CUSTOMERS),
        col(REVENUE_MICROS).sum().alias(REVENUE_MICROS),
        col(RECENCY_DAYS).cast(DataType::Int64).sum().alias(RECENCY_DAYS),
        col(ORDERS).cast(DataType::Int64).sum().alias(ORDERS),
    ];
    aggs.extend(CLV_COLUMNS.into_iter().flat_map(sum_parts));
    customers.group_by([col(SEGMENT)]).agg(aggs)
}

/// `rfm_segments`: one row per non-empty segment, sorted by segment, from
/// [`segment_sums`] of all customers (or of slices of them, stacked). Means come
/// from exact sums, so reruns and any split give identical bits.
pub fn rfm_segments(sums: LazyFrame) -> LazyFrame {
    let total = |name: &str| col(name).sum();
    let count = || total(CUSTOMERS).cast(DataType::Float64);
    let mut aggs = vec![
        total(CUSTOMERS).alias(CUSTOMERS),
        total(REVENUE_MICROS).alias(REVENUE_MICROS),
        divide(total(RECENCY_DAYS).cast(DataType::Float64), count()).alias(MEAN_RECENCY_DAYS),
        divide(total(ORDERS).cast(DataType::Float64), count()).alias(MEAN_ORDERS),
        divide(money_sum(REVENUE_MICROS), count()).alias(MEAN_REVENUE),
    ];
    aggs.extend(CLV_COLUMNS.into_iter().flat_map(total_parts));
    let mut columns = vec![
        col(SEGMENT),
        col(CUSTOMERS),
        ratio(col(CUSTOMERS), col(CUSTOMERS).sum()).alias(SHARE_OF_CUSTOMERS),
        super::to_currency(col(REVENUE_MICROS)).alias(REVENUE),
        ratio(col(REVENUE_MICROS), col(REVENUE_MICROS).sum()).alias(SHARE_OF_REVENUE),
        col(MEAN_RECENCY_DAYS),
        col(MEAN_ORDERS),
        col(MEAN_REVENUE),
    ];
    let means = [
        MEAN_HISTORICAL_CLV,
        MEAN_FORMULA_CLV,
        MEAN_PREDICTED_CLV,
        crate::schema::clv::MEAN_P_ALIVE,
    ];
    for (name, mean) in CLV_COLUMNS.into_iter().zip(means) {
        columns.push(mean_from_parts(name).alias(mean));
    }
    sums.group_by([col(SEGMENT)])
        .agg(aggs)
        .select(columns)
        .sort([SEGMENT], SortMultipleOptions::default())
}

/// The `rfm_segments` table's columns and types, in order (SPEC §4).
pub fn segments_schema() -> Schema {
    crate::schema::parse(
        "segment str, customers i64, share_of_customers f64, revenue f64, share_of_revenue f64, \
         mean_recency_days f64, mean_orders f64, mean_revenue f64, mean_historical_clv f64, \
         mean_formula_clv f64, mean_predicted_clv f64, mean_p_alive f64",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_segments;

    /// Scores from the step values against SQL RANK() counted naively.
    fn scores_match_ranks(rows: &[(i64, i64, i64)], bins: u32, monetary: Monetary) {
        let n = rows.len() as u64;
        let customers = df!(
            RECENCY_DAYS => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            ORDERS => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            REVENUE_MICROS => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )
        .unwrap();
        let config = RfmConfig {
            bins,
            monetary,
            window_days: None,
            segments: default_segments(),
        };
        let steps = rfm_thresholds(customers.clone().lazy(), &config, n)
            .collect()
            .unwrap();
        let scored = rfm_scores(customers.lazy(), &config, &steps)
            .unwrap()
            .collect()
            .unwrap();
        let naive = |ahead: usize| 1 + (bins as u64 * ahead as u64 / n) as i64;
        let money = |r: &(i64, i64, i64)| match monetary {
            Monetary::Total => r.2 as f64,
            Monetary::Average => r.2 as f64 / r.1 as f64,
        };
        for (i, row) in rows.iter().enumerate() {
            let r = naive(rows.iter().filter(|o| o.0 > row.0).count());
            let f = naive(rows.iter().filter(|o| o.1 < row.1).count());
            let m = naive(rows.iter().filter(|o| money(o) < money(row)).count());
            let got = |name: &str| scored.column(name).unwrap().i64().unwrap().get(i);
            assert_eq!(
                (got(R_SCORE), got(F_SCORE), got(M_SCORE)),
                (Some(r), Some(f), Some(m)),
                "row {i} of {rows:?}, {bins} bins"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn step_scores_equal_rank_scores(
            rows in proptest::collection::vec((0i64..20, 1i64..6, -5i64..40), 1..60),
            bins in 2u32..=9,
            average in proptest::bool::ANY,
        ) {
            let monetary = if average { Monetary::Average } else { Monetary::Total };
            scores_match_ranks(&rows, bins, monetary);
        }
    }

    /// The scores counted per value equal the comparisons summed, for each type
    /// counted, nulls, equal values and steps in any order.
    fn counted_scores_match_compared(values: Series, steps: Series) {
        for descending in [false, true] {
            let frame = DataFrame::new(values.len(), vec![values.clone().into_column()]).unwrap();
            let scored = |expr: Expr| {
                frame
                    .clone()
                    .lazy()
                    // With no step the comparisons leave the literal 1 (Int32),
                    // broadcast to every row.
                    .with_columns([expr.cast(DataType::Int64).alias("score")])
                    .collect()
                    .unwrap()
                    .column("score")
                    .unwrap()
                    .i64()
                    .unwrap()
                    .clone()
            };
            let steps = steps.clone().into_column();
            let counted = scored(score(col("v"), &steps, descending).unwrap());
            let compared = scored(compared_score(col("v"), &steps, descending).unwrap());
            assert_eq!(
                counted.iter().collect::<Vec<_>>(),
                compared.iter().collect::<Vec<_>>(),
                "{values:?} against {steps:?}, descending {descending}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn counted_scores_equal_compared_scores(
            values in proptest::collection::vec(proptest::option::weighted(0.9, -6i64..6), 0..40),
            steps in proptest::collection::vec(-6i64..6, 0..6),
        ) {
            counted_scores_match_compared(
                Series::new("v".into(), &values),
                Series::new("s".into(), &steps),
            );
            let wide = |x: i64| i128::from(x) << 70;
            counted_scores_match_compared(
                Series::new("v".into(), values.iter().map(|v| v.map(wide)).collect::<Vec<_>>()),
                Series::new("s".into(), steps.iter().map(|&s| wide(s)).collect::<Vec<_>>()),
            );
            counted_scores_match_compared(
                Series::new("v".into(), values.iter().map(|v| v.map(|x| x as f64 / 4.0)).collect::<Vec<_>>()),
                Series::new("s".into(), steps.iter().map(|&s| s as f64 / 4.0).collect::<Vec<_>>()),
            );
            let unsigned = |x: i64| (x + 6) as u32;
            counted_scores_match_compared(
                Series::new("v".into(), values.iter().map(|v| v.map(unsigned)).collect::<Vec<_>>()),
                Series::new("s".into(), steps.iter().map(|&s| unsigned(s)).collect::<Vec<_>>()),
            );
        }
    }

    /// NaN values and steps score as the comparisons do.
    #[test]
    fn nan_scores_as_compared() {
        counted_scores_match_compared(
            Series::new("v".into(), [Some(f64::NAN), None, Some(1.0), Some(-0.0)]),
            Series::new("s".into(), [0.0, f64::NAN, 2.0]),
        );
    }

    /// A null step (no value there) takes the comparisons: every score is null.
    #[test]
    fn a_null_step_nulls_the_scores() {
        counted_scores_match_compared(
            Series::new("v".into(), [Some(1i64), None, Some(3)]),
            Series::new("s".into(), [Some(2i64), None]),
        );
    }

    #[test]
    fn the_default_map_has_no_unreachable_segment() {
        assert!(unreachable_segments(&default_segments(), 5).is_empty());
    }

    #[test]
    fn a_shadowed_rule_is_named_with_its_shadow() {
        let rule = |name: &str, r: (u32, u32)| SegmentRule {
            name: name.into(),
            r: Some(r),
            f: None,
            m: None,
            fm: None,
        };
        let rules = vec![
            rule("Recent", (3, 5)),
            rule("Very recent", (5, 5)),
            rule("Old", (1, 2)),
        ];
        assert_eq!(
            unreachable_segments(&rules, 5),
            vec![
                "segment rule rfm.segments[1] `Very recent` can never match: every score combination it matches is taken first by rfm.segments[0] `Recent`"
            ]
        );
    }
}
