//! Deletions of the embedded gallery that must never go unrecorded: erasures (API and CLI)
//! and face deletions by id.
//!
//! The gallery (`gallery.sqlite`) and the audit log (`governance.sqlite`) are two databases,
//! so a deletion and its record cannot commit in one transaction as they do on the cluster
//! (`ClusterStore::delete_recorded`). Instead:
//!
//! 1. the change is announced in governance.sqlite (`Governance::begin_change`) with the
//!    targets and the record and receipt to write ([`Order`]);
//! 2. the gallery deletes each target and journals its report under `{change id}/{i}` in the
//!    deletion's own transaction (`Gallery::delete_journaled`);
//! 3. the audit record and the receipt are written from the journaled reports, and the
//!    pending change dropped, in one governance transaction (`Governance::finish_change`);
//!    then the journal entries are forgotten.
//!
//! An interruption anywhere leaves a pending change. [`resume`] (run when the API server
//! opens the data directory read-write, and before the CLI deletes) finishes each: targets
//! already deleted are recorded from the journal with the counts of that deletion, targets
//! not yet deleted are deleted now (the request was authorised and accepted; an erasure is
//! not dropped because the process died), and the record says it was resumed.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use visage_gallery::{DeleteReport, DeleteTarget, Gallery};
use visage_governance::{Actor, AuditEvent, GovError, Governance, Receipt, ReceiptOrder};

/// The change kind in `pending_change`.
const KIND: &str = "gallery_deletion";

/// What to delete and what to record once it is done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub targets: Vec<DeleteTarget>,
    /// The audit record, without the outcome: [`finish`] adds the deleted face ids, their
    /// count and (with `report_in_details`) the report as its details.
    pub event: AuditEvent,
    /// Details of the record: the report (face deletions by id) rather than the event's own.
    pub report_in_details: bool,
    /// The event's own details with the counts added (`faces`, `images`, `blobs_removed`,
    /// as strings): [`counts_in_details`].
    #[serde(default)]
    pub counts_in_details: bool,
    /// The receipt to sign, its body without the counts ([`with_counts`] adds them).
    pub receipt: Option<ReceiptPlan>,
}

/// A receipt to sign once the deletion is done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptPlan {
    pub by: Actor,
    pub org_id: Option<i64>,
    pub kind: String,
    pub body: Value,
}

/// What an erasure left: the reports added up, and the receipt if one was ordered.
#[derive(Debug)]
pub struct Done {
    pub report: DeleteReport,
    pub per_target: Vec<DeleteReport>,
    pub receipt: Option<Receipt>,
}

/// Counts of a deletion added to a receipt body: faces, images, sources, subjects, blobs
/// removed, face ids and when (no face data).
pub fn with_counts(mut body: Value, report: &DeleteReport) -> Value {
    if let Some(o) = body.as_object_mut() {
        for (k, v) in [
            ("faces", report.faces),
            ("images", report.images),
            ("sources", report.sources),
            ("subjects", report.subjects),
            ("blobs_removed", report.blobs_removed),
            ("face_ids_count", report.face_ids.len()),
        ] {
            o.insert(k.into(), v.into());
        }
        o.insert("when".into(), visage_gallery::gallery::now().into());
    }
    body
}

/// The record's details with a deletion's counts added (as strings, as the catalogue's
/// records write them); the deleted face ids and their count go in its objects and result
/// count. Used by the cluster's recorded deletions as well.
pub fn counts_in_details(ev: AuditEvent, report: &DeleteReport) -> AuditEvent {
    let mut d = ev.details.clone();
    if !d.is_object() {
        d = json!({});
    }
    for (k, v) in [
        ("faces", report.faces),
        ("images", report.images),
        ("blobs_removed", report.blobs_removed),
    ] {
        d[k] = v.to_string().into();
    }
    ev.details(d)
}

fn sum(reports: &[DeleteReport]) -> DeleteReport {
    reports
        .iter()
        .cloned()
        .fold(DeleteReport::default(), |mut t, r| {
            t.add(r);
            t
        })
}

fn key(id: &str, i: usize) -> String {
    format!("{id}/{i}")
}

