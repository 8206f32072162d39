//! Reading the YAML tree into a [`JobConfig`]: each key typed, its default taken
//! from the types' `Default` ([`super::types`]) when absent, unknown keys reported
//! with the closest valid one. Value rules are [`super::checks`]'; each problem is
//! recorded with its file position or `--set` argument, never stopping at the first.

use std::fmt;

use chrono::NaiveDate;

use super::checks;
use super::types::*;
use super::yaml::{Node, Origin, Value};
use crate::error::ConfigIssue;

/// Walks the tree, collecting issues instead of stopping at the first.
pub(super) struct Reader {
    pub(super) file: String,
    /// Each issue with a sort key: (0, line, col) in the file, (1, n, 0) for the n-th `--set`.
    pub(super) issues: Vec<((u8, usize, usize), ConfigIssue)>,
}

/// A mapping being read; records which keys were asked for so the rest are unknown.
struct Section<'n> {
    path: String,
    entries: &'n [(String, Node)],
    origin: Origin,
    known: Vec<&'static str>,
}

impl<'n> Section<'n> {
    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        self.entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    fn origin_of(&self, key: &str) -> Origin {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| n.origin.clone())
            .unwrap_or_else(|| self.origin.clone())
    }
}

impl Reader {
    pub(super) fn issue(&mut self, origin: &Origin, message: String) {
        let (order, location) = match origin {
            Origin::File { line, col } => ((0, *line, *col), format!("{}:{line}:{col}", self.file)),
            Origin::Set(arg) => ((1, self.issues.len(), 0), format!("--set {arg}")),
        };
        self.issues.push((order, ConfigIssue { location, message }));
    }

    fn invalid(&mut self, section: &Section, key: &str, message: impl fmt::Display) {
        let origin = section.origin_of(key);
        self.issue(&origin, format!("`{}` {message}", section.key_path(key)));
    }

    /// Records a check's problems, each at its key in `section`.
    fn report(&mut self, section: &Section, problems: Vec<checks::Problem>) {
        for problem in problems {
            self.invalid(section, problem.key, problem.message);
        }
    }

    fn section<'n>(&mut self, parent: &mut Section<'n>, key: &'static str) -> Section<'n> {
        let path = parent.key_path(key);
        match parent.get(key) {
            Some(node) => match &node.value {
                Value::Map(entries) => Section {
                    path,
                    entries,
                    origin: node.origin.clone(),
                    known: Vec::new(),
                },
                _ if node.is_null() => Section {
                    path,
                    entries: &[],
                    origin: node.origin.clone(),
                    known: Vec::new(),
                },
                _ => {
                    let got = node.kind_name();
                    self.issue(&node.origin, format!("`{path}` must be a mapping, got {got}"));
                    Section {
                        path,
                        entries: &[],
                        origin: node.origin.clone(),
                        known: Vec::new(),
                    }
                }
            },
            None => Section {
                path,
                entries: &[],
                origin: parent.origin.clone(),
                known: Vec::new(),
            },
        }
    }

