//! The job's configuration: YAML file + `--set` overrides -> a validated [`JobConfig`].
//!
//! The file describes the job; flags describe the run. Every key has a default
//! except `input.orders`. Reading never stops at the first problem: unknown keys
//! (with the closest valid key), wrong types and out-of-range values are all
//! collected, each with its file position or `--set` argument, and reported
//! together. The YAML crate sits behind [`yaml::parse`] so it can be swapped.

pub mod yaml;

use std::fmt;
use std::path::Path;

use chrono::NaiveDate;
use serde::Serialize;

use crate::error::{Error, Result};
use yaml::{Node, Origin, Value};

/// One problem with the configuration: where, which dotted key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobConfig {
    pub input: InputConfig,
    pub cleaning: CleaningConfig,
    /// Analysis date, exclusive; `None` = latest order date after cleaning step 1, + 1 day.
    pub as_of: Option<NaiveDate>,
    pub engine: Engine,
    pub customers: CustomersConfig,
    pub cohorts: CohortsConfig,
    pub pareto: ParetoConfig,
    pub kpis: KpisConfig,
    pub rfm: RfmConfig,
    pub clv: ClvConfig,
    pub output: OutputConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputConfig {
    /// Parquet files, directories (hive partitions allowed) or globs.
    pub orders: Vec<String>,
    pub columns: ColumnMap,
    /// chrono format for string `order_date` columns; `None` lets Polars infer it.
    pub date_format: Option<String>,
    /// Zone that zoned timestamps are converted to before taking their date.
    pub timezone: String,
    /// `amount` is a unit price: line value = amount x quantity.
    pub amount_is_unit_price: bool,
}

