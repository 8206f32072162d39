//! The job's configuration as types: every section, its keys' meanings, and their
//! defaults together.

use chrono::NaiveDate;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobConfig {
    pub input: InputConfig,
    pub cleaning: CleaningConfig,
    /// Analysis date, exclusive; `None` = latest order date after cleaning step 1, + 1 day.
    pub as_of: Option<NaiveDate>,
    pub engine: Engine,
    /// The Spark Connect session, with `engine: spark`.
    pub spark: SparkConfig,
    pub customers: CustomersConfig,
    pub cohorts: CohortsConfig,
    pub pareto: ParetoConfig,
    pub kpis: KpisConfig,
    pub rfm: RfmConfig,
    pub clv: ClvConfig,
    /// A previous output directory to compare segments with (`segment_migration`):
    /// a path, or `{previous}` (the latest earlier `{as_of}` sibling, or what the
    /// output directory holds now); `None` writes no migration table.
    pub compare_to: Option<String>,
    /// With `compare_to: {previous}` and no earlier snapshot: the job first runs as
    /// of this many days before as_of and publishes that snapshot.
    pub compare_days: u32,
    /// Action lists: each a named filter over `customers`, written to `actions/NAME`.
    pub actions: Vec<ActionRule>,
    pub output: OutputConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputConfig {
    /// Parquet or CSV files, directories (hive partitions allowed) or globs.
    pub orders: Vec<String>,
    /// How the order files are read: by extension, or all as one format.
    pub format: InputFormat,
    /// Object storage options for URL inputs (endpoint, region, path-style …).
    pub storage_options: StorageOptions,
    pub columns: ColumnMap,
    /// chrono format for string `order_date` columns; `None` lets Polars infer it.
    pub date_format: Option<String>,
    /// Zone that zoned timestamps are converted to before taking their date.
    pub timezone: String,
    /// `amount` is a unit price: line value = amount x quantity.
    pub amount_is_unit_price: bool,
    /// Alias table (Parquet or CSV: `alias_id`, `customer_id`) merging ids of one person.
    pub identities: Option<String>,
    /// Survey responses (Parquet or CSV: `customer_id`, `response_date`, `score` 0–10).
    pub surveys: Option<String>,
}

/// Object storage options by the key names Polars and object_store take
/// (`aws_endpoint_url`, `aws_region`, `aws_allow_http`,
/// `aws_virtual_hosted_style_request`, `google_service_account`, `azure_storage_account_name` …).
/// Written to the manifest with every value but the [`PUBLIC_STORAGE_KEYS`] redacted:
/// credentials are never printed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageOptions(pub std::collections::BTreeMap<String, String>);

/// Storage option keys whose values are not secret (they are shown in the manifest).
pub const PUBLIC_STORAGE_KEYS: [&str; 15] = [
    "aws_endpoint_url",
    "aws_endpoint",
    "endpoint_url",
    "endpoint",
    "aws_region",
    "region",
    "aws_allow_http",
    "allow_http",
    "aws_virtual_hosted_style_request",
    "azure_storage_account_name",
    "azure_endpoint",
    "azure_storage_endpoint",
    "azure_allow_http",
    "azure_storage_use_emulator",
    "google_bucket",
];

impl Serialize for StorageOptions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            let public = PUBLIC_STORAGE_KEYS.contains(&key.to_ascii_lowercase().as_str());
            map.serialize_entry(key, if public { value.as_str() } else { "<redacted>" })?;
        }
        map.end()
    }
}

/// `spark.*`: where and how `engine: spark` connects.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SparkConfig {
    /// `sc://host:port` (Spark Connect's URL; `/;key=value` parameters allowed).
    pub remote: Option<String>,
    /// A bearer token, sent with every request (redacted in the manifest).
    #[serde(serialize_with = "redacted")]
    pub token: Option<String>,
    /// TLS to the server.
    pub use_ssl: bool,
    /// Session configuration set before the job's queries (`spark.sql.shuffle.partitions` …).
    pub conf: StorageOptions,
}

fn redacted<S: serde::Serializer>(
    value: &Option<String>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_str("<redacted>"),
        None => serializer.serialize_none(),
    }
}

/// The order files' format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// `.csv` files are CSV, every other file Parquet; directories list both.
    Auto,
    Parquet,
    /// CSV with a header row, every column read as text and typed by the same
    /// rules as a text column of a Parquet file.
    Csv,
}

