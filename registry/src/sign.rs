//! Signing and verifying skill packages, and the trust policy that says which signers may
//! sign for which namespaces.
//!
//! A package's signature (`signature.json`) covers the manifest's bytes exactly as stored;
//! the manifest holds the SHA-256 of every other entry, so one signature covers the whole
//! package. ed25519 signatures are made over [`SIGNING_CONTEXT`] followed by the manifest
//! and checked with `verify_strict` (no malleable or small-order encodings).
//!
//! Invariants:
//! - Deny by default: a [`TrustPolicy`] trusts nobody until a signer is added for a
//!   namespace, and a signer trusted for one namespace is not trusted for another.
//! - A secret key lives in zeroized memory, is never printed, and its file is written 0600
//!   by the caller ([`SecretKey::to_file_text`] returns wiped memory).
//!
//! Threat: a package signed by a key the operator never trusted, by a trusted key for a
//! namespace it does not own, or altered after signing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

use crate::sigstore::SigstoreRoot;

/// Domain separation for package signatures: a signature made for anything else never
/// verifies as a package signature.
pub const SIGNING_CONTEXT: &[u8] = b"warden skill package v1\n";
/// Domain separation for an owner's statements to a registry (key changes, yanks).
pub const STATEMENT_CONTEXT: &[u8] = b"warden registry statement v1\n";
/// Format version of `signature.json`.
pub const SIGNATURE_FORMAT: u32 = 1;
/// Prefix of a public key's text form.
pub const PUBLIC_PREFIX: &str = "ed25519:";
/// Prefix of the line that holds a secret key in a key file.
const SECRET_PREFIX: &str = "ed25519-secret:";

/// Why signing or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// A key is malformed.
    #[error("{0}")]
    BadKey(String),
    /// The package has no signature.
    #[error("the package is not signed")]
    NotSigned,
    /// `signature.json` is malformed.
    #[error("signature.json: {0}")]
    Malformed(String),
    /// A Sigstore bundle or trusted root is refused.
    #[error("{0}")]
    Sigstore(String),
    /// The signature does not verify: the manifest was changed after signing, or it was
    /// signed by another key than the one it names.
    #[error(
        "the signature does not verify: the package was altered after signing or signed with another key than {0}"
    )]
    BadSignature(String),
    /// Nobody is trusted for the namespace.
    #[error(
        "untrusted namespace `{0}`: no signer is trusted for it (warden trust add {0} --key ...)"
    )]
    UntrustedNamespace(String),
    /// The signer is trusted nowhere.
    #[error("unknown signer {signer}: it is not trusted for namespace `{namespace}` or any other")]
    UnknownSigner {
        /// The signer.
        signer: String,
        /// The package's namespace.
        namespace: String,
    },
    /// The signer is trusted, but not for this namespace.
    #[error(
        "signer {signer} is not trusted for namespace `{namespace}` (it is trusted for {trusted_for})"
    )]
    WrongNamespace {
        /// The signer.
        signer: String,
        /// The package's namespace.
        namespace: String,
        /// The namespaces it is trusted for.
        trusted_for: String,
    },
}

/// An ed25519 public key; its text form is `ed25519:<base64>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Short identifier: the first 16 hex digits of the SHA-256 of the key.
    pub fn key_id(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))[..16].to_owned()
    }

    /// Verifies an ed25519 package signature over `manifest`.
    pub fn verify(&self, manifest: &[u8], signature: &[u8]) -> Result<(), SignError> {
        let sig: [u8; 64] = signature
            .try_into()
            .map_err(|_| SignError::Malformed("an ed25519 signature is 64 bytes".into()))?;
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(manifest);
        self.0
            .verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| SignError::BadSignature(self.to_string()))
    }
}

impl PublicKey {
    /// Verifies an owner's statement (see [`SecretKey::sign_statement`]).
    pub fn verify_statement(&self, statement: &str, signature_b64: &str) -> Result<(), SignError> {
        let sig: [u8; 64] = B64
            .decode(signature_b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                SignError::Malformed("a statement signature is 64 bytes of base64".into())
            })?;
        let mut msg = STATEMENT_CONTEXT.to_vec();
        msg.extend_from_slice(statement.as_bytes());
        self.0
            .verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| SignError::BadSignature(self.to_string()))
    }
}

