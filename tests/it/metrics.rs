//! Hand-computed fixtures for cohort retention (§3), RFM (§4) and CLV (§6.1–6.2).

use polars::prelude::*;

use crate::common::*;

/// (customer, date, amount) purchases, one order each.
fn orders(rows: &[(&str, &str, f64)]) -> DataFrame {
    DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
        Column::new(
            "order_id".into(),
            (0..rows.len()).map(|i| format!("o{i}")).collect::<Vec<_>>(),
        ),
        dates("order_date", &rows.iter().map(|r| r.1).collect::<Vec<_>>()),
        Column::new("amount".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
    ])
    .unwrap()
}

/// Five customers with ties in every dimension (as_of 2024-03-01):
///
/// | customer | orders | revenue | last purchase | recency |
/// |---|---|---|---|---|
/// | A | 1 | 10 | 02-20 | 10 |
/// | B | 2 | 10 | 02-20 | 10 |
/// | C | 2 | 30 | 02-25 | 5 |
/// | D | 3 | 20 | 01-21 | 40 |
/// | E | 1 | 5  | 02-25 | 5 |
const RFM_ROWS: [(&str, &str, f64); 9] = [
    ("A", "2024-02-20", 10.0),
    ("B", "2024-01-01", 4.0),
    ("B", "2024-02-20", 6.0),
    ("C", "2024-01-05", 10.0),
    ("C", "2024-02-25", 20.0),
    ("D", "2024-01-01", 5.0),
    ("D", "2024-01-10", 5.0),
    ("D", "2024-01-21", 10.0),
    ("E", "2024-02-25", 5.0),
];

fn rfm_fixture() -> DataFrame {
    orders(&RFM_ROWS)
}

fn column_i64(df: &DataFrame, name: &str) -> Vec<i64> {
    (0..df.height()).map(|i| i64_at(df, name, i).unwrap()).collect()
}

fn column_str(df: &DataFrame, name: &str) -> Vec<String> {
    (0..df.height())
        .map(|i| str_at(df, name, i).unwrap_or_default())
        .collect()
}

#[test]
fn rfm_scores_with_ties_five_bins() {
    let computed = compute(rfm_fixture(), "as_of: 2024-03-01\n", &[]);
    let customers = &table(&computed, "customers");
    // N = 5, B = 5: score = 1 + floor(5 (rank − 1) / 5) = rank.
    // Recency descending (largest first): D 40 → 1; A, B 10 → 2; C, E 5 → 4.
    assert_eq!(column_i64(customers, "r_score"), [2, 2, 4, 1, 4]);
    // Frequency ascending: A, E 1 → 1; B, C 2 → 3; D 3 → 5.
    assert_eq!(column_i64(customers, "f_score"), [1, 3, 3, 5, 1]);
    // Revenue ascending: E 5 → 1; A, B 10 → 2; D 20 → 4; C 30 → 5.
    assert_eq!(column_i64(customers, "m_score"), [2, 2, 5, 4, 1]);
    // fm = floor((f + m + 1) / 2): A 2, B 3, C 4, D 5, E 1.
    assert_eq!(column_i64(customers, "fm"), [2, 3, 4, 5, 1]);
    assert_eq!(
        column_str(customers, "rfm_cell"),
        ["212", "232", "435", "154", "411"]
    );
    // Default map: A r2 fm2 → Need Attention; B r2 fm3 → Loyal Customers; C r4 fm4 →
    // Champions; D r1 fm5 → Can't Lose Them; E r4 fm1 → New Customers.
    assert_eq!(
        column_str(customers, "segment"),
        [
            "Need Attention",
            "Loyal Customers",
            "Champions",
            "Can't Lose Them",
            "New Customers"
        ]
    );
}

#[test]
fn rfm_scores_three_bins_and_average_monetary() {
    let segments = "rfm:\n  bins: 3\n  monetary: average\n  segments:\n    - {name: Best, r: 2, f: [2, 3]}\n    - {name: Rest, r: [1, 3]}\n";
    let computed = compute(rfm_fixture(), &format!("as_of: 2024-03-01\n{segments}"), &[]);
    let customers = &table(&computed, "customers");
    // score = 1 + floor(3 (rank − 1) / 5): ranks 1..5 → 1, 1, 2, 2, 3.
    assert_eq!(column_i64(customers, "r_score"), [1, 1, 2, 1, 2]);
    assert_eq!(column_i64(customers, "f_score"), [1, 2, 2, 3, 1]);
    // aov: A 10, B 5, C 15, D 6.67, E 5 → ranks B, E 1; D 3; A 4; C 5 → 2, 1, 3, 2, 1.
    assert_eq!(column_i64(customers, "m_score"), [2, 1, 3, 2, 1]);
    // C is the only r = 2 customer with f ≥ 2.
    assert_eq!(
        column_str(customers, "segment"),
        ["Rest", "Rest", "Best", "Rest", "Rest"]
    );
}

