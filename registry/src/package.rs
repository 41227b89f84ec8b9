//! The skill package: a zip holding exactly `skill.toml`, `README.md`, `component.wasm`
//! and (once signed) `signature.json`; its writer and its hostile-input reader.
//!
//! Invariants:
//! - The reader trusts nothing it has not measured. Before the zip library parses the
//!   central directory, the end record's entry count is checked; then names (no traversal,
//!   absolute, backslash, drive-letter or control-character names), kinds (no symlinks,
//!   directories or encrypted entries), compression (stored or deflate), duplicates, local
//!   headers against the central directory, overlapping entries, and the declared sizes and
//!   ratios. Every entry is then decompressed through a limit of its cap plus one byte, so
//!   a lying size field cannot make it inflate more than the cap.
//! - Any entry other than the four is refused, so nothing rides along unsigned; the
//!   component and the README must match the digests and sizes in the manifest.
//! - The writer is deterministic (fixed order, times, permissions and compression): the
//!   same inputs give the same package bytes and digest.
//! - Reading says nothing about trust: [`Package::verify`] checks the signature against a
//!   [`TrustPolicy`] and is the only way to a [`Verified`] package.
//!
//! Threat: malicious packages: zip bombs (size, ratio, entry count, overlapping entries),
//! path traversal and symlink entries aimed at whoever unpacks them, duplicate or
//! shadowed entries that make two readers see different contents, flipped bytes, and
//! entries not covered by the signature.

use crate::manifest::{
    COMPONENT_ENTRY, FileDigest, MANIFEST_ENTRY, Manifest, ManifestError, README_ENTRY,
    SIGNATURE_ENTRY, ToolDef,
};
use crate::sign::{SecretKey, SignError, SignatureFile, Signer, TrustPolicy, sha256_hex};
use crate::sigstore::SigstoreRoot;
use std::io::{Cursor, Read, Write};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

/// Size caps of a package and its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole package file.
    pub package: u64,
    /// Entries in the archive.
    pub entries: usize,
    /// `skill.toml`.
    pub manifest: u64,
    /// `README.md`.
    pub readme: u64,
    /// `component.wasm`.
    pub component: u64,
    /// `signature.json`.
    pub signature: u64,
    /// Largest uncompressed : compressed ratio of an entry.
    pub ratio: u64,
    /// All entries together, uncompressed.
    pub total: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            package: 48 << 20,
            entries: 8,
            manifest: 256 << 10,
            readme: 256 << 10,
            component: 32 << 20,
            signature: 64 << 10,
            ratio: 100,
            total: 48 << 20,
        }
    }
}

