//! A killed run never damages the previous outputs, and leaves nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::*;

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn temporaries(parent: &Path) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

fn spawn_run(out: &Path, hold_ms: Option<u64>) -> Child {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("loyalty"));
    cmd.current_dir(repo())
        .args(["run", "--config", "config/example.yaml", "--out"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(ms) = hold_ms {
        cmd.env("LOYALTY_TEST_HOLD_BEFORE_PUBLISH_MS", ms.to_string());
    }
    cmd.spawn().unwrap()
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
    let start = Instant::now();
    loop {
        let written = temporaries(tmp.path())
            .iter()
            .any(|t| tmp.path().join(t).join("manifest.json").exists());
        if written {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run never wrote its files"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
