//! Money is exact or refused, never wrapped (SPEC preamble): line values in Int64
//! micro-units, every sum of them in Int128, values past the line limit an input
//! error naming the column, an example row and the limit.

use polars::prelude::*;
use proptest::prelude::*;

use crate::common::*;

/// Lines of two customers, `c0` and `c1`, on consecutive days, one order each.
fn lines(amounts: Column) -> DataFrame {
    let n = amounts.len();
    let days: Vec<String> = (0..n)
        .map(|i| {
            (chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Days::new(i as u64)).to_string()
        })
        .collect();
    let days: Vec<&str> = days.iter().map(String::as_str).collect();
    DataFrame::new_infer_height(vec![
        Column::new(
            "customer_id".into(),
            (0..n).map(|i| format!("c{}", i % 2)).collect::<Vec<_>>(),
        ),
        Column::new(
            "order_id".into(),
            (0..n).map(|i| format!("o{i}")).collect::<Vec<_>>(),
        ),
        dates("order_date", &days),
        amounts.with_name("amount".into()),
    ])
    .unwrap()
}

fn out_of_range(result: loyalty::error::Result<loyalty::pipeline::Computed>) -> String {
    let err = result.err().expect("the run must fail").to_string();
    assert!(err.contains("out of range"), "{err}");
    err
}

#[test]
fn revenue_of_1e13_per_customer_is_exact() {
    // IDR/VND B2B: five lines of 2e12 per customer sum to 1e13, 1e19 micro-units,
    // past Int64 (9.2e18): an Int64 sum wrapped to negative revenue.
    for amounts in [
        Column::new("a".into(), vec![2_000_000_000_000i64; 10]),
        Column::new("a".into(), vec![2e12f64; 10]),
    ] {
        let computed = compute(lines(amounts), "", &[]);
        let customers = table(&computed, "customers");
        assert_eq!(f64_at(&customers, "revenue", 0), Some(1e13));
        assert_eq!(f64_at(&customers, "revenue", 1), Some(1e13));
        assert_eq!(f64_at(&customers, "aov", 0), Some(2e12));
        let kpis = table(&computed, "kpis");
        assert_eq!(f64_at(&kpis, "revenue", 0), Some(2e13));
        let cohorts = table(&computed, "cohort_retention");
        let total: f64 = cohorts.column("revenue").unwrap().f64().unwrap().sum().unwrap();
        assert_eq!(total, 2e13);
        let segments = table(&computed, "rfm_segments");
        let total: f64 = segments.column("revenue").unwrap().f64().unwrap().sum().unwrap();
        assert_eq!(total, 2e13);
        let pareto = table(&computed, "pareto");
        assert_close(
            f64_at(&pareto, "revenue_share", 0).unwrap(),
            0.5,
            "top 1% of 2 equal customers",
        );
    }
}

#[test]
fn one_order_past_int64_micro_units_is_exact() {
    // Three lines of 5e12 in one order: 1.5e13 (1.5e19 micro-units).
    let mut df = lines(Column::new("a".into(), vec![5_000_000_000_000i64; 3]));
    df.with_column(Column::new("order_id".into(), ["o", "o", "o"]))
        .unwrap();
    df.with_column(Column::new("customer_id".into(), ["c", "c", "c"]))
        .unwrap();
    let customers = table(&compute(df, "", &[]), "customers");
    assert_eq!(f64_at(&customers, "revenue", 0), Some(1.5e13));
    assert_eq!(i64_at(&customers, "orders", 0), Some(1));
}

#[test]
fn the_line_limit_is_exact_at_its_edge() {
    // 9223372036854 units is 9223372036854000000 micro-units, within Int64; one
    // more unit is not. A refund of the same size nets c0 to zero.
    let fine = lines(Column::new(
        "a".into(),
        [9_223_372_036_854i64, 7, -9_223_372_036_854],
    ));
    let computed = compute(fine, "", &[]);
    let kpis = table(&computed, "kpis");
    assert_close(f64_at(&kpis, "revenue", 0).unwrap(), 7.0, "revenue");
    let past = lines(Column::new("a".into(), [1i64, 9_223_372_036_855]));
    let err = out_of_range(try_compute(past, "", &[]));
    assert!(
        err.contains("`9223372036855`") && err.contains("input row 2"),
        "{err}"
    );
    assert!(err.contains("9223372036854.775807"), "{err}");
}

