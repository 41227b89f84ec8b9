//! The rmcp adapter: an rmcp `ServerHandler` that hands `tools/list` and `tools/call` to
//! the gateway core with the caller the `/mcp` layer admitted and the request's pending
//! audit record, and encodes what comes back.
//!
//! Invariants: a request without an admitted caller or without its pending record is
//! refused (fail closed); refusals are encoded by `wire` (a denied tool and an unknown
//! tool get the same `-32602`); tool failures are `isError: true` results.

use super::slot::AuditSlot;
use super::wire;
use crate::audit::PendingRecord;
use crate::gateway::{CallOptions, Caller, Entry, Gateway, Refusal, ToolReply};
use rmcp::model::SubscriptionFilter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::model::{CancelTaskParams, CreateTaskResult, GetTaskParams, GetTaskResult};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// One handler per MCP session or stateless request; all share the gateway and the
/// registry of MCP tasks.
#[derive(Clone)]
pub struct McpHandler {
    gateway: Arc<Gateway>,
    tasks: Arc<McpTasks>,
}

impl McpHandler {
    /// A handler over `gateway` with a task registry of its own.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self::with_tasks(gateway, Arc::default())
    }

    /// A handler over `gateway` sharing `tasks` with the other handlers.
    pub fn with_tasks(gateway: Arc<Gateway>, tasks: Arc<McpTasks>) -> Self {
        Self { gateway, tasks }
    }
}

/// MCP tasks (the `io.modelcontextprotocol/tasks` extension): a call that waits for a
/// human's approval, from a client that declared the extension, is answered at once with a
/// task the client polls (`tasks/get`), so no connection stays open for the decision.
///
/// Invariants: a task is visible only to the agent whose call made it (anyone else gets
/// "unknown task", as for an id that never existed); a task outlives the approval it waits
/// for (its TTL is the approval TTL plus ten minutes to read the result); tasks live in
/// memory: after a restart the client's poll fails, and the same call retried picks up the
/// approval task, which is stored durably.
#[derive(Default)]
pub struct McpTasks {
    manager: TaskManager,
    owners: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl McpTasks {
    /// Most owners remembered before forgotten tasks are swept.
    const SWEEP_AT: usize = 4096;

    fn owns(&self, task: &str, agent: &str) -> Result<(), ErrorData> {
        let owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if owners.get(task).is_some_and(|a| a == agent) {
            Ok(())
        } else {
            Err(ErrorData::invalid_params("unknown task", None))
        }
    }

    fn own(&self, task: &str, agent: String) {
        let mut owners = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if owners.len() >= Self::SWEEP_AT {
            owners.retain(|id, _| self.manager.get_task(id).is_ok());
        }
        owners.insert(task.to_owned(), agent);
    }
}

/// The MCP tool definition of a catalog entry.
pub fn mcp_tool(entry: &Entry) -> Tool {
    let info = entry.tool();
    let input = info.input_schema.as_object().cloned().unwrap_or_default();
    let mut tool = Tool::new(
        entry.exposed.clone(),
        info.description.clone(),
        Arc::new(input),
    );
    if let Some(out) = info.output_schema.as_ref().and_then(Value::as_object) {
        tool = tool.with_raw_output_schema(Arc::new(out.clone()));
    }
    let a = &info.annotations;
    if let Some(title) = &a.title {
        tool = tool.with_title(title.clone());
    }
    if a.read_only.is_some()
        || a.destructive.is_some()
        || a.idempotent.is_some()
        || a.open_world.is_some()
    {
        let mut ann = ToolAnnotations::new();
        if let Some(v) = a.read_only {
            ann = ann.read_only(v);
        }
        if let Some(v) = a.destructive {
            ann = ann.destructive(v);
        }
        if let Some(v) = a.idempotent {
            ann = ann.idempotent(v);
        }
        if let Some(v) = a.open_world {
            ann = ann.open_world(v);
        }
        tool = tool.with_annotations(ann);
    }
    tool
}

/// The caller admitted by the `/mcp` layer.
fn caller(cx: &RequestContext<RoleServer>) -> Option<Caller> {
    let parts = cx.extensions.get::<http::request::Parts>()?;
    parts.extensions.get::<Caller>().cloned()
}

/// The caller admitted by the `/mcp` layer and the request's pending record, taken over
/// from its slot; refused (fail closed) without either.
fn admitted(cx: &RequestContext<RoleServer>) -> Result<(Caller, PendingRecord), ErrorData> {
    let parts = cx
        .extensions
        .get::<http::request::Parts>()
        .ok_or_else(not_admitted)?;
    let caller = parts.extensions.get::<Caller>().ok_or_else(not_admitted)?;
    let record = parts
        .extensions
        .get::<AuditSlot>()
        .and_then(AuditSlot::take)
        .ok_or_else(not_admitted)?;
    Ok((caller.clone(), record))
}

/// The reason an agent states for a call, from its `_meta` (`warden/reason`): shown to the
/// approvers of a call that needs approval.
pub(super) fn stated_reason(meta: &serde_json::Map<String, Value>) -> Option<String> {
    meta.get(REASON_META_KEY)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

/// The `_meta` key of an agent's stated reason.
pub const REASON_META_KEY: &str = "warden/reason";

/// The admitted caller of a request that does not take its audit record (the `/mcp` layer
/// finishes it from the response).
fn caller_of(cx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
    cx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(not_admitted)
}

fn not_admitted() -> ErrorData {
    ErrorData::invalid_request("not authenticated", None)
}

/// The MCP result of a tool reply.
pub(super) fn result(reply: ToolReply) -> CallToolResult {
    let content = vec![ContentBlock::text(reply.text)];
    let mut result = if reply.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = reply.structured;
    result
}

fn encode(refusal: &Refusal, id: &str) -> ErrorData {
    wire::jsonrpc(refusal, id)
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("warden", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "warden gateway: tools are named <namespace>_<skill>__<tool> and run in a sandbox.",
        )
    }

    /// 2025-11-25 sessions: after `initialized`, forward catalog changes to this client as
    /// `notifications/tools/list_changed` until its transport closes.
    async fn on_initialized(&self, cx: NotificationContext<RoleServer>) {
        let mut changes = self.gateway.catalog().subscribe();
        let peer = cx.peer.clone();
        tokio::spawn(async move {
            let mut check = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tokio::select! {
                    change = changes.recv() => match change {
                        Ok(()) | Err(RecvError::Lagged(_)) => {
                            if peer.notify_tool_list_changed().await.is_err() {
                                break;
                            }
                        }
                        Err(RecvError::Closed) => break,
                    },
                    _ = check.tick() => {
                        if peer.is_transport_closed() {
                            break;
                        }
                    }
                }
            }
        });
    }

