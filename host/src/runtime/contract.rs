//! Validation of what a skill declares about itself (its tool list) and of call arguments.
//!
//! Invariants: a skill is accepted only if every tool has a valid local name (1-48 characters
//! of `[a-zA-Z0-9_-]`, unique), a non-empty description, and input/output schemas that are
//! JSON objects of `"type": "object"`, valid against the draft 2020-12 meta-schema, within
//! size limits, and compilable without fetching anything (no remote `$ref`). Arguments are
//! validated against the compiled input schema before they enter the sandbox.
//!
//! Threat: a skill that smuggles malformed or oversized metadata to the gateway and the
//! models that read it, or that relies on the gateway to pass unchecked arguments.

use super::bindings::warden::skill::types as wit;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

/// Longest local tool name.
pub const MAX_TOOL_NAME: usize = 48;
/// Most tools one skill may declare.
pub const MAX_TOOLS: usize = 256;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION: usize = 8 * 1024;
/// Largest schema, in bytes of JSON text.
pub const MAX_SCHEMA: usize = 64 * 1024;
/// Compiled size limit of one `pattern` regex, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// The only `$schema` accepted (when present).
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Why a skill's declarations were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The skill declares no tools.
    #[error("the skill declares no tools")]
    NoTools,
    /// Too many tools.
    #[error("the skill declares {0} tools; at most {MAX_TOOLS} are allowed")]
    TooManyTools(usize),
    /// A tool name is invalid.
    #[error("tool name {0:?} is invalid: use 1-{MAX_TOOL_NAME} characters of [a-zA-Z0-9_-]")]
    BadName(String),
    /// Two tools share a name.
    #[error("tool name `{0}` is declared twice (names that differ only by case are the same)")]
    Duplicate(String),
    /// A description is empty or too long.
    #[error("tool `{0}`: description must be 1-{MAX_DESCRIPTION} bytes")]
    BadDescription(String),
    /// A schema is not acceptable.
    #[error("tool `{tool}`: {which} schema {why}")]
    BadSchema {
        /// The tool.
        tool: String,
        /// `input` or `output`.
        which: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// MCP annotations as declared by the skill (untrusted hints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// Human-readable title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Does not modify its environment.
    #[serde(rename = "readOnlyHint", skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// May perform destructive updates.
    #[serde(rename = "destructiveHint", skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    /// Repeated calls have no additional effect.
    #[serde(rename = "idempotentHint", skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// Interacts with external entities.
    #[serde(rename = "openWorldHint", skip_serializing_if = "Option::is_none")]
    pub open_world: Option<bool>,
}

/// A validated tool of a loaded skill.
#[derive(Clone)]
pub struct ToolInfo {
    /// Local name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Input JSON Schema (2020-12).
    pub input_schema: Value,
    /// Output JSON Schema (2020-12), when the tool returns structured content.
    pub output_schema: Option<Value>,
    /// Annotations.
    pub annotations: Annotations,
    validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for ToolInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolInfo")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("annotations", &self.annotations)
            .finish_non_exhaustive()
    }
}

