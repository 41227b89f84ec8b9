//! The embedded store (redb): the only module that imports redb, and the one place every
//! table is defined.
//!
//! Invariants: the database file is created with mode 0600 inside a 0700 data directory;
//! every write is a committed transaction with redb's immediate durability, so a write that
//! returned survives a crash. The one exception is the audit writer copying records that
//! its journal already holds durably (`append_audit(.., durable: false)`): those commits
//! become durable with the next durable one, and the journal replays them after a crash.
//! Token secrets are never stored: only their hashes. Audit records and the usage counters
//! they feed are written in the same transaction, so they never disagree. What an admin
//! change reads and writes goes through [`Tables`], alike on the store and inside a [`Tx`],
//! so the audit writer can commit a change and its record in one transaction. Every
//! commit bumps the store's [`Store::generation`] before the write returns, so a cache of
//! what was read (the admission cache in `auth`) is stale the moment a change lands.
//!
//! Threat: credential theft from the data directory, and torn state after a crash.

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Token hash (hex) -> token record (JSON).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Token id -> token hash.
const TOKEN_IDS: TableDefinition<&str, &str> = TableDefinition::new("token_ids");
/// Installed skill name -> installed skill record (JSON).
const SKILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("skills");
/// Scope path (`tenant`, `tenant/workspace`, `tenant/workspace/environment`) -> record.
const SCOPES: TableDefinition<&str, &[u8]> = TableDefinition::new("scopes");
/// Agent path (`tenant/workspace/environment/agent`) -> agent record (JSON).
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// Policy version -> policy version record (JSON).
const POLICIES: TableDefinition<u64, &[u8]> = TableDefinition::new("policies");
/// Audit sequence number -> audit record (JSON, with its chain MAC).
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Usage key (`tenant/workspace/environment/agent/tool`) -> counters (JSON).
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
/// Secret path (`scope/name`, scope a tenant, workspace or environment) -> the secret's
/// sealed current value and its version history (JSON; values only as ciphertext).
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
/// Grant id -> grant record (JSON; removed grants stay, marked, as history).
const GRANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("grants");
/// Namespace -> [`TrustRecord`]: who may sign packages for it.
const TRUST: TableDefinition<&str, &[u8]> = TableDefinition::new("trust");
/// `sigstore` -> [`TrustRootRecord`]: the pinned Sigstore trusted root.
const TRUST_ROOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("trust_roots");
/// `keyring` -> the vault's keyring (master key versions wrapped by the root key).
const VAULT: TableDefinition<&str, &[u8]> = TableDefinition::new("vault");
/// Approval tasks, by id (`apr_...`).
const APPROVALS: TableDefinition<&str, &[u8]> = TableDefinition::new("approvals");
/// The open approval task of each binding (`agent\ntool\nargs digest` -> JSON task id).
const APPROVAL_OPEN: TableDefinition<&str, &[u8]> = TableDefinition::new("approval_open");
/// Approvers: admin name -> where they decide and their groups.
const APPROVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("approvers");
/// Approval webhooks: `tenant/workspace` -> where notices go and the secret signing them.
const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// MCP tasks (calls a task-taking client left waiting for a human), by task id: what to
/// run again when the client polls after a restart.
const MCP_TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("mcp_tasks");
/// Store metadata (`schema` -> format version).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Format version of this store's tables.
const SCHEMA_VERSION: u64 = 2;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("store {path}: {message}")]
    Db {
        /// Database path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A record did not decode.
    #[error("store record is corrupt: {0}")]
    Corrupt(String),
    /// A write was refused because of what is stored (e.g. a name that exists).
    #[error("{0}")]
    Conflict(String),
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Long-lived agent credential (`wdn_st_`), exchangeable for agent tokens.
    Service,
    /// Short-lived, audience-bound agent token (`wdn_at_`), minted by exchange.
    Agent,
    /// Admin API credential (`wdn_adm_`).
    Admin,
}

/// A stored token (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public identifier (`tok_...`), safe to log and show.
    pub id: String,
    /// What the token is for.
    pub kind: TokenKind,
    /// Agent path for agent kinds, admin name for admin tokens.
    pub principal: String,
    /// Admin role (`operator` or `approver`); empty for agent kinds.
    #[serde(default)]
    pub role: String,
    /// Unix seconds of issue.
    pub issued_at: u64,
    /// Unix seconds after which the token is refused.
    pub expires_at: Option<u64>,
    /// Unix seconds of revocation.
    pub revoked_at: Option<u64>,
    /// The resource (gateway MCP URL) an agent token is bound to.
    pub audience: Option<String>,
    /// The service token an agent token was exchanged from.
    pub parent: Option<String>,
    /// The token that replaced this one by rotation.
    pub rotated_to: Option<String>,
    /// Operator's note.
    #[serde(default)]
    pub label: String,
}

/// An installed skill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRecord {
    /// Namespace of its tools.
    pub namespace: String,
    /// BLAKE3 digest of the component.
    pub digest: String,
    /// Path of the component file in the data directory.
    pub component: PathBuf,
    /// Workspaces (`tenant/workspace`) it is installed in; `*` means every workspace.
    #[serde(default = "every_workspace")]
    pub workspaces: Vec<String>,
    /// The signed package it was installed from (`warden skill install`); `None` for the
    /// first-party and `--dev-skill` skills `warden up` loads itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<InstalledPackage>,
    /// For a first-party skill: the signed package compiled into the binary it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedPackage>,
}

