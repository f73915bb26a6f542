//! Typed errors with stable string codes (`code()`), for the server to map onto HTTP statuses.

use std::fmt;

/// Errors from governance operations other than authentication.
#[derive(Debug, thiserror::Error)]
pub enum GovError {
    /// The named thing does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness rule or a state transition refused the change (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The input is malformed or out of range (HTTP 400/422).
    #[error("{0}")]
    Invalid(String),
    /// Storage or key-file failure (HTTP 500).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl GovError {
    /// Stable machine-readable code: `not_found`, `conflict`, `invalid`, `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            GovError::NotFound(_) => "not_found",
            GovError::Conflict(_) => "conflict",
            GovError::Invalid(_) => "invalid",
            GovError::Internal(_) => "internal",
        }
    }
}

impl From<rusqlite::Error> for GovError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, msg) = &e {
            if f.code == rusqlite::ErrorCode::ConstraintViolation {
                return GovError::Conflict(msg.clone().unwrap_or_else(|| e.to_string()));
            }
        }
        GovError::Internal(anyhow::Error::new(e).context("governance database"))
    }
}

pub type Result<T, E = GovError> = std::result::Result<T, E>;

/// Why a credential was refused. The HTTP layer answers 401 for every variant (and must not
/// reveal which one); the variants exist for the audit log and for tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not of the form `vsk_<16 hex>_<43 base64url>`.
    #[error("malformed API key")]
    Malformed,
    /// No key with this id.
    #[error("unknown API key")]
    UnknownKey,
    /// The key was revoked.
    #[error("revoked API key")]
    Revoked,
    /// The key id exists but the secret does not match.
    #[error("wrong API key secret")]
    WrongSecret,
    /// No user with this name (password login).
    #[error("unknown user")]
    UnknownUser,
    /// Wrong password, or the user has no password set.
    #[error("wrong password")]
    WrongPassword,
    /// The user is disabled.
    #[error("user disabled")]
    Disabled,
    /// Storage failure while authenticating (HTTP 500, not 401).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Malformed => "malformed_key",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Revoked => "revoked_key",
            AuthError::WrongSecret => "wrong_secret",
            AuthError::UnknownUser => "unknown_user",
            AuthError::WrongPassword => "wrong_password",
            AuthError::Disabled => "user_disabled",
            AuthError::Internal(_) => "internal",
        }
    }
}

impl From<rusqlite::Error> for AuthError {
    fn from(e: rusqlite::Error) -> Self {
        AuthError::Internal(e.to_string())
    }
}

/// A policy file that could not be loaded; the message names the file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

impl From<PolicyError> for GovError {
    fn from(e: PolicyError) -> Self {
        GovError::Invalid(e.0)
    }
}
