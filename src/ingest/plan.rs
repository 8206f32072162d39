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
use crate::dates::epoch_days;
use crate::error::{InputError, Result};
use crate::schema::internal::{CATEGORY, CHANNEL, CUSTOMER_ID, MARGIN, ORDER_DATE, ORDER_ID, VALUE};

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
    /// Whether lines carry a gross margin (`input.columns.cost` or `margin`).
    pub has_margin: bool,
    /// Columns that are parsed from text, whose failures must be reported, not dropped.
    parse_checks: Vec<ParseCheck>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CheckKind {
    /// Text that does not parse as the type the column needs.
    Unparseable,
    /// A value that cannot be represented exactly (money) or as a calendar date.
    OutOfRange,
}

struct ParseCheck {
    kind: CheckKind,
    logical: &'static str,
    physical: String,
    what: String,
    fix: String,
    /// Rows where the raw value is present but did not parse.
    failed: Expr,
    raw: Expr,
}

/// Decimal places a text amount is parsed to exactly (more are truncated).
const TEXT_SCALE: u32 = 12;

/// Decimal places of amount and quantity together that integer arithmetic carries
/// exactly: a value below 10^13 with 24 places fits an Int128 (below 1.7 × 10^38).
const MAX_EXACT_SCALE: usize = 24;

/// A numeric input column as the line value needs it.
enum Number {
    Integer(Expr),
    /// An exact decimal: `units` / 10^`scale` (Int128), with its float for range guards.
    Decimal {
        units: Expr,
        scale: u32,
        float: Expr,
    },
    Float(Expr),
}

impl Number {
    fn float(&self) -> Expr {
        match self {
            Number::Integer(e) => e.clone().cast(DataType::Float64),
            Number::Decimal { float, .. } | Number::Float(float) => float.clone(),
        }
    }

    /// The value as (Int128 units, decimal places), where it is exact.
    fn exact(&self) -> Option<(Expr, u32)> {
        match self {
            Number::Integer(e) => Some((e.clone().cast(DataType::Int128), 0)),
            Number::Decimal { units, scale, .. } => Some((units.clone(), *scale)),
            Number::Float(_) => None,
        }
    }
}

fn i128_lit(value: i128) -> Expr {
    Expr::Literal(Scalar::from(value).into())
}

/// The line value in micro-units, `floor(value × 10^6 + 0.5)` (SPEC preamble), and
/// whether it fits an Int64 (else the line is an input error, never wrapped).
/// Integers and decimals are computed exactly in Int128; floats as floats. A null
/// or non-finite value is null and in range: step 1 drops it.
fn line_value_micros(amount: Number, quantity: Option<Number>) -> (Expr, Expr) {
    let float = match &quantity {
        Some(q) => amount.float() * q.float(),
        None => amount.float(),
    };
    let (amount_exact, quantity_exact) = (amount.exact(), quantity.as_ref().map(Number::exact));
    // A text value that is not a plain decimal (NaN, infinity, 1e30) has no exact
    // units: its float decides.
    let mut has_exact = lit(true);
    for (units, _) in amount_exact.iter().chain(quantity_exact.iter().flatten()) {
        has_exact = has_exact.and(units.clone().is_not_null());
    }
    let exact = match (amount_exact, quantity_exact) {
        (Some(a), None) => Some(a),
        (Some((a, sa)), Some(Some((q, sq)))) if (sa + sq) as usize <= MAX_EXACT_SCALE => {
            Some((a * q, sa + sq))
        }
        _ => None,
    };
    // Past this the value cannot fit, whatever the float's rounding; below it the
    // exact product cannot overflow an Int128.
    let plausible = float
        .clone()
        .lt_eq(lit(1e13))
        .and(float.clone().gt_eq(lit(-1e13)));
    let float_micros = (float.clone() * lit(MICROS_PER_UNIT as f64) + lit(0.5)).floor();
    let two_pow_63 = 9_223_372_036_854_775_808.0_f64;
    let float_fits = float_micros
        .clone()
        .gt_eq(lit(-two_pow_63))
        .and(float_micros.clone().lt(lit(two_pow_63)));
    let from_float = (
        when(float_fits.clone())
            .then(float_micros.cast(DataType::Int64))
            .otherwise(lit(NULL).cast(DataType::Int64)),
        float_fits
            .or(float.clone().is_finite().not())
            .fill_null(lit(true)),
    );
    let Some((units, scale)) = exact else {
        return from_float;
    };
    let micros = if scale <= 6 {
        units * i128_lit(10i128.pow(6 - scale))
    } else {
        let step = 10i128.pow(scale - 6);
        (units + i128_lit(step / 2)).floor_div(i128_lit(step))
    };
    let fits = micros
        .clone()
        .gt_eq(lit(i64::MIN))
        .and(micros.clone().lt_eq(lit(i64::MAX)));
    let exact_fits = plausible.and(fits);
    let value = when(exact_fits.clone())
        .then(micros.cast(DataType::Int64))
        .otherwise(lit(NULL).cast(DataType::Int64));
    (
        when(has_exact.clone()).then(value).otherwise(from_float.0),
        when(has_exact)
            .then(exact_fits.fill_null(lit(true)))
            .otherwise(from_float.1),
    )
}

