//! Identity: tenants contain workspaces, workspaces contain environments (dev, prod, ...),
//! environments contain agents. An agent's path `tenant/workspace/environment/agent` is its
//! identity everywhere: in tokens, in policy (`Warden::Agent::"<path>"`), in the audit trail
//! and in usage counters.
//!
//! Invariants: every segment is 1-32 lower-case letters, digits or `-` (so a path never
//! needs escaping and `/` always splits it); a scope is created only inside an existing
//! parent, and an agent only inside an existing environment; deleting an agent revokes its
//! tokens in the same transaction.
//!
//! Threat: confused identities (an agent of one tenant acting under another's name) and
//! orphaned credentials.

use crate::storage::{AgentRecord, ScopeRecord, Store, StoreError, Tables};
use serde::{Deserialize, Serialize};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    /// Tenant.
    pub tenant: String,
    /// Workspace.
    pub workspace: String,
    /// Environment (e.g. dev, prod).
    pub environment: String,
    /// Agent name.
    pub agent: String,
    /// Groups the agent belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Subject {
    /// The agent's path `tenant/workspace/environment/agent` (its Cedar entity id).
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.tenant, self.workspace, self.environment, self.agent
        )
    }
}

/// The scope and agent `warden up` creates in a new data directory.
pub const LOCAL_AGENT: &str = "default/default/dev/local";

/// Errors of identity management.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A name or path has the wrong shape.
    #[error("{0}")]
    Invalid(String),
    /// A parent scope or the agent does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether `s` is a valid path segment (the same rule names namespaces and skills).
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Splits and checks a path of `depth` segments (1 tenant .. 4 agent).
pub fn parse_path(path: &str, depth: usize) -> Result<Vec<&str>, IdentityError> {
    const SHAPES: [&str; 4] = [
        "tenant",
        "tenant/workspace",
        "tenant/workspace/environment",
        "tenant/workspace/environment/agent",
    ];
    let parts: Vec<&str> = path.split('/').collect();
    let shape = SHAPES.get(depth.wrapping_sub(1)).copied().unwrap_or("path");
    if parts.len() != depth || !parts.iter().all(|p| valid_segment(p)) {
        return Err(IdentityError::Invalid(format!(
            "`{path}` is not a valid {shape}: use 1-32 lower-case letters, digits or '-' per segment"
        )));
    }
    Ok(parts)
}

/// Creates a tenant (depth 1), workspace (2) or environment (3).
pub fn create_scope(store: &impl Tables, path: &str) -> Result<(), IdentityError> {
    let depth = path.split('/').count();
    if !(1..=3).contains(&depth) {
        return Err(IdentityError::Invalid(format!(
            "`{path}` is not a tenant, tenant/workspace or tenant/workspace/environment"
        )));
    }
    parse_path(path, depth)?;
    if let Some((parent, _)) = path.rsplit_once('/')
        && store.scope(parent)?.is_none()
    {
        return Err(IdentityError::NotFound(format!(
            "`{parent}` does not exist: create it first"
        )));
    }
    store.create_scope(
        path,
        &ScopeRecord {
            created_at: now_secs(),
        },
    )?;
    Ok(())
}

/// Creates or updates an agent in an existing environment.
pub fn put_agent(
    store: &impl Tables,
    path: &str,
    groups: Vec<String>,
    rate_limit: Option<u32>,
) -> Result<AgentRecord, IdentityError> {
    put_agent_owned(store, path, groups, rate_limit, None)
}

/// [`put_agent`], naming the admin who owns the agent (`None` keeps the current owner). An
/// owner never counts as an approver of its agent's requests.
pub fn put_agent_owned(
    store: &impl Tables,
    path: &str,
    groups: Vec<String>,
    rate_limit: Option<u32>,
    owner: Option<String>,
) -> Result<AgentRecord, IdentityError> {
    parse_path(path, 4)?;
    if let Some(o) = &owner
        && !valid_segment(o)
    {
        return Err(IdentityError::Invalid(format!(
            "owner `{o}` is invalid: name an admin (1-32 lower-case letters, digits or '-')"
        )));
    }
    for g in &groups {
        if !valid_segment(g) {
            return Err(IdentityError::Invalid(format!(
                "group `{g}` is invalid: use 1-32 lower-case letters, digits or '-'"
            )));
        }
    }
    let env = path.rsplit_once('/').map_or(path, |(p, _)| p);
    if store.scope(env)?.is_none() {
        return Err(IdentityError::NotFound(format!(
            "environment `{env}` does not exist: create it first"
        )));
    }
    let existing = store.agent(path)?;
    let created_at = existing.as_ref().map_or_else(now_secs, |a| a.created_at);
    let owner = owner.or_else(|| existing.and_then(|a| a.owner));
    let record = AgentRecord {
        groups,
        rate_limit,
        created_at,
        owner,
    };
    store.put_agent(path, &record)?;
    Ok(record)
}

/// Creates the default tenant, workspace, `dev` environment and local agent if missing.
pub fn bootstrap(store: &Store) -> Result<(), IdentityError> {
    for scope in ["default", "default/default", "default/default/dev"] {
        if store.scope(scope)?.is_none() {
            create_scope(store, scope)?;
        }
    }
    if store.agent(LOCAL_AGENT)?.is_none() {
        put_agent(store, LOCAL_AGENT, Vec::new(), None)?;
    }
    Ok(())
}

/// The policy subject of an agent path with its record.
pub fn subject(path: &str, record: &AgentRecord) -> Option<Subject> {
    let mut parts = path.splitn(4, '/');
    Some(Subject {
        tenant: parts.next()?.to_owned(),
        workspace: parts.next()?.to_owned(),
        environment: parts.next()?.to_owned(),
        agent: parts.next()?.to_owned(),
        groups: record.groups.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert!(matches!(
            create_scope(&store, "acme/core"),
            Err(IdentityError::NotFound(_))
        ));
        create_scope(&store, "acme").unwrap();
        create_scope(&store, "acme/core").unwrap();
        create_scope(&store, "acme/core/prod").unwrap();
        assert!(matches!(
            create_scope(&store, "Acme"),
            Err(IdentityError::Invalid(_))
        ));
        assert!(matches!(
            put_agent(&store, "acme/core/dev/bot", vec![], None),
            Err(IdentityError::NotFound(_))
        ));
        let rec = put_agent(&store, "acme/core/prod/bot", vec!["ops".into()], Some(5)).unwrap();
        let s = subject("acme/core/prod/bot", &rec).unwrap();
        assert_eq!((s.tenant.as_str(), s.agent.as_str()), ("acme", "bot"));
        assert_eq!(s.groups, ["ops"]);
        bootstrap(&store).unwrap();
        bootstrap(&store).unwrap();
        assert!(store.agent(LOCAL_AGENT).unwrap().is_some());
    }
}
