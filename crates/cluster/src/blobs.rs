//! Blobs (face crops, thumbnails, originals) in an S3-compatible bucket, named by sha256.
//!
//! Object key: `{prefix}{sha[0..2]}/{sha}` (the prefix is used as given; `""` for none).
//! The API is synchronous: each call runs on a private tokio runtime (2 worker threads) owned
//! by the `S3Blobs`, and the calling thread waits on a std channel, so it works from any
//! thread, including a worker thread of another tokio runtime (no nested `block_on`).

use std::future::Future;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000`
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Key prefix inside the bucket (`""` for none).
    #[serde(default)]
    pub prefix: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Whole-request timeout (connect to end of body); timed-out requests are retried with the
/// default `RetryConfig` (bounded backoff, at most 3 minutes in all).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Synchronous API, safe to call from any thread, including a tokio runtime's worker thread.
pub struct S3Blobs {
    store: Arc<AmazonS3>,
    /// `Some` until drop, where it is shut down without blocking (dropping a runtime inside
    /// an async context would panic).
    rt: Option<tokio::runtime::Runtime>,
    endpoint: String,
    bucket: String,
    prefix: String,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// 64 lowercase hex digits.
fn check_sha(sha: &str) -> Result<()> {
    if sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        bail!("invalid blob name {sha:?}: expected a sha256 as 64 lowercase hex digits")
    }
}

impl S3Blobs {
    pub fn connect(cfg: &S3Config) -> Result<S3Blobs> {
        let endpoint = cfg.endpoint.trim_end_matches('/').to_string();
        let what = || format!("S3 bucket {:?} at {}", cfg.bucket, endpoint);
        if cfg.bucket.is_empty() {
            bail!("S3 config for {endpoint}: empty bucket name");
        }
        let http = endpoint.starts_with("http://");
        if !http && !endpoint.starts_with("https://") {
            bail!("S3 endpoint {endpoint:?}: expected an http:// or https:// url");
        }
        // The prefix is used verbatim; it must give keys that object_store keeps as they are.
        let probe = format!("{}00/{}", cfg.prefix, "0".repeat(64));
        match Path::parse(&probe) {
            Ok(p) if p.as_ref() == probe => {}
            _ => bail!(
                "S3 prefix {:?} for {}: gives invalid object keys (no leading '/', no empty \
                 or '.'/'..' segments, e.g. \"visage/\")",
                cfg.prefix,
                what()
            ),
        }

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("visage-s3")
            .enable_all()
            .build()
            .with_context(|| format!("starting the S3 client runtime for {}", what()))?;

        let options = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_allow_http(http);
        let builder = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
            .with_allow_http(http)
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .with_retry(RetryConfig::default());
        // Built inside the runtime: the HTTP client may look for a runtime context.
        let store = run_on(&rt, async move { builder.build() })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| format!("configuring the S3 client for {}", what()))?;

        let blobs = S3Blobs {
            store: Arc::new(store),
            rt: Some(rt),
            endpoint: endpoint.clone(),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
        };
        // One listing request, so a wrong endpoint, bucket or credentials fails here, clearly.
        let store = blobs.store.clone();
        let dir = blobs.list_dir();
        blobs
            .run(async move {
                match store.list(dir.as_ref()).next().await {
                    Some(Err(e)) => Err(e),
                    _ => Ok(()),
                }
            })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!(
                    "connecting to {} (listing prefix {:?})",
                    what(),
                    blobs.prefix
                )
            })?;
        Ok(blobs)
    }

    /// Idempotent (content-addressed).
    pub fn put(&self, sha: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(sha)?;
        let store = self.store.clone();
        let payload = PutPayload::from(bytes.to_vec());
        let k = key.clone();
        self.run(async move { store.put(&k, payload).await })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| self.ctx("PUT", &key))?;
        Ok(())
    }

    pub fn get(&self, sha: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(sha)?;
        let store = self.store.clone();
        let k = key.clone();
        let got = self
            .run(async move {
                match store.get(&k).await {
                    Ok(r) => r.bytes().await.map(Some),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| self.ctx("GET", &key))?;
        Ok(got.map(|b| b.to_vec()))
    }

    /// Ok when absent.
    pub fn delete(&self, sha: &str) -> Result<()> {
        let key = self.key(sha)?;
        let store = self.store.clone();
        let k = key.clone();
        self.run(async move {
            match store.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| self.ctx("DELETE", &key))
    }

    /// (sha256, size) of every blob under the prefix: every object whose key starts with the
    /// prefix, named by the last segment of its key.
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let store = self.store.clone();
        let dir = self.list_dir();
        let prefix = self.prefix.clone();
        let listed = self
            .run(async move {
                let mut out = Vec::new();
                let mut stream = store.list(dir.as_ref());
                while let Some(meta) = stream.next().await {
                    let meta = meta?;
                    if !meta.location.as_ref().starts_with(&prefix) {
                        continue;
                    }
                    if let Some(name) = meta.location.filename() {
                        out.push((name.to_string(), meta.size));
                    }
                }
                Ok::<_, object_store::Error>(out)
            })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!(
                    "S3 LIST of prefix {:?} in bucket {:?} at {}",
                    self.prefix, self.bucket, self.endpoint
                )
            })?;
        Ok(listed)
    }

    fn key(&self, sha: &str) -> Result<Path> {
        check_sha(sha)?;
        let key = format!("{}{}/{}", self.prefix, &sha[..2], sha);
        Path::parse(&key).with_context(|| format!("S3 object key {key:?}"))
    }

    /// The "directory" to list: the prefix up to its last '/' (object_store lists whole path
    /// segments); `list` filters on the full prefix.
    fn list_dir(&self) -> Option<Path> {
        let dir = match self.prefix.rfind('/') {
            Some(i) => &self.prefix[..i],
            None => "",
        };
        // Checked in connect: any prefix of a valid key up to a '/' parses.
        (!dir.is_empty()).then(|| Path::parse(dir).expect("prefix checked in connect"))
    }

    fn ctx(&self, op: &str, key: &Path) -> String {
        format!(
            "S3 {op} of key {key} in bucket {:?} at {}",
            self.bucket, self.endpoint
        )
    }

    fn run<F, T>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| anyhow!("S3 client already shut down"))?;
        run_on(rt, fut)
    }
}

/// Runs `fut` on `rt` and waits for it on a std channel (never `block_on`: the caller may be
/// inside another runtime).
fn run_on<F, T>(rt: &tokio::runtime::Runtime, fut: F) -> Result<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| anyhow!("the S3 client task ended without a result (it panicked)"))
}

impl Drop for S3Blobs {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Never blocks, so dropping an S3Blobs inside an async context is fine.
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_check() {
        assert!(check_sha(&"ab".repeat(32)).is_ok());
        assert!(check_sha(&"AB".repeat(32)).is_err());
        assert!(check_sha(&"a".repeat(63)).is_err());
        assert!(check_sha(&"g".repeat(64)).is_err());
        assert!(check_sha("../etc/passwd").is_err());
        assert!(check_sha("").is_err());
    }

    #[test]
    fn bad_prefix_and_endpoint_rejected() {
        let cfg = |endpoint: &str, prefix: &str| S3Config {
            endpoint: endpoint.into(),
            bucket: "b".into(),
            region: default_region(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
            prefix: prefix.into(),
        };
        for p in ["/x/", "a//", "a/../"] {
            let e = S3Blobs::connect(&cfg("http://127.0.0.1:1", p)).unwrap_err();
            assert!(format!("{e:#}").contains("prefix"), "{e:#}");
        }
        let e = S3Blobs::connect(&cfg("127.0.0.1:9000", "")).unwrap_err();
        assert!(format!("{e:#}").contains("http://"), "{e:#}");
    }
}
