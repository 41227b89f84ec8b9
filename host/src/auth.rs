//! Authentication: opaque bearer tokens -> principal.
//!
//! Tokens look like `wdn_at_<43 base64url chars>` (256 random bits, a prefix secret scanners
//! can match). Only the BLAKE3 hash of a token is stored; a presented token is hashed and
//! looked up, so comparison never touches the secret itself and takes the same time whatever
//! prefix matches. Tokens are never logged.
//!
//! Invariants: a request without a valid `Authorization: Bearer` header gets 401 with
//! `WWW-Authenticate: Bearer resource_metadata="..."` (RFC 9728) before anything runs; a token
//! in the query string is refused outright.
//!
//! Threat: unauthenticated access to tools, and token leakage through logs, URLs or the store.

use crate::storage::{Store, StoreError, TokenRecord};
use base64::Engine as _;

/// Prefix of agent tokens.
pub const AGENT_TOKEN_PREFIX: &str = "wdn_at_";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The agent's name.
    pub agent: String,
}

/// Why a request was not authenticated. The wire never says which.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("missing bearer token")]
    Missing,
    /// Not a warden token, or unknown.
    #[error("invalid token")]
    Invalid,
    /// A token in the URL.
    #[error("tokens are not accepted in the query string")]
    InQuery,
    /// The store failed (fail closed).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hash of a token as stored.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Issues a new agent token, storing only its hash. Returns the token (shown once).
pub fn issue_agent_token(store: &Store, agent: &str) -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        AuthError::Store(StoreError::Corrupt(format!(
            "no randomness for a token: {e}"
        )))
    })?;
    let token = format!(
        "{AGENT_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    store.put_token(
        &token_hash(&token),
        &TokenRecord {
            agent: agent.to_owned(),
            issued_at,
        },
    )?;
    Ok(token)
}

/// Authenticates an `Authorization` header value (and refuses tokens in the query).
pub fn authenticate(
    store: &Store,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<Principal, AuthError> {
    if let Some(q) = query
        && q.split('&').any(|kv| {
            let key = kv.split('=').next().unwrap_or_default();
            key.eq_ignore_ascii_case("access_token") || key.eq_ignore_ascii_case("token")
        })
    {
        return Err(AuthError::InQuery);
    }
    let value = authorization.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid);
    }
    let token = token.trim();
    if !token.starts_with(AGENT_TOKEN_PREFIX) || token.len() != AGENT_TOKEN_PREFIX.len() + 43 {
        return Err(AuthError::Invalid);
    }
    match store.token(&token_hash(token))? {
        Some(record) => Ok(Principal {
            agent: record.agent,
        }),
        None => Err(AuthError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let token = issue_agent_token(&store, "local").unwrap();
        assert!(token.starts_with("wdn_at_"));
        let header = format!("Bearer {token}");
        assert_eq!(
            authenticate(&store, Some(&header), None).unwrap().agent,
            "local"
        );
        assert!(matches!(
            authenticate(&store, None, None),
            Err(AuthError::Missing)
        ));
        let other = format!("Bearer {}x", &token[..token.len() - 1]);
        assert!(matches!(
            authenticate(&store, Some(&other), None),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            authenticate(&store, Some("Basic abc"), None),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            authenticate(&store, Some("Bearer wdn_at_short"), None),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            authenticate(&store, Some(&header), Some("access_token=abc")),
            Err(AuthError::InQuery)
        ));
        // The store holds the hash, never the token.
        assert!(store.token(&token).unwrap().is_none());
        assert!(store.token(&token_hash(&token)).unwrap().is_some());
    }
}