/// The statement an owner signs to add or revoke a namespace key: it names the registry
/// (its id) and the namespace's current revision, so it applies once, on that registry,
/// and cannot be replayed after any later change or on another registry.
pub fn key_statement(
    registry: &str,
    add: bool,
    namespace: &str,
    key: &PublicKey,
    revision: u64,
) -> String {
    let action = if add { "key.add" } else { "key.revoke" };
    format!(
        "{action}\nregistry={registry}\nnamespace={namespace}\nkey={key}\nrevision={revision}\n"
    )
}

/// The statement an owner signs to yank a version (on the registry `registry` only).
pub fn yank_statement(
    registry: &str,
    namespace: &str,
    name: &str,
    version: &str,
    reason: &str,
) -> String {
    format!(
        "yank\nregistry={registry}\npackage={namespace}/{name}@{version}\nreason={}\n",
        reason.replace('\n', " ")
    )
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", B64.encode(self.0.as_bytes()))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, SignError> {
        let bad = || {
            SignError::BadKey(format!(
                "{s:?} is not a public key (ed25519:<base64 of 32 bytes>)"
            ))
        };
        let b64 = s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?;
        let bytes: [u8; 32] = B64
            .decode(b64)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        if key.is_weak() {
            return Err(bad());
        }
        Ok(Self(key))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signing key (wiped when dropped).
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl SecretKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<Self, SignError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut *seed)
            .map_err(|e| SignError::BadKey(format!("no randomness available: {e}")))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Reads a key file's text (comment lines start with `#`).
    pub fn from_file_text(text: &str) -> Result<Self, SignError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(SECRET_PREFIX))
            .ok_or_else(|| {
                SignError::BadKey(
                    "not a warden signing key file (make one with `warden key generate`)".into(),
                )
            })?;
        let bytes = Zeroizing::new(
            B64.decode(&line[SECRET_PREFIX.len()..])
                .map_err(|_| SignError::BadKey("the signing key is not valid base64".into()))?,
        );
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SignError::BadKey("the signing key is not 32 bytes".into()))?,
        );
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The key file's text: a comment naming the public key, then the secret line.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(format!(
            "# warden package signing key (ed25519). Keep this file secret.\n# public key: {}\n{SECRET_PREFIX}{}\n",
            self.public(),
            Zeroizing::new(B64.encode(*seed)).as_str()
        ))
    }

    /// Signs an owner's statement to a registry (base64), under [`STATEMENT_CONTEXT`], so
    /// it can never pass for a package signature.
    pub fn sign_statement(&self, statement: &str) -> String {
        let mut msg = STATEMENT_CONTEXT.to_vec();
        msg.extend_from_slice(statement.as_bytes());
        B64.encode(self.0.sign(&msg).to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs a manifest.
    pub fn sign(&self, manifest: &[u8]) -> SignatureFile {
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(manifest);
        let sig = self.0.sign(&msg);
        SignatureFile {
            format: SIGNATURE_FORMAT,
            ed25519: Some(Ed25519Signature {
                public_key: self.public(),
                signature: B64.encode(sig.to_bytes()),
            }),
            sigstore: None,
        }
    }
}

/// The `signature.json` entry: exactly one of its signature kinds is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// [`SIGNATURE_FORMAT`].
    pub format: u32,
    /// An ed25519 signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519: Option<Ed25519Signature>,
    /// A Sigstore bundle (JSON), verified against a pinned trusted root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigstore: Option<serde_json::Value>,
}

/// An ed25519 signature and the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ed25519Signature {
    /// The signing key's public half.
    pub public_key: PublicKey,
    /// The signature, base64.
    pub signature: String,
}

/// Who signed a package, once the signature verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signer {
    /// An ed25519 key.
    Key(PublicKey),
    /// A Sigstore identity: certificate subject alternative name and OIDC issuer.
    Sigstore {
        /// Subject alternative name (an email or a workflow URI).
        san: String,
        /// OIDC issuer.
        issuer: String,
    },
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(k) => write!(f, "{k} (key id {})", k.key_id()),
            Self::Sigstore { san, issuer } => write!(f, "sigstore {san} (issuer {issuer})"),
        }
    }
}

