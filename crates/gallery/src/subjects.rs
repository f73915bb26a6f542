//! Collections and subjects: creating and describing collections; subjects (a label and a JSON
//! object of attributes grouping faces of one collection) created, changed and deleted, and
//! faces assigned to them. Each change is one transaction; the loaded vector indexes'
//! attribute tables (which answer subject filters) follow right after the commit, under the
//! gallery's write lock.
//!
//! Functions that show faces take `exclude_jurisdictions` (the policy's excluded
//! jurisdictions): faces there are neither counted, listed nor assignable, as if absent.

use std::collections::{BTreeSet, HashMap};

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use serde_json::Value;

use super::{
    id_list, lock, now, read, row_collection, row_source, write, Collection, Gallery, Source,
};
use crate::filter::Filter;

/// Longest collection name (characters).
pub const MAX_COLLECTION_NAME: usize = 64;
/// Longest subject label (characters).
pub const MAX_LABEL: usize = 200;
/// Largest attributes object (bytes of compact JSON).
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;
/// Most faces one assignment may name.
pub const MAX_ASSIGN: usize = 10_000;
/// Most subjects one listing page returns.
pub const MAX_PAGE: usize = 1_000;

/// Why a collection or subject operation was refused; `Other` is an unexpected failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The collection, subject or face does not exist (or is hidden).
    #[error("{0}")]
    NotFound(String),
    /// The name or label is already used.
    #[error("{0}")]
    Conflict(String),
    /// Input breaking a rule: a name's characters, a label's length, faces of another
    /// collection, attributes that are not an object.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<rusqlite::Error> for CatalogError {
    fn from(e: rusqlite::Error) -> CatalogError {
        CatalogError::Other(e.into())
    }
}

pub type CatalogResult<T> = std::result::Result<T, CatalogError>;

/// A collection with its counts and sources.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CollectionSummary {
    pub collection: Collection,
    pub faces: u64,
    pub images: u64,
    pub subjects: u64,
    pub sources: Vec<SourceSummary>,
}

/// A source with the number of its images and faces.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceSummary {
    pub source: Source,
    pub images: u64,
    pub faces: u64,
}

/// A subject: a label and attributes grouping faces of one collection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Subject {
    pub id: i64,
    pub collection_id: i64,
    pub collection: String,
    pub label: String,
    /// A JSON object (`{}` when none was given).
    pub attributes: Value,
    pub created_at: i64,
    /// Faces assigned to it (outside excluded jurisdictions).
    pub faces: u64,
}

/// What an assignment changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AssignReport {
    pub subject_id: i64,
    /// Faces that now belong to the subject and did not before (`moved` included).
    pub assigned: usize,
    /// Of those, faces taken from another subject.
    pub moved: usize,
    /// Faces that already belonged to the subject.
    pub unchanged: usize,
    /// The faces named, sorted, without repeats.
    pub face_ids: Vec<i64>,
}

/// A deleted subject and the faces it left unassigned.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SubjectRemoval {
    pub subject_id: i64,
    pub collection_id: i64,
    pub faces_unassigned: usize,
    pub face_ids: Vec<i64>,
}

