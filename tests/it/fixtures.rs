//! Hand-computed fixtures for every cleaning step and every customer/KPI column.
//! The arithmetic is in the comments; as_of is exclusive (SPEC preamble).

use polars::prelude::*;

use crate::common::*;

/// Sixteen lines exercising every cleaning step (as_of 2024-03-01 unless said):
///
/// | # | customer | order | date       | amount | category | what it tests                       |
/// |---|----------|-------|------------|--------|----------|-------------------------------------|
/// | 1 | c1       | o1    | 2024-01-10 | 10.00  | a        |                                     |
/// | 2 | c1       | o1    | 2024-01-10 |  5.50  | b        | o1 = 15.50                          |
/// | 3 | c1       | o2    | 2024-02-01 | 20.00  | a        |                                     |
/// | 4 | c1       | o2    | 2024-02-03 | -5.00  | a        | return nets: o2 = 15.00, dated 02-01 |
/// | 5 | c2       | o3    | 2024-01-15 | 30.00  | a        |                                     |
/// | 6 | c2       | o3    | 2024-01-15 | 30.00  | a        | exact duplicate of 5: dropped        |
/// | 7 | c2       | o4    | 2024-02-20 | 12.00  | b        |                                     |
/// | 8 | c2       | o4    | 2024-02-20 |  8.00  | c        |                                     |
/// | 9 | c2       | o4    | 2024-02-21 | -12.00 | b        |                                     |
/// |10 | c2       | o4    | 2024-02-21 | -8.00  | c        | o4 fully refunded: value 0, no purchase |
/// |11 | c3       | o5    | 2024-02-10 | NaN    | a        | step 1: non-finite value             |
/// |12 | null     | o6    | 2024-02-10 |  9.00  | a        | step 1: null customer                |
/// |13 | c3       | o7    | 2024-02-28 |  7.25  | a        |                                     |
/// |14 | c3       | o8    | 2024-03-05 | 100.00 | a        | step 2: on/after as_of               |
/// |15 | c4       | o9    | 2024-02-15 | -3.00  | a        | c4 has no purchase: not a customer   |
/// |16 | "  "     | o10   | 2024-02-10 |  4.00  | a        | step 1: empty id after trimming      |
fn orders() -> DataFrame {
    DataFrame::new_infer_height(vec![
        Column::new(
            "customer_id".into(),
            [
                Some("c1"),
                Some("c1"),
                Some("c1"),
                Some("c1"),
                Some("c2"),
                Some("c2"),
                Some("c2"),
                Some("c2"),
                Some("c2"),
                Some("c2"),
                Some("c3"),
                None,
                Some("c3"),
                Some("c3"),
                Some("c4"),
                Some("  "),
            ],
        ),
        Column::new(
            "order_id".into(),
            [
                "o1", "o1", "o2", "o2", "o3", "o3", "o4", "o4", "o4", "o4", "o5", "o6", "o7", "o8", "o9",
                "o10",
            ],
        ),
        dates(
            "order_date",
            &[
                "2024-01-10",
                "2024-01-10",
                "2024-02-01",
                "2024-02-03",
                "2024-01-15",
                "2024-01-15",
                "2024-02-20",
                "2024-02-20",
                "2024-02-21",
                "2024-02-21",
                "2024-02-10",
                "2024-02-10",
                "2024-02-28",
                "2024-03-05",
                "2024-02-15",
                "2024-02-10",
            ],
        ),
        Column::new(
            "amount".into(),
            [
                10.0,
                5.5,
                20.0,
                -5.0,
                30.0,
                30.0,
                12.0,
                8.0,
                -12.0,
                -8.0,
                f64::NAN,
                9.0,
                7.25,
                100.0,
                -3.0,
                4.0,
            ],
        ),
        Column::new(
            "category".into(),
            [
                "a", "b", "a", "a", "a", "a", "b", "c", "b", "c", "a", "a", "a", "a", "a", "a",
            ],
        ),
    ])
    .unwrap()
}