/// The embedded, release-signed package a first-party skill was loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddedPackage {
    /// Its version.
    pub version: String,
    /// SHA-256 of the package file.
    pub sha256: String,
    /// The release key that signed it.
    pub signer: String,
}

/// The signed package an installed skill came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    /// Its version.
    pub version: String,
    /// SHA-256 of the package file (kept in the data directory's `packages/`).
    pub sha256: String,
    /// Who signed it.
    pub signer: String,
    /// Tool name -> SHA-256 of its definition (JCS): what an upgrade is compared with.
    pub pins: std::collections::BTreeMap<String, String>,
    /// When it was installed (seconds since the epoch).
    pub installed_at: u64,
    /// Who installed it.
    pub installed_by: String,
    /// Versions installed before, newest last (their package files are kept, so a
    /// rollback needs no registry).
    #[serde(default)]
    pub previous: Vec<PreviousVersion>,
}

/// A version installed earlier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousVersion {
    /// Its version.
    pub version: String,
    /// SHA-256 of its package file.
    pub sha256: String,
}

fn every_workspace() -> Vec<String> {
    vec!["*".to_owned()]
}

/// A tenant, workspace or environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRecord {
    /// Unix seconds of creation.
    pub created_at: u64,
}

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Groups (policy principals).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Calls per second this agent may make (None: the gateway default).
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Unix seconds of creation.
    pub created_at: u64,
    /// The admin responsible for the agent: never counted as an approver of its requests.
    #[serde(default)]
    pub owner: Option<String>,
}

/// An approval task (see `approvals`): a call policy said needs a human's approval, what
/// it is bound to, and the votes cast on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// `apr_` and 24 hex digits.
    pub id: String,
    /// `pending`, `approved`, `denied`, `expired`, `executed` or `invalidated`.
    pub state: String,
    /// The exposed tool name.
    pub tool: String,
    /// The skill's key (`namespace/name`).
    pub skill: String,
    /// The skill's digest when the task was opened (an approval runs only on it).
    pub skill_digest: String,
    /// The tool's description (what the approver is shown).
    pub description: String,
    /// The tool's annotations (risk hints; untrusted).
    pub annotations: serde_json::Value,
    /// The arguments the agent sent.
    pub arguments: serde_json::Value,
    /// BLAKE3 of their canonical JSON (RFC 8785): the binding.
    pub args_digest: String,
    /// The arguments an approver replaced them with, if modified.
    #[serde(default)]
    pub modified_arguments: Option<serde_json::Value>,
    /// The agent's path.
    pub agent: String,
    /// Its tenant.
    pub tenant: String,
    /// Its workspace.
    pub workspace: String,
    /// Its environment.
    pub environment: String,
    /// The policy version that asked for approval.
    pub policy_version: u64,
    /// The rules that asked.
    pub policies: Vec<String>,
    /// What the rules ask for (`required`, `2-of:group:finance`, ...).
    pub quorums: Vec<String>,
    /// Why the agent says it makes the call.
    #[serde(default)]
    pub reason: Option<String>,
    /// The correlation id of the request that opened it.
    pub request_id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which it can be neither decided nor used.
    pub expires_at: u64,
    /// When it was approved, denied or expired.
    #[serde(default)]
    pub decided_at: Option<u64>,
    /// Votes on the current arguments (a modification starts them anew).
    #[serde(default)]
    pub votes: Vec<ApprovalVote>,
    /// The denial's (or modification's) note, for the agent.
    #[serde(default)]
    pub note: Option<String>,
    /// When a call ran on it.
    #[serde(default)]
    pub executed_at: Option<u64>,
    /// The correlation id of that call.
    #[serde(default)]
    pub executed_by_request: Option<String>,
    /// Bumped by every store of the task: of two views of it, the higher is the newer
    /// (live views receive events and answers in either order).
    #[serde(default)]
    pub revision: u64,
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// Admin name.
    pub approver: String,
    /// `approve`, `deny` or `modify`.
    pub vote: String,
    /// The approver's groups when voting.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Remark.
    #[serde(default)]
    pub note: Option<String>,
    /// Unix seconds.
    pub at: u64,
}

/// An MCP task: the call a task-taking client made, kept so the task outlives a restart
/// (the approval it waits for is stored on its own; this is how to run the call again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpTaskRecord {
    /// The agent whose call made it (the only one who may read it).
    pub agent: String,
    /// The tool called.
    pub tool: String,
    /// The arguments as the agent sent them.
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The reason the agent stated.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which it is forgotten.
    pub expires_at: u64,
    /// How it ended (`completed`, `failed`, `cancelled`), once it has; its result is held in
    /// memory only.
    #[serde(default)]
    pub ended: Option<String>,
}

/// A workspace's approval webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Where notices are posted (`http` or `https`).
    pub url: String,
    /// The name of the vault secret (in the workspace or its tenant) that signs them.
    pub secret: String,
    /// Unix seconds.
    pub created_at: u64,
}

/// What an admin may decide as an approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproverRecord {
    /// `*`, `tenant` or `tenant/workspace`: where the approver decides.
    pub scopes: Vec<String>,
    /// Groups (an `@approval("2-of:group:finance")` rule counts members of `finance`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// A secret value as stored: the value sealed under a data key of its own, the data key
/// wrapped by a master key version (both base64 of nonce and ciphertext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue {
    /// The secret's version this value is.
    pub version: u32,
    /// The master key version that wraps the data key.
    pub key_version: u32,
    /// The data key, sealed by the master key.
    pub wrapped_key: String,
    /// The value, sealed by the data key.
    pub ciphertext: String,
}

