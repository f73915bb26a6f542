//! User accounts and sessions on the cluster API: the caller (an API key, else the session
//! cookie) and the account endpoints of `crate::accounts_api` over PostgreSQL
//! (`visage_cluster::accounts`: users, their keys and sessions shared by every API process).
//! An operator organisation's administrator manages every organisation's users; other
//! administrators their own.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use visage_cluster::accounts;
use visage_cluster::gov;
use visage_cluster::keys::KeyIdentity;
use visage_governance::{
    Action, Actor, ApiKeyInfo, AuditEvent, AuthError, AuthzContext, NewApiKey, NewOrg, OrgUpdate,
    Organisation, Principal, Role, User,
};

use super::{storage, ClusterState};
use crate::accounts_api::AccountsHost;
use crate::auth::{general_access_under, Via};
use crate::{ApiError, ApiResult};

/// Who calls, from the `Authorization` header's bearer key or else the session cookie's
/// token, and how.
pub(super) fn identify(
    st: &ClusterState,
    authorization: Option<&str>,
    session: Option<&str>,
) -> ApiResult<Option<(KeyIdentity, Via)>> {
    let pool = st.store.pool();
    if let Some(h) = authorization {
        let key = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim);
        let Some(key) = key else { return Ok(None) };
        return Ok(visage_cluster::keys::lookup(pool, key)
            .map_err(storage)?
            .map(|w| (w, Via::ApiKey)));
    }
    if let Some(token) = session {
        return Ok(accounts::session_identity(pool, token)
            .map_err(storage)?
            .map(|w| (w, Via::Session)));
    }
    Ok(None)
}

/// The caller the authentication middleware found (401 `unauthorized` without one).
pub(crate) struct ClusterCaller(pub KeyIdentity, pub Via);

impl FromRequestParts<ClusterState> for ClusterCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &ClusterState) -> ApiResult<Self> {
        let who = parts.extensions.get::<KeyIdentity>().cloned();
        let via = parts.extensions.get::<Via>().copied();
        match (who, via) {
            (Some(w), Some(v)) => Ok(ClusterCaller(w, v)),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// The principal of a caller with an organisation (403 `no_organisation` otherwise).
fn principal(who: &KeyIdentity) -> ApiResult<Principal> {
    who.principal().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "no_organisation",
            format!("key {:?} belongs to no organisation", who.name),
        )
    })
}

fn key_id(raw: &str) -> Option<i64> {
    raw.parse().ok()
}

impl AccountsHost for ClusterState {
    type Caller = ClusterCaller;
    fn caller(&self, who: &ClusterCaller) -> ApiResult<(Principal, Via)> {
        Ok((principal(&who.0)?, who.1))
    }
    fn authorize(&self, who: &ClusterCaller, action: Action) -> ApiResult<Principal> {
        let (p, _) =
            ClusterState::authorize(self, &who.0, action, &AuthzContext::default(), |e| e)?;
        Ok(p)
    }
    fn is_operator(&self, p: &Principal) -> bool {
        ClusterState::is_operator(self, p)
    }
    fn general_access(&self, p: &Principal) -> ApiResult<()> {
        general_access_under(&self.policy, p)
    }
    fn policy_doc(&self) -> serde_json::Value {
        serde_json::json!({
            "text": self.policy_text,
            "sha256": self.policy.sha256,
            "origin": self.policy_origin,
        })
    }
    fn login_allowed(&self, ip: IpAddr) -> ApiResult<bool> {
        visage_cluster::ratelimit::take(
            self.store.pool(),
            "login",
            &ip.to_string(),
            self.login_per_minute,
        )
        .map_err(storage)
    }
    fn append(&self, ev: AuditEvent) -> ApiResult<()> {
        ClusterState::append(self, ev).map(|_| ())
    }
    fn password_login(&self, username: &str, password: &str) -> Result<Principal, AuthError> {
        let who = accounts::authenticate_password(self.store.pool(), username, password)?;
        who.principal()
            .ok_or_else(|| AuthError::Internal(format!("user {username:?} has no organisation")))
    }
    fn start_session(&self, user_id: i64) -> ApiResult<String> {
        Ok(accounts::create_session(self.store.pool(), user_id)?)
    }
    fn end_session(&self, token: &str) -> ApiResult<()> {
        accounts::end_session(self.store.pool(), token).map_err(storage)
    }
    fn create_user(
        &self,
        by: &Actor,
        org_id: i64,
        username: &str,
        role: Role,
        password: Option<&str>,
    ) -> ApiResult<User> {
        let pool = self.store.pool();
        Ok(accounts::create_user(
            pool,
            &self.audit(),
            by,
            org_id,
            username,
            role,
            password,
        )?)
    }
    fn get_user(&self, id: i64) -> ApiResult<User> {
        Ok(accounts::get_user(self.store.pool(), id)?)
    }
    fn list_users(&self, org_id: Option<i64>) -> ApiResult<Vec<User>> {
        Ok(accounts::list_users(self.store.pool(), org_id)?)
    }
    fn set_user_disabled(&self, by: &Actor, id: i64, disabled: bool) -> ApiResult<User> {
        let pool = self.store.pool();
        Ok(accounts::set_user_disabled(
            pool,
            &self.audit(),
            by,
            id,
            disabled,
        )?)
    }
    fn create_key(
        &self,
        by: &Actor,
        user_id: i64,
        name: &str,
        role: Option<Role>,
    ) -> ApiResult<NewApiKey> {
        let pool = self.store.pool();
        Ok(accounts::create_user_key(
            pool,
            &self.audit(),
            by,
            user_id,
            name,
            role,
        )?)
    }
    fn list_keys(&self, user_id: Option<i64>, org_id: Option<i64>) -> ApiResult<Vec<ApiKeyInfo>> {
        Ok(accounts::list_keys(self.store.pool(), user_id, org_id)?)
    }
    fn key_org(&self, id: &str) -> ApiResult<Option<i64>> {
        match key_id(id) {
            Some(id) => Ok(accounts::key_org(self.store.pool(), id)?),
            None => Ok(None),
        }
    }
    fn revoke_key(&self, by: &Actor, id: &str) -> ApiResult<ApiKeyInfo> {
        let id = key_id(id).ok_or_else(|| ApiError::not_found(format!("no API key {id}")))?;
        Ok(accounts::revoke_key(
            self.store.pool(),
            &self.audit(),
            by,
            id,
        )?)
    }
    fn list_orgs(&self) -> ApiResult<Vec<Organisation>> {
        Ok(gov::orgs(self.store.pool())?)
    }
    fn get_org(&self, id: i64) -> ApiResult<Organisation> {
        Ok(gov::get_org(self.store.pool(), id)?)
    }
    fn create_org(&self, by: &Actor, new: &NewOrg) -> ApiResult<Organisation> {
        Ok(gov::create_org(self.store.pool(), &self.audit(), by, new)?)
    }
    fn update_org(&self, by: &Actor, id: i64, update: &OrgUpdate) -> ApiResult<Organisation> {
        Ok(gov::update_org(
            self.store.pool(),
            &self.audit(),
            by,
            id,
            update,
        )?)
    }
}
