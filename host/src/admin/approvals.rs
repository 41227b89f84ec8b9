//! The approval routes of the admin API: approval tasks (list, show, live events, approve,
//! deny, modify), approvers (who decides where, in which groups) and the workspaces'
//! approval webhooks (where notices go; the signing secret is named, its value stays in
//! the vault).
//!
//! Invariants: an `approver` admin may cast votes (the only change that role may make) and
//! sees only the tasks of the workspaces its approver record covers (others are 404, as if
//! they did not exist); a modification's arguments are size- and depth-checked before they
//! are parsed, validated against the tool's input schema and checked by policy before the
//! vote is stored; every vote is committed in one transaction with its audit record (which
//! names the task and the vote); an agent token on these routes is refused with 403 and
//! recorded (see `require_admin`).
//!
//! Threat: approvals cast by someone who may not decide (another workspace, the agent's
//! owner, an agent), and arguments an approver could slip past the tool's schema or policy.

use super::{ApiError, ApiResult, Shared, bad, change};
use crate::approvals::{self, Ballot, VoteError, Voter};
use crate::auth::{Admin, ROLE_OPERATOR};
use crate::gateway::Gateway;
use crate::gateway::target;
use crate::identity;
use crate::policy::{Circumstances, Decision};
use crate::storage::{ApprovalRecord, ApproverRecord, Tables, WebhookRecord};
use crate::transport::slot::AuditSlot;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

/// Largest body of a vote (a modification carries the new arguments).
pub const MAX_VOTE_BODY: usize = 256 * 1024;
/// Deepest nesting a modification's body may have.
pub const MAX_VOTE_DEPTH: usize = 32;

impl From<VoteError> for ApiError {
    fn from(e: VoteError) -> Self {
        match e {
            VoteError::NotFound(_) => Self(StatusCode::NOT_FOUND, e.to_string()),
            VoteError::Forbidden(_) => Self(StatusCode::FORBIDDEN, e.to_string()),
            VoteError::Conflict(_) => Self(StatusCode::CONFLICT, e.to_string()),
            VoteError::Invalid(_) => Self(StatusCode::BAD_REQUEST, e.to_string()),
            VoteError::Store(s) => s.into(),
        }
    }
}

/// Whether the route is one where an `approver` admin may change something (a vote).
pub(crate) fn is_vote(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && path
            .strip_prefix("/admin/v1/approvals/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(id, action)| {
                approvals::valid_id(id) && matches!(action, "approve" | "deny" | "modify")
            })
}

/// The voter behind an admin token.
fn voter(g: &crate::gateway::Gateway, admin: &Admin) -> Result<Voter, ApiError> {
    Ok(Voter {
        name: admin.name.clone(),
        operator: admin.role == ROLE_OPERATOR,
        approver: g.store().approver(&admin.name)?,
    })
}

/// A task as the API shows it: everything it records, what is still missing, and the
/// arguments that would run.
pub fn task_json(task: &ApprovalRecord) -> Value {
    let quorums = approvals::quorums(task);
    let mut v = serde_json::to_value(task).unwrap_or(Value::Null);
    v["missing"] = json!(if task.state == approvals::state::PENDING {
        approvals::missing(&quorums, &task.votes)
    } else {
        Vec::new()
    });
    v["effective_arguments"] = task
        .modified_arguments
        .clone()
        .unwrap_or_else(|| task.arguments.clone());
    v
}

/// Names the task and the vote in the request's record before anything can refuse it, so
/// a refused attempt (a task of another workspace, a malformed body) is recorded as one.
fn attempt(slot: &AuditSlot, id: &str, vote: &str) {
    if approvals::valid_id(id) {
        slot.annotate(|r| {
            r.approval = Some(id.to_owned());
            r.vote = Some(vote.to_owned());
        });
    }
}

fn find(g: &crate::gateway::Gateway, voter: &Voter, id: &str) -> Result<ApprovalRecord, ApiError> {
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no approval task `{id}`"));
    if !approvals::valid_id(id) {
        return Err(not_found());
    }
    g.store()
        .approval(id)?
        .filter(|t| voter.covers(&t.tenant, &t.workspace))
        .ok_or_else(not_found)
}