/// One entry of a secret's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersion {
    /// The version (a removal takes a version number too).
    pub version: u32,
    /// `set` or `rm`.
    pub action: String,
    /// Unix seconds.
    pub at: u64,
    /// Who (`admin:<name>`).
    pub by: String,
}

/// A secret: its current sealed value (none once removed) and its history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// The current value, if the secret is set.
    pub current: Option<SealedValue>,
    /// Every change, oldest first (at most [`SECRET_HISTORY_KEPT`]).
    pub history: Vec<SecretVersion>,
}

/// History entries a secret keeps (older ones are dropped).
pub const SECRET_HISTORY_KEPT: usize = 100;

/// The signers a namespace trusts for skill packages (an empty list trusts nobody).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRecord {
    /// The trusted signers.
    pub signers: Vec<warden_registry::TrustedSigner>,
    /// When it last changed (seconds since the epoch).
    pub updated_at: u64,
    /// Who changed it.
    pub updated_by: String,
}

/// The pinned Sigstore trusted root (`trusted_root.json`), which Sigstore-signed packages
/// are verified against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRootRecord {
    /// The JSON, as pinned.
    pub json: String,
    /// Its SHA-256 (hex).
    pub sha256: String,
    /// When it was pinned (seconds since the epoch).
    pub updated_at: u64,
    /// Who pinned it.
    pub updated_by: String,
}

/// A grant: what one skill may reach, and with which secrets, in a workspace or environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRecord {
    /// Public id (`grt_...`).
    pub id: String,
    /// The skill's name.
    pub skill: String,
    /// `tenant/workspace` or `tenant/workspace/environment`.
    pub scope: String,
    /// The outbound destination it allows, if any.
    pub egress: Option<EgressRule>,
    /// Credentials added to requests to that destination.
    #[serde(default)]
    pub inject: Vec<Injection>,
    /// Secrets the skill may read itself (`secrets.reveal`).
    #[serde(default)]
    pub reveal: Vec<String>,
    /// The grants revision that created it.
    pub revision: u64,
    /// Unix seconds.
    pub created_at: u64,
    /// Who (`admin:<name>`).
    pub created_by: String,
    /// Set when removed (the record stays as history).
    #[serde(default)]
    pub removed: Option<Removal>,
}

/// When and by whom a grant was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The grants revision that removed it.
    pub revision: u64,
    /// Unix seconds.
    pub at: u64,
    /// Who.
    pub by: String,
}

/// An allowed outbound destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    /// `https` or `http`.
    pub scheme: String,
    /// Host name or IP literal (lower case), or `*.domain`.
    pub host: String,
    /// Port; `None` means the scheme's default.
    pub port: Option<u16>,
    /// Path prefix (`/` for any).
    pub path_prefix: String,
    /// Methods (upper case); empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Allow loopback, private, link-local and other non-public addresses.
    #[serde(default)]
    pub allow_private: bool,
}

/// How a credential is added to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injection {
    /// `header`, `query` or `basic`.
    pub kind: String,
    /// Header or query parameter name (empty for `basic`).
    pub name: String,
    /// The value with `{secret:NAME}` placeholders (`user:password` for `basic`).
    pub template: String,
}

/// The vault's keyring: master key versions, each sealed by the root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringRecord {
    /// Where the root key comes from: `file`, `env` or `passphrase`.
    pub source: String,
    /// Argon2id parameters and salt (passphrase only).
    pub kdf: Option<KdfRecord>,
    /// The master key version new data keys are wrapped with.
    pub active: u32,
    /// Every master key version still in use.
    pub terms: Vec<KeyTerm>,
}

/// Argon2id parameters of a passphrase-derived root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfRecord {
    /// Salt (base64).
    pub salt: String,
    /// Memory, KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// One master key version, sealed by the root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTerm {
    /// Version.
    pub version: u32,
    /// Unix seconds.
    pub created_at: u64,
    /// The key, sealed by the root key (base64).
    pub sealed: String,
}

/// Counters of one principal and tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Calls.
    pub calls: u64,
    /// Calls that did not succeed (denied, failed, trapped, refused).
    pub errors: u64,
    /// Sum of latencies, microseconds.
    pub latency_us: u64,
    /// Sum of fuel consumed.
    pub fuel: u64,
}

impl Usage {
    /// Adds another counter set.
    pub fn add(&mut self, other: &Usage) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.latency_us += other.latency_us;
        self.fuel += other.fuel;
    }
}

