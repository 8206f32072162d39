//! Resolving `input.orders` to Parquet files and scanning exactly those files.
//!
//! Everything here reads Parquet *metadata* only: file lists, row counts and
//! schemas are checked before any heavy work, so a wrong path or column fails
//! in milliseconds with the names that are there.
//!
//! The files this resolver lists are the files the scan reads, and the files the
//! manifest names: Polars is handed the list, never a directory or a pattern to
//! expand again (it would read hidden files, `_temporary/` and Spark's `.crc`
//! files beside the data). Hive partitions (`key=value` directories under a
//! directory input) become columns here, typed as Polars types them.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use polars::prelude::*;
use serde::Serialize;

use crate::config::{InputFormat, StorageOptions};
use crate::dates::date_lit;
use crate::error::{InputError, Result};
use crate::io::cloud;

/// One input file: its path as listed, its row count from the Parquet footer and its size.
#[derive(Debug, Clone, Serialize)]
pub struct InputFile {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// `key=value` directories between the input directory and the file.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<(String, String)>,
    /// An object's ETag, as the store reported it when listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// What the user named in `input.orders`, resolved: the output directory must not
/// overlap any of these (see [`crate::io::output`]).
#[derive(Debug, Clone)]
pub enum InputRoot {
    File(PathBuf),
    Dir(PathBuf),
    /// The pattern and its directory without wildcards.
    Glob {
        pattern: String,
        base: PathBuf,
    },
    /// An object, prefix or pattern in object storage, as written (no trailing `/`).
    Url(String),
}

/// The resolved input: the files behind `input.orders`, in the order they are read.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub files: Vec<InputFile>,
    pub roots: Vec<InputRoot>,
    /// A single directory input: its hive partitions become columns.
    hive_dir: Option<PathBuf>,
    /// The columns of the files (all alike): a file's own column of a partition
    /// key's name wins over the directory's value.
    file_columns: Vec<String>,
    /// The files are CSV (all of them: one input is one format).
    csv: bool,
    /// Polars' options for object storage, when the files are URLs.
    cloud: Option<polars::io::cloud::CloudOptions>,
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

    /// The file and 1-based row within it of a 0-based row of the whole input.
    pub fn locate(&self, row: u64) -> Option<(&str, u64)> {
        let mut start = 0;
        for file in &self.files {
            if row < start + file.rows {
                return Some((&file.path, row - start + 1));
            }
            start += file.rows;
        }
        None
    }
}

/// Glob wildcards: a path holding one that names no existing file is a pattern.
fn has_wildcards(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

/// Expands files, directories and globs; checks each file is readable Parquet and
/// that all files share one schema. Files ending in `.csv` are CSV
/// ([`resolve_as`] with [`InputFormat::Auto`]).
pub fn resolve(orders: &[String]) -> Result<Inputs> {
    resolve_as(orders, InputFormat::Auto, &StorageOptions::default())
}

/// Whether a file is read as CSV.
fn is_csv(path: &Path, format: InputFormat) -> bool {
    match format {
        InputFormat::Csv => true,
        InputFormat::Parquet => false,
        InputFormat::Auto => path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    }
}

/// Whether a file found in a directory is an input file: `.parquet`, `.csv`, or both.
fn is_listed(path: &Path, format: InputFormat) -> bool {
    let has = |ext: &str| path.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext));
    match format {
        InputFormat::Parquet => has("parquet"),
        InputFormat::Csv => has("csv"),
        InputFormat::Auto => has("parquet") || has("csv"),
    }
}

/// CSV files with a header row, every column text: the typing rules of a text
/// column of a Parquet file then apply (dates by input.date_format, exact amounts).
fn csv_scan(
    paths: Vec<PlRefPath>,
    cloud: Option<&polars::io::cloud::CloudOptions>,
) -> PolarsResult<LazyFrame> {
    LazyCsvReader::new_paths(paths.into_iter().collect())
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .with_glob(false)
        .with_cloud_options(cloud.cloned())
        .finish()
}

