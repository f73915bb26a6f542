//! Content-addressed blob files: `blobs/ab/<sha256 hex>`. Writes go to `tmp/`, are fsynced and
//! renamed into place, then the directory is fsynced, so a blob is either whole or absent.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

/// fsync a directory so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Writes `bytes` to `dest` via a temp file in `tmp_dir`, fsynced, then renamed; the caller
/// owes an fsync of `dest`'s directory for the rename to be durable.
fn write_renamed(tmp_dir: &Path, dest: &Path, bytes: &[u8], unique: u64) -> Result<()> {
    let tmp = tmp_dir.join(format!("w{}-{}", std::process::id(), unique));
    let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, dest).with_context(|| format!("renaming into {}", dest.display()))
}

/// Writes `bytes` to `dest` atomically (temp file in `tmp_dir`, fsync, rename, fsync parent).
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], unique: u64) -> Result<()> {
    write_renamed(tmp_dir, dest, bytes, unique)?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

impl BlobStore {
    pub fn new(root: PathBuf, tmp: PathBuf) -> BlobStore {
        BlobStore {
            root,
            tmp,
            counter: AtomicU64::new(0),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, sha: &str) -> PathBuf {
        self.root.join(&sha[..2]).join(sha)
    }

    /// Stores `bytes` under their sha256 and returns it; an existing blob is kept. Durable on
    /// return.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let (sha, dir) = self.store(bytes)?;
        if let Some(dir) = dir {
            sync_dir(&dir)?;
        }
        Ok(sha)
    }

    /// Like `put`, but leaves the fsync of the blob's directory to the caller (who batches
    /// them); returns the directory when one is owed.
    pub fn put_nosync_dir(&self, bytes: &[u8]) -> Result<Option<PathBuf>> {
        Ok(self.store(bytes)?.1)
    }

    fn store(&self, bytes: &[u8]) -> Result<(String, Option<PathBuf>)> {
        let sha = sha256_hex(bytes);
        let dest = self.path(&sha);
        if fs::metadata(&dest).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok((sha, None));
        }
        let dir = dest.parent().expect("blob path has a parent").to_path_buf();
        if !dir.exists() {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            sync_dir(&self.root)?;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        write_renamed(&self.tmp, &dest, bytes, n)?;
        Ok((sha, Some(dir)))
    }

    pub fn get(&self, sha: &str) -> Result<Vec<u8>> {
        if !is_sha256_hex(sha) {
            bail!("not a blob id: {sha}");
        }
        let p = self.path(sha);
        fs::read(&p).with_context(|| format!("reading blob {}", p.display()))
    }

    /// Removes a blob; true when it existed. Durable on return.
    pub fn remove(&self, sha: &str) -> Result<bool> {
        if !is_sha256_hex(sha) {
            bail!("not a blob id: {sha}");
        }
        let p = self.path(sha);
        match fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(p.parent().expect("blob path has a parent"))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing blob {}", p.display())),
        }
    }

    /// Every file under the blob root: (name, path, size). Names that are not sha256 hex are
    /// included too (the checker reports them).
    pub fn list(&self) -> Result<Vec<(String, PathBuf, u64)>> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(&self.root) else {
            return Ok(out);
        };
        for shard in rd {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                let m = shard.metadata()?;
                out.push((
                    shard.file_name().to_string_lossy().into_owned(),
                    shard.path(),
                    m.len(),
                ));
                continue;
            }
            for f in fs::read_dir(shard.path())? {
                let f = f?;
                let m = f.metadata()?;
                out.push((
                    f.file_name().to_string_lossy().into_owned(),
                    f.path(),
                    m.len(),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_remove_round_trip() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("tmp")).unwrap();
        let s = BlobStore::new(d.path().join("blobs"), d.path().join("tmp"));
        let sha = s.put(b"hello").unwrap();
        assert_eq!(sha, sha256_hex(b"hello"));
        assert_eq!(s.put(b"hello").unwrap(), sha);
        assert_eq!(s.get(&sha).unwrap(), b"hello");
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(s.remove(&sha).unwrap());
        assert!(!s.remove(&sha).unwrap());
        assert!(s.get("../../etc/passwd").is_err());
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
    }
}