#[test]
fn values_past_the_limit_are_refused_in_every_type() {
    // Integers wrapped to negative revenue; floats became "non-finite" and dropped
    // their customer silently; text did the same.
    for (amounts, example) in [
        (
            Column::new("a".into(), [5i64, 1_000_000_000_000_000_000]),
            "1000000000000000000",
        ),
        (Column::new("a".into(), [5.0, 1e18]), "1e+18"),
        (Column::new("a".into(), [5.0, -1e18]), "-1e+18"),
        (Column::new("a".into(), ["5", "1e18"]), "1e18"),
        (Column::new("a".into(), [5u64, u64::MAX]), "18446744073709551615"),
        (
            Column::new("a".into(), ["5", "12345678901234567890"])
                .cast(&DataType::Decimal(38, 18))
                .unwrap(),
            "12345678901234567890",
        ),
        (
            Column::new("a".into(), ["5", "123456789012345678901234567890"]),
            "123456789012345678901234567890",
        ),
    ] {
        let err = out_of_range(try_compute(lines(amounts), "", &[]));
        assert!(err.contains("column `amount`") && err.contains(example), "{err}");
    }
}

#[test]
fn a_product_past_the_limit_is_refused_and_names_both_factors() {
    let mut df = lines(Column::new("a".into(), [5_000_000_000i64, 3]));
    df.with_column(Column::new("q".into(), [5_000i64, 2])).unwrap();
    let config = "  columns:\n    quantity: q\n  amount_is_unit_price: true\n";
    let err = out_of_range(try_compute(df, config, &[]));
    assert!(err.contains("`5000000000 x 5000`"), "{err}");
    // 5e9 x 1000 = 5e12 is within the limit, and exact.
    let mut df = lines(Column::new("a".into(), [5_000_000_000i64, 3]));
    df.with_column(Column::new("q".into(), [1_000i64, 2])).unwrap();
    let customers = table(&compute(df, config, &[]), "customers");
    assert_eq!(f64_at(&customers, "revenue", 0), Some(5e12));
    assert_eq!(f64_at(&customers, "revenue", 1), Some(6.0));
}

#[test]
fn decimals_and_text_are_rounded_exactly_half_up() {
    // 0.0000005 rounds up to one micro-unit and -0.0000015 to -1 (floor(x + 0.5));
    // 64.0000645 is 64000064.5 micro-units, up to ...065, where a float times 10^6
    // (64000064.49999999) rounds down.
    let text = Column::new("a".into(), ["64.0000645", "0.0000005", "-0.0000015", "0.0000025"]);
    let decimal = text.cast(&DataType::Decimal(38, 7)).unwrap();
    // Spark's DECIMAL(38, 18).
    let spark = text.cast(&DataType::Decimal(38, 18)).unwrap();
    for amounts in [text, decimal, spark] {
        let computed = compute(lines(amounts), "", &["cleaning.returns=net"]);
        let customers = table(&computed, "customers");
        // c0: 64000065 - 1 micro-units; c1: 1 + 3.
        assert_eq!(f64_at(&customers, "revenue", 0), Some(64_000_064.0 / 1e6));
        assert_eq!(f64_at(&customers, "revenue", 1), Some(4.0 / 1e6));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Revenue per customer and in total against a naive Int128 sum of the lines,
    /// with amounts up to the line limit: exact where the sum fits a float exactly.
    #[test]
    fn sums_of_large_amounts_match_a_naive_int128_sum(
        amounts in proptest::collection::vec(-9_000_000_000_000i64..9_000_000_000_000, 2..40),
        customers in 1usize..5,
    ) {
        let n = amounts.len();
        let mut df = lines(Column::new("a".into(), amounts.clone()));
        let ids: Vec<String> = (0..n).map(|i| format!("c{}", i % customers)).collect();
        df.with_column(Column::new("customer_id".into(), ids.clone())).unwrap();
        let mut naive = std::collections::BTreeMap::<String, i128>::new();
        for (id, amount) in ids.iter().zip(&amounts) {
            *naive.entry(id.clone()).or_default() += i128::from(*amount) * 1_000_000;
        }
        // Customers with a purchase: a positive order (one line per order here).
        let buyers: Vec<&String> = naive
            .keys()
            .filter(|id| ids.iter().zip(&amounts).any(|(i, a)| i == *id && *a > 0))
            .collect();
        prop_assume!(!buyers.is_empty());
        let computed = compute(df, "", &[]);
        let table = table(&computed, "customers");
        prop_assert_eq!(table.height(), buyers.len());
        let mut total = 0i128;
        for (row, id) in buyers.iter().enumerate() {
            let got = str_at(&table, "customer_id", row);
            prop_assert_eq!(got.as_deref(), Some(id.as_str()));
            let want = naive[*id];
            total += want;
            prop_assert_eq!(f64_at(&table, "revenue", row), Some(want as f64 / 1e6));
        }
        let kpis = crate::common::table(&computed, "kpis");
        prop_assert_eq!(f64_at(&kpis, "revenue", 0), Some(total as f64 / 1e6));
    }
}