/// Parquet files, exactly those (no globbing, no hive directories of Polars' own).
fn parquet_scan(
    paths: Vec<PlRefPath>,
    cloud: Option<&polars::io::cloud::CloudOptions>,
) -> PolarsResult<LazyFrame> {
    let args = ScanArgsParquet {
        hive_options: HiveOptions::new_disabled(),
        glob: false,
        cloud_options: cloud.cloned(),
        ..Default::default()
    };
    LazyFrame::scan_parquet_sources(ScanSources::Paths(paths.into_iter().collect()), args)
}

/// A file's or object's row count and columns, read through a scan (a Parquet
/// footer, or the whole CSV for its count).
fn scan_facts(
    path: &str,
    csv: bool,
    cloud: Option<&polars::io::cloud::CloudOptions>,
) -> PolarsResult<(u64, Schema)> {
    let paths = vec![PlRefPath::new(path)];
    let mut scan = if csv {
        csv_scan(paths, cloud)?
    } else {
        parquet_scan(paths, cloud)?
    };
    let schema = scan.collect_schema()?;
    let rows = scan.select([len()]).collect()?;
    let rows = rows.columns()[0].get(0)?.extract::<u64>().unwrap_or(0);
    Ok((rows, schema.as_ref().clone()))
}

/// An object a URL entry names: its URL, hive partitions, size and ETag.
struct Listed {
    url: String,
    partitions: Vec<(String, String)>,
    bytes: u64,
    etag: Option<String>,
}

/// The objects behind a URL entry of `input.orders`: the object itself, else every
/// input object below it as a prefix (hidden `.` and `_` entries skipped, like a
/// directory's), or the objects a pattern matches. Each with its size and ETag,
/// and its hive partitions when the entry is a prefix.
fn resolve_url(
    entry: &str,
    format: InputFormat,
    options: &StorageOptions,
    single: bool,
) -> Result<Vec<Listed>> {
    let unreachable = |cause: String| InputError::Unreachable {
        url: entry.to_string(),
        cause,
    };
    let pattern = has_wildcards(entry).then(|| entry.to_string());
    let base = match &pattern {
        Some(p) => glob_base(p).display().to_string(),
        None => entry.trim_end_matches('/').to_string(),
    };
    let (bucket, key) = cloud::Bucket::open(&base, options).map_err(unreachable)?;
    let listable = !entry.starts_with("http://") && !entry.starts_with("https://");
    if pattern.is_none() {
        if let Some(meta) = bucket.head(&key).map_err(|e| unreachable(cloud::cause(&e)))? {
            return Ok(vec![Listed {
                url: entry.to_string(),
                partitions: Vec::new(),
                bytes: meta.size,
                etag: meta.e_tag,
            }]);
        }
        if !listable {
            return Err(unreachable("no file there".into()).into());
        }
    }
    let objects = bucket.list(&key).map_err(|e| unreachable(cloud::cause(&e)))?;
    let matcher = pattern
        .as_deref()
        .map(glob::Pattern::new)
        .transpose()
        .map_err(|e| InputError::NoFiles {
            pattern: entry.to_string(),
            hint: format!(": the glob is malformed ({e})"),
        })?;
    let options = glob::MatchOptions {
        require_literal_leading_dot: true,
        ..glob::MatchOptions::new()
    };
    let prefix = key.as_ref().to_string();
    let mut found = Vec::new();
    for meta in objects {
        let url = bucket.url(&meta.location);
        let below = meta
            .location
            .as_ref()
            .strip_prefix(prefix.as_str())
            .unwrap_or_default();
        let hidden = below
            .split('/')
            .filter(|part| !part.is_empty())
            .any(|part| part.starts_with('.') || part.starts_with('_'));
        let wanted = match &matcher {
            Some(m) => {
                m.matches_with(&url, options) && !hidden_below(Path::new(&base), Path::new(&url), entry)
            }
            None => !hidden && is_listed(Path::new(&url), format),
        };
        if !wanted {
            continue;
        }
        let partitions = if single && matcher.is_none() {
            hive_partitions(Path::new(&base), Path::new(&url))
        } else {
            Vec::new()
        };
        found.push(Listed {
            url,
            partitions,
            bytes: meta.size,
            etag: meta.e_tag,
        });
    }
    if found.is_empty() {
        return Err(match &matcher {
            Some(_) => InputError::NoFiles {
                pattern: entry.to_string(),
                hint: String::new(),
            },
            None => unreachable("no object there, nor any input file below it as a prefix".into()),
        }
        .into());
    }
    Ok(found)
}

