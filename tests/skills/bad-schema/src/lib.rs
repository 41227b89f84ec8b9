//! Implements the contract by hand (bypassing `#[tool]`, which always produces valid
//! schemas) to declare a tool whose input schema is not valid JSON.

use warden_sdk::bindings::exports::warden::skill::tools::Guest;
use warden_sdk::bindings::warden::skill::types::{Annotations, CallError, Tool};

struct BadSchema;

impl Guest for BadSchema {
    fn list_tools() -> Vec<Tool> {
        vec![Tool {
            name: "broken".into(),
            description: "Declares a schema that does not parse.".into(),
            input_schema: "{\"type\": \"object\", ".into(),
            output_schema: None,
            annotations: Annotations {
                title: None,
                read_only: None,
                destructive: None,
                idempotent: None,
                open_world: None,
            },
        }]
    }

    fn call(_name: String, _arguments: String) -> Result<String, CallError> {
        Ok("{}".into())
    }
}

warden_sdk::bindings::__export_skill!(BadSchema);
