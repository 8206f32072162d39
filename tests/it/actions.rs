//! From numbers to action (issue 19): one customer reference, NPS, segment
//! migration and action lists, each on hand-computed fixtures.

use std::collections::{BTreeMap, BTreeSet};

use loyalty::identity::Identities;
use polars::prelude::*;
use proptest::prelude::*;
use tempfile::TempDir;

use crate::common::{compute, loyalty, repo, table, try_compute};

/// Order lines (customer_id, order_id, YYYY-MM-DD order_date, amount).
fn lines(customers: &[&str], orders: &[&str], dates: &[&str], amounts: &[f64]) -> DataFrame {
    df!(
        "customer_id" => customers,
        "order_id" => orders,
        "order_date" => dates,
        "amount" => amounts,
    )
    .unwrap()
    .lazy()
    .with_column(col("order_date").str().to_date(StrptimeOptions::default()))
    .collect()
    .unwrap()
}

/// Orders of five ids: `w1` and `s1` are one person (through `m1`), as are the
/// cycle `x`, `y`, `z`; `solo` has no alias.
fn orders() -> DataFrame {
    lines(
        &["w1", "s1", "s1", "x", "y", "z", "solo"],
        &["1", "2", "3", "4", "5", "6", "7"],
        &[
            "2024-01-05",
            "2024-02-01",
            "2024-03-01",
            "2024-01-10",
            "2024-02-10",
            "2024-03-10",
            "2024-03-20",
        ],
        &[10.0, 20.0, 30.0, 1.0, 2.0, 3.0, 5.0],
    )
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn column_text(frame: &DataFrame, name: &str) -> Vec<String> {
    let column = frame.column(name).unwrap().cast(&DataType::String).unwrap();
    column
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or("null").to_string())
        .collect()
}

#[test]
fn aliases_merge_chains_and_cycles_into_the_smallest_id() {
    let dir = TempDir::new().unwrap();
    let ids = write(
        &dir,
        "ids.csv",
        "alias_id,customer_id\nw1,m1\nm1,s1\nx,y\ny,z\nz,x\nsolo,solo\n",
    );
    let set = format!("input.identities={ids}");
    let computed = compute(orders(), "", &[&set]);
    let customers = table(&computed, "customers");
    // m1 < s1 < w1: the group's canonical id is m1, though m1 never ordered.
    assert_eq!(column_text(&customers, "customer_id"), ["m1", "solo", "x"]);
    assert_eq!(column_text(&customers, "orders"), ["3", "1", "3"]);
    assert_eq!(column_text(&customers, "revenue"), ["60.0", "5.0", "6.0"]);
    assert_eq!(
        column_text(&customers, "first_order_date"),
        ["2024-01-05", "2024-03-20", "2024-01-10"]
    );
    let report = computed.identities.unwrap();
    assert_eq!((report.rows, report.self_loops, report.conflicts), (6, 1, 0));
    assert_eq!((report.customers_before, report.customers_after), (6, 3));
}

#[test]
fn a_missing_alias_column_names_the_file_and_the_key() {
    let dir = TempDir::new().unwrap();
    let ids = write(&dir, "ids.csv", "alias,customer_id\nw1,s1\n");
    let set = format!("input.identities={ids}");
    let error = try_compute(orders(), "", &[&set]).err().unwrap().to_string();
    assert!(
        error.contains("input.identities") && error.contains("ids.csv") && error.contains("alias_id"),
        "{error}"
    );
}

/// Connected components by breadth-first search: the naive reference.
fn naive_groups(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    let mut neighbours: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in pairs {
        neighbours.entry(a).or_default().push(b);
        neighbours.entry(b).or_default().push(a);
    }
    let mut canonical = BTreeMap::new();
    for &start in neighbours.keys() {
        if canonical.contains_key(start) {
            continue;
        }
        let mut seen = BTreeSet::from([start]);
        let mut queue = vec![start];
        while let Some(id) = queue.pop() {
            for &next in &neighbours[id] {
                if seen.insert(next) {
                    queue.push(next);
                }
            }
        }
        let smallest = seen.iter().next().unwrap().to_string();
        for id in seen {
            canonical.insert(id.to_string(), smallest.clone());
        }
    }
    canonical
}