/// Logical column -> physical column name in the input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnMap {
    pub customer_id: String,
    pub order_id: String,
    pub order_date: String,
    pub amount: String,
    pub quantity: Option<String>,
    pub category: Option<String>,
    pub channel: Option<String>,
    /// The line's cost in the amount's currency (a unit cost with
    /// `amount_is_unit_price`): the line's gross margin is its value − cost.
    pub cost: Option<String>,
    /// The line's gross margin in money (not a rate); the other way to give margins.
    pub margin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExcludeRule {
    pub column: String,
    #[serde(flatten)]
    pub matcher: Matcher,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// SPEC §1 over the lines on Apache Spark, through Spark Connect (`spark.*`;
    /// the binary built with the `spark` feature); the rest in memory here.
    Spark,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortsConfig {
    pub grain: Grain,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParetoConfig {
    pub top_shares: Vec<Fraction>,
    pub lorenz_points: u32,
    pub abc: AbcConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbcConfig {
    pub a: Fraction,
    pub b: Fraction,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KpisConfig {
    pub churn_window_days: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RfmConfig {
    /// Scores run 1..=bins (2–9).
    pub bins: u32,
    pub monetary: Monetary,
    /// Look-back window: frequency and monetary count only the orders of the last
    /// N days before as_of; `None` counts every order.
    pub window_days: Option<u32>,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// An action list: customers for whom every `all` condition holds and, when `any`
/// is given, at least one `any` condition; sorted by `expected_value` (the first
/// non-null of the `value` columns), highest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRule {
    pub name: String,
    pub all: Vec<Condition>,
    pub any: Vec<Condition>,
    pub value: Vec<String>,
}

/// One condition on a `customers` column; a null value never matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    pub column: String,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// The value's text is one of these.
    In(Vec<String>),
    /// min <= value <= max, either bound optional.
    Between { min: Option<f64>, max: Option<f64> },
}

impl Condition {
    fn new(column: &str, test: Test) -> Self {
        Self {
            column: column.into(),
            test,
        }
    }
}

/// The classic plays, with recency past the KPI churn window for win-back.
pub fn default_actions(churn_window_days: u32) -> Vec<ActionRule> {
    let one_of = |column: &str, values: &[&str]| {
        Condition::new(column, Test::In(values.iter().map(|v| v.to_string()).collect()))
    };
    let between =
        |column: &str, min: Option<f64>, max: Option<f64>| Condition::new(column, Test::Between { min, max });
    let value = |columns: &[&str]| columns.iter().map(|c| c.to_string()).collect();
    vec![
        ActionRule {
            name: "win_back".into(),
            all: vec![one_of("abc_class", &["A"])],
            any: vec![
                between("p_alive", None, Some(0.3)),
                between("recency_days", Some(churn_window_days as f64), None),
            ],
            value: value(&["historical_clv"]),
        },
        ActionRule {
            name: "nudge_neutral".into(),
            all: Vec::new(),
            any: vec![
                one_of("segment", &["Need Attention", "About To Sleep"]),
                between("nps_score", Some(7.0), Some(8.0)),
            ],
            value: value(&["predicted_clv", "formula_clv"]),
        },
        ActionRule {
            name: "thank_champions".into(),
            all: vec![one_of("segment", &["Champions"])],
            any: Vec::new(),
            value: value(&["predicted_clv", "formula_clv"]),
        },
        ActionRule {
            name: "save_at_risk".into(),
            all: vec![one_of("segment", &["At Risk", "Can't Lose Them"])],
            any: Vec::new(),
            value: value(&["historical_clv"]),
        },
    ]
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputConfig {
    /// May contain `{as_of}` and `{run_date}`.
    pub dir: String,
    pub formats: Vec<Format>,
    /// Write `report.html` (KPIs, charts, tables) beside the tables.
    pub report: bool,
    /// Replace an existing `dir` even when it is not a previous output of this job
    /// (`--force`); without it such a directory is refused.
    pub replace: bool,
    /// Object storage options for a URL `dir`; empty: `input.storage_options`.
    pub storage_options: StorageOptions,
    /// With a URL `dir`: how many complete runs to keep under `dir/_runs/`.
    pub keep_runs: u32,
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

impl ColumnMap {
    /// The mapped per-line margin column: `cost` or `margin` (at most one).
    pub fn line_margin(&self) -> Option<(&'static str, &str)> {
        match (&self.cost, &self.margin) {
            (Some(cost), _) => Some(("cost", cost.as_str())),
            (None, Some(margin)) => Some(("margin", margin.as_str())),
            (None, None) => None,
        }
    }

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
            ("cost", &self.cost),
            ("margin", &self.margin),
        ] {
            if let Some(physical) = physical {
                out.push((logical, physical.as_str()));
            }
        }
        out
    }
}

// The built-in defaults, one `Default` per section: what a key means when a config
// leaves it out (config/example.yaml spells each one out, and a test holds the two
// together). `input.orders` alone has none: a config must name its input.

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            input: InputConfig::default(),
            cleaning: CleaningConfig::default(),
            as_of: None,
            engine: Engine::InMemory,
            spark: SparkConfig::default(),
            customers: CustomersConfig { min_tenure_days: 30 },
            cohorts: CohortsConfig { grain: Grain::Month },
            pareto: ParetoConfig::default(),
            kpis: KpisConfig {
                churn_window_days: 365,
            },
            rfm: RfmConfig::default(),
            clv: ClvConfig::default(),
            compare_to: None,
            compare_days: 90,
            actions: default_actions(365),
            output: OutputConfig::default(),
        }
    }
}

impl Default for InputConfig {
    /// No orders: the one key without a default.
    fn default() -> Self {
        Self {
            orders: Vec::new(),
            format: InputFormat::Auto,
            storage_options: StorageOptions::default(),
            columns: ColumnMap::default(),
            date_format: None,
            timezone: "UTC".into(),
            amount_is_unit_price: false,
            identities: None,
            surveys: None,
        }
    }
}

impl Default for ColumnMap {
    /// Each required logical column read from the input column of its own name;
    /// the optional ones unmapped.
    fn default() -> Self {
        Self {
            customer_id: "customer_id".into(),
            order_id: "order_id".into(),
            order_date: "order_date".into(),
            amount: "amount".into(),
            quantity: None,
            category: None,
            channel: None,
            cost: None,
            margin: None,
        }
    }
}

impl Default for CleaningConfig {
    fn default() -> Self {
        Self {
            dedupe: true,
            returns: Returns::Net,
            exclude: Vec::new(),
        }
    }
}

impl Default for ParetoConfig {
    fn default() -> Self {
        let share = |num, den| Fraction { num, den };
        Self {
            top_shares: vec![
                share(1, 100),
                share(5, 100),
                share(1, 10),
                share(2, 10),
                share(5, 10),
            ],
            lorenz_points: 100,
            abc: AbcConfig {
                a: share(8, 10),
                b: share(95, 100),
            },
        }
    }
}

impl Default for RfmConfig {
    fn default() -> Self {
        Self {
            bins: 5,
            monetary: Monetary::Total,
            window_days: None,
            segments: default_segments(),
        }
    }
}

impl Default for ClvConfig {
    fn default() -> Self {
        Self {
            margin: 1.0,
            max_lifetime_years: 10.0,
            segment_by: Self::default_segment_by(false),
            model: PurchaseModel::Bgnbd,
            time_unit: TimeUnit::Week,
            horizon_months: 12,
            discount_rate_annual: 0.10,
            penalizer: 0.0,
            on_fit_failure: OnFitFailure::Error,
            holdout_days: None,
        }
    }
}

impl ClvConfig {
    /// `holdout_days` when a model is fitted: the holdout validates the model, so
    /// without one there is nothing to hold out.
    pub fn model_holdout_days(&self) -> Option<u32> {
        match self.model {
            PurchaseModel::None => None,
            _ => self.holdout_days,
        }
    }

    /// Every dimension that applies: channel only when `input.columns.channel` is mapped.
    pub fn default_segment_by(has_channel: bool) -> Vec<Dimension> {
        let mut dimensions = vec![Dimension::Segment, Dimension::Cohort, Dimension::AbcClass];
        if has_channel {
            dimensions.push(Dimension::Channel);
        }
        dimensions
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            dir: "out".into(),
            formats: vec![Format::Parquet, Format::Csv],
            report: true,
            replace: false,
            storage_options: StorageOptions::default(),
            keep_runs: 3,
        }
    }
}
