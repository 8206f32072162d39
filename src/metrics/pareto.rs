//! SPEC §5: Pareto shares, the Lorenz curve, Gini and ABC classes.
//!
//! Over the N⁺ customers with revenue > 0, ranked by revenue descending, ties by
//! customer_id ascending (rank 1 = best). Counts are exact integers and every
//! threshold compares integer products in Int128 (`cum × den ≥ num × total`),
//! so results do not depend on float rounding or summation order.

use polars::prelude::*;

use super::ratio;
use crate::config::{Fraction, ParetoConfig};
use crate::schema::customers::ABC_CLASS;
use crate::schema::internal::REVENUE_MICROS as REV;
use crate::schema::kpis::{CUSTOMERS_FOR_80PCT, CUSTOMERS_FOR_80PCT_SHARE, GINI, TOP_20PCT_REVENUE_SHARE};
use crate::schema::pareto::{CUSTOMER_SHARE, TOP_SHARE};
use crate::schema::{CUSTOMER_ID, CUSTOMERS, REVENUE_SHARE};

const RANK: &str = "__rank";
const CUM: &str = "__cum_revenue";

pub struct ParetoFrames {
    /// `top_share, customers, revenue_share`, one row per configured share.
    pub pareto: LazyFrame,
    /// `customer_share, customers, revenue_share`, `lorenz_points + 1` rows.
    pub lorenz: LazyFrame,
    /// One row: gini, top_20pct_revenue_share, customers_for_80pct and its share.
    pub summary: LazyFrame,
}

/// From [`ranked`] (collect it first when several tables use it: its sort is the
/// expensive part).
pub fn pareto(ranked: LazyFrame, config: &ParetoConfig) -> ParetoFrames {
    let shares = config
        .top_shares
        .iter()
        .map(|share| top_share_row(ranked.clone(), *share))
        .collect::<Vec<_>>();
    let pareto = concat(shares, UnionArgs::default())
        .unwrap_or_else(|_| ranked.clone().select([lit(NULL).alias(TOP_SHARE)]))
        .sort([TOP_SHARE], SortMultipleOptions::default());

    let total = || col(REV).sum();
    let n = || len().cast(DataType::Int64);
    let int128 = |e: Expr| e.cast(DataType::Int128);
    let eighty = Fraction { num: 8, den: 10 };
    let customers_for_80pct = col(RANK)
        .filter(
            (int128(col(CUM)) * int128(lit(eighty.den as i64)))
                .gt_eq(int128(total()) * int128(lit(eighty.num as i64))),
        )
        .min();
    // Gini with x ascending and i 1-based: ascending position = N − rank + 1.
    let weighted = (int128(n() - col(RANK) + lit(1i64)) * int128(col(REV))).sum();
    let n_f = || n().cast(DataType::Float64);
    let gini = when(n().gt(lit(0i64)))
        .then(
            lit(2.0) * weighted.cast(DataType::Float64) / (n_f() * total().cast(DataType::Float64))
                - (n_f() + lit(1.0)) / n_f(),
        )
        .otherwise(lit(NULL).cast(DataType::Float64));
    let summary = ranked.clone().select([
        gini.alias(GINI),
        share_of_top(Fraction { num: 2, den: 10 }).alias(TOP_20PCT_REVENUE_SHARE),
        customers_for_80pct
            .clone()
            .cast(DataType::Int64)
            .alias(CUSTOMERS_FOR_80PCT),
        ratio(customers_for_80pct, n()).alias(CUSTOMERS_FOR_80PCT_SHARE),
    ]);

    ParetoFrames {
        pareto,
        lorenz: lorenz(ranked.clone(), config.lorenz_points),
        summary,
    }
}

/// The revenue of the customers with revenue > 0, best first, with its rank and
/// cumulative revenue. Values only: which of several tied customers comes first
/// changes no share, so the sort is of one integer column (with customer_id as the
/// tie-break, a two-column sort took 0.95 s at 6.2M customers, 14 times as long; ties
/// are many, money being cents). [`abc_boundaries`] names the customers at the class
/// boundaries. Expects a `__revenue_micros` column.
pub fn ranked(customers: LazyFrame) -> LazyFrame {
    customers
        .select([col(REV)])
        .filter(col(REV).gt(lit(0i64)))
        .sort([REV], SortMultipleOptions::default().with_order_descending(true))
        .with_row_index(RANK, Some(1))
        .with_columns([
            col(RANK).cast(DataType::Int64),
            col(REV).cum_sum(false).alias(CUM),
        ])
}

