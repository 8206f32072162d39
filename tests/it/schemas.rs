//! The output contract pinned: every written table has exactly the schema its
//! module declares (`schema()` beside its code), and the sample run's small tables
//! and manifest facts are snapshots (`cargo insta review` after a deliberate change).

use loyalty::pipeline::{TABLES, output_schema};
use polars::prelude::*;
use tempfile::TempDir;

use crate::common::{compute, loyalty, repo};

/// Lines with every optional column but channel (or with it), a return and a
/// one-order customer.
fn lines(with_channel: bool) -> DataFrame {
    let mut frame = df!(
        "customer_id" => ["a", "a", "b", "c", "c", "c"],
        "order_id" => ["1", "2", "3", "4", "4", "5"],
        "order_date" => ["2024-01-05", "2024-03-01", "2024-02-10", "2024-01-20", "2024-01-20", "2024-04-02"],
        "amount" => [10.0, 25.5, 7.0, 12.0, -2.0, 30.0],
        "category" => ["x", "y", "x", "x", "y", "z"],
    )
    .unwrap();
    frame = frame
        .lazy()
        .with_column(col("order_date").str().to_date(StrptimeOptions::default()))
        .collect()
        .unwrap();
    if with_channel {
        let channel = Column::new("channel".into(), ["web", "web", "store", "app", "app", "web"]);
        frame.with_column(channel).unwrap();
    }
    frame
}

/// The declared schema of table `name`: a fixed table's, or a default action list's.
fn declared(name: &str, has_channel: bool, has_surveys: bool) -> Schema {
    if let Some(action) = name.strip_prefix("actions/") {
        let rule = loyalty::config::default_actions(365)
            .into_iter()
            .find(|r| r.name == action)
            .unwrap_or_else(|| panic!("no action {action}"));
        let customers = output_schema("customers", has_channel, has_surveys).unwrap();
        return loyalty::metrics::actions::schema(&rule, &customers);
    }
    output_schema(name, has_channel, has_surveys).unwrap_or_else(|| panic!("no schema for {name}"))
}

fn assert_schemas(computed: &loyalty::pipeline::Computed, has_channel: bool) {
    let actions = loyalty::config::default_actions(365).len();
    assert_eq!(computed.tables.len(), TABLES.len() + actions);
    for (name, table) in &computed.tables {
        let expected = declared(name, has_channel, false);
        let got = table.collect(None).unwrap().schema().as_ref().clone();
        assert_eq!(got, expected, "table {name} (channel mapped: {has_channel})");
    }
}

#[test]
fn every_table_has_its_declared_schema_with_and_without_channel_on_both_engines() {
    for (with_channel, sets) in [
        (false, vec![]),
        (true, vec!["input.columns.channel=channel"]),
        (true, vec!["input.columns.channel=channel", "engine=streaming"]),
    ] {
        let mut sets: Vec<&str> = sets;
        sets.push("input.columns.category=category");
        let computed = compute(lines(with_channel), "", &sets);
        assert_schemas(&computed, with_channel);
    }
}

#[test]
fn an_unknown_table_has_no_schema() {
    assert!(output_schema("orders", false, false).is_none());
}

/// The sample run through the binary: the Parquet files read back with the
/// declared schemas, and the small tables' CSV text and the manifest's facts are
/// snapshots (timings, versions, dates of the run and checksums of Parquet files,
/// which name the writer's version, redacted).
#[test]
fn the_sample_run_matches_its_schemas_and_snapshots() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    loyalty()
        .current_dir(repo())
        .args(["--log-level", "warn", "run", "--config", "config/example.yaml"])
        .args(["--set", "clv.holdout_days=90", "--out"])
        .arg(&out)
        .assert()
        .success();
    for name in TABLES {
        let file = std::fs::File::open(out.join(format!("{name}.parquet"))).unwrap();
        let got = ParquetReader::new(file)
            .finish()
            .unwrap()
            .schema()
            .as_ref()
            .clone();
        assert_eq!(got, output_schema(name, true, false).unwrap(), "{name}.parquet");
    }
    for name in [
        "kpis",
        "rfm_segments",
        "pareto",
        "lorenz",
        "clv_by_segment",
        "clv_holdout",
    ] {
        let text = std::fs::read_to_string(out.join(format!("{name}.csv"))).unwrap();
        insta::assert_snapshot!(format!("sample_{name}"), text);
    }
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    redact_run_facts(&mut manifest);
    insta::assert_json_snapshot!("sample_manifest", manifest);
}

/// What differs between two runs of the same job and data: when and with which
/// version it ran, how long each stage took, where the files lie, and the bytes of
/// files that name their writer's version (Parquet, the report).
fn redact_run_facts(manifest: &mut serde_json::Value) {
    use serde_json::Value;
    let redacted = |what: &str| Value::String(format!("[{what}]"));
    for key in ["started_at", "run_date", "version", "stages", "config_hash"] {
        manifest[key] = redacted(key);
    }
    manifest["config"]["output"]["dir"] = redacted("dir");
    for input in manifest["inputs"].as_array_mut().into_iter().flatten() {
        input["path"] = redacted("path");
    }
    for file in manifest["outputs"].as_array_mut().into_iter().flatten() {
        if file["format"] != "csv" {
            file["bytes"] = redacted("bytes");
            file["sha256"] = redacted("sha256");
        }
    }
}
