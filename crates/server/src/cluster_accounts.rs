//! User accounts and sessions on the cluster API (`visage_cluster::accounts`, PostgreSQL):
//! password login for a session cookie shared by every API process, `me`, logout, and the
//! administration of users and their keys, with the embedded API's bodies, answers, policy
//! actions (`manage_accounts`, `manage_policy`) and audit records. An operator organisation's
//! administrator manages every organisation's users; other administrators their own (other
//! organisations' users and keys do not exist for them: 404).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use visage_cluster::accounts;
use visage_cluster::keys::KeyIdentity;
use visage_governance::{Action, Actor, AuditEvent, AuthError, Principal, Role, User};

use super::{on_pool, storage, ClusterState};
use crate::auth::{
    cookie, general_access_under, session_cookie, LoginJson, Me, Via, CLEARED_COOKIE,
    SESSION_COOKIE,
};
use crate::gov_api::{int_id, KeysQuery, NewKeyJson, NewUserJson, UsersQuery};
use crate::{input, ApiError, ApiResult};

/// Who calls, from the `Authorization: Bearer` key or else the session cookie, and how.
pub(super) fn identify(
    st: &ClusterState,
    headers: &HeaderMap,
) -> ApiResult<Option<(KeyIdentity, Via)>> {
    let pool = st.store.pool();
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        let key = h
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(key) = key else { return Ok(None) };
        return Ok(visage_cluster::keys::lookup(pool, key)
            .map_err(storage)?
            .map(|w| (w, Via::ApiKey)));
    }
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        return Ok(accounts::session_identity(pool, token)
            .map_err(storage)?
            .map(|w| (w, Via::Session)));
    }
    Ok(None)
}

/// `POST /v1/auth/login`: username and password for the session cookie; rate-limited per
/// client IP (per process); every attempt is recorded.
pub(super) async fn login(
    State(st): State<ClusterState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    if !st.login_limit.allow(addr.ip()) {
        return Err(ApiError::rate_limited());
    }
    let j: LoginJson = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_json(format!("invalid JSON body: {e}")))?;
    let (me, token) = on_pool(&st, move |st| {
        let pool = st.store.pool();
        match accounts::authenticate_password(pool, &j.username, &j.password) {
            Ok(who) => {
                let p = principal(&who)?;
                st.append(
                    AuditEvent::new(&Actor::from(&p), "login")
                        .org(p.org.id)
                        .decided(true, "auth:password", "password login"),
                )?;
                general_access_under(&st.policy, &p)?;
                let token = accounts::create_session(pool, p.user_id)?;
                let operator = st.is_operator(&p);
                Ok((Me::new(p, Via::Session, operator), token))
            }
            Err(AuthError::Internal(m)) => Err(storage(anyhow::anyhow!(m))),
            Err(e) => {
                st.append(
                    AuditEvent::new(&Actor::public(), "login")
                        .decided(false, "auth:password", e.code())
                        .details(serde_json::json!({"username": j.username})),
                )?;
                Err(ApiError::unauthorized())
            }
        }
    })
    .await?;
    let mut res = Json(me).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&token)?);
    Ok(res)
}

/// `POST /v1/auth/logout`: ends the cookie's session (if any) and clears the cookie.
pub(super) async fn logout(State(st): State<ClusterState>, req: Request) -> ApiResult<Response> {
    if let Some(token) = cookie(req.headers(), SESSION_COOKIE).map(str::to_string) {
        on_pool(&st, move |st| {
            accounts::end_session(st.store.pool(), &token).map_err(storage)
        })
        .await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static(CLEARED_COOKIE));
    Ok(res)
}