/// The cumulative revenue of the top `count` customers (0 for none), picked by
/// position: one value per count, no pass over the ranking.
fn revenue_of_top(count: Expr) -> Expr {
    let position = when(count.clone().gt(lit(0i64)))
        .then(count - lit(1i64))
        .otherwise(lit(NULL).cast(DataType::Int64));
    col(CUM).gather(position, true).fill_null(lit(0i64))
}

/// ceil(num × N / den), exactly.
fn top_count(share: Fraction) -> Expr {
    (lit(share.num as i64) * len().cast(DataType::Int64) + lit(share.den as i64 - 1))
        .floor_div(lit(share.den as i64))
}

/// Revenue share of the top ceil(p × N⁺) customers; null without revenue.
fn share_of_top(share: Fraction) -> Expr {
    ratio(revenue_of_top(top_count(share)), col(REV).sum())
}

fn top_share_row(ranked: LazyFrame, share: Fraction) -> LazyFrame {
    ranked.select([
        lit(share.value()).alias(TOP_SHARE),
        top_count(share).alias(CUSTOMERS),
        share_of_top(share).alias(REVENUE_SHARE),
    ])
}

/// Point i: customer_share = i / points; the bottom m = floor(i × N⁺ / points)
/// customers (ascending, ties by customer_id descending — exactly the reverse of
/// the ranking) hold total − cum(N⁺ − m) of the revenue.
fn lorenz(ranked: LazyFrame, points: u32) -> LazyFrame {
    let points = points as i64;
    let i = lit(Series::new("__i".into(), (0..=points).collect::<Vec<i64>>()));
    let bottom = (i.clone() * len().cast(DataType::Int64)).floor_div(lit(points));
    let top = len().cast(DataType::Int64) - bottom.clone();
    let total = || col(REV).sum();
    ranked.select([
        (i.cast(DataType::Float64) / lit(points as f64)).alias(CUSTOMER_SHARE),
        bottom.alias(CUSTOMERS),
        ratio(total() - revenue_of_top(top), total()).alias(REVENUE_SHARE),
    ])
}

/// The last customer of classes A and B in the ranking (one row: their revenue and
/// customer_id, null when the class is empty); see [`with_abc_class`].
/// cum_before = revenue of all customers ranked above; A if its share < a, B if < b.
///
/// `ranked` ([`ranked`]) gives each class's last revenue and how many of the
/// customers tied at it the class takes; those are the first of the tie by
/// customer_id, found among `customers` (`customer_id`, `__revenue_micros`).
pub fn abc_boundaries(
    ranked: LazyFrame,
    customers: LazyFrame,
    config: &ParetoConfig,
) -> PolarsResult<LazyFrame> {
    let int128 = |e: Expr| e.cast(DataType::Int128);
    let before = || int128(col(CUM) - col(REV));
    let below = |f: Fraction| {
        (before() * int128(lit(f.den as i64))).lt(int128(col(REV).sum()) * int128(lit(f.num as i64)))
    };
    let class_end = |class: &str, f: Fraction| {
        let last_revenue = col(REV).filter(below(f)).last();
        ranked.clone().select([
            lit(class).alias("__class"),
            last_revenue.clone().alias(REV),
            below(f)
                .and(col(REV).eq(last_revenue))
                .sum()
                .cast(DataType::Int64)
                .alias("__tied_in_class"),
        ])
    };
    let ends = concat(
        [class_end("a", config.abc.a), class_end("b", config.abc.b)],
        UnionArgs::default(),
    )?;
    // An empty class's revenue is null and joins no customer.
    let last_ids = customers
        .select([col(CUSTOMER_ID), col(REV)])
        .join(ends, [col(REV)], [col(REV)], JoinArgs::new(JoinType::Inner))
        .group_by([col("__class")])
        .agg([
            col(REV).first(),
            col(CUSTOMER_ID)
                .sort(SortOptions::default())
                .get(col("__tied_in_class").first() - lit(1i64), false),
        ]);
    let of = |class: &str, name: &str| col(name).filter(col("__class").eq(lit(class))).first();
    Ok(last_ids.select([
        of("a", REV).alias("__a_revenue"),
        of("a", CUSTOMER_ID).alias("__a_id"),
        of("b", REV).alias("__b_revenue"),
        of("b", CUSTOMER_ID).alias("__b_id"),
    ]))
}

