//! Skill packages meet the gateway: a package's component is loaded (compiled, linked and
//! asked for its tools) and its declared tools are compared with the manifest's, field by
//! field, before anything else trusts the manifest's description of them; and the
//! gateway's trust policy (which signers may sign for which namespaces, and the pinned
//! Sigstore trusted root) is kept in the store.
//!
//! Invariants: a package whose component declares other tools than its signed manifest
//! lists is refused, with every difference named (the manifest is what operators review
//! and pin, so it must be what runs); the trust policy denies by default: a namespace with
//! no trusted signer accepts no package.
//!
//! Threat: a signed manifest that describes harmless tools while the component serves
//! others (or the same names with other schemas or hints); packages signed by keys the
//! operator never chose to trust.

use crate::runtime::{LoadError, Runtime, Skill, SkillSettings, ToolInfo};
use crate::storage::{StoreError, Tables, TrustRecord, TrustRootRecord};
use std::sync::{Arc, Mutex};
use warden_registry::manifest::{Annotations, ToolDef, diff_tools, valid_name};
use warden_registry::{
    ManifestError, Package, SigstoreError, SigstoreRoot, TrustPolicy, TrustedSigner,
};

/// Why a package's component was refused.
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    /// The component does not load.
    #[error("the package's component is not usable: {0}")]
    Load(#[from] LoadError),
    /// The manifest does not parse its own tools.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The declared tools differ from the manifest's.
    #[error("the component's tools differ from the manifest's: {}", .0.join("; "))]
    ToolsDiffer(Vec<String>),
}

/// A runtime tool as the manifest describes tools.
pub fn tool_def(t: &ToolInfo) -> ToolDef {
    ToolDef {
        name: t.name.clone(),
        description: t.description.clone(),
        input_schema: t.input_schema.clone(),
        output_schema: t.output_schema.clone(),
        annotations: Annotations {
            title: t.annotations.title.clone(),
            read_only: t.annotations.read_only,
            destructive: t.annotations.destructive,
            idempotent: t.annotations.idempotent,
            open_world: t.annotations.open_world,
        },
    }
}

/// A tool as JSON, in MCP's field names (`inputSchema`, `readOnlyHint`, ...).
pub fn tool_json(t: &ToolDef) -> serde_json::Value {
    let a = &t.annotations;
    let mut annotations = serde_json::Map::new();
    for (key, value) in [
        ("title", a.title.clone().map(serde_json::Value::from)),
        ("readOnlyHint", a.read_only.map(serde_json::Value::from)),
        (
            "destructiveHint",
            a.destructive.map(serde_json::Value::from),
        ),
        ("idempotentHint", a.idempotent.map(serde_json::Value::from)),
        ("openWorldHint", a.open_world.map(serde_json::Value::from)),
    ] {
        if let Some(v) = value {
            annotations.insert(key.into(), v);
        }
    }
    serde_json::json!({
        "name": t.name,
        "description": t.description,
        "inputSchema": t.input_schema,
        "outputSchema": t.output_schema,
        "annotations": annotations,
    })
}

/// Loads `package`'s component as skill `name` and checks that it declares exactly the
/// tools its manifest lists.
pub async fn load_checked(
    runtime: &Runtime,
    name: &str,
    package: &Package,
    settings: SkillSettings,
) -> Result<Skill, ComponentError> {
    let skill = runtime.load(name, &package.component, settings).await?;
    let declared: Vec<ToolDef> = skill.tools().iter().map(tool_def).collect();
    let listed = package.manifest.tool_defs()?;
    let diff = diff_tools(&listed, &declared);
    if diff.is_empty() {
        Ok(skill)
    } else {
        Err(ComponentError::ToolsDiffer(diff))
    }
}

/// Why a trust change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Malformed input.
    #[error("{0}")]
    Invalid(String),
    /// Nothing to remove.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The gateway's trust policy, from the store: the signers per namespace and the pinned
/// Sigstore trusted root. A pinned root that no longer parses is left out (Sigstore-signed
/// packages are then refused, naming the reason), never trusted partly.
pub fn trust_policy(tables: &impl Tables) -> Result<TrustPolicy, StoreError> {
    let mut policy = TrustPolicy::default();
    for (ns, record) in tables.trust()? {
        for signer in record.signers {
            policy.trust(&ns, signer);
        }
    }
    if let Some(record) = tables.sigstore_root()? {
        match sigstore_root(&record) {
            Ok(root) => policy.sigstore_root = Some(root),
            Err(e) => tracing::warn!(error = %e, "the pinned Sigstore trusted root is not usable"),
        }
    }
    Ok(policy)
}

