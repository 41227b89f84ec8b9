//! The registry's storage: a redb file for namespaces, package versions, tokens and the
//! event log, and a content-addressed blob directory for the package files.
//!
//! Invariants:
//! - A blob is named by the SHA-256 of its bytes and written to a temporary file in the
//!   same directory, synced, renamed into place, and the directory synced: after a crash
//!   (kill -9 at any point) a blob under its final name is complete, and a leftover
//!   temporary file is never served (and is removed on the next start).
//! - A version is recorded only after its blob is durable, in the same write transaction
//!   that checks the version is new, so two concurrent publishes of one version cannot
//!   both succeed. Versions are never overwritten or deleted; yanking marks one.
//! - Every change (namespace, key, publish, yank, token) appends an event in the same
//!   transaction as the change.
//! - Tokens are stored as SHA-256 hashes only.
//!
//! Threat: a torn or substituted blob served under a digest, a silently rewritten version,
//! and changes nobody can account for.

use crate::sign::{PublicKey, sha256_hex};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
const PACKAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("packages");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `id` -> this registry's random id, made when the store is created: owners' statements
/// name it, so they cannot be replayed on another registry.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("registry database: {0}")]
    Db(String),
    /// A file operation failed.
    #[error("registry storage: {0}")]
    Io(#[from] std::io::Error),
    /// The operation conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),
}

fn dberr<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A key of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceKey {
    /// The public key.
    pub key: PublicKey,
    /// When it was added.
    pub added_at: u64,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// A namespace and the keys that own it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Its name.
    pub name: String,
    /// Its keys, current and revoked.
    pub keys: Vec<NamespaceKey>,
    /// Bumped by every key change; owner statements name the revision they apply to, so
    /// an old statement cannot be replayed.
    pub revision: u64,
    /// When it was created.
    pub created_at: u64,
}

impl Namespace {
    /// Whether `key` is a current (not revoked) key of this namespace.
    pub fn is_current(&self, key: &PublicKey) -> bool {
        self.keys
            .iter()
            .any(|k| &k.key == key && k.revoked_at.is_none())
    }

    /// Whether `key` was a key of this namespace and is revoked.
    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        self.keys
            .iter()
            .any(|k| &k.key == key && k.revoked_at.is_some())
    }
}

/// A published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Semantic version.
    pub version: String,
    /// SHA-256 of the package file.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// The signing key.
    pub signer: PublicKey,
    /// The description in its manifest.
    pub description: String,
    /// Its tools' names.
    pub tools: Vec<String>,
    /// When it was published.
    pub published_at: u64,
    /// The token name that published it.
    pub published_by: String,
    /// Published below the newest version on purpose (never the latest).
    #[serde(default)]
    pub backport: bool,
    /// When and why it was yanked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yanked: Option<Yank>,
}

/// A yank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Yank {
    /// When.
    pub at: u64,
    /// Why.
    pub reason: String,
    /// Who (a token name or an owner key).
    pub by: String,
}

/// Every version of one package, by version string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Versions.
    pub versions: BTreeMap<String, Version>,
}

impl PackageRecord {
    /// The newest version that is neither yanked nor a backport (semver order).
    pub fn latest(&self) -> Option<&Version> {
        self.versions
            .values()
            .filter(|v| v.yanked.is_none() && !v.backport)
            .filter_map(|v| Some((semver::Version::parse(&v.version).ok()?, v)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, v)| v)
    }

    /// The newest version ever published, yanked or not.
    pub fn newest(&self) -> Option<semver::Version> {
        self.versions
            .keys()
            .filter_map(|v| semver::Version::parse(v).ok())
            .max()
    }
}

/// Role of a registry token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads packages and metadata.
    Reader,
    /// Reads and publishes.
    Publisher,
    /// Everything, including namespaces and tokens.
    Admin,
}

impl Role {
    /// Whether this role includes `other`.
    pub fn includes(self, other: Role) -> bool {
        self as u8 >= other as u8
    }
}

/// A token (stored by hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Who it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was issued.
    pub created_at: u64,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

/// One change, as the event log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number.
    #[serde(default)]
    pub seq: u64,
    /// When.
    pub at: u64,
    /// What (`namespace.create`, `key.add`, `key.revoke`, `publish`, `yank`,
    /// `token.issue`, `publish.refused`).
    pub action: String,
    /// Who (a token name or an owner key).
    pub actor: String,
    /// What it applied to.
    pub subject: String,
    /// Details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Event {
    /// A new event, now (its sequence number is given when it is appended).
    pub fn new(
        action: impl Into<String>,
        actor: impl Into<String>,
        subject: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            seq: 0,
            at: now(),
            action: action.into(),
            actor: actor.into(),
            subject: subject.into(),
            detail: detail.into(),
        }
    }
}

