//! Sigstore bundles: verified offline against a pinned trusted root, and the identity
//! (certificate SAN plus OIDC issuer) they prove.
//!
//! A Sigstore-signed package carries a bundle (`signature.json`'s `sigstore` member) over
//! its `skill.toml` bytes: a short-lived certificate from a Fulcio CA naming the signer, an
//! ECDSA signature over the manifest, and the Rekor transparency-log entry that recorded
//! it. [`SigstoreRoot::verify`] checks, with no network:
//! 1. the entry's signed entry timestamp (Rekor's promise, "SET") under a Rekor key of the
//!    pinned root, over exactly the body, time, log id and index the bundle states (the
//!    `sigstore` crate does not check it, so warden does, before anything else);
//! 2. then, through `sigstore::bundle::verify::Verifier`: the certificate issued directly by
//!    a CA of the root, for code signing, carrying exactly one certificate-transparency
//!    timestamp signed by a CT log of the root; the identity; the signature over the
//!    manifest; the log entry describing this very signature and certificate; the log's
//!    time inside the certificate's validity.
//!
//! Invariants: the identity returned is read from the certificate and then required by the
//! verifier's own identity policy, so what warden reports is what was verified; nothing
//! here panics on input (the one library constructor that can panic, when the machine has
//! no CA store, runs under `catch_unwind` at root load); a root without a CA, a CT log key
//! or a Rekor key is refused when pinned, not when a package arrives.
//!
//! Threat: a package signed by someone other than the trusted identity, a certificate not
//! logged in transparency, a back-dated or forged log entry, or a bundle crafted to make the
//! verifier and warden disagree about what was checked.

use crate::digest::hex;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::Digest as _;
use sigstore::bundle::Bundle;
use sigstore::bundle::verify::policy::Identity as IdentityPolicy;
use sigstore::bundle::verify::{ArtifactDigest, Verifier};
use sigstore::trust::ManualTrustRoot;
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::verification_material::Content;
use sigstore_protobuf_specs::dev::sigstore::common::v1::TimeRange;
use sigstore_protobuf_specs::dev::sigstore::trustroot::v1::{TransparencyLogInstance, TrustedRoot};
use std::collections::BTreeMap;
use std::future::Future as _;
use x509_cert::der::Decode as _;

/// Largest `trusted_root.json` accepted.
pub const MAX_ROOT_BYTES: usize = 1024 * 1024;

/// The Fulcio extension holding the OIDC issuer (raw UTF-8).
const ISSUER_OID: &str = "1.3.6.1.4.1.57264.1.1";
/// id-ecPublicKey and the P-256 curve.
const EC_PUBLIC_KEY_OID: &str = "1.2.840.10045.2.1";
const P256_OID: &str = "1.2.840.10045.3.1.7";

/// A Rekor log's key, from the trusted root.
struct RekorKey {
    /// The uncompressed P-256 point.
    point: Vec<u8>,
    /// When the log signed with it.
    valid_for: Option<TimeRange>,
}

/// A pinned Sigstore trusted root (`trusted_root.json`, the format the Sigstore TUF
/// repository publishes), ready to verify bundles.
pub struct SigstoreRoot {
    sha256: String,
    rekor: BTreeMap<[u8; 32], RekorKey>,
    verifier: Verifier,
}

impl std::fmt::Debug for SigstoreRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigstoreRoot")
            .field("sha256", &self.sha256)
            .field("rekor_logs", &self.rekor.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for SigstoreRoot {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
    }
}

impl Eq for SigstoreRoot {}

/// Why a trusted root or a bundle is refused (the message names the reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SigstoreError(String);

/// The identity a verified bundle's certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject alternative name (an email or a URI).
    pub san: String,
    /// The OIDC issuer.
    pub issuer: String,
}

fn root_error(why: impl std::fmt::Display) -> SigstoreError {
    SigstoreError(format!("the trusted root is refused: {why}"))
}

fn bundle_error(why: impl std::fmt::Display) -> SigstoreError {
    SigstoreError(format!("the Sigstore bundle does not verify: {why}"))
}

/// The 32-byte SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

/// The P-256 point of a DER SubjectPublicKeyInfo, refusing any other kind of key.
fn p256_point(spki_der: &[u8]) -> Result<Vec<u8>, String> {
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki_der)
        .map_err(|e| format!("a public key does not parse: {e}"))?;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<x509_cert::der::asn1::ObjectIdentifier>().ok());
    if spki.algorithm.oid.to_string() != EC_PUBLIC_KEY_OID
        || curve.map(|c| c.to_string()).as_deref() != Some(P256_OID)
    {
        return Err("only ECDSA P-256 log keys are supported".into());
    }
    Ok(spki.subject_public_key.raw_bytes().to_vec())
}