/// `rfm.window_days: 39` (as_of 2024-03-01, so the window starts 2024-01-22): D's
/// last purchase (01-21) is outside it; A, B, C and E are ranked on their window
/// orders only (one each: A 10, B 6, C 20, E 5), N = 4, score = 1 + floor(5 (rank − 1) / 4).
#[test]
fn rfm_window_scores_only_recent_orders() {
    let computed = compute(rfm_fixture(), "as_of: 2024-03-01\nrfm:\n  window_days: 39\n", &[]);
    let customers = &table(&computed, "customers");
    let scores = |name: &str| -> Vec<Option<i64>> {
        (0..customers.height())
            .map(|i| i64_at(customers, name, i))
            .collect()
    };
    // Recency descending: A, B 10 → rank 1 → 1; C, E 5 → rank 3 → 3.
    assert_eq!(scores("r_score"), [Some(1), Some(1), Some(3), None, Some(3)]);
    // One window order each: all rank 1 (B's January order and C's are outside).
    assert_eq!(scores("f_score"), [Some(1), Some(1), Some(1), None, Some(1)]);
    // Window revenue ascending: E 5 → 1; B 6 → 2; A 10 → 3; C 20 → 4.
    assert_eq!(scores("m_score"), [Some(3), Some(2), Some(4), None, Some(1)]);
    assert_eq!(scores("fm"), [Some(2), Some(2), Some(3), None, Some(1)]);
    // A, B r1 fm2 → Hibernating; C r3 fm3 → Loyal Customers; E r3 fm1 → Promising.
    assert_eq!(
        column_str(customers, "segment"),
        [
            "Hibernating",
            "Hibernating",
            "Loyal Customers",
            "Inactive",
            "Promising"
        ]
    );
    assert_eq!(str_at(customers, "rfm_cell", 3), None);
    // Orders and revenue in the table stay all-time.
    assert_eq!(column_i64(customers, "orders"), [1, 2, 2, 3, 1]);
    // The collapsed frequency is named with the window.
    assert!(
        computed
            .warnings
            .iter()
            .any(|w| w.contains("same orders in the last 39 days")),
        "{:?}",
        computed.warnings
    );
    let segments = &table(&computed, "rfm_segments");
    let inactive = column_str(segments, "segment")
        .iter()
        .position(|s| s == "Inactive")
        .unwrap();
    assert_eq!(i64_at(segments, "customers", inactive), Some(1));
    // Zero days is a config error naming the key.
    let error = try_compute(rfm_fixture(), "as_of: 2024-03-01\nrfm:\n  window_days: 0\n", &[])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("rfm.window_days"), "{error}");
}

#[test]
fn rfm_segments_table() {
    let computed = compute(rfm_fixture(), "as_of: 2024-03-01\n", &[]);
    let segments = &table(&computed, "rfm_segments");
    // One row per non-empty segment, sorted by name.
    assert_eq!(
        column_str(segments, "segment"),
        [
            "Can't Lose Them",
            "Champions",
            "Loyal Customers",
            "Need Attention",
            "New Customers"
        ]
    );
    // Champions = C: 1 of 5 customers, 30 of 75 revenue.
    assert_eq!(i64_at(segments, "customers", 1), Some(1));
    assert_close(
        f64_at(segments, "share_of_customers", 1).unwrap(),
        0.2,
        "share of customers",
    );
    assert_close(
        f64_at(segments, "share_of_revenue", 1).unwrap(),
        30.0 / 75.0,
        "share of revenue",
    );
    assert_close(f64_at(segments, "mean_recency_days", 1).unwrap(), 5.0, "recency");
    assert_close(f64_at(segments, "mean_orders", 1).unwrap(), 2.0, "orders");
    assert_close(f64_at(segments, "mean_revenue", 1).unwrap(), 30.0, "revenue");
    assert_close(f64_at(segments, "mean_historical_clv", 1).unwrap(), 30.0, "clv");
}

