//! Opt-outs over the cluster that must never go unrecorded (`visage_cluster::pending`): the
//! request is announced under its lock, every deletion journals its report in its own
//! transaction, and the receipt, audit record and public request are written from the
//! journal in the transaction that drops the announcement. An opt-out whose process died is
//! taken over by another API process ([`resume_abandoned`]: at start and every minute), which
//! finds the requester's faces again from the suppression list's entries of the request
//! (`visage_engine::optout::resume_opt_out`) and records it with the counts of both runs and
//! `resumed_after_interruption`.

use anyhow::Result;
use serde_json::Value;
use visage_cluster::audit::PgAudit;
use visage_cluster::pending::{self, Held, PendingOptOut};
use visage_cluster::{receipts, ClusterStore};
use visage_engine::optout::{self, OptOutOutcome};
use visage_gallery::{DeleteReport, DeleteTarget};
use visage_governance::{Actor, Receipt};
use visage_vision::FacePipeline;

use crate::public::{opt_out_event, opt_out_summary};

/// An opt-out done and recorded.
pub(crate) struct Done {
    pub summary: Value,
    pub receipt: Receipt,
}

/// Deletes through `store`, journaling each deletion under `request_id`.
fn journaling<'a>(
    store: &'a ClusterStore,
    request_id: &'a str,
) -> impl FnMut(&DeleteTarget) -> Result<DeleteReport> + 'a {
    let mut n = 0;
    move |t| {
        let (r, ()) = store.delete_recorded(t, |tx, r| pending::journal_in(tx, request_id, r))?;
        n += 1;
        crate::opt_outs::deletion_committed(n);
        Ok(r)
    }
}

/// Carries out and records an opt-out. One that fails after it changed the gallery is
/// finished at once from the suppression list; if that fails too, it stays pending and
/// another API process (or this one, within a minute) finishes it.
pub(crate) fn run(
    store: &ClusterStore,
    audit: &PgAudit<'_>,
    p: &FacePipeline,
    opt_out: PendingOptOut,
    selfies: &[Vec<u8>],
) -> Result<Done> {
    let mut held = pending::announce(store.pool(), &opt_out)?;
    let id = opt_out.request_id.clone();
    let res = optout::opt_out_with(store, p, &id, selfies, &mut journaling(store, &id));
    match res {
        Ok(o) => record(&mut held, audit, o, false),
        Err(e) => {
            if !optout::has_started(store, &opt_out.pack, &id)? {
                held.drop_unstarted()?;
                return Err(e);
            }
            tracing::warn!(request = %id, error = %e,
                "an opt-out failed half way; finishing it from the suppression list");
            match resume_held(store, audit, p, &mut held) {
                Ok(Some(done)) => Ok(done),
                Ok(None) => Err(e),
                Err(e2) => Err(e2.context(format!(
                    "the opt-out failed half way ({e:#}) and could not be finished; it stays \
                     pending and an API process finishes it within a minute"
                ))),
            }
        }
    }
}

/// The rest of a held opt-out, then its record; `None` (and the announcement dropped) when
/// it had changed nothing.
fn resume_held(
    store: &ClusterStore,
    audit: &PgAudit<'_>,
    p: &FacePipeline,
    held: &mut Held,
) -> Result<Option<Done>> {
    let id = held.opt_out.request_id.clone();
    let outcome = optout::resume_opt_out(store, p, &id, &mut journaling(store, &id))?;
    match outcome {
        Some(mut o) => {
            o.selfies = held.opt_out.selfies;
            record(held, audit, o, true).map(Some)
        }
        None => {
            held.drop_unstarted()?;
            Ok(None)
        }
    }
}

fn record(
    held: &mut Held,
    audit: &PgAudit<'_>,
    mut outcome: OptOutOutcome,
    resumed: bool,
) -> Result<Done> {
    let o = held.opt_out.clone();
    held.finish(|tx, total| {
        outcome.faces_deleted = total.faces;
        outcome.images_deleted = total.images;
        outcome.face_ids = total.face_ids;
        let summary = opt_out_summary(&o.request_id, o.selfies, &outcome, resumed);
        let receipt = receipts::record_public_request_in(
            tx,
            audit,
            &o.request_id,
            "opt_out",
            &o.contact,
            summary.clone(),
            |r| opt_out_event(&Actor::public(), &o.request_id, &r.id, &outcome, resumed),
        )?;
        Ok(Done { summary, receipt })
    })
}

/// Finishes the opt-outs whose process died (their locks are free); returns how many were
/// recorded. Opt-outs of another pack than `p`'s are left to a process with that pack.
pub fn resume_abandoned(
    store: &ClusterStore,
    audit: &PgAudit<'_>,
    p: &FacePipeline,
) -> Result<usize> {
    let mut n = 0;
    for id in pending::pending_ids(store.pool())? {
        let Some(mut held) = pending::claim(store.pool(), &id)? else {
            continue;
        };
        if held.opt_out.pack != p.pack_id() {
            tracing::warn!(request = %id, pack = %held.opt_out.pack,
                "an interrupted opt-out waits for an API process with its pack");
            continue;
        }
        if resume_held(store, audit, p, &mut held)?.is_some() {
            tracing::warn!(request = %id,
                "an opt-out interrupted before it was recorded was finished and recorded now");
            n += 1;
        }
    }
    Ok(n)
}
