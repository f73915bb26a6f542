//! Sign-in and account administration, on either backend: password login for a session
//! cookie, logout, `me`; users (list, create, disable, enable), their API keys (create, list,
//! revoke), organisations (list; create and change: operator administrators only) and the
//! policy in force. The handlers are written once over [`AccountsHost`],
//! which the embedded `AppState` (SQLite governance, in-memory sessions) and the cluster
//! API's `ClusterState` (PostgreSQL, sessions shared by every process) implement.
//!
//! Administration is action `manage_accounts` (the policy in force: `manage_policy`). An
//! administrator of the operator organisation manages every organisation's users and keys;
//! other administrators their own, and other organisations' users and keys do not exist for
//! them (404). Every login, refused or not, and every change is in the audit log; passwords
//! and key secrets never are.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use visage_governance::{
    Action, Actor, ApiKeyInfo, AuditEvent, AuthError, NewApiKey, NewOrg, OrgUpdate, Organisation,
    Principal, Role, User,
};

use crate::auth::{cookie, AuthVia, Via, SESSION_COOKIE, SESSION_TTL};
use crate::gov_api::{int_id, operator_only_refusal};
use crate::{authorize, blocking, input, ApiError, ApiResult, AppState, ErrorBody};

/// What the account endpoints need from a server: who calls, the decision, the log, the
/// sessions and the account store.
pub(crate) trait AccountsHost: Clone + Send + Sync + 'static {
    /// The authenticated caller, as the request carries it.
    type Caller: FromRequestParts<Self> + Send + 'static;
    /// The caller's principal and how it authenticated.
    fn caller(&self, who: &Self::Caller) -> ApiResult<(Principal, Via)>;
    /// The policy's decision for `action` (no case); a refusal is recorded and is the error.
    fn authorize(&self, who: &Self::Caller, action: Action) -> ApiResult<Principal>;
    /// An administrator of the operator organisation.
    fn is_operator(&self, p: &Principal) -> bool;
    /// The organisation may work at all and the policy allows its role something.
    fn general_access(&self, p: &Principal) -> ApiResult<()>;
    /// `text`, `sha256` and `origin` of the policy in force.
    fn policy_doc(&self) -> serde_json::Value;
    /// Takes one login attempt from `ip`'s allowance (on the blocking pool).
    fn login_allowed(&self, ip: IpAddr) -> ApiResult<bool>;
    fn append(&self, ev: AuditEvent) -> ApiResult<()>;
    fn password_login(&self, username: &str, password: &str) -> Result<Principal, AuthError>;
    /// A new session of the user: the cookie's token.
    fn start_session(&self, user_id: i64) -> ApiResult<String>;
    fn end_session(&self, token: &str) -> ApiResult<()>;
    fn create_user(
        &self,
        by: &Actor,
        org_id: i64,
        username: &str,
        role: Role,
        password: Option<&str>,
    ) -> ApiResult<User>;
    fn get_user(&self, id: i64) -> ApiResult<User>;
    fn list_users(&self, org_id: Option<i64>) -> ApiResult<Vec<User>>;
    fn set_user_disabled(&self, by: &Actor, id: i64, disabled: bool) -> ApiResult<User>;
    fn create_key(
        &self,
        by: &Actor,
        user_id: i64,
        name: &str,
        role: Option<Role>,
    ) -> ApiResult<NewApiKey>;
    /// Keys of one user, or of one organisation, or all.
    fn list_keys(&self, user_id: Option<i64>, org_id: Option<i64>) -> ApiResult<Vec<ApiKeyInfo>>;
    /// The organisation key `id` acts for (none: no such key).
    fn key_org(&self, id: &str) -> ApiResult<Option<i64>>;
    fn revoke_key(&self, by: &Actor, id: &str) -> ApiResult<ApiKeyInfo>;
    fn list_orgs(&self) -> ApiResult<Vec<Organisation>>;
    fn get_org(&self, id: i64) -> ApiResult<Organisation>;
    fn create_org(&self, by: &Actor, new: &NewOrg) -> ApiResult<Organisation>;
    fn update_org(&self, by: &Actor, id: i64, update: &OrgUpdate) -> ApiResult<Organisation>;
}

