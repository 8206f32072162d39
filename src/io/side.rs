//! Side tables beside the order history: the identity map (`input.identities`) and
//! survey responses (`input.surveys`). Small tables read whole, Parquet or CSV by
//! extension; a missing file or column is an input error naming the key and file.

use std::path::Path;

use polars::prelude::*;

use crate::error::{InputError, Result};

/// The columns `columns` of the side table at `path` (config key `key`), read whole.
/// CSV is read as text (ids keep leading zeros); callers type the columns.
pub fn read_table(key: &str, path: &str, columns: &[&str]) -> Result<DataFrame> {
    let bad = |message: String| InputError::SideTable {
        key: key.into(),
        path: path.into(),
        message,
    };
    let file = Path::new(path);
    if !file.is_file() {
        return Err(bad("does not exist (the path is relative to the working directory)".into()).into());
    }
    let is_csv = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let frame = if is_csv {
        LazyCsvReader::new(PlRefPath::try_from_path(file)?)
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .finish()
            .and_then(LazyFrame::collect)
    } else {
        std::fs::File::open(file)
            .map_err(PolarsError::from)
            .and_then(|f| ParquetReader::new(f).finish())
    }
    .map_err(|e| {
        bad(format!(
            "cannot be read as {}: {e}",
            if is_csv { "CSV" } else { "Parquet" }
        ))
    })?;
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|n| format!("`{n}`"))
        .collect();
    for column in columns {
        if frame.column(column).is_err() {
            return Err(bad(format!(
                "has no column `{column}`; its columns are: {}",
                names.join(", ")
            ))
            .into());
        }
    }
    Ok(frame.select(columns.iter().copied())?)
}

/// Ids as trimmed text (integer ids allowed); empty text is missing.
pub fn id_text(frame: &DataFrame, column: &str, key: &str, path: &str) -> Result<StringChunked> {
    let series = frame.column(column)?.as_materialized_series();
    let text = match series.dtype() {
        DataType::String => series.clone(),
        d if d.is_integer() => series.cast(&DataType::String)?,
        d => {
            return Err(InputError::SideTable {
                key: key.into(),
                path: path.into(),
                message: format!("column `{column}` has type {d}; expected a string or integer id"),
            }
            .into());
        }
    };
    let trimmed: StringChunked = text
        .str()?
        .iter()
        .map(|s| s.map(str::trim).filter(|s| !s.is_empty()))
        .collect();
    Ok(trimmed.with_name(column.into()))
}
