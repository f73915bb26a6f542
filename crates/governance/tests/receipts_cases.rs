//! Receipts and case reports.

mod common;

use common::*;
use serde_json::json;
use visage_governance::*;

#[test]
fn receipts_verify_and_detect_changes() {
    let (_d, gov) = open();
    let body = json!({"erased_faces": ["face:1", "face:2"], "reason": "opt-out", "n": 2});
    let r = gov
        .sign_receipt(&Actor::system(), Some(1), "erasure", body.clone())
        .unwrap();
    assert_eq!(r.kind, "erasure");
    assert_eq!(r.body, body);
    assert_eq!(r.public_key_hex, gov.public_key_hex());
    r.verify().unwrap();
    gov.verify_receipt(&r).unwrap();

    // Survives a JSON round trip (key order of the body does not matter).
    let text = serde_json::to_string(&r).unwrap();
    let back: Receipt = serde_json::from_str(&text).unwrap();
    back.verify().unwrap();
    assert_eq!(gov.get_receipt(&r.id).unwrap(), r);

    // Any change breaks it.
    let mut t = r.clone();
    t.body["n"] = json!(3);
    assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
    assert_eq!(gov.verify_receipt(&t), Err(ReceiptError::BadSignature));
    let mut t = r.clone();
    t.kind = "opt_out".into();
    assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
    let mut t = r.clone();
    t.issued_at += 1;
    assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
    let mut t = r.clone();
    t.id = "0".repeat(32);
    assert_eq!(t.verify(), Err(ReceiptError::BadSignature));
    let mut t = r.clone();
    t.signature_hex = "00".into();
    assert_eq!(t.verify(), Err(ReceiptError::Malformed));

    // Another installation's receipt verifies on its own but is not ours.
    let (_d2, other) = open();
    let foreign = other
        .sign_receipt(&Actor::system(), None, "erasure", body.clone())
        .unwrap();
    foreign.verify().unwrap();
    assert_eq!(gov.verify_receipt(&foreign), Err(ReceiptError::ForeignKey));
    // Claiming our key with their signature fails.
    let mut forged = foreign.clone();
    forged.public_key_hex = gov.public_key_hex();
    assert_eq!(gov.verify_receipt(&forged), Err(ReceiptError::BadSignature));

    // Recorded in the audit log.
    let recs = gov.audit_records(.., 100).unwrap();
    let rec = recs.iter().find(|x| x.action == "receipt").unwrap();
    assert_eq!(rec.object_ids, vec![format!("receipt:{}", r.id)]);
    assert_eq!(rec.details["signature"], json!(r.signature_hex));
    assert!(gov.verify().unwrap().ok);
}

#[test]
fn cases_and_report() {
    let (_d, gov) = open();
    let o = org(
        &gov,
        "pd",
        OrgKind::LawEnforcement,
        "CA-ON",
        OrgStatus::Active,
    );
    let p = principal(&gov, &o, "det", Role::Investigator);
    let evil = "<script>alert('x')</script> & \"more\"";
    let case = gov
        .create_case(
            &p,
            &NewCase {
                number: "2025-<b>1</b>".into(),
                purpose: evil.into(),
                legal_basis: "court order".into(),
                offence_category: "fraud".into(),
            },
        )
        .unwrap();
    assert_eq!(case.status, CaseStatus::Open);
    let dup = gov.create_case(
        &p,
        &NewCase {
            number: "2025-<b>1</b>".into(),
            purpose: "x".into(),
            legal_basis: "y".into(),
            offence_category: "z".into(),
        },
    );
    assert_eq!(dup.unwrap_err().code(), "conflict");
    assert_eq!(gov.list_cases(o.id).unwrap(), vec![case.clone()]);

    let ctx = AuthzContext {
        case_id: Some(case.id),
        purpose: Some(evil.into()),
        now: None,
    };
    let d = gov.authorize(&p, Action::Search, &ctx).unwrap();
    assert!(d.allowed);
    let probe = "ab".repeat(32);
    let rec = gov
        .append(
            AuditEvent::decision(&p, Action::Search, &d)
                .case(case.id)
                .probe_sha256(probe.clone())
                .result_count(2)
                .objects(["face:10", "face:<11>"])
                .details(json!({"purpose": evil})),
        )
        .unwrap();
    let denied = Decision {
        allowed: false,
        rule: "builtin:quota_exhausted".into(),
        reason: "quota".into(),
    };
    gov.append(AuditEvent::decision(&p, Action::Search, &denied).case(case.id))
        .unwrap();
    gov.close_case(&Actor::from(&p), case.id).unwrap();
    assert_eq!(
        gov.close_case(&Actor::from(&p), case.id)
            .unwrap_err()
            .code(),
        "conflict"
    );

    let report = gov.case_report(case.id).unwrap();
    assert_eq!(report.case.status, CaseStatus::Closed);
    assert_eq!(report.searches.len(), 2);
    let s = &report.searches[0];
    assert_eq!(s.audit_seq, rec.seq);
    assert_eq!(s.probe_sha256.as_deref(), Some(probe.as_str()));
    assert_eq!(s.result_count, Some(2));
    assert_eq!(s.face_ids, vec!["face:10", "face:<11>"]);
    assert_eq!((s.allowed, s.rule.as_str()), (true, "investigator"));
    assert_eq!(s.actor, "det");
    assert_eq!(s.purpose.as_deref(), Some(evil));
    assert!(!report.searches[1].allowed);
    let other: Vec<&str> = report.other_events.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(other, vec!["create_case", "close_case"]);

    let j = report.to_json();
    assert_eq!(j["searches"][0]["probe_sha256"], json!(probe));
    let back: CaseReport = serde_json::from_value(j).unwrap();
    assert_eq!(back, report);

    let html = report.to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "unescaped script in: {html}");
    assert!(!html.contains("<b>1"));
    assert!(!html.contains("face:<11>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"));
    assert!(html.contains("face:&lt;11&gt;"));
    assert!(html.contains(&probe));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );

    // Closed cases refuse searches.
    let d = gov.authorize(&p, Action::Search, &ctx).unwrap();
    assert_eq!(d.rule, "builtin:case_closed");
    assert_eq!(gov.get_case(999).unwrap_err().code(), "not_found");
    assert_eq!(format_utc_ms(1_709_208_000_000), "2024-02-29 12:00:00 UTC");
}
