//! Writing outputs atomically (SPEC §8).
//!
//! Every file goes into a hidden temporary sibling directory; the manifest is
//! written last; then the directory is swapped into place in one `renameat2`
//! exchange (or a rename when there is nothing to replace). A run that fails or
//! is killed at any point leaves the previous outputs untouched; its temporary
//! directory is removed by the next run.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use rayon::prelude::*;

use crate::checksum::{Blocks, PipedWriter};
use crate::config::Format;
use crate::error::{Error, Result};
use crate::io::input::{InputFile, InputRoot, canonical};
use crate::io::table::Table;
use crate::manifest::{Manifest, OutputFile};
use crate::settings::PublishHolds;

pub const MANIFEST_FILE: &str = "manifest.json";

/// Writes in progress, for a termination signal (see `main.rs`): their temporary
/// paths, removed at once so a stopped run leaves nothing behind, and whether the
/// run's outputs are already published, so the signal says the truth about them.
#[derive(Default)]
pub struct Publishing {
    temporaries: Vec<PathBuf>,
    published: Option<PathBuf>,
}

impl Publishing {
    /// The directory this run has published, if it has: a signal that arrives after
    /// that stops nothing and must not say that nothing was published.
    pub fn published(&self) -> Option<&Path> {
        self.published.as_deref()
    }
}

/// The directory (or file) this run has published, if it has.
pub fn published_dir() -> Option<PathBuf> {
    publishing().published.clone()
}

static PUBLISHING: std::sync::Mutex<Publishing> = std::sync::Mutex::new(Publishing {
    temporaries: Vec::new(),
    published: None,
});

fn publishing() -> std::sync::MutexGuard<'static, Publishing> {
    PUBLISHING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a temporary path for [`stop_publishing`] until it is dropped.
struct InProgress(PathBuf);

impl InProgress {
    fn new(path: &Path) -> InProgress {
        publishing().temporaries.push(path.to_path_buf());
        InProgress(path.to_path_buf())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        publishing().temporaries.retain(|p| p != &self.0);
    }
}

/// For a signal handler: removes every temporary path of a write in progress and
/// returns holding the registry's lock, so no swap can start afterwards. A swap in
/// progress holds the lock until it is complete, so this waits for it; the guard's
/// [`Publishing::published`] then says whether the outputs were published.
pub fn stop_publishing() -> std::sync::MutexGuard<'static, Publishing> {
    let mut state = publishing();
    if state.published.is_some() {
        return state;
    }
    for path in state.temporaries.drain(..) {
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
    state
}

/// `output.dir` with `{as_of}` and `{run_date}` filled in.
pub fn resolve_dir(template: &str, as_of: NaiveDate, run_date: NaiveDate) -> PathBuf {
    PathBuf::from(
        template
            .replace("{as_of}", &as_of.to_string())
            .replace("{run_date}", &run_date.to_string()),
    )
}

/// Where a run publishes: the directory as the user named it (for messages), and
/// the real directory the swap replaces. A symlinked output directory keeps its
/// link: the swap happens at the link's target, inside the target's parent, so
/// the outputs stay on the target's filesystem.
#[derive(Debug, Clone)]
pub struct Destination {
    pub named: PathBuf,
    pub real: PathBuf,
    /// `--force` / `output.replace`: an existing directory that is not ours may be replaced.
    pub replace: bool,
}

/// Why a directory name cannot be an output directory, if it cannot: it must end
/// in a name, so that it has a parent to swap it in (not `/`, `.`, `..` or empty).
pub fn unusable_name(dir: &str) -> Option<String> {
    if let Some(reason) = super::url::unsupported(dir) {
        return Some(reason);
    }
    if super::cloud::is_supported(dir) {
        return None;
    }
    if dir.trim().is_empty() {
        return Some("must name a directory, e.g. `out`; it is empty".into());
    }
    match Path::new(dir).components().next_back() {
        Some(Component::Normal(_)) => None,
        Some(Component::RootDir | Component::Prefix(_)) => {
            Some("must name a directory below the filesystem root, e.g. `out`".into())
        }
        _ => Some("must end in a directory name (not `.` or `..`), e.g. `out`".into()),
    }
}

/// Paths the output directory must never contain or lie inside: every input, plus
/// the config file and the working directory.
pub struct Protected<'a> {
    pub inputs: &'a [InputRoot],
    pub files: &'a [InputFile],
    pub config_file: Option<&'a Path>,
}

