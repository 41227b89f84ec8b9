//! The gateway: the catalog of namespaced tools, the shared state every request needs, and
//! (in [`core`]) the transport-neutral entry that admits, decides, runs and records.
//!
//! Exposed tool names are `<namespace>_<skill>__<tool>`: namespace and skill are lower-case
//! letters, digits and `-` (no `_`), so the first `_` ends the namespace and the next `__` ends
//! the skill; the whole name must match `^[a-zA-Z0-9_-]{1,64}$`, the rule major LLM APIs
//! enforce. A skill whose names would not fit, or would collide with an installed tool, is
//! refused at install with the reason.
//!
//! The [`Gateway`] holds what every request needs: the catalog, the store, the policy set in
//! force (versioned in the store, swapped atomically on apply), the audit trail, the rate
//! limiters, the registry of open streams (closed when their token is revoked) and the
//! session bindings. Its state is private, reached through methods.
//!
//! Invariants: the object that is dispatched is the one looked up (parse once); exposed
//! names are unique ignoring case; a tool failure is a result with `isError: true`, never a
//! protocol error; traps and internal details never reach the agent (fixed messages and a
//! correlation id); a new store starts with the starter policy (version 1), never with no
//! policy at all; a session id is honoured only while bound to the agent that opened it.

pub mod core;

pub use self::core::{CallOptions, Caller, Credentials, Refusal, ToolReply};

use crate::audit::{AuditLog, ChainKey};
use crate::identity::{self, valid_segment};
use crate::policy::{PolicyEngine, PolicyError, PolicyVersion, STARTER_POLICY, Target};
use crate::ratelimit::{AddressLimiter, RateLimiter};
use crate::runtime::{Skill, ToolInfo};
use crate::storage::{Store, StoreError, Tables};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

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

/// The exposed name of a tool.
pub fn exposed_name(namespace: &str, skill: &str, tool: &str) -> String {
    format!("{namespace}_{skill}__{tool}")
}

