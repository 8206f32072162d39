//! The job never destroys a file it did not write, and reads exactly the files it
//! lists: output directories against inputs, foreign folders, symlinks and
//! concurrent runs; directory inputs with the debris warehouses leave in them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use tempfile::TempDir;

use crate::common::*;

fn sample() -> DataFrame {
    LazyFrame::scan_parquet(
        PlRefPath::new(repo().join("data/orders.parquet").display().to_string()),
        Default::default(),
    )
    .unwrap()
    .collect()
    .unwrap()
}

/// Every file under `dir`, relative, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            } else if path.is_file() {
                files.insert(
                    path.strip_prefix(dir).unwrap().to_path_buf(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

/// `loyalty run` on `orders` (YAML) into `out`, without the model or the report.
fn run(dir: &Path, orders: &str, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    let config = dir.join("job.yaml");
    fs::write(
        &config,
        format!("input:\n  orders: {orders}\nclv:\n  model: none\noutput:\n  report: false\n"),
    )
    .unwrap();
    loyalty()
        .current_dir(dir)
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(out)
        .args(extra)
        .assert()
}

fn stderr(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

fn manifest_of(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn an_output_dir_holding_an_input_is_refused_and_the_input_survives() {
    // The swap used to replace the directory that held the input file: the input
    // was deleted with the previous outputs.
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    write_parquet(&data.join("orders.parquet"), &mut sample());
    fs::write(data.join("notes.txt"), "keep me").unwrap();
    let before = tree(tmp.path());
    let file = data.join("orders.parquet").display().to_string();
    let glob = format!("'{}/*.parquet'", data.display());
    for (orders, out) in [
        (file.clone(), data.clone()),
        (glob.clone(), data.clone()),
        (data.display().to_string(), data.clone()),
        // The parent of the input, and the same directory spelled with `..`.
        (file.clone(), tmp.path().to_path_buf()),
        (file.clone(), data.join("../data")),
        // Inside the input directory, through `..`.
        (data.display().to_string(), data.join("x/../y")),
    ] {
        let assert = run(tmp.path(), &orders, &out, &["--force"]).code(2);
        let stderr = stderr(&assert);
        assert!(
            stderr.contains("output.dir")
                && (stderr.contains("holds the input") || stderr.contains("is inside the input")),
            "{orders} -> {}: {stderr}",
            out.display()
        );
        assert_eq!(
            tree(tmp.path()).len(),
            before.len() + 1,
            "only job.yaml was added"
        );
        assert_eq!(fs::read(&file).unwrap(), before[Path::new("data/orders.parquet")]);
    }
}

#[test]
fn an_output_dir_inside_an_input_through_a_symlink_is_refused() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    write_parquet(&data.join("orders.parquet"), &mut sample());
    std::os::unix::fs::symlink(&data, tmp.path().join("link")).unwrap();
    let assert = run(
        tmp.path(),
        &data.display().to_string(),
        &tmp.path().join("link/out"),
        &[],
    )
    .code(2);
    let stderr = stderr(&assert);
    assert!(stderr.contains("is inside the input directory"), "{stderr}");
    assert!(
        stderr.contains(&data.display().to_string()),
        "names the real directory: {stderr}"
    );
    assert!(!data.join("out").exists());
}

/// A run into `out` exits 2 saying `fragment`, and leaves `out` as it was.
fn refused_untouched(dir: &Path, input: &str, out: &Path, fragment: &str) {
    let before = tree(out);
    let assert = run(dir, input, out, &[]).code(2);
    assert!(stderr(&assert).contains(fragment), "{}", stderr(&assert));
    assert_eq!(tree(out), before);
}

#[test]
fn a_folder_that_is_not_ours_is_refused_untouched_and_replaced_only_with_force() {
    let tmp = TempDir::new().unwrap();
    let input = repo().join("data/orders.parquet").display().to_string();
    let folder = tmp.path().join("reports");
    fs::create_dir_all(folder.join("2023")).unwrap();
    fs::write(folder.join("q3.xlsx"), "quarterly").unwrap();
    fs::write(folder.join("2023/q4.xlsx"), "more").unwrap();
    refused_untouched(tmp.path(), &input, &folder, "is not a loyalty output");
    // A manifest.json of another tool is no better.
    fs::write(folder.join("manifest.json"), r#"{"tool": "dbt", "outputs": []}"#).unwrap();
    refused_untouched(tmp.path(), &input, &folder, "is not a loyalty output");
    // With --force it is replaced by a whole output.
    run(tmp.path(), &input, &folder, &["--force"]).success();
    assert!(!folder.join("q3.xlsx").exists());
    assert_eq!(manifest_of(&folder)["tool"], "loyalty");
    assert_eq!(manifest_of(&folder)["config"]["output"]["replace"], true);
}

#[test]
fn a_previous_output_holding_a_foreign_file_is_refused() {
    let tmp = TempDir::new().unwrap();
    let input = repo().join("data/orders.parquet").display().to_string();
    let out = tmp.path().join("out");
    run(tmp.path(), &input, &out, &[]).success();
    // Reruns replace our own outputs.
    run(tmp.path(), &input, &out, &[]).success();
    fs::write(out.join("my-analysis.ipynb"), "{}").unwrap();
    refused_untouched(tmp.path(), &input, &out, "my-analysis.ipynb");
}

#[test]
fn a_symlinked_output_dir_keeps_its_link_and_publishes_at_its_target() {
    let tmp = TempDir::new().unwrap();
    let input = repo().join("data/orders.parquet").display().to_string();
    let volume = tmp.path().join("volume");
    fs::create_dir(&volume).unwrap();
    let link = tmp.path().join("latest");
    // A link to a directory that does not exist yet, then twice over the output.
    std::os::unix::fs::symlink(volume.join("loyalty"), &link).unwrap();
    for _ in 0..2 {
        run(tmp.path(), &input, &link, &[]).success();
        assert!(
            fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
            "the link was replaced"
        );
        assert_eq!(fs::read_link(&link).unwrap(), volume.join("loyalty"));
        assert!(volume.join("loyalty/manifest.json").is_file());
        // Swapped inside the target's parent: nothing left beside the link or the target.
        let beside: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(beside.len(), 3, "{beside:?}");
        assert_eq!(fs::read_dir(&volume).unwrap().count(), 1);
    }
}

#[test]
fn concurrent_runs_into_one_new_directory_both_publish_a_whole_output() {
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    let config = tmp.path().join("job.yaml");
    fs::write(
        &config,
        format!(
            "input:\n  orders: {}\nclv:\n  model: none\n",
            repo().join("data/orders.parquet").display()
        ),
    )
    .unwrap();
    for _ in 0..3 {
        let _ = fs::remove_dir_all(&out);
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(assert_cmd::cargo::cargo_bin("loyalty"))
                    .args(["--log-level", "warn", "run", "--config"])
                    .arg(&config)
                    .arg("--out")
                    .arg(&out)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let manifest = manifest_of(&out);
        for file in manifest["outputs"].as_array().unwrap() {
            let bytes = fs::read(out.join(file["file"].as_str().unwrap())).unwrap();
            assert_eq!(loyalty::checksum::sha256_hex(&bytes), file["sha256"]);
        }
        let names: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }
}

#[test]
fn a_directory_input_reads_exactly_the_files_the_manifest_lists() {
    // Spark's layout: partitions, `_SUCCESS`, `_temporary/`, `.crc` files, hidden
    // files, and a stray README. Polars handed the directory read the hidden
    // Parquet files again (and failed on the rest with exit 1).
    let tmp = TempDir::new().unwrap();
    let data = sample();
    let half = data.height() / 2;
    let lake = tmp.path().join("lake");
    for (i, part) in [data.slice(0, half), data.slice(half as i64, data.height() - half)]
        .iter()
        .enumerate()
    {
        let dir = lake.join(format!("year={}", 2023 + i));
        fs::create_dir_all(&dir).unwrap();
        write_parquet(&dir.join("part-00000.snappy.parquet"), &mut part.clone());
        write_parquet(&dir.join(".part-00000.snappy.parquet"), &mut part.clone());
        fs::write(dir.join(".part-00000.snappy.parquet.crc"), [0u8, 1, 2]).unwrap();
    }
    fs::create_dir_all(lake.join("_temporary/0")).unwrap();
    write_parquet(&lake.join("_temporary/0/part-00009.parquet"), &mut data.clone());
    fs::write(lake.join("_SUCCESS"), "").unwrap();
    fs::write(lake.join("README.txt"), "exported nightly").unwrap();
    let out = tmp.path().join("out");
    run(tmp.path(), &lake.display().to_string(), &out, &[]).success();
    let manifest = manifest_of(&out);
    let files: Vec<(&str, u64)> = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["rows"].as_u64().unwrap()))
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].0.ends_with("year=2023/part-00000.snappy.parquet"),
        "{files:?}"
    );
    assert!(
        files[1].0.ends_with("year=2024/part-00000.snappy.parquet"),
        "{files:?}"
    );
    let listed: u64 = files.iter().map(|f| f.1).sum();
    assert_eq!(listed, data.height() as u64);
    assert_eq!(manifest["input_rows"].as_u64(), Some(listed));
    assert_eq!(manifest["cleaning"][0]["rows_in"].as_u64(), Some(listed));
    // The partition is a column: an exclude rule on it drops the 2024 half.
    let config = tmp.path().join("job.yaml");
    let text = fs::read_to_string(&config).unwrap()
        + "cleaning:\n  exclude:\n    - {column: year, equals: '2024'}\n";
    fs::write(&config, text).unwrap();
    loyalty()
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let rerun = manifest_of(&out);
    let step4 = &rerun["cleaning"][3];
    let dropped = step4["dropped"].as_u64().unwrap();
    assert!(dropped > 0 && dropped <= (data.height() - half) as u64, "{step4}");
}

