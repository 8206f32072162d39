//! Paths that are URLs. Object storage (`s3://`, `gs://`, `az://`, `https://` …)
//! is not read or written by this build: a URL is refused with its scheme named,
//! never taken as a local path (`s3://b/out` would become the folder `s3:/b/out`).

/// The scheme of a URL (`s3` in `s3://bucket/key`), if `text` is one: letters,
/// digits, `+`, `-` or `.` after a letter, then `://`.
pub fn scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.trim().split_once("://")?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (starts_with_letter && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .then_some(scheme)
}

/// Why `text` cannot be read or written, if it is a URL of a scheme no store serves.
pub fn unsupported(text: &str) -> Option<String> {
    let scheme = scheme(text)?;
    if super::cloud::is_supported(text) {
        return None;
    }
    Some(format!(
        "is a URL of an unsupported scheme ({scheme}://); object storage URLs start with {}",
        super::cloud::SCHEMES.map(|s| format!("{s}://")).join(", ")
    ))
}

/// Why `text` cannot be used as a local path, if it is a URL.
pub fn refused(text: &str) -> Option<String> {
    let scheme = scheme(text)?;
    Some(format!(
        "is a URL ({scheme}://): only input.orders and output.dir may be object storage; copy it to a local path"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert_eq!(scheme("s3://bucket/x.parquet"), Some("s3"));
        assert_eq!(scheme("abfss://c@a.dfs.core.windows.net/p"), Some("abfss"));
        assert_eq!(scheme(" https://example.com/o.parquet"), Some("https"));
        assert_eq!(scheme("data/orders.parquet"), None);
        assert_eq!(scheme("/lake/a://b"), None);
        assert_eq!(scheme("1s3://x"), None);
        assert!(refused("gs://b/out").unwrap().contains("gs://"));
        assert_eq!(unsupported("gs://b/out"), None);
        assert!(unsupported("ftp://h/x").unwrap().contains("ftp://"));
        assert_eq!(refused("out/{as_of}"), None);
    }
}
