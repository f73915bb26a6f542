//! The policy file (`policy/default.toml`) and authorisation decisions.
//!
//! Rules are evaluated in file order; the first rule whose conditions all match decides; when
//! none matches, `default_effect` decides (rule name `default`). [`Governance::authorize`]
//! adds built-in checks around the rules: organisation suspended, trial expired, case and
//! purpose required, monthly search quota.

use crate::accounts::{string_enum, OrgKind, OrgStatus, Organisation, Principal, Role};
use crate::audit::{Actor, AuditEvent};
use crate::error::{GovError, PolicyError, Result};
use crate::util::{jurisdiction_matches, month_start_utc, normalise_jurisdiction, now_s};
use crate::Governance;
use rusqlite::OptionalExtension;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use toml::Spanned;

string_enum!(
    /// Everything the policy can allow or deny.
    Action {
        Search = "search",
        Verify = "verify",
        Ingest = "ingest",
        ReadFace = "read_face",
        Delete = "delete",
        ManageAccounts = "manage_accounts",
        ManagePolicy = "manage_policy",
        ReadAudit = "read_audit",
        ManageCases = "manage_cases",
        Erase = "erase",
        OptOutProcess = "opt_out_process",
        ExportReport = "export_report",
    }
);

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// An entry of a rule's `actions`: an action name or `"*"` (every action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ActionPattern {
    Any,
    Action(Action),
}

impl<'de> Deserialize<'de> for ActionPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "*" {
            return Ok(ActionPattern::Any);
        }
        Action::parse(&s).map(ActionPattern::Action).ok_or_else(|| {
            let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown action '{s}'; expected \"*\" or one of: {}",
                all.join(", ")
            ))
        })
    }
}

/// An ISO 3166 code used as a prefix pattern ("US" matches "US" and "US-IL").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Jurisdiction(pub String);

impl<'de> Deserialize<'de> for Jurisdiction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        normalise_jurisdiction(&s).map(Jurisdiction).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "'{s}' is not an ISO 3166-1 alpha-2 or ISO 3166-2 code (e.g. \"US\", \"US-IL\")"
            ))
        })
    }
}

/// One rule. Every condition given must match; an absent condition matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub reason: String,
    pub actions: Option<Vec<ActionPattern>>,
    pub roles: Option<Vec<Role>>,
    pub org_kinds: Option<Vec<OrgKind>>,
    pub org_jurisdictions: Option<Vec<Jurisdiction>>,
    pub org_status: Option<Vec<OrgStatus>>,
}

impl Rule {
    pub fn matches(&self, role: Role, org: &Organisation, action: Action) -> bool {
        self.actions.as_ref().is_none_or(|a| {
            a.iter()
                .any(|p| matches!(p, ActionPattern::Any) || *p == ActionPattern::Action(action))
        }) && self.roles.as_ref().is_none_or(|r| r.contains(&role))
            && self
                .org_kinds
                .as_ref()
                .is_none_or(|k| k.contains(&org.kind))
            && self.org_jurisdictions.as_ref().is_none_or(|j| {
                j.iter()
                    .any(|p| jurisdiction_matches(&p.0, &org.jurisdiction))
            })
            && self
                .org_status
                .as_ref()
                .is_none_or(|s| s.contains(&org.status))
    }
}

/// `[search]`: what every search must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchPolicy {
    /// An open case of the caller's organisation is required.
    #[serde(default = "yes")]
    pub require_case: bool,
    /// A purpose statement is required.
    #[serde(default = "yes")]
    pub require_purpose: bool,
    /// Minimum purpose length in characters (after trimming).
    #[serde(default = "ten")]
    pub min_purpose_chars: usize,
    /// Which actions these requirements apply to.
    #[serde(default = "search_actions")]
    pub applies_to: Vec<Action>,
}

fn yes() -> bool {
    true
}
fn ten() -> usize {
    10
}
fn search_actions() -> Vec<Action> {
    vec![Action::Search, Action::Verify]
}