proptest! {
    /// Union-find agrees with breadth-first search on random alias graphs (with
    /// self-loops, repeated pairs, chains and cycles), in any row order.
    #[test]
    fn identity_resolution_matches_a_naive_search(
        pairs in prop::collection::vec((0u8..30, 0u8..30), 0..60),
    ) {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(a, b)| (format!("id{a}"), format!("id{b}"))).collect();
        let resolved = Identities::resolve(pairs.iter().map(|(a, b)| (Some(a.as_str()), Some(b.as_str()))), "p");
        let expected = naive_groups(&pairs);
        for (id, canonical) in &expected {
            prop_assert_eq!(resolved.canonical(id), canonical.as_str());
        }
        let mut reversed = pairs.clone();
        reversed.reverse();
        let again = Identities::resolve(reversed.iter().map(|(b, a)| (Some(a.as_str()), Some(b.as_str()))), "p");
        for id in expected.keys() {
            prop_assert_eq!(again.canonical(id), resolved.canonical(id));
        }
    }

    /// The written order (one stable sort on expected_value, rows in customer
    /// order) is the definition's, expected_value highest first, nulls last, then
    /// customer_id, with many ties, nulls, NaN and signed zeros; keys and ids alike.
    #[test]
    fn action_lists_are_sorted_by_value_then_customer(
        values in prop::collection::vec(
            prop_oneof![
                Just(None), Just(Some(0.0)), Just(Some(-0.0)), Just(Some(f64::NAN)),
                (0u8..4).prop_map(|v| Some(f64::from(v))), any::<f64>().prop_map(Some),
            ],
            0..80,
        ),
    ) {
        use loyalty::metrics::actions::{EXPECTED_VALUE, sorted};
        let keys: Vec<u32> = (0..values.len() as u32).map(|k| k * 3).collect();
        let ids: Vec<String> = keys.iter().map(|k| format!("c{k:05}")).collect();
        for customers in [Column::new("customer_id".into(), &keys), Column::new("customer_id".into(), &ids)] {
            let rows = DataFrame::new_infer_height(vec![
                customers,
                Column::new(EXPECTED_VALUE.into(), &values),
            ])
            .unwrap();
            let defined = rows
                .clone()
                .lazy()
                .sort_by_exprs(
                    [col(EXPECTED_VALUE), col("customer_id")],
                    SortMultipleOptions::default()
                        .with_order_descending_multi([true, false])
                        .with_nulls_last(true)
                        .with_maintain_order(true),
                )
                .collect()
                .unwrap();
            let written = sorted(rows.lazy()).collect().unwrap();
            prop_assert_eq!(column_text(&written, "customer_id"), column_text(&defined, "customer_id"));
        }
    }
}

/// Scores on the boundaries: 6 is a detractor, 7 and 8 passives, 9 a promoter.
/// Only each customer's latest response before as_of counts.
#[test]
fn nps_counts_boundary_scores_and_the_latest_response_only() {
    let dir = TempDir::new().unwrap();
    let surveys = write(
        &dir,
        "s.csv",
        "customer_id,response_date,score\n\
         w1,2024-01-01,0\nw1,2024-02-01,6\n\
         s1,2024-02-01,7\n\
         x,2024-02-01,8\n\
         y,2024-02-01,9\ny,2024-05-01,0\n\
         solo,2024-03-01,10\n\
         nobody,2024-03-01,10\n",
    );
    let set = format!("input.surveys={surveys}");
    let computed = compute(orders(), "", &[&set, "as_of=2024-04-01"]);
    let customers = table(&computed, "customers");
    assert_eq!(
        column_text(&customers, "customer_id"),
        ["s1", "solo", "w1", "x", "y", "z"]
    );
    assert_eq!(
        column_text(&customers, "nps_score"),
        ["7", "10", "6", "8", "9", "null"]
    );
    let nps = table(&computed, "nps");
    let all = nps
        .lazy()
        .filter(col("dimension").eq(lit("all")))
        .collect()
        .unwrap();
    // 5 respondents: promoters solo, y; passives s1, x; detractor w1 → 100 × (2 − 1) / 5.
    assert_eq!(column_text(&all, "respondents"), ["5"]);
    assert_eq!(column_text(&all, "promoters"), ["2"]);
    assert_eq!(column_text(&all, "passives"), ["2"]);
    assert_eq!(column_text(&all, "detractors"), ["1"]);
    assert_eq!(column_text(&all, "nps"), ["20.0"]);
    let report = computed.surveys.unwrap();
    assert_eq!(
        (report.after_as_of, report.without_purchase, report.respondents),
        (1, 1, 5)
    );
}

