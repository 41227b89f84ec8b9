//! The package manifest, `skill.toml`: who the skill is (namespace, name, version,
//! publisher), what it offers (its tools, exactly as the component declares them), what it
//! asks for (outbound hosts, secrets injected or revealed, limits) and the SHA-256 digest
//! and size of every other entry of the package.
//!
//! Invariants:
//! - A manifest is parsed only after a bracket scan bounded its nesting
//!   ([`MAX_NESTING`]), from at most [`crate::package::Limits::manifest`] bytes; unknown
//!   fields are refused, so nothing unsigned-looking can hide in a signed manifest.
//! - Names are checked here once: the namespace and the skill name are lower-case
//!   identifiers, the version is semver without build metadata (two versions that differ
//!   only in build metadata would compare equal), tool names follow the runtime's contract.
//! - [`Manifest::to_toml`] is deterministic, so packing the same inputs twice gives the same
//!   bytes.
//!
//! Threat: a manifest that crashes or exhausts the reader (deep nesting, huge lists), that
//! names another publisher's namespace, or that describes tools other than the ones the
//! component runs (a rug pull hidden behind a harmless description).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Version of the manifest format this crate writes and reads.
pub const FORMAT: u32 = 1;
/// Deepest nesting of `[` and `{` a manifest may have (tables, arrays, inline tables).
pub const MAX_NESTING: usize = 32;
/// Most tools a manifest may list (the runtime's contract allows as many).
pub const MAX_TOOLS: usize = 256;
/// Most outbound hosts a manifest may request.
pub const MAX_HOSTS: usize = 64;
/// Longest namespace or skill name.
pub const MAX_NAME: usize = 40;
/// Longest description, publisher or other free text, in bytes.
pub const MAX_TEXT: usize = 8 * 1024;

/// Entry name of the manifest.
pub const MANIFEST_ENTRY: &str = "skill.toml";
/// Entry name of the component.
pub const COMPONENT_ENTRY: &str = "component.wasm";
/// Entry name of the README.
pub const README_ENTRY: &str = "README.md";
/// Entry name of the signature.
pub const SIGNATURE_ENTRY: &str = "signature.json";

/// Why a manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not UTF-8.
    #[error("skill.toml is not UTF-8")]
    NotUtf8,
    /// Nested deeper than [`MAX_NESTING`].
    #[error("skill.toml nests deeper than {MAX_NESTING} levels")]
    TooDeep,
    /// Not valid TOML or not the expected shape.
    #[error("skill.toml: {0}")]
    Syntax(String),
    /// A field has a value that is not allowed.
    #[error("skill.toml: {0}")]
    Invalid(String),
}

fn invalid(m: impl Into<String>) -> ManifestError {
    ManifestError::Invalid(m.into())
}

/// The manifest of a skill package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// The namespace the skill is published under (owned by the keys that may sign it).
    pub namespace: String,
    /// The skill's name within its namespace.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// What the skill does, for operators.
    pub description: String,
    /// Who publishes it (free text, shown to operators; trust comes from the signature).
    pub publisher: String,
    /// What the skill asks the operator for.
    #[serde(default, skip_serializing_if = "Capabilities::is_empty")]
    pub capabilities: Capabilities,
    /// Digest and size of every entry other than the manifest and the signature.
    #[serde(default)]
    pub files: BTreeMap<String, FileDigest>,
    /// The tools, as the component declares them.
    #[serde(default)]
    pub tools: Vec<Tool>,
}

/// Digest and size of one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Lower-case hex SHA-256 of the entry's uncompressed bytes.
    pub sha256: String,
    /// Uncompressed size in bytes.
    pub size: u64,
}

/// What a skill asks for. Nothing here is granted by installing it: an operator's consent
/// turns requests into grants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Outbound destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostRequest>,
    /// Secrets the skill reads itself (`secrets.reveal`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reveal: Vec<String>,
    /// Limits the skill asks for (the gateway caps them).
    #[serde(default, skip_serializing_if = "LimitRequest::is_empty")]
    pub limits: LimitRequest,
}

