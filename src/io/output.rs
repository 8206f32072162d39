//! Writing outputs atomically (SPEC §8).
//!
//! Every file goes into a hidden temporary sibling directory; the manifest is
//! written last; then the directory is swapped into place in one `renameat2`
//! exchange (or a rename when there is nothing to replace). A run that fails or
//! is killed at any point leaves the previous outputs untouched; its temporary
//! directory is removed by the next run.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;

use crate::checksum::HashingWriter;
use crate::config::Format;
use crate::error::{Error, Result};
use crate::io::table::{ROW_GROUP_ROWS, Table};
use crate::manifest::{Manifest, OutputFile};

pub const MANIFEST_FILE: &str = "manifest.json";

/// Test hook: pause this many milliseconds after writing, before publishing,
/// so fault tests can kill a run that has half-finished files on disk.
const HOLD_ENV: &str = "LOYALTY_TEST_HOLD_BEFORE_PUBLISH_MS";

/// Temporary paths of writes in progress, so a termination signal can remove them
/// (see `main.rs`): a stopped run leaves nothing behind, not even for the next run
/// to clean up.
static IN_PROGRESS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn in_progress() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    IN_PROGRESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a temporary path for [`remove_in_progress`] until it is dropped.
struct InProgress(PathBuf);

impl InProgress {
    fn new(path: &Path) -> InProgress {
        in_progress().push(path.to_path_buf());
        InProgress(path.to_path_buf())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        in_progress().retain(|p| p != &self.0);
    }
}

/// Removes every temporary path of a write in progress and returns holding the
/// registry's lock, so no publish can start or finish afterwards: for a signal
/// handler about to exit the process.
pub fn remove_in_progress() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    let mut paths = in_progress();
    for path in paths.drain(..) {
        if path.is_dir() {
            // Renamed first: the writer may still be creating files in it, and a new
            // file between listing and removing would leave the directory behind.
            // Under the new name no file can be created by the writer's paths.
            let doomed = PathBuf::from(format!("{}.removing", path.display()));
            let path = if fs::rename(&path, &doomed).is_ok() {
                doomed
            } else {
                path
            };
            for _ in 0..20 {
                if fs::remove_dir_all(&path).is_ok() || !path.exists() {
                    break;
                }
            }
        } else {
            let _ = fs::remove_file(&path);
        }
    }
    paths
}

/// `output.dir` with `{as_of}` and `{run_date}` filled in.
pub fn resolve_dir(template: &str, as_of: NaiveDate, run_date: NaiveDate) -> PathBuf {
    PathBuf::from(
        template
            .replace("{as_of}", &as_of.to_string())
            .replace("{run_date}", &run_date.to_string()),
    )
}

/// Checks that `dir` can be created or replaced, before any work is done.
pub fn check_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Output(format!(
            "output.dir {} exists and is not a directory; choose another output.dir or remove the file",
            dir.display()
        )));
    }
    let parent = parent_of(dir);
    if parent.exists() && !parent.is_dir() {
        return Err(Error::Output(format!(
            "output.dir {}: its parent {} is not a directory",
            dir.display(),
            parent.display()
        )));
    }
    Ok(())
}

/// Refuses an output directory inside an input directory: the next run would read
/// its own outputs as orders.
pub fn check_outside_inputs(dir: &Path, inputs: &[String]) -> Result<()> {
    let Ok(out) = std::path::absolute(dir) else {
        return Ok(());
    };
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir()
            && let Ok(input_dir) = std::path::absolute(path)
            && out.starts_with(&input_dir)
        {
            return Err(Error::Output(format!(
                "output.dir {} is inside the input directory {input}: the next run would read its own outputs; choose an output.dir outside it",
                dir.display()
            )));
        }
    }
    Ok(())
}

fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into())
}

