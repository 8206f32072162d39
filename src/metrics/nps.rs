//! Voice of the customer: Net Promoter Score from survey responses.
//!
//! `input.surveys` holds responses (`customer_id`, `response_date`, `score` 0–10).
//! Responses dated on or after as_of are ignored (as_of is exclusive, like orders);
//! ids go through the identity map. Each customer's *latest* response counts (the
//! latest date; on one date, the later row of the file), so a customer who answers
//! every month is one voice, not twelve. NPS over a group of customers with a
//! response = 100 × (promoters − detractors) / respondents, where promoters score
//! 9–10, passives 7–8 and detractors 0–6; a group without respondents has no NPS
//! (null). Respondents without a purchase before as_of have no segment and are only
//! counted in the manifest.

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;

use crate::dates::date_lit;
use crate::error::{InputError, Result};
use crate::identity::Identities;
use crate::io::side;
use crate::schema::internal::CUSTOMER_ID as KEY;

pub const TABLE: &str = "nps";
pub const NPS_SCORE: &str = "nps_score";
pub const NPS_RESPONSE_DATE: &str = "nps_response_date";
const RESPONSE_DATE: &str = "response_date";
const SCORE: &str = "score";
const ROW: &str = "__row";

/// The survey responses, typed and checked.
#[derive(Clone)]
pub struct Surveys {
    /// customer_id (canonical text), response_date, score, the file row.
    responses: DataFrame,
    file: String,
    incomplete_rows: u64,
}

/// What the manifest says of the surveys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SurveyReport {
    pub file: String,
    pub rows: u64,
    /// Rows with no customer_id, date or score, ignored.
    pub incomplete_rows: u64,
    /// Responses dated on or after as_of, ignored.
    pub after_as_of: u64,
    /// Responses (before as_of) of ids with no purchase before as_of.
    pub without_purchase: u64,
    /// Customers with a latest score.
    pub respondents: u64,
}

impl Surveys {
    /// Reads and checks `input.surveys`: a score that is not a whole number in 0–10,
    /// or a date that does not parse, is an input error with an example and its row.
    pub fn read(path: &str, identities: Option<&Identities>) -> Result<Self> {
        let key = "input.surveys";
        let frame = side::read_table(key, path, &[crate::schema::CUSTOMER_ID, RESPONSE_DATE, SCORE])?;
        let ids = side::id_text(&frame, crate::schema::CUSTOMER_ID, key, path)?;
        let ids: StringChunked = match identities {
            Some(map) => ids.iter().map(|id| id.map(|id| map.canonical(id))).collect(),
            None => ids,
        };
        let bad = |message: String| InputError::SideTable {
            key: key.into(),
            path: path.into(),
            message,
        };
        let typed = frame
            .clone()
            .lazy()
            .with_row_index(ROW, Some(1))
            .select([
                col(ROW),
                score_expr(frame.column(SCORE)?.dtype()).alias(SCORE),
                col(SCORE).cast(DataType::String).alias("__score_text"),
                date_expr(frame.column(RESPONSE_DATE)?.dtype()).alias(RESPONSE_DATE),
                col(RESPONSE_DATE).cast(DataType::String).alias("__date_text"),
            ])
            .collect()?;
        let mut typed = typed;
        typed.with_column(ids.with_name(crate::schema::CUSTOMER_ID.into()).into_column())?;
        // A present score that is not a whole number within 0..=10.
        let failures = |value: &str, text: &str, valid: Expr| -> Result<Option<(u64, String, u32)>> {
            let bad_rows = typed
                .clone()
                .lazy()
                .filter(col(text).is_not_null().and(valid.not().or(col(value).is_null())))
                .select([col(ROW), col(text)])
                .collect()?;
            if bad_rows.height() == 0 {
                return Ok(None);
            }
            let row = bad_rows.column(ROW)?.u32()?.get(0).unwrap_or_default();
            let example = bad_rows
                .column(text)?
                .str()?
                .get(0)
                .unwrap_or_default()
                .to_string();
            Ok(Some((bad_rows.height() as u64, example, row)))
        };
        let in_range = col(SCORE).gt_eq(lit(0i64)).and(col(SCORE).lt_eq(lit(10i64)));
        if let Some((count, example, row)) = failures(SCORE, "__score_text", in_range.fill_null(lit(false)))?
        {
            return Err(bad(format!(
                "column `score`: {count} value(s) are not a whole number from 0 to 10, e.g. `{example}` at data row {row}; NPS scores run 0–10"
            ))
            .into());
        }
        if let Some((count, example, row)) = failures(RESPONSE_DATE, "__date_text", lit(true))? {
            return Err(bad(format!(
                "column `response_date`: {count} value(s) are not dates, e.g. `{example}` at data row {row}; write dates as YYYY-MM-DD"
            ))
            .into());
        }
        let rows = typed.height() as u64;
        let responses = typed
            .lazy()
            .drop(cols(["__score_text", "__date_text"]))
            .drop_nulls(None)
            .collect()?;
        Ok(Self {
            incomplete_rows: rows - responses.height() as u64,
            responses,
            file: path.into(),
        })
    }