/// Whether `seconds` lies in `range` (an absent bound is open).
fn in_range(range: Option<&TimeRange>, seconds: i64) -> bool {
    range.is_none_or(|r| {
        r.start.as_ref().is_none_or(|s| s.seconds <= seconds)
            && r.end.as_ref().is_none_or(|e| seconds <= e.seconds)
    })
}

/// A log's key, as the trusted root names it.
struct LogKey {
    /// SHA-256 of the DER key: the log's id.
    id: [u8; 32],
    /// The DER SubjectPublicKeyInfo.
    der: Vec<u8>,
    /// Its P-256 point.
    point: Vec<u8>,
    /// When the log signed with it.
    valid_for: Option<TimeRange>,
}

/// The keys of `logs` (`what` names them in errors): each ECDSA P-256 and named by its own
/// SHA-256; at least one.
fn log_keys(logs: &[TransparencyLogInstance], what: &str) -> Result<Vec<LogKey>, SigstoreError> {
    let mut out = Vec::new();
    for log in logs {
        let der = log
            .public_key
            .as_ref()
            .and_then(|k| k.raw_bytes.clone())
            .ok_or_else(|| root_error(format!("a {what} log has no public key")))?;
        let id = sha256(&der);
        if log.log_id.as_ref().is_some_and(|l| l.key_id != id) {
            return Err(root_error(format!(
                "a {what} log's id is not the SHA-256 of its key"
            )));
        }
        let point = p256_point(&der).map_err(root_error)?;
        out.push(LogKey {
            id,
            der,
            point,
            valid_for: log.public_key.as_ref().and_then(|k| k.valid_for),
        });
    }
    if out.is_empty() {
        return Err(root_error(format!("it names no {what} log")));
    }
    Ok(out)
}