    /// A mapping inside a list (`path` is e.g. `rfm.segments[2]`), or an issue saying what it must be.
    fn list_item<'n>(&mut self, node: &'n Node, path: String, must_be: &str) -> Option<Section<'n>> {
        let Value::Map(entries) = &node.value else {
            self.issue(&node.origin, format!("`{path}` must be {must_be}"));
            return None;
        };
        Some(Section {
            path,
            entries,
            origin: node.origin.clone(),
            known: Vec::new(),
        })
    }

    /// A value with a default; a wrong type records an issue and yields the default.
    fn field<T: FromNode>(&mut self, section: &mut Section, key: &'static str, default: T) -> T {
        self.optional(section, key).unwrap_or(default)
    }

    /// A value that may be absent or null.
    fn optional<T: FromNode>(&mut self, section: &mut Section, key: &'static str) -> Option<T> {
        let node = section.get(key)?;
        if node.is_null() {
            return None;
        }
        match T::from_node(node) {
            Ok(value) => Some(value),
            Err(Bad { origin, message }) => {
                let path = section.key_path(key);
                self.issue(&origin, format!("`{path}` {message}"));
                None
            }
        }
    }

    /// Reports keys nobody asked for, with the closest known key.
    fn finish(&mut self, section: Section) {
        for (key, node) in section.entries {
            if section.known.contains(&key.as_str()) {
                continue;
            }
            let path = section.key_path(key);
            let message = match closest(key, &section.known) {
                Some(best) => format!("unknown key `{path}`, did you mean `{}`?", section.key_path(best)),
                None => format!(
                    "unknown key `{path}`; valid keys here are: {}",
                    section.known.join(", ")
                ),
            };
            self.issue(&node.origin, message);
        }
    }

    pub(super) fn job(&mut self, root: &Node) -> JobConfig {
        let defaults = JobConfig::default();
        let Value::Map(entries) = &root.value else {
            unreachable!("checked by from_str")
        };
        let mut top = Section {
            path: String::new(),
            entries,
            origin: root.origin.clone(),
            known: Vec::new(),
        };
        let input = self.input(&mut top);
        let cleaning = self.cleaning(&mut top);
        let as_of = self.optional::<NaiveDate>(&mut top, "as_of");
        let engine = self.field(&mut top, "engine", defaults.engine);
        let spark = self.spark(&mut top, engine);

        let mut section = self.section(&mut top, "customers");
        let customers = CustomersConfig {
            min_tenure_days: self.field(
                &mut section,
                "min_tenure_days",
                defaults.customers.min_tenure_days,
            ),
        };
        self.report(&section, checks::customers(&customers));
        self.finish(section);

        let mut section = self.section(&mut top, "cohorts");
        let cohorts = CohortsConfig {
            grain: self.field(&mut section, "grain", defaults.cohorts.grain),
        };
        self.finish(section);

        let pareto = self.pareto(&mut top);

        let mut section = self.section(&mut top, "kpis");
        let kpis = KpisConfig {
            churn_window_days: self.field(&mut section, "churn_window_days", defaults.kpis.churn_window_days),
        };
        self.report(&section, checks::kpis(&kpis));
        self.finish(section);

        let rfm = self.rfm(&mut top);
        let clv = self.clv(&mut top, input.columns.channel.is_some());
        let compare_to = self.optional::<String>(&mut top, "compare_to");
        if let Some(reason) = compare_to.as_deref().and_then(crate::io::url::refused) {
            self.invalid(&top, "compare_to", reason);
        }
        let compare_days = self.field(&mut top, "compare_days", defaults.compare_days);
        if compare_days == 0 {
            self.invalid(&top, "compare_days", "must be at least 1");
        }
        let actions = self.actions(&mut top, kpis.churn_window_days);
        let output = self.output(&mut top);
        self.finish(top);
        JobConfig {
            input,
            cleaning,
            as_of,
            engine,
            spark,
            customers,
            cohorts,
            pareto,
            kpis,
            rfm,
            clv,
            compare_to,
            compare_days,
            actions,
            output,
        }
    }

    /// `spark:` the Spark Connect session; `remote` is required with `engine: spark`.
    fn spark(&mut self, top: &mut Section, engine: Engine) -> SparkConfig {
        let mut section = self.section(top, "spark");
        let remote = self.optional::<String>(&mut section, "remote");
        let token = self.optional::<String>(&mut section, "token");
        let use_ssl = self.field(&mut section, "use_ssl", false);
        let conf = self.field(&mut section, "conf", StorageOptions::default());
        if engine == Engine::Spark {
            match &remote {
                None => self.invalid(
                    &section,
                    "remote",
                    "is required with `engine: spark`, e.g. `sc://127.0.0.1:15002`",
                ),
                Some(url) if !url.starts_with("sc://") => self.invalid(
                    &section,
                    "remote",
                    format!("must be a Spark Connect URL `sc://host:port`, got `{url}`"),
                ),
                Some(_) => {}
            }
        }
        self.finish(section);
        SparkConfig {
            remote,
            token,
            use_ssl,
            conf,
        }
    }

    /// `actions:` a list of rules; absent, the classic plays ([`default_actions`]);
    /// `[]`, none.
    fn actions(&mut self, top: &mut Section, churn_window_days: u32) -> Vec<ActionRule> {
        let Some(node) = top.get("actions") else {
            return default_actions(churn_window_days);
        };
        let items = match &node.value {
            Value::Seq(items) => items,
            _ if node.is_null() => return Vec::new(),
            _ => {
                self.issue(
                    &node.origin,
                    format!("`actions` must be a list of rules like `- {{name: win_back, all: {{segment: [Lost]}}}}`, got {}", node.kind_name()),
                );
                return Vec::new();
            }
        };
        let mut rules: Vec<ActionRule> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(mut rule) = self.list_item(
                item,
                format!("actions[{i}]"),
                "a mapping with `name` and conditions `all` / `any`",
            ) else {
                continue;
            };
            let name = self.optional::<String>(&mut rule, "name");
            let all = self.conditions(&mut rule, "all");
            let any = self.conditions(&mut rule, "any");
            let value = match rule.get("value") {
                Some(node) if matches!(node.value, Value::Seq(_)) => Vec::<String>::from_node(node)
                    .unwrap_or_else(|b| {
                        self.issue(&b.origin, format!("`actions[{i}].value` {}", b.message));
                        Vec::new()
                    }),
                Some(_) => self.optional::<String>(&mut rule, "value").into_iter().collect(),
                None => vec!["predicted_clv".into(), "formula_clv".into()],
            };
            let problems = checks::action(name.as_deref(), &all, &any, &value, &rules);
            self.report(&rule, problems);
            let origin = rule.origin.clone();
            if name.is_none() {
                self.issue(&origin, format!("`actions[{i}].name` is required"));
            }
            self.finish(rule);
            if let Some(name) = name {
                rules.push(ActionRule {
                    name,
                    all,
                    any,
                    value,
                });
            }
        }
        rules
    }

    /// `all:` / `any:` of an action: `column: [values]`, `column: value` or
    /// `column: {min: x, max: y}`.
    fn conditions(&mut self, rule: &mut Section, key: &'static str) -> Vec<Condition> {
        let section = self.section(rule, key);
        let entries = section.entries;
        let mut conditions = Vec::new();
        for (column, node) in entries {
            let path = section.key_path(column);
            let test = match &node.value {
                Value::Seq(_) => Vec::<String>::from_node(node).map(Test::In),
                Value::Map(_) => {
                    let Some(mut bounds) = self.list_item(node, path.clone(), "a mapping") else {
                        continue;
                    };
                    let min = self.optional::<f64>(&mut bounds, "min");
                    let max = self.optional::<f64>(&mut bounds, "max");
                    self.finish(bounds);
                    match (min, max) {
                        (None, None) => Err(Bad {
                            origin: node.origin.clone(),
                            message: "needs `min`, `max` or both".into(),
                        }),
                        (Some(lo), Some(hi)) if lo > hi => Err(Bad {
                            origin: node.origin.clone(),
                            message: format!("has min {lo} above max {hi}"),
                        }),
                        _ => Ok(Test::Between { min, max }),
                    }
                }
                _ => String::from_node(node).map(|v| Test::In(vec![v])),
            };
            match test {
                Ok(test) => conditions.push(Condition {
                    column: column.clone(),
                    test,
                }),
                Err(Bad { origin, message }) => self.issue(&origin, format!("`{path}` {message}")),
            }
        }
        // Every key is a column name, so none is unknown here: no `finish` (the
        // checks name columns that are not customers columns).
        conditions
    }

    fn rfm(&mut self, top: &mut Section) -> RfmConfig {
        let mut section = self.section(top, "rfm");
        let defaults = RfmConfig::default();
        let bins = self.field(&mut section, "bins", defaults.bins);
        self.report(&section, checks::rfm_bins(bins));
        let monetary = self.field(&mut section, "monetary", defaults.monetary);
        let window_days = self.optional::<u32>(&mut section, "window_days");
        if window_days == Some(0) {
            self.invalid(
                &section,
                "window_days",
                "must be at least 1 day, got 0 (null scores every order)".to_string(),
            );
        }
        let segments = match section.get("segments").filter(|n| !n.is_null()) {
            None => {
                if bins != defaults.bins {
                    self.invalid(
                        &section,
                        "bins",
                        format!("is {bins}, but the default segment map is for 5 bins; give `rfm.segments` for {bins} bins"),
                    );
                }
                defaults.segments
            }
            Some(node) => match &node.value {
                Value::Seq(items) => items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| self.segment_rule(item, i, bins))
                    .collect(),
                _ => {
                    self.issue(
                        &node.origin,
                        format!("`rfm.segments` must be a list of rules like `- {{name: Champions, r: [4, 5], fm: [4, 5]}}`, got {}", node.kind_name()),
                    );
                    Vec::new()
                }
            },
        };
        self.finish(section);
        RfmConfig {
            bins,
            monetary,
            window_days,
            segments,
        }
    }

    fn segment_rule(&mut self, node: &Node, index: usize, bins: u32) -> Option<SegmentRule> {
        let mut rule = self.list_item(
            node,
            format!("rfm.segments[{index}]"),
            "a mapping with `name` and score ranges r, f, m, fm",
        )?;
        let name = self.optional::<String>(&mut rule, "name");
        let mut range = |reader: &mut Self, key: &'static str| -> Option<(u32, u32)> {
            let (lo, hi) = reader.optional::<ScoreRange>(&mut rule, key)?.0;
            if lo < 1 || hi > bins || lo > hi {
                reader.invalid(
                    &rule,
                    key,
                    format!("must be a range within 1..={bins} like [2, 3], got [{lo}, {hi}]"),
                );
            }
            Some((lo, hi))
        };
        let (r, f, m, fm) = (
            range(self, "r"),
            range(self, "f"),
            range(self, "m"),
            range(self, "fm"),
        );
        if name.is_none() {
            let origin = rule.origin.clone();
            self.issue(&origin, format!("`{}.name` is required", rule.path));
        }
        self.finish(rule);
        Some(SegmentRule {
            name: name?,
            r,
            f,
            m,
            fm,
        })
    }

    fn clv(&mut self, top: &mut Section, has_channel: bool) -> ClvConfig {
        let mut section = self.section(top, "clv");
        let defaults = ClvConfig::default();
        let margin = self.field(&mut section, "margin", defaults.margin);
        let max_lifetime_years = self.field(&mut section, "max_lifetime_years", defaults.max_lifetime_years);
        let segment_by = self.field(
            &mut section,
            "segment_by",
            ClvConfig::default_segment_by(has_channel),
        );
        let model = self.field(&mut section, "model", defaults.model);
        let time_unit = self.field(&mut section, "time_unit", defaults.time_unit);
        let horizon_months = self.field(&mut section, "horizon_months", defaults.horizon_months);
        let discount_rate_annual = self.field(
            &mut section,
            "discount_rate_annual",
            defaults.discount_rate_annual,
        );
        let penalizer = self.field(&mut section, "penalizer", defaults.penalizer);
        let on_fit_failure = self.field(&mut section, "on_fit_failure", defaults.on_fit_failure);
        let holdout_days = self.optional::<u32>(&mut section, "holdout_days");
        let clv = ClvConfig {
            margin,
            max_lifetime_years,
            segment_by,
            model,
            time_unit,
            horizon_months,
            discount_rate_annual,
            penalizer,
            on_fit_failure,
            holdout_days,
        };
        self.report(&section, checks::clv(&clv, has_channel));
        self.finish(section);
        clv
    }
    fn input(&mut self, top: &mut Section) -> InputConfig {
        let mut section = self.section(top, "input");
        let orders = match section.get("orders") {
            Some(node) if !node.is_null() => match &node.value {
                Value::Seq(_) => Vec::<String>::from_node(node).unwrap_or_else(|b| {
                    self.issue(&b.origin, format!("`input.orders` {}", b.message));
                    Vec::new()
                }),
                _ => String::from_node(node).map(|s| vec![s]).unwrap_or_else(|b| {
                    self.issue(&b.origin, format!("`input.orders` {}", b.message));
                    Vec::new()
                }),
            },
            _ => {
                let origin = section.origin.clone();
                self.issue(
                    &origin,
                    "`input.orders` is required: a Parquet file, a directory of Parquet files, a glob, or a list of these".into(),
                );
                Vec::new()
            }
        };
        if orders.is_empty()
            && section
                .get("orders")
                .is_some_and(|n| matches!(n.value, Value::Seq(_)))
        {
            self.invalid(
                &section,
                "orders",
                "must list at least one file, directory or glob",
            );
        }

        let defaults = InputConfig::default();
        let mut cols = self.section(&mut section, "columns");
        let customer_id = self.field(&mut cols, "customer_id", defaults.columns.customer_id);
        let order_id = self.field(&mut cols, "order_id", defaults.columns.order_id);
        let order_date = self.field(&mut cols, "order_date", defaults.columns.order_date);
        let amount = self.field(&mut cols, "amount", defaults.columns.amount);
        let quantity = self.optional::<String>(&mut cols, "quantity");
        let category = self.optional::<String>(&mut cols, "category");
        let channel = self.optional::<String>(&mut cols, "channel");
        let cost = self.optional::<String>(&mut cols, "cost");
        let margin = self.optional::<String>(&mut cols, "margin");
        let columns = ColumnMap {
            customer_id,
            order_id,
            order_date,
            amount,
            quantity,
            category,
            channel,
            cost,
            margin,
        };
        self.report(&cols, checks::columns(&columns));
        self.finish(cols);

        let format = self.field(&mut section, "format", defaults.format);
        let storage_options = self.field(&mut section, "storage_options", defaults.storage_options);
        let date_format = self.optional::<String>(&mut section, "date_format");
        let timezone = self.field(&mut section, "timezone", defaults.timezone);
        let amount_is_unit_price = self.field(
            &mut section,
            "amount_is_unit_price",
            defaults.amount_is_unit_price,
        );
        let identities = self.optional::<String>(&mut section, "identities");
        let surveys = self.optional::<String>(&mut section, "surveys");
        let input = InputConfig {
            orders,
            format,
            storage_options,
            columns,
            date_format,
            timezone,
            amount_is_unit_price,
            identities,
            surveys,
        };
        self.report(&section, checks::input(&input));
        self.finish(section);
        input
    }

    fn cleaning(&mut self, top: &mut Section) -> CleaningConfig {
        let mut section = self.section(top, "cleaning");
        let defaults = CleaningConfig::default();
        let dedupe = self.field(&mut section, "dedupe", defaults.dedupe);
        let returns = self.field(&mut section, "returns", defaults.returns);
        let mut exclude = Vec::new();
        if let Some(node) = section.get("exclude").filter(|n| !n.is_null()) {
            match &node.value {
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(rule) = self.exclude_rule(item, i) {
                            exclude.push(rule);
                        }
                    }
                }
                _ => self.issue(
                    &node.origin,
                    format!("`cleaning.exclude` must be a list of rules like `- {{column: stock_code, equals: POST}}`, got {}", node.kind_name()),
                ),
            }
        }
        self.finish(section);
        CleaningConfig {
            dedupe,
            returns,
            exclude,
        }
    }

    fn exclude_rule(&mut self, node: &Node, index: usize) -> Option<ExcludeRule> {
        let mut rule = self.list_item(
            node,
            format!("cleaning.exclude[{index}]"),
            "a mapping with `column` and one of equals, in, starts_with, regex",
        )?;
        let column = self.optional::<String>(&mut rule, "column");
        let equals = self.optional::<String>(&mut rule, "equals").map(Matcher::Equals);
        let is_in = self.optional::<Vec<String>>(&mut rule, "in").map(Matcher::In);
        let starts_with = self
            .optional::<String>(&mut rule, "starts_with")
            .map(Matcher::StartsWith);
        let regex = self.optional::<String>(&mut rule, "regex").map(Matcher::Regex);
        let mut matchers: Vec<Matcher> = [equals, is_in, starts_with, regex]
            .into_iter()
            .flatten()
            .collect();
        if column.is_none() {
            let origin = rule.origin.clone();
            self.issue(
                &origin,
                format!("`{}.column` is required: the input column to match", rule.path),
            );
        }
        if matchers.len() != 1 {
            let origin = rule.origin.clone();
            self.issue(
                &origin,
                format!(
                    "`{}` needs exactly one of equals, in, starts_with, regex; found {}",
                    rule.path,
                    matchers.len()
                ),
            );
        }
        self.finish(rule);
        Some(ExcludeRule {
            column: column?,
            matcher: matchers.pop().filter(|_| matchers.is_empty())?,
        })
    }

    fn pareto(&mut self, top: &mut Section) -> ParetoConfig {
        let mut section = self.section(top, "pareto");
        let defaults = ParetoConfig::default();
        let top_shares = self.field(&mut section, "top_shares", defaults.top_shares);
        let lorenz_points = self.field(&mut section, "lorenz_points", defaults.lorenz_points);
        let mut abc_section = self.section(&mut section, "abc");
        let abc = AbcConfig {
            a: self.field(&mut abc_section, "a", defaults.abc.a),
            b: self.field(&mut abc_section, "b", defaults.abc.b),
        };
        self.report(&abc_section, checks::abc(&abc));
        self.finish(abc_section);
        let pareto = ParetoConfig {
            top_shares,
            lorenz_points,
            abc,
        };
        self.report(&section, checks::pareto(&pareto));
        self.finish(section);
        pareto
    }

    fn output(&mut self, top: &mut Section) -> OutputConfig {
        let mut section = self.section(top, "output");
        let defaults = OutputConfig::default();
        let dir = match section.get("dir") {
            None => defaults.dir.clone(),
            // Given but null (`dir:`, `dir: ~`, `--set output.dir=`): not the default.
            Some(node) if node.is_null() => {
                self.invalid(&section, "dir", "is empty: name a directory, e.g. `out`");
                defaults.dir.clone()
            }
            Some(node) => String::from_node(node).unwrap_or_else(|b| {
                self.issue(&b.origin, format!("`output.dir` {}", b.message));
                defaults.dir.clone()
            }),
        };
        let formats = self.field(&mut section, "formats", defaults.formats);
        let report = self.field(&mut section, "report", defaults.report);
        let replace = self.field(&mut section, "replace", defaults.replace);
        let storage_options = self.field(&mut section, "storage_options", defaults.storage_options);
        let keep_runs = self.field(&mut section, "keep_runs", defaults.keep_runs);
        if keep_runs == 0 {
            self.invalid(
                &section,
                "keep_runs",
                "must be at least 1 (the run just published)",
            );
        }
        let output = OutputConfig {
            dir,
            formats,
            report,
            replace,
            storage_options,
            keep_runs,
        };
        self.report(&section, checks::output(&output));
        self.finish(section);
        output
    }
}
pub(super) fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Conversion of one YAML node to a typed value; `Err` is the message after the key.
pub(super) trait FromNode: Sized {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad>;
}

