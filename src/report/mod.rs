//! `report.html`: one self-contained page with the KPIs, the charts (inline SVG,
//! drawn in [`charts`]) and the segment, Pareto and cleaning tables, built from the
//! output tables and the manifest — in the run, or later by `loyalty report DIR`.

pub mod charts;

use std::path::Path;

use polars::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

pub const FILE: &str = "report.html";
const TEMPLATE: &str = include_str!("report.html");

/// What the report is made of: the tables as written, and the manifest (as JSON).
pub struct ReportData {
    pub kpis: DataFrame,
    pub cohort_retention: DataFrame,
    pub rfm_segments: DataFrame,
    pub clv_by_segment: DataFrame,
    pub clv_holdout: DataFrame,
    pub pareto: DataFrame,
    pub lorenz: DataFrame,
    /// `frequency, t_x, T, p_alive, expected_purchases` of every customer.
    pub customers: DataFrame,
    /// With `compare_to`.
    pub segment_migration: Option<DataFrame>,
    pub manifest: Value,
}

/// The customers' columns the report reads.
pub const CUSTOMER_COLUMNS: [&str; 5] = ["frequency", "t_x", "T", "p_alive", "expected_purchases"];

impl ReportData {
    /// From the run's tables (name, frame) and its manifest.
    pub fn from_tables(tables: &[(String, crate::io::table::Table)], manifest: Value) -> Result<ReportData> {
        let columns = |name: &str, columns: Option<&[&str]>| -> Result<DataFrame> {
            tables
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| Error::Output(format!("the report needs table `{name}`")))?
                .1
                .collect(columns)
        };
        let table = |name: &str| columns(name, None);
        Ok(ReportData {
            kpis: table("kpis")?,
            cohort_retention: table("cohort_retention")?,
            rfm_segments: table("rfm_segments")?,
            clv_by_segment: table("clv_by_segment")?,
            clv_holdout: table("clv_holdout")?,
            pareto: table("pareto")?,
            lorenz: table("lorenz")?,
            customers: columns("customers", Some(&CUSTOMER_COLUMNS))?,
            segment_migration: tables
                .iter()
                .any(|(n, _)| n == crate::metrics::migration::TABLE)
                .then(|| table(crate::metrics::migration::TABLE))
                .transpose()?,
            manifest,
        })
    }

    /// From an output directory: `manifest.json` and each table's Parquet file (or,
    /// without one, its CSV).
    pub fn load(dir: &Path) -> Result<ReportData> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            Error::Output(format!(
                "{} is not an output directory of loyalty: cannot read {}: {e}",
                dir.display(),
                manifest_path.display()
            ))
        })?;
        let manifest: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Output(format!("{}: not valid JSON: {e}", manifest_path.display())))?;
        let read = |name: &str, columns: Option<&[&str]>| -> Result<DataFrame> {
            let Some(frame) = crate::io::table::scan_written(dir, name)? else {
                return Err(Error::Output(format!(
                    "{}: no {name}.parquet or {name}.csv to build the report from",
                    dir.display()
                )));
            };
            let frame = match columns {
                Some(columns) => frame.select(columns.iter().map(|c| col(*c)).collect::<Vec<_>>()),
                None => frame,
            };
            Ok(frame.collect()?)
        };
        Ok(ReportData {
            kpis: read("kpis", None)?,
            cohort_retention: read("cohort_retention", None)?,
            rfm_segments: read("rfm_segments", None)?,
            clv_by_segment: read("clv_by_segment", None)?,
            clv_holdout: read("clv_holdout", None)?,
            pareto: read("pareto", None)?,
            lorenz: read("lorenz", None)?,
            customers: read("customers", Some(&CUSTOMER_COLUMNS))?,
            segment_migration: crate::io::table::scan_written(dir, crate::metrics::migration::TABLE)?
                .map(|frame| frame.collect())
                .transpose()?,
            manifest,
        })
    }
}

