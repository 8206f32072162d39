//! The job's configuration: YAML file + `--set` overrides -> a validated [`JobConfig`].
//!
//! The file describes the job; flags describe the run. Every key has a default
//! except `input.orders`. Reading never stops at the first problem: unknown keys
//! (with the closest valid key), wrong types and out-of-range values are all
//! collected, each with its file position or `--set` argument, and reported
//! together. The YAML crate sits behind [`yaml::parse`] so it can be swapped.
//!
//! - `types.rs`: the sections, their keys' meanings and their defaults;
//! - `yaml.rs`: YAML text to a tree of nodes with positions;
//! - `overrides.rs`: `--set` merged into the tree;
//! - `read.rs`: the tree to typed sections, unknown keys and wrong types;
//! - `checks.rs`: each section's value rules, every problem returned.

mod checks;
mod overrides;
mod read;
mod types;
pub mod yaml;

use std::path::Path;

pub use crate::error::ConfigIssue;
use crate::error::{Error, Result};
pub use types::*;
use yaml::{Node, Origin, Value};

impl JobConfig {
    /// sha256 of the resolved config as JSON: the same job gives the same hash.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        crate::checksum::sha256_hex(json.as_bytes())
    }
}

/// Reads, merges and validates a config file and its `--set KEY=VALUE` overrides.
pub fn load(path: &Path, overrides: &[String]) -> Result<JobConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(vec![ConfigIssue {
            location: path.display().to_string(),
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    from_str(&text, &path.display().to_string(), overrides)
}

/// As [`load`], from text; `file` names it in messages.
pub fn from_str(text: &str, file: &str, overrides: &[String]) -> Result<JobConfig> {
    let mut root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => Node {
            value: Value::Map(Vec::new()),
            origin: Origin::File { line: 1, col: 1 },
        },
        Err(e) => {
            return Err(Error::Config(vec![ConfigIssue {
                location: format!("{file}:{}:{}", e.line, e.col),
                message: format!("not valid YAML: {}", e.message),
            }]));
        }
    };
    let mut reader = read::Reader {
        file: file.to_string(),
        issues: Vec::new(),
    };
    if !matches!(root.value, Value::Map(_)) {
        let got = root.kind_name();
        reader.issue(
            &root.origin,
            format!("the config must be a mapping of sections (input, cleaning, output, ...), got {got}"),
        );
        return Err(Error::Config(
            reader.issues.into_iter().map(|(_, issue)| issue).collect(),
        ));
    }
    for arg in overrides {
        if let Err(message) = overrides::apply_override(&mut root, arg) {
            reader.issue(&Origin::Set(arg.clone()), message);
        }
    }
    let config = reader.job(&root);
    if reader.issues.is_empty() {
        Ok(config)
    } else {
        // Top to bottom through the file, then the `--set` arguments in order.
        reader.issues.sort_by_key(|(order, _)| *order);
        Err(Error::Config(
            reader.issues.into_iter().map(|(_, issue)| issue).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(text: &str, sets: &[&str]) -> Vec<String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        match from_str(text, "c.yaml", &sets) {
            Ok(_) => Vec::new(),
            Err(Error::Config(issues)) => issues.iter().map(|i| i.to_string()).collect(),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    const MINIMAL: &str = "input:\n  orders: data/orders.parquet\n";

    #[test]
    fn minimal_config_takes_defaults() {
        let config = from_str(MINIMAL, "c.yaml", &[]).unwrap();
        assert_eq!(config.input.orders, vec!["data/orders.parquet"]);
        assert_eq!(config.input.columns.customer_id, "customer_id");
        assert_eq!(config.cohorts.grain, Grain::Month);
        assert_eq!(config.customers.min_tenure_days, 30);
        assert_eq!(config.kpis.churn_window_days, 365);
        assert_eq!(config.pareto.top_shares.len(), 5);
        assert_eq!(config.pareto.abc.a, Fraction { num: 8, den: 10 });
        assert_eq!(config.output.formats, vec![Format::Parquet, Format::Csv]);
        assert!(config.cleaning.dedupe);
    }

    #[test]
    fn a_config_of_only_its_input_is_the_built_in_defaults() {
        let config = from_str(MINIMAL, "c.yaml", &[]).unwrap();
        let mut expected = JobConfig::default();
        expected.input.orders = vec!["data/orders.parquet".into()];
        assert_eq!(config, expected);
    }

    /// config/example.yaml spells out every key with its default: it must parse to
    /// exactly the built-in defaults, but for what only a dataset can say (its
    /// input file and its optional columns, and so the channel dimension).
    #[test]
    fn the_example_config_is_the_built_in_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml");
        let config = load(Path::new(path), &[]).unwrap();
        let mut expected = JobConfig::default();
        expected.input.orders = vec!["data/orders.parquet".into()];
        let columns = &mut expected.input.columns;
        columns.quantity = Some("quantity".into());
        columns.category = Some("category".into());
        columns.channel = Some("channel".into());
        expected.clv.segment_by = ClvConfig::default_segment_by(true);
        assert_eq!(config, expected);
    }

    #[test]
    fn unknown_key_names_the_closest() {
        let text = format!("{MINIMAL}cohorts:\n  grian: week\n");
        assert_eq!(
            issues(&text, &[]),
            vec!["c.yaml:4:10: unknown key `cohorts.grian`, did you mean `cohorts.grain`?"]
        );
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = "input:\n  orders: x.parquet\ncohorts:\n  grain: monthly\nkpis:\n  churn_window_days: -3\nbogus: 1\n";
        let found = issues(text, &[]);
        assert_eq!(
            found,
            vec![
                "c.yaml:4:10: `cohorts.grain` must be one of week, month, quarter, got `monthly`; did you mean `month`?",
                "c.yaml:6:22: `kpis.churn_window_days` must be a whole number, got `-3`",
                "c.yaml:7:8: unknown key `bogus`; valid keys here are: input, cleaning, as_of, engine, spark, customers, cohorts, pareto, kpis, rfm, clv, compare_to, compare_days, actions, output",
            ]
        );
    }

    #[test]
    fn set_overrides_use_the_same_keys_and_checks() {
        let config = from_str(
            MINIMAL,
            "c.yaml",
            &["cohorts.grain=week".into(), "output.formats=[csv]".into()],
        )
        .unwrap();
        assert_eq!(config.cohorts.grain, Grain::Week);
        assert_eq!(config.output.formats, vec![Format::Csv]);
        assert_eq!(
            issues(MINIMAL, &["cohorts.grian=week"]),
            vec!["--set cohorts.grian=week: unknown key `cohorts.grian`, did you mean `cohorts.grain`?"]
        );
        assert_eq!(
            issues(MINIMAL, &["kpis"]),
            vec!["--set kpis: expected KEY=VALUE, e.g. `--set rfm.bins=4`"]
        );
    }

    #[test]
    fn missing_input_is_required() {
        assert_eq!(
            issues("cohorts:\n  grain: week\n", &[]),
            vec![
                "c.yaml:1:1: `input.orders` is required: a Parquet file, a directory of Parquet files, a glob, or a list of these"
            ]
        );
    }

    #[test]
    fn not_a_mapping() {
        assert_eq!(
            issues("- a\n- b\n", &[]),
            vec![
                "c.yaml:1:1: the config must be a mapping of sections (input, cleaning, output, ...), got a list"
            ]
        );
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(Fraction::parse("0.95"), Some(Fraction { num: 95, den: 100 }));
        assert_eq!(Fraction::parse(".05"), Some(Fraction { num: 5, den: 100 }));
        assert_eq!(Fraction::parse("1"), Some(Fraction { num: 1, den: 1 }));
        assert_eq!(Fraction::parse("1e-2"), None);
        assert_eq!(Fraction::parse("-0.2"), None);
    }

    #[test]
    fn abc_thresholds_must_be_ordered() {
        let text = format!("{MINIMAL}pareto:\n  abc:\n    a: 0.9\n    b: 0.8\n");
        assert_eq!(
            issues(&text, &[]),
            vec!["c.yaml:6:8: `pareto.abc.b` must be greater than `pareto.abc.a` (0.9), got 0.8"]
        );
    }

    #[test]
    fn exclude_rules_need_one_matcher() {
        let text = format!(
            "{MINIMAL}cleaning:\n  exclude:\n    - column: sku\n      equals: POST\n      regex: '^X'\n"
        );
        assert_eq!(
            issues(&text, &[]),
            vec![
                "c.yaml:5:7: `cleaning.exclude[0]` needs exactly one of equals, in, starts_with, regex; found 2"
            ]
        );
    }

    #[test]
    fn one_physical_column_cannot_serve_two_logical_ones() {
        let text = "input:\n  orders: x\n  columns:\n    order_id: id\n    customer_id: id\n";
        assert_eq!(
            issues(text, &[]),
            vec![
                "c.yaml:4:15: `input.columns.order_id` maps to column `id`, which `input.columns.customer_id` already uses; each logical column needs its own input column"
            ]
        );
    }
}
