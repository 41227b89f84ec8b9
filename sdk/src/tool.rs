//! Tool definitions, the `Tool` trait the `#[tool]` macro implements, and `ToolError`.
//!
//! Invariant: everything a tool returns crosses the sandbox boundary as JSON text; a tool
//! error is always one of the contract's four classes, so the host can map it without
//! trusting the skill's formatting.

use crate::bindings::warden::skill::types as wit;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// MCP annotations of a tool: behaviour hints for clients and policies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// A human-readable title.
    pub title: Option<String>,
    /// The tool does not modify its environment.
    pub read_only: Option<bool>,
    /// The tool may perform destructive updates.
    pub destructive: Option<bool>,
    /// Repeating a call with the same arguments has no further effect.
    pub idempotent: Option<bool>,
    /// The tool talks to an open world of external entities.
    pub open_world: Option<bool>,
}

/// The definition of one tool, as the skill reports it to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    /// Local name, unique within the skill.
    pub name: String,
    /// What the tool does.
    pub description: String,
    /// JSON Schema (2020-12) of the arguments object.
    pub input_schema: Value,
    /// JSON Schema (2020-12) of the structured result, when the result is an object.
    pub output_schema: Option<Value>,
    /// Behaviour hints.
    pub annotations: Annotations,
}

/// A tool. Implemented by `#[tool]`; implement it by hand only for unusual cases.
pub trait Tool {
    /// The tool's local name.
    const NAME: &'static str;
    /// The tool's definition (name, description, schemas, annotations).
    fn definition() -> ToolDef;
    /// Runs the tool on JSON arguments.
    fn call(arguments: &str) -> Result<Value, ToolError>;
}

/// Why a tool failed. The message is shown to the agent: never put secrets in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The arguments are wrong (the agent should fix them and retry).
    InvalidArguments(String),
    /// The call was refused (a capability was denied, a rule forbids it).
    Denied(String),
    /// Something the call names does not exist.
    NotFound(String),
    /// Anything else.
    Failed(String),
}

impl ToolError {
    /// The arguments are wrong.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::InvalidArguments(message.into())
    }
    /// The call was refused.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::Denied(message.into())
    }
    /// Something the call names does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }
    /// The tool failed.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    pub(crate) fn into_wit(self) -> wit::CallError {
        match self {
            Self::InvalidArguments(m) => wit::CallError::InvalidArguments(m),
            Self::Denied(m) => wit::CallError::Denied(m),
            Self::NotFound(m) => wit::CallError::NotFound(m),
            Self::Failed(m) => wit::CallError::Failed(m),
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidArguments(m) => write!(f, "invalid arguments: {m}"),
            Self::Denied(m) => write!(f, "denied: {m}"),
            Self::NotFound(m) => write!(f, "not found: {m}"),
            Self::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl From<serde_json::Error> for ToolError {
    fn from(e: serde_json::Error) -> Self {
        Self::Failed(format!("JSON error: {e}"))
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        Self::Failed(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        Self::Failed(message.to_owned())
    }
}

/// What a tool function may return: `Result<T, E>` with a serializable, schema-described
/// `T` and an error convertible into [`ToolError`].
pub trait IntoToolResult {
    /// The success type, whose schema becomes the output schema when it is an object.
    type Output: Serialize + JsonSchema;
    /// Converts the outcome into a JSON value or a tool error.
    fn into_tool_result(self) -> Result<Value, ToolError>;
}

impl<T, E> IntoToolResult for Result<T, E>
where
    T: Serialize + JsonSchema,
    E: Into<ToolError>,
{
    type Output = T;

    fn into_tool_result(self) -> Result<Value, ToolError> {
        let value = self.map_err(Into::into)?;
        serde_json::to_value(value)
            .map_err(|e| ToolError::failed(format!("result is not serializable: {e}")))
    }
}