/// Why a package was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// The file is larger than the cap.
    #[error("the package is {size} bytes; at most {cap} are accepted")]
    TooLarge {
        /// Its size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// Not a zip archive, or a damaged one.
    #[error("not a valid package: {0}")]
    Corrupt(String),
    /// More entries than allowed.
    #[error("the package has {count} entries; at most {cap} are accepted")]
    TooManyEntries {
        /// How many.
        count: u64,
        /// The cap.
        cap: usize,
    },
    /// An entry name that climbs out of or escapes the package's root.
    #[error(
        "entry {0:?} is a path traversal (absolute, `..`, backslash or drive-letter names are refused)"
    )]
    PathTraversal(String),
    /// An entry name with control characters or not UTF-8.
    #[error("entry {0:?} has a name with control characters or invalid UTF-8")]
    BadName(String),
    /// A symbolic link entry.
    #[error("entry {0:?} is a symbolic link; packages hold only regular files")]
    Symlink(String),
    /// A directory entry.
    #[error("entry {0:?} is a directory; packages hold only regular files")]
    Directory(String),
    /// Two entries with the same name, or local headers that disagree with the central
    /// directory.
    #[error("duplicate or shadowed entries: {0}")]
    Duplicate(String),
    /// An entry the format does not know.
    #[error(
        "entry {0:?} is not part of the package format and would not be covered by the signature (a package holds only skill.toml, README.md, component.wasm and signature.json)"
    )]
    UnexpectedEntry(String),
    /// A required entry is missing.
    #[error("the package has no {0}")]
    Missing(&'static str),
    /// An encrypted entry.
    #[error("entry {0:?} is encrypted")]
    Encrypted(String),
    /// A compression method other than stored or deflate.
    #[error("entry {name:?} uses compression {method}; only stored and deflate are accepted")]
    Compression {
        /// The entry.
        name: String,
        /// The method.
        method: String,
    },
    /// An entry larger than its cap (declared or found while decompressing).
    #[error("entry {name:?} is larger than its cap of {cap} bytes")]
    EntryTooLarge {
        /// The entry.
        name: String,
        /// The cap.
        cap: u64,
    },
    /// An entry that expands more than the ratio cap allows.
    #[error("entry {name:?} expands more than {ratio}:1 (a zip bomb?)")]
    Ratio {
        /// The entry.
        name: String,
        /// The cap.
        ratio: u64,
    },
    /// All entries together are larger than the cap.
    #[error("the package expands to more than {0} bytes")]
    TotalTooLarge(u64),
    /// An entry's digest or size differs from the manifest's.
    #[error("entry {0:?} does not match its digest in the manifest (altered after packing?)")]
    DigestMismatch(String),
    /// The README is not UTF-8.
    #[error("README.md is not UTF-8")]
    ReadmeNotUtf8,
    /// The manifest is refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The signature is refused.
    #[error(transparent)]
    Signature(#[from] SignError),
}

/// A package read and checked for structure and digests; not yet trusted.
#[derive(Debug, Clone)]
pub struct Package {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The manifest's bytes, as signed.
    pub manifest_bytes: Vec<u8>,
    /// The component.
    pub component: Vec<u8>,
    /// The README.
    pub readme: String,
    /// The signature, when the package is signed.
    pub signature: Option<SignatureFile>,
    /// Lower-case hex SHA-256 of the whole package file.
    pub digest: String,
    /// Size of the package file.
    pub size: u64,
}

/// A package whose signature verified and whose signer the trust policy accepts for its
/// namespace.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The package.
    pub package: Package,
    /// Who signed it.
    pub signer: Signer,
}

