//! Streamable HTTP: `/mcp` (rmcp's `StreamableHttpService`, both spec eras on one endpoint),
//! health and readiness, and RFC 9728 protected-resource metadata.
//!
//! Also `POST /token` (RFC 8693 exchange of a service token for a short-lived agent token)
//! and, merged in, the admin API (`/admin/v1`, `/metrics`).
//!
//! Invariants: every `/mcp` request passes the bearer-token layer before rmcp sees it (401
//! with `WWW-Authenticate: Bearer resource_metadata=...` otherwise, and an audit record of
//! why), then the per-agent rate limit (429 with `Retry-After`); a session id is honoured
//! only with tokens of the agent that opened the session (404 otherwise); a stream stays
//! open only while its token is valid (revocation ends it); any `Origin` header not on
//! the allow-list is refused (403); the `Host` header must be a loopback name unless
//! configured; bodies over the limit get 413; sockets use TCP_NODELAY; shutdown stops
//! accepting, cancels open streams and waits for in-flight calls up to a drain window.
//!
//! Threat: unauthenticated or cross-origin (DNS rebinding, browser) access to tools, and
//! resource exhaustion through oversized requests.

use crate::audit::{self, AuditRecord, elapsed_us};
use crate::auth::{self, AuthError, Principal};
use crate::gateway::mcp::McpHandler;
use crate::gateway::{Gateway, StreamWatch};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The MCP session header.
const SESSION_HEADER: &str = "mcp-session-id";

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the HTTP transport needs.
#[derive(Clone)]
pub struct HttpState {
    /// The gateway (store, policy, audit, limits).
    pub gateway: Arc<Gateway>,
    /// The public base URL (`http://127.0.0.1:7878`).
    pub base_url: String,
}

impl HttpState {
    fn metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base_url)
    }
}

/// The client address of a request.
pub fn client_ip(extensions: &http::Extensions) -> Option<String> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// A 401 with the RFC 9728 challenge.
fn unauthorized(state: &HttpState, e: &AuthError) -> Response {
    let mut challenge = format!("Bearer resource_metadata=\"{}\"", state.metadata_url());
    if !matches!(e, AuthError::Missing) {
        challenge.push_str(", error=\"invalid_token\"");
    }
    // The wire says only "missing" or "invalid"; the audit record says which.
    let body = if matches!(e, AuthError::Missing) {
        "missing bearer token"
    } else if matches!(e, AuthError::InQuery) {
        "tokens are not accepted in the query string"
    } else {
        "invalid token"
    };
    let mut resp = (StatusCode::UNAUTHORIZED, body).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// 503: the audit trail cannot take records, so the request is refused (fail closed).
pub(crate) fn audit_unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, audit::UNAVAILABLE).into_response()
}

/// The audit record of a refusal made at this layer.
fn refusal(
    req: &Request,
    principal: Option<&Principal>,
    outcome: &str,
    class: Option<&str>,
    started: std::time::Instant,
) -> AuditRecord {
    let mut record = AuditRecord::begin(
        format!("{} /mcp", req.method()),
        client_ip(req.extensions()),
    );
    if let Some(p) = principal {
        record.principal = Some(p.subject.path());
        record.token_id = Some(p.token_id.clone());
    }
    record.outcome = outcome.into();
    record.error_class = class.map(str::to_owned);
    record.latency_us = elapsed_us(started);
    record
}

/// Returns `response` once `record` is durable (503 if it cannot be written).
async fn after_record(gateway: &Gateway, record: AuditRecord, response: Response) -> Response {
    if gateway.audit.record(record).await.is_err() {
        return audit_unavailable();
    }
    response
}