/// Adds `abc_class` to the customer table, from the collected [`abc_boundaries`]:
/// A, B, else C (and C without revenue). cum_before grows down the ranking, so each
/// class is a prefix of it: a customer is in class A exactly when ranked at or above
/// A's last customer, i.e. when (revenue, customer_id) comes first in the ranking's
/// order. The boundaries enter as literals: no join back from the ranking (0.2 s at
/// 2M customers), and no cross join, which copied every column of the table.
pub fn with_abc_class(customers: LazyFrame, boundaries: &DataFrame) -> PolarsResult<LazyFrame> {
    let value = |name: &str| super::literal_at(boundaries.column(name)?, 0);
    let at_or_above = |revenue: &str, id: &str| -> PolarsResult<Expr> {
        let (revenue, id) = (value(revenue)?, value(id)?);
        Ok(col(REV)
            .gt(revenue.clone())
            .or(col(REV).eq(revenue).and(col(CUSTOMER_ID).lt_eq(id)))
            .fill_null(lit(false)))
    };
    Ok(
        customers.with_columns([when(at_or_above("__a_revenue", "__a_id")?)
            .then(lit("A"))
            .when(at_or_above("__b_revenue", "__b_id")?)
            .then(lit("B"))
            .otherwise(lit("C"))
            .alias(ABC_CLASS)]),
    )
}

/// The `pareto` table's columns and types, in order (SPEC §5).
pub fn schema() -> Schema {
    crate::schema::parse("top_share f64, customers i64, revenue_share f64")
}