/// Values of a column as f64 (null where missing or not a number).
pub(crate) fn floats(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<f64>>> {
    Ok(df.column(name)?.cast(&DataType::Float64)?.f64()?.iter().collect())
}

pub(crate) fn ints(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i64>>> {
    Ok(df.column(name)?.cast(&DataType::Int64)?.i64()?.iter().collect())
}

/// Values of a column as text (dates as YYYY-MM-DD; empty where null).
pub(crate) fn strings(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    let column = df.column(name)?.cast(&DataType::String)?;
    let text = column.str()?;
    Ok((0..text.len())
        .map(|i| text.get(i).unwrap_or_default().to_string())
        .collect())
}

#[derive(Serialize)]
struct Kpi {
    label: &'static str,
    value: String,
}

/// A titled table of the report.
#[derive(Serialize)]
struct Section {
    id: &'static str,
    title: &'static str,
    table: Table,
}

#[derive(Serialize)]
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// 1234567.8 → "1,234,568"; small numbers keep `decimals`.
fn number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let text = format!("{:.*}", decimals, value.abs());
    let (whole, fraction) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(w, f)| (w, Some(f)));
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if value < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    match fraction {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{:.1}%", value * 100.0)
    } else {
        "–".into()
    }
}

/// The KPI cards: the first row of `kpis`, formatted.
fn kpis(kpis: &DataFrame) -> PolarsResult<Vec<Kpi>> {
    let first = |name: &str| -> Option<f64> {
        kpis.column(name).ok()?;
        floats(kpis, name).ok()?.first().copied().flatten()
    };
    let mut cards = Vec::new();
    let mut add = |label: &'static str, name: &str, format: &dyn Fn(f64) -> String| {
        if let Some(v) = first(name) {
            cards.push(Kpi {
                label,
                value: format(v),
            });
        }
    };
    add("customers", "customers", &|v| number(v, 0));
    add("orders", "orders", &|v| number(v, 0));
    add("revenue", "revenue", &|v| number(v, 0));
    add("average order value", "aov", &|v| number(v, 2));
    add("orders per customer", "purchase_frequency", &|v| number(v, 2));
    add("repeat-purchase rate", "repeat_purchase_rate", &percent);
    add("churn rate", "churn_rate", &percent);
    add("upsell ratio", "upsell_ratio", &percent);
    add("revenue of the top 20%", "top_20pct_revenue_share", &percent);
    add(
        "customers for 80% of revenue",
        "customers_for_80pct_share",
        &percent,
    );
    add("Gini", "gini", &|v| number(v, 3));
    add("holdout MAE, model", "model_holdout_mae", &|v| number(v, 3));
    add("holdout MAE, naive", "naive_holdout_mae", &|v| number(v, 3));
    Ok(cards)
}

/// A table's columns, formatted for reading: shares as percentages, money rounded.
fn table(df: &DataFrame, columns: &[(&str, &str)]) -> PolarsResult<Table> {
    let mut rows = vec![Vec::new(); df.height()];
    let mut header = Vec::new();
    for &(name, heading) in columns {
        let Ok(column) = df.column(name) else { continue };
        header.push(heading.to_string());
        let cells: Vec<String> = match column.dtype() {
            DataType::String | DataType::Date => strings(df, name)?,
            DataType::Float64 | DataType::Float32 if name.contains("share") || name.contains("p_alive") => {
                floats(df, name)?
                    .into_iter()
                    .map(|v| v.map_or("–".into(), percent))
                    .collect()
            }
            DataType::Float64 | DataType::Float32 => floats(df, name)?
                .into_iter()
                .map(|v| v.map_or("–".into(), |v| number(v, if v.abs() < 100.0 { 2 } else { 0 })))
                .collect(),
            _ => ints(df, name)?
                .into_iter()
                .map(|v| v.map_or("–".into(), |v| number(v as f64, 0)))
                .collect(),
        };
        for (row, cell) in rows.iter_mut().zip(cells) {
            row.push(cell);
        }
    }
    Ok(Table { header, rows })
}

