//! An output table as the writer sees it: collected, or made a slice of rows at a
//! time so that a table larger than memory never exists whole (the customer table
//! at tens of millions of customers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use polars::prelude::*;

use crate::error::Result;

/// Rows per slice of a [`Table::Sliced`] table: four Parquet row groups
/// ([`ROW_GROUP_ROWS`]), a few hundred MB of customer columns.
pub const SLICE_ROWS: usize = 4 * ROW_GROUP_ROWS;

/// Rows per Parquet row group (Polars' default).
pub const ROW_GROUP_ROWS: usize = 512 * 512;

/// Frames with the same columns, one under the other (their chunks, not copied); an
/// empty frame when there are none.
pub fn stacked(frames: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let mut frames = frames.into_iter();
    let mut all = frames.next().unwrap_or_default();
    for frame in frames {
        all.vstack_mut_owned(frame)?;
    }
    Ok(all)
}

/// Table `name` of an output directory: its Parquet file, else its CSV (with
/// `customer_id` read as text, as it was written); `None` when it has neither.
pub fn scan_written(dir: &std::path::Path, name: &str) -> Result<Option<LazyFrame>> {
    let parquet = dir.join(format!("{name}.parquet"));
    let csv = dir.join(format!("{name}.csv"));
    if parquet.is_file() {
        return Ok(Some(LazyFrame::scan_parquet(
            PlRefPath::try_from_path(&parquet)?,
            Default::default(),
        )?));
    }
    if !csv.is_file() {
        return Ok(None);
    }
    let ids = [Field::new(crate::schema::CUSTOMER_ID.into(), DataType::String)];
    Ok(Some(
        LazyCsvReader::new(PlRefPath::try_from_path(&csv)?)
            .with_has_header(true)
            .with_dtype_overwrite(Some(std::sync::Arc::new(ids.into_iter().collect())))
            .finish()?,
    ))
}

/// What makes a sliced table: rows `offset..offset + len` at a time.
pub trait Slicer: Send + Sync {
    fn slice(&self, offset: usize, len: usize) -> Result<DataFrame>;
}

impl<F: Fn(usize, usize) -> Result<DataFrame> + Send + Sync> Slicer for F {
    fn slice(&self, offset: usize, len: usize) -> Result<DataFrame> {
        self(offset, len)
    }
}

pub enum Table {
    Frame(DataFrame),
    /// `height` rows, made `rows` at a time by `slicer` as they are written; every
    /// slice has the same columns, and the slices in order are the table.
    Sliced {
        height: usize,
        rows: usize,
        slicer: Box<dyn Slicer>,
        /// Time spent making slices, in nanoseconds (each use makes them again: the
        /// report, then every format written).
        busy_nanos: AtomicU64,
    },
}

impl Table {
    pub fn sliced(height: usize, rows: usize, slicer: impl Slicer + 'static) -> Self {
        Table::Sliced {
            height,
            rows,
            slicer: Box::new(slicer),
            busy_nanos: AtomicU64::new(0),
        }
    }

    pub fn height(&self) -> usize {
        match self {
            Table::Frame(frame) => frame.height(),
            Table::Sliced { height, .. } => *height,
        }
    }

    /// Seconds spent making this table's slices so far; `None` when it is whole.
    pub fn slicing_seconds(&self) -> Option<f64> {
        match self {
            Table::Frame(_) => None,
            Table::Sliced { busy_nanos, .. } => Some(busy_nanos.load(Ordering::Relaxed) as f64 * 1e-9),
        }
    }

    /// The table's slices in order; an empty table still gives one (empty) slice,
    /// which carries the columns.
    pub fn slices(&self) -> impl Iterator<Item = Result<DataFrame>> + '_ {
        let (height, step) = match self {
            Table::Frame(frame) => (frame.height(), frame.height().max(1)),
            Table::Sliced { height, rows, .. } => (*height, (*rows).max(1)),
        };
        let offsets = (0..height.max(1)).step_by(step);
        offsets.map(move |offset| match self {
            Table::Frame(frame) => Ok(frame.clone()),
            Table::Sliced {
                slicer, busy_nanos, ..
            } => {
                let started = Instant::now();
                let slice = slicer.slice(offset, step.min(height - offset.min(height)));
                busy_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                slice
            }
        })
    }

    /// The whole table, or only `columns` of it (tests, the report).
    pub fn collect(&self, columns: Option<&[&str]>) -> Result<DataFrame> {
        let select = |frame: DataFrame| -> Result<DataFrame> {
            Ok(match columns {
                Some(names) => frame.select(names.iter().copied())?,
                None => frame,
            })
        };
        if let Table::Frame(frame) = self {
            return select(frame.clone());
        }
        let slices = self
            .slices()
            .map(|slice| select(slice?))
            .collect::<Result<Vec<_>>>()?;
        Ok(stacked(slices)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(height: usize) -> Table {
        Table::sliced(
            height,
            SLICE_ROWS,
            |offset: usize, len: usize| -> Result<DataFrame> {
                let values: Vec<u64> = (offset as u64..(offset + len) as u64).collect();
                Ok(df!("n" => values)?)
            },
        )
    }

    #[test]
    fn slices_cover_every_row_once_in_order() {
        let height = 2 * SLICE_ROWS + 5;
        let table = numbers(height);
        let lengths: Vec<usize> = table.slices().map(|s| s.unwrap().height()).collect();
        assert_eq!(lengths, vec![SLICE_ROWS, SLICE_ROWS, 5]);
        let all = table.collect(None).unwrap();
        let expected: Vec<u64> = (0..height as u64).collect();
        assert_eq!(
            all.column("n")
                .unwrap()
                .u64()
                .unwrap()
                .to_vec_null_aware()
                .left()
                .unwrap(),
            expected
        );
    }

    #[test]
    fn an_empty_table_still_has_its_columns() {
        let table = numbers(0);
        let slices: Vec<DataFrame> = table.slices().map(|s| s.unwrap()).collect();
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].height(), 0);
        assert_eq!(table.collect(None).unwrap().get_column_names(), ["n"]);
    }
}
