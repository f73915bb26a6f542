//! `visage check`: compare SQLite, blob files and vector indexes; repair on request.

use std::collections::HashSet;
use std::fs;

use anyhow::Result;
use serde::Serialize;

use crate::blobs::{is_sha256_hex, sha256_hex};
use crate::gallery::{blob_to_vector, DeleteTarget, Gallery};
use crate::index::VectorIndex;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Inconsistency {
    /// Stable code: unfinished_write, staging_file, missing_blob, corrupt_blob, orphan_blob,
    /// bad_vector, index_missing, index_extra, stale_index_file.
    pub kind: &'static str,
    pub detail: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// What opening the gallery for this check finished after an interruption (not
    /// inconsistencies: the designed recovery path).
    pub recovery: crate::gallery::Recovery,
    pub faces_checked: u64,
    pub blobs_checked: u64,
    pub inconsistencies: Vec<Inconsistency>,
    /// Faces deleted by the repair because their crop, thumbnail or vector was unusable.
    pub faces_dropped: Vec<i64>,
}

impl CheckReport {
    pub fn count(&self) -> usize {
        self.inconsistencies.len()
    }
    pub fn unrepaired(&self) -> usize {
        self.inconsistencies.iter().filter(|i| !i.repaired).count()
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    pub repair: bool,
    /// Also hash every blob's content.
    pub deep: bool,
}

impl Gallery {
    pub fn check(&self, opts: CheckOptions) -> Result<CheckReport> {
        let mut rep = CheckReport {
            recovery: self.recovery(),
            ..Default::default()
        };
        let push = |rep: &mut CheckReport, kind, detail: String, repaired| {
            rep.inconsistencies.push(Inconsistency {
                kind,
                detail,
                repaired,
            })
        };
        let repair = opts.repair && self.access() == crate::Access::ReadWrite;

        // Intents left by an interrupted write or delete (recovery clears them on a writable
        // open, so a read-only check is where they show).
        {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            for t in ["pending_blob", "pending_unlink"] {
                let n: i64 =
                    conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
                if n > 0 {
                    push(
                        &mut rep,
                        "unfinished_write",
                        format!("{n} rows in {t}"),
                        false,
                    );
                }
            }
        }
        if let Ok(rd) = fs::read_dir(self.dir().join("tmp")) {
            for e in rd.flatten() {
                push(
                    &mut rep,
                    "staging_file",
                    e.path().display().to_string(),
                    false,
                );
            }
        }

        // Faces: vectors and blobs.
        let mut referenced: HashSet<String> = HashSet::new();
        let mut broken: Vec<i64> = Vec::new();
        let mut per_collection: Vec<(i64, usize, Vec<i64>)> = Vec::new();
        {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            let mut st = conn.prepare("SELECT id, dim FROM collection ORDER BY id")?;
            let colls: Vec<(i64, i64)> = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (cid, dim) in colls {
                let mut ids = Vec::new();
                let mut st = conn.prepare(
                    "SELECT id, vector, crop_sha, thumb_sha FROM face WHERE collection_id = ?1 ORDER BY id",
                )?;
                let mut rows = st.query([cid])?;
                while let Some(r) = rows.next()? {
                    let id: i64 = r.get(0)?;
                    rep.faces_checked += 1;
                    let v = blob_to_vector(&r.get::<_, Vec<u8>>(1)?);
                    let ok = v.is_some_and(|v| {
                        v.len() == dim as usize
                            && v.iter().all(|x| x.is_finite())
                            && (visage_core::dot(&v, &v) - 1.0).abs() < 1e-3
                    });
                    if !ok {
                        push(&mut rep, "bad_vector", format!("face {id}"), repair);
                        broken.push(id);
                    }
                    for col in [2, 3] {
                        let sha: String = r.get(col)?;
                        referenced.insert(sha.clone());
                        let p = self.blobs.path(&sha);
                        if !is_sha256_hex(&sha) || !p.exists() {
                            push(
                                &mut rep,
                                "missing_blob",
                                format!("face {id}: {sha}"),
                                repair,
                            );
                            broken.push(id);
                        }
                    }
                    ids.push(id);
                }
                per_collection.push((cid, dim as usize, ids));
            }
            let mut st =
                conn.prepare("SELECT original_blob FROM image WHERE original_blob IS NOT NULL")?;
            for sha in st.query_map([], |r| r.get::<_, String>(0))? {
                referenced.insert(sha?);
            }
        }

        // Blob files: orphans and (deep) content.
        for (name, path, _) in self.blobs.list()? {
            rep.blobs_checked += 1;
            if !referenced.contains(&name) {
                if repair {
                    fs::remove_file(&path)?;
                }
                push(&mut rep, "orphan_blob", path.display().to_string(), repair);
            } else if opts.deep {
                let bytes = fs::read(&path)?;
                if sha256_hex(&bytes) != name {
                    push(&mut rep, "corrupt_blob", path.display().to_string(), false);
                }
            }
        }

        // Vector indexes: reload from disk (as a fresh process would) and compare with SQLite.
        for (cid, _, ids) in &per_collection {
            self.forget_state(*cid);
            let state = self.state(*cid)?;
            let missing: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| !state.index.contains(*id as u64))
                .collect();
            let extra = state.index.len().saturating_sub(ids.len() - missing.len());
            if !missing.is_empty() {
                let head: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
                push(
                    &mut rep,
                    "index_missing",
                    format!(
                        "collection {cid}: {} faces not in the index (e.g. {})",
                        missing.len(),
                        head.join(", ")
                    ),
                    repair,
                );
            }
            if extra > 0 {
                push(
                    &mut rep,
                    "index_extra",
                    format!("collection {cid}: {extra} index entries without a face row"),
                    repair,
                );
            }
            if repair && (!missing.is_empty() || extra > 0) {
                self.rebuild_index(*cid)?;
            }
        }

        // Index files no sidecar refers to.
        let idx_dir = self.dir().join("index");
        if let Ok(rd) = fs::read_dir(&idx_dir) {
            let live: HashSet<String> = per_collection
                .iter()
                .map(|(c, _, _)| format!("c{c}"))
                .collect();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.split(['-', '.']).next().unwrap_or("").to_string();
                let sidecar_gen = fs::read(idx_dir.join(format!("{stem}.json")))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["generation"].as_u64());
                let wanted = name.ends_with(".json") && live.contains(&stem)
                    || sidecar_gen.is_some_and(|g| name == format!("{stem}-g{g}.usearch"));
                if !wanted {
                    if repair {
                        fs::remove_file(e.path())?;
                    }
                    push(
                        &mut rep,
                        "stale_index_file",
                        e.path().display().to_string(),
                        repair,
                    );
                }
            }
        }

        if repair && !broken.is_empty() {
            broken.sort();
            broken.dedup();
            self.delete(&DeleteTarget::Faces(broken.clone()))?;
            rep.faces_dropped = broken;
        }
        Ok(rep)
    }
}
