//! SPEC §4: RFM scores and segments.
//!
//! Scores use SQL `RANK()` semantics (ties share the lowest 1-based rank) on
//! exact values: recency in whole days, frequency in purchases, monetary in
//! integer micro-units (or the exact ratio for `monetary: average`), so equal
//! values always get equal scores. score = 1 + floor(B × (rank − 1) / N), in
//! integers; recency is ranked descending so the most recent customers get B.

use polars::prelude::*;

use super::clv::{fixed_mean, money_sum};
use super::ratio;
use crate::config::{Monetary, RfmConfig, SegmentRule};
use crate::schema::customers::{FORMULA_CLV, HISTORICAL_CLV, RECENCY_DAYS};
use crate::schema::internal::REVENUE_MICROS;
use crate::schema::model::{P_ALIVE, PREDICTED_CLV};
use crate::schema::rfm::*;
use crate::schema::{CUSTOMERS, ORDERS, REVENUE};

fn score(rank: Expr, bins: u32, customers: u64) -> Expr {
    let rank = rank.cast(DataType::Int64);
    lit(1i64) + (lit(bins as i64) * (rank - lit(1i64))).floor_div(lit(customers.max(1) as i64))
}

fn rank(values: Expr, descending: bool) -> Expr {
    values.rank(
        RankOptions {
            method: RankMethod::Min,
            descending,
        },
        None,
    )
}

/// Adds `r_score, f_score, m_score, rfm_cell, fm, segment` to a customer frame
/// (needs `recency_days`, `orders`, `__revenue_micros`); `count` is the number of rows (N).
pub fn rfm_scores(customers: LazyFrame, config: &RfmConfig, count: u64) -> LazyFrame {
    let monetary = match config.monetary {
        Monetary::Total => col(REVENUE_MICROS),
        // Equal ratios of integers give bit-identical doubles, so ties stay ties.
        Monetary::Average => {
            col(REVENUE_MICROS).cast(DataType::Float64) / col(ORDERS).cast(DataType::Float64)
        }
    };
    let bins = config.bins;
    customers
        .with_columns([
            score(rank(col(RECENCY_DAYS), true), bins, count).alias(R_SCORE),
            score(rank(col(ORDERS), false), bins, count).alias(F_SCORE),
            score(rank(monetary, false), bins, count).alias(M_SCORE),
        ])
        .with_columns([(col(F_SCORE) + col(M_SCORE) + lit(1i64))
            .floor_div(lit(2i64))
            .alias(FM)])
        .with_columns(cell_columns(&config.segments, bins))
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
pub fn collapsed_bins(customers: &DataFrame, config: &RfmConfig) -> PolarsResult<Vec<String>> {
    use crate::schema::customers::AOV;
    let monetary = match config.monetary {
        Monetary::Total => REVENUE_MICROS,
        Monetary::Average => AOV,
    };
    let dimensions = [
        ("r_score", RECENCY_DAYS),
        ("f_score", ORDERS),
        ("m_score", monetary),
    ];
    let counts = customers
        .clone()
        .lazy()
        .select(
            dimensions
                .iter()
                .map(|(_, column)| col(*column).n_unique().cast(DataType::Int64).alias(*column))
                .collect::<Vec<_>>(),
        )
        .collect()?;
    let mut warnings = Vec::new();
    for (score, column) in dimensions {
        let distinct = counts.column(column)?.i64()?.get(0).unwrap_or(0);
        if distinct == 1 {
            let shown = if column == REVENUE_MICROS {
                "revenue"
            } else {
                column
            };
            warnings.push(format!(
                "every customer has the same {shown}: {score} is 1 for everyone (the RFM bins collapse)"
            ));
        }
    }
    Ok(warnings)
}

/// Mean of a micro-unit column in currency, from its exact integer sum.
fn mean_money(micros_column: &str) -> Expr {
    money_sum(micros_column) / len().cast(DataType::Float64)
}

/// `rfm_segments`: one row per non-empty segment, sorted by segment.
pub fn rfm_segments(customers: LazyFrame) -> LazyFrame {
    customers
        .group_by([col(SEGMENT)])
        .agg([
            len().cast(DataType::Int64).alias(CUSTOMERS),
            col(REVENUE_MICROS).sum().alias(REVENUE_MICROS),
            col(RECENCY_DAYS)
                .cast(DataType::Float64)
                .mean()
                .alias(MEAN_RECENCY_DAYS),
            col(ORDERS).cast(DataType::Float64).mean().alias(MEAN_ORDERS),
            // Money means from exact integer sums, so reruns give identical bits.
            mean_money(REVENUE_MICROS).alias(MEAN_REVENUE),
            fixed_mean(HISTORICAL_CLV).alias(MEAN_HISTORICAL_CLV),
            fixed_mean(FORMULA_CLV).alias(MEAN_FORMULA_CLV),
            fixed_mean(PREDICTED_CLV).alias(MEAN_PREDICTED_CLV),
            fixed_mean(P_ALIVE).alias(crate::schema::clv::MEAN_P_ALIVE),
        ])
        .select([
            col(SEGMENT),
            col(CUSTOMERS),
            ratio(col(CUSTOMERS), col(CUSTOMERS).sum()).alias(SHARE_OF_CUSTOMERS),
            super::to_currency(col(REVENUE_MICROS)).alias(REVENUE),
            ratio(col(REVENUE_MICROS), col(REVENUE_MICROS).sum()).alias(SHARE_OF_REVENUE),
            col(MEAN_RECENCY_DAYS),
            col(MEAN_ORDERS),
            col(MEAN_REVENUE),
            col(MEAN_HISTORICAL_CLV),
            col(MEAN_FORMULA_CLV),
            col(MEAN_PREDICTED_CLV),
            col(crate::schema::clv::MEAN_P_ALIVE),
        ])
        .sort([SEGMENT], SortMultipleOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_segments;

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