async fn require_token(State(state): State<HttpState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let gateway = &state.gateway;
    let _expected = gateway.audit.expect();
    // A hash and two redb point reads (hot pages are cached in memory): cheap enough to run
    // inline; a thread hop would cost more than the lookups.
    let outcome = auth::authenticate(
        &gateway.store,
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        req.uri().query(),
        &gateway.audience,
    );
    let principal = match outcome {
        Ok(principal) => principal,
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "token store failed; refusing request");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Err(e) => {
            let record = refusal(&req, None, "unauthenticated", Some(e.class()), started);
            return after_record(gateway, record, unauthorized(&state, &e)).await;
        }
    };
    let agent = principal.subject.path();
    match gateway.limiter.check(&agent, principal.rate_limit) {
        Ok(admitted) => {
            req.extensions_mut().insert(admitted);
        }
        Err(limited) => {
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded; retry later",
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(limited.retry_after_secs),
            );
            let record = refusal(&req, Some(&principal), "rate_limited", None, started);
            return after_record(gateway, record, response).await;
        }
    }
    // A session belongs to the agent that opened it: another agent's token with its id is
    // answered as if the session did not exist.
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &session
        && !gateway.sessions.allows(id, &agent)
    {
        let class = Some("session_principal");
        let record = refusal(&req, Some(&principal), "denied", class, started);
        let response = (StatusCode::NOT_FOUND, "session not found").into_response();
        return after_record(gateway, record, response).await;
    }
    let closing = req.method() == axum::http::Method::DELETE;
    let token_id = principal.token_id.clone();
    req.extensions_mut().insert(principal);
    let response = next.run(req).await;
    if let Some(new) = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        && session.as_deref() != Some(new)
    {
        gateway.sessions.bind(new, &agent);
    }
    if closing && let Some(id) = &session {
        gateway.sessions.forget(id);
    }
    // Streams stay open only while their token does: revocation ends them.
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_stream {
        let watch = gateway.streams.watch(&token_id);
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, Body::new(UntilRevoked::new(body, watch)));
    }
    response
}

/// A response body that ends when its token is revoked.
struct UntilRevoked {
    inner: Body,
    closed: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    _watch: StreamWatch,
}

impl UntilRevoked {
    fn new(inner: Body, watch: StreamWatch) -> Self {
        Self {
            inner,
            closed: Box::pin(watch.closed.clone().cancelled_owned()),
            _watch: watch,
        }
    }
}

impl http_body::Body for UntilRevoked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
}

/// `POST /token`: OAuth 2.0 token exchange (RFC 8693) of a service token for a short-lived
/// agent token bound to this gateway. Form fields: `grant_type` (the token-exchange URN),
/// `subject_token` (the service token), optional `resource` or `audience` (must be this
/// gateway's MCP URL) and `expires_in` (seconds, at most an hour).
async fn token_exchange(
    State(state): State<HttpState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    axum::Form(form): axum::Form<std::collections::HashMap<String, String>>,
) -> Response {
    let started = std::time::Instant::now();
    let gateway = &state.gateway;
    let oauth_error = |status: StatusCode, code: &str, description: &str| {
        (
            status,
            Json(serde_json::json!({"error": code, "error_description": description})),
        )
            .into_response()
    };
    let mut record = AuditRecord::begin("token/exchange", Some(addr.ip().to_string()));
    if form.get("grant_type").map(String::as_str) != Some(TOKEN_EXCHANGE_GRANT) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use grant_type=urn:ietf:params:oauth:grant-type:token-exchange",
        );
    }
    let audience = form
        .get("resource")
        .or_else(|| form.get("audience"))
        .cloned()
        .unwrap_or_else(|| gateway.audience.clone());
    if audience != gateway.audience {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "this gateway only issues tokens for its own MCP URL",
        );
    }
    let ttl = match form.get("expires_in").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "expires_in must be a number of seconds",
            );
        }
    };
    let subject = form.get("subject_token").map(String::as_str).unwrap_or("");
    let issued = auth::exchange(&gateway.store, subject, &audience, ttl);
    record.latency_us = elapsed_us(started);
    match issued {
        Ok(issued) => {
            record.principal = Some(issued.record.principal.clone());
            record.token_id = issued.record.parent.clone();
            record.outcome = "ok".into();
            if gateway.audit.record(record).await.is_err() {
                return audit_unavailable();
            }
            let expires_in = issued
                .record
                .expires_at
                .map_or(0, |e| e.saturating_sub(issued.record.issued_at));
            let mut resp = Json(serde_json::json!({
                "access_token": issued.token,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": expires_in,
            }))
            .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "token store failed; refusing exchange");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(e) => {
            record.outcome = "unauthenticated".into();
            record.error_class = Some(e.class().to_owned());
            if gateway.audit.record(record).await.is_err() {
                return audit_unavailable();
            }
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "the subject token is not a valid service token",
            )
        }
    }
}

