//! `report.html`: self-contained, every chart present, the same whether written by
//! the run or rebuilt by `loyalty report`, and rendered by headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use tempfile::TempDir;

use crate::common::{loyalty, repo};

/// Every chart of a run with a model and a holdout, by element id.
const CHARTS: [&str; 9] = [
    "retention-heatmap",
    "revenue-retention",
    "cumulative-revenue",
    "lorenz",
    "segments",
    "clv-by-segment",
    "p-alive",
    "expected-purchases",
    "holdout",
];

/// Runs the sample config into `out` with a 90-day holdout and extra `--set`s.
fn run_sample(out: &Path, sets: &[&str]) {
    let mut cmd = loyalty();
    cmd.current_dir(repo())
        .args([
            "run",
            "--config",
            "config/example.yaml",
            "--set",
            "clv.holdout_days=90",
            "--out",
        ])
        .arg(out);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.assert().success();
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

/// The chart ids in the page, in order.
fn chart_ids(html: &str) -> Vec<String> {
    html.split("<figure class=\"chart\" id=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn report_is_self_contained_with_every_chart_and_the_kpis() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    run_sample(&out, &[]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(chart_ids(&html), CHARTS);
    // Each chart is drawn: an SVG with shapes in it.
    for figure in html.split("<figure class=\"chart\"").skip(1) {
        let figure = figure.split("</figure>").next().unwrap();
        assert!(figure.contains("<svg"), "{}", &figure[..80]);
        assert!(figure.matches("<rect").count() + figure.matches("<polyline").count() > 3);
    }
    // Nothing fetched: no scripts, links, images or stylesheets from elsewhere.
    for needle in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!html.contains(needle), "report.html contains {needle}");
    }
    // The KPIs are the kpis table's.
    let kpis = manifest(&out);
    let customers = kpis["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["file"] == "customers.parquet")
        .unwrap()["rows"]
        .as_u64()
        .unwrap();
    let grouped = format!("{},{:03}", customers / 1000, customers % 1000);
    assert!(
        html.contains(&format!(
            "<div class=\"value\">{grouped}</div><div class=\"label\">customers</div>"
        )),
        "no customers KPI of {grouped}"
    );
    assert!(html.contains("bgnbd: r = ") && html.contains("gamma_gamma: p = "));
    assert!(html.contains("required values present"), "cleaning table");
    // Listed in the manifest with its checksum.
    let entry = kpis["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["file"] == "report.html")
        .cloned()
        .unwrap();
    assert_eq!(entry["sha256"], loyalty::checksum::sha256_hex(html.as_bytes()));
}

#[test]
fn report_without_a_model_leaves_out_the_model_charts() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    run_sample(&out, &["clv.model=none"]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(chart_ids(&html), CHARTS[..6]);
}

#[test]
fn rebuilt_report_equals_the_run_s_own_from_parquet_or_csv() {
    let tmp = TempDir::new().unwrap();
    for (name, formats) in [
        ("parquet", "output.formats=[parquet]"),
        ("csv", "output.formats=[csv]"),
    ] {
        let out = tmp.path().join(name);
        run_sample(&out, &[formats]);
        let written = std::fs::read(out.join("report.html")).unwrap();
        let before = manifest(&out);
        loyalty().arg("report").arg(&out).assert().success();
        let rebuilt = std::fs::read(out.join("report.html")).unwrap();
        assert!(
            rebuilt == written,
            "the report rebuilt from {name} differs from the run's"
        );
        assert_eq!(manifest(&out), before, "the manifest changed");
    }
}

#[test]
fn report_off_then_rebuilt_joins_the_manifest() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    run_sample(&out, &["output.report=false"]);
    assert!(!out.join("report.html").exists());
    let entries = |out: &Path| -> Vec<serde_json::Value> {
        manifest(out)["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["file"] == "report.html")
            .cloned()
            .collect()
    };
    assert!(entries(&out).is_empty());
    loyalty().arg("report").arg(&out).assert().success();
    let rebuilt = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(chart_ids(&rebuilt), CHARTS);
    let entries = entries(&out);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["sha256"],
        loyalty::checksum::sha256_hex(rebuilt.as_bytes())
    );
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn report_of_a_directory_that_is_not_an_output_fails_with_exit_2() {
    let tmp = TempDir::new().unwrap();
    let assert = loyalty().arg("report").arg(tmp.path()).assert().code(2);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        stderr.contains("is not an output directory of loyalty") && stderr.contains("manifest.json"),
        "{stderr}"
    );
    assert!(!tmp.path().join("report.html").exists());
}

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Headless Chromium as the machine allows it: no sandbox as root, no network
/// chatter, a fresh profile.
fn headless(chromium: &Path, profile: &Path) -> Process {
    let mut cmd = Process::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,6000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// Console messages of the page (Chromium logs them as `CONSOLE(line)` with
/// `--enable-logging`), and uncaught errors.
fn console_errors(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .map(String::from)
        .collect()
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        // CI installs Chromium (.ci/run); a developer machine may not have it.
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is required in CI: apt-get install chromium"
        );
        eprintln!("skipped: no Chromium (set CHROMIUM or apt-get install chromium)");
        return;
    };
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    run_sample(&out, &[]);
    let page = format!("file://{}", out.join("report.html").display());

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    // Each run of Chromium must succeed without a console message.
    let render = |profile: &str, action: String| {
        let output = headless(&chromium, &tmp.path().join(profile))
            .arg(action)
            .arg(&page)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "chromium failed: {stderr}");
        assert_eq!(console_errors(&stderr), Vec::<String>::new());
        output
    };
    render("profile-1", format!("--screenshot={}", screenshot.display()));
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // A blank page compresses to a few KB; a page of charts does not.
    assert!(png.len() > 100_000, "screenshot only {} bytes", png.len());

    let dom = render("profile-2", "--dump-dom".into());
    let rendered = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(chart_ids(&rendered), CHARTS, "charts in the rendered page");
    assert_eq!(rendered.matches("<svg").count(), CHARTS.len());
    eprintln!("screenshot: {}", screenshot.display());
}

#[test]
fn every_parquet_column_has_a_documented_type() {
    // README: ids and labels are strings, dates are dates, counts Int64, money and
    // rates Float64, flags Boolean; nothing unsigned, 32-bit, decimal or nested.
    use polars::prelude::*;
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    run_sample(&out, &["output.formats=[parquet]"]);
    let mut checked = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let frame = ParquetReader::new(file).finish().unwrap();
        for (name, dtype) in frame.schema().iter() {
            let allowed = matches!(
                dtype,
                DataType::String | DataType::Date | DataType::Int64 | DataType::Float64 | DataType::Boolean
            );
            assert!(allowed, "{}: column {name} is {dtype}", path.display());
            let is_date = name.ends_with("_date") || name == "cohort" || name == "as_of";
            assert_eq!(
                is_date,
                *dtype == DataType::Date,
                "{}: {name} is {dtype}",
                path.display()
            );
            if name.ends_with("_id") {
                assert_eq!(*dtype, DataType::String, "{name}");
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} columns");
}
