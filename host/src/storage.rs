//! The embedded store (redb): the only module that imports redb, and the one place every
//! table is defined.
//!
//! Invariants: the database file is created with mode 0600 inside a 0700 data directory;
//! every write is a committed transaction with redb's default immediate durability, so a
//! write that returned survives a crash. Token secrets are never stored: only their hashes.
//!
//! Threat: credential theft from the data directory, and torn state after a crash.

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Token hash (hex) -> token record (JSON).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// Installed skill name -> installed skill record (JSON).
const SKILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("skills");

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
}

/// A stored agent token (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The agent this token authenticates.
    pub agent: String,
    /// Unix seconds of issue.
    pub issued_at: u64,
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
}

/// The embedded store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating with mode 0600 if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Db {
            path: path.to_owned(),
            message: e.to_string(),
        };
        if !path.exists() {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options.open(path).map_err(|e| err(&e))?;
        }
        let db = Database::create(path).map_err(|e| err(&e))?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        // Create the tables up front so readers never see "table does not exist".
        store.write(|txn| {
            txn.open_table(TOKENS)?;
            txn.open_table(SKILLS)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn db_err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        f(&txn).map_err(|e| self.db_err(e))?;
        txn.commit().map_err(|e| self.db_err(e))
    }

    fn get<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(table).map_err(|e| self.db_err(e))?;
        match table.get(key).map_err(|e| self.db_err(e))? {
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.to_string())),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.write(|txn| {
            txn.open_table(table)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Stores a token record under its hash.
    pub fn put_token(&self, hash: &str, record: &TokenRecord) -> Result<(), StoreError> {
        self.put(TOKENS, hash, record)
    }

    /// Looks up a token by hash.
    pub fn token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get(TOKENS, hash)
    }

    /// Number of stored tokens.
    pub fn token_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(TOKENS).map_err(|e| self.db_err(e))?;
        table.len().map_err(|e| self.db_err(e))
    }

    /// Records an installed skill.
    pub fn put_skill(&self, name: &str, record: &SkillRecord) -> Result<(), StoreError> {
        self.put(SKILLS, name, record)
    }

    /// All installed skills, by name.
    pub fn skills(&self) -> Result<Vec<(String, SkillRecord)>, StoreError> {
        use redb::ReadableTable;
        let txn = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = txn.open_table(SKILLS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let record = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((k.value().to_owned(), record));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_skills_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warden.redb");
        {
            let store = Store::open(&path).unwrap();
            let rec = TokenRecord {
                agent: "local".into(),
                issued_at: 7,
            };
            store.put_token("abc", &rec).unwrap();
            store
                .put_skill(
                    "text",
                    &SkillRecord {
                        namespace: "warden".into(),
                        digest: "d".into(),
                        component: "skills/text.wasm".into(),
                    },
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.token("abc").unwrap().unwrap().agent, "local");
        assert_eq!(store.token("nope").unwrap(), None);
        assert_eq!(store.token_count().unwrap(), 1);
        assert_eq!(store.skills().unwrap()[0].0, "text");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
