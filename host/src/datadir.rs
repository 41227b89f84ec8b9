//! The data directory: the name of every file and folder warden keeps in it, and the
//! helpers that create them private to their owner.
//!
//! Invariants: the directory and every folder in it are 0700; every file holding keys,
//! tokens or records is created 0600 (and written atomically where a torn write would lose
//! a key); no other module names a file of the data directory.
//!
//! Threat: other local users reading keys, tokens or the audit trail.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The embedded store (redb).
pub const STORE_FILE: &str = "warden.redb";
/// The audit chain's key (32 bytes).
pub const AUDIT_KEY_FILE: &str = "audit.key";
/// The audit trail's write-ahead journal, beside the store.
pub const AUDIT_JOURNAL_FILE: &str = "audit.journal";
/// The bootstrap admin token, for the CLI.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The running gateway's base URL, for the CLI.
pub const ENDPOINT_FILE: &str = "endpoint";
/// Package files of skills installed with `warden skill install` (by SHA-256; earlier
/// versions are kept for rollback).
pub const PACKAGES_DIR: &str = "packages";
/// The compile cache.
pub const COMPILED_DIR: &str = "compiled";
/// The compile cache's MAC key, inside [`COMPILED_DIR`].
pub const CACHE_KEY_FILE: &str = "cache.key";
/// The vault's root key in `file` mode (0600; created on first start).
pub const VAULT_KEY_FILE: &str = "vault.key";

/// The default data directory: `$XDG_DATA_HOME/warden` or `~/.local/share/warden`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os(crate::env::XDG_DATA_HOME)
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os(crate::env::HOME).map(|h| PathBuf::from(h).join(".local/share"))
        })
        .unwrap_or_else(|| PathBuf::from("."))
        .join("warden")
}

/// The journal that belongs to the store at `store_path`.
pub fn journal_of(store_path: &Path) -> PathBuf {
    store_path.with_file_name(AUDIT_JOURNAL_FILE)
}

/// Creates `dir` (and parents) and restricts it to its owner (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Options that create a new file readable only by its owner (0600).
pub fn private_file_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Writes `bytes` to `path` through a temporary file, mode 0600, synced, then renamed.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = path.with_extension(format!("tmp{}", u64::from_le_bytes(nonce)));
    let mut options = private_file_options();
    options.write(true).create_new(true);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
