//! The real CDNOW panel (../shared/data/cdnow) with default settings.

use loyalty::io::input;
use polars::prelude::IntoLazy;

use crate::common::*;

fn run_on(file: &str) -> loyalty::pipeline::Computed {
    let path = cdnow(file).display().to_string();
    let config =
        loyalty::config::from_str(&format!("input:\n  orders: {path}\n"), "cdnow.yaml", &[]).unwrap();
    let inputs = input::resolve(&config.input.orders).unwrap();
    let raw = input::scan(&inputs).unwrap();
    loyalty::pipeline::compute(raw, &config, &inputs.label()).unwrap()
}

#[test]
fn master_file_headline_numbers() {
    let computed = run_on("cdnow_master_orders.parquet");
    assert_eq!(computed.as_of.to_string(), "1998-07-01");
    let kpis = &table(&computed, "kpis");
    assert_eq!(i64_at(kpis, "customers", 0), Some(23_502));
    assert_eq!(i64_at(kpis, "orders", 0), Some(69_579));
    assert_eq!(i64_at(kpis, "customers_for_80pct", 0), Some(7_695));
    let round4 = |x: f64| (x * 1e4).round() / 1e4;
    assert_eq!(round4(f64_at(kpis, "gini", 0).unwrap()), 0.6335);
    assert_eq!(
        round4(f64_at(kpis, "top_20pct_revenue_share", 0).unwrap()),
        0.6771
    );
    // 80 zero-amount rows: 69,659 lines, all kept; 68 customers have only $0 orders.
    assert_eq!(computed.cleaning[0].rows_in, 69_659);
    assert_eq!(computed.cleaning[3].rows_out, 69_659);
    assert_eq!(table(&computed, "customers").height(), 23_502);
}

#[test]
fn sample_file_matches_the_master_restricted_to_its_customers() {
    let computed = run_on("cdnow_sample_orders.parquet");
    let kpis = &table(&computed, "kpis");
    // 2,357 sampled customers, of whom some have only $0.00 orders (not purchases).
    let customers = i64_at(kpis, "customers", 0).unwrap();
    assert!(customers <= 2_357 && customers > 2_300, "{customers}");
    let revenue = f64_at(kpis, "revenue", 0).unwrap();
    let customers_table = &table(&computed, "customers");
    let summed = customers_table
        .clone()
        .lazy()
        .select([polars::prelude::col("revenue").sum()])
        .collect()
        .unwrap();
    let sum = f64_at(&summed, "revenue", 0).unwrap();
    assert_close(sum, revenue, "kpis revenue is the sum of customers.revenue");
}
