//! The vault: secrets encrypted at rest in the store, a keyring of master key versions
//! behind a root key, seal and unseal, key rotation, and the resolution of a secret name
//! for a caller's environment.
//!
//! Layout (envelope encryption): each stored value is sealed (AES-256-GCM) by a data
//! key of its own; the data key is sealed by a master key version (a keyring *term*); the
//! terms are sealed by the root key, which comes from a key file (0600, created on first
//! start), an environment variable, or a passphrase (Argon2id). The associated data binds a
//! value and its data key to the secret's scope, name and version (and the term's version),
//! so a ciphertext copied to another name or scope does not open.
//!
//! Invariants:
//! - No plaintext value and no key is ever written to the store, a log, an error or Debug
//!   output; opened values and keys are [`Zeroizing`] and wiped when dropped.
//! - No API returns a value: only [`Vault::resolve`] opens one, for the host's injection
//!   and for an explicit reveal grant.
//! - Sealed: the keys are dropped; everything that needs a secret fails with
//!   [`VaultError::Sealed`]; nothing else is affected.
//! - Rotation never leaves a value unreadable: a new term is stored (and made active)
//!   before any data key is re-wrapped, each batch of re-wraps is one transaction, and a
//!   term is dropped only in the transaction that finds no data key still wrapped by it.
//!   A crash at any point leaves every value readable; rotating again finishes the job.
//!
//! Threat: theft of the database file or a backup, ciphertexts moved between secrets or
//! scopes, tampering, and crashes during a write or a rotation.

pub mod crypto;
pub mod grants;
pub mod mask;

use crate::identity::valid_segment;
use crate::storage::{
    KdfRecord, KeyTerm, KeyringRecord, SECRET_HISTORY_KEPT, SealedValue, SecretRecord,
    SecretVersion, Store, StoreError, Tables,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto::{CryptoError, KdfParams, Key, aad};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use zeroize::Zeroizing;

/// Longest secret value, in bytes.
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// Secrets re-wrapped per transaction during a rotation.
const ROTATE_BATCH: usize = 16;

/// Why a vault operation failed. Never carries a value or key bytes.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The vault is sealed: no secret can be read or written until it is unsealed.
    #[error("the vault is sealed")]
    Sealed,
    /// The passphrase or key does not open the keyring.
    #[error("the key does not open the vault (wrong passphrase or key)")]
    WrongKey,
    /// The root key cannot be obtained (missing file or variable, bad format, loose mode).
    #[error("vault key: {0}")]
    Key(String),
    /// No such secret.
    #[error("secret `{0}` is not set")]
    NotFound(String),
    /// A malformed name, path or value.
    #[error("{0}")]
    Invalid(String),
    /// A stored ciphertext does not authenticate (tampered, or moved from another secret).
    #[error("secret `{0}` does not decrypt: its stored ciphertext was altered or moved")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cryptography failed (randomness, key derivation).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The variable that holds the root key in `env` mode.
pub const KEY_ENV: &str = crate::env::VAULT_KEY;

/// How the vault obtains its root key on first start (later starts follow what the keyring
/// recorded).
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// The key file (`file` mode; created 0600 on first start if missing).
    pub key_file: PathBuf,
    /// Start in passphrase mode: sealed until `warden vault unseal` gives the passphrase
    /// (the first unseal sets it).
    pub passphrase: bool,
}

/// A secret's place: scope (`tenant`, `tenant/workspace` or `tenant/workspace/env`) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretPath {
    /// The scope.
    pub scope: String,
    /// The name.
    pub name: String,
}

