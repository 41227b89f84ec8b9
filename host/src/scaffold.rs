//! `warden skill new`: a skill crate that builds as is.
//!
//! The crate holds `skill.toml` (the package manifest's source: namespace, name, version,
//! description, publisher, requested capabilities) and a `README.md`, so it packs as is.
//!
//! Invariant: the scaffold is a standalone crate (its own `[workspace]`), so it builds the
//! same inside or outside another workspace, and it never overwrites an existing directory.

use std::path::{Path, PathBuf};

/// Why a scaffold could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not a valid crate name.
    #[error(
        "skill name {0:?} is invalid: use lower-case letters, digits and '-', starting with a letter (at most 40)"
    )]
    BadName(String),
    /// The directory exists.
    #[error("{0} already exists; choose another name or remove it")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Where the generated crate gets `warden-sdk` from.
#[derive(Debug, Clone)]
pub enum SdkSource {
    /// A local checkout of the SDK.
    Path(PathBuf),
    /// The published crate.
    Registry,
}

impl SdkSource {
    /// The SDK next to the source tree this binary was built from, if it is still there.
    pub fn detect() -> Self {
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        match built_from.canonicalize() {
            Ok(p) if p.join("Cargo.toml").exists() => Self::Path(p),
            _ => Self::Registry,
        }
    }

    fn dependency(&self) -> String {
        match self {
            Self::Path(p) => format!("warden-sdk = {{ path = {:?} }}", p.display().to_string()),
            Self::Registry => format!("warden-sdk = \"{}\"", env!("CARGO_PKG_VERSION")),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 40
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
}

/// Writes a new skill crate named `name` under `parent`; returns its directory.
pub fn new_skill(parent: &Path, name: &str, sdk: &SdkSource) -> Result<PathBuf, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
{dep}
schemars = "1.2"
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
strip = "debuginfo"

# A skill is its own workspace: it builds for wasm32-wasip2 with `warden skill build`.
[workspace]
"#,
        dep = sdk.dependency()
    );
    let lib_rs = r#"//! A warden skill. Build it with `warden skill build .`

use warden_sdk::prelude::*;

/// Arguments of `greet`.
#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
}

/// The greeting.
#[derive(Serialize, JsonSchema)]
struct Greeting {
    /// The message.
    message: String,
}

/// Greet someone by name.
#[tool(read_only, idempotent)]
fn greet(args: GreetArgs) -> Result<Greeting, ToolError> {
    if args.name.trim().is_empty() {
        return Err(ToolError::invalid_arguments("name must not be empty"));
    }
    Ok(Greeting {
        message: format!("Hello, {}!", args.name),
    })
}

warden_sdk::skill!(greet);
"#;
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Io { path, source })
    };
    std::fs::create_dir_all(dir.join("src")).map_err(|source| ScaffoldError::Io {
        path: dir.clone(),
        source,
    })?;
    write(dir.join("Cargo.toml"), &cargo_toml)?;
    write(dir.join("src/lib.rs"), lib_rs)?;
    let skill_toml = format!(
        r#"# The skill's package manifest: `warden skill pack` adds the tools (read from the
# component) and the digests of the component and README.md, and signs nothing by itself
# (`warden skill sign PACKAGE --key KEY`, or `pack --key KEY`).

# The namespace you publish under: the registry gives it to the keys that own it.
namespace = "local"
name = "{name}"
version = "0.1.0"
description = "Greets people by name."
publisher = "you"

# What the skill asks an operator for; installing it grants nothing by itself.
# [[capabilities.hosts]]
# host = "api.example.com"
# methods = ["GET"]
# inject = ["Authorization: Bearer {{secret:example_token}}"]
"#
    );
    let readme = format!(
        "# {name}\n\nA warden skill. Build it with `warden skill build .`, pack it with\n`warden skill pack .`.\n\n## Tools\n\n- `greet`: greet someone by name.\n"
    );
    write(dir.join("skill.toml"), &skill_toml)?;
    write(dir.join("README.md"), &readme)?;
    write(dir.join(".gitignore"), "/target/\n*.wasm\n*.wsk\n")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["demo", "my-skill", "s3"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Demo", "1abc", "a_b", "a-", "../x", &"a".repeat(41)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn refuses_existing_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_skill(tmp.path(), "demo", &SdkSource::Registry).unwrap();
        assert!(dir.join("src/lib.rs").exists());
        let manifest = std::fs::read(dir.join("skill.toml")).unwrap();
        let m = warden_registry::Manifest::parse_source(&manifest).unwrap();
        assert_eq!(m.name, "demo");
        assert!(dir.join("README.md").exists());
        let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(text.contains("crate-type = [\"cdylib\"]"));
        assert!(matches!(
            new_skill(tmp.path(), "demo", &SdkSource::Registry),
            Err(ScaffoldError::Exists(_))
        ));
    }
}
