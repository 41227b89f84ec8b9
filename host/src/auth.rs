//! Authentication: opaque bearer tokens -> principal, and the token lifecycle (issue, list,
//! rotate with a grace window, revoke, exchange for short-lived audience-bound tokens).
//!
//! Three kinds, told apart by a prefix secret scanners can match, each followed by 43
//! base64url characters (256 random bits):
//! - `wdn_st_`: service token of an agent (long-lived, TTL capped), usable on `/mcp` and
//!   exchangeable at `/token` for
//! - `wdn_at_`: short-lived agent token bound to this gateway's audience (its MCP URL);
//! - `wdn_adm_`: admin token for the admin API, never accepted on `/mcp` (and agent tokens
//!   are never accepted on the admin API).
//!
//! Only the BLAKE3 hash of a token is stored and looked up, so the secret is never compared
//! byte by byte (no timing signal) and a stolen store yields no usable token. Tokens are
//! never logged: records carry a public id (`tok_...`) for that.
//!
//! Invariants: a token is refused when missing, malformed, in the query string, unknown,
//! revoked, expired (rotation sets the old token's expiry to the end of its grace window),
//! of the wrong kind for the endpoint, bound to another audience, or when its agent no
//! longer exists. Revoking a service token revokes the agent tokens exchanged from it.
//! The gateway admits through [`Admissions`], which keeps what it read only while the store
//! has not committed anything since: it never admits a token the store would refuse.
//!
//! Threat: unauthenticated access to tools, replay of leaked or retired tokens, tokens
//! minted for another gateway, and token leakage through logs, URLs or the store.

use crate::identity::Subject;
use crate::identity::{self, now_secs};
use crate::storage::{AgentRecord, Store, StoreError, Tables, TokenKind, TokenRecord};
use base64::Engine as _;

/// Prefix of service tokens.
pub const SERVICE_TOKEN_PREFIX: &str = "wdn_st_";
/// Prefix of short-lived agent tokens.
pub const AGENT_TOKEN_PREFIX: &str = "wdn_at_";
/// Prefix of admin tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "wdn_adm_";
/// Length of a token's secret part (base64url of 32 bytes).
const SECRET_LEN: usize = 43;

/// Default lifetime of a service token: 90 days.
pub const SERVICE_DEFAULT_TTL: u64 = 90 * 86_400;
/// Longest lifetime of a service token: 365 days.
pub const SERVICE_MAX_TTL: u64 = 365 * 86_400;
/// Default lifetime of an exchanged agent token: 15 minutes.
pub const AGENT_DEFAULT_TTL: u64 = 15 * 60;
/// Longest lifetime of an exchanged agent token: 1 hour.
pub const AGENT_MAX_TTL: u64 = 3_600;
/// Longest rotation grace window: 7 days.
pub const MAX_GRACE: u64 = 7 * 86_400;

/// Admin role that may do everything.
pub const ROLE_OPERATOR: &str = "operator";
/// Admin role that may read (audit, usage) and, later, approve calls.
pub const ROLE_APPROVER: &str = "approver";

/// An authenticated agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's public id.
    pub token_id: String,
    /// Service or agent token.
    pub kind: TokenKind,
    /// Who the agent is, with its current groups.
    pub subject: Subject,
    /// Calls per second this agent may make (None: the gateway default).
    pub rate_limit: Option<u32>,
    /// When the token stops working (Unix seconds; for an exchanged token, the earlier of
    /// its own expiry and its service token's), so streams end with it.
    pub expires_at: Option<u64>,
}

/// An authenticated admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The token's public id.
    pub token_id: String,
    /// Admin name.
    pub name: String,
    /// `operator` or `approver`.
    pub role: String,
}

/// Why a request was not authenticated. The wire only says "missing" or "invalid"; the
/// audit trail records which.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("missing bearer token")]
    Missing,
    /// Not shaped like a warden token.
    #[error("malformed token")]
    Malformed,
    /// A token in the URL.
    #[error("tokens are not accepted in the query string")]
    InQuery,
    /// No such token (or its agent was deleted).
    #[error("unknown token")]
    Unknown,
    /// Past its expiry (or its rotation grace window).
    #[error("expired token")]
    Expired,
    /// Revoked.
    #[error("revoked token")]
    Revoked,
    /// Bound to another gateway.
    #[error("token bound to another audience")]
    Audience,
    /// An agent token on the admin API or the reverse.
    #[error("token of the wrong kind for this endpoint")]
    WrongKind,
    /// The request asked for something the rules do not allow (e.g. a TTL over the cap).
    #[error("{0}")]
    Refused(String),
    /// The store failed (fail closed).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuthError {
    /// A short machine-readable class for the audit trail.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::InQuery => "in_query",
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Audience => "audience",
            Self::WrongKind => "wrong_kind",
            Self::Refused(_) => "refused",
            Self::Store(_) => "store",
        }
    }
}

