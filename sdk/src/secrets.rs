//! Named secrets, revealed only where the operator granted them.
//!
//! Deny by default: without a grant every reveal answers [`SecretError::Denied`]. Prefer
//! host-side credential injection for HTTP (see [`crate::http`]): a skill that never holds a
//! credential cannot leak it.

use crate::bindings::warden::skill::secrets as wit;
use std::fmt;

/// Why a secret could not be revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    /// The skill has no grant for the secret.
    Denied,
    /// The grant exists but the secret does not.
    NotFound,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied => f.write_str("secret access denied"),
            Self::NotFound => f.write_str("secret not found"),
        }
    }
}

impl std::error::Error for SecretError {}

impl From<SecretError> for crate::ToolError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Denied => Self::Denied(e.to_string()),
            SecretError::NotFound => Self::NotFound(e.to_string()),
        }
    }
}

/// Reveals the value of the named secret. Every reveal is audited by the host.
pub fn reveal(name: &str) -> Result<String, SecretError> {
    wit::reveal(name).map_err(|e| match e {
        wit::SecretError::Denied => SecretError::Denied,
        wit::SecretError::NotFound => SecretError::NotFound,
    })
}