/// Logical column -> physical column name in the input.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnMap {
    pub customer_id: String,
    pub order_id: String,
    pub order_date: String,
    pub amount: String,
    pub quantity: Option<String>,
    pub category: Option<String>,
    pub channel: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CleaningConfig {
    pub dedupe: bool,
    pub returns: Returns,
    pub exclude: Vec<ExcludeRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Returns {
    /// Negative lines net against sales in their order.
    Net,
    /// Negative lines are dropped before orders are rolled up.
    Drop,
}

/// Drops input lines whose `column` matches.
#[derive(Debug, Clone, Serialize)]
pub struct ExcludeRule {
    pub column: String,
    #[serde(flatten)]
    pub matcher: Matcher,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Matcher {
    Equals(String),
    In(Vec<String>),
    StartsWith(String),
    Regex(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
/// Polars' engine for the stages over orders and customers; the line pass always
/// streams ([`crate::ingest`]).
pub enum Engine {
    /// Polars' in-memory engine.
    InMemory,
    /// Polars' streaming engine.
    Streaming,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomersConfig {
    /// Floor on tenure when annualising, so a customer of 2 days is not x180.
    pub min_tenure_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Week,
    Month,
    Quarter,
}

#[derive(Debug, Clone, Serialize)]
pub struct CohortsConfig {
    pub grain: Grain,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParetoConfig {
    pub top_shares: Vec<Fraction>,
    pub lorenz_points: u32,
    pub abc: AbcConfig,
}

#[derive(Debug, Clone, Serialize)]
pub struct AbcConfig {
    pub a: Fraction,
    pub b: Fraction,
}

#[derive(Debug, Clone, Serialize)]
pub struct KpisConfig {
    pub churn_window_days: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct RfmConfig {
    /// Scores run 1..=bins (2–9).
    pub bins: u32,
    pub monetary: Monetary,
    /// First matching rule names the segment; no match is "Other".
    pub segments: Vec<SegmentRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Monetary {
    /// Monetary = revenue.
    Total,
    /// Monetary = aov.
    Average,
}

/// A segment: inclusive score ranges; an absent range matches any score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRule {
    pub name: String,
    pub r: Option<(u32, u32)>,
    pub f: Option<(u32, u32)>,
    pub m: Option<(u32, u32)>,
    pub fm: Option<(u32, u32)>,
}

impl SegmentRule {
    pub fn matches(&self, r: u32, f: u32, m: u32, fm: u32) -> bool {
        let within = |range: Option<(u32, u32)>, v: u32| range.is_none_or(|(lo, hi)| lo <= v && v <= hi);
        within(self.r, r) && within(self.f, f) && within(self.m, m) && within(self.fm, fm)
    }
}

/// SPEC §4's default R × FM map (for 5 bins), ordered so every segment can occur.
pub fn default_segments() -> Vec<SegmentRule> {
    let rule = |name: &str, r: (u32, u32), fm: (u32, u32)| SegmentRule {
        name: name.into(),
        r: Some(r),
        f: None,
        m: None,
        fm: Some(fm),
    };
    vec![
        rule("Champions", (4, 5), (4, 5)),
        rule("Can't Lose Them", (1, 1), (4, 5)),
        rule("New Customers", (4, 5), (1, 1)),
        rule("Promising", (3, 4), (1, 1)),
        rule("Loyal Customers", (2, 5), (3, 5)),
        rule("Potential Loyalist", (3, 5), (1, 3)),
        rule("At Risk", (1, 2), (3, 5)),
        rule("Need Attention", (2, 3), (2, 3)),
        rule("About To Sleep", (2, 3), (1, 2)),
        rule("Hibernating", (1, 2), (2, 2)),
        rule("Lost", (1, 2), (1, 1)),
    ]
}

#[derive(Debug, Clone, Serialize)]
pub struct ClvConfig {
    /// Gross-margin rate in (0, 1].
    pub margin: f64,
    /// Cap on the expected lifetime of formula_clv, in years.
    pub max_lifetime_years: f64,
    /// Dimensions of `clv_by_segment`.
    pub segment_by: Vec<Dimension>,
    /// Purchase-count model for predicted_clv (SPEC §6.3).
    pub model: PurchaseModel,
    /// Unit of the summary's t_x and T, and of the fitted rates.
    pub time_unit: TimeUnit,
    pub horizon_months: u32,
    pub discount_rate_annual: f64,
    /// L2 penalty on the model parameters, as in lifetimes.
    pub penalizer: f64,
    pub on_fit_failure: OnFitFailure,
    /// Hold out the last N days: fit before as_of − N and score the holdout.
    pub holdout_days: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseModel {
    Bgnbd,
    Mbgnbd,
    ParetoNbd,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    Day,
    Week,
}

impl TimeUnit {
    pub fn days(&self) -> f64 {
        match self {
            TimeUnit::Day => 1.0,
            TimeUnit::Week => 7.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFitFailure {
    /// A failed fit stops the run (exit code 4).
    Error,
    /// A failed fit leaves the predicted columns null, with a warning.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Segment,
    Cohort,
    AbcClass,
    Channel,
}

impl Dimension {
    pub fn column(&self) -> &'static str {
        match self {
            Dimension::Segment => "segment",
            Dimension::Cohort => "cohort",
            Dimension::AbcClass => "abc_class",
            Dimension::Channel => "channel",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputConfig {
    /// May contain `{as_of}` and `{run_date}`.
    pub dir: String,
    pub formats: Vec<Format>,
    /// Write `report.html` (KPIs, charts, tables) beside the tables.
    pub report: bool,
    /// Replace an existing `dir` even when it is not a previous output of this job
    /// (`--force`); without it such a directory is refused.
    pub replace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Parquet,
    Csv,
}

/// A share written as a decimal in the config, kept exact: `0.95` = 95/100.
/// Thresholds compare integers (`x * den` against `num * total`), never floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub num: u64,
    pub den: u64,
}

impl Fraction {
    /// Parses a plain decimal (`0.2`, `.05`, `1`); at most 9 decimal places.
    pub fn parse(text: &str) -> Option<Fraction> {
        let text = text.trim();
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) || frac.len() > 9
        {
            return None;
        }
        let den = 10u64.pow(frac.len() as u32);
        let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        let frac_num: u64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
        let num = whole.checked_mul(den)?.checked_add(frac_num)?;
        Some(Fraction { num, den })
    }

    pub fn value(&self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl Serialize for Fraction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_f64(self.value())
    }
}

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
    let mut reader = Reader {
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
        if let Err(message) = apply_override(&mut root, arg) {
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

/// `--set a.b.c=value`: the value is read as YAML, so `[parquet, csv]` and `4` keep their types.
fn apply_override(root: &mut Node, arg: &str) -> std::result::Result<(), String> {
    let Some((key, raw)) = arg.split_once('=') else {
        return Err("expected KEY=VALUE, e.g. `--set rfm.bins=4`".into());
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err(format!("`{key}` is not a dotted key path like `cohorts.grain`"));
    }
    let mut value = match yaml::parse(raw) {
        Ok(Some(node)) => node,
        Ok(None) => Node {
            value: Value::Scalar {
                text: String::new(),
                quoted: false,
            },
            origin: Origin::Set(arg.into()),
        },
        Err(e) => return Err(format!("the value of `{key}` is not valid YAML: {}", e.message)),
    };
    set_origin(&mut value, &Origin::Set(arg.into()));
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let Value::Map(entries) = &mut node.value else {
            return Err(format!(
                "`{}` is not a mapping, so `{key}` cannot be set",
                parts[..i].join(".")
            ));
        };
        let pos = match entries.iter().position(|(k, _)| k == part) {
            Some(pos) => pos,
            None => {
                entries.push((
                    part.to_string(),
                    Node {
                        value: Value::Map(Vec::new()),
                        origin: Origin::Set(arg.into()),
                    },
                ));
                entries.len() - 1
            }
        };
        if i + 1 == parts.len() {
            entries[pos].1 = value;
            return Ok(());
        }
        if entries[pos].1.is_null() {
            entries[pos].1.value = Value::Map(Vec::new());
        }
        node = &mut entries[pos].1;
    }
    Ok(())
}

fn set_origin(node: &mut Node, origin: &Origin) {
    node.origin = origin.clone();
    match &mut node.value {
        Value::Scalar { .. } => {}
        Value::Seq(items) => items.iter_mut().for_each(|n| set_origin(n, origin)),
        Value::Map(entries) => entries.iter_mut().for_each(|(_, n)| set_origin(n, origin)),
    }
}

/// Walks the tree, collecting issues instead of stopping at the first.
struct Reader {
    file: String,
    /// Each issue with a sort key: (0, line, col) in the file, (1, n, 0) for the n-th `--set`.
    issues: Vec<((u8, usize, usize), ConfigIssue)>,
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
    fn issue(&mut self, origin: &Origin, message: String) {
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

    fn job(&mut self, root: &Node) -> JobConfig {
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
        let engine = self.field(&mut top, "engine", Engine::InMemory);

        let mut section = self.section(&mut top, "customers");
        let min_tenure_days = self.field(&mut section, "min_tenure_days", 30u32);
        if min_tenure_days == 0 {
            self.invalid(
                &section,
                "min_tenure_days",
                "must be at least 1 (it divides revenue), got 0",
            );
        }
        self.finish(section);
        let customers = CustomersConfig { min_tenure_days };

        let mut section = self.section(&mut top, "cohorts");
        let cohorts = CohortsConfig {
            grain: self.field(&mut section, "grain", Grain::Month),
        };
        self.finish(section);

        let pareto = self.pareto(&mut top);

        let mut section = self.section(&mut top, "kpis");
        let churn_window_days = self.field(&mut section, "churn_window_days", 365u32);
        if churn_window_days == 0 {
            self.invalid(&section, "churn_window_days", "must be at least 1, got 0");
        }
        self.finish(section);
        let kpis = KpisConfig { churn_window_days };

        let rfm = self.rfm(&mut top);
        let clv = self.clv(&mut top, input.columns.channel.is_some());
        let output = self.output(&mut top);
        self.finish(top);
        JobConfig {
            input,
            cleaning,
            as_of,
            engine,
            customers,
            cohorts,
            pareto,
            kpis,
            rfm,
            clv,
            output,
        }
    }

    fn rfm(&mut self, top: &mut Section) -> RfmConfig {
        let mut section = self.section(top, "rfm");
        let bins = self.field(&mut section, "bins", 5u32);
        if !(2..=9).contains(&bins) {
            self.invalid(&section, "bins", format!("must be between 2 and 9, got {bins}"));
        }
        let monetary = self.field(&mut section, "monetary", Monetary::Total);
        let segments = match section.get("segments").filter(|n| !n.is_null()) {
            None => {
                if bins != 5 {
                    self.invalid(
                        &section,
                        "bins",
                        format!("is {bins}, but the default segment map is for 5 bins; give `rfm.segments` for {bins} bins"),
                    );
                }
                default_segments()
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
        let margin = self.field(&mut section, "margin", 1.0f64);
        if !(margin > 0.0 && margin <= 1.0) {
            self.invalid(
                &section,
                "margin",
                format!("must be a rate in (0, 1], got {margin}"),
            );
        }
        let max_lifetime_years = self.field(&mut section, "max_lifetime_years", 10.0f64);
        if !(max_lifetime_years.is_finite() && max_lifetime_years > 0.0) {
            self.invalid(
                &section,
                "max_lifetime_years",
                format!("must be a positive number of years, got {max_lifetime_years}"),
            );
        }
        let mut default_dims = vec![Dimension::Segment, Dimension::Cohort, Dimension::AbcClass];
        if has_channel {
            default_dims.push(Dimension::Channel);
        }
        let segment_by = self.field(&mut section, "segment_by", default_dims);
        if segment_by.is_empty() {
            self.invalid(
                &section,
                "segment_by",
                "must list at least one of segment, cohort, abc_class, channel",
            );
        }
        let model = self.field(&mut section, "model", PurchaseModel::Bgnbd);
        let time_unit = self.field(&mut section, "time_unit", TimeUnit::Week);
        let horizon_months = self.field(&mut section, "horizon_months", 12u32);
        if !(1..=1200).contains(&horizon_months) {
            self.invalid(
                &section,
                "horizon_months",
                format!("must be between 1 and 1200, got {horizon_months}"),
            );
        }
        let discount_rate_annual = self.field(&mut section, "discount_rate_annual", 0.10f64);
        if !(0.0..=10.0).contains(&discount_rate_annual) {
            self.invalid(
                &section,
                "discount_rate_annual",
                format!("must be a yearly rate between 0 and 10 (0.10 = 10%), got {discount_rate_annual}"),
            );
        }
        let penalizer = self.field(&mut section, "penalizer", 0.0f64);
        if penalizer < 0.0 {
            self.invalid(
                &section,
                "penalizer",
                format!("must be 0 or more, got {penalizer}"),
            );
        }
        let on_fit_failure = self.field(&mut section, "on_fit_failure", OnFitFailure::Error);
        let holdout_days = self.optional::<u32>(&mut section, "holdout_days");
        if holdout_days == Some(0) {
            self.invalid(
                &section,
                "holdout_days",
                "must be at least 1 day (or null for no holdout)",
            );
        }
        if segment_by.contains(&Dimension::Channel) && !has_channel {
            self.invalid(
                &section,
                "segment_by",
                "lists `channel`, but `input.columns.channel` is not mapped",
            );
        }
        self.finish(section);
        ClvConfig {
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
        }
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
        if orders.iter().any(|p| p.trim().is_empty()) {
            self.invalid(&section, "orders", "must not contain an empty path");
        }
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

        let mut cols = self.section(&mut section, "columns");
        let mut name = |reader: &mut Self, key: &'static str| -> String {
            let value: String = reader.field(&mut cols, key, key.to_string());
            value
        };
        let customer_id = name(self, "customer_id");
        let order_id = name(self, "order_id");
        let order_date = name(self, "order_date");
        let amount = name(self, "amount");
        let quantity = self.optional::<String>(&mut cols, "quantity");
        let category = self.optional::<String>(&mut cols, "category");
        let channel = self.optional::<String>(&mut cols, "channel");
        let columns = ColumnMap {
            customer_id,
            order_id,
            order_date,
            amount,
            quantity,
            category,
            channel,
        };
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (logical, physical) in columns.mapped() {
            if let Some((other, _)) = seen.iter().find(|(_, p)| *p == physical) {
                self.invalid(
                    &cols,
                    logical,
                    format!("maps to column `{physical}`, which `input.columns.{other}` already uses; each logical column needs its own input column"),
                );
            }
            seen.push((logical, physical));
        }
        self.finish(cols);

        let date_format = self.optional::<String>(&mut section, "date_format");
        if let Some(fmt) = &date_format {
            use chrono::format::{Item, StrftimeItems};
            if StrftimeItems::new(fmt).any(|item| matches!(item, Item::Error)) {
                self.invalid(
                    &section,
                    "date_format",
                    format!("`{fmt}` is not a valid chrono/strftime format, e.g. `%Y-%m-%d`"),
                );
            }
        }
        let timezone = self.field(&mut section, "timezone", "UTC".to_string());
        if let Some(problem) = timezone_problem(&timezone) {
            self.invalid(&section, "timezone", problem);
        }
        let amount_is_unit_price = self.field(&mut section, "amount_is_unit_price", false);
        if amount_is_unit_price && columns.quantity.is_none() {
            self.invalid(
                &section,
                "amount_is_unit_price",
                "is true, but `input.columns.quantity` is not mapped",
            );
        }
        self.finish(section);
        InputConfig {
            orders,
            columns,
            date_format,
            timezone,
            amount_is_unit_price,
        }
    }

    fn cleaning(&mut self, top: &mut Section) -> CleaningConfig {
        let mut section = self.section(top, "cleaning");
        let dedupe = self.field(&mut section, "dedupe", true);
        let returns = self.field(&mut section, "returns", Returns::Net);
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
        let default_shares = ["0.01", "0.05", "0.1", "0.2", "0.5"]
            .map(|s| Fraction::parse(s).unwrap_or(Fraction { num: 0, den: 1 }));
        let top_shares = self.field(&mut section, "top_shares", default_shares.to_vec());
        if top_shares.is_empty() {
            self.invalid(&section, "top_shares", "must list at least one share, e.g. [0.2]");
        }
        for share in &top_shares {
            if share.num == 0 || share.num > share.den {
                self.invalid(
                    &section,
                    "top_shares",
                    format!("must hold shares in (0, 1], got {}", share.value()),
                );
            }
        }
        let lorenz_points = self.field(&mut section, "lorenz_points", 100u32);
        if !(1..=1_000_000).contains(&lorenz_points) {
            self.invalid(
                &section,
                "lorenz_points",
                format!("must be between 1 and 1000000, got {lorenz_points}"),
            );
        }
        let mut abc_section = self.section(&mut section, "abc");
        let a = self.field(&mut abc_section, "a", Fraction { num: 8, den: 10 });
        let b = self.field(&mut abc_section, "b", Fraction { num: 95, den: 100 });
        for (key, f) in [("a", a), ("b", b)] {
            if f.num == 0 || f.num > f.den {
                self.invalid(
                    &abc_section,
                    key,
                    format!("must be a share in (0, 1], got {}", f.value()),
                );
            }
        }
        if (a.num as u128) * (b.den as u128) >= (b.num as u128) * (a.den as u128) {
            self.invalid(
                &abc_section,
                "b",
                format!(
                    "must be greater than `pareto.abc.a` ({}), got {}",
                    a.value(),
                    b.value()
                ),
            );
        }
        self.finish(abc_section);
        self.finish(section);
        ParetoConfig {
            top_shares,
            lorenz_points,
            abc: AbcConfig { a, b },
        }
    }

    fn output(&mut self, top: &mut Section) -> OutputConfig {
        let mut section = self.section(top, "output");
        let dir = match section.get("dir") {
            None => "out".to_string(),
            // Given but null (`dir:`, `dir: ~`, `--set output.dir=`): not the default.
            Some(node) if node.is_null() => {
                self.invalid(&section, "dir", "is empty: name a directory, e.g. `out`");
                "out".to_string()
            }
            Some(node) => String::from_node(node).unwrap_or_else(|b| {
                self.issue(&b.origin, format!("`output.dir` {}", b.message));
                "out".to_string()
            }),
        };
        if let Some(problem) = crate::io::output::unusable_name(&dir) {
            self.invalid(&section, "dir", format!("`{dir}` {problem}"));
        }
        let mut rest = dir.as_str();
        while let Some(open) = rest.find('{') {
            let close = rest[open..].find('}').map(|c| open + c);
            let name = close.map(|c| &rest[open + 1..c]);
            if !matches!(name, Some("as_of" | "run_date")) {
                self.invalid(
                    &section,
                    "dir",
                    format!("`{dir}` may only use the placeholders {{as_of}} and {{run_date}}"),
                );
                break;
            }
            rest = &rest[close.map_or(rest.len(), |c| c + 1)..];
        }
        let formats = self.field(&mut section, "formats", vec![Format::Parquet, Format::Csv]);
        if formats.is_empty() {
            self.invalid(&section, "formats", "must list at least one of parquet, csv");
        }
        let report = self.field(&mut section, "report", true);
        let replace = self.field(&mut section, "replace", false);
        self.finish(section);
        OutputConfig {
            dir,
            formats,
            report,
            replace,
        }
    }
}

impl ColumnMap {
    /// (logical, physical) for every mapped column.
    pub fn mapped(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![
            ("customer_id", self.customer_id.as_str()),
            ("order_id", self.order_id.as_str()),
            ("order_date", self.order_date.as_str()),
            ("amount", self.amount.as_str()),
        ];
        for (logical, physical) in [
            ("quantity", &self.quantity),
            ("category", &self.category),
            ("channel", &self.channel),
        ] {
            if let Some(physical) = physical {
                out.push((logical, physical.as_str()));
            }
        }
        out
    }
}

/// Why `zone` is not a time zone Polars converts to (an IANA name such as
/// `Europe/Berlin`, `UTC`, or a whole-hour offset such as `+02:00`), with the
/// closest names.
fn timezone_problem(zone: &str) -> Option<String> {
    if !zone.trim().is_empty()
        && polars::prelude::TimeZone::opt_try_new(Some(zone)).is_ok_and(|tz| tz.is_some())
    {
        return None;
    }
    let lower = zone.to_lowercase();
    let mut scored: Vec<(f64, &str)> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| {
            let name = tz.name();
            let score = if name.to_lowercase() == lower {
                2.0
            } else {
                strsim::jaro_winkler(&name.to_lowercase(), &lower)
            };
            (score, name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let suggestions: Vec<String> = scored.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
    Some(format!(
        "`{zone}` is not a time zone; use an IANA name such as `Europe/Berlin` or `UTC`, or an offset such as `+02:00`; closest: {}",
        suggestions.join(", ")
    ))
}

fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Conversion of one YAML node to a typed value; `Err` is the message after the key.
trait FromNode: Sized {
    fn from_node(node: &Node) -> std::result::Result<Self, Bad>;
}

/// A value that does not convert: where (the offending node, e.g. a list item) and why.
struct Bad {
    origin: Origin,
    message: String,
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
choice!(Engine { "in_memory" => Engine::InMemory, "streaming" => Engine::Streaming });

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
                "c.yaml:7:8: unknown key `bogus`; valid keys here are: input, cleaning, as_of, engine, customers, cohorts, pareto, kpis, rfm, clv, output",
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
