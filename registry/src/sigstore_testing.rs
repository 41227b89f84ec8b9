//! A Sigstore deployment made up on the spot, for tests: a Fulcio-like CA, a
//! certificate-transparency log key and a Rekor key, the `trusted_root.json` that pins them,
//! and bundles over any bytes for any identity, with one thing broken on request. Nothing
//! touches the network. Compiled only with the `test-support` feature.
//!
//! Invariant: a bundle made with [`Tamper::None`] is what a real Sigstore flow produces for
//! a P-256 key (certificate with an embedded SCT over the precertificate, hashedrekord log
//! entry, Rekor's signed entry timestamp), so a verifier that accepts it and refuses each
//! tampered variant checks what it claims to.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use crate::digest::hex;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    PublicKeyData as _, SanType, SigningKey as _, date_time_ymd,
};
use serde_json::{Value, json};
use sha2::Digest as _;
use x509_cert::der::asn1::OctetString;
use x509_cert::der::{Any, Decode as _, Encode as _, Tag, TagNumber, Tagged as _};

const SCT_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];
const SCT_OID: &str = "1.3.6.1.4.1.11129.2.4.2";
const ISSUER_ARCS: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 1];

/// What to break in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Nothing: a valid bundle.
    None,
    /// A flipped bit in Rekor's signed entry timestamp.
    Set,
    /// The log time moved (the SET no longer covers it).
    IntegratedTime,
    /// No signed entry timestamp at all.
    NoSet,
    /// The certificate is issued by a CA the root does not pin.
    UntrustedCa,
    /// The certificate has no embedded SCT.
    NoSct,
    /// The SCT is signed by a CT log the root does not pin.
    UnknownCtLog,
    /// The log entry describes another artifact (and Rekor signed that).
    BodyForOtherArtifact,
    /// The log entry is from a Rekor the root does not pin.
    UnknownRekor,
    /// The certificate is not for code signing.
    NotCodeSigning,
    /// The log time lies after the certificate expired (and Rekor signed that).
    LoggedAfterExpiry,
}

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

fn sha256(b: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(b).into()
}

/// A made-up Sigstore deployment.
pub struct TestSigstore {
    ca: KeyPair,
    ca_params: CertificateParams,
    ca_der: Vec<u8>,
    ct: KeyPair,
    rekor: KeyPair,
}

impl Default for TestSigstore {
    fn default() -> Self {
        Self::new()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "warden-test");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p
}

/// The TBS of a certificate with the SCT list extension removed: what a CT log signs.
fn tbs_without_sct(cert_der: &[u8]) -> Vec<u8> {
    let extensions = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber(3),
    };
    let cert = Vec::<Any>::from_der(cert_der).unwrap();
    let mut tbs: Vec<Any> = cert[0].decode_as().unwrap();
    if let Some(exts) = tbs.iter_mut().find(|f| f.tag() == extensions) {
        let kept: Vec<Any> = Vec::<Any>::from_der(exts.value())
            .unwrap()
            .into_iter()
            .filter(|e| {
                e.decode_as::<x509_cert::ext::Extension>()
                    .unwrap()
                    .extn_id
                    .to_string()
                    != SCT_OID
            })
            .collect();
        *exts = Any::new(extensions, kept.to_der().unwrap()).unwrap();
    }
    tbs.to_der().unwrap()
}

fn sct_extension(ct: &KeyPair, issuer_spki: &[u8], precert_tbs: &[u8], ts_ms: u64) -> Vec<u8> {
    let log_id = sha256(&ct.subject_public_key_info());
    let issuer_key_hash = sha256(issuer_spki);
    let n = precert_tbs.len() as u32;
    let signed = [
        &[0u8, 0][..],
        &ts_ms.to_be_bytes(),
        &[0, 1],
        &issuer_key_hash,
        &[(n >> 16) as u8, (n >> 8) as u8, n as u8],
        precert_tbs,
        &[0, 0],
    ]
    .concat();
    let sig = ct.sign(&signed).unwrap();
    let sct = [
        &[0u8][..],
        &log_id,
        &ts_ms.to_be_bytes(),
        &[0, 0],
        &[4, 3],
        &(sig.len() as u16).to_be_bytes(),
        &sig,
    ]
    .concat();
    let one = [&(sct.len() as u16).to_be_bytes()[..], &sct].concat();
    let list = [&(one.len() as u16).to_be_bytes()[..], &one].concat();
    OctetString::new(list).unwrap().to_der().unwrap()
}

fn log_instance(key: &KeyPair, url: &str) -> Value {
    let spki = key.subject_public_key_info();
    json!({
        "baseUrl": url,
        "hashAlgorithm": "SHA2_256",
        "publicKey": {
            "rawBytes": B64.encode(&spki),
            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
            "validFor": {"start": "2020-01-01T00:00:00Z"}
        },
        "logId": {"keyId": B64.encode(sha256(&spki))}
    })
}

