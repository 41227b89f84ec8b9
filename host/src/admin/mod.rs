//! The admin API (`/admin/v1/...`, JSON) and the Prometheus endpoint (`/metrics`): scopes,
//! agents, skills' workspaces, tokens, policies, the vault (status, seal, unseal, key
//! rotation, check), secrets (set, list, history, remove; never a value out), grants,
//! approval tasks and approvers, audit queries and usage. The CLI (`warden token|agent|policy|
//! audit ...`) talks to a running gateway through it, since the running process holds the
//! store's lock.
//!
//! Invariants: every route needs an admin token (`wdn_adm_`; agent tokens are refused);
//! only `operator` admins may change anything, `approver` admins may read and vote on
//! approval tasks (`approvals`, which also holds the approvers' records); every admin
//! request is audited with the admin as principal (`admin:<name>`); a new token's secret
//! appears once, in the response that created it, and never in a listing; policy text is
//! validated before it is stored, and a refused set changes nothing; a secret's value goes
//! in and never comes out (no answer, listing, error or record holds it); a change is committed
//! in the same store transaction as its audit record, or not at all (`change`).
//!
//! Threat: unauthorised changes to who may do what, and operators acting without a trace.

pub(crate) mod approvals;

use crate::audit::{self, Committed, Outcome};
use crate::auth::{self, Admin, AuthError, IssueRequest, ROLE_OPERATOR};
use crate::gateway::{self, Gateway, target};
use crate::identity::{self, IdentityError};
use crate::policy::{Circumstances, PolicyEngine, PolicyVersion, Subject, Target};
use crate::storage::{GrantRecord, StoreError, Tables, TokenKind, Tx};
use crate::transport::slot::AuditSlot;
use crate::transport::wire;
use crate::vault::grants::{self, GrantError, GrantSpec};
use crate::vault::{SecretPath, VaultError};
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

type Shared = State<Arc<Gateway>>;

/// An API error: a status and a message for the operator.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self(StatusCode::CONFLICT, m),
            other => {
                tracing::error!(error = %other, "store failed in the admin API");
                Self(StatusCode::SERVICE_UNAVAILABLE, "the store failed".into())
            }
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Invalid(m) => Self(StatusCode::BAD_REQUEST, m),
            IdentityError::NotFound(m) => Self(StatusCode::NOT_FOUND, m),
            IdentityError::Store(s) => s.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(s) => s.into(),
            AuthError::Unknown => Self(StatusCode::NOT_FOUND, "no such token".into()),
            AuthError::Refused(m) => Self(StatusCode::BAD_REQUEST, m),
            other => Self(StatusCode::CONFLICT, other.to_string()),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// The key (`namespace/name`) of the installed skill an operator named.
fn resolve_skill(g: &Gateway, name: &str) -> Result<String, ApiError> {
    g.store()
        .resolve_skill(name)?
        .map_err(|m| ApiError(StatusCode::NOT_FOUND, m))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// Builds the admin router over `gateway`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/admin/v1/scopes", get(list_scopes).post(create_scope))
        .route("/admin/v1/agents", get(list_agents).post(put_agent))
        .route(
            "/admin/v1/agents/{*path}",
            axum::routing::delete(delete_agent),
        )
        .route("/admin/v1/skills", get(list_skills))
        .route(
            "/admin/v1/skills/{name}/workspaces",
            axum::routing::put(set_skill_workspaces),
        )
        .route("/admin/v1/tokens", get(list_tokens).post(issue_token))
        .route("/admin/v1/tokens/{id}/rotate", post(rotate_token))
        .route("/admin/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/admin/v1/policies", get(policy_history).post(apply_policy))
        .route("/admin/v1/policies/current", get(current_policy))
        .route("/admin/v1/policies/test", post(test_policy))
        .route("/admin/v1/audit", get(query_audit))
        .route("/admin/v1/audit/verify", get(verify_audit))
        .route("/admin/v1/usage", get(usage))
        .route("/admin/v1/vault", get(vault_status))
        .route("/admin/v1/vault/seal", post(vault_seal))
        .route("/admin/v1/vault/unseal", post(vault_unseal))
        .route("/admin/v1/vault/rotate-key", post(vault_rotate))
        .route("/admin/v1/vault/check", get(vault_check))
        .route("/admin/v1/secrets", get(list_secrets).post(set_secret))
        .route("/admin/v1/secrets/history", get(secret_history))
        .route(
            "/admin/v1/secrets/{*path}",
            axum::routing::delete(remove_secret),
        )
        .route("/admin/v1/grants", get(list_grants).post(add_grant))
        .route("/admin/v1/grants/{id}", axum::routing::delete(remove_grant))
        .route(
            "/admin/v1/packages",
            post(install_package).layer(axum::extract::DefaultBodyLimit::max(
                usize::try_from(warden_registry::Limits::default().package).unwrap_or(usize::MAX),
            )),
        )
        .route(
            "/admin/v1/packages/remove",
            axum::routing::delete(remove_package),
        )
        .route("/admin/v1/packages/rollback", post(rollback_package))
        .route(
            "/admin/v1/trust",
            get(list_trust).post(add_trust).delete(remove_trust),
        )
        .route(
            "/admin/v1/trust/sigstore-root",
            axum::routing::put(pin_sigstore_root).delete(unpin_sigstore_root),
        )
        .route("/admin/v1/approvals", get(approvals::list_approvals))
        .route(
            "/admin/v1/approvals/events",
            get(approvals::approval_events),
        )
        .route("/admin/v1/approvals/{id}", get(approvals::show_approval))
        .route("/admin/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/admin/v1/approvals/{id}/deny", post(approvals::deny))
        .route(
            "/admin/v1/approvals/{id}/modify",
            post(approvals::modify).layer(axum::extract::DefaultBodyLimit::max(
                approvals::MAX_VOTE_BODY + 1,
            )),
        )
        .route("/admin/v1/webhooks", get(approvals::list_webhooks))
        .route(
            "/admin/v1/webhooks/{tenant}/{workspace}",
            axum::routing::put(approvals::put_webhook).delete(approvals::remove_webhook),
        )
        .route("/admin/v1/approvers", get(approvals::list_approvers))
        .route(
            "/admin/v1/approvers/{name}",
            axum::routing::put(approvals::put_approver).delete(approvals::remove_approver),
        )
        .route("/admin/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            require_admin,
        ))
        .with_state(gateway)
}