impl Capabilities {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.reveal.is_empty() && self.limits.is_empty()
    }
}

/// One outbound destination a skill asks for, with the credentials it expects the host to
/// add to requests there (templates with `{secret:NAME}` placeholders, as in grants).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRequest {
    /// `host`, `host:port` or `*.domain`.
    pub host: String,
    /// `https` (default) or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Path prefix (default: any path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Methods (default: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Headers to inject: `Name: value with {secret:NAME}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject: Vec<String>,
    /// Query parameters to inject: `name=value with {secret:NAME}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject_query: Vec<String>,
    /// HTTP basic auth: `user:password`, either part may hold `{secret:NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<String>,
}

/// Limits a skill asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// Wall-clock time of one call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Linear memory of one instance, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Calls running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u64>,
}

impl LimitRequest {
    /// Whether nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.deadline_ms.is_none() && self.memory_mib.is_none() && self.max_concurrency.is_none()
    }
}

/// A tool as the manifest describes it. Schemas are JSON text, so any JSON Schema (`null`
/// included, which TOML cannot spell) survives exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Local name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Input JSON Schema, as JSON text.
    pub input_schema: String,
    /// Output JSON Schema, as JSON text, when the tool returns structured content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<String>,
    /// MCP annotations.
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
}

/// MCP tool annotations (hints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    /// Human-readable title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Does not modify its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// May perform destructive updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    /// Repeated calls have no additional effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// Interacts with external entities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world: Option<bool>,
}

impl Annotations {
    /// Whether no hint is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A tool with its schemas parsed: what the manifest's tools are compared as.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// Local name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Input schema.
    pub input_schema: Value,
    /// Output schema.
    pub output_schema: Option<Value>,
    /// Annotations.
    pub annotations: Annotations,
}

impl ToolDef {
    /// The manifest form of this tool.
    pub fn to_tool(&self) -> Tool {
        Tool {
            name: self.name.clone(),
            description: self.description.clone(),
            input_schema: self.input_schema.to_string(),
            output_schema: self.output_schema.as_ref().map(Value::to_string),
            annotations: self.annotations.clone(),
        }
    }
}

impl Tool {
    /// This tool with its schemas parsed.
    pub fn to_def(&self) -> Result<ToolDef, ManifestError> {
        let parse = |which: &str, text: &str| -> Result<Value, ManifestError> {
            let v: Value = serde_json::from_str(text).map_err(|e| {
                invalid(format!(
                    "tool `{}`: {which}_schema is not JSON: {e}",
                    self.name
                ))
            })?;
            if !v.is_object() {
                return Err(invalid(format!(
                    "tool `{}`: {which}_schema is not a JSON object",
                    self.name
                )));
            }
            Ok(v)
        };
        Ok(ToolDef {
            name: self.name.clone(),
            description: self.description.clone(),
            input_schema: parse("input", &self.input_schema)?,
            output_schema: self
                .output_schema
                .as_deref()
                .map(|s| parse("output", s))
                .transpose()?,
            annotations: self.annotations.clone(),
        })
    }
}

/// How the tools a component declares differ from the tools its manifest lists: one line
/// per difference, empty when they agree.
pub fn diff_tools(manifest: &[ToolDef], declared: &[ToolDef]) -> Vec<String> {
    let mut out = Vec::new();
    for m in manifest {
        match declared.iter().find(|d| d.name == m.name) {
            None => out.push(format!(
                "tool `{}` is in the manifest but the component does not declare it",
                m.name
            )),
            Some(d) => {
                if d.description != m.description {
                    out.push(format!("tool `{}`: the description differs", m.name));
                }
                if d.input_schema != m.input_schema {
                    out.push(format!("tool `{}`: the input schema differs", m.name));
                }
                if d.output_schema != m.output_schema {
                    out.push(format!("tool `{}`: the output schema differs", m.name));
                }
                if d.annotations != m.annotations {
                    out.push(format!("tool `{}`: the annotations differ", m.name));
                }
            }
        }
    }
    for d in declared {
        if !manifest.iter().any(|m| m.name == d.name) {
            out.push(format!(
                "tool `{}` is declared by the component but missing from the manifest",
                d.name
            ));
        }
    }
    out
}

