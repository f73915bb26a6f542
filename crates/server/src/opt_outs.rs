//! Opt-outs of the embedded gallery that must never go unrecorded (API and CLI).
//!
//! An opt-out changes the gallery in several steps (suppression entries, then one deletion
//! per photo and one for faces in photos that keep other people), and its audit record and
//! receipt live in another database (`governance.sqlite`). As for erasures
//! ([`crate::erasure`]):
//!
//! 1. the request is announced in governance.sqlite (`Governance::begin_change`, kind
//!    `opt_out`: request id, pack, number of selfies, contact; never the selfies);
//! 2. every deletion journals its report under `{change id}/{n}` in its own transaction
//!    (`Gallery::delete_journaled`);
//! 3. the receipt and the audit record are written from the journaled reports, and the
//!    pending change dropped, in one governance transaction.
//!
//! An interruption after the selfies' embeddings went on the suppression list leaves a
//! pending change; [`resume`] (run when the API server opens the data directory read-write,
//! and before the CLI's opt-out) finishes it with `visage_engine::optout::resume_opt_out`,
//! which finds the requester's faces again from the embeddings on the list, and records it
//! with the counts of both runs and `resumed_after_interruption`. One interrupted before the
//! list changed is dropped (nothing was done).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use visage_engine::optout::{self, OptOutOutcome};
use visage_gallery::{DeleteReport, DeleteTarget, Gallery};
use visage_governance::{Actor, GovError, Governance, Receipt, ReceiptOrder};
use visage_vision::FacePipeline;

/// The change kind in `pending_change`.
const KIND: &str = "opt_out";

/// What is announced before an opt-out changes anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub request_id: String,
    pub pack: String,
    /// Selfies submitted.
    pub selfies: usize,
    /// The requester's contact (kept with the request, as `public_requests.sqlite` does).
    pub contact: String,
    /// Who asked: the public portal, or the operator at the CLI.
    pub by: Actor,
}

/// An opt-out done and recorded.
#[derive(Debug)]
pub struct Recorded {
    pub pending: Pending,
    /// Counts of everything the opt-out deleted, across an interruption.
    pub outcome: OptOutOutcome,
    /// What the receipt attests.
    pub summary: Value,
    /// `None` only when another process recorded it meanwhile.
    pub receipt: Option<Receipt>,
    pub resumed: bool,
}

fn key(id: &str, n: usize) -> String {
    format!("{id}/{n}")
}

/// Journaled deletions of change `id` (its intents are `{id}/{n}`).
fn journal_of(gallery: &Gallery, id: &str) -> Result<Vec<String>> {
    let prefix = format!("{id}/");
    Ok(gallery
        .journaled_intents()?
        .into_iter()
        .filter(|i| i.starts_with(&prefix))
        .collect())
}

/// Environment variable of the fault-injection hook the interruption tests use: the process
/// aborts, as if killed, right after its N-th opt-out deletion committed (N from 1). Never
/// set in production.
pub const ABORT_AFTER_ENV: &str = "VISAGE_TEST_ABORT_OPT_OUT_AFTER_DELETIONS";

/// Counts an opt-out deletion that committed; aborts the process where the test hook
/// ([`ABORT_AFTER_ENV`]) says so.
pub(crate) fn deletion_committed(done: usize) {
    if let Ok(n) = std::env::var(ABORT_AFTER_ENV) {
        if n.trim().parse::<usize>().ok() == Some(done) {
            eprintln!("visage: {ABORT_AFTER_ENV}={n}: aborting after opt-out deletion {done}");
            std::process::abort();
        }
    }
}

