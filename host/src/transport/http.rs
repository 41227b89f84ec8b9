//! Streamable HTTP: the router of every route (`/mcp`, rmcp's `StreamableHttpService`, both
//! spec eras on one endpoint; `POST /token`, RFC 8693 exchange; health, readiness, RFC 9728
//! metadata; the admin router that `up` passes in), the access layer in front of all of
//! them, and the `/mcp` layer that adapts HTTP to the gateway core.
//!
//! Invariants: every request first passes the `Host`/`Origin` check (403 and a record
//! otherwise); every `/mcp` request gets a pending audit record before anything else, is
//! admitted by the core (401 with `WWW-Authenticate: Bearer resource_metadata=...`, or 429
//! with `Retry-After`, each recorded) before rmcp sees it, and leaves exactly one record
//! (finished here, by the guard, or by the handler); a session id is honoured only with
//! tokens of the agent that opened it (404 otherwise, also for ids warden never saw); a
//! stream stays open only while its token is valid (revocation, expiry, the end of a
//! rotation's grace window end it); unknown routes are recorded 404s; connections are
//! accepted by `listen` (TCP_NODELAY, a deadline on request heads, a cap on open
//! connections); shutdown stops accepting, waits for in-flight calls up to a drain window,
//! then ends open streams.
//!
//! Threat: unauthenticated or cross-origin (DNS rebinding, browser) access to tools,
//! requests that leave no trace, and floods that would fill the trail.

use super::slot::AuditSlot;
use super::wire::{self, Rejection};
use crate::audit::{Outcome, PendingRecord};
use crate::gateway::{Credentials, Gateway, Refusal, StreamWatch};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::future::Future as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The MCP session header.
const SESSION_HEADER: &str = "mcp-session-id";

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

/// The client address of a request, when the server knows it (unknown stays unknown).
pub fn peer(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The `/mcp` layer: opens the request's pending record, admits the caller through the
/// gateway core (credentials, rate limit), checks the session binding, and records what
/// no later stage finished. Streams end when their token is revoked or expires.
async fn mcp_layer(State(state): State<HttpState>, mut req: Request, next: Next) -> Response {
    let gateway = &state.gateway;
    let peer = peer(req.extensions());
    let mut record = gateway.audit().open(format!("{} /mcp", req.method()), peer);
    let credentials = Credentials {
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        query: req.uri().query(),
    };
    let caller = match gateway.admit(credentials, peer, &mut record) {
        Ok(caller) => caller,
        Err(refusal) => return refuse(&state, record, peer, &refusal).await,
    };
    let agent = caller.agent.clone();
    // A session belongs to the agent that opened it; an id this agent did not open (or
    // warden never saw) is answered as a session that does not exist.
    let session = req
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(id) = &session
        && !gateway.sessions().allows(id, &agent)
    {
        return rejected(record, Rejection::UnknownSession).await;
    }
    let closing = req.method() == axum::http::Method::DELETE;
    let token_id = caller.principal.token_id.clone();
    let expires_at = caller.principal.expires_at;
    let correlation = record.id().to_owned();
    let slot = AuditSlot::new(record);
    req.extensions_mut().insert(caller);
    req.extensions_mut().insert(slot.clone());
    // A POST counts as in flight until its response is in hand, not only while the core
    // runs it: shutdown ends rmcp's requests once nothing is in flight, and a response
    // not yet handed back would be lost.
    let in_flight = (req.method() == axum::http::Method::POST).then(|| gateway.begin_call());
    let mut response = next.run(req).await;
    drop(in_flight);
    let success = response.status().is_success();
    if success
        && let Some(new) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        && session.as_deref() != Some(new)
    {
        gateway.sessions().bind(new, &agent);
    }
    if closing && success {
        if let Some(id) = &session {
            gateway.sessions().forget(id);
        }
        // A session ended is answered 204 (some clients treat 202 as a failure).
        if response.status() == StatusCode::ACCEPTED {
            *response.status_mut() = StatusCode::NO_CONTENT;
        }
    }
    if let Some(record) = slot.take_unless_handler_owned(success) {
        response = wire::recorded(record, response).await;
    }
    response = wire::with_id(response, &correlation);
    // Streams stay open only while their token does: revocation or expiry ends them.
    let is_stream = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_stream {
        let watch = gateway.streams().watch(&token_id);
        // Registered, then re-checked: a revocation whose close pass ran before the
        // registration is seen here (the store was updated before that pass).
        let still_valid = crate::auth::still_valid(gateway.store(), &token_id);
        if !still_valid {
            watch.closed.cancel();
        }
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, Body::new(UntilRevoked::new(body, watch, expires_at)));
    }
    response
}