/// Whether `s` is a valid namespace or skill name: 1-40 of `[a-z0-9-]`, starting with a
/// letter, not ending with `-`.
pub fn valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    s.len() <= MAX_NAME
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.ends_with('-')
}

/// Whether `s` is a valid tool name (the runtime's contract: 1-48 of `[a-zA-Z0-9_-]`).
fn valid_tool_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Deepest nesting of `[`/`{` outside strings and comments; stops counting past `limit`.
fn nesting(text: &str, limit: usize) -> usize {
    let b = text.as_bytes();
    let (mut i, mut depth, mut max) = (0, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            q @ (b'"' | b'\'') => {
                let triple = b.get(i..i + 3) == Some(&[q, q, q][..]);
                i += if triple { 3 } else { 1 };
                loop {
                    if i >= b.len() {
                        break;
                    }
                    if q == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if triple {
                        if b.get(i..i + 3) == Some(&[q, q, q][..]) {
                            // A closing run may be up to five quotes long.
                            i += 3;
                            while b.get(i) == Some(&q) {
                                i += 1;
                            }
                            break;
                        }
                    } else if b[i] == q || b[i] == b'\n' {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        if nesting(text, MAX_NESTING) > MAX_NESTING {
            return Err(ManifestError::TooDeep);
        }
        let m: Manifest = toml::from_str(text).map_err(|e| {
            // The first line names the problem; the rest quotes the input.
            ManifestError::Syntax(e.message().to_owned())
        })?;
        m.check()?;
        Ok(m)
    }

    /// Parses an author's `skill.toml` (the package's manifest without the generated
    /// parts): `format`, `files` and `tools` may be left out.
    pub fn parse_source(bytes: &[u8]) -> Result<Self, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        if nesting(text, MAX_NESTING) > MAX_NESTING {
            return Err(ManifestError::TooDeep);
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Source {
            #[serde(default = "format")]
            format: u32,
            namespace: String,
            name: String,
            version: String,
            description: String,
            publisher: String,
            #[serde(default)]
            capabilities: Capabilities,
            #[serde(default)]
            tools: Vec<Tool>,
        }
        fn format() -> u32 {
            FORMAT
        }
        let s: Source =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.message().to_owned()))?;
        let m = Manifest {
            format: s.format,
            namespace: s.namespace,
            name: s.name,
            version: s.version,
            description: s.description,
            publisher: s.publisher,
            capabilities: s.capabilities,
            files: BTreeMap::new(),
            tools: s.tools,
        };
        m.check_identity()?;
        m.check_capabilities()?;
        Ok(m)
    }

    /// The manifest as TOML (deterministic: fields in declaration order, maps sorted).
    pub fn to_toml(&self) -> Result<String, ManifestError> {
        toml::to_string(self).map_err(|e| invalid(format!("cannot be written: {e}")))
    }

    /// The parsed version.
    pub fn semver(&self) -> Result<semver::Version, ManifestError> {
        parse_version(&self.version)
    }

    /// `namespace/name@version`.
    pub fn id(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name, self.version)
    }

    /// The tools with their schemas parsed.
    pub fn tool_defs(&self) -> Result<Vec<ToolDef>, ManifestError> {
        self.tools.iter().map(Tool::to_def).collect()
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(invalid(format!(
                "format {} is not supported (this warden reads format {FORMAT})",
                self.format
            )));
        }
        self.check_identity()?;
        self.check_capabilities()?;
        if self.tools.is_empty() {
            return Err(invalid("the manifest lists no tools"));
        }
        if self.tools.len() > MAX_TOOLS {
            return Err(invalid(format!(
                "{} tools listed; at most {MAX_TOOLS}",
                self.tools.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tools {
            if !valid_tool_name(&t.name) {
                return Err(invalid(format!("tool name {:?} is invalid", t.name)));
            }
            if !seen.insert(t.name.to_ascii_lowercase()) {
                return Err(invalid(format!("tool `{}` is listed twice", t.name)));
            }
            if t.description.is_empty() || t.description.len() > MAX_TEXT {
                return Err(invalid(format!(
                    "tool `{}`: the description must be 1-{MAX_TEXT} bytes",
                    t.name
                )));
            }
            // Control characters (terminal escapes) could hide text from an operator who
            // reviews the package in a terminal.
            if t.description
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
                || t.annotations
                    .title
                    .as_ref()
                    .is_some_and(|x| x.len() > MAX_TEXT || x.chars().any(char::is_control))
            {
                return Err(invalid(format!(
                    "tool `{}`: the description or title holds control characters or is too long",
                    t.name
                )));
            }
            t.to_def()?;
        }
        for required in [COMPONENT_ENTRY, README_ENTRY] {
            if !self.files.contains_key(required) {
                return Err(invalid(format!("[files] has no digest for {required}")));
            }
        }
        for (name, f) in &self.files {
            if name != COMPONENT_ENTRY && name != README_ENTRY {
                return Err(invalid(format!(
                    "[files] names {name:?}; a package holds only {COMPONENT_ENTRY} and {README_ENTRY} besides the manifest and the signature"
                )));
            }
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(format!(
                    "[files] {name}: sha256 must be 64 lower-case hex digits"
                )));
            }
        }
        Ok(())
    }

    fn check_identity(&self) -> Result<(), ManifestError> {
        if !valid_name(&self.namespace) {
            return Err(invalid(format!(
                "namespace {:?} is invalid: use 1-{MAX_NAME} of a-z, 0-9 and '-', starting with a letter",
                self.namespace
            )));
        }
        if !valid_name(&self.name) {
            return Err(invalid(format!(
                "name {:?} is invalid: use 1-{MAX_NAME} of a-z, 0-9 and '-', starting with a letter",
                self.name
            )));
        }
        parse_version(&self.version)?;
        for (what, text) in [
            ("description", &self.description),
            ("publisher", &self.publisher),
        ] {
            if text.trim().is_empty() || text.len() > MAX_TEXT {
                return Err(invalid(format!("{what} must be 1-{MAX_TEXT} bytes")));
            }
            if text.chars().any(|c| c.is_control() && c != '\n') {
                return Err(invalid(format!("{what} holds control characters")));
            }
        }
        Ok(())
    }

    fn check_capabilities(&self) -> Result<(), ManifestError> {
        let c = &self.capabilities;
        if c.hosts.len() > MAX_HOSTS {
            return Err(invalid(format!(
                "{} hosts requested; at most {MAX_HOSTS}",
                c.hosts.len()
            )));
        }
        for h in &c.hosts {
            if h.host.is_empty()
                || h.host.len() > 255
                || !h
                    .host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-*:[]".contains(&b))
            {
                return Err(invalid(format!(
                    "capabilities: host {:?} is not a host name",
                    h.host
                )));
            }
            if let Some(s) = &h.scheme
                && s != "https"
                && s != "http"
            {
                return Err(invalid(format!(
                    "capabilities: host {}: scheme must be https or http",
                    h.host
                )));
            }
            let texts = h
                .inject
                .iter()
                .chain(&h.inject_query)
                .chain(&h.basic_auth)
                .chain(&h.path_prefix)
                .chain(&h.methods);
            for t in texts {
                if t.len() > 1024 || t.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "capabilities: host {}: a value is longer than 1024 bytes or holds control characters",
                        h.host
                    )));
                }
            }
        }
        if c.reveal.len() > MAX_HOSTS {
            return Err(invalid("capabilities: too many secrets to reveal"));
        }
        for s in &c.reveal {
            if s.is_empty()
                || s.len() > 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(invalid(format!(
                    "capabilities: reveal: {s:?} is not a secret name"
                )));
            }
        }
        Ok(())
    }
}

