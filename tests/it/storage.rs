//! Object storage (issue 20) against real S3-compatible servers on loopback, which
//! `.ci/run` starts (`scripts/test_servers.sh`): a hive-partitioned prefix read,
//! outputs written and read back, a run killed mid-upload, wrong credentials, a
//! missing bucket, an unreachable endpoint, objects the job did not write.
//! Without the servers the tests say so and pass; under CI they are required.

use std::collections::BTreeMap;
use std::path::Path;

use loyalty::config::StorageOptions;
use loyalty::io::cloud::Bucket;
use polars::prelude::*;
use tempfile::TempDir;

use crate::common::{assert_fails, assert_same_csvs, loyalty, repo};

/// The servers' addresses, or `None` (and a message) when they are not running.
struct Servers {
    open: String,
    signed: String,
    key: String,
    secret: String,
}

fn servers() -> Option<Servers> {
    let var = |name: &str| std::env::var(name).ok();
    match (
        var("LOYALTY_TEST_S3_ENDPOINT"),
        var("LOYALTY_TEST_S3_AUTH_ENDPOINT"),
        var("LOYALTY_TEST_S3_AUTH_KEY"),
        var("LOYALTY_TEST_S3_AUTH_SECRET"),
    ) {
        (Some(open), Some(signed), Some(key), Some(secret)) => Some(Servers {
            open,
            signed,
            key,
            secret,
        }),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "the S3 servers are required in CI: eval \"$(scripts/test_servers.sh start)\""
            );
            eprintln!(
                "skipped: no S3 server (eval \"$(scripts/test_servers.sh start)\" starts two on loopback)"
            );
            None
        }
    }
}

/// A prefix of its own for each test, so tests share the buckets.
fn prefix(test: &str) -> String {
    format!(
        "{test}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    )
}

fn options(endpoint: &str, key: &str, secret: &str) -> StorageOptions {
    StorageOptions(BTreeMap::from([
        ("aws_endpoint_url".to_string(), endpoint.to_string()),
        ("aws_allow_http".to_string(), "true".to_string()),
        ("aws_region".to_string(), "us-east-1".to_string()),
        ("aws_access_key_id".to_string(), key.to_string()),
        ("aws_secret_access_key".to_string(), secret.to_string()),
    ]))
}

fn put(url: &str, options: &StorageOptions, bytes: Vec<u8>) {
    let (bucket, key) = Bucket::open(url, options).unwrap();
    bucket.put(&key, bytes).unwrap();
}

fn get(url: &str, options: &StorageOptions) -> Option<Vec<u8>> {
    let (bucket, key) = Bucket::open(url, options).unwrap();
    bucket.get(&key).unwrap()
}

fn keys_under(url: &str, options: &StorageOptions) -> Vec<String> {
    let (bucket, key) = Bucket::open(url, options).unwrap();
    bucket
        .list(&key)
        .unwrap()
        .into_iter()
        .map(|o| o.location.to_string())
        .collect()
}

fn parquet_bytes(frame: &mut DataFrame) -> Vec<u8> {
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes).finish(frame).unwrap();
    bytes
}

fn sample() -> DataFrame {
    LazyFrame::scan_parquet(
        repo().join("data/orders.parquet").to_str().unwrap().into(),
        Default::default(),
    )
    .unwrap()
    .collect()
    .unwrap()
}

/// `loyalty run` on the sample config with `input.orders` and the output given,
/// credentials in the environment as a nightly job has them.
fn run(endpoint: &str, credentials: (&str, &str), orders: &str, out: &str) -> assert_cmd::Command {
    assert_cmd::Command::from_std(run_std(endpoint, credentials, orders, out))
}