#[test]
fn an_out_of_range_score_is_an_input_error_with_an_example() {
    let dir = TempDir::new().unwrap();
    let surveys = write(
        &dir,
        "s.csv",
        "customer_id,response_date,score\nw1,2024-01-01,7\nx,2024-01-02,11\n",
    );
    let config = dir.path().join("c.yaml");
    let orders_file = dir.path().join("orders.parquet");
    crate::common::write_parquet(&orders_file, &mut orders());
    std::fs::write(
        &config,
        format!(
            "input:\n  orders: {}\n  surveys: {surveys}\n",
            orders_file.display()
        ),
    )
    .unwrap();
    let output = loyalty()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`11`") && stderr.contains("input.surveys") && stderr.contains("row 2"),
        "{stderr}"
    );
    assert!(!dir.path().join("out").exists());
}

/// Migration: a customer who moved, one who stayed, one new and one lost.
#[test]
fn migration_counts_moves_new_and_lost_customers() {
    use loyalty::metrics::migration::{Previous, migration};
    let micros = |v: &[i128]| Series::new("__revenue_micros".into(), v.to_vec());
    let current = DataFrame::new(
        3,
        vec![
            Column::new("customer_id".into(), ["a", "b", "new"]),
            Column::new("segment".into(), ["Champions", "Lost", "New Customers"]),
            micros(&[50_000_000, 5_000_000, 1_000_000]).into_column(),
        ],
    )
    .unwrap();
    let before = df!(
        "customer_id" => ["a", "b", "gone"],
        "segment" => ["Promising", "Lost", "At Risk"],
        "revenue" => [20.0, 5.0, 7.5],
    )
    .unwrap();
    let previous = Previous::from_customers(before, None, "prev".into(), None).unwrap();
    let table = migration(current.lazy(), previous.customers.lazy())
        .collect()
        .unwrap();
    assert_eq!(
        column_text(&table, "from_segment"),
        ["(new)", "At Risk", "Lost", "Promising"]
    );
    assert_eq!(
        column_text(&table, "to_segment"),
        ["New Customers", "(lost)", "Lost", "Champions"]
    );
    assert_eq!(column_text(&table, "customers"), ["1", "1", "1", "1"]);
    assert_eq!(column_text(&table, "revenue"), ["1.0", "0.0", "5.0", "50.0"]);
    assert_eq!(
        column_text(&table, "previous_revenue"),
        ["0.0", "7.5", "5.0", "20.0"]
    );
}

