//! SPEC §1: the order lines, from physical input columns to typed lines.
//!
//! [`normalise`] maps physical columns to typed logical ones (ids as text, trimmed
//! by the fold, dates as calendar days, line values in integer micro-units) and rejects
//! wrong types from the schema alone. [`line_plan`] adds step 4's verdict and what
//! the exact-duplicate check needs; [`crate::ingest`] folds the lines into orders.

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

use crate::config::{CleaningConfig, ExcludeRule, InputConfig, Matcher, Returns};
use crate::error::{InputError, Result};
use crate::schema::internal::{CATEGORY, CHANNEL, CUSTOMER_ID, ORDER_DATE, ORDER_ID, VALUE};

const MICROS_PER_UNIT: i64 = 1_000_000;

/// The input with typed internal columns added beside the raw ones.
pub struct Normalised {
    pub lf: LazyFrame,
    /// The physical columns of the input: exact duplicates are judged on these.
    pub raw_columns: Vec<PlSmallStr>,
    /// The physical columns the typed ones are computed from.
    typed_from: Vec<String>,
    pub has_category: bool,
    pub has_channel: bool,
    /// Columns that are parsed from text, whose failures must be reported, not dropped.
    parse_checks: Vec<ParseCheck>,
}

struct ParseCheck {
    logical: &'static str,
    physical: String,
    what: String,
    fix: String,
    /// Rows where the raw value is present but did not parse.
    failed: Expr,
    raw: Expr,
}

/// Days since 1970-01-01, the physical value of a Polars `Date`.
pub fn epoch_days(date: NaiveDate) -> i32 {
    (date - NaiveDate::default()).num_days() as i32
}

/// A date literal (Polars' `lit(NaiveDate)` would give a datetime).
pub fn date_lit(date: NaiveDate) -> Expr {
    lit(epoch_days(date)).cast(DataType::Date)
}