    /// 2026-07-28: clients subscribe with `subscriptions/listen`; tool-list changes are the
    /// notifications this server offers.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    async fn listen(&self, cx: SubscriptionContext) -> Result<(), ErrorData> {
        if caller(cx.request_context()).is_none() {
            return Err(not_admitted());
        }
        let mut changes = self.gateway.catalog().subscribe();
        loop {
            tokio::select! {
                () = cx.cancelled() => return Ok(()),
                change = changes.recv() => match change {
                    Ok(()) | Err(RecvError::Lagged(_)) => cx
                        .sink()
                        .notify_tool_list_changed()
                        .await
                        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?,
                    Err(RecvError::Closed) => return Ok(()),
                },
            }
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (caller, record) = admitted(&cx)?;
        let id = record.id().to_owned();
        let entries = self
            .gateway
            .list_tools(&caller, record)
            .await
            .map_err(|r| encode(&r, &id))?;
        Ok(ListToolsResult::with_all_items(
            entries.iter().map(mcp_tool).collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (caller, record) = admitted(&cx)?;
        let id = record.id().to_owned();
        let reason = request
            .meta
            .as_ref()
            .and_then(|m| stated_reason(m))
            .or_else(|| stated_reason(&cx.meta));
        // While the call waits for an approval, the client hears about it (and may keep its
        // request alive on progress).
        let progress = cx.meta.get_progress_token().map(|token| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::time::Duration>();
            let peer = cx.peer.clone();
            let total = self.gateway.approvals().wait().as_secs_f64();
            tokio::spawn(async move {
                while let Some(waited) = rx.recv().await {
                    let mut p = ProgressNotificationParam::new(token.clone(), waited.as_secs_f64());
                    p.total = Some(total);
                    p.message = Some("waiting for a human's approval".into());
                    if peer.notify_progress(p).await.is_err() {
                        break;
                    }
                }
            });
            tx
        });
        let arguments = request.arguments.unwrap_or_default();
        // A client that takes tasks gets one for a call that waits for a human.
        let takes_tasks = cx.client_capabilities().is_some_and(|c| c.supports_tasks());
        if takes_tasks
            && self
                .gateway
                .needs_approval(&caller, &request.name, &arguments)
        {
            let ttl = self.gateway.approvals().ttl();
            let options = CallOptions {
                reason,
                progress: None,
                wait: Some(std::time::Duration::from_secs(ttl)),
            };
            let (gateway, name, agent) = (
                self.gateway.clone(),
                request.name.clone(),
                caller.agent.clone(),
            );
            let task_options = TaskOptions::new()
                .with_ttl_ms((ttl + 600).saturating_mul(1000))
                .with_poll_interval_ms(1000)
                .with_status_message("waiting for a human's approval");
            let task = self.tasks.manager.spawn(task_options, move |ctx| {
                Box::pin(async move {
                    let call = gateway.call_tool_with(&caller, &name, arguments, options, record);
                    tokio::select! {
                        () = ctx.cancelled() => Err(TaskExit::Cancelled),
                        r = call => r.map(result).map_err(|r| TaskExit::Error(encode(&r, &id))),
                    }
                })
            });
            self.tasks.own(&task.task_id, agent);
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
        }
        let options = CallOptions {
            reason,
            progress,
            wait: None,
        };
        let reply = self
            .gateway
            .call_tool_with(&caller, &request.name, arguments, options, record)
            .await
            .map_err(|r| encode(&r, &id))?;
        Ok(result(reply).into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let caller = caller_of(&cx)?;
        self.tasks.owns(&request.task_id, &caller.agent)?;
        Ok(GetTaskResult::new(
            self.tasks.manager.get_task(&request.task_id)?,
        ))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = caller_of(&cx)?;
        self.tasks.owns(&request.task_id, &caller.agent)?;
        self.tasks.manager.cancel_task(&request.task_id)
    }
}
