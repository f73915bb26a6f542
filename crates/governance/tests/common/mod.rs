#![allow(dead_code)]

use visage_governance::*;

pub fn open() -> (tempfile::TempDir, Governance) {
    let dir = tempfile::tempdir().unwrap();
    let gov = Governance::open(dir.path()).unwrap();
    (dir, gov)
}

pub fn org(
    gov: &Governance,
    name: &str,
    kind: OrgKind,
    jurisdiction: &str,
    status: OrgStatus,
) -> Organisation {
    let trial = (status == OrgStatus::Trial).then_some(4_000_000_000);
    gov.create_org(
        &Actor::system(),
        &NewOrg {
            name: name.into(),
            kind,
            jurisdiction: jurisdiction.into(),
            status,
            trial_expires_at: trial,
            search_quota: None,
        },
    )
    .unwrap()
}

pub fn principal(gov: &Governance, org: &Organisation, username: &str, role: Role) -> Principal {
    let u = gov
        .create_user(&Actor::system(), org.id, username, role, None)
        .unwrap();
    Principal {
        user_id: u.id,
        username: u.username,
        org: org.clone(),
        role,
    }
}