impl SigstoreRoot {
    /// Parses and checks a trusted root: at least one certificate authority, one CT log
    /// key and one Rekor key, every log key ECDSA P-256 and named by its own SHA-256.
    pub fn parse(json: &[u8]) -> Result<Self, SigstoreError> {
        if json.len() > MAX_ROOT_BYTES {
            return Err(root_error(format!(
                "it is larger than {MAX_ROOT_BYTES} bytes"
            )));
        }
        let root: TrustedRoot = serde_json::from_slice(json).map_err(root_error)?;
        let mut fulcio = Vec::new();
        for ca in &root.certificate_authorities {
            for cert in ca.cert_chain.iter().flat_map(|c| &c.certificates) {
                x509_cert::Certificate::from_der(&cert.raw_bytes)
                    .map_err(|e| root_error(format!("a CA certificate does not parse: {e}")))?;
                fulcio.push(rustls_pki_types::CertificateDer::from(
                    cert.raw_bytes.clone(),
                ));
            }
        }
        if fulcio.is_empty() {
            return Err(root_error("it names no certificate authority"));
        }
        let ct = log_keys(&root.ctlogs, "certificate-transparency")?;
        let rekor = log_keys(&root.tlogs, "Rekor")?
            .into_iter()
            .map(|k| {
                let key = RekorKey {
                    point: k.point,
                    valid_for: k.valid_for,
                };
                (k.id, key)
            })
            .collect();
        let manual = ManualTrustRoot {
            fulcio_certs: fulcio,
            rekor_keys: BTreeMap::new(),
            ctfe_keys: ct.into_iter().map(|k| (hex(&k.id), k.der)).collect(),
        };
        // The verifier's HTTP client (never used offline) loads the system's CA store and
        // panics without one: turn that into an error.
        let verifier = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Verifier::new(Default::default(), manual)
        }))
        .map_err(|_| {
            root_error(
                "the Sigstore verifier cannot start on this machine (no system CA certificates?)",
            )
        })?
        .map_err(root_error)?;
        Ok(Self {
            sha256: crate::digest::sha256_hex(json),
            rekor,
            verifier,
        })
    }

    /// SHA-256 (hex) of the root's JSON, as pinned.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Verifies `bundle` (the JSON of a Sigstore bundle) over `manifest` and returns the
    /// identity of its certificate.
    pub fn verify(
        &self,
        manifest: &[u8],
        bundle: &serde_json::Value,
    ) -> Result<Identity, SigstoreError> {
        let bundle: Bundle = serde_json::from_value(bundle.clone()).map_err(bundle_error)?;
        self.check_set(&bundle)?;
        let (san, issuer) = identity(&bundle)?;
        let policy = IdentityPolicy::new(&san, &issuer);
        let digest = ArtifactDigest::Sha256(sha256(manifest));
        let future = self
            .verifier
            .verify_digest_with(digest, bundle, &policy, true);
        // Offline verification never waits: one poll completes it.
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(())) => Ok(Identity { san, issuer }),
            std::task::Poll::Ready(Err(e)) => Err(bundle_error(error_chain(&e))),
            std::task::Poll::Pending => Err(bundle_error("verification did not complete")),
        }
    }

    /// Checks the log entry's signed entry timestamp under the pinned Rekor key it names.
    fn check_set(&self, bundle: &Bundle) -> Result<(), SigstoreError> {
        let entries = bundle
            .verification_material
            .as_ref()
            .map(|m| m.tlog_entries.as_slice())
            .unwrap_or_default();
        let [entry] = entries else {
            return Err(bundle_error(format!(
                "it must hold exactly one transparency-log entry, not {}",
                entries.len()
            )));
        };
        let log_id: [u8; 32] = entry
            .log_id
            .as_ref()
            .and_then(|l| l.key_id.as_slice().try_into().ok())
            .ok_or_else(|| bundle_error("the log entry has no log id"))?;
        let key = self.rekor.get(&log_id).ok_or_else(|| {
            bundle_error("the log entry is from a log the trusted root does not name")
        })?;
        if !in_range(key.valid_for.as_ref(), entry.integrated_time) {
            return Err(bundle_error(
                "the log entry's time is outside its log key's validity",
            ));
        }
        let set = entry
            .inclusion_promise
            .as_ref()
            .map(|p| p.signed_entry_timestamp.as_slice())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                bundle_error("the log entry carries no signed entry timestamp (inclusion promise)")
            })?;
        // What Rekor signs: the canonical JSON of these four members (RFC 8785 order).
        let payload = format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            B64.encode(&entry.canonicalized_body),
            entry.integrated_time,
            hex(&log_id),
            entry.log_index
        );
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &key.point,
        )
        .verify(payload.as_bytes(), set)
        .map_err(|_| bundle_error("the log's signed entry timestamp does not verify"))
    }
}