/// `GET /v1/auth/me`: the caller, if its organisation may do anything at all.
pub(super) async fn me(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    Extension(via): Extension<Via>,
) -> ApiResult<Json<Me>> {
    let p = principal(&who)?;
    general_access_under(&st.policy, &p)?;
    let operator = st.is_operator(&p);
    Ok(Json(Me::new(p, via, operator)))
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

/// `manage_accounts` for the caller (a refusal is recorded).
fn manager(st: &ClusterState, who: &KeyIdentity) -> ApiResult<Principal> {
    let (p, _) = st.authorize(
        who,
        Action::ManageAccounts,
        &visage_governance::AuthzContext::default(),
        |ev| ev,
    )?;
    Ok(p)
}

/// The user `id`, if the caller manages its organisation (404 otherwise).
fn managed_user(st: &ClusterState, p: &Principal, id: i64) -> ApiResult<User> {
    let u = accounts::get_user(st.store.pool(), id)?;
    if !st.is_operator(p) && u.org_id != p.org.id {
        return Err(ApiError::not_found(format!("no user {id}")));
    }
    Ok(u)
}

/// `GET /v1/users`: the caller's organisation's users (an operator administrator: every
/// organisation's, or `org_id`'s).
pub(super) async fn list_users(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    Query(q): Query<UsersQuery>,
) -> ApiResult<Json<Vec<User>>> {
    on_pool(&st, move |st| {
        let p = manager(st, &who)?;
        let org = if st.is_operator(&p) {
            q.org_id
        } else {
            Some(p.org.id)
        };
        Ok(Json(accounts::list_users(st.store.pool(), org)?))
    })
    .await
}

/// `POST /v1/users`: a user in the caller's organisation (another one: operator only).
pub(super) async fn create_user(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let user = on_pool(&st, move |st| {
        let p = manager(st, &who)?;
        let j: NewUserJson = input::json(&body)?;
        let org_id = j.org_id.unwrap_or(p.org.id);
        if !st.is_operator(&p) && org_id != p.org.id {
            return Err(ApiError::not_found(format!("no organisation {org_id}")));
        }
        let role: Role = j.role.parse()?;
        Ok(accounts::create_user(
            st.store.pool(),
            &st.audit(),
            &Actor::from(&p),
            org_id,
            &j.username,
            role,
            j.password.as_deref(),
        )?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn set_disabled(
    st: ClusterState,
    who: KeyIdentity,
    raw: String,
    disabled: bool,
) -> ApiResult<Json<User>> {
    let id = int_id(&raw, "user")?;
    on_pool(&st, move |st| {
        let p = manager(st, &who)?;
        managed_user(st, &p, id)?;
        Ok(Json(accounts::set_user_disabled(
            st.store.pool(),
            &st.audit(),
            &Actor::from(&p),
            id,
            disabled,
        )?))
    })
    .await
}

/// `POST /v1/users/{id}/disable`: the user's sessions end, keys and password stop working.
pub(super) async fn disable_user(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<User>> {
    set_disabled(st, who, raw, true).await
}

/// `POST /v1/users/{id}/enable`.
pub(super) async fn enable_user(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<User>> {
    set_disabled(st, who, raw, false).await
}

/// `POST /v1/users/{id}/keys`: a key for the user; the secret is in this answer only.
pub(super) async fn create_key(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = int_id(&raw, "user")?;
    let key = on_pool(&st, move |st| {
        let p = manager(st, &who)?;
        let j: NewKeyJson = input::json(&body)?;
        managed_user(st, &p, id)?;
        let role = j.role.as_deref().map(str::parse::<Role>).transpose()?;
        Ok(accounts::create_user_key(
            st.store.pool(),
            &st.audit(),
            &Actor::from(&p),
            id,
            &j.name,
            role,
        )?)
    })
    .await?;
    let mut res = (StatusCode::CREATED, Json(key)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `GET /v1/keys`: keys (never secrets) of one user, or of every user and organisation key
/// the caller manages.
pub(super) async fn list_keys(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    Query(q): Query<KeysQuery>,
) -> ApiResult<Json<Vec<visage_governance::ApiKeyInfo>>> {
    on_pool(&st, move |st| {
        let p = manager(st, &who)?;
        let pool = st.store.pool();
        if let Some(u) = q.user_id {
            managed_user(st, &p, u)?;
            return Ok(Json(accounts::list_keys(pool, Some(u), None)?));
        }
        let org = (!st.is_operator(&p)).then_some(p.org.id);
        Ok(Json(accounts::list_keys(pool, None, org)?))
    })
    .await
}

/// `DELETE /v1/keys/{id}`: revokes a key (takes effect on the next request).
pub(super) async fn revoke_key(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<visage_governance::ApiKeyInfo>> {
    on_pool(&st, move |st| {
        let p = manager(st, &who)?;
        let missing = || ApiError::not_found(format!("no API key {raw}"));
        let id: i64 = raw.parse().map_err(|_| missing())?;
        let pool = st.store.pool();
        match accounts::key_org(pool, id)? {
            Some(org) if st.is_operator(&p) || org == p.org.id => {}
            _ => return Err(missing()),
        }
        Ok(Json(accounts::revoke_key(
            pool,
            &st.audit(),
            &Actor::from(&p),
            id,
        )?))
    })
    .await
}

/// `GET /v1/policy`: the policy in force, its SHA-256 and where it came from.
pub(super) async fn get_policy(
    State(st): State<ClusterState>,
    Extension(who): Extension<KeyIdentity>,
) -> ApiResult<Json<serde_json::Value>> {
    on_pool(&st, move |st| {
        st.authorize(
            &who,
            Action::ManagePolicy,
            &visage_governance::AuthzContext::default(),
            |ev| ev,
        )?;
        Ok(Json(serde_json::json!({
            "text": st.policy_text,
            "sha256": st.policy.sha256,
            "origin": st.policy_origin,
        })))
    })
    .await
}