impl Package {
    /// Reads a package from its bytes, refusing anything malformed or hostile.
    pub fn read(bytes: &[u8], limits: &Limits) -> Result<Self, PackageError> {
        let size = bytes.len() as u64;
        if size > limits.package {
            return Err(PackageError::TooLarge {
                size,
                cap: limits.package,
            });
        }
        precheck_end_record(bytes, limits)?;
        let corrupt = |e: zip::result::ZipError| PackageError::Corrupt(e.to_string());
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(corrupt)?;
        if zip.len() > limits.entries {
            return Err(PackageError::TooManyEntries {
                count: zip.len() as u64,
                cap: limits.entries,
            });
        }
        // Names and kinds first, so a traversal or symlink entry is named as such even when
        // it is also a duplicate.
        for i in 0..zip.len() {
            let entry = zip.by_index_raw(i).map_err(corrupt)?;
            let raw = entry.name_raw().to_vec();
            let name = check_name(&raw)?;
            if entry.is_symlink() {
                return Err(PackageError::Symlink(name));
            }
            if entry.is_dir() || name.ends_with('/') {
                return Err(PackageError::Directory(name));
            }
        }
        if zip.has_duplicate_names() {
            return Err(PackageError::Duplicate(
                "two entries share a name in the central directory".into(),
            ));
        }
        zip.validate_header_consistency()
            .map_err(|e| PackageError::Duplicate(e.to_string()))?;

        let mut total = 0u64;
        let mut manifest_bytes = None;
        let mut component = None;
        let mut readme = None;
        let mut signature = None;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(corrupt)?;
            let name = entry.name().map_err(corrupt)?.into_owned();
            let cap = match name.as_str() {
                MANIFEST_ENTRY => limits.manifest,
                COMPONENT_ENTRY => limits.component,
                README_ENTRY => limits.readme,
                SIGNATURE_ENTRY => limits.signature,
                _ => return Err(PackageError::UnexpectedEntry(name)),
            };
            if entry.encrypted() {
                return Err(PackageError::Encrypted(name));
            }
            let method = entry.compression();
            if method != CompressionMethod::Stored && method != CompressionMethod::Deflated {
                return Err(PackageError::Compression {
                    name,
                    method: method.to_string(),
                });
            }
            if entry.size() > cap {
                return Err(PackageError::EntryTooLarge { name, cap });
            }
            let compressed = entry.compressed_size().max(1);
            let ratio_cap = compressed.saturating_mul(limits.ratio);
            if entry.size() > ratio_cap {
                return Err(PackageError::Ratio {
                    name,
                    ratio: limits.ratio,
                });
            }
            // Never trust the declared size: read at most one byte past every cap.
            let limit = cap
                .min(ratio_cap.max(64))
                .min(limits.total - total.min(limits.total));
            let mut data = Vec::with_capacity(entry.size().min(cap) as usize);
            (&mut entry)
                .take(limit + 1)
                .read_to_end(&mut data)
                .map_err(|e| PackageError::Corrupt(format!("entry {name:?}: {e}")))?;
            let got = data.len() as u64;
            if got > limit {
                return Err(if got > cap {
                    PackageError::EntryTooLarge { name, cap }
                } else if got > ratio_cap {
                    PackageError::Ratio {
                        name,
                        ratio: limits.ratio,
                    }
                } else {
                    PackageError::TotalTooLarge(limits.total)
                });
            }
            if got != entry.size() {
                return Err(PackageError::Corrupt(format!(
                    "entry {name:?} holds {got} bytes but declares {}",
                    entry.size()
                )));
            }
            total += got;
            match name.as_str() {
                MANIFEST_ENTRY => manifest_bytes = Some(data),
                COMPONENT_ENTRY => component = Some(data),
                README_ENTRY => readme = Some(data),
                _ => signature = Some(data),
            }
        }
        let manifest_bytes = manifest_bytes.ok_or(PackageError::Missing(MANIFEST_ENTRY))?;
        let component = component.ok_or(PackageError::Missing(COMPONENT_ENTRY))?;
        let readme = readme.ok_or(PackageError::Missing(README_ENTRY))?;
        let manifest = Manifest::parse(&manifest_bytes)?;
        for (entry, data) in [(COMPONENT_ENTRY, &component), (README_ENTRY, &readme)] {
            let want = manifest
                .files
                .get(entry)
                .ok_or(PackageError::Missing(entry))?;
            if want.size != data.len() as u64 || want.sha256 != sha256_hex(data) {
                return Err(PackageError::DigestMismatch(entry.to_owned()));
            }
        }
        let readme = String::from_utf8(readme).map_err(|_| PackageError::ReadmeNotUtf8)?;
        let signature = signature.map(|s| SignatureFile::parse(&s)).transpose()?;
        Ok(Self {
            manifest,
            manifest_bytes,
            component,
            readme,
            signature,
            digest: sha256_hex(bytes),
            size,
        })
    }

    /// Checks the signature and the signer against `policy`.
    pub fn verify(self, policy: &TrustPolicy) -> Result<Verified, PackageError> {
        let signer = self.signer_with(policy.sigstore_root.as_deref())?;
        policy.check(&self.manifest.namespace, &signer)?;
        Ok(Verified {
            package: self,
            signer,
        })
    }

    /// Checks the signature cryptographically and says who signed, without asking whether
    /// the signer is trusted (for `warden skill verify` and `inspect`).
    pub fn signer(&self) -> Result<Signer, PackageError> {
        self.signer_with(None)
    }

    /// [`Package::signer`], verifying a Sigstore bundle against `root`.
    pub fn signer_with(&self, root: Option<&SigstoreRoot>) -> Result<Signer, PackageError> {
        let sig = self.signature.as_ref().ok_or(SignError::NotSigned)?;
        Ok(sig.verify_with(&self.manifest_bytes, root)?)
    }

    /// This package's bytes with a Sigstore bundle (over its `skill.toml`) as its signature,
    /// replacing any earlier signature. The bundle is checked when the package is verified.
    pub fn with_sigstore_bundle(&self, bundle: serde_json::Value) -> Result<Vec<u8>, PackageError> {
        write_entries(
            &self.manifest_bytes,
            self.readme.as_bytes(),
            &self.component,
            Some(&SignatureFile::sigstore(bundle)),
        )
    }

    /// This package's bytes with `key`'s signature (replacing any earlier signature).
    pub fn sign(&self, key: &SecretKey) -> Result<Vec<u8>, PackageError> {
        write_entries(
            &self.manifest_bytes,
            self.readme.as_bytes(),
            &self.component,
            Some(&key.sign(&self.manifest_bytes)),
        )
    }
}