#[test]
fn shadowed_segment_rules_warn() {
    let segments = "rfm:\n  segments:\n    - {name: Recent, r: [3, 5]}\n    - {name: Very recent, r: 5}\n";
    let computed = compute(rfm_fixture(), &format!("as_of: 2024-03-01\n{segments}"), &[]);
    assert_eq!(
        computed.warnings,
        [
            "segment rule rfm.segments[1] `Very recent` can never match: every score combination it matches is taken first by rfm.segments[0] `Recent`"
        ]
    );
    // D (r = 1) matches no rule.
    assert_eq!(
        str_at(&table(&computed, "customers"), "segment", 3).as_deref(),
        Some("Other")
    );
}

#[test]
fn historical_and_formula_clv() {
    // Every recency < 365: annual churn 0, so the lifetime is the cap (10 years).
    let computed = compute(rfm_fixture(), "as_of: 2024-03-01\nclv:\n  margin: 0.5\n", &[]);
    let customers = &table(&computed, "customers");
    // A: historical = 10 × 0.5; formula = aov 10 × (1 / max(10, 30) × 365.25) × 10 × 0.5.
    assert_close(
        f64_at(customers, "historical_clv", 0).unwrap(),
        5.0,
        "A historical",
    );
    assert_close(
        f64_at(customers, "formula_clv", 0).unwrap(),
        10.0 * 365.25 / 30.0 * 10.0 * 0.5,
        "A formula",
    );
    // D: tenure 2024-03-01 − 01-01 = 60; aov 20/3; 3 / 60 × 365.25 a year.
    assert_close(
        f64_at(customers, "formula_clv", 3).unwrap(),
        20.0 / 3.0 * (3.0 / 60.0 * 365.25) * 10.0 * 0.5,
        "D formula",
    );
}

#[test]
fn formula_clv_lifetime_from_annual_churn() {
    // F last bought 2022-12-01: 1 of 6 customers churned, lifetime = min(1 / (1/6), cap).
    let mut rows = RFM_ROWS.to_vec();
    rows.push(("F", "2022-12-01", 12.0));
    let rows = orders(&rows);
    let annual = |f: f64, tenure: f64| 12.0 * (1.0 / tenure * 365.25) * f;
    let computed = compute(rows.clone(), "as_of: 2024-03-01\n", &[]);
    let customers = &table(&computed, "customers");
    // F: tenure = 2024-03-01 − 2022-12-01 = 456 days.
    assert_close(
        f64_at(customers, "formula_clv", 5).unwrap(),
        annual(6.0, 456.0),
        "lifetime 6",
    );
    let capped = compute(rows, "as_of: 2024-03-01\nclv:\n  max_lifetime_years: 4\n", &[]);
    assert_close(
        f64_at(&table(&capped, "customers"), "formula_clv", 5).unwrap(),
        annual(4.0, 456.0),
        "lifetime capped at 4",
    );
}

#[test]
fn clv_by_segment_dimensions() {
    let computed = compute(rfm_fixture(), "as_of: 2024-03-01\n", &[]);
    let by = &table(&computed, "clv_by_segment");
    let keys: Vec<(String, String)> = (0..by.height())
        .map(|i| {
            (
                str_at(by, "dimension", i).unwrap(),
                str_at(by, "value", i).unwrap(),
            )
        })
        .collect();
    // abc_class: revenue 30, 20, 10 (A), 10 (B), 5: cum_before/75 = 0, .4, .667, .8, .933
    // → A, A, A, B, B. cohort: all in 2024-01 or 2024-02.
    assert_eq!(keys[0], ("abc_class".into(), "A".into()));
    assert_eq!(keys[1], ("abc_class".into(), "B".into()));
    assert_eq!(i64_at(by, "customers", 0), Some(3));
    // A-class historical CLV: 30 + 20 + 10 (A beats B on customer_id).
    assert_close(f64_at(by, "historical_clv_sum", 0).unwrap(), 60.0, "A sum");
    assert_close(f64_at(by, "historical_clv_mean", 0).unwrap(), 20.0, "A mean");
    assert_close(f64_at(by, "historical_clv_median", 0).unwrap(), 20.0, "A median");
    assert!(keys.contains(&("cohort".into(), "2024-02-01".into())));
    assert!(keys.contains(&("segment".into(), "Champions".into())));
    // Without the model no customer has a predicted CLV or p_alive: their sums,
    // means and medians are null (they were NaN, 0/0, before), here and in rfm_segments.
    for column in [
        "predicted_clv_sum",
        "predicted_clv_mean",
        "predicted_clv_median",
        "mean_p_alive",
    ] {
        assert_eq!(by.column(column).unwrap().null_count(), by.height(), "{column}");
    }
    let segments = &table(&computed, "rfm_segments");
    for column in ["mean_predicted_clv", "mean_p_alive"] {
        assert_eq!(
            segments.column(column).unwrap().null_count(),
            segments.height(),
            "{column}"
        );
    }
}