async fn require_admin(State(gateway): Shared, mut req: Request, next: Next) -> Response {
    let path: String = req.uri().path().chars().take(128).collect();
    let peer = crate::transport::http::peer(req.extensions());
    let mut record = gateway
        .audit()
        .open(format!("admin {} {path}", req.method()), peer);
    let id = record.id().to_owned();
    let admin = match auth::authenticate_admin(
        gateway.store(),
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        req.uri().query(),
    ) {
        Err(AuthError::Store(e)) => {
            record.record().error_class = Some("store".into());
            return wire::finish(record, Outcome::Error, ApiError::from(e).into_response()).await;
        }
        // An agent deciding approvals (its own or another's) is refused outright.
        Err(AuthError::WrongKind) if path.starts_with("/admin/v1/approvals") => {
            let authorization = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Some((principal, id)) = auth::token_owner(gateway.store(), authorization) {
                record.record().principal = Some(principal);
                record.record().token_id = Some(id);
            }
            record.record().error_class = Some("agent_token".into());
            let r = ApiError(
                StatusCode::FORBIDDEN,
                "agents cannot see or decide approvals: use an approver's admin token".into(),
            )
            .into_response();
            return wire::finish(record, Outcome::Denied, r).await;
        }
        Err(e) => {
            record.record().error_class = Some(e.class().to_owned());
            let mut r =
                ApiError(StatusCode::UNAUTHORIZED, "admin token required".into()).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return wire::finish_anonymous(&gateway, record, peer, Outcome::Unauthenticated, r)
                .await;
        }
        Ok(admin) => admin,
    };
    record.record().principal = Some(format!("admin:{}", admin.name));
    record.record().token_id = Some(admin.token_id.clone());
    let reads = req.method() == Method::GET || req.uri().path() == "/admin/v1/policies/test";
    // The one change an approver makes is a vote.
    let vote = approvals::is_vote(req.method(), req.uri().path());
    if !reads && !vote && admin.role != ROLE_OPERATOR {
        let r = ApiError(
            StatusCode::FORBIDDEN,
            format!("the `{}` role may only read", admin.role),
        )
        .into_response();
        return wire::finish(record, Outcome::Denied, r).await;
    }
    // Fail closed: a change is applied only while the trail can record it.
    if !reads && !gateway.audit().healthy() {
        record.record().error_class = Some("audit".into());
        let r = ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            wire::AUDIT_UNAVAILABLE.into(),
        );
        return wire::finish(record, Outcome::Error, r.into_response()).await;
    }
    // A change takes the record and commits it with the change (see `change`); whatever
    // else the handler answers is recorded here, from its status.
    let slot = AuditSlot::new(record);
    req.extensions_mut().insert(admin);
    req.extensions_mut().insert(slot.clone());
    let response = next.run(req).await;
    match slot.take() {
        Some(record) => wire::recorded(record, response).await,
        None => wire::with_id(response, &id),
    }
}

/// Applies `change` and records the request in one store transaction (see
/// `PendingRecord::commit`): a change whose record cannot be written is not applied, and
/// is answered 503. A refused change (`Err`) writes nothing; its record is left for the
/// layer to finish from the error's status.
async fn change<R: Send + 'static>(
    slot: &AuditSlot,
    change: impl FnOnce(&Tx<'_>) -> Result<R, ApiError> + Send + 'static,
) -> Result<R, ApiError> {
    let record = slot.take().ok_or_else(|| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request's audit record is missing".into(),
        )
    })?;
    match record.commit(change).await {
        Ok(Committed::Applied(r)) => Ok(r),
        Ok(Committed::Refused(e, record)) => {
            slot.put_back(*record);
            Err(e)
        }
        Err(e) => {
            tracing::error!(error = %e, "an admin change was not applied: its record could not be written");
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                wire::AUDIT_UNAVAILABLE.into(),
            ))
        }
    }
}

#[utoipa::path(get, path = "/admin/v1/scopes", tag = "identity",
    responses((status = 200, description = "Tenants, workspaces and environments", body = Object)))]
async fn list_scopes(State(g): Shared) -> ApiResult {
    let scopes: Vec<Value> = g
        .store()
        .scopes()?
        .into_iter()
        .map(|(path, r)| {
            let kind = ["tenant", "workspace", "environment"]
                .get(path.split('/').count().saturating_sub(1))
                .copied()
                .unwrap_or("scope");
            json!({"path": path, "kind": kind, "created_at": r.created_at})
        })
        .collect();
    Ok(Json(json!({ "scopes": scopes })).into_response())
}

#[derive(Deserialize, ToSchema)]
struct ScopeBody {
    path: String,
}

#[utoipa::path(post, path = "/admin/v1/scopes", tag = "identity", request_body = ScopeBody,
    responses((status = 201, description = "Created", body = Object),
              (status = 404, description = "The parent does not exist", body = Object),
              (status = 409, description = "It exists already", body = Object)))]
async fn create_scope(
    Extension(slot): Extension<AuditSlot>,
    Json(body): Json<ScopeBody>,
) -> ApiResult {
    let path = body.path.clone();
    change(&slot, move |tx| Ok(identity::create_scope(tx, &path)?)).await?;
    Ok((StatusCode::CREATED, Json(json!({"path": body.path}))).into_response())
}

#[utoipa::path(get, path = "/admin/v1/agents", tag = "identity",
    responses((status = 200, description = "Agents with their groups and rate limits", body = Object)))]
async fn list_agents(State(g): Shared) -> ApiResult {
    let agents: Vec<Value> = g
        .store()
        .agents()?
        .into_iter()
        .map(|(path, r)| {
            json!({"path": path, "groups": r.groups, "rate_limit": r.rate_limit, "owner": r.owner, "created_at": r.created_at})
        })
        .collect();
    Ok(Json(json!({ "agents": agents })).into_response())
}

#[derive(Deserialize, ToSchema)]
struct AgentBody {
    path: String,
    #[serde(default)]
    groups: Vec<String>,
    rate_limit: Option<u32>,
    /// The admin who owns the agent (never an approver of its requests).
    owner: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/agents", tag = "identity", request_body = AgentBody,
    responses((status = 200, description = "Saved", body = Object),
              (status = 404, description = "The environment does not exist", body = Object)))]
async fn put_agent(
    Extension(slot): Extension<AuditSlot>,
    Json(body): Json<AgentBody>,
) -> ApiResult {
    let path = body.path.clone();
    let record = change(&slot, move |tx| {
        Ok(identity::put_agent_owned(
            tx,
            &path,
            body.groups,
            body.rate_limit,
            body.owner,
        )?)
    })
    .await?;
    Ok(Json(json!({"path": body.path, "groups": record.groups,
        "rate_limit": record.rate_limit, "owner": record.owner}))
    .into_response())
}

#[utoipa::path(delete, path = "/admin/v1/agents/{path}", tag = "identity",
    params(("path" = String, Path, description = "tenant/workspace/environment/agent")),
    responses((status = 200, description = "Deleted; its tokens are revoked", body = Object),
              (status = 404, description = "No such agent", body = Object)))]