/// Deletes the order's targets and records them (see the module documentation). A deletion
/// that fails before any target's rows left is not recorded (the error is returned and the
/// change abandoned); one that fails after is recorded with what left, then the error is
/// returned.
pub fn run(gallery: &Gallery, gov: &Governance, order: Order) -> Result<Done> {
    let id = gov
        .begin_change(KIND, &serde_json::to_value(&order)?)
        .context("announcing the deletion in the governance database")?;
    let mut failed = None;
    for (i, t) in order.targets.iter().enumerate() {
        if let Err(e) = gallery.delete_journaled(t, &key(&id, i)) {
            failed = Some(e.context(format!("deleting {t:?}")));
            break;
        }
    }
    if let Some(e) = failed {
        let journaled = (0..order.targets.len())
            .map(|i| gallery.journaled(&key(&id, i)))
            .collect::<Result<Vec<_>>>()?;
        if journaled.iter().all(Option::is_none) {
            gov.abandon_change(&id)?;
            return Err(e);
        }
        // Some rows left: recorded now with what left, whatever the error was.
        finish(gallery, gov, &id, &order, false)
            .context("recording the part of the deletion that was done")?;
        return Err(e.context("the part that was done is recorded in the audit log"));
    }
    finish(gallery, gov, &id, &order, false)
}

/// Records a change from the gallery's journal (targets not journaled count as nothing
/// deleted) and forgets the journal.
fn finish(
    gallery: &Gallery,
    gov: &Governance,
    id: &str,
    order: &Order,
    resumed: bool,
) -> Result<Done> {
    let per_target = (0..order.targets.len())
        .map(|i| Ok(gallery.journaled(&key(id, i))?.unwrap_or_default()))
        .collect::<Result<Vec<_>>>()?;
    let report = sum(&per_target);
    let mut ev = order
        .event
        .clone()
        .objects(report.face_ids.iter().map(|i| i.to_string()))
        .result_count(report.faces as u64);
    if order.report_in_details {
        ev = ev.details(serde_json::to_value(&report)?);
    } else if order.counts_in_details {
        ev = counts_in_details(ev, &report);
    }
    if resumed {
        let mut d = ev.details.clone();
        if !d.is_object() {
            d = json!({});
        }
        d["resumed_after_interruption"] = true.into();
        ev = ev.details(d);
    }
    let receipt = order.receipt.as_ref().map(|r| ReceiptOrder {
        by: r.by.clone(),
        org_id: r.org_id,
        kind: r.kind.clone(),
        body: with_counts(r.body.clone(), &report),
    });
    let receipt = match gov.finish_change(id, receipt, |_| vec![ev]) {
        Ok(r) => r,
        // Finished by another process meanwhile: recorded once, by it.
        Err(GovError::NotFound(_)) => None,
        Err(e) => return Err(anyhow::Error::new(e).context("recording the deletion")),
    };
    for i in 0..order.targets.len() {
        gallery.forget_journaled(&key(id, i))?;
    }
    Ok(Done {
        report,
        per_target,
        receipt,
    })
}

/// What [`resume`] finished.
#[derive(Debug, Default)]
pub struct Resumed {
    /// Changes recorded now (their ids).
    pub recorded: Vec<String>,
    /// Journal entries of changes recorded earlier, forgotten now.
    pub stale_journal: usize,
}

/// Finishes the deletions an interruption left pending (see the module documentation).
/// Needs the gallery read-write.
pub fn resume(gallery: &Gallery, gov: &Governance) -> Result<Resumed> {
    let mut out = Resumed::default();
    let pending = gov.pending_changes()?;
    for change in pending.iter().filter(|c| c.kind == KIND) {
        let order: Order = serde_json::from_value(change.json.clone())
            .with_context(|| format!("reading pending deletion {}", change.id))?;
        for (i, t) in order.targets.iter().enumerate() {
            gallery
                .delete_journaled(t, &key(&change.id, i))
                .with_context(|| format!("resuming pending deletion {} ({t:?})", change.id))?;
        }
        finish(gallery, gov, &change.id, &order, true)?;
        tracing::warn!(
            change = %change.id,
            "a deletion interrupted before it was recorded was finished and recorded now"
        );
        out.recorded.push(change.id.clone());
    }
    // Journal entries of changes recorded by a process that died before forgetting them.
    for intent in gallery.journaled_intents()? {
        let change = intent.split('/').next().unwrap_or_default();
        if !gov.is_pending(change)? {
            gallery.forget_journaled(&intent)?;
            out.stale_journal += 1;
        }
    }
    Ok(out)
}
