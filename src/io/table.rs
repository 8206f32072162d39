//! An output table as the writer sees it: collected, or made a slice of rows at a
//! time so that a table larger than memory never exists whole (the customer table
//! at tens of millions of customers).

use polars::prelude::*;

use crate::error::Result;

/// Rows per slice of a [`Table::Sliced`] table: four Parquet row groups
/// ([`ROW_GROUP_ROWS`]), a few hundred MB of customer columns.
pub const SLICE_ROWS: usize = 4 * ROW_GROUP_ROWS;

/// Rows per Parquet row group (Polars' default).
pub const ROW_GROUP_ROWS: usize = 512 * 512;

/// Test hook: rows per slice of every table made in slices (the customer table,
/// the orders' customer slices), so that tests on small inputs make many slices.
const SLICE_ROWS_ENV: &str = "LOYALTY_TEST_SLICE_ROWS";

/// The test hook's rows per slice, when set.
pub fn test_slice_rows() -> Option<usize> {
    std::env::var(SLICE_ROWS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&rows| rows > 0)
}

/// Rows per slice: [`SLICE_ROWS`] unless the test hook says otherwise.
pub fn slice_rows() -> usize {
    test_slice_rows().unwrap_or(SLICE_ROWS)
}

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

/// Makes rows `offset..offset + len` of a sliced table.
pub type MakeSlice = Box<dyn Fn(usize, usize) -> Result<DataFrame> + Send + Sync>;

pub enum Table {
    Frame(DataFrame),
    /// `height` rows, made `rows` at a time by `slice` as they are written; every
    /// slice has the same columns, and the slices in order are the table.
    Sliced {
        height: usize,
        rows: usize,
        slice: MakeSlice,
    },
}

impl Table {
    pub fn height(&self) -> usize {
        match self {
            Table::Frame(frame) => frame.height(),
            Table::Sliced { height, .. } => *height,
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
            Table::Sliced { slice, .. } => slice(offset, step.min(height - offset.min(height))),
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
        Table::Sliced {
            height,
            rows: SLICE_ROWS,
            slice: Box::new(|offset, len| {
                let values: Vec<u64> = (offset as u64..(offset + len) as u64).collect();
                Ok(df!("n" => values)?)
            }),
        }
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
