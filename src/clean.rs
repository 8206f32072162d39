//! SPEC §1: the orders table, from physical input columns to cleaned lines and orders.
//!
//! [`normalise`] maps physical columns to typed logical ones (ids as strings,
//! dates as calendar days, line values in integer micro-units) and rejects wrong
//! types from the schema alone. [`clean`] applies cleaning steps 1–4 in SPEC
//! order and rolls lines up to orders (step 5), counting steps 3–4 inside the
//! roll-up so that the data is deduplicated once and never re-read to count.

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

use crate::config::{CleaningConfig, ExcludeRule, InputConfig, Matcher, Returns};
use crate::error::{InputError, Result};
use crate::schema::internal::{CATEGORIES, CATEGORY, CHANNEL, CUSTOMER_ID, ORDER_DATE, ORDER_ID, VALUE};

const MICROS_PER_UNIT: i64 = 1_000_000;

/// The input with typed internal columns added beside the raw ones.
pub struct Normalised {
    pub lf: LazyFrame,
    /// The physical columns of the input: exact duplicates are judged on these.
    pub raw_columns: Vec<PlSmallStr>,
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
        let trimmed = as_text.str().strip_chars(lit(NULL));
        Ok(when(trimmed.clone().eq(lit("")))
            .then(lit(NULL).cast(DataType::String))
            .otherwise(trimmed))
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
        lf: raw.with_columns(typed),
        raw_columns: schema.iter_names().cloned().collect(),
        has_category: columns.category.is_some(),
        has_channel: columns.channel.is_some(),
        parse_checks,
    })
}

/// Step 1's condition: all required values present.
fn required_present() -> Expr {
    col(CUSTOMER_ID)
        .is_not_null()
        .and(col(ORDER_ID).is_not_null())
        .and(col(ORDER_DATE).is_not_null())
        .and(col(VALUE).is_not_null())
}

/// Per parse check: how many values failed, and the first one.
fn parse_check_aggregates(normalised: &Normalised) -> Vec<Expr> {
    let mut aggregates = Vec::new();
    for (i, check) in normalised.parse_checks.iter().enumerate() {
        aggregates.push(check.failed.clone().sum().alias(format!("parse_failed_{i}")));
        aggregates.push(
            check
                .raw
                .clone()
                .cast(DataType::String)
                .filter(check.failed.clone())
                .first()
                .alias(format!("parse_example_{i}")),
        );
    }
    aggregates
}

/// Text that does not parse is an error naming the column and an example, never silently dropped.
pub fn check_parse_failures(normalised: &Normalised, counts: &DataFrame) -> Result<()> {
    for (i, check) in normalised.parse_checks.iter().enumerate() {
        let failed = scalar_u64(counts, &format!("parse_failed_{i}"));
        if failed > 0 {
            let example = counts
                .column(&format!("parse_example_{i}"))
                .ok()
                .and_then(|c| c.get(0).ok().map(|v| v.str_value().to_string()))
                .unwrap_or_default();
            return Err(InputError::Unparseable {
                logical: check.logical.into(),
                physical: check.physical.clone(),
                count: failed,
                example,
                what: check.what.clone(),
                fix: check.fix.clone(),
            }
            .into());
        }
    }
    Ok(())
}

/// The cleaning plan. Steps 1–2 are counted over every input row; steps 3–4 are
/// counted inside the roll-up to orders (step 5), so the exact-duplicate pass,
/// the costliest part of the job, runs once.
pub struct Cleaned {
    /// One-row aggregate: step 1 reasons, step 2 drops, parse-failure checks.
    pub required_and_as_of: LazyFrame,
    /// Orders keyed by (customer, order), with per-order line counts for steps 3–4;
    /// pass the collected frame to [`cleaning_steps`] and then [`kept_orders`].
    pub orders: LazyFrame,
    /// Step 4 reasons, in the order of their `__dropped_i` columns.
    reasons: Vec<String>,
}

/// Lines of the order after dedupe (step 3), and of those kept by step 4.
const LINES: &str = "__lines";
const KEPT: &str = "__kept_lines";
const KEEP: &str = "__keep";

fn dropped_column(i: usize) -> String {
    format!("__dropped_{i}")
}

/// In `required_and_as_of`: the latest order date among lines with every required value.
pub const LATEST_VALID_DATE: &str = "latest valid order_date";

