//! Where file bodies live: the configuration (free of clap: the CLI fills it from its flags)
//! and `open_file_store`, which opens the local folder or an S3-compatible bucket.
//!
//! An S3 store is proven at startup with a probe write, so a wrong endpoint, bucket or
//! credentials stop the process with the store's answer instead of failing the first upload.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::{ClientConfigKey, ClientOptions, RetryConfig};

use crate::blob::{FileStore, LocalFileStore};
use crate::object::ObjectFileStore;
use crate::{Result, StoreError};

/// How to reach the file store.
#[derive(Debug, Clone)]
pub struct FileStoreConfig {
    /// `None`: the local folder `local_root`; `s3://BUCKET[/PREFIX]`: an
    /// S3-compatible bucket, with the keys under `PREFIX/`.
    pub object_store: Option<String>,
    /// The local folder (`<data-dir>/files`).
    pub local_root: PathBuf,
    pub s3: S3Options,
}

/// Settings of an S3-compatible store. Credentials and anything not set here come from the
/// standard AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, web identity, container or instance credentials).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// The server's URL (`http://` allows plain HTTP); unset: AWS's own endpoint.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `https://BUCKET.host/key` instead of the path-style `https://host/BUCKET/key` that
    /// self-hosted servers expect.
    pub virtual_hosted_style: bool,
}

/// A bucket and the prefix of every key in it, from `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: Option<String>,
}

impl S3Location {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            StoreError::Config(format!(
                "unsupported object store {url:?}: use s3://BUCKET[/PREFIX], or leave it unset for the local folder"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StoreError::Config(format!("object store {url:?} names no bucket: use s3://BUCKET[/PREFIX]")));
        }
        let prefix = prefix.trim_matches('/');
        Ok(S3Location { bucket: bucket.into(), prefix: (!prefix.is_empty()).then(|| prefix.into()) })
    }
}

impl fmt::Display for FileStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.object_store.as_deref() {
            None => write!(f, "local folder {}", self.local_root.display()),
            Some(url) => match &self.s3.endpoint {
                Some(endpoint) => write!(f, "{url} at {endpoint}"),
                None => write!(f, "{url}"),
            },
        }
    }
}

/// Opens the configured file store; an S3 store must accept a probe write.
pub async fn open_file_store(config: &FileStoreConfig) -> Result<Arc<dyn FileStore>> {
    let Some(url) = config.object_store.as_deref() else {
        let local = LocalFileStore::open(&config.local_root).await;
        return Ok(Arc::new(local.map_err(|e| StoreError::Config(format!("{config}: {e}")))?));
    };
    let location = S3Location::parse(url)?;
    let bucket = s3(&location, &config.s3).map_err(|e| StoreError::Config(format!("{config}: {e}")))?;
    let store = ObjectFileStore::new(Arc::new(bucket), location.prefix.as_deref());
    store.check_writable().await.map_err(|e| StoreError::Config(format!("{config} failed a probe write: {e}")))?;
    Ok(Arc::new(store))
}

fn s3(location: &S3Location, options: &S3Options) -> object_store::Result<AmazonS3> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&location.bucket)
        .with_virtual_hosted_style_request(options.virtual_hosted_style)
        .with_http_connector(StallTimeouts)
        // Few enough retries that an unreachable store is reported within seconds.
        .with_retry(RetryConfig { max_retries: 5, retry_timeout: Duration::from_secs(60), ..Default::default() });
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    builder.build()
}

/// Time to open a connection to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the store's next bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client of S3 stores: a connection that stalls fails after `READ_TIMEOUT`, but a
/// transfer that keeps moving is never cut. (`object_store`'s own client limits each request's
/// whole duration, which cuts a download streamed to a slow client.)
#[derive(Debug)]
struct StallTimeouts;

impl HttpConnector for StallTimeouts {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        // Plain HTTP only where allowed: an `http://` endpoint, or instance metadata.
        let allow_http = options.get_config_value(&ClientConfigKey::AllowHttp).as_deref() == Some("true");
        let client = reqwest::Client::builder()
            .user_agent(concat!("vllm-batch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .http1_only()
            .https_only(!allow_http)
            .build()
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(HttpClient::new(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let parse = |u| S3Location::parse(u).map_err(|e| e.to_string());
        assert_eq!(parse("s3://b").unwrap(), S3Location { bucket: "b".into(), prefix: None });
        assert_eq!(parse("s3://b/").unwrap(), S3Location { bucket: "b".into(), prefix: None });
        assert_eq!(parse("s3://b/p/q/").unwrap(), S3Location { bucket: "b".into(), prefix: Some("p/q".into()) });
        assert!(parse("s3://").unwrap_err().contains("names no bucket"));
        assert!(parse("s3:///p").unwrap_err().contains("names no bucket"));
        assert!(parse("gs://b").unwrap_err().contains("unsupported object store \"gs://b\""));
        assert!(parse("/srv/files").unwrap_err().contains("unsupported"));
    }
}
