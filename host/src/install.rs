//! Installing signed skill packages into a running gateway: stage (read, verify against the
//! gateway's trust policy, compile and check the component's tools), review (what the
//! operator is shown: tools, requested capabilities, signer, and how the tools differ from
//! the installed version), record (the skill, its tool pins and, with consent, grants for
//! what it asked for, in the admin change's transaction), go live (the catalog swaps the
//! tools in and announces `tools/list_changed`); remove and roll back; and loading what
//! was installed when `warden up` starts again.
//!
//! Invariants:
//! - Nothing is written before a package passed every check: a refused package leaves no
//!   file, no record and no tool behind.
//! - Tool pinning: an installed version pins the SHA-256 of each tool's definition (JCS of
//!   name, description, schemas and annotations). An upgrade whose pins differ is refused
//!   until the operator approves the listed changes; until then the old version keeps
//!   serving.
//! - Capabilities become grants only with the operator's consent (`accept`) and only in
//!   the scope the operator names.
//! - On start, an installed package is loaded only if its file still has its recorded
//!   digest and its signer is still trusted; otherwise it stays out of the catalog (fail
//!   closed) and `warden up` says why.
//!
//! Threat: rug pulls (a trusted skill's update that silently changes what its tools say or
//! do), packages from untrusted signers, and capabilities granted without anyone agreeing.

use crate::gateway::{Catalog, CatalogError, Gateway, skill_key};
use crate::packages::{self, ComponentError};
use crate::runtime::{Runtime, Skill, SkillSettings};
use crate::storage::{InstalledPackage, PreviousVersion, SkillRecord, Store, StoreError, Tables};
use crate::vault::grants::{self, GrantError, GrantSpec};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use warden_registry::manifest::{ToolDef, diff_tools};
use warden_registry::sign::sha256_hex;
use warden_registry::{Limits, Package, Verified};

/// Why an install, removal or rollback was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// This gateway cannot install packages (no runtime was given to it).
    #[error("this gateway does not install packages")]
    Disabled,
    /// The package is refused (malformed, untrusted, or its component does not match).
    #[error("{0}")]
    Refused(String),
    /// It conflicts with what is installed.
    #[error("{0}")]
    Conflict(String),
    /// Nothing by that name.
    #[error("{0}")]
    NotFound(String),
    /// A grant for a requested capability is refused.
    #[error("a requested capability cannot be granted: {0}")]
    Grant(#[from] GrantError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("package storage: {0}")]
    Io(#[from] std::io::Error),
}

/// A package that passed every check, ready to be recorded and made live.
pub struct Staged {
    /// The verified package.
    pub verified: Verified,
    /// Its compiled skill.
    pub skill: Skill,
    /// Tool name -> definition hash.
    pub pins: BTreeMap<String, String>,
    /// How its tools differ from the installed version's (empty for a new skill or an
    /// upgrade that keeps them).
    pub changes: Vec<String>,
    /// The installed record this would replace.
    pub replaces: Option<SkillRecord>,
    /// The package file's bytes.
    pub bytes: Vec<u8>,
}

/// What the operator decided.
#[derive(Debug, Clone, Default)]
pub struct Consent {
    /// Grant the requested capabilities in this scope (`tenant/workspace[/environment]`).
    pub grant_scope: Option<String>,
    /// Install even though the tools differ from the installed version's.
    pub approve_changes: bool,
    /// Who decided.
    pub by: String,
}

/// The hash that pins one tool definition.
pub fn pin(def: &ToolDef) -> String {
    let canonical = serde_json_canonicalizer::to_vec(&packages::tool_json(def))
        .unwrap_or_else(|_| packages::tool_json(def).to_string().into_bytes());
    sha256_hex(&canonical)
}

fn pins(defs: &[ToolDef]) -> BTreeMap<String, String> {
    defs.iter().map(|d| (d.name.clone(), pin(d))).collect()
}

fn packages_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(crate::datadir::PACKAGES_DIR)
}

fn package_path(data_dir: &Path, sha256: &str) -> PathBuf {
    packages_dir(data_dir).join(format!("{sha256}.wsk"))
}

fn refused(e: impl std::fmt::Display) -> InstallError {
    InstallError::Refused(format!("package refused: {e}"))
}