impl SecretPath {
    /// Parses `scope/name`: 1 to 3 scope segments, then the name.
    pub fn parse(path: &str) -> Result<Self, VaultError> {
        let (scope, name) = path.rsplit_once('/').ok_or_else(|| {
            VaultError::Invalid(format!(
                "secret path `{}` needs a scope: tenant[/workspace[/environment]]/name",
                shown(path)
            ))
        })?;
        let segments: Vec<&str> = scope.split('/').collect();
        if segments.len() > 3 || !segments.iter().all(|s| valid_segment(s)) {
            return Err(VaultError::Invalid(format!(
                "scope `{}` is not tenant[/workspace[/environment]] of [a-z0-9-]{{1,32}} segments",
                shown(scope)
            )));
        }
        if !valid_name(name) {
            return Err(VaultError::Invalid(format!(
                "secret name `{}` is invalid: use 1-64 of [A-Za-z0-9_-]",
                shown(name)
            )));
        }
        Ok(Self {
            scope: scope.to_owned(),
            name: name.to_owned(),
        })
    }

    /// `scope/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.scope, self.name)
    }
}

/// At most 64 characters of `s`, for an error message.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Whether `name` is a valid secret name: 1-64 of `[A-Za-z0-9_-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An opened secret value (wiped when dropped).
pub struct Opened {
    /// Where it was found (`scope/name`): the most specific scope that has it.
    pub path: String,
    /// Its version.
    pub version: u32,
    /// The value.
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("value", &"[hidden]")
            .finish()
    }
}

/// What `status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VaultStatus {
    /// Whether secrets can be read and written now.
    pub sealed: bool,
    /// Why it is sealed, when it is.
    pub reason: Option<String>,
    /// `file`, `env` or `passphrase`.
    pub source: String,
    /// Whether a keyring exists (a passphrase vault has none before its first unseal).
    pub initialized: bool,
    /// The master key version new secrets are sealed with.
    pub active_key: Option<u32>,
    /// Every master key version still in use.
    pub key_versions: Vec<u32>,
}

/// What a rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    /// The new active master key version.
    pub key_version: u32,
    /// Secrets whose data key was re-wrapped.
    pub rewrapped: usize,
    /// Master key versions dropped.
    pub retired: Vec<u32>,
}

/// What `check` found: every secret opened (values never leave).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Secrets set.
    pub secrets: usize,
    /// Secrets that opened.
    pub readable: usize,
    /// Paths of those that did not.
    pub unreadable: Vec<String>,
}

struct Keys {
    root: Key,
    active: u32,
    terms: BTreeMap<u32, Key>,
}

enum State {
    Sealed(String),
    Open(Keys),
}

/// The vault (cheap to share behind an `Arc`).
pub struct Vault {
    store: Arc<Store>,
    config: VaultConfig,
    state: RwLock<State>,
    /// Stored (sealed) values by path, valid while the store's generation is unchanged.
    cache: Mutex<(u64, HashMap<String, Option<SealedValue>>)>,
    /// One rotation at a time.
    rotating: Mutex<()>,
    /// Credentials rendered for grants (see [`grants::Prepared`]): wiped on seal.
    prepared: Mutex<grants::PreparedCache>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("sealed", &self.is_sealed())
            .finish_non_exhaustive()
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn decode_b64(s: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    B64.decode(s.trim())
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Corrupt(what.to_owned()))
}

fn term_aad(version: u32) -> Vec<u8> {
    aad("warden/vault/term/v1", &[&version.to_string()])
}

fn value_aad(path: &SecretPath, version: u32) -> Vec<u8> {
    aad(
        "warden/vault/value/v1",
        &[&path.scope, &path.name, &version.to_string()],
    )
}

fn data_key_aad(path: &SecretPath, version: u32, key_version: u32) -> Vec<u8> {
    aad(
        "warden/vault/data-key/v1",
        &[
            &path.scope,
            &path.name,
            &version.to_string(),
            &key_version.to_string(),
        ],
    )
}

/// Reads a root key: base64 of 32 bytes.
fn parse_root(text: &str, what: &str) -> Result<Key, VaultError> {
    let bytes = B64
        .decode(text.trim())
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Key(format!("{what} is not base64")))?;
    Key::from_slice(&bytes)
        .ok_or_else(|| VaultError::Key(format!("{what} is not 32 bytes of base64")))
}