/// Typed logical columns from the physical ones; wrong types fail here, from the schema.
pub fn normalise(raw: LazyFrame, schema: &Schema, input: &InputConfig, file: &str) -> Result<Normalised> {
    let columns = &input.columns;
    let available = || {
        schema
            .iter_names()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut dtypes: BTreeMap<&str, DataType> = BTreeMap::new();
    for (logical, physical) in columns.mapped() {
        match schema.get(physical) {
            Some(dtype) => {
                dtypes.insert(logical, dtype.clone());
            }
            None => {
                let names: Vec<&str> = schema.iter_names().map(|n| n.as_str()).collect();
                let suggestion = names
                    .iter()
                    .map(|n| {
                        (
                            strsim::jaro_winkler(&n.to_lowercase(), &physical.to_lowercase()),
                            *n,
                        )
                    })
                    .filter(|(score, _)| *score > 0.75)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, n)| format!("; did you mean `{n}`? Set input.columns.{logical}: {n}"))
                    .unwrap_or_else(|| format!("; set input.columns.{logical} to one of them"));
                return Err(InputError::MissingColumn {
                    logical: logical.into(),
                    physical: physical.into(),
                    file: file.into(),
                    available: available(),
                    suggestion,
                }
                .into());
            }
        }
    }
    let wrong_type =
        |logical: &str, physical: &str, dtype: &DataType, expected: &str| InputError::WrongType {
            logical: logical.into(),
            physical: physical.into(),
            file: file.into(),
            found: dtype.to_string(),
            expected: expected.into(),
        };

    let mut parse_checks = Vec::new();
    let id = |logical: &'static str, physical: &str| -> Result<Expr> {
        let dtype = &dtypes[logical];
        let as_text = match dtype {
            DataType::String => col(physical),
            d if d.is_integer() => col(physical).cast(DataType::String),
            DataType::Categorical(..) => col(physical).cast(DataType::String),
            d => return Err(wrong_type(logical, physical, d, "a string or integer id").into()),
        };
        // Trimming (and empty = missing, step 1) is left to the fold, which reads each
        // id once anyway: a trimmed copy of every id cost a tenth of the job.
        Ok(as_text)
    };
    let customer_id = id("customer_id", &columns.customer_id)?;
    let order_id = id("order_id", &columns.order_id)?;

    let date_col = col(columns.order_date.as_str());
    let order_date = match &dtypes["order_date"] {
        DataType::Date => date_col,
        DataType::Datetime(_, None) => date_col.cast(DataType::Date),
        DataType::Datetime(_, Some(_)) => date_col
            .dt()
            .convert_time_zone(TimeZone::opt_try_new(Some(input.timezone.as_str()))?.unwrap_or(TimeZone::UTC))
            .dt()
            .date(),
        DataType::String => {
            let parsed = date_col.clone().str().to_date(StrptimeOptions {
                format: input.date_format.as_deref().map(Into::into),
                strict: false,
                exact: true,
                cache: true,
            });
            parse_checks.push(ParseCheck {
                logical: "order_date",
                physical: columns.order_date.clone(),
                what: match &input.date_format {
                    Some(f) => format!("dates with input.date_format `{f}`"),
                    None => "dates (format inferred from the first value)".into(),
                },
                fix: "set input.date_format to the format the column uses, e.g. `%d/%m/%Y`".into(),
                failed: date_col.clone().is_not_null().and(parsed.clone().is_null()),
                raw: date_col,
            });
            parsed
        }
        d => {
            return Err(wrong_type(
                "order_date",
                &columns.order_date,
                d,
                "a date, a datetime, or a string with input.date_format",
            )
            .into());
        }
    };

    let numeric =
        |logical: &'static str, physical: &str, checks: &mut Vec<ParseCheck>| -> Result<(Expr, bool)> {
            let c = col(physical);
            match &dtypes[logical] {
                d if d.is_integer() => Ok((c.cast(DataType::Int64), true)),
                d if d.is_float() || d.is_decimal() => Ok((c.cast(DataType::Float64), false)),
                DataType::String => {
                    let parsed = c.clone().str().strip_chars(lit(NULL)).cast(DataType::Float64);
                    checks.push(ParseCheck {
                        logical,
                        physical: physical.to_string(),
                        what: "numbers".into(),
                        fix: format!("clean the column, or map input.columns.{logical} to a numeric column"),
                        failed: c.clone().is_not_null().and(parsed.clone().is_null()),
                        raw: c,
                    });
                    Ok((parsed, false))
                }
                d => Err(wrong_type(logical, physical, d, "a number (integer, float or decimal)").into()),
            }
        };
    let (amount, amount_is_int) = numeric("amount", &columns.amount, &mut parse_checks)?;
    let quantity = match (&columns.quantity, input.amount_is_unit_price) {
        (Some(q), true) => Some(numeric("quantity", q, &mut parse_checks)?),
        _ => None,
    };
    // Money is rounded once, to integer micro-units (SPEC preamble).
    let value_micros = match quantity {
        None if amount_is_int => amount * lit(MICROS_PER_UNIT),
        Some((q, true)) if amount_is_int => amount * q * lit(MICROS_PER_UNIT),
        other => {
            let value = match other {
                Some((q, _)) => amount.cast(DataType::Float64) * q.cast(DataType::Float64),
                None => amount.cast(DataType::Float64),
            };
            let micros = (value.clone() * lit(MICROS_PER_UNIT as f64) + lit(0.5)).floor();
            // Non-finite values and values past the Int64 range become null: step 1 drops them.
            when(
                value.is_finite().and(
                    micros
                        .clone()
                        .gt(lit(-9.0e18))
                        .and(micros.clone().lt(lit(9.0e18))),
                ),
            )
            .then(micros.cast(DataType::Int64))
            .otherwise(lit(NULL).cast(DataType::Int64))
        }
    };

    let mut typed = vec![
        customer_id.alias(CUSTOMER_ID),
        order_id.alias(ORDER_ID),
        order_date.alias(ORDER_DATE),
        value_micros.alias(VALUE),
    ];
    for (physical, name) in [(&columns.category, CATEGORY), (&columns.channel, CHANNEL)] {
        if let Some(physical) = physical {
            typed.push(col(physical.as_str()).cast(DataType::String).alias(name));
        }
    }
    Ok(Normalised {
        // The row number is taken once, at the scan (Polars reads it with the file):
        // the line stream and the re-read of duplicate candidates number rows alike.
        lf: raw.with_row_index(line::ROW, None).with_columns(typed),
        raw_columns: schema.iter_names().cloned().collect(),
        typed_from: columns
            .mapped()
            .into_iter()
            .filter(|(logical, _)| *logical != "quantity" || input.amount_is_unit_price)
            .map(|(_, physical)| physical.to_string())
            .collect(),
        has_category: columns.category.is_some(),
        has_channel: columns.channel.is_some(),
        parse_checks,
    })
}

