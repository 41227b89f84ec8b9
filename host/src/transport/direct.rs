//! The direct adapter: answers a stateless (2026-07-28) `tools/call` in its plain form
//! without rmcp's per-request machinery (a service task, a one-shot transport and its
//! channels, a typed re-parse of the whole message and a re-serialization for the header
//! checks), so the request is parsed once, by the JSON-RPC guard and here.
//!
//! Invariants:
//! - Only a request that rmcp would serve statelessly, and in exactly the form checked here,
//!   is taken: no session id; one `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name`, equal
//!   to `2026-07-28`, `tools/call` and the body's tool; `Accept` listing both JSON and SSE
//!   without weights; a JSON `Content-Type`; no `Mcp-Param-*` header; an id and params that
//!   rmcp's own types accept, with the 2026-07-28 `_meta` keys and no retry state. Anything
//!   else goes on to rmcp, which answers it (and its errors) as before.
//! - The answer is built from rmcp's model types and serialized as rmcp serializes them, so
//!   a client cannot tell the paths apart by the body (the e2e suite compares them).
//! - The request's pending audit record is finished by the gateway core, as on the rmcp
//!   path; a call dropped midway (the client went away) leaves it to be written as an error.
//!
//! Threat: a second implementation of the protocol drifting from the first: the conditions
//! above are stricter than rmcp's, never looser.

use super::mcp;
use super::wire;
use crate::audit::PendingRecord;
use crate::gateway::{Caller, Gateway};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ProtocolVersion, RequestId, ServerJsonRpcMessage,
    ServerResult,
};
use serde_json::value::RawValue;

/// A `tools/call` in the direct form.
#[derive(Debug)]
pub(super) struct DirectCall {
    id: RequestId,
    params: CallToolRequestParams,
}