/// Reads, verifies and compiles a package, and compares it with what is installed.
pub async fn stage(g: &Gateway, bytes: Vec<u8>) -> Result<Staged, InstallError> {
    let runtime = g.runtime().ok_or(InstallError::Disabled)?;
    let (package, bytes) = tokio::task::spawn_blocking(move || {
        Package::read(&bytes, &Limits::default()).map(|p| (p, bytes))
    })
    .await
    .map_err(|_| InstallError::Refused("reading the package failed".into()))?
    .map_err(refused)?;
    let policy = packages::trust_policy(&**g.store())?;
    let verified = package.verify(&policy).map_err(refused)?;
    let m = &verified.package.manifest;
    let replaces = g.store().skill(&skill_key(&m.namespace, &m.name))?;
    if replaces.as_ref().is_some_and(|r| r.package.is_none()) {
        return Err(InstallError::Conflict(format!(
            "`{}/{}` is loaded by `warden up` itself (first-party or --dev-skill); a package cannot replace it",
            m.namespace, m.name
        )));
    }
    let skill = load(runtime, &verified.package).await?;
    g.catalog()
        .check_install(&m.namespace, &skill)
        .map_err(|e: CatalogError| InstallError::Conflict(e.to_string()))?;
    let defs = m.tool_defs().map_err(refused)?;
    let pins = pins(&defs);
    let changes = match replaces.as_ref().and_then(|r| r.package.as_ref()) {
        Some(old) if old.pins != pins => tool_changes(g.data_dir(), old, &defs, &pins),
        _ => Vec::new(),
    };
    Ok(Staged {
        verified,
        skill,
        pins,
        changes,
        replaces,
        bytes,
    })
}

async fn load(runtime: &Runtime, package: &Package) -> Result<Skill, InstallError> {
    packages::load_checked(
        runtime,
        &package.manifest.name,
        package,
        SkillSettings::default(),
    )
    .await
    .map_err(|e: ComponentError| refused(e))
}

/// The differences between the installed version's tools and `defs`, from the installed
/// package file (or, if it is gone, from the pins alone).
fn tool_changes(
    data_dir: &Path,
    old: &InstalledPackage,
    defs: &[ToolDef],
    new_pins: &BTreeMap<String, String>,
) -> Vec<String> {
    let old_defs = std::fs::read(package_path(data_dir, &old.sha256))
        .ok()
        .and_then(|b| Package::read(&b, &Limits::default()).ok())
        .and_then(|p| p.manifest.tool_defs().ok());
    match old_defs {
        Some(old_defs) => diff_tools(&old_defs, defs),
        None => {
            let mut out = Vec::new();
            for (name, hash) in &old.pins {
                match new_pins.get(name) {
                    None => out.push(format!("tool `{name}` is removed")),
                    Some(h) if h != hash => out.push(format!("tool `{name}` changes")),
                    _ => {}
                }
            }
            for name in new_pins.keys().filter(|n| !old.pins.contains_key(*n)) {
                out.push(format!("tool `{name}` is added"));
            }
            out
        }
    }
}

/// What the operator reviews before consenting.
pub fn review(staged: &Staged) -> Value {
    let p = &staged.verified.package;
    let m = &p.manifest;
    let tools: Vec<Value> = m
        .tool_defs()
        .unwrap_or_default()
        .iter()
        .map(packages::tool_json)
        .collect();
    json!({
        "id": m.id(),
        "namespace": m.namespace,
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "publisher": m.publisher,
        "sha256": p.digest,
        "signer": staged.verified.signer.to_string(),
        "tools": tools,
        "capabilities": m.capabilities,
        "replaces": staged.replaces.as_ref().and_then(|r| r.package.as_ref()).map(|p| p.version.clone()),
        "tool_changes": staged.changes,
    })
}

/// Checks what the operator agreed to against the staged package (the reviewed digest,
/// approval of tool changes).
pub fn check_consent(
    staged: &Staged,
    reviewed_digest: Option<&str>,
    consent: &Consent,
) -> Result<(), InstallError> {
    let digest = &staged.verified.package.digest;
    if let Some(reviewed) = reviewed_digest
        && reviewed != digest
    {
        return Err(InstallError::Conflict(format!(
            "the package (sha256 {digest}) is not the one that was reviewed (sha256 {reviewed})"
        )));
    }
    if !staged.changes.is_empty() && !consent.approve_changes {
        return Err(InstallError::Conflict(format!(
            "the new version changes its tools; the installed version keeps serving until the changes are approved (--approve-changes): {}",
            staged.changes.join("; ")
        )));
    }
    Ok(())
}

/// Keeps the package file in the data directory (by digest; atomic, 0600).
pub fn keep_file(data_dir: &Path, staged: &Staged) -> Result<(), InstallError> {
    let dir = packages_dir(data_dir);
    crate::datadir::create_private_dir(&dir)?;
    let path = package_path(data_dir, &staged.verified.package.digest);
    if !path.exists() {
        crate::datadir::write_private_atomic(&path, &staged.bytes)?;
    }
    Ok(())
}

