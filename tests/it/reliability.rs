//! The bad-input matrix (RELIABILITY.md): each case runs the binary and checks the
//! exit code and the key words of the message — the file, column or key, and the
//! fix. A test keeps RELIABILITY.md listing every case.

use std::fs;
use std::path::Path;

use polars::prelude::*;
use tempfile::TempDir;

use crate::common::*;

/// What a case sets up in its temporary directory: the config body after
/// `input: orders:` (or the whole config when it starts with `!`), and the
/// arguments after `run --config FILE --out DIR`.
struct Setup {
    orders: String,
    config: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// `out/` exists before the run (a folder the case made): not a sign of publishing.
    keep_out: bool,
    /// No `--out`: the config's output.dir is the case.
    no_out: bool,
}

impl Setup {
    fn orders(orders: impl Into<String>) -> Setup {
        Setup {
            orders: orders.into(),
            config: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            keep_out: false,
            no_out: false,
        }
    }
    fn config(mut self, body: &str) -> Setup {
        self.config.push_str(body);
        self
    }
    fn arg(mut self, arg: &str) -> Setup {
        self.args.push(arg.into());
        self
    }
    fn no_model(self) -> Setup {
        self.arg("--set").arg("clv.model=none")
    }
}

struct Case {
    name: &'static str,
    setup: fn(&Path) -> Setup,
    code: i32,
    /// Fragments of stderr.
    says: &'static [&'static str],
}

fn frame(rows: &[(&str, &str, &str, f64)]) -> DataFrame {
    let dates: Vec<i32> = rows
        .iter()
        .map(|r| {
            let d = chrono::NaiveDate::parse_from_str(r.2, "%Y-%m-%d").unwrap();
            loyalty::dates::epoch_days(d)
        })
        .collect();
    DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
        Column::new("order_id".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
        Column::new("order_date".into(), dates)
            .cast(&DataType::Date)
            .unwrap(),
        Column::new("amount".into(), rows.iter().map(|r| r.3).collect::<Vec<_>>()),
    ])
    .unwrap()
}

/// Three customers over a year: enough for every table (not for a model fit).
fn small() -> DataFrame {
    frame(&[
        ("a", "1", "2024-01-05", 10.0),
        ("a", "2", "2024-03-01", 20.0),
        ("b", "3", "2024-02-01", 5.0),
        ("b", "4", "2024-06-01", 7.5),
        ("b", "5", "2024-09-01", 2.0),
        ("c", "6", "2024-04-01", 40.0),
    ])
}

/// `small()`'s first three lines with another amount column.
fn with_amounts(amounts: Column) -> DataFrame {
    let mut df = small().head(Some(3));
    df.with_column(amounts).unwrap();
    df
}

/// Enough rows that data pages lie well past the file's first bytes.
fn big_enough() -> DataFrame {
    let n = 5_000;
    let days: Vec<i32> = (0..n).map(|i| 19_000 + i % 300).collect();
    DataFrame::new_infer_height(vec![
        Column::new(
            "customer_id".into(),
            (0..n)
                .map(|i| format!("customer-{}", i % 400))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "order_id".into(),
            (0..n).map(|i| format!("order-{i}")).collect::<Vec<_>>(),
        ),
        Column::new("order_date".into(), days)
            .cast(&DataType::Date)
            .unwrap(),
        Column::new(
            "amount".into(),
            (0..n).map(|i| f64::from(i % 97) + 0.5).collect::<Vec<_>>(),
        ),
    ])
    .unwrap()
}

fn parquet(dir: &Path, name: &str, mut df: DataFrame) -> String {
    let path = dir.join(name);
    write_parquet(&path, &mut df);
    path.display().to_string()
}

