//! On-disk cache of compiled components, keyed by content digest and engine configuration.
//!
//! Compiling a component with Cranelift takes tens of milliseconds; loading a cached
//! artifact with the mmap deserializer takes about a hundred microseconds. Artifacts are
//! written only after the component passed contract validation, so a rejected input never
//! leaves anything behind.
//!
//! Invariants:
//! - Only artifacts this host compiled are loaded: each artifact has a sidecar MAC (keyed
//!   BLAKE3 with a 32-byte key created on first use, file mode 0600) checked in constant
//!   time before `Component::deserialize_file`, which is `unsafe` precisely because a forged
//!   artifact is arbitrary native code. A missing or wrong MAC means "recompile", never "load".
//! - The file name binds the source digest to the engine's compatibility hash, so an artifact
//!   from another wasmtime version or configuration (fuel on/off) is never even opened.
//! - Writes go to a temporary file and are renamed into place: a crash leaves the old state
//!   or the new one.
//!
//! Threat: code injection through a planted or corrupted `.cwasm` file.

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Errors of the artifact cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directory or key could not be prepared.
    #[error("compile cache at {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Randomness for the cache key was unavailable.
    #[error("compile cache key: {0}")]
    Random(String),
}

/// A directory of compiled artifacts owned by this host.
#[derive(Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_tag: String,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

impl ArtifactCache {
    /// Opens (creating if needed, mode 0700) the cache directory and its MAC key.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        create_private_dir(dir)?;
        let key_path = dir.join(crate::datadir::CACHE_KEY_FILE);
        let key = match fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                key
            }
            Ok(_) | Err(_) => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| CacheError::Random(e.to_string()))?;
                write_private_atomic(&key_path, &key)?;
                // Artifacts MACed with a previous key are now unverifiable: they will be
                // recompiled and overwritten on use.
                key
            }
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            key,
            engine_tag: format!("{:016x}", hasher.finish()),
        })
    }

    fn paths(&self, digest: &str) -> (PathBuf, PathBuf) {
        let base = format!("{digest}-{}", self.engine_tag);
        (
            self.dir.join(format!("{base}.cwasm")),
            self.dir.join(format!("{base}.mac")),
        )
    }

    /// Loads the artifact for `digest` if present and authentic. Any doubt returns `None`.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let (artifact, mac_path) = self.paths(digest);
        let mac = fs::read(&mac_path).ok()?;
        let bytes = fs::read(&artifact).ok()?;
        let expected = blake3::keyed_hash(&self.key, &bytes);
        let mac: [u8; 32] = mac.try_into().ok()?;
        // blake3::Hash equality is constant-time.
        if expected != blake3::Hash::from_bytes(mac) {
            tracing::warn!(path = %artifact.display(), "compiled artifact failed its MAC; recompiling");
            return None;
        }
        drop(bytes);
        // SAFETY: the artifact's MAC proves this host wrote it (the key never leaves the
        // 0600 key file), and the file name pins the engine compatibility hash. The window
        // between the check and the mmap is only open to someone who can already write the
        // host's private cache directory.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(engine, &artifact) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %artifact.display(), error = %e, "cached artifact unusable; recompiling");
                None
            }
        }
    }

    /// Stores a compiled component for `digest`.
    pub fn store(&self, digest: &str, component: &Component) -> Result<(), CacheError> {
        let (artifact, mac_path) = self.paths(digest);
        let bytes = component.serialize().map_err(|e| CacheError::Io {
            path: artifact.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mac = blake3::keyed_hash(&self.key, &bytes);
        write_private_atomic(&mac_path, mac.as_bytes())?;
        write_private_atomic(&artifact, &bytes)?;
        Ok(())
    }

    /// Whether an artifact exists for `digest` (for tests and diagnostics).
    pub fn contains(&self, digest: &str) -> bool {
        self.paths(digest).0.exists()
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Creates `dir` private to its owner (see [`crate::datadir`]).
fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    crate::datadir::create_private_dir(dir).map_err(io_err(dir))
}

/// Writes a private file atomically (see [`crate::datadir`]).
fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    crate::datadir::write_private_atomic(path, bytes).map_err(io_err(path))
}