impl Vault {
    /// Opens the vault over `store`: creates the keyring on first start (a key file, the
    /// key variable, or — in passphrase mode — at the first unseal) and unseals it when the
    /// root key is at hand. A key that cannot be read leaves the vault sealed (with the
    /// reason in [`Vault::status`]); the gateway runs on.
    pub fn open(store: Arc<Store>, config: VaultConfig) -> Result<Self, VaultError> {
        let vault = Self {
            store,
            config,
            state: RwLock::new(State::Sealed("not unsealed yet".into())),
            cache: Mutex::new((u64::MAX, HashMap::new())),
            rotating: Mutex::new(()),
            prepared: Mutex::new(grants::PreparedCache::default()),
        };
        match vault.store.keyring()? {
            None if vault.config.passphrase => {
                *write_lock(&vault.state) = State::Sealed(
                    "passphrase vault: `warden vault unseal` sets the passphrase".into(),
                );
            }
            None => {
                let (source, root) = match std::env::var(KEY_ENV) {
                    Ok(text) => ("env", parse_root(&text, KEY_ENV)?),
                    Err(_) => ("file", vault.create_key_file()?),
                };
                vault.initialize(source, root, None)?;
            }
            Some(_) => {
                if let Err(e) = vault.unseal(None) {
                    tracing::warn!(error = %e, "the vault stays sealed");
                    *write_lock(&vault.state) = State::Sealed(e.to_string());
                }
            }
        }
        Ok(vault)
    }

    fn create_key_file(&self) -> Result<Key, VaultError> {
        let path = &self.config.key_file;
        if path.exists() {
            return self.read_key_file();
        }
        let key = Key::random()?;
        let text = Zeroizing::new(format!("{}\n", B64.encode(key.bytes())));
        crate::datadir::write_private_atomic(path, text.as_bytes())
            .map_err(|e| VaultError::Key(format!("writing {}: {e}", path.display())))?;
        Ok(key)
    }