/// The embedded store.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Bumped after every commit (see [`Store::generation`]).
    generation: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Opens (creating with mode 0600 if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Db {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if !path.exists() {
            crate::datadir::private_file_options()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| err(&e))?;
        }
        let db = Database::create(path).map_err(|e| err(&e))?;
        let store = Self {
            db,
            path: path.to_owned(),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        // Create the tables up front so readers never see "table does not exist". A store
        // written by an earlier development format holds tokens this version cannot read:
        // those are dropped (the operator issues new ones) rather than failing every request.
        store.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let version = meta.get("schema")?.map(|v| v.value());
            if version != Some(SCHEMA_VERSION) {
                txn.delete_table(TOKENS)?;
                meta.insert("schema", SCHEMA_VERSION)?;
            }
            drop(meta);
            txn.open_table(TOKENS)?;
            txn.open_table(TOKEN_IDS)?;
            txn.open_table(SKILLS)?;
            txn.open_table(SCOPES)?;
            txn.open_table(AGENTS)?;
            txn.open_table(POLICIES)?;
            txn.open_table(AUDIT)?;
            txn.open_table(USAGE)?;
            txn.open_table(SECRETS)?;
            txn.open_table(GRANTS)?;
            txn.open_table(TRUST)?;
            txn.open_table(TRUST_ROOTS)?;
            txn.open_table(VAULT)?;
            txn.open_table(APPROVALS)?;
            txn.open_table(APPROVAL_OPEN)?;
            txn.open_table(APPROVERS)?;
            txn.open_table(WEBHOOKS)?;
            txn.open_table(MCP_TASKS)?;
            Ok(())
        })?;
        store.migrate_skill_keys()?;
        Ok(store)
    }

    /// Skills are keyed `namespace/name` (so one name can be installed from several
    /// namespaces); a store written before keys skills by bare name. Re-keys those skills
    /// and the grants that name them, in one transaction.
    fn migrate_skill_keys(&self) -> Result<(), StoreError> {
        let bare: Vec<(String, SkillRecord)> = self
            .skills()?
            .into_iter()
            .filter(|(k, _)| !k.contains('/'))
            .collect();
        if bare.is_empty() {
            return Ok(());
        }
        let mut renamed = std::collections::HashMap::new();
        let mut skills = Vec::new();
        for (name, record) in bare {
            let key = format!("{}/{name}", record.namespace);
            skills.push((name.clone(), key.clone(), encode(&record)?));
            renamed.insert(name, key);
        }
        let mut grants = Vec::new();
        for (id, mut g) in self.grants()? {
            if let Some(key) = renamed.get(&g.skill) {
                g.skill.clone_from(key);
                grants.push((id, encode(&g)?));
            }
        }
        self.write(|txn| {
            let mut table = txn.open_table(SKILLS)?;
            for (old, new, bytes) in &skills {
                table.remove(old.as_str())?;
                table.insert(new.as_str(), bytes.as_slice())?;
            }
            drop(table);
            let mut table = txn.open_table(GRANTS)?;
            for (id, bytes) in &grants {
                table.insert(id.as_str(), bytes.as_slice())?;
            }
            Ok(())
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        db_err(&self.path, e)
    }

    /// A number that grows after every committed write, before the write returns. What
    /// was read after observing generation `g` is still what the store holds while the
    /// generation is `g`: a cache tags entries with the generation read *before* reading
    /// and serves them only while it is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn committed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn write<R>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        self.write_with(true, f)
    }

    /// A write transaction; `durable: false` skips the sync (only for what the audit
    /// journal already holds durably: the next durable commit persists it too).
    fn write_with<R>(
        &self,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| self.db_err(e))?;
        }
        let out = f(&txn).map_err(|e| self.db_err(e))?;
        let committed = txn.commit();
        // A failed commit may still have changed what readers see: bump either way.
        self.committed();
        committed.map_err(|e| self.db_err(e))?;
        Ok(out)
    }

    fn all<T: for<'de> Deserialize<'de>>(
        &self,
        table: BytesTable,
    ) -> Result<Vec<(String, T)>, StoreError> {
        sealed::Raw::raw_all(self, table)
    }

    /// Runs `f` in one durable write transaction, committed only when it returns
    /// `Ok(true)`; `Ok(false)` or an error abort it (nothing `f` wrote stays). The audit
    /// writer commits an admin change and its record this way.
    pub fn atomically(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<bool, StoreError>,
    ) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let outcome = f(&Tx {
            txn: &txn,
            path: &self.path,
        });
        match outcome {
            Ok(true) => {
                let committed = txn.commit();
                self.committed();
                committed.map_err(|e| self.db_err(e))?;
                Ok(true)
            }
            Ok(false) => {
                txn.abort().map_err(|e| self.db_err(e))?;
                Ok(false)
            }
            Err(e) => {
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    /// Deletes the token records (by hash) that `doomed` picks, in one transaction; returns
    /// how many went.
    pub fn delete_tokens(
        &self,
        doomed: impl Fn(&TokenRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let victims: Vec<(String, String)> = self
            .tokens()?
            .into_iter()
            .filter(|(_, r)| doomed(r))
            .map(|(h, r)| (h, r.id))
            .collect();
        if victims.is_empty() {
            return Ok(0);
        }
        self.write(|txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            let mut ids = txn.open_table(TOKEN_IDS)?;
            for (hash, id) in &victims {
                tokens.remove(hash.as_str())?;
                ids.remove(id.as_str())?;
            }
            Ok(())
        })?;
        Ok(victims.len())
    }

    /// Number of stored tokens.
    pub fn token_count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(TOKENS).map_err(|e| self.db_err(e))?;
        table.len().map_err(|e| self.db_err(e))
    }

    /// Every scope, by path.
    pub fn scopes(&self) -> Result<Vec<(String, ScopeRecord)>, StoreError> {
        self.all(SCOPES)
    }

    /// Every agent, by path.
    pub fn agents(&self) -> Result<Vec<(String, AgentRecord)>, StoreError> {
        self.all(AGENTS)
    }

    /// Every policy version, oldest first (raw JSON).
    pub fn policy_versions(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(POLICIES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = entry.map_err(|e| self.db_err(e))?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// The latest policy version (raw JSON).
    pub fn current_policy(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(POLICIES).map_err(|e| self.db_err(e))?;
        Ok(table
            .last()
            .map_err(|e| self.db_err(e))?
            .map(|(_, v)| v.value().to_vec()))
    }

    /// Commits a batch of audit records and the usage they add in one transaction; when
    /// `durable`, returns only once the commit is on disk.
    pub fn append_audit(
        &self,
        records: &[(u64, Vec<u8>)],
        usage: &[(String, Usage)],
        durable: bool,
    ) -> Result<(), StoreError> {
        self.write_with(durable, |txn| append_audit_in(txn, records, usage))
    }

    /// The last audit record (sequence number and raw bytes).
    pub fn last_audit(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(AUDIT).map_err(|e| self.db_err(e))?;
        Ok(table
            .last()
            .map_err(|e| self.db_err(e))?
            .map(|(k, v)| (k.value(), v.value().to_vec())))
    }

    /// Audit records with sequence numbers in `from..`, at most `limit` of them, calling
    /// `visit` for each until it returns false.
    pub fn scan_audit(
        &self,
        from: u64,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(AUDIT).map_err(|e| self.db_err(e))?;
        for entry in table.range(from..).map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            if !visit(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }

    /// Audit records in reverse order (newest first), from `before` (exclusive) down.
    pub fn scan_audit_rev(
        &self,
        before: u64,
        mut visit: impl FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(AUDIT).map_err(|e| self.db_err(e))?;
        for entry in table.range(..before).map_err(|e| self.db_err(e))?.rev() {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            if !visit(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }

    /// Overwrites one stored audit record's bytes (only for tamper-detection tests and
    /// repair tooling: the gateway itself never rewrites a record).
    pub fn overwrite_audit_record(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(AUDIT)?.insert(seq, bytes)?;
            Ok(())
        })
    }

    /// Usage counters, by key.
    pub fn usage(&self) -> Result<Vec<(String, Usage)>, StoreError> {
        self.all(USAGE)
    }
}

/// A table of JSON records by string key.
type BytesTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// A record of `table` under `key`, decoded from the stored bytes in place.
fn get_in<T: for<'de> Deserialize<'de>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    path: &Path,
) -> Result<Option<T>, StoreError> {
    match table.get(key).map_err(|e| db_err(path, e))? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn all_in<T: for<'de> Deserialize<'de>>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut out = Vec::new();
    for entry in table.iter().map_err(|e| db_err(path, e))? {
        let (k, v) = entry.map_err(|e| db_err(path, e))?;
        out.push((k.value().to_owned(), decode(v.value())?));
    }
    Ok(out)
}

fn token_by_id_in(
    ids: &impl ReadableTable<&'static str, &'static str>,
    tokens: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
    path: &Path,
) -> Result<Option<(String, TokenRecord)>, StoreError> {
    let Some(hash) = ids.get(id).map_err(|e| db_err(path, e))? else {
        return Ok(None);
    };
    let hash = hash.value().to_owned();
    Ok(get_in(tokens, &hash, path)?.map(|record| (hash, record)))
}

/// Stores `value` under `key` in `table`.
fn put<T: Serialize>(
    store: &(impl sealed::Raw + ?Sized),
    table: BytesTable,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let bytes = encode(value)?;
    store.raw_write(|txn| {
        txn.open_table(table)?.insert(key, bytes.as_slice())?;
        Ok(())
    })
}

fn db_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn append_audit_in(
    txn: &redb::WriteTransaction,
    records: &[(u64, Vec<u8>)],
    usage: &[(String, Usage)],
) -> Result<(), redb::Error> {
    let mut audit = txn.open_table(AUDIT)?;
    for (seq, bytes) in records {
        audit.insert(*seq, bytes.as_slice())?;
    }
    let mut table = txn.open_table(USAGE)?;
    for (key, delta) in usage {
        let mut current: Usage = match table.get(key.as_str())? {
            Some(v) => serde_json::from_slice(v.value()).unwrap_or_default(),
            None => Usage::default(),
        };
        current.add(delta);
        let bytes = serde_json::to_vec(&current).unwrap_or_default();
        table.insert(key.as_str(), bytes.as_slice())?;
    }
    Ok(())
}

/// An open write transaction (see [`Store::atomically`]): what it reads includes what it
/// wrote, and nothing it writes is seen by others before it commits.
pub struct Tx<'a> {
    txn: &'a redb::WriteTransaction,
    path: &'a Path,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("path", &self.path).finish()
    }
}