fn cases() -> Vec<Case> {
    vec![
        // --- Input files -------------------------------------------------------
        Case {
            name: "missing input file",
            setup: |d| Setup::orders(d.join("nope.parquet").display().to_string()),
            code: 3,
            says: &["nope.parquet does not exist (input.orders)", "check the path"],
        },
        Case {
            name: "empty input directory",
            setup: |d| {
                fs::create_dir(d.join("empty")).unwrap();
                Setup::orders(d.join("empty").display().to_string())
            },
            code: 3,
            says: &["empty", "no Parquet or CSV files"],
        },
        Case {
            name: "glob matching nothing",
            setup: |d| Setup::orders(format!("{}/*.pq", d.display())),
            code: 3,
            says: &["no Parquet or CSV files match", "*.pq (input.orders)"],
        },
        Case {
            name: "file that is not Parquet",
            setup: |d| {
                fs::write(d.join("notes.parquet"), "customer_id,order_id\n1,2\n").unwrap();
                Setup::orders(d.join("notes.parquet").display().to_string())
            },
            code: 3,
            says: &[
                "cannot read",
                "notes.parquet as Parquet",
                "not a Parquet file, or it is truncated",
            ],
        },
        Case {
            name: "truncated Parquet file",
            setup: |d| {
                let whole = parquet(d, "whole.parquet", small());
                let bytes = fs::read(&whole).unwrap();
                fs::write(d.join("cut.parquet"), &bytes[..bytes.len() / 2]).unwrap();
                Setup::orders(d.join("cut.parquet").display().to_string())
            },
            code: 3,
            says: &["cut.parquet as Parquet", "not a Parquet file, or it is truncated"],
        },
        Case {
            name: "empty table",
            setup: |d| Setup::orders(parquet(d, "empty.parquet", small().head(Some(0)))),
            code: 3,
            says: &["empty.parquet has no rows: nothing to analyse (input.orders)"],
        },
        Case {
            name: "zero rows left after cleaning",
            setup: |d| {
                let df = small()
                    .lazy()
                    .with_column(lit(NULL).cast(DataType::String).alias("customer_id"))
                    .collect()
                    .unwrap();
                Setup::orders(parquet(d, "nulls.parquet", df))
            },
            code: 3,
            says: &[
                "no purchases left after cleaning",
                "no row has a customer_id, order_id, order_date and amount",
            ],
        },
        Case {
            name: "missing mapped column",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small())).config("  columns:\n    amount: price\n")
            },
            code: 3,
            says: &[
                "column `price` (mapped to `amount` by input.columns.amount) is not in",
                "the columns there are",
            ],
        },
        Case {
            name: "two physical columns mapped to one logical name",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .config("  columns:\n    amount: amount\n    amount: price\n")
            },
            code: 2,
            says: &["duplicate key `amount`"],
        },
        Case {
            name: "amount as text that does not parse",
            setup: |d| {
                let df = small()
                    .lazy()
                    .with_column(
                        when(col("order_id").eq(lit("3")))
                            .then(lit("12.x"))
                            .otherwise(col("amount").cast(DataType::String))
                            .alias("amount"),
                    )
                    .collect()
                    .unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
            },
            code: 3,
            says: &["amount", "12.x"],
        },
        Case {
            name: "dates as integers",
            setup: |d| {
                let df = small()
                    .lazy()
                    .with_column(lit(20240101i64).alias("order_date"))
                    .collect()
                    .unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
            },
            code: 3,
            says: &[
                "column `order_date`",
                "expected a date, a datetime, or a string with input.date_format",
            ],
        },
        Case {
            name: "dates out of range as text",
            setup: |d| {
                let df = small()
                    .lazy()
                    .with_column(
                        when(col("order_id").eq(lit("3")))
                            .then(lit("2024-13-45"))
                            .otherwise(col("order_date").cast(DataType::String))
                            .alias("order_date"),
                    )
                    .collect()
                    .unwrap();
                Setup::orders(parquet(d, "o.parquet", df)).config("  date_format: \"%Y-%m-%d\"\n")
            },
            code: 3,
            says: &["order_date", "2024-13-45"],
        },
        Case {
            name: "all amounts negative",
            setup: |d| {
                let df = small().lazy().with_column(-col("amount")).collect().unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
            },
            code: 3,
            says: &["none with value > 0"],
        },
        Case {
            name: "NaN and infinite amounts are dropped and counted",
            setup: |d| {
                let mut df = small();
                df.vstack_mut(&frame(&[
                    ("a", "7", "2024-05-01", f64::NAN),
                    ("b", "8", "2024-05-01", f64::INFINITY),
                ]))
                .unwrap();
                Setup::orders(parquet(d, "o.parquet", df)).no_model()
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "a single customer: the model cannot be fitted",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small().head(Some(2)))),
            code: 4,
            says: &["bgnbd", "clv.on_fit_failure: skip"],
        },
        Case {
            name: "a single order without a model",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small().head(Some(1)))).no_model(),
            code: 0,
            says: &["every customer has the same"],
        },
        Case {
            name: "every customer bought once: RFM bins collapse",
            setup: |d| {
                let df = frame(&[
                    ("a", "1", "2024-01-05", 10.0),
                    ("b", "2", "2024-03-01", 20.0),
                    ("c", "3", "2024-04-01", 5.0),
                ]);
                Setup::orders(parquet(d, "o.parquet", df)).no_model()
            },
            code: 0,
            says: &["every customer has the same orders: f_score is 1 for everyone"],
        },
        Case {
            name: "every customer bought once: the model has no repeat purchases",
            setup: |d| {
                let df = frame(&[
                    ("a", "1", "2024-01-05", 10.0),
                    ("b", "2", "2024-03-01", 20.0),
                    ("c", "3", "2024-04-01", 5.0),
                ]);
                Setup::orders(parquet(d, "o.parquet", df))
            },
            code: 4,
            says: &["bgnbd:"],
        },
        Case {
            name: "as_of before every order",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--as-of")
                    .arg("2020-01-01")
            },
            code: 3,
            says: &["step 2", "left no rows"],
        },
        Case {
            name: "as_of far in the future",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--as-of")
                    .arg("2030-01-01")
                    .no_model()
            },
            code: 0,
            says: &["as_of 2030-01-01 is", "days after the latest purchase"],
        },
        Case {
            name: "files with different schemas in one directory",
            setup: |d| {
                fs::create_dir(d.join("parts")).unwrap();
                parquet(&d.join("parts"), "a.parquet", small());
                let other = small()
                    .lazy()
                    .with_column(col("amount").cast(DataType::String))
                    .collect()
                    .unwrap();
                parquet(&d.join("parts"), "b.parquet", other);
                Setup::orders(d.join("parts").display().to_string())
            },
            code: 3,
            says: &["a.parquet", "b.parquet", "amount"],
        },
        Case {
            name: "huge ids",
            setup: |d| {
                let long = "x".repeat(5_000);
                let df = small()
                    .lazy()
                    .with_columns([
                        (lit(long.as_str()) + col("customer_id")).alias("customer_id"),
                        lit(u64::MAX).cast(DataType::UInt64).alias("order_id_number"),
                    ])
                    .with_column(
                        concat_str(
                            [col("order_id_number").cast(DataType::String), col("order_id")],
                            "-",
                            true,
                        )
                        .alias("order_id"),
                    )
                    .drop(cols(["order_id_number"]))
                    .collect()
                    .unwrap();
                Setup::orders(parquet(d, "o.parquet", df)).no_model()
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "integer ids at the limits",
            setup: |d| {
                let mut df = small();
                let ids: Vec<i64> = ["a", "a", "b", "b", "b", "c"]
                    .iter()
                    .map(|c| i64::MAX - i64::from(c.as_bytes()[0]))
                    .collect();
                df.replace("customer_id", Column::new("customer_id".into(), ids))
                    .unwrap();
                Setup::orders(parquet(d, "o.parquet", df)).no_model()
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "binary ids that are not UTF-8 text",
            setup: |d| {
                let df = small()
                    .lazy()
                    .with_column(col("customer_id").cast(DataType::Binary))
                    .collect()
                    .unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
            },
            code: 3,
            says: &["column `customer_id`", "binary"],
        },
        Case {
            name: "the same order id under two customers is two orders",
            setup: |d| {
                let df = frame(&[
                    ("a", "1", "2024-01-05", 10.0),
                    ("b", "1", "2024-03-01", 20.0),
                    ("a", "2", "2024-04-01", 5.0),
                ]);
                Setup::orders(parquet(d, "o.parquet", df)).no_model()
            },
            code: 0,
            says: &[],
        },
        // --- Money, dates and the rows read ---------------------------------------
        Case {
            name: "integer line value past Int64 micro-units",
            setup: |d| {
                Setup::orders(parquet(
                    d,
                    "o.parquet",
                    with_amounts(Column::new("amount".into(), [5i64, 1_000_000_000_000_000_000, 7])),
                ))
            },
            code: 3,
            says: &[
                "column `amount`",
                "out of range",
                "`1000000000000000000` at row 2 of",
                "o.parquet",
                "9223372036854.775807",
            ],
        },
        Case {
            name: "float line value past Int64 micro-units",
            setup: |d| {
                Setup::orders(parquet(
                    d,
                    "o.parquet",
                    with_amounts(Column::new("amount".into(), [5.0, 7.0, -1e18])),
                ))
            },
            code: 3,
            says: &["column `amount`", "`-1e+18` at row 3 of", "9223372036854.775807"],
        },
        Case {
            name: "text line value past Int64 micro-units",
            setup: |d| {
                Setup::orders(parquet(
                    d,
                    "o.parquet",
                    with_amounts(Column::new("amount".into(), ["5", "7", "99999999999999"])),
                ))
            },
            code: 3,
            says: &["column `amount`", "`99999999999999` at row 3"],
        },
        Case {
            name: "amount × quantity past Int64 micro-units",
            setup: |d| {
                let mut df = with_amounts(Column::new("amount".into(), [5_000_000_000i64, 2, 3]));
                df.with_column(Column::new("qty".into(), [5_000i64, 1, 1]))
                    .unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
                    .config("  columns:\n    quantity: qty\n  amount_is_unit_price: true\n")
            },
            code: 3,
            says: &["column `amount`", "`5000000000 x 5000` at row 1"],
        },
        Case {
            name: "revenue of 1e13 per customer is exact",
            setup: |d| {
                Setup::orders(parquet(
                    d,
                    "o.parquet",
                    with_amounts(Column::new(
                        "amount".into(),
                        [5_000_000_000_000i64, 5_000_000_000_000, 5_000_000_000_000],
                    )),
                ))
                .no_model()
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "date at the edge of Date32",
            setup: |d| {
                let mut df = small().head(Some(2));
                let days = Column::new("order_date".into(), [19_000i32, i32::MAX])
                    .cast(&DataType::Date)
                    .unwrap();
                df.with_column(days).unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
            },
            code: 3,
            says: &[
                "column `order_date`",
                "out of range",
                "`2147483647 days from 1970-01-01` at row 2",
                "0001-01-01 and 9999-12-31",
            ],
        },
        Case {
            name: "timestamp past the calendar's range",
            setup: |d| {
                let mut df = small().head(Some(2));
                let stamps = Column::new("order_date".into(), [1_700_000_000_000i64, 1 << 62])
                    .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
                    .unwrap();
                df.with_column(stamps).unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
            },
            code: 3,
            says: &["column `order_date`", "out of range", "at row 2"],
        },
        Case {
            name: "zoned timestamp past the calendar's range",
            setup: |d| {
                let mut df = small().head(Some(2));
                let stamps = Column::new("order_date".into(), [1_700_000_000_000i64, -(1 << 62)])
                    .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))
                    .unwrap();
                df.with_column(stamps).unwrap();
                Setup::orders(parquet(d, "o.parquet", df)).config("  timezone: Asia/Jakarta\n")
            },
            code: 3,
            says: &["column `order_date`", "out of range"],
        },
        Case {
            name: "dates at the calendar's ends are fine",
            setup: |d| {
                let mut df = small().head(Some(3));
                let days = dates("order_date", &["0001-01-01", "2024-05-01", "9999-12-30"]);
                df.with_column(days).unwrap();
                Setup::orders(parquet(d, "o.parquet", df))
                    .no_model()
                    .arg("--set")
                    .arg("cohorts.grain=quarter")
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "Spark markers, `.crc` files and `_temporary/` in an input directory",
            setup: |d| {
                let lake = d.join("lake");
                fs::create_dir_all(lake.join("_temporary/0")).unwrap();
                parquet(&lake, "part-00000.snappy.parquet", small());
                parquet(&lake.join("_temporary/0"), "part-00001.parquet", small());
                parquet(&lake, ".hidden.parquet", small());
                fs::write(lake.join("_SUCCESS"), "").unwrap();
                fs::write(lake.join(".part-00000.snappy.parquet.crc"), [0u8, 1]).unwrap();
                fs::write(lake.join("README.txt"), "nightly export").unwrap();
                Setup::orders(lake.display().to_string()).no_model()
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "a file name with glob characters",
            setup: |d| Setup::orders(format!("'{}'", parquet(d, "orders[2024].parquet", small()))).no_model(),
            code: 0,
            says: &[],
        },
        Case {
            name: "one file named twice in input.orders",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                let file = parquet(&d.join("in"), "o.parquet", small());
                Setup::orders(format!(
                    "[{file}, {}/in/./o.parquet, {}/in]",
                    d.display(),
                    d.display()
                ))
                .no_model()
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "symlink loop in an input directory",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                std::os::unix::fs::symlink(d.join("in"), d.join("in/again")).unwrap();
                Setup::orders(d.join("in").display().to_string())
            },
            code: 3,
            says: &["in/again", "a loop"],
        },
        Case {
            name: "symlink to itself in an input directory",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                std::os::unix::fs::symlink(d.join("in/self.parquet"), d.join("in/self.parquet")).unwrap();
                Setup::orders(d.join("in").display().to_string())
            },
            code: 3,
            says: &["in/self.parquet", "a loop"],
        },
        Case {
            name: "broken symlink to a Parquet file",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                std::os::unix::fs::symlink(d.join("gone.parquet"), d.join("in/p.parquet")).unwrap();
                Setup::orders(d.join("in").display().to_string())
            },
            code: 3,
            says: &["in/p.parquet", "broken symlink"],
        },
        Case {
            name: "partition directories at different depths",
            setup: |d| {
                fs::create_dir_all(d.join("in/year=2024")).unwrap();
                parquet(&d.join("in"), "a.parquet", small());
                parquet(&d.join("in/year=2024"), "b.parquet", small());
                Setup::orders(d.join("in").display().to_string())
            },
            code: 3,
            says: &["partition", "b.parquet"],
        },
        Case {
            name: "damaged data page behind a good footer",
            setup: |d| {
                let whole = parquet(d, "whole.parquet", big_enough());
                let mut bytes = fs::read(&whole).unwrap();
                for b in &mut bytes[100..600] {
                    *b = 0xAB;
                }
                fs::write(d.join("damaged.parquet"), &bytes).unwrap();
                Setup::orders(d.join("damaged.parquet").display().to_string())
            },
            code: 3,
            says: &["cannot read the order lines of", "damaged.parquet"],
        },
        // --- Output directory --------------------------------------------------
        Case {
            name: "output directory that is a file",
            setup: |d| {
                fs::write(d.join("taken"), "x").unwrap();
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--out")
                    .arg(&d.join("taken").display().to_string())
            },
            code: 2,
            says: &["taken exists and is not a directory"],
        },
        Case {
            name: "output directory that cannot be written",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .no_model()
                    .arg("--out")
                    .arg("/proc/loyalty-out")
            },
            code: 2,
            says: &["cannot write in /proc", "output.dir /proc/loyalty-out"],
        },
        Case {
            name: "output directory inside the input directory",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                Setup::orders(d.join("in").display().to_string())
                    .arg("--out")
                    .arg(&d.join("in/out").display().to_string())
            },
            code: 2,
            says: &["is inside the input directory", "choose an output.dir outside it"],
        },
        Case {
            name: "output directory is the directory of an input file",
            setup: |d| {
                let input = parquet(d, "o.parquet", small());
                Setup::orders(input).arg("--out").arg(&d.display().to_string())
            },
            code: 2,
            says: &["holds the input file", "o.parquet: publishing would delete it"],
        },
        Case {
            name: "output directory is the directory of an input glob",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                Setup::orders(format!("'{}/in/*.parquet'", d.display()))
                    .arg("--out")
                    .arg(&d.join("in").display().to_string())
            },
            code: 2,
            says: &["holds the input file", "publishing would delete it"],
        },
        Case {
            name: "output directory where the input glob would read its outputs",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                Setup::orders(format!("'{}/in/**/*.parquet'", d.display()))
                    .arg("--out")
                    .arg(&d.join("in/out").display().to_string())
            },
            code: 2,
            says: &["is where the input glob", "would match its files"],
        },
        Case {
            name: "output directory inside the input directory through `..`",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                Setup::orders(d.join("in").display().to_string())
                    .arg("--out")
                    .arg(&d.join("in/x/../out").display().to_string())
            },
            code: 2,
            says: &["is inside the input directory", "in/out)"],
        },
        Case {
            name: "output directory inside the input directory through a symlink",
            setup: |d| {
                fs::create_dir(d.join("in")).unwrap();
                parquet(&d.join("in"), "o.parquet", small());
                std::os::unix::fs::symlink(d.join("in"), d.join("alias")).unwrap();
                Setup::orders(d.join("in").display().to_string())
                    .arg("--out")
                    .arg(&d.join("alias/out").display().to_string())
            },
            code: 2,
            says: &["alias/out", "is inside the input directory"],
        },
        Case {
            name: "output directory that holds the input directory",
            setup: |d| {
                fs::create_dir_all(d.join("lake/in")).unwrap();
                parquet(&d.join("lake/in"), "o.parquet", small());
                Setup::orders(d.join("lake/in").display().to_string())
                    .arg("--out")
                    .arg(&d.join("lake").display().to_string())
                    .arg("--force")
            },
            code: 2,
            says: &["holds the input", "publishing would delete it"],
        },
        Case {
            name: "output directory that holds the config file",
            setup: |d| {
                let input = repo().join("data/orders.parquet").display().to_string();
                Setup::orders(input)
                    .arg("--out")
                    .arg(&d.display().to_string())
                    .arg("--force")
            },
            code: 2,
            says: &["holds the config file", "config.yaml"],
        },
        Case {
            name: "existing folder that is not a loyalty output",
            setup: |d| {
                fs::create_dir(d.join("out")).unwrap();
                fs::write(d.join("out/budget.xlsx"), "x").unwrap();
                let mut setup = Setup::orders(parquet(d, "o.parquet", small())).no_model();
                setup.keep_out = true;
                setup
            },
            code: 2,
            says: &["is not a loyalty output", "budget.xlsx", "--force"],
        },
        Case {
            name: "--force replaces a folder that is not a loyalty output",
            setup: |d| {
                fs::create_dir(d.join("out")).unwrap();
                fs::write(d.join("out/budget.xlsx"), "x").unwrap();
                Setup::orders(parquet(d, "o.parquet", small()))
                    .no_model()
                    .arg("--force")
            },
            code: 0,
            says: &[],
        },
        Case {
            name: "--out at the filesystem root",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--out")
                    .arg("/")
            },
            code: 2,
            says: &["`/` must name a directory below the filesystem root"],
        },
        Case {
            name: "output.dir `/` in the config",
            setup: |d| {
                let mut setup = Setup::orders(parquet(d, "o.parquet", small())).config("output:\n  dir: /\n");
                setup.no_out = true;
                setup
            },
            code: 2,
            says: &[
                "config.yaml:",
                "`output.dir` `/` must name a directory below the filesystem root",
            ],
        },
        Case {
            name: "output.dir empty in the config",
            setup: |d| {
                let mut setup =
                    Setup::orders(parquet(d, "o.parquet", small())).config("output:\n  dir: \"\"\n");
                setup.no_out = true;
                setup
            },
            code: 2,
            says: &["`output.dir`", "it is empty"],
        },
        Case {
            name: "--set output.dir= (empty, parsed as null)",
            setup: |d| {
                let mut setup = Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--set")
                    .arg("output.dir=");
                setup.no_out = true;
                setup
            },
            code: 2,
            says: &["--set output.dir=", "`output.dir` is empty"],
        },
        Case {
            name: "output.dir `.`",
            setup: |d| {
                let mut setup = Setup::orders(parquet(d, "o.parquet", small())).config("output:\n  dir: .\n");
                setup.no_out = true;
                setup
            },
            code: 2,
            says: &["`output.dir` `.` must end in a directory name"],
        },
        Case {
            name: "--out empty",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--out")
                    .arg("")
            },
            code: 2,
            says: &["--out"],
        },
        Case {
            name: "output directory below a file",
            setup: |d| {
                fs::write(d.join("plain"), "x").unwrap();
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--out")
                    .arg(&d.join("plain/out").display().to_string())
            },
            code: 2,
            says: &["plain/out", "is not a directory"],
        },
        // --- Config --------------------------------------------------------------
        Case {
            name: "unknown key",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("cohorts:\n  grian: week\n"),
            code: 2,
            says: &["unknown key `cohorts.grian`, did you mean `cohorts.grain`?"],
        },
        Case {
            name: "wrong type",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("rfm:\n  bins: five\n"),
            code: 2,
            says: &["rfm.bins", "five"],
        },
        Case {
            name: "bins out of range",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("rfm:\n  bins: 12\n"),
            code: 2,
            says: &["rfm.bins"],
        },
        Case {
            name: "share out of range",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small())).config("pareto:\n  top_shares: [0.2, 1.5]\n")
            },
            code: 2,
            says: &["pareto.top_shares"],
        },
        Case {
            name: "margin out of range",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("clv:\n  margin: 0\n"),
            code: 2,
            says: &["clv.margin"],
        },
        Case {
            name: "negative discount rate",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small())).config("clv:\n  discount_rate_annual: -0.1\n")
            },
            code: 2,
            says: &["clv.discount_rate_annual"],
        },
        Case {
            name: "ABC thresholds out of order",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .config("pareto:\n  abc:\n    a: 0.9\n    b: 0.8\n")
            },
            code: 2,
            says: &["pareto.abc"],
        },
        Case {
            name: "--set with a bad path",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--set")
                    .arg("cohorts.grian=week")
            },
            code: 2,
            says: &["--set cohorts.grian=week", "did you mean `cohorts.grain`?"],
        },
        Case {
            name: "--set with a bad value",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--set")
                    .arg("kpis.churn_window_days=soon")
            },
            code: 2,
            says: &["--set kpis.churn_window_days=soon", "must be a whole number"],
        },
        Case {
            name: "YAML aliases that expand exponentially",
            setup: |d| {
                let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
                for i in 1..12 {
                    let p = i - 1;
                    bomb.push_str(&format!(
                        "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
                    ));
                }
                Setup::orders(parquet(d, "o.parquet", small())).config(&bomb)
            },
            code: 2,
            says: &["alias"],
        },
        Case {
            name: "config that is not a mapping",
            setup: |_| Setup::orders("").config("!- just\n- a list\n"),
            code: 2,
            says: &["mapping"],
        },
        Case {
            name: "empty config",
            setup: |_| Setup::orders("").config("!"),
            code: 2,
            says: &["input.orders"],
        },
        Case {
            name: "YAML syntax error",
            setup: |_| Setup::orders("").config("!input: [unclosed\n"),
            code: 2,
            says: &["config.yaml:"],
        },
        Case {
            name: "invalid as_of in the config",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("as_of: 2024-02-30\n"),
            code: 2,
            says: &["as_of", "2024-02-30"],
        },
        Case {
            name: "invalid --as-of",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--as-of")
                    .arg("yesterday")
            },
            code: 2,
            says: &["--as-of", "yesterday"],
        },
        Case {
            name: "unknown model",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("clv:\n  model: gbnbd\n"),
            code: 2,
            says: &["clv.model", "bgnbd"],
        },
        Case {
            name: "no output format",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("output:\n  formats: []\n"),
            code: 2,
            says: &["output.formats", "at least one"],
        },
        Case {
            name: "unknown flag",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).arg("--fast"),
            code: 2,
            says: &["--fast"],
        },
        Case {
            name: "an empty list of inputs",
            setup: |_| Setup::orders("[]"),
            code: 2,
            says: &["`input.orders` must list at least one file"],
        },
        Case {
            name: "unknown time zone",
            setup: |d| Setup::orders(parquet(d, "o.parquet", small())).config("  timezone: Europe/Berln\n"),
            code: 2,
            says: &["`input.timezone`", "Europe/Berln", "`Europe/Berlin`"],
        },
        Case {
            name: "time zone in the wrong case",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--set")
                    .arg("input.timezone=asia/jakarta")
            },
            code: 2,
            says: &["--set input.timezone=asia/jakarta", "closest: `Asia/Jakarta`"],
        },
        Case {
            name: "YAML tag `!env`",
            setup: |d| {
                let mut setup =
                    Setup::orders(parquet(d, "o.parquet", small())).config("output:\n  dir: !env OUT_DIR\n");
                setup.no_out = true;
                setup
            },
            code: 2,
            says: &["config.yaml:", "YAML tags are not supported", "`!env`"],
        },
        Case {
            name: "YAML tag `!!binary`",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .config("cohorts:\n  grain: !!binary bW9udGg=\n")
            },
            code: 2,
            says: &["`!!binary`"],
        },
        Case {
            name: "YAML tag in --set",
            setup: |d| {
                Setup::orders(parquet(d, "o.parquet", small()))
                    .arg("--set")
                    .arg("output.dir=!env OUT")
            },
            code: 2,
            says: &["--set output.dir=!env OUT", "`!env`"],
        },
        // --- Bugs ------------------------------------------------------------------
        Case {
            name: "a panic is reported as a bug",
            setup: |d| {
                let mut setup = Setup::orders(parquet(d, "o.parquet", small()));
                setup.env.push(("LOYALTY_TEST_PANIC", "1".into()));
                setup
            },
            code: 1,
            says: &["internal error", "This is a bug in loyalty; please report it"],
        },
    ]
}