/// Builds an unsigned package from an author's manifest, the tools the component declares,
/// the component and the README: fills in `[files]` and `tools` (when the author listed
/// tools, they must equal the declared ones; the error lists every difference).
pub fn pack(
    source: &Manifest,
    declared: &[ToolDef],
    component: &[u8],
    readme: &str,
) -> Result<(Manifest, Vec<u8>), PackageError> {
    let mut manifest = source.clone();
    if !source.tools.is_empty() {
        let listed = source.tool_defs()?;
        let diff = crate::manifest::diff_tools(&listed, declared);
        if !diff.is_empty() {
            return Err(ManifestError::Invalid(format!(
                "the tools listed in skill.toml differ from the component's: {}",
                diff.join("; ")
            ))
            .into());
        }
    }
    manifest.tools = declared.iter().map(ToolDef::to_tool).collect();
    manifest.files.clear();
    for (entry, data) in [
        (COMPONENT_ENTRY, component),
        (README_ENTRY, readme.as_bytes()),
    ] {
        manifest.files.insert(
            entry.to_owned(),
            FileDigest {
                sha256: sha256_hex(data),
                size: data.len() as u64,
            },
        );
    }
    let text = manifest.to_toml()?;
    // What is written must read back.
    let parsed = Manifest::parse(text.as_bytes())?;
    let bytes = write_entries(text.as_bytes(), readme.as_bytes(), component, None)?;
    Ok((parsed, bytes))
}

fn write_entries(
    manifest: &[u8],
    readme: &[u8],
    component: &[u8],
    signature: Option<&SignatureFile>,
) -> Result<Vec<u8>, PackageError> {
    let fail = |e: zip::result::ZipError| PackageError::Corrupt(format!("writing: {e}"));
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(6))
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let signature = signature.map(SignatureFile::to_bytes);
    let entries = [
        (MANIFEST_ENTRY, Some(manifest)),
        (README_ENTRY, Some(readme)),
        (COMPONENT_ENTRY, Some(component)),
        (SIGNATURE_ENTRY, signature.as_deref()),
    ];
    for (name, data) in entries {
        let Some(data) = data else { continue };
        zip.start_file(name, options).map_err(fail)?;
        zip.write_all(data)
            .map_err(|e| PackageError::Corrupt(format!("writing {name}: {e}")))?;
    }
    Ok(zip.finish().map_err(fail)?.into_inner())
}

