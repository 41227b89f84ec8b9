//! The one place where warden's refusals and failures become bytes on the wire: HTTP
//! statuses and bodies, and JSON-RPC errors.
//!
//! Invariants: every message here is fixed text (the caller learns the class of the
//! problem, never its details); every error carries the request's correlation id (header
//! `warden-request-id`, and `data.id` in JSON-RPC errors) so an operator can find the audit
//! record and the log line that hold the details; a 401 carries the RFC 9728 challenge.
//!
//! Threat: internal details (trap messages, wasmtime error chains, store errors, which
//! check failed) reaching a caller, and error paths that differ between layers.

use crate::audit::{Outcome, PendingRecord};
use crate::auth::AuthError;
use crate::gateway::{Gateway, Refusal};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::ErrorData;

/// The response header carrying the correlation id.
pub const REQUEST_ID_HEADER: &str = "warden-request-id";

/// Message of a request refused because the audit trail cannot take records.
pub const AUDIT_UNAVAILABLE: &str = "the audit trail is unavailable, so requests are refused";

/// Why a request was refused before the gateway core saw it (wire-level checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The `Host` header is missing or not one this gateway answers to.
    BadHost,
    /// The `Origin` header is neither same-origin nor allow-listed.
    BadOrigin,
    /// A session id this caller may not use (unknown, expired, another agent's).
    UnknownSession,
    /// The body is over the size limit.
    TooLarge,
}

impl Rejection {
    /// The audit class.
    pub fn class(self) -> &'static str {
        match self {
            Self::BadHost => "host",
            Self::BadOrigin => "origin",
            Self::UnknownSession => "session",
            Self::TooLarge => "too_large",
        }
    }

    /// The HTTP response.
    pub fn response(self, correlation: &str) -> Response {
        let (status, message) = match self {
            Self::BadHost => (
                StatusCode::FORBIDDEN,
                "Forbidden: Host header is not allowed",
            ),
            Self::BadOrigin => (
                StatusCode::FORBIDDEN,
                "Forbidden: Origin header is not allowed",
            ),
            Self::UnknownSession => (StatusCode::NOT_FOUND, "session not found"),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        with_id((status, message).into_response(), correlation)
    }
}

/// Adds the correlation id header.
pub fn with_id(mut response: Response, correlation: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(correlation) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// The HTTP response of a refusal by the core. `metadata_url` is the RFC 9728 document
/// named in a 401's challenge.
pub fn refusal(refusal: &Refusal, correlation: &str, metadata_url: &str) -> Response {
    let response = match refusal {
        Refusal::Unauthenticated(e) => {
            let mut challenge = format!("Bearer resource_metadata=\"{metadata_url}\"");
            if !matches!(e, AuthError::Missing) {
                challenge.push_str(", error=\"invalid_token\"");
            }
            // The wire says only "missing" or "invalid"; the audit record says which.
            let body = match e {
                AuthError::Missing => "missing bearer token",
                AuthError::InQuery => "tokens are not accepted in the query string",
                _ => "invalid token",
            };
            let mut r = (StatusCode::UNAUTHORIZED, body).into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
        Refusal::RateLimited { retry_after_secs } | Refusal::Flooded { retry_after_secs } => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded; retry later",
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            r
        }
        Refusal::Forbidden => (StatusCode::FORBIDDEN, "forbidden").into_response(),
        Refusal::UnknownTool => (StatusCode::NOT_FOUND, "unknown tool").into_response(),
        Refusal::AuditUnavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, AUDIT_UNAVAILABLE).into_response()
        }
        Refusal::StoreUnavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable").into_response()
        }
    };
    with_id(response, correlation)
}

/// 503 for a request whose audit record could not be written (its answer is withheld).
pub fn audit_unavailable(correlation: &str) -> Response {
    refusal(&Refusal::AuditUnavailable, correlation, "")
}

/// The JSON-RPC error of a refusal by the core.
pub fn jsonrpc(refusal: &Refusal, correlation: &str) -> ErrorData {
    let data = Some(serde_json::json!({ "id": correlation }));
    match refusal {
        // A denied tool and an unknown tool are the same error.
        Refusal::UnknownTool => ErrorData::invalid_params("unknown tool", data),
        Refusal::Unauthenticated(_) => ErrorData::invalid_request("not authenticated", data),
        Refusal::RateLimited { .. } | Refusal::Flooded { .. } => {
            ErrorData::invalid_request("rate limit exceeded; retry later", data)
        }
        Refusal::Forbidden => ErrorData::invalid_request("forbidden", data),
        Refusal::AuditUnavailable => ErrorData::internal_error(AUDIT_UNAVAILABLE, data),
        Refusal::StoreUnavailable => ErrorData::internal_error("the store is unavailable", data),
    }
}

/// The audit outcome of a response the core did not produce (rmcp's own answers, the
/// JSON-RPC guard's refusals, requests other than tool calls), from its status.
pub fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Ok,
        401 => Outcome::Unauthenticated,
        403 => Outcome::Denied,
        429 => Outcome::RateLimited,
        400..=499 => Outcome::Invalid,
        _ => Outcome::Error,
    }
}

/// Finishes `record` with the outcome of `response` (and the status as its class when it
/// is not a success) and returns the response once the record is durable, or a 503 when it
/// cannot be written.
pub async fn recorded(mut record: PendingRecord, response: Response) -> Response {
    let status = response.status();
    if !status.is_success() {
        record
            .record()
            .error_class
            .get_or_insert_with(|| status.as_u16().to_string());
    }
    finish(record, outcome_of(status), response).await
}

/// Answers a request refused before any credentials were checked or accepted (bad `Host`
/// or `Origin`, unknown route, admin API without a valid token): it counts against its
/// address's limit, within which it is recorded like any request; beyond it, it is answered
/// 429 and folded into the address's summary record, so a flood cannot fill the trail.
pub async fn finish_anonymous(
    gateway: &Gateway,
    record: PendingRecord,
    peer: Option<std::net::IpAddr>,
    outcome: Outcome,
    response: Response,
) -> Response {
    match gateway.admit_address(peer) {
        Ok(()) => finish(record, outcome, response).await,
        Err(flooded) => {
            let response = refusal(&flooded, record.id(), "");
            gateway.absorb(record, peer);
            response
        }
    }
}

/// Finishes `record` with `outcome`, then returns `response` with the correlation id, or a
/// 503 when the record cannot be written.
pub async fn finish(record: PendingRecord, outcome: Outcome, response: Response) -> Response {
    let id = record.id().to_owned();
    match record.finish(outcome).await {
        Ok(_) => with_id(response, &id),
        Err(e) => {
            tracing::error!(%id, error = %e, "audit record failed; response withheld");
            audit_unavailable(&id)
        }
    }
}