/// Records the install (and, with consent, grants for the requested capabilities) in
/// `tx`, the admin change's transaction.
pub fn record(
    tx: &impl Tables,
    data_dir: &Path,
    staged: &Staged,
    consent: &Consent,
) -> Result<SkillRecord, InstallError> {
    let p = &staged.verified.package;
    let m = &p.manifest;
    let mut previous = Vec::new();
    if let Some(old) = staged.replaces.as_ref().and_then(|r| r.package.as_ref()) {
        previous.clone_from(&old.previous);
        previous.retain(|v: &PreviousVersion| v.version != m.version);
        if old.version != m.version {
            previous.push(PreviousVersion {
                version: old.version.clone(),
                sha256: old.sha256.clone(),
            });
        }
    }
    let record = SkillRecord {
        namespace: m.namespace.clone(),
        digest: staged.skill.digest().to_owned(),
        component: package_path(data_dir, &p.digest),
        workspaces: staged
            .replaces
            .as_ref()
            .map_or_else(|| vec!["*".to_owned()], |r| r.workspaces.clone()),
        package: Some(InstalledPackage {
            version: m.version.clone(),
            sha256: p.digest.clone(),
            signer: staged.verified.signer.to_string(),
            pins: staged.pins.clone(),
            installed_at: crate::identity::now_secs(),
            installed_by: consent.by.clone(),
            previous,
        }),
        embedded: None,
    };
    let key = skill_key(&m.namespace, &m.name);
    tx.put_skill(&key, &record)?;
    if let Some(scope) = &consent.grant_scope {
        let c = &m.capabilities;
        for h in &c.hosts {
            let spec = GrantSpec {
                skill: key.clone(),
                scope: scope.clone(),
                host: Some(h.host.clone()),
                scheme: h.scheme.clone(),
                path_prefix: h.path_prefix.clone(),
                methods: h.methods.clone(),
                allow_private: false,
                inject: h.inject.clone(),
                inject_query: h.inject_query.clone(),
                basic_auth: h.basic_auth.clone(),
                reveal: Vec::new(),
            };
            grants::add(tx, &spec, &consent.by)?;
        }
        if !c.reveal.is_empty() {
            let spec = GrantSpec {
                skill: key.clone(),
                scope: scope.clone(),
                reveal: c.reveal.clone(),
                ..GrantSpec::default()
            };
            grants::add(tx, &spec, &consent.by)?;
        }
    }
    Ok(record)
}

/// Makes a recorded install live: the catalog swaps the tools in and announces the change.
pub fn go_live(
    g: &Gateway,
    staged: &Staged,
    record: &SkillRecord,
) -> Result<Vec<String>, InstallError> {
    let m = &staged.verified.package.manifest;
    let names = g
        .catalog()
        .install(&m.namespace, staged.skill.clone())
        .map_err(|e| InstallError::Conflict(e.to_string()))?;
    g.install_in(&skill_key(&m.namespace, &m.name), record.workspaces.clone());
    Ok(names)
}