const MAPPED: &str = "  columns:\n    category: category\n";

fn run(extra: &str, sets: &[&str]) -> loyalty::pipeline::Computed {
    compute(orders(), &format!("{MAPPED}{extra}"), sets)
}

#[test]
fn cleaning_counts_every_step() {
    let computed = run("as_of: 2024-03-01\n", &[]);
    let steps: Vec<(u64, u64)> = computed
        .cleaning
        .iter()
        .map(|s| (s.rows_in, s.rows_out))
        .collect();
    // 16 lines; step 1 drops rows 11, 12, 16; step 2 drops row 14; step 3 drops row 6;
    // step 4 drops nothing; 11 lines make 6 orders (o1 o2 o3 o4 o7 o9), 4 of them purchases.
    assert_eq!(steps, vec![(16, 13), (13, 12), (12, 11), (11, 11), (11, 6)]);
    let step1 = &computed.cleaning[0].reasons;
    assert_eq!(step1["null customer_id"], 2);
    assert_eq!(step1["null or non-finite line value"], 1);
    assert_eq!(computed.cleaning[4].reasons["purchases (value > 0)"], 4);
}

#[test]
fn customers_columns_by_hand() {
    let computed = run("as_of: 2024-03-01\n", &[]);
    let customers = &table(&computed, "customers");
    // c4 has only a negative order: not a customer.
    assert_eq!(customers.height(), 3);
    let ids: Vec<String> = (0..3)
        .map(|i| str_at(customers, "customer_id", i).unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3"]);

    // c1: purchases o1 (01-10, 15.50) and o2 (02-01, 20 - 5 = 15.00).
    // recency = 2024-03-01 - 02-01 = 29 (leap February); tenure = 21 + 29 = 51.
    // annual_value = 30.50 / 51 * 365.25.
    assert_eq!(i64_at(customers, "orders", 0), Some(2));
    assert_close(f64_at(customers, "revenue", 0).unwrap(), 30.5, "c1 revenue");
    assert_close(f64_at(customers, "aov", 0).unwrap(), 15.25, "c1 aov");
    assert_eq!(i64_at(customers, "recency_days", 0), Some(29));
    assert_eq!(i64_at(customers, "tenure_days", 0), Some(51));
    assert_close(
        f64_at(customers, "annual_value", 0).unwrap(),
        30.5 / 51.0 * 365.25,
        "c1 annual",
    );
    assert_eq!(
        str_at(customers, "first_order_date", 0).as_deref(),
        Some("2024-01-10")
    );
    assert_eq!(
        str_at(customers, "last_order_date", 0).as_deref(),
        Some("2024-02-01")
    );
    assert_eq!(str_at(customers, "cohort", 0).as_deref(), Some("2024-01-01"));

    // c2: o3 = 30 (duplicate dropped); o4 = 12 + 8 - 12 - 8 = 0 is no purchase but counts in revenue.
    // recency = tenure = 2024-03-01 - 01-15 = 46.
    assert_eq!(i64_at(customers, "orders", 1), Some(1));
    assert_close(f64_at(customers, "revenue", 1).unwrap(), 30.0, "c2 revenue");
    assert_eq!(i64_at(customers, "recency_days", 1), Some(46));
    assert_eq!(
        str_at(customers, "last_order_date", 1).as_deref(),
        Some("2024-01-15")
    );

    // c3: o7 = 7.25 on 02-28; tenure 2 days is floored to min_tenure_days 30 for annualising.
    assert_eq!(i64_at(customers, "tenure_days", 2), Some(2));
    assert_close(
        f64_at(customers, "annual_value", 2).unwrap(),
        7.25 / 30.0 * 365.25,
        "c3 annual",
    );

    // ABC over 30.50, 30.00, 7.25 (total 67.75): cum_before 0 -> A, 30.50/67.75 = 0.450 -> A,
    // 60.50/67.75 = 0.893 -> B.
    let classes: Vec<String> = (0..3)
        .map(|i| str_at(customers, "abc_class", i).unwrap())
        .collect();
    assert_eq!(classes, ["A", "A", "B"]);
}

#[test]
fn kpis_by_hand() {
    let computed = run("as_of: 2024-03-01\n", &[]);
    let kpis = &table(&computed, "kpis");
    assert_eq!(kpis.height(), 1);
    assert_eq!(str_at(kpis, "as_of", 0).as_deref(), Some("2024-03-01"));
    assert_eq!(i64_at(kpis, "customers", 0), Some(3));
    assert_eq!(i64_at(kpis, "orders", 0), Some(4));
    // revenue = 30.50 + 30.00 + 7.25; aov = 67.75 / 4.
    assert_close(f64_at(kpis, "revenue", 0).unwrap(), 67.75, "revenue");
    assert_close(f64_at(kpis, "aov", 0).unwrap(), 67.75 / 4.0, "aov");
    assert_close(
        f64_at(kpis, "purchase_frequency", 0).unwrap(),
        4.0 / 3.0,
        "frequency",
    );
    assert_close(
        f64_at(kpis, "repeat_purchase_rate", 0).unwrap(),
        1.0 / 3.0,
        "repeat",
    );
    assert_close(f64_at(kpis, "churn_rate", 0).unwrap(), 0.0, "churn");
    // Only c1 bought two categories (a, b) in purchases; c2's b and c lines are in the refunded o4.
    assert_close(f64_at(kpis, "upsell_ratio", 0).unwrap(), 1.0 / 3.0, "upsell");
    // Gini: x ascending 7.25, 30, 30.5: 2(7.25 + 60 + 91.5) / (3 * 67.75) - 4/3.
    assert_close(
        f64_at(kpis, "gini", 0).unwrap(),
        2.0 * 158.75 / (3.0 * 67.75) - 4.0 / 3.0,
        "gini",
    );
    // Top 20%: ceil(0.2 * 3) = 1 customer, 30.50 / 67.75.
    assert_close(
        f64_at(kpis, "top_20pct_revenue_share", 0).unwrap(),
        30.5 / 67.75,
        "top 20%",
    );
    // 30.50 / 67.75 = 0.45 < 0.8; 60.50 / 67.75 = 0.89 >= 0.8: two customers.
    assert_eq!(i64_at(kpis, "customers_for_80pct", 0), Some(2));
    assert_close(
        f64_at(kpis, "customers_for_80pct_share", 0).unwrap(),
        2.0 / 3.0,
        "80% share",
    );
    assert_eq!(str_at(kpis, "model", 0), None);
    assert_eq!(f64_at(kpis, "model_r", 0), None);
}

#[test]
fn churn_counts_customers_past_the_window() {
    // Recencies 29, 46, 2: a 40-day window churns only c2.
    let computed = run("as_of: 2024-03-01\nkpis:\n  churn_window_days: 40\n", &[]);
    let kpis = &table(&computed, "kpis");
    assert_close(f64_at(kpis, "churn_rate", 0).unwrap(), 1.0 / 3.0, "churn");
    assert_eq!(i64_at(kpis, "churn_window_days", 0), Some(40));
    assert_close(f64_at(kpis, "annual_churn_rate", 0).unwrap(), 0.0, "annual churn");
}

#[test]
fn returns_drop_removes_negative_lines() {
    // Without rows 4, 9, 10, 15: o2 = 20, o4 = 20 (now a purchase), o9 disappears.
    let computed = run("as_of: 2024-03-01\ncleaning:\n  returns: drop\n", &[]);
    assert_eq!(computed.cleaning[3].reasons["negative line (returns: drop)"], 4);
    let customers = &table(&computed, "customers");
    assert_close(f64_at(customers, "revenue", 0).unwrap(), 35.5, "c1 revenue");
    assert_eq!(i64_at(customers, "orders", 1), Some(2));
    assert_close(f64_at(customers, "revenue", 1).unwrap(), 50.0, "c2 revenue");
    assert_eq!(
        str_at(customers, "last_order_date", 1).as_deref(),
        Some("2024-02-20")
    );
}

#[test]
fn dedupe_false_keeps_duplicates() {
    let computed = run("as_of: 2024-03-01\ncleaning:\n  dedupe: false\n", &[]);
    let customers = &table(&computed, "customers");
    // o3 = 30 + 30.
    assert_close(f64_at(customers, "revenue", 1).unwrap(), 60.0, "c2 revenue");
}

#[test]
fn default_as_of_is_latest_valid_date_plus_one() {
    // Row 14 (2024-03-05) is the latest row with every required value.
    let computed = run("", &[]);
    assert_eq!(computed.as_of.to_string(), "2024-03-06");
    assert_eq!(computed.cleaning[1].dropped, 0);
}

#[test]
fn back_dated_as_of_sees_only_earlier_orders() {
    // Before 2024-02-01: o1 (c1) and o3 (c2) only.
    let computed = run("", &["as_of=2024-02-01"]);
    let customers = &table(&computed, "customers");
    assert_eq!(customers.height(), 2);
    // c1 recency = 2024-02-01 - 01-10 = 22.
    assert_eq!(i64_at(customers, "recency_days", 0), Some(22));
    assert_close(f64_at(customers, "revenue", 0).unwrap(), 15.5, "c1 revenue");
}

#[test]
fn exclude_filters_each_kind() {
    let cases = [
        ("{column: category, equals: b}", 3),
        ("{column: order_id, in: [o1, o7]}", 3),
        ("{column: order_id, starts_with: o4}", 4),
        ("{column: category, regex: '^[bc]$'}", 5),
    ];
    for (rule, dropped) in cases {
        let computed = run(
            &format!("as_of: 2024-03-01\ncleaning:\n  exclude:\n    - {rule}\n"),
            &[],
        );
        assert_eq!(computed.cleaning[3].dropped, dropped, "{rule}");
    }
}

#[test]
fn money_is_exact_micro_units() {
    // 0.1 + 0.2 is 0.30000000000000004 in floats; in micro-units it is exactly 300000.
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["c", "c", "d"]),
        Column::new("order_id".into(), ["o", "o", "p"]),
        dates("order_date", &["2024-01-01", "2024-01-01", "2024-01-02"]),
        Column::new("amount".into(), [0.1, 0.2, 0.3]),
    ])
    .unwrap();
    // With a = 0.5, d's cum_before is 0.3 / 0.6 = 0.5 exactly: not below a, so B.
    let computed = compute(df, "", &["pareto.abc.a=0.5"]);
    let customers = &table(&computed, "customers");
    let c = f64_at(customers, "revenue", 0).unwrap();
    let d = f64_at(customers, "revenue", 1).unwrap();
    assert_eq!(c, d, "equal revenues must be equal, not merely close");
    // Equal revenues tie: ranked by customer_id, c first.
    let classes: Vec<String> = (0..2)
        .map(|i| str_at(customers, "abc_class", i).unwrap())
        .collect();
    assert_eq!(classes, ["A", "B"]);
}