/// Hash of a token as stored.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| {
        AuthError::Store(StoreError::Corrupt(format!(
            "no randomness for a token: {e}"
        )))
    })?;
    Ok(bytes)
}

fn prefix(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Service => SERVICE_TOKEN_PREFIX,
        TokenKind::Agent => AGENT_TOKEN_PREFIX,
        TokenKind::Admin => ADMIN_TOKEN_PREFIX,
    }
}

/// A token just issued: the secret (shown once) and its record.
#[derive(Debug)]
pub struct Issued {
    /// The bearer token. Show it once; it cannot be recovered.
    pub token: String,
    /// What was stored.
    pub record: TokenRecord,
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// Kind.
    pub kind: TokenKind,
    /// Agent path, or admin name.
    pub principal: String,
    /// Admin role (admin tokens only).
    pub role: String,
    /// Lifetime in seconds (None: the kind's default; admin tokens: no expiry).
    pub ttl: Option<u64>,
    /// Operator's note.
    pub label: String,
    /// Audience (agent tokens).
    pub audience: Option<String>,
    /// Parent service token id (agent tokens).
    pub parent: Option<String>,
}

/// Issues a token, storing only its hash.
pub fn issue(store: &impl Tables, req: IssueRequest) -> Result<Issued, AuthError> {
    let (default_ttl, max_ttl) = match req.kind {
        TokenKind::Service => (Some(SERVICE_DEFAULT_TTL), Some(SERVICE_MAX_TTL)),
        TokenKind::Agent => (Some(AGENT_DEFAULT_TTL), Some(AGENT_MAX_TTL)),
        TokenKind::Admin => (None, None),
    };
    let ttl = req.ttl.or(default_ttl);
    if let (Some(ttl), Some(max)) = (ttl, max_ttl)
        && (ttl == 0 || ttl > max)
    {
        return Err(AuthError::Refused(format!(
            "a TTL of {ttl} s is outside 1..={max} s for this kind of token"
        )));
    }
    match req.kind {
        TokenKind::Admin => {
            if !identity::valid_segment(&req.principal) {
                return Err(AuthError::Refused(format!(
                    "admin name `{}` is invalid: use 1-32 lower-case letters, digits or '-'",
                    req.principal
                )));
            }
            if req.role != ROLE_OPERATOR && req.role != ROLE_APPROVER {
                return Err(AuthError::Refused(format!(
                    "role must be `{ROLE_OPERATOR}` or `{ROLE_APPROVER}`"
                )));
            }
        }
        TokenKind::Service | TokenKind::Agent => {
            if store.agent(&req.principal)?.is_none() {
                return Err(AuthError::Refused(format!(
                    "agent `{}` does not exist: create it first",
                    req.principal
                )));
            }
        }
    }
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let token = format!("{}{secret}", prefix(req.kind));
    let id = format!(
        "tok_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<9>()?)
    );
    let now = now_secs();
    let record = TokenRecord {
        id,
        kind: req.kind,
        principal: req.principal,
        role: if req.kind == TokenKind::Admin {
            req.role
        } else {
            String::new()
        },
        issued_at: now,
        expires_at: ttl.map(|t| now + t),
        revoked_at: None,
        audience: req.audience,
        parent: req.parent,
        rotated_to: None,
        label: req.label,
    };
    store.put_token(&token_hash(&token), &record)?;
    Ok(Issued { token, record })
}

/// Issues a service token for an agent with the default TTL.
pub fn issue_service_token(store: &Store, agent: &str, label: &str) -> Result<Issued, AuthError> {
    issue(
        store,
        IssueRequest {
            kind: TokenKind::Service,
            principal: agent.to_owned(),
            role: String::new(),
            ttl: None,
            label: label.to_owned(),
            audience: None,
            parent: None,
        },
    )
}