/// Answers a refusal of the core: a flooding address's refusals are folded into its
/// summary record; every other refusal is recorded before it is sent.
async fn refuse(
    state: &HttpState,
    record: PendingRecord,
    peer: Option<IpAddr>,
    refusal: &Refusal,
) -> Response {
    let response = wire::refusal(refusal, record.id(), &state.metadata_url());
    if matches!(refusal, Refusal::Flooded { .. }) {
        state.gateway.absorb(record, peer);
        return response;
    }
    wire::finish(record, refusal.outcome(), response).await
}

/// Records and answers a wire-level rejection.
async fn rejected(mut record: PendingRecord, rejection: Rejection) -> Response {
    record.record().error_class = Some(rejection.class().to_owned());
    let response = rejection.response(record.id());
    wire::finish(record, Outcome::Invalid, response).await
}

/// A response body that ends when its token is revoked or expires.
struct UntilRevoked {
    inner: Body,
    closed: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    _watch: StreamWatch,
}

impl UntilRevoked {
    fn new(inner: Body, watch: StreamWatch, expires_at: Option<u64>) -> Self {
        let expiry = expires_at.map(|at| {
            let left = at.saturating_sub(crate::identity::now_secs());
            Box::pin(tokio::time::sleep(Duration::from_secs(left)))
        });
        Self {
            inner,
            closed: Box::pin(watch.closed.clone().cancelled_owned()),
            expiry,
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
        if let Some(expiry) = self.expiry.as_mut()
            && expiry.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
}

/// `POST /token`: OAuth 2.0 token exchange (RFC 8693) of a service token for a short-lived
/// agent token bound to this gateway. Form fields: `grant_type` (the token-exchange URN),
/// `subject_token` (the service token), optional `resource` or `audience` (must be this
/// gateway's MCP URL) and `expires_in` (seconds, at most an hour). Every request counts
/// against its address's limit and gets an audit record (or, beyond the limit, a share in
/// the address's summary record).
async fn token_exchange(State(state): State<HttpState>, req: Request) -> Response {
    let gateway = &state.gateway;
    let peer = peer(req.extensions());
    let mut record = gateway.audit().open("token/exchange", peer);
    if let Err(refusal) = gateway.admit_address(peer) {
        return refuse(&state, record, peer, &refusal).await;
    }
    let oauth_error = |status: StatusCode, code: &str, description: &str| {
        (
            status,
            Json(serde_json::json!({"error": code, "error_description": description})),
        )
            .into_response()
    };
    let body = match axum::body::to_bytes(req.into_body(), 16 * 1024).await {
        Ok(b) => b,
        Err(_) => return rejected(record, Rejection::TooLarge).await,
    };
    let form: std::collections::HashMap<String, String> = match serde_urlencoded::from_bytes(&body)
    {
        Ok(f) => f,
        Err(_) => {
            record.record().error_class = Some("invalid_request".into());
            let response = oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a form (application/x-www-form-urlencoded)",
            );
            return wire::finish(record, Outcome::Invalid, response).await;
        }
    };
    let invalid = |mut record: PendingRecord, code: &'static str, description: &str| {
        record.record().error_class = Some(code.to_owned());
        let response = oauth_error(StatusCode::BAD_REQUEST, code, description);
        wire::finish(record, Outcome::Invalid, response)
    };
    if form.get("grant_type").map(String::as_str) != Some(TOKEN_EXCHANGE_GRANT) {
        return invalid(
            record,
            "unsupported_grant_type",
            "use grant_type=urn:ietf:params:oauth:grant-type:token-exchange",
        )
        .await;
    }
    let audience = form
        .get("resource")
        .or_else(|| form.get("audience"))
        .cloned()
        .unwrap_or_else(|| gateway.audience().to_owned());
    if audience != gateway.audience() {
        return invalid(
            record,
            "invalid_target",
            "this gateway only issues tokens for its own MCP URL",
        )
        .await;
    }
    let ttl = match form.get("expires_in").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return invalid(
                record,
                "invalid_request",
                "expires_in must be a number of seconds",
            )
            .await;
        }
    };
    let subject = form.get("subject_token").map(String::as_str).unwrap_or("");
    match crate::auth::exchange(gateway.store(), subject, &audience, ttl) {
        Ok(issued) => {
            record.record().principal = Some(issued.record.principal.clone());
            record.record().token_id = issued.record.parent.clone();
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
            wire::finish(record, Outcome::Ok, resp).await
        }
        Err(crate::auth::AuthError::Store(e)) => {
            tracing::error!(error = %e, "token store failed; refusing exchange");
            let id = record.id().to_owned();
            wire::finish(
                record,
                Outcome::Error,
                wire::refusal(&Refusal::StoreUnavailable, &id, ""),
            )
            .await
        }
        Err(e) => {
            record.record().error_class = Some(e.class().to_owned());
            let response = oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "the subject token is not a valid service token",
            );
            wire::finish(record, Outcome::Unauthenticated, response).await
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

/// Readiness: 200 once tools are installed, 503 before. It needs no token (probes send
/// none), so it says nothing more; each skill's health is on the admin API.
async fn ready(State(state): State<HttpState>) -> Response {
    let tools = state.gateway.catalog().list().len();
    if tools == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "no tools installed").into_response();
    }
    Json(serde_json::json!({"ready": true})).into_response()
}