/// Month grain, as_of 2024-04-16 (April incomplete).
///
/// X: purchases 01-10 (20) and 03-05 (10), a refund order 03-20 (−5).
/// Y: a refund order 01-02 (−7) *before* its first purchase 01-25 (30); purchase 04-02 (15).
/// Z: purchase 02-14 (8). W: purchase 03-03 (10), refund order 03-10 (−10), purchase 04-05 (4).
fn cohort_fixture() -> DataFrame {
    orders(&[
        ("X", "2024-01-10", 20.0),
        ("X", "2024-03-05", 10.0),
        ("X", "2024-03-20", -5.0),
        ("Y", "2024-01-02", -7.0),
        ("Y", "2024-01-25", 30.0),
        ("Y", "2024-04-02", 15.0),
        ("Z", "2024-02-14", 8.0),
        ("W", "2024-03-03", 10.0),
        ("W", "2024-03-10", -10.0),
        ("W", "2024-04-05", 4.0),
    ])
}

#[test]
fn cohort_retention_month_grid() {
    let computed = compute(cohort_fixture(), "as_of: 2024-04-16\n", &[]);
    let grid = &table(&computed, "cohort_retention");
    let keys: Vec<(String, i64)> = (0..grid.height())
        .map(|i| {
            (
                str_at(grid, "cohort", i).unwrap(),
                i64_at(grid, "period_index", i).unwrap(),
            )
        })
        .collect();
    // Jan (X, Y): indices 0..3; Feb (Z): 0..2; Mar (W): 0..1 — zero rows included.
    assert_eq!(
        keys,
        [
            ("2024-01-01".into(), 0),
            ("2024-01-01".into(), 1),
            ("2024-01-01".into(), 2),
            ("2024-01-01".into(), 3),
            ("2024-02-01".into(), 0),
            ("2024-02-01".into(), 1),
            ("2024-02-01".into(), 2),
            ("2024-03-01".into(), 0),
            ("2024-03-01".into(), 1),
        ]
    );
    assert_eq!(column_i64(grid, "cohort_size"), [2, 2, 2, 2, 1, 1, 1, 1, 1]);
    // Jan: both active at 0; nobody in Feb (the empty middle period); X in Mar; Y in Apr.
    assert_eq!(column_i64(grid, "active_customers"), [2, 0, 1, 1, 1, 0, 0, 1, 1]);
    assert_eq!(column_i64(grid, "orders"), [2, 0, 1, 1, 1, 0, 0, 1, 1]);
    // Jan revenue: 20 + 30 (Y's −7 is before its first purchase: left out); Mar: 10 − 5.
    // W's March: 10 − 10 = 0.
    let revenue: Vec<f64> = (0..9).map(|i| f64_at(grid, "revenue", i).unwrap()).collect();
    assert_eq!(revenue, [50.0, 0.0, 5.0, 15.0, 8.0, 0.0, 0.0, 0.0, 4.0]);
    let retention: Vec<f64> = (0..4)
        .map(|i| f64_at(grid, "retention_rate", i).unwrap())
        .collect();
    assert_eq!(retention, [1.0, 0.0, 0.5, 0.5]);
    // Cumulative revenue per customer: 50/2, 50/2, 55/2, 70/2.
    let cumulative: Vec<f64> = (0..4)
        .map(|i| f64_at(grid, "cumulative_revenue_per_customer", i).unwrap())
        .collect();
    assert_eq!(cumulative, [25.0, 25.0, 27.5, 35.0]);
    // revenue(k) / revenue(0): 1, 0, 5/50, 15/50; W's cohort has revenue(0) = 0: null.
    assert_close(f64_at(grid, "revenue_retention", 2).unwrap(), 0.1, "Jan k=2");
    assert_close(f64_at(grid, "revenue_retention", 3).unwrap(), 0.3, "Jan k=3");
    assert_eq!(f64_at(grid, "revenue_retention", 7), None);
    assert_eq!(f64_at(grid, "revenue_retention", 8), None);
    assert_eq!(f64_at(grid, "retention_rate", 7), Some(1.0));
    // Only April (which holds obs_end 04-15, not its last day) is incomplete.
    let complete: Vec<bool> = (0..9)
        .map(|i| grid.column("is_complete").unwrap().get(i).unwrap() == AnyValue::Boolean(true))
        .collect();
    assert_eq!(
        complete,
        [true, true, true, false, true, true, false, true, false]
    );
}