/// Typed logical columns from the physical ones; wrong types fail here, from the schema.
/// `margin_rate` (`clv.margin`) is the gross margin of a line whose cost or margin
/// is null.
pub fn normalise(
    raw: LazyFrame,
    schema: &Schema,
    input: &InputConfig,
    margin_rate: f64,
    file: &str,
) -> Result<Normalised> {
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
    let (first_day, last_day) = (
        epoch_days(NaiveDate::from_ymd_opt(1, 1, 1).unwrap_or_default()),
        epoch_days(NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or_default()),
    );
    // Dates past the calendar's range are refused; timestamps are masked before any
    // conversion (Polars panics converting one past chrono's range).
    let day_in_range = |day: Expr| {
        day.clone()
            .gt_eq(lit(first_day - 1))
            .and(day.lt_eq(lit(last_day + 1)))
    };
    let as_days_text = |day: Expr| {
        concat_str(
            [day.cast(DataType::String), lit(" days from 1970-01-01")],
            "",
            false,
        )
    };
    let (date_col, stored_day) = match &dtypes["order_date"] {
        DataType::Date => {
            let day = date_col.clone().to_physical().cast(DataType::Int64);
            (date_col, Some(day))
        }
        DataType::Datetime(unit, _) => {
            let per_day: i64 = 86_400
                * match unit {
                    TimeUnit::Nanoseconds => 1_000_000_000,
                    TimeUnit::Microseconds => 1_000_000,
                    TimeUnit::Milliseconds => 1_000,
                };
            let day = date_col.clone().to_physical().floor_div(lit(per_day));
            let masked = when(day_in_range(day.clone()))
                .then(date_col.clone())
                .otherwise(lit(NULL).cast(dtypes["order_date"].clone()));
            (masked, Some(day))
        }
        _ => (date_col, None),
    };
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
                kind: CheckKind::Unparseable,
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

    let numeric = |logical: &'static str, physical: &str, checks: &mut Vec<ParseCheck>| -> Result<Number> {
        let c = col(physical);
        match &dtypes[logical] {
            // Any width, unsigned 64-bit included: cast to Int128 exactly, then checked.
            d if d.is_integer() => Ok(Number::Integer(c)),
            // Spark's DECIMAL(38, 18) included.
            DataType::Decimal(_, scale) if *scale <= MAX_EXACT_SCALE => Ok(Number::Decimal {
                units: c.clone().to_physical(),
                scale: *scale as u32,
                float: c.cast(DataType::Float64),
            }),
            d if d.is_float() || d.is_decimal() => Ok(Number::Float(c.cast(DataType::Float64))),
            DataType::String => {
                let text = c.clone().str().strip_chars(lit(NULL));
                let float = text.clone().cast(DataType::Float64);
                checks.push(ParseCheck {
                    kind: CheckKind::Unparseable,
                    logical,
                    physical: physical.to_string(),
                    what: "numbers".into(),
                    fix: format!("clean the column, or map input.columns.{logical} to a numeric column"),
                    failed: c.clone().is_not_null().and(float.clone().is_null()),
                    raw: c,
                });
                // Exact where the text is a plain decimal number; NaN, infinities and
                // numbers past 26 integer digits take the float path.
                Ok(Number::Decimal {
                    units: text
                        .cast(DataType::Decimal(38, TEXT_SCALE as usize))
                        .to_physical(),
                    scale: TEXT_SCALE,
                    float,
                })
            }
            d => Err(wrong_type(logical, physical, d, "a number (integer, float or decimal)").into()),
        }
    };
    let amount = numeric("amount", &columns.amount, &mut parse_checks)?;
    let quantity = match (&columns.quantity, input.amount_is_unit_price) {
        (Some(q), true) => Some(numeric("quantity", q, &mut parse_checks)?),
        _ => None,
    };
    let (value_micros, in_range) = line_value_micros(amount, quantity);
    let line_margin = match columns.line_margin() {
        None => None,
        Some((logical, physical)) => {
            // A unit cost (or margin) with a unit price: times the quantity, as the value.
            let quantity = match (&columns.quantity, input.amount_is_unit_price) {
                (Some(q), true) => Some(numeric("quantity", q, &mut Vec::new())?),
                _ => None,
            };
            let number = numeric(logical, physical, &mut parse_checks)?;
            let (micros, fits) = line_value_micros(number, quantity);
            parse_checks.push(ParseCheck {
                kind: CheckKind::OutOfRange,
                logical,
                physical: physical.to_string(),
                what: String::new(),
                fix: "the limit is ±9223372036854.775807 currency units per line (an Int64 of micro-units: money is exact or refused)".into(),
                failed: fits.not(),
                raw: col(physical).cast(DataType::String),
            });
            let margin = if logical == "cost" {
                let difference =
                    value_micros.clone().cast(DataType::Int128) - micros.clone().cast(DataType::Int128);
                let fits = difference
                    .clone()
                    .gt_eq(lit(i64::MIN))
                    .and(difference.clone().lt_eq(lit(i64::MAX)));
                parse_checks.push(ParseCheck {
                    kind: CheckKind::OutOfRange,
                    logical,
                    physical: physical.to_string(),
                    what: String::new(),
                    fix: "the line's margin (value − cost) must lie within ±9223372036854.775807 currency units".into(),
                    failed: fits.clone().not().fill_null(lit(false)),
                    raw: concat_str(
                        [
                            col(columns.amount.as_str()).cast(DataType::String),
                            col(physical).cast(DataType::String),
                        ],
                        " − ",
                        false,
                    ),
                });
                when(fits)
                    .then(difference.cast(DataType::Int64))
                    .otherwise(lit(NULL).cast(DataType::Int64))
            } else {
                micros.clone()
            };
            // No cost or margin on the line: the configured rate of its value.
            let at_rate = (value_micros.clone().cast(DataType::Float64) * lit(margin_rate) + lit(0.5))
                .floor()
                .cast(DataType::Int64);
            Some(when(micros.is_null()).then(at_rate).otherwise(margin))
        }
    };
    let raw_value = match (&columns.quantity, input.amount_is_unit_price) {
        (Some(q), true) => concat_str(
            [
                col(columns.amount.as_str()).cast(DataType::String),
                col(q.as_str()).cast(DataType::String),
            ],
            " x ",
            false,
        ),
        _ => col(columns.amount.as_str()).cast(DataType::String),
    };
    parse_checks.push(ParseCheck {
        kind: CheckKind::OutOfRange,
        logical: "amount",
        physical: columns.amount.clone(),
        what: String::new(),
        fix: "the limit is ±9223372036854.775807 currency units per line (an Int64 of micro-units: money is exact or refused); split such lines, or check the column's unit".into(),
        failed: in_range.not(),
        raw: raw_value,
    });
    let day = order_date.clone().cast(DataType::Int32);
    let typed_out_of_range = day.clone().lt(lit(first_day)).or(day.gt(lit(last_day)));
    let (failed, shown) = match stored_day {
        Some(stored) => (
            day_in_range(stored.clone()).not().or(typed_out_of_range),
            as_days_text(stored),
        ),
        None => (
            typed_out_of_range,
            col(columns.order_date.as_str()).cast(DataType::String),
        ),
    };
    parse_checks.push(ParseCheck {
        kind: CheckKind::OutOfRange,
        logical: "order_date",
        physical: columns.order_date.clone(),
        what: String::new(),
        fix: "an order date must lie within 0001-01-01 and 9999-12-31; fix or remove those rows".into(),
        failed: failed.fill_null(lit(false)),
        raw: shown,
    });

    let mut typed = vec![
        customer_id.alias(CUSTOMER_ID),
        order_id.alias(ORDER_ID),
        order_date.alias(ORDER_DATE),
        value_micros.alias(VALUE),
    ];
    if let Some(margin) = &line_margin {
        typed.push(margin.clone().alias(MARGIN));
    }
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
            // A cost or margin is a typed column no fingerprint reads: it stays in
            // the hash of the other columns, so duplicates must agree on it too.
            .filter(|(logical, _)| !matches!(*logical, "cost" | "margin"))
            .map(|(_, physical)| physical.to_string())
            .collect(),
        has_category: columns.category.is_some(),
        has_channel: columns.channel.is_some(),
        has_margin: line_margin.is_some(),
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
}

