//! The private registry's HTTP API (axum): publish, list and search, metadata, download by
//! digest, yank; namespaces, their keys and tokens; the event log.
//!
//! Invariants:
//! - Every route but `/v1/health` needs a registry token (reader, publisher or admin),
//!   checked before a request body is read; nothing else is public.
//! - A publish is accepted only if the package reads cleanly, its signature verifies, the
//!   signing key is a current key of the manifest's namespace, the host's check (the
//!   component's tools against the manifest) passes, and the version is new and not below
//!   the newest (unless published as a backport). A refused publish stores nothing and is
//!   recorded as an event with its reason.
//! - Namespace keys change only by a statement signed by a current key of the namespace
//!   that names its current revision (or by an admin token); a revoked key is never added
//!   again, its new publishes are refused, and versions it signed are flagged
//!   `signer_revoked` in the metadata.
//! - Errors are JSON `{"error": ...}` with a status that says what kind of failure it was;
//!   internal details (paths, database errors) are logged, not returned.
//!
//! Threat: unsigned, tampered or impersonating uploads, a compromised key that keeps
//! publishing after its owner revoked it, version rewrites, and unauthenticated reads of a
//! private registry.

use crate::package::{Limits, Package, PackageError};
use crate::sign::{self, PublicKey, Signer};
use crate::store::{Event, Role, Store, StoreError, Token, Version, Yank, now};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A check the host runs on a package before it is accepted (the registry crate cannot
/// load components; the `warden` binary compares the component's tools with the manifest).
pub trait PublishCheck: Send + Sync {
    /// `Err(reason)` refuses the package.
    fn check<'a>(
        &'a self,
        package: &'a Package,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// What the routes share.
#[derive(Clone)]
pub struct RegistryState {
    store: Arc<Store>,
    check: Option<Arc<dyn PublishCheck>>,
    limits: Limits,
    load: LoadLimits,
    busy: Arc<tokio::sync::Semaphore>,
}

/// How much work the registry takes on at once, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Requests served at once; more are answered 503 at once.
    pub max_requests: usize,
    /// The longest a request may take, upload included; then it is answered 408.
    pub request_timeout: std::time::Duration,
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            max_requests: 64,
            request_timeout: std::time::Duration::from_secs(300),
        }
    }
}

impl RegistryState {
    /// State over `store`, with an optional publish check.
    pub fn new(store: Arc<Store>, check: Option<Arc<dyn PublishCheck>>) -> Self {
        Self::with_load(store, check, LoadLimits::default())
    }

    /// [`RegistryState::new`] with other load limits.
    pub fn with_load(
        store: Arc<Store>,
        check: Option<Arc<dyn PublishCheck>>,
        load: LoadLimits,
    ) -> Self {
        Self {
            store,
            check,
            limits: Limits::default(),
            busy: Arc::new(tokio::sync::Semaphore::new(load.max_requests.max(1))),
            load,
        }
    }
}

/// An API error: a status and a message safe to show.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self(StatusCode::CONFLICT, m),
            StoreError::NotFound(m) => Self(StatusCode::NOT_FOUND, m),
            other => {
                tracing::error!(error = %other, "registry storage failed");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the registry's storage failed; see its log".into(),
                )
            }
        }
    }
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, m.into())
}

fn forbidden(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, m.into())
}

fn refused(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, m.into())
}

/// Runs a blocking store operation off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "a task failed".into()))?
        .map_err(ApiError::from)
}

impl RegistryState {
    async fn auth(&self, headers: &HeaderMap, need: Role) -> Result<Token, ApiError> {
        let unauthorized = || {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "a registry token is required (Authorization: Bearer wrg_...)".into(),
            )
        };
        let secret = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with("wrg_") && t.len() <= 128)
            .ok_or_else(unauthorized)?
            .to_owned();
        let store = self.store.clone();
        let token = blocking(move || store.token(&secret))
            .await?
            .ok_or_else(unauthorized)?;
        if !token.role.includes(need) {
            return Err(forbidden(format!(
                "token `{}` may not do this (needs the {need:?} role)",
                token.name
            )));
        }
        Ok(token)
    }

    async fn refuse(&self, actor: &str, subject: &str, reason: &ApiError) {
        let store = self.store.clone();
        let event = Event::new("publish.refused", actor, subject, reason.1.clone());
        if let Err(e) = blocking(move || store.record(event)).await {
            tracing::error!(error = ?e, "recording a refused publish failed");
        }
    }
}