/// Runs the opt-out with every deletion journaled under change `id`, numbering on from `n`.
fn journaling<T>(
    gallery: &Gallery,
    id: &str,
    mut n: usize,
    f: impl FnOnce(&mut optout::Deleter<'_>) -> Result<T>,
) -> Result<T> {
    let mut delete = |t: &DeleteTarget| {
        let r = gallery.delete_journaled(t, &key(id, n))?;
        n += 1;
        deletion_committed(n);
        Ok(r)
    };
    f(&mut delete)
}

/// Carries out an opt-out and records it (see the module documentation). An opt-out that
/// fails after it changed the gallery is finished at once from the list (the failure may
/// have been passing); if that fails too, the error says it stays pending.
pub fn run(
    gallery: &Gallery,
    gov: &Governance,
    p: &FacePipeline,
    pending: Pending,
    selfies: &[Vec<u8>],
) -> Result<Recorded> {
    let id = gov
        .begin_change(KIND, &serde_json::to_value(&pending)?)
        .context("announcing the opt-out in the governance database")?;
    let res = journaling(gallery, &id, 0, |d| {
        optout::opt_out_with(gallery, p, &pending.request_id, selfies, d)
    });
    match res {
        Ok(outcome) => finish(gallery, gov, &id, pending, outcome, false),
        Err(e) => {
            if !optout::has_started(gallery, &pending.pack, &pending.request_id)? {
                gov.abandon_change(&id)?;
                return Err(e);
            }
            tracing::warn!(request = %pending.request_id, error = %e,
                "an opt-out failed half way; finishing it from the suppression list");
            resume_one(gallery, gov, p, &id, pending).map_err(|e2| {
                e2.context(format!(
                    "the opt-out failed half way ({e:#}) and could not be finished; it stays \
                     pending and is finished when the data directory is next opened read-write"
                ))
            })
        }
    }
}

/// Finishes pending change `id`: the rest of the opt-out, then its record.
fn resume_one(
    gallery: &Gallery,
    gov: &Governance,
    p: &FacePipeline,
    id: &str,
    pending: Pending,
) -> Result<Recorded> {
    let done = journal_of(gallery, id)?.len();
    let outcome = journaling(gallery, id, done, |d| {
        optout::resume_opt_out(gallery, p, &pending.request_id, d)
    })?;
    match outcome {
        Some(mut o) => {
            o.selfies = pending.selfies;
            finish(gallery, gov, id, pending, o, true)
        }
        None => anyhow::bail!(
            "opt-out {} left nothing on the suppression list to finish it from",
            pending.request_id
        ),
    }
}

/// Records change `id` from the journal: the receipt and the audit record in one governance
/// transaction, then the journal is forgotten.
fn finish(
    gallery: &Gallery,
    gov: &Governance,
    id: &str,
    pending: Pending,
    mut outcome: OptOutOutcome,
    resumed: bool,
) -> Result<Recorded> {
    let intents = journal_of(gallery, id)?;
    let mut total = DeleteReport::default();
    for i in &intents {
        total.add(gallery.journaled(i)?.unwrap_or_default());
    }
    total.face_ids.sort_unstable();
    outcome.faces_deleted = total.faces;
    outcome.images_deleted = total.images;
    outcome.face_ids = total.face_ids;
    let summary =
        crate::public::opt_out_summary(&pending.request_id, pending.selfies, &outcome, resumed);
    let order = ReceiptOrder {
        by: pending.by.clone(),
        org_id: None,
        kind: "opt_out".into(),
        body: summary.clone(),
    };
    let receipt = match gov.finish_change(id, Some(order), |r| {
        let rid = r.map(|r| r.id.as_str()).unwrap_or_default();
        vec![crate::public::opt_out_event(
            &pending.by,
            &pending.request_id,
            rid,
            &outcome,
            resumed,
        )]
    }) {
        Ok(r) => r,
        // Finished by another process meanwhile: recorded once, by it.
        Err(GovError::NotFound(_)) => None,
        Err(e) => return Err(anyhow::Error::new(e).context("recording the opt-out")),
    };
    for i in &intents {
        gallery.forget_journaled(i)?;
    }
    Ok(Recorded {
        pending,
        outcome,
        summary,
        receipt,
        resumed,
    })
}

/// Finishes the opt-outs an interruption left pending (see the module documentation).
/// Opt-outs made with another pack than `p`'s are left pending, with a warning: their
/// embeddings can only be matched by that pack. Needs the gallery read-write.
pub fn resume(gallery: &Gallery, gov: &Governance, p: &FacePipeline) -> Result<Vec<Recorded>> {
    let mut out = Vec::new();
    for change in gov
        .pending_changes()?
        .into_iter()
        .filter(|c| c.kind == KIND)
    {
        let pending: Pending = serde_json::from_value(change.json.clone())
            .with_context(|| format!("reading pending opt-out {}", change.id))?;
        if pending.pack != p.pack_id() {
            tracing::warn!(request = %pending.request_id, pack = %pending.pack,
                "an interrupted opt-out waits for its pack; open the data directory with it");
            continue;
        }
        if !optout::has_started(gallery, &pending.pack, &pending.request_id)? {
            gov.abandon_change(&change.id)?;
            continue;
        }
        let r = resume_one(gallery, gov, p, &change.id, pending)
            .with_context(|| format!("finishing interrupted opt-out {}", change.id))?;
        tracing::warn!(request = %r.pending.request_id,
            "an opt-out interrupted before it was recorded was finished and recorded now");
        out.push(r);
    }
    Ok(out)
}
