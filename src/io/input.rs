//! Resolving `input.orders` to Parquet files and scanning them lazily.
//!
//! Everything here reads Parquet *metadata* only: file lists, row counts and
//! schemas are checked before any heavy work, so a wrong path or column fails
//! in milliseconds with the names that are there.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use crate::error::{InputError, Result};

/// One input file and its row count from the Parquet footer.
#[derive(Debug, Clone, Serialize)]
pub struct InputFile {
    pub path: String,
    pub rows: u64,
}

/// The resolved input: what Polars scans, and the files behind it.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub files: Vec<InputFile>,
    /// A single directory is scanned as one source so hive partitions become columns.
    hive_dir: Option<PathBuf>,
}

impl Inputs {
    /// Human-readable name for messages: the file, or the first file and a count.
    pub fn label(&self) -> String {
        match (&self.hive_dir, self.files.as_slice()) {
            (Some(dir), _) => dir.display().to_string(),
            (None, [one]) => one.path.clone(),
            (None, [first, rest @ ..]) => format!("{} (and {} more files)", first.path, rest.len()),
            (None, []) => "<no input>".into(),
        }
    }

    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// Expands files, directories and globs; checks each file is readable Parquet and
/// that all files share one schema.
pub fn resolve(orders: &[String]) -> Result<Inputs> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut hive_dir = None;
    for entry in orders {
        let path = Path::new(entry);
        if entry.contains(['*', '?', '[']) {
            let matches = glob::glob(entry)
                .map_err(|e| InputError::NoFiles {
                    pattern: entry.clone(),
                    hint: format!(": the glob is malformed ({e})"),
                })?
                .filter_map(|p| p.ok())
                .filter(|p| p.is_file())
                .collect::<Vec<_>>();
            if matches.is_empty() {
                return Err(InputError::NoFiles {
                    pattern: entry.clone(),
                    hint: String::new(),
                }
                .into());
            }
            paths.extend(matches);
        } else if path.is_dir() {
            let mut found = Vec::new();
            parquet_files_under(path, &mut found).map_err(|e| InputError::NotParquet {
                path: entry.clone(),
                reason: e.to_string(),
            })?;
            if found.is_empty() {
                return Err(InputError::NoFiles {
                    pattern: format!("{}/**/*.parquet", path.display()),
                    hint: format!(": the directory {entry} holds no .parquet files"),
                }
                .into());
            }
            if orders.len() == 1 {
                hive_dir = Some(path.to_path_buf());
            }
            paths.extend(found);
        } else if path.is_file() {
            paths.push(path.to_path_buf());
        } else {
            return Err(InputError::MissingFile { path: entry.clone() }.into());
        }
    }
    paths.sort();
    paths.dedup();

    let mut files = Vec::with_capacity(paths.len());
    let mut first_schema: Option<(String, std::sync::Arc<ArrowSchema>)> = None;
    for path in paths {
        let label = path.display().to_string();
        let not_parquet = |e: &dyn std::fmt::Display| InputError::NotParquet {
            path: label.clone(),
            reason: e.to_string(),
        };
        let file = File::open(&path).map_err(|e| not_parquet(&e))?;
        let mut reader = ParquetReader::new(file);
        let rows = reader.num_rows().map_err(|e| not_parquet(&e))? as u64;
        let schema = reader.schema().map_err(|e| not_parquet(&e))?;
        match &first_schema {
            None => first_schema = Some((label.clone(), schema)),
            Some((first_label, first)) => {
                if let Some(difference) = schema_difference(first, &schema) {
                    return Err(InputError::SchemaMismatch(format!(
                        "{label} differs from {first_label}: {difference}; rewrite the files with one schema or list only matching files in input.orders"
                    ))
                    .into());
                }
            }
        }
        files.push(InputFile { path: label, rows });
    }
    Ok(Inputs { files, hive_dir })
}

fn parquet_files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Spark and friends leave `_SUCCESS` and `.crc` files beside the data.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if path.is_dir() {
            parquet_files_under(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn schema_difference(a: &ArrowSchema, b: &ArrowSchema) -> Option<String> {
    for (name, field) in a.iter() {
        match b.get(name) {
            None => return Some(format!("column `{name}` is missing")),
            Some(other) if other.dtype() != field.dtype() => {
                return Some(format!(
                    "column `{name}` is {:?} there but {:?} in the first file",
                    other.dtype(),
                    field.dtype()
                ));
            }
            Some(_) => {}
        }
    }
    b.iter_names()
        .find(|name| a.get(name.as_str()).is_none())
        .map(|name| format!("it has an extra column `{name}`"))
}

/// A lazy scan of all input files. Nothing is read until the plan is collected.
pub fn scan(inputs: &Inputs) -> Result<LazyFrame> {
    let (sources, hive) = match &inputs.hive_dir {
        Some(dir) => (
            vec![PlRefPath::new(dir.display().to_string())],
            HiveOptions::new_enabled(),
        ),
        None => (
            inputs.files.iter().map(|f| PlRefPath::new(&f.path)).collect(),
            HiveOptions::new_disabled(),
        ),
    };
    let args = ScanArgsParquet {
        hive_options: hive,
        glob: false,
        ..Default::default()
    };
    Ok(LazyFrame::scan_parquet_sources(
        ScanSources::Paths(sources.into_iter().collect()),
        args,
    )?)
}