/// The lines as the streaming pass reads them (see [`crate::ingest`]): the typed
/// columns, step 4's verdict, and what the exact-duplicate pass and the parse
/// checks need. Every condition is a Polars expression; the pass only folds.
pub struct LinePlan {
    pub lines: LazyFrame,
    /// Step 4 reasons; `__dropped_by` = i + 1 names `reasons[i]`.
    pub reasons: Vec<String>,
    pub parse_checks: usize,
    /// Whether lines carry `__margin_micros`.
    pub has_margin: bool,
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
    if normalised.has_margin {
        columns.push(col(MARGIN));
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
        // One column is hashed as it is: a struct is hashed through its row encoding.
        let hashed = match <[Expr; 1]>::try_from(others) {
            Ok([other]) => other,
            Err(others) => as_struct(others),
        };
        columns.push(hashed.hash(0, 0, 0, 0).alias(line::OTHER_COLUMNS_HASH));
    }
    for (i, check) in normalised.parse_checks.iter().enumerate() {
        // Only the verdict rides along: a failure's text is read back for its one
        // example row (carrying every line's text cost a tenth of the pass).
        columns.push(check.failed.clone().alias(line::parse_failed(i)));
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
        has_margin: normalised.has_margin,
        verdict,
    }
}

/// What step 3 compares candidate lines on, and what it needs to take a copy out of
/// its order: the raw columns, then the row (which names the order), the value and
/// step 4's verdict (and the margin, when lines carry one).
pub fn duplicate_check_columns(raw_columns: &[PlSmallStr], has_margin: bool) -> Vec<PlSmallStr> {
    let mut columns = raw_columns.to_vec();
    columns.extend([line::ROW, VALUE, line::DROPPED_BY].map(PlSmallStr::from));
    if has_margin {
        columns.push(MARGIN.into());
    }
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
            duplicate_check_columns(&normalised.raw_columns, normalised.has_margin)
                .into_iter()
                .map(col)
                .collect::<Vec<_>>(),
        )
}