#[test]
fn amount_is_unit_price_multiplies_by_quantity() {
    // 2.50 x 3 = 7.50; a null quantity makes the value null (dropped in step 1).
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["c", "c"]),
        Column::new("order_id".into(), ["o", "p"]),
        dates("order_date", &["2024-01-01", "2024-01-02"]),
        Column::new("price".into(), [2.5, 4.0]),
        Column::new("qty".into(), [Some(3i64), None]),
    ])
    .unwrap();
    let computed = compute(
        df,
        "  columns:\n    amount: price\n    quantity: qty\n  amount_is_unit_price: true\n",
        &[],
    );
    assert_eq!(computed.cleaning[0].reasons["null or non-finite line value"], 1);
    let customers = &table(&computed, "customers");
    assert_close(f64_at(customers, "revenue", 0).unwrap(), 7.5, "revenue");
}

#[test]
fn integer_ids_and_spaced_column_names() {
    let df = DataFrame::new_infer_height(vec![
        Column::new("Customer ID".into(), [42i64, 42, 7]),
        Column::new("Invoice".into(), [1i32, 2, 3]),
        dates("Order Date", &["2024-01-01", "2024-01-05", "2024-01-02"]),
        Column::new("Net Amount".into(), [10i64, 5, 1]),
    ])
    .unwrap();
    let computed = compute(
        df,
        "  columns:\n    customer_id: Customer ID\n    order_id: Invoice\n    order_date: Order Date\n    amount: Net Amount\n",
        &[],
    );
    let customers = &table(&computed, "customers");
    assert_eq!(str_at(customers, "customer_id", 0).as_deref(), Some("42"));
    assert_eq!(i64_at(customers, "orders", 0), Some(2));
    assert_close(f64_at(customers, "revenue", 0).unwrap(), 15.0, "revenue");
}

