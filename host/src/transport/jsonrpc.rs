//! A guard in front of the MCP service that answers malformed JSON-RPC with the errors the
//! spec names, instead of transport-level statuses: invalid JSON -> `-32700`, not a JSON-RPC
//! request -> `-32600`, `tools/call` with malformed params -> `-32602`.
//!
//! Invariants: the envelope is parsed without allocating (borrowed fields and raw values), the
//! body is read once up to the size limit (413 beyond), and a request that passes is handed
//! on byte for byte.
//!
//! Tool names are bounded here: a `tools/call` whose name is longer than 64 characters or
//! has characters outside `[A-Za-z0-9_-]` can name no installed tool, and is refused as an
//! unknown tool before anything stores it.
//!
//! It names each request in its pending audit record and finishes the record of every
//! request it refuses, so a refused request has its record too.
//!
//! Threat: parser confusion and error-path differences between layers (a request one layer
//! rejects and another accepts).

use super::direct;
use super::slot::AuditSlot;
use super::wire::{self, Rejection};
use crate::audit::Outcome;
use crate::gateway::{Caller, Gateway};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// JSON-RPC parse error.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC invalid request.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC invalid params.
pub const INVALID_PARAMS: i64 = -32602;

#[derive(Deserialize)]
struct Envelope<'a> {
    jsonrpc: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct CallParams<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    arguments: Option<&'a RawValue>,
}

fn error(status: StatusCode, id: Option<&RawValue>, code: i64, message: &str) -> Response {
    let id = id.map_or("null", RawValue::get);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{}}}}}"#,
        serde_json::Value::String(message.to_owned())
    );
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What the guard learned of a well-formed request.
#[derive(Debug, Clone, Copy)]
struct Parsed<'a> {
    /// The method (`None` for a response).
    method: Option<&'a str>,
    /// The tool name of a `tools/call`.
    tool: Option<&'a str>,
    /// The request id, unparsed.
    id: Option<&'a RawValue>,
    /// The params, unparsed.
    params: Option<&'a RawValue>,
}

/// Deepest nesting of arrays and objects accepted (below serde_json's own limit, so no
/// later parser of the same body fails on depth where this one passed).
pub const MAX_DEPTH: usize = 64;

/// Whether `body` nests arrays and objects deeper than [`MAX_DEPTH`] (brackets inside
/// strings do not count). A linear scan, before any parser recurses.
fn too_deep(body: &[u8]) -> bool {
    nesting_exceeds(body, MAX_DEPTH)
}

/// Whether the JSON `body` nests arrays and objects deeper than `max` (brackets inside
/// strings do not count). A linear scan, before any parser recurses.
pub fn nesting_exceeds(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a body once: what is wrong with it (`Err`), else its method and tool name.
fn check(body: &[u8]) -> Result<Parsed<'_>, Box<Response>> {
    let fail = |r: Response| Err(Box::new(r));
    if too_deep(body) {
        return fail(error(
            StatusCode::BAD_REQUEST,
            None,
            INVALID_REQUEST,
            "Invalid Request: nested too deeply",
        ));
    }
    let envelope: Envelope<'_> = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return fail(error(
                StatusCode::BAD_REQUEST,
                None,
                PARSE_ERROR,
                "Parse error",
            ));
        }
        Err(_) => {
            return fail(error(
                StatusCode::BAD_REQUEST,
                None,
                INVALID_REQUEST,
                "Invalid Request: expected one JSON-RPC 2.0 message object",
            ));
        }
    };
    let is_message =
        envelope.method.is_some() || envelope.result.is_some() || envelope.error.is_some();
    if envelope.jsonrpc != Some("2.0") || !is_message {
        return fail(error(
            StatusCode::BAD_REQUEST,
            envelope.id,
            INVALID_REQUEST,
            "Invalid Request: not a JSON-RPC 2.0 message",
        ));
    }
    let mut tool = None;
    if envelope.method == Some("tools/call") {
        let bad = |why: &str| {
            fail(error(
                StatusCode::OK,
                envelope.id,
                INVALID_PARAMS,
                &format!("Invalid params: {why}"),
            ))
        };
        let Some(params) = envelope.params else {
            return bad("tools/call needs params");
        };
        let Ok(params) = serde_json::from_str::<CallParams<'_>>(params.get()) else {
            return bad("params must be an object");
        };
        let Some(name) = params
            .name
            .and_then(|n| serde_json::from_str::<&str>(n.get()).ok())
        else {
            return bad("`name` must be a string without escapes");
        };
        let well_formed = !name.is_empty()
            && name.len() <= MAX_TOOL_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return bad("unknown tool");
        }
        tool = Some(name);
        if let Some(args) = params.arguments
            && !(args.get().starts_with('{') || args.get() == "null")
        {
            return bad("`arguments` must be an object");
        }
    }
    Ok(Parsed {
        method: envelope.method,
        tool,
        id: envelope.id,
        params: envelope.params,
    })
}

/// The 2026-07-28 routing headers must say what the body says: a request whose
/// `Mcp-Method` (or, for `tools/call`, `Mcp-Name`) differs from its body is refused, so no
/// layer routes or checks by the header what another runs by the body.
fn headers_match(headers: &http::HeaderMap, parsed: Parsed<'_>) -> bool {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    let method_ok = header("mcp-method").is_none_or(|m| Some(m) == parsed.method);
    let name_ok =
        parsed.tool.is_none() || header("mcp-name").is_none_or(|n| Some(n) == parsed.tool);
    method_ok && name_ok
}

