//! The catalogue on the cluster: collections created and described, subjects created,
//! listed, changed and deleted, faces assigned to them (`visage_gallery::Catalog`, the trait
//! the catalogue endpoints use on either backend). The rules are the embedded gallery's
//! (`validate_collection_name`, `validate_label`, `validate_attributes`, `assignment_ids`,
//! `plan_assignment`, `check_unassign`); each change is one PostgreSQL transaction.
//!
//! A change of a stored face's subject also has to reach the vector indexes' copy of it
//! (subject filters): the transaction bumps the collection's `subjects_gen` (the exact scan's
//! mirrors re-read subjects when it moved) and writes one `pending_payload` intent per face,
//! which [`ClusterStore::finish_pending_payloads`] turns into Qdrant payload updates right
//! after the commit (or `visage cluster check --repair` after a crash). Searches re-check a
//! subject filter against the rows they join, so a hit is never returned for a subject its
//! face has left.

use std::collections::HashMap;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::Row;
use serde_json::Value;
use visage_gallery::filter::Filter;
use visage_gallery::gallery::subjects::{
    assignment_ids, check_unassign, plan_assignment, validate_attributes, validate_collection_name,
    validate_label, AssignReport, CatalogError, CatalogResult, CollectionSummary, SourceSummary,
    Subject, SubjectRemoval, MAX_PAGE,
};
use visage_gallery::gallery::{now, CollectionStats, NamedCount};
use visage_gallery::{Catalog, Collection, FaceStore};

use crate::store::{ClusterStore, Vectors};

fn other(e: impl Into<anyhow::Error>) -> CatalogError {
    CatalogError::Other(e.into())
}

/// A unique violation becomes `Conflict(msg)`; anything else is `Other`.
fn conflict_or(e: postgres::Error, msg: impl FnOnce() -> String) -> CatalogError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        CatalogError::Conflict(msg())
    } else {
        other(e)
    }
}

/// The hidden jurisdictions as two text arrays for [`VISIBLE`]: the codes and their `code-%`
/// patterns (codes are validated: letters, digits, one dash, so no LIKE wildcards).
fn hidden(exclude_jurisdictions: &[String]) -> CatalogResult<(Filter, Vec<String>, Vec<String>)> {
    let f = Filter {
        exclude_jurisdictions: exclude_jurisdictions.to_vec(),
        ..Default::default()
    }
    .validated()
    .map_err(|e| CatalogError::Invalid(format!("{e:#}")))?;
    let codes = f.exclude_jurisdictions.clone();
    let patterns = codes.iter().map(|c| format!("{c}-%")).collect();
    Ok((f, codes, patterns))
}

/// The condition (alias `i` for the image) that a face is visible: its image is in none of
/// the hidden jurisdictions `$1` (codes) and `$2` (patterns).
const VISIBLE: &str =
    "(i.jurisdiction IS NULL OR NOT (i.jurisdiction = ANY($1) OR i.jurisdiction LIKE ANY($2)))";

const SUBJECT_COLS: &str = "s.id, s.collection_id, c.name, s.label, s.attributes, s.created_at";

fn subject_row(r: &Row) -> Subject {
    let attributes: Value = r.get(4);
    Subject {
        id: r.get(0),
        collection_id: r.get(1),
        collection: r.get(2),
        label: r.get(3),
        attributes: if attributes.is_object() {
            attributes
        } else {
            Value::Object(Default::default())
        },
        created_at: r.get(5),
        faces: r.get::<_, i64>(6) as u64,
    }
}

/// Subjects matching `cond` (over alias `s`; its parameters start at `$3`, after the hidden
/// jurisdictions), each with its visible face count.
fn query_subjects(
    c: &mut impl postgres::GenericClient,
    exclude_jurisdictions: &[String],
    cond: &str,
    params: &[&(dyn ToSql + Sync)],
) -> CatalogResult<Vec<Subject>> {
    let (_, codes, patterns) = hidden(exclude_jurisdictions)?;
    let mut all: Vec<&(dyn ToSql + Sync)> = vec![&codes, &patterns];
    all.extend_from_slice(params);
    let rows = c
        .query(
            &format!(
                "SELECT {SUBJECT_COLS}, (SELECT COUNT(*) FROM face f \
                 JOIN image i ON i.id = f.image_id WHERE f.subject_id = s.id AND {VISIBLE}) \
                 FROM subject s JOIN collection c ON c.id = s.collection_id WHERE {cond}"
            ),
            &all,
        )
        .map_err(other)?;
    Ok(rows.iter().map(subject_row).collect())
}