/// As [`resolve`], reading the files as `format` says; URL entries through the
/// store `options` configure.
pub fn resolve_as(orders: &[String], format: InputFormat, options: &StorageOptions) -> Result<Inputs> {
    let urls = orders.iter().filter(|e| cloud::is_supported(e)).count();
    if urls > 0 {
        if urls < orders.len() {
            return Err(InputError::SchemaMismatch(
                "input.orders mixes URLs and local paths; list the files of one place".into(),
            )
            .into());
        }
        return resolve_urls(orders, format, options);
    }
    let mut paths: Vec<(PathBuf, Vec<(String, String)>)> = Vec::new();
    let mut roots = Vec::new();
    let mut hive_dir = None;
    for entry in orders {
        let path = Path::new(entry);
        // A path that exists is that path, whatever characters it holds.
        let exists = std::fs::symlink_metadata(path).is_ok();
        if !exists && has_wildcards(entry) {
            let base = glob_base(entry);
            let options = glob::MatchOptions {
                require_literal_leading_dot: true,
                ..glob::MatchOptions::new()
            };
            let matches = glob::glob_with(entry, options).map_err(|e| InputError::NoFiles {
                pattern: entry.clone(),
                hint: format!(": the glob is malformed ({e})"),
            })?;
            let mut found = Vec::new();
            for matched in matches {
                let matched = matched.map_err(|e| InputError::Unlistable {
                    path: e.path().display().to_string(),
                    reason: e.error().to_string(),
                })?;
                if hidden_below(&base, &matched, entry) {
                    continue;
                }
                if matched.is_dir() {
                    let mut ancestors = vec![canonical(&matched)];
                    files_under(&matched, format, &mut ancestors, &mut found)?;
                } else if matched.is_file() {
                    found.push(matched);
                }
            }
            if found.is_empty() {
                return Err(InputError::NoFiles {
                    pattern: entry.clone(),
                    hint: String::new(),
                }
                .into());
            }
            roots.push(InputRoot::Glob {
                pattern: entry.clone(),
                base: canonical(&base),
            });
            paths.extend(found.into_iter().map(|p| (p, Vec::new())));
        } else if path.is_dir() {
            let mut found = Vec::new();
            let mut ancestors = vec![canonical(path)];
            files_under(path, format, &mut ancestors, &mut found)?;
            if found.is_empty() {
                let (extension, files) = match format {
                    InputFormat::Parquet => ("parquet", ".parquet"),
                    InputFormat::Csv => ("csv", ".csv"),
                    InputFormat::Auto => ("{parquet,csv}", ".parquet or .csv"),
                };
                return Err(InputError::NoFiles {
                    pattern: format!("{}/**/*.{extension}", path.display()),
                    hint: format!(": the directory {entry} holds no {files} files"),
                }
                .into());
            }
            let single = orders.len() == 1;
            if single {
                hive_dir = Some(path.to_path_buf());
            }
            roots.push(InputRoot::Dir(canonical(path)));
            for file in found {
                let partitions = if single {
                    hive_partitions(path, &file)
                } else {
                    Vec::new()
                };
                paths.push((file, partitions));
            }
        } else if path.is_file() {
            roots.push(InputRoot::File(canonical(path)));
            paths.push((path.to_path_buf(), Vec::new()));
        } else if exists {
            // A dangling or looping symlink, or something that is not a file.
            let reason = match std::fs::metadata(path) {
                Err(e) => e.to_string(),
                Ok(_) => "it is not a regular file or a directory".into(),
            };
            return Err(InputError::Unlistable {
                path: entry.clone(),
                reason,
            }
            .into());
        } else {
            return Err(InputError::MissingFile { path: entry.clone() }.into());
        }
    }
    paths.sort();
    // One file named twice (`d/o.parquet` and `./d/o.parquet`, or by a directory and
    // by name, or through a symlink) is read once.
    let mut seen = std::collections::BTreeSet::new();
    paths.retain(|(path, _)| seen.insert(canonical(path)));

    let mut files = Vec::with_capacity(paths.len());
    let mut first_schema: Option<(String, std::sync::Arc<ArrowSchema>)> = None;
    let mut first_keys: Option<(String, Vec<String>)> = None;
    let mut first_format: Option<(String, bool)> = None;
    for (path, partitions) in paths {
        let label = path.display().to_string();
        let csv = is_csv(&path, format);
        match &first_format {
            None => first_format = Some((label.clone(), csv)),
            Some((first, first_csv)) if *first_csv != csv => {
                let name = |csv: bool| if csv { "CSV" } else { "Parquet" };
                return Err(InputError::SchemaMismatch(format!(
                    "{label} is {} but {first} is {}; one input is one format: list the files of one (input.format reads every file as one)",
                    name(csv),
                    name(*first_csv)
                ))
                .into());
            }
            Some(_) => {}
        }
        let keys: Vec<String> = partitions.iter().map(|(k, _)| k.clone()).collect();
        match &first_keys {
            None => first_keys = Some((label.clone(), keys)),
            Some((first, first_keys)) if *first_keys != keys => {
                return Err(InputError::SchemaMismatch(format!(
                    "{label} lies under the partitions ({}) but {first} under ({}); keep every file at one partition depth",
                    keys.join(", "),
                    first_keys.join(", ")
                ))
                .into());
            }
            Some(_) => {}
        }
        let not_parquet = |e: &dyn std::fmt::Display| InputError::NotParquet {
            path: label.clone(),
            reason: e.to_string(),
        };
        let (rows, bytes, schema) = if csv {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let (rows, schema) = scan_facts(&label, true, None).map_err(|e| InputError::NotCsv {
                path: label.clone(),
                reason: e.to_string(),
            })?;
            (
                rows,
                bytes,
                std::sync::Arc::new(schema.to_arrow(CompatLevel::newest())),
            )
        } else {
            let file = File::open(&path).map_err(|e| not_parquet(&e))?;
            let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut reader = ParquetReader::new(file);
            let rows = reader.num_rows().map_err(|e| not_parquet(&e))? as u64;
            (rows, bytes, reader.schema().map_err(|e| not_parquet(&e))?)
        };
        same_schema(&mut first_schema, &label, schema)?;
        files.push(InputFile {
            path: label,
            rows,
            bytes,
            partitions,
            etag: None,
        });
    }
    let file_columns = first_schema
        .map(|(_, schema)| schema.iter_names().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    Ok(Inputs {
        files,
        roots,
        hive_dir,
        file_columns,
        csv: first_format.is_some_and(|(_, csv)| csv),
        cloud: None,
    })
}

/// [`resolve_as`] for URLs: the same rules over listed objects; row counts and
/// schemas are read through Polars' scans with the same options.
fn resolve_urls(orders: &[String], format: InputFormat, options: &StorageOptions) -> Result<Inputs> {
    let cloud_options =
        cloud::cloud_options(&orders[0], options).map_err(|cause| InputError::Unreachable {
            url: orders[0].clone(),
            cause,
        })?;
    let single = orders.len() == 1;
    let mut objects = Vec::new();
    let mut roots = Vec::new();
    for entry in orders {
        objects.extend(resolve_url(entry, format, options, single)?);
        roots.push(InputRoot::Url(entry.trim_end_matches('/').to_string()));
    }
    objects.sort_by(|a, b| a.url.cmp(&b.url));
    objects.dedup_by(|a, b| a.url == b.url);
    let hive_dir = (single && objects.iter().any(|o| !o.partitions.is_empty()))
        .then(|| PathBuf::from(orders[0].trim_end_matches('/')));
    let csv = is_csv(Path::new(&objects[0].url), format);
    let mut files = Vec::with_capacity(objects.len());
    let mut first: Option<(String, std::sync::Arc<ArrowSchema>)> = None;
    for Listed {
        url,
        partitions,
        bytes,
        etag,
    } in objects
    {
        if is_csv(Path::new(&url), format) != csv {
            return Err(InputError::SchemaMismatch(format!(
                "{url} and {} are of different formats; one input is one format (input.format reads every file as one)",
                files.first().map_or(String::new(), |f: &InputFile| f.path.clone())
            ))
            .into());
        }
        let (rows, schema) = scan_facts(&url, csv, Some(&cloud_options)).map_err(|e| {
            if csv {
                InputError::NotCsv {
                    path: url.clone(),
                    reason: e.to_string(),
                }
            } else {
                InputError::NotParquet {
                    path: url.clone(),
                    reason: e.to_string(),
                }
            }
        })?;
        same_schema(
            &mut first,
            &url,
            std::sync::Arc::new(schema.to_arrow(CompatLevel::newest())),
        )?;
        files.push(InputFile {
            path: url,
            rows,
            bytes,
            partitions,
            etag,
        });
    }
    let file_columns = first
        .map(|(_, schema)| schema.iter_names().map(|n| n.to_string()).collect())
        .unwrap_or_default();
    Ok(Inputs {
        files,
        roots,
        hive_dir,
        file_columns,
        csv,
        cloud: Some(cloud_options),
    })
}

/// `path` with symlinks resolved and `..` removed, as far as it exists; the rest
/// is appended as written, `..` and `.` applied.
pub fn canonical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let components: Vec<Component> = absolute.components().collect();
    for split in (1..=components.len()).rev() {
        let prefix: PathBuf = components[..split].iter().collect();
        if let Ok(mut resolved) = std::fs::canonicalize(&prefix) {
            for component in &components[split..] {
                match component {
                    Component::ParentDir => {
                        resolved.pop();
                    }
                    Component::Normal(name) => resolved.push(name),
                    _ => {}
                }
            }
            return resolved;
        }
    }
    absolute
}

