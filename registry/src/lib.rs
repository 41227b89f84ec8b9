//! warden's skill packages: the package format and its hostile-input reader
//! ([`package`]), the manifest ([`manifest`]), signing, verification and the trust
//! policy ([`sign`]; Sigstore bundles in [`sigstore`]), and the private registry: its HTTP API ([`server`]) over redb and a
//! content-addressed blob directory ([`store`]).
//!
//! Invariants: this crate knows nothing about wasmtime or the gateway; it reads bytes and
//! says whether they are a well-formed package, who signed it and whether that signer is
//! trusted for the package's namespace. Whether the component's declared tools match the
//! manifest is checked by the host, which can load the component.
//!
//! Threat: malicious or tampered packages reaching the runtime (see [`package`] and
//! [`sign`] for the cases each stops).

pub mod digest;
pub mod manifest;
pub mod package;
pub mod server;
pub mod sign;
pub mod sigstore;
#[cfg(any(test, feature = "test-support"))]
pub mod sigstore_testing;
pub mod store;

pub use manifest::{Manifest, ManifestError, ToolDef};
pub use package::{Limits, Package, PackageError, Verified, pack};
pub use sign::{PublicKey, SecretKey, SignError, Signer, TrustPolicy, TrustedSigner};
pub use sigstore::{SigstoreError, SigstoreRoot};