fn one_subject(
    c: &mut impl postgres::GenericClient,
    id: i64,
    exclude_jurisdictions: &[String],
) -> CatalogResult<Subject> {
    query_subjects(c, exclude_jurisdictions, "s.id = $3", &[&id])?
        .pop()
        .ok_or_else(|| CatalogError::NotFound(format!("no subject with id {id}")))
}

/// The subject's collection, its row locked until the transaction ends (so concurrent
/// changes of one subject take turns).
fn lock_subject(tx: &mut postgres::Transaction<'_>, id: i64) -> CatalogResult<i64> {
    tx.query_opt(
        "SELECT collection_id FROM subject WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .map_err(other)?
    .map(|r| r.get(0))
    .ok_or_else(|| CatalogError::NotFound(format!("no subject with id {id}")))
}

/// Records, in the change's transaction, that these faces' subject changed: the exact
/// mirrors' generation moves and each face gets a payload intent.
fn subjects_changed(
    tx: &mut postgres::Transaction<'_>,
    collection_id: i64,
    face_ids: &[i64],
) -> CatalogResult<()> {
    if face_ids.is_empty() {
        return Ok(());
    }
    tx.execute(
        "UPDATE collection SET subjects_gen = subjects_gen + 1 WHERE id = $1",
        &[&collection_id],
    )
    .map_err(other)?;
    tx.execute(
        "INSERT INTO pending_payload (collection_id, face_id, created_at) \
         SELECT $1, unnest($2::BIGINT[]), $3",
        &[&collection_id, &face_ids, &now()],
    )
    .map_err(other)?;
    Ok(())
}

impl ClusterStore {
    /// Sets the Qdrant payload of faces whose subject changed (`pending_payload`) from their
    /// rows, and clears the intents; without Qdrant, only clears them. Each batch reads the
    /// rows `FOR SHARE`, so no change commits between the read and the payload update; a
    /// change after it leaves an intent of its own. Returns the intents finished.
    pub fn finish_pending_payloads(&self) -> anyhow::Result<usize> {
        let mut done = 0;
        loop {
            let mut c = self.pg.get()?;
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "SELECT id, collection_id, face_id FROM pending_payload ORDER BY id \
                 LIMIT 1000 FOR UPDATE SKIP LOCKED",
                &[],
            )?;
            if rows.is_empty() {
                return Ok(done);
            }
            let intents: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            if let Vectors::Qdrant(q) = &self.vectors {
                let mut by_coll: HashMap<i64, Vec<i64>> = HashMap::new();
                for r in &rows {
                    by_coll.entry(r.get(1)).or_default().push(r.get(2));
                }
                for (coll, ids) in by_coll {
                    // face id -> subject, for the faces still stored (others have no point).
                    let mut to: HashMap<Option<i64>, Vec<i64>> = HashMap::new();
                    for r in tx.query(
                        "SELECT id, subject_id FROM face WHERE id = ANY($1) ORDER BY id \
                         FOR SHARE",
                        &[&ids],
                    )? {
                        to.entry(r.get(1)).or_default().push(r.get(0));
                    }
                    for (subject, faces) in to {
                        q.set_subject(coll, &faces, subject)?;
                    }
                }
            }
            tx.execute(
                "DELETE FROM pending_payload WHERE id = ANY($1)",
                &[&intents],
            )?;
            tx.commit()?;
            done += intents.len();
        }
    }

    /// Payload intents not yet finished (`visage cluster check`).
    pub fn pending_payloads(&self) -> anyhow::Result<u64> {
        let mut c = self.pg.get()?;
        let n: i64 = c
            .query_one("SELECT COUNT(*) FROM pending_payload", &[])?
            .get(0);
        Ok(n as u64)
    }

    /// After a committed change: brings Qdrant's copy in step now. A failure here is logged,
    /// not returned: the change is committed and its intents stay for the next change or
    /// `check --repair` (searches re-check subject filters against the rows meanwhile).
    fn follow_subjects(&self) {
        if let Err(e) = self.finish_pending_payloads() {
            tracing::warn!(
                "subject change committed, but the vector index's copy is not updated yet \
                 ({e:#}); `visage cluster check --repair` finishes it"
            );
        }
    }
}

