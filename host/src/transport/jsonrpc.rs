//! A guard in front of the MCP service that answers malformed JSON-RPC with the errors the
//! spec names, instead of transport-level statuses: invalid JSON -> `-32700`, not a JSON-RPC
//! request -> `-32600`, `tools/call` with malformed params -> `-32602`.
//!
//! Invariants: the envelope is parsed without allocating (borrowed fields and raw values), the
//! body is read once up to the size limit (413 beyond), and a request that passes is handed
//! on byte for byte.
//!
//! It is also where requests other than `tools/call` and `tools/list` (which the MCP handler
//! audits with their decision) get their audit record, so every MCP request has one.
//!
//! Threat: parser confusion and error-path differences between layers (a request one layer
//! rejects and another accepts).

use crate::audit::AuditRecord;
use crate::auth::Principal;
use crate::gateway::Gateway;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;

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

/// What is wrong with a body, if anything (`Err`), else its method (`None` for a response).
fn check(body: &[u8]) -> Result<Option<String>, Box<Response>> {
    match problem(body) {
        Some(response) => Err(Box::new(response)),
        None => Ok(serde_json::from_slice::<Envelope<'_>>(body)
            .ok()
            .and_then(|e| e.method.map(str::to_owned))),
    }
}

fn problem(body: &[u8]) -> Option<Response> {
    let envelope: Envelope<'_> = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Some(error(
                StatusCode::BAD_REQUEST,
                None,
                PARSE_ERROR,
                "Parse error",
            ));
        }
        Err(_) => {
            return Some(error(
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
        return Some(error(
            StatusCode::BAD_REQUEST,
            envelope.id,
            INVALID_REQUEST,
            "Invalid Request: not a JSON-RPC 2.0 message",
        ));
    }
    if envelope.method == Some("tools/call") {
        let bad = |why: &str| {
            Some(error(
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
        if !params.name.is_some_and(|n| n.get().starts_with('"')) {
            return bad("`name` must be a string");
        }
        if let Some(args) = params.arguments
            && !(args.get().starts_with('{') || args.get() == "null")
        {
            return bad("`arguments` must be an object");
        }
    }
    None
}

/// Middleware: buffers POST bodies (up to `limit`), answers malformed JSON-RPC itself, and
/// audits every request the MCP handler does not audit itself (all but `tools/call` and
/// `tools/list`): the record is durable before the response leaves.
pub async fn guard(State(gateway): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut record = AuditRecord::begin(String::new(), super::http::client_ip(req.extensions()));
    if let Some(p) = req.extensions().get::<Principal>() {
        record.principal = Some(p.subject.path());
        record.token_id = Some(p.token_id.clone());
    }
    let response = if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes: Bytes = match axum::body::to_bytes(body, super::http::MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        };
        match check(&bytes) {
            Err(response) => {
                record.request = "invalid".into();
                *response
            }
            Ok(Some(method)) if method == "tools/call" || method == "tools/list" => {
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
            }
            Ok(method) => {
                record.request = method.unwrap_or_else(|| "response".into());
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
        }
    } else {
        record.request = format!("{} /mcp", req.method());
        next.run(req).await
    };
    let status = response.status();
    record.outcome = if status.is_success() { "ok" } else { "error" }.into();
    if !status.is_success() {
        record.error_class = Some(status.as_u16().to_string());
    }
    record.latency_us = crate::audit::elapsed_us(started);
    if gateway.audit.record(record).await.is_err() {
        return super::http::audit_unavailable();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
