//! Organisations, users, passwords and API keys.

mod common;

use common::*;
use visage_governance::*;

#[test]
fn init_admin_once_and_password_login() {
    let (dir, gov) = open();
    let admin = gov
        .init_admin("gb-eng")
        .unwrap()
        .expect("first run creates the admin");
    assert_eq!(admin.password.len(), 20);
    assert_eq!(admin.org.name, "default");
    assert_eq!(admin.org.kind, OrgKind::Government);
    assert_eq!(admin.org.status, OrgStatus::Active);
    assert_eq!(admin.org.jurisdiction, "GB-ENG");
    assert_eq!(admin.user.role, Role::Admin);
    assert!(
        gov.init_admin("GB").unwrap().is_none(),
        "second run creates nothing"
    );
    assert_eq!(gov.init_admin("nowhere").unwrap_err().code(), "invalid");

    let p = gov.authenticate_password("admin", &admin.password).unwrap();
    assert_eq!(
        (p.username.as_str(), p.role, p.org.id),
        ("admin", Role::Admin, admin.org.id)
    );
    assert_eq!(
        gov.authenticate_password("admin", "wrong password!!"),
        Err(AuthError::WrongPassword)
    );
    let mut almost = admin.password.clone();
    almost.pop();
    assert_eq!(
        gov.authenticate_password("admin", &almost),
        Err(AuthError::WrongPassword)
    );
    assert_eq!(
        gov.authenticate_password("nobody", &admin.password),
        Err(AuthError::UnknownUser)
    );

    // Stored as argon2id, never in clear.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let phc: String = conn
        .query_row(
            "SELECT password_hash FROM user WHERE username = 'admin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert!(!phc.contains(&admin.password));

    // Password change; short passwords refused.
    let by = Actor::from(&p);
    assert_eq!(
        gov.set_password(&by, p.user_id, "short")
            .unwrap_err()
            .code(),
        "invalid"
    );
    gov.set_password(&by, p.user_id, "a new long passphrase")
        .unwrap();
    assert_eq!(
        gov.authenticate_password("admin", &admin.password),
        Err(AuthError::WrongPassword)
    );
    gov.authenticate_password("admin", "a new long passphrase")
        .unwrap();

    // Disabled users cannot log in.
    gov.set_user_disabled(&by, p.user_id, true).unwrap();
    assert_eq!(
        gov.authenticate_password("admin", "a new long passphrase"),
        Err(AuthError::Disabled)
    );
    // Key-only users have no password.
    let o = gov.get_org(admin.org.id).unwrap();
    let u = gov
        .create_user(&by, o.id, "bot", Role::Auditor, None)
        .unwrap();
    assert!(!u.has_password);
    assert_eq!(
        gov.authenticate_password("bot", "anything at all"),
        Err(AuthError::WrongPassword)
    );
}

#[test]
fn api_keys() {
    let (dir, gov) = open();
    let o = org(
        &gov,
        "police",
        OrgKind::LawEnforcement,
        "IE",
        OrgStatus::Active,
    );
    let by = Actor::system();
    let inv = gov
        .create_user(
            &by,
            o.id,
            "inv",
            Role::Investigator,
            Some("correct horse battery"),
        )
        .unwrap();
    let key = gov.create_api_key(&by, inv.id, "laptop", None).unwrap();
    // vsk_<16 hex>_<43 base64url>
    let parts: Vec<&str> = key.secret.splitn(3, '_').collect();
    assert_eq!(parts[0], "vsk");
    assert_eq!(parts[1], key.info.id);
    assert_eq!(parts[1].len(), 16);
    assert_eq!(key.secret.len(), 4 + 16 + 1 + 43);
    assert_eq!(key.info.role, Role::Investigator);

    let p = gov.authenticate_key(&key.secret).unwrap();
    assert_eq!(
        (p.user_id, p.role, p.org.id),
        (inv.id, Role::Investigator, o.id)
    );

    // Only the hash is stored.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let stored: Vec<u8> = conn
        .query_row(
            "SELECT secret_sha256 FROM api_key WHERE id = ?1",
            [&key.info.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored.len(), 32);

    // Tampered secret: flip the first character of the secret part (still valid base64url).
    let pos = 4 + 16 + 1;
    let mut t = key.secret.clone().into_bytes();
    t[pos] = if t[pos] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(t).unwrap();
    assert_eq!(gov.authenticate_key(&tampered), Err(AuthError::WrongSecret));

    // Unknown key id with a well-formed secret.
    let unknown = format!("vsk_{}_{}", "0123456789abcdef", &key.secret[pos..]);
    assert_eq!(gov.authenticate_key(&unknown), Err(AuthError::UnknownKey));

    // Malformed strings.
    for m in [
        "",
        "vsk_",
        "nope",
        &key.secret[..key.secret.len() - 1],
        &format!("{}A", key.secret),
        &key.secret.replacen("vsk_", "vsx_", 1),
        &format!("vsk_{}_{}", "0123456789ABCDEF", &key.secret[pos..]),
        &format!("vsk_{}_{}", "0123456789abcde", &key.secret[pos..]),
        &format!("vsk_{}_{}!", key.info.id, &key.secret[pos..pos + 42]),
    ] {
        assert_eq!(gov.authenticate_key(m), Err(AuthError::Malformed), "{m:?}");
    }

    // Listing never shows secrets; revocation.
    let keys = gov.list_api_keys(Some(inv.id)).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].revoked_at, None);
    let revoked = gov.revoke_api_key(&by, &key.info.id).unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(gov.authenticate_key(&key.secret), Err(AuthError::Revoked));
    assert_eq!(
        gov.revoke_api_key(&by, "ffffffffffffffff")
            .unwrap_err()
            .code(),
        "not_found"
    );

    // A second key still works; disabling the user stops it.
    let k2 = gov.create_api_key(&by, inv.id, "desk", None).unwrap();
    gov.authenticate_key(&k2.secret).unwrap();
    gov.set_user_disabled(&by, inv.id, true).unwrap();
    assert_eq!(gov.authenticate_key(&k2.secret), Err(AuthError::Disabled));
    gov.set_user_disabled(&by, inv.id, false).unwrap();
    gov.authenticate_key(&k2.secret).unwrap();

    // Key roles: a non-admin cannot hold another role's key; an admin can.
    assert_eq!(
        gov.create_api_key(&by, inv.id, "x", Some(Role::Admin))
            .unwrap_err()
            .code(),
        "invalid"
    );
    let adm = gov
        .create_user(&by, o.id, "adm", Role::Admin, None)
        .unwrap();
    let k3 = gov
        .create_api_key(&by, adm.id, "audit script", Some(Role::Auditor))
        .unwrap();
    assert_eq!(
        gov.authenticate_key(&k3.secret).unwrap().role,
        Role::Auditor
    );

    // Distinct codes, for logs.
    assert_eq!(AuthError::Revoked.code(), "revoked_key");
}