/// Rotates a token: issues a replacement with the same principal, role and remaining
/// lifetime policy, and lets the old one live only `grace` more seconds.
pub fn rotate(store: &impl Tables, id: &str, grace: u64) -> Result<Issued, AuthError> {
    if grace > MAX_GRACE {
        return Err(AuthError::Refused(format!(
            "a grace window of {grace} s is over the {MAX_GRACE} s limit"
        )));
    }
    let (hash, mut old) = store.token_by_id(id)?.ok_or(AuthError::Unknown)?;
    let now = now_secs();
    if old.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if old.expires_at.is_some_and(|e| e <= now) {
        return Err(AuthError::Expired);
    }
    if old.kind == TokenKind::Agent {
        return Err(AuthError::Refused(
            "agent tokens are short-lived: exchange the service token again instead".into(),
        ));
    }
    let ttl = old.expires_at.map(|e| e.saturating_sub(old.issued_at));
    let new = issue(
        store,
        IssueRequest {
            kind: old.kind,
            principal: old.principal.clone(),
            role: old.role.clone(),
            ttl,
            label: old.label.clone(),
            audience: old.audience.clone(),
            parent: None,
        },
    )?;
    let end = now + grace;
    old.expires_at = Some(old.expires_at.map_or(end, |e| e.min(end)));
    old.rotated_to = Some(new.record.id.clone());
    store.update_tokens(&[(hash, old)])?;
    Ok(new)
}