async fn delete_agent(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Path(path): Path<String>,
) -> ApiResult {
    identity::parse_path(&path, 4)?;
    let agent = path.clone();
    let ids = change(&slot, move |tx| {
        tx.delete_agent(&agent, identity::now_secs())?
            .ok_or_else(|| {
                ApiError(
                    StatusCode::NOT_FOUND,
                    format!("agent `{agent}` does not exist"),
                )
            })
    })
    .await?;
    // Close the streams of the tokens this revoked.
    g.streams().close(&ids);
    Ok(Json(json!({"deleted": path, "revoked_tokens": ids})).into_response())
}

#[utoipa::path(get, path = "/admin/v1/skills", tag = "skills",
    responses((status = 200, description = "Installed skills, their tools and the workspaces they are installed in", body = Object)))]
async fn list_skills(State(g): Shared) -> ApiResult {
    let mut tools_of: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut health_of: std::collections::HashMap<String, Value> = Default::default();
    for e in g.catalog().list() {
        health_of.entry(e.key.to_string()).or_insert_with(|| {
            let h = e.skill.health();
            json!({"healthy": h.healthy, "calls": h.calls,
                   "consecutive_traps": h.consecutive_traps, "last_error": h.last_error})
        });
        tools_of
            .entry(e.key.to_string())
            .or_default()
            .push(e.exposed);
    }
    let skills: Vec<Value> = g
        .store()
        .skills()?
        .into_iter()
        .map(|(key, r)| {
            let tools = tools_of.remove(&key).unwrap_or_default();
            let health = health_of.remove(&key).unwrap_or(Value::Null);
            let name = key.rsplit_once('/').map_or(key.as_str(), |(_, n)| n);
            json!({"name": name, "id": key, "namespace": r.namespace, "digest": r.digest,
                   "workspaces": r.workspaces, "tools": tools, "health": health,
                   "package": r.package, "embedded": r.embedded})
        })
        .collect();
    Ok(Json(json!({ "skills": skills })).into_response())
}

#[derive(Deserialize, ToSchema)]
struct WorkspacesBody {
    /// `tenant/workspace` paths, or `["*"]` for every workspace.
    workspaces: Vec<String>,
}

#[utoipa::path(put, path = "/admin/v1/skills/{name}/workspaces", tag = "skills", request_body = WorkspacesBody,
    params(("name" = String, Path, description = "The skill: `namespace/name` (the slash percent-encoded) or a name only one namespace has")),
    responses((status = 200, description = "Installed in exactly these workspaces", body = Object),
              (status = 404, description = "No such skill or workspace", body = Object)))]
async fn set_skill_workspaces(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Path(name): Path<String>,
    Json(body): Json<WorkspacesBody>,
) -> ApiResult {
    let key = resolve_skill(&g, &name)?;
    let (skill, workspaces) = (key.clone(), body.workspaces.clone());
    change(&slot, move |tx| {
        Ok(gateway::store_skill_workspaces(tx, &skill, workspaces)?)
    })
    .await?;
    g.install_in(&key, body.workspaces.clone());
    Ok(Json(json!({"name": name, "workspaces": body.workspaces})).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TokenFilter {
    principal: Option<String>,
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/admin/v1/tokens", tag = "tokens", params(TokenFilter),
    responses((status = 200, description = "Token records (never secrets)", body = Object)))]
async fn list_tokens(State(g): Shared, Query(f): Query<TokenFilter>) -> ApiResult {
    let now = identity::now_secs();
    let mut tokens: Vec<Value> = g
        .store()
        .tokens()?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| f.principal.as_deref().is_none_or(|p| r.principal == p))
        .filter(|r| f.all || (r.revoked_at.is_none() && r.expires_at.is_none_or(|e| e > now)))
        .map(|r| {
            let state = if r.revoked_at.is_some() {
                "revoked"
            } else if r.expires_at.is_some_and(|e| e <= now) {
                "expired"
            } else if r.rotated_to.is_some() {
                "rotating"
            } else {
                "active"
            };
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            v["state"] = json!(state);
            v
        })
        .collect();
    tokens.sort_by_key(|v| v["issued_at"].as_u64());
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

#[derive(Deserialize, ToSchema)]
struct IssueBody {
    /// `service` (default) or `admin`.
    kind: Option<String>,
    /// Agent path (service) or admin name (admin).
    principal: String,
    /// Admin role.
    role: Option<String>,
    ttl_secs: Option<u64>,
    #[serde(default)]
    label: String,
}

#[utoipa::path(post, path = "/admin/v1/tokens", tag = "tokens", request_body = IssueBody,
    responses((status = 201, description = "The token (shown once) and its record", body = Object),
              (status = 400, description = "Refused (unknown agent, TTL over the cap, bad role)", body = Object)))]
async fn issue_token(
    Extension(slot): Extension<AuditSlot>,
    Json(body): Json<IssueBody>,
) -> ApiResult {
    let kind = match body.kind.as_deref().unwrap_or("service") {
        "service" => TokenKind::Service,
        "admin" => TokenKind::Admin,
        other => {
            return Err(bad(format!(
                "kind `{other}` cannot be issued here: use `service` or `admin` (agent tokens come from POST /token)"
            )));
        }
    };
    let request = IssueRequest {
        kind,
        principal: body.principal,
        role: body.role.unwrap_or_else(|| ROLE_OPERATOR.into()),
        ttl: body.ttl_secs,
        label: body.label,
        audience: None,
        parent: None,
    };
    let issued = change(&slot, move |tx| Ok(auth::issue(tx, request)?)).await?;
    let mut resp = (
        StatusCode::CREATED,
        Json(json!({"token": issued.token, "record": issued.record})),
    )
        .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

#[derive(Deserialize, Default, ToSchema)]
struct RotateBody {
    #[serde(default)]
    grace_secs: u64,
}

#[utoipa::path(post, path = "/admin/v1/tokens/{id}/rotate", tag = "tokens", request_body = RotateBody,
    params(("id" = String, Path, description = "Token id (tok_...)")),
    responses((status = 200, description = "The replacement (shown once); the old token lives for the grace window", body = Object),
              (status = 404, description = "No such token", body = Object)))]