fn timestamps(zone: Option<&str>) -> DataFrame {
    // 2024-01-31 23:30 (UTC when zoned).
    let millis = 1_706_743_800_000i64;
    let ts = Column::new("order_date".into(), [millis])
        .cast(&DataType::Datetime(
            TimeUnit::Milliseconds,
            zone.map(|z| TimeZone::opt_try_new(Some(z)).unwrap().unwrap()),
        ))
        .unwrap();
    DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["c"]),
        Column::new("order_id".into(), ["o"]),
        ts,
        Column::new("amount".into(), [1.0]),
    ])
    .unwrap()
}

#[test]
fn zoned_timestamps_take_the_configured_zone_naive_ones_do_not() {
    let first = |df: DataFrame, tz: &str| {
        let computed = compute(df, &format!("  timezone: {tz}\n"), &[]);
        str_at(&table(&computed, "customers"), "first_order_date", 0).unwrap()
    };
    // 23:30 UTC is 18:30 in New York (same day) and 08:30 next day in Tokyo.
    assert_eq!(first(timestamps(Some("UTC")), "America/New_York"), "2024-01-31");
    assert_eq!(first(timestamps(Some("UTC")), "Asia/Tokyo"), "2024-02-01");
    // A naive timestamp is already local: its date whatever the zone.
    assert_eq!(first(timestamps(None), "Asia/Tokyo"), "2024-01-31");
}