/// Steps 1–5 of SPEC §1, in order.
/// Without `as_of`, step 2 keeps every line (the default as_of is the latest valid
/// date + 1, reported as [`LATEST_VALID_DATE`] in `required_and_as_of`).
pub fn clean(normalised: &Normalised, cleaning: &CleaningConfig, as_of: Option<NaiveDate>) -> Cleaned {
    let before_as_of = as_of.map_or_else(|| lit(true), |d| col(ORDER_DATE).lt(date_lit(d)));

    // Step 1 reasons are exclusive: a row is counted under the first that applies.
    let mut aggregates = vec![
        len().cast(DataType::Int64).alias("rows"),
        col(CUSTOMER_ID).is_null().sum().alias("null customer_id"),
        (col(CUSTOMER_ID).is_not_null().and(col(ORDER_ID).is_null()))
            .sum()
            .alias("null order_id"),
        (col(CUSTOMER_ID)
            .is_not_null()
            .and(col(ORDER_ID).is_not_null())
            .and(col(ORDER_DATE).is_null()))
        .sum()
        .alias("null order_date"),
        (col(CUSTOMER_ID)
            .is_not_null()
            .and(col(ORDER_ID).is_not_null())
            .and(col(ORDER_DATE).is_not_null())
            .and(col(VALUE).is_null()))
        .sum()
        .alias("null or non-finite line value"),
        (required_present().and(before_as_of.clone().not()))
            .sum()
            .alias("dated on or after as_of"),
        col(ORDER_DATE)
            .filter(required_present())
            .max()
            .alias(LATEST_VALID_DATE),
    ];
    aggregates.extend(parse_check_aggregates(normalised));
    let required_and_as_of = normalised.lf.clone().select(aggregates);

    let in_window = normalised.lf.clone().filter(required_present().and(before_as_of));
    let deduped = if cleaning.dedupe {
        exact_duplicates_removed(in_window, &normalised.raw_columns)
    } else {
        in_window
    };

    // Step 4 as flags, each line counted under the first reason that drops it.
    let mut dropped = lit(false);
    let mut flags = Vec::new();
    let mut reasons = Vec::new();
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
    for (i, (reason, condition)) in conditions.into_iter().enumerate() {
        flags.push(
            condition
                .clone()
                .and(dropped.clone().not())
                .alias(dropped_column(i)),
        );
        reasons.push(reason);
        dropped = dropped.or(condition);
    }
    flags.push(dropped.not().alias(KEEP));

    let kept = |e: Expr, otherwise: Expr| when(col(KEEP)).then(e).otherwise(otherwise);
    let mut aggs = vec![
        kept(col(ORDER_DATE), lit(NULL).cast(DataType::Date))
            .min()
            .alias(ORDER_DATE),
        kept(col(VALUE), lit(0i64)).sum().alias(VALUE),
        len().cast(DataType::Int64).alias(LINES),
        col(KEEP).sum().cast(DataType::Int64).alias(KEPT),
    ];
    aggs.extend((0..reasons.len()).map(|i| col(dropped_column(i)).sum().cast(DataType::Int64)));
    if normalised.has_channel {
        // An order's channel: the smallest non-null channel among its kept lines.
        aggs.push(
            kept(col(CHANNEL), lit(NULL).cast(DataType::String))
                .min()
                .alias(CHANNEL),
        );
    }
    if normalised.has_category {
        // Distinct categories of the order's kept positive lines (for upsell_ratio).
        aggs.push(
            col(CATEGORY)
                .filter(col(KEEP).and(col(VALUE).gt(lit(0i64))))
                .drop_nulls()
                .unique()
                .alias(CATEGORIES),
        );
    }
    let orders = deduped
        .with_columns(flags)
        .group_by([col(CUSTOMER_ID), col(ORDER_ID)])
        .agg(aggs);
    Cleaned {
        required_and_as_of,
        orders,
        reasons,
    }
}

/// Step 3: drops exact duplicate rows (equal in every raw column). Equal rows have
/// equal hashes, so a row whose hash is unique has no duplicate and is kept as it is;
/// only the few rows whose hash repeats are compared value by value. The hash only
/// narrows the search — equality is decided on the values — and hashing is several
/// times cheaper than the full comparison over every row (3.8 s at 10M lines).
fn exact_duplicates_removed(lines: LazyFrame, raw_columns: &[PlSmallStr]) -> LazyFrame {
    const HASH: &str = "__row_hash";
    let row = as_struct(raw_columns.iter().map(|c| col(c.clone())).collect());
    // The plain comparison over every row: only used if the union cannot be formed.
    let everything = lines
        .clone()
        .unique(Some(cols(raw_columns.to_vec())), UniqueKeepStrategy::Any);
    let hashed = lines.with_column(row.hash(0, 0, 0, 0).alias(HASH));
    let repeated = col(HASH).is_duplicated();
    let alone = hashed.clone().filter(repeated.clone().not());
    let candidates = hashed
        .filter(repeated)
        .unique(Some(cols(raw_columns.to_vec())), UniqueKeepStrategy::Any);
    concat([alone, candidates], UnionArgs::default())
        .map(|lines| lines.drop(cols([HASH])))
        .unwrap_or(everything)
}

