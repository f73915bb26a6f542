//! Authentication (API keys, session cookies), authorisation helpers that audit refusals,
//! per-IP rate limiting (the login, logout and me endpoints: `accounts_api.rs`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use visage_governance::{
    Action, AuditEvent, AuthError, AuthzContext, Decision, OrgStatus, Principal,
};

use crate::{ApiError, ApiResult, AppState};

/// Name of the session cookie set by `POST /v1/auth/login`.
pub const SESSION_COOKIE: &str = "visage_session";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

// ---------------------------------------------------------------------------------------------
// Sessions

/// Server-side sessions: SHA-256 of the token -> (user id, expiry). Tokens are 32 random
/// bytes; only their hashes are held, and the user's state is re-read on every request.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, (i64, Instant)>>,
}

fn token_key(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Sessions {
    pub(crate) fn create(&self, user_id: i64) -> ApiResult<String> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("no OS randomness: {e}")))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, exp)| *exp > now);
        m.insert(token_key(&token), (user_id, now + SESSION_TTL));
        Ok(token)
    }

    fn user(&self, token: &str) -> Option<i64> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&token_key(token))
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(u, _)| *u)
    }

    pub(crate) fn remove(&self, token: &str) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&token_key(token));
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limiting

/// A token bucket per client IP: `per_minute` requests per minute, bursting to the same.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn per_minute(n: u32) -> RateLimiter {
        RateLimiter {
            per_minute: f64::from(n.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; false when its bucket is empty.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let rate = self.per_minute / 60.0;
        let mut m = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 10_000 {
            // Forget addresses whose bucket has refilled.
            let full = self.per_minute;
            m.retain(|_, (tokens, t)| *tokens + now.duration_since(*t).as_secs_f64() * rate < full);
        }
        let (tokens, t) = m.entry(ip).or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*t).as_secs_f64() * rate).min(self.per_minute);
        *t = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    ApiKey,
    Session,
}

/// An authenticated caller (extractor): 401 `unauthorized` otherwise, whatever the cause.
pub struct Auth(pub Principal);

/// As [`Auth`], also saying how.
pub struct AuthVia(pub Principal, pub Via);

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The principal of a user id (session login): the user's current role and organisation;
/// disabled users are refused.
fn principal_of_user(st: &AppState, user_id: i64) -> ApiResult<Principal> {
    let user = match st.gov.get_user(user_id) {
        Ok(u) => u,
        Err(visage_governance::GovError::NotFound(_)) => return Err(ApiError::unauthorized()),
        Err(e) => return Err(e.into()),
    };
    if user.disabled {
        return Err(ApiError::unauthorized());
    }
    let org = st.gov.get_org(user.org_id)?;
    Ok(Principal {
        user_id,
        username: user.username,
        org,
        role: user.role,
    })
}

fn authenticate(st: &AppState, headers: &HeaderMap) -> ApiResult<(Principal, Via)> {
    if let Some(h) = headers.get(header::AUTHORIZATION) {
        let s = h.to_str().map_err(|_| ApiError::unauthorized())?;
        let key = s
            .strip_prefix("Bearer ")
            .or_else(|| s.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthorized)?
            .trim();
        return match st.gov.authenticate_key(key) {
            Ok(p) => Ok((p, Via::ApiKey)),
            Err(AuthError::Internal(m)) => Err(ApiError::internal(anyhow::anyhow!(m))),
            Err(_) => Err(ApiError::unauthorized()),
        };
    }
    if let Some(token) = cookie(headers, SESSION_COOKIE) {
        let user = st.sessions.user(token).ok_or_else(ApiError::unauthorized)?;
        return Ok((principal_of_user(st, user)?, Via::Session));
    }
    Err(ApiError::unauthorized())
}

impl FromRequestParts<AppState> for AuthVia {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        let (p, via) = authenticate(st, &parts.headers)?;
        Ok(AuthVia(p, via))
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        let (p, _) = authenticate(st, &parts.headers)?;
        Ok(Auth(p))
    }
}

// ---------------------------------------------------------------------------------------------
// Authorisation

/// `gov.authorize`, appending the refusal (shaped by `shape`) to the audit log and answering
/// 403 with the decision's code when denied. Allowed decisions are returned for the caller to
/// record with the operation's results.
pub(crate) fn authorize_with(
    st: &AppState,
    p: &Principal,
    action: Action,
    ctx: &AuthzContext,
    shape: impl FnOnce(AuditEvent) -> AuditEvent,
) -> ApiResult<Decision> {
    let d = st.gov.authorize(p, action, ctx)?;
    if !d.allowed {
        st.gov.append(shape(refusal_event(p, action, &d, ctx)))?;
        return Err(ApiError::denied(&d));
    }
    Ok(d)
}

/// The audit record of a refusal (either API's log): the decision, and the case unless it
/// is another organisation's (then only its id, in the details).
pub(crate) fn refusal_event(
    p: &Principal,
    action: Action,
    d: &Decision,
    ctx: &AuthzContext,
) -> AuditEvent {
    let mut ev = AuditEvent::decision(p, action, d);
    if let Some(c) = ctx.case_id {
        if d.rule != "builtin:case_not_found" {
            ev = ev.case(c);
        } else {
            ev.details = serde_json::json!({"requested_case_id": c});
        }
    }
    ev
}

/// For endpoints that are no single action (`/v1/auth/me`, `/metrics`): the organisation must
/// be active (or in a running trial) and the policy must allow its role something.
pub(crate) fn general_access(st: &AppState, p: &Principal) -> ApiResult<()> {
    general_access_under(&st.gov.policy(), p)
}

/// [`general_access`] under a given policy (either API).
pub(crate) fn general_access_under(
    policy: &visage_governance::Policy,
    p: &Principal,
) -> ApiResult<()> {
    let deny = |rule: &str, reason: String| {
        let d = Decision {
            allowed: false,
            rule: rule.into(),
            reason,
        };
        Err(ApiError::denied(&d))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if p.org.status == OrgStatus::Suspended {
        return deny(
            "builtin:org_suspended",
            format!("organisation '{}' is suspended", p.org.name),
        );
    }
    if p.org.status == OrgStatus::Trial && p.org.trial_expires_at.is_none_or(|t| t <= now) {
        return deny(
            "builtin:trial_expired",
            format!("the trial of organisation '{}' has expired", p.org.name),
        );
    }
    let mut first_denial = None;
    for a in Action::ALL {
        let d = policy.evaluate(p.role, &p.org, *a);
        if d.allowed {
            return Ok(());
        }
        first_denial.get_or_insert(d);
    }
    match first_denial {
        Some(d) => Err(ApiError::denied(&d)),
        None => Ok(()),
    }
}

/// Whether the principal is an admin of the operator organisation (manages every
/// organisation); other admins manage only their own.
pub(crate) fn is_operator(st: &AppState, p: &Principal) -> bool {
    p.role == visage_governance::Role::Admin && st.operator_org == Some(p.org.id)
}