/// Checks the end-of-central-directory record before the zip library reads the central
/// directory: the entry count must be within the cap, and ZIP64 (never needed by a
/// package under the size cap) is refused.
fn precheck_end_record(bytes: &[u8], limits: &Limits) -> Result<(), PackageError> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const ZIP64_LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    let not_zip = || PackageError::Corrupt("no zip end record found".into());
    if bytes.len() < 22 {
        return Err(not_zip());
    }
    // The record is 22 bytes plus a comment of at most 65535.
    let from = bytes.len().saturating_sub(22 + 0xffff);
    let at = (from..=bytes.len() - 22)
        .rev()
        .find(|&i| bytes[i..i + 4] == EOCD)
        .ok_or_else(not_zip)?;
    // The writer never adds an archive comment, so the record ends the file; an earlier
    // "record" (a decoy a lenient parser might fall back to) is not accepted.
    if at != bytes.len() - 22 {
        return Err(PackageError::Corrupt(
            "the zip end record is not at the end of the file (archive comments are not accepted)"
                .into(),
        ));
    }
    let field = |off: usize| u16::from_le_bytes([bytes[at + off], bytes[at + off + 1]]);
    let word = |off: usize| {
        u32::from_le_bytes([
            bytes[at + off],
            bytes[at + off + 1],
            bytes[at + off + 2],
            bytes[at + off + 3],
        ])
    };
    let (cd_size, cd_offset) = (u64::from(word(12)), u64::from(word(16)));
    if cd_size > 64 << 10 || cd_offset.checked_add(cd_size) != Some(at as u64) {
        return Err(PackageError::Corrupt(
            "the central directory is not where the end record says, or is too large".into(),
        ));
    }
    let (on_disk, total) = (field(8), field(10));
    if at >= 20 && bytes[at - 20..at - 16] == ZIP64_LOCATOR || total == 0xffff {
        return Err(PackageError::Corrupt(
            "ZIP64 archives are not accepted".into(),
        ));
    }
    let count = u64::from(on_disk.max(total));
    if count > limits.entries as u64 {
        return Err(PackageError::TooManyEntries {
            count,
            cap: limits.entries,
        });
    }
    Ok(())
}

