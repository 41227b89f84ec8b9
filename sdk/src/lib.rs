//! # warden-sdk: write warden skills in Rust
//!
//! A *skill* is a WebAssembly component that offers one or more *tools* to AI agents through
//! the warden gateway. Each call runs in a fresh sandbox: the skill sees no files, no
//! environment, no sockets and no secrets unless the operator grants them, and its outbound
//! HTTP requests pass through the host, which decides per request and adds credentials itself.
//!
//! This crate turns plain, typed Rust functions into tools. The argument type's JSON Schema
//! (draft 2020-12) is generated from the type, doc comments become descriptions, arguments
//! are parsed with clear errors, and the component's exports are written for you.
//!
//! ## A whole skill
//!
//! ```
//! use warden_sdk::prelude::*;
//!
//! /// Arguments of `greet`.
//! #[derive(Deserialize, JsonSchema)]
//! struct GreetArgs {
//!     /// Who to greet.
//!     name: String,
//! }
//!
//! /// A greeting.
//! #[derive(Serialize, JsonSchema)]
//! struct Greeting {
//!     message: String,
//! }
//!
//! /// Say hello to someone.
//! #[tool(read_only, idempotent)]
//! fn greet(args: GreetArgs) -> Result<Greeting, ToolError> {
//!     if args.name.is_empty() {
//!         return Err(ToolError::invalid_arguments("name must not be empty"));
//!     }
//!     Ok(Greeting { message: format!("Hello, {}!", args.name) })
//! }
//!
//! warden_sdk::skill!(greet);
//! # fn main() {
//! #     use warden_sdk::Tool;
//! #     let out = greet::call(r#"{"name":"Ada"}"#).unwrap();
//! #     assert_eq!(out["message"], "Hello, Ada!");
//! #     assert!(greet::definition().output_schema.is_some());
//! # }
//! ```
//!
//! Scaffold a crate like this with `warden skill new NAME` and build it into a component with
//! `warden skill build NAME`; the build checks the component against the contract and prints
//! its tools.
//!
//! ## Tools
//! - A tool is a function with at most one argument (a struct deriving [`Deserialize`] and
//!   [`JsonSchema`]) returning `Result<T, E>` where `T: Serialize + JsonSchema` and
//!   `E: Into<ToolError>`.
//! - When `T` is a struct (a JSON object), the tool gets an output schema and agents receive
//!   structured content; other results (a `String`, a number) are returned as plain values.
//! - `#[tool(...)]` options: `name = "..."`, `title = "..."`, and the MCP annotations
//!   `read_only`, `destructive`, `idempotent`, `open_world`.
//! - [`skill!`] lists the tools the component exports. Use it once per crate.
//!
//! ## Errors
//! [`ToolError`] is what the agent sees when a tool fails: `invalid_arguments`, `denied`,
//! `not_found` or `failed`, each with a message. Malformed arguments never reach your
//! function: the SDK answers with `invalid_arguments` naming the field.
//!
//! ## Host capabilities
//! - [`log`]: structured logs, attributed to your skill in the host's log.
//! - [`http`]: outbound HTTP. The host allows or refuses each request (per-skill host
//!   allow-list, private addresses refused) and injects credentials for allowed hosts.
//! - [`secrets`]: reveal a named secret, only where the operator granted it. Prefer letting
//!   the host inject credentials into HTTP requests: then your skill never holds them.
//!
//! ## Limits
//! Each call has a deadline, a memory cap and optionally a fuel budget. Exceeding them ends
//! the call with a trap, which the agent sees as an error naming the cause. A panic ends the
//! call the same way (its message is logged). To handle memory pressure gracefully, use
//! fallible allocation (`Vec::try_reserve`) for inputs whose size you do not control.

extern crate self as warden_sdk;

pub mod http;
pub mod log;
pub mod secrets;
mod tool;

pub use schemars::JsonSchema;
pub use serde::{Deserialize, Serialize};
pub use tool::{Annotations, IntoToolResult, Tool, ToolDef, ToolError};
pub use warden_sdk_macros::tool;

/// Everything a skill usually needs: `use warden_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Deserialize, IntoToolResult, JsonSchema, Serialize, ToolError, http, log, secrets, tool,
    };
}

