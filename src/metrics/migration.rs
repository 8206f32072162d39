//! Segment migration: who moved between RFM segments since a previous snapshot.
//!
//! `compare_to` names a previous output directory of this job; its `customers`
//! table (Parquet, else CSV) gives each customer's segment and revenue then. The
//! `segment_migration` table counts customers per (from_segment, to_segment):
//! `(new)` for customers absent from the previous snapshot, `(lost)` for customers
//! absent now (a data correction, or a snapshot taken with other inputs). Ids of
//! the previous snapshot go through today's identity map; two previous ids of one
//! person add their revenue and keep the segment of the larger. `revenue` is this
//! snapshot's cumulative revenue of those customers (0 for lost ones),
//! `previous_revenue` the previous snapshot's (0 for new ones), both summed exactly
//! in micro-units.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::identity::Identities;
use crate::metrics::to_currency;
use crate::schema::internal::REVENUE_MICROS;
use crate::schema::rfm::SEGMENT;
use crate::schema::{CUSTOMER_ID, REVENUE};

pub const TABLE: &str = "segment_migration";
pub const NEW: &str = "(new)";
pub const LOST: &str = "(lost)";
const PREVIOUS_MICROS: &str = "__previous_micros";
const PREVIOUS_SEGMENT: &str = "__previous_segment";

/// The snapshot compared with, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousSnapshot {
    pub dir: String,
    pub as_of: Option<NaiveDate>,
    pub customers: u64,
}

/// A previous snapshot's customers: customer_id (canonical), segment, revenue in
/// micro-units.
pub struct Previous {
    pub customers: DataFrame,
    pub snapshot: PreviousSnapshot,
}

/// The as_of a previous output's manifest records.
pub fn snapshot_as_of(dir: &Path) -> Option<NaiveDate> {
    let bytes = std::fs::read(dir.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if manifest["tool"] != env!("CARGO_PKG_NAME") {
        return None;
    }
    NaiveDate::parse_from_str(manifest["as_of"].as_str()?, "%Y-%m-%d").ok()
}

impl Previous {
    /// Reads `dir`'s customers table; `dir` must be an output of this job.
    pub fn read(dir: &Path, identities: Option<&Identities>) -> Result<Self> {
        let shown = dir.display();
        let Some(as_of) = snapshot_as_of(dir) else {
            return Err(Error::Output(format!(
                "compare_to: {shown} is not an output directory of loyalty (no manifest.json of ours)"
            )));
        };
        let Some(frame) = crate::io::table::scan_written(dir, crate::schema::customers::TABLE)? else {
            return Err(Error::Output(format!(
                "compare_to: {shown} has no customers.parquet or customers.csv"
            )));
        };
        let frame = frame
            .select([col(CUSTOMER_ID), col(SEGMENT), col(REVENUE)])
            .collect()
            .map_err(|e| Error::Output(format!("compare_to: cannot read the customers of {shown}: {e}")))?;
        Self::from_customers(frame, identities, dir.display().to_string(), Some(as_of))
    }

    /// From a customers table (customer_id, segment, revenue) held in memory: the
    /// snapshot made on demand, or one read from disk.
    pub fn from_customers(
        frame: DataFrame,
        identities: Option<&Identities>,
        dir: String,
        as_of: Option<NaiveDate>,
    ) -> Result<Self> {
        let mut frame = frame
            .lazy()
            .select([
                col(CUSTOMER_ID).cast(DataType::String),
                col(SEGMENT).cast(DataType::String),
                (col(REVENUE).cast(DataType::Float64) * lit(1_000_000.0))
                    .round(0, RoundMode::HalfToEven)
                    .cast(DataType::Int128)
                    .alias(REVENUE_MICROS),
            ])
            .collect()?;
        if let Some(map) = identities {
            let ids: StringChunked = frame
                .column(CUSTOMER_ID)?
                .str()?
                .iter()
                .map(|id| id.map(|id| map.canonical(id)))
                .collect();
            frame.replace(CUSTOMER_ID, ids.with_name(CUSTOMER_ID.into()).into_column())?;
        }
        // Two previous ids of one person: their revenue adds, the larger's segment.
        let customers = frame
            .lazy()
            .sort_by_exprs(
                [col(CUSTOMER_ID), col(REVENUE_MICROS)],
                SortMultipleOptions::default()
                    .with_order_descending_multi([false, true])
                    .with_maintain_order(true),
            )
            .group_by([col(CUSTOMER_ID)])
            .agg([col(SEGMENT).first(), col(REVENUE_MICROS).sum()])
            .collect()?;
        Ok(Self {
            snapshot: PreviousSnapshot {
                dir,
                as_of,
                customers: customers.height() as u64,
            },
            customers,
        })
    }
}

/// The latest earlier snapshot beside an `{as_of}` output: the directories named by
/// `template` for some date before `as_of`, holding our manifest. `None` when the
/// template has no `{as_of}` in its last component or no such sibling exists.
pub fn previous_sibling(template: &str, as_of: NaiveDate, run_date: NaiveDate) -> Option<PathBuf> {
    let resolved = crate::io::output::resolve_dir(template, as_of, run_date);
    let last = Path::new(template).file_name()?.to_str()?;
    let (prefix, suffix) = last.split_once("{as_of}")?;
    let parent = resolved.parent().map(Path::to_path_buf).unwrap_or_default();
    let parent = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent
    };
    let (prefix, suffix) = (
        prefix.replace("{run_date}", &run_date.to_string()),
        suffix.replace("{run_date}", &run_date.to_string()),
    );
    std::fs::read_dir(&parent)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_string();
            let date = name
                .strip_prefix(prefix.as_str())?
                .strip_suffix(suffix.as_str())?;
            let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
            let dir = parent.join(&name);
            (date < as_of && snapshot_as_of(&dir).is_some()).then_some((date, dir))
        })
        .max_by_key(|(date, _)| *date)
        .map(|(_, dir)| dir)
}

