//! SPEC §1 step 3, exact duplicate rows: only lines whose fingerprint repeats are
//! candidates; their raw values are held from their batch when every copy falls in
//! one batch or two batches one after the other, else read again from the input,
//! and compared once every pass is over. Taking a duplicate out changes its order's
//! value, never its date, channel or categories, nor whether it keeps a line (an
//! equal line stays), so it happens after the fold.

use polars::prelude::*;

use super::book::OrderBook;
use super::intern::NONE;
use super::plan::{self, LinePlan, Normalised, line};
use super::read_in_batches;
use super::shard::Candidate;
use crate::error::{Error, Result};
use crate::schema::internal::{MARGIN, VALUE};

/// `frame` with each string column holding only its own values. A gathered or
/// filtered string column still shares its source's buffers, and Polars decodes a
/// Parquet page's strings into one buffer, short ones included: a few rows kept from
/// each batch had kept every decoded page alive (0.7 GB at 100M lines, 2.9 GB in
/// 262k-row row groups).
pub(super) fn with_owned_strings(mut frame: DataFrame) -> PolarsResult<DataFrame> {
    for name in frame.get_column_names_owned() {
        let Ok(strings) = frame.column(&name)?.str() else {
            continue;
        };
        let chunks = strings
            .downcast_iter()
            .map(|array| array.clone().gc().boxed())
            .collect::<Vec<_>>();
        // SAFETY: the column's own chunks, of its type, only compacted.
        let owned = unsafe { StringChunked::from_chunks(name.clone(), chunks) };
        frame.replace(&name, owned.into_column())?;
    }
    Ok(frame)
}

/// The candidate rows' raw values ([`plan::rows_with_raw_values`]), read again from
/// the input when copies of a line fell in different batches; each batch's rows own
/// their strings ([`with_owned_strings`]), as the held ones do.
pub(super) fn read_candidates(
    normalised: &Normalised,
    plan: &LinePlan,
    rows: Vec<IdxSize>,
) -> Result<DataFrame> {
    let lines = plan::rows_with_raw_values(normalised, plan, rows);
    let mut parts: Vec<DataFrame> = Vec::new();
    read_in_batches(&lines, |batch| {
        parts.push(with_owned_strings(batch)?);
        Ok(())
    })?;
    if parts.is_empty() {
        return Err(Error::Internal(
            "the input changed while it was read: candidate rows are gone".into(),
        ));
    }
    Ok(crate::io::table::stacked(parts)?)
}

impl OrderBook {
    /// Keeps the raw values of a batch's lines (those of `repeated` rows) whose
    /// fingerprints repeat within the batch or the next. Copies of a line usually
    /// sit close together, so step 3 can mostly be decided without reading the
    /// input again.
    pub(super) fn hold(
        &mut self,
        batch: &DataFrame,
        repeated: &hashbrown::HashSet<IdxSize>,
    ) -> PolarsResult<()> {
        let rows = batch.column(line::ROW)?.as_materialized_series().idx()?.rechunk();
        let rows = rows.downcast_as_array();
        let local: Vec<IdxSize> = (0..batch.height())
            .filter(|&i| repeated.contains(&rows.value(i)))
            .map(|i| i as IdxSize)
            .collect();
        for &i in &local {
            let row = rows.value(i as usize);
            self.held_rows.push(row);
            self.held_row_set.insert(row);
        }
        let lines = batch
            .select(plan::duplicate_check_columns(&self.raw_columns, self.has_margin))?
            .take(&IdxCa::from_vec("local".into(), local))?;
        self.held.push(with_owned_strings(lines)?);
        Ok(())
    }

    /// The candidates' raw values when every candidate was held within its batch;
    /// `None` when some copies lie in different batches (then the input is read again).
    pub fn held_candidates(&mut self, candidates: &[IdxSize]) -> PolarsResult<Option<DataFrame>> {
        self.held_rows.sort_unstable();
        if self.held_rows != candidates {
            tracing::debug!(
                held = self.held_rows.len(),
                candidates = candidates.len(),
                "some copies of a line lie more than a batch apart"
            );
            return Ok(None);
        }
        Ok(Some(crate::io::table::stacked(std::mem::take(&mut self.held))?))
    }

    /// The rows whose fingerprint repeats, in order: the only candidates for exact
    /// duplicates. Known once every pass has ended.
    pub fn duplicate_candidates(&self) -> Vec<IdxSize> {
        self.candidates.iter().map(|c| c.row).collect()
    }

    /// Step 3 decided on the raw values of the candidate rows (their
    /// [`plan::duplicate_check_columns`]): each group of equal rows keeps one line.
    /// Every pass has ended: a group's order is found by one of its rows.
    pub fn remove_duplicates(&mut self, candidates: DataFrame) -> Result<()> {
        let groups = candidates
            .lazy()
            .group_by(
                self.raw_columns
                    .iter()
                    .map(|c| col(c.clone()))
                    .collect::<Vec<_>>(),
            )
            .agg([
                len().alias("__copies"),
                col(line::ROW).first(),
                col(VALUE).first(),
                col(line::DROPPED_BY).first(),
                if self.has_margin {
                    col(MARGIN).first()
                } else {
                    lit(NULL).cast(DataType::Int64).alias(MARGIN)
                },
            ])
            .filter(col("__copies").gt(lit(1)))
            .collect()?;
        let column = |name: &str| -> Result<&Series> { Ok(groups.column(name)?.as_materialized_series()) };
        let copies = column("__copies")?.cast(&DataType::UInt64)?;
        let rows = column(line::ROW)?.idx()?;
        let (values, verdicts) = (column(VALUE)?.i64()?, column(line::DROPPED_BY)?.i32()?);
        let margins = column(MARGIN)?.i64()?;
        for (i, ((copies, row), (value, verdict))) in copies
            .u64()?
            .iter()
            .zip(rows.iter())
            .zip(values.iter().zip(verdicts.iter()))
            .enumerate()
        {
            let not_folded = || Error::Internal("a duplicate line was not folded".into());
            let row = row.ok_or_else(not_folded)?;
            let at = self
                .candidates
                .binary_search_by_key(&row, |c| c.row)
                .map_err(|_| not_folded())?;
            let Candidate { shard, order, .. } = self.candidates[at];
            let shard = &mut self.sealed[shard as usize];
            let extra = copies.unwrap_or(1) - 1;
            shard.duplicates += extra;
            match verdict.unwrap_or(0) {
                0 if order != NONE => {
                    // Equal kept lines: one stays, so the order keeps a line.
                    let value = i128::from(value.unwrap_or(0)) * i128::from(extra);
                    shard.orders.rollups[order as usize].value -= value;
                    if let Some(margin) = margins.get(i) {
                        shard.orders.margin[order as usize] -= i128::from(margin) * i128::from(extra);
                    }
                }
                0 => return Err(not_folded()),
                reason => shard.dropped[reason as usize - 1] -= extra,
            }
        }
        Ok(())
    }
}