/// The registry's routes.
pub fn router(state: RegistryState) -> axum::Router {
    let body_cap = usize::try_from(state.limits.package).unwrap_or(usize::MAX);
    axum::Router::new()
        .route("/v1/packages", post(publish).get(search))
        .route("/v1/packages/{ns}/{name}", get(metadata))
        .route("/v1/packages/{ns}/{name}/{version}/yank", post(yank))
        .route("/v1/blobs/{digest}", get(blob))
        .route(
            "/v1/namespaces",
            post(create_namespace).get(list_namespaces),
        )
        .route("/v1/namespaces/{ns}", get(namespace))
        .route("/v1/namespaces/{ns}/keys", post(change_key))
        .route("/v1/tokens", post(issue_token))
        .route("/v1/tokens/revoke", post(revoke_token))
        .route("/v1/events", get(events))
        // Authenticated before any body is read: without a token nobody makes the
        // registry buffer an upload.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .route("/v1/health", get(|| async { Json(json!({"ok": true})) }))
        .layer(DefaultBodyLimit::max(body_cap))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Bounds the work of every request: at most `max_requests` at once (the rest are refused
/// at once, not queued), each within `request_timeout` (a client trickling an upload holds
/// a slot for that long at most).
async fn guard(
    State(s): State<RegistryState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_slot) = s.busy.clone().try_acquire_owned() else {
        let mut r = ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the registry is serving {} requests already; retry shortly",
                s.load.max_requests
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, 1.into());
        return r;
    };
    match tokio::time::timeout(s.load.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {} s",
                s.load.request_timeout.as_secs()
            ),
        )
        .into_response(),
    }
}

/// Refuses a request without a valid token before its handler reads the body (each
/// handler then checks the role it needs).
async fn require_token(
    State(s): State<RegistryState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match s.auth(req.headers(), Role::Reader).await {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct PublishQuery {
    #[serde(default)]
    backport: bool,
}

async fn publish(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Query(q): Query<PublishQuery>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let token = s.auth(&headers, Role::Publisher).await?;
    let limits = s.limits;
    let bytes = body.clone();
    let read = tokio::task::spawn_blocking(move || Package::read(&bytes, &limits))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "a task failed".into()))?;
    let pkg = match read {
        Ok(p) => p,
        Err(e) => {
            let err = refused(format!("package refused: {e}"));
            s.refuse(&token.name, "(unreadable package)", &err).await;
            return Err(err);
        }
    };
    let id = pkg.manifest.id();
    match accept(&s, &token, &pkg, q.backport, body).await {
        Ok(v) => Ok(Json(v)),
        Err(err) => {
            s.refuse(&token.name, &id, &err).await;
            Err(err)
        }
    }
}