/// One exposed tool.
#[derive(Clone)]
pub struct Entry {
    /// The exposed name.
    pub exposed: String,
    /// The skill's key: `namespace/name` (what grants, workspaces and the store name it by).
    pub key: Arc<str>,
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
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let added = Self::check(&entries, namespace, &skill)?;
        let key: Arc<str> = Arc::from(skill_key(namespace, skill.name()));
        // Replace the skill's previous tools (an update) atomically.
        entries.retain(|_, e| e.key != key);
        let names = added.iter().map(|(n, _)| n.clone()).collect();
        for (exposed, index) in added {
            entries.insert(
                exposed.clone(),
                Entry {
                    exposed,
                    key: key.clone(),
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

    /// Whether `skill` could be installed under `namespace` (names valid, short enough,
    /// not colliding with another skill's tools), without installing it.
    pub fn check_install(&self, namespace: &str, skill: &Skill) -> Result<(), CatalogError> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::check(&entries, namespace, skill).map(|_| ())
    }

    /// Removes the tools of the skill with key `skill` (`namespace/name`); whether it had
    /// any.
    pub fn remove(&self, skill: &str) -> bool {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = entries.len();
        entries.retain(|_, e| e.key.as_ref() != skill);
        let removed = entries.len() != before;
        drop(entries);
        if removed {
            let _ = self.changes.send(());
        }
        removed
    }

    fn check(
        entries: &BTreeMap<String, Entry>,
        namespace: &str,
        skill: &Skill,
    ) -> Result<Vec<(String, usize)>, CatalogError> {
        let key = skill_key(namespace, skill.name());
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
            // Exposed names are unique ignoring case: names that differ only by case are
            // refused rather than told apart.
            if let Some(owner) = entries
                .values()
                .find(|e| e.exposed.eq_ignore_ascii_case(&exposed) && e.key.as_ref() != key)
            {
                return Err(CatalogError::Collision {
                    exposed,
                    owner: owner.key.to_string(),
                });
            }
            added.push((exposed, index));
        }
        Ok(added)
    }

    /// Tells subscribers the list may have changed (e.g. a new policy set).
    pub fn announce(&self) {
        let _ = self.changes.send(());
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

/// The policy set in force and its version.
#[derive(Debug)]
pub struct ActivePolicy {
    /// The compiled set.
    pub engine: PolicyEngine,
    /// Its stored version (0: none applied).
    pub version: u64,
}

/// Settings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Default calls per second per agent (0: unlimited); an agent's own limit overrides it.
    pub rate_limit: u32,
    /// The audience agent tokens must be bound to: this gateway's MCP URL.
    pub audience: String,
    /// Record the audit trail (false only to benchmark its cost).
    pub audit: bool,
    /// Where the vault's root key comes from.
    pub vault: crate::vault::VaultConfig,
    /// The runtime installed packages are compiled into (`None`: packages cannot be
    /// installed through the admin API).
    pub runtime: Option<crate::runtime::Runtime>,
    /// How long a call needing approval waits for a decision before it answers
    /// "pending" (the agent retries the same call to pick the decision up).
    pub approval_wait: std::time::Duration,
    /// How long an approval task stays decidable and an approval usable, in seconds.
    pub approval_ttl: u64,
}

/// Shared gateway state: catalog, store, policy, audit and rate limits. Private: reached
/// through methods, so every change goes through the rules that guard it.
pub struct Gateway {
    /// The installed tools.
    catalog: Arc<Catalog>,
    /// The store (identities, tokens, policies, audit).
    store: Arc<Store>,
    /// The audit trail.
    audit: Arc<AuditLog>,
    /// Per-agent rate limits.
    limiter: RateLimiter,
    /// The audience of agent tokens.
    audience: String,
    /// Open streams, by token id, so revocation can close them.
    streams: StreamRegistry,
    /// The agent behind each MCP session.
    sessions: SessionBindings,
    /// Unauthenticated requests per client address.
    addresses: AddressLimiter,
    /// What admitting recently seen tokens read, while the store is unchanged.
    admissions: crate::auth::Admissions,
    /// When long-expired tokens were last pruned (Unix seconds).
    last_prune: std::sync::Mutex<u64>,
    /// Where each skill is installed: skill name -> workspaces (`*`: every workspace).
    installs: RwLock<std::collections::HashMap<String, Vec<String>>>,
    policy: RwLock<Arc<ActivePolicy>>,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Secrets, encrypted in the store.
    vault: Arc<crate::vault::Vault>,
    /// The grants in force.
    grants: crate::vault::grants::Grants,
    /// The runtime packages are installed into.
    runtime: Option<crate::runtime::Runtime>,
    /// The data directory.
    data_dir: std::path::PathBuf,
    /// Approval tasks.
    approvals: crate::approvals::Approvals,
}

/// Which agent opened each MCP session (2025-11-25 sessions), so a session id is only
/// honoured with its own agent's tokens. Fail closed: a session id warden did not see
/// opened (or whose binding expired) is refused. Bounded: bindings idle for
/// [`SESSION_IDLE`] expire, and beyond [`MAX_SESSIONS`] the least recently used go first
/// (their clients are refused and open a new session).
#[derive(Debug, Default)]
pub struct SessionBindings {
    inner: std::sync::Mutex<std::collections::HashMap<String, Binding>>,
}

#[derive(Debug)]
struct Binding {
    agent: String,
    last_used: std::time::Instant,
}

/// Most session bindings kept.
pub const MAX_SESSIONS: usize = 100_000;
/// How long an unused session binding is kept.
pub const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(3_600);

impl SessionBindings {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Binding>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `agent` opened `session`.
    pub fn bind(&self, session: &str, agent: &str) {
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS && !map.contains_key(session) {
            if let Some(cutoff) =
                std::time::Instant::now().checked_sub(std::time::Duration::from_secs(60))
            {
                map.retain(|_, b| b.last_used > cutoff);
            }
            if map.len() >= MAX_SESSIONS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, b)| b.last_used)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            session.to_owned(),
            Binding {
                agent: agent.to_owned(),
                last_used: std::time::Instant::now(),
            },
        );
    }