impl TestSigstore {
    /// Fresh keys for the CA, the CT log and Rekor.
    pub fn new() -> Self {
        let ca = p256();
        let ca_params = ca_params("warden-test-fulcio");
        let ca_der = ca_params.self_signed(&ca).unwrap().der().to_vec();
        Self {
            ca,
            ca_params,
            ca_der,
            ct: p256(),
            rekor: p256(),
        }
    }

    /// The `trusted_root.json` pinning this deployment.
    pub fn trusted_root(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log_instance(&self.rekor, "https://rekor.warden.test")],
            "certificateAuthorities": [{
                "subject": {"organization": "warden-test", "commonName": "warden-test-fulcio"},
                "uri": "https://fulcio.warden.test",
                "certChain": {"certificates": [{"rawBytes": B64.encode(&self.ca_der)}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }],
            "ctlogs": [log_instance(&self.ct, "https://ctfe.warden.test")],
            "timestampAuthorities": []
        }))
        .unwrap()
    }

    /// A bundle over `artifact` for the identity `san` (an email or a URI) and OIDC
    /// `issuer`, with `tamper` broken.
    pub fn bundle(&self, artifact: &[u8], san: &str, issuer: &str, tamper: Tamper) -> Value {
        let other_ca = p256();
        let other_ca_params = ca_params("someone-else");
        let (ca_key, ca_p) = if tamper == Tamper::UntrustedCa {
            (&other_ca, &other_ca_params)
        } else {
            (&self.ca, &self.ca_params)
        };
        let issuer_cert = Issuer::from_params(ca_p, ca_key);
        let other_log = p256();
        let ct = if tamper == Tamper::UnknownCtLog {
            &other_log
        } else {
            &self.ct
        };
        let leaf = p256();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.not_before = date_time_ymd(2025, 1, 1);
        p.not_after = date_time_ymd(2025, 1, 2);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = if tamper == Tamper::NotCodeSigning {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::CodeSigning]
        };
        let name = san.to_owned().try_into().unwrap();
        p.subject_alt_names = vec![if san.contains("://") {
            SanType::URI(name)
        } else {
            SanType::Rfc822Name(name)
        }];
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            ISSUER_ARCS,
            issuer.as_bytes().to_vec(),
        )];
        let not_before = p.not_before.unix_timestamp();
        let integrated_time = if tamper == Tamper::LoggedAfterExpiry {
            p.not_after.unix_timestamp() + 60
        } else {
            not_before + 60
        };
        if tamper != Tamper::NoSct {
            let pass1 = p.signed_by(&leaf, &issuer_cert).unwrap();
            let precert = tbs_without_sct(pass1.der());
            p.custom_extensions.push(CustomExtension::from_oid_content(
                SCT_ARCS,
                sct_extension(
                    ct,
                    &ca_key.subject_public_key_info(),
                    &precert,
                    (not_before as u64 + 30) * 1000,
                ),
            ));
        }
        let leaf_der = p.signed_by(&leaf, &issuer_cert).unwrap().der().to_vec();
        let digest = sha256(artifact);
        let signature = leaf.sign(artifact).unwrap();
        let pem = x509_cert::der::pem::encode_string(
            "CERTIFICATE",
            x509_cert::der::pem::LineEnding::LF,
            &leaf_der,
        )
        .unwrap();
        let logged_digest = if tamper == Tamper::BodyForOtherArtifact {
            sha256(b"another artifact")
        } else {
            digest
        };
        let body = format!(
            r#"{{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{{"data":{{"hash":{{"algorithm":"sha256","value":"{}"}}}},"signature":{{"content":"{}","publicKey":{{"content":"{}"}}}}}}}}"#,
            hex(&logged_digest),
            B64.encode(&signature),
            B64.encode(pem.as_bytes())
        );
        let other_rekor = p256();
        let rekor = if tamper == Tamper::UnknownRekor {
            &other_rekor
        } else {
            &self.rekor
        };
        let log_id = sha256(&rekor.subject_public_key_info());
        let log_index = 7;
        let payload = format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            B64.encode(body.as_bytes()),
            integrated_time,
            hex(&log_id),
            log_index
        );
        let mut set = rekor.sign(payload.as_bytes()).unwrap();
        if tamper == Tamper::Set {
            let last = set.len() - 1;
            set[last] ^= 1;
        }
        let stated_time = if tamper == Tamper::IntegratedTime {
            integrated_time + 1
        } else {
            integrated_time
        };
        let mut entry = json!({
            "logIndex": log_index.to_string(),
            "logId": {"keyId": B64.encode(log_id)},
            "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
            "integratedTime": stated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": B64.encode(&set)},
            "canonicalizedBody": B64.encode(body.as_bytes())
        });
        if tamper == Tamper::NoSet
            && let Some(e) = entry.as_object_mut()
        {
            e.remove("inclusionPromise");
        }
        json!({
            "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
            "verificationMaterial": {
                "x509CertificateChain": {"certificates": [{"rawBytes": B64.encode(&leaf_der)}]},
                "tlogEntries": [entry]
            },
            "messageSignature": {
                "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(digest)},
                "signature": B64.encode(&signature)
            }
        })
    }
}