#[test]
fn string_dates_with_a_format_and_unparseable_ones() {
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["c", "d"]),
        Column::new("order_id".into(), ["o", "p"]),
        Column::new("order_date".into(), ["31/01/2024", "01/02/2024"]),
        Column::new("amount".into(), [1.0, 2.0]),
    ])
    .unwrap();
    let computed = compute(df.clone(), "  date_format: '%d/%m/%Y'\n", &[]);
    assert_eq!(computed.as_of.to_string(), "2024-02-02");
    let err = try_compute(df, "  date_format: '%Y-%m-%d'\n", &[])
        .err()
        .expect("must fail");
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string().contains(
            "2 value(s) do not parse as dates with input.date_format `%Y-%m-%d`, e.g. `31/01/2024`"
        ),
        "{err}"
    );
}

#[test]
fn cohort_grains() {
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["a", "b", "c"]),
        Column::new("order_id".into(), ["1", "2", "3"]),
        // Wednesday 2024-01-10; Sunday 2023-12-31; 2024-05-15.
        dates("order_date", &["2024-01-10", "2023-12-31", "2024-05-15"]),
        Column::new("amount".into(), [1.0, 1.0, 1.0]),
    ])
    .unwrap();
    let cohorts = |grain: &str| {
        let computed = compute(df.clone(), "", &[&format!("cohorts.grain={grain}")]);
        let customers = &table(&computed, "customers");
        (0..3)
            .map(|i| str_at(customers, "cohort", i).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(cohorts("month"), ["2024-01-01", "2023-12-01", "2024-05-01"]);
    // ISO weeks start on Monday: 2024-01-08; 2023-12-31 is a Sunday, in the week from 12-25.
    assert_eq!(cohorts("week"), ["2024-01-08", "2023-12-25", "2024-05-13"]);
    assert_eq!(cohorts("quarter"), ["2024-01-01", "2023-10-01", "2024-04-01"]);
}

#[test]
fn acquisition_channel_is_the_first_purchase_ties_by_order_id() {
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["c", "c", "c"]),
        Column::new("order_id".into(), ["o2", "o1", "o3"]),
        dates("order_date", &["2024-01-01", "2024-01-01", "2023-12-01"]),
        Column::new("amount".into(), [1.0, 1.0, -1.0]),
        Column::new("channel".into(), ["store", "web", "app"]),
    ])
    .unwrap();
    // o3 is a refund (not a purchase); o1 and o2 tie on date: o1 wins.
    let computed = compute(df, "  columns:\n    channel: channel\n", &[]);
    assert_eq!(
        str_at(&table(&computed, "customers"), "channel", 0).as_deref(),
        Some("web")
    );
}