impl SignatureFile {
    /// Parses `signature.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SignError> {
        let s: Self =
            serde_json::from_slice(bytes).map_err(|e| SignError::Malformed(e.to_string()))?;
        if s.format != SIGNATURE_FORMAT {
            return Err(SignError::Malformed(format!(
                "format {} is not supported",
                s.format
            )));
        }
        if s.ed25519.is_some() == s.sigstore.is_some() {
            return Err(SignError::Malformed(
                "exactly one of `ed25519` and `sigstore` must be set".into(),
            ));
        }
        Ok(s)
    }

    /// The entry's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Checks an ed25519 signature over `manifest` cryptographically (not whether the
    /// signer is trusted: see [`TrustPolicy::check`]) and says who signed. A Sigstore
    /// bundle needs a trusted root: see [`SignatureFile::verify_with`].
    pub fn verify(&self, manifest: &[u8]) -> Result<Signer, SignError> {
        self.verify_with(manifest, None)
    }

    /// Checks the signature over `manifest`, a Sigstore bundle against `root`, and says
    /// who signed.
    pub fn verify_with(
        &self,
        manifest: &[u8],
        root: Option<&SigstoreRoot>,
    ) -> Result<Signer, SignError> {
        if let Some(e) = &self.ed25519 {
            let sig = B64
                .decode(&e.signature)
                .map_err(|_| SignError::Malformed("the ed25519 signature is not base64".into()))?;
            e.public_key.verify(manifest, &sig)?;
            return Ok(Signer::Key(e.public_key));
        }
        match (&self.sigstore, root) {
            (Some(bundle), Some(root)) => root
                .verify(manifest, bundle)
                .map(|id| Signer::Sigstore {
                    san: id.san,
                    issuer: id.issuer,
                })
                .map_err(|e| SignError::Sigstore(e.to_string())),
            _ => Err(SignError::Sigstore(
                "this package carries a Sigstore bundle, and no Sigstore trusted root is pinned to verify it against (warden trust sigstore-root FILE)".into(),
            )),
        }
    }

    /// A signature file holding a Sigstore bundle (its JSON).
    pub fn sigstore(bundle: serde_json::Value) -> Self {
        Self {
            format: SIGNATURE_FORMAT,
            ed25519: None,
            sigstore: Some(bundle),
        }
    }
}

/// A signer a namespace trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustedSigner {
    /// An ed25519 key.
    Key(PublicKey),
    /// A Sigstore identity (exact SAN and issuer).
    Sigstore {
        /// Subject alternative name.
        san: String,
        /// OIDC issuer.
        issuer: String,
    },
}

impl TrustedSigner {
    fn matches(&self, signer: &Signer) -> bool {
        match (self, signer) {
            (Self::Key(a), Signer::Key(b)) => a == b,
            (Self::Sigstore { san, issuer }, Signer::Sigstore { san: s, issuer: i }) => {
                san == s && issuer == i
            }
            _ => false,
        }
    }
}

/// Which signers are trusted for which namespaces. Deny by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Namespace -> its trusted signers.
    pub namespaces: BTreeMap<String, Vec<TrustedSigner>>,
    /// The pinned Sigstore trusted root Sigstore bundles are verified against (none: every
    /// Sigstore-signed package is refused).
    pub sigstore_root: Option<std::sync::Arc<SigstoreRoot>>,
}

impl TrustPolicy {
    /// Trusts `signer` for `namespace`.
    pub fn trust(&mut self, namespace: &str, signer: TrustedSigner) {
        let list = self.namespaces.entry(namespace.to_owned()).or_default();
        if !list.contains(&signer) {
            list.push(signer);
        }
    }

    /// Whether `signer` may sign for `namespace`; the error says why not.
    pub fn check(&self, namespace: &str, signer: &Signer) -> Result<(), SignError> {
        if self
            .namespaces
            .get(namespace)
            .is_some_and(|l| l.iter().any(|t| t.matches(signer)))
        {
            return Ok(());
        }
        let elsewhere: Vec<&str> = self
            .namespaces
            .iter()
            .filter(|(_, l)| l.iter().any(|t| t.matches(signer)))
            .map(|(n, _)| n.as_str())
            .collect();
        if !elsewhere.is_empty() {
            return Err(SignError::WrongNamespace {
                signer: signer.to_string(),
                namespace: namespace.to_owned(),
                trusted_for: elsewhere.join(", "),
            });
        }
        if self.namespaces.get(namespace).is_none_or(Vec::is_empty) {
            return Err(SignError::UntrustedNamespace(namespace.to_owned()));
        }
        Err(SignError::UnknownSigner {
            signer: signer.to_string(),
            namespace: namespace.to_owned(),
        })
    }
}

