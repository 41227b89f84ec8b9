//! Streamable HTTP: `/mcp` (rmcp's `StreamableHttpService`, both spec eras on one endpoint),
//! health and readiness, and RFC 9728 protected-resource metadata.
//!
//! Invariants: every `/mcp` request passes the bearer-token layer before rmcp sees it (401
//! with `WWW-Authenticate: Bearer resource_metadata=...` otherwise); any `Origin` header not on
//! the allow-list is refused (403); the `Host` header must be a loopback name unless
//! configured; bodies over the limit get 413; sockets use TCP_NODELAY; shutdown stops
//! accepting, cancels open streams and waits for in-flight calls up to a drain window.
//!
//! Threat: unauthenticated or cross-origin (DNS rebinding, browser) access to tools, and
//! resource exhaustion through oversized requests.

use crate::auth::{self, AuthError};
use crate::gateway::Gateway;
use crate::gateway::mcp::McpHandler;
use crate::storage::Store;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the HTTP transport needs.
#[derive(Clone)]
pub struct HttpState {
    /// Token store.
    pub store: Arc<Store>,
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// The public base URL (`http://127.0.0.1:7878`).
    pub base_url: String,
}

impl HttpState {
    fn metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base_url)
    }
}

async fn require_token(State(state): State<HttpState>, mut req: Request, next: Next) -> Response {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A hash and one redb point read (hot pages are cached in memory): cheap enough to run
    // inline; a thread hop would cost more than the lookup.
    let outcome = auth::authenticate(&state.store, authorization.as_deref(), req.uri().query());
    match outcome {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "token store failed; refusing request");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        Err(e) => {
            let mut challenge = format!("Bearer resource_metadata=\"{}\"", state.metadata_url());
            if !matches!(e, AuthError::Missing) {
                challenge.push_str(", error=\"invalid_token\"");
            }
            let mut resp = (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
    }
}

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
        .layer(axum::middleware::from_fn(super::jsonrpc::guard))
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
        .with_state(state)
        .merge(protected)
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