/// The registry's store.
pub struct Store {
    db: Database,
    blobs: PathBuf,
    id: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

fn get<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(dberr)
}

fn put<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(dberr)
}

impl Store {
    /// Opens (creating) the store in `dir`: `registry.redb` and `blobs/`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)?;
        // Temporary files of interrupted writes are never served; clear them.
        for entry in std::fs::read_dir(&blobs)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let db = Database::create(dir.join("registry.redb")).map_err(dberr)?;
        let tx = db.begin_write().map_err(dberr)?;
        {
            tx.open_table(NAMESPACES).map_err(dberr)?;
            tx.open_table(PACKAGES).map_err(dberr)?;
            tx.open_table(TOKENS).map_err(dberr)?;
            tx.open_table(EVENTS).map_err(dberr)?;
            let mut meta = tx.open_table(META).map_err(dberr)?;
            if meta.get("id").map_err(dberr)?.is_none() {
                let mut raw = [0u8; 16];
                getrandom::fill(&mut raw)
                    .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
                let id = format!("wrg-{}", crate::sign::hex(&raw));
                meta.insert("id", id.as_str()).map_err(dberr)?;
            }
        }
        tx.commit().map_err(dberr)?;
        let id = db
            .begin_read()
            .map_err(dberr)?
            .open_table(META)
            .map_err(dberr)?
            .get("id")
            .map_err(dberr)?
            .map(|v| v.value().to_owned())
            .unwrap_or_default();
        Ok(Self { db, blobs, id })
    }

    /// This registry's id (random, made when the store was created).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the blob of `digest` lives (the digest must be 64 lower-case hex digits).
    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let ok = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| self.blobs.join(digest))
    }

    /// Stores `bytes` under their SHA-256 (atomically and durably); returns the digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String, StoreError> {
        let digest = sha256_hex(bytes);
        let path = self.blobs.join(&digest);
        if path.exists() {
            return Ok(digest);
        }
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce)
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        let tmp = self
            .blobs
            .join(format!(".tmp-{}", crate::sign::hex(&nonce)));
        let result = (|| {
            let mut f = std::fs::File::create_new(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.blobs)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        Ok(digest)
    }

    /// A blob's bytes, checked against its digest (a damaged file is never served).
    pub fn blob(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| StoreError::NotFound(format!("no blob {digest}")))?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(format!("no blob {digest}")));
            }
            Err(e) => return Err(e.into()),
        };
        if sha256_hex(&bytes) != digest {
            return Err(StoreError::Db(format!("blob {digest} is damaged on disk")));
        }
        Ok(bytes)
    }

    fn append_event(tx: &redb::WriteTransaction, mut event: Event) -> Result<(), StoreError> {
        let mut t = tx.open_table(EVENTS).map_err(dberr)?;
        let seq = t.last().map_err(dberr)?.map_or(1, |(k, _)| k.value() + 1);
        event.seq = seq;
        t.insert(seq, put(&event)?.as_slice()).map_err(dberr)?;
        Ok(())
    }

    /// Records an event on its own (refusals, for example).
    pub fn record(&self, event: Event) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(dberr)?;
        Self::append_event(&tx, event)?;
        tx.commit().map_err(dberr)
    }

    /// Events, newest last, after sequence number `after`.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(EVENTS).map_err(dberr)?;
        let mut out = Vec::new();
        for row in t.range(after + 1..).map_err(dberr)? {
            let (_, v) = row.map_err(dberr)?;
            out.push(get(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Creates a namespace owned by `key`.
    pub fn create_namespace(
        &self,
        name: &str,
        key: PublicKey,
        actor: &str,
    ) -> Result<Namespace, StoreError> {
        let tx = self.db.begin_write().map_err(dberr)?;
        let ns = {
            let mut t = tx.open_table(NAMESPACES).map_err(dberr)?;
            if t.get(name).map_err(dberr)?.is_some() {
                return Err(StoreError::Conflict(format!("namespace `{name}` exists")));
            }
            let ns = Namespace {
                name: name.to_owned(),
                keys: vec![NamespaceKey {
                    key,
                    added_at: now(),
                    revoked_at: None,
                }],
                revision: 1,
                created_at: now(),
            };
            t.insert(name, put(&ns)?.as_slice()).map_err(dberr)?;
            ns
        };
        Self::append_event(
            &tx,
            Event::new("namespace.create", actor, name, format!("owner {key}")),
        )?;
        tx.commit().map_err(dberr)?;
        Ok(ns)
    }

    /// One record of `table`, decoded.
    fn read_one<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(table).map_err(dberr)?;
        t.get(key)
            .map_err(dberr)?
            .map(|v| get(v.value()))
            .transpose()
    }

    /// Every record of `table`, decoded, in key order.
    fn read_all<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(table).map_err(dberr)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(dberr)? {
            out.push(get(row.map_err(dberr)?.1.value())?);
        }
        Ok(out)
    }

    /// A namespace.
    pub fn namespace(&self, name: &str) -> Result<Option<Namespace>, StoreError> {
        self.read_one(NAMESPACES, name)
    }

    /// Every namespace.
    pub fn namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        self.read_all(NAMESPACES)
    }

    /// Adds or revokes a key of a namespace, at revision `revision` (the change applies
    /// only if the namespace is still at that revision). A revoked key stays revoked.
    pub fn change_key(
        &self,
        name: &str,
        key: PublicKey,
        add: bool,
        revision: u64,
        actor: &str,
    ) -> Result<Namespace, StoreError> {
        let tx = self.db.begin_write().map_err(dberr)?;
        let ns = {
            let mut t = tx.open_table(NAMESPACES).map_err(dberr)?;
            let mut ns: Namespace = match t.get(name).map_err(dberr)? {
                Some(v) => get(v.value())?,
                None => return Err(StoreError::NotFound(format!("no namespace `{name}`"))),
            };
            if ns.revision != revision {
                return Err(StoreError::Conflict(format!(
                    "namespace `{name}` is at revision {}, not {revision} (a stale or replayed request)",
                    ns.revision
                )));
            }
            if add {
                if ns.is_revoked(&key) {
                    return Err(StoreError::Conflict(format!(
                        "{key} was revoked for `{name}`; a revoked key is never added again"
                    )));
                }
                if ns.is_current(&key) {
                    return Err(StoreError::Conflict(format!(
                        "{key} is already a key of `{name}`"
                    )));
                }
                ns.keys.push(NamespaceKey {
                    key,
                    added_at: now(),
                    revoked_at: None,
                });
            } else {
                if !ns.is_current(&key) {
                    return Err(StoreError::NotFound(format!(
                        "{key} is not a current key of `{name}`"
                    )));
                }
                if ns.keys.iter().filter(|k| k.revoked_at.is_none()).count() == 1 {
                    return Err(StoreError::Conflict(format!(
                        "{key} is the last current key of `{name}`; add another before revoking it"
                    )));
                }
                for k in &mut ns.keys {
                    if k.key == key {
                        k.revoked_at = Some(now());
                    }
                }
            }
            ns.revision += 1;
            t.insert(name, put(&ns)?.as_slice()).map_err(dberr)?;
            ns
        };
        Self::append_event(
            &tx,
            Event::new(
                if add { "key.add" } else { "key.revoke" },
                actor,
                name,
                key.to_string(),
            ),
        )?;
        tx.commit().map_err(dberr)?;
        Ok(ns)
    }

    /// Records a new version (its blob must be stored already). Refuses an existing
    /// version, and a version below the newest unless `backport`.
    pub fn add_version(
        &self,
        namespace: &str,
        name: &str,
        version: Version,
    ) -> Result<(), StoreError> {
        let key = format!("{namespace}/{name}");
        let tx = self.db.begin_write().map_err(dberr)?;
        {
            let mut t = tx.open_table(PACKAGES).map_err(dberr)?;
            let mut rec: PackageRecord = match t.get(key.as_str()).map_err(dberr)? {
                Some(v) => get(v.value())?,
                None => PackageRecord {
                    namespace: namespace.into(),
                    name: name.into(),
                    versions: BTreeMap::new(),
                },
            };
            // The signer is checked again here, in the transaction that records the
            // version: a key revoked while its publish was being checked does not publish.
            let ns = tx.open_table(NAMESPACES).map_err(dberr)?;
            let current = match ns.get(namespace).map_err(dberr)? {
                Some(v) => get::<Namespace>(v.value())?.is_current(&version.signer),
                None => false,
            };
            drop(ns);
            if !current {
                return Err(StoreError::Conflict(format!(
                    "the signing key {} is no longer a current key of namespace `{namespace}`",
                    version.signer
                )));
            }
            if let Some(existing) = rec.versions.get(&version.version) {
                return Err(StoreError::Conflict(format!(
                    "{key}@{} is already published (sha256 {}); versions are immutable: publish a new version",
                    version.version, existing.digest
                )));
            }
            let new = semver::Version::parse(&version.version).map_err(dberr)?;
            if let Some(newest) = rec.newest()
                && new < newest
                && !version.backport
            {
                return Err(StoreError::Conflict(format!(
                    "{key}@{} is lower than the newest published version {newest}; a downgrade cannot become the latest (publish it with --backport to add it as an older version)",
                    version.version
                )));
            }
            rec.versions
                .insert(version.version.clone(), version.clone());
            t.insert(key.as_str(), put(&rec)?.as_slice())
                .map_err(dberr)?;
        }
        Self::append_event(
            &tx,
            Event::new(
                "publish",
                version.published_by.clone(),
                format!("{key}@{}", version.version),
                format!("sha256 {} signed by {}", version.digest, version.signer),
            ),
        )?;
        tx.commit().map_err(dberr)
    }

    /// Yanks a version (it stays downloadable by digest; it is never the latest).
    pub fn yank(
        &self,
        namespace: &str,
        name: &str,
        version: &str,
        yank: Yank,
    ) -> Result<(), StoreError> {
        let key = format!("{namespace}/{name}");
        let tx = self.db.begin_write().map_err(dberr)?;
        {
            let mut t = tx.open_table(PACKAGES).map_err(dberr)?;
            let mut rec: PackageRecord = match t.get(key.as_str()).map_err(dberr)? {
                Some(v) => get(v.value())?,
                None => return Err(StoreError::NotFound(format!("no package {key}"))),
            };
            let v = rec
                .versions
                .get_mut(version)
                .ok_or_else(|| StoreError::NotFound(format!("no version {key}@{version}")))?;
            if v.yanked.is_some() {
                return Err(StoreError::Conflict(format!(
                    "{key}@{version} is already yanked"
                )));
            }
            v.yanked = Some(yank.clone());
            t.insert(key.as_str(), put(&rec)?.as_slice())
                .map_err(dberr)?;
        }
        Self::append_event(
            &tx,
            Event::new("yank", yank.by, format!("{key}@{version}"), yank.reason),
        )?;
        tx.commit().map_err(dberr)
    }

    /// One package's record.
    pub fn package(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PackageRecord>, StoreError> {
        self.read_one(PACKAGES, &format!("{namespace}/{name}"))
    }

    /// Every package.
    pub fn packages(&self) -> Result<Vec<PackageRecord>, StoreError> {
        self.read_all(PACKAGES)
    }

    /// Issues a token; returns its secret (shown once).
    pub fn issue_token(&self, name: &str, role: Role, actor: &str) -> Result<String, StoreError> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw)
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        let secret = format!("wrg_{}", crate::sign::hex(&raw));
        let tx = self.db.begin_write().map_err(dberr)?;
        {
            let mut t = tx.open_table(TOKENS).map_err(dberr)?;
            let token = Token {
                name: name.into(),
                role,
                created_at: now(),
                revoked_at: None,
            };
            t.insert(
                sha256_hex(secret.as_bytes()).as_str(),
                put(&token)?.as_slice(),
            )
            .map_err(dberr)?;
        }
        Self::append_event(
            &tx,
            Event::new(
                "token.issue",
                actor,
                name,
                format!("{role:?}").to_lowercase(),
            ),
        )?;
        tx.commit().map_err(dberr)?;
        Ok(secret)
    }

    /// Revokes every token issued to `name`; how many were still valid.
    pub fn revoke_tokens(&self, name: &str, actor: &str) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(dberr)?;
        let revoked = {
            let mut t = tx.open_table(TOKENS).map_err(dberr)?;
            let mut changed = Vec::new();
            for row in t.iter().map_err(dberr)? {
                let (k, v) = row.map_err(dberr)?;
                let mut token: Token = get(v.value())?;
                if token.name == name && token.revoked_at.is_none() {
                    token.revoked_at = Some(now());
                    changed.push((k.value().to_owned(), put(&token)?));
                }
            }
            for (k, bytes) in &changed {
                t.insert(k.as_str(), bytes.as_slice()).map_err(dberr)?;
            }
            changed.len()
        };
        Self::append_event(
            &tx,
            Event::new("token.revoke", actor, name, format!("{revoked} revoked")),
        )?;
        tx.commit().map_err(dberr)?;
        Ok(revoked)
    }

    /// The token a secret belongs to, if it is valid.
    pub fn token(&self, secret: &str) -> Result<Option<Token>, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(TOKENS).map_err(dberr)?;
        let token: Option<Token> = t
            .get(sha256_hex(secret.as_bytes()).as_str())
            .map_err(dberr)?
            .map(|v| get(v.value()))
            .transpose()?;
        Ok(token.filter(|t| t.revoked_at.is_none()))
    }

    /// How many tokens exist.
    pub fn token_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(TOKENS).map_err(dberr)?;
        t.len().map_err(dberr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::SecretKey;

    fn version(v: &str, key: &SecretKey) -> Version {
        Version {
            version: v.into(),
            digest: "0".repeat(64),
            size: 1,
            signer: key.public(),
            description: "d".into(),
            tools: vec!["t".into()],
            published_at: now(),
            published_by: "ci".into(),
            backport: false,
            yanked: None,
        }
    }

    #[test]
    fn versions_are_immutable_and_downgrades_never_become_latest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        store
            .create_namespace("acme", key.public(), "admin")
            .unwrap();
        let e = store
            .add_version("acme", "w", version("1.1.0", &other))
            .unwrap_err();
        assert!(e.to_string().contains("no longer a current key"), "{e}");
        store
            .add_version("acme", "w", version("1.1.0", &key))
            .unwrap();
        let e = store
            .add_version("acme", "w", version("1.1.0", &key))
            .unwrap_err();
        assert!(e.to_string().contains("immutable"), "{e}");
        let e = store
            .add_version("acme", "w", version("1.0.0", &key))
            .unwrap_err();
        assert!(e.to_string().contains("downgrade"), "{e}");
        let mut back = version("1.0.5", &key);
        back.backport = true;
        store.add_version("acme", "w", back).unwrap();
        let rec = store.package("acme", "w").unwrap().unwrap();
        assert_eq!(rec.latest().unwrap().version, "1.1.0");
        store
            .yank(
                "acme",
                "w",
                "1.1.0",
                Yank {
                    at: now(),
                    reason: "broken".into(),
                    by: "ci".into(),
                },
            )
            .unwrap();
        let rec = store.package("acme", "w").unwrap().unwrap();
        // A backport never becomes the latest, even when every newer version is yanked.
        assert!(rec.latest().is_none());
        let actions: Vec<String> = store
            .events(0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["namespace.create", "publish", "publish", "yank"]);
    }

    #[test]
    fn key_changes_need_the_current_revision_and_revocation_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let ns = store.create_namespace("acme", a.public(), "admin").unwrap();
        assert!(store.create_namespace("acme", a.public(), "admin").is_err());
        let e = store
            .change_key("acme", a.public(), false, ns.revision, "x")
            .unwrap_err();
        assert!(e.to_string().contains("last current key"), "{e}");
        let ns = store.change_key("acme", b.public(), true, 1, "x").unwrap();
        assert_eq!(ns.revision, 2);
        // Replaying the revision-1 statement fails.
        assert!(store.change_key("acme", b.public(), true, 1, "x").is_err());
        let ns = store.change_key("acme", a.public(), false, 2, "x").unwrap();
        assert!(ns.is_revoked(&a.public()) && !ns.is_current(&a.public()));
        let e = store
            .change_key("acme", a.public(), true, 3, "x")
            .unwrap_err();
        assert!(e.to_string().contains("never added again"), "{e}");
    }

    #[test]
    fn blobs_are_content_addressed_and_checked_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_blob(b"package bytes").unwrap();
        assert_eq!(store.blob(&d).unwrap(), b"package bytes");
        assert!(store.blob("../../etc/passwd").is_err());
        std::fs::write(store.blob_path(&d).unwrap(), b"changed").unwrap();
        assert!(store.blob(&d).unwrap_err().to_string().contains("damaged"));
        // Leftover temporary files are removed on open.
        let tmp = dir.path().join("blobs/sha256/.tmp-abc");
        std::fs::write(&tmp, b"half").unwrap();
        drop(store);
        Store::open(dir.path()).unwrap();
        assert!(!tmp.exists());
    }

    #[test]
    fn tokens_are_stored_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let secret = store.issue_token("ci", Role::Publisher, "admin").unwrap();
        assert_eq!(store.token(&secret).unwrap().unwrap().role, Role::Publisher);
        assert!(store.token("wrg_nope").unwrap().is_none());
        assert_eq!(store.revoke_tokens("ci", "admin").unwrap(), 1);
        assert!(store.token(&secret).unwrap().is_none());
        drop(store);
        let raw = std::fs::read(dir.path().join("registry.redb")).unwrap();
        assert!(!raw.windows(secret.len()).any(|w| w == secret.as_bytes()));
        assert!(Role::Admin.includes(Role::Publisher) && !Role::Reader.includes(Role::Publisher));
    }
}