impl ToolInfo {
    /// Checks arguments against the input schema; the error lists up to three violations.
    pub fn check_arguments(&self, arguments: &Value) -> Result<(), String> {
        if !arguments.is_object() {
            return Err("arguments must be a JSON object".into());
        }
        let errors: Vec<String> = self
            .validator
            .iter_errors(arguments)
            .take(3)
            .map(|e| {
                let path = e.instance_path().to_string();
                if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Whether `name` is a valid local tool name.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates a skill's tool list.
pub fn validate_tools(raw: Vec<wit::Tool>) -> Result<Vec<ToolInfo>, ContractError> {
    if raw.is_empty() {
        return Err(ContractError::NoTools);
    }
    if raw.len() > MAX_TOOLS {
        return Err(ContractError::TooManyTools(raw.len()));
    }
    let mut seen = HashSet::new();
    let mut tools = Vec::with_capacity(raw.len());
    for tool in raw {
        if !valid_tool_name(&tool.name) {
            return Err(ContractError::BadName(tool.name.chars().take(80).collect()));
        }
        // Names that differ only by case would confuse agents and operators (and some
        // clients fold case): one of them per skill.
        if !seen.insert(tool.name.to_ascii_lowercase()) {
            return Err(ContractError::Duplicate(tool.name));
        }
        if tool.description.trim().is_empty() || tool.description.len() > MAX_DESCRIPTION {
            return Err(ContractError::BadDescription(tool.name));
        }
        let (input_schema, validator) = parse_schema(&tool.name, "input", &tool.input_schema)?;
        let output_schema = match &tool.output_schema {
            Some(text) => Some(parse_schema(&tool.name, "output", text)?.0),
            None => None,
        };
        let a = tool.annotations;
        tools.push(ToolInfo {
            name: tool.name,
            description: tool.description,
            input_schema,
            output_schema,
            annotations: Annotations {
                title: a.title,
                read_only: a.read_only,
                destructive: a.destructive,
                idempotent: a.idempotent,
                open_world: a.open_world,
            },
            validator: Arc::new(validator),
        });
    }
    Ok(tools)
}

fn parse_schema(
    tool: &str,
    which: &'static str,
    text: &str,
) -> Result<(Value, jsonschema::Validator), ContractError> {
    let bad = |why: String| ContractError::BadSchema {
        tool: tool.to_owned(),
        which,
        why,
    };
    if text.len() > MAX_SCHEMA {
        return Err(bad(format!("is larger than {MAX_SCHEMA} bytes")));
    }
    let schema: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
    let Some(obj) = schema.as_object() else {
        return Err(bad("must be a JSON object".into()));
    };
    if let Some(dialect) = obj.get("$schema")
        && dialect.as_str() != Some(DRAFT_2020_12)
    {
        return Err(bad(format!(
            "must use JSON Schema draft 2020-12 ({DRAFT_2020_12})"
        )));
    }
    if obj.get("type").and_then(Value::as_str) != Some("object") {
        return Err(bad("must describe an object (\"type\": \"object\")".into()));
    }
    jsonschema::draft202012::meta::validator()
        .validate(&schema)
        .map_err(|e| bad(format!("is not a valid JSON Schema: {e}")))?;
    // `pattern` uses the linear-time regex engine: arguments come from agents and schemas
    // from skills, and neither may make the host backtrack for ever.
    let validator = jsonschema::draft202012::options()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(REGEX_SIZE_LIMIT))
        .build(&schema)
        .map_err(|e| bad(format!("cannot be compiled: {e}")))?;
    Ok((schema, validator))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, input: &str) -> wit::Tool {
        wit::Tool {
            name: name.into(),
            description: "does things".into(),
            input_schema: input.into(),
            output_schema: None,
            annotations: wit::Annotations {
                title: None,
                read_only: Some(true),
                destructive: None,
                idempotent: None,
                open_world: None,
            },
        }
    }

    const OBJ: &str = r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#;

    #[test]
    fn accepts_and_checks_arguments() {
        let tools = validate_tools(vec![tool("count", OBJ)]).unwrap();
        assert!(
            tools[0]
                .check_arguments(&serde_json::json!({"n": 3}))
                .is_ok()
        );
        let err = tools[0]
            .check_arguments(&serde_json::json!({"n": "x"}))
            .unwrap_err();
        assert!(err.contains("/n"), "{err}");
        assert!(tools[0].check_arguments(&serde_json::json!({})).is_err());
        assert!(tools[0].check_arguments(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn patterns_use_a_linear_time_engine() {
        // Catastrophic for a backtracking engine; linear for the regex crate.
        let schema =
            r#"{"type":"object","properties":{"s":{"type":"string","pattern":"^(a+)+$"}}}"#;
        let tools = validate_tools(vec![tool("p", schema)]).unwrap();
        let evil = format!("{}!", "a".repeat(50_000));
        let err = tools[0]
            .check_arguments(&serde_json::json!({ "s": evil }))
            .unwrap_err();
        assert!(err.contains("/s"), "{err}");
        assert!(
            tools[0]
                .check_arguments(&serde_json::json!({"s": "aaa"}))
                .is_ok()
        );
        // Backtracking-only syntax is refused when the skill loads.
        let lookahead =
            r#"{"type":"object","properties":{"s":{"type":"string","pattern":"(?=a)a"}}}"#;
        assert!(validate_tools(vec![tool("p", lookahead)]).is_err());
    }

    #[test]
    fn refuses_bad_declarations() {
        let cases: Vec<(Vec<wit::Tool>, &str)> = vec![
            (vec![], "no tools"),
            (vec![tool("has space", OBJ)], "invalid"),
            (vec![tool(&"x".repeat(49), OBJ)], "invalid"),
            (vec![tool("a", OBJ), tool("a", OBJ)], "twice"),
            (
                vec![tool("Stats", OBJ), tool("stats", OBJ)],
                "differ only by case",
            ),
            (vec![tool("a", "{not json")], "not valid JSON"),
            (
                vec![tool("a", r#"{"type":"string"}"#)],
                "describe an object",
            ),
            (vec![tool("a", "[]")], "JSON object"),
            (
                vec![tool("a", r#"{"type":"object","minProperties":-1}"#)],
                "not a valid JSON Schema",
            ),
            (
                vec![tool(
                    "a",
                    r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object"}"#,
                )],
                "2020-12",
            ),
            (
                vec![tool(
                    "a",
                    r#"{"type":"object","$ref":"https://evil.example/s.json"}"#,
                )],
                "compiled",
            ),
        ];
        for (tools, expect) in cases {
            let err = validate_tools(tools).unwrap_err().to_string();
            assert!(err.contains(expect), "{err} should mention {expect}");
        }
        let mut t = tool("a", OBJ);
        t.description = " ".into();
        assert!(matches!(
            validate_tools(vec![t]),
            Err(ContractError::BadDescription(_))
        ));
    }
}