/// Checks, before any work, that `dir` can be published: its name, that it is not a
/// file, that it overlaps no input, that an existing directory is a previous output
/// of ours (unless `replace`), and that its parent can be written.
pub fn prepare(dir: &Path, protected: &Protected, replace: bool) -> Result<Destination> {
    let shown = dir.display().to_string();
    if let Some(problem) = unusable_name(&shown) {
        return Err(Error::Output(format!("output.dir `{shown}` {problem}")));
    }
    let real = follow_links(dir);
    if real.exists() && !real.is_dir() {
        return Err(Error::Output(format!(
            "output.dir {shown} exists and is not a directory; choose another output.dir or remove the file"
        )));
    }
    let destination = Destination {
        named: dir.to_path_buf(),
        real,
        replace,
    };
    check_no_overlap(&destination, protected)?;
    check_writable(&destination)?;
    check_ours(&destination)?;
    Ok(destination)
}

/// The path a chain of symlinks ends at (itself when it is none), made canonical.
fn follow_links(dir: &Path) -> PathBuf {
    let mut path = dir.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => match fs::read_link(&path) {
                Ok(target) => path = parent_of(&path).join(target),
                Err(_) => break,
            },
            _ => break,
        }
    }
    canonical(&path)
}

/// The output directory must not contain an input, the config or the working
/// directory (publishing would delete them), nor lie inside an input directory, nor
/// where an input glob would match its files (the next run would read its outputs).
fn check_no_overlap(destination: &Destination, protected: &Protected) -> Result<()> {
    let out = &destination.real;
    let named = destination.named.display();
    let real = if destination.named.as_path() == out.as_path() {
        String::new()
    } else {
        format!(" (that is, {})", out.display())
    };
    let refuse = |what: String| {
        let fix = if what.contains("is inside") || what.contains("would match") {
            "choose an output.dir outside it"
        } else {
            "choose an output.dir that holds none of them"
        };
        Err(Error::Output(format!("output.dir {named}{real} {what}; {fix}")))
    };
    for file in protected.files {
        let path = canonical(Path::new(&file.path));
        if path.starts_with(out) {
            return refuse(format!(
                "holds the input file {}: publishing would delete it",
                file.path
            ));
        }
    }
    for root in protected.inputs {
        match root {
            InputRoot::File(path) if path.starts_with(out) => {
                return refuse(format!(
                    "holds the input file {}: publishing would delete it",
                    path.display()
                ));
            }
            InputRoot::Dir(path) if path.starts_with(out) => {
                return refuse(format!(
                    "holds the input directory {}: publishing would delete it",
                    path.display()
                ));
            }
            InputRoot::Dir(path) if out.starts_with(path) => {
                return refuse(format!(
                    "is inside the input directory {}: the next run would read its own outputs",
                    path.display()
                ));
            }
            InputRoot::Glob { base, .. } if base.starts_with(out) => {
                return refuse(format!(
                    "holds {}, the directory of an input glob: publishing would delete its files",
                    base.display()
                ));
            }
            InputRoot::Glob { pattern, base } if out.starts_with(base) => {
                let matches_outputs = glob::Pattern::new(&canonical_pattern(pattern, base)).is_ok_and(|p| {
                    ["customers.parquet", "customers.csv", MANIFEST_FILE]
                        .iter()
                        .any(|f| p.matches_path(&out.join(f)))
                });
                if matches_outputs {
                    return refuse(format!(
                        "is where the input glob {pattern} would match its files: the next run would read its own outputs"
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(config) = protected.config_file
        && canonical(config).starts_with(out)
    {
        return refuse(format!(
            "holds the config file {}: publishing would delete it",
            config.display()
        ));
    }
    if let Ok(cwd) = std::env::current_dir()
        && canonical(&cwd).starts_with(out)
    {
        return refuse(format!(
            "holds the working directory {}: publishing would delete it",
            cwd.display()
        ));
    }
    Ok(())
}

/// A glob's pattern with its base made canonical, to match canonical paths.
fn canonical_pattern(pattern: &str, base: &Path) -> String {
    let literal: PathBuf = Path::new(pattern)
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect();
    let rest = Path::new(pattern)
        .strip_prefix(&literal)
        .unwrap_or(Path::new(pattern));
    format!(
        "{}/{}",
        glob::Pattern::escape(&base.display().to_string()),
        rest.display()
    )
}

/// An existing, non-empty output directory must be a previous output of ours: it
/// holds our `manifest.json` and only the files that manifest lists. Anything else
/// is a folder the user cares about, replaced only with `--force`.
fn check_ours(destination: &Destination) -> Result<()> {
    if destination.replace {
        return Ok(());
    }
    let dir = &destination.real;
    let named = destination.named.display();
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Output(format!(
                "cannot read output.dir {named} to check what it holds: {e}"
            )));
        }
        Ok(entries) => entries,
    };
    // Every file, by its path inside the directory (folders such as `actions/` are
    // walked: a file of someone else's inside one is theirs).
    let mut names: Vec<String> = Vec::new();
    let mut pending: Vec<(std::path::PathBuf, String)> = entries
        .flatten()
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect();
    while let Some((path, name)) = pending.pop() {
        // Not followed through links: a link is judged by its own name.
        let is_dir = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let inner: Vec<_> = match is_dir.then(|| fs::read_dir(&path)) {
            Some(Ok(inner)) => inner.flatten().collect(),
            _ => Vec::new(),
        };
        if inner.is_empty() {
            // A file, or an empty or unreadable folder: judged by its name.
            names.push(name);
            continue;
        }
        for entry in inner {
            let inner_name = format!("{name}/{}", entry.file_name().to_string_lossy());
            pending.push((entry.path(), inner_name));
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let listed = fs::read(dir.join(MANIFEST_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .filter(|m| m["tool"] == env!("CARGO_PKG_NAME"))
        .map(|m| {
            m["outputs"]
                .as_array()
                .map(|outputs| {
                    outputs
                        .iter()
                        .filter_map(|o| o["file"].as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        });
    let shown = |names: &[String]| {
        let mut text = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        if names.len() > 5 {
            text.push_str(&format!(" and {} more", names.len() - 5));
        }
        text
    };
    let Some(listed) = listed else {
        return Err(Error::Output(format!(
            "output.dir {named} is not a loyalty output (it holds {} and no manifest.json of ours); choose an empty or new directory, or pass --force (output.replace: true) to replace it and everything in it",
            shown(&names)
        )));
    };
    let ours = |name: &String| {
        name == MANIFEST_FILE
            || listed
                .iter()
                .any(|f| f == name || f.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('/')))
    };
    let foreign: Vec<String> = names.into_iter().filter(|n| !ours(n)).collect();
    if !foreign.is_empty() {
        return Err(Error::Output(format!(
            "output.dir {named} holds files this job did not write ({}); move them elsewhere, or pass --force (output.replace: true) to replace the directory and them with it",
            shown(&foreign)
        )));
    }
    Ok(())
}

/// The nearest existing directory above the output directory must take a new
/// entry: found before the work, not after it.
fn check_writable(destination: &Destination) -> Result<()> {
    let named = destination.named.display();
    let mut at = parent_of(&destination.real);
    while !at.exists() {
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent.to_path_buf(),
            _ => break,
        }
    }
    if !at.is_dir() {
        return Err(Error::Output(format!(
            "output.dir {named}: its parent {} is not a directory",
            at.display()
        )));
    }
    let probe = new_run_dir(&at, ".loyalty-probe", &destination.named)?;
    let _ = fs::remove_dir(&probe);
    Ok(())
}

/// Creates `PREFIX-PID-NANOS` in `parent`, a name no other run uses; failing, it
/// names `parent` and the output directory it is for.
fn new_run_dir(parent: &Path, prefix: &str, named: &Path) -> Result<PathBuf> {
    let dir = parent.join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    fs::create_dir(&dir).map_err(|e| {
        Error::Output(format!(
            "cannot write in {} (for output.dir {}): {e}",
            parent.display(),
            named.display()
        ))
    })?;
    Ok(dir)
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

/// A test hook's pause (see [`PublishHolds`]).
fn hold(pause: Option<std::time::Duration>) {
    if let Some(pause) = pause {
        std::thread::sleep(pause);
    }
}

/// Writes every table in every format plus the manifest, then publishes the directory.
pub fn publish(
    destination: &Destination,
    tables: &[(String, Table)],
    formats: &[Format],
    documents: Documents,
    manifest: &mut Manifest,
    holds: &PublishHolds,
) -> Result<()> {
    let dir = &destination.real;
    let parent = parent_of(dir);
    fs::create_dir_all(&parent)
        .map_err(|e| Error::Output(format!("cannot create {}: {e}", parent.display())))?;
    let name = dir_name(dir);
    remove_stale_temporaries(&parent, &name);

    let tmp = new_run_dir(&parent, &format!(".{name}.tmp"), &destination.named)?;
    let registered = InProgress::new(&tmp);
    let result = write_all(&tmp, tables, formats, documents, manifest).and_then(|()| {
        hold(holds.before);
        // Under the registry's lock: a signal either removes the temporary directory
        // before the swap, or waits until the new outputs are in place and says so.
        let mut state = publishing();
        if state.temporaries.iter().all(|t| t != &tmp) {
            // A signal removed it before this thread took the lock.
            return Err(Error::Output("the run was stopped before publishing".into()));
        }
        hold(holds.during);
        // Checked again at the last moment: the directory may have changed while
        // the job ran.
        check_ours(destination)?;
        swap_into_place(&tmp, dir)?;
        state.published = Some(destination.named.clone());
        Ok(())
    });
    drop(registered);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    } else {
        hold(holds.after);
    }
    result
}

/// A run's files written to a local temporary directory (for an upload), removed
/// when dropped, or by a termination signal.
pub struct Staged {
    path: PathBuf,
    _registered: InProgress,
}

impl Staged {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Writes every table in every format, the documents and the manifest into a new
/// local temporary directory (under the system's temporary directory).
pub fn staged(
    tables: &[(String, Table)],
    formats: &[Format],
    documents: Documents,
    manifest: &mut Manifest,
) -> Result<Staged> {
    let parent = std::env::temp_dir();
    let path = new_run_dir(&parent, ".loyalty-upload", &parent)?;
    let staged = Staged {
        _registered: InProgress::new(&path),
        path,
    };
    write_all(&staged.path, tables, formats, documents, manifest)?;
    Ok(staged)
}

/// The files other than tables, made while the tables are written (the report is
/// made from the computed tables, not the written files).
pub type Documents<'a> = &'a (dyn Fn() -> Result<Vec<Document>> + Sync);

/// A file other than a table that is published with them (the report).
pub struct Document {
    pub name: &'static str,
    pub format: &'static str,
    pub file: &'static str,
    pub bytes: Vec<u8>,
}

fn write_all(
    tmp: &Path,
    tables: &[(String, Table)],
    formats: &[Format],
    documents: Documents,
    manifest: &mut Manifest,
) -> Result<()> {
    let started = std::time::Instant::now();
    manifest.outputs.clear();
    let file_name = |table: &str, format: &Format| match format {
        Format::Parquet => format!("{table}.parquet"),
        Format::Csv => format!("{table}.csv"),
    };
    for (table, _) in tables {
        // Action lists go in a folder of their own (`actions/NAME`).
        let path = tmp.join(file_name(table, &Format::Csv));
        if let Some(folder) = path.parent().filter(|p| *p != tmp) {
            fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        }
    }
    // The tables in parallel, each in every format at once (a sliced table's slices
    // are made once for all formats), and the documents made meanwhile, on a thread
    // of their own: a job of the thread pool beside the tables' waited for a free
    // worker, which there was only once the tables were nearly written, and the
    // report was then made alone at the end (0.1 s at 10M lines). The manifest lists
    // them in order. The memory the stages before kept for reuse is handed back once
    // the documents are under way, so that they are made on the core the hand-back
    // leaves idle (70-80 ms on one core at 10M lines).
    let (written, documents) = std::thread::scope(|scope| {
        let documents = scope.spawn(documents);
        crate::memory::release_kept();
        let written = tables
            .par_iter()
            .map(|(table, frame)| {
                let paths: Vec<(PathBuf, Format)> = formats
                    .iter()
                    .map(|format| (tmp.join(file_name(table, format)), *format))
                    .collect();
                write_table_as(&paths, frame)
            })
            .collect::<Result<Vec<Vec<(u64, String)>>>>();
        let documents = documents
            .join()
            .map_err(|_| Error::Internal("the thread making the report panicked".into()));
        (written, documents)
    });
    let (written, documents) = (written?, documents??);
    for ((table, frame), sizes) in tables.iter().zip(written) {
        for (format, (bytes, sha256)) in formats.iter().zip(sizes) {
            manifest.outputs.push(OutputFile {
                table: table.to_string(),
                format: match format {
                    Format::Parquet => "parquet".into(),
                    Format::Csv => "csv".into(),
                },
                file: file_name(table, format),
                rows: frame.height() as u64,
                bytes,
                sha256,
            });
        }
    }
    for document in &documents {
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
    // A sliced table's columns are computed as it is written (and for the report):
    // that time is part of the write, and named on its own.
    for (table, frame) in tables {
        if let Some(seconds) = frame.slicing_seconds() {
            tracing::info!(table = table.as_str(), seconds, "slices made while writing");
            manifest.stages.push(crate::manifest::Stage {
                name: format!("{table} slices"),
                seconds,
            });
        }
    }
    let path = tmp.join(MANIFEST_FILE);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Output(e.to_string()))?;
    write_synced(&path, |f| f.write_all(&json).map_err(|e| Error::io(&path, e)))
}

/// One table's open writer in one format.
enum FormatWriter<W: Write> {
    Parquet(Box<super::parquet::ParquetWriter<W>>),
    Csv(super::csv::CsvWriter<W>),
    /// A table with a column type [`super::csv::CsvWriter`] does not write.
    PolarsCsv(polars::io::csv::write::BatchedWriter<W>),
}

impl<W: Write + Blocks + Send> FormatWriter<W> {
    fn new(out: W, format: Format, schema: &Schema) -> PolarsResult<Self> {
        Ok(match format {
            // Snappy: every Parquet reader has it, and it writes faster than the
            // default zstd.
            Format::Parquet => {
                FormatWriter::Parquet(Box::new(super::parquet::ParquetWriter::new(out, schema)?))
            }
            Format::Csv if super::csv::CsvWriter::<W>::writes(schema) => {
                FormatWriter::Csv(super::csv::CsvWriter::new(out, schema)?)
            }
            Format::Csv => FormatWriter::PolarsCsv(CsvWriter::new(out).include_header(true).batched(schema)?),
        })
    }

    fn write(&mut self, slice: &DataFrame) -> PolarsResult<()> {
        match self {
            FormatWriter::Parquet(writer) => writer.write(slice),
            FormatWriter::Csv(writer) => writer.write(slice),
            FormatWriter::PolarsCsv(writer) => writer.write_batch(slice),
        }
    }

    fn finish(self) -> PolarsResult<()> {
        match self {
            FormatWriter::Parquet(writer) => writer.finish(),
            FormatWriter::Csv(_) => Ok(()),
            FormatWriter::PolarsCsv(mut writer) => writer.finish(),
        }
    }
}

/// Writes one table to a file per format, flushed to disk, in one pass over its
/// slices (each slice written in every format at once); returns each file's size
/// and sha256, taken as the bytes are written.
pub fn write_table_as(paths: &[(PathBuf, Format)], table: &Table) -> Result<Vec<(u64, String)>> {
    let mut outs = Vec::with_capacity(paths.len());
    for (path, _) in paths {
        outs.push(PipedWriter::new(
            File::create(path).map_err(|e| Error::io(path, e))?,
        ));
    }
    // A failed write (a full disk) names the file, not the query engine.
    let failed =
        |i: usize| move |e: PolarsError| Error::io(&paths[i].0, std::io::Error::other(e.to_string()));
    {
        let mut slices = table.slices();
        let first = slices.next().transpose()?.unwrap_or_default();
        let schema = first.schema().clone();
        let mut writers = Vec::with_capacity(paths.len());
        for (i, (out, (_, format))) in outs.iter_mut().zip(paths).enumerate() {
            writers.push(FormatWriter::new(out, *format, &schema).map_err(failed(i))?);
        }
        for slice in std::iter::once(Ok(first)).chain(slices) {
            let slice = slice?;
            writers
                .par_iter_mut()
                .enumerate()
                .try_for_each(|(i, writer)| writer.write(&slice).map_err(failed(i)))?;
        }
        for (i, writer) in writers.into_iter().enumerate() {
            writer.finish().map_err(failed(i))?;
        }
    }
    // Each file is written out and synced by its writer's thread.
    outs.into_iter()
        .zip(paths)
        .map(|(out, (path, _))| out.finish().map_err(|e| Error::io(path, e)))
        .collect()
}

/// Replaces one file atomically: written beside it under a hidden name, synced,
/// then renamed over it (under the registry's lock, so a signal says the truth).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _registered = InProgress::new(&tmp);
    let written = write_synced(&tmp, |f| f.write_all(bytes).map_err(|e| Error::io(&tmp, e))).and_then(|()| {
        let mut state = publishing();
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        state.published = Some(path.to_path_buf());
        Ok(())
    });
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

/// Puts `tmp` in the place of `dir` in one step where the OS allows it: a rename
/// that never replaces, else (a previous output, or a concurrent run's, is there)
/// an exchange, after which `tmp` holds the previous outputs and is removed.
fn swap_into_place(tmp: &Path, dir: &Path) -> Result<()> {
    match rename_no_replace(tmp, dir) {
        Ok(()) => {}
        Err(_) if dir.exists() => {
            if exchange(tmp, dir).is_ok() {
                let _ = fs::remove_dir_all(tmp);
            } else {
                // No atomic exchange here: move the old directory aside first.
                // `.NAME.tmp-PID-NANOS.old`: a leftover the next run recognises.
                let old = PathBuf::from(format!("{}.old", tmp.display()));
                fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
                fs::rename(tmp, dir).map_err(|e| Error::io(dir, e))?;
                let _ = fs::remove_dir_all(&old);
            }
        }
        Err(e) => return Err(Error::io(dir, e)),
    }
    if let Ok(parent) = File::open(parent_of(dir)) {
        let _ = parent.sync_all();
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn renameat2(a: &Path, b: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    renameat2(a, b, libc::RENAME_EXCHANGE)
}

/// A rename that fails where `b` exists (a rename would replace an empty directory).
#[cfg(target_os = "linux")]
fn rename_no_replace(a: &Path, b: &Path) -> std::io::Result<()> {
    match renameat2(a, b, libc::RENAME_NOREPLACE) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) && !b.exists() => {
            fs::rename(a, b)
        }
        other => other,
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(a: &Path, b: &Path) -> std::io::Result<()> {
    if b.exists() {
        return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
    }
    fs::rename(a, b)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no atomic exchange on this platform"))
}

/// Removes `.NAME.tmp-PID-NANOS` directories (and their `.old` / `.removing`
/// forms) left by runs that are no longer alive; nothing else, whatever its name.
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
        let stem = rest
            .strip_suffix(".old")
            .or_else(|| rest.strip_suffix(".removing"))
            .unwrap_or(rest);
        let Some((pid, nanos)) = stem.split_once('-') else {
            continue;
        };
        let (Ok(pid), true) = (
            pid.parse::<u32>(),
            !nanos.is_empty() && nanos.bytes().all(|b| b.is_ascii_digit()),
        ) else {
            continue;
        };
        let alive = pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_dir()) {
            tracing::info!(path = %entry.path().display(), "removing a temporary directory left by an interrupted run");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_dir_must_end_in_a_name() {
        for bad in ["", "  ", "/", ".", "..", "out/..", "./."] {
            assert!(unusable_name(bad).is_some(), "{bad:?}");
        }
        for good in ["out", "out/", "/tmp/out", "../out", "out/{as_of}"] {
            assert_eq!(unusable_name(good), None, "{good:?}");
        }
    }

    #[test]
    fn stale_temporaries_are_ours_by_their_whole_name() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot be alive (above the kernel's pid_max).
        let dead = ["4194305-17", "4194305-17.old", "4194305-17.removing"];
        let kept = ["notes", "4194305", "4194305-", "4194305-17x", "x-17"];
        for name in dead.iter().chain(&kept) {
            fs::create_dir(dir.path().join(format!(".out.tmp-{name}"))).unwrap();
        }
        fs::write(dir.path().join(".out.tmp-4194305-18"), "a file").unwrap();
        remove_stale_temporaries(dir.path(), "out");
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want: Vec<String> = kept.iter().map(|k| format!(".out.tmp-{k}")).collect();
        want.push(".out.tmp-4194305-18".into());
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn a_symlink_chain_is_followed_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("volume/out");
        std::os::unix::fs::symlink("volume/out", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("b")).unwrap();
        fs::create_dir(dir.path().join("volume")).unwrap();
        // Dangling: the target does not exist yet.
        assert_eq!(follow_links(&dir.path().join("b")), canonical(&target));
        fs::create_dir(&target).unwrap();
        assert_eq!(
            follow_links(&dir.path().join("b")),
            fs::canonicalize(&target).unwrap()
        );
    }
}
