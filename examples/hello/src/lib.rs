//! Hello, warden: the smallest useful skill.
//!
//! One tool, `greet`, with a typed argument struct. The SDK derives the JSON Schema from
//! `GreetArgs` (doc comments become field descriptions), parses and checks the arguments,
//! and exports the component's `tools` interface. Build and try it:
//!
//! ```sh
//! warden skill build examples/hello --out hello.wasm
//! warden skill call hello.wasm greet '{"name": "Ada"}'
//! ```

use warden_sdk::prelude::*;

/// Arguments of `greet`.
#[derive(Deserialize, JsonSchema)]
struct GreetArgs {
    /// Who to greet.
    name: String,
    /// Greeting style.
    #[serde(default)]
    style: Style,
}

/// How formal the greeting is.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
enum Style {
    /// "Hello, NAME!"
    #[default]
    Friendly,
    /// "Good day, NAME."
    Formal,
}

/// The greeting.
#[derive(Serialize, JsonSchema)]
struct Greeting {
    /// The message to show.
    message: String,
}

/// Greet someone by name.
#[tool(read_only, idempotent, title = "Greet")]
fn greet(args: GreetArgs) -> Result<Greeting, ToolError> {
    let name = args.name.trim();
    if name.is_empty() {
        return Err(ToolError::invalid_arguments("name must not be empty"));
    }
    log::debug("greeting someone");
    let message = match args.style {
        Style::Friendly => format!("Hello, {name}!"),
        Style::Formal => format!("Good day, {name}."),
    };
    Ok(Greeting { message })
}

warden_sdk::skill!(greet);