/// Runs one case; returns the exit code, stderr, and whether `out/` may exist.
fn run_case(case: &Case, dir: &Path) -> (i32, String, bool) {
    let setup = (case.setup)(dir);
    let config_path = dir.join("config.yaml");
    let body = match setup.config.strip_prefix('!') {
        Some(whole) => whole.to_string(),
        None => format!("input:\n  orders: {}\n{}", setup.orders, setup.config),
    };
    fs::write(&config_path, body).unwrap();
    let mut cmd = loyalty();
    cmd.current_dir(dir).args(["run", "--config"]).arg(&config_path);
    if !setup.no_out && !setup.args.iter().any(|a| a == "--out") {
        cmd.arg("--out").arg(dir.join("out"));
    }
    cmd.args(&setup.args);
    for (key, value) in &setup.env {
        cmd.env(key, value);
    }
    let output = cmd.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        setup.keep_out,
    )
}

#[test]
fn bad_input_matrix() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let tmp = TempDir::new().unwrap();
        let (code, stderr, keep_out) = run_case(case, tmp.path());
        let missing: Vec<&&str> = case.says.iter().filter(|s| !stderr.contains(**s)).collect();
        if code != case.code || !missing.is_empty() {
            failures.push(format!(
                "{}: exit {code} (expected {}), missing {missing:?}\n{stderr}",
                case.name, case.code
            ));
        }
        // Nothing half-written: no temporary directory beside the output.
        let leftovers: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        if !leftovers.is_empty() {
            failures.push(format!("{}: left {leftovers:?}", case.name));
        }
        // A failed run publishes nothing.
        if case.code != 0 && !keep_out && tmp.path().join("out").exists() {
            failures.push(format!("{}: failed but wrote out/", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn reliability_md_lists_every_case() {
    let doc = fs::read_to_string(repo().join("RELIABILITY.md")).unwrap();
    let missing: Vec<&str> = cases()
        .iter()
        .map(|c| c.name)
        .filter(|n| !doc.contains(&format!("| {n} |")))
        .collect();
    assert!(missing.is_empty(), "RELIABILITY.md lacks rows for {missing:?}");
}