fn parse_version(v: &str) -> Result<semver::Version, ManifestError> {
    let parsed = semver::Version::parse(v)
        .map_err(|e| invalid(format!("version {v:?} is not semver: {e}")))?;
    if !parsed.build.is_empty() {
        return Err(invalid(format!(
            "version {v:?} has build metadata; it does not order versions, so it is not allowed"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let mut files = BTreeMap::new();
        files.insert(
            COMPONENT_ENTRY.to_owned(),
            FileDigest {
                sha256: "a".repeat(64),
                size: 10,
            },
        );
        files.insert(
            README_ENTRY.to_owned(),
            FileDigest {
                sha256: "b".repeat(64),
                size: 5,
            },
        );
        Manifest {
            format: FORMAT,
            namespace: "acme".into(),
            name: "weather".into(),
            version: "1.2.0".into(),
            description: "Forecasts".into(),
            publisher: "Acme Corp".into(),
            capabilities: Capabilities {
                hosts: vec![HostRequest {
                    host: "api.weather.example".into(),
                    inject: vec!["Authorization: Bearer {secret:weather_key}".into()],
                    ..HostRequest::default()
                }],
                ..Capabilities::default()
            },
            files,
            tools: vec![Tool {
                name: "forecast".into(),
                description: "Forecast for a city".into(),
                input_schema:
                    r#"{"type":"object","properties":{"city":{"type":["string","null"]}}}"#.into(),
                output_schema: None,
                annotations: Annotations {
                    read_only: Some(true),
                    ..Annotations::default()
                },
            }],
        }
    }

    #[test]
    fn round_trips_deterministically() {
        let m = sample();
        let text = m.to_toml().unwrap();
        let back = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_toml().unwrap(), text);
        assert_eq!(m.id(), "acme/weather@1.2.0");
    }

    #[test]
    fn refuses_bad_fields() {
        let text = sample().to_toml().unwrap();
        let cases = [
            (
                text.replace("namespace = \"acme\"", "namespace = \"Acme\""),
                "namespace",
            ),
            (
                text.replace("name = \"weather\"", "name = \"../x\""),
                "name",
            ),
            (text.replace("1.2.0", "1.2"), "semver"),
            (text.replace("1.2.0", "1.2.0+build5"), "build metadata"),
            (text.replace("format = 1", "format = 2"), "format 2"),
            (format!("{text}\nextra = 1\n"), "unknown field"),
            (
                text.replace("name = \"forecast\"", "name = \"a b\""),
                "tool name",
            ),
            (text.replace(&"a".repeat(64), "zz"), "sha256"),
            (
                text.replace("Forecast for a city", "Forecast\\u001b[8m hidden"),
                "control characters",
            ),
        ];
        for (bad, why) in cases {
            let e = Manifest::parse(bad.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        assert_eq!(
            Manifest::parse(b"\xff\xfe").unwrap_err(),
            ManifestError::NotUtf8
        );
    }

    #[test]
    fn refuses_deep_nesting_before_parsing() {
        let deep = format!("namespace = {}1{}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(
            Manifest::parse(deep.as_bytes()).unwrap_err(),
            ManifestError::TooDeep
        );
        let inline = format!("x = {}", "{a = ".repeat(40));
        assert_eq!(
            Manifest::parse(inline.as_bytes()).unwrap_err(),
            ManifestError::TooDeep
        );
        // Brackets inside strings and comments do not count.
        let quoted = format!(
            "# {}\ns = \"{}\"\nt = '''{}'''\n",
            "[".repeat(100),
            "[".repeat(100),
            "{".repeat(100)
        );
        assert!(nesting(&quoted, MAX_NESTING) <= 1);
    }

    #[test]
    fn tool_diffs_name_each_difference() {
        let m = sample().tool_defs().unwrap();
        assert!(diff_tools(&m, &m).is_empty());
        let mut changed = m.clone();
        changed[0].description = "Sends your files elsewhere".into();
        changed[0].annotations.destructive = Some(true);
        changed.push(ToolDef {
            name: "exfiltrate".into(),
            ..m[0].clone()
        });
        let d = diff_tools(&m, &changed);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.iter().any(|l| l.contains("description differs")));
        assert!(d.iter().any(|l| l.contains("annotations differ")));
        assert!(d.iter().any(|l| l.contains("`exfiltrate` is declared")));
    }
}