/// Longest tool name accepted on the wire (the rule major LLM APIs enforce; no installed
/// tool is longer).
pub const MAX_TOOL_NAME: usize = crate::gateway::MAX_EXPOSED_NAME;

/// Middleware: buffers POST bodies (up to the limit), answers malformed JSON-RPC itself,
/// hands a plain stateless `tools/call` to the direct adapter (`transport::direct`),
/// and names the request in its pending audit record (the [`AuditSlot`] the `/mcp` layer
/// put in the request): it finishes the record of a request it refuses; `tools/call` and
/// `tools/list` are finished by the MCP handler, everything else by the `/mcp` layer.
pub async fn guard(State(gateway): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let slot = req.extensions().get::<AuditSlot>().cloned();
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return refused(
                slot,
                Some(Rejection::TooLarge),
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            )
            .await;
        }
    };
    match check(&bytes) {
        Err(response) => refused(slot, None, "invalid", *response).await,
        Ok(parsed) if !headers_match(&parts.headers, parsed) => {
            let response = error(
                StatusCode::BAD_REQUEST,
                None,
                INVALID_REQUEST,
                "Invalid Request: the Mcp-Method or Mcp-Name header does not match the body",
            );
            refused(slot, None, "header_mismatch", response).await
        }
        Ok(parsed) => {
            if let Some(slot) = &slot {
                let method = parsed.method.unwrap_or("response");
                let name: String = method.chars().take(64).collect();
                slot.name(&name, matches!(method, "tools/call" | "tools/list"));
                // A plain stateless tools/call is answered here, without rmcp.
                if let Some(tool) = parsed.tool
                    && let Some(caller) = parts.extensions.get::<Caller>()
                    && let Some(call) =
                        direct::direct_call(&parts.headers, tool, parsed.id, parsed.params)
                    && let Some(record) = slot.take()
                {
                    return direct::answer(&gateway, caller, record, call).await;
                }
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// Finishes the record of a request the guard refuses, and answers.
async fn refused(
    slot: Option<AuditSlot>,
    rejection: Option<Rejection>,
    class: &'static str,
    response: Response,
) -> Response {
    match slot.as_ref().and_then(AuditSlot::take) {
        Some(mut record) => {
            record.record().error_class = Some(class.to_owned());
            let response = match rejection {
                Some(r) => r.response(record.id()),
                None => response,
            };
            wire::finish(record, Outcome::Invalid, response).await
        }
        // Without a slot (not behind the /mcp layer) nothing is recorded here.
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(body: &[u8]) -> Option<Response> {
        check(body).err().map(|r| *r)
    }

    fn code(body: &str) -> Option<(u16, i64)> {
        problem(body.as_bytes()).map(|r| {
            let status = r.status().as_u16();
            let body = futures_body(r);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (status, v["error"]["code"].as_i64().unwrap())
        })
    }

    fn futures_body(r: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn classifies() {
        assert_eq!(code("{bad"), Some((400, PARSE_ERROR)));
        assert_eq!(code(""), Some((400, PARSE_ERROR)));
        assert_eq!(code("[]"), Some((400, INVALID_REQUEST)));
        assert_eq!(code("42"), Some((400, INVALID_REQUEST)));
        assert_eq!(code(r#"{"foo":1}"#), Some((400, INVALID_REQUEST)));
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#),
            Some((400, INVALID_REQUEST))
        );
        let call =
            |p: &str| format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{p}}}"#);
        assert_eq!(code(&call(r#"{"nome":"x"}"#)), Some((200, INVALID_PARAMS)));
        assert_eq!(code(&call(r#"{"name":3}"#)), Some((200, INVALID_PARAMS)));
        assert_eq!(
            code(&call(r#"{"name":"t","arguments":"zzz"}"#)),
            Some((200, INVALID_PARAMS))
        );
        assert_eq!(code(&call("[1]")), Some((200, INVALID_PARAMS)));
        assert_eq!(code(&call(r#"{"name":"t","arguments":{"a":1}}"#)), None);
        // Tool names are bounded on the wire: at most 64 of [A-Za-z0-9_-].
        let long = "a".repeat(MAX_TOOL_NAME + 1);
        for bad in [long.as_str(), "", "a b", "x/../y", r"caf\u00e9", r"t\u0000"] {
            assert_eq!(
                code(&call(&format!(r#"{{"name":"{bad}"}}"#))),
                Some((200, INVALID_PARAMS)),
                "{bad}"
            );
        }
        // Nesting is bounded before any parser recurses; brackets in strings do not count.
        let nested = |depth: usize| {
            call(&format!(
                r#"{{"name":"t","arguments":{{"a":{}1{}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            ))
        };
        assert_eq!(code(&nested(MAX_DEPTH - 4)), None);
        assert_eq!(code(&nested(MAX_DEPTH)), Some((400, INVALID_REQUEST)));
        assert_eq!(code(&nested(100_000)), Some((400, INVALID_REQUEST)));
        let quoted = format!(
            r#"{{"name":"t","arguments":{{"a":"{}"}}}}"#,
            "[".repeat(1000)
        );
        assert_eq!(code(&call(&quoted)), None);
        let longest = "a".repeat(MAX_TOOL_NAME);
        assert_eq!(code(&call(&format!(r#"{{"name":"{longest}"}}"#))), None);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            None
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        // The error echoes the request id.
        let r = problem(call(r#"{}"#).as_bytes()).unwrap();
        assert!(futures_body(r).contains(r#""id":7"#));
    }
}