/// Internal columns of the line stream beyond the typed ones.
pub mod line {
    /// The line's position in the input (for re-reading duplicate candidates).
    pub const ROW: &str = "__row";
    /// Step 4's verdict: 0 kept, i + 1 dropped by reason i (the first that applies).
    pub const DROPPED_BY: &str = "__dropped_by";
    /// A hash of the raw columns that no typed column is derived from.
    pub const OTHER_COLUMNS_HASH: &str = "__other_columns_hash";

    pub fn parse_failed(i: usize) -> String {
        format!("__parse_failed_{i}")
    }

    pub fn parse_raw(i: usize) -> String {
        format!("__parse_raw_{i}")
    }
}

/// The lines as the streaming pass reads them (see [`crate::ingest`]): the typed
/// columns, step 4's verdict, and what the exact-duplicate pass and the parse
/// checks need. Every condition is a Polars expression; the pass only folds.
pub struct LinePlan {
    pub lines: LazyFrame,
    /// Step 4 reasons; `__dropped_by` = i + 1 names `reasons[i]`.
    pub reasons: Vec<String>,
    pub parse_checks: usize,
    /// Step 4's verdict as an expression over the normalised lines.
    verdict: Expr,
}

/// Builds the line stream for SPEC §1 steps 1–4 (the fold applies steps 1–3 and 5).
pub fn line_plan(normalised: &Normalised, cleaning: &CleaningConfig) -> LinePlan {
    // Step 4 as one small integer per line: the first reason that drops it.
    let mut conditions: Vec<(String, Expr)> = cleaning
        .exclude
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            (
                format!("exclude[{i}]: {}", describe(rule)),
                exclude_matches(rule).fill_null(lit(false)),
            )
        })
        .collect();
    if cleaning.returns == Returns::Drop {
        conditions.push(("negative line (returns: drop)".into(), col(VALUE).lt(lit(0i64))));
    }
    let mut columns = vec![
        col(line::ROW),
        col(CUSTOMER_ID),
        col(ORDER_ID),
        col(ORDER_DATE),
        col(VALUE),
    ];
    let reasons: Vec<String> = conditions.iter().map(|(reason, _)| reason.clone()).collect();
    let verdict = conditions
        .into_iter()
        .enumerate()
        .rev()
        .fold(lit(0i32), |otherwise, (i, (_, condition))| {
            when(condition).then(lit(i as i32 + 1)).otherwise(otherwise)
        })
        .alias(line::DROPPED_BY);
    columns.push(verdict.clone());
    if normalised.has_channel {
        columns.push(col(CHANNEL));
    }
    if normalised.has_category {
        columns.push(col(CATEGORY));
    }
    // Exact duplicates agree on every raw column, so on the typed columns and on the
    // rest: the fold fingerprints lines by their order, typed values and this hash.
    let others: Vec<Expr> = normalised
        .raw_columns
        .iter()
        .filter(|c| !normalised.typed_from.iter().any(|t| t == c.as_str()))
        .map(|c| col(c.clone()))
        .collect();
    if cleaning.dedupe && !others.is_empty() {
        columns.push(as_struct(others).hash(0, 0, 0, 0).alias(line::OTHER_COLUMNS_HASH));
    }
    for (i, check) in normalised.parse_checks.iter().enumerate() {
        columns.push(check.failed.clone().alias(line::parse_failed(i)));
        columns.push(check.raw.clone().cast(DataType::String).alias(line::parse_raw(i)));
    }
    if cleaning.dedupe {
        // The raw columns ride along: duplicates within one batch are compared there,
        // and the input is read a second time only for copies far apart.
        columns.extend(normalised.raw_columns.iter().map(|c| col(c.clone())));
    }
    LinePlan {
        lines: normalised.lf.clone().select(columns),
        reasons,
        parse_checks: normalised.parse_checks.len(),
        verdict,
    }
}

