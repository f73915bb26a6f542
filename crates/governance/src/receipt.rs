//! Signed receipts (erasure, opt-out, exports...): verifiable with the embedded public key
//! alone, and recorded in the audit log.
//!
//! Signed message: `"visage-receipt-v1\n"` followed by the canonical JSON (keys sorted, no
//! whitespace) of `{"body": body, "id": id, "issued_at": issued_at, "kind": kind}`.

use crate::audit::{parse_public_key, Actor, AuditEvent};
use crate::error::{GovError, Result};
use crate::util::{canonical_json, now_ms, random_bytes};
use crate::Governance;
use ed25519_dalek::{Signature, Signer, Verifier};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const RECEIPT_DOMAIN: &str = "visage-receipt-v1\n";

/// A signed statement issued by an installation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// 32 hex digits, random.
    pub id: String,
    /// What it attests, e.g. `erasure`, `opt_out`.
    pub kind: String,
    /// Unix milliseconds.
    pub issued_at: i64,
    pub body: Value,
    /// Ed25519 public key of the issuing installation (hex).
    pub public_key_hex: String,
    /// Ed25519 signature (hex) over the message described in the module documentation.
    pub signature_hex: String,
}

/// Why a receipt does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt public key or signature is malformed")]
    Malformed,
    #[error("receipt signature does not match its content")]
    BadSignature,
    #[error("receipt was not issued by this installation")]
    ForeignKey,
}

impl ReceiptError {
    pub fn code(&self) -> &'static str {
        match self {
            ReceiptError::Malformed => "receipt_malformed",
            ReceiptError::BadSignature => "receipt_bad_signature",
            ReceiptError::ForeignKey => "receipt_foreign_key",
        }
    }
}

fn receipt_message(id: &str, kind: &str, issued_at: i64, body: &Value) -> Vec<u8> {
    let v = serde_json::json!({"body": body, "id": id, "issued_at": issued_at, "kind": kind});
    let mut m = RECEIPT_DOMAIN.as_bytes().to_vec();
    m.extend_from_slice(canonical_json(&v).as_bytes());
    m
}

impl Receipt {
    /// Checks the signature against the embedded public key; needs no database. (That the key
    /// is the expected installation's is [`Governance::verify_receipt`]'s or the reader's job.)
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let key = parse_public_key(&self.public_key_hex).map_err(|_| ReceiptError::Malformed)?;
        let sig = hex::decode(&self.signature_hex)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .ok_or(ReceiptError::Malformed)?;
        key.verify(
            &receipt_message(&self.id, &self.kind, self.issued_at, &self.body),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| ReceiptError::BadSignature)
    }
}

impl Receipt {
    /// A new receipt (random id, issued now) signed with `key`. Storing it and recording
    /// [`Receipt::audit_event`] is the caller's job, in one transaction.
    pub fn issue(key: &ed25519_dalek::SigningKey, kind: &str, body: Value) -> Result<Receipt> {
        if kind.is_empty() || kind.len() > 64 {
            return Err(GovError::Invalid(
                "receipt kind must be 1-64 characters".into(),
            ));
        }
        let id = hex::encode(random_bytes::<16>()?);
        let issued_at = now_ms();
        let sig = key.sign(&receipt_message(&id, kind, issued_at, &body));
        Ok(Receipt {
            id,
            kind: kind.to_string(),
            issued_at,
            body,
            public_key_hex: hex::encode(key.verifying_key().to_bytes()),
            signature_hex: hex::encode(sig.to_bytes()),
        })
    }

    /// The audit record of issuing it: action `receipt`, object `receipt:ID`, details the
    /// kind, body and signature.
    pub fn audit_event(&self, by: &Actor, org_id: Option<i64>) -> AuditEvent {
        let mut ev = AuditEvent::new(by, "receipt")
            .objects([format!("receipt:{}", self.id)])
            .details(serde_json::json!({
                "kind": self.kind,
                "issued_at": self.issued_at,
                "body": self.body,
                "signature": self.signature_hex,
            }));
        ev.org_id = org_id;
        ev.rule = "caller_authorized".into();
        ev
    }
}

impl Governance {
    /// Issues a signed receipt and records it (audit action `receipt`, object id the receipt
    /// id, details the kind, body and signature) in one transaction.
    pub fn sign_receipt(
        &self,
        by: &Actor,
        org_id: Option<i64>,
        kind: &str,
        body: Value,
    ) -> Result<Receipt> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let receipt = self.sign_receipt_tx(&tx, by, org_id, kind, body)?;
        tx.commit()?;
        Ok(receipt)
    }

    /// [`Governance::sign_receipt`] and the records of what it attests (`events`, given the
    /// receipt: they name its id) in one transaction, so neither is kept without the other.
    pub fn sign_receipt_recorded(
        &self,
        by: &Actor,
        org_id: Option<i64>,
        kind: &str,
        body: Value,
        events: impl FnOnce(&Receipt) -> Vec<crate::AuditEvent>,
    ) -> Result<Receipt> {
        let mut conn = self.db();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let receipt = self.sign_receipt_tx(&tx, by, org_id, kind, body)?;
        for ev in events(&receipt) {
            self.append_tx(&tx, ev)?;
        }
        tx.commit()?;
        Ok(receipt)
    }

    /// [`Governance::sign_receipt`] inside the caller's transaction.
    pub(crate) fn sign_receipt_tx(
        &self,
        tx: &rusqlite::Transaction,
        by: &Actor,
        org_id: Option<i64>,
        kind: &str,
        body: Value,
    ) -> Result<Receipt> {
        let receipt = Receipt::issue(&self.signing, kind, body)?;
        let json = serde_json::to_string(&receipt).map_err(anyhow::Error::from)?;
        tx.execute(
            "INSERT INTO receipt (id, kind, issued_at, json) VALUES (?1, ?2, ?3, ?4)",
            params![receipt.id, receipt.kind, receipt.issued_at, json],
        )?;
        self.append_tx(tx, receipt.audit_event(by, org_id))?;
        Ok(receipt)
    }

    /// [`Receipt::verify`], and that this installation's key signed it.
    pub fn verify_receipt(&self, receipt: &Receipt) -> Result<(), ReceiptError> {
        if !receipt
            .public_key_hex
            .eq_ignore_ascii_case(&self.public_key_hex())
        {
            return Err(ReceiptError::ForeignKey);
        }
        receipt.verify()
    }

    /// A receipt issued by this installation, by id.
    pub fn get_receipt(&self, id: &str) -> Result<Receipt> {
        let json: Option<String> = self
            .db()
            .query_row("SELECT json FROM receipt WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        let json = json.ok_or_else(|| GovError::NotFound(format!("no receipt {id}")))?;
        Ok(serde_json::from_str(&json).map_err(anyhow::Error::from)?)
    }
}