/// A value that does not convert: where (the offending node, e.g. a list item) and why.
pub(super) struct Bad {
    pub(super) origin: Origin,
    pub(super) message: String,
}

fn bad(node: &Node, message: String) -> Bad {
    Bad {
        origin: node.origin.clone(),
        message,
    }
}

fn scalar(node: &Node) -> std::result::Result<(&str, bool), Bad> {
    match &node.value {
        Value::Scalar { text, quoted } => Ok((text.as_str(), *quoted)),
        _ => Err(bad(
            node,
            format!("must be a single value, got {}", node.kind_name()),
        )),
    }
}

impl FromNode for String {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        scalar(node).map(|(text, _)| text.to_string())
    }
}

impl FromNode for StorageOptions {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        match &node.value {
            Value::Map(entries) => entries
                .iter()
                .map(|(key, value)| Ok((key.clone(), scalar(value)?.0.to_string())))
                .collect::<std::result::Result<_, Bad>>()
                .map(StorageOptions),
            _ if node.is_null() => Ok(StorageOptions::default()),
            _ => Err(bad(
                node,
                format!(
                    "must be a mapping of option names to values, e.g. `{{aws_endpoint_url: http://127.0.0.1:9000, aws_region: us-east-1}}`, got {}",
                    node.kind_name()
                ),
            )),
        }
    }
}