/// Any other route: 404, recorded like every request.
async fn not_found(State(state): State<HttpState>, req: Request) -> Response {
    let path: String = req.uri().path().chars().take(64).collect();
    let peer = peer(req.extensions());
    let mut record = state
        .gateway
        .audit()
        .open(format!("{} {path}", req.method()), peer);
    record.record().error_class = Some("404".into());
    let response = (StatusCode::NOT_FOUND, "not found").into_response();
    wire::finish_anonymous(&state.gateway, record, peer, Outcome::Invalid, response).await
}

/// Which browser origins and `Host` names the gateway accepts.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// Browser origins allowed besides the gateway's own (same-origin) pages:
    /// `scheme://host[:port]`, where no port means the scheme's default and `:*` any port.
    pub allowed_origins: Vec<String>,
    /// Host names accepted in addition to the loopback names (for a gateway reached under
    /// another name; DNS-rebinding protection otherwise refuses them).
    pub extra_hosts: Vec<String>,
}

/// Loopback names always accepted in the `Host` header.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// An origin or host as compared: lower-case scheme and host, and the port (the scheme's
/// default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Site {
    scheme: String,
    host: String,
    /// None: any port (an allow-list entry ending in `:*`).
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn bare_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// Parses `scheme://host[:port]` (an `Origin` value or an allow-list entry).
fn parse_site(value: &str) -> Option<Site> {
    let value = value.trim();
    let (base, any_port) = match value.strip_suffix(":*") {
        Some(b) => (b, true),
        None => (value, false),
    };
    let uri: http::Uri = base.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    if uri.path() != "/" && !uri.path().is_empty() {
        return None;
    }
    let port = if any_port {
        if authority.port().is_some() {
            return None;
        }
        None
    } else {
        Some(authority.port_u16().or_else(|| default_port(&scheme))?)
    };
    Some(Site {
        scheme,
        host: bare_host(authority.host()),
        port,
    })
}

/// The compiled access rules.
#[derive(Debug, Clone)]
struct Access {
    hosts: Vec<String>,
    origins: Vec<Site>,
}

impl Access {
    fn new(rules: &AccessRules) -> Self {
        Self {
            hosts: LOOPBACK_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .chain(rules.extra_hosts.iter().map(|h| bare_host(h)))
                .collect(),
            origins: rules
                .allowed_origins
                .iter()
                .filter_map(|o| {
                    let site = parse_site(o);
                    if site.is_none() {
                        tracing::warn!(origin = %o, "ignoring an allowed origin that does not parse");
                    }
                    site
                })
                .collect(),
        }
    }

    /// DNS-rebinding and cross-origin protection: the `Host` must be one this gateway
    /// answers to; an `Origin`, when present, must be the gateway's own (same scheme, host
    /// and port as the `Host`) or on the allow-list (exact port; the scheme's default when
    /// the entry names none; any port only with `:*`).
    fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .ok_or(Rejection::BadHost)?;
        let host_name = bare_host(host.host());
        if !self.hosts.contains(&host_name) {
            return Err(Rejection::BadHost);
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .ok()
            .and_then(parse_site)
            .filter(|o| o.port.is_some())
            .ok_or(Rejection::BadOrigin)?;
        let same_origin = origin.scheme == "http"
            && origin.host == host_name
            && origin.port == host.port_u16().or(Some(80));
        let listed = self.origins.iter().any(|a| {
            a.scheme == origin.scheme
                && a.host == origin.host
                && (a.port.is_none() || a.port == origin.port)
        });
        if same_origin || listed {
            Ok(())
        } else {
            Err(Rejection::BadOrigin)
        }
    }
}

