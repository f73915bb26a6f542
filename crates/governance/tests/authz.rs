//! Authorisation decisions of the shipped default policy.

mod common;

use common::*;
use visage_governance::*;

fn open_case(gov: &Governance, p: &Principal, number: &str) -> Case {
    gov.create_case(
        p,
        &NewCase {
            number: number.into(),
            purpose: "identify a robbery suspect".into(),
            legal_basis: "warrant 42".into(),
            offence_category: "robbery".into(),
        },
    )
    .unwrap()
}

fn ctx(case: Option<&Case>) -> AuthzContext {
    AuthzContext {
        case_id: case.map(|c| c.id),
        purpose: Some("identify a robbery suspect".into()),
        now: None,
    }
}

/// Every role against every action, for an active law-enforcement organisation in GB, with an
/// open case and a purpose. `A` allowed, `D` denied; the rule that decides is named.
#[test]
fn role_action_table() {
    use Action::*;
    #[rustfmt::skip]
    let table: &[(Action, [(&str, &str); 4])] = &[
        //                 admin                       investigator                auditor                 compliance
        (Search,         [("D", "admin-no-search"), ("A", "investigator"), ("D", "default"),   ("D", "default")]),
        (Verify,         [("D", "admin-no-search"), ("A", "investigator"), ("D", "default"),   ("D", "default")]),
        (Ingest,         [("A", "admin"),           ("D", "default"),      ("D", "default"),   ("D", "default")]),
        (ReadFace,       [("A", "admin"),           ("A", "investigator"), ("A", "auditor"),   ("A", "compliance")]),
        (Delete,         [("A", "admin"),           ("D", "default"),      ("D", "default"),   ("A", "compliance")]),
        (ManageAccounts, [("A", "admin"),           ("D", "default"),      ("D", "default"),   ("D", "default")]),
        (ManagePolicy,   [("A", "admin"),           ("D", "default"),      ("D", "default"),   ("D", "default")]),
        (ReadAudit,      [("A", "admin"),           ("D", "default"),      ("A", "auditor"),   ("A", "compliance")]),
        (ManageCases,    [("A", "admin"),           ("A", "investigator"), ("D", "default"),   ("D", "default")]),
        (Erase,          [("A", "admin"),           ("D", "default"),      ("D", "default"),   ("A", "compliance")]),
        (OptOutProcess,  [("A", "admin"),           ("D", "default"),      ("D", "default"),   ("A", "compliance")]),
        (ExportReport,   [("A", "admin"),           ("A", "investigator"), ("A", "auditor"),   ("D", "default")]),
    ];
    assert_eq!(
        table.len(),
        Action::ALL.len(),
        "every action is in the table"
    );
    let (_d, gov) = open();
    let o = org(
        &gov,
        "met",
        OrgKind::LawEnforcement,
        "GB",
        OrgStatus::Active,
    );
    let roles = [
        Role::Admin,
        Role::Investigator,
        Role::Auditor,
        Role::Compliance,
    ];
    let principals: Vec<Principal> = roles
        .iter()
        .map(|r| principal(&gov, &o, &format!("u-{r}"), *r))
        .collect();
    let case = open_case(&gov, &principals[1], "C-1");
    let mut failures = Vec::new();
    for (action, row) in table {
        for (p, (want, rule)) in principals.iter().zip(row) {
            let d = gov.authorize(p, *action, &ctx(Some(&case))).unwrap();
            let got = if d.allowed { "A" } else { "D" };
            if got != *want || d.rule != *rule {
                failures.push(format!(
                    "{} {action}: want {want} by {rule}, got {got} by {}",
                    p.role, d.rule
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn private_us_org_cannot_search() {
    let (_d, gov) = open();
    for j in ["US", "US-NY", "US-CA"] {
        let o = org(
            &gov,
            &format!("shop-{j}"),
            OrgKind::Private,
            j,
            OrgStatus::Active,
        );
        let p = principal(&gov, &o, &format!("inv-{j}"), Role::Investigator);
        let case = open_case(&gov, &p, "C-1");
        for a in [Action::Search, Action::Verify] {
            let d = gov.authorize(&p, a, &ctx(Some(&case))).unwrap();
            assert!(!d.allowed, "{j} {a}");
            assert_eq!(d.rule, "us-private-no-search");
            assert_eq!(d.error_code(), Some("policy_denied"));
        }
        // Other investigator actions are unaffected.
        assert!(
            gov.authorize(&p, Action::ManageCases, &ctx(None))
                .unwrap()
                .allowed
        );
    }
    // A private organisation outside the US may search; a US police force may too.
    let o = org(&gov, "shop-de", OrgKind::Private, "DE", OrgStatus::Active);
    let p = principal(&gov, &o, "inv-de", Role::Investigator);
    let case = open_case(&gov, &p, "C-1");
    assert!(
        gov.authorize(&p, Action::Search, &ctx(Some(&case)))
            .unwrap()
            .allowed
    );
    let o = org(
        &gov,
        "nypd",
        OrgKind::LawEnforcement,
        "US-NY",
        OrgStatus::Active,
    );
    let p = principal(&gov, &o, "inv-nypd", Role::Investigator);
    let case = open_case(&gov, &p, "C-1");
    assert!(
        gov.authorize(&p, Action::Search, &ctx(Some(&case)))
            .unwrap()
            .allowed
    );
}

#[test]
fn illinois_org_can_do_nothing() {
    let (_d, gov) = open();
    for kind in OrgKind::ALL {
        let o = org(
            &gov,
            &format!("il-{kind}"),
            *kind,
            "us-il",
            OrgStatus::Active,
        );
        assert_eq!(o.jurisdiction, "US-IL");
        for role in Role::ALL {
            let p = principal(&gov, &o, &format!("il-{kind}-{role}"), *role);
            for a in Action::ALL {
                let d = gov.authorize(&p, *a, &ctx(None)).unwrap();
                assert!(!d.allowed, "{kind} {role} {a}");
                assert_eq!(d.rule, "illinois-bipa", "{kind} {role} {a}");
            }
        }
    }
}

#[test]
fn suspended_org_can_do_nothing() {
    let (_d, gov) = open();
    let o = org(
        &gov,
        "police",
        OrgKind::LawEnforcement,
        "FR",
        OrgStatus::Active,
    );
    let ps: Vec<Principal> = Role::ALL
        .iter()
        .map(|r| principal(&gov, &o, &format!("p-{r}"), *r))
        .collect();
    let case = open_case(&gov, &ps[1], "C-9");
    assert!(
        gov.authorize(&ps[1], Action::Search, &ctx(Some(&case)))
            .unwrap()
            .allowed
    );
    let o = gov
        .set_org_status(&Actor::system(), o.id, OrgStatus::Suspended)
        .unwrap();
    for p in &ps {
        let p = Principal {
            org: o.clone(),
            ..p.clone()
        };
        for a in Action::ALL {
            let d = gov.authorize(&p, *a, &ctx(Some(&case))).unwrap();
            assert!(!d.allowed);
            assert_eq!(d.rule, "builtin:org_suspended");
        }
    }
    // The policy file's own rule says the same when evaluated alone.
    let d = gov
        .policy()
        .evaluate(Role::Admin, &o, Action::ManageAccounts);
    assert_eq!(
        (d.allowed, d.rule.as_str()),
        (false, "suspended-organisations")
    );
}

#[test]
fn trial_expiry() {
    let (_d, gov) = open();
    let now = 1_800_000_000;
    let o = gov
        .create_org(
            &Actor::system(),
            &NewOrg {
                name: "trial".into(),
                kind: OrgKind::Government,
                jurisdiction: "NL".into(),
                status: OrgStatus::Trial,
                trial_expires_at: Some(now + 10),
                search_quota: None,
            },
        )
        .unwrap();
    let p = principal(&gov, &o, "inv", Role::Investigator);
    let case = open_case(&gov, &p, "T-1");
    let mut c = ctx(Some(&case));
    c.now = Some(now + 9);
    assert!(gov.authorize(&p, Action::Search, &c).unwrap().allowed);
    for t in [now + 10, now + 1000] {
        c.now = Some(t);
        let d = gov.authorize(&p, Action::Search, &c).unwrap();
        assert_eq!(
            (d.allowed, d.rule.as_str()),
            (false, "builtin:trial_expired")
        );
        let d = gov.authorize(&p, Action::ManageCases, &c).unwrap();
        assert_eq!(
            (d.allowed, d.rule.as_str()),
            (false, "builtin:trial_expired")
        );
    }
    // A trial needs an expiry.
    let e = gov
        .create_org(
            &Actor::system(),
            &NewOrg {
                name: "trial2".into(),
                kind: OrgKind::Government,
                jurisdiction: "NL".into(),
                status: OrgStatus::Trial,
                trial_expires_at: None,
                search_quota: None,
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid");
}

#[test]
fn quota_exhausted_after_n_searches() {
    let (_d, gov) = open();
    let o = gov
        .create_org(
            &Actor::system(),
            &NewOrg {
                name: "quota".into(),
                kind: OrgKind::LawEnforcement,
                jurisdiction: "BE".into(),
                status: OrgStatus::Active,
                trial_expires_at: None,
                search_quota: Some(3),
            },
        )
        .unwrap();
    let p = principal(&gov, &o, "inv", Role::Investigator);
    let case = open_case(&gov, &p, "Q-1");
    let c = ctx(Some(&case));
    for i in 0..3 {
        let d = gov.authorize(&p, Action::Search, &c).unwrap();
        assert!(d.allowed, "search {i}: {d:?}");
        gov.append(
            AuditEvent::decision(&p, Action::Search, &d)
                .case(case.id)
                .result_count(2),
        )
        .unwrap();
        // Denied attempts and other actions do not count.
        let denied = Decision {
            allowed: false,
            rule: "x".into(),
            reason: "x".into(),
        };
        gov.append(AuditEvent::decision(&p, Action::Search, &denied).case(case.id))
            .unwrap();
        let v = gov.authorize(&p, Action::Verify, &c).unwrap();
        gov.append(AuditEvent::decision(&p, Action::Verify, &v).case(case.id))
            .unwrap();
    }
    assert_eq!(
        gov.searches_this_month(o.id, visage_governance_now())
            .unwrap(),
        3
    );
    let d = gov.authorize(&p, Action::Search, &c).unwrap();
    assert_eq!(
        (d.allowed, d.rule.as_str()),
        (false, "builtin:quota_exhausted")
    );
    assert_eq!(d.error_code(), Some("quota_exceeded"));
    // Verification is not counted against the search quota.
    assert!(gov.authorize(&p, Action::Verify, &c).unwrap().allowed);
    // Next calendar month: the quota starts again.
    let mut next = c.clone();
    next.now = Some(visage_governance_now() + 32 * 86_400);
    assert!(gov.authorize(&p, Action::Search, &next).unwrap().allowed);
    // Raising the quota lifts the block.
    let o2 = gov
        .update_org(
            &Actor::system(),
            o.id,
            &OrgUpdate {
                search_quota: Some(Some(4)),
                ..Default::default()
            },
        )
        .unwrap();
    let p2 = Principal {
        org: o2,
        ..p.clone()
    };
    assert!(gov.authorize(&p2, Action::Search, &c).unwrap().allowed);
}

fn visage_governance_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn case_and_purpose_required() {
    let (_d, gov) = open();
    let o = org(
        &gov,
        "pol",
        OrgKind::LawEnforcement,
        "ES",
        OrgStatus::Active,
    );
    let other = org(
        &gov,
        "pol2",
        OrgKind::LawEnforcement,
        "ES",
        OrgStatus::Active,
    );
    let p = principal(&gov, &o, "inv", Role::Investigator);
    let q = principal(&gov, &other, "inv2", Role::Investigator);
    let case = open_case(&gov, &p, "K-1");
    let foreign = open_case(&gov, &q, "K-1");
    let check = |c: AuthzContext, rule: &str, code: &str| {
        for a in [Action::Search, Action::Verify] {
            let d = gov.authorize(&p, a, &c).unwrap();
            assert_eq!((d.allowed, d.rule.as_str()), (false, rule), "{a}");
            assert_eq!(d.error_code(), Some(code));
        }
    };
    check(ctx(None), "builtin:case_required", "case_required");
    check(
        ctx(Some(&foreign)),
        "builtin:case_not_found",
        "case_required",
    );
    check(
        AuthzContext {
            case_id: Some(987_654),
            ..ctx(None)
        },
        "builtin:case_not_found",
        "case_required",
    );
    check(
        AuthzContext {
            purpose: None,
            ..ctx(Some(&case))
        },
        "builtin:purpose_required",
        "purpose_required",
    );
    check(
        AuthzContext {
            purpose: Some("   short   ".into()),
            ..ctx(Some(&case))
        },
        "builtin:purpose_required",
        "purpose_required",
    );
    assert!(
        gov.authorize(&p, Action::Search, &ctx(Some(&case)))
            .unwrap()
            .allowed
    );
    gov.close_case(&Actor::from(&p), case.id).unwrap();
    check(ctx(Some(&case)), "builtin:case_closed", "case_required");
    // Other actions need no case.
    assert!(
        gov.authorize(&p, Action::ReadFace, &ctx(None))
            .unwrap()
            .allowed
    );
}

#[test]
fn excluded_jurisdictions() {
    let p = Policy::default_policy();
    assert_eq!(p.jurisdiction_excluded("US-IL"), Some("US-IL"));
    assert_eq!(p.jurisdiction_excluded("us-il"), Some("US-IL"));
    assert_eq!(p.jurisdiction_excluded("US"), None);
    assert_eq!(p.jurisdiction_excluded("US-IN"), None);
    let p = Policy::parse(
        "version = 1\n[data]\nexcluded_jurisdictions = [\"FR\", \"US-IL\"]\n",
        "test",
    )
    .unwrap();
    assert_eq!(p.jurisdiction_excluded("FR-75C"), Some("FR"));
    assert_eq!(p.jurisdiction_excluded("FR"), Some("FR"));
    assert_eq!(p.jurisdiction_excluded("DE"), None);
}

#[test]
fn policy_errors_name_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("version = 1\n[[rule]]\nname = \"a\"\neffect = \"allow\"\nreason = \"r\"\nactions = [\"serch\"]\n", 6, "unknown action 'serch'"),
        ("version = 1\n[[rule]]\nname = \"a\"\neffect = \"allow\"\nreason = \"r\"\nroles = [\"god\"]\n", 6, "god"),
        ("version = 1\n\n[[rule]]\nname = \"a\"\neffect = \"maybe\"\nreason = \"r\"\n", 5, "maybe"),
        ("version = 1\n[[rule]]\nname = \"a\"\neffect = \"deny\"\nreason = \"r\"\norg_jurisdictions = [\"USA\"]\n", 6, "USA"),
        ("version = 1\n[[rule]]\nname = \"a\"\neffect = \"deny\"\nreason = \"r\"\n[[rule]]\nname = \"a\"\neffect = \"deny\"\nreason = \"r\"\n", 7, "duplicate rule name"),
        ("version = 1\n[[rule]]\nname = \"builtin:x\"\neffect = \"deny\"\nreason = \"r\"\n", 3, "builtin"),
        ("version = 1\n[search]\nrequire_cases = true\n", 3, "require_cases"),
        ("version = 1\n[[rule]\n", 2, ""),
        ("version = 2\n", 1, "version"),
    ];
    for (text, line, needle) in cases {
        let e = Policy::parse(text, "p.toml").unwrap_err().to_string();
        assert!(
            e.contains(&format!("line {line}")),
            "want line {line} in: {e}"
        );
        assert!(e.contains(needle), "want '{needle}' in: {e}");
        assert!(e.starts_with("p.toml"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, cases[0].0).unwrap();
    let e = Policy::load(&path).unwrap_err().to_string();
    assert!(e.contains("bad.toml") && e.contains("line 6"), "{e}");
}

#[test]
fn rules_first_match_and_default_allow() {
    let text = r#"
version = 1
default_effect = "allow"
[[rule]]
name = "no-research-ingest"
effect = "deny"
reason = "r"
actions = ["ingest"]
org_kinds = ["research"]
[[rule]]
name = "research-all"
effect = "allow"
reason = "r"
org_kinds = ["research"]
"#;
    let p = Policy::parse(text, "t").unwrap();
    let mk = |kind| Organisation {
        id: 1,
        name: "o".into(),
        kind,
        jurisdiction: "SE".into(),
        status: OrgStatus::Active,
        trial_expires_at: None,
        search_quota: None,
        created_at: 0,
    };
    let d = p.evaluate(Role::Admin, &mk(OrgKind::Research), Action::Ingest);
    assert_eq!((d.allowed, d.rule.as_str()), (false, "no-research-ingest"));
    let d = p.evaluate(Role::Admin, &mk(OrgKind::Research), Action::Delete);
    assert_eq!((d.allowed, d.rule.as_str()), (true, "research-all"));
    let d = p.evaluate(Role::Admin, &mk(OrgKind::Private), Action::Ingest);
    assert_eq!((d.allowed, d.rule.as_str()), (true, "default"));
}