/// The cleaning steps of the manifest as a table.
fn cleaning(manifest: &Value) -> Table {
    let steps = manifest["cleaning"].as_array().cloned().unwrap_or_default();
    let rows = steps
        .iter()
        .map(|step| {
            let count = |key: &str| step[key].as_f64().map_or("–".into(), |v| number(v, 0));
            let reasons = step["reasons"]
                .as_object()
                .map(|r| {
                    r.iter()
                        .filter(|(_, n)| n.as_f64().is_some_and(|n| n > 0.0))
                        .map(|(why, n)| format!("{why}: {}", number(n.as_f64().unwrap_or(0.0), 0)))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            vec![
                step["step"].to_string(),
                step["name"].as_str().unwrap_or_default().to_string(),
                count("rows_in"),
                count("rows_out"),
                reasons,
            ]
        })
        .collect();
    Table {
        header: ["step", "what", "rows in", "rows out", "dropped because"]
            .map(String::from)
            .to_vec(),
        rows,
    }
}

/// The manifest's action lists (actions/NAME) as a table; `None` without rules.
fn action_lists(manifest: &Value) -> Option<Table> {
    let lists = manifest["actions"].as_array().filter(|a| !a.is_empty())?;
    let rows = lists
        .iter()
        .map(|list| {
            let name = list["name"].as_str().unwrap_or_default();
            vec![
                format!("actions/{name}"),
                list["customers"].as_f64().map_or("–".into(), |v| number(v, 0)),
                list["expected_value"]
                    .as_f64()
                    .map_or("–".into(), |v| number(v, 2)),
            ]
        })
        .collect();
    Some(Table {
        header: ["list", "customers", "expected value"].map(String::from).to_vec(),
        rows,
    })
}

/// The fitted models of the manifest: one line each.
fn models(manifest: &Value) -> Vec<String> {
    manifest["models"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .map(|m| {
                    let parameters = m["parameters"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .map(|p| {
                                    let value = p["value"].as_f64().unwrap_or(f64::NAN);
                                    match p["standard_error"].as_f64() {
                                        Some(se) => format!(
                                            "{} = {value:.4} (± {se:.4})",
                                            p["name"].as_str().unwrap_or("?")
                                        ),
                                        None => format!("{} = {value:.4}", p["name"].as_str().unwrap_or("?")),
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    format!(
                        "{}: {parameters}; log-likelihood {:.2}",
                        m["model"].as_str().unwrap_or("?"),
                        m["log_likelihood"].as_f64().unwrap_or(f64::NAN)
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn serde_value(value: impl Serialize) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// The report as one HTML page.
pub fn render(data: &ReportData) -> Result<String> {
    let charts: Vec<charts::Chart> = [
        charts::retention_heatmap(&data.cohort_retention)?,
        charts::revenue_retention(&data.cohort_retention)?,
        charts::cumulative_revenue(&data.cohort_retention)?,
        charts::lorenz(&data.lorenz, &data.kpis)?,
        charts::segments(&data.rfm_segments)?,
        charts::clv_by_segment(&data.clv_by_segment)?,
        charts::p_alive(&data.customers)?,
        charts::expected_purchases(&data.customers)?,
        charts::holdout(&data.clv_holdout)?,
        match &data.segment_migration {
            Some(moves) => charts::migration(moves, &strings(&data.rfm_segments, "segment")?)?,
            None => None,
        },
    ]
    .into_iter()
    .flatten()
    .collect();
    let manifest = &data.manifest;
    let segments = table(
        &data.rfm_segments,
        &[
            ("segment", "segment"),
            ("customers", "customers"),
            ("share_of_customers", "share of customers"),
            ("revenue", "revenue"),
            ("share_of_revenue", "share of revenue"),
            ("mean_recency_days", "mean recency (days)"),
            ("mean_orders", "mean orders"),
            ("mean_historical_clv", "mean historical CLV"),
            ("mean_predicted_clv", "mean predicted CLV"),
            ("mean_p_alive", "mean P(alive)"),
        ],
    )?;
    let pareto = table(
        &data.pareto,
        &[
            ("top_share", "top share of customers"),
            ("customers", "customers"),
            ("revenue_share", "share of revenue"),
        ],
    )?;
    let mut sections = vec![
        Section {
            id: "segments",
            title: "RFM segments",
            table: segments,
        },
        Section {
            id: "pareto",
            title: "Pareto shares",
            table: pareto,
        },
    ];
    if let Some(moves) = &data.segment_migration {
        let moves = table(
            moves,
            &[
                ("from_segment", "from segment"),
                ("to_segment", "to segment"),
                ("customers", "customers"),
                ("revenue", "revenue now"),
                ("previous_revenue", "revenue then"),
            ],
        )?;
        sections.push(Section {
            id: "migration",
            title: "Segment migration",
            table: moves,
        });
    }
    if let Some(lists) = action_lists(manifest) {
        sections.push(Section {
            id: "actions",
            title: "Action lists",
            table: lists,
        });
    }
    sections.push(Section {
        id: "cleaning",
        title: "Data cleaning",
        table: cleaning(manifest),
    });
    let context = minijinja::context! {
        as_of => manifest["as_of"].as_str().unwrap_or_default(),
        as_of_source => manifest["as_of_source"].as_str().unwrap_or_default(),
        version => manifest["version"].as_str().unwrap_or_default(),
        config_hash => manifest["config_hash"].as_str().unwrap_or_default(),
        input_rows => manifest["input_rows"].as_f64().map(|v| number(v, 0)).unwrap_or_default(),
        input_files => manifest["inputs"].as_array().map_or(0, Vec::len),
        kpis => serde_value(kpis(&data.kpis)?),
        charts => serde_value(charts),
        tables => serde_value(sections),
        models => models(manifest),
        warnings => serde_value(manifest["warnings"].as_array().cloned().unwrap_or_default()),
    };
    let mut env = minijinja::Environment::new();
    env.add_template(FILE, TEMPLATE)
        .map_err(|e| Error::Output(format!("the report template: {e}")))?;
    env.get_template(FILE)
        .and_then(|template| template.render(context))
        .map_err(|e| Error::Output(format!("rendering {FILE}: {e}")))
}

/// Rebuilds `report.html` in an output directory from its tables and manifest,
/// replacing the file atomically and its entry in the manifest.
pub fn rebuild(dir: &Path) -> Result<std::path::PathBuf> {
    let data = ReportData::load(dir)?;
    let html = render(&data)?;
    let mut manifest = data.manifest;
    let entry = crate::manifest::OutputFile::new("report", "html", FILE, 0, html.as_bytes());
    if let Some(outputs) = manifest["outputs"].as_array_mut() {
        outputs.retain(|o| o["file"].as_str() != Some(FILE));
        outputs.push(serde_json::to_value(entry).map_err(|e| Error::Output(e.to_string()))?);
    }
    let manifest_text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Output(e.to_string()))?;
    let path = dir.join(FILE);
    crate::io::output::replace_file(&path, html.as_bytes())?;
    crate::io::output::replace_file(&dir.join("manifest.json"), manifest_text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_signed() {
        assert_eq!(number(1234567.8, 0), "1,234,568");
        assert_eq!(number(-1234.5, 2), "-1,234.50");
        assert_eq!(number(999.0, 0), "999");
        assert_eq!(number(-0.0001, 2), "0.00");
        assert_eq!(number(f64::NAN, 2), "–");
        assert_eq!(percent(0.1234), "12.3%");
    }
}