/// The directory of a glob before its first wildcard.
fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for component in Path::new(pattern).components() {
        if has_wildcards(&component.as_os_str().to_string_lossy()) {
            break;
        }
        base.push(component);
    }
    if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    }
}

/// A match of `pattern` that lies in a hidden (`.`) or internal (`_`) directory, or
/// is such a file, below the glob's base, where the pattern did not name it literally.
fn hidden_below(base: &Path, matched: &Path, pattern: &str) -> bool {
    let Ok(below) = matched.strip_prefix(base) else {
        return false;
    };
    below.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        (name.starts_with('.') || name.starts_with('_'))
            && !Path::new(pattern)
                .components()
                .any(|p| p.as_os_str() == c.as_os_str())
    })
}

/// The Parquet files under `dir`, skipping hidden (`.`) and internal (`_`) entries.
/// Symlinks are followed; one that leads back to a directory being listed (a loop)
/// is an error naming it. `ancestors`: the canonical directories being listed.
fn files_under(
    dir: &Path,
    format: InputFormat,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let unlistable = |path: &Path, e: std::io::Error| InputError::Unlistable {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| unlistable(dir, e))?;
    let mut entries: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| unlistable(dir, e))?;
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Spark and friends leave `_SUCCESS`, `_temporary/` and `.crc` files beside the data.
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let is_parquet = is_listed(&path, format);
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            // A symlink that loops or leads nowhere: only an error where it would be read.
            Err(e) if is_parquet || e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(InputError::Unlistable {
                    path: path.display().to_string(),
                    reason: if e.raw_os_error() == Some(libc::ELOOP) {
                        "the symlink leads to itself (a loop)".into()
                    } else {
                        format!("{e} (a broken symlink?)")
                    },
                }
                .into());
            }
            Err(_) => continue,
        };
        if metadata.is_dir() {
            let resolved = canonical(&path);
            if ancestors.contains(&resolved) {
                return Err(InputError::Unlistable {
                    path: path.display().to_string(),
                    reason: format!(
                        "the symlink leads back to {}, a directory it lies in (a loop)",
                        resolved.display()
                    ),
                }
                .into());
            }
            ancestors.push(resolved);
            files_under(&path, format, ancestors, out)?;
            ancestors.pop();
        } else if is_parquet && metadata.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// The `key=value` directories between `dir` and `file`, values percent-decoded.