#[test]
fn cohort_retention_last_period_complete_when_as_of_starts_a_new_one() {
    // as_of 2024-04-01: obs_end is March 31, the last day of March (and of Q1).
    for grain in ["month", "quarter"] {
        let computed = compute(
            cohort_fixture(),
            "as_of: 2024-04-01\n",
            &[&format!("cohorts.grain={grain}")],
        );
        let grid = &table(&computed, "cohort_retention");
        let all_complete = (0..grid.height())
            .all(|i| grid.column("is_complete").unwrap().get(i).unwrap() == AnyValue::Boolean(true));
        assert!(all_complete, "{grain}");
    }
}

#[test]
fn cohort_retention_weeks_across_the_year_boundary() {
    // Friday 2023-12-29 is in the ISO week from Monday 2023-12-25; Tuesday 2024-01-02 in the next.
    // as_of Monday 2024-01-08: obs_end Sunday 01-07 ends its week, so both rows are complete.
    let df = orders(&[("V", "2023-12-29", 5.0), ("V", "2024-01-02", 7.0)]);
    let computed = compute(df, "as_of: 2024-01-08\ncohorts:\n  grain: week\n", &[]);
    let grid = &table(&computed, "cohort_retention");
    assert_eq!(grid.height(), 2);
    assert_eq!(str_at(grid, "cohort", 0).as_deref(), Some("2023-12-25"));
    assert_eq!(column_i64(grid, "active_customers"), [1, 1]);
    assert_eq!(column_i64(grid, "period_index"), [0, 1]);
    assert_eq!(
        grid.column("is_complete").unwrap().get(1).unwrap(),
        AnyValue::Boolean(true)
    );
}

/// upsell_ratio and the acquisition channel on generated data (thousands of
/// customers, so the fold splits them across shards) against the SPEC definitions
/// computed naively from the lines.
#[test]
fn upsell_and_channel_on_generated_data_match_the_definitions() {
    use loyalty::generate::{GenerateParams, TrueParameters, generate};
    let lines = generate(&GenerateParams {
        customers: 3_000,
        seed: 11,
        start: chrono::NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
        end: chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        truth: TrueParameters::default(),
        dirty: true,
    })
    .unwrap();
    let computed = compute(
        lines.clone(),
        "  columns:\n    category: category\n    channel: channel\n",
        &[],
    );

    // Orders: value in micro-units, categories of positive lines, smallest channel.
    let micros = (col("amount") * lit(1e6) + lit(0.5))
        .floor()
        .cast(DataType::Int64);
    let orders = lines
        .lazy()
        .filter(col("customer_id").is_not_null())
        .unique(None, UniqueKeepStrategy::First)
        .group_by([col("customer_id"), col("order_id")])
        .agg([
            micros.clone().sum().alias("value"),
            col("order_date").min(),
            col("category").filter(micros.gt(lit(0i64))).alias("categories"),
            col("channel").min(),
        ])
        .filter(col("value").gt(lit(0i64)));
    let naive = orders
        .clone()
        .explode(
            cols(["categories"]),
            ExplodeOptions {
                empty_as_null: false,
                keep_nulls: false,
            },
        )
        .group_by([col("customer_id")])
        .agg([col("categories").n_unique().alias("n")])
        .select([
            (col("n").gt_eq(lit(2)).sum().cast(DataType::Float64) / len().cast(DataType::Float64))
                .alias("upsell"),
        ])
        .collect()
        .unwrap();
    let kpis = &table(&computed, "kpis");
    assert_close(
        f64_at(kpis, "upsell_ratio", 0).unwrap(),
        f64_at(&naive, "upsell", 0).unwrap(),
        "upsell_ratio",
    );

    // Acquisition channel: the first purchase's, ties by the smallest order_id.
    let first = orders
        .sort(
            ["customer_id", "order_date", "order_id"],
            SortMultipleOptions::default(),
        )
        .group_by([col("customer_id")])
        .agg([col("channel").first()])
        .sort(["customer_id"], SortMultipleOptions::default())
        .collect()
        .unwrap();
    let customers = &table(&computed, "customers");
    assert_eq!(
        column_str(customers, "customer_id"),
        column_str(&first, "customer_id")
    );
    assert_eq!(column_str(customers, "channel"), column_str(&first, "channel"));
}
