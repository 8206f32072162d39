//! A killed run never damages the previous outputs, and leaves nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::*;

/// Every file under `dir` (folders such as `actions/` walked) by its relative path.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            for (inner, bytes) in snapshot(&entry.path()) {
                files.insert(format!("{name}/{inner}"), bytes);
            }
        } else {
            files.insert(name, fs::read(entry.path()).unwrap());
        }
    }
    files
}

fn temporaries(parent: &Path) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

/// The sample job into `out`, optionally held before publishing.
fn run_command(out: &Path, hold_ms: Option<u64>) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("loyalty"));
    cmd.current_dir(repo())
        .args(["run", "--config", "config/example.yaml", "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(ms) = hold_ms {
        cmd.env("LOYALTY_TEST_HOLD_BEFORE_PUBLISH_MS", ms.to_string());
    }
    cmd
}

fn spawn_run(out: &Path, hold_ms: Option<u64>) -> Child {
    run_command(out, hold_ms).spawn().unwrap()
}

/// Waits until a run beside `parent` has written every file into its temporary directory.
fn wait_until_written(parent: &Path) {
    let start = Instant::now();
    while !temporaries(parent)
        .iter()
        .any(|t| parent.join(t).join("manifest.json").exists())
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run never wrote its files"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A complete output: every file the manifest lists, with its checksum.
fn is_complete(dir: &Path) -> bool {
    let Ok(bytes) = fs::read(dir.join("manifest.json")) else {
        return false;
    };
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    manifest["outputs"].as_array().unwrap().iter().all(|o| {
        fs::read(dir.join(o["file"].as_str().unwrap()))
            .map(|b| loyalty::checksum::sha256_hex(&b) == o["sha256"])
            .unwrap_or(false)
    })
}

#[test]
fn sigkill_while_writing_leaves_previous_outputs_byte_identical() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    assert!(spawn_run(&out, None).wait().unwrap().success());
    let before = snapshot(&out);

    // Hold the run after it has written every file into its temporary directory.
    let mut child = spawn_run(&out, Some(60_000));
    wait_until_written(tmp.path());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(snapshot(&out), before, "previous outputs changed");
    assert_eq!(
        temporaries(tmp.path()).len(),
        1,
        "the killed run's directory is still there"
    );

    // The next run publishes and removes the dead run's temporary directory.
    assert!(spawn_run(&out, None).wait().unwrap().success());
    assert!(temporaries(tmp.path()).is_empty());
    assert!(is_complete(&out));
}

#[test]
fn sigkill_at_any_moment_leaves_old_or_new_outputs_whole() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    assert!(spawn_run(&out, None).wait().unwrap().success());
    for delay_ms in [0u64, 30, 100, 250, 500, 800, 1200] {
        let before = snapshot(&out);
        let mut child = spawn_run(&out, None);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let after = snapshot(&out);
        assert!(
            after == before || is_complete(&out),
            "after a kill at {delay_ms} ms the output is neither the old one nor a complete new one"
        );
    }
    assert!(spawn_run(&out, None).wait().unwrap().success());
    assert!(temporaries(tmp.path()).is_empty());
}

/// Sends SIGTERM to a child.
fn terminate(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

#[test]
fn sigterm_stops_promptly_with_exit_143_and_leaves_nothing() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    assert!(spawn_run(&out, None).wait().unwrap().success());
    let mut stopped = 0;
    for delay_ms in [0u64, 50, 150, 400, 800, 1500] {
        let before = snapshot(&out);
        let mut child = spawn_run(&out, None);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let sent = Instant::now();
        terminate(&child);
        let status = child.wait().unwrap();
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "SIGTERM at {delay_ms} ms took {:?} to stop the run",
            sent.elapsed()
        );
        match status.code() {
            Some(143) => stopped += 1,
            Some(0) => {}
            // Before the handler is installed the default action applies.
            None => stopped += 1,
            other => panic!("SIGTERM at {delay_ms} ms: exit {other:?}"),
        }
        assert!(
            snapshot(&out) == before || is_complete(&out),
            "after SIGTERM at {delay_ms} ms the output is neither the old one nor a complete new one"
        );
        // Nothing left behind, without waiting for the next run to clean up.
        assert_eq!(temporaries(tmp.path()), Vec::<String>::new(), "at {delay_ms} ms");
    }
    assert!(stopped >= 3, "only {stopped} of 6 runs were stopped by SIGTERM");
}

#[test]
fn sigterm_while_held_before_publishing_exits_143_with_a_message() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    assert!(spawn_run(&out, None).wait().unwrap().success());
    let before = snapshot(&out);
    let child = run_command(&out, Some(60_000))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_written(tmp.path());
    terminate(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("stopped by SIGTERM; nothing was published and the previous outputs are untouched"),
        "{stderr}"
    );
    assert_eq!(snapshot(&out), before);
    assert_eq!(temporaries(tmp.path()), Vec::<String>::new());
}

#[test]
fn a_full_disk_fails_cleanly() {
    // A 200 KB limit on file size (RLIMIT_FSIZE) stands in for a full disk: writes
    // past it fail with EFBIG, as they would with ENOSPC.
    use std::os::unix::process::CommandExt;
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    assert!(spawn_run(&out, None).wait().unwrap().success());
    let before = snapshot(&out);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("loyalty"));
    cmd.current_dir(repo())
        .args([
            "--log-level",
            "warn",
            "run",
            "--config",
            "config/example.yaml",
            "--out",
        ])
        .arg(&out);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 200_000,
                rlim_max: 200_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("File too large") && stderr.contains(".parquet"),
        "{stderr}"
    );
    assert_eq!(snapshot(&out), before, "previous outputs changed");
    assert_eq!(temporaries(tmp.path()), Vec::<String>::new());
}