/// Writes every table in every format plus the manifest, then publishes the directory.
pub fn publish(
    dir: &Path,
    tables: &[(&'static str, Table)],
    formats: &[Format],
    documents: &[Document],
    manifest: &mut Manifest,
) -> Result<()> {
    check_dir(dir)?;
    let parent = parent_of(dir);
    fs::create_dir_all(&parent)
        .map_err(|e| Error::Output(format!("cannot create {}: {e}", parent.display())))?;
    let name = dir_name(dir);
    remove_stale_temporaries(&parent, &name);

    let tmp = parent.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    fs::create_dir(&tmp).map_err(|e| {
        Error::Output(format!(
            "cannot write in {} (for output.dir {}): {e}",
            parent.display(),
            dir.display()
        ))
    })?;
    let registered = InProgress::new(&tmp);
    let result = write_all(&tmp, tables, formats, documents, manifest).and_then(|()| {
        if let Some(ms) = std::env::var(HOLD_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        // Under the registry's lock: a signal either removes the temporary directory
        // before the swap, or waits until the new outputs are in place.
        let _lock = in_progress();
        swap_into_place(&tmp, dir)
    });
    drop(registered);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// A file other than a table that is published with them (the report).
pub struct Document {
    pub name: &'static str,
    pub format: &'static str,
    pub file: &'static str,
    pub bytes: Vec<u8>,
}

fn write_all(
    tmp: &Path,
    tables: &[(&'static str, Table)],
    formats: &[Format],
    documents: &[Document],
    manifest: &mut Manifest,
) -> Result<()> {
    let started = std::time::Instant::now();
    manifest.outputs.clear();
    for (table, frame) in tables {
        for format in formats {
            let (ext, format_name) = match format {
                Format::Parquet => ("parquet", "parquet"),
                Format::Csv => ("csv", "csv"),
            };
            let file_name = format!("{table}.{ext}");
            let path = tmp.join(&file_name);
            let (bytes, sha256) = write_table(&path, frame, *format)?;
            manifest.outputs.push(OutputFile {
                table: table.to_string(),
                format: format_name.into(),
                file: file_name,
                rows: frame.height() as u64,
                bytes,
                sha256,
            });
        }
    }
    for document in documents {
        let path = tmp.join(document.file);
        write_synced(&path, |f| {
            f.write_all(&document.bytes).map_err(|e| Error::io(&path, e))
        })?;
        manifest.outputs.push(OutputFile::new(
            document.name,
            document.format,
            document.file,
            0,
            &document.bytes,
        ));
    }
    // The manifest's own write is the only part of the stage it cannot time.
    if let Some(stage) = manifest.stages.iter_mut().find(|s| s.name == "write") {
        stage.seconds = started.elapsed().as_secs_f64();
    }
    let path = tmp.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Output(e.to_string()))?;
    write_synced(&path, |f| f.write_all(&json).map_err(|e| Error::io(&path, e)))
}

/// Writes one table to a file and flushes it to disk; returns its size and sha256,
/// taken as the bytes are written. A sliced table is written a slice at a time.
pub fn write_table(path: &Path, table: &Table, format: Format) -> Result<(u64, String)> {
    let mut written = (0, String::new());
    write_synced(path, |file| {
        let mut out = HashingWriter::new(file);
        // A failed write (a full disk) names the file, not the query engine.
        let failed = |e: PolarsError| Error::io(path, std::io::Error::other(e.to_string()));
        let mut slices = table.slices();
        let first = slices.next().transpose()?.unwrap_or_default();
        let schema = first.schema().clone();
        match format {
            // Snappy: every Parquet reader has it, and it writes faster than the
            // default zstd.
            Format::Parquet => {
                let mut writer = ParquetWriter::new(&mut out)
                    .with_compression(ParquetCompression::Snappy)
                    .batched(&schema)
                    .map_err(failed)?;
                for slice in std::iter::once(Ok(first)).chain(slices) {
                    let mut slice = slice?;
                    // Row groups of about ROW_GROUP_ROWS rows, as a whole-frame write
                    // makes, encoded in parallel.
                    let groups =
                        polars::frame::chunk_df_for_writing(&mut slice, ROW_GROUP_ROWS).map_err(failed)?;
                    writer.write_batch(&groups).map_err(failed)?;
                }
                writer.finish().map_err(failed)?;
            }
            Format::Csv => {
                let mut writer = CsvWriter::new(&mut out)
                    .include_header(true)
                    .batched(&schema)
                    .map_err(failed)?;
                for slice in std::iter::once(Ok(first)).chain(slices) {
                    writer.write_batch(&slice?).map_err(failed)?;
                }
                writer.finish().map_err(failed)?;
            }
        }
        written = out.finish();
        Ok(())
    })?;
    Ok(written)
}

/// Replaces one file atomically: written beside it under a hidden name, synced,
/// then renamed over it.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _registered = InProgress::new(&tmp);
    let written = write_synced(&tmp, |f| f.write_all(bytes).map_err(|e| Error::io(&tmp, e)))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Creates `path`, writes it with `write`, and flushes it to disk.
pub fn write_synced(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    write(&mut file)?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// Replaces `dir` by `tmp` in one step where the OS allows it.
fn swap_into_place(tmp: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        if exchange(tmp, dir).is_ok() {
            // `tmp` now holds the previous outputs.
            let _ = fs::remove_dir_all(tmp);
        } else {
            // No atomic exchange here: move the old directory aside first.
            let old = tmp.with_extension("old");
            fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
            fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
            let _ = fs::remove_dir_all(&old);
        }
    } else {
        fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
    }
    if let Ok(parent) = File::open(parent_of(dir)) {
        let _ = parent.sync_all();
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no atomic exchange on this platform"))
}

/// Removes `.NAME.tmp-PID-*` directories left by runs that are no longer alive.
fn remove_stale_temporaries(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive =
            pid.is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            tracing::info!(path = %entry.path().display(), "removing a temporary directory left by an interrupted run");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
