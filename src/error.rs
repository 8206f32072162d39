//! Typed errors that users and tests act on, and the exit-code policy.
//!
//! Exit codes (documented in the README and `--help`): 0 success, 1 internal
//! error, 2 usage or config error, 3 input data error, 4 model fit failure.
//! Every message names the file, key or column at fault and, where we know it,
//! the fix.

use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more problems in the config file or `--set` overrides, all reported at once.
    #[error("{}", format_config_issues(.0))]
    Config(Vec<ConfigIssue>),

    /// Boxed: the variants carry file and column lists, and `Result` should stay small.
    #[error(transparent)]
    Input(Box<InputError>),

    #[error("{0}")]
    Output(String),

    #[error("model fit failed: {0}")]
    Model(String),

    #[error("writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("internal error in the query engine: {0}")]
    Polars(#[from] polars::prelude::PolarsError),

    /// A broken invariant of our own: a bug, reported as one.
    #[error("internal error: {0}; this is a bug, please report it")]
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Output(_) => 2,
            Error::Input(_) => 3,
            Error::Model(_) => 4,
            Error::Io { .. } | Error::Polars(_) | Error::Internal(_) => 1,
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<InputError> for Error {
    fn from(error: InputError) -> Self {
        Error::Input(Box::new(error))
    }
}

fn format_config_issues(issues: &[ConfigIssue]) -> String {
    let mut text = format!(
        "invalid configuration ({} problem{}):",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for issue in issues {
        text.push_str("\n  ");
        text.push_str(&issue.to_string());
    }
    text
}

/// Problems with the order history itself: found from the schema before heavy work
/// where possible, otherwise from the cleaning counts.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "input file {path} does not exist (input.orders); check the path, which is relative to the working directory"
    )]
    MissingFile { path: String },

    #[error("no Parquet or CSV files match {pattern} (input.orders){hint}")]
    NoFiles { pattern: String, hint: String },

    #[error(
        "cannot read {path} as Parquet: {reason}; it is not a Parquet file, or it is truncated (check how it was written or copied)"
    )]
    NotParquet { path: String, reason: String },

    #[error(
        "cannot read {path} as CSV: {reason}; it needs a header row and one delimiter (`,`), or set input.format"
    )]
    NotCsv { path: String, reason: String },

    #[error("cannot read {url}: {cause}")]
    Unreachable { url: String, cause: String },

    #[error("cannot list {path} (input.orders): {reason}; fix or remove it")]
    Unlistable { path: String, reason: String },

    #[error(
        "cannot read the order lines of {source_label}: {reason}; the file is damaged or not what its metadata says (check how it was written or copied)"
    )]
    Unreadable { source_label: String, reason: String },

    #[error(
        "column `{physical}` (input.columns.{logical}): {count} value(s) out of range, e.g. `{example}` at {row}; {limit}"
    )]
    OutOfRange {
        logical: String,
        physical: String,
        count: u64,
        example: String,
        /// Where the example is: "row N of FILE", or "input row N".
        row: String,
        limit: String,
    },

    #[error("{label} has no rows: nothing to analyse (input.orders); check that the export ran")]
    Empty { label: String },

    #[error(
        "column `{physical}` (mapped to `{logical}` by input.columns.{logical}) is not in {file}; \
         the columns there are: {available}{suggestion}"
    )]
    MissingColumn {
        logical: String,
        physical: String,
        file: String,
        available: String,
        suggestion: String,
    },

    #[error("column `{physical}` (input.columns.{logical}) in {file} has type {found}; expected {expected}")]
    WrongType {
        logical: String,
        physical: String,
        file: String,
        found: String,
        expected: String,
    },

    #[error(
        "column `{physical}` (input.columns.{logical}): {count} value(s) do not parse as {what}, e.g. `{example}`; {fix}"
    )]
    Unparseable {
        logical: String,
        physical: String,
        count: u64,
        example: String,
        what: String,
        fix: String,
    },

    #[error(
        "{path} is not a summary table: {reason}; expected columns frequency (or x), recency (or t_x), T and optionally monetary_value (or zbar)"
    )]
    BadSummary { path: String, reason: String },

    /// A side table (`input.identities`, `input.surveys`) that cannot be used.
    #[error("{path} ({key}) {message}")]
    SideTable {
        key: String,
        path: String,
        message: String,
    },

    #[error("the input files do not share one schema: {0}")]
    SchemaMismatch(String),

    #[error(
        "no purchases left after cleaning ({0}); see the cleaning counts above, or check as_of, input.columns and cleaning.exclude"
    )]
    NothingLeft(String),
}
