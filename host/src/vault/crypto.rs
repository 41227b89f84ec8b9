//! The vault's cryptography: 256-bit keys that wipe themselves, AES-256-GCM sealing with
//! associated data, and the Argon2id derivation of a root key from a passphrase.
//!
//! Invariants: every sealed blob is `nonce (12 random bytes) || ciphertext || tag`; nonces
//! are drawn from the OS for every seal. Random 96-bit nonces are safe while a key seals
//! far fewer than 2^32 messages: a data key seals exactly one value, a master key version
//! one data key per secret version (rotation starts a new one), the root key one entry per
//! master key version; the
//! associated data is built by [`aad`] from length-prefixed parts behind a domain label,
//! so no two different contexts produce the same bytes; key bytes and opened plaintexts
//! live in [`Zeroizing`] buffers and are wiped when dropped; nothing here formats a key or
//! a plaintext (Debug prints a placeholder).
//!
//! Threat: a ciphertext moved to another secret or scope, flipped bytes, and key material
//! lingering in memory or leaking through Debug output.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce.
const NONCE_LEN: usize = 12;

/// Why sealing or opening failed. Never carries key or plaintext bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The blob does not authenticate under this key and context (tampered, moved,
    /// or the wrong key).
    #[error("the ciphertext does not authenticate (tampered, moved, or the wrong key)")]
    Unauthentic,
    /// The operating system's random source failed.
    #[error("no randomness available")]
    Random,
    /// The key derivation failed.
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// A 256-bit key, wiped on drop.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([hidden])")
    }
}

impl Key {
    /// A fresh random key.
    pub fn random() -> Result<Self, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut()).map_err(|_| CryptoError::Random)?;
        Ok(Self(bytes))
    }

    /// A key from exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return None;
        }
        key.copy_from_slice(bytes);
        Some(Self(key))
    }

    /// The key's bytes (to seal it under another key, or write the key file).
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }

    /// Seals `plaintext` bound to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Unauthentic)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a blob sealed by [`Key::seal`] under the same key and `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Unauthentic);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unauthentic)
    }
}

/// Associated data: a domain label, then each part with its length, so that
/// `("a/b", "c")` and `("a", "b/c")` never collide.
pub fn aad(label: &str, parts: &[&str]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(label.len() + 1 + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(label.as_bytes());
    out.push(0);
    for part in parts {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Argon2id parameters (OWASP's first recommendation: 19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

/// Derives a root key from a passphrase with Argon2id.
pub fn derive(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Key, CryptoError> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(params.m_kib, params.t, params.p, Some(KEY_LEN))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(Key(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blobs_open_only_in_their_context() {
        let key = Key::random().unwrap();
        let ctx = aad("warden/test", &["acme/core", "stripe_key"]);
        let sealed = key.seal(b"sk_live_123", &ctx).unwrap();
        assert_eq!(key.open(&sealed, &ctx).unwrap().as_slice(), b"sk_live_123");
        // Another context, another key, a flipped byte, a short blob: refused.
        let moved = aad("warden/test", &["acme", "core/stripe_key"]);
        assert_eq!(key.open(&sealed, &moved), Err(CryptoError::Unauthentic));
        let other = Key::random().unwrap();
        assert_eq!(other.open(&sealed, &ctx), Err(CryptoError::Unauthentic));
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert_eq!(
                key.open(&flipped, &ctx),
                Err(CryptoError::Unauthentic),
                "byte {i}"
            );
        }
        assert_eq!(key.open(&sealed[..30], &ctx), Err(CryptoError::Unauthentic));
        // Nonces are fresh: sealing twice gives different blobs.
        assert_ne!(sealed, key.seal(b"sk_live_123", &ctx).unwrap());
        assert_eq!(format!("{key:?}"), "Key([hidden])");
    }

    #[test]
    fn derivation_depends_on_passphrase_and_salt() {
        let p = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let a = derive(b"correct horse", b"0123456789abcdef", p).unwrap();
        let b = derive(b"correct horse", b"0123456789abcdef", p).unwrap();
        let c = derive(b"correct horsf", b"0123456789abcdef", p).unwrap();
        let d = derive(b"correct horse", b"0123456789abcdeg", p).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_ne!(a.bytes(), c.bytes());
        assert_ne!(a.bytes(), d.bytes());
    }
}
