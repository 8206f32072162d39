//! SPEC §6.1–6.2 and `clv_by_segment`: historical and rule-of-thumb CLV.
//!
//! formula_clv = aov × purchases per year × expected lifetime × margin, with
//! purchases per year = orders / max(tenure_days, min_tenure_days) × 365.25 and
//! expected lifetime = min(1 / annual_churn_rate, max_lifetime_years) (the cap
//! when nobody churned). annual_churn_rate is the §7 KPI, over all customers,
//! passed in as a number by the pipeline.

use polars::prelude::*;
use rayon::prelude::*;

use crate::config::{ClvConfig, Dimension};
use crate::schema::clv::*;
use crate::schema::customers::{AOV, FORMULA_CLV, HISTORICAL_CLV, TENURE_DAYS};
use crate::schema::internal::{GROSS_MARGIN_MICROS, REVENUE_MICROS};
use crate::schema::model::{P_ALIVE, PREDICTED_CLV};
use crate::schema::{CUSTOMERS, ORDERS, REVENUE};

use super::ratio;

/// CLV values in units of 10⁻¹² currency, Int128: fine enough that a group mean
/// stays within 1e-9 of the exact one, coarse enough to add exactly.
pub const FIXED_SCALE: f64 = 1e12;

/// A CLV column in fixed point (Int128).
pub fn fixed(currency: &str) -> Expr {
    (col(currency) * lit(FIXED_SCALE) + lit(0.5))
        .floor()
        .cast(DataType::Int128)
}

/// A CLV column's partial sums over some customers: its fixed-point sum and its
/// count of values. Integers, so they add up over any split of the customers: the
/// segment tables take them a slice of customers at a time and total them.
pub fn sum_parts(currency: &str) -> [Expr; 2] {
    [
        fixed(currency).sum().alias(fixed_sum_name(currency)),
        col(currency)
            .count()
            .cast(DataType::Int64)
            .alias(count_name(currency)),
    ]
}

/// The totals of stacked [`sum_parts`], in a group-by of them.
pub fn total_parts(currency: &str) -> [Expr; 2] {
    [
        col(fixed_sum_name(currency)).sum(),
        col(count_name(currency)).sum(),
    ]
}

/// From totalled [`sum_parts`]: the column's sum in currency, over the customers that
/// have a value (predicted_clv and p_alive are null without the model); null when
/// none has one.
pub fn sum_from_parts(currency: &str) -> Expr {
    when(col(count_name(currency)).gt(lit(0)))
        .then(col(fixed_sum_name(currency)).cast(DataType::Float64) / lit(FIXED_SCALE))
        .otherwise(lit(NULL).cast(DataType::Float64))
}

/// From totalled [`sum_parts`]: the column's mean over the customers that have a
/// value; null, not NaN, when none has one.
pub fn mean_from_parts(currency: &str) -> Expr {
    ratio(sum_from_parts(currency), col(count_name(currency)))
}

pub(crate) fn fixed_sum_name(name: &str) -> String {
    format!("__{name}_fixed")
}

pub(crate) fn count_name(name: &str) -> String {
    format!("__{name}_count")
}

/// The exact sum of a micro-unit column, in currency.
pub fn money_sum(micros_column: &str) -> Expr {
    super::to_currency(col(micros_column).sum())
}

/// min(1 / annual_churn_rate, cap); the cap when nobody churned.
pub fn expected_lifetime_years(annual_churn_rate: f64, cap: f64) -> f64 {
    if annual_churn_rate > 0.0 {
        (1.0 / annual_churn_rate).min(cap)
    } else {
        cap
    }
}

