//! First-party skill `http`: generic HTTP and JSON requests.
//!
//! Every request leaves through the host: it reaches only hosts an operator granted this
//! skill in the caller's environment (`warden grant add http --env ... --host ...`),
//! private and metadata addresses are refused unless the grant allows them, and the
//! credentials a grant names are added by the host, never by this skill (so an agent can
//! use an API without the key ever reaching the sandbox or the model). Redirects are
//! followed hop by hop, each decided anew.

use std::collections::BTreeMap;
use warden_sdk::http::{Method, Request};
use warden_sdk::prelude::*;

/// Largest response body returned to the agent unless a smaller limit is asked for.
const DEFAULT_MAX_BYTES: usize = 1024 * 1024;

/// Arguments of `request`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RequestArgs {
    /// HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS).
    #[serde(default = "default_method")]
    method: String,
    /// Absolute http(s) URL.
    url: String,
    /// Request headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Raw request body (text). Mutually exclusive with `json`.
    body: Option<String>,
    /// JSON request body; sets `content-type: application/json`.
    json: Option<serde_json::Value>,
    /// Largest response body to accept, in bytes (default 1 MiB).
    #[schemars(range(min = 1, max = 16777216))]
    max_bytes: Option<usize>,
    /// Follow redirects (default true; each hop is decided by warden like any request).
    follow_redirects: Option<bool>,
}

fn default_method() -> String {
    "GET".into()
}

/// The response.
#[derive(Serialize, JsonSchema)]
struct HttpResponse {
    /// Status code.
    status: u16,
    /// Response headers (lower-case names; repeated headers joined with ", ").
    headers: BTreeMap<String, String>,
    /// The body as text, when it is UTF-8.
    body: Option<String>,
    /// The body parsed as JSON, when it is JSON.
    json: Option<serde_json::Value>,
    /// Body length in bytes.
    bytes: usize,
}

/// Send an HTTP request to an allowed host and return the status, headers and body.
#[tool(open_world, title = "HTTP request")]
fn request(args: RequestArgs) -> Result<HttpResponse, ToolError> {
    let method = Method::parse(&args.method)?;
    let mut req = Request::new(method, args.url)
        .max_response_bytes(args.max_bytes.unwrap_or(DEFAULT_MAX_BYTES));
    if args.follow_redirects == Some(false) {
        req = req.max_redirects(0);
    }
    for (name, value) in args.headers {
        req = req.header(name, value);
    }
    req = match (args.body, args.json) {
        (Some(_), Some(_)) => {
            return Err(ToolError::invalid_arguments("give either `body` or `json`, not both"));
        }
        (Some(body), None) => req.body(body),
        (None, Some(json)) => req.json(&json)?,
        (None, None) => req,
    };
    let response = req.send()?;
    let mut headers = BTreeMap::new();
    for (name, value) in &response.headers {
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    let body = response.text().ok().map(str::to_owned);
    let json = serde_json::from_slice(&response.body).ok();
    Ok(HttpResponse {
        status: response.status,
        headers,
        body,
        json,
        bytes: response.body.len(),
    })
}

/// Arguments of `get_json`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetJsonArgs {
    /// Absolute http(s) URL of a JSON document.
    url: String,
}

/// Fetch a JSON document with GET and return it. Fails on non-2xx statuses and non-JSON bodies.
#[tool(read_only, open_world, title = "Get JSON")]
fn get_json(args: GetJsonArgs) -> Result<serde_json::Value, ToolError> {
    let response = Request::get(args.url)
        .header("accept", "application/json")
        .max_response_bytes(DEFAULT_MAX_BYTES)
        .send()?;
    if !(200..300).contains(&response.status) {
        return Err(ToolError::failed(format!(
            "the server answered {}",
            response.status
        )));
    }
    Ok(response.json()?)
}

warden_sdk::skill!(request, get_json);
