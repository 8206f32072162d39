//! The command line as a user runs it: every subcommand, exit codes, exact error texts.

use std::fs;
use std::path::Path;

use polars::prelude::*;
use predicates::prelude::*;
use tempfile::TempDir;

use crate::common::*;

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("job.yaml");
    fs::write(&path, body).unwrap();
    path
}

#[test]
fn help_documents_exit_codes() {
    loyalty()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes:"))
        .stdout(predicate::str::contains("3  input data error"));
    loyalty()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--as-of <YYYY-MM-DD>"));
}

#[test]
fn run_on_the_sample_writes_every_table_and_a_manifest() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    loyalty()
        .current_dir(repo())
        .args(["run", "--config", "config/example.yaml", "--out"])
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("customers: "));
    for table in [
        "customers",
        "kpis",
        "cohort_retention",
        "rfm_segments",
        "pareto",
        "lorenz",
        "clv_by_segment",
        "clv_holdout",
    ] {
        for ext in ["parquet", "csv"] {
            assert!(out.join(format!("{table}.{ext}")).is_file(), "{table}.{ext}");
        }
    }
    let m = manifest(&out);
    assert_eq!(m["tool"], "loyalty");
    assert_eq!(m["as_of_source"], "data");
    assert_eq!(m["inputs"][0]["path"], "data/orders.parquet");
    assert_eq!(m["cleaning"].as_array().unwrap().len(), 5);
    // Eight tables and the four default action lists in two formats, and report.html.
    assert_eq!(m["outputs"].as_array().unwrap().len(), 25);
    for action in ["win_back", "nudge_neutral", "thank_champions", "save_at_risk"] {
        assert!(out.join(format!("actions/{action}.csv")).is_file(), "{action}");
    }
    assert!(out.join("report.html").is_file());
    assert_eq!(m["config_hash"].as_str().unwrap().len(), 64);
    assert!(
        m["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "scan and clean")
    );
    // Every checksum in the manifest is the file's.
    for output in m["outputs"].as_array().unwrap() {
        let bytes = fs::read(out.join(output["file"].as_str().unwrap())).unwrap();
        assert_eq!(output["sha256"], loyalty::checksum::sha256_hex(&bytes));
    }
    // No temporary directory is left beside the output.
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "out")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn reruns_are_idempotent() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    let checksums = || {
        loyalty()
            .current_dir(repo())
            .args(["run", "--config", "config/example.yaml", "--out"])
            .arg(&out)
            .assert()
            .success();
        let m = manifest(&out);
        (m["outputs"].clone(), m["config_hash"].clone())
    };
    assert_eq!(checksums(), checksums());
}

#[test]
fn as_of_flag_and_placeholders() {
    let tmp = TempDir::new().unwrap();
    let template = tmp.path().join("snap-{as_of}").display().to_string();
    loyalty()
        .current_dir(repo())
        .args([
            "run",
            "--config",
            "config/example.yaml",
            "--as-of",
            "2024-06-01",
            "--set",
        ])
        .arg(format!("output.dir={template}"))
        .assert()
        .success();
    let out = tmp.path().join("snap-2024-06-01");
    let m = manifest(&out);
    assert_eq!(m["as_of"], "2024-06-01");
    assert_eq!(m["as_of_source"], "--as-of");
    let kpis = CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(out.join("kpis.csv")))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(str_at(&kpis, "as_of", 0).as_deref(), Some("2024-06-01"));
}

#[test]
fn validate_prints_the_plan_without_running() {
    loyalty()
        .current_dir(repo())
        .args(["validate", "--config", "config/example.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("config config/example.yaml is valid"))
        .stdout(predicate::str::contains("data/orders.parquet ("))
        .stdout(predicate::str::contains("amount       <- `amount` (f64)"));
}

#[test]
fn config_errors_exit_2_with_every_problem_named() {
    let tmp = TempDir::new().unwrap();
    let config = write_config(
        tmp.path(),
        "input:\n  orders: data/orders.parquet\ncohorts:\n  grian: week\noutput:\n  formats: [parquet, xlsx]\n",
    );
    loyalty()
        .args(["validate", "--config"])
        .arg(&config)
        .args(["--set", "kpis.churn_window_days=soon"])
        .assert()
        .code(2)
        .stderr(format!(
            "error: invalid configuration (3 problems):\n  \
             {path}:4:10: unknown key `cohorts.grian`, did you mean `cohorts.grain`?\n  \
             {path}:6:22: `output.formats` item 1: must be one of parquet, csv, got `xlsx`\n  \
             --set kpis.churn_window_days=soon: `kpis.churn_window_days` must be a whole number, got `soon`\n",
            path = config.display()
        ));
}

#[test]
fn yaml_syntax_error_names_line_and_column() {
    let tmp = TempDir::new().unwrap();
    let config = write_config(tmp.path(), "input:\n  orders: [a, b\n");
    loyalty()
        .args(["validate", "--config"])
        .arg(&config)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "{}:3:1: not valid YAML",
            config.display()
        )));
}