impl FromNode for bool {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        match scalar(node)? {
            ("true" | "True" | "TRUE", false) => Ok(true),
            ("false" | "False" | "FALSE", false) => Ok(false),
            (text, _) => Err(bad(node, format!("must be true or false, got `{text}`"))),
        }
    }
}

impl FromNode for u32 {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        let (text, quoted) = scalar(node)?;
        match text.replace('_', "").parse::<u32>() {
            Ok(v) if !quoted => Ok(v),
            _ => Err(bad(node, format!("must be a whole number, got `{text}`"))),
        }
    }
}

impl FromNode for f64 {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        let (text, quoted) = scalar(node)?;
        match text.replace('_', "").parse::<f64>() {
            Ok(v) if !quoted && v.is_finite() => Ok(v),
            _ => Err(bad(node, format!("must be a number, got `{text}`"))),
        }
    }
}

/// An inclusive score range: `[lo, hi]` or a single score.
struct ScoreRange((u32, u32));

impl FromNode for ScoreRange {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        match &node.value {
            Value::Seq(items) if items.len() == 2 => Ok(ScoreRange((
                u32::from_node(&items[0])?,
                u32::from_node(&items[1])?,
            ))),
            Value::Scalar { .. } => u32::from_node(node).map(|v| ScoreRange((v, v))),
            _ => Err(bad(node, "must be a score or a range [lo, hi]".into())),
        }
    }
}