async fn rotate_token(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
    body: Option<Json<RotateBody>>,
) -> ApiResult {
    let grace = body.map(|b| b.0.grace_secs).unwrap_or(0);
    let old = id.clone();
    let (issued, children) = change(&slot, move |tx| {
        let issued = auth::rotate(tx, &old, grace)?;
        Ok((issued, auth::children(tx, &old)?))
    })
    .await?;
    // The old token's streams, and those of the agent tokens exchanged from it, end with
    // its grace window.
    let mut ids = vec![id.clone()];
    ids.extend(children);
    if grace == 0 {
        g.streams().close(&ids);
    } else {
        let gateway = g.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(grace)).await;
            gateway.streams().close(&ids);
        });
    }
    let mut resp = Json(json!({
        "token": issued.token,
        "record": issued.record,
        "old_token_valid_until": identity::now_secs() + grace,
    }))
    .into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

#[utoipa::path(post, path = "/admin/v1/tokens/{id}/revoke", tag = "tokens",
    params(("id" = String, Path, description = "Token id (tok_...)")),
    responses((status = 200, description = "Revoked ids (with exchanged tokens); their streams are closed", body = Object),
              (status = 404, description = "No such token", body = Object)))]
async fn revoke_token(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
) -> ApiResult {
    let ids = change(&slot, move |tx| Ok(auth::revoke(tx, &id)?)).await?;
    g.streams().close(&ids);
    Ok(Json(json!({ "revoked": ids })).into_response())
}

fn versions(g: &Gateway) -> Result<Vec<PolicyVersion>, ApiError> {
    g.store()
        .policy_versions()?
        .iter()
        .map(|b| {
            serde_json::from_slice(b)
                .map_err(|e| ApiError::from(StoreError::Corrupt(e.to_string())))
        })
        .collect()
}

#[utoipa::path(get, path = "/admin/v1/policies", tag = "policy",
    responses((status = 200, description = "Every applied version (without text) and the current one", body = Object)))]
async fn policy_history(State(g): Shared) -> ApiResult {
    let history: Vec<Value> = versions(&g)?
        .into_iter()
        .map(|v| {
            json!({"version": v.version, "digest": v.digest, "applied_at": v.applied_at,
                   "applied_by": v.applied_by, "policies": v.policies})
        })
        .collect();
    Ok(Json(json!({"current": g.policy().version, "versions": history})).into_response())
}

#[utoipa::path(get, path = "/admin/v1/policies/current", tag = "policy",
    responses((status = 200, description = "The policy set in force, with its text", body = Object)))]
async fn current_policy(State(g): Shared) -> ApiResult {
    let current = versions(&g)?.pop();
    Ok(Json(json!({ "policy": current })).into_response())
}

#[derive(Deserialize, ToSchema)]
struct ApplyBody {
    text: String,
}

#[utoipa::path(post, path = "/admin/v1/policies", tag = "policy", request_body = ApplyBody,
    responses((status = 201, description = "Applied as the next version", body = Object),
              (status = 422, description = "Does not parse or validate; nothing changed", body = Object)))]
async fn apply_policy(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Json(body): Json<ApplyBody>,
) -> ApiResult {
    let engine = PolicyEngine::new(&body.text)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let (v, engine) = change(&slot, move |tx| {
        let v = gateway::store_policy(tx, &body.text, &engine, &admin.name)?;
        Ok((v, engine))
    })
    .await?;
    g.activate_policy(engine, &v);
    Ok((
        StatusCode::CREATED,
        Json(json!({"version": v.version, "digest": v.digest, "policies": v.policies})),
    )
        .into_response())
}

/// A simulated request: who (an existing agent's path, or a full subject), which tool (an
/// installed tool's exposed name, or a full target), with what.
#[derive(Deserialize, ToSchema)]
struct TestBody {
    /// Policy text to test instead of the set in force.
    policy: Option<String>,
    agent: Option<String>,
    #[schema(value_type = Option<Object>)]
    subject: Option<Subject>,
    tool: Option<String>,
    #[schema(value_type = Option<Object>)]
    target: Option<Target>,
    #[serde(default)]
    #[schema(value_type = Object)]
    arguments: serde_json::Map<String, Value>,
    now: Option<String>,
    #[schema(value_type = Option<String>)]
    client_ip: Option<std::net::IpAddr>,
    rate: Option<i64>,
}

#[utoipa::path(post, path = "/admin/v1/policies/test", tag = "policy", request_body = TestBody,
    responses((status = 200, description = "Decision, deciding policies, deny reasons and whether the tool is listed", body = Object)))]
async fn test_policy(State(g): Shared, Json(body): Json<TestBody>) -> ApiResult {
    let subject = match (body.subject, body.agent) {
        (Some(s), _) => s,
        (None, Some(path)) => {
            let record = g
                .store()
                .agent(&path)?
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no agent `{path}`")))?;
            identity::subject(&path, &record).ok_or_else(|| bad("bad agent path"))?
        }
        (None, None) => return Err(bad("give `agent` (a path) or `subject`")),
    };
    let target = match (body.target, body.tool) {
        (Some(t), _) => t,
        (None, Some(name)) => {
            let entry = g.catalog().get(&name).ok_or_else(|| {
                ApiError(StatusCode::NOT_FOUND, format!("no installed tool `{name}`"))
            })?;
            target(&entry)
        }
        (None, None) => return Err(bad("give `tool` (an exposed name) or `target`")),
    };
    let c = Circumstances {
        now: body.now.unwrap_or_else(|| {
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
        }),
        client_ip: body.client_ip,
        rate: body.rate.unwrap_or(1),
        arguments: body.arguments,
    };
    let (decision, listed, version) = match body.policy {
        Some(text) => {
            let engine = PolicyEngine::new(&text)
                .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
            let d = engine.decide(&subject, &target, &c);
            (d, engine.may_call(&subject, &target, &c), None)
        }
        None => {
            let p = g.policy();
            let d = p.engine.decide(&subject, &target, &c);
            (d, p.engine.may_call(&subject, &target, &c), Some(p.version))
        }
    };
    let mut out = decision.to_json();
    out["listed"] = json!(listed);
    out["policy_version"] = json!(version);
    out["principal"] = json!(subject.path());
    out["tool"] = json!(target.exposed);
    Ok(Json(out).into_response())
}

#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit", params(audit::Query),
    responses((status = 200, description = "Records, newest first", body = Object)))]
async fn query_audit(State(g): Shared, Query(q): Query<audit::Query>) -> ApiResult {
    let records = g.audit().query(&q)?;
    Ok(Json(json!({ "records": records })).into_response())
}

#[utoipa::path(get, path = "/admin/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The chain verifies", body = Object),
              (status = 409, description = "The first broken record and why", body = Object)))]
async fn verify_audit(State(g): Shared) -> ApiResult {
    let v = g.audit().verify()?;
    let status = if v.first_broken.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(v))).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    group_by: Option<String>,
}