/// What `GET /v1/stats` shows, as the embedded gallery's `Stats` has it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterStats {
    pub faces: u64,
    pub images: u64,
    pub subjects: u64,
    pub collections: Vec<CollectionStats>,
}

impl ClusterStore {
    /// Counts per collection, per source and per jurisdiction (images and faces), from the
    /// counts the triggers of migration 12 keep in `tally` (a few rows per source and
    /// jurisdiction, whatever the number of faces); subjects are counted from their table.
    pub fn stats(&self) -> anyhow::Result<ClusterStats> {
        let mut c = self.pg.get()?;
        let grouped = |c: &mut postgres::Client, sql: &str| -> anyhow::Result<HashMap<i64, u64>> {
            Ok(c.query(sql, &[])?
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64))
                .collect())
        };
        let subjects = grouped(
            &mut c,
            "SELECT collection_id, COUNT(*) FROM subject GROUP BY 1",
        )?;
        let per_source: HashMap<i64, (u64, u64)> = c
            .query(
                "SELECT source_id, SUM(images)::BIGINT, SUM(faces)::BIGINT FROM tally GROUP BY 1",
                &[],
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    (r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64),
                )
            })
            .collect();
        // A source belongs to one collection: the collection's counts are its sources' sums.
        let mut sources: HashMap<i64, Vec<NamedCount>> = HashMap::new();
        for r in c.query(
            "SELECT id, collection_id, name FROM source ORDER BY name",
            &[],
        )? {
            let (images, faces) = per_source.get(&r.get(0)).copied().unwrap_or_default();
            sources.entry(r.get(1)).or_default().push(NamedCount {
                name: r.get(2),
                images,
                faces,
            });
        }
        let mut jurisdictions: HashMap<i64, Vec<NamedCount>> = HashMap::new();
        for r in c.query(
            "SELECT collection_id, NULLIF(jurisdiction, ''), SUM(images)::BIGINT, \
             SUM(faces)::BIGINT FROM tally GROUP BY 1, 2 HAVING SUM(images) > 0 \
             ORDER BY 2 NULLS LAST",
            &[],
        )? {
            jurisdictions.entry(r.get(0)).or_default().push(NamedCount {
                name: r
                    .get::<_, Option<String>>(1)
                    .unwrap_or_else(|| "unknown".into()),
                images: r.get::<_, i64>(2) as u64,
                faces: r.get::<_, i64>(3) as u64,
            });
        }
        drop(c);
        let mut out = ClusterStats::default();
        for coll in FaceStore::collections(self)? {
            let srcs = sources.remove(&coll.id).unwrap_or_default();
            let faces: u64 = srcs.iter().map(|s| s.faces).sum();
            let images: u64 = srcs.iter().map(|s| s.images).sum();
            let subjects = subjects.get(&coll.id).copied().unwrap_or(0);
            out.faces += faces;
            out.images += images;
            out.subjects += subjects;
            out.collections.push(CollectionStats {
                id: coll.id,
                faces,
                images,
                subjects,
                sources: srcs,
                jurisdictions: jurisdictions.remove(&coll.id).unwrap_or_default(),
                name: coll.name,
                pack: coll.pack,
                dim: coll.dim,
            });
        }
        Ok(out)
    }
}

impl Catalog for ClusterStore {
    fn create_collection(&self, name: &str, pack: &str, dim: usize) -> CatalogResult<Collection> {
        validate_collection_name(name)?;
        if dim == 0 || pack.trim().is_empty() {
            return Err(CatalogError::Invalid(
                "a collection needs a model pack and a dimension".into(),
            ));
        }
        let mut c = self.pg.get().map_err(other)?;
        c.execute(
            "INSERT INTO collection (name, pack, dim, created_at) VALUES ($1, $2, $3, $4)",
            &[&name, &pack, &(dim as i32), &now()],
        )
        .map_err(|e| conflict_or(e, || format!("a collection named {name:?} already exists")))?;
        drop(c);
        // Creates the Qdrant collection too (the row exists, so this only ensures).
        Ok(self.ensure_collection(name, pack, dim)?)
    }

