//! Object storage (`s3://`, `gs://`, `az://`/`abfss://`, `https://`): the stores
//! Polars builds (its `aws`/`gcp`/`azure`/`http` features, on object_store), used
//! here for what a scan does not do: listing with sizes and ETags, and uploads.
//!
//! Credentials come from each cloud's standard chain (`AWS_*` and `~/.aws`,
//! `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_*`), with `storage_options` on top;
//! they are never logged or written (see [`crate::config::StorageOptions`]).
//!
//! Every call runs on one runtime of our own that lives as long as the process:
//! the stores' HTTP connections belong to the runtime that opened them.

use std::sync::{Arc, OnceLock};

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use polars::io::cloud::CloudOptions;
use polars::polars_utils::pl_path::CloudScheme;
use polars::prelude::PlRefPath;

use crate::config::StorageOptions;

/// The schemes this build reads and writes.
pub const SCHEMES: [&str; 11] = [
    "s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "adl", "http", "https",
];

/// Whether `text` is a URL of a scheme this build supports.
pub fn is_supported(text: &str) -> bool {
    super::url::scheme(text).is_some_and(|s| SCHEMES.contains(&s.to_ascii_lowercase().as_str()))
}

fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<std::io::Result<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("loyalty-cloud")
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| format!("cannot start the object storage runtime: {e}"))
}

/// Polars' cloud options for `url` from the configured storage options: unknown
/// keys are an error naming them.
pub fn cloud_options(url: &str, options: &StorageOptions) -> Result<CloudOptions, String> {
    let scheme = CloudScheme::from_path(url);
    CloudOptions::from_untyped_config(scheme, options.0.iter().map(|(k, v)| (k.as_str(), v.clone())))
        .map_err(|e| format!("storage_options: {e}"))
}

/// What went wrong with a store, in words a user can act on.
pub fn cause(error: &object_store::Error) -> String {
    let text = error.to_string();
    let lower = text.to_lowercase();
    let hint = if matches!(error, object_store::Error::NotFound { .. }) {
        "not found"
    } else if lower.contains("nosuchbucket") || lower.contains("bucket does not exist") {
        "the bucket does not exist"
    } else if lower.contains("403")
        || lower.contains("invalidaccesskeyid")
        || lower.contains("signaturedoesnotmatch")
        || lower.contains("accessdenied")
        || lower.contains("unauthenticated")
        || lower.contains("permission")
    {
        "access denied: check the credentials (AWS_* / ~/.aws, GOOGLE_APPLICATION_CREDENTIALS, AZURE_*) and storage_options"
    } else if lower.contains("connect")
        || lower.contains("error sending request")
        || lower.contains("dns")
        || lower.contains("timed out")
    {
        "the endpoint cannot be reached"
    } else {
        "the store refused the request"
    };
    // The store's own message, first line only: enough to debug, no request dumps.
    let first = text.lines().next().unwrap_or_default();
    format!("{hint} ({first})")
}

/// A bucket (or an HTTP host) and the calls the job makes on it.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    runtime: &'static tokio::runtime::Runtime,
    /// `scheme://bucket`, to turn keys back into URLs.
    root: String,
}

impl Bucket {
    /// The store for `url`, and the key `url` names in it.
    pub fn open(url: &str, options: &StorageOptions) -> Result<(Bucket, Key), String> {
        let cloud = cloud_options(url, options)?;
        let path = PlRefPath::new(url);
        let scheme = CloudScheme::from_path(url).ok_or_else(|| format!("{url} is not a URL"))?;
        let runtime = runtime()?;
        let store: Arc<dyn ObjectStore> = runtime
            .block_on(async {
                let built: polars::prelude::PolarsResult<Arc<dyn ObjectStore>> = match scheme {
                    CloudScheme::S3 | CloudScheme::S3a => cloud
                        .build_aws(path.clone(), false)
                        .await
                        .map(|s| Arc::new(s) as _),
                    CloudScheme::Gs | CloudScheme::Gcs => {
                        cloud.build_gcp(path.clone(), false).map(|s| Arc::new(s) as _)
                    }
                    CloudScheme::Az
                    | CloudScheme::Azure
                    | CloudScheme::Abfs
                    | CloudScheme::Abfss
                    | CloudScheme::Adl => cloud.build_azure(path.clone(), false).map(|s| Arc::new(s) as _),
                    CloudScheme::Http | CloudScheme::Https => {
                        cloud.build_http(path.clone()).map(|s| Arc::new(s) as _)
                    }
                    _ => Err(polars::prelude::polars_err!(ComputeError: "unsupported scheme")),
                };
                built
            })
            .map_err(|e| format!("cannot open the store for {url}: {e}"))?;
        let (root, key) = split(url, scheme);
        let key = Key::parse(key).map_err(|e| format!("{url}: {e}"))?;
        Ok((Bucket { store, runtime, root }, key))
    }