/// The certificate's identity: its first email or URI subject alternative name and the
/// OIDC issuer of Fulcio's extension.
fn identity(bundle: &Bundle) -> Result<(String, String), SigstoreError> {
    let der = match bundle
        .verification_material
        .as_ref()
        .and_then(|m| m.content.as_ref())
    {
        Some(Content::X509CertificateChain(chain)) => chain.certificates.first(),
        Some(Content::Certificate(cert)) => Some(cert),
        _ => None,
    }
    .map(|c| c.raw_bytes.as_slice())
    .ok_or_else(|| bundle_error("it carries no signing certificate"))?;
    let cert = x509_cert::Certificate::from_der(der)
        .map_err(|e| bundle_error(format!("the certificate does not parse: {e}")))?;
    let mut san = None;
    let mut issuer = None;
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        let oid = ext.extn_id.to_string();
        if oid == "2.5.29.17" {
            let names = x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes())
                .map_err(|e| {
                bundle_error(format!("the certificate's SAN does not parse: {e}"))
            })?;
            san = names.0.iter().find_map(|n| match n {
                x509_cert::ext::pkix::name::GeneralName::Rfc822Name(s)
                | x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(s) => {
                    Some(s.to_string())
                }
                _ => None,
            });
        } else if oid == ISSUER_OID {
            issuer = std::str::from_utf8(ext.extn_value.as_bytes())
                .ok()
                .map(str::to_owned);
        }
    }
    let san = san.ok_or_else(|| bundle_error("the certificate names no email or URI identity"))?;
    let issuer = issuer.ok_or_else(|| bundle_error("the certificate names no OIDC issuer"))?;
    if san.chars().chain(issuer.chars()).any(char::is_control) {
        return Err(bundle_error(
            "the certificate's identity has control characters",
        ));
    }
    Ok((san, issuer))
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigstore_testing::{Tamper, TestSigstore};

    const SAN: &str =
        "https://github.com/acme/skills/.github/workflows/release.yml@refs/heads/main";
    const ISSUER: &str = "https://token.actions.githubusercontent.com";

    fn refused(root: &SigstoreRoot, manifest: &[u8], bundle: &serde_json::Value) -> String {
        match root.verify(manifest, bundle) {
            Ok(s) => panic!("accepted, signed by {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_bundle_from_the_pinned_deployment_names_its_identity() {
        let sigstore = TestSigstore::new();
        let root = SigstoreRoot::parse(&sigstore.trusted_root()).unwrap();
        let manifest = b"namespace = \"acme\"\n";
        let bundle = sigstore.bundle(manifest, SAN, ISSUER, Tamper::None);
        assert_eq!(
            root.verify(manifest, &bundle).unwrap(),
            Identity {
                san: SAN.into(),
                issuer: ISSUER.into()
            }
        );
        // An email identity too.
        let bundle = sigstore.bundle(manifest, "dev@acme.example", ISSUER, Tamper::None);
        assert!(matches!(
            root.verify(manifest, &bundle),
            Ok(Identity { san, .. }) if san == "dev@acme.example"
        ));
        // Another manifest: the signature no longer covers it.
        let why = refused(&root, b"namespace = \"evil\"\n", &bundle);
        assert!(why.contains("does not verify"), "{why}");
    }

    #[test]
    fn every_broken_part_of_a_bundle_is_refused_with_its_reason() {
        let sigstore = TestSigstore::new();
        let root = SigstoreRoot::parse(&sigstore.trusted_root()).unwrap();
        let manifest = b"format = 1\n";
        for (tamper, reason) in [
            (Tamper::Set, "signed entry timestamp does not verify"),
            (
                Tamper::IntegratedTime,
                "signed entry timestamp does not verify",
            ),
            (Tamper::NoSet, "no signed entry timestamp"),
            (Tamper::UnknownRekor, "log the trusted root does not name"),
            (
                Tamper::UntrustedCa,
                "certificate verification failed: UnknownIssuer",
            ),
            (Tamper::NoSct, "SCT list extension missing"),
            (Tamper::UnknownCtLog, "SCT: requested key not in keyring"),
            (
                Tamper::BodyForOtherArtifact,
                "transparency materials are inconsistent",
            ),
            (Tamper::NotCodeSigning, "ExtendedKeyUsage"),
            (Tamper::LoggedAfterExpiry, "expired before time of signing"),
        ] {
            let bundle = sigstore.bundle(manifest, SAN, ISSUER, tamper);
            let why = refused(&root, manifest, &bundle);
            assert!(why.contains(reason), "{tamper:?}: {why}");
        }
        // A bundle from another deployment entirely.
        let other = TestSigstore::new();
        let bundle = other.bundle(manifest, SAN, ISSUER, Tamper::None);
        let why = refused(&root, manifest, &bundle);
        assert!(why.contains("log the trusted root does not name"), "{why}");
        // Not a bundle.
        let why = refused(&root, manifest, &serde_json::json!({"mediaType": 3}));
        assert!(why.contains("does not verify"), "{why}");
    }

    #[test]
    fn a_root_without_its_parts_or_with_foreign_keys_is_refused() {
        let sigstore = TestSigstore::new();
        let good: serde_json::Value = serde_json::from_slice(&sigstore.trusted_root()).unwrap();
        for (field, reason) in [
            ("certificateAuthorities", "no certificate authority"),
            ("ctlogs", "no certificate-transparency log"),
            ("tlogs", "no Rekor log"),
        ] {
            let mut root = good.clone();
            root[field] = serde_json::json!([]);
            let why = SigstoreRoot::parse(&serde_json::to_vec(&root).unwrap())
                .unwrap_err()
                .to_string();
            assert!(why.contains(reason), "{field}: {why}");
        }
        let mut root = good.clone();
        root["tlogs"][0]["logId"]["keyId"] = serde_json::json!(B64.encode([0u8; 32]));
        let why = SigstoreRoot::parse(&serde_json::to_vec(&root).unwrap())
            .unwrap_err()
            .to_string();
        assert!(why.contains("not the SHA-256 of its key"), "{why}");
        let mut root = good;
        root["unknownField"] = serde_json::json!(1);
        assert!(SigstoreRoot::parse(&serde_json::to_vec(&root).unwrap()).is_err());
        assert!(SigstoreRoot::parse(&vec![b' '; MAX_ROOT_BYTES + 1]).is_err());
        assert!(SigstoreRoot::parse(b"not json").is_err());
    }
}