impl Tx<'_> {
    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        db_err(self.path, e)
    }

    /// Adds audit records and the usage they add (the audit writer, committing them with
    /// the change they record).
    pub fn append_audit(
        &self,
        records: &[(u64, Vec<u8>)],
        usage: &[(String, Usage)],
    ) -> Result<(), StoreError> {
        append_audit_in(self.txn, records, usage).map_err(|e| self.db_err(e))
    }
}

mod sealed {
    use super::{BytesTable, Deserialize, StoreError, TokenRecord};

    /// How [`super::Tables`] reaches the tables: the store opens one transaction per
    /// call, a [`super::Tx`] uses its own.
    pub trait Raw {
        fn raw_get<T: for<'de> Deserialize<'de>>(
            &self,
            table: BytesTable,
            key: &str,
        ) -> Result<Option<T>, StoreError>;
        fn raw_all<T: for<'de> Deserialize<'de>>(
            &self,
            table: BytesTable,
        ) -> Result<Vec<(String, T)>, StoreError>;
        fn raw_token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError>;
        fn raw_write<R>(
            &self,
            f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
        ) -> Result<R, StoreError>;
    }
}

impl sealed::Raw for Store {
    fn raw_get<T: for<'de> Deserialize<'de>>(
        &self,
        table: BytesTable,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(table).map_err(|e| self.db_err(e))?;
        get_in(&table, key, &self.path)
    }