/// [`run`] as a process to start and kill.
fn run_std(endpoint: &str, (key, secret): (&str, &str), orders: &str, out: &str) -> std::process::Command {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin!("loyalty"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_REGION", "us-east-1")
        .args(["--log-level", "warn", "run", "--config"])
        .arg(repo().join("config/example.yaml"))
        .args(["--set", &format!("input.orders={orders}")])
        .args([
            "--set",
            &format!("input.storage_options.aws_endpoint_url={endpoint}"),
        ])
        .args(["--set", "input.storage_options.aws_allow_http=true"])
        .arg("--out")
        .arg(out);
    command
}

/// The sample split by channel into a hive-partitioned prefix (with a `_SUCCESS`
/// marker and a hidden file that must not be read) gives the same tables as the
/// same layout on local disk; the manifest lists each object with its size and ETag.
#[test]
fn a_hive_partitioned_prefix_reads_like_a_local_directory() {
    let Some(s3) = servers() else { return };
    let options = options(&s3.open, "test", "test");
    let base = format!("s3://loyalty-lake/{}", prefix("hive"));
    let tmp = TempDir::new().unwrap();
    let local = tmp.path().join("lake");
    let mut orders = sample();
    for channel in ["app", "store", "web"] {
        let mut part = orders
            .clone()
            .lazy()
            .filter(col("channel").eq(lit(channel)))
            .drop(cols(["channel"]))
            .collect()
            .unwrap();
        let bytes = parquet_bytes(&mut part);
        std::fs::create_dir_all(local.join(format!("channel={channel}"))).unwrap();
        std::fs::write(local.join(format!("channel={channel}/part-0.parquet")), &bytes).unwrap();
        put(
            &format!("{base}/channel={channel}/part-0.parquet"),
            &options,
            bytes,
        );
    }
    put(&format!("{base}/_SUCCESS"), &options, Vec::new());
    put(
        &format!("{base}/.staging.parquet"),
        &options,
        b"not parquet".to_vec(),
    );
    let _ = parquet_bytes(&mut orders);

    run(
        &s3.open,
        ("test", "test"),
        &base,
        tmp.path().join("from_s3").to_str().unwrap(),
    )
    .assert()
    .success();
    run(
        &s3.open,
        ("test", "test"),
        local.to_str().unwrap(),
        tmp.path().join("from_disk").to_str().unwrap(),
    )
    .assert()
    .success();
    assert_same_csvs(
        &tmp.path().join("from_s3"),
        &tmp.path().join("from_disk"),
        &["customers", "kpis", "cohort_retention", "rfm_segments"],
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("from_s3/manifest.json")).unwrap()).unwrap();
    let inputs = manifest["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 3, "{inputs:?}");
    for input in inputs {
        assert!(input["path"].as_str().unwrap().starts_with(&base));
        assert!(input["bytes"].as_u64().unwrap() > 0);
        assert!(!input["etag"].as_str().unwrap().is_empty());
    }
}

/// Outputs to a URL: `_latest` names a complete run whose files match the
/// manifest's checksums and hold the same tables as a local run.
#[test]
fn outputs_written_to_s3_read_back_whole() {
    let Some(s3) = servers() else { return };
    let options = options(&s3.open, "test", "test");
    let out = format!("s3://loyalty-out/{}", prefix("write"));
    let tmp = TempDir::new().unwrap();
    let data = repo().join("data/orders.parquet");
    run(&s3.open, ("test", "test"), data.to_str().unwrap(), &out)
        .assert()
        .success();
    run(
        &s3.open,
        ("test", "test"),
        data.to_str().unwrap(),
        tmp.path().join("local").to_str().unwrap(),
    )
    .assert()
    .success();
    let latest: serde_json::Value =
        serde_json::from_slice(&get(&format!("{out}/_latest"), &options).unwrap()).unwrap();
    let run_url = format!("{out}/{}", latest["run"].as_str().unwrap());
    let manifest: serde_json::Value =
        serde_json::from_slice(&get(&format!("{run_url}/manifest.json"), &options).unwrap()).unwrap();
    for output in manifest["outputs"].as_array().unwrap() {
        let file = output["file"].as_str().unwrap();
        let bytes = get(&format!("{run_url}/{file}"), &options).unwrap();
        assert_eq!(bytes.len() as u64, output["bytes"].as_u64().unwrap(), "{file}");
        let digest = sha256_hex(&bytes);
        assert_eq!(digest, output["sha256"].as_str().unwrap(), "{file}");
        if file.ends_with(".csv") && file != "report.html" {
            let local = std::fs::read(tmp.path().join("local").join(file)).unwrap();
            assert!(local == bytes, "{file} differs from the local run's");
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A run killed mid-upload leaves `_latest` on the previous run, whose files are
/// all there; the next run completes and removes the leftover, keeping
/// `output.keep_runs` complete runs.
#[test]
fn a_run_killed_mid_upload_leaves_the_previous_output_readable() {
    let Some(s3) = servers() else { return };
    let options = options(&s3.open, "test", "test");
    let out = format!("s3://loyalty-out/{}", prefix("killed"));
    let data = repo().join("data/orders.parquet");
    let data = data.to_str().unwrap();
    run(&s3.open, ("test", "test"), data, &out).assert().success();
    let before = get(&format!("{out}/_latest"), &options).unwrap();
    let previous: serde_json::Value = serde_json::from_slice(&before).unwrap();
    let previous_run = previous["run"].as_str().unwrap().to_string();
    let previous_files = keys_under(&format!("{out}/{previous_run}"), &options);

    let mut child = run_std(&s3.open, ("test", "test"), data, &out)
        .env("LOYALTY_TEST_HOLD_DURING_PUBLISH_MS", "20000")
        .spawn()
        .unwrap();
    // Wait until the second run has uploaded part of its files, then kill it.
    let started = std::time::Instant::now();
    loop {
        let runs: std::collections::BTreeSet<String> = keys_under(&format!("{out}/_runs"), &options)
            .iter()
            .filter_map(|k| k.split("/_runs/").nth(1)?.split('/').next().map(String::from))
            .collect();
        if runs.len() >= 2 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the second run never started uploading"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        get(&format!("{out}/_latest"), &options).unwrap(),
        before,
        "_latest moved"
    );
    assert_eq!(
        keys_under(&format!("{out}/{previous_run}"), &options),
        previous_files
    );

    // The next run (keeping one) publishes and removes both older runs.
    let mut next = run(&s3.open, ("test", "test"), data, &out);
    next.args(["--set", "output.keep_runs=1"]).assert().success();
    let latest: serde_json::Value =
        serde_json::from_slice(&get(&format!("{out}/_latest"), &options).unwrap()).unwrap();
    let runs: std::collections::BTreeSet<String> = keys_under(&format!("{out}/_runs"), &options)
        .iter()
        .filter_map(|k| k.split("/_runs/").nth(1)?.split('/').next().map(String::from))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        latest["run"]
            .as_str()
            .unwrap()
            .ends_with(runs.iter().next().unwrap())
    );
}

/// Wrong credentials on a server that checks signatures, a bucket that does not
/// exist, an endpoint nobody listens on: each a clear error with the URL, the
/// exit code of its kind, and never the secret.
#[test]
fn store_errors_name_the_url_and_the_cause() {
    let Some(s3) = servers() else { return };
    let signed = options(&s3.signed, &s3.key, &s3.secret);
    let url = format!("s3://loyalty-signed/{}/orders.parquet", prefix("auth"));
    put(
        &url,
        &signed,
        std::fs::read(repo().join("data/orders.parquet")).unwrap(),
    );
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    run(&s3.signed, (&s3.key, &s3.secret), &url, out)
        .assert()
        .success();
    let wrong = "wrong-secret-0123456789";
    let assert = run(&s3.signed, (&s3.key, wrong), &url, out).assert().code(3);
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        stderr.contains(&url) && stderr.contains("access denied"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong) && !stderr.contains(&s3.secret),
        "a secret was printed: {stderr}"
    );

    let missing = "s3://loyalty-no-such-bucket/orders.parquet";
    assert_fails(
        &mut run(&s3.open, ("test", "test"), missing, out),
        3,
        &[missing, "the bucket does not exist"],
    );
    let data = repo().join("data/orders.parquet");
    assert_fails(
        &mut run(
            &s3.open,
            ("test", "test"),
            data.to_str().unwrap(),
            "s3://loyalty-no-such-bucket/out",
        ),
        2,
        &["s3://loyalty-no-such-bucket/out", "the bucket does not exist"],
    );
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_fails(
        &mut run(
            &format!("http://{closed}"),
            ("test", "test"),
            "s3://loyalty-lake/x.parquet",
            out,
        ),
        3,
        &["s3://loyalty-lake/x.parquet", "cannot be reached"],
    );
    // Unsupported schemes are config errors, never local folders.
    assert_fails(
        &mut run(
            &s3.open,
            ("test", "test"),
            data.to_str().unwrap(),
            "ftp://host/out",
        ),
        2,
        &["ftp://"],
    );
}

/// An output prefix holding objects the job did not write is refused; with
/// `--force` the job publishes beside them and deletes none. Secrets given as
/// storage options are redacted in the manifest.
#[test]
fn objects_the_job_did_not_write_are_never_deleted() {
    let Some(s3) = servers() else { return };
    let options = options(&s3.open, "test", "test");
    let out = format!("s3://loyalty-out/{}", prefix("foreign"));
    put(&format!("{out}/theirs.csv"), &options, b"a,b\n1,2\n".to_vec());
    let data = repo().join("data/orders.parquet");
    let data = data.to_str().unwrap();
    assert_fails(
        &mut run(&s3.open, ("test", "test"), data, &out),
        2,
        &["did not write", "theirs.csv", "--force"],
    );
    let mut forced = run(&s3.open, ("test", "test"), data, &out);
    forced
        .arg("--force")
        .args(["--set", "input.storage_options.aws_secret_access_key=test"])
        .assert()
        .success();
    assert_eq!(
        get(&format!("{out}/theirs.csv"), &options).unwrap(),
        b"a,b\n1,2\n"
    );
    let latest: serde_json::Value =
        serde_json::from_slice(&get(&format!("{out}/_latest"), &options).unwrap()).unwrap();
    let manifest = get(
        &format!("{out}/{}", latest["manifest"].as_str().unwrap()),
        &options,
    )
    .unwrap();
    let manifest = String::from_utf8(manifest).unwrap();
    assert!(
        manifest.contains("\"aws_secret_access_key\": \"<redacted>\""),
        "{manifest}"
    );
    assert!(!Path::new("s3:").exists());
}

/// An `https://`-style file (here plain HTTP on loopback, with range requests, as
/// a CDN or a signed-URL export serves it), as CSV and as Parquet, reads like the
/// local file; a missing one is exit 3 naming it.
#[test]
fn files_over_http_read_like_local_files() {
    if servers().is_none() {
        return;
    }
    let (Ok(url), Ok(root)) = (
        std::env::var("LOYALTY_TEST_HTTP_URL"),
        std::env::var("LOYALTY_TEST_HTTP_ROOT"),
    ) else {
        panic!("LOYALTY_TEST_HTTP_URL and _ROOT come with the S3 servers");
    };
    let name = prefix("http");
    std::fs::copy(
        repo().join("data/orders.parquet"),
        Path::new(&root).join(format!("{name}.parquet")),
    )
    .unwrap();
    let mut orders = sample();
    let mut csv = std::fs::File::create(Path::new(&root).join(format!("{name}.csv"))).unwrap();
    CsvWriter::new(&mut csv).finish(&mut orders).unwrap();
    let tmp = TempDir::new().unwrap();
    let local = repo().join("data/orders.parquet");
    let runs = [
        ("local", local.to_str().unwrap().to_string()),
        ("parquet", format!("{url}/{name}.parquet")),
        ("csv", format!("{url}/{name}.csv")),
    ];
    for (out, orders) in &runs {
        run(
            "http://127.0.0.1:1",
            ("test", "test"),
            orders,
            tmp.path().join(out).to_str().unwrap(),
        )
        .assert()
        .success();
    }
    for out in ["parquet", "csv"] {
        assert_same_csvs(
            &tmp.path().join(out),
            &tmp.path().join("local"),
            &["customers", "kpis", "rfm_segments"],
        );
    }
    let missing = format!("{url}/{name}-missing.parquet");
    assert_fails(
        &mut run(
            "http://127.0.0.1:1",
            ("test", "test"),
            &missing,
            tmp.path().join("x").to_str().unwrap(),
        ),
        3,
        &[&missing, "no file there"],
    );
}

/// Azure Blob Storage through Azurite (when npm could install it): an `az://`
/// prefix read, and an `az://` output published and read back through `_latest`.
#[test]
fn azure_blob_storage_in_and_out() {
    if servers().is_none() {
        return;
    }
    let (Ok(endpoint), Ok(key)) = (
        std::env::var("LOYALTY_TEST_AZURE_ENDPOINT"),
        std::env::var("LOYALTY_TEST_AZURE_KEY"),
    ) else {
        // Azurite comes from npm; without npm the script starts none.
        eprintln!("skipped: no Azurite (scripts/test_servers.sh starts it where npm is installed)");
        return;
    };
    let options = StorageOptions(BTreeMap::from([
        (
            "azure_storage_account_name".to_string(),
            "devstoreaccount1".to_string(),
        ),
        ("azure_storage_account_key".to_string(), key.clone()),
        ("azure_endpoint".to_string(), endpoint.clone()),
        ("azure_allow_http".to_string(), "true".to_string()),
    ]));
    let base = format!("az://loyalty/{}", prefix("azure"));
    put(
        &format!("{base}/orders/part-0.parquet"),
        &options,
        std::fs::read(repo().join("data/orders.parquet")).unwrap(),
    );
    let tmp = TempDir::new().unwrap();
    let local = repo().join("data/orders.parquet");
    let mut command = loyalty();
    command
        .args(["--log-level", "warn", "run", "--config"])
        .arg(repo().join("config/example.yaml"))
        .args(["--set", &format!("input.orders={base}/orders")]);
    for (k, v) in &options.0 {
        command.args(["--set", &format!("input.storage_options.{k}={v}")]);
    }
    command.args(["--out", &format!("{base}/out")]).assert().success();
    run(
        "http://127.0.0.1:1",
        ("test", "test"),
        local.to_str().unwrap(),
        tmp.path().join("local").to_str().unwrap(),
    )
    .assert()
    .success();
    let latest: serde_json::Value =
        serde_json::from_slice(&get(&format!("{base}/out/_latest"), &options).unwrap()).unwrap();
    let run_url = format!("{base}/out/{}", latest["run"].as_str().unwrap());
    for table in ["customers", "kpis", "rfm_segments"] {
        let remote = get(&format!("{run_url}/{table}.csv"), &options).unwrap();
        let local = std::fs::read(tmp.path().join("local").join(format!("{table}.csv"))).unwrap();
        assert!(remote == local, "{table} differs");
    }
    let manifest = String::from_utf8(get(&format!("{run_url}/manifest.json"), &options).unwrap()).unwrap();
    assert!(!manifest.contains(&key), "the account key was written");
}

/// Google Cloud Storage through fake-gcs-server: the sample the server script
/// stored at `gs://loyalty-gcs/sample/` reads like the local file. (The emulator
/// takes no XML-API uploads, which object_store writes with, so `gs://` outputs
/// are not tested here.)
#[test]
fn google_cloud_storage_prefix_reads_like_the_local_file() {
    if servers().is_none() {
        return;
    }
    let credentials =
        std::env::var("LOYALTY_TEST_GCS_CREDENTIALS").expect("the GCS emulator comes with the S3 servers");
    let tmp = TempDir::new().unwrap();
    let mut command = loyalty();
    command
        .args(["--log-level", "warn", "run", "--config"])
        .arg(repo().join("config/example.yaml"))
        .args(["--set", "input.orders=gs://loyalty-gcs/sample"])
        .args([
            "--set",
            &format!("input.storage_options.google_service_account={credentials}"),
        ])
        .arg("--out")
        .arg(tmp.path().join("gcs"))
        .assert()
        .success();
    let local = repo().join("data/orders.parquet");
    run(
        "http://127.0.0.1:1",
        ("test", "test"),
        local.to_str().unwrap(),
        tmp.path().join("local").to_str().unwrap(),
    )
    .assert()
    .success();
    assert_same_csvs(
        &tmp.path().join("gcs"),
        &tmp.path().join("local"),
        &["customers", "kpis", "rfm_segments"],
    );
}