/// What step 3 compares candidate lines on, and what it needs to take a copy out of
/// its order: the raw columns, then the row (which names the order), the value and
/// step 4's verdict.
pub fn duplicate_check_columns(raw_columns: &[PlSmallStr]) -> Vec<PlSmallStr> {
    let mut columns = raw_columns.to_vec();
    columns.extend([line::ROW, VALUE, line::DROPPED_BY].map(PlSmallStr::from));
    columns
}

/// The given input rows with their [`duplicate_check_columns`], read again to decide
/// exact duplicates value by value (step 3) among lines whose fingerprints repeat.
pub fn rows_with_raw_values(normalised: &Normalised, plan: &LinePlan, rows: Vec<IdxSize>) -> LazyFrame {
    let rows = Series::new("rows".into(), rows);
    normalised
        .lf
        .clone()
        .filter(col(line::ROW).is_in(lit(rows).implode(true), false))
        .with_column(plan.verdict.clone())
        .select(
            duplicate_check_columns(&normalised.raw_columns)
                .into_iter()
                .map(col)
                .collect::<Vec<_>>(),
        )
}

/// Text that does not parse is an error naming the column and an example, never
/// silently dropped. `failures[i]`: check i's count and its first failing value.
pub fn check_parse_failures(normalised: &Normalised, failures: &[(u64, Option<String>)]) -> Result<()> {
    for (check, (failed, example)) in normalised.parse_checks.iter().zip(failures) {
        if *failed > 0 {
            return Err(InputError::Unparseable {
                logical: check.logical.into(),
                physical: check.physical.clone(),
                count: *failed,
                example: example.clone().unwrap_or_default(),
                what: check.what.clone(),
                fix: check.fix.clone(),
            }
            .into());
        }
    }
    Ok(())
}

fn exclude_matches(rule: &ExcludeRule) -> Expr {
    let text = col(rule.column.as_str()).cast(DataType::String);
    match &rule.matcher {
        Matcher::Equals(v) => text.eq(lit(v.as_str())),
        Matcher::In(values) => {
            let values = Series::new("values".into(), values.clone());
            text.is_in(lit(values).implode(true), false)
        }
        Matcher::StartsWith(prefix) => text.str().starts_with(lit(prefix.as_str())),
        Matcher::Regex(pattern) => text.str().contains(lit(pattern.as_str()), true),
    }
}

fn describe(rule: &ExcludeRule) -> String {
    match &rule.matcher {
        Matcher::Equals(v) => format!("{} equals {v:?}", rule.column),
        Matcher::In(values) => format!("{} in {values:?}", rule.column),
        Matcher::StartsWith(p) => format!("{} starts with {p:?}", rule.column),
        Matcher::Regex(r) => format!("{} matches /{r}/", rule.column),
    }
}

/// What the manifest records for one cleaning step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CleaningStep {
    pub step: u8,
    pub name: String,
    pub rows_in: u64,
    pub rows_out: u64,
    pub dropped: u64,
    pub reasons: BTreeMap<String, u64>,
}