    fn raw_all<T: for<'de> Deserialize<'de>>(
        &self,
        table: BytesTable,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(table).map_err(|e| self.db_err(e))?;
        all_in(&table, &self.path)
    }

    fn raw_token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let ids = txn.open_table(TOKEN_IDS).map_err(|e| self.db_err(e))?;
        let tokens = txn.open_table(TOKENS).map_err(|e| self.db_err(e))?;
        token_by_id_in(&ids, &tokens, id, &self.path)
    }

    fn raw_write<R>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        self.write(f)
    }
}

impl sealed::Raw for Tx<'_> {
    fn raw_get<T: for<'de> Deserialize<'de>>(
        &self,
        table: BytesTable,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let table = self.txn.open_table(table).map_err(|e| self.db_err(e))?;
        get_in(&table, key, self.path)
    }

    fn raw_all<T: for<'de> Deserialize<'de>>(
        &self,
        table: BytesTable,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let table = self.txn.open_table(table).map_err(|e| self.db_err(e))?;
        all_in(&table, self.path)
    }

    fn raw_token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError> {
        let ids = self.txn.open_table(TOKEN_IDS).map_err(|e| self.db_err(e))?;
        let tokens = self.txn.open_table(TOKENS).map_err(|e| self.db_err(e))?;
        token_by_id_in(&ids, &tokens, id, self.path)
    }

    fn raw_write<R>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StoreError> {
        f(self.txn).map_err(|e| self.db_err(e))
    }
}