    /// Each customer's latest response before `as_of`, by customer key (in column
    /// `customer_id`, as the customer state keys customers):
    /// `customer_ids` is the customer_id text by key (sorted, as the engine gives it).
    pub fn latest(&self, customer_ids: &Series, as_of: NaiveDate) -> Result<(DataFrame, SurveyReport)> {
        let rows = self.responses.height() as u64 + self.incomplete_rows;
        let customers = DataFrame::new(
            customer_ids.len(),
            vec![
                customer_ids
                    .clone()
                    .with_name(crate::schema::CUSTOMER_ID.into())
                    .into_column(),
                Column::new(KEY.into(), (0..customer_ids.len() as u32).collect::<Vec<_>>()),
            ],
        )?;
        let before = self
            .responses
            .clone()
            .lazy()
            .filter(col(RESPONSE_DATE).lt(date_lit(as_of)));
        let counted = before.clone().select([len().alias("n")]).collect()?;
        let before_as_of = counted.column("n")?.get(0)?.extract::<u64>().unwrap_or(0);
        let matched = before
            .join(
                customers.lazy(),
                [col(crate::schema::CUSTOMER_ID)],
                [col(crate::schema::CUSTOMER_ID)],
                JoinArgs::new(JoinType::Inner),
            )
            .collect()?;
        let latest = matched
            .clone()
            .lazy()
            .sort([KEY, RESPONSE_DATE, ROW], SortMultipleOptions::default())
            .group_by([col(KEY)])
            .agg([
                col(SCORE).last().alias(NPS_SCORE),
                col(RESPONSE_DATE).last().alias(NPS_RESPONSE_DATE),
            ])
            .sort([KEY], SortMultipleOptions::default())
            // Keyed like the customer state it is attached to.
            .rename([KEY], [crate::schema::CUSTOMER_ID], true)
            .collect()?;
        let report = SurveyReport {
            file: self.file.clone(),
            rows,
            incomplete_rows: self.incomplete_rows,
            after_as_of: self.responses.height() as u64 - before_as_of,
            without_purchase: before_as_of - matched.height() as u64,
            respondents: latest.height() as u64,
        };
        Ok((latest, report))
    }
}

/// The score as Int64: integers as they are, whole floats, integer text; else null
/// (reported when the raw value was present).
fn score_expr(dtype: &DataType) -> Expr {
    let score = col(SCORE);
    match dtype {
        d if d.is_integer() => score.cast(DataType::Int64),
        d if d.is_float() => when(score.clone().eq(score.clone().floor()))
            .then(score.cast(DataType::Int64))
            .otherwise(lit(NULL).cast(DataType::Int64)),
        _ => score
            .cast(DataType::String)
            .str()
            .strip_chars(lit(NULL))
            .strict_cast(DataType::Int64)
            .fill_null(lit(NULL).cast(DataType::Int64)),
    }
}

/// The response date as Date: dates, timestamps' dates, `YYYY-MM-DD` text.
fn date_expr(dtype: &DataType) -> Expr {
    let date = col(RESPONSE_DATE);
    match dtype {
        DataType::Date => date,
        DataType::Datetime(..) => date.dt().date(),
        _ => date.cast(DataType::String).str().to_date(StrptimeOptions {
            format: Some("%Y-%m-%d".into()),
            strict: false,
            exact: true,
            cache: true,
        }),
    }
}

/// The dimensions NPS is reported by, and the `customers` column of each.
pub const DIMENSIONS: [(&str, &str); 3] = [
    ("segment", "segment"),
    ("cohort", "cohort"),
    ("abc_class", "abc_class"),
];

/// Respondent counts per (dimension, value) over some customers (a slice): every
/// row of `nps`' counts, to be summed over slices ([`nps_table`]). `all` / `all` is
/// every respondent.
pub fn nps_parts(customers: LazyFrame) -> LazyFrame {
    let score = || col(NPS_SCORE);
    let counts = || {
        vec![
            len().cast(DataType::Int64).alias("respondents"),
            score()
                .gt_eq(lit(9i64))
                .cast(DataType::Int64)
                .sum()
                .alias("promoters"),
            score()
                .gt_eq(lit(7i64))
                .and(score().lt_eq(lit(8i64)))
                .cast(DataType::Int64)
                .sum()
                .alias("passives"),
            score()
                .lt_eq(lit(6i64))
                .cast(DataType::Int64)
                .sum()
                .alias("detractors"),
        ]
    };
    let respondents = customers.filter(score().is_not_null());
    let mut parts = vec![
        respondents.clone().select(
            [lit("all").alias("dimension"), lit("all").alias("value")]
                .into_iter()
                .chain(counts())
                .collect::<Vec<_>>(),
        ),
    ];
    for (dimension, column) in DIMENSIONS {
        parts.push(
            respondents
                .clone()
                .group_by([col(column).cast(DataType::String).alias("value")])
                .agg(counts())
                .select([lit(dimension).alias("dimension"), all().as_expr()]),
        );
    }
    concat(parts, UnionArgs::default()).unwrap_or_else(|_| DataFrame::empty().lazy())
}

/// The `nps` table from [`nps_parts`] of every slice: per dimension and value,
/// respondents, promoters, passives, detractors, and NPS (−100 to 100).
pub fn nps_table(parts: LazyFrame) -> LazyFrame {
    let counts = ["respondents", "promoters", "passives", "detractors"];
    parts
        .group_by([col("dimension"), col("value")])
        .agg(counts.iter().map(|c| col(*c).sum()).collect::<Vec<_>>())
        .with_column(
            when(col("respondents").gt(lit(0i64)))
                .then(
                    lit(100.0) * (col("promoters") - col("detractors")).cast(DataType::Float64)
                        / col("respondents").cast(DataType::Float64),
                )
                .otherwise(lit(NULL).cast(DataType::Float64))
                .alias("nps"),
        )
        .sort(["dimension", "value"], SortMultipleOptions::default())
}

/// The `nps` table's columns and types.
pub fn schema() -> Schema {
    crate::schema::parse(
        "dimension str, value str, respondents i64, promoters i64, passives i64, detractors i64, nps f64",
    )
}

/// An empty `nps` table: no respondents.
pub fn empty_table() -> DataFrame {
    DataFrame::empty_with_schema(&schema())
}
