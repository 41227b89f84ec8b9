//! The hash chain: each stored record is `<mac hex (64)><record JSON>`, its MAC keyed
//! BLAKE3 over the exact JSON (sequence number and previous MAC included), and verification
//! names the first record whose MAC, link or sequence is wrong.
//!
//! Invariant: the MAC covers the exact stored bytes; the key never leaves this module.
//!
//! Threat: silent tampering with the trail (changed, reordered or deleted records).

use super::{AuditError, AuditRecord};
use crate::storage::{Store, StoreError};
use serde::Serialize;
use std::path::Path;

/// MAC of the record before the first one.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain's secret key.
#[derive(Clone)]
pub struct ChainKey(pub(super) [u8; 32]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// Loads `path`, creating it (0600, 32 random bytes) if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let err = |e: &dyn std::fmt::Display| AuditError::Key(format!("{}: {e}", path.display()));
        // Created once; a key of the wrong length is an error, never replaced (a new key
        // would make every existing record unverifiable).
        if !path.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| err(&e))?;
            crate::datadir::write_private_atomic(path, &key).map_err(|e| err(&e))?;
        }
        let bytes = std::fs::read(path).map_err(|e| err(&e))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| err(&"is not 32 bytes long"))?;
        Ok(Self(key))
    }

    pub(super) fn mac(&self, json: &[u8]) -> String {
        blake3::keyed_hash(&self.0, json).to_hex().to_string()
    }
}

/// Chains a record's JSON body (serialized without `seq` and `prev`) after `prev`: the
/// stored JSON is the body with `"seq"` and `"prev"` spliced in front, and the MAC covers
/// those exact bytes. Returns (mac, stored bytes).
pub(super) fn seal(key: &ChainKey, seq: u64, prev: &str, body: &[u8]) -> (String, Vec<u8>) {
    let fields = body.get(1..).unwrap_or_default();
    let mut json = Vec::with_capacity(body.len() + 100);
    json.extend_from_slice(b"{\"seq\":");
    json.extend_from_slice(seq.to_string().as_bytes());
    json.extend_from_slice(b",\"prev\":\"");
    json.extend_from_slice(prev.as_bytes());
    json.push(b'"');
    if fields.len() > 1 {
        json.push(b',');
    }
    json.extend_from_slice(if fields.is_empty() { b"}" } else { fields });
    let mac = key.mac(&json);
    let mut stored = Vec::with_capacity(64 + json.len());
    stored.extend_from_slice(mac.as_bytes());
    stored.extend_from_slice(&json);
    (mac, stored)
}

/// Splits stored bytes into (mac, json).
pub(super) fn unseal(bytes: &[u8]) -> Option<(&str, &[u8])> {
    if bytes.len() < 64 {
        return None;
    }
    let (mac, json) = bytes.split_at(64);
    Some((std::str::from_utf8(mac).ok()?, json))
}

/// Decodes a stored record without checking its MAC.
pub fn decode(bytes: &[u8]) -> Option<AuditRecord> {
    let (_, json) = unseal(bytes)?;
    serde_json::from_slice(json).ok()
}

/// The result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// The first record that does not verify, with why.
    pub first_broken: Option<Broken>,
}

/// A record that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// Its sequence number.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// Walks the whole chain and names the first record that does not verify.
pub fn verify(store: &Store, key: &ChainKey) -> Result<Verification, StoreError> {
    let mut prev = GENESIS.to_owned();
    let mut expected = 1u64;
    let mut records = 0u64;
    let mut broken = None;
    store.scan_audit(0, |seq, bytes| {
        records += 1;
        let fail = |reason: &str| {
            Some(Broken {
                seq,
                reason: reason.to_owned(),
            })
        };
        broken = if seq != expected {
            fail(&format!(
                "expected record {expected} here (a record is missing)"
            ))
        } else {
            match unseal(bytes) {
                None => fail("record is truncated"),
                Some((mac, json)) => {
                    if key.mac(json) != mac {
                        fail("MAC does not match the record's content (modified)")
                    } else {
                        match serde_json::from_slice::<AuditRecord>(json) {
                            Err(_) => fail("record does not decode"),
                            Ok(r) if r.seq != seq => fail("record's sequence number was changed"),
                            Ok(r) if r.prev != prev => {
                                fail("chain link to the previous record is broken")
                            }
                            Ok(_) => {
                                prev = mac.to_owned();
                                None
                            }
                        }
                    }
                }
            }
        };
        expected = seq + 1;
        broken.is_none()
    })?;
    Ok(Verification {
        records,
        first_broken: broken,
    })
}