impl Default for SearchPolicy {
    fn default() -> Self {
        SearchPolicy {
            require_case: true,
            require_purpose: true,
            min_purpose_chars: ten(),
            applies_to: search_actions(),
        }
    }
}

/// `[data]`: what the gallery must not hold or show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPolicy {
    /// Images tagged with these jurisdictions (prefix semantics) are refused at ingest and
    /// hidden from results.
    #[serde(default)]
    pub excluded_jurisdictions: Vec<Jurisdiction>,
}

impl DataPolicy {
    /// The excluded jurisdictions as codes, for a search filter's `exclude_jurisdictions`.
    pub fn excluded_codes(&self) -> Vec<String> {
        self.excluded_jurisdictions
            .iter()
            .map(|j| j.0.clone())
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: Spanned<u32>,
    #[serde(default = "deny")]
    default_effect: Effect,
    #[serde(default)]
    default_reason: Option<String>,
    #[serde(default)]
    search: SearchPolicy,
    #[serde(default)]
    data: DataPolicy,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
}

fn deny() -> Effect {
    Effect::Deny
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Spanned<String>,
    effect: Effect,
    reason: Spanned<String>,
    #[serde(default)]
    actions: Option<Vec<ActionPattern>>,
    #[serde(default)]
    roles: Option<Vec<Role>>,
    #[serde(default)]
    org_kinds: Option<Vec<OrgKind>>,
    #[serde(default)]
    org_jurisdictions: Option<Vec<Jurisdiction>>,
    #[serde(default)]
    org_status: Option<Vec<OrgStatus>>,
}

/// A loaded policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub default_effect: Effect,
    pub default_reason: String,
    pub search: SearchPolicy,
    pub data: DataPolicy,
    pub rules: Vec<Rule>,
    /// SHA-256 (hex) of the source text, recorded in the audit log when the policy changes.
    pub sha256: String,
}

/// The outcome of an authorisation, always naming the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    /// A policy rule name, `default`, or `builtin:<check>`.
    pub rule: String,
    pub reason: String,
}

impl Decision {
    fn deny(rule: &str, reason: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            rule: rule.into(),
            reason: reason.into(),
        }
    }

    /// The API error code for a denial: `case_required`, `quota_exceeded` or `policy_denied`.
    pub fn error_code(&self) -> Option<&'static str> {
        if self.allowed {
            return None;
        }
        Some(match self.rule.as_str() {
            "builtin:case_required" | "builtin:case_not_found" | "builtin:case_closed" => {
                "case_required"
            }
            "builtin:purpose_required" => "purpose_required",
            "builtin:quota_exhausted" => "quota_exceeded",
            _ => "policy_denied",
        })
    }
}

/// Situation of one request, for the built-in checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzContext {
    pub case_id: Option<i64>,
    pub purpose: Option<String>,
    /// Unix seconds; `None`: now. (Tests set it.)
    pub now: Option<i64>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

