//! CSV output tables, byte for byte as Polars' CSV writer writes them with its
//! default options (comma, `"` quotes only where needed, empty nulls, `\n`, floats
//! in their shortest round-trip form by zmij, dates as `YYYY-MM-DD`), for the
//! column types output tables have; a table with another ([`CsvWriter::writes`]) the
//! caller writes with Polars.
//!
//! Why a writer of our own: the customer table's CSV (290 MB at 10M lines) was the
//! largest part of the write stage. Polars' writer calls a boxed serializer per
//! cell, formats each date through `fmt`, and serialises 1024 rows per thread
//! between rounds in which the threads wait while the round is copied out. Here a
//! row is one `match` per cell, a column's dates are formatted once per distinct
//! day, each thread serialises [`ROWS_PER_PART`] rows at a time, and the parts go to
//! the file's writer without a copy. `tests/it/csv.rs` holds it to Polars' writer
//! on random frames.

use std::io::Write;
use std::mem::MaybeUninit;

use polars::prelude::*;
use rayon::prelude::*;

use crate::checksum::Blocks;

/// Rows each thread serialises at a time.
pub const ROWS_PER_PART: usize = 16 * 1024;

/// Bytes a number's text is appended in: one copy of a fixed size (two vector moves)
/// instead of a call to `memcpy` of its length per cell. Most of the customer
/// table's cells are numbers, and those calls were 8% of the write stage's CPU.
const CELL_COPY: usize = 32;

/// A number formatter's buffer with room after it, so that [`CELL_COPY`] bytes read
/// from anywhere in the buffer stay inside this struct.
#[repr(C)]
struct Padded<B> {
    buffer: B,
    slack: [MaybeUninit<u8>; CELL_COPY],
}

impl<B> Padded<B> {
    fn new(buffer: B) -> Self {
        Self {
            buffer,
            slack: [MaybeUninit::uninit(); CELL_COPY],
        }
    }

    /// Appends the text `format` writes into the buffer: [`CELL_COPY`] bytes are
    /// copied and the text's length kept. A text outside the buffer (a formatter's
    /// static one, for NaN) or longer is appended as usual.
    #[inline]
    fn append(&mut self, out: &mut Vec<u8>, format: impl FnOnce(&mut B) -> &str) {
        let start = (self as *const Self).cast::<u8>();
        let end = start.wrapping_add(std::mem::size_of::<Self>());
        let text = format(&mut self.buffer);
        let from = text.as_ptr();
        if from < start || from.wrapping_add(CELL_COPY) > end || text.len() > CELL_COPY {
            out.extend_from_slice(text.as_bytes());
            return;
        }
        out.reserve(CELL_COPY);
        // SAFETY: `from..from + CELL_COPY` lies inside `self` (checked above), and
        // `out` has room for CELL_COPY more bytes (reserved). The copy is untyped,
        // so bytes past the text that were never written may be copied; the length
        // then covers only the text's bytes, which `format` wrote.
        unsafe {
            std::ptr::copy_nonoverlapping(from, out.as_mut_ptr().add(out.len()), CELL_COPY);
            out.set_len(out.len() + text.len());
        }
    }
}