    /// Whether `agent` may use `session`: only the agent that opened it, and only while
    /// its binding lives.
    pub fn allows(&self, session: &str, agent: &str) -> bool {
        let mut map = self.lock();
        match map.get_mut(session) {
            Some(b) if b.agent == agent => {
                b.last_used = std::time::Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Drops a closed session.
    pub fn forget(&self, session: &str) {
        self.lock().remove(session);
    }

    /// Drops bindings idle for longer than [`SESSION_IDLE`].
    pub fn expire_idle(&self) {
        let now = std::time::Instant::now();
        self.lock()
            .retain(|_, b| now.duration_since(b.last_used) < SESSION_IDLE);
    }
}

/// Cancellation handles of the streams open under each token, with a liveness count so
/// entries of tokens whose streams have all ended can be dropped.
#[derive(Debug, Default)]
pub struct StreamRegistry {
    tokens: std::sync::Mutex<std::collections::HashMap<String, (CancellationToken, Arc<()>)>>,
}

/// What one open stream holds: `closed` fires when its token is revoked; while the stream
/// lives, its token's entry is kept.
#[derive(Debug)]
pub struct StreamWatch {
    /// Cancelled on revocation.
    pub closed: CancellationToken,
    _live: Arc<()>,
}

/// Entries kept before those without a live stream are swept.
const SWEEP_STREAMS_AT: usize = 10_000;

impl StreamRegistry {
    /// The handle a new stream of `token_id` watches (created on first use).
    pub fn watch(&self, token_id: &str) -> StreamWatch {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() >= SWEEP_STREAMS_AT {
            tokens.retain(|_, (_, live)| Arc::strong_count(live) > 1);
        }
        let (closed, live) = tokens.entry(token_id.to_owned()).or_default();
        StreamWatch {
            closed: closed.clone(),
            _live: live.clone(),
        }
    }

    /// Closes every stream of these tokens.
    pub fn close(&self, token_ids: &[String]) {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in token_ids {
            if let Some((t, _)) = tokens.remove(id) {
                t.cancel();
            }
        }
    }
}

/// Counts a tool call as in flight until dropped.
pub struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Why a policy set could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// It does not parse or validate.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key of skill `name` installed under `namespace`.
pub fn skill_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The policy target of a catalog entry.
pub fn target(entry: &Entry) -> Target {
    let (namespace, _) = entry.exposed.split_once('_').unwrap_or(("", ""));
    let a = &entry.tool().annotations;
    Target {
        exposed: entry.exposed.clone(),
        namespace: namespace.to_owned(),
        skill: entry.skill.name().to_owned(),
        tool: entry.tool().name.clone(),
        // Unsigned skills have no publisher yet (signing comes with the registry).
        publisher: String::new(),
        read_only: a.read_only.unwrap_or(false),
        destructive: a.destructive.unwrap_or(false),
        idempotent: a.idempotent.unwrap_or(false),
        open_world: a.open_world.unwrap_or(false),
    }
}

impl Gateway {
    /// A gateway over `catalog` and `store` (whose identities are bootstrapped), with the
    /// stored policy set in force (the starter policy on a new store) and the audit trail
    /// (chain key in `data_dir/audit.key`) started.
    pub fn open(
        catalog: Arc<Catalog>,
        store: Arc<Store>,
        data_dir: &Path,
        options: GatewayOptions,
    ) -> anyhow::Result<Self> {
        identity::bootstrap(&store)?;
        let policy = match store.current_policy()? {
            Some(bytes) => {
                let version: PolicyVersion = serde_json::from_slice(&bytes)?;
                ActivePolicy {
                    engine: PolicyEngine::new(&version.text)?,
                    version: version.version,
                }
            }
            None => {
                let engine = PolicyEngine::new(STARTER_POLICY)?;
                let version = store_policy(&*store, STARTER_POLICY, &engine, "warden")?;
                ActivePolicy {
                    engine,
                    version: version.version,
                }
            }
        };
        let installs = store
            .skills()?
            .into_iter()
            .map(|(name, r)| (name, r.workspaces))
            .collect();
        let key = ChainKey::load_or_create(&data_dir.join(crate::datadir::AUDIT_KEY_FILE))?;
        let mut audit = AuditLog::start(store.clone(), key)?;
        if !options.audit {
            audit.disable_for_benchmarks();
        }
        let audit = Arc::new(audit);
        let vault = Arc::new(crate::vault::Vault::open(store.clone(), options.vault)?);
        let store_for_approvals = store.clone();
        Ok(Self {
            vault,
            grants: crate::vault::grants::Grants::new(store.clone()),
            catalog,
            store,
            audit,
            limiter: RateLimiter::new(options.rate_limit),
            audience: options.audience,
            streams: StreamRegistry::default(),
            sessions: SessionBindings::default(),
            addresses: AddressLimiter::default(),
            admissions: crate::auth::Admissions::default(),
            last_prune: std::sync::Mutex::new(0),
            installs: RwLock::new(installs),
            policy: RwLock::new(Arc::new(policy)),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            runtime: options.runtime,
            data_dir: data_dir.to_owned(),
            approvals: crate::approvals::Approvals::new(
                store_for_approvals,
                options.approval_wait,
                options.approval_ttl,
            ),
        })
    }

    /// The runtime packages are installed into, if installs are enabled.
    pub fn runtime(&self) -> Option<&crate::runtime::Runtime> {
        self.runtime.as_ref()
    }

    /// Approval tasks.
    pub fn approvals(&self) -> &crate::approvals::Approvals {
        &self.approvals
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The installed tools.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The vault.
    pub fn vault(&self) -> &Arc<crate::vault::Vault> {
        &self.vault
    }

    /// The audit trail.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The audience agent tokens must be bound to (this gateway's MCP URL).
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Open streams by token (closed on revocation).
    pub fn streams(&self) -> &StreamRegistry {
        &self.streams
    }

    /// The agent behind each MCP session.
    pub fn sessions(&self) -> &SessionBindings {
        &self.sessions
    }

    /// The policy set in force.
    pub fn policy(&self) -> Arc<ActivePolicy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Validates, stores (as the next version) and applies a policy set. Connected clients
    /// are told the tool list changed, since what they may see can differ. (The admin API
    /// stores the version with its audit record instead: [`store_policy`], then
    /// [`Gateway::activate_policy`].)
    pub fn apply_policy(&self, text: &str, by: &str) -> Result<PolicyVersion, ApplyError> {
        let engine = PolicyEngine::new(text)?;
        let version = store_policy(&*self.store, text, &engine, by)?;
        self.activate_policy(engine, &version);
        Ok(version)
    }

    /// Puts a stored policy version in force, unless a later one already is (two changes
    /// committed in one order and activated in the other leave the later in force), and
    /// tells connected clients the tool list changed.
    pub fn activate_policy(&self, engine: PolicyEngine, version: &PolicyVersion) {
        let mut policy = self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if policy.version < version.version {
            *policy = Arc::new(ActivePolicy {
                engine,
                version: version.version,
            });
        }
        drop(policy);
        self.catalog.announce();
    }

    /// Whether `skill` is installed in the workspace of `subject`. A skill the store does not
    /// know (installed programmatically, e.g. in tests) is installed everywhere.
    pub fn installed_for(&self, skill: &str, subject: &crate::identity::Subject) -> bool {
        let installs = self
            .installs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        installs.get(skill).is_none_or(|ws| {
            ws.iter().any(|w| {
                w == "*"
                    || w.split_once('/')
                        .is_some_and(|(t, ws)| t == subject.tenant && ws == subject.workspace)
            })
        })
    }

    /// Makes the workspaces of a skill, stored by [`store_skill_workspaces`], the ones it
    /// serves; connected clients are told the tool list changed.
    pub fn install_in(&self, skill: &str, workspaces: Vec<String>) {
        self.installs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(skill.to_owned(), workspaces);
        self.catalog.announce();
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

/// Stores the workspaces a stored skill is installed in (`*` for every workspace); each
/// must exist. [`Gateway::install_in`] then puts them in force.
pub fn store_skill_workspaces(
    store: &impl Tables,
    skill: &str,
    workspaces: Vec<String>,
) -> Result<(), identity::IdentityError> {
    let mut record = store.skill(skill)?.ok_or_else(|| {
        identity::IdentityError::NotFound(format!("skill `{skill}` is not installed"))
    })?;
    if workspaces.is_empty() {
        return Err(identity::IdentityError::Invalid(
            "name at least one workspace (tenant/workspace), or `*` for all".into(),
        ));
    }
    for w in &workspaces {
        if w != "*" {
            identity::parse_path(w, 2)?;
            if store.scope(w)?.is_none() {
                return Err(identity::IdentityError::NotFound(format!(
                    "workspace `{w}` does not exist"
                )));
            }
        }
    }
    record.workspaces = workspaces;
    store.put_skill(skill, &record)?;
    Ok(())
}

/// Stores a policy text, validated into `engine`, as the next version.
pub fn store_policy(
    store: &impl Tables,
    text: &str,
    engine: &PolicyEngine,
    by: &str,
) -> Result<PolicyVersion, StoreError> {
    let policies = engine.len();
    let mut record = PolicyVersion {
        version: 0,
        text: text.to_owned(),
        digest: blake3::hash(text.as_bytes()).to_hex().to_string(),
        applied_at: identity::now_secs(),
        applied_by: by.to_owned(),
        policies,
    };
    let version = store.append_policy(|v| {
        let mut r = record.clone();
        r.version = v;
        serde_json::to_vec(&r).unwrap_or_default()
    })?;
    record.version = version;
    Ok(record)
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