/// Text that does not parse is an error naming the column and an example, never
/// silently dropped. `failures[i]`: check i's count and its first failing value.
pub fn check_parse_failures(normalised: &Normalised, failures: &[(u64, Option<IdxSize>)]) -> Result<()> {
    for (check, (failed, first)) in normalised.parse_checks.iter().zip(failures) {
        if *failed == 0 {
            continue;
        }
        let row = first.unwrap_or_default();
        let example = example_text(normalised, check, row)?;
        return Err(match check.kind {
            CheckKind::Unparseable => InputError::Unparseable {
                logical: check.logical.into(),
                physical: check.physical.clone(),
                count: *failed,
                example,
                what: check.what.clone(),
                fix: check.fix.clone(),
            },
            CheckKind::OutOfRange => InputError::OutOfRange {
                logical: check.logical.into(),
                physical: check.physical.clone(),
                count: *failed,
                example,
                // Named by its file once the pipeline's caller knows the files.
                row: format!("input row {}", row as u64 + 1),
                limit: check.fix.clone(),
            },
        }
        .into());
    }
    Ok(())
}

/// The text of a check's value at one input row, read again for the message.
fn example_text(normalised: &Normalised, check: &ParseCheck, row: IdxSize) -> Result<String> {
    let frame = normalised
        .lf
        .clone()
        .filter(col(line::ROW).eq(lit(row)))
        .select([check.raw.clone().cast(DataType::String).alias("example")])
        .collect()?;
    let text = frame
        .column("example")?
        .str()?
        .get(0)
        .unwrap_or_default()
        .to_string();
    Ok(text)
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
