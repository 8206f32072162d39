//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use loyalty::config;
use loyalty::pipeline::{self, Computed};
use polars::prelude::*;

/// The binary with a clean environment (no RUST_LOG or POLARS_* surprises).
pub fn loyalty() -> Command {
    let mut cmd = Command::cargo_bin("loyalty").expect("binary builds");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// The repository root (tests run with it as the working directory).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared CDNOW data beside the checkout.
pub fn cdnow(file: &str) -> PathBuf {
    repo().join("../shared/data/cdnow").join(file)
}

/// Panics unless the output directories `a` and `b` hold byte-identical
/// `TABLE.csv` files for each of `tables`.
pub fn assert_same_csvs(a: &Path, b: &Path, tables: &[&str]) {
    for table in tables {
        let read = |dir: &Path| std::fs::read(dir.join(format!("{table}.csv"))).unwrap();
        assert!(
            read(a) == read(b),
            "{table} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

pub fn write_parquet(path: &Path, df: &mut DataFrame) {
    let file = std::fs::File::create(path).expect("create parquet");
    ParquetWriter::new(file).finish(df).expect("write parquet");
}

/// Runs the pipeline on an in-memory frame with a YAML config (input.orders is a placeholder).
pub fn compute(df: DataFrame, yaml: &str, sets: &[&str]) -> Computed {
    try_compute(df, yaml, sets).unwrap_or_else(|e| panic!("pipeline failed: {e}"))
}

/// Fixtures are too small to identify a predictive model, so it is off unless a
/// test turns it on with `--set clv.model=bgnbd`.
pub fn try_compute(df: DataFrame, yaml: &str, sets: &[&str]) -> loyalty::error::Result<Computed> {
    let text = format!("input:\n  orders: fixture.parquet\n{yaml}");
    let sets: Vec<String> = std::iter::once("clv.model=none")
        .chain(sets.iter().copied())
        .map(str::to_string)
        .collect();
    let config = config::from_str(&text, "fixture.yaml", &sets)?;
    pipeline::compute(df.lazy(), &config, "fixture")
}

/// A table of the run, collected (the customer table is made in slices).
pub fn table(computed: &Computed, name: &str) -> DataFrame {
    computed
        .tables
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no table {name}"))
        .1
        .collect(None)
        .unwrap_or_else(|e| panic!("table {name}: {e}"))
}

pub fn f64_at(df: &DataFrame, column: &str, row: usize) -> Option<f64> {
    df.column(column).unwrap().get(row).unwrap().extract::<f64>()
}

pub fn i64_at(df: &DataFrame, column: &str, row: usize) -> Option<i64> {
    df.column(column).unwrap().get(row).unwrap().extract::<i64>()
}

pub fn str_at(df: &DataFrame, column: &str, row: usize) -> Option<String> {
    let value = df.column(column).unwrap().get(row).unwrap();
    match value {
        AnyValue::Null => None,
        other => Some(other.str_value().to_string()),
    }
}

pub fn assert_close(actual: f64, expected: f64, what: &str) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: got {actual}, expected {expected}"
    );
}

/// Dates as a Date column from ISO strings.
pub fn dates(name: &str, values: &[&str]) -> Column {
    let parsed: Vec<Option<i32>> = values
        .iter()
        .map(|v| {
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .ok()
                .map(loyalty::dates::epoch_days)
        })
        .collect();
    Column::new(name.into(), parsed).cast(&DataType::Date).unwrap()
}

/// Runs `cmd`, expecting exit `code` and every fragment somewhere in stderr.
pub fn assert_fails(cmd: &mut Command, code: i32, fragments: &[&str]) {
    let assert = cmd.assert().code(code);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    for fragment in fragments {
        assert!(stderr.contains(fragment), "stderr lacks {fragment:?}:\n{stderr}");
    }
}