/// Collections and subjects as the catalogue endpoints see them, on either backend (the
/// embedded [`Gallery`] and the cluster's store). Every change is one transaction; functions
/// that show faces take `exclude_jurisdictions` (faces there are neither counted, listed nor
/// assignable). The rules (names, labels, attributes, all-or-none assignment) are the
/// `validate_*` functions of this module, shared by both.
pub trait Catalog: crate::FaceStore {
    /// Creates an empty collection pinned to `pack` with `dim`-dimensional embeddings;
    /// `Conflict` when the name is taken.
    fn create_collection(&self, name: &str, pack: &str, dim: usize) -> CatalogResult<Collection>;
    /// The named collection with its face, image and subject counts and its sources.
    fn describe_collection(&self, name: &str) -> CatalogResult<CollectionSummary>;
    /// Creates a subject; `Conflict` when the label is taken in the collection.
    fn create_subject(
        &self,
        collection_id: i64,
        label: &str,
        attributes: &Value,
    ) -> CatalogResult<Subject>;
    /// One subject with its visible face count.
    fn subject(&self, id: i64, exclude_jurisdictions: &[String]) -> CatalogResult<Subject>;
    /// The visible faces of a subject, by id.
    fn subject_face_ids(
        &self,
        id: i64,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Vec<i64>>;
    /// A collection's subjects with ids above `after`, by id, at most `limit` (1 to 1000).
    fn list_subjects(
        &self,
        collection_id: i64,
        after: i64,
        limit: usize,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Vec<Subject>>;
    /// Changes a subject's label and/or replaces its attributes.
    fn update_subject(
        &self,
        id: i64,
        label: Option<&str>,
        attributes: Option<&Value>,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Subject>;
    /// Deletes a subject; its faces stay, unassigned.
    fn delete_subject(&self, id: i64) -> CatalogResult<SubjectRemoval>;
    /// Assigns faces to a subject, all or none (faces of another subject move).
    fn assign_faces(
        &self,
        subject_id: i64,
        face_ids: &[i64],
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<AssignReport>;
    /// Takes one face out of a subject.
    fn unassign_face(
        &self,
        subject_id: i64,
        face_id: i64,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<()>;
}

/// The assignment's face ids, sorted and without repeats; `Invalid` when none or too many.
pub fn assignment_ids(face_ids: &[i64]) -> CatalogResult<Vec<i64>> {
    if face_ids.is_empty() {
        return Err(CatalogError::Invalid("name at least one face id".into()));
    }
    if face_ids.len() > MAX_ASSIGN {
        return Err(CatalogError::Invalid(format!(
            "at most {MAX_ASSIGN} faces per assignment"
        )));
    }
    Ok(face_ids
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// Checks the faces found for an assignment (`found`: id -> (collection, subject), visible
/// faces only) and counts what it changes: `NotFound` for a missing face, `Invalid` for one
/// of another collection. Returns the report and the ids to change.
pub fn plan_assignment(
    subject_id: i64,
    collection_id: i64,
    ids: Vec<i64>,
    found: &HashMap<i64, (i64, Option<i64>)>,
) -> CatalogResult<(AssignReport, Vec<i64>)> {
    let missing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| !found.contains_key(i))
        .collect();
    if !missing.is_empty() {
        return Err(CatalogError::NotFound(format!(
            "no face with id {}",
            some_ids(&missing)
        )));
    }
    let foreign: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| found[i].0 != collection_id)
        .collect();
    if !foreign.is_empty() {
        return Err(CatalogError::Invalid(format!(
            "faces {} are not in the subject's collection; a subject groups faces of one \
             collection",
            some_ids(&foreign)
        )));
    }
    let changed: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| found[i].1 != Some(subject_id))
        .collect();
    let report = AssignReport {
        subject_id,
        unchanged: ids.len() - changed.len(),
        moved: changed.iter().filter(|i| found[i].1.is_some()).count(),
        assigned: changed.len(),
        face_ids: ids,
    };
    Ok((report, changed))
}

/// Why a face cannot be taken out of a subject (`face`: its subject, if it is visible), or
/// nothing when it can.
pub fn check_unassign(
    subject_id: i64,
    face_id: i64,
    face: Option<Option<i64>>,
) -> CatalogResult<()> {
    match face {
        None => Err(CatalogError::NotFound(format!("no face with id {face_id}"))),
        Some(s) if s != Some(subject_id) => Err(CatalogError::NotFound(format!(
            "face {face_id} is not assigned to subject {subject_id}"
        ))),
        Some(_) => Ok(()),
    }
}

/// A collection name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`, starting with a letter
/// or digit (it appears in URLs, file listings and command lines).
pub fn validate_collection_name(name: &str) -> CatalogResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(CatalogError::Invalid(format!(
            "collection name {name:?} is not valid: use 1 to {MAX_COLLECTION_NAME} ASCII letters, \
             digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// A subject label, trimmed: 1 to 200 characters, no control characters.
pub fn validate_label(label: &str) -> CatalogResult<String> {
    let l = label.trim();
    if l.is_empty() {
        return Err(CatalogError::Invalid("a subject needs a label".into()));
    }
    if l.chars().count() > MAX_LABEL {
        return Err(CatalogError::Invalid(format!(
            "a subject label has at most {MAX_LABEL} characters"
        )));
    }
    if l.chars().any(char::is_control) {
        return Err(CatalogError::Invalid(
            "a subject label may not hold control characters".into(),
        ));
    }
    Ok(l.to_string())
}

/// Attributes: a JSON object of at most 64 KiB; returns its compact text.
pub fn validate_attributes(attributes: &Value) -> CatalogResult<String> {
    if !attributes.is_object() {
        return Err(CatalogError::Invalid(
            "subject attributes must be a JSON object".into(),
        ));
    }
    let text = attributes.to_string();
    if text.len() > MAX_ATTRIBUTES_BYTES {
        return Err(CatalogError::Invalid(format!(
            "subject attributes take at most {MAX_ATTRIBUTES_BYTES} bytes as JSON"
        )));
    }
    Ok(text)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

/// The SQL condition (aliases `f`, `i`) hiding faces in these jurisdictions, and the filter.
fn hiding(exclude_jurisdictions: &[String]) -> CatalogResult<(Filter, String, Vec<SqlValue>)> {
    let f = Filter {
        exclude_jurisdictions: exclude_jurisdictions.to_vec(),
        ..Default::default()
    }
    .validated()?;
    let (w, p) = f.sql();
    Ok((f, w, p))
}

const SUBJECT_COLS: &str = "s.id, s.collection_id, c.name, s.label, s.attributes, s.created_at";

fn row_subject(r: &rusqlite::Row) -> rusqlite::Result<Subject> {
    let attrs: String = r.get(4)?;
    Ok(Subject {
        id: r.get(0)?,
        collection_id: r.get(1)?,
        collection: r.get(2)?,
        label: r.get(3)?,
        attributes: serde_json::from_str(&attrs)
            .unwrap_or_else(|_| Value::Object(Default::default())),
        created_at: r.get(5)?,
        faces: r.get::<_, i64>(6)? as u64,
    })
}

/// Subjects matching `cond` (over alias `s`, with any ORDER BY and LIMIT), each with its
/// visible face count.
fn query_subjects(
    conn: &Connection,
    exclude_jurisdictions: &[String],
    cond: &str,
    cond_params: Vec<SqlValue>,
) -> CatalogResult<Vec<Subject>> {
    let (_, w, mut p) = hiding(exclude_jurisdictions)?;
    p.extend(cond_params);
    let mut st = conn.prepare(&format!(
        "SELECT {SUBJECT_COLS}, (SELECT COUNT(*) FROM face f JOIN image i ON i.id = f.image_id \
         WHERE f.subject_id = s.id AND {w}) \
         FROM subject s JOIN collection c ON c.id = s.collection_id WHERE {cond}"
    ))?;
    let v = st
        .query_map(params_from_iter(p), row_subject)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(v)
}

fn subject_collection(conn: &Connection, subject_id: i64) -> CatalogResult<i64> {
    conn.query_row(
        "SELECT collection_id FROM subject WHERE id = ?1",
        [subject_id],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| CatalogError::NotFound(format!("no subject with id {subject_id}")))
}

/// "1, 2, 3" (the first ten, then how many in all).
fn some_ids(ids: &[i64]) -> String {
    let mut s = ids
        .iter()
        .take(10)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > 10 {
        s.push_str(&format!(" ({} in all)", ids.len()));
    }
    s
}

impl Catalog for Gallery {
    /// Creates an empty collection pinned to `pack` (`name@version`) with `dim`-dimensional
    /// embeddings; `Conflict` when the name is taken, whatever its pack.
    fn create_collection(&self, name: &str, pack: &str, dim: usize) -> CatalogResult<Collection> {
        self.require_writable()?;
        validate_collection_name(name)?;
        if dim == 0 || pack.trim().is_empty() {
            return Err(CatalogError::Invalid(
                "a collection needs a model pack and a dimension".into(),
            ));
        }
        let conn = lock(&self.conn);
        match conn.execute(
            "INSERT INTO collection (name, pack, dim, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, pack, dim as i64, now()],
        ) {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(CatalogError::Conflict(format!(
                    "a collection named {name:?} already exists"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        let id = conn.last_insert_rowid();
        Ok(conn.query_row(
            "SELECT id, name, pack, dim, created_at FROM collection WHERE id = ?1",
            [id],
            row_collection,
        )?)
    }

    /// The named collection with its face, image and subject counts and its sources.
    fn describe_collection(&self, name: &str) -> CatalogResult<CollectionSummary> {
        let conn = lock(&self.conn);
        let collection = conn
            .query_row(
                "SELECT id, name, pack, dim, created_at FROM collection WHERE name = ?1",
                [name],
                row_collection,
            )
            .optional()?
            .ok_or_else(|| CatalogError::NotFound(format!("no collection named {name:?}")))?;
        let count = |sql: &str| -> CatalogResult<u64> {
            Ok(conn.query_row(sql, [collection.id], |r| r.get::<_, i64>(0))? as u64)
        };
        let faces = count("SELECT COUNT(*) FROM face WHERE collection_id = ?1")?;
        let images = count("SELECT COUNT(*) FROM image WHERE collection_id = ?1")?;
        let subjects = count("SELECT COUNT(*) FROM subject WHERE collection_id = ?1")?;
        let mut st = conn.prepare(
            "SELECT id, collection_id, name, kind, uri, legal_basis, licence, jurisdiction, \
             created_at, \
             (SELECT COUNT(*) FROM image i WHERE i.source_id = s.id), \
             (SELECT COUNT(*) FROM face f JOIN image i ON i.id = f.image_id \
              WHERE i.source_id = s.id) \
             FROM source s WHERE collection_id = ?1 ORDER BY id",
        )?;
        let sources = st
            .query_map([collection.id], |r| {
                Ok(SourceSummary {
                    source: row_source(r)?,
                    images: r.get::<_, i64>(9)? as u64,
                    faces: r.get::<_, i64>(10)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(CollectionSummary {
            collection,
            faces,
            images,
            subjects,
            sources,
        })
    }

    /// Creates a subject in a collection; `Conflict` when the label is taken there.
    fn create_subject(
        &self,
        collection_id: i64,
        label: &str,
        attributes: &Value,
    ) -> CatalogResult<Subject> {
        self.require_writable()?;
        let label = validate_label(label)?;
        let attrs = validate_attributes(attributes)?;
        let conn = lock(&self.conn);
        if !collection_exists(&conn, collection_id)? {
            return Err(CatalogError::NotFound(format!(
                "no collection with id {collection_id}"
            )));
        }
        match conn.execute(
            "INSERT INTO subject (collection_id, label, attributes, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![collection_id, label, attrs, now()],
        ) {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(CatalogError::Conflict(format!(
                    "the collection already has a subject labelled {label:?}"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        let id = conn.last_insert_rowid();
        query_subjects(&conn, &[], "s.id = ?", vec![SqlValue::Integer(id)])?
            .pop()
            .ok_or_else(|| CatalogError::Other(anyhow::anyhow!("subject {id} vanished")))
    }

    /// One subject with its visible face count.
    fn subject(&self, id: i64, exclude_jurisdictions: &[String]) -> CatalogResult<Subject> {
        let conn = lock(&self.conn);
        query_subjects(
            &conn,
            exclude_jurisdictions,
            "s.id = ?",
            vec![SqlValue::Integer(id)],
        )?
        .pop()
        .ok_or_else(|| CatalogError::NotFound(format!("no subject with id {id}")))
    }

    /// The visible faces of a subject, by id.
    fn subject_face_ids(
        &self,
        id: i64,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Vec<i64>> {
        let (_, w, mut p) = hiding(exclude_jurisdictions)?;
        p.push(SqlValue::Integer(id));
        let conn = lock(&self.conn);
        let mut st = conn.prepare(&format!(
            "SELECT f.id FROM face f JOIN image i ON i.id = f.image_id \
             WHERE {w} AND f.subject_id = ? ORDER BY f.id"
        ))?;
        let v = st
            .query_map(params_from_iter(p), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(v)
    }

    /// A collection's subjects with ids above `after`, by id, at most `limit` (1 to 1000).
    fn list_subjects(
        &self,
        collection_id: i64,
        after: i64,
        limit: usize,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Vec<Subject>> {
        let conn = lock(&self.conn);
        query_subjects(
            &conn,
            exclude_jurisdictions,
            "s.collection_id = ? AND s.id > ? ORDER BY s.id LIMIT ?",
            vec![
                SqlValue::Integer(collection_id),
                SqlValue::Integer(after),
                SqlValue::Integer(limit.clamp(1, MAX_PAGE) as i64),
            ],
        )
    }

    /// Changes a subject's label and/or replaces its attributes; `Conflict` when the new label
    /// is another subject's in the collection.
    fn update_subject(
        &self,
        id: i64,
        label: Option<&str>,
        attributes: Option<&Value>,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<Subject> {
        self.require_writable()?;
        let label = label.map(validate_label).transpose()?;
        let attrs = attributes.map(validate_attributes).transpose()?;
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        subject_collection(&tx, id)?;
        if let Some(l) = &label {
            match tx.execute(
                "UPDATE subject SET label = ?2 WHERE id = ?1",
                params![id, l],
            ) {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(CatalogError::Conflict(format!(
                        "the collection already has a subject labelled {l:?}"
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(a) = &attrs {
            tx.execute(
                "UPDATE subject SET attributes = ?2 WHERE id = ?1",
                params![id, a],
            )?;
        }
        tx.commit()?;
        query_subjects(
            &conn,
            exclude_jurisdictions,
            "s.id = ?",
            vec![SqlValue::Integer(id)],
        )?
        .pop()
        .ok_or_else(|| CatalogError::NotFound(format!("no subject with id {id}")))
    }

    /// Deletes a subject; its faces stay, unassigned. (To delete the faces too, use
    /// [`Gallery::delete`] with `DeleteTarget::Subject`.)
    fn delete_subject(&self, id: i64) -> CatalogResult<SubjectRemoval> {
        self.require_writable()?;
        let _w = lock(&self.write);
        let removal = {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let collection_id = subject_collection(&tx, id)?;
            let face_ids: Vec<i64> = tx
                .prepare("SELECT id FROM face WHERE subject_id = ?1 ORDER BY id")?
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            tx.execute(
                "UPDATE face SET subject_id = NULL WHERE subject_id = ?1",
                [id],
            )?;
            tx.execute("DELETE FROM subject WHERE id = ?1", [id])?;
            tx.commit()?;
            SubjectRemoval {
                subject_id: id,
                collection_id,
                faces_unassigned: face_ids.len(),
                face_ids,
            }
        };
        self.set_loaded_subjects(removal.collection_id, &removal.face_ids, None);
        Ok(removal)
    }

    /// Assigns faces to a subject, all or none: every face must exist, be visible and be in
    /// the subject's collection. Faces of another subject move to this one.
    fn assign_faces(
        &self,
        subject_id: i64,
        face_ids: &[i64],
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<AssignReport> {
        self.require_writable()?;
        let ids = assignment_ids(face_ids)?;
        let (filter, _, _) = hiding(exclude_jurisdictions)?;
        let _w = lock(&self.write);
        let (report, collection_id, changed) = {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let collection_id = subject_collection(&tx, subject_id)?;
            // id -> (collection, subject)
            let mut found: HashMap<i64, (i64, Option<i64>)> = HashMap::new();
            for chunk in ids.chunks(500) {
                let mut st = tx.prepare(&format!(
                    "SELECT f.id, f.collection_id, f.subject_id, i.jurisdiction FROM face f \
                     JOIN image i ON i.id = f.image_id WHERE f.id IN ({})",
                    id_list(chunk)
                ))?;
                let mut rows = st.query([])?;
                while let Some(r) = rows.next()? {
                    let j: Option<String> = r.get(3)?;
                    if filter.accepts_jurisdiction(j.as_deref()) {
                        found.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
                    }
                }
            }
            let (report, changed) = plan_assignment(subject_id, collection_id, ids, &found)?;
            for chunk in changed.chunks(500) {
                tx.execute(
                    &format!(
                        "UPDATE face SET subject_id = ?1 WHERE id IN ({})",
                        id_list(chunk)
                    ),
                    [subject_id],
                )?;
            }
            tx.commit()?;
            (report, collection_id, changed)
        };
        self.set_loaded_subjects(collection_id, &changed, Some(subject_id));
        Ok(report)
    }

    /// Takes one face out of a subject; `NotFound` when the subject or face is absent or the
    /// face is not the subject's.
    fn unassign_face(
        &self,
        subject_id: i64,
        face_id: i64,
        exclude_jurisdictions: &[String],
    ) -> CatalogResult<()> {
        self.require_writable()?;
        let (filter, _, _) = hiding(exclude_jurisdictions)?;
        let _w = lock(&self.write);
        let collection_id = {
            let mut conn = lock(&self.conn);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let collection_id = subject_collection(&tx, subject_id)?;
            let face: Option<(Option<i64>, Option<String>)> = tx
                .query_row(
                    "SELECT f.subject_id, i.jurisdiction FROM face f \
                     JOIN image i ON i.id = f.image_id WHERE f.id = ?1",
                    [face_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let visible = face
                .filter(|(_, j)| filter.accepts_jurisdiction(j.as_deref()))
                .map(|(s, _)| s);
            check_unassign(subject_id, face_id, visible)?;
            tx.execute("UPDATE face SET subject_id = NULL WHERE id = ?1", [face_id])?;
            tx.commit()?;
            collection_id
        };
        self.set_loaded_subjects(collection_id, &[face_id], None);
        Ok(())
    }
}

impl Gallery {
    /// Keeps a loaded index's attribute table (subject filters) in step with committed
    /// assignments. Call with the write lock held.
    fn set_loaded_subjects(&self, collection_id: i64, face_ids: &[i64], subject: Option<i64>) {
        let Some(state) = read(&self.states).get(&collection_id).cloned() else {
            return;
        };
        let mut attrs = write(&state.attrs);
        for id in face_ids {
            if let Some(a) = attrs.faces.get_mut(&(*id as u64)) {
                a.subject_id = subject;
            }
        }
    }
}

fn collection_exists(conn: &Connection, collection_id: i64) -> CatalogResult<bool> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM collection WHERE id = ?1",
        [collection_id],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gallery::{Access, DeleteTarget, NewFace, NewImage, NewSource, SearchQuery};

    const DIM: usize = 8;

    fn vector(seed: u64) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIM)
            .map(|i| ((seed * 31 + i as u64 * 7) % 17) as f32 - 8.0)
            .collect();
        v[(seed as usize) % DIM] += 20.0;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    /// A collection `name` with one source and `n` one-face images; the even ones in
    /// `jurisdiction_even`. Returns (collection id, face ids).
    fn fill(g: &Gallery, name: &str, n: u64, jurisdiction_even: &str) -> (i64, Vec<i64>) {
        let c = g.ensure_collection(name, "test@1", DIM).unwrap();
        let s = g
            .ensure_source(
                c.id,
                &NewSource {
                    name: format!("{name}-src"),
                    kind: "directory".into(),
                    legal_basis: Some("consent".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let seed = c.id as u64 * 1000 + i;
            let out = g
                .add_image(&NewImage {
                    collection_id: c.id,
                    source_id: s.id,
                    sha256: format!("{seed:064x}"),
                    jurisdiction: Some(if i % 2 == 0 { jurisdiction_even } else { "FR" }.into()),
                    width: 100,
                    height: 100,
                    faces: vec![NewFace {
                        bbox: [1.0, 2.0, 30.0, 40.0],
                        landmarks: [[1.0, 1.0]; 5],
                        det_score: 0.9,
                        quality: serde_json::json!({"score": 1.0}),
                        vector: vector(seed),
                        crop: format!("crop-{seed}").into_bytes(),
                        thumb: format!("thumb-{seed}").into_bytes(),
                        subject_id: None,
                    }],
                    ..Default::default()
                })
                .unwrap();
            ids.extend(out.face_ids);
        }
        (c.id, ids)
    }

    fn subject_of(g: &Gallery, face: i64) -> Option<i64> {
        g.face(face).unwrap().unwrap().subject.map(|s| s.id)
    }

    /// Face ids a search restricted to `subject` returns (through the in-memory attributes).
    fn search_subject(g: &Gallery, collection_id: i64, subject: i64) -> Vec<i64> {
        let (hits, trace) = g
            .search(&SearchQuery {
                collection_id,
                vector: &vector(1),
                k: 50,
                threshold: None,
                filter: Filter {
                    subjects: vec![subject],
                    ..Default::default()
                },
            })
            .unwrap();
        assert_eq!(trace.path, "exact_filtered");
        let mut ids: Vec<i64> = hits.iter().map(|h| h.face.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn collection_names_are_checked_and_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
        let c = g
            .create_collection("watch-list_2024.v1", "test@1", DIM)
            .unwrap();
        assert_eq!(c.name, "watch-list_2024.v1");
        assert_eq!((c.pack.as_str(), c.dim), ("test@1", DIM));
        // ingest takes it as it is; an empty collection searches to nothing
        assert_eq!(g.ensure_collection(&c.name, "test@1", DIM).unwrap(), c);
        assert!(g.ensure_collection(&c.name, "other@2", DIM).is_err());
        let (hits, _) = g
            .search(&SearchQuery {
                collection_id: c.id,
                vector: &vector(1),
                k: 5,
                threshold: None,
                filter: Filter::default(),
            })
            .unwrap();
        assert!(hits.is_empty());
        assert!(matches!(
            g.create_collection("watch-list_2024.v1", "other@2", 4),
            Err(CatalogError::Conflict(_))
        ));
        let long = "a".repeat(MAX_COLLECTION_NAME + 1);
        for bad in [
            "",
            " x",
            "a b",
            "../etc",
            "-x",
            ".x",
            "é",
            "a/b",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    g.create_collection(bad, "test@1", DIM),
                    Err(CatalogError::Invalid(_))
                ),
                "{bad:?} accepted"
            );
        }
        assert!(g
            .create_collection(&"a".repeat(MAX_COLLECTION_NAME), "test@1", DIM)
            .is_ok());
        assert!(matches!(
            g.create_collection("nodim", "test@1", 0),
            Err(CatalogError::Invalid(_))
        ));
        assert_eq!(g.collections().unwrap().len(), 2);
        drop(g);
        let ro = Gallery::open(tmp.path(), Access::ReadOnly).unwrap();
        assert!(matches!(
            ro.create_collection("fresh", "test@1", DIM),
            Err(CatalogError::Other(_))
        ));
        assert!(ro.collection("fresh").unwrap().is_none());
    }

    #[test]
    fn describe_counts_faces_images_subjects_and_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
        let (cid, faces) = fill(&g, "main", 5, "DE");
        fill(&g, "other", 2, "DE");
        let s = g.create_subject(cid, "A", &serde_json::json!({})).unwrap();
        g.assign_faces(s.id, &faces[..2], &[]).unwrap();
        let d = g.describe_collection("main").unwrap();
        assert_eq!(d.collection.id, cid);
        assert_eq!((d.faces, d.images, d.subjects), (5, 5, 1));
        assert_eq!(d.sources.len(), 1);
        assert_eq!(d.sources[0].source.name, "main-src");
        assert_eq!(d.sources[0].source.legal_basis.as_deref(), Some("consent"));
        assert_eq!((d.sources[0].images, d.sources[0].faces), (5, 5));
        let e = g.create_collection("empty", "test@1", DIM).unwrap();
        let d = g.describe_collection("empty").unwrap();
        assert_eq!(d.collection, e);
        assert_eq!((d.faces, d.images, d.subjects), (0, 0, 0));
        assert!(d.sources.is_empty());
        assert!(matches!(
            g.describe_collection("nope"),
            Err(CatalogError::NotFound(_))
        ));
    }

    #[test]
    fn subjects_create_list_update() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
        let (cid, _) = fill(&g, "main", 2, "DE");
        let (other, _) = fill(&g, "other", 1, "DE");
        let attrs = serde_json::json!({"record": "R-17", "tags": [1, 2]});
        let a = g.create_subject(cid, "  Suspect A ", &attrs).unwrap();
        assert_eq!(a.label, "Suspect A");
        assert_eq!(a.attributes, attrs);
        assert_eq!(
            (a.collection_id, a.collection.as_str(), a.faces),
            (cid, "main", 0)
        );
        assert!(matches!(
            g.create_subject(cid, "Suspect A", &serde_json::json!({})),
            Err(CatalogError::Conflict(_))
        ));
        // the same label in another collection is another subject
        let a2 = g
            .create_subject(other, "Suspect A", &serde_json::json!({}))
            .unwrap();
        assert_ne!(a2.id, a.id);
        for bad in ["", "   ", "tab\tinside", &"x".repeat(MAX_LABEL + 1)] {
            assert!(
                matches!(
                    g.create_subject(cid, bad, &serde_json::json!({})),
                    Err(CatalogError::Invalid(_))
                ),
                "{bad:?} accepted"
            );
        }
        for bad in [
            serde_json::json!([1]),
            serde_json::json!("x"),
            serde_json::Value::Null,
        ] {
            assert!(matches!(
                g.create_subject(cid, "B", &bad),
                Err(CatalogError::Invalid(_))
            ));
        }
        let big = serde_json::json!({"x": "y".repeat(MAX_ATTRIBUTES_BYTES)});
        assert!(matches!(
            g.create_subject(cid, "B", &big),
            Err(CatalogError::Invalid(_))
        ));
        assert!(matches!(
            g.create_subject(9999, "B", &serde_json::json!({})),
            Err(CatalogError::NotFound(_))
        ));
        let b = g.create_subject(cid, "B", &serde_json::json!({})).unwrap();
        let c = g.create_subject(cid, "C", &serde_json::json!({})).unwrap();

        let page = g.list_subjects(cid, 0, 2, &[]).unwrap();
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), [a.id, b.id]);
        let page = g.list_subjects(cid, b.id, 2, &[]).unwrap();
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), [c.id]);
        assert!(g.list_subjects(cid, c.id, 2, &[]).unwrap().is_empty());
        assert_eq!(g.list_subjects(other, 0, 100, &[]).unwrap().len(), 1);

        // rename, replace attributes, refuse a taken label, leave the rest as it was
        let u = g.update_subject(b.id, Some("Bee"), None, &[]).unwrap();
        assert_eq!(
            (u.label.as_str(), &u.attributes),
            ("Bee", &serde_json::json!({}))
        );
        let u = g
            .update_subject(b.id, None, Some(&serde_json::json!({"k": "v"})), &[])
            .unwrap();
        assert_eq!(
            (u.label.as_str(), &u.attributes),
            ("Bee", &serde_json::json!({"k": "v"}))
        );
        assert!(matches!(
            g.update_subject(b.id, Some("Suspect A"), Some(&serde_json::json!({})), &[]),
            Err(CatalogError::Conflict(_))
        ));
        assert_eq!(
            g.subject(b.id, &[]).unwrap(),
            u,
            "a refused update changed nothing"
        );
        assert!(matches!(
            g.update_subject(b.id, Some(""), None, &[]),
            Err(CatalogError::Invalid(_))
        ));
        assert!(matches!(
            g.update_subject(9999, Some("Z"), None, &[]),
            Err(CatalogError::NotFound(_))
        ));
        assert!(matches!(
            g.subject(9999, &[]),
            Err(CatalogError::NotFound(_))
        ));
    }

    #[test]
    fn assignment_is_all_or_nothing_and_reaches_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
        let (cid, faces) = fill(&g, "main", 6, "DE");
        let (_, other_faces) = fill(&g, "other", 1, "DE");
        g.load_index(cid).unwrap();
        let a = g.create_subject(cid, "A", &serde_json::json!({})).unwrap();
        let b = g.create_subject(cid, "B", &serde_json::json!({})).unwrap();

        let r = g
            .assign_faces(a.id, &[faces[2], faces[0], faces[0], faces[1]], &[])
            .unwrap();
        assert_eq!(
            r,
            AssignReport {
                subject_id: a.id,
                assigned: 3,
                moved: 0,
                unchanged: 0,
                face_ids: faces[..3].to_vec(),
            }
        );
        assert_eq!(g.subject(a.id, &[]).unwrap().faces, 3);
        assert_eq!(g.subject_face_ids(a.id, &[]).unwrap(), &faces[..3]);
        assert_eq!(search_subject(&g, cid, a.id), &faces[..3]);

        // a missing face or a face of another collection: refused, nothing changed
        let err = g.assign_faces(b.id, &[faces[0], 999_999], &[]).unwrap_err();
        assert!(
            matches!(&err, CatalogError::NotFound(m) if m.contains("999999")),
            "{err}"
        );
        let err = g
            .assign_faces(b.id, &[faces[1], other_faces[0]], &[])
            .unwrap_err();
        assert!(
            matches!(&err, CatalogError::Invalid(m) if m.contains(&other_faces[0].to_string())),
            "{err}"
        );
        assert!(matches!(
            g.assign_faces(9999, &[faces[0]], &[]),
            Err(CatalogError::NotFound(_))
        ));
        assert!(matches!(
            g.assign_faces(b.id, &[], &[]),
            Err(CatalogError::Invalid(_))
        ));
        assert!(matches!(
            g.assign_faces(b.id, &vec![faces[0]; MAX_ASSIGN + 1], &[]),
            Err(CatalogError::Invalid(_))
        ));
        assert_eq!(subject_of(&g, faces[0]), Some(a.id));
        assert_eq!(subject_of(&g, faces[1]), Some(a.id));
        assert_eq!(subject_of(&g, other_faces[0]), None);
        assert!(search_subject(&g, cid, b.id).is_empty());

        // moving faces from one subject to another
        let r = g
            .assign_faces(b.id, &[faces[1], faces[2], faces[3]], &[])
            .unwrap();
        assert_eq!((r.assigned, r.moved, r.unchanged), (3, 2, 0));
        let r = g.assign_faces(b.id, &[faces[3]], &[]).unwrap();
        assert_eq!((r.assigned, r.moved, r.unchanged), (0, 0, 1));
        assert_eq!(search_subject(&g, cid, a.id), [faces[0]]);
        assert_eq!(search_subject(&g, cid, b.id), &faces[1..4]);

        // unassign one
        g.unassign_face(b.id, faces[2], &[]).unwrap();
        assert_eq!(subject_of(&g, faces[2]), None);
        assert_eq!(search_subject(&g, cid, b.id), [faces[1], faces[3]]);
        assert!(matches!(
            g.unassign_face(b.id, faces[2], &[]),
            Err(CatalogError::NotFound(_))
        ));
        assert!(matches!(
            g.unassign_face(b.id, faces[0], &[]),
            Err(CatalogError::NotFound(m)) if m.contains("not assigned")
        ));
        assert!(matches!(
            g.unassign_face(b.id, 999_999, &[]),
            Err(CatalogError::NotFound(_))
        ));
        assert!(matches!(
            g.unassign_face(9999, faces[1], &[]),
            Err(CatalogError::NotFound(_))
        ));

        // an index loaded after the changes reads the same assignments from SQLite
        g.flush().unwrap();
        drop(g);
        let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
        assert_eq!(search_subject(&g, cid, b.id), [faces[1], faces[3]]);
    }

    #[test]
    fn hidden_jurisdictions_are_neither_counted_nor_assignable() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
        // faces 0, 2 in US-IL; 1, 3 in FR
        let (cid, faces) = fill(&g, "main", 4, "US-IL");
        let a = g.create_subject(cid, "A", &serde_json::json!({})).unwrap();
        g.assign_faces(a.id, &faces, &[]).unwrap();
        let hide = ["US".to_string()];
        assert_eq!(g.subject(a.id, &[]).unwrap().faces, 4);
        assert_eq!(g.subject(a.id, &hide).unwrap().faces, 2);
        assert_eq!(g.list_subjects(cid, 0, 10, &hide).unwrap()[0].faces, 2);
        assert_eq!(
            g.subject_face_ids(a.id, &hide).unwrap(),
            [faces[1], faces[3]]
        );
        let b = g.create_subject(cid, "B", &serde_json::json!({})).unwrap();
        assert!(matches!(
            g.assign_faces(b.id, &[faces[1], faces[0]], &hide),
            Err(CatalogError::NotFound(m)) if m.contains(&faces[0].to_string())
        ));
        assert!(matches!(
            g.unassign_face(a.id, faces[0], &hide),
            Err(CatalogError::NotFound(_))
        ));
        assert_eq!(subject_of(&g, faces[0]), Some(a.id));
        assert_eq!(subject_of(&g, faces[1]), Some(a.id));
    }

    #[test]
    fn deleting_a_subject_keeps_or_deletes_its_faces() {
        let tmp = tempfile::tempdir().unwrap();
        let g = Gallery::open(tmp.path(), Access::ReadWrite).unwrap();
        let (cid, faces) = fill(&g, "main", 4, "DE");
        g.load_index(cid).unwrap();
        let a = g.create_subject(cid, "A", &serde_json::json!({})).unwrap();
        let b = g.create_subject(cid, "B", &serde_json::json!({})).unwrap();
        g.assign_faces(a.id, &faces[..2], &[]).unwrap();
        g.assign_faces(b.id, &faces[2..], &[]).unwrap();

        let r = g.delete_subject(a.id).unwrap();
        assert_eq!(
            r,
            SubjectRemoval {
                subject_id: a.id,
                collection_id: cid,
                faces_unassigned: 2,
                face_ids: faces[..2].to_vec(),
            }
        );
        assert!(matches!(
            g.subject(a.id, &[]),
            Err(CatalogError::NotFound(_))
        ));
        assert!(matches!(
            g.delete_subject(a.id),
            Err(CatalogError::NotFound(_))
        ));
        assert!(g.face(faces[0]).unwrap().is_some());
        assert_eq!(subject_of(&g, faces[0]), None);
        assert!(search_subject(&g, cid, a.id).is_empty());
        // the label is free again
        g.create_subject(cid, "A", &serde_json::json!({})).unwrap();

        let rep = g.delete(&DeleteTarget::Subject(b.id)).unwrap();
        assert_eq!((rep.faces, rep.subjects), (2, 1));
        assert_eq!(rep.face_ids, &faces[2..]);
        assert!(g.face(faces[2]).unwrap().is_none());
        assert!(matches!(
            g.subject(b.id, &[]),
            Err(CatalogError::NotFound(_))
        ));
        assert_eq!(g.describe_collection("main").unwrap().faces, 2);
    }
}