impl FromNode for Fraction {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        let (text, quoted) = scalar(node)?;
        match Fraction::parse(text) {
            Some(f) if !quoted => Ok(f),
            _ => Err(bad(
                node,
                format!("must be a decimal share like 0.8, got `{text}`"),
            )),
        }
    }
}

impl FromNode for NaiveDate {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        let (text, _) = scalar(node)?;
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| bad(node, format!("must be a date YYYY-MM-DD, got `{text}`")))
    }
}

impl<T: FromNode> FromNode for Vec<T> {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    T::from_node(item).map_err(|b| Bad {
                        message: format!("item {i}: {}", b.message),
                        ..b
                    })
                })
                .collect(),
            _ => Err(bad(node, format!("must be a list, got {}", node.kind_name()))),
        }
    }
}

/// Closed vocabularies: the YAML spelling of each variant.
macro_rules! choice {
    ($ty:ty { $($text:literal => $variant:expr),+ $(,)? }) => {
        impl FromNode for $ty {
            fn from_node(node: &Node) -> std::result::Result<Self, Bad> {
                let (text, _) = scalar(node)?;
                match text {
                    $($text => Ok($variant),)+
                    other => {
                        let choices = [$($text),+];
                        let hint = closest(other, &choices).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default();
                        Err(bad(node, format!("must be one of {}, got `{other}`{hint}", choices.join(", "))))
                    }
                }
            }
        }
    };
}