#[test]
fn org_and_user_crud() {
    let (_d, gov) = open();
    let by = Actor::system();
    let o = org(&gov, "a", OrgKind::Research, "de-by", OrgStatus::Active);
    assert_eq!(o.jurisdiction, "DE-BY");
    let dup = gov
        .create_org(
            &by,
            &NewOrg {
                name: "a".into(),
                kind: OrgKind::Research,
                jurisdiction: "DE".into(),
                status: OrgStatus::Active,
                trial_expires_at: None,
                search_quota: None,
            },
        )
        .unwrap_err();
    assert_eq!(dup.code(), "conflict");
    for bad in ["Germany", "D", "DE-", "DEU", "DE-BAYE"] {
        let e = gov
            .create_org(
                &by,
                &NewOrg {
                    name: format!("x{bad}"),
                    kind: OrgKind::Research,
                    jurisdiction: bad.into(),
                    status: OrgStatus::Active,
                    trial_expires_at: None,
                    search_quota: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), "invalid", "{bad}");
    }
    let b = org(&gov, "b", OrgKind::Government, "AT", OrgStatus::Active);
    assert_eq!(
        gov.list_orgs()
            .unwrap()
            .iter()
            .map(|o| o.id)
            .collect::<Vec<_>>(),
        vec![o.id, b.id]
    );
    assert_eq!(gov.get_org_by_name("b").unwrap(), b);
    assert_eq!(gov.get_org(9999).unwrap_err().code(), "not_found");
    let s = gov.set_org_status(&by, b.id, OrgStatus::Suspended).unwrap();
    assert_eq!(s.status, OrgStatus::Suspended);
    assert_eq!(gov.get_org(b.id).unwrap().status, OrgStatus::Suspended);

    let u1 = gov
        .create_user(&by, o.id, "alice", Role::Investigator, None)
        .unwrap();
    gov.create_user(&by, b.id, "bob", Role::Auditor, None)
        .unwrap();
    assert_eq!(
        gov.create_user(&by, o.id, "alice", Role::Auditor, None)
            .unwrap_err()
            .code(),
        "conflict"
    );
    assert_eq!(
        gov.create_user(&by, 9999, "carol", Role::Auditor, None)
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert_eq!(
        gov.create_user(&by, o.id, "bad name", Role::Auditor, None)
            .unwrap_err()
            .code(),
        "invalid"
    );
    assert_eq!(gov.list_users(Some(o.id)).unwrap(), vec![u1.clone()]);
    assert_eq!(gov.list_users(None).unwrap().len(), 2);
    assert!(gov.set_user_disabled(&by, u1.id, true).unwrap().disabled);

    // Every change above was audited, and the log verifies.
    let actions: Vec<String> = gov
        .audit_records(.., 1000)
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert!(actions.contains(&"create_org".to_string()));
    assert!(actions.contains(&"update_org".to_string()));
    assert!(actions.contains(&"disable_user".to_string()));
    assert!(gov.verify().unwrap().ok);
}

#[test]
fn concurrent_use_from_threads() {
    let (_d, gov) = open();
    let gov = std::sync::Arc::new(gov);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let gov = gov.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    gov.append(
                        AuditEvent::new(&Actor::system(), "test")
                            .details(serde_json::json!({"t": t, "i": i})),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let r = gov.verify().unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!((r.records, r.checkpoints, r.head_seq), (200, 2, Some(200)));
}