    fn describe_collection(&self, name: &str) -> CatalogResult<CollectionSummary> {
        let collection = self
            .collection(name)?
            .ok_or_else(|| CatalogError::NotFound(format!("no collection named {name:?}")))?;
        let mut c = self.pg.get().map_err(other)?;
        let count = |c: &mut postgres::Client, sql: &str| -> CatalogResult<u64> {
            let n: i64 = c.query_one(sql, &[&collection.id]).map_err(other)?.get(0);
            Ok(n as u64)
        };
        let faces = count(
            &mut c,
            "SELECT COALESCE(SUM(faces), 0)::BIGINT FROM tally WHERE collection_id = $1",
        )?;
        let images = count(
            &mut c,
            "SELECT COALESCE(SUM(images), 0)::BIGINT FROM tally WHERE collection_id = $1",
        )?;
        let subjects = count(
            &mut c,
            "SELECT COUNT(*) FROM subject WHERE collection_id = $1",
        )?;
        let mut per_source: HashMap<i64, (u64, u64)> = HashMap::new();
        for r in c
            .query(
                "SELECT source_id, SUM(images)::BIGINT, SUM(faces)::BIGINT FROM tally \
                 WHERE collection_id = $1 GROUP BY source_id",
                &[&collection.id],
            )
            .map_err(other)?
        {
            per_source.insert(
                r.get(0),
                (r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64),
            );
        }
        drop(c);
        let sources = self
            .sources(collection.id)?
            .into_iter()
            .map(|source| {
                let (images, faces) = per_source.get(&source.id).copied().unwrap_or_default();
                SourceSummary {
                    source,
                    images,
                    faces,
                }
            })
            .collect();
        Ok(CollectionSummary {
            collection,
            faces,
            images,
            subjects,
            sources,
        })
    }

    fn create_subject(
        &self,
        collection_id: i64,
        label: &str,
        attributes: &Value,
    ) -> CatalogResult<Subject> {
        let label = validate_label(label)?;
        validate_attributes(attributes)?;
        let mut c = self.pg.get().map_err(other)?;
        let exists = c
            .query_opt("SELECT 1 FROM collection WHERE id = $1", &[&collection_id])
            .map_err(other)?
            .is_some();
        if !exists {
            return Err(CatalogError::NotFound(format!(
                "no collection with id {collection_id}"
            )));
        }
        let id: i64 = c
            .query_one(
                "INSERT INTO subject (collection_id, label, attributes, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&collection_id, &label, attributes, &now()],
            )
            .map_err(|e| {
                conflict_or(e, || {
                    format!("the collection already has a subject labelled {label:?}")
                })
            })?
            .get(0);
        one_subject(&mut *c, id, &[])
    }

    fn subject(&self, id: i64, exclude_jurisdictions: &[String]) -> CatalogResult<Subject> {
        let mut c = self.pg.get().map_err(other)?;
        one_subject(&mut *c, id, exclude_jurisdictions)
    }