/// The only value of header `name`, if it has exactly one that is text.
fn sole<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// Whether `Accept` lists both `application/json` and `text/event-stream`, with no weights
/// (a weighted list is left to rmcp's fuller reading).
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for entry in value.split(',') {
            let mut parts = entry.split(';');
            let essence = parts.next().unwrap_or("").trim();
            if parts.next().is_some() {
                return false;
            }
            json |= essence.eq_ignore_ascii_case("application/json");
            sse |= essence.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

/// Whether the `Content-Type` is JSON (parameters allowed, as rmcp allows them).
fn json_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether the headers are those of a plain stateless 2026-07-28 `tools/call` of `tool`.
fn headers_are_direct(headers: &HeaderMap, tool: &str) -> bool {
    !headers.contains_key("mcp-session-id")
        && sole(headers, "mcp-protocol-version") == Some(ProtocolVersion::V_2026_07_28.as_str())
        && sole(headers, "mcp-method") == Some("tools/call")
        && sole(headers, "mcp-name") == Some(tool)
        && json_body(headers)
        && accepts_json_and_sse(headers)
        && !headers
            .keys()
            .any(|name| name.as_str().starts_with("mcp-param-"))
}

/// The call, when the request is a `tools/call` of `tool` in the direct form.
pub(super) fn direct_call(
    headers: &HeaderMap,
    tool: &str,
    id: Option<&RawValue>,
    params: Option<&RawValue>,
) -> Option<DirectCall> {
    if !headers_are_direct(headers, tool) {
        return None;
    }
    let id: RequestId = serde_json::from_str(id?.get()).ok()?;
    let params: CallToolRequestParams = serde_json::from_str(params?.get()).ok()?;
    let meta = params.meta.as_ref()?;
    let negotiated = meta
        .protocol_version()
        .is_some_and(|v| v.as_str() == ProtocolVersion::V_2026_07_28.as_str())
        && meta
            .missing_required_keys(&ProtocolVersion::V_2026_07_28)
            .is_empty();
    // A call that wants progress notifications, or may be answered with an MCP task, goes
    // the general way (it may wait for an approval; only rmcp carries those).
    let plain = params.input_responses.is_none()
        && params.request_state.is_none()
        && meta.get_progress_token().is_none()
        && !meta
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
    (negotiated && plain && params.name == tool).then_some(DirectCall { id, params })
}

/// Runs the call through the gateway core and answers it as rmcp would.
pub(super) async fn answer(
    gateway: &Gateway,
    caller: &Caller,
    record: PendingRecord,
    call: DirectCall,
) -> Response {
    let correlation = record.id().to_owned();
    let DirectCall { id, params } = call;
    let options = crate::gateway::CallOptions {
        reason: params.meta.as_ref().and_then(|m| mcp::stated_reason(m)),
        progress: None,
        wait: None,
    };
    let arguments = params.arguments.unwrap_or_default();
    let message = match gateway
        .call_tool_with(caller, &params.name, arguments, options, record)
        .await
    {
        Ok(reply) => {
            let mut result = ServerResult::from(CallToolResponse::from(mcp::result(reply)));
            result.fill_missing_cache_hints();
            ServerJsonRpcMessage::response(result, id)
        }
        Err(refusal) => {
            ServerJsonRpcMessage::error(wire::jsonrpc(&refusal, &correlation), Some(id))
        }
    };
    // The `/mcp` layer adds the correlation header to every response, this one included.
    match serde_json::to_vec(&message) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(id = %correlation, error = %e, "encoding a tool result failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const BASE: [(&str, &str); 5] = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "t"),
    ];

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    const PARAMS: &str = r#"{"name":"t","arguments":{"a":1},"_meta":{
        "io.modelcontextprotocol/protocolVersion":"2026-07-28",
        "io.modelcontextprotocol/clientCapabilities":{}}}"#;

    fn taken(h: &HeaderMap, id: &str, params: &str) -> bool {
        direct_call(h, "t", Some(&raw(id)), Some(&raw(params))).is_some()
    }

    #[test]
    fn only_the_plain_form_is_taken() {
        let base = headers(&BASE);
        assert!(taken(&base, "1", PARAMS));
        assert!(taken(&base, r#""abc""#, PARAMS));
        // Ids rmcp's type refuses stay with rmcp.
        for id in ["1.5", "null", "{}", "18446744073709551616"] {
            assert!(!taken(&base, id, PARAMS), "{id}");
        }
        // An added header: out of the plain form (rmcp answers), except a harmless one.
        for (name, value, still_taken) in [
            ("mcp-session-id", "s", false),
            ("mcp-protocol-version", "2026-07-28", false),
            ("mcp-method", "tools/call", false),
            ("mcp-param-a", "1", false),
            ("accept", "text/plain", true),
        ] {
            let mut h = base.clone();
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
            assert_eq!(taken(&h, "1", PARAMS), still_taken, "{name}: {value}");
        }
        // A changed header: out of the plain form.
        for (name, value) in [
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-method", "tools/list"),
            ("mcp-name", "u"),
            ("content-type", "text/plain"),
            ("accept", "application/json"),
            ("accept", "application/json;q=1, text/event-stream"),
        ] {
            let mut h = base.clone();
            h.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
            assert!(!taken(&h, "1", PARAMS), "{name}: {value}");
        }
        // The body must carry the 2026-07-28 keys and no retry state.
        for params in [
            r#"{"name":"t"}"#,
            r#"{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#,
            r#"{"name":"t","_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25",
                "io.modelcontextprotocol/clientCapabilities":{}}}"#,
            r#"{"name":"t","requestState":"x","_meta":{
                "io.modelcontextprotocol/protocolVersion":"2026-07-28",
                "io.modelcontextprotocol/clientCapabilities":{}}}"#,
            r#"{"name":"u","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                "io.modelcontextprotocol/clientCapabilities":{}}}"#,
        ] {
            assert!(!taken(&base, "1", params), "{params}");
        }
    }
}