/// `segment_migration` from this snapshot's customers (customer_id text, segment,
/// revenue micro-units) and the previous snapshot's.
pub fn migration(current: LazyFrame, previous: LazyFrame) -> LazyFrame {
    let previous = previous.select([
        col(CUSTOMER_ID),
        col(SEGMENT).alias(PREVIOUS_SEGMENT),
        col(REVENUE_MICROS).alias(PREVIOUS_MICROS),
    ]);
    current
        .select([col(CUSTOMER_ID), col(SEGMENT), col(REVENUE_MICROS)])
        .join(
            previous,
            [col(CUSTOMER_ID)],
            [col(CUSTOMER_ID)],
            JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns),
        )
        .group_by([
            col(PREVIOUS_SEGMENT).fill_null(lit(NEW)).alias("from_segment"),
            col(SEGMENT).fill_null(lit(LOST)).alias("to_segment"),
        ])
        .agg([
            len().cast(DataType::Int64).alias("customers"),
            col(REVENUE_MICROS)
                .fill_null(lit(0i64).cast(DataType::Int128))
                .sum()
                .alias(REVENUE_MICROS),
            col(PREVIOUS_MICROS)
                .fill_null(lit(0i64).cast(DataType::Int128))
                .sum()
                .alias(PREVIOUS_MICROS),
        ])
        .select([
            col("from_segment"),
            col("to_segment"),
            col("customers"),
            to_currency(col(REVENUE_MICROS)).alias(REVENUE),
            to_currency(col(PREVIOUS_MICROS)).alias("previous_revenue"),
        ])
        .sort(["from_segment", "to_segment"], SortMultipleOptions::default())
}

/// The `segment_migration` table's columns and types.
pub fn schema() -> Schema {
    crate::schema::parse("from_segment str, to_segment str, customers i64, revenue f64, previous_revenue f64")
}