impl Policy {
    /// Parses policy text; `origin` names it in error messages (a path, or "default policy").
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError(format!("{origin}: {e}")))?;
        let err = |span: std::ops::Range<usize>, msg: String| {
            PolicyError(format!(
                "{origin}: line {}: {msg}",
                line_of(text, span.start)
            ))
        };
        if *file.version.get_ref() != 1 {
            return Err(err(
                file.version.span(),
                "unsupported policy version; expected 1".into(),
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rules.len());
        for r in file.rules {
            let name = r.name.get_ref().trim().to_string();
            let bad_name = name.is_empty()
                || name.starts_with("builtin:")
                || name == "default"
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if bad_name {
                return Err(err(
                    r.name.span(),
                    format!(
                        "rule name '{name}' must be letters, digits, - _ . : and not 'default' \
                         or 'builtin:...'"
                    ),
                ));
            }
            if rules.iter().any(|x| x.name == name) {
                return Err(err(r.name.span(), format!("duplicate rule name '{name}'")));
            }
            if r.reason.get_ref().trim().is_empty() {
                return Err(err(
                    r.reason.span(),
                    format!("rule '{name}' needs a reason"),
                ));
            }
            rules.push(Rule {
                name,
                effect: r.effect,
                reason: r.reason.into_inner(),
                actions: r.actions,
                roles: r.roles,
                org_kinds: r.org_kinds,
                org_jurisdictions: r.org_jurisdictions,
                org_status: r.org_status,
            });
        }
        Ok(Policy {
            default_effect: file.default_effect,
            default_reason: file
                .default_reason
                .unwrap_or_else(|| "no policy rule allows this".to_string()),
            search: file.search,
            data: file.data,
            rules,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
        })
    }

    /// Loads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError(format!("{}: {e}", path.display())))?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// The shipped policy (`policy/default.toml`, compiled in).
    pub fn default_policy() -> Policy {
        Policy::parse(DEFAULT_POLICY_TOML, "policy/default.toml")
            .expect("the shipped default policy parses (tested)")
    }

    /// Applies the rules only (no built-in checks): first match, else the default effect.
    pub fn evaluate(&self, role: Role, org: &Organisation, action: Action) -> Decision {
        match self.rules.iter().find(|r| r.matches(role, org, action)) {
            Some(r) => Decision {
                allowed: r.effect == Effect::Allow,
                rule: r.name.clone(),
                reason: r.reason.clone(),
            },
            None => Decision {
                allowed: self.default_effect == Effect::Allow,
                rule: "default".into(),
                reason: self.default_reason.clone(),
            },
        }
    }

    /// The `[data] excluded_jurisdictions` entry that excludes `code`, if any (prefix
    /// semantics: an entry "US" excludes "US-IL").
    pub fn jurisdiction_excluded(&self, code: &str) -> Option<&str> {
        self.data
            .excluded_jurisdictions
            .iter()
            .find(|p| jurisdiction_matches(&p.0, code))
            .map(|p| p.0.as_str())
    }
}

/// Name of a data directory's own policy file.
pub const POLICY_FILE: &str = "policy.toml";

/// The policy file in force for a data directory: `explicit`, else `<data_dir>/policy.toml`
/// when present, else `None` (the built-in default). `visage serve` and `visage ingest` both
/// resolve it here.
pub fn policy_file(data_dir: &Path, explicit: Option<&Path>) -> Option<std::path::PathBuf> {
    let local = data_dir.join(POLICY_FILE);
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => local.is_file().then_some(local),
    }
}

/// The text of `policy/default.toml`.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../policy/default.toml");

impl Governance {
    /// The policy in force.
    pub fn policy(&self) -> std::sync::Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the policy in force (in memory; the caller keeps the file) and records the
    /// change with the new policy's SHA-256.
    pub fn set_policy(&self, by: &Actor, policy: Policy) -> Result<()> {
        self.append(
            AuditEvent::admin(by, None, "set_policy")
                .details(serde_json::json!({"policy_sha256": policy.sha256})),
        )?;
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(policy);
        Ok(())
    }

    /// Searches by `org_id` recorded as allowed in the UTC calendar month containing `now`
    /// (unix seconds).
    pub fn searches_this_month(&self, org_id: i64, now: i64) -> Result<u64> {
        self.count_actions_since(org_id, Action::Search.as_str(), month_start_utc(now) * 1000)
    }

    /// Decides whether `principal` may do `action` under the policy in force, with the facts
    /// from this store (see [`decide`]). The decision is not recorded here; the caller appends
    /// it with the operation's results ([`AuditEvent::decision`]).
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        ctx: &AuthzContext,
    ) -> Result<Decision> {
        decide(&self.policy(), self, principal, action, ctx)
    }
}