/// The `lorenz` table's columns and types, in order (SPEC §5).
pub fn lorenz_schema() -> Schema {
    crate::schema::parse("customer_share f64, customers i64, revenue_share f64")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AbcConfig;

    fn config(a: Fraction, b: Fraction, points: u32) -> ParetoConfig {
        ParetoConfig {
            top_shares: vec![
                Fraction { num: 1, den: 100 },
                Fraction { num: 1, den: 3 },
                Fraction { num: 1, den: 1 },
            ],
            lorenz_points: points,
            abc: AbcConfig { a, b },
        }
    }

    /// Customers 1..=n (their ids in order) with these revenues.
    fn customers(revenue: &[i64]) -> DataFrame {
        df!(
            CUSTOMER_ID => (1..=revenue.len() as u32).collect::<Vec<_>>(),
            REV => revenue,
        )
        .unwrap()
    }

    fn classes_with(revenue: &[i64], config: &ParetoConfig) -> Vec<String> {
        let customers = customers(revenue);
        let ranked = ranked(customers.clone().lazy()).collect().unwrap();
        let boundaries = abc_boundaries(ranked.lazy(), customers.clone().lazy(), config)
            .unwrap()
            .collect()
            .unwrap();
        let classes = with_abc_class(customers.lazy(), &boundaries)
            .unwrap()
            .collect()
            .unwrap();
        let column = classes.column(ABC_CLASS).unwrap().str().unwrap().clone();
        column.iter().map(|c| c.unwrap().to_string()).collect()
    }

    fn abc_classes(revenue: &[i64]) -> Vec<String> {
        let (a, b) = (Fraction { num: 8, den: 10 }, Fraction { num: 95, den: 100 });
        classes_with(revenue, &config(a, b, 10))
    }

    /// SPEC §5 read literally: customers with revenue > 0 sorted by revenue
    /// descending, ties by customer_id (here the position) ascending.
    fn naive_ranking(revenue: &[i64]) -> Vec<(i64, usize)> {
        let mut ranking: Vec<(i64, usize)> = revenue
            .iter()
            .enumerate()
            .filter(|(_, r)| **r > 0)
            .map(|(i, r)| (*r, i))
            .collect();
        ranking.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        ranking
    }

    fn naive_classes(revenue: &[i64], a: Fraction, b: Fraction) -> Vec<String> {
        let ranking = naive_ranking(revenue);
        let total: i128 = ranking.iter().map(|r| r.0 as i128).sum();
        let below = |before: i128, f: Fraction| before * (f.den as i128) < total * (f.num as i128);
        let mut classes = vec!["C".to_string(); revenue.len()];
        let mut before = 0i128;
        for &(r, i) in &ranking {
            classes[i] = if below(before, a) {
                "A"
            } else if below(before, b) {
                "B"
            } else {
                "C"
            }
            .to_string();
            before += r as i128;
        }
        classes
    }

    #[test]
    fn a_tie_across_a_class_boundary_is_split_by_customer_id() {
        // Ranked 6 (50), then the tie at 10 by id: 2, 3, 4, 7, 9, then the tie at 5:
        // 5, 8. Before them 0, 50, 60, 70, 80, 90, 100 and 105 of 110. A (< 80%)
        // takes 6, 2, 3, 4 and 7 (80/110 = 73%); B (< 95%) takes 9 and 5; 8 (95.5%)
        // is C: each tie is split at a boundary by customer_id.
        let revenue = [0, 10, 10, 10, 5, 50, 10, 5, 10];
        assert_eq!(
            abc_classes(&revenue),
            ["C", "A", "A", "A", "B", "A", "A", "C", "B"]
        );
    }

    #[test]
    fn abc_classes_follow_the_revenue_before_each_customer() {
        // Ranked: customers 2, 1, 3, 4, 5 (4 and 5 tie; the smaller id first), with
        // 0, 70, 90, 96 and 98 of 100 before them: A < 80% ≤ B < 95% ≤ C. Customers
        // without revenue (6, 7) are C.
        assert_eq!(
            abc_classes(&[20, 70, 6, 2, 2, 0, -5]),
            ["A", "A", "B", "C", "C", "C", "C"]
        );
    }

    #[test]
    fn without_revenue_every_customer_is_c() {
        assert_eq!(abc_classes(&[0, -3]), ["C", "C"]);
    }

    proptest::proptest! {
        /// Many ties (revenues from a few values), customers without revenue, and any
        /// class bounds: the classes, top shares and Lorenz points of the values-only
        /// ranking equal those of the literal ranking by (revenue, customer_id).
        #[test]
        fn ranking_by_values_matches_the_literal_ranking(
            revenue in proptest::collection::vec(
                proptest::prop_oneof![-3i64..=0, 1i64..=3, 1i64..=500], 0..40),
            a in 0u64..=100,
            b_above_a in 0u64..=100,
            points in 1u32..12,
        ) {
            let a = Fraction { num: a, den: 100 };
            let b = Fraction { num: (a.num + b_above_a).min(100), den: 100 };
            let config = config(a, b, points);
            proptest::prop_assert_eq!(classes_with(&revenue, &config), naive_classes(&revenue, a, b));

            let ranking = naive_ranking(&revenue);
            let n = ranking.len() as u64;
            let total: i64 = ranking.iter().map(|r| r.0).sum();
            let top = |k: u64| ranking.iter().take(k as usize).map(|r| r.0).sum::<i64>();
            let share = |part: i64| (total > 0).then(|| part as f64 / total as f64);
            let frames = pareto(ranked(customers(&revenue).lazy()), &config);
            let table = frames.pareto.collect().unwrap();
            for (i, f) in config.top_shares.iter().enumerate() {
                let k = (f.num * n).div_ceil(f.den);
                proptest::prop_assert_eq!(table.column(CUSTOMERS).unwrap().get(i).unwrap(), AnyValue::Int64(k as i64));
                let got = table.column(REVENUE_SHARE).unwrap().f64().unwrap().get(i);
                proptest::prop_assert_eq!(got, share(top(k)));
            }
            let lorenz = frames.lorenz.collect().unwrap();
            proptest::prop_assert_eq!(lorenz.height(), points as usize + 1);
            for i in 0..=points as u64 {
                let m = i * n / points as u64;
                let row = i as usize;
                proptest::prop_assert_eq!(lorenz.column(CUSTOMERS).unwrap().get(row).unwrap(), AnyValue::Int64(m as i64));
                let got = lorenz.column(REVENUE_SHARE).unwrap().f64().unwrap().get(row);
                proptest::prop_assert_eq!(got, share(total - top(n - m)));
            }
        }
    }
}
