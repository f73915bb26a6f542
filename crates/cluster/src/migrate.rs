//! `visage migrate`: copies an embedded gallery into a cluster one. Idempotent: images are
//! written by content hash (a re-run skips what is there), suppressions by request id.
//! Face ids are the cluster's own; subjects carry over by label.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use serde::Serialize;
use visage_gallery::{FaceStore, Gallery, NewSource};

use crate::store::ClusterStore;

#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    pub collections: usize,
    pub sources: usize,
    pub images_copied: u64,
    pub images_already_there: u64,
    pub faces_copied: u64,
    pub subjects: usize,
    pub suppressions_copied: usize,
}

pub fn migrate(
    gallery: &Gallery,
    store: &ClusterStore,
    only: Option<&str>,
    progress: &dyn Fn(&str, u64),
) -> Result<MigrateReport> {
    let mut report = MigrateReport::default();
    let mut packs = HashSet::new();
    for coll in gallery.collections()? {
        if only.is_some_and(|o| o != coll.name) {
            continue;
        }
        packs.insert(coll.pack.clone());
        let target = store.ensure_collection(&coll.name, &coll.pack, coll.dim)?;
        report.collections += 1;
        let mut sources: HashMap<i64, i64> = HashMap::new();
        for s in gallery.sources(coll.id)? {
            let t = store.ensure_source(
                target.id,
                &NewSource {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    uri: s.uri.clone(),
                    legal_basis: s.legal_basis.clone(),
                    licence: s.licence.clone(),
                    jurisdiction: s.jurisdiction.clone(),
                },
            )?;
            sources.insert(s.id, t.id);
            report.sources += 1;
        }
        let mut subjects: HashMap<String, i64> = HashMap::new();
        let mut after = 0;
        let mut done = 0u64;
        loop {
            let batch = gallery.export_images(coll.id, after, 64)?;
            let Some(last) = batch.last() else { break };
            after = last.image_id;
            let mut imgs = Vec::with_capacity(batch.len());
            for e in batch {
                let mut img = e.image;
                img.collection_id = target.id;
                img.source_id = *sources
                    .get(&e.source_id)
                    .ok_or_else(|| anyhow::anyhow!("image {} has an unknown source", e.image_id))?;
                for (f, label) in img.faces.iter_mut().zip(&e.labels) {
                    if let Some(l) = label {
                        let id = match subjects.get(l) {
                            Some(id) => *id,
                            None => {
                                let id = store.ensure_subject(target.id, l)?;
                                subjects.insert(l.clone(), id);
                                id
                            }
                        };
                        f.subject_id = Some(id);
                    }
                }
                imgs.push(img);
            }
            for (img, out) in imgs.iter().zip(store.add_images(&imgs)?) {
                if out.duplicate {
                    report.images_already_there += 1;
                } else {
                    report.images_copied += 1;
                    report.faces_copied += img.faces.len() as u64;
                }
            }
            done += imgs.len() as u64;
            progress(&coll.name, done);
        }
        report.subjects += subjects.len();
    }
    for pack in packs {
        let have: HashSet<String> = store
            .suppressions(&pack)?
            .into_iter()
            .map(|s| s.request_id)
            .collect();
        let (_, entries) = gallery.suppressions(&pack)?;
        let mut by_request: HashMap<String, Vec<visage_gallery::NewSuppression>> = HashMap::new();
        for s in entries.iter().filter(|s| !have.contains(&s.request_id)) {
            by_request.entry(s.request_id.clone()).or_default().push(
                visage_gallery::NewSuppression {
                    vector: s.vector.clone(),
                    z_median: s.z_median,
                    z_mad: s.z_mad,
                    origin: s.origin.clone(),
                },
            );
        }
        for (req, list) in by_request {
            report.suppressions_copied += store.add_suppressions(&pack, &req, &list)?;
        }
    }
    Ok(report)
}
