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
}

impl Setup {
    fn orders(orders: impl Into<String>) -> Setup {
        Setup {
            orders: orders.into(),
            config: String::new(),
            args: Vec::new(),
            env: Vec::new(),
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
            loyalty::clean::epoch_days(d)
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
            says: &["empty", "no Parquet files"],
        },
        Case {
            name: "glob matching nothing",
            setup: |d| Setup::orders(format!("{}/*.pq", d.display())),
            code: 3,
            says: &["no Parquet files match", "*.pq (input.orders)"],
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

/// Runs one case; returns stderr.
fn run_case(case: &Case, dir: &Path) -> (i32, String) {
    let setup = (case.setup)(dir);
    let config_path = dir.join("config.yaml");
    let body = match setup.config.strip_prefix('!') {
        Some(whole) => whole.to_string(),
        None => format!("input:\n  orders: {}\n{}", setup.orders, setup.config),
    };
    fs::write(&config_path, body).unwrap();
    let mut cmd = loyalty();
    cmd.current_dir(dir).args(["run", "--config"]).arg(&config_path);
    if !setup.args.iter().any(|a| a == "--out") {
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
    )
}

#[test]
fn bad_input_matrix() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let tmp = TempDir::new().unwrap();
        let (code, stderr) = run_case(case, tmp.path());
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
        if case.code != 0 && tmp.path().join("out").exists() {
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