pub use crate::digest::{hex, sha256_hex};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let key = SecretKey::generate().unwrap();
        let file = key.sign(b"manifest");
        let parsed = SignatureFile::parse(&file.to_bytes()).unwrap();
        assert_eq!(
            parsed.verify(b"manifest").unwrap(),
            Signer::Key(key.public())
        );
        assert!(matches!(
            parsed.verify(b"manifesT"),
            Err(SignError::BadSignature(_))
        ));
        // A signature without the package context does not verify.
        let raw = key.0.sign(b"manifest");
        assert!(key.public().verify(b"manifest", &raw.to_bytes()).is_err());
    }

    #[test]
    fn statements_and_package_signatures_do_not_mix() {
        let key = SecretKey::generate().unwrap();
        let st = key_statement("reg-a", true, "acme", &key.public(), 3);
        let sig = key.sign_statement(&st);
        key.public().verify_statement(&st, &sig).unwrap();
        // Not at another revision, nor on another registry.
        for other in [
            key_statement("reg-a", true, "acme", &key.public(), 4),
            key_statement("reg-b", true, "acme", &key.public(), 3),
        ] {
            assert!(key.public().verify_statement(&other, &sig).is_err());
        }
        let yank = yank_statement("reg-a", "acme", "hello", "1.0.0", "broken");
        let ysig = key.sign_statement(&yank);
        assert!(
            key.public()
                .verify_statement(
                    &yank_statement("reg-b", "acme", "hello", "1.0.0", "broken"),
                    &ysig
                )
                .is_err()
        );
        // A statement signature is not a package signature over the same bytes.
        let raw = B64.decode(&sig).unwrap();
        assert!(key.public().verify(st.as_bytes(), &raw).is_err());
    }

    #[test]
    fn key_files_round_trip_and_never_show_the_secret_in_debug() {
        let key = SecretKey::generate().unwrap();
        let text = key.to_file_text();
        let back = SecretKey::from_file_text(&text).unwrap();
        assert_eq!(back.public(), key.public());
        let secret_b64 = B64.encode(key.0.to_bytes());
        assert!(!format!("{key:?}").contains(&secret_b64));
        assert!(text.contains(&secret_b64));
        assert!(SecretKey::from_file_text("nothing here").is_err());
        let public: PublicKey = key.public().to_string().parse().unwrap();
        assert_eq!(public, key.public());
        assert!("ed25519:AAAA".parse::<PublicKey>().is_err());
        // The identity point is a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(
            format!("ed25519:{}", B64.encode(weak))
                .parse::<PublicKey>()
                .is_err()
        );
    }

    #[test]
    fn malformed_signature_files_are_refused() {
        for bad in [
            &b"{}"[..],
            br#"{"format":1}"#,
            br#"{"format":2,"sigstore":{}}"#,
            br#"{"format":1,"sigstore":{},"extra":1}"#,
            b"not json",
        ] {
            assert!(
                SignatureFile::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn trust_is_per_namespace_and_denies_by_default() {
        let (a, b) = (
            SecretKey::generate().unwrap(),
            SecretKey::generate().unwrap(),
        );
        let (sa, sb) = (Signer::Key(a.public()), Signer::Key(b.public()));
        let mut policy = TrustPolicy::default();
        assert!(matches!(
            policy.check("acme", &sa),
            Err(SignError::UntrustedNamespace(_))
        ));
        policy.trust("acme", TrustedSigner::Key(a.public()));
        policy.check("acme", &sa).unwrap();
        assert!(matches!(
            policy.check("acme", &sb),
            Err(SignError::UnknownSigner { .. })
        ));
        assert!(matches!(
            policy.check("other", &sa),
            Err(SignError::WrongNamespace { .. })
        ));
    }
}