    fn read_key_file(&self) -> Result<Key, VaultError> {
        let path = &self.config.key_file;
        let what = path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path)
                .map_err(|e| VaultError::Key(format!("reading {what}: {e}")))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(VaultError::Key(format!(
                    "{what} is readable by others: `chmod 600` it"
                )));
            }
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| VaultError::Key(format!("reading {what}: {e}")))?,
        );
        parse_root(&text, &what)
    }

    /// Creates the keyring with master key version 1 under `root`.
    fn initialize(
        &self,
        source: &str,
        root: Key,
        kdf: Option<KdfRecord>,
    ) -> Result<(), VaultError> {
        let term = Key::random()?;
        let record = KeyringRecord {
            source: source.to_owned(),
            kdf,
            active: 1,
            terms: vec![KeyTerm {
                version: 1,
                created_at: crate::identity::now_secs(),
                sealed: B64.encode(root.seal(term.bytes(), &term_aad(1))?),
            }],
        };
        self.store.put_keyring(&record)?;
        *write_lock(&self.state) = State::Open(Keys {
            root,
            active: 1,
            terms: BTreeMap::from([(1, term)]),
        });
        tracing::info!(source, "vault initialised");
        Ok(())
    }

    /// Whether the vault is sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(*read_lock(&self.state), State::Sealed(_))
    }

    /// Seals: drops every key from memory.
    pub fn seal(&self) {
        *write_lock(&self.state) = State::Sealed("sealed by an operator".into());
        self.forget_prepared();
    }

    /// Unseals: obtains the root key from the keyring's source (`passphrase` for a
    /// passphrase vault; the first unseal of a new passphrase vault sets it) and opens
    /// every term.
    pub fn unseal(&self, passphrase: Option<&[u8]>) -> Result<(), VaultError> {
        let Some(record) = self.store.keyring()? else {
            let Some(passphrase) = passphrase.filter(|_| self.config.passphrase) else {
                return Err(VaultError::Key(
                    "the vault has no keyring: give a passphrase to create one".into(),
                ));
            };
            check_passphrase(passphrase)?;
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|_| CryptoError::Random)?;
            let params = KdfParams::default();
            let root = crypto::derive(passphrase, &salt, params)?;
            return self.initialize(
                "passphrase",
                root,
                Some(KdfRecord {
                    salt: B64.encode(salt),
                    m_kib: params.m_kib,
                    t: params.t,
                    p: params.p,
                }),
            );
        };
        let root = match record.source.as_str() {
            "file" => self.read_key_file()?,
            "env" => parse_root(
                &Zeroizing::new(std::env::var(KEY_ENV).map_err(|_| {
                    VaultError::Key(format!("{KEY_ENV} is not set (this vault's key is there)"))
                })?),
                KEY_ENV,
            )?,
            "passphrase" => {
                let passphrase = passphrase.ok_or_else(|| {
                    VaultError::Key("this vault needs its passphrase to unseal".into())
                })?;
                let kdf = record
                    .kdf
                    .as_ref()
                    .ok_or_else(|| VaultError::Corrupt("keyring".into()))?;
                let salt = decode_b64(&kdf.salt, "keyring")?;
                crypto::derive(
                    passphrase,
                    &salt,
                    KdfParams {
                        m_kib: kdf.m_kib,
                        t: kdf.t,
                        p: kdf.p,
                    },
                )?
            }
            other => return Err(VaultError::Key(format!("unknown key source `{other}`"))),
        };
        let keys = open_terms(root, &record)?;
        *write_lock(&self.state) = State::Open(keys);
        self.forget_prepared();
        Ok(())
    }

    /// What the vault is and holds (never a value).
    pub fn status(&self) -> Result<VaultStatus, VaultError> {
        let record = self.store.keyring()?;
        let state = read_lock(&self.state);
        let reason = match &*state {
            State::Sealed(why) => Some(why.clone()),
            State::Open(_) => None,
        };
        Ok(VaultStatus {
            sealed: reason.is_some(),
            reason,
            source: record.as_ref().map_or_else(
                || {
                    if self.config.passphrase {
                        "passphrase".to_owned()
                    } else {
                        "file".to_owned()
                    }
                },
                |r| r.source.clone(),
            ),
            initialized: record.is_some(),
            active_key: record.as_ref().map(|r| r.active),
            key_versions: record
                .map(|r| r.terms.iter().map(|t| t.version).collect())
                .unwrap_or_default(),
        })
    }

    fn with_keys<R>(
        &self,
        f: impl FnOnce(&Keys) -> Result<R, VaultError>,
    ) -> Result<R, VaultError> {
        match &*read_lock(&self.state) {
            State::Sealed(_) => Err(VaultError::Sealed),
            State::Open(keys) => f(keys),
        }
    }

    /// Sets `path` to `value` as its next version (in `tx`, with the change's audit
    /// record); returns the version.
    pub fn put(
        &self,
        tx: &impl Tables,
        path: &SecretPath,
        value: &[u8],
        by: &str,
    ) -> Result<u32, VaultError> {
        if value.len() < mask::MIN_SECRET_LEN || value.len() > MAX_SECRET_LEN {
            return Err(VaultError::Invalid(format!(
                "a secret value is {} to {MAX_SECRET_LEN} bytes (so that it can be masked wherever it appears)",
                mask::MIN_SECRET_LEN
            )));
        }
        let key = path.key();
        let mut record = tx.secret(&key)?.unwrap_or_default();
        let version = record.history.last().map_or(1, |v| v.version + 1);
        let sealed = self.with_keys(|keys| {
            let data_key = Key::random()?;
            let term = keys
                .terms
                .get(&keys.active)
                .ok_or_else(|| VaultError::Corrupt("keyring".into()))?;
            Ok(SealedValue {
                version,
                key_version: keys.active,
                wrapped_key: B64.encode(
                    term.seal(data_key.bytes(), &data_key_aad(path, version, keys.active))?,
                ),
                ciphertext: B64.encode(data_key.seal(value, &value_aad(path, version))?),
            })
        })?;
        record.current = Some(sealed);
        push_history(&mut record, version, "set", by);
        tx.put_secret(&key, &record)?;
        Ok(version)
    }

    /// Removes `path`'s value (its history stays); `NotFound` if it is not set.
    pub fn remove(&self, tx: &impl Tables, path: &SecretPath, by: &str) -> Result<u32, VaultError> {
        let key = path.key();
        let mut record = tx
            .secret(&key)?
            .filter(|r| r.current.is_some())
            .ok_or_else(|| VaultError::NotFound(key.clone()))?;
        let version = record.history.last().map_or(1, |v| v.version + 1);
        record.current = None;
        push_history(&mut record, version, "rm", by);
        tx.put_secret(&key, &record)?;
        Ok(version)
    }

    fn sealed_value(&self, key: &str) -> Result<Option<SealedValue>, VaultError> {
        let generation = self.store.generation();
        {
            let cache = lock(&self.cache);
            if cache.0 == generation
                && let Some(hit) = cache.1.get(key)
            {
                return Ok(hit.clone());
            }
        }
        let value = self.store.secret(key)?.and_then(|r| r.current);
        let mut cache = lock(&self.cache);
        if cache.0 != generation {
            *cache = (generation, HashMap::new());
        }
        if cache.1.len() < 4096 {
            cache.1.insert(key.to_owned(), value.clone());
        }
        Ok(value)
    }

    /// Opens secret `name` for a caller in environment `env` (`tenant/workspace/env`): the
    /// environment's own secret, else the workspace's, else the tenant's.
    pub fn resolve(&self, env: &str, name: &str) -> Result<Opened, VaultError> {
        if !valid_name(name) {
            return Err(VaultError::Invalid("invalid secret name".into()));
        }
        let mut scope = env;
        loop {
            let key = format!("{scope}/{name}");
            if let Some(sealed) = self.sealed_value(&key)? {
                let path = SecretPath {
                    scope: scope.to_owned(),
                    name: name.to_owned(),
                };
                let value = self.open_value(&path, &sealed)?;
                return Ok(Opened {
                    path: key,
                    version: sealed.version,
                    value,
                });
            }
            match scope.rsplit_once('/') {
                Some((parent, _)) => scope = parent,
                None => return Err(VaultError::NotFound(name.to_owned())),
            }
        }
    }

    fn open_value(
        &self,
        path: &SecretPath,
        sealed: &SealedValue,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let corrupt = || VaultError::Corrupt(path.key());
        self.with_keys(|keys| {
            let term = keys.terms.get(&sealed.key_version).ok_or_else(corrupt)?;
            let wrapped = decode_b64(&sealed.wrapped_key, &path.key())?;
            let data_key = term
                .open(
                    &wrapped,
                    &data_key_aad(path, sealed.version, sealed.key_version),
                )
                .map_err(|_| corrupt())?;
            let data_key = Key::from_slice(&data_key).ok_or_else(corrupt)?;
            let ciphertext = decode_b64(&sealed.ciphertext, &path.key())?;
            data_key
                .open(&ciphertext, &value_aad(path, sealed.version))
                .map_err(|_| corrupt())
        })
    }

    /// Opens every stored value (and drops it at once) to prove each is readable.
    pub fn check(&self) -> Result<Check, VaultError> {
        let mut check = Check {
            secrets: 0,
            readable: 0,
            unreadable: Vec::new(),
        };
        for (key, record) in self.store.secrets()? {
            let Some(sealed) = record.current else {
                continue;
            };
            check.secrets += 1;
            let Ok(path) = SecretPath::parse(&key) else {
                check.unreadable.push(key);
                continue;
            };
            match self.open_value(&path, &sealed) {
                Ok(_) => check.readable += 1,
                Err(VaultError::Sealed) => return Err(VaultError::Sealed),
                Err(_) => check.unreadable.push(key),
            }
        }
        Ok(check)
    }

    /// Rotation, first part: stores a new master key version (made active) and re-wraps
    /// every data key with it, one batch per transaction. `fault` (tests only) aborts the
    /// process after that many batches. The caller then commits [`Vault::retire`] with the
    /// request's audit record.
    pub fn rotate(&self, fault: Option<u64>) -> Result<u32, VaultError> {
        let _one = lock(&self.rotating);
        // 1. The new term, stored and active before anything is wrapped with it.
        let (version, term, sealed_term) = self.with_keys(|keys| {
            let version = keys.terms.keys().next_back().copied().unwrap_or(0) + 1;
            let term = Key::random()?;
            let sealed = keys.root.seal(term.bytes(), &term_aad(version))?;
            Ok((version, term, sealed))
        })?;
        let mut record = self
            .store
            .keyring()?
            .ok_or_else(|| VaultError::Corrupt("keyring".into()))?;
        record.terms.push(KeyTerm {
            version,
            created_at: crate::identity::now_secs(),
            sealed: B64.encode(sealed_term),
        });
        record.active = version;
        self.store.put_keyring(&record)?;
        {
            let mut state = write_lock(&self.state);
            match &mut *state {
                State::Open(keys) => {
                    keys.terms.insert(version, term);
                    keys.active = version;
                }
                State::Sealed(_) => return Err(VaultError::Sealed),
            }
        }
        // 2. Re-wrap, a batch per transaction.
        let stale: Vec<String> = self
            .store
            .secrets()?
            .into_iter()
            .filter(|(_, r)| r.current.as_ref().is_some_and(|c| c.key_version != version))
            .map(|(k, _)| k)
            .collect();
        for (n, batch) in stale.chunks(ROTATE_BATCH).enumerate() {
            if fault.is_some_and(|f| n as u64 >= f) {
                tracing::error!("failpoint vault-rotate: aborting mid-rotation");
                std::process::abort();
            }
            self.store.atomically(|tx| {
                for key in batch {
                    self.rewrap(tx, key, version)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                }
                Ok(true)
            })?;
        }
        Ok(version)
    }

    fn rewrap(&self, tx: &impl Tables, key: &str, to: u32) -> Result<(), VaultError> {
        let Some(mut record) = tx.secret(key)? else {
            return Ok(());
        };
        let Some(current) = record.current.as_mut() else {
            return Ok(());
        };
        if current.key_version == to {
            return Ok(());
        }
        let path = SecretPath::parse(key)?;
        self.with_keys(|keys| {
            let corrupt = || VaultError::Corrupt(key.to_owned());
            let old = keys.terms.get(&current.key_version).ok_or_else(corrupt)?;
            let new = keys.terms.get(&to).ok_or_else(corrupt)?;
            let wrapped = decode_b64(&current.wrapped_key, key)?;
            let data_key = old
                .open(
                    &wrapped,
                    &data_key_aad(&path, current.version, current.key_version),
                )
                .map_err(|_| corrupt())?;
            current.wrapped_key =
                B64.encode(new.seal(&data_key, &data_key_aad(&path, current.version, to))?);
            current.key_version = to;
            Ok(())
        })?;
        tx.put_secret(key, &record)?;
        Ok(())
    }

    /// Rotation, last part (in `tx`, with the request's audit record): drops every master
    /// key version but the active one that no stored data key uses any more. Returns the
    /// versions dropped.
    pub fn retire(&self, tx: &impl Tables) -> Result<Vec<u32>, VaultError> {
        let mut record = tx
            .keyring()?
            .ok_or_else(|| VaultError::Corrupt("keyring".into()))?;
        let used: std::collections::BTreeSet<u32> = tx
            .secrets()?
            .into_iter()
            .filter_map(|(_, r)| r.current.map(|c| c.key_version))
            .collect();
        let active = record.active;
        let retired: Vec<u32> = record
            .terms
            .iter()
            .map(|t| t.version)
            .filter(|v| *v != active && !used.contains(v))
            .collect();
        record.terms.retain(|t| !retired.contains(&t.version));
        tx.put_keyring(&record)?;
        Ok(retired)
    }

    /// Drops the credentials rendered from secrets (at a seal or an unseal).
    fn forget_prepared(&self) {
        lock(&self.prepared).forget();
    }

    /// Forgets the in-memory keys of retired versions (after [`Vault::retire`] committed).
    pub fn forget(&self, retired: &[u32]) {
        if let State::Open(keys) = &mut *write_lock(&self.state) {
            for v in retired {
                keys.terms.remove(v);
            }
        }
    }
}

