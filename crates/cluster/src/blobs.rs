//! Blobs (face crops, thumbnails, originals) in an S3-compatible bucket, named by sha256.
//!
//! Object key: `{prefix}{sha[0..2]}/{sha}` (the prefix is used as given; `""` for none).
//! Uploads staged for the ingest workers live beside them, under `{prefix}uploads/{token}/`
//! (`stage_file`, `fetch_staged`, `delete_staged`, `list_staged`); `list` leaves them out.
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
        self.delete_key(self.key(sha)?)
    }

    /// Removes the object `key`; Ok when absent.
    fn delete_key(&self, key: Path) -> Result<()> {
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

    /// (sha256, size) of every blob under the prefix: the objects named as `put` names them
    /// (staged uploads and foreign objects are left out).
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
                    let Some(rest) = meta.location.as_ref().strip_prefix(&prefix) else {
                        continue;
                    };
                    if let Some(sha) = blob_name(rest) {
                        out.push((sha.to_string(), meta.size));
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

    /// The key of a staged upload: `{prefix}uploads/{token}/{name}`. `token` and `name` are
    /// `[A-Za-z0-9._-]`, not starting with a dot.
    pub fn staged_key(&self, token: &str, name: &str) -> Result<String> {
        let ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.len() <= 200
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !ok(token) || !ok(name) {
            bail!("invalid staged upload name {token:?}/{name:?}");
        }
        Ok(format!("{}{STAGED_DIR}/{token}/{name}", self.prefix))
    }

    /// A key of a staged upload, checked to lie under this prefix's `uploads/`.
    fn staged_path(&self, key: &str) -> Result<Path> {
        let under = format!("{}{STAGED_DIR}/", self.prefix);
        if !key.starts_with(&under) {
            bail!("{key:?} is not a staged upload of this bucket (under {under:?})");
        }
        match Path::parse(key) {
            Ok(p) if p.as_ref() == key => Ok(p),
            _ => bail!("invalid staged upload key {key:?}"),
        }
    }

    /// Copies the local file `from` to the staged upload `key`: one PUT up to 8 MiB, a
    /// multipart upload in 8 MiB parts above (aborted on error). Returns the bytes copied.
    pub fn stage_file(&self, key: &str, from: &std::path::Path) -> Result<u64> {
        use std::io::Read;
        let path = self.staged_path(key)?;
        let mut file = std::fs::File::open(from)
            .with_context(|| format!("cannot open the staged file {}", from.display()))?;
        let mut read_piece = |buf: &mut Vec<u8>| -> Result<()> {
            buf.clear();
            (&mut file)
                .take(STAGE_CHUNK as u64)
                .read_to_end(buf)
                .with_context(|| format!("cannot read {}", from.display()))?;
            Ok(())
        };
        let mut first = Vec::with_capacity(STAGE_CHUNK);
        read_piece(&mut first)?;
        let store = self.store.clone();
        let p = path.clone();
        if first.len() < STAGE_CHUNK {
            let n = first.len() as u64;
            self.run(async move { store.put(&p, PutPayload::from(first)).await })
                .and_then(|r| r.map_err(anyhow::Error::from))
                .with_context(|| self.ctx("PUT", &path))?;
            return Ok(n);
        }
        let mut w = self
            .run(async move { store.put_multipart(&p).await })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .map(|u| object_store::WriteMultipart::new_with_chunk_size(u, STAGE_CHUNK))
            .with_context(|| self.ctx("multipart PUT", &path))?;
        let mut total = 0u64;
        let mut piece = first;
        loop {
            if piece.is_empty() {
                return self
                    .run(async move { w.finish().await })
                    .and_then(|r| r.map_err(anyhow::Error::from))
                    .map(|_| total)
                    .with_context(|| self.ctx("multipart PUT", &path));
            }
            total += piece.len() as u64;
            // Written inside the runtime (the parts are sent by tasks it spawns); at most 4
            // parts in flight, then the next piece is read.
            let (back, buf, r) = self.run(async move {
                w.write(&piece);
                let r = w.wait_for_capacity(4).await;
                (w, piece, r)
            })?;
            w = back;
            piece = buf;
            if let Err(e) = r
                .map_err(anyhow::Error::from)
                .and_then(|_| read_piece(&mut piece))
            {
                let _ = self.run(async move { w.abort().await });
                return Err(e.context(self.ctx("multipart PUT", &path)));
            }
        }
    }

    /// Copies local files to staged uploads (`(key, local path)`), the small ones (up to 8 MiB)
    /// `STAGE_CONCURRENCY` at a time (a PUT's round trip, not the bytes, is what a photo
    /// costs), larger ones one by one in parts (`stage_file`). Returns the bytes copied; on
    /// an error some objects may exist (remove them with `delete_staged`).
    pub fn stage_files(&self, files: &[(String, std::path::PathBuf)]) -> Result<u64> {
        let mut small = Vec::new();
        let mut total = 0u64;
        for (key, local) in files {
            let size = std::fs::metadata(local)
                .with_context(|| format!("cannot read {}", local.display()))?
                .len();
            if size >= STAGE_CHUNK as u64 {
                total += self.stage_file(key, local)?;
            } else {
                small.push((self.staged_path(key)?, local.clone()));
            }
        }
        let store = self.store.clone();
        let bucket = self.bucket.clone();
        let copied = self
            .run(async move {
                use futures_util::TryStreamExt;
                futures_util::stream::iter(small)
                    .map(|(key, local)| {
                        let store = store.clone();
                        let bucket = bucket.clone();
                        async move {
                            // Small files from the local disk: read in place.
                            let bytes = std::fs::read(&local)
                                .with_context(|| format!("cannot read {}", local.display()))?;
                            let n = bytes.len() as u64;
                            store
                                .put(&key, PutPayload::from(bytes))
                                .await
                                .with_context(|| {
                                    format!("S3 PUT of key {key} in bucket {bucket:?}")
                                })?;
                            Ok::<u64, anyhow::Error>(n)
                        }
                    })
                    .buffer_unordered(STAGE_CONCURRENCY)
                    .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
                    .await
            })
            .and_then(|r| r)?;
        Ok(total + copied)
    }

    /// Copies the staged upload `key` into the local file `to` (created or truncated).
    /// Returns the bytes copied, or `None` when the object is gone.
    pub fn fetch_staged(&self, key: &str, to: &std::path::Path) -> Result<Option<u64>> {
        use std::io::Write;
        let path = self.staged_path(key)?;
        let mut file =
            std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
        let store = self.store.clone();
        let p = path.clone();
        self.run(async move {
            let mut stream = match store.get(&p).await {
                Ok(r) => r.into_stream(),
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(anyhow::Error::from(e)),
            };
            let mut total = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                file.write_all(&chunk)?;
            }
            // A working copy, read at once and removed after: not synced to disk.
            Ok(Some(total))
        })
        .and_then(|r| r)
        .with_context(|| self.ctx("GET", &path))
    }

    /// Removes a staged upload; Ok when absent.
    pub fn delete_staged(&self, key: &str) -> Result<()> {
        self.delete_key(self.staged_path(key)?)
    }

    /// Every staged upload: (key, last modified as Unix seconds).
    pub fn list_staged(&self) -> Result<Vec<(String, i64)>> {
        let store = self.store.clone();
        let dir = format!("{}{STAGED_DIR}", self.prefix);
        let dir = Path::parse(&dir).with_context(|| format!("S3 prefix {dir:?}"))?;
        let d = dir.clone();
        self.run(async move {
            let mut out = Vec::new();
            let mut stream = store.list(Some(&d));
            while let Some(meta) = stream.next().await {
                let meta = meta?;
                out.push((
                    meta.location.as_ref().to_string(),
                    meta.last_modified.timestamp(),
                ));
            }
            Ok::<_, object_store::Error>(out)
        })
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("S3 LIST of {dir} in bucket {:?}", self.bucket))
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

/// Staged uploads' folder under the prefix.
const STAGED_DIR: &str = "uploads";

/// Small staged uploads copied at once (`stage_files`).
const STAGE_CONCURRENCY: usize = 16;

/// Staged uploads are copied in pieces of this size (S3 multipart parts must be >= 5 MiB).
const STAGE_CHUNK: usize = 8 << 20;

/// The sha256 a blob key names, given the key without the prefix: `{sha[0..2]}/{sha}`.
fn blob_name(rest: &str) -> Option<&str> {
    let (dir, sha) = rest.split_once('/')?;
    (check_sha(sha).is_ok() && dir == &sha[..2]).then_some(sha)
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
    fn only_blob_keys_are_blobs() {
        let sha = "ab".repeat(32);
        assert_eq!(blob_name(&format!("ab/{sha}")), Some(sha.as_str()));
        assert_eq!(blob_name(&format!("cd/{sha}")), None);
        assert_eq!(blob_name(&format!("uploads/tok/{sha}")), None);
        assert_eq!(blob_name("uploads/tok/00001-photo.jpg"), None);
        assert_eq!(blob_name(&sha), None);
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