/// Filters of the task list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// `pending`, `approved`, `denied`, `expired`, `executed`, `invalidated` or `all`
    /// (default `all`).
    state: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/admin/v1/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, description = "Approval tasks the caller may decide, newest first", body = Object)))]
pub(crate) async fn list_approvals(
    State(g): Shared,
    Extension(admin): Extension<Admin>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let voter = voter(&g, &admin)?;
    let state = q.state.unwrap_or_else(|| "all".into());
    let known = [
        "all",
        approvals::state::PENDING,
        approvals::state::APPROVED,
        approvals::state::DENIED,
        approvals::state::EXPIRED,
        approvals::state::EXECUTED,
        approvals::state::INVALIDATED,
    ];
    if !known.contains(&state.as_str()) {
        return Err(bad(format!("state must be one of {}", known.join(", "))));
    }
    let mut tasks: Vec<ApprovalRecord> = g
        .store()
        .approvals()?
        .into_iter()
        .filter(|t| voter.covers(&t.tenant, &t.workspace))
        .filter(|t| state == "all" || t.state == state)
        .collect();
    tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    tasks.truncate(q.limit.unwrap_or(100).clamp(1, 1000));
    let tasks: Vec<Value> = tasks.iter().map(task_json).collect();
    Ok(Json(json!({ "approvals": tasks })).into_response())
}

#[utoipa::path(get, path = "/admin/v1/approvals/events", tag = "approvals",
    responses((status = 200, description = "Server-sent events: `task` (a task the caller may see changed; the task as JSON) and `resync` (events were missed: list again)", body = String, content_type = "text/event-stream")))]
pub(crate) async fn approval_events(
    State(g): Shared,
    Extension(admin): Extension<Admin>,
) -> axum::response::Response {
    live_tasks(g, &admin, Box::new(|| true), None)
}

#[utoipa::path(get, path = "/admin/v1/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "Task id (apr_...)")),
    responses((status = 200, description = "The task", body = Object),
              (status = 404, description = "No such task (or not in the caller's workspaces)", body = Object)))]
pub(crate) async fn show_approval(
    State(g): Shared,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> ApiResult {
    let voter = voter(&g, &admin)?;
    Ok(Json(task_json(&find(&g, &voter, &id)?)).into_response())
}

/// An approval or a denial.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VoteBody {
    /// A remark (required for a denial: the agent is told it).
    note: Option<String>,
}

/// A modification.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModifyBody {
    /// The arguments to run with instead (checked against the tool's schema and policy).
    #[schema(value_type = Object)]
    arguments: Value,
    /// A remark (the agent is told it).
    note: Option<String>,
}

/// Casts `ballot` on `id` with its audit record, then tells waiters.
async fn cast(
    g: &crate::gateway::Gateway,
    slot: &AuditSlot,
    voter: Voter,
    id: String,
    ballot: Ballot,
) -> ApiResult {
    let label = ballot.label();
    slot.annotate(|r| {
        r.approval = Some(id.clone());
        r.vote = Some(label.to_owned());
    });
    let task = change(slot, move |tx| {
        Ok(approvals::vote(tx, &id, &voter, ballot)?)
    })
    .await?;
    g.approvals().announce(&task);
    Ok(Json(task_json(&task)).into_response())
}

/// Parses a vote's body: size and depth are checked before any parser recurses.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_VOTE_BODY {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a vote's body is at most {MAX_VOTE_BODY} bytes"),
        ));
    }
    if crate::transport::jsonrpc::nesting_exceeds(body, MAX_VOTE_DEPTH) {
        return Err(bad(format!(
            "the body nests deeper than {MAX_VOTE_DEPTH} levels"
        )));
    }
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| bad(format!("the body is not a valid vote: {e}")))
}

#[utoipa::path(post, path = "/admin/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = String, Path, description = "Task id (apr_...)")), request_body = VoteBody,
    responses((status = 200, description = "The vote counted; the task (approved once its quorum is met)", body = Object),
              (status = 403, description = "The caller may not decide this task (agent's owner, wrong group, agent token)", body = Object),
              (status = 404, description = "No such task in the caller's workspaces", body = Object),
              (status = 409, description = "Not pending any more, or the caller already voted", body = Object)))]