/// The outermost layer of every route: refuses a bad `Host` or `Origin` (403) with an
/// audit record, before anything else runs.
async fn access_layer(
    State((gateway, access)): State<(Arc<Gateway>, Arc<Access>)>,
    req: Request,
    next: Next,
) -> Response {
    match access.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(rejection) => {
            let path: String = req.uri().path().chars().take(64).collect();
            let peer = peer(req.extensions());
            let mut record = gateway
                .audit()
                .open(format!("{} {path}", req.method()), peer);
            record.record().error_class = Some(rejection.class().to_owned());
            let response = rejection.response(record.id());
            wire::finish_anonymous(&gateway, record, peer, Outcome::Invalid, response).await
        }
    }
}

/// Builds the router. Cancelling `streams` ends open MCP streams and sessions. The admin
/// API (`admin`) is merged in by the caller (`up` assembles the routers).
pub fn router(
    state: HttpState,
    access: AccessRules,
    streams: CancellationToken,
    admin: Router,
) -> Router {
    let gateway = state.gateway.clone();
    let compiled = Arc::new(Access::new(&access));
    let config = StreamableHttpServerConfig::default()
        // Host and Origin are checked (with an audit record) by `access_layer`; rmcp
        // checks the Host again.
        .with_allowed_hosts(compiled.hosts.clone())
        .disable_allowed_origins()
        .with_max_request_body_bytes(super::jsonrpc::MAX_BODY_BYTES)
        // Stateless (2026-07-28) calls answer with plain JSON, not a one-event SSE stream.
        .with_json_response(true)
        .with_cancellation_token(streams);
    let tasks = Arc::new(super::mcp::McpTasks::default());
    let mcp = StreamableHttpService::new(
        move || {
            Ok(super::mcp::McpHandler::with_tasks(
                gateway.clone(),
                tasks.clone(),
            ))
        },
        Arc::new(LocalSessionManager::default()),
        config,
    );
    // Layers run outside-in: admission first, then the JSON-RPC guard, then rmcp.
    let protected = Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(
            state.gateway.clone(),
            super::jsonrpc::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            mcp_layer,
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
        .fallback(not_found)
        .with_state(state.clone())
        .merge(protected)
        .merge(admin)
        .layer(axum::middleware::from_fn_with_state(
            (state.gateway.clone(), compiled),
            access_layer,
        ))
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
    let server = super::listen::serve(listener, app, signal.clone());
    let server = std::pin::pin!(server);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rules: &AccessRules, host: &str, origin: Option<&str>) -> Result<(), Rejection> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        Access::new(rules).check(&headers)
    }

    #[test]
    fn hosts_and_origins() {
        let none = AccessRules::default();
        assert_eq!(check(&none, "127.0.0.1:7878", None), Ok(()));
        assert_eq!(check(&none, "[::1]:7878", None), Ok(()));
        assert_eq!(
            check(&none, "evil.example:7878", None),
            Err(Rejection::BadHost)
        );
        // The gateway's own pages (same origin) are accepted; other origins are not.
        assert_eq!(
            check(&none, "localhost:7878", Some("http://localhost:7878")),
            Ok(())
        );
        assert_eq!(
            check(&none, "127.0.0.1:7878", Some("http://127.0.0.1:7878")),
            Ok(())
        );
        for foreign in [
            "http://evil.example",
            "http://localhost:9999",
            "https://localhost:7878",
            "null",
            "garbage",
        ] {
            assert_eq!(
                check(&none, "localhost:7878", Some(foreign)),
                Err(Rejection::BadOrigin),
                "{foreign}"
            );
        }
        // An allow-list entry without a port means the scheme's default port only.
        let listed = AccessRules {
            allowed_origins: vec![
                "https://app.example".into(),
                "http://dev.example:*".into(),
                "http://tools.example:3000".into(),
            ],
            extra_hosts: vec!["gw.example".into()],
        };
        assert_eq!(
            check(&listed, "gw.example", Some("https://app.example")),
            Ok(())
        );
        assert_eq!(
            check(&listed, "gw.example", Some("https://app.example:443")),
            Ok(())
        );
        assert_eq!(
            check(&listed, "gw.example", Some("https://app.example:8443")),
            Err(Rejection::BadOrigin)
        );
        assert_eq!(
            check(&listed, "gw.example", Some("http://dev.example:5173")),
            Ok(())
        );
        assert_eq!(
            check(&listed, "gw.example", Some("http://tools.example:3001")),
            Err(Rejection::BadOrigin)
        );
    }
}