impl AuthzFacts for Governance {
    fn case_org_status(&self, case_id: i64) -> Result<Option<(i64, String)>> {
        Ok(self
            .db()
            .query_row(
                "SELECT org_id, status FROM case_file WHERE id = ?1",
                [case_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn allowed_actions_since(&self, org_id: i64, action: &str, since_ms: i64) -> Result<u64> {
        self.count_actions_since(org_id, action, since_ms)
    }
}

/// What a decision needs besides the policy and the caller: the case named and the
/// organisation's searches so far. The embedded store answers from SQLite, a cluster from
/// PostgreSQL (`visage-cluster`), so both decide by the same code.
pub trait AuthzFacts {
    /// The organisation id and status (`open`, `closed`) of a case, if it exists.
    fn case_org_status(&self, case_id: i64) -> Result<Option<(i64, String)>>;
    /// Allowed records of `action` by the organisation since `since_ms` (unix ms), from the
    /// audit log.
    fn allowed_actions_since(&self, org_id: i64, action: &str, since_ms: i64) -> Result<u64>;
}

/// The monthly quota `action` counts against in `org`, if any: `search` against the
/// organisation's `search_quota`. Servers serialise such requests per organisation from
/// decision to record, so the count taken by [`decide`] cannot be overrun.
pub fn quota_for(org: &Organisation, action: Action) -> Option<u64> {
    org.search_quota.filter(|_| action == Action::Search)
}

/// Decides whether `principal` may do `action`. Order: organisation suspended, trial expired,
/// policy rules, then for the `[search] applies_to` actions case and purpose, then for
/// `search` the monthly quota (counted from allowed `search` records in the audit log, so
/// the caller must append one per search).
pub fn decide(
    policy: &Policy,
    facts: &dyn AuthzFacts,
    principal: &Principal,
    action: Action,
    ctx: &AuthzContext,
) -> Result<Decision> {
    let org = &principal.org;
    let now = ctx.now.unwrap_or_else(now_s);
    if org.status == OrgStatus::Suspended {
        return Ok(Decision::deny(
            "builtin:org_suspended",
            format!("organisation '{}' is suspended", org.name),
        ));
    }
    if org.status == OrgStatus::Trial && org.trial_expires_at.is_none_or(|t| t <= now) {
        return Ok(Decision::deny(
            "builtin:trial_expired",
            format!("the trial of organisation '{}' has expired", org.name),
        ));
    }
    let decision = policy.evaluate(principal.role, org, action);
    if !decision.allowed {
        return Ok(decision);
    }
    if policy.search.applies_to.contains(&action) {
        if policy.search.require_case {
            let Some(case_id) = ctx.case_id else {
                return Ok(Decision::deny(
                    "builtin:case_required",
                    format!("every {action} needs a case"),
                ));
            };
            let case = facts.case_org_status(case_id)?;
            match case {
                Some((o, _)) if o != org.id => {
                    return Ok(Decision::deny(
                        "builtin:case_not_found",
                        format!("no case {case_id} in organisation '{}'", org.name),
                    ))
                }
                None => {
                    return Ok(Decision::deny(
                        "builtin:case_not_found",
                        format!("no case {case_id} in organisation '{}'", org.name),
                    ))
                }
                Some((_, status)) if status != "open" => {
                    return Ok(Decision::deny(
                        "builtin:case_closed",
                        format!("case {case_id} is closed"),
                    ))
                }
                Some(_) => {}
            }
        }
        if policy.search.require_purpose {
            let n = ctx
                .purpose
                .as_deref()
                .map_or(0, |p| p.trim().chars().count());
            if n < policy.search.min_purpose_chars {
                return Ok(Decision::deny(
                    "builtin:purpose_required",
                    format!(
                        "every {action} needs a purpose of at least {} characters",
                        policy.search.min_purpose_chars
                    ),
                ));
            }
        }
    }
    if let Some(quota) = quota_for(org, action) {
        let used =
            facts.allowed_actions_since(org.id, action.as_str(), month_start_utc(now) * 1000)?;
        if used >= quota {
            return Ok(Decision::deny(
                "builtin:quota_exhausted",
                format!(
                    "organisation '{}' has used its {quota} searches this month",
                    org.name
                ),
            ));
        }
    }
    Ok(decision)
}
