//! Lower-case hex and SHA-256 digests: how packages, blobs, keys and logs are named.
//!
//! Invariant: one spelling of a digest everywhere (lower-case hex), so names compare as
//! strings. A leaf module: signatures, the store and Sigstore verification all use it.

use sha2::{Digest as _, Sha256};

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}