    fn subject_face_ids(
        &self,
        id: i64,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Vec<i64>> {
        let (_, codes, patterns) = hidden(exclude_jurisdictions)?;
        let mut c = self.pg.get().map_err(other)?;
        Ok(c.query(
            &format!(
                "SELECT f.id FROM face f JOIN image i ON i.id = f.image_id \
                 WHERE {VISIBLE} AND f.subject_id = $3 ORDER BY f.id"
            ),
            &[&codes, &patterns, &id],
        )
        .map_err(other)?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    fn list_subjects(
        &self,
        collection_id: i64,
        after: i64,
        limit: usize,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Vec<Subject>> {
        let limit = limit.clamp(1, MAX_PAGE) as i64;
        let mut c = self.pg.get().map_err(other)?;
        query_subjects(
            &mut *c,
            exclude_jurisdictions,
            "s.collection_id = $3 AND s.id > $4 ORDER BY s.id LIMIT $5",
            &[&collection_id, &after, &limit],
        )
    }

    fn update_subject(
        &self,
        id: i64,
        label: Option<&str>,
        attributes: Option<&Value>,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Subject> {
        let label = label.map(validate_label).transpose()?;
        if let Some(a) = attributes {
            validate_attributes(a)?;
        }
        let mut c = self.pg.get().map_err(other)?;
        let mut tx = c.transaction().map_err(other)?;
        lock_subject(&mut tx, id)?;
        if let Some(l) = &label {
            tx.execute("UPDATE subject SET label = $2 WHERE id = $1", &[&id, l])
                .map_err(|e| {
                    conflict_or(e, || {
                        format!("the collection already has a subject labelled {l:?}")
                    })
                })?;
        }
        if let Some(a) = attributes {
            tx.execute(
                "UPDATE subject SET attributes = $2 WHERE id = $1",
                &[&id, a],
            )
            .map_err(other)?;
        }
        tx.commit().map_err(other)?;
        one_subject(&mut *c, id, exclude_jurisdictions)
    }

    fn delete_subject(&self, id: i64) -> CatalogResult<SubjectRemoval> {
        let mut c = self.pg.get().map_err(other)?;
        let mut tx = c.transaction().map_err(other)?;
        let collection_id = lock_subject(&mut tx, id)?;
        let face_ids: Vec<i64> = tx
            .query(
                "UPDATE face SET subject_id = NULL WHERE subject_id = $1 RETURNING id",
                &[&id],
            )
            .map_err(other)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut face_ids = face_ids;
        face_ids.sort_unstable();
        subjects_changed(&mut tx, collection_id, &face_ids)?;
        tx.execute("DELETE FROM subject WHERE id = $1", &[&id])
            .map_err(other)?;
        tx.commit().map_err(other)?;
        drop(c);
        self.follow_subjects();
        Ok(SubjectRemoval {
            subject_id: id,
            collection_id,
            faces_unassigned: face_ids.len(),
            face_ids,
        })
    }

    fn assign_faces(
        &self,
        subject_id: i64,
        face_ids: &[i64],
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<AssignReport> {
        let ids = assignment_ids(face_ids)?;
        let (filter, _, _) = hidden(exclude_jurisdictions)?;
        let mut c = self.pg.get().map_err(other)?;
        let mut tx = c.transaction().map_err(other)?;
        let collection_id = lock_subject(&mut tx, subject_id)?;
        // id -> (collection, subject), visible faces only; the rows stay locked until commit.
        let mut found: HashMap<i64, (i64, Option<i64>)> = HashMap::new();
        for r in tx
            .query(
                "SELECT f.id, f.collection_id, f.subject_id, i.jurisdiction FROM face f \
                 JOIN image i ON i.id = f.image_id WHERE f.id = ANY($1) FOR UPDATE OF f",
                &[&ids],
            )
            .map_err(other)?
        {
            let j: Option<String> = r.get(3);
            if filter.accepts_jurisdiction(j.as_deref()) {
                found.insert(r.get(0), (r.get(1), r.get(2)));
            }
        }
        let (report, changed) = plan_assignment(subject_id, collection_id, ids, &found)?;
        if !changed.is_empty() {
            tx.execute(
                "UPDATE face SET subject_id = $1 WHERE id = ANY($2)",
                &[&subject_id, &changed],
            )
            .map_err(other)?;
        }
        subjects_changed(&mut tx, collection_id, &changed)?;
        tx.commit().map_err(other)?;
        drop(c);
        if !changed.is_empty() {
            self.follow_subjects();
        }
        Ok(report)
    }

    fn unassign_face(
        &self,
        subject_id: i64,
        face_id: i64,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<()> {
        let (filter, _, _) = hidden(exclude_jurisdictions)?;
        let mut c = self.pg.get().map_err(other)?;
        let mut tx = c.transaction().map_err(other)?;
        let collection_id = lock_subject(&mut tx, subject_id)?;
        let face = tx
            .query_opt(
                "SELECT f.subject_id, i.jurisdiction FROM face f \
                 JOIN image i ON i.id = f.image_id WHERE f.id = $1 FOR UPDATE OF f",
                &[&face_id],
            )
            .map_err(other)?
            .map(|r| (r.get::<_, Option<i64>>(0), r.get::<_, Option<String>>(1)));
        let visible = face
            .filter(|(_, j)| filter.accepts_jurisdiction(j.as_deref()))
            .map(|(s, _)| s);
        check_unassign(subject_id, face_id, visible)?;
        tx.execute(
            "UPDATE face SET subject_id = NULL WHERE id = $1",
            &[&face_id],
        )
        .map_err(other)?;
        subjects_changed(&mut tx, collection_id, &[face_id])?;
        tx.commit().map_err(other)?;
        drop(c);
        self.follow_subjects();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_codes_get_their_subdivision_patterns() {
        let (_, codes, patterns) = hidden(&["us".into(), "DE-BY".into()]).unwrap();
        assert_eq!(codes, vec!["US", "DE-BY"]);
        assert_eq!(patterns, vec!["US-%", "DE-BY-%"]);
        assert!(hidden(&["not a code".into()]).is_err());
        let (_, none, _) = hidden(&[]).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn anyhow_errors_are_other() {
        assert!(matches!(
            other(anyhow::anyhow!("x")),
            CatalogError::Other(_)
        ));
    }
}
