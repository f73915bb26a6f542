//! Governance of a cluster on a real PostgreSQL (`visage_cluster::gov`, `keys`): the rules the
//! embedded store enforces (validation, unique names and case numbers, closing once), keys
//! with their organisation, every change audited, and the policy decision
//! (`visage_governance::decide`) fed by `PgFacts`: cases of the caller's organisation only,
//! closed cases, the monthly quota counted from allowed search records. Skips with a message
//! when PostgreSQL is not installed (unless `VISAGE_REQUIRE_CLUSTER=1`).

mod common;

use ed25519_dalek::SigningKey;
use visage_cluster::audit::PgAudit;
use visage_cluster::gov::{self, PgFacts};
use visage_cluster::keys;
use visage_cluster::pg::Pool;
use visage_governance::{
    decide, Action, Actor, AuditEvent, AuthzContext, CaseStatus, GovError, NewCase, NewOrg,
    OrgKind, OrgStatus, Policy, Principal, Role,
};

fn pool(test: &str) -> Option<Pool> {
    common::fresh_pool(&format!("gov_{test}"))
}

fn org(name: &str, kind: OrgKind, jurisdiction: &str, quota: Option<u64>) -> NewOrg {
    NewOrg {
        name: name.into(),
        kind,
        jurisdiction: jurisdiction.into(),
        status: OrgStatus::Active,
        trial_expires_at: None,
        search_quota: quota,
    }
}

fn case(number: &str) -> NewCase {
    NewCase {
        number: number.into(),
        purpose: "robbery investigation".into(),
        legal_basis: "court order 42".into(),
        offence_category: "robbery".into(),
    }
}

fn cli() -> Actor {
    Actor {
        user_id: None,
        name: "cli".into(),
    }
}

#[test]
fn organisations_keys_and_cases_follow_the_embedded_rules() {
    let Some(pool) = pool("rules") else { return };
    let audit = PgAudit::new(&pool, SigningKey::from_bytes(&[7; 32]));
    let agency = gov::create_org(
        &pool,
        &audit,
        &cli(),
        &org("  Metro Police ", OrgKind::LawEnforcement, "fr", None),
    )
    .unwrap();
    assert_eq!(
        (agency.name.as_str(), agency.jurisdiction.as_str()),
        ("Metro Police", "FR")
    );
    for (bad, want) in [
        (org("x", OrgKind::Private, "France", None), "invalid"),
        (org("", OrgKind::Private, "FR", None), "invalid"),
        (
            org("Metro Police", OrgKind::Private, "DE", None),
            "conflict",
        ),
        (
            NewOrg {
                status: OrgStatus::Trial,
                ..org("trial", OrgKind::Research, "DE", None)
            },
            "invalid",
        ),
    ] {
        let e = gov::create_org(&pool, &audit, &cli(), &bad).unwrap_err();
        assert_eq!(e.code(), want, "{bad:?}: {e}");
    }
    let other = gov::create_org(
        &pool,
        &audit,
        &cli(),
        &org("Records Office", OrgKind::Government, "DE-BY", Some(5)),
    )
    .unwrap();
    assert_eq!(other.search_quota, Some(5));
    assert_eq!(
        gov::orgs(&pool).unwrap(),
        vec![agency.clone(), other.clone()]
    );
    assert!(matches!(
        gov::org_by_name(&pool, "nobody"),
        Err(GovError::NotFound(_))
    ));

    // Keys: shown once, stored hashed, looked up with their organisation as it is now.
    let secret = keys::create(&pool, "jdoe", Role::Investigator, agency.id).unwrap();
    assert!(keys::create(&pool, "jdoe", Role::Auditor, other.id).is_err());
    let who = keys::lookup(&pool, &secret).unwrap().expect("the key");
    let p = who.principal().expect("a key with an organisation");
    assert_eq!(
        (p.username.as_str(), p.role, p.org.id),
        ("key:jdoe", Role::Investigator, agency.id)
    );
    assert!(keys::lookup(&pool, "vsk_wrong").unwrap().is_none());
    let suspended =
        gov::set_org_status(&pool, &audit, &cli(), agency.id, OrgStatus::Suspended).unwrap();
    assert_eq!(suspended.status, OrgStatus::Suspended);
    let who = keys::lookup(&pool, &secret).unwrap().unwrap();
    assert_eq!(who.org.as_ref().unwrap().status, OrgStatus::Suspended);
    gov::set_org_status(&pool, &audit, &cli(), agency.id, OrgStatus::Active).unwrap();

    // Cases: numbers unique per organisation, fields required, closed once.
    let c1 = gov::create_case(&pool, &audit, &p, &case(" 2026-001 ")).unwrap();
    assert_eq!(
        (c1.number.as_str(), c1.status, c1.created_by),
        ("2026-001", CaseStatus::Open, who.key_id)
    );
    let e = gov::create_case(&pool, &audit, &p, &case("2026-001")).unwrap_err();
    assert_eq!(e.code(), "conflict", "{e}");
    let e = gov::create_case(
        &pool,
        &audit,
        &p,
        &NewCase {
            purpose: "  ".into(),
            ..case("2026-002")
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), "invalid", "{e}");
    let other_p = Principal {
        org: other.clone(),
        ..p.clone()
    };
    let c2 = gov::create_case(&pool, &audit, &other_p, &case("2026-001")).unwrap();
    assert_eq!(gov::list_cases(&pool, agency.id).unwrap(), vec![c1.clone()]);
    let closed = gov::close_case(&pool, &audit, &Actor::from(&p), c1.id).unwrap();
    assert_eq!(closed.status, CaseStatus::Closed);
    assert!(closed.closed_at.is_some());
    let e = gov::close_case(&pool, &audit, &Actor::from(&p), c1.id).unwrap_err();
    assert_eq!(e.code(), "conflict", "{e}");
    assert!(matches!(
        gov::get_case(&pool, c2.id + 100),
        Err(GovError::NotFound(_))
    ));

    // Every change is one record: 2 organisations, 2 status changes, 2 cases, 1 closing; the
    // refused attempts left none.
    let report = audit.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 7, "{report:?}");
    let actions: Vec<String> = audit
        .records(.., 100)
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        [
            "create_org",
            "create_org",
            "set_org_status",
            "set_org_status",
            "create_case",
            "create_case",
            "close_case"
        ]
    );
}