/// Revokes a token and every agent token exchanged from it. Returns the revoked ids.
pub fn revoke(store: &impl Tables, id: &str) -> Result<Vec<String>, AuthError> {
    let (hash, record) = store.token_by_id(id)?.ok_or(AuthError::Unknown)?;
    let now = now_secs();
    let mut changed = Vec::new();
    if record.revoked_at.is_none() {
        let mut r = record;
        r.revoked_at = Some(now);
        changed.push((hash, r));
    }
    for (h, mut child) in store.tokens()? {
        if child.parent.as_deref() == Some(id) && child.revoked_at.is_none() {
            child.revoked_at = Some(now);
            changed.push((h, child));
        }
    }
    store.update_tokens(&changed)?;
    let mut ids: Vec<String> = changed.into_iter().map(|(_, r)| r.id).collect();
    if ids.is_empty() {
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// The ids of the agent tokens exchanged from token `id`.
pub fn children(store: &impl Tables, id: &str) -> Result<Vec<String>, AuthError> {
    Ok(store
        .tokens()?
        .into_iter()
        .filter(|(_, r)| r.parent.as_deref() == Some(id))
        .map(|(_, r)| r.id)
        .collect())
}

/// Exchanges a service token for a short-lived agent token bound to `audience`.
pub fn exchange(
    store: &Store,
    service_token: &str,
    audience: &str,
    ttl: Option<u64>,
) -> Result<Issued, AuthError> {
    let (record, _) = check(store, service_token, Some(audience))?;
    if record.kind != TokenKind::Service {
        return Err(AuthError::WrongKind);
    }
    let ttl = ttl.unwrap_or(AGENT_DEFAULT_TTL).min(AGENT_MAX_TTL);
    // Never outlive the service token it came from.
    let ttl = match record.expires_at {
        Some(e) => ttl.min(e.saturating_sub(now_secs())),
        None => ttl,
    };
    issue(
        store,
        IssueRequest {
            kind: TokenKind::Agent,
            principal: record.principal,
            role: String::new(),
            ttl: Some(ttl.max(1)),
            label: String::new(),
            audience: Some(audience.to_owned()),
            parent: Some(record.id),
        },
    )
}

/// Extracts the bearer token of an `Authorization` header (and refuses tokens in the query).
pub fn bearer<'a>(
    authorization: Option<&'a str>,
    query: Option<&str>,
) -> Result<&'a str, AuthError> {
    if let Some(q) = query
        && q.split('&').any(|kv| {
            let key = kv.split('=').next().unwrap_or_default();
            key.eq_ignore_ascii_case("access_token") || key.eq_ignore_ascii_case("token")
        })
    {
        return Err(AuthError::InQuery);
    }
    let value = authorization.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

/// Whose token the `Authorization` header carries (principal and public token id), for
/// the record of a request refused because the token is of the wrong kind.
pub fn token_owner(store: &Store, authorization: Option<&str>) -> Option<(String, String)> {
    let token = bearer(authorization, None).ok()?;
    let record = store.token(&shaped_hash(token).ok()?).ok()??;
    Some((record.principal, record.id))
}

/// Checks a token's shape and state. Returns the record and its hash.
fn check(
    store: &Store,
    token: &str,
    audience: Option<&str>,
) -> Result<(TokenRecord, String), AuthError> {
    let hash = shaped_hash(token)?;
    let record = store.token(&hash)?.ok_or(AuthError::Unknown)?;
    standing(&record, audience, now_secs())?;
    Ok((record, hash))
}

/// A token's own state at `now`: not revoked, not expired, and (an exchanged token) bound
/// to `audience`.
fn standing(record: &TokenRecord, audience: Option<&str>, now: u64) -> Result<(), AuthError> {
    if record.revoked_at.is_some() {
        return Err(AuthError::Revoked);
    }
    if record.expires_at.is_some_and(|e| e <= now) {
        return Err(AuthError::Expired);
    }
    if record.kind == TokenKind::Agent && record.audience.as_deref() != audience {
        return Err(AuthError::Audience);
    }
    Ok(())
}

/// Authenticates an agent for `/mcp` (service or agent token; agent tokens must be bound to
/// `audience`), reading the store. The gateway goes through [`Admissions::admit`],
/// which gives the same answers from a cache.
pub fn authenticate(
    store: &Store,
    authorization: Option<&str>,
    query: Option<&str>,
    audience: &str,
) -> Result<Principal, AuthError> {
    let hash = shaped_hash(bearer(authorization, query)?)?;
    judge(&load(store, &hash)?, audience, now_secs())
}

/// The hash of a token of the right shape (prefix, length, alphabet).
fn shaped_hash(token: &str) -> Result<String, AuthError> {
    let shaped = [SERVICE_TOKEN_PREFIX, AGENT_TOKEN_PREFIX, ADMIN_TOKEN_PREFIX]
        .iter()
        .any(|p| {
            token.len() == p.len() + SECRET_LEN
                && token.starts_with(p)
                && token[p.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if shaped {
        Ok(token_hash(token))
    } else {
        Err(AuthError::Malformed)
    }
}

/// What admitting a token reads from the store: the token, for an exchanged token its
/// service token (`None`: gone), and its agent (`None`: gone). Only the reads: every check
/// is in [`judge`], run on each request, so time-bound states (expiry) are never cached.
#[derive(Debug)]
struct Admission {
    token: TokenRecord,
    parent: Option<TokenRecord>,
    agent: Option<AgentRecord>,
}

/// Reads what admitting the token with `hash` needs. An unknown token is an error (and so
/// never cached).
fn load(store: &Store, hash: &str) -> Result<Admission, AuthError> {
    let token = store.token(hash)?.ok_or(AuthError::Unknown)?;
    let parent = match (&token.kind, &token.parent) {
        (TokenKind::Agent, Some(parent)) => store.token_by_id(parent)?.map(|(_, p)| p),
        _ => None,
    };
    let agent = match token.kind {
        TokenKind::Admin => None,
        _ => store.agent(&token.principal)?,
    };
    Ok(Admission {
        token,
        parent,
        agent,
    })
}

/// The checks of [`authenticate`], in their order, on what [`load`] read.
fn judge(a: &Admission, audience: &str, now: u64) -> Result<Principal, AuthError> {
    let record = &a.token;
    standing(record, Some(audience), now)?;
    if record.kind == TokenKind::Admin {
        return Err(AuthError::WrongKind);
    }
    // An exchanged token lives only while its service token does: rotating (at the end of
    // the grace window) or revoking the parent ends it, whatever a concurrent exchange
    // or revocation scan did.
    let mut expires_at = record.expires_at;
    if record.kind == TokenKind::Agent {
        if record.parent.is_none() {
            return Err(AuthError::Unknown);
        }
        let parent = a.parent.as_ref().ok_or(AuthError::Revoked)?;
        if parent.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if parent.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        expires_at = match (expires_at, parent.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let agent = a.agent.as_ref().ok_or(AuthError::Unknown)?;
    let subject = identity::subject(&record.principal, agent).ok_or(AuthError::Unknown)?;
    Ok(Principal {
        token_id: record.id.clone(),
        kind: record.kind,
        subject,
        rate_limit: agent.rate_limit,
        expires_at,
    })
}

/// Most tokens the admission cache holds; beyond it, it starts over.
const ADMISSIONS_KEPT: usize = 4_096;

/// The gateway's admission cache: what [`load`] read for recently seen tokens, kept only
/// while the store's [`Store::generation`] is the one read before reading them. Any
/// commit (a revocation, a rotation, an agent's change, and also the audit's own) empties
/// it before the write that made it returns, so it never admits what the store would
/// refuse; every check still runs per request on the cached records, so an expiry takes
/// effect on its second. Unknown tokens are never kept, so a flood of made-up tokens
/// neither grows nor empties it, and the size is capped.
///
/// It saves the two or three redb read transactions and JSON decodes per request.
#[derive(Debug, Default)]
pub struct Admissions {
    inner: std::sync::Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    generation: u64,
    by_hash: std::collections::HashMap<String, std::sync::Arc<Admission>>,
}

impl Admissions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`authenticate`] for a bearer `token` (see [`bearer`]), answered from the cache when
    /// the store has not changed since.
    pub fn admit(
        &self,
        store: &Store,
        token: &str,
        audience: &str,
    ) -> Result<Principal, AuthError> {
        let hash = shaped_hash(token)?;
        let generation = store.generation();
        let hit = {
            let mut kept = self.lock();
            if kept.generation != generation {
                kept.by_hash.clear();
                kept.generation = generation;
            }
            kept.by_hash.get(&hash).cloned()
        };
        let admission = match hit {
            Some(a) => a,
            None => {
                let a = std::sync::Arc::new(load(store, &hash)?);
                let mut kept = self.lock();
                // Kept only if nothing committed since `generation` was read, before the
                // reads: what they saw is then what the store holds.
                if kept.generation == generation && store.generation() == generation {
                    if kept.by_hash.len() >= ADMISSIONS_KEPT {
                        kept.by_hash.clear();
                    }
                    kept.by_hash.insert(hash, a.clone());
                }
                a
            }
        };
        judge(&admission, audience, now_secs())
    }

    /// How many tokens are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_hash.len()
    }
}

/// Whether the token with public id `id` still works: not revoked, not expired, and (an
/// exchanged token) its service token neither. A store failure counts as no (fail closed).
pub fn still_valid(store: &Store, id: &str) -> bool {
    let live =
        |r: &TokenRecord| r.revoked_at.is_none() && r.expires_at.is_none_or(|e| e > now_secs());
    match store.token_by_id(id) {
        Ok(Some((_, record))) if live(&record) => match &record.parent {
            None => true,
            Some(parent) => matches!(store.token_by_id(parent), Ok(Some((_, p))) if live(&p)),
        },
        _ => false,
    }
}

/// How long an expired token is kept (for listings and the operator's investigations)
/// before it is pruned: a week, and an hour for exchanged agent tokens.
pub const KEEP_EXPIRED: u64 = 7 * 86_400;
/// How long an expired exchanged agent token is kept.
pub const KEEP_EXPIRED_AGENT: u64 = 3_600;

/// Deletes tokens that expired (or were revoked) long enough ago; returns how many.
pub fn prune_expired(store: &Store, now: u64) -> Result<usize, StoreError> {
    store.delete_tokens(|r| {
        let keep = if r.kind == TokenKind::Agent {
            KEEP_EXPIRED_AGENT
        } else {
            KEEP_EXPIRED
        };
        let ended = match (r.expires_at, r.revoked_at) {
            (Some(e), Some(v)) => Some(e.min(v)),
            (e, v) => e.or(v),
        };
        ended.is_some_and(|t| t.saturating_add(keep) <= now)
    })
}

/// Authenticates an admin for the admin API.
pub fn authenticate_admin(
    store: &Store,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<Admin, AuthError> {
    let token = bearer(authorization, query)?;
    let hash = shaped_hash(token)?;
    let record = store.token(&hash)?.ok_or(AuthError::Unknown)?;
    // An agent's token (of any standing) is the wrong kind here, whatever else is wrong.
    if record.kind != TokenKind::Admin {
        return Err(AuthError::WrongKind);
    }
    standing(&record, None, now_secs())?;
    Ok(Admin {
        token_id: record.id,
        name: record.principal,
        role: record.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUD: &str = "http://127.0.0.1:7878/mcp";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        identity::bootstrap(&store).unwrap();
        (dir, store)
    }

    fn auth(store: &Store, token: &str) -> Result<Principal, AuthError> {
        authenticate(store, Some(&format!("Bearer {token}")), None, AUD)
    }

    #[test]
    fn lifecycle_and_failure_modes() {
        let (_dir, store) = store();
        let st = issue_service_token(&store, identity::LOCAL_AGENT, "t").unwrap();
        assert!(st.token.starts_with("wdn_st_"));
        assert_eq!(auth(&store, &st.token).unwrap().subject.agent, "local");
        assert!(matches!(
            authenticate(&store, None, None, AUD),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            authenticate(&store, Some("Basic abc"), None, AUD),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            auth(&store, "wdn_st_short"),
            Err(AuthError::Malformed)
        ));
        let mut other = st.token.clone();
        other.pop();
        other.push(if st.token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(auth(&store, &other), Err(AuthError::Unknown)));
        assert!(matches!(
            authenticate(
                &store,
                Some(&format!("Bearer {}", st.token)),
                Some("access_token=x"),
                AUD
            ),
            Err(AuthError::InQuery)
        ));
        // Only the hash is stored.
        assert!(store.token(&st.token).unwrap().is_none());

        // Exchange: bound to the audience, child of the service token.
        let at = exchange(&store, &st.token, AUD, Some(60)).unwrap();
        assert!(at.token.starts_with("wdn_at_"));
        assert!(auth(&store, &at.token).is_ok());
        assert!(matches!(
            authenticate(
                &store,
                Some(&format!("Bearer {}", at.token)),
                None,
                "http://other/mcp"
            ),
            Err(AuthError::Audience)
        ));
        assert!(matches!(
            exchange(&store, &at.token, AUD, None),
            Err(AuthError::WrongKind)
        ));

        // An exchanged token carries its parent's expiry when that is earlier.
        let p = auth(&store, &at.token).unwrap();
        assert_eq!(p.expires_at, at.record.expires_at);

        // Rotation with no grace: the old token dies now, and so does every agent token
        // exchanged from it; the new one works.
        let new = rotate(&store, &st.record.id, 0).unwrap();
        assert!(matches!(auth(&store, &st.token), Err(AuthError::Expired)));
        assert!(matches!(auth(&store, &at.token), Err(AuthError::Expired)));
        assert!(auth(&store, &new.token).is_ok());

        // An agent token exchanged from a service token that is then revoked is refused
        // even when the revocation did not mark it (a concurrent exchange).
        let at2 = exchange(&store, &new.token, AUD, Some(60)).unwrap();
        let (hash, mut parent) = store.token_by_id(&new.record.id).unwrap().unwrap();
        parent.revoked_at = Some(now_secs());
        store
            .update_tokens(&[(hash.clone(), parent.clone())])
            .unwrap();
        assert!(matches!(auth(&store, &at2.token), Err(AuthError::Revoked)));
        parent.revoked_at = None;
        store.update_tokens(&[(hash, parent)]).unwrap();

        // Revoking the old service token revoked its exchanged child too.
        revoke(&store, &st.record.id).unwrap();
        assert!(matches!(auth(&store, &at.token), Err(AuthError::Revoked)));
        revoke(&store, &new.record.id).unwrap();
        assert!(matches!(auth(&store, &new.token), Err(AuthError::Revoked)));

        // Admin tokens are for the admin API only, and agent tokens never are.
        let adm = issue(
            &store,
            IssueRequest {
                kind: TokenKind::Admin,
                principal: "root".into(),
                role: ROLE_OPERATOR.into(),
                ttl: None,
                label: String::new(),
                audience: None,
                parent: None,
            },
        )
        .unwrap();
        assert!(matches!(
            auth(&store, &adm.token),
            Err(AuthError::WrongKind)
        ));
        let header = format!("Bearer {}", adm.token);
        assert_eq!(
            authenticate_admin(&store, Some(&header), None)
                .unwrap()
                .name,
            "root"
        );
        let svc = issue_service_token(&store, identity::LOCAL_AGENT, "").unwrap();
        assert!(matches!(
            authenticate_admin(&store, Some(&format!("Bearer {}", svc.token)), None),
            Err(AuthError::WrongKind)
        ));
        // Deleting the agent revokes its tokens.
        store
            .delete_agent(identity::LOCAL_AGENT, now_secs())
            .unwrap();
        assert!(matches!(auth(&store, &svc.token), Err(AuthError::Revoked)));
        // Long-expired and long-revoked tokens are pruned; recent ones are kept.
        let before = store.token_count().unwrap();
        assert_eq!(prune_expired(&store, now_secs()).unwrap(), 0);
        let pruned = prune_expired(&store, now_secs() + KEEP_EXPIRED + 1).unwrap();
        assert!(pruned >= 4, "{pruned}");
        assert_eq!(store.token_count().unwrap(), before - pruned as u64);
        assert!(store.token_by_id(&st.record.id).unwrap().is_none());
        // The admin token never expires and is kept.
        assert!(store.token_by_id(&adm.record.id).unwrap().is_some());
        // TTL caps.
        assert!(matches!(
            issue(
                &store,
                IssueRequest {
                    kind: TokenKind::Service,
                    principal: "x".into(),
                    role: String::new(),
                    ttl: Some(SERVICE_MAX_TTL + 1),
                    label: String::new(),
                    audience: None,
                    parent: None,
                }
            ),
            Err(AuthError::Refused(_))
        ));
    }

    /// The admission cache answers as the store does after every kind of change, at once:
    /// each step below would admit a retired token if a cached admission outlived a commit.
    #[test]
    fn cached_admissions_follow_every_change_at_once() {
        let (_dir, store) = store();
        let cache = Admissions::default();
        let auth = |token: &str| cache.admit(&store, token, AUD);
        let st = issue_service_token(&store, identity::LOCAL_AGENT, "t").unwrap();
        let at = exchange(&store, &st.token, AUD, Some(60)).unwrap();
        for _ in 0..2 {
            assert!(auth(&st.token).is_ok());
            assert_eq!(
                auth(&at.token).unwrap().subject.groups,
                Vec::<String>::new()
            );
        }
        assert_eq!(cache.len(), 2, "both tokens are kept");

        // Unknown and malformed tokens are never kept.
        let mut other = st.token.clone();
        other.pop();
        other.push(if st.token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(auth(&other), Err(AuthError::Unknown)));
        assert!(matches!(auth("wdn_st_short"), Err(AuthError::Malformed)));
        assert_eq!(cache.len(), 2);

        // An agent's new groups and rate limit are seen on the next request.
        identity::put_agent(&store, identity::LOCAL_AGENT, vec!["ops".into()], Some(7)).unwrap();
        let p = auth(&at.token).unwrap();
        assert_eq!(
            (p.subject.groups, p.rate_limit),
            (vec!["ops".into()], Some(7))
        );

        // The parent revoked behind the child's back (a concurrent exchange).
        assert!(auth(&at.token).is_ok());
        let (hash, mut parent) = store.token_by_id(&st.record.id).unwrap().unwrap();
        parent.revoked_at = Some(now_secs());
        store
            .update_tokens(&[(hash.clone(), parent.clone())])
            .unwrap();
        assert!(matches!(auth(&at.token), Err(AuthError::Revoked)));
        parent.revoked_at = None;
        store.update_tokens(&[(hash, parent)]).unwrap();
        assert!(auth(&at.token).is_ok());

        // Rotation with no grace ends the old token and its child.
        let new = rotate(&store, &st.record.id, 0).unwrap();
        assert!(matches!(auth(&st.token), Err(AuthError::Expired)));
        assert!(matches!(auth(&at.token), Err(AuthError::Expired)));
        assert!(auth(&new.token).is_ok());

        // Revocation.
        assert!(auth(&new.token).is_ok());
        revoke(&store, &new.record.id).unwrap();
        assert!(matches!(auth(&new.token), Err(AuthError::Revoked)));

        // Deleting the agent.
        let svc = issue_service_token(&store, identity::LOCAL_AGENT, "").unwrap();
        assert!(auth(&svc.token).is_ok());
        store
            .delete_agent(identity::LOCAL_AGENT, now_secs())
            .unwrap();
        assert!(matches!(auth(&svc.token), Err(AuthError::Revoked)));

        // The cache agrees with a direct read for every token seen.
        for t in [&st.token, &at.token, &new.token, &svc.token] {
            let direct = authenticate(&store, Some(&format!("Bearer {t}")), None, AUD);
            assert_eq!(format!("{:?}", auth(t)), format!("{direct:?}"));
        }
    }
}
