//! Parquet output tables, byte for byte as Polars' batched writer writes them (Snappy,
//! its default statistics and page size, row groups of [`ROW_GROUP_ROWS`]), with
//! the row groups' columns encoded and compressed in parallel.
//!
//! Why: Polars' batched writer encodes and compresses each page as the file's
//! writer asks for it, on the one thread that writes, so the customer table's
//! Parquet (100 MB at 10M lines) ran on one core at the end of the write stage,
//! after everything else had finished. Here every column of every row group is
//! encoded by `polars_parquet` (the functions Polars' writer calls, with the same
//! options) on the thread pool first, and the compressed pages are handed to
//! Polars' writer, which writes them in order with the file's metadata.
//! `tests::writes_what_polars_writes` holds the bytes to Polars' own.

use std::io::Write;

use polars::io::parquet::write::{BatchedWriter, get_encodings};
use polars::prelude::*;
use polars_parquet::write::{
    CompressedPage, CompressionOptions, Encoding, ParquetType, Version, WriteOptions, array_to_columns,
    compress,
};
use rayon::prelude::*;

use crate::io::table::ROW_GROUP_ROWS;

/// One table's Parquet file, written slice by slice.
pub struct ParquetWriter<W: Write> {
    writer: BatchedWriter<W>,
    fields: Vec<ParquetType>,
    encodings: Vec<Vec<Encoding>>,
    options: WriteOptions,
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(out: W, schema: &Schema) -> PolarsResult<Self> {
        let compression = ParquetCompression::Snappy;
        let mut writer = polars::prelude::ParquetWriter::new(out)
            .with_compression(compression)
            .batched(schema)?;
        let fields = writer.parquet_schema().fields().to_vec();
        let encodings = get_encodings(&schema.to_arrow(CompatLevel::newest())).to_vec();
        // As Polars' `ParquetWriter` makes them from its defaults and the compression.
        let options = WriteOptions {
            statistics: StatisticsOptions::default(),
            compression: CompressionOptions::from(compression),
            version: Version::V1,
            data_page_size: None,
        };
        Ok(Self {
            writer,
            fields,
            encodings,
            options,
        })
    }

    /// Writes `frame` as row groups of [`ROW_GROUP_ROWS`] rows.
    pub fn write(&mut self, frame: &DataFrame) -> PolarsResult<()> {
        let mut frame = frame.clone();
        let chunked = polars::frame::chunk_df_for_writing(&mut frame, ROW_GROUP_ROWS)?;
        let groups: Vec<_> = chunked
            .iter_chunks(CompatLevel::newest(), false)
            .filter(|batch| !batch.is_empty())
            .collect();
        // Every column of every row group at once, in order.
        let tasks: Vec<(usize, usize)> = (0..groups.len())
            .flat_map(|g| (0..self.fields.len()).map(move |c| (g, c)))
            .collect();
        let (fields, encodings, options) = (&self.fields, &self.encodings, self.options);
        let pages: Vec<Vec<Vec<CompressedPage>>> = tasks
            .par_iter()
            .map(|&(g, c)| {
                let array = &groups[g].columns()[c];
                array_to_columns(array, fields[c].clone(), options, &encodings[c])?
                    .into_iter()
                    .map(|column| {
                        column
                            .map(|page| Ok(compress(page?, Vec::new(), options.compression)?))
                            .collect::<PolarsResult<Vec<_>>>()
                    })
                    .collect::<PolarsResult<Vec<_>>>()
            })
            .collect::<PolarsResult<_>>()?;
        let mut pages = pages.into_iter();
        for group in &groups {
            let columns: Vec<Vec<CompressedPage>> =
                pages.by_ref().take(self.fields.len()).flatten().collect();
            self.writer.write_row_group(group.len() as u64, &columns)?;
        }
        Ok(())
    }

    pub fn finish(self) -> PolarsResult<()> {
        self.writer.finish().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(frame: &DataFrame, slices: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut writer = ParquetWriter::new(&mut out, frame.schema()).unwrap();
            let step = frame.height().div_ceil(slices).max(1);
            for offset in (0..frame.height().max(1)).step_by(step) {
                writer.write(&frame.slice(offset as i64, step)).unwrap();
            }
            writer.finish().unwrap();
        }
        out
    }

    /// What the writer did before: Polars' batched writer, a slice at a time.
    fn polars(frame: &DataFrame, slices: usize) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut writer = polars::prelude::ParquetWriter::new(&mut out)
                .with_compression(ParquetCompression::Snappy)
                .batched(frame.schema())
                .unwrap();
            let step = frame.height().div_ceil(slices).max(1);
            for offset in (0..frame.height().max(1)).step_by(step) {
                let mut slice = frame.slice(offset as i64, step);
                let groups = polars::frame::chunk_df_for_writing(&mut slice, ROW_GROUP_ROWS).unwrap();
                writer.write_batch(&groups).unwrap();
            }
            writer.finish().unwrap();
        }
        out
    }

    /// The output tables' column types, nulls, several row groups and slices.
    #[test]
    fn writes_what_polars_writes() {
        let n = 2 * ROW_GROUP_ROWS + 1234;
        let frame = df!(
            "customer_id" => (0..n).map(|i| format!("C{:08}", (i * 7919) % n)).collect::<Vec<_>>(),
            "day" => (0..n as i32).map(|i| 19_000 + i % 900).collect::<Vec<_>>(),
            "orders" => (0..n as i64).map(|i| i % 17).collect::<Vec<_>>(),
            "revenue" => (0..n).map(|i| (i % 1000) as f64 / 7.0).collect::<Vec<_>>(),
            "maybe" => (0..n).map(|i| (i % 3 != 0).then_some(i as f64)).collect::<Vec<_>>(),
            "segment" => (0..n).map(|i| ["Champions", "Lost", "At Risk"][i % 3]).collect::<Vec<_>>(),
            "flag" => (0..n).map(|i| (i % 5 != 0).then_some(i % 2 == 0)).collect::<Vec<_>>(),
        )
        .unwrap()
        .lazy()
        .with_column(col("day").cast(DataType::Date))
        .collect()
        .unwrap();
        for slices in [1, 3] {
            assert!(ours(&frame, slices) == polars(&frame, slices), "{slices} slices");
        }
        let empty = frame.slice(0, 0);
        assert!(ours(&empty, 1) == polars(&empty, 1), "an empty table");
    }
}