/// The orders that survive step 4 (at least one kept line), without the count columns.
pub fn kept_orders(orders: DataFrame, cleaned: &Cleaned) -> LazyFrame {
    let mut helpers = vec![LINES.to_string(), KEPT.to_string()];
    helpers.extend((0..cleaned.reasons.len()).map(dropped_column));
    orders.lazy().filter(col(KEPT).gt(lit(0i64))).drop(cols(helpers))
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

fn scalar_u64(df: &DataFrame, name: &str) -> u64 {
    df.column(name)
        .ok()
        .and_then(|c| c.get(0).ok())
        .and_then(|v| v.extract::<i64>())
        .unwrap_or(0)
        .max(0) as u64
}

/// Turns the collected step 1–2 counts and the raw orders frame into manifest steps;
/// text that failed to parse is an error. Returns the steps and the purchase count.
pub fn cleaning_steps(
    normalised: &Normalised,
    cleaned: &Cleaned,
    first: &DataFrame,
    orders: &DataFrame,
) -> Result<(Vec<CleaningStep>, u64)> {
    check_parse_failures(normalised, first)?;
    let mut sums = vec![
        col(LINES).sum().alias(LINES),
        col(KEPT).sum().alias(KEPT),
        col(KEPT)
            .gt(lit(0i64))
            .sum()
            .cast(DataType::Int64)
            .alias("orders"),
        col(KEPT)
            .gt(lit(0i64))
            .and(col(VALUE).gt(lit(0i64)))
            .sum()
            .cast(DataType::Int64)
            .alias("purchases"),
    ];
    sums.extend((0..cleaned.reasons.len()).map(|i| col(dropped_column(i)).sum()));
    let totals = orders.clone().lazy().select(sums).collect()?;

    let rows_in = scalar_u64(first, "rows");
    let reasons1: BTreeMap<String, u64> = [
        "null customer_id",
        "null order_id",
        "null order_date",
        "null or non-finite line value",
    ]
    .iter()
    .map(|r| (r.to_string(), scalar_u64(first, r)))
    .collect();
    let dropped1: u64 = reasons1.values().sum();
    let after1 = rows_in - dropped1;
    let dropped2 = scalar_u64(first, "dated on or after as_of");
    let after2 = after1 - dropped2;
    let after3 = scalar_u64(&totals, LINES);
    let after4 = scalar_u64(&totals, KEPT);
    let reasons4: BTreeMap<String, u64> = cleaned
        .reasons
        .iter()
        .enumerate()
        .map(|(i, reason)| (reason.clone(), scalar_u64(&totals, &dropped_column(i))))
        .collect();
    let (n_orders, purchases) = (scalar_u64(&totals, "orders"), scalar_u64(&totals, "purchases"));
    let step =
        |step: u8, name: &str, rows_in: u64, rows_out: u64, reasons: BTreeMap<String, u64>| CleaningStep {
            step,
            name: name.into(),
            rows_in,
            rows_out,
            dropped: rows_in - rows_out,
            reasons,
        };
    let steps = vec![
        step(1, "required values present", rows_in, after1, reasons1),
        step(
            2,
            "dated before as_of",
            after1,
            after2,
            BTreeMap::from([("dated on or after as_of".into(), dropped2)]),
        ),
        step(
            3,
            "exact duplicate rows",
            after2,
            after3,
            BTreeMap::from([("exact duplicate".into(), after2 - after3)]),
        ),
        step(4, "exclude filters and returns", after3, after4, reasons4),
        CleaningStep {
            step: 5,
            name: "lines rolled up to orders".into(),
            rows_in: after4,
            rows_out: n_orders,
            dropped: 0,
            reasons: BTreeMap::from([
                ("orders".into(), n_orders),
                ("purchases (value > 0)".into(), purchases),
            ]),
        },
    ];
    Ok((steps, purchases))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash-narrowed dedupe keeps exactly the rows a full comparison keeps,
    /// including signed zeros, NaN, nulls and rows equal in all but one column.
    #[test]
    fn hashed_dedupe_equals_the_full_comparison() {
        let frame = df!(
            "id" => [Some("a"), Some("a"), Some("a"), None, None, Some("b"), Some("b"), Some("b"), Some("b")],
            "amount" => [1.0, 1.0, 2.0, 3.0, 3.0, 0.0, -0.0, f64::NAN, f64::NAN],
            "qty" => [Some(1i64), Some(1), Some(1), None, None, Some(2), Some(2), Some(3), Some(3)],
        )
        .unwrap();
        let columns: Vec<PlSmallStr> = frame.get_column_names_owned();
        let sorted = |lf: LazyFrame| {
            lf.sort(
                ["id", "amount", "qty"],
                SortMultipleOptions::default().with_nulls_last(true),
            )
            .collect()
            .unwrap()
        };
        let hashed = sorted(exact_duplicates_removed(frame.clone().lazy(), &columns));
        let full = sorted(frame.lazy().unique(Some(cols(columns)), UniqueKeepStrategy::Any));
        assert_eq!(hashed.height(), full.height(), "{hashed}\n{full}");
        assert!(hashed.equals_missing(&full), "{hashed}\n{full}");
    }
}