impl AccountsHost for AppState {
    type Caller = AuthVia;
    fn caller(&self, who: &AuthVia) -> ApiResult<(Principal, Via)> {
        Ok((who.0.clone(), who.1))
    }
    fn authorize(&self, who: &AuthVia, action: Action) -> ApiResult<Principal> {
        authorize(self, &who.0, action, &Default::default())?;
        Ok(who.0.clone())
    }
    fn is_operator(&self, p: &Principal) -> bool {
        crate::auth::is_operator(self, p)
    }
    fn general_access(&self, p: &Principal) -> ApiResult<()> {
        crate::auth::general_access(self, p)
    }
    fn policy_doc(&self) -> serde_json::Value {
        serde_json::json!({
            "text": self.policy_text,
            "sha256": self.gov.policy().sha256,
            "origin": self.policy_origin,
        })
    }
    fn login_allowed(&self, ip: IpAddr) -> ApiResult<bool> {
        Ok(self.login_limit.allow(ip))
    }
    fn append(&self, ev: AuditEvent) -> ApiResult<()> {
        self.gov.append(ev)?;
        Ok(())
    }
    fn password_login(&self, username: &str, password: &str) -> Result<Principal, AuthError> {
        self.gov.authenticate_password(username, password)
    }
    fn start_session(&self, user_id: i64) -> ApiResult<String> {
        self.sessions.create(user_id)
    }
    fn end_session(&self, token: &str) -> ApiResult<()> {
        self.sessions.remove(token);
        Ok(())
    }
    fn create_user(
        &self,
        by: &Actor,
        org_id: i64,
        username: &str,
        role: Role,
        password: Option<&str>,
    ) -> ApiResult<User> {
        Ok(self.gov.create_user(by, org_id, username, role, password)?)
    }
    fn get_user(&self, id: i64) -> ApiResult<User> {
        Ok(self.gov.get_user(id)?)
    }
    fn list_users(&self, org_id: Option<i64>) -> ApiResult<Vec<User>> {
        Ok(self.gov.list_users(org_id)?)
    }
    fn set_user_disabled(&self, by: &Actor, id: i64, disabled: bool) -> ApiResult<User> {
        Ok(self.gov.set_user_disabled(by, id, disabled)?)
    }
    fn create_key(
        &self,
        by: &Actor,
        user_id: i64,
        name: &str,
        role: Option<Role>,
    ) -> ApiResult<NewApiKey> {
        Ok(self.gov.create_api_key(by, user_id, name, role)?)
    }
    fn list_keys(&self, user_id: Option<i64>, org_id: Option<i64>) -> ApiResult<Vec<ApiKeyInfo>> {
        let keys = self.gov.list_api_keys(user_id)?;
        let Some(org) = org_id else { return Ok(keys) };
        let users: std::collections::HashSet<i64> = self
            .gov
            .list_users(Some(org))?
            .into_iter()
            .map(|u| u.id)
            .collect();
        Ok(keys
            .into_iter()
            .filter(|k| users.contains(&k.user_id))
            .collect())
    }
    fn key_org(&self, id: &str) -> ApiResult<Option<i64>> {
        let Some(key) = self
            .gov
            .list_api_keys(None)?
            .into_iter()
            .find(|k| k.id == id)
        else {
            return Ok(None);
        };
        Ok(Some(self.gov.get_user(key.user_id)?.org_id))
    }
    fn revoke_key(&self, by: &Actor, id: &str) -> ApiResult<ApiKeyInfo> {
        Ok(self.gov.revoke_api_key(by, id)?)
    }
    fn list_orgs(&self) -> ApiResult<Vec<Organisation>> {
        Ok(self.gov.list_orgs()?)
    }
    fn get_org(&self, id: i64) -> ApiResult<Organisation> {
        Ok(self.gov.get_org(id)?)
    }
    fn create_org(&self, by: &Actor, new: &NewOrg) -> ApiResult<Organisation> {
        Ok(self.gov.create_org(by, new)?)
    }
    fn update_org(&self, by: &Actor, id: i64, update: &OrgUpdate) -> ApiResult<Organisation> {
        Ok(self.gov.update_org(by, id, update)?)
    }
}

/// `POST /v1/auth/login`, which needs no caller (merged into either server's router).
pub(crate) fn login_route<H: AccountsHost>() -> Router<H> {
    Router::new().route("/v1/auth/login", post(login::<H>))
}