pub(crate) async fn approve(
    State(g): Shared,
    Extension(admin): Extension<Admin>,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    attempt(&slot, &id, "approve");
    let voter = voter(&g, &admin)?;
    let body: VoteBody = parse_body(&body)?;
    find(&g, &voter, &id)?;
    cast(&g, &slot, voter, id, Ballot::Approve { note: body.note }).await
}

#[utoipa::path(post, path = "/admin/v1/approvals/{id}/deny", tag = "approvals",
    params(("id" = String, Path, description = "Task id (apr_...)")), request_body = VoteBody,
    responses((status = 200, description = "Denied; the agent is told the note", body = Object),
              (status = 400, description = "No note", body = Object),
              (status = 403, description = "The caller may not decide this task", body = Object),
              (status = 404, description = "No such task in the caller's workspaces", body = Object),
              (status = 409, description = "Not pending any more, or the caller already voted", body = Object)))]
pub(crate) async fn deny(
    State(g): Shared,
    Extension(admin): Extension<Admin>,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    attempt(&slot, &id, "deny");
    let voter = voter(&g, &admin)?;
    let body: VoteBody = parse_body(&body)?;
    find(&g, &voter, &id)?;
    let note = body.note.unwrap_or_default();
    cast(&g, &slot, voter, id, Ballot::Deny { note }).await
}

#[utoipa::path(post, path = "/admin/v1/approvals/{id}/modify", tag = "approvals",
    params(("id" = String, Path, description = "Task id (apr_...)")), request_body = ModifyBody,
    responses((status = 200, description = "The arguments replaced and approved by the caller (earlier votes no longer count)", body = Object),
              (status = 400, description = "The arguments do not fit the tool's schema, or the body is malformed or too deep", body = Object),
              (status = 403, description = "The caller may not decide this task, or policy does not allow the modified call", body = Object),
              (status = 404, description = "No such task in the caller's workspaces", body = Object),
              (status = 409, description = "Not pending, already voted, or the tool is gone", body = Object),
              (status = 413, description = "The body is too large", body = Object)))]
pub(crate) async fn modify(
    State(g): Shared,
    Extension(admin): Extension<Admin>,
    Extension(slot): Extension<AuditSlot>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    attempt(&slot, &id, "modify");
    let voter = voter(&g, &admin)?;
    let body: ModifyBody = parse_body(&body)?;
    let task = find(&g, &voter, &id)?;
    let entry = g.catalog().get(&task.tool).ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            format!("tool `{}` is no longer installed", task.tool),
        )
    })?;
    entry
        .tool()
        .check_arguments(&body.arguments)
        .map_err(|e| bad(format!("the arguments do not fit `{}`: {e}", task.tool)))?;
    // The modified call must pass policy as the agent's call would.
    let record = g.store().agent(&task.agent)?.ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            format!("agent `{}` no longer exists", task.agent),
        )
    })?;
    let subject = identity::subject(&task.agent, &record).ok_or_else(|| bad("bad agent path"))?;
    let c = Circumstances {
        now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        client_ip: None,
        rate: 1,
        arguments: body.arguments.as_object().cloned().unwrap_or_default(),
    };
    if let Decision::Deny { .. } = g.policy().engine.decide(&subject, &target(&entry), &c) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "policy does not allow the call with these arguments".into(),
        ));
    }
    let ballot = Ballot::Modify {
        arguments: body.arguments,
        note: body.note,
    };
    cast(&g, &slot, voter, id, ballot).await
}

#[utoipa::path(get, path = "/admin/v1/approvers", tag = "approvals",
    responses((status = 200, description = "Approvers: where each decides and their groups", body = Object)))]
pub(crate) async fn list_approvers(State(g): Shared) -> ApiResult {
    let approvers: Vec<Value> = g
        .store()
        .approvers()?
        .into_iter()
        .map(|(name, r)| {
            json!({"name": name, "scopes": r.scopes, "groups": r.groups, "created_at": r.created_at})
        })
        .collect();
    Ok(Json(json!({ "approvers": approvers })).into_response())
}