/// A column as the writer reads it (one chunk).
enum Cells<'a> {
    Text(&'a <StringType as PolarsDataType>::Array),
    Int(&'a <Int64Type as PolarsDataType>::Array),
    UInt(&'a <UInt64Type as PolarsDataType>::Array),
    Float(&'a <Float64Type as PolarsDataType>::Array),
    Float32(&'a <Float32Type as PolarsDataType>::Array),
    Bool(&'a <BooleanType as PolarsDataType>::Array),
    /// Days since the epoch, and their text by day from `first`.
    Date(&'a <Int32Type as PolarsDataType>::Array, DayText),
}

/// Each day of a column's range as text, formatted once.
struct DayText {
    first: i32,
    text: Vec<[u8; 16]>,
    len: Vec<u8>,
}

/// Days past which a date column's text is formatted per value instead.
const MAX_DAY_TABLE: i64 = 1 << 20;

impl DayText {
    fn new(days: &<Int32Type as PolarsDataType>::Array) -> Self {
        let (lo, hi) = days
            .iter()
            .flatten()
            .fold((i32::MAX, i32::MIN), |(lo, hi), &d| (lo.min(d), hi.max(d)));
        let mut table = DayText {
            first: lo,
            text: Vec::new(),
            len: Vec::new(),
        };
        if lo <= hi && i64::from(hi) - i64::from(lo) < MAX_DAY_TABLE {
            for day in lo..=hi {
                let mut text = [0u8; 16];
                let mut cursor = &mut text[..];
                write_date(&mut cursor, day);
                let len = 16 - cursor.len();
                table.text.push(text);
                table.len.push(len as u8);
            }
        }
        table
    }

    fn write(&self, day: i32, out: &mut Vec<u8>) {
        match usize::try_from(i64::from(day) - i64::from(self.first)) {
            Ok(at) if at < self.text.len() => {
                // The whole 16-byte entry in one copy, the length kept (as for numbers).
                out.extend_from_slice(&self.text[at]);
                out.truncate(out.len() - 16 + self.len[at] as usize);
            }
            _ => write_date(out, day),
        }
    }
}

/// A date as Polars writes it: chrono's `NaiveDate` display.
fn write_date(out: &mut impl Write, day: i32) {
    let _ = write!(out, "{}", crate::dates::from_epoch_days(day));
}

/// A string as Polars' `QuoteStyle::Necessary` writes it: quoted when it holds the
/// separator, a quote or a line break, with its quotes doubled; an empty string as
/// `""` (an empty cell is a null).
fn write_text(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        out.extend_from_slice(b"\"\"");
    } else if !bytes.iter().any(|&b| matches!(b, b',' | b'\n' | b'\r' | b'"')) {
        out.extend_from_slice(bytes);
    } else {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
}

impl Cells<'_> {
    /// Row `i`'s cell; nothing for a null.
    #[inline]
    fn write(&self, i: usize, out: &mut Vec<u8>) {
        match self {
            Cells::Text(a) => {
                if let Some(text) = a.get(i) {
                    write_text(text, out);
                }
            }
            Cells::Int(a) => {
                if let Some(v) = a.get(i) {
                    Padded::new(itoa::Buffer::new()).append(out, |b| b.format(v));
                }
            }
            Cells::UInt(a) => {
                if let Some(v) = a.get(i) {
                    Padded::new(itoa::Buffer::new()).append(out, |b| b.format(v));
                }
            }
            Cells::Float(a) => {
                if let Some(v) = a.get(i) {
                    Padded::new(zmij::Buffer::new()).append(out, |b| b.format(v));
                }
            }
            Cells::Float32(a) => {
                if let Some(v) = a.get(i) {
                    Padded::new(zmij::Buffer::new()).append(out, |b| b.format(v));
                }
            }
            Cells::Bool(a) => {
                if let Some(v) = a.get(i) {
                    out.extend_from_slice(if v { b"true" } else { b"false" });
                }
            }
            Cells::Date(a, text) => {
                if let Some(day) = a.get(i) {
                    text.write(day, out);
                }
            }
        }
    }
}

/// The type a column is read as, when the writer can write it.
fn read_as(dtype: &DataType) -> Option<DataType> {
    Some(match dtype {
        DataType::String => DataType::String,
        DataType::Boolean => DataType::Boolean,
        DataType::Date => DataType::Date,
        DataType::Float64 => DataType::Float64,
        DataType::Float32 => DataType::Float32,
        DataType::UInt64 => DataType::UInt64,
        d if d.is_integer() => DataType::Int64,
        DataType::Null => DataType::Int64,
        _ => return None,
    })
}

/// One table's CSV, written slice by slice.
pub struct CsvWriter<W> {
    out: W,
    /// Each column's type as read (see [`read_as`]).
    types: Vec<DataType>,
}

impl<W: Write + Blocks> CsvWriter<W> {
    /// Whether it writes every column type of `schema`.
    pub fn writes(schema: &Schema) -> bool {
        schema.iter_values().all(|dtype| read_as(dtype).is_some())
    }

    /// A writer for frames of `schema` (which it [`Self::writes`]), its header written.
    pub fn new(mut out: W, schema: &Schema) -> PolarsResult<Self> {
        let Some(types) = schema.iter_values().map(read_as).collect::<Option<Vec<_>>>() else {
            polars_bail!(ComputeError: "no CSV writer of ours for {schema:?}");
        };
        let mut header = Vec::new();
        for (k, name) in schema.iter_names().enumerate() {
            if k > 0 {
                header.push(b',');
            }
            write_text(name, &mut header);
        }
        header.push(b'\n');
        out.write_all(&header)?;
        Ok(Self { out, types })
    }

    /// Writes the rows of `frame` (of the writer's schema).
    pub fn write(&mut self, frame: &DataFrame) -> PolarsResult<()> {
        let columns = frame
            .columns()
            .iter()
            .zip(&self.types)
            .map(|(column, dtype)| {
                Ok(column
                    .as_materialized_series()
                    .cast(dtype)?
                    .rechunk()
                    .into_column())
            })
            .collect::<PolarsResult<Vec<Column>>>()?;
        let cells = columns.iter().map(cells_of).collect::<PolarsResult<Vec<_>>>()?;
        let height = frame.height();
        let parts: Vec<usize> = (0..height).step_by(ROWS_PER_PART).collect();
        // A round of parts per thread pair at a time: the CSV of a large table is
        // never held whole.
        let round = 2 * rayon::current_num_threads().max(1);
        for starts in parts.chunks(round) {
            let blocks: Vec<Vec<u8>> = starts
                .par_iter()
                .map(|&start| {
                    let rows = start..(start + ROWS_PER_PART).min(height);
                    let mut out = Vec::with_capacity(rows.len() * 16 * cells.len().max(1));
                    for i in rows {
                        for (k, column) in cells.iter().enumerate() {
                            if k > 0 {
                                out.push(b',');
                            }
                            column.write(i, &mut out);
                        }
                        out.push(b'\n');
                    }
                    out
                })
                .collect();
            for block in blocks {
                self.out.write_owned(block)?;
            }
        }
        Ok(())
    }

    pub fn finish(self) -> W {
        self.out
    }
}

/// A column (one chunk, of a type from [`read_as`]) as cells.
fn cells_of(column: &Column) -> PolarsResult<Cells<'_>> {
    let series = column.as_materialized_series();
    Ok(match series.dtype() {
        DataType::String => Cells::Text(series.str()?.downcast_as_array()),
        DataType::Boolean => Cells::Bool(series.bool()?.downcast_as_array()),
        DataType::Date => {
            let days = series.date()?.physical().downcast_as_array();
            Cells::Date(days, DayText::new(days))
        }
        DataType::Float64 => Cells::Float(series.f64()?.downcast_as_array()),
        DataType::Float32 => Cells::Float32(series.f32()?.downcast_as_array()),
        DataType::UInt64 => Cells::UInt(series.u64()?.downcast_as_array()),
        _ => Cells::Int(series.i64()?.downcast_as_array()),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ours(frame: &DataFrame) -> Vec<u8> {
        assert!(CsvWriter::<Vec<u8>>::writes(frame.schema()));
        let mut writer = CsvWriter::new(Vec::new(), frame.schema()).unwrap();
        // In two slices, as a sliced table is written.
        let half = frame.height() / 2;
        writer.write(&frame.slice(0, half)).unwrap();
        writer
            .write(&frame.slice(half as i64, frame.height() - half))
            .unwrap();
        writer.finish()
    }

    fn polars(frame: &DataFrame) -> Vec<u8> {
        let mut out = Vec::new();
        let mut frame = frame.clone();
        polars::prelude::CsvWriter::new(&mut out)
            .include_header(true)
            .finish(&mut frame)
            .unwrap();
        out
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            "[a-z ]{0,6}",
            "[a,\"\n\r x]{0,5}",
            Just(String::new()),
            "\\PC{0,4}",
        ])
    }

    fn float() -> impl Strategy<Value = Option<f64>> {
        prop::option::of(prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            (-1e7f64..1e7).prop_map(|x| (x * 100.0).round() / 100.0),
            (0u32..4000).prop_map(|days| f64::from(days) / 7.0),
        ])
    }

    /// A number's text comes out whole whatever part of the buffer it was written
    /// to (zmij writes from the start, itoa up to the end), and a text the buffer
    /// does not hold, or one longer than a fixed copy, is appended as usual.
    #[test]
    fn padded_cells_append_exactly_their_text() {
        let mut out = b"x,".to_vec();
        Padded::new(itoa::Buffer::new()).append(&mut out, |b| b.format(i64::MIN));
        out.push(b',');
        Padded::new(zmij::Buffer::new()).append(&mut out, |b| b.format(-1.234_567_890_123_456_7e-300));
        out.push(b',');
        Padded::new(zmij::Buffer::new()).append(&mut out, |b| b.format(f64::NAN));
        out.push(b',');
        let long = "a text longer than a fixed copy of 32 bytes";
        Padded::new([0u8; 64]).append(&mut out, |buffer| {
            buffer[..long.len()].copy_from_slice(long.as_bytes());
            std::str::from_utf8(&buffer[..long.len()]).unwrap()
        });
        out.push(b',');
        Padded::new([b'7'; 40]).append(&mut out, |buffer| std::str::from_utf8(&buffer[38..]).unwrap());
        let expected = format!(
            "x,{},{},NaN,{long},77",
            i64::MIN,
            zmij::Buffer::new().format(-1.234_567_890_123_456_7e-300)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        /// Every type the writer takes, with nulls, quotes and line breaks, special
        /// floats and dates of any year: the bytes Polars' writer writes.
        #[test]
        fn writes_what_polars_writes(
            rows in prop::collection::vec(
                (text(), prop::option::of(any::<i64>()), float(), prop::option::of(any::<f32>()),
                 prop::option::of(any::<bool>()), prop::option::of(-800_000i32..3_000_000), prop::option::of(any::<u64>()),
                 prop::option::of(any::<u32>())),
                0..40,
            ),
        ) {
            let column = |name: &str, values: Column| values.with_name(name.into());
            let frame = DataFrame::new_infer_height(vec![
                column("text, \"quoted\"", Column::new("".into(), rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())),
                column("i64", Column::new("".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                column("f64", Column::new("".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>())),
                column("f32", Column::new("".into(), rows.iter().map(|r| r.3).collect::<Vec<_>>())),
                column("bool", Column::new("".into(), rows.iter().map(|r| r.4).collect::<Vec<_>>())),
                column("date", Column::new("".into(), rows.iter().map(|r| r.5).collect::<Vec<_>>()).cast(&DataType::Date).unwrap()),
                column("u64", Column::new("".into(), rows.iter().map(|r| r.6).collect::<Vec<_>>())),
                column("u32", Column::new("".into(), rows.iter().map(|r| r.7).collect::<Vec<_>>())),
            ])
            .unwrap();
            let (got, want) = (ours(&frame), polars(&frame));
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
        }
    }

    /// A table past one part per thread, its parts written in order.
    #[test]
    fn large_tables_are_written_in_row_order() {
        let n = 5 * ROWS_PER_PART + 17;
        let frame = df!(
            "n" => (0..n as i64).collect::<Vec<_>>(),
            "x" => (0..n).map(|i| i as f64 / 3.0).collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(ours(&frame), polars(&frame));
    }
}