#[utoipa::path(get, path = "/admin/v1/usage", tag = "audit", params(UsageQuery),
    responses((status = 200, description = "Calls, errors, latency and fuel per group", body = Object)))]
async fn usage(State(g): Shared, Query(q): Query<UsageQuery>) -> ApiResult {
    let group_by = q.group_by.unwrap_or_else(|| "agent".into());
    if !["tenant", "workspace", "environment", "agent", "tool"].contains(&group_by.as_str()) {
        return Err(bad(
            "group_by is one of tenant, workspace, environment, agent, tool",
        ));
    }
    Ok(Json(json!({"group_by": group_by, "usage": g.audit().usage(&group_by)})).into_response())
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[utoipa::path(get, path = "/metrics", tag = "audit",
    responses((status = 200, description = "Prometheus text exposition of the usage counters", content_type = "text/plain", body = String)))]
async fn metrics(State(g): Shared) -> Response {
    use std::fmt::Write;
    let mut out = String::new();
    let series = [
        (
            "warden_calls_total",
            "Requests recorded in the audit trail.",
        ),
        ("warden_errors_total", "Requests that did not succeed."),
        (
            "warden_latency_microseconds_total",
            "Sum of request latencies.",
        ),
        ("warden_fuel_total", "Sum of fuel consumed by tool calls."),
    ];
    let usage = g.audit().usage_raw();
    for (i, (name, help)) in series.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (key, u) in &usage {
            let (principal, tool) = key.split_once('|').unwrap_or((key.as_str(), "-"));
            let mut seg = principal.splitn(4, '/');
            let (t, w, e, a) = (
                seg.next().unwrap_or(""),
                seg.next().unwrap_or(""),
                seg.next().unwrap_or(""),
                seg.next().unwrap_or(""),
            );
            let value = [u.calls, u.errors, u.latency_us, u.fuel][i];
            let _ = writeln!(
                out,
                "{name}{{tenant=\"{}\",workspace=\"{}\",environment=\"{}\",agent=\"{}\",tool=\"{}\"}} {value}",
                label(t),
                label(w),
                label(e),
                label(a),
                label(tool)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP warden_tools_installed Tools in the catalog.\n# TYPE warden_tools_installed gauge\nwarden_tools_installed {}",
        g.catalog().list().len()
    );
    let _ = writeln!(
        out,
        "# HELP warden_policy_version Version of the policy set in force.\n# TYPE warden_policy_version gauge\nwarden_policy_version {}",
        g.policy().version
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Sealed => Self(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            VaultError::WrongKey => Self(StatusCode::FORBIDDEN, e.to_string()),
            VaultError::NotFound(_) => Self(StatusCode::NOT_FOUND, e.to_string()),
            VaultError::Invalid(_) => Self(StatusCode::BAD_REQUEST, e.to_string()),
            VaultError::Key(_) | VaultError::Corrupt(_) => {
                Self(StatusCode::CONFLICT, e.to_string())
            }
            VaultError::Store(s) => s.into(),
            VaultError::Crypto(c) => {
                tracing::error!(error = %c, "vault cryptography failed");
                Self(StatusCode::INTERNAL_SERVER_ERROR, "the vault failed".into())
            }
        }
    }
}

impl From<GrantError> for ApiError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::Invalid(m) => Self(StatusCode::BAD_REQUEST, m),
            GrantError::NotFound(m) => Self(StatusCode::NOT_FOUND, m),
            GrantError::Store(s) => s.into(),
        }
    }
}

impl From<crate::packages::TrustError> for ApiError {
    fn from(e: crate::packages::TrustError) -> Self {
        use crate::packages::TrustError;
        match e {
            TrustError::Invalid(m) => Self(StatusCode::BAD_REQUEST, m),
            TrustError::NotFound(m) => Self(StatusCode::NOT_FOUND, m),
            TrustError::Store(s) => s.into(),
        }
    }
}

impl From<crate::install::InstallError> for ApiError {
    fn from(e: crate::install::InstallError) -> Self {
        use crate::install::InstallError;
        match e {
            InstallError::Disabled => Self(StatusCode::NOT_IMPLEMENTED, e.to_string()),
            InstallError::Refused(m) => Self(StatusCode::UNPROCESSABLE_ENTITY, m),
            InstallError::Conflict(m) => Self(StatusCode::CONFLICT, m),
            InstallError::NotFound(m) => Self(StatusCode::NOT_FOUND, m),
            InstallError::Grant(g) => g.into(),
            InstallError::Store(s) => s.into(),
            InstallError::Io(io) => {
                tracing::error!(error = %io, "package storage failed");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the gateway could not store the package; see its log".into(),
                )
            }
        }
    }
}

/// Names what an admin change touches in its audit record (`request` gains the target).
fn annotate(slot: &AuditSlot, target: &str) {
    if let Some(mut record) = slot.take() {
        let r = record.record();
        r.request = format!("{} {target}", r.request);
        slot.put_back(record);
    }
}

/// A JSON body that may hold a secret: parsed without echoing any part of it in an error,
/// and wiped after use.
fn secret_body<T: for<'de> Deserialize<'de>>(bytes: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|_| bad(format!("the body is JSON: {shape}")))
}

#[utoipa::path(get, path = "/admin/v1/vault", tag = "vault",
    responses((status = 200, description = "Sealed or not, key source, master key versions", body = Object)))]
async fn vault_status(State(g): Shared) -> ApiResult {
    Ok(Json(json!(g.vault().status()?)).into_response())
}

#[utoipa::path(post, path = "/admin/v1/vault/seal", tag = "vault",
    responses((status = 200, description = "Sealed: the keys are dropped from memory; calls needing a secret fail until unsealed", body = Object)))]
async fn vault_seal(State(g): Shared) -> ApiResult {
    g.vault().seal();
    tracing::warn!("the vault was sealed");
    Ok(Json(json!(g.vault().status()?)).into_response())
}

#[derive(Deserialize, ToSchema)]
struct UnsealBody {
    /// The passphrase of a passphrase vault (the first unseal of a new one sets it).
    passphrase: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/vault/unseal", tag = "vault", request_body = UnsealBody,
    responses((status = 200, description = "Unsealed", body = Object),
              (status = 403, description = "Wrong passphrase or key", body = Object)))]
async fn vault_unseal(State(g): Shared, body: axum::body::Bytes) -> ApiResult {
    let body: UnsealBody = if body.is_empty() {
        UnsealBody { passphrase: None }
    } else {
        secret_body(&body, r#"{"passphrase": "..."}"#)?
    };
    let passphrase = body.passphrase.map(zeroize::Zeroizing::new);
    let vault = g.vault().clone();
    tokio::task::spawn_blocking(move || vault.unseal(passphrase.as_ref().map(|p| p.as_bytes())))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "unseal failed".into()))??;
    Ok(Json(json!(g.vault().status()?)).into_response())
}