fn check_passphrase(passphrase: &[u8]) -> Result<(), VaultError> {
    if passphrase.len() < 12 {
        return Err(VaultError::Invalid(
            "a vault passphrase has at least 12 characters".into(),
        ));
    }
    Ok(())
}

fn open_terms(root: Key, record: &KeyringRecord) -> Result<Keys, VaultError> {
    let mut terms = BTreeMap::new();
    for term in &record.terms {
        let sealed = decode_b64(&term.sealed, "keyring")?;
        let bytes = root
            .open(&sealed, &term_aad(term.version))
            .map_err(|_| VaultError::WrongKey)?;
        let key = Key::from_slice(&bytes).ok_or_else(|| VaultError::Corrupt("keyring".into()))?;
        terms.insert(term.version, key);
    }
    if !terms.contains_key(&record.active) {
        return Err(VaultError::Corrupt("keyring".into()));
    }
    Ok(Keys {
        root,
        active: record.active,
        terms,
    })
}

fn push_history(record: &mut SecretRecord, version: u32, action: &str, by: &str) {
    record.history.push(SecretVersion {
        version,
        action: action.to_owned(),
        at: crate::identity::now_secs(),
        by: by.to_owned(),
    });
    if record.history.len() > SECRET_HISTORY_KEPT {
        let excess = record.history.len() - SECRET_HISTORY_KEPT;
        record.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(dir: &std::path::Path) -> (Arc<Store>, Vault) {
        let store = Arc::new(Store::open(&dir.join("warden.redb")).unwrap());
        let vault = Vault::open(
            store.clone(),
            VaultConfig {
                key_file: dir.join("vault.key"),
                passphrase: false,
            },
        )
        .unwrap();
        (store, vault)
    }

    fn set(store: &Store, vault: &Vault, path: &str, value: &str) -> u32 {
        vault
            .put(
                store,
                &SecretPath::parse(path).unwrap(),
                value.as_bytes(),
                "admin:t",
            )
            .unwrap()
    }

    #[test]
    fn values_resolve_most_specific_first_and_are_never_stored_plain() {
        let dir = tempfile::tempdir().unwrap();
        let (store, vault) = vault(dir.path());
        set(&store, &vault, "acme/k", "tenant-value-1");
        set(&store, &vault, "acme/core/k", "workspace-value-1");
        assert_eq!(set(&store, &vault, "acme/core/prod/k", "env-value-1"), 1);
        assert_eq!(set(&store, &vault, "acme/core/prod/k", "env-value-2"), 2);
        let got = vault.resolve("acme/core/prod", "k").unwrap();
        assert_eq!((got.path.as_str(), got.version), ("acme/core/prod/k", 2));
        assert_eq!(got.value.as_slice(), b"env-value-2");
        assert_eq!(
            vault
                .resolve("acme/core/dev", "k")
                .unwrap()
                .value
                .as_slice(),
            b"workspace-value-1"
        );
        assert_eq!(
            vault
                .resolve("acme/other/dev", "k")
                .unwrap()
                .value
                .as_slice(),
            b"tenant-value-1"
        );
        assert!(matches!(
            vault.resolve("beta/core/dev", "k"),
            Err(VaultError::NotFound(_))
        ));
        assert!(!format!("{got:?}").contains("env-value"));
        drop((vault, store));
        let bytes = std::fs::read(dir.path().join("warden.redb")).unwrap();
        for v in ["tenant-value-1", "env-value-2", "workspace-value-1"] {
            assert!(
                memchr::memmem::find(&bytes, v.as_bytes()).is_none(),
                "{v} in the db"
            );
        }
    }

    #[test]
    fn tampered_moved_or_wrongly_keyed_ciphertexts_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let (store, vault) = vault(dir.path());
        set(&store, &vault, "acme/core/prod/a", "value-of-a-123");
        set(&store, &vault, "acme/core/prod/b", "value-of-b-123");
        let a = store.secret("acme/core/prod/a").unwrap().unwrap();
        // Moved under another name, and under another scope.
        store.put_secret("acme/core/prod/b", &a).unwrap();
        store.put_secret("acme/core/dev/a", &a).unwrap();
        vault.cache.lock().unwrap().0 = u64::MAX;
        assert!(matches!(
            vault.resolve("acme/core/prod", "b"),
            Err(VaultError::Corrupt(_))
        ));
        assert!(matches!(
            vault.resolve("acme/core/dev", "a"),
            Err(VaultError::Corrupt(_))
        ));
        // One flipped ciphertext byte.
        let mut flipped = a.clone();
        let c = flipped.current.as_mut().unwrap();
        let mut bytes = B64.decode(&c.ciphertext).unwrap();
        bytes[30] ^= 1;
        c.ciphertext = B64.encode(bytes);
        store.put_secret("acme/core/prod/a", &flipped).unwrap();
        assert!(matches!(
            vault.resolve("acme/core/prod", "a"),
            Err(VaultError::Corrupt(_))
        ));
        let check = vault.check().unwrap();
        assert_eq!(check.readable, 0);
        assert_eq!(check.unreadable.len(), 3);
        // Sealed: nothing opens, nothing can be set.
        vault.seal();
        assert!(matches!(
            vault.resolve("acme/core/prod", "a"),
            Err(VaultError::Sealed)
        ));
        assert!(matches!(
            vault.put(
                &*store,
                &SecretPath::parse("acme/x").unwrap(),
                b"12345678",
                "t"
            ),
            Err(VaultError::Sealed)
        ));
        vault.unseal(None).unwrap();
        // A wrong key file: the keyring does not open.
        drop(vault);
        let other = Key::random().unwrap();
        crate::datadir::write_private_atomic(
            &dir.path().join("vault.key"),
            B64.encode(other.bytes()).as_bytes(),
        )
        .unwrap();
        let reopened = Vault::open(
            store.clone(),
            VaultConfig {
                key_file: dir.path().join("vault.key"),
                passphrase: false,
            },
        )
        .unwrap();
        assert!(reopened.is_sealed());
        assert!(matches!(reopened.unseal(None), Err(VaultError::WrongKey)));
    }

    #[test]
    fn rotation_rewraps_every_value_and_retires_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let (store, vault) = vault(dir.path());
        for i in 0..40 {
            set(
                &store,
                &vault,
                &format!("acme/core/prod/s{i}"),
                &format!("value-{i:04}"),
            );
        }
        let v = vault.rotate(None).unwrap();
        assert_eq!(v, 2);
        let retired = store
            .atomically(|tx| Ok(!vault.retire(tx).unwrap().is_empty()))
            .unwrap();
        assert!(retired);
        vault.forget(&[1]);
        assert_eq!(vault.status().unwrap().key_versions, vec![2]);
        for i in 0..40 {
            let got = vault.resolve("acme/core/prod", &format!("s{i}")).unwrap();
            assert_eq!(got.value.as_slice(), format!("value-{i:04}").as_bytes());
        }
        assert_eq!(vault.check().unwrap().readable, 40);
    }

    #[test]
    fn a_passphrase_vault_starts_sealed_and_opens_only_with_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("warden.redb")).unwrap());
        let config = VaultConfig {
            key_file: dir.path().join("vault.key"),
            passphrase: true,
        };
        let vault = Vault::open(store.clone(), config.clone()).unwrap();
        assert!(vault.is_sealed());
        assert!(matches!(
            vault.unseal(Some(b"short")),
            Err(VaultError::Invalid(_))
        ));
        vault.unseal(Some(b"correct horse battery")).unwrap();
        set(&store, &vault, "acme/k", "passphrase-protected");
        drop(vault);
        assert!(!dir.path().join("vault.key").exists());
        let vault = Vault::open(store.clone(), config).unwrap();
        assert!(vault.is_sealed());
        assert!(matches!(
            vault.unseal(Some(b"wrong horse battery")),
            Err(VaultError::WrongKey)
        ));
        vault.unseal(Some(b"correct horse battery")).unwrap();
        assert_eq!(
            vault.resolve("acme/a/b", "k").unwrap().value.as_slice(),
            b"passphrase-protected"
        );
    }
}