/// The package file of an earlier version of the installed skill with key `name`, for a
/// rollback.
pub fn previous_file(g: &Gateway, name: &str, version: &str) -> Result<Vec<u8>, InstallError> {
    let rec = g
        .store()
        .skill(name)?
        .and_then(|r| r.package)
        .ok_or_else(|| InstallError::NotFound(format!("no installed package `{name}`")))?;
    let prev = rec
        .previous
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| {
            InstallError::NotFound(format!(
                "`{name}` has no earlier installed version {version} (installed before: {})",
                rec.previous
                    .iter()
                    .map(|v| v.version.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let bytes = std::fs::read(package_path(g.data_dir(), &prev.sha256))?;
    if sha256_hex(&bytes) != prev.sha256 {
        return Err(InstallError::Refused(format!(
            "the kept package file of {name}@{version} does not match its digest"
        )));
    }
    Ok(bytes)
}

/// Forgets the record of the installed package with key `name` and removes its grants,
/// in `tx` (its files stay for a later rollback).
pub fn forget(tx: &impl Tables, name: &str, by: &str) -> Result<SkillRecord, InstallError> {
    let rec = tx
        .skill(name)?
        .ok_or_else(|| InstallError::NotFound(format!("no installed skill `{name}`")))?;
    if rec.package.is_none() {
        return Err(InstallError::Conflict(format!(
            "`{name}` is loaded by `warden up` itself (first-party or --dev-skill) and cannot be removed"
        )));
    }
    tx.remove_skill(name)?;
    // Its grants go with it: a later install of the same name starts from nothing.
    for (id, g) in tx.grants()? {
        if g.skill == name && g.removed.is_none() {
            grants::remove(tx, &id, by)?;
        }
    }
    Ok(rec)
}

/// Loads the installed packages when `warden up` starts: each one whose file still has its
/// digest and whose signer is still trusted. Returns a line per package left out.
pub async fn load_installed(
    runtime: &Runtime,
    store: &Store,
    catalog: &Catalog,
    data_dir: &Path,
) -> Result<Vec<String>, StoreError> {
    let policy = packages::trust_policy(store)?;
    let mut skipped = Vec::new();
    for (name, rec) in store.skills()? {
        let Some(installed) = &rec.package else {
            continue;
        };
        let outcome: Result<(), String> = async {
            let bytes = std::fs::read(package_path(data_dir, &installed.sha256))
                .map_err(|e| format!("its package file cannot be read: {e}"))?;
            if sha256_hex(&bytes) != installed.sha256 {
                return Err("its package file no longer has its recorded digest".into());
            }
            let verified = Package::read(&bytes, &Limits::default())
                .and_then(|p| p.verify(&policy))
                .map_err(|e| e.to_string())?;
            let skill = load(runtime, &verified.package)
                .await
                .map_err(|e| e.to_string())?;
            catalog
                .install(&rec.namespace, skill)
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        if let Err(why) = outcome {
            skipped.push(format!(
                "{}/{name}@{}: {why}",
                rec.namespace, installed.version
            ));
        }
    }
    Ok(skipped)
}

/// Removes package files no installed skill refers to (current or earlier versions): those
/// of removed skills, and any kept for an install whose record was then refused. Runs when
/// `warden up` starts, before any install can be in flight. Returns the files removed.
pub fn collect_garbage(store: &Store, data_dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut referenced = std::collections::HashSet::new();
    for (_, rec) in store.skills()? {
        if let Some(p) = rec.package {
            referenced.insert(format!("{}.wsk", p.sha256));
            referenced.extend(p.previous.iter().map(|v| format!("{}.wsk", v.sha256)));
        }
    }
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(packages_dir(data_dir)) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wsk") && !referenced.contains(&name) {
            let path = entry.path();
            if std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// Takes out of the catalog every installed package whose signer the trust policy no
/// longer accepts (after a trust change); returns their keys. They stay recorded, and load
/// again if the signer is trusted again and the gateway restarts or they are reinstalled.
pub fn enforce_trust(g: &Gateway) -> Result<Vec<String>, StoreError> {
    let policy = packages::trust_policy(&**g.store())?;
    let mut removed = Vec::new();
    for (key, rec) in g.store().skills()? {
        let Some(installed) = &rec.package else {
            continue;
        };
        let trusted = std::fs::read(package_path(g.data_dir(), &installed.sha256))
            .ok()
            .filter(|b| sha256_hex(b) == installed.sha256)
            .and_then(|b| Package::read(&b, &Limits::default()).ok())
            .is_some_and(|p| p.verify(&policy).is_ok());
        if !trusted && g.catalog().remove(&key) {
            tracing::warn!(skill = %key, "signer no longer trusted; its tools are withdrawn");
            removed.push(key);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_package_files_no_skill_refers_to_are_collected() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(&dir.path().join("warden.redb")).unwrap_or_else(|e| panic!("{e}"));
        let pkg = |sha: &str, previous: Vec<PreviousVersion>| InstalledPackage {
            version: "1.0.0".into(),
            sha256: sha.into(),
            signer: "ed25519:x".into(),
            pins: BTreeMap::new(),
            installed_at: 0,
            installed_by: "test".into(),
            previous,
        };
        let record = SkillRecord {
            namespace: "acme".into(),
            digest: "d".into(),
            component: PathBuf::new(),
            workspaces: vec!["*".into()],
            package: Some(pkg(
                "aaaa",
                vec![PreviousVersion {
                    version: "0.9.0".into(),
                    sha256: "bbbb".into(),
                }],
            )),
            embedded: None,
        };
        store
            .put_skill("acme/hello", &record)
            .unwrap_or_else(|e| panic!("{e}"));
        let packages = packages_dir(dir.path());
        std::fs::create_dir_all(&packages).unwrap_or_else(|e| panic!("{e}"));
        for name in ["aaaa.wsk", "bbbb.wsk", "cccc.wsk", "notes.txt"] {
            std::fs::write(packages.join(name), b"x").unwrap_or_else(|e| panic!("{e}"));
        }
        let removed = collect_garbage(&store, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(removed, vec![packages.join("cccc.wsk")]);
        for kept in ["aaaa.wsk", "bbbb.wsk", "notes.txt"] {
            assert!(packages.join(kept).exists(), "{kept}");
        }
    }
}