/// `compare_to: "{previous}"` with no earlier snapshot: the job makes one as of
/// compare_days earlier, publishes it, and the migration's customers add up to the
/// union of both snapshots; a second run compares with the first.
#[test]
fn previous_snapshot_is_made_on_demand_and_found_next_time() {
    let dir = TempDir::new().unwrap();
    let run = |as_of: &str| {
        loyalty()
            .current_dir(repo())
            .args(["--log-level", "warn", "run", "--config", "config/example.yaml"])
            .args([
                "--set",
                "clv.model=none",
                "--set",
                "output.formats=[parquet]",
                "--set",
                "output.report=false",
            ])
            .args([
                "--set",
                "compare_to=\"{previous}\"",
                "--set",
                "compare_days=30",
                "--as-of",
                as_of,
            ])
            .arg("--set")
            .arg(format!("output.dir={}/{{as_of}}", dir.path().display()))
            .assert()
            .success();
    };
    run("2024-12-01");
    assert!(dir.path().join("2024-11-01/customers.parquet").exists());
    let read = |path: &str| {
        ParquetReader::new(std::fs::File::open(dir.path().join(path)).unwrap())
            .finish()
            .unwrap()
    };
    let migration = read("2024-12-01/segment_migration.parquet");
    let total: i64 = migration
        .column("customers")
        .unwrap()
        .i64()
        .unwrap()
        .sum()
        .unwrap();
    assert_eq!(total as usize, read("2024-12-01/customers.parquet").height());
    run("2024-12-20");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("2024-12-20/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["compared_to"]["as_of"], "2024-12-01");
    // The report shows the migration and the action lists.
    loyalty()
        .arg("report")
        .arg(dir.path().join("2024-12-20"))
        .assert()
        .success();
    let html = std::fs::read_to_string(dir.path().join("2024-12-20/report.html")).unwrap();
    assert!(html.contains("Segment migration") && html.contains("Action lists") && html.contains("win_back"));
    assert!(html.contains(r#"<figure class="chart" id="migration">"#));
}

/// Each default rule, on customers whose columns are set by hand.
#[test]
fn each_default_action_rule_picks_its_customers() {
    use loyalty::metrics::actions::{action_rows, sorted};
    let customers = df!(
        "customer_id" => ["lapsed_a", "alive_a", "old_a", "neutral", "passive", "champ", "risk", "cant_lose"],
        "abc_class" => ["A", "A", "A", "B", "C", "A", "B", "A"],
        "p_alive" => [Some(0.1), Some(0.9), None, Some(0.5), Some(0.5), Some(0.95), Some(0.4), Some(0.3)],
        "recency_days" => [100i64, 20, 400, 50, 60, 5, 200, 300],
        "segment" => ["Lost", "Champions", "Hibernating", "Need Attention", "Lost", "Champions", "At Risk", "Can't Lose Them"],
        "nps_score" => [None, None, None, None, Some(8i64), None, None, None],
        "historical_clv" => [100.0, 200.0, 300.0, 10.0, 20.0, 500.0, 40.0, 60.0],
        "predicted_clv" => [None, Some(5.0), None, Some(1.0), None, Some(50.0), Some(4.0), Some(6.0)],
        "formula_clv" => [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    )
    .unwrap();
    let present: Vec<String> = customers
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let rules = loyalty::config::default_actions(365);
    let listed = |name: &str| {
        let rule = rules.iter().find(|r| r.name == name).unwrap();
        let rows = sorted(action_rows(customers.clone().lazy(), rule, &present))
            .collect()
            .unwrap();
        (
            column_text(&rows, "customer_id"),
            column_text(&rows, "expected_value"),
        )
    };
    // Valuable (A) and lapsed (P(alive) ≤ 0.3 or recency ≥ 365); a null P(alive) alone never matches.
    assert_eq!(listed("win_back").0, ["old_a", "lapsed_a", "cant_lose"]);
    assert_eq!(listed("win_back").1, ["300.0", "100.0", "60.0"]);
    // Need Attention / About To Sleep, or an NPS passive; value: predicted, else formula.
    assert_eq!(
        listed("nudge_neutral"),
        (
            vec!["passive".to_string(), "neutral".into()],
            vec!["5.0".to_string(), "1.0".into()]
        )
    );
    assert_eq!(listed("thank_champions").0, ["champ", "alive_a"]);
    assert_eq!(listed("save_at_risk").0, ["cant_lose", "risk"]);
}

#[test]
fn an_action_on_an_unknown_column_is_a_config_error_naming_it() {
    let yaml = "actions:\n  - name: vip\n    all: {segmnt: [Champions]}\n";
    let error = try_compute(orders(), yaml, &[]).err().unwrap().to_string();
    assert!(
        error.contains("actions[0].all")
            && error.contains("`segmnt`")
            && error.contains("did you mean `segment`"),
        "{error}"
    );
    let yaml = "actions:\n  - name: bad/name\n    all: {revenue: [1]}\n";
    let error = try_compute(orders(), yaml, &[]).err().unwrap().to_string();
    assert!(
        error.contains("actions/NAME.csv") && error.contains("`revenue` is a number"),
        "{error}"
    );
}

/// The shipped side tables run on the sample and on CDNOW, through the binary.
#[test]
fn shipped_identities_and_surveys_run_on_the_sample_and_cdnow() {
    let dir = TempDir::new().unwrap();
    for (config, prefix) in [
        ("config/example.yaml", "data/"),
        ("config/cdnow.yaml", "data/cdnow_"),
    ] {
        if config.contains("cdnow") && !crate::common::cdnow("cdnow_master_orders.parquet").exists() {
            continue;
        }
        let out = dir.path().join(prefix.replace('/', "_"));
        loyalty()
            .current_dir(repo())
            .args(["--log-level", "warn", "run", "--config", config])
            .args([
                "--set",
                "output.formats=[parquet]",
                "--set",
                "output.report=false",
            ])
            .arg("--set")
            .arg(format!("input.identities={prefix}identities.csv"))
            .arg("--set")
            .arg(format!("input.surveys={prefix}surveys.csv"))
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let identities = &manifest["identities"];
        assert!(
            identities["customers_after"].as_u64() < identities["customers_before"].as_u64(),
            "{config}"
        );
        assert_eq!(identities["conflicts"], 1);
        assert!(manifest["surveys"]["respondents"].as_u64().unwrap() > 0);
        for action in manifest["actions"].as_array().unwrap() {
            let name = action["name"].as_str().unwrap();
            assert!(out.join(format!("actions/{name}.parquet")).exists());
        }
        assert!(out.join("nps.parquet").exists());
    }
}

/// first_order_value: the first purchase by date, ties by order_id; an order that
/// nets to zero is no purchase. sales_per_customer = revenue / customers, and
/// mean_first_order_value the mean over customers.
#[test]
fn first_order_value_and_sales_per_customer_by_hand() {
    let computed = compute(
        lines(
            &["a", "a", "a", "a", "b"],
            &["9", "2", "1", "1", "5"],
            &[
                "2024-01-05",
                "2024-01-05",
                "2024-01-01",
                "2024-01-01",
                "2024-02-01",
            ],
            &[40.0, 15.0, 10.0, -10.0, 7.0],
        ),
        "",
        &[],
    );
    let customers = table(&computed, "customers");
    // a's order 1 nets to 0 (no purchase); on 2024-01-05, order "2" < "9".
    assert_eq!(column_text(&customers, "first_order_value"), ["15.0", "7.0"]);
    let kpis = table(&computed, "kpis");
    assert_eq!(column_text(&kpis, "sales_per_customer"), ["31.0"]);
    assert_eq!(column_text(&kpis, "mean_first_order_value"), ["11.0"]);
}

/// period_retention_rate over kpis.churn_window_days windows: of the customers who
/// bought in the previous window, the share who bought in the current one too.
#[test]
fn period_retention_rate_by_hand() {
    // as_of 2025-01-01, window 100 days: current = days 1..=100 before as_of,
    // previous = days 101..=200.
    // a: 150 and 50 days before (both windows); b: 150 (previous only);
    // c: 50 (current only); d: 300 (neither).
    let lines = lines(
        &["a", "a", "b", "c", "d"],
        &["1", "2", "3", "4", "5"],
        &[
            "2024-08-04",
            "2024-11-12",
            "2024-08-04",
            "2024-11-12",
            "2024-03-07",
        ],
        &[10.0; 5],
    );
    let computed = compute(lines, "", &["as_of=2025-01-01", "kpis.churn_window_days=100"]);
    let kpis = table(&computed, "kpis");
    assert_eq!(column_text(&kpis, "period_retention_rate"), ["0.5"]);
}

/// Per-line margins from `input.columns.cost` (as_of 2024-03-01, `clv.margin: 0.5`
/// for lines without a cost), by hand:
///
/// | customer | lines (amount / cost) | revenue | gross margin |
/// |---|---|---|---|
/// | A | o1: 100/60, 50/null (0.5 × 50); o2: 40/10 | 190 | 40 + 25 + 30 = 95 |
/// | B | o3: 80/20 twice (an exact duplicate); o4: −30/−10 (a refund) | 50 | 60 − 20 = 40 |
/// | C | o5: 10/15, 10/14 (not duplicates: the costs differ) | 20 | −5 − 4 = −9 |
#[test]
fn line_costs_give_each_customer_its_own_margin() {
    let orders = df!(
        "customer_id" => ["A", "A", "A", "B", "B", "B", "C", "C"],
        "order_id" => ["o1", "o1", "o2", "o3", "o3", "o4", "o5", "o5"],
        "order_date" => ["2024-01-10", "2024-01-10", "2024-02-10", "2024-02-01", "2024-02-01", "2024-02-15", "2024-02-20", "2024-02-20"],
        "amount" => [100.0, 50.0, 40.0, 80.0, 80.0, -30.0, 10.0, 10.0],
        "unit_cost" => [Some(60.0), None, Some(10.0), Some(20.0), Some(20.0), Some(-10.0), Some(15.0), Some(14.0)],
    )
    .unwrap()
    .lazy()
    .with_column(col("order_date").str().to_date(StrptimeOptions::default()))
    .collect()
    .unwrap();
    let computed = compute(
        orders.clone(),
        "",
        &[
            "as_of=2024-03-01",
            "input.columns.cost=unit_cost",
            "clv.margin=0.5",
        ],
    );
    let customers = table(&computed, "customers");
    let column = |name: &str| -> Vec<f64> {
        customers
            .column(name)
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect()
    };
    assert_eq!(column("revenue"), [190.0, 50.0, 20.0]);
    assert_eq!(column("historical_clv"), [95.0, 40.0, -9.0]);
    // formula_clv = margin per order × purchases per year × lifetime (10 years: nobody
    // churned); tenure A 51 days, B 29 and C 10 (both floored to 30).
    let per_year = |orders: f64, tenure: f64| orders / tenure * 365.25;
    let expected = [
        95.0 / 2.0 * per_year(2.0, 51.0) * 10.0,
        40.0 * per_year(1.0, 30.0) * 10.0,
        -9.0 * per_year(1.0, 30.0) * 10.0,
    ];
    for (got, want) in column("formula_clv").iter().zip(expected) {
        assert!((got - want).abs() <= 1e-9 * want.abs(), "{got} vs {want}");
    }
    // The duplicate is counted once in cleaning, like any other.
    let duplicates = computed.cleaning.iter().find(|s| s.step == 3).unwrap();
    assert_eq!(duplicates.dropped, 1);
    // No internal column reaches the table.
    assert!(customers.get_column_names().iter().all(|n| !n.starts_with("__")));

    // Both columns at once, or a cost that is not a number, are errors naming the key.
    let both = try_compute(
        orders.clone(),
        "",
        &["input.columns.cost=unit_cost", "input.columns.margin=unit_cost"],
    );
    assert!(both.err().unwrap().to_string().contains("input.columns.margin"));
    let text = orders
        .lazy()
        .with_column(lit("n/a").alias("unit_cost"))
        .collect()
        .unwrap();
    let error = try_compute(text, "", &["input.columns.cost=unit_cost"])
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("unit_cost") && error.contains("n/a"), "{error}");
}

/// On the sample with a margin column of exactly 40% of each line, every CLV column
/// (the model's prediction included) matches a run with `clv.margin: 0.4`.
#[test]
fn a_margin_column_at_a_flat_rate_matches_the_configured_rate() {
    let dir = TempDir::new().unwrap();
    let mut orders = LazyFrame::scan_parquet(
        repo().join("data/orders.parquet").to_str().unwrap().into(),
        Default::default(),
    )
    .unwrap()
    // Cents × 0.4 is a whole number of micro-units, so the margin is exact.
    .with_column(
        ((col("amount") * lit(100.0)).round(0, RoundMode::HalfToEven) * lit(0.4) / lit(100.0))
            .alias("line_margin"),
    )
    .collect()
    .unwrap();
    let path = dir.path().join("orders.parquet");
    crate::common::write_parquet(&path, &mut orders);
    let run = |sets: &[&str], out: &str| {
        let mut command = loyalty();
        command
            .args(["--log-level", "warn", "run", "--config"])
            .arg(repo().join("config/example.yaml"));
        command
            .arg("--set")
            .arg(format!("input.orders={}", path.display()));
        for set in sets {
            command.args(["--set", set]);
        }
        command.arg("--out").arg(dir.path().join(out)).assert().success();
        LazyFrame::scan_parquet(
            dir.path()
                .join(out)
                .join("customers.parquet")
                .to_str()
                .unwrap()
                .into(),
            Default::default(),
        )
        .unwrap()
        .collect()
        .unwrap()
    };
    let by_rate = run(&["clv.margin=0.4"], "rate");
    let by_column = run(&["input.columns.margin=line_margin"], "column");
    for name in ["historical_clv", "formula_clv", "predicted_clv"] {
        let (a, b) = (
            by_rate.column(name).unwrap().f64().unwrap(),
            by_column.column(name).unwrap().f64().unwrap(),
        );
        assert_eq!(a.null_count(), b.null_count(), "{name}");
        assert!(a.null_count() < a.len(), "{name} is all null");
        for (x, y) in a.iter().zip(b.iter()) {
            if let (Some(x), Some(y)) = (x, y) {
                assert!((x - y).abs() <= 1e-9 * x.abs().max(1e-6), "{name}: {x} vs {y}");
            }
        }
    }
}

/// Merged ids keep the upsell count right: 40 people each bought one category
/// under one id and another under an alias (their ids fall in different shards
/// of the fold, which numbered categories apart before they were made global),
/// and 10 more bought one category under two ids. Upsell: 40 of 50.
#[test]
fn merged_ids_count_categories_across_the_fold_shards() {
    let dir = TempDir::new().unwrap();
    let (mut customers, mut orders, mut dates, mut amounts, mut categories) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut aliases = String::from("alias_id,customer_id\n");
    let kinds = ["toys", "books", "games", "music"];
    for person in 0..50 {
        let (a, b) = (format!("p{person}-web"), format!("p{person}-store"));
        let second = if person < 40 {
            kinds[(person + 1) % 4]
        } else {
            kinds[person % 4]
        };
        for (i, (id, category)) in [(a.clone(), kinds[person % 4]), (b.clone(), second)]
            .into_iter()
            .enumerate()
        {
            customers.push(id);
            orders.push(format!("o{person}-{i}"));
            dates.push("2024-02-01");
            amounts.push(10.0);
            categories.push(category);
        }
        aliases.push_str(&format!("{b},{a}\n"));
    }
    let frame = df!(
        "customer_id" => customers,
        "order_id" => orders,
        "order_date" => dates,
        "amount" => amounts,
        "category" => categories,
    )
    .unwrap()
    .lazy()
    .with_column(col("order_date").str().to_date(StrptimeOptions::default()))
    .collect()
    .unwrap();
    let ids = write(&dir, "ids.csv", &aliases);
    let set = format!("input.identities={ids}");
    let computed = compute(
        frame,
        "as_of: 2024-03-01\n",
        &[&set, "input.columns.category=category"],
    );
    let kpis = table(&computed, "kpis");
    let ratio = kpis
        .column("upsell_ratio")
        .unwrap()
        .f64()
        .unwrap()
        .get(0)
        .unwrap();
    assert!((ratio - 40.0 / 50.0).abs() < 1e-12, "upsell_ratio {ratio}");
}