async fn accept(
    s: &RegistryState,
    token: &Token,
    pkg: &Package,
    backport: bool,
    body: Bytes,
) -> Result<Value, ApiError> {
    let m = &pkg.manifest;
    if pkg.signature.as_ref().is_some_and(|s| s.sigstore.is_some()) {
        return Err(refused(
            "package refused: this registry's namespaces are owned by ed25519 keys, so it accepts packages signed by one of them; install a Sigstore-signed package from its file (warden skill install FILE)",
        ));
    }
    let signer = pkg
        .signer()
        .map_err(|e: PackageError| refused(format!("package refused: {e}")))?;
    let Signer::Key(key) = signer else {
        return Err(refused(
            "package refused: this registry accepts ed25519-signed packages only",
        ));
    };
    let store = s.store.clone();
    let ns_name = m.namespace.clone();
    let ns = blocking(move || store.namespace(&ns_name))
        .await?
        .ok_or_else(|| {
            forbidden(format!(
                "namespace `{}` does not exist in this registry; its administrator creates it (warden registry namespace create)",
                m.namespace
            ))
        })?;
    if ns.is_revoked(&key) {
        return Err(forbidden(format!(
            "the signing key {key} was revoked for namespace `{}`",
            m.namespace
        )));
    }
    if !ns.is_current(&key) {
        return Err(forbidden(format!(
            "the signing key {key} is not a key of namespace `{}`",
            m.namespace
        )));
    }
    if let Some(check) = &s.check {
        check
            .check(pkg)
            .await
            .map_err(|e| refused(format!("package refused: {e}")))?;
    }
    let store = s.store.clone();
    let digest = blocking(move || store.put_blob(&body)).await?;
    let version = Version {
        version: m.version.clone(),
        digest: digest.clone(),
        size: pkg.size,
        signer: key,
        description: m.description.clone(),
        tools: m.tools.iter().map(|t| t.name.clone()).collect(),
        published_at: now(),
        published_by: token.name.clone(),
        backport,
        yanked: None,
    };
    let store = s.store.clone();
    let (ns, name) = (m.namespace.clone(), m.name.clone());
    blocking(move || store.add_version(&ns, &name, version)).await?;
    tracing::info!(package = %m.id(), %digest, "published");
    Ok(json!({
        "namespace": m.namespace,
        "name": m.name,
        "version": m.version,
        "digest": digest,
        "signer": key.to_string(),
    }))
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

async fn search(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    s.auth(&headers, Role::Reader).await?;
    let store = s.store.clone();
    let all = blocking(move || store.packages()).await?;
    let needle = q.q.to_lowercase();
    let hits: Vec<Value> = all
        .iter()
        .filter_map(|p| {
            let latest = p.latest()?;
            let hay = format!(
                "{}/{} {} {}",
                p.namespace,
                p.name,
                latest.description,
                latest.tools.join(" ")
            )
            .to_lowercase();
            hay.contains(&needle).then(|| {
                json!({
                    "namespace": p.namespace,
                    "name": p.name,
                    "latest": latest.version,
                    "description": latest.description,
                    "tools": latest.tools,
                })
            })
        })
        .collect();
    Ok(Json(json!({ "packages": hits })))
}

async fn metadata(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    s.auth(&headers, Role::Reader).await?;
    let store = s.store.clone();
    let (n, p) = (ns.clone(), name.clone());
    let (rec, namespace) =
        blocking(move || Ok((store.package(&n, &p)?, store.namespace(&n)?))).await?;
    let rec =
        rec.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no package {ns}/{name}")))?;
    let latest = rec.latest().map(|v| v.version.clone());
    let versions: Vec<Value> = rec
        .versions
        .values()
        .map(|v| {
            let mut j = serde_json::to_value(v).unwrap_or(Value::Null);
            j["signer_revoked"] =
                Value::Bool(namespace.as_ref().is_some_and(|n| n.is_revoked(&v.signer)));
            j
        })
        .collect();
    Ok(Json(json!({
        "namespace": rec.namespace,
        "name": rec.name,
        "latest": latest,
        "versions": versions,
    })))
}

async fn blob(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Path(digest): Path<String>,
) -> Result<Response, ApiError> {
    s.auth(&headers, Role::Reader).await?;
    let store = s.store.clone();
    let d = digest.clone();
    let bytes = blocking(move || store.blob(&d)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (header::ETAG, format!("\"sha256:{digest}\"")),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct YankBody {
    reason: String,
    /// An owner key and its signature over [`sign::yank_statement`] (not needed with an
    /// admin token).
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

async fn yank(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Path((ns, name, version)): Path<(String, String, String)>,
    Json(body): Json<YankBody>,
) -> Result<Json<Value>, ApiError> {
    let token = s.auth(&headers, Role::Publisher).await?;
    if body.reason.trim().is_empty()
        || body.reason.len() > 1024
        || body.reason.chars().any(char::is_control)
    {
        return Err(bad(
            "a yank needs a reason of 1-1024 bytes without control characters",
        ));
    }
    let by = if token.role == Role::Admin {
        format!("token {}", token.name)
    } else {
        let key = owner_statement(
            &s,
            &ns,
            &sign::yank_statement(s.store.id(), &ns, &name, &version, &body.reason),
            body.key.as_deref(),
            body.signature.as_deref(),
        )
        .await?;
        key.to_string()
    };
    let store = s.store.clone();
    let yank = Yank {
        at: now(),
        reason: body.reason.clone(),
        by,
    };
    let (n, p, v) = (ns.clone(), name.clone(), version.clone());
    blocking(move || store.yank(&n, &p, &v, yank)).await?;
    Ok(Json(json!({"yanked": format!("{ns}/{name}@{version}")})))
}

/// Checks an owner's signed statement for namespace `ns`; returns the owner key.
async fn owner_statement(
    s: &RegistryState,
    ns: &str,
    statement: &str,
    key: Option<&str>,
    signature: Option<&str>,
) -> Result<PublicKey, ApiError> {
    let (Some(key), Some(signature)) = (key, signature) else {
        return Err(forbidden(
            "this needs a statement signed by a current key of the namespace (or an admin token)",
        ));
    };
    let key: PublicKey = key
        .parse()
        .map_err(|e: sign::SignError| bad(e.to_string()))?;
    let store = s.store.clone();
    let n = ns.to_owned();
    let namespace = blocking(move || store.namespace(&n))
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no namespace `{ns}`")))?;
    if !namespace.is_current(&key) {
        return Err(forbidden(format!(
            "{key} is not a current key of namespace `{ns}`"
        )));
    }
    key.verify_statement(statement, signature)
        .map_err(|e| forbidden(e.to_string()))?;
    Ok(key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceBody {
    name: String,
    owner_key: String,
}

async fn create_namespace(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Json(body): Json<NamespaceBody>,
) -> Result<Json<Value>, ApiError> {
    let token = s.auth(&headers, Role::Admin).await?;
    if !crate::manifest::valid_name(&body.name) {
        return Err(bad(format!(
            "{:?} is not a namespace: use 1-40 of a-z, 0-9 and '-', starting with a letter",
            body.name
        )));
    }
    let key: PublicKey = body
        .owner_key
        .parse()
        .map_err(|e: sign::SignError| bad(e.to_string()))?;
    let store = s.store.clone();
    let actor = format!("token {}", token.name);
    let ns = blocking(move || store.create_namespace(&body.name, key, &actor)).await?;
    Ok(Json(serde_json::to_value(ns).unwrap_or(Value::Null)))
}

async fn list_namespaces(
    State(s): State<RegistryState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    s.auth(&headers, Role::Reader).await?;
    let store = s.store.clone();
    let all = blocking(move || store.namespaces()).await?;
    Ok(Json(json!({ "namespaces": all })))
}

async fn namespace(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.auth(&headers, Role::Reader).await?;
    let store = s.store.clone();
    let n = ns.clone();
    let found = blocking(move || store.namespace(&n))
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no namespace `{ns}`")))?;
    let mut v = serde_json::to_value(found).unwrap_or(Value::Null);
    // What an owner's statement names (with the revision), so it applies here only.
    v["registry"] = json!(s.store.id());
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// `add` or `revoke`.
    action: String,
    /// The key added or revoked.
    key: String,
    /// The namespace revision the statement names.
    revision: u64,
    /// The owner key that signed the statement (not needed with an admin token).
    #[serde(default)]
    signer: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

async fn change_key(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Path(ns): Path<String>,
    Json(body): Json<KeyBody>,
) -> Result<Json<Value>, ApiError> {
    let token = s.auth(&headers, Role::Publisher).await?;
    let add = match body.action.as_str() {
        "add" => true,
        "revoke" => false,
        other => return Err(bad(format!("action {other:?}: use add or revoke"))),
    };
    let key: PublicKey = body
        .key
        .parse()
        .map_err(|e: sign::SignError| bad(e.to_string()))?;
    let actor = if token.role == Role::Admin {
        format!("token {}", token.name)
    } else {
        owner_statement(
            &s,
            &ns,
            &sign::key_statement(s.store.id(), add, &ns, &key, body.revision),
            body.signer.as_deref(),
            body.signature.as_deref(),
        )
        .await?
        .to_string()
    };
    let store = s.store.clone();
    let n = ns.clone();
    let updated = blocking(move || store.change_key(&n, key, add, body.revision, &actor)).await?;
    Ok(Json(serde_json::to_value(updated).unwrap_or(Value::Null)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: Role,
}

async fn issue_token(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Json(body): Json<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    let token = s.auth(&headers, Role::Admin).await?;
    if body.name.is_empty() || body.name.len() > 64 || body.name.chars().any(char::is_control) {
        return Err(bad("a token name is 1-64 printable characters"));
    }
    let store = s.store.clone();
    let actor = format!("token {}", token.name);
    let name = body.name.clone();
    let secret = blocking(move || store.issue_token(&name, body.role, &actor)).await?;
    Ok(Json(
        json!({ "name": body.name, "role": body.role, "token": secret }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    name: String,
}

async fn revoke_token(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Json(body): Json<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
    let token = s.auth(&headers, Role::Admin).await?;
    let store = s.store.clone();
    let actor = format!("token {}", token.name);
    let name = body.name.clone();
    let revoked = blocking(move || store.revoke_tokens(&name, &actor)).await?;
    if revoked == 0 {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no valid token named `{}`", body.name),
        ));
    }
    Ok(Json(json!({ "name": body.name, "revoked": revoked })))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
}

async fn events(
    State(s): State<RegistryState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    s.auth(&headers, Role::Admin).await?;
    let store = s.store.clone();
    let list = blocking(move || store.events(q.after, 1000)).await?;
    Ok(Json(json!({ "events": list })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt as _;

    /// A request body that never arrives.
    struct Never;

    impl http_body::Body for Never {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    fn request(
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> axum::extract::Request {
        let mut r = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        r.body(body).unwrap()
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_are_refused_at_once_and_slow_ones_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let token = store.issue_token("ci", Role::Publisher, "test").unwrap();
        let state = RegistryState::with_load(
            store,
            None,
            LoadLimits {
                max_requests: 1,
                request_timeout: std::time::Duration::from_millis(200),
            },
        );
        let app = router(state.clone());
        // Every slot taken: refused at once, with a hint when to come back.
        let held = state.busy.clone().try_acquire_owned().unwrap();
        let r = app
            .clone()
            .oneshot(request("GET", "/v1/health", None, Body::empty()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        drop(held);
        let r = app
            .clone()
            .oneshot(request("GET", "/v1/health", None, Body::empty()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // An upload that never arrives ends when its time is up, and frees its slot.
        let r = app
            .clone()
            .oneshot(request(
                "POST",
                "/v1/packages",
                Some(&token),
                Body::new(Never),
            ))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(state.busy.available_permits(), 1);
    }
}
