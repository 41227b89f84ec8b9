//! The first-party skills (`warden/http`, `warden/text`) as signed packages compiled into
//! the binary, so a `warden` binary copied to a machine with no source tree and no wasm
//! toolchain starts with them.
//!
//! The packages live in `skills/packages/`, built from `skills/` reproducibly and signed
//! with the project's release key, whose private half is never in the repository; its
//! public half (`skills/packages/release-key.pub`) is compiled in as [`release_key`].
//!
//! Invariants: an embedded package is used only if it reads cleanly, its signature verifies
//! under the release key (the one signer accepted for the `warden` namespace: an operator's
//! trust policy plays no part, and it cannot add signers for that namespace either) and it
//! is the skill it is embedded as; the committed packages are checked against the sources
//! in CI (rebuilt, repacked, compared byte for byte), so what ships is what was reviewed.
//!
//! Threat: a tampered, re-signed or swapped embedded package fails closed at start rather
//! than running under the trusted namespace.

use warden_registry::{Limits, Package, PackageError, PublicKey, TrustPolicy, TrustedSigner};

/// The namespace of the first-party skills (reserved: no operator trust applies to it).
pub const NAMESPACE: &str = "warden";

/// The public release key, as committed (`ed25519:...`).
const RELEASE_KEY: &str = include_str!("../../skills/packages/release-key.pub");

/// A first-party package compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    /// The skill's name in the `warden` namespace.
    pub name: &'static str,
    /// The signed package file.
    pub bytes: &'static [u8],
}

/// Every first-party skill, in load order.
pub const PACKAGES: &[Embedded] = &[
    Embedded {
        name: "http",
        bytes: include_bytes!("../../skills/packages/http.wsk"),
    },
    Embedded {
        name: "text",
        bytes: include_bytes!("../../skills/packages/text.wsk"),
    },
];

/// Why an embedded package was refused.
#[derive(Debug, thiserror::Error)]
pub enum FirstPartyError {
    /// The compiled-in release key does not parse (a broken build).
    #[error("the compiled-in release key is invalid: {0}")]
    Key(String),
    /// The package does not read or verify.
    #[error("first-party package `{name}` is refused: {source}")]
    Package {
        /// The skill.
        name: &'static str,
        /// Why.
        source: PackageError,
    },
    /// The package is another skill than the one it is embedded as.
    #[error("first-party package `{name}` holds `{found}`")]
    Mismatch {
        /// The skill it is embedded as.
        name: &'static str,
        /// What its manifest says.
        found: String,
    },
}

/// The release key the first-party packages must be signed with.
pub fn release_key() -> Result<PublicKey, FirstPartyError> {
    RELEASE_KEY
        .trim()
        .parse()
        .map_err(|e: warden_registry::SignError| FirstPartyError::Key(e.to_string()))
}

/// The trust policy for first-party packages: the release key, for `warden` only.
pub fn trust_policy() -> Result<TrustPolicy, FirstPartyError> {
    let mut policy = TrustPolicy::default();
    policy.trust(NAMESPACE, TrustedSigner::Key(release_key()?));
    Ok(policy)
}

impl Embedded {
    /// Reads and verifies the package under the release key.
    pub fn verify(&self) -> Result<Package, FirstPartyError> {
        let policy = trust_policy()?;
        let fail = |source| FirstPartyError::Package {
            name: self.name,
            source,
        };
        let verified = Package::read(self.bytes, &Limits::default())
            .and_then(|p| p.verify(&policy))
            .map_err(fail)?;
        let m = &verified.package.manifest;
        if m.namespace != NAMESPACE || m.name != self.name {
            return Err(FirstPartyError::Mismatch {
                name: self.name,
                found: m.id(),
            });
        }
        Ok(verified.package)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_package_verifies_under_the_release_key() {
        assert!(!PACKAGES.is_empty());
        for e in PACKAGES {
            let p = e.verify().unwrap_or_else(|err| panic!("{err}"));
            assert_eq!(p.manifest.namespace, NAMESPACE);
            assert!(!p.manifest.tools.is_empty(), "{} lists no tools", e.name);
        }
    }

    #[test]
    fn a_flipped_byte_or_a_swapped_package_is_refused() {
        let http = PACKAGES[0];
        let text = PACKAGES[1];
        let mut bytes = http.bytes.to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let flipped = Embedded {
            name: http.name,
            bytes: leaked,
        };
        assert!(flipped.verify().is_err());
        let swapped = Embedded {
            name: http.name,
            bytes: text.bytes,
        };
        assert!(matches!(
            swapped.verify(),
            Err(FirstPartyError::Mismatch { .. })
        ));
    }
}