/// The other routes of this module, all for an authenticated caller (merged into either
/// server's router; the caller's router adds the timeout and limits).
pub(crate) fn routes<H: AccountsHost>() -> Router<H> {
    Router::new()
        .route("/v1/auth/logout", post(logout::<H>))
        .route("/v1/auth/me", get(me::<H>))
        .route("/v1/users", get(list_users::<H>).post(create_user::<H>))
        .route("/v1/users/{id}/disable", post(disable_user::<H>))
        .route("/v1/users/{id}/enable", post(enable_user::<H>))
        .route("/v1/users/{id}/keys", post(create_key::<H>))
        .route("/v1/keys", get(list_keys::<H>))
        .route("/v1/keys/{id}", delete(revoke_key::<H>))
        .route("/v1/policy", get(get_policy::<H>))
        .route("/v1/orgs", get(list_orgs::<H>).post(create_org::<H>))
        .route("/v1/orgs/{id}", patch(update_org::<H>))
}

// ---- sign-in -----------------------------------------------------------------------------------

/// Username and password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginJson {
    pub username: String,
    pub password: String,
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user_id: i64,
    pub username: String,
    pub role: String,
    #[schema(value_type = Object)]
    pub org: visage_governance::Organisation,
    pub via: Via,
    /// Admin of the operator organisation (manages every organisation).
    pub operator: bool,
}

fn me_of<H: AccountsHost>(st: &H, p: Principal, via: Via) -> Me {
    Me {
        operator: st.is_operator(&p),
        user_id: p.user_id,
        username: p.username,
        role: p.role.as_str().to_string(),
        org: p.org,
        via,
    }
}

/// Logs in with a username and password: sets the `visage_session` cookie (HttpOnly,
/// SameSite=Strict, 12 h). Rate-limited per client IP.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", security(()),
    request_body = LoginJson,
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = Me),
        (status = 400, description = "`bad_json`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "organisation suspended (`policy_denied`)", body = ErrorBody),
        (status = 429, description = "`rate_limited`", body = ErrorBody),
    ))]
pub(crate) async fn login<H: AccountsHost>(
    State(st): State<H>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let (me, token) = blocking(&st, move |st| {
        if !st.login_allowed(addr.ip())? {
            return Err(ApiError::rate_limited());
        }
        let j: LoginJson = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_json(format!("invalid JSON body: {e}")))?;
        match st.password_login(&j.username, &j.password) {
            Ok(p) => {
                st.append(
                    AuditEvent::new(&Actor::from(&p), "login")
                        .org(p.org.id)
                        .decided(true, "auth:password", "password login"),
                )?;
                st.general_access(&p)?;
                let token = st.start_session(p.user_id)?;
                Ok((me_of(st, p, Via::Session), token))
            }
            Err(AuthError::Internal(m)) => Err(ApiError::internal(anyhow::anyhow!(m))),
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
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut res = Json(me).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(e.into()))?,
    );
    Ok(res)
}