/// The records an admin change reads and writes (tokens, skills, scopes, agents, policy
/// versions, secrets, grants, the vault's keyring), reached alike through the [`Store`] (one transaction per call) and through a
/// [`Tx`] (one transaction for a whole change and its audit record).
pub trait Tables: sealed::Raw {
    /// Looks up a token by hash.
    fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.raw_get(TOKENS, hash)
    }

    /// Looks up a token by id: its hash and record.
    fn token_by_id(&self, id: &str) -> Result<Option<(String, TokenRecord)>, StoreError> {
        self.raw_token_by_id(id)
    }

    /// Every token record (with its hash).
    fn tokens(&self) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        self.raw_all(TOKENS)
    }

    /// Stores a new token record under its hash (and its id).
    fn put_token(&self, hash: &str, record: &TokenRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        self.raw_write(|txn| {
            txn.open_table(TOKENS)?.insert(hash, bytes.as_slice())?;
            txn.open_table(TOKEN_IDS)?
                .insert(record.id.as_str(), hash)?;
            Ok(())
        })
    }

    /// Replaces token records (by hash) in one transaction.
    fn update_tokens(&self, records: &[(String, TokenRecord)]) -> Result<(), StoreError> {
        let encoded: Vec<(String, Vec<u8>)> = records
            .iter()
            .map(|(h, r)| encode(r).map(|b| (h.clone(), b)))
            .collect::<Result<_, _>>()?;
        self.raw_write(|txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            for (hash, bytes) in &encoded {
                tokens.insert(hash.as_str(), bytes.as_slice())?;
            }
            Ok(())
        })
    }

    /// The key (`namespace/name`) of an installed skill named `name`: `name` itself when it
    /// is a key, else the one skill of that name. The inner error says what is wrong (not
    /// installed, or installed from several namespaces).
    fn resolve_skill(&self, name: &str) -> Result<Result<String, String>, StoreError> {
        if self.skill(name)?.is_some() {
            return Ok(Ok(name.to_owned()));
        }
        let suffix = format!("/{name}");
        let matches: Vec<String> = self
            .skills()?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with(&suffix))
            .collect();
        Ok(match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!(
                "skill `{}` is not installed",
                name.chars().take(64).collect::<String>()
            )),
            several => Err(format!(
                "`{name}` is installed from several namespaces ({}); name one as namespace/name",
                several.join(", ")
            )),
        })
    }

    /// Every installed skill, by key (`namespace/name`).
    fn skills(&self) -> Result<Vec<(String, SkillRecord)>, StoreError> {
        self.raw_all(SKILLS)
    }

    /// One installed skill, by key (`namespace/name`).
    fn skill(&self, name: &str) -> Result<Option<SkillRecord>, StoreError> {
        self.raw_get(SKILLS, name)
    }

    /// Records an installed skill.
    fn put_skill(&self, name: &str, record: &SkillRecord) -> Result<(), StoreError> {
        put(self, SKILLS, name, record)
    }

    /// Removes an installed skill's record; whether it existed.
    fn remove_skill(&self, name: &str) -> Result<bool, StoreError> {
        self.raw_write(|txn| Ok(txn.open_table(SKILLS)?.remove(name)?.is_some()))
    }

    /// Looks up a scope.
    fn scope(&self, path: &str) -> Result<Option<ScopeRecord>, StoreError> {
        self.raw_get(SCOPES, path)
    }

    /// Creates a scope; refuses an existing one.
    fn create_scope(&self, path: &str, record: &ScopeRecord) -> Result<(), StoreError> {
        let bytes = encode(record)?;
        let created = self.raw_write(|txn| {
            let mut scopes = txn.open_table(SCOPES)?;
            if scopes.get(path)?.is_some() {
                return Ok(false);
            }
            scopes.insert(path, bytes.as_slice())?;
            Ok(true)
        })?;
        if created {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!("`{path}` already exists")))
        }
    }

    /// Looks up an agent.
    fn agent(&self, path: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.raw_get(AGENTS, path)
    }

    /// Creates or replaces an agent.
    fn put_agent(&self, path: &str, record: &AgentRecord) -> Result<(), StoreError> {
        put(self, AGENTS, path, record)
    }

    /// Deletes an agent and revokes its tokens (one transaction). Returns the ids of the
    /// agent's tokens (whose streams the caller closes), or `None` if it did not exist.
    fn delete_agent(&self, path: &str, now: u64) -> Result<Option<Vec<String>>, StoreError> {
        let mut ids = Vec::new();
        let mut revoked = Vec::new();
        for (hash, mut record) in self.tokens()? {
            if record.kind != TokenKind::Admin && record.principal == path {
                ids.push(record.id.clone());
                if record.revoked_at.is_none() {
                    record.revoked_at = Some(now);
                    revoked.push((hash, encode(&record)?));
                }
            }
        }
        let existed = self.raw_write(|txn| {
            let existed = txn.open_table(AGENTS)?.remove(path)?.is_some();
            let mut table = txn.open_table(TOKENS)?;
            for (hash, bytes) in &revoked {
                table.insert(hash.as_str(), bytes.as_slice())?;
            }
            Ok(existed)
        })?;
        Ok(existed.then_some(ids))
    }

    /// One secret (`scope/name`).
    fn secret(&self, path: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.raw_get(SECRETS, path)
    }

    /// Every secret, by path.
    fn secrets(&self) -> Result<Vec<(String, SecretRecord)>, StoreError> {
        self.raw_all(SECRETS)
    }

    /// Stores a secret.
    fn put_secret(&self, path: &str, record: &SecretRecord) -> Result<(), StoreError> {
        put(self, SECRETS, path, record)
    }

    /// Every grant (removed ones included), by id.
    fn grants(&self) -> Result<Vec<(String, GrantRecord)>, StoreError> {
        self.raw_all(GRANTS)
    }

    /// One grant.
    fn grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.raw_get(GRANTS, id)
    }

    /// Stores a grant.
    fn put_grant(&self, record: &GrantRecord) -> Result<(), StoreError> {
        put(self, GRANTS, &record.id, record)
    }

    /// Every namespace's trusted signers.
    fn trust(&self) -> Result<Vec<(String, TrustRecord)>, StoreError> {
        self.raw_all(TRUST)
    }

    /// Stores a namespace's trusted signers.
    fn put_trust(&self, namespace: &str, record: &TrustRecord) -> Result<(), StoreError> {
        put(self, TRUST, namespace, record)
    }

    /// The pinned Sigstore trusted root, if any.
    fn sigstore_root(&self) -> Result<Option<TrustRootRecord>, StoreError> {
        self.raw_get(TRUST_ROOTS, "sigstore")
    }

    /// Pins (or, with `None`, unpins) the Sigstore trusted root.
    fn put_sigstore_root(&self, record: Option<&TrustRootRecord>) -> Result<(), StoreError> {
        match record {
            Some(r) => put(self, TRUST_ROOTS, "sigstore", r),
            None => self.raw_write(|txn| {
                txn.open_table(TRUST_ROOTS)?.remove("sigstore")?;
                Ok(())
            }),
        }
    }

    /// The vault's keyring, once initialised.
    fn keyring(&self) -> Result<Option<KeyringRecord>, StoreError> {
        self.raw_get(VAULT, "keyring")
    }

    /// Stores the vault's keyring.
    fn put_keyring(&self, record: &KeyringRecord) -> Result<(), StoreError> {
        put(self, VAULT, "keyring", record)
    }

    /// One approval task.
    fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        self.raw_get(APPROVALS, id)
    }

    /// Every approval task (ids sort by nothing in particular: callers order by time).
    fn approvals(&self) -> Result<Vec<ApprovalRecord>, StoreError> {
        Ok(self
            .raw_all(APPROVALS)?
            .into_iter()
            .map(|(_, t)| t)
            .collect())
    }

    /// Stores an approval task, bumping its revision.
    fn put_approval(&self, record: &mut ApprovalRecord) -> Result<(), StoreError> {
        record.revision += 1;
        put(self, APPROVALS, &record.id, record)
    }

    /// The open task of a binding.
    fn open_approval(&self, binding: &str) -> Result<Option<String>, StoreError> {
        self.raw_get(APPROVAL_OPEN, binding)
    }

    /// Opens (`Some`) or closes (`None`) the task of a binding.
    fn set_open_approval(&self, binding: &str, id: Option<&str>) -> Result<(), StoreError> {
        match id {
            Some(id) => put(self, APPROVAL_OPEN, binding, &id),
            None => self.raw_write(|txn| {
                txn.open_table(APPROVAL_OPEN)?.remove(binding)?;
                Ok(())
            }),
        }
    }

    /// Every open binding and its task id.
    fn open_approvals(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.raw_all(APPROVAL_OPEN)
    }

    /// An approver's record.
    fn approver(&self, name: &str) -> Result<Option<ApproverRecord>, StoreError> {
        self.raw_get(APPROVERS, name)
    }

    /// Every approver.
    fn approvers(&self) -> Result<Vec<(String, ApproverRecord)>, StoreError> {
        self.raw_all(APPROVERS)
    }

    /// Stores (`Some`) or removes (`None`) an approver; whether one was there.
    fn put_approver(
        &self,
        name: &str,
        record: Option<&ApproverRecord>,
    ) -> Result<bool, StoreError> {
        let existed = self.approver(name)?.is_some();
        match record {
            Some(r) => put(self, APPROVERS, name, r)?,
            None => self.raw_write(|txn| {
                txn.open_table(APPROVERS)?.remove(name)?;
                Ok(())
            })?,
        }
        Ok(existed)
    }

    /// An MCP task's record.
    fn mcp_task(&self, id: &str) -> Result<Option<McpTaskRecord>, StoreError> {
        self.raw_get(MCP_TASKS, id)
    }

    /// Every MCP task's record, by id.
    fn mcp_tasks(&self) -> Result<Vec<(String, McpTaskRecord)>, StoreError> {
        self.raw_all(MCP_TASKS)
    }

    /// Forgets the MCP tasks past their expiry, in one transaction; how many.
    fn forget_expired_mcp_tasks(&self, now: u64) -> Result<usize, StoreError> {
        let due: Vec<String> = self
            .mcp_tasks()?
            .into_iter()
            .filter(|(_, r)| now >= r.expires_at)
            .map(|(id, _)| id)
            .collect();
        if !due.is_empty() {
            self.raw_write(|txn| {
                let mut table = txn.open_table(MCP_TASKS)?;
                for id in &due {
                    table.remove(id.as_str())?;
                }
                Ok(())
            })?;
        }
        Ok(due.len())
    }

    /// Stores (`Some`) or forgets (`None`) an MCP task.
    fn put_mcp_task(&self, id: &str, record: Option<&McpTaskRecord>) -> Result<(), StoreError> {
        match record {
            Some(r) => put(self, MCP_TASKS, id, r),
            None => self.raw_write(|txn| {
                txn.open_table(MCP_TASKS)?.remove(id)?;
                Ok(())
            }),
        }
    }

    /// A workspace's webhook.
    fn webhook(&self, scope: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.raw_get(WEBHOOKS, scope)
    }

    /// Every webhook, by `tenant/workspace`.
    fn webhooks(&self) -> Result<Vec<(String, WebhookRecord)>, StoreError> {
        self.raw_all(WEBHOOKS)
    }

    /// Sets (`Some`) or removes (`None`) a workspace's webhook; whether one was there.
    fn put_webhook(&self, scope: &str, record: Option<&WebhookRecord>) -> Result<bool, StoreError> {
        let existed = self.webhook(scope)?.is_some();
        match record {
            Some(r) => put(self, WEBHOOKS, scope, r)?,
            None => self.raw_write(|txn| {
                txn.open_table(WEBHOOKS)?.remove(scope)?;
                Ok(())
            })?,
        }
        Ok(existed)
    }

    /// Appends a policy version; `bytes` receives the next version number.
    fn append_policy(&self, bytes: impl FnOnce(u64) -> Vec<u8>) -> Result<u64, StoreError> {
        self.raw_write(|txn| {
            let mut table = txn.open_table(POLICIES)?;
            let next = table.last()?.map_or(1, |(k, _)| k.value() + 1);
            table.insert(next, bytes(next).as_slice())?;
            Ok(next)
        })
    }
}