/// Adds `historical_clv` and `formula_clv` to the customer table; `annual_churn_rate`
/// is the §7 KPI over the same customers.
///
/// With per-line margins (`__gross_margin_micros`, from `input.columns.cost` or
/// `margin`), each customer's own margin replaces the `clv.margin` rate:
/// historical_clv is the gross margin, formula_clv uses the margin per order for
/// aov × margin, and predicted_clv (computed on revenue, margin 1) is scaled by the
/// customer's margin rate, gross margin / revenue, or `clv.margin` when the revenue
/// is not positive.
pub fn customer_clv(
    customers: LazyFrame,
    config: &ClvConfig,
    min_tenure_days: u32,
    annual_churn_rate: f64,
    has_margin: bool,
) -> LazyFrame {
    let margin = lit(config.margin);
    let lifetime = lit(expected_lifetime_years(
        annual_churn_rate,
        config.max_lifetime_years,
    ));
    let tenure = when(col(TENURE_DAYS).lt(lit(min_tenure_days as i64)))
        .then(lit(min_tenure_days as i64))
        .otherwise(col(TENURE_DAYS));
    let purchases_per_year =
        col(ORDERS).cast(DataType::Float64) / tenure.cast(DataType::Float64) * lit(365.25);
    if !has_margin {
        return customers.with_columns([
            (col(REVENUE) * margin.clone()).alias(HISTORICAL_CLV),
            (col(AOV) * purchases_per_year * lifetime * margin).alias(FORMULA_CLV),
        ]);
    }
    let gross = || super::to_currency(col(GROSS_MARGIN_MICROS));
    let rate = when(col(REVENUE_MICROS).gt(lit(0i64)))
        .then(col(GROSS_MARGIN_MICROS).cast(DataType::Float64) / col(REVENUE_MICROS).cast(DataType::Float64))
        .otherwise(margin);
    let mut columns = vec![
        gross().alias(HISTORICAL_CLV),
        (gross() / col(ORDERS).cast(DataType::Float64) * purchases_per_year * lifetime).alias(FORMULA_CLV),
    ];
    if config.model != crate::config::PurchaseModel::None {
        columns.push((col(PREDICTED_CLV) * rate).alias(PREDICTED_CLV));
    }
    customers.with_columns(columns)
}

/// The CLV columns `clv_by_segment` sums, averages and takes medians of.
const CLV_COLUMNS: [&str; 3] = [HISTORICAL_CLV, FORMULA_CLV, PREDICTED_CLV];

/// Row numbers (in the stacked [`median_values`]) of a group's customers.
pub(crate) const ROWS: &str = "__rows";

/// Per value of each dimension, over a slice of customers whose first row is row
/// `first_row` of all customers: the customers, the fixed-point sums and counts of
/// the CLV columns and p_alive, and the row numbers of its customers.
///
/// `clv_by_segment` is made from these parts of every slice, stacked. The sums are
/// integers, so they add up over any split of the customers. The medians need
/// every value; the row numbers (4 bytes a customer per dimension) pick them from
/// [`median_values`] (stored once for all dimensions) instead of copying the values
/// and their text key into every dimension's groups.
pub fn dimension_parts(customers: LazyFrame, dimensions: &[Dimension], first_row: IdxSize) -> LazyFrame {
    let customers = customers.with_row_index(ROWS, Some(first_row));
    let mut aggs = vec![len().cast(DataType::Int64).alias(CUSTOMERS)];
    aggs.extend(CLV_COLUMNS.into_iter().chain([P_ALIVE]).flat_map(sum_parts));
    aggs.push(col(ROWS));
    let parts = dimensions.iter().map(|dimension| {
        // Grouped on the typed column; only the few group keys become text.
        customers
            .clone()
            .group_by([col(dimension.column()).alias(VALUE)])
            .agg(aggs.clone())
            .with_columns([
                col(VALUE).cast(DataType::String),
                lit(dimension.column()).alias(DIMENSION),
            ])
    });
    // An error only for no frames, unreachable: the config requires a dimension.
    concat(parts.collect::<Vec<_>>(), UnionArgs::default()).unwrap_or_else(|_| DataFrame::empty().lazy())
}

/// The values the medians of `clv_by_segment` are taken from, one row per customer
/// in the order of the slices given to [`dimension_parts`].
pub fn median_values(customers: LazyFrame) -> LazyFrame {
    customers.select(CLV_COLUMNS.map(col))
}

/// The `clv_by_segment` table, sorted by dimension and value, from the stacked
/// [`dimension_parts`] of every slice of customers and their stacked [`median_values`].
pub fn clv_by_segment(parts: LazyFrame, values: &DataFrame) -> PolarsResult<LazyFrame> {
    let mut aggs = vec![col(CUSTOMERS).sum()];
    aggs.extend(CLV_COLUMNS.into_iter().chain([P_ALIVE]).flat_map(total_parts));
    // Each group's row numbers stay one list per slice: they are joined inside
    // [`medians_at`], a group at a time, rather than all copied into one list each.
    aggs.push(col(ROWS));
    let mut columns = vec![col(DIMENSION), col(VALUE), col(CUSTOMERS)];
    for name in CLV_COLUMNS {
        columns.push(sum_from_parts(name).alias(format!("{name}_sum")));
        columns.push(mean_from_parts(name).alias(format!("{name}_mean")));
        let values = values.column(name)?.as_materialized_series().clone();
        columns.push(medians_at(col(ROWS), values).alias(format!("{name}_median")));
    }
    columns.push(mean_from_parts(P_ALIVE).alias(MEAN_P_ALIVE));
    Ok(parts
        .group_by([col(DIMENSION), col(VALUE)])
        .agg(aggs)
        .select(columns)
        .sort(
            [DIMENSION, VALUE],
            SortMultipleOptions::default().with_nulls_last(true),
        ))
}