/// Ends the session of the cookie (if any) and clears the cookie.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ))]
pub(crate) async fn logout<H: AccountsHost>(
    State(st): State<H>,
    _who: H::Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE).map(str::to_string) {
        blocking(&st, move |st| st.end_session(&token)).await?;
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("visage_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(res)
}

/// The authenticated caller: user, role, organisation, and how they authenticated.
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`: organisation suspended, or the policy \
            allows its role nothing", body = ErrorBody),
    ))]
pub(crate) async fn me<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
) -> ApiResult<Json<Me>> {
    let me = blocking(&st, move |st| {
        let (p, via) = st.caller(&who)?;
        st.general_access(&p)?;
        Ok(me_of(st, p, via))
    })
    .await?;
    Ok(Json(me))
}

// ---- users and keys ----------------------------------------------------------------------------

/// The user `id`, if the caller manages its organisation (404 otherwise: other
/// organisations' users do not exist for the caller).
fn managed_user<H: AccountsHost>(st: &H, p: &Principal, id: i64) -> ApiResult<User> {
    let u = st.get_user(id)?;
    if !st.is_operator(p) && u.org_id != p.org.id {
        return Err(ApiError::not_found(format!("no user {id}")));
    }
    Ok(u)
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct UsersQuery {
    /// Only this organisation's users (operator administrators; others always see their own).
    org_id: Option<i64>,
}

/// Users: operator administrators see every organisation's (or `org_id`'s), other
/// administrators their own organisation's.
#[utoipa::path(get, path = "/v1/users", tag = "admin", params(UsersQuery),
    responses(
        (status = 200, description = "Users (never password hashes)", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
    ))]
pub(crate) async fn list_users<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    Query(q): Query<UsersQuery>,
) -> ApiResult<Json<Vec<User>>> {
    let users = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        let org = if st.is_operator(&p) {
            q.org_id
        } else {
            Some(p.org.id)
        };
        st.list_users(org)
    })
    .await?;
    Ok(Json(users))
}

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUserJson {
    /// Organisation (default: the caller's; another one only for operator administrators).
    pub org_id: Option<i64>,
    pub username: String,
    /// `admin`, `investigator`, `auditor` or `compliance`.
    pub role: String,
    /// At least 12 characters; absent for key-only accounts.
    pub password: Option<String>,
}

/// Creates a user.
#[utoipa::path(post, path = "/v1/users", tag = "admin", request_body = NewUserJson,
    responses(
        (status = 201, description = "User", body = Object),
        (status = 400, description = "`bad_json` or `invalid`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
        (status = 404, description = "`not_found`: organisation", body = ErrorBody),
        (status = 409, description = "`conflict`: username taken", body = ErrorBody),
    ))]
pub(crate) async fn create_user<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let user = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        let j: NewUserJson = input::json(&body)?;
        let org_id = j.org_id.unwrap_or(p.org.id);
        if !st.is_operator(&p) && org_id != p.org.id {
            // Other organisations do not exist for this caller.
            return Err(ApiError::not_found(format!("no organisation {org_id}")));
        }
        let role: Role = j.role.parse()?;
        st.create_user(
            &Actor::from(&p),
            org_id,
            &j.username,
            role,
            j.password.as_deref(),
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn set_disabled<H: AccountsHost>(
    st: H,
    who: H::Caller,
    raw: String,
    disabled: bool,
) -> ApiResult<Json<User>> {
    let id = int_id(&raw, "user")?;
    let user = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        managed_user(st, &p, id)?;
        st.set_user_disabled(&Actor::from(&p), id, disabled)
    })
    .await?;
    Ok(Json(user))
}

/// Disables a user: their sessions and keys stop working on the next request.
#[utoipa::path(post, path = "/v1/users/{id}/disable", tag = "admin",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "User", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn disable_user<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<User>> {
    set_disabled(st, who, raw, true).await
}

/// Re-enables a user.
#[utoipa::path(post, path = "/v1/users/{id}/enable", tag = "admin",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "User", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn enable_user<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
) -> ApiResult<Json<User>> {
    set_disabled(st, who, raw, false).await
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewKeyJson {
    /// A label, e.g. the script that uses it.
    pub name: String,
    /// The key's role (default the user's; another only for admin users).
    pub role: Option<String>,
}

/// Creates an API key for a user; the `secret` (`vsk_...`) is in this response only.
#[utoipa::path(post, path = "/v1/users/{id}/keys", tag = "admin",
    params(("id" = i64, Path, description = "User id")),
    request_body = NewKeyJson,
    responses(
        (status = 201, description = "NewApiKey: `info` and the one-time `secret`", body = Object),
        (status = 400, description = "`bad_json` or `invalid`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn create_key<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let id = int_id(&raw, "user")?;
    let key = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        let j: NewKeyJson = input::json(&body)?;
        managed_user(st, &p, id)?;
        let role = j.role.as_deref().map(str::parse::<Role>).transpose()?;
        st.create_key(&Actor::from(&p), id, &j.name, role)
    })
    .await?;
    let mut res = (StatusCode::CREATED, Json(key)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct KeysQuery {
    /// Only this user's keys.
    user_id: Option<i64>,
}

/// API keys (never secrets): of one user, or of every user the caller manages.
#[utoipa::path(get, path = "/v1/keys", tag = "admin", params(KeysQuery),
    responses(
        (status = 200, description = "ApiKeyInfo list", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
        (status = 404, description = "`not_found`: user", body = ErrorBody),
    ))]
pub(crate) async fn list_keys<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    Query(q): Query<KeysQuery>,
) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    let keys = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        if let Some(u) = q.user_id {
            managed_user(st, &p, u)?;
            return st.list_keys(Some(u), None);
        }
        let org = (!st.is_operator(&p)).then_some(p.org.id);
        st.list_keys(None, org)
    })
    .await?;
    Ok(Json(keys))
}

/// Revokes an API key (takes effect on the next request).
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "Key id (embedded: the 16 hex digits after \
        `vsk_`; cluster: the number `GET /v1/keys` lists)")),
    responses(
        (status = 200, description = "ApiKeyInfo with `revoked_at`", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn revoke_key<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(key_id): UrlPath<String>,
) -> ApiResult<Json<ApiKeyInfo>> {
    let key = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        match st.key_org(&key_id)? {
            Some(org) if st.is_operator(&p) || org == p.org.id => {}
            _ => return Err(ApiError::not_found(format!("no API key {key_id}"))),
        }
        st.revoke_key(&Actor::from(&p), &key_id)
    })
    .await?;
    Ok(Json(key))
}

/// The policy in force: its TOML text, SHA-256 and where it came from.
#[utoipa::path(get, path = "/v1/policy", tag = "admin",
    responses(
        (status = 200, description = "`text`, `sha256`, `origin`", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_policy)", body = ErrorBody),
    ))]
pub(crate) async fn get_policy<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
) -> ApiResult<Json<serde_json::Value>> {
    let doc = blocking(&st, move |st| {
        st.authorize(&who, Action::ManagePolicy)?;
        Ok(st.policy_doc())
    })
    .await?;
    Ok(Json(doc))
}

// ---- organisations -----------------------------------------------------------------------------

/// Lets `p` go on only when it is an administrator of the operator organisation; otherwise
/// the refusal (`builtin:operator_only`, saying `what`) is recorded and answered 403.
fn operator_only<H: AccountsHost>(
    st: &H,
    p: &Principal,
    action: Action,
    what: &str,
) -> ApiResult<()> {
    if st.is_operator(p) {
        return Ok(());
    }
    let d = operator_only_refusal(what);
    st.append(AuditEvent::decision(p, action, &d))?;
    Err(ApiError::denied(&d))
}

/// Organisations: all for operator administrators, else the caller's own.
#[utoipa::path(get, path = "/v1/orgs", tag = "admin",
    responses(
        (status = 200, description = "Organisations", body = Object),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied` (action manage_accounts)", body = ErrorBody),
    ))]