/// Where an approver decides and their groups.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproverBody {
    /// `*`, `tenant` or `tenant/workspace` (each must exist).
    scopes: Vec<String>,
    /// Groups (what `@approval("N-of:group:NAME")` counts).
    #[serde(default)]
    groups: Vec<String>,
}

#[utoipa::path(put, path = "/admin/v1/approvers/{name}", tag = "approvals",
    params(("name" = String, Path, description = "Admin name")), request_body = ApproverBody,
    responses((status = 200, description = "Saved", body = Object),
              (status = 400, description = "A bad name, scope or group", body = Object),
              (status = 404, description = "A scope does not exist", body = Object)))]
pub(crate) async fn put_approver(
    Extension(slot): Extension<AuditSlot>,
    Path(name): Path<String>,
    Json(body): Json<ApproverBody>,
) -> ApiResult {
    if !identity::valid_segment(&name) {
        return Err(bad(format!(
            "approver `{name}` is invalid: name an admin (1-32 lower-case letters, digits or '-')"
        )));
    }
    if body.scopes.is_empty() {
        return Err(bad(
            "give at least one scope (`*`, a tenant or tenant/workspace)",
        ));
    }
    for g in &body.groups {
        if !identity::valid_segment(g) {
            return Err(bad(format!(
                "group `{g}` is invalid: use 1-32 lower-case letters, digits or '-'"
            )));
        }
    }
    let (scopes, groups) = (body.scopes.clone(), body.groups.clone());
    let who = name.clone();
    change(&slot, move |tx| {
        for s in &scopes {
            if s == "*" {
                continue;
            }
            let depth = s.split('/').count();
            if depth > 2 {
                return Err(bad(format!(
                    "scope `{s}` is too deep: approvers decide per tenant or workspace"
                )));
            }
            identity::parse_path(s, depth)?;
            if tx.scope(s)?.is_none() {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("scope `{s}` does not exist"),
                ));
            }
        }
        let created_at = tx
            .approver(&who)?
            .map_or_else(identity::now_secs, |a| a.created_at);
        let record = ApproverRecord {
            scopes,
            groups,
            created_at,
        };
        tx.put_approver(&who, Some(&record))?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"name": name, "scopes": body.scopes, "groups": body.groups})).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/approvers/{name}", tag = "approvals",
    params(("name" = String, Path, description = "Admin name")),
    responses((status = 200, description = "Removed", body = Object),
              (status = 404, description = "No such approver", body = Object)))]
pub(crate) async fn remove_approver(
    Extension(slot): Extension<AuditSlot>,
    Path(name): Path<String>,
) -> ApiResult {
    let who = name.clone();
    change(&slot, move |tx| {
        if tx.put_approver(&who, None)? {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no approver `{who}`"),
            ))
        }
    })
    .await?;
    Ok(Json(json!({ "removed": name })).into_response())
}

#[utoipa::path(get, path = "/admin/v1/webhooks", tag = "approvals",
    responses((status = 200, description = "Approval webhooks by workspace (the secret's name, never its value)", body = Object)))]
pub(crate) async fn list_webhooks(State(g): Shared) -> ApiResult {
    let hooks: Vec<Value> = g
        .store()
        .webhooks()?
        .into_iter()
        .map(|(scope, h)| {
            json!({"workspace": scope, "url": h.url, "secret": h.secret, "created_at": h.created_at})
        })
        .collect();
    Ok(Json(json!({ "webhooks": hooks })).into_response())
}

/// A workspace's webhook.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    /// Where notices are posted (`http://` or `https://`, no credentials).
    url: String,
    /// The name of the vault secret (in the workspace or its tenant) that signs them.
    secret: String,
}

#[utoipa::path(put, path = "/admin/v1/webhooks/{tenant}/{workspace}", tag = "approvals",
    params(("tenant" = String, Path, description = "Tenant"), ("workspace" = String, Path, description = "Workspace")),
    request_body = WebhookBody,
    responses((status = 200, description = "Saved: opened approval tasks of the workspace are notified", body = Object),
              (status = 400, description = "A bad URL or secret name", body = Object),
              (status = 404, description = "No such workspace", body = Object)))]