/// For each group's lists of row numbers in `rows` (one list per slice), the median
/// of `values` at those rows (nulls skipped; null when none has a value). Groups run
/// in parallel, each on a copy of its own rows and values only.
fn medians_at(rows: Expr, values: Series) -> Expr {
    let all_rows = ExplodeOptions {
        empty_as_null: false,
        keep_nulls: false,
    };
    rows.map(
        move |rows: Column| {
            let groups = rows.list()?;
            let medians = (0..groups.len())
                .into_par_iter()
                .map(|i| match groups.get_as_series(i) {
                    Some(slices) => {
                        let rows = slices.explode(all_rows)?;
                        Ok(values.take(rows.idx()?)?.median())
                    }
                    None => Ok(None),
                })
                .collect::<PolarsResult<Vec<Option<f64>>>>()?;
            Ok(Float64Chunked::from_iter_options(rows.name().clone(), medians.into_iter()).into_column())
        },
        |_, field| Ok(Field::new(field.name().clone(), DataType::Float64)),
    )
}

/// The `clv_by_segment` table's columns and types, in order (SPEC §6).
pub fn by_segment_schema() -> Schema {
    crate::schema::parse(
        "dimension str, value str, customers i64, historical_clv_sum f64, historical_clv_mean f64, \
         historical_clv_median f64, formula_clv_sum f64, formula_clv_mean f64, \
         formula_clv_median f64, predicted_clv_sum f64, predicted_clv_mean f64, \
         predicted_clv_median f64, mean_p_alive f64",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::rfm::SEGMENT;

    /// Customers: segment, abc_class, then the three CLVs and p_alive (None = null).
    type Row = (
        &'static str,
        Option<&'static str>,
        f64,
        f64,
        Option<f64>,
        Option<f64>,
    );

    fn customers(rows: &[Row]) -> DataFrame {
        df!(
            SEGMENT => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            "abc_class" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            HISTORICAL_CLV => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            FORMULA_CLV => rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            PREDICTED_CLV => rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            P_ALIVE => rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    /// `clv_by_segment` over `rows` cut into slices of `slice` customers.
    fn table(rows: &[Row], slice: usize) -> DataFrame {
        let all = customers(rows);
        let dimensions = [Dimension::Segment, Dimension::AbcClass];
        let (mut parts, mut values) = (Vec::new(), Vec::new());
        for offset in (0..rows.len().max(1)).step_by(slice) {
            let part = all.slice(offset as i64, slice).lazy();
            parts.push(dimension_parts(part.clone(), &dimensions, offset as IdxSize));
            values.push(median_values(part).collect().unwrap());
        }
        let parts = concat(parts, UnionArgs::default()).unwrap();
        let values = crate::io::table::stacked(values).unwrap();
        clv_by_segment(parts, &values).unwrap().collect().unwrap()
    }

    fn f64s(frame: &DataFrame, name: &str) -> Vec<Option<f64>> {
        frame.column(name).unwrap().f64().unwrap().iter().collect()
    }

    #[test]
    fn sums_means_and_medians_by_hand() {
        let rows: [Row; 5] = [
            ("loyal", Some("A"), 10.0, 1.0, Some(4.0), Some(0.5)),
            ("loyal", Some("B"), 30.0, 2.0, None, None),
            ("new", Some("A"), 5.0, 3.0, None, None),
            ("loyal", None, 20.0, 4.0, Some(8.0), Some(1.0)),
            ("loyal", Some("A"), 50.0, 5.0, Some(1.0), Some(0.25)),
        ];
        for slice in [1, 2, 5] {
            let t = table(&rows, slice);
            // Sorted by dimension, then value with nulls last.
            let keys: Vec<(String, Option<String>)> = (0..t.height())
                .map(|i| {
                    let text = |c: &str| t.column(c).unwrap().str().unwrap().get(i).map(str::to_string);
                    (text(DIMENSION).unwrap(), text(VALUE))
                })
                .collect();
            let key = |d: &str, v: Option<&str>| (d.to_string(), v.map(str::to_string));
            assert_eq!(
                keys,
                [
                    key("abc_class", Some("A")),
                    key("abc_class", Some("B")),
                    key("abc_class", None),
                    key("segment", Some("loyal")),
                    key("segment", Some("new")),
                ],
                "slice {slice}"
            );
            let counts: Vec<Option<i64>> = t.column(CUSTOMERS).unwrap().i64().unwrap().iter().collect();
            assert_eq!(counts, [Some(3), Some(1), Some(1), Some(4), Some(1)]);
            // A: 10, 5, 50; loyal: 10, 30, 20, 50 (even count: the mean of the middle two).
            assert_eq!(
                f64s(&t, "historical_clv_sum"),
                [Some(65.0), Some(30.0), Some(20.0), Some(110.0), Some(5.0)]
            );
            assert_eq!(
                f64s(&t, "historical_clv_median"),
                [Some(10.0), Some(30.0), Some(20.0), Some(25.0), Some(5.0)]
            );
            assert_eq!(
                f64s(&t, "formula_clv_mean"),
                [Some(3.0), Some(2.0), Some(4.0), Some(3.0), Some(3.0)]
            );
            // predicted_clv: A has 4, 1 (and a null); B and "new" have none.
            assert_eq!(
                f64s(&t, "predicted_clv_sum"),
                [Some(5.0), None, Some(8.0), Some(13.0), None]
            );
            assert_eq!(
                f64s(&t, "predicted_clv_mean"),
                [Some(2.5), None, Some(8.0), Some(13.0 / 3.0), None]
            );
            assert_eq!(
                f64s(&t, "predicted_clv_median"),
                [Some(2.5), None, Some(8.0), Some(4.0), None]
            );
            assert_eq!(
                f64s(&t, MEAN_P_ALIVE),
                [Some(0.375), None, Some(1.0), Some(1.75 / 3.0), None]
            );
        }
    }

    /// The median as a careful analyst computes it: sort, take the middle value, or
    /// the mean of the middle two.
    fn naive_median(mut values: Vec<f64>) -> Option<f64> {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(values[n / 2]),
            _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    }

    const SEGMENTS: [&str; 3] = ["loyal", "new", "lost"];
    const CLASSES: [Option<&str>; 3] = [Some("A"), Some("B"), None];

    proptest::proptest! {
        /// Any cut into slices gives the table computed naively over all customers:
        /// counts exactly, sums and means within 1e-9, medians within rounding.
        #[test]
        fn any_slicing_matches_naive_groups(
            raw in proptest::collection::vec(
                (0usize..3, 0usize..3, -1000i64..100_000, proptest::option::of(0i64..10_000)),
                1..80,
            ),
            slice in 1usize..30,
        ) {
            let rows: Vec<Row> = raw
                .iter()
                .map(|&(s, c, h, p)| {
                    let h = h as f64 / 100.0;
                    (SEGMENTS[s], CLASSES[c], h, h * 3.0, p.map(|p| p as f64 / 7.0), p.map(|p| p as f64 / 10_000.0))
                })
                .collect();
            let t = table(&rows, slice);
            for i in 0..t.height() {
                let text = |c: &str| t.column(c).unwrap().str().unwrap().get(i).map(str::to_string);
                let (dimension, value) = (text(DIMENSION).unwrap(), text(VALUE));
                let members: Vec<&Row> = rows
                    .iter()
                    .filter(|r| match dimension.as_str() {
                        "segment" => Some(r.0) == value.as_deref(),
                        _ => r.1 == value.as_deref(),
                    })
                    .collect();
                let at = |c: &str| t.column(c).unwrap().get(i).unwrap().extract::<f64>();
                proptest::prop_assert_eq!(at(CUSTOMERS), Some(members.len() as f64));
                let historical: Vec<f64> = members.iter().map(|r| r.2).collect();
                let predicted: Vec<f64> = members.iter().filter_map(|r| r.4).collect();
                // Polars interpolates between the middle two (lower + (upper - lower) / 2),
                // which may round an ulp away from their mean.
                let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    (a, b) => a == b,
                };
                proptest::prop_assert!(close(at("historical_clv_median"), naive_median(historical.clone())));
                proptest::prop_assert!(close(at("predicted_clv_median"), naive_median(predicted.clone())));
                let sum: f64 = historical.iter().sum();
                proptest::prop_assert!((at("historical_clv_sum").unwrap() - sum).abs() < 1e-9);
                let mean = at("historical_clv_mean").unwrap();
                proptest::prop_assert!((mean - sum / historical.len() as f64).abs() < 1e-9);
                match predicted.len() {
                    0 => proptest::prop_assert_eq!(at("predicted_clv_mean"), None),
                    n => {
                        let mean = predicted.iter().sum::<f64>() / n as f64;
                        proptest::prop_assert!((at("predicted_clv_mean").unwrap() - mean).abs() < 1e-9);
                    }
                }
            }
            // Every customer is counted once per dimension.
            let total: i64 = t.column(CUSTOMERS).unwrap().i64().unwrap().sum().unwrap();
            proptest::prop_assert_eq!(total, 2 * rows.len() as i64);
        }
    }
}