#[test]
fn a_path_with_glob_characters_that_exists_is_that_file() {
    let tmp = TempDir::new().unwrap();
    let data = sample();
    write_parquet(&tmp.path().join("orders[1].parquet"), &mut data.clone());
    // What `orders[1].parquet` matches as a glob: another file.
    write_parquet(&tmp.path().join("orders1.parquet"), &mut data.head(Some(10)));
    let out = tmp.path().join("out");
    let path = tmp.path().join("orders[1].parquet").display().to_string();
    run(tmp.path(), &format!("'{path}'"), &out, &[]).success();
    let manifest = manifest_of(&out);
    assert_eq!(manifest["inputs"][0]["path"].as_str(), Some(path.as_str()));
    assert_eq!(manifest["input_rows"].as_u64(), Some(data.height() as u64));
}

#[test]
fn warnings_on_a_non_terminal_stderr_carry_no_colour_codes() {
    let tmp = TempDir::new().unwrap();
    let config = tmp.path().join("job.yaml");
    // A date far after the data: a warning.
    fs::write(
        &config,
        format!(
            "input:\n  orders: {}\nas_of: 2030-01-01\nclv:\n  model: none\n",
            repo().join("data/orders.parquet").display()
        ),
    )
    .unwrap();
    let assert = loyalty()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .assert()
        .success();
    let stderr = stderr(&assert);
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in {stderr:?}");
}

#[test]
fn one_file_named_three_ways_is_read_once() {
    let tmp = TempDir::new().unwrap();
    let data = tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    let rows = sample().height() as u64;
    write_parquet(&data.join("orders.parquet"), &mut sample());
    std::os::unix::fs::symlink(data.join("orders.parquet"), tmp.path().join("alias.parquet")).unwrap();
    let d = data.display();
    let orders = format!(
        "[{d}/orders.parquet, {d}/./orders.parquet, {d}, {}/alias.parquet]",
        tmp.path().display()
    );
    let out = tmp.path().join("out");
    run(tmp.path(), &orders, &out, &[]).success();
    let manifest = manifest_of(&out);
    assert_eq!(
        manifest["inputs"].as_array().unwrap().len(),
        1,
        "{}",
        manifest["inputs"]
    );
    assert_eq!(manifest["input_rows"].as_u64(), Some(rows));
    assert_eq!(manifest["cleaning"][0]["rows_in"].as_u64(), Some(rows));
}