pub(crate) async fn put_webhook(
    Extension(slot): Extension<AuditSlot>,
    Path((tenant, workspace)): Path<(String, String)>,
    Json(body): Json<WebhookBody>,
) -> ApiResult {
    let scope = format!("{tenant}/{workspace}");
    identity::parse_path(&scope, 2)?;
    crate::webhooks::valid_url(&body.url).map_err(|e| bad(format!("webhook URL: {e}")))?;
    // The secret is named, never sent: its value stays in the vault.
    crate::vault::SecretPath::parse(&format!("{scope}/{}", body.secret))
        .map_err(|e| bad(e.to_string()))?;
    let (key, url, secret) = (scope.clone(), body.url.clone(), body.secret.clone());
    change(&slot, move |tx| {
        if tx.scope(&key)?.is_none() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("workspace `{key}` does not exist"),
            ));
        }
        let created_at = tx
            .webhook(&key)?
            .map_or_else(identity::now_secs, |h| h.created_at);
        tx.put_webhook(
            &key,
            Some(&WebhookRecord {
                url,
                secret,
                created_at,
            }),
        )?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({"workspace": scope, "url": body.url, "secret": body.secret})).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/webhooks/{tenant}/{workspace}", tag = "approvals",
    params(("tenant" = String, Path, description = "Tenant"), ("workspace" = String, Path, description = "Workspace")),
    responses((status = 200, description = "Removed", body = Object),
              (status = 404, description = "No webhook there", body = Object)))]
pub(crate) async fn remove_webhook(
    Extension(slot): Extension<AuditSlot>,
    Path((tenant, workspace)): Path<(String, String)>,
) -> ApiResult {
    let scope = format!("{tenant}/{workspace}");
    let key = scope.clone();
    change(&slot, move |tx| {
        if tx.put_webhook(&key, None)? {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no webhook for `{key}`"),
            ))
        }
    })
    .await?;
    Ok(Json(json!({ "removed": scope })).into_response())
}

/// Server-sent events of every change to a task `admin` may see: a `task` event carrying
/// the task (as the API shows it), or `resync` when events were missed. Ends when `open`
/// turns false, when `admin`'s token stops standing (checked at least every 10 s), or
/// when `cancel` fires (shutdown).
pub(crate) fn live_tasks(
    gateway: Arc<Gateway>,
    admin: &Admin,
    open: Box<dyn Fn() -> bool + Send + Sync>,
    cancel: Option<CancellationToken>,
) -> Response {
    let voter = crate::approvals::Voter {
        name: admin.name.clone(),
        operator: admin.role == ROLE_OPERATOR,
        approver: gateway.store().approver(&admin.name).ok().flatten(),
    };
    let rx = gateway.approvals().subscribe();
    let cancel = cancel.unwrap_or_default();
    let state = (rx, gateway, voter, open, admin.token_id.clone(), cancel);
    let stream = futures_util::stream::unfold(
        state,
        |(mut rx, gateway, voter, open, token, cancel)| async move {
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return None,
                    r = tokio::time::timeout(Duration::from_secs(10), rx.recv()) => r,
                };
                if !open() || !token_stands(&gateway, &token) {
                    return None;
                }
                let event = match next {
                    Err(_) => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
                    // Missed events: the page reloads its list.
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                        Event::default().event("resync").data("{}")
                    }
                    Ok(Ok(e)) => {
                        let (tenant, workspace) = e.workspace.split_once('/').unwrap_or(("", ""));
                        if !voter.covers(tenant, workspace) {
                            continue;
                        }
                        let Ok(Some(task)) = gateway.store().approval(&e.id) else {
                            continue;
                        };
                        Event::default()
                            .event("task")
                            .data(task_json(&task).to_string())
                    }
                };
                return Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (rx, gateway, voter, open, token, cancel),
                ));
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Whether the admin token `token_id` is still valid (not revoked, not expired).
pub(crate) fn token_stands(gateway: &Gateway, token_id: &str) -> bool {
    let now = crate::identity::now_secs();
    matches!(
        gateway.store().token_by_id(token_id),
        Ok(Some((_, t))) if t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now)
    )
}
