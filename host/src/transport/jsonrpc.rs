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

/// Parses a body once: what is wrong with it (`Err`), else its method (`None` for a
/// response).
fn check(body: &[u8]) -> Result<Option<&str>, Box<Response>> {
    let fail = |r: Response| Err(Box::new(r));
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
        if !params.name.is_some_and(|n| n.get().starts_with('"')) {
            return bad("`name` must be a string");
        }
        if let Some(args) = params.arguments
            && !(args.get().starts_with('{') || args.get() == "null")
        {
            return bad("`arguments` must be an object");
        }
    }
    Ok(envelope.method)
}

/// Middleware: buffers POST bodies (up to `limit`), answers malformed JSON-RPC itself, and
/// audits every request the MCP handler does not audit itself (all but `tools/call` and
/// `tools/list`): the record is durable before the response leaves.
pub async fn guard(State(gateway): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    // Built only for the requests audited here, not on the tool-call path.
    let begin = |request: String, extensions: &http::Extensions| {
        let mut record = AuditRecord::begin(request, super::http::client_ip(extensions));
        if let Some(p) = extensions.get::<Principal>() {
            record.principal = Some(p.subject.path());
            record.token_id = Some(p.token_id.clone());
        }
        record
    };
    let (record, response) = if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes: Bytes = match axum::body::to_bytes(body, super::http::MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        };
        let request = match check(&bytes) {
            Err(response) => {
                return audited(
                    &gateway,
                    begin("invalid".into(), &parts.extensions),
                    started,
                    *response,
                )
                .await;
            }
            // The MCP handler audits these with their decision.
            Ok(Some("tools/call" | "tools/list")) => None,
            Ok(method) => Some(method.unwrap_or("response").to_owned()),
        };
        let record = request.map(|r| begin(r, &parts.extensions));
        let response = next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
        match record {
            Some(record) => (record, response),
            None => return response,
        }
    } else {
        let record = begin(format!("{} /mcp", req.method()), req.extensions());
        (record, next.run(req).await)
    };
    audited(&gateway, record, started, response).await
}

/// Records the outcome of `response` and returns it once the record is durable (503 if it
/// cannot be written).
async fn audited(
    gateway: &Gateway,
    mut record: AuditRecord,
    started: std::time::Instant,
    response: Response,
) -> Response {
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