pub(crate) async fn list_orgs<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
) -> ApiResult<Json<Vec<Organisation>>> {
    let orgs = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        if st.is_operator(&p) {
            return st.list_orgs();
        }
        Ok(vec![st.get_org(p.org.id)?])
    })
    .await?;
    Ok(Json(orgs))
}

/// Creates an organisation (operator administrators only).
#[utoipa::path(post, path = "/v1/orgs", tag = "admin",
    request_body(content = Object, description = "NewOrg: name, kind, jurisdiction, status, \
        trial_expires_at?, search_quota?"),
    responses(
        (status = 201, description = "Organisation", body = Object),
        (status = 400, description = "`bad_json` or `invalid`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`", body = ErrorBody),
        (status = 409, description = "`conflict`: name taken", body = ErrorBody),
    ))]
pub(crate) async fn create_org<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let org = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        operator_only(st, &p, Action::ManageAccounts, "create organisations")?;
        let new: NewOrg = input::json(&body)?;
        st.create_org(&Actor::from(&p), &new)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(org)).into_response())
}

/// Changes an organisation's status (trial, active, suspended), trial expiry or search quota
/// (operator administrators only). Suspension takes effect on the next request.
#[utoipa::path(patch, path = "/v1/orgs/{id}", tag = "admin",
    params(("id" = i64, Path, description = "Organisation id")),
    request_body(content = Object, description = "OrgUpdate: status?, trial_expires_at?, \
        search_quota?"),
    responses(
        (status = 200, description = "Organisation", body = Object),
        (status = 400, description = "`bad_json` or `invalid`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`policy_denied`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn update_org<H: AccountsHost>(
    State(st): State<H>,
    who: H::Caller,
    UrlPath(raw): UrlPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Organisation>> {
    let id = int_id(&raw, "organisation")?;
    let org = blocking(&st, move |st| {
        let p = st.authorize(&who, Action::ManageAccounts)?;
        operator_only(st, &p, Action::ManageAccounts, "change organisations")?;
        let update: OrgUpdate = input::json(&body)?;
        st.update_org(&Actor::from(&p), id, &update)
    })
    .await?;
    Ok(Json(org))
}
