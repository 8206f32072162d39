//! Publishing to object storage, where there is no atomic rename. The commit
//! protocol, for an output URL `DIR`:
//!
//! 1. every file of the run is uploaded under `DIR/_runs/RUN/`, where `RUN` is the
//!    UTC time of the publish and the process id (`20261204T180630123Z-4242`), so
//!    runs sort by time;
//! 2. then `DIR/_runs/RUN/manifest.json`: a run is complete once its manifest exists;
//! 3. then `DIR/_latest`, in one PUT (a reader sees the old object or the new one):
//!    `{"tool": "loyalty", "run": "_runs/RUN", "manifest": "_runs/RUN/manifest.json", …}`.
//!    This is the commit: readers follow `_latest`, never list `_runs/`;
//! 4. then old runs are removed: complete ones past `output.keep_runs` (never the one
//!    `_latest` names), and incomplete ones older than this run (a failed or killed
//!    run's leftovers). Only `_runs/RUN/` prefixes named like ours are touched.
//!
//! A run that fails or is killed before step 3 leaves `_latest`, and so every
//! reader, on the previous complete run. The files are written locally first
//! (checksummed as for a local output), then uploaded.

use chrono::Utc;
use object_store::path::Path as Key;
use serde::{Deserialize, Serialize};

use super::cloud::{Bucket, cause};
use super::output::{Documents, MANIFEST_FILE, staged};
use crate::config::{Format, StorageOptions};
use crate::error::{Error, Result};
use crate::io::table::Table;
use crate::manifest::Manifest;
use crate::settings::PublishHolds;

/// The pointer to the latest complete run.
pub const LATEST: &str = "_latest";
/// The folder of the runs.
pub const RUNS: &str = "_runs";

/// What `DIR/_latest` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Latest {
    pub tool: String,
    /// The run's folder, relative to `DIR`.
    pub run: String,
    /// The run's manifest, relative to `DIR`.
    pub manifest: String,
    pub as_of: String,
    pub published_at: String,
}

/// An output URL, checked: reachable, and holding nothing but this job's outputs
/// (unless `replace`).
pub struct RemoteDestination {
    pub url: String,
    bucket: Bucket,
    root: Key,
    keep_runs: u32,
}

fn child(root: &Key, name: &str) -> Key {
    if root.as_ref().is_empty() {
        Key::from(name)
    } else {
        Key::from(format!("{root}/{name}"))
    }
}

/// The output URL must not hold an input, nor lie inside an input prefix (the next
/// run would read its own outputs).
pub fn check_no_overlap(
    url: &str,
    inputs: &[super::input::InputRoot],
    files: &[super::input::InputFile],
) -> Result<()> {
    let url = url.trim_end_matches('/');
    let inside = |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
    for file in files {
        if inside(url, &file.path) {
            return Err(Error::Output(format!(
                "output.dir {url} holds the input file {}; choose an output.dir that holds none of them",
                file.path
            )));
        }
    }
    for root in inputs {
        if let super::input::InputRoot::Url(input) = root
            && (inside(input, url) || inside(url, input))
        {
            return Err(Error::Output(format!(
                "output.dir {url} overlaps the input {input}: the next run would read its own outputs; choose an output.dir outside it"
            )));
        }
    }
    Ok(())
}

/// Whether a run folder's name is one this job makes (`YYYYMMDDTHHMMSSmmmZ-PID`).
fn is_run_name(name: &str) -> bool {
    let (time, pid) = name.split_once('-').unwrap_or(("", ""));
    time.len() == 19
        && time.as_bytes()[8] == b'T'
        && time.ends_with('Z')
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
}

/// Opens and checks an output URL before any work (and again before publishing).
pub fn prepare(
    url: &str,
    options: &StorageOptions,
    replace: bool,
    keep_runs: u32,
) -> Result<RemoteDestination> {
    let url = url.trim_end_matches('/').to_string();
    let refuse = |why: String| Error::Output(format!("output.dir {url}: {why}"));
    let (bucket, root) = Bucket::open(&url, options).map_err(&refuse)?;
    let destination = RemoteDestination {
        url: url.clone(),
        bucket,
        root,
        keep_runs,
    };
    let objects = destination
        .bucket
        .list(&destination.root)
        .map_err(|e| refuse(cause(&e)))?;
    let latest = destination.latest()?;
    if replace {
        return Ok(destination);
    }
    let root = destination.root.as_ref().to_string();
    let foreign: Vec<String> = objects
        .iter()
        .map(|o| {
            let key = o.location.as_ref();
            key.strip_prefix(root.as_str())
                .unwrap_or(key)
                .trim_start_matches('/')
                .to_string()
        })
        .filter(|name| {
            name != LATEST
                && !name
                    .strip_prefix("_runs/")
                    .and_then(|rest| rest.split('/').next())
                    .is_some_and(is_run_name)
        })
        .collect();
    if !foreign.is_empty() || (latest.is_none() && !objects.is_empty()) {
        let shown: Vec<&str> = foreign.iter().take(3).map(String::as_str).collect();
        return Err(refuse(format!(
            "holds {} object(s) this job did not write (e.g. {}); choose another output.dir, or pass --force to publish beside them (nothing of theirs is deleted)",
            foreign.len().max(1),
            shown.join(", ")
        )));
    }
    Ok(destination)
}