#[test]
fn usage_errors_exit_2() {
    loyalty()
        .args(["run"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--config"));
    loyalty()
        .args(["run", "--config", "x.yaml", "--as-of", "1998-13-01"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "invalid value '1998-13-01' for '--as-of <YYYY-MM-DD>'",
        ));
    loyalty()
        .args(["run", "--config", "does/not/exist.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "does/not/exist.yaml: cannot read the config file",
        ));
}

#[test]
fn missing_input_file_exits_3() {
    let tmp = TempDir::new().unwrap();
    let config = write_config(tmp.path(), "input:\n  orders: nowhere/orders.parquet\n");
    loyalty()
        .args(["run", "--config"])
        .arg(&config)
        .assert()
        .code(3)
        .stderr("error: input file nowhere/orders.parquet does not exist (input.orders); check the path, which is relative to the working directory\n");
}

#[test]
fn missing_column_names_what_is_there_and_the_closest() {
    let tmp = TempDir::new().unwrap();
    let config = write_config(
        tmp.path(),
        &format!(
            "input:\n  orders: {}\n  columns:\n    amount: amout\n",
            repo().join("data/orders.parquet").display()
        ),
    );
    assert_fails(
        loyalty().args(["validate", "--config"]).arg(&config),
        3,
        &[
            "column `amout` (mapped to `amount` by input.columns.amount) is not in",
            "the columns there are: `customer_id`, `order_id`, `order_date`, `amount`",
            "did you mean `amount`? Set input.columns.amount: amount",
        ],
    );
}

#[test]
fn wrong_column_type_exits_3() {
    let tmp = TempDir::new().unwrap();
    let mut df = df!(
        "customer_id" => ["a"],
        "order_id" => ["1"],
        "order_date" => [20240101i64],
        "amount" => [1.0],
    )
    .unwrap();
    let file = tmp.path().join("orders.parquet");
    write_parquet(&file, &mut df);
    let config = write_config(tmp.path(), &format!("input:\n  orders: {}\n", file.display()));
    assert_fails(
        loyalty().args(["run", "--config"]).arg(&config),
        3,
        &[
            "column `order_date` (input.columns.order_date) in",
            "has type i64; expected a date, a datetime, or a string with input.date_format",
        ],
    );
}

#[test]
fn nothing_left_after_cleaning_exits_3() {
    loyalty()
        .current_dir(repo())
        .args([
            "run",
            "--config",
            "config/example.yaml",
            "--as-of",
            "2000-01-01",
            "--out",
        ])
        .arg(TempDir::new().unwrap().path().join("out"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no purchases left after cleaning"));
}

#[test]
fn output_dir_that_is_a_file_exits_2() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("taken");
    fs::write(&file, "x").unwrap();
    loyalty()
        .current_dir(repo())
        .args(["run", "--config", "config/example.yaml", "--out"])
        .arg(&file)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("exists and is not a directory"));
}

#[test]
fn inputs_as_directory_hive_glob_and_list_agree() {
    let tmp = TempDir::new().unwrap();
    let sample = LazyFrame::scan_parquet(
        PlRefPath::new(repo().join("data/orders.parquet").display().to_string()),
        Default::default(),
    )
    .unwrap()
    .collect()
    .unwrap();
    let half = sample.height() / 2;
    let parts = [
        sample.slice(0, half),
        sample.slice(half as i64, sample.height() - half),
    ];
    let hive = tmp.path().join("hive");
    for (i, part) in parts.iter().enumerate() {
        let dir = hive.join(format!("part={i}"));
        fs::create_dir_all(&dir).unwrap();
        write_parquet(&dir.join("data.parquet"), &mut part.clone());
        write_parquet(&tmp.path().join(format!("flat-{i}.parquet")), &mut part.clone());
    }
    fs::write(hive.join("_SUCCESS"), "").unwrap();
    let customers = |orders: String| {
        let out = tmp.path().join("out");
        let config = write_config(
            tmp.path(),
            &format!("input:\n  orders: {orders}\noutput:\n  formats: [csv]\n"),
        );
        loyalty()
            .args(["run", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        manifest(&out)["outputs"][0]["rows"].as_u64().unwrap()
    };
    let single = customers(repo().join("data/orders.parquet").display().to_string());
    let base = tmp.path().display();
    assert_eq!(customers(format!("{base}/hive")), single);
    assert_eq!(customers(format!("'{base}/flat-*.parquet'")), single);
    assert_eq!(
        customers(format!("['{base}/flat-0.parquet', '{base}/flat-1.parquet']")),
        single
    );
    loyalty()
        .args(["validate", "--config"])
        .arg(write_config(
            tmp.path(),
            &format!("input:\n  orders: '{base}/none-*.parquet'\n"),
        ))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("no Parquet or CSV files match"));
}

#[test]
fn generate_is_deterministic_per_seed() {
    let tmp = TempDir::new().unwrap();
    let make = |name: &str, seed: &str| {
        let file = tmp.path().join(name);
        loyalty()
            .args(["generate", "--customers", "200", "--seed", seed, "--out"])
            .arg(&file)
            .assert()
            .success()
            .stdout(predicate::str::contains("200 customers"));
        fs::read(file).unwrap()
    };
    assert_eq!(make("a.parquet", "5"), make("b.parquet", "5"));
    assert_ne!(make("a.parquet", "5"), make("c.parquet", "6"));
    loyalty()
        .args([
            "generate",
            "--customers",
            "10",
            "--start",
            "2024-01-01",
            "--end",
            "2023-01-01",
            "--out",
        ])
        .arg(tmp.path().join("d.parquet"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--end (2023-01-01) must be after --start (2024-01-01)",
        ));
}

#[test]
fn json_logs_for_schedulers() {
    let tmp = TempDir::new().unwrap();
    let output = loyalty()
        .current_dir(repo())
        .args([
            "--log-format",
            "json",
            "run",
            "--config",
            "config/example.yaml",
            "--out",
        ])
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let stages: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    assert!(stages.iter().any(|l| l["fields"]["stage"] == "metrics"));
}

#[test]
fn io_failure_while_writing_exits_1() {
    // /proc takes no new files, even for root: a write failure, not a config problem.
    loyalty()
        .args([
            "generate",
            "--customers",
            "5",
            "--out",
            "/proc/loyalty-test.parquet",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: writing /proc/loyalty-test.parquet.tmp",
        ));
}

#[test]
fn fit_prints_the_published_parameters() {
    loyalty()
        .args(["fit", "--summary"])
        .arg(cdnow("cdnow_customers_summary.csv"))
        .assert()
        .success()
        .stdout(predicate::str::contains("BG/NBD on 2357 customers"))
        .stdout(predicate::str::contains("  r                0.2426"))
        .stdout(predicate::str::contains("log-likelihood -9582.43"));
    let tmp = TempDir::new().unwrap();
    let bad = tmp.path().join("bad.csv");
    fs::write(&bad, "id,x\n1,2\n").unwrap();
    loyalty()
        .args(["fit", "--summary"])
        .arg(&bad)
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "is not a summary table: no `recency` (or `t_x`) column",
        ));
}

#[test]
fn model_fit_failure_exits_4_or_is_skipped() {
    let tmp = TempDir::new().unwrap();
    let orders = tmp.path().join("tiny.parquet");
    loyalty()
        .args(["generate", "--customers", "3", "--clean", "--out"])
        .arg(&orders)
        .assert()
        .success();
    let config = write_config(
        tmp.path(),
        &format!(
            "input:\n  orders: {}\noutput:\n  formats: [csv]\n",
            orders.display()
        ),
    );
    let out = tmp.path().join("out");
    assert_fails(
        loyalty()
            .args(["run", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(&out),
        4,
        &["error: model fit failed: ", "Set clv.on_fit_failure: skip"],
    );
    assert!(!out.exists(), "nothing is written when the fit fails");
    loyalty()
        .args(["run", "--config"])
        .arg(&config)
        .args(["--set", "clv.on_fit_failure=skip", "--out"])
        .arg(&out)
        .assert()
        .success();
    let m = manifest(&out);
    assert!(
        m["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("predicted columns are null"))
    );
}

#[test]
fn fit_other_models() {
    loyalty()
        .args(["fit", "--model", "pareto_nbd", "--summary"])
        .arg(cdnow("cdnow_customers_summary.csv"))
        .assert()
        .success()
        .stdout(predicate::str::contains("Pareto/NBD on 2357 customers"))
        .stdout(predicate::str::contains("log-likelihood -9594.97"));
}

/// The lines' row numbers are read by the Parquet scan itself, not added by a step
/// after it: only then does the filter that reads candidate duplicates again (step
/// 3) go into the scan and skip the other rows undecoded. A plan whose schema was
/// collected first kept the step, and at 100M lines the whole input was decoded
/// again (2-4 GB more at the peak). The plan is the line stream's
/// (`LOYALTY_EXPLAIN`); the rows read again come from the same scan.
#[test]
fn row_numbers_are_read_by_the_scan() {
    let assert = loyalty()
        .env("LOYALTY_EXPLAIN", "1")
        .current_dir(repo())
        .args(["run", "--config", "config/example.yaml", "--out"])
        .arg(TempDir::new().unwrap().path().join("out"))
        .assert()
        .success();
    let log = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(log.contains("Parquet SCAN"), "{log}");
    assert!(
        log.contains("ROW_INDEX: __row"),
        "the scan reads the row numbers:\n{log}"
    );
    assert!(
        !log.contains("ROW INDEX name: __row"),
        "a step of its own:\n{log}"
    );
}

/// Past a size the fold takes several passes over the input, and with `engine:
/// streaming` (and past a size) the customer table is made and written a slice of
/// customers at a time. Folded in three passes and cut into slices of a few rows, the
/// sample run writes the same tables and cleaning counts as the in-memory run, which
/// folds in one pass and computes the table whole (CSV byte for byte; Parquet with
/// smaller row groups, the same values).
#[test]
fn bounded_memory_run_in_passes_and_slices_equals_the_in_memory_run() {
    let tmp = TempDir::new().unwrap();
    let run = |name: &str, sliced: bool| {
        let out = tmp.path().join(name);
        let mut cmd = loyalty();
        if sliced {
            cmd.env("LOYALTY_TEST_SLICE_ROWS", "97");
            cmd.env("LOYALTY_TEST_FOLD_PASSES", "3");
            cmd.args(["--log-level", "debug"]);
        }
        let assert = cmd
            .current_dir(repo())
            .args(["run", "--config", "config/example.yaml", "--out"])
            .arg(&out)
            .args(if sliced {
                &["--set", "engine=streaming"][..]
            } else {
                &[]
            })
            .assert()
            .success();
        let log = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
        // Only the whole table is computed in a stage of its own.
        assert_eq!(log.contains("\"scores\""), !sliced, "{log}");
        if sliced {
            let passes = log.matches("lines folded into orders").count();
            assert_eq!(passes, 3, "{log}");
        }
        out
    };
    let (whole, sliced) = (run("whole", false), run("sliced", true));
    let customers = |dir: &Path| {
        let file = fs::File::open(dir.join("customers.parquet")).unwrap();
        ParquetReader::new(file).finish().unwrap()
    };
    let whole_customers = customers(&whole);
    assert!(whole_customers.height() > 10 * 97, "the sample spans many slices");
    assert!(whole_customers.equals_missing(&customers(&sliced)));
    let sliced_manifest = manifest(&sliced);
    assert_eq!(manifest(&whole)["cleaning"], sliced_manifest["cleaning"]);
    for output in manifest(&whole)["outputs"].as_array().unwrap() {
        let file = output["file"].as_str().unwrap();
        // The report embeds the manifest, with its times.
        if file == "customers.parquet" || file == "report.html" {
            continue;
        }
        let other = sliced_manifest["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["file"] == output["file"])
            .unwrap();
        assert_eq!(output["sha256"], other["sha256"], "{file}");
    }
}

/// URLs no store serves, and URLs where only local paths are read, are refused
/// with their scheme named (exit 2), never taken as local paths: `--out s3://b/out`
/// used to write the folder `s3:/b/out`.
#[test]
fn urls_are_refused_never_written_as_local_folders() {
    let tmp = TempDir::new().unwrap();
    let config = repo().join("config/example.yaml");
    let data = repo().join("data/orders.parquet");
    let set_orders = format!("input.orders={}", data.display());
    assert_fails(
        loyalty()
            .current_dir(tmp.path())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--set", &set_orders, "--out", "hdfs://namenode/out"]),
        2,
        &[
            "--out",
            "`hdfs://namenode/out` is a URL of an unsupported scheme (hdfs://)",
        ],
    );
    for (key, url) in [
        ("input.orders", "ftp://host/orders.parquet"),
        ("input.surveys", "https://example.com/surveys.csv"),
        ("compare_to", "abfss://c@a.dfs.core.windows.net/out"),
    ] {
        assert_fails(
            loyalty()
                .current_dir(tmp.path())
                .args(["run", "--config"])
                .arg(&config)
                .args([
                    "--set",
                    &set_orders,
                    "--set",
                    &format!("{key}={url}"),
                    "--out",
                    "out",
                ]),
            2,
            &[key, url],
        );
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing is written"
    );
}

/// CSV order files (issue 20): the sample written as CSV gives the same tables,
/// byte for byte, as the Parquet; text that is not an amount is exit 3 naming the
/// column, an example and the file; dates follow input.date_format; one input is
/// one format.
#[test]
fn csv_orders_are_typed_like_text_columns() {
    let tmp = TempDir::new().unwrap();
    let mut orders = LazyFrame::scan_parquet(
        repo().join("data/orders.parquet").to_str().unwrap().into(),
        Default::default(),
    )
    .unwrap()
    .collect()
    .unwrap();
    let csv = tmp.path().join("orders.csv");
    CsvWriter::new(std::fs::File::create(&csv).unwrap())
        .finish(&mut orders)
        .unwrap();
    let run = |orders: &std::path::Path, out: &str, sets: &[&str]| {
        let mut command = loyalty();
        command
            .args(["--log-level", "warn", "run", "--config"])
            .arg(repo().join("config/example.yaml"))
            .arg("--set")
            .arg(format!("input.orders={}", orders.display()))
            .args(["--set", "output.report=false"]);
        for set in sets {
            command.args(["--set", set]);
        }
        command.arg("--out").arg(tmp.path().join(out));
        command
    };
    run(&csv, "from_csv", &[]).assert().success();
    run(&repo().join("data/orders.parquet"), "from_parquet", &[])
        .assert()
        .success();
    assert_same_csvs(
        &tmp.path().join("from_csv"),
        &tmp.path().join("from_parquet"),
        &[
            "customers",
            "kpis",
            "cohort_retention",
            "rfm_segments",
            "clv_by_segment",
        ],
    );

    // A text amount that is not a number, in a file with day-first dates and only
    // the required columns.
    let bad = tmp.path().join("bad.csv");
    let small = |orders: &std::path::Path, out: &str| {
        let config = tmp.path().join(format!("{out}.yaml"));
        let yaml = format!(
            "input:\n  orders: {}\n  date_format: \"%d/%m/%Y\"\nclv:\n  model: none\n",
            orders.display()
        );
        std::fs::write(&config, yaml).unwrap();
        let mut command = loyalty();
        command
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&config);
        command.arg("--out").arg(tmp.path().join(out));
        command
    };
    std::fs::write(
        &bad,
        "customer_id,order_id,order_date,amount\na,1,05/01/2024,10.5\nb,2,06/01/2024,ten\n",
    )
    .unwrap();
    assert_fails(&mut small(&bad, "bad"), 3, &["`amount`", "ten"]);
    let good = tmp.path().join("good.csv");
    std::fs::write(
        &good,
        "customer_id,order_id,order_date,amount\na,1,05/01/2024,10.5\nb,2,06/01/2024,12.25\na,3,20/02/2024,1.25\n",
    )
    .unwrap();
    small(&good, "good").assert().success();
    let kpis = std::fs::read_to_string(tmp.path().join("good/kpis.csv")).unwrap();
    assert!(kpis.contains("24"), "revenue 10.5 + 12.25 + 1.25 = 24: {kpis}");
    let manifest = std::fs::read_to_string(tmp.path().join("good/manifest.json")).unwrap();
    assert!(manifest.contains("\"as_of\": \"2024-02-21\""), "{manifest}");

    // A directory holding both formats is refused.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(&good, mixed.join("a.csv")).unwrap();
    std::fs::copy(repo().join("data/orders.parquet"), mixed.join("b.parquet")).unwrap();
    assert_fails(&mut small(&mixed, "mixed"), 3, &["is Parquet but", "is CSV"]);
}

/// `engine: spark` in a binary built without the Spark engine says how to build one.
#[cfg(not(feature = "spark"))]
#[test]
fn the_spark_engine_needs_its_feature() {
    let tmp = TempDir::new().unwrap();
    assert_fails(
        loyalty()
            .args(["run", "--config"])
            .arg(repo().join("config/example.yaml"))
            .args([
                "--set",
                "engine=spark",
                "--set",
                "spark.remote=sc://127.0.0.1:15002",
                "--out",
            ])
            .arg(tmp.path().join("out")),
        2,
        &["--features spark"],
    );
}