#[utoipa::path(post, path = "/admin/v1/vault/rotate-key", tag = "vault",
    responses((status = 200, description = "A new master key version wraps every data key; unused versions are dropped", body = Object),
              (status = 503, description = "The vault is sealed", body = Object)))]
async fn vault_rotate(State(g): Shared, Extension(slot): Extension<AuditSlot>) -> ApiResult {
    let vault = g.vault().clone();
    let fault = rotate_failpoint();
    let version = tokio::task::spawn_blocking(move || vault.rotate(fault))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "rotation failed".into()))??;
    let vault = g.vault().clone();
    let retired = change(&slot, move |tx| Ok(vault.retire(tx)?)).await?;
    g.vault().forget(&retired);
    Ok(
        Json(json!({"key_version": version, "retired": retired, "status": g.vault().status()?}))
            .into_response(),
    )
}

/// Debug builds only: `WARDEN_FAILPOINTS=vault-rotate:N` aborts a rotation after N batches.
fn rotate_failpoint() -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var(crate::env::FAILPOINTS).ok().and_then(|v| {
        v.split(',')
            .find_map(|f| f.strip_prefix("vault-rotate:").and_then(|n| n.parse().ok()))
    })
}

#[utoipa::path(get, path = "/admin/v1/vault/check", tag = "vault",
    responses((status = 200, description = "How many secrets decrypt (values never leave); the paths of those that do not", body = Object)))]
async fn vault_check(State(g): Shared) -> ApiResult {
    let vault = g.vault().clone();
    let check = tokio::task::spawn_blocking(move || vault.check())
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "check failed".into()))??;
    Ok(Json(json!(check)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SecretFilter {
    /// Only secrets of this scope and below.
    scope: Option<String>,
    /// Removed secrets too.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/admin/v1/secrets", tag = "vault", params(SecretFilter),
    responses((status = 200, description = "Names, scopes, versions, times and authors; never values", body = Object)))]
async fn list_secrets(State(g): Shared, Query(f): Query<SecretFilter>) -> ApiResult {
    let secrets: Vec<Value> = g
        .store()
        .secrets()?
        .into_iter()
        .filter(|(_, r)| f.all || r.current.is_some())
        .filter(|(path, _)| {
            f.scope
                .as_deref()
                .is_none_or(|s| path.starts_with(&format!("{}/", s.trim_end_matches('/'))))
        })
        .map(|(path, r)| {
            let (scope, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            let first = r.history.first();
            let last = r.history.last();
            json!({
                "path": path, "scope": scope, "name": name,
                "set": r.current.is_some(),
                "version": r.current.as_ref().map(|c| c.version),
                "key_version": r.current.as_ref().map(|c| c.key_version),
                "created_at": first.map(|v| v.at), "created_by": first.map(|v| v.by.clone()),
                "updated_at": last.map(|v| v.at), "updated_by": last.map(|v| v.by.clone()),
            })
        })
        .collect();
    Ok(Json(json!({ "secrets": secrets })).into_response())
}

#[derive(Deserialize, ToSchema)]
struct SetSecretBody {
    /// `tenant[/workspace[/environment]]/name`.
    path: String,
    /// The value (8 bytes to 64 KiB). Never returned by any API.
    value: String,
}

#[utoipa::path(post, path = "/admin/v1/secrets", tag = "vault", request_body = SetSecretBody,
    responses((status = 201, description = "Stored encrypted as the next version (the answer never holds the value)", body = Object),
              (status = 404, description = "The scope does not exist", body = Object),
              (status = 503, description = "The vault is sealed", body = Object)))]
async fn set_secret(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> ApiResult {
    let body: SetSecretBody = secret_body(
        &body,
        r#"{"path": "tenant/workspace/env/name", "value": "..."}"#,
    )?;
    let value = zeroize::Zeroizing::new(body.value);
    let path = SecretPath::parse(&body.path)?;
    annotate(&slot, &path.key());
    let vault = g.vault().clone();
    let by = format!("admin:{}", admin.name);
    let target = path.clone();
    let version = change(&slot, move |tx| {
        if tx.scope(&target.scope)?.is_none() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("scope `{}` does not exist: create it first", target.scope),
            ));
        }
        Ok(vault.put(tx, &target, value.as_bytes(), &by)?)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"path": path.key(), "version": version})),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// `tenant[/workspace[/environment]]/name`.
    path: String,
}

#[utoipa::path(get, path = "/admin/v1/secrets/history", tag = "vault", params(HistoryQuery),
    responses((status = 200, description = "Every version: set or removed, when, by whom (never values)", body = Object),
              (status = 404, description = "No such secret", body = Object)))]
async fn secret_history(State(g): Shared, Query(q): Query<HistoryQuery>) -> ApiResult {
    let path = SecretPath::parse(&q.path)?;
    let record = g
        .store()
        .secret(&path.key())?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no secret `{}`", path.key())))?;
    Ok(Json(json!({
        "path": path.key(),
        "current": record.current.as_ref().map(|c| c.version),
        "history": record.history,
    }))
    .into_response())
}

#[utoipa::path(delete, path = "/admin/v1/secrets/{path}", tag = "vault",
    params(("path" = String, Path, description = "tenant[/workspace[/environment]]/name")),
    responses((status = 200, description = "Removed (its history stays)", body = Object),
              (status = 404, description = "No such secret", body = Object)))]
async fn remove_secret(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Path(path): Path<String>,
) -> ApiResult {
    let path = SecretPath::parse(&path)?;
    annotate(&slot, &path.key());
    let vault = g.vault().clone();
    let by = format!("admin:{}", admin.name);
    let target = path.clone();
    let version = change(&slot, move |tx| Ok(vault.remove(tx, &target, &by)?)).await?;
    Ok(Json(json!({"removed": path.key(), "version": version})).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct GrantFilter {
    skill: Option<String>,
    scope: Option<String>,
    /// Removed grants too.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(get, path = "/admin/v1/grants", tag = "vault", params(GrantFilter),
    responses((status = 200, description = "Grants (with removed ones when `all`), oldest first, and the current revision", body = Object)))]
async fn list_grants(State(g): Shared, Query(f): Query<GrantFilter>) -> ApiResult {
    let mut grants: Vec<GrantRecord> = g.store().grants()?.into_iter().map(|(_, r)| r).collect();
    let revision = grants
        .iter()
        .flat_map(|r| [Some(r.revision), r.removed.as_ref().map(|x| x.revision)])
        .flatten()
        .max()
        .unwrap_or(0);
    grants.retain(|r| f.all || r.removed.is_none());
    let skill = match f.skill.as_deref() {
        Some(s) => Some(g.store().resolve_skill(s)?.unwrap_or_else(|_| s.to_owned())),
        None => None,
    };
    grants.retain(|r| skill.as_deref().is_none_or(|s| r.skill == s));
    grants.retain(|r| f.scope.as_deref().is_none_or(|s| r.scope == s));
    grants.sort_by_key(|r| r.revision);
    Ok(Json(json!({"revision": revision, "grants": grants})).into_response())
}

#[utoipa::path(post, path = "/admin/v1/grants", tag = "vault", request_body = GrantSpec,
    responses((status = 201, description = "Added; applies from the next call", body = Object),
              (status = 400, description = "Malformed", body = Object),
              (status = 404, description = "No such skill or scope", body = Object)))]