#[test]
fn a_mapped_channel_column_without_values_gives_null_channels() {
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["a", "b", "b"]),
        Column::new("order_id".into(), ["o1", "o2", "o3"]),
        dates("order_date", &["2024-01-01", "2024-01-02", "2024-01-03"]),
        Column::new("amount".into(), [1.0, 2.0, 3.0]),
        Column::new("channel".into(), [None::<&str>, None, None]),
    ])
    .unwrap();
    let computed = compute(df, "  columns:\n    channel: channel\n", &[]);
    let customers = table(&computed, "customers");
    let channel = customers.column("channel").unwrap();
    assert_eq!(channel.dtype(), &DataType::String);
    assert_eq!(channel.null_count(), 2);
}

#[test]
fn nothing_left_after_cleaning_is_an_input_error() {
    let err = try_compute(orders(), "", &["as_of=2020-01-01"])
        .err()
        .expect("must fail");
    assert_eq!(err.exit_code(), 3);
    assert!(
        err.to_string().contains("no purchases left after cleaning"),
        "{err}"
    );
}

#[test]
fn pareto_and_lorenz_tables() {
    let computed = run(
        "as_of: 2024-03-01\npareto:\n  top_shares: [0.5, 1]\n  lorenz_points: 3\n",
        &[],
    );
    let pareto = &table(&computed, "pareto");
    // ceil(0.5 * 3) = 2 customers: (30.50 + 30) / 67.75; all 3: 1.
    assert_eq!(i64_at(pareto, "customers", 0), Some(2));
    assert_close(
        f64_at(pareto, "revenue_share", 0).unwrap(),
        60.5 / 67.75,
        "top half",
    );
    assert_close(f64_at(pareto, "revenue_share", 1).unwrap(), 1.0, "all");
    let lorenz = &table(&computed, "lorenz");
    // Points 0, 1/3, 2/3, 1: bottom floor(i * 3 / 3) = i customers: 0, 7.25, 37.25, 67.75.
    assert_eq!(lorenz.height(), 4);
    let expected = [0.0, 7.25 / 67.75, 37.25 / 67.75, 1.0];
    for (i, e) in expected.iter().enumerate() {
        assert_close(f64_at(lorenz, "revenue_share", i).unwrap(), *e, "lorenz");
        assert_eq!(i64_at(lorenz, "customers", i), Some(i as i64));
    }
}

#[test]
fn decimal_amounts_are_exact() {
    // Decimal(10, 2): 19.99 + 0.01 is exactly 20.00 in micro-units.
    let amount = Column::new("amount".into(), [19.99, 0.01])
        .cast(&DataType::Decimal(10, 2))
        .unwrap();
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ["c", "c"]),
        Column::new("order_id".into(), ["o", "o"]),
        dates("order_date", &["2024-01-01", "2024-01-01"]),
        amount,
    ])
    .unwrap();
    let computed = compute(df, "", &[]);
    assert_eq!(f64_at(&table(&computed, "customers"), "revenue", 0), Some(20.0));
}