choice!(Grain { "week" => Grain::Week, "month" => Grain::Month, "quarter" => Grain::Quarter });
choice!(Returns { "net" => Returns::Net, "drop" => Returns::Drop });
choice!(Format { "parquet" => Format::Parquet, "csv" => Format::Csv });
choice!(InputFormat { "auto" => InputFormat::Auto, "parquet" => InputFormat::Parquet, "csv" => InputFormat::Csv });
choice!(Monetary { "total" => Monetary::Total, "average" => Monetary::Average });
choice!(Dimension {
    "segment" => Dimension::Segment,
    "cohort" => Dimension::Cohort,
    "abc_class" => Dimension::AbcClass,
    "channel" => Dimension::Channel,
});
choice!(PurchaseModel {
    "bgnbd" => PurchaseModel::Bgnbd,
    "pareto_nbd" => PurchaseModel::ParetoNbd,
    "mbgnbd" => PurchaseModel::Mbgnbd,
    "none" => PurchaseModel::None,
});
choice!(TimeUnit { "day" => TimeUnit::Day, "week" => TimeUnit::Week });
choice!(OnFitFailure { "error" => OnFitFailure::Error, "skip" => OnFitFailure::Skip });
choice!(Engine { "in_memory" => Engine::InMemory, "streaming" => Engine::Streaming, "spark" => Engine::Spark });
