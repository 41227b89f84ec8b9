//! The gateway: the catalog of namespaced tools and the dispatch of MCP calls to the runtime.
//!
//! Exposed tool names are `<namespace>_<skill>__<tool>`: namespace and skill are lower-case
//! letters, digits and `-` (no `_`), so the first `_` ends the namespace and the next `__` ends
//! the skill; the whole name must match `^[a-zA-Z0-9_-]{1,64}$`, the rule major LLM APIs
//! enforce. A skill whose names would not fit, or would collide with an installed tool, is
//! refused at install with the reason.
//!
//! Invariants: the object that is dispatched is the one looked up (parse once); a tool
//! failure is an MCP result with `isError: true`, never a protocol error; internal details
//! (paths, traps' host context) never reach the agent beyond the runtime's own messages.

pub mod mcp;

use crate::runtime::{Skill, ToolInfo};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Longest exposed tool name.
pub const MAX_EXPOSED_NAME: usize = 64;

/// Why a skill could not be installed into the catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Namespace or skill name has the wrong shape.
    #[error("{what} {name:?} is invalid: use 1-32 lower-case letters, digits or '-'")]
    BadName {
        /// `namespace` or `skill name`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An exposed name would be too long.
    #[error(
        "tool `{tool}` of skill `{skill}` would be exposed as `{exposed}` ({len} characters; at most {MAX_EXPOSED_NAME})"
    )]
    TooLong {
        /// The skill.
        skill: String,
        /// The tool.
        tool: String,
        /// The exposed name.
        exposed: String,
        /// Its length.
        len: usize,
    },
    /// An exposed name is taken.
    #[error("tool `{exposed}` already exists (from skill `{owner}`)")]
    Collision {
        /// The exposed name.
        exposed: String,
        /// The skill that owns it.
        owner: String,
    },
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The exposed name of a tool.
pub fn exposed_name(namespace: &str, skill: &str, tool: &str) -> String {
    format!("{namespace}_{skill}__{tool}")
}

/// One exposed tool.
#[derive(Clone)]
pub struct Entry {
    /// The exposed name.
    pub exposed: String,
    /// The skill that implements it.
    pub skill: Skill,
    /// Index of the tool in `skill.tools()`.
    pub index: usize,
}

impl Entry {
    /// The tool's definition.
    pub fn tool(&self) -> &ToolInfo {
        &self.skill.tools()[self.index]
    }
}

/// The installed tools, by exposed name.
pub struct Catalog {
    entries: RwLock<BTreeMap<String, Entry>>,
    changes: tokio::sync::broadcast::Sender<()>,
}

impl Catalog {
    /// An empty catalog that announces changes on a broadcast channel.
    pub fn new() -> Self {
        let (tx, _) = tokio::sync::broadcast::channel(16);
        Self {
            entries: RwLock::default(),
            changes: tx,
        }
    }

    /// Subscribes to catalog changes (for `notifications/tools/list_changed`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<()> {
        self.changes.subscribe()
    }

    /// Number of live subscriptions (connected clients listening for changes).
    pub fn subscribers(&self) -> usize {
        self.changes.receiver_count()
    }

    /// Adds every tool of `skill` under `namespace`, all or nothing.
    pub fn install(&self, namespace: &str, skill: Skill) -> Result<Vec<String>, CatalogError> {
        if !valid_segment(namespace) {
            return Err(CatalogError::BadName {
                what: "namespace",
                name: namespace.to_owned(),
            });
        }
        if !valid_segment(skill.name()) {
            return Err(CatalogError::BadName {
                what: "skill name",
                name: skill.name().to_owned(),
            });
        }
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut added = Vec::new();
        for (index, tool) in skill.tools().iter().enumerate() {
            let exposed = exposed_name(namespace, skill.name(), &tool.name);
            if exposed.len() > MAX_EXPOSED_NAME {
                return Err(CatalogError::TooLong {
                    skill: skill.name().to_owned(),
                    tool: tool.name.clone(),
                    len: exposed.len(),
                    exposed,
                });
            }
            if let Some(owner) = entries
                .get(&exposed)
                .filter(|e| e.skill.name() != skill.name())
            {
                return Err(CatalogError::Collision {
                    exposed,
                    owner: owner.skill.name().to_owned(),
                });
            }
            added.push((exposed, index));
        }
        // Replace the skill's previous tools (an update) atomically.
        entries.retain(|_, e| e.skill.name() != skill.name());
        let names = added.iter().map(|(n, _)| n.clone()).collect();
        for (exposed, index) in added {
            entries.insert(
                exposed.clone(),
                Entry {
                    exposed,
                    skill: skill.clone(),
                    index,
                },
            );
        }
        drop(entries);
        // No receivers is fine: nobody is connected.
        let _ = self.changes.send(());
        Ok(names)
    }

    /// Looks up an exposed tool.
    pub fn get(&self, exposed: &str) -> Option<Entry> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(exposed)
            .cloned()
    }

    /// All exposed tools, sorted by name.
    pub fn list(&self) -> Vec<Entry> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared gateway state.
pub struct Gateway {
    /// The installed tools.
    pub catalog: Arc<Catalog>,
    in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts a tool call as in flight until dropped.
pub struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Gateway {
    /// A gateway over `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self {
            catalog,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Marks a tool call in flight (shutdown waits for these).
    pub fn begin_call(&self) -> InFlight<'_> {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight(&self.in_flight)
    }

    /// Tool calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_llm_rules_and_reverse() {
        let n = exposed_name("warden", "text", "regex_find");
        assert_eq!(n, "warden_text__regex_find");
        let (ns, rest) = n.split_once('_').unwrap();
        let (skill, tool) = rest.split_once("__").unwrap();
        assert_eq!((ns, skill, tool), ("warden", "text", "regex_find"));
        assert!(valid_segment("my-skill2"));
        for bad in ["", "a_b", "A", "x".repeat(33).as_str()] {
            assert!(!valid_segment(bad), "{bad}");
        }
    }
}