    /// The URL of a key.
    pub fn url(&self, key: &Key) -> String {
        if key.as_ref().is_empty() {
            self.root.clone()
        } else {
            format!("{}/{}", self.root, key)
        }
    }

    /// The object at `key`, or `None` when there is none.
    pub fn head(&self, key: &Key) -> Result<Option<ObjectMeta>, object_store::Error> {
        match self.runtime.block_on(self.store.head(key)) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object below `prefix` (recursively), in key order.
    pub fn list(&self, prefix: &Key) -> Result<Vec<ObjectMeta>, object_store::Error> {
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let mut objects: Vec<ObjectMeta> = self.runtime.block_on(self.store.list(prefix).try_collect())?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// The whole object, or `None` when there is none.
    pub fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, object_store::Error> {
        self.runtime.block_on(async {
            match self.store.get(key).await {
                Ok(result) => Ok(Some(result.bytes().await?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Writes one object in one request: readers see the old object or the new one.
    pub fn put(&self, key: &Key, bytes: Vec<u8>) -> Result<(), object_store::Error> {
        self.runtime
            .block_on(self.store.put(key, PutPayload::from(bytes)))
            .map(|_| ())
    }

    /// Uploads a local file, in parts when it is large (the object appears whole,
    /// when the upload completes).
    pub fn upload(&self, key: &Key, file: &std::path::Path) -> Result<(), String> {
        const PART: usize = 16 << 20;
        let size = std::fs::metadata(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .len();
        if size <= PART as u64 {
            let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            return self.put(key, bytes).map_err(|e| cause(&e));
        }
        self.runtime.block_on(async {
            use std::io::Read;
            let upload = self.store.put_multipart(key).await.map_err(|e| cause(&e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut reader = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut buffer = vec![0u8; PART];
            loop {
                let n = reader
                    .read(&mut buffer)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await.map_err(|e| cause(&e))?;
                writer.write(&buffer[..n]);
            }
            writer.finish().await.map(|_| ()).map_err(|e| cause(&e))
        })
    }

    /// Deletes the given objects.
    pub fn delete(&self, keys: Vec<Key>) -> Result<(), object_store::Error> {
        self.runtime.block_on(async {
            for key in keys {
                match self.store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }
}

/// `scheme://bucket` and the key of a URL. An HTTP store is built on the whole URL:
/// its object is the empty key.
fn split(url: &str, scheme: CloudScheme) -> (String, &str) {
    let url = url.trim_end_matches('/');
    if matches!(scheme, CloudScheme::Http | CloudScheme::Https) {
        return (url.to_string(), "");
    }
    let (prefix, rest) = url.split_once("://").unwrap_or(("", url));
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (format!("{prefix}://{bucket}"), key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_key() {
        let s3 = CloudScheme::S3;
        assert_eq!(split("s3://b/a/x.parquet", s3), ("s3://b".into(), "a/x.parquet"));
        assert_eq!(split("s3://b/out/", s3), ("s3://b".into(), "out"));
        assert_eq!(split("s3://b", s3), ("s3://b".into(), ""));
        assert_eq!(
            split("https://h/o.parquet", CloudScheme::Https),
            ("https://h/o.parquet".into(), "")
        );
        assert!(is_supported("abfss://c@a.dfs.core.windows.net/x"));
        assert!(!is_supported("ftp://host/x"));
        assert!(!is_supported("data/orders.parquet"));
    }
}
