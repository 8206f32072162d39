//! Command-line interface: subcommands and run-time flags only; the job itself
//! is described by the YAML config.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  internal error (a bug, or an I/O failure while writing)
  2  usage or config error (bad flag, key, value or output directory)
  3  input data error (missing file or column, wrong type, nothing left after cleaning)
  4  model fit failure
  129, 130, 143  stopped by SIGHUP, SIGINT, SIGTERM before publishing (nothing published)";

#[derive(Debug, Parser)]
#[command(name = "loyalty", version, about = "Customer-loyalty analytics from order history: cohorts, RFM, Pareto, CLV and KPIs.", after_help = EXIT_CODES)]
pub struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per line for schedulers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, global = true, default_value = "info", env = "LOYALTY_LOG")]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the job: read the orders, compute every table, write the outputs atomically.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Check the config and the input files' schemas (metadata only) and print what would run.
    #[command(after_help = EXIT_CODES)]
    Validate(ConfigArgs),
    /// Write a synthetic order history (BG/NBD purchases, Gamma-Gamma spend) to a Parquet file.
    #[command(after_help = EXIT_CODES)]
    Generate(GenerateArgs),
    /// Fit the predictive models to a ready summary table and print parameters, standard errors and log-likelihood.
    #[command(after_help = EXIT_CODES)]
    Fit(FitArgs),
    /// Rebuild report.html in an output directory from its tables and manifest.json.
    #[command(after_help = EXIT_CODES)]
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// An output directory written by `loyalty run`.
    #[arg(value_name = "OUT_DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// CSV with columns frequency (or x), recency (or t_x), T, and optionally monetary_value (or zbar).
    #[arg(long, value_name = "FILE")]
    pub summary: PathBuf,

    /// Purchase-count model.
    #[arg(long, value_enum, default_value_t = FitModel::Bgnbd)]
    pub model: FitModel,

    /// Unit of recency and T in the file (labels the output; the fit is unit-free).
    #[arg(long, value_enum, default_value_t = TimeUnit::Week)]
    pub time_unit: TimeUnit,

    /// L2 penalty on the parameters, as in lifetimes.
    #[arg(long, default_value_t = 0.0)]
    pub penalizer: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FitModel {
    Bgnbd,
    #[value(name = "pareto_nbd")]
    ParetoNbd,
    Mbgnbd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimeUnit {
    Day,
    Week,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The job's YAML config.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,

    /// Override a config key, e.g. `--set cohorts.grain=week` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Analysis date, exclusive: only orders before it count (back-dated snapshots).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub as_of: Option<NaiveDate>,

    /// Output directory (overrides `output.dir`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace the output directory even if it is not a previous output of this job
    /// (same as `output.replace: true`). Inputs are never replaced.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of customers to simulate.
    #[arg(long)]
    pub customers: u64,

    /// Random seed: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// First day of the history.
    #[arg(long, default_value = "2023-01-01", value_name = "YYYY-MM-DD")]
    pub start: NaiveDate,

    /// Day after the last day of the history.
    #[arg(long, default_value = "2025-01-01", value_name = "YYYY-MM-DD")]
    pub end: NaiveDate,

    /// Output Parquet file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// No returns, refunds, null ids or duplicates: a pure BG/NBD + Gamma-Gamma history.
    #[arg(long)]
    pub clean: bool,

    /// BG/NBD r (purchase-rate shape).
    #[arg(long, default_value_t = 0.243, hide_short_help = true)]
    pub r: f64,
    /// BG/NBD alpha (purchase-rate scale, weeks).
    #[arg(long, default_value_t = 4.414, hide_short_help = true)]
    pub alpha: f64,
    /// BG/NBD a (drop-out Beta).
    #[arg(long, default_value_t = 0.793, hide_short_help = true)]
    pub a: f64,
    /// BG/NBD b (drop-out Beta).
    #[arg(long, default_value_t = 2.426, hide_short_help = true)]
    pub b: f64,
    /// Gamma-Gamma p.
    #[arg(long, default_value_t = 6.25, hide_short_help = true)]
    pub gg_p: f64,
    /// Gamma-Gamma q.
    #[arg(long, default_value_t = 3.74, hide_short_help = true)]
    pub gg_q: f64,
    /// Gamma-Gamma v (gamma).
    #[arg(long, default_value_t = 15.44, hide_short_help = true)]
    pub gg_v: f64,
}