impl RemoteDestination {
    /// `_latest`, when it is there and ours.
    pub fn latest(&self) -> Result<Option<Latest>> {
        let key = child(&self.root, LATEST);
        let bytes = self
            .bucket
            .get(&key)
            .map_err(|e| Error::Output(format!("output.dir {}: {}", self.url, cause(&e))))?;
        match bytes {
            None => Ok(None),
            Some(bytes) => match serde_json::from_slice::<Latest>(&bytes) {
                Ok(latest) if latest.tool == env!("CARGO_PKG_NAME") => Ok(Some(latest)),
                _ => Err(Error::Output(format!(
                    "output.dir {}: {LATEST} exists but was not written by this job; choose another output.dir",
                    self.url
                ))),
            },
        }
    }

    /// Runs under `_runs/` named like ours: (name, complete).
    fn runs(&self) -> Result<Vec<(String, bool, Vec<Key>)>> {
        let prefix = child(&self.root, RUNS);
        let objects = self
            .bucket
            .list(&prefix)
            .map_err(|e| Error::Output(format!("output.dir {}: {}", self.url, cause(&e))))?;
        let mut runs: std::collections::BTreeMap<String, (bool, Vec<Key>)> = Default::default();
        let base = prefix.as_ref().to_string();
        for object in objects {
            let key = object.location.as_ref();
            let below = key
                .strip_prefix(base.as_str())
                .unwrap_or(key)
                .trim_start_matches('/');
            let Some((name, file)) = below.split_once('/') else {
                continue;
            };
            if !is_run_name(name) {
                continue;
            }
            let entry = runs.entry(name.to_string()).or_default();
            entry.0 |= file == MANIFEST_FILE;
            entry.1.push(object.location.clone());
        }
        Ok(runs
            .into_iter()
            .map(|(name, (complete, keys))| (name, complete, keys))
            .collect())
    }
}

/// Writes every table and document locally, uploads them under a new run folder,
/// its manifest last, then commits the run by `_latest` and removes old runs.
/// Returns the run's URL.
pub fn publish(
    destination: &RemoteDestination,
    tables: &[(String, Table)],
    formats: &[Format],
    documents: Documents,
    manifest: &mut Manifest,
    holds: &PublishHolds,
) -> Result<String> {
    let staged = staged(tables, formats, documents, manifest)?;
    let run = format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%3fZ"),
        std::process::id()
    );
    let run_dir = format!("{RUNS}/{run}");
    let failed = |what: &str, e: String| {
        Error::Output(format!("output.dir {}: uploading {what}: {e}", destination.url))
    };
    // The manifest goes last: once it is there, the run is complete.
    let mut files: Vec<String> = manifest.outputs.iter().map(|o| o.file.clone()).collect();
    files.sort();
    let half = files.len() / 2;
    for (i, file) in files.iter().enumerate() {
        if i == half {
            // A test hook: a kill here leaves a half-uploaded run behind.
            if let Some(pause) = holds.during {
                std::thread::sleep(pause);
            }
        }
        let key = child(&destination.root, &format!("{run_dir}/{file}"));
        destination
            .bucket
            .upload(&key, &staged.path().join(file))
            .map_err(|e| failed(file, e))?;
    }
    let manifest_key = child(&destination.root, &format!("{run_dir}/{MANIFEST_FILE}"));
    destination
        .bucket
        .upload(&manifest_key, &staged.path().join(MANIFEST_FILE))
        .map_err(|e| failed(MANIFEST_FILE, e))?;
    // Checked again at the last moment, as a local output is.
    destination.latest()?;
    let latest = Latest {
        tool: env!("CARGO_PKG_NAME").into(),
        run: run_dir.clone(),
        manifest: format!("{run_dir}/{MANIFEST_FILE}"),
        as_of: manifest.as_of.to_string(),
        published_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let json = serde_json::to_vec_pretty(&latest).map_err(|e| Error::Output(e.to_string()))?;
    destination
        .bucket
        .put(&child(&destination.root, LATEST), json)
        .map_err(|e| failed(LATEST, cause(&e)))?;
    drop(staged);
    if let Err(e) = remove_old_runs(destination, &run) {
        // The run is published; what is left over is removed by a later run.
        tracing::warn!("old runs under {}/{RUNS} not removed: {e}", destination.url);
    }
    Ok(format!("{}/{run_dir}", destination.url))
}

/// Complete runs past `keep_runs` (newest first, the current one included) and
/// incomplete runs older than `current` are removed.
fn remove_old_runs(destination: &RemoteDestination, current: &str) -> Result<()> {
    let runs = destination.runs()?;
    let mut complete: Vec<&String> = runs.iter().filter(|r| r.1).map(|r| &r.0).collect();
    complete.sort_unstable_by(|a, b| b.cmp(a));
    let kept: Vec<&String> = complete
        .into_iter()
        .take(destination.keep_runs as usize)
        .collect();
    let mut doomed = Vec::new();
    for (name, is_complete, keys) in &runs {
        let old_leftover = !is_complete && name.as_str() < current;
        let past_keep = *is_complete && !kept.contains(&name) && name != current;
        if old_leftover || past_keep {
            doomed.extend(keys.iter().cloned());
        }
    }
    if !doomed.is_empty() {
        tracing::info!(objects = doomed.len(), "removing old runs");
    }
    destination
        .bucket
        .delete(doomed)
        .map_err(|e| Error::Output(format!("output.dir {}: {}", destination.url, cause(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_recognised() {
        assert!(is_run_name("20261204T180630123Z-4242"));
        assert!(!is_run_name("20261204T180630123Z"));
        assert!(!is_run_name("backup-1"));
        assert!(!is_run_name("20261204X180630123Z-1"));
    }
}