/// Checks an entry name; returns it as text.
fn check_name(raw: &[u8]) -> Result<String, PackageError> {
    let lossy = String::from_utf8_lossy(raw).into_owned();
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err(PackageError::BadName(lossy));
    };
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(PackageError::BadName(lossy));
    }
    let b = name.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    if name.starts_with('/')
        || name.contains('\\')
        || drive
        || name.split('/').any(|seg| seg == ".." || seg == ".")
    {
        return Err(PackageError::PathTraversal(lossy));
    }
    Ok(lossy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Annotations, Manifest};
    use crate::sign::TrustedSigner;
    use serde_json::json;

    fn source() -> Manifest {
        Manifest::parse_source(
            br#"
namespace = "acme"
name = "weather"
version = "1.0.0"
description = "Weather forecasts"
publisher = "Acme Corp"
"#,
        )
        .unwrap()
    }

    fn tools() -> Vec<ToolDef> {
        vec![ToolDef {
            name: "forecast".into(),
            description: "Forecast for a city".into(),
            input_schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            output_schema: None,
            annotations: Annotations {
                read_only: Some(true),
                ..Annotations::default()
            },
        }]
    }

    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0 pretend component bytes";

    fn signed() -> (SecretKey, Vec<u8>) {
        let (_, unsigned) = pack(&source(), &tools(), COMPONENT, "# Weather\n").unwrap();
        let key = SecretKey::generate().unwrap();
        let pkg = Package::read(&unsigned, &Limits::default()).unwrap();
        let bytes = pkg.sign(&key).unwrap();
        (key, bytes)
    }

    fn policy(key: &SecretKey) -> TrustPolicy {
        let mut p = TrustPolicy::default();
        p.trust("acme", TrustedSigner::Key(key.public()));
        p
    }

    /// A zip with the given entries, written with the zip crate's raw options.
    fn zip_with(entries: &[(&str, &[u8], SimpleFileOptions)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data, options) in entries {
            zip.start_file(*name, *options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn entries_of(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        (0..zip.len())
            .map(|i| {
                let mut e = zip.by_index(i).unwrap();
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                (e.name().unwrap().into_owned(), v)
            })
            .collect()
    }

    fn opts() -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
    }

    #[test]
    fn packs_signs_reads_and_verifies_deterministically() {
        let (_, a) = pack(&source(), &tools(), COMPONENT, "# Weather\n").unwrap();
        let (_, b) = pack(&source(), &tools(), COMPONENT, "# Weather\n").unwrap();
        assert_eq!(a, b, "packing is reproducible");
        let (key, bytes) = signed();
        let pkg = Package::read(&bytes, &Limits::default()).unwrap();
        assert_eq!(pkg.manifest.id(), "acme/weather@1.0.0");
        assert_eq!(pkg.component, COMPONENT);
        assert_eq!(pkg.manifest.tool_defs().unwrap(), tools());
        let verified = pkg.verify(&policy(&key)).unwrap();
        assert_eq!(verified.signer, Signer::Key(key.public()));
    }

    #[test]
    fn pack_refuses_listed_tools_that_differ_from_the_component() {
        let mut src = source();
        src.tools = tools().iter().map(ToolDef::to_tool).collect();
        pack(&src, &tools(), COMPONENT, "r").unwrap();
        src.tools[0].description = "Something harmless".into();
        let e = pack(&src, &tools(), COMPONENT, "r")
            .unwrap_err()
            .to_string();
        assert!(e.contains("description differs"), "{e}");
    }

    #[test]
    fn trust_failures_are_named() {
        let (key, bytes) = signed();
        let other = SecretKey::generate().unwrap();
        let read = || Package::read(&bytes, &Limits::default()).unwrap();
        let e = read().verify(&policy(&other)).unwrap_err();
        assert!(
            matches!(e, PackageError::Signature(SignError::UnknownSigner { .. })),
            "{e}"
        );
        let e = read().verify(&TrustPolicy::default()).unwrap_err();
        assert!(
            matches!(e, PackageError::Signature(SignError::UntrustedNamespace(_))),
            "{e}"
        );
        let mut elsewhere = TrustPolicy::default();
        elsewhere.trust("globex", TrustedSigner::Key(key.public()));
        let e = read().verify(&elsewhere).unwrap_err();
        assert!(
            matches!(e, PackageError::Signature(SignError::WrongNamespace { .. })),
            "{e}"
        );
        // Unsigned.
        let (_, unsigned) = pack(&source(), &tools(), COMPONENT, "r").unwrap();
        let e = Package::read(&unsigned, &Limits::default())
            .unwrap()
            .verify(&policy(&key))
            .unwrap_err();
        assert_eq!(e, PackageError::Signature(SignError::NotSigned));
    }

    #[test]
    fn a_changed_entry_is_refused_whichever_it_is() {
        let (key, bytes) = signed();
        let entries = entries_of(&bytes);
        for victim in 0..entries.len() {
            let mut changed = entries.clone();
            let data = &mut changed[victim].1;
            let mid = data.len() / 2;
            data[mid] ^= 0x01;
            let rebuilt: Vec<(&str, &[u8], SimpleFileOptions)> = changed
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice(), opts()))
                .collect();
            let zip = zip_with(&rebuilt);
            let outcome =
                Package::read(&zip, &Limits::default()).and_then(|p| p.verify(&policy(&key)));
            assert!(
                outcome.is_err(),
                "flipped byte in {} accepted",
                changed[victim].0
            );
        }
        // A flipped byte in the compressed stream itself: CRC or inflate error.
        let mut raw = bytes.clone();
        let at = raw.len() / 2;
        raw[at] ^= 0x40;
        assert!(
            Package::read(&raw, &Limits::default())
                .and_then(|p| p.verify(&policy(&key)))
                .is_err()
        );
    }

    #[test]
    fn hostile_names_kinds_and_extra_entries_are_refused() {
        let (_, bytes) = signed();
        let good = entries_of(&bytes);
        let with_extra = |name: &str, options: SimpleFileOptions| {
            let mut list: Vec<(&str, &[u8], SimpleFileOptions)> = good
                .iter()
                .map(|(n, d)| (n.as_str(), d.as_slice(), opts()))
                .collect();
            list.push((name, b"x", options));
            Package::read(&zip_with(&list), &Limits::default()).unwrap_err()
        };
        for name in [
            "../evil",
            "a/../../evil",
            "/etc/passwd",
            "C:evil",
            "c:/x",
            "a\\..\\b",
            "./x",
        ] {
            let e = with_extra(name, opts());
            assert!(matches!(e, PackageError::PathTraversal(_)), "{name}: {e}");
        }
        let e = with_extra("a\u{7}b", opts());
        assert!(matches!(e, PackageError::BadName(_)), "{e}");
        let e = with_extra("notes.txt", opts());
        assert!(matches!(e, PackageError::UnexpectedEntry(_)), "{e}");
        assert!(e.to_string().contains("not be covered by the signature"));
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (n, d) in &good {
            zip.start_file(n.as_str(), opts()).unwrap();
            zip.write_all(d).unwrap();
        }
        zip.add_symlink("link", "/etc/passwd", opts()).unwrap();
        let linked = zip.finish().unwrap().into_inner();
        let e = Package::read(&linked, &Limits::default()).unwrap_err();
        assert!(matches!(e, PackageError::Symlink(_)), "{e}");
        let e = with_extra("dir/", opts());
        assert!(matches!(e, PackageError::Directory(_)), "{e}");
        // Duplicates.
        // The zip writer refuses duplicates: write another name of the same length, then
        // rename it in both headers.
        let mut list: Vec<(&str, &[u8], SimpleFileOptions)> = good
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice(), opts()))
            .collect();
        list.push(("README.mX", b"# something else\n", opts()));
        let mut dup = zip_with(&list);
        let at: Vec<usize> = dup
            .windows(9)
            .enumerate()
            .filter(|(_, w)| *w == b"README.mX")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 2);
        for i in at {
            dup[i..i + 9].copy_from_slice(README_ENTRY.as_bytes());
        }
        let e = Package::read(&dup, &Limits::default()).unwrap_err();
        assert!(matches!(e, PackageError::Duplicate(_)), "{e}");
    }

    /// Overwrites a field of `entry`'s central-directory and local headers.
    fn patch(raw: &mut [u8], entry: &str, central: usize, local: usize, value: &[u8]) -> usize {
        let name = entry.as_bytes();
        let mut patched = 0;
        for (sig, field, name_off) in [
            ([0x50, 0x4b, 0x01, 0x02], central, 46),
            ([0x50, 0x4b, 0x03, 0x04], local, 30),
        ] {
            let mut i = 0;
            while i + name_off + name.len() <= raw.len() {
                if raw[i..i + 4] == sig && raw[i + name_off..i + name_off + name.len()] == *name {
                    raw[i + field..i + field + value.len()].copy_from_slice(value);
                    patched += 1;
                }
                i += 1;
            }
        }
        patched
    }

    #[test]
    fn other_compression_methods_are_refused() {
        let (_, bytes) = signed();
        let mut raw = bytes.clone();
        // bzip2 (12) in both headers of the README.
        assert_eq!(
            patch(&mut raw, README_ENTRY, 10, 8, &12u16.to_le_bytes()),
            2
        );
        let e = Package::read(&raw, &Limits::default()).unwrap_err();
        assert!(
            matches!(
                e,
                PackageError::Compression { .. } | PackageError::Corrupt(_)
            ),
            "{e}"
        );
    }

    #[test]
    fn bombs_and_oversized_entries_are_refused_while_reading() {
        let (_, bytes) = signed();
        let good = entries_of(&bytes);
        let replace = |name: &str, data: &[u8], limits: Limits| {
            let list: Vec<(&str, &[u8], SimpleFileOptions)> = good
                .iter()
                .map(|(n, d)| {
                    let d = if n == name { data } else { d.as_slice() };
                    (n.as_str(), d, opts().large_file(false))
                })
                .collect();
            Package::read(&zip_with(&list), &limits).unwrap_err()
        };
        // 10 MiB of zeros deflates ~1000:1.
        let zeros = vec![0u8; 10 << 20];
        let e = replace(COMPONENT_ENTRY, &zeros, Limits::default());
        assert!(matches!(e, PackageError::Ratio { .. }), "{e}");
        let e = replace(
            README_ENTRY,
            &vec![b'a'; 300 << 10],
            Limits {
                ratio: 1_000_000,
                ..Limits::default()
            },
        );
        assert!(matches!(e, PackageError::EntryTooLarge { .. }), "{e}");
        let e = replace(
            MANIFEST_ENTRY,
            format!("namespace = {}", "[".repeat(1000)).as_bytes(),
            Limits::default(),
        );
        assert!(
            matches!(e, PackageError::Manifest(ManifestError::TooDeep)),
            "{e}"
        );
        // Too many entries: refused from the end record, before the central directory.
        let many: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}"), vec![1])).collect();
        let list: Vec<(&str, &[u8], SimpleFileOptions)> = many
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice(), opts()))
            .collect();
        let e = Package::read(&zip_with(&list), &Limits::default()).unwrap_err();
        assert!(matches!(e, PackageError::TooManyEntries { .. }), "{e}");
        // The whole file.
        let e = Package::read(
            &bytes,
            &Limits {
                package: 100,
                ..Limits::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, PackageError::TooLarge { .. }), "{e}");
        assert!(matches!(
            Package::read(b"PK\x03\x04 not really", &Limits::default()),
            Err(PackageError::Corrupt(_))
        ));
    }

    #[test]
    fn a_lying_size_field_does_not_inflate_past_the_cap() {
        let (_, bytes) = signed();
        let mut raw = bytes.clone();
        // Patch the component's declared uncompressed size (central directory and local
        // header) down to 1 byte: the reader must not trust it.
        let patched = patch(&mut raw, COMPONENT_ENTRY, 24, 22, &1u32.to_le_bytes());
        assert_eq!(patched, 2);
        let e = Package::read(&raw, &Limits::default()).unwrap_err();
        assert!(
            matches!(e, PackageError::Corrupt(_) | PackageError::Duplicate(_)),
            "{e}"
        );
    }

    /// The fuzz target of the reader: proptest mutates a valid signed package (flips,
    /// overwrites, truncations, insertions, and header fields set to extreme values) and
    /// checks that the reader never panics and that nothing whose contents changed passes
    /// verification. Bounded (512 cases) so it runs in every CI run.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        fn original() -> &'static (Vec<u8>, TrustPolicy, Package) {
            static ONCE: OnceLock<(Vec<u8>, TrustPolicy, Package)> = OnceLock::new();
            ONCE.get_or_init(|| {
                let (key, bytes) = signed();
                let pkg = Package::read(&bytes, &Limits::default()).unwrap();
                (bytes, policy(&key), pkg)
            })
        }

        #[derive(Debug, Clone)]
        enum Mutation {
            Flip(usize, u8),
            Set(usize, Vec<u8>),
            Truncate(usize),
            Insert(usize, Vec<u8>),
            Extreme(usize),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                (any::<usize>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
                (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
                    .prop_map(|(i, v)| Mutation::Set(i, v)),
                any::<usize>().prop_map(Mutation::Truncate),
                (
                    any::<usize>(),
                    proptest::collection::vec(any::<u8>(), 1..64)
                )
                    .prop_map(|(i, v)| Mutation::Insert(i, v)),
                any::<usize>().prop_map(Mutation::Extreme),
            ]
        }

        fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
            let len = bytes.len();
            match m {
                Mutation::Flip(i, x) => bytes[i % len] ^= x,
                Mutation::Set(i, v) => {
                    for (k, b) in v.iter().enumerate() {
                        let at = (i + k) % len;
                        bytes[at] = *b;
                    }
                }
                Mutation::Truncate(i) => bytes.truncate(i % len),
                Mutation::Insert(i, v) => {
                    let at = i % (len + 1);
                    bytes.splice(at..at, v.iter().copied());
                }
                // Sizes, counts and offsets set to their largest values.
                Mutation::Extreme(i) => {
                    let at = i % len.saturating_sub(4).max(1);
                    let end = (at + 4).min(len);
                    bytes[at..end].fill(0xff);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn the_reader_never_panics_and_never_accepts_changed_contents(
                mutations in proptest::collection::vec(mutation(), 1..4)
            ) {
                let (bytes, policy, good) = original();
                let mut bytes = bytes.clone();
                for m in &mutations {
                    if bytes.is_empty() {
                        break;
                    }
                    apply(&mut bytes, m);
                }
                if let Ok(pkg) = Package::read(&bytes, &Limits::default())
                    && let Ok(v) = pkg.verify(policy)
                {
                    prop_assert_eq!(&v.package.manifest_bytes, &good.manifest_bytes);
                    prop_assert_eq!(&v.package.component, &good.component);
                    prop_assert_eq!(&v.package.readme, &good.readme);
                }
            }
        }
    }
}