async fn add_grant(
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Json(spec): Json<GrantSpec>,
) -> ApiResult {
    annotate(&slot, &format!("{} {}", spec.skill, spec.scope));
    let by = format!("admin:{}", admin.name);
    let record = change(&slot, move |tx| Ok(grants::add(tx, &spec, &by)?)).await?;
    Ok((StatusCode::CREATED, Json(json!({ "grant": record }))).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/grants/{id}", tag = "vault",
    params(("id" = String, Path, description = "Grant id (grt_...)")),
    responses((status = 200, description = "Removed; no longer applies from the next call", body = Object),
              (status = 404, description = "No such grant in force", body = Object)))]
async fn remove_grant(
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> ApiResult {
    annotate(&slot, &id);
    let by = format!("admin:{}", admin.name);
    let target = id.clone();
    let record = change(&slot, move |tx| {
        grants::remove(tx, &target, &by)?.ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no grant `{target}` in force"),
            )
        })
    })
    .await?;
    Ok(Json(json!({ "removed": record })).into_response())
}

/// A signer of skill packages, as the trust routes take it: an ed25519 key, or a Sigstore
/// identity (certificate SAN and OIDC issuer).
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct TrustSpec {
    /// The namespace.
    namespace: String,
    /// `ed25519:<base64>`.
    #[serde(default)]
    key: Option<String>,
    /// Sigstore certificate subject alternative name.
    #[serde(default)]
    san: Option<String>,
    /// Sigstore OIDC issuer.
    #[serde(default)]
    issuer: Option<String>,
}

impl TrustSpec {
    fn signer(&self) -> Result<warden_registry::TrustedSigner, ApiError> {
        use warden_registry::TrustedSigner;
        match (&self.key, &self.san, &self.issuer) {
            (Some(k), None, None) => Ok(TrustedSigner::Key(k.parse().map_err(
                |e: warden_registry::SignError| ApiError(StatusCode::BAD_REQUEST, e.to_string()),
            )?)),
            (None, Some(san), Some(issuer)) => Ok(TrustedSigner::Sigstore {
                san: san.clone(),
                issuer: issuer.clone(),
            }),
            _ => Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give either `key` or both `san` and `issuer`".into(),
            )),
        }
    }
}

#[utoipa::path(get, path = "/admin/v1/trust", tag = "packages",
    responses((status = 200, description = "Which signers each namespace trusts for skill packages (deny by default)", body = Object)))]
async fn list_trust(State(g): Shared) -> ApiResult {
    let trust: Vec<Value> = g
        .store()
        .trust()?
        .into_iter()
        .map(|(ns, r)| json!({"namespace": ns, "signers": r.signers, "updated_at": r.updated_at, "updated_by": r.updated_by}))
        .collect();
    let root = g.store().sigstore_root()?.map(
        |r| json!({"sha256": r.sha256, "updated_at": r.updated_at, "updated_by": r.updated_by}),
    );
    Ok(Json(json!({ "trust": trust, "sigstore_root": root })).into_response())
}

#[utoipa::path(put, path = "/admin/v1/trust/sigstore-root", tag = "packages",
    request_body(content = Object, description = "A Sigstore `trusted_root.json` (at most 1 MiB)"),
    responses((status = 200, description = "Pinned; Sigstore-signed packages are verified against it", body = Object),
              (status = 400, description = "Not a usable trusted root (the reason is named)", body = Object)))]
async fn pin_sigstore_root(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> ApiResult {
    let json = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "the trusted root is not UTF-8".into(),
        )
    })?;
    annotate(&slot, "sigstore-root");
    let by = format!("admin:{}", admin.name);
    let record = change(&slot, move |tx| {
        Ok(crate::packages::pin_sigstore_root(tx, &json, &by)?)
    })
    .await?;
    // Installed packages the new root no longer verifies stop serving now.
    let withdrawn = crate::install::enforce_trust(&g)?;
    Ok(Json(json!({ "sha256": record.sha256, "withdrawn": withdrawn })).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/trust/sigstore-root", tag = "packages",
    responses((status = 200, description = "Unpinned: every Sigstore-signed package is refused", body = Object)))]
async fn unpin_sigstore_root(State(g): Shared, Extension(slot): Extension<AuditSlot>) -> ApiResult {
    annotate(&slot, "sigstore-root");
    change(&slot, move |tx| Ok(tx.put_sigstore_root(None)?)).await?;
    let withdrawn = crate::install::enforce_trust(&g)?;
    Ok(Json(json!({ "sha256": null, "withdrawn": withdrawn })).into_response())
}

#[utoipa::path(post, path = "/admin/v1/trust", tag = "packages", request_body = TrustSpec,
    responses((status = 200, description = "The namespace's trusted signers", body = Object),
              (status = 400, description = "Malformed", body = Object)))]
async fn add_trust(
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Json(spec): Json<TrustSpec>,
) -> ApiResult {
    let signer = spec.signer()?;
    annotate(&slot, &spec.namespace);
    let by = format!("admin:{}", admin.name);
    let record = change(&slot, move |tx| {
        Ok(crate::packages::trust_add(
            tx,
            &spec.namespace,
            signer,
            &by,
        )?)
    })
    .await?;
    Ok(Json(json!({ "signers": record.signers })).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/trust", tag = "packages", params(TrustSpec),
    responses((status = 200, description = "The namespace's remaining trusted signers", body = Object),
              (status = 404, description = "That signer is not trusted for the namespace", body = Object)))]
async fn remove_trust(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Query(spec): Query<TrustSpec>,
) -> ApiResult {
    let signer = spec.signer()?;
    annotate(&slot, &spec.namespace);
    let by = format!("admin:{}", admin.name);
    let record = change(&slot, move |tx| {
        Ok(crate::packages::trust_remove(
            tx,
            &spec.namespace,
            &signer,
            &by,
        )?)
    })
    .await?;
    // Packages that signer signed stop serving now, not at the next restart.
    let withdrawn = crate::install::enforce_trust(&g)?;
    Ok(Json(json!({ "signers": record.signers, "withdrawn": withdrawn })).into_response())
}

