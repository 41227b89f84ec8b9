//! Skill packages meet the runtime: a package's component is loaded (compiled, linked and
//! asked for its tools) and its declared tools are compared with the manifest's, field by
//! field, before anything else trusts the manifest's description of them.
//!
//! Invariant: a package whose component declares other tools than its signed manifest
//! lists is refused, with every difference named; the manifest is what operators review
//! and pin, so it must be what runs.
//!
//! Threat: a signed manifest that describes harmless tools while the component serves
//! others (or the same names with other schemas or hints).

use crate::runtime::{LoadError, Runtime, Skill, SkillSettings, ToolInfo};
use warden_registry::manifest::{Annotations, ToolDef, diff_tools};
use warden_registry::{ManifestError, Package};

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