/// The RFC 8693 grant type.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

async fn resource_metadata(State(state): State<HttpState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "resource": format!("{}/mcp", state.base_url),
        "authorization_servers": [],
        "bearer_methods_supported": ["header"],
        "resource_name": "warden",
    }))
}

/// Readiness: 200 once tools are installed, with each skill's health (an unhealthy skill
/// keeps the gateway ready, since its other skills still serve, but is reported).
async fn ready(State(state): State<HttpState>) -> Response {
    let entries = state.gateway.catalog.list();
    if entries.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no tools installed").into_response();
    }
    let mut skills = std::collections::BTreeMap::new();
    for entry in &entries {
        skills
            .entry(entry.skill.name().to_owned())
            .or_insert_with(|| {
                let h = entry.skill.health();
                serde_json::json!({
                    "healthy": h.healthy,
                    "calls": h.calls,
                    "consecutive_traps": h.consecutive_traps,
                    "last_error": h.last_error,
                })
            });
    }
    Json(serde_json::json!({"ready": true, "tools": entries.len(), "skills": skills}))
        .into_response()
}

/// Which browser origins and `Host` names `/mcp` accepts.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// Browser origins allowed to call `/mcp` (any other `Origin` gets 403).
    pub allowed_origins: Vec<String>,
    /// Host names accepted in addition to the loopback names (for a gateway reached under
    /// another name; DNS-rebinding protection otherwise refuses them).
    pub extra_hosts: Vec<String>,
}

/// Loopback names always accepted in the `Host` header.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Builds the router. Cancelling `streams` ends open MCP streams and sessions.
pub fn router(state: HttpState, access: AccessRules, streams: CancellationToken) -> Router {
    let gateway = state.gateway.clone();
    let hosts: Vec<String> = LOOPBACK_HOSTS
        .iter()
        .map(|h| (*h).to_owned())
        .chain(access.extra_hosts)
        .collect();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(access.allowed_origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(MAX_BODY_BYTES)
        // Stateless (2026-07-28) calls answer with plain JSON, not a one-event SSE stream.
        .with_json_response(true)
        .with_cancellation_token(streams);
    let mcp = StreamableHttpService::new(
        move || Ok(McpHandler::new(gateway.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    // Layers run outside-in: authentication first, then the JSON-RPC guard, then rmcp.
    let protected = Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            state.gateway.clone(),
            super::jsonrpc::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(resource_metadata),
        )
        .route("/token", post(token_exchange))
        .with_state(state.clone())
        .merge(protected)
        .merge(crate::admin::router(state.gateway.clone()))
}

/// Serves until `signal` is cancelled. Then it stops accepting connections, waits (up to
/// `drain`) for in-flight tool calls to finish, cancels `streams` (the token given to
/// [`router`], which ends open MCP streams and sessions), and returns once the remaining
/// connections have closed or the drain window is over.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    signal: CancellationToken,
    streams: CancellationToken,
    gateway: Arc<Gateway>,
    drain: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "TCP_NODELAY failed");
        }
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal.clone().cancelled_owned());
    let server = std::pin::pin!(server.into_future());
    let closer = async {
        signal.cancelled().await;
        let deadline = tokio::time::Instant::now() + drain;
        while gateway.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        streams.cancel();
        tokio::time::sleep_until(deadline).await;
    };
    tokio::select! {
        r = server => r,
        () = closer => {
            tracing::warn!("drain window over; closing remaining connections");
            Ok(())
        }
    }
}