/// The generated bindings of the skill contract (`sdk/wit/skill.wit`). Not a stable API:
/// use the typed wrappers of this crate.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "skill",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_skill",
        default_bindings_module: "::warden_sdk::bindings",
        runtime_path: "::warden_sdk::__private::wit_bindgen::rt",
    });
}

/// Exports the listed tools as this crate's skill.
///
/// ```text
/// warden_sdk::skill!(greet, add, search);
/// ```
#[macro_export]
macro_rules! skill {
    ($($tool:ident),+ $(,)?) => {
        #[doc(hidden)]
        pub struct __WardenSkill;

        impl $crate::bindings::exports::warden::skill::tools::Guest for __WardenSkill {
            fn list_tools() -> ::std::vec::Vec<$crate::bindings::warden::skill::types::Tool> {
                $crate::__private::install_panic_hook();
                ::std::vec![$($crate::__private::wit_tool(<$tool as $crate::Tool>::definition())),+]
            }

            fn call(
                name: ::std::string::String,
                arguments: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, $crate::bindings::warden::skill::types::CallError> {
                $crate::__private::install_panic_hook();
                $(
                    if name == <$tool as $crate::Tool>::NAME {
                        return $crate::__private::finish(<$tool as $crate::Tool>::call(&arguments));
                    }
                )+
                ::core::result::Result::Err($crate::__private::unknown_tool(&name))
            }
        }

        $crate::bindings::__export_skill!(__WardenSkill);
    };
}

/// Support code for the macros. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use serde_json::Value;
    pub use wit_bindgen;

    use crate::bindings::warden::skill::types as wit;
    use crate::{ToolDef, ToolError};
    use schemars::JsonSchema;
    use serde::de::DeserializeOwned;

    /// Input schema of an argument struct.
    pub fn input_schema<T: JsonSchema>() -> Value {
        schemars::schema_for!(T).to_value()
    }

    /// Input schema of a tool without arguments: an object with no properties.
    pub fn empty_input_schema() -> Value {
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {},
            "additionalProperties": false,
        })
    }

    /// Output schema of a result type: only objects get one (MCP structured content is
    /// always an object); other results are plain values.
    pub fn output_schema<T: JsonSchema>() -> Option<Value> {
        let schema = schemars::schema_for!(T).to_value();
        (schema.get("type").and_then(Value::as_str) == Some("object")).then_some(schema)
    }

    /// Parses a call's arguments into the tool's argument type.
    pub fn parse_arguments<T: DeserializeOwned>(arguments: &str) -> Result<T, ToolError> {
        let arguments = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        serde_json::from_str(arguments)
            .map_err(|e| ToolError::invalid_arguments(format!("invalid arguments: {e}")))
    }

    /// Checks that a tool without arguments got an empty object (or nothing).
    pub fn parse_no_arguments(arguments: &str) -> Result<(), ToolError> {
        match parse_arguments::<Value>(arguments)? {
            Value::Object(map) if map.is_empty() => Ok(()),
            Value::Object(_) => Err(ToolError::invalid_arguments("this tool takes no arguments")),
            _ => Err(ToolError::invalid_arguments(
                "arguments must be a JSON object",
            )),
        }
    }

    /// Converts a tool definition into the contract's record.
    pub fn wit_tool(def: ToolDef) -> wit::Tool {
        wit::Tool {
            name: def.name,
            description: def.description,
            input_schema: def.input_schema.to_string(),
            output_schema: def.output_schema.map(|s| s.to_string()),
            annotations: wit::Annotations {
                title: def.annotations.title,
                read_only: def.annotations.read_only,
                destructive: def.annotations.destructive,
                idempotent: def.annotations.idempotent,
                open_world: def.annotations.open_world,
            },
        }
    }

    /// Converts a tool's outcome into the contract's result.
    pub fn finish(result: Result<Value, ToolError>) -> Result<String, wit::CallError> {
        result
            .map(|value| value.to_string())
            .map_err(ToolError::into_wit)
    }

    /// The error for a tool name the skill does not have.
    pub fn unknown_tool(name: &str) -> wit::CallError {
        wit::CallError::NotFound(format!("unknown tool `{name}`"))
    }

    /// Routes panic messages to the host log (stderr is not connected), once per instance.
    pub fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::emit(
                    crate::log::Level::Error,
                    &info.to_string(),
                    &[("panic", "true")],
                );
            }));
        });
    }
}