/// The sample job into `out` with the given test holds (milliseconds) around the swap.
fn spawn_held(out: &Path, holds: &[(&str, u64)]) -> Child {
    let mut cmd = run_command(out, None);
    for (name, ms) in holds {
        cmd.env(format!("LOYALTY_TEST_HOLD_{name}_PUBLISH_MS"), ms.to_string());
    }
    cmd.stderr(Stdio::piped()).spawn().unwrap()
}

fn started_at(dir: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["started_at"].as_str().unwrap().to_string()
}

/// What a signalled run did, judged from the outside: exit 143 with the previous
/// outputs byte-identical and "nothing was published", or exit 0 with a complete new
/// output. Never one without the other.
fn assert_truthful(
    output: &std::process::Output,
    out: &Path,
    before: &BTreeMap<String, Vec<u8>>,
    when: &str,
) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(129 | 130 | 143) => {
            assert!(stderr.contains("nothing was published"), "{when}: {stderr}");
            assert_eq!(&snapshot(out), before, "{when}: exit 143 but the outputs changed");
        }
        Some(0) => {
            assert!(
                !stderr.contains("nothing was published"),
                "{when}: exit 0 but {stderr}"
            );
            assert!(is_complete(out), "{when}: exit 0 but the output is not whole");
            assert_ne!(&snapshot(out), before, "{when}: exit 0 but nothing was published");
        }
        other => panic!("{when}: exit {other:?}\n{stderr}"),
    }
    assert_eq!(temporaries(out.parent().unwrap()), Vec::<String>::new(), "{when}");
}

/// A directory with one published run: (its parent, the output, its files, its start).
fn published_once() -> (TempDir, std::path::PathBuf, BTreeMap<String, Vec<u8>>, String) {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    assert!(spawn_run(&out, None).wait().unwrap().success());
    let (before, previous) = (snapshot(&out), started_at(&out));
    (tmp, out, before, previous)
}

/// SIGTERM to a run that has published or is publishing: exit 0, a whole new output,
/// and a warning that the signal stopped nothing.
fn terminate_expecting_published(
    child: Child,
    out: &Path,
    before: &BTreeMap<String, Vec<u8>>,
    previous: &str,
    when: &str,
) {
    terminate(&child);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{when}: {stderr}");
    assert!(
        stderr.contains("arrived after the outputs were published"),
        "{when}: {stderr}"
    );
    assert_ne!(started_at(out), previous, "{when}");
    assert_truthful(&output, out, before, when);
}

#[test]
fn sigterm_during_the_swap_waits_for_it_and_exits_0() {
    let (tmp, out, before, previous) = published_once();
    // The manifest is written, then the swap starts at once and is held 1.5 s.
    let child = spawn_held(&out, &[("DURING", 1500)]);
    wait_until_written(tmp.path());
    std::thread::sleep(Duration::from_millis(300));
    terminate_expecting_published(child, &out, &before, &previous, "during the swap");
}

#[test]
fn sigterm_after_the_swap_reports_the_published_run_with_exit_0() {
    let (_tmp, out, before, previous) = published_once();
    let child = spawn_held(&out, &[("AFTER", 3000)]);
    let start = Instant::now();
    while started_at(&out) == previous {
        assert!(start.elapsed() < Duration::from_secs(120), "never published");
        std::thread::sleep(Duration::from_millis(20));
    }
    terminate_expecting_published(child, &out, &before, &previous, "after the swap");
}

#[test]
fn sigterm_around_the_swap_either_stops_it_or_reports_it_repeatedly() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    assert!(spawn_run(&out, None).wait().unwrap().success());
    let (mut stopped, mut published) = (0, 0);
    // 200 ms before the swap, 200 ms in it, 200 ms after: a signal at 0..750 ms
    // after the manifest lands in each, and on the edges between them.
    for (i, delay_ms) in [
        0u64, 60, 130, 190, 200, 210, 260, 330, 390, 400, 410, 480, 560, 650, 750,
    ]
    .into_iter()
    .enumerate()
    {
        let before = snapshot(&out);
        let child = spawn_held(&out, &[("BEFORE", 200), ("DURING", 200), ("AFTER", 200)]);
        wait_until_written(tmp.path());
        std::thread::sleep(Duration::from_millis(delay_ms));
        terminate(&child);
        let output = child.wait_with_output().unwrap();
        assert_truthful(&output, &out, &before, &format!("round {i}, {delay_ms} ms"));
        match output.status.code() {
            Some(143) => stopped += 1,
            _ => published += 1,
        }
    }
    assert!(
        stopped >= 2 && published >= 2,
        "stopped {stopped}, published {published}"
    );
}

#[test]
fn sigint_and_sighup_before_publishing_stop_the_run_like_sigterm() {
    for (signal, code, name) in [(libc::SIGINT, 130, "SIGINT"), (libc::SIGHUP, 129, "SIGHUP")] {
        let (tmp, out, before, _) = published_once();
        let child = spawn_held(&out, &[("BEFORE", 60_000)]);
        wait_until_written(tmp.path());
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(code), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("stopped by {name}; nothing was published")),
            "{stderr}"
        );
        assert_truthful(&output, &out, &before, name);
    }
}