#[test]
fn decisions_use_the_clusters_cases_and_quota() {
    let Some(pool) = pool("decide") else { return };
    let audit = PgAudit::new(&pool, SigningKey::from_bytes(&[9; 32]));
    let policy = Policy::default_policy();
    let facts = PgFacts(&pool);
    let a = gov::create_org(
        &pool,
        &audit,
        &cli(),
        &org("A", OrgKind::LawEnforcement, "FR", Some(2)),
    )
    .unwrap();
    let b = gov::create_org(
        &pool,
        &audit,
        &cli(),
        &org("B", OrgKind::LawEnforcement, "DE", None),
    )
    .unwrap();
    let inv = |o: &visage_governance::Organisation, role| Principal {
        user_id: 1,
        username: "key:t".into(),
        org: o.clone(),
        role,
    };
    let (pa, pb) = (inv(&a, Role::Investigator), inv(&b, Role::Investigator));
    let ca = gov::create_case(&pool, &audit, &pa, &case("A-1")).unwrap();
    let ctx = |case_id: Option<i64>| AuthzContext {
        case_id,
        purpose: Some("identify the suspect".into()),
        now: None,
    };
    let rule = |p: &Principal, action, c: Option<i64>| {
        decide(&policy, &facts, p, action, &ctx(c)).unwrap().rule
    };
    assert_eq!(rule(&pa, Action::Search, Some(ca.id)), "investigator");
    assert_eq!(rule(&pa, Action::Verify, Some(ca.id)), "investigator");
    assert_eq!(rule(&pa, Action::Search, None), "builtin:case_required");
    assert_eq!(
        rule(&pa, Action::Search, Some(ca.id + 1000)),
        "builtin:case_not_found"
    );
    // Another organisation's case does not exist for B.
    assert_eq!(
        rule(&pb, Action::Search, Some(ca.id)),
        "builtin:case_not_found"
    );
    assert_eq!(
        rule(&inv(&a, Role::Admin), Action::Search, Some(ca.id)),
        "admin-no-search"
    );
    let short = AuthzContext {
        purpose: Some("x".into()),
        ..ctx(Some(ca.id))
    };
    assert_eq!(
        decide(&policy, &facts, &pa, Action::Search, &short)
            .unwrap()
            .rule,
        "builtin:purpose_required"
    );

    // The quota counts allowed search records of the organisation, this month.
    let record = |p: &Principal, allowed: bool| {
        let d = decide(&policy, &facts, p, Action::Search, &ctx(Some(ca.id))).unwrap();
        let mut ev = AuditEvent::decision(p, Action::Search, &d).case(ca.id);
        ev.allowed = allowed;
        audit.append(ev).unwrap();
    };
    record(&pa, true);
    record(&pa, false); // a refusal does not count
    record(&pb, true); // nor another organisation's search
    assert_eq!(
        rule(&pa, Action::Search, Some(ca.id)),
        "investigator",
        "one of two used"
    );
    record(&pa, true);
    let d = decide(&policy, &facts, &pa, Action::Search, &ctx(Some(ca.id))).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.rule, "builtin:quota_exhausted");
    assert_eq!(d.error_code(), Some("quota_exceeded"));
    // Verification is not counted against the search quota.
    assert_eq!(rule(&pa, Action::Verify, Some(ca.id)), "investigator");

    gov::close_case(&pool, &audit, &Actor::from(&pa), ca.id).unwrap();
    assert_eq!(
        rule(&pb, Action::Search, Some(ca.id)),
        "builtin:case_not_found"
    );
    assert_eq!(
        rule(&pa, Action::Verify, Some(ca.id)),
        "builtin:case_closed"
    );
    let suspended = gov::set_org_status(&pool, &audit, &cli(), b.id, OrgStatus::Suspended).unwrap();
    let cb = gov::create_case(&pool, &audit, &pb, &case("B-1")).unwrap();
    assert_eq!(
        rule(
            &inv(&suspended, Role::Investigator),
            Action::Search,
            Some(cb.id)
        ),
        "builtin:org_suspended"
    );
}