/// The parsed root of `record`, parsed once per pinned root (building a verifier loads the
/// system's CA store, too slow to repeat per package).
fn sigstore_root(record: &TrustRootRecord) -> Result<Arc<SigstoreRoot>, SigstoreError> {
    static CACHE: Mutex<Option<Arc<SigstoreRoot>>> = Mutex::new(None);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(root) = cache.as_ref().filter(|r| r.sha256() == record.sha256) {
        return Ok(root.clone());
    }
    let root = Arc::new(SigstoreRoot::parse(record.json.as_bytes())?);
    *cache = Some(root.clone());
    Ok(root)
}

/// Pins `json` as the Sigstore trusted root (refused unless it parses into a usable root).
pub fn pin_sigstore_root(
    tables: &impl Tables,
    json: &str,
    by: &str,
) -> Result<TrustRootRecord, TrustError> {
    let root =
        SigstoreRoot::parse(json.as_bytes()).map_err(|e| TrustError::Invalid(e.to_string()))?;
    let record = TrustRootRecord {
        json: json.to_owned(),
        sha256: root.sha256().to_owned(),
        updated_at: crate::identity::now_secs(),
        updated_by: by.to_owned(),
    };
    tables.put_sigstore_root(Some(&record))?;
    Ok(record)
}

/// Namespaces no trust-policy entry may name: the first-party skills' (only the binary's
/// release key signs for it) and that of `warden up --dev-skill`.
pub const RESERVED_NAMESPACES: &[&str] = &[crate::first_party::NAMESPACE, "dev"];

/// Trusts `signer` for `namespace` (no change if it already is).
pub fn trust_add(
    tables: &impl Tables,
    namespace: &str,
    signer: TrustedSigner,
    by: &str,
) -> Result<TrustRecord, TrustError> {
    if !valid_name(namespace) {
        return Err(TrustError::Invalid(format!(
            "{namespace:?} is not a namespace: use 1-40 of a-z, 0-9 and '-', starting with a letter"
        )));
    }
    if RESERVED_NAMESPACES.contains(&namespace) {
        return Err(TrustError::Invalid(format!(
            "namespace `{namespace}` is reserved: `warden` holds the first-party skills, signed by the key compiled into the binary, and `dev` the local components of `warden up --dev-skill`"
        )));
    }
    if let TrustedSigner::Sigstore { san, issuer } = &signer
        && (san.is_empty() || issuer.is_empty() || san.len() > 512 || issuer.len() > 512)
    {
        return Err(TrustError::Invalid(
            "a Sigstore identity needs a SAN and an issuer (at most 512 bytes each)".into(),
        ));
    }
    let mut record = current(tables, namespace)?;
    if !record.signers.contains(&signer) {
        record.signers.push(signer);
    }
    record.updated_at = crate::identity::now_secs();
    record.updated_by = by.to_owned();
    tables.put_trust(namespace, &record)?;
    Ok(record)
}

/// Stops trusting `signer` for `namespace`.
pub fn trust_remove(
    tables: &impl Tables,
    namespace: &str,
    signer: &TrustedSigner,
    by: &str,
) -> Result<TrustRecord, TrustError> {
    let mut record = current(tables, namespace)?;
    let before = record.signers.len();
    record.signers.retain(|s| s != signer);
    if record.signers.len() == before {
        return Err(TrustError::NotFound(format!(
            "that signer is not trusted for `{namespace}`"
        )));
    }
    record.updated_at = crate::identity::now_secs();
    record.updated_by = by.to_owned();
    tables.put_trust(namespace, &record)?;
    Ok(record)
}

fn current(tables: &impl Tables, namespace: &str) -> Result<TrustRecord, StoreError> {
    Ok(tables
        .trust()?
        .into_iter()
        .find(|(n, _)| n == namespace)
        .map(|(_, r)| r)
        .unwrap_or(TrustRecord {
            signers: Vec::new(),
            updated_at: 0,
            updated_by: String::new(),
        }))
}