impl Tables for Store {}
impl Tables for Tx<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.redb");
        {
            let store = Store::open(&path).unwrap();
            let rec = TokenRecord {
                id: "tok_1".into(),
                kind: TokenKind::Service,
                principal: "default/default/dev/local".into(),
                role: String::new(),
                issued_at: 7,
                expires_at: None,
                revoked_at: None,
                audience: None,
                parent: None,
                rotated_to: None,
                label: String::new(),
            };
            store.put_token("abc", &rec).unwrap();
            store
                .put_skill(
                    "text",
                    &SkillRecord {
                        namespace: "warden".into(),
                        digest: "d".into(),
                        component: "skills/text.wasm".into(),
                        workspaces: vec!["*".into()],
                        package: None,
                        embedded: None,
                    },
                )
                .unwrap();
            store
                .append_audit(
                    &[(1, b"{}".to_vec())],
                    &[(
                        "k".into(),
                        Usage {
                            calls: 1,
                            ..Usage::default()
                        },
                    )],
                    true,
                )
                .unwrap();
            assert_eq!(
                store
                    .append_policy(|v| format!("{v}").into_bytes())
                    .unwrap(),
                1
            );
            assert_eq!(
                store
                    .append_policy(|v| format!("{v}").into_bytes())
                    .unwrap(),
                2
            );
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.token("abc").unwrap().unwrap().principal,
            "default/default/dev/local"
        );
        assert_eq!(store.token_by_id("tok_1").unwrap().unwrap().0, "abc");
        assert_eq!(store.token("nope").unwrap(), None);
        assert_eq!(store.token_count().unwrap(), 1);
        // Stored under its bare name (as earlier versions did): re-keyed on open.
        assert_eq!(store.skills().unwrap()[0].0, "warden/text");
        assert_eq!(store.last_audit().unwrap().unwrap().0, 1);
        assert_eq!(store.usage().unwrap()[0].1.calls, 1);
        assert_eq!(store.current_policy().unwrap().unwrap(), b"2");
        assert!(
            store
                .create_scope("acme", &ScopeRecord { created_at: 1 })
                .is_ok()
        );
        assert!(matches!(
            store.create_scope("acme", &ScopeRecord { created_at: 1 }),
            Err(StoreError::Conflict(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