fn hive_partitions(dir: &Path, file: &Path) -> Vec<(String, String)> {
    let Ok(below) = file.strip_prefix(dir) else {
        return Vec::new();
    };
    let Some(parent) = below.parent() else {
        return Vec::new();
    };
    parent
        .components()
        .filter_map(|c| {
            let part = c.as_os_str().to_str()?;
            let (key, value) = part.split_once('=')?;
            (!key.is_empty()).then(|| (percent_decoded(key), percent_decoded(value)))
        })
        .collect()
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every file has the first file's schema: the first one is kept, each later one
/// compared with it.
fn same_schema(
    first: &mut Option<(String, std::sync::Arc<ArrowSchema>)>,
    label: &str,
    schema: std::sync::Arc<ArrowSchema>,
) -> Result<()> {
    match first {
        None => *first = Some((label.to_string(), schema)),
        Some((first_label, first)) => {
            if let Some(difference) = schema_difference(first, &schema) {
                return Err(InputError::SchemaMismatch(format!(
                    "{label} differs from {first_label}: {difference}; rewrite the files with one schema or list only matching files in input.orders"
                ))
                .into());
            }
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

/// The Polars type of a partition key, from all its values: integers, then floats,
/// then ISO dates, else text (as Polars' own hive reader types them).
fn partition_dtype<'a>(values: impl Iterator<Item = &'a str> + Clone) -> DataType {
    let present = values.filter(|v| !is_null_partition(v));
    if present.clone().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if present.clone().all(|v| v.parse::<f64>().is_ok()) {
        DataType::Float64
    } else if present
        .clone()
        .all(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok())
    {
        DataType::Date
    } else {
        DataType::String
    }
}

pub(crate) fn is_null_partition(value: &str) -> bool {
    value.is_empty() || value == "__HIVE_DEFAULT_PARTITION__"
}

fn partition_value(value: &str, dtype: &DataType) -> Expr {
    if is_null_partition(value) {
        return lit(NULL).cast(dtype.clone());
    }
    match dtype {
        DataType::Int64 => lit(value.parse::<i64>().unwrap_or_default()),
        DataType::Float64 => lit(value.parse::<f64>().unwrap_or_default()),
        DataType::Date => chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .map(date_lit)
            .unwrap_or_else(|_| lit(NULL).cast(DataType::Date)),
        _ => lit(value.to_string()),
    }
}

/// A lazy scan of exactly the resolved files, in their order. Nothing is read until
/// the plan is collected.
pub fn scan(inputs: &Inputs) -> Result<LazyFrame> {
    let scan_files = |files: &[&InputFile]| -> Result<LazyFrame> {
        let paths: Vec<PlRefPath> = files.iter().map(|f| PlRefPath::new(&f.path)).collect();
        let cloud = inputs.cloud.as_ref();
        Ok(if inputs.csv {
            csv_scan(paths, cloud)?
        } else {
            parquet_scan(paths, cloud)?
        })
    };
    let keys: Vec<String> = inputs
        .files
        .first()
        .map(|f| f.partitions.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        return scan_files(&inputs.files.iter().collect::<Vec<_>>());
    }
    let dtypes: Vec<DataType> = (0..keys.len())
        .map(|k| partition_dtype(inputs.files.iter().map(|f| f.partitions[k].1.as_str())))
        .collect();
    // One scan per run of files in the same partition, in file order, so rows keep
    // the order (and numbers) of the file list.
    let mut frames = Vec::new();
    let mut start = 0;
    while start < inputs.files.len() {
        let partitions = &inputs.files[start].partitions;
        let end = start
            + inputs.files[start..]
                .iter()
                .take_while(|f| &f.partitions == partitions)
                .count();
        let literals: Vec<Expr> = partitions
            .iter()
            .zip(&dtypes)
            .filter(|((key, _), _)| !inputs.file_columns.iter().any(|c| c == key))
            .map(|((key, value), dtype)| partition_value(value, dtype).alias(key.as_str()))
            .collect();
        let files: Vec<&InputFile> = inputs.files[start..end].iter().collect();
        frames.push(scan_files(&files)?.with_columns(literals));
        start = end;
    }
    Ok(concat(frames, UnionArgs::default())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_resolves_what_exists_and_applies_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let real = fs_canonical(dir.path());
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        assert_eq!(canonical(&dir.path().join("link/new/../x")), real.join("a/x"));
        assert_eq!(canonical(&dir.path().join("a/./b/c")), real.join("a/b/c"));
        assert_eq!(canonical(&dir.path().join("missing/../a")), real.join("a"));
    }

    fn fs_canonical(path: &Path) -> PathBuf {
        std::fs::canonicalize(path).unwrap()
    }

    #[test]
    fn globs_split_at_their_first_wildcard_and_skip_hidden_matches() {
        assert_eq!(glob_base("data/2024/*.parquet"), PathBuf::from("data/2024"));
        assert_eq!(glob_base("*.parquet"), PathBuf::from("."));
        assert_eq!(glob_base("/lake/**/x[0-9].parquet"), PathBuf::from("/lake"));
        let base = Path::new("lake");
        assert!(hidden_below(
            base,
            Path::new("lake/_temporary/0/p.parquet"),
            "lake/**/*.parquet"
        ));
        assert!(hidden_below(base, Path::new("lake/.x.parquet"), "lake/*.parquet"));
        assert!(!hidden_below(
            base,
            Path::new("lake/year=2024/p.parquet"),
            "lake/**/*.parquet"
        ));
        // Named in the pattern itself: the user asked for it.
        assert!(!hidden_below(
            base,
            Path::new("lake/_staging/p.parquet"),
            "lake/_staging/*.parquet"
        ));
    }

    #[test]
    fn partitions_are_decoded_and_typed_like_polars() {
        let parts = hive_partitions(
            Path::new("lake"),
            Path::new("lake/country=C%C3%B4te/day=2024-01-02/p.parquet"),
        );
        assert_eq!(
            parts,
            [
                ("country".to_string(), "Côte".to_string()),
                ("day".to_string(), "2024-01-02".to_string())
            ]
        );
        assert_eq!(partition_dtype(["1", "20", ""].into_iter()), DataType::Int64);
        assert_eq!(partition_dtype(["1", "2.5"].into_iter()), DataType::Float64);
        assert_eq!(
            partition_dtype(["2024-01-02", "__HIVE_DEFAULT_PARTITION__"].into_iter()),
            DataType::Date
        );
        assert_eq!(partition_dtype(["1", "x"].into_iter()), DataType::String);
        assert_eq!(percent_decoded("a%20b%2"), "a b%2");
    }

    #[test]
    fn rows_are_located_in_their_file() {
        let file = |path: &str, rows| InputFile {
            path: path.into(),
            rows,
            bytes: 0,
            partitions: Vec::new(),
            etag: None,
        };
        let inputs = Inputs {
            files: vec![file("a", 3), file("b", 0), file("c", 2)],
            roots: Vec::new(),
            hive_dir: None,
            file_columns: Vec::new(),
            csv: false,
            cloud: None,
        };
        assert_eq!(inputs.locate(0), Some(("a", 1)));
        assert_eq!(inputs.locate(2), Some(("a", 3)));
        assert_eq!(inputs.locate(3), Some(("c", 1)));
        assert_eq!(inputs.locate(5), None);
    }
}