/// How an install was decided.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InstallQuery {
    /// Install (without it, the answer is the review and nothing changes).
    #[serde(default)]
    accept: bool,
    /// The SHA-256 of the package that was reviewed; refused if the body differs.
    digest: Option<String>,
    /// Grant the requested capabilities in this scope (`tenant/workspace[/environment]`).
    grant_scope: Option<String>,
    /// Install even though the tools differ from the installed version's.
    #[serde(default)]
    approve_changes: bool,
}

#[utoipa::path(post, path = "/admin/v1/packages", tag = "packages", params(InstallQuery),
    request_body(content = Vec<u8>, content_type = "application/zip", description = "A signed skill package"),
    responses((status = 200, description = "The review (without `accept`), or the installed skill and its live tools", body = Object),
              (status = 409, description = "It conflicts with what is installed, its tools changed without approval, or it is not the reviewed package", body = Object),
              (status = 422, description = "The package is refused: malformed, untrusted signer or namespace, or a component whose tools differ from its manifest", body = Object)))]
async fn install_package(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Query(q): Query<InstallQuery>,
    body: axum::body::Bytes,
) -> ApiResult {
    let staged = crate::install::stage(&g, body.to_vec()).await?;
    annotate(&slot, &staged.verified.package.manifest.id());
    let review = crate::install::review(&staged);
    if !q.accept {
        return Ok(Json(json!({"accepted": false, "review": review})).into_response());
    }
    let consent = crate::install::Consent {
        grant_scope: q.grant_scope.clone(),
        approve_changes: q.approve_changes,
        by: format!("admin:{}", admin.name),
    };
    crate::install::check_consent(&staged, q.digest.as_deref(), &consent)?;
    crate::install::keep_file(g.data_dir(), &staged)?;
    let staged = std::sync::Arc::new(staged);
    let (s2, dir, c2) = (staged.clone(), g.data_dir().to_owned(), consent.clone());
    let record = change(&slot, move |tx| {
        Ok(crate::install::record(tx, &dir, &s2, &c2)?)
    })
    .await?;
    let tools = crate::install::go_live(&g, &staged, &record)?;
    Ok(Json(json!({"accepted": true, "review": review, "tools": tools})).into_response())
}

/// The installed skill a package route acts on.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SkillQuery {
    /// `namespace/name`, or the name when one namespace has it.
    skill: String,
}

#[utoipa::path(delete, path = "/admin/v1/packages/remove", tag = "packages", params(SkillQuery),
    responses((status = 200, description = "Removed; its tools are gone from the next list", body = Object),
              (status = 404, description = "No such installed skill", body = Object)))]
async fn remove_package(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Query(q): Query<SkillQuery>,
) -> ApiResult {
    let name = q.skill;
    annotate(&slot, &name);
    let key = resolve_skill(&g, &name)?;
    let n = key.clone();
    let by = format!("admin:{}", admin.name);
    let record = change(&slot, move |tx| Ok(crate::install::forget(tx, &n, &by)?)).await?;
    g.catalog().remove(&key);
    let version = record.package.map(|p| p.version);
    Ok(Json(json!({"removed": name, "version": version})).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RollbackQuery {
    /// `namespace/name`, or the name when one namespace has it.
    skill: String,
    /// The earlier installed version to activate.
    version: String,
}

#[utoipa::path(post, path = "/admin/v1/packages/rollback", tag = "packages",
    params(RollbackQuery),
    responses((status = 200, description = "The earlier version is live again", body = Object),
              (status = 404, description = "No such skill or earlier version", body = Object)))]
async fn rollback_package(
    State(g): Shared,
    Extension(slot): Extension<AuditSlot>,
    Extension(admin): Extension<Admin>,
    Query(q): Query<RollbackQuery>,
) -> ApiResult {
    let name = q.skill.clone();
    annotate(&slot, &format!("{name}@{}", q.version));
    let key = resolve_skill(&g, &name)?;
    let bytes = crate::install::previous_file(&g, &key, &q.version)?;
    let staged = std::sync::Arc::new(crate::install::stage(&g, bytes).await?);
    // Going back to a version the operator installed before is the approval.
    let consent = crate::install::Consent {
        grant_scope: None,
        approve_changes: true,
        by: format!("admin:{}", admin.name),
    };
    let (s2, dir) = (staged.clone(), g.data_dir().to_owned());
    let record = change(&slot, move |tx| {
        Ok(crate::install::record(tx, &dir, &s2, &consent)?)
    })
    .await?;
    let tools = crate::install::go_live(&g, &staged, &record)?;
    Ok(
        Json(json!({"rolled_back": format!("{name}@{}", q.version), "tools": tools}))
            .into_response(),
    )
}

#[utoipa::path(get, path = "/admin/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi() -> Response {
    Json(crate::admin::openapi_document()).into_response()
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "warden admin API",
        description = "Tenants, workspaces, environments, agents, tokens, policies, secrets (never their values), grants, audit and usage of a warden gateway. Every route needs an admin token (`Authorization: Bearer wdn_adm_...`); the `approver` role may read and vote on approval tasks."
    ),
    paths(
        list_scopes, create_scope, list_agents, put_agent, delete_agent, list_skills,
        set_skill_workspaces, list_tokens,
        issue_token, rotate_token, revoke_token, policy_history, current_policy, apply_policy,
        test_policy, query_audit, verify_audit, usage, vault_status, vault_seal, vault_unseal,
        vault_rotate, vault_check, list_secrets, set_secret, secret_history, remove_secret,
        list_grants, add_grant, remove_grant, list_trust, add_trust, remove_trust,
        pin_sigstore_root, unpin_sigstore_root,
        install_package, remove_package, rollback_package,
        approvals::list_approvals, approvals::approval_events, approvals::show_approval, approvals::approve, approvals::deny,
        approvals::modify, approvals::list_approvers, approvals::put_approver,
        approvals::remove_approver, approvals::list_webhooks, approvals::put_webhook,
        approvals::remove_webhook, metrics,
        openapi
    ),
    modifiers(&AdminTokenAuth),
    security(("admin_token" = []))
)]
struct ApiDoc;

struct AdminTokenAuth;

impl utoipa::Modify for AdminTokenAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin token (wdn_adm_...)"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the admin API, generated from the handlers' annotations.
pub fn openapi_document() -> Value {
    use utoipa::OpenApi as _;
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    serde_json::to_value(doc).unwrap_or(Value::Null)
}
