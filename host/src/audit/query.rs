//! Queries over the trail (newest first), for the admin API and the CLI.

use super::AuditRecord;
use super::chain::decode;
use crate::storage::{Store, StoreError};
use serde::Deserialize;

/// A query over the trail (newest first).
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Principal (agent path or a prefix of it: `tenant`, `tenant/workspace`, ...).
    pub principal: Option<String>,
    /// Exposed tool name.
    pub tool: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Only records at or after this Unix millisecond.
    pub since_ms: Option<u64>,
    /// Only records before this Unix millisecond.
    pub until_ms: Option<u64>,
    /// Only records with a sequence number below this (paging backwards).
    pub before_seq: Option<u64>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<usize>,
}

impl Query {
    fn matches(&self, r: &AuditRecord) -> bool {
        let principal_ok = self.principal.as_deref().is_none_or(|p| {
            r.principal.as_deref().is_some_and(|rp| {
                rp == p || (rp.starts_with(p) && rp.as_bytes().get(p.len()) == Some(&b'/'))
            })
        });
        principal_ok
            && self
                .tool
                .as_deref()
                .is_none_or(|t| r.tool.as_deref() == Some(t))
            && self
                .outcome
                .as_deref()
                .is_none_or(|o| r.outcome.as_str() == o)
            && self.since_ms.is_none_or(|s| r.ts_ms >= s)
            && self.until_ms.is_none_or(|u| r.ts_ms < u)
    }
}

/// Runs a query (newest first).
pub fn query(store: &Store, q: &Query) -> Result<Vec<AuditRecord>, StoreError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut out = Vec::new();
    store.scan_audit_rev(q.before_seq.unwrap_or(u64::MAX), |_, bytes| {
        if let Some(r) = decode(bytes)
            && q.matches(&r)
        {
            out.push(r);
        }
        out.len() < limit
    })?;
    Ok(out)
}
