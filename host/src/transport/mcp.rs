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
use crate::storage::Tables;
use rmcp::model::SubscriptionFilter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations,
};
use rmcp::model::{
    CancelTaskParams, CreateTaskResult, DetailedTask, GetTaskParams, GetTaskResult, Task,
    TaskPayload, TaskStatus,
};
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

    /// Runs a call that waits for a human as the MCP task `task`, which lives `ttl_secs`
    /// (the call waits as long as its approval can be given, within that).
    #[allow(clippy::too_many_arguments)]
    fn spawn_call(
        &self,
        caller: Caller,
        name: String,
        arguments: serde_json::Map<String, Value>,
        reason: Option<String>,
        record: PendingRecord,
        task: &str,
        ttl_secs: u64,
    ) -> Task {
        let correlation = record.id().to_owned();
        let options = CallOptions {
            reason,
            progress: None,
            wait: Some(std::time::Duration::from_secs(
                self.gateway.approvals().ttl().min(ttl_secs),
            )),
        };
        let (gateway, agent) = (self.gateway.clone(), caller.agent.clone());
        let call = async move {
            gateway
                .call_tool_with(&caller, &name, arguments, options, record)
                .await
                .map(result)
                .map_err(|r| encode(&r, &correlation))
        };
        self.tasks.run(&self.gateway, task, agent, ttl_secs, call)
    }

    /// The stored task `id` when `agent` made it and it has not expired; "unknown task"
    /// otherwise (as for an id that never existed).
    fn stored_task(
        &self,
        id: &str,
        agent: &str,
    ) -> Result<crate::storage::McpTaskRecord, ErrorData> {
        if !valid_task_id(id) {
            return Err(unknown_task());
        }
        let stored = self
            .gateway
            .store()
            .mcp_task(id)
            .map_err(|e| {
                tracing::error!(error = %e, "MCP tasks could not be read");
                ErrorData::internal_error("the gateway's store is unavailable", None)
            })?
            .filter(|r| r.agent == agent && crate::identity::now_secs() < r.expires_at);
        stored.ok_or_else(unknown_task)
    }
}

/// MCP tasks (the `io.modelcontextprotocol/tasks` extension): a call that waits for a
/// human's approval, from a client that declared the extension, is answered at once with a
/// task the client polls (`tasks/get`), so no connection stays open for the decision.
///
/// Invariants: a task is visible only to the agent whose call made it (anyone else gets
/// "unknown task", as for an id that never existed); a task outlives the approval it waits
/// for (its TTL is the approval TTL plus ten minutes to read the result); each task's call
/// is stored (`mcp_tasks`) before the client hears of it, so a task survives a restart:
/// the first poll after it runs the call again under the agent's current identity and
/// picks up the stored approval (a task that had already ended says so: results are held
/// in memory only). Task ids are warden's own (`tsk_` + 24 hex digits), mapped onto the
/// ids of rmcp's task manager, which runs them.
#[derive(Default)]
pub struct McpTasks {
    manager: TaskManager,
    /// Task id the client knows -> the owning agent and the id the manager runs it under.
    known: std::sync::Mutex<std::collections::HashMap<String, Known>>,
    /// Held while a task is resumed after a restart (one poll resumes it).
    resuming: std::sync::Mutex<()>,
}

struct Known {
    agent: String,
    live: String,
}

/// How long a finished task's result stays readable after its approval's TTL (seconds).
const READ_RESULT_SECS: u64 = 600;

impl McpTasks {
    /// Most tasks remembered before forgotten ones are swept.
    const SWEEP_AT: usize = 4096;

    fn known(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Known>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The manager's id of `task` when `agent` owns it and it is in memory.
    fn live(&self, task: &str, agent: &str) -> Option<String> {
        self.known()
            .get(task)
            .filter(|k| k.agent == agent)
            .map(|k| k.live.clone())
    }

    /// The manager's state of `task` (under the id the client knows).
    fn detailed(&self, task: &str, live: &str) -> Result<DetailedTask, ErrorData> {
        let mut t = self.manager.get_task(live).map_err(|_| unknown_task())?;
        t.task.task_id = task.to_owned();
        Ok(t)
    }

    /// Runs `call` as the task `task` of `agent`: the manager spawns it, and its end is
    /// stored (unless the gateway is shutting down, which releases the call to resume
    /// after the restart).
    fn run(
        &self,
        gateway: &Arc<Gateway>,
        task: &str,
        agent: String,
        ttl_secs: u64,
        call: impl std::future::Future<Output = Result<CallToolResult, ErrorData>> + Send + 'static,
    ) -> Task {
        let options = TaskOptions::new()
            .with_ttl_ms(ttl_secs.saturating_mul(1000))
            .with_poll_interval_ms(1000)
            .with_status_message("waiting for a human's approval");
        let (gateway, id) = (gateway.clone(), task.to_owned());
        let mut known = self.known();
        let mut spawned = self.manager.spawn(options, move |ctx| {
            Box::pin(async move {
                let outcome = tokio::select! {
                    () = ctx.cancelled() => Err(TaskExit::Cancelled),
                    r = call => r.map_err(TaskExit::Error),
                };
                if !gateway.approvals().closing() {
                    let ended = match &outcome {
                        Ok(_) => "completed",
                        Err(TaskExit::Cancelled) => "cancelled",
                        Err(TaskExit::Error(_)) => "failed",
                    };
                    end_task(gateway.store(), &id, ended);
                }
                outcome
            })
        });
        if known.len() >= Self::SWEEP_AT {
            known.retain(|_, k| self.manager.get_task(&k.live).is_ok());
        }
        known.insert(
            task.to_owned(),
            Known {
                agent,
                live: spawned.task_id.clone(),
            },
        );
        spawned.task_id = task.to_owned();
        spawned
    }
}

/// Records how a stored task ended (its record stays until it expires).
fn end_task(store: &crate::storage::Store, id: &str, ended: &str) {
    let done = store.mcp_task(id).and_then(|r| match r {
        Some(mut r) if r.ended.is_none() => {
            r.ended = Some(ended.to_owned());
            store.put_mcp_task(id, Some(&r))
        }
        _ => Ok(()),
    });
    if let Err(e) = done {
        tracing::warn!(error = %e, task = id, "could not store how an MCP task ended");
    }
}

/// A new task id: `tsk_` and 24 hex digits.
fn new_task_id() -> Result<String, ErrorData> {
    crate::approvals::random_id("tsk_")
        .map_err(|_| ErrorData::internal_error("no randomness for a task id", None))
}

/// Whether `id` has the shape of a task id (checked before any lookup).
fn valid_task_id(id: &str) -> bool {
    crate::approvals::id_shaped(id, "tsk_")
}

/// The same answer for a task that never existed, one another agent made, and one
/// forgotten.
fn unknown_task() -> ErrorData {
    ErrorData::invalid_params("unknown task", None)
}

/// RFC 3339 of unix seconds.
fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
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
            let now = crate::identity::now_secs();
            let task = new_task_id()?;
            let ttl = self.gateway.approvals().ttl() + READ_RESULT_SECS;
            let stored = crate::storage::McpTaskRecord {
                agent: caller.agent.clone(),
                tool: request.name.to_string(),
                arguments: arguments.clone(),
                reason: reason.clone(),
                created_at: now,
                expires_at: now + ttl,
                ended: None,
            };
            if let Err(e) = self.gateway.store().put_mcp_task(&task, Some(&stored)) {
                // The task still runs; only a restart would lose it.
                tracing::error!(error = %e, "could not store an MCP task");
            }
            let created = self.spawn_call(
                caller,
                request.name.to_string(),
                arguments,
                reason,
                record,
                &task,
                ttl,
            );
            return Ok(CallToolResponse::Task(CreateTaskResult::new(created)));
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
        let id = request.task_id;
        if let Some(live) = self.tasks.live(&id, &caller.agent) {
            return Ok(GetTaskResult::new(self.tasks.detailed(&id, &live)?));
        }
        // Not in memory: a task this agent made before a restart?
        let stored = self.stored_task(&id, &caller.agent)?;
        if let Some(ended) = &stored.ended {
            let mut error = serde_json::Map::new();
            error.insert("code".into(), (-32603).into());
            error.insert(
                "message".into(),
                format!(
                    "this task ended ({ended}) before the gateway restarted; its result was \
                     held in memory only. The audit trail has the call."
                )
                .into(),
            );
            let task = Task::new(
                id,
                TaskStatus::Failed,
                rfc3339(stored.created_at),
                rfc3339(stored.created_at),
            );
            return Ok(GetTaskResult::new(DetailedTask::new(
                task,
                TaskPayload::Failed { error },
            )));
        }
        // Run the call again as the agent is now: it picks up the stored approval. One
        // poll resumes it; polls racing it find it running.
        let _resuming = self
            .tasks
            .resuming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.tasks.live(&id, &caller.agent).is_none() {
            let mut record = self.gateway.audit().open("tools/call", caller.peer);
            {
                let r = record.record();
                r.principal = Some(caller.agent.clone());
                r.token_id = Some(caller.principal.token_id.clone());
                r.reasons = vec![format!("resumes MCP task {id} after a restart")];
            }
            let ttl = stored
                .expires_at
                .saturating_sub(crate::identity::now_secs())
                .max(1);
            self.spawn_call(
                caller.clone(),
                stored.tool,
                stored.arguments,
                stored.reason,
                record,
                &id,
                ttl,
            );
        }
        let live = self
            .tasks
            .live(&id, &caller.agent)
            .ok_or_else(unknown_task)?;
        Ok(GetTaskResult::new(self.tasks.detailed(&id, &live)?))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = caller_of(&cx)?;
        let id = request.task_id;
        if let Some(live) = self.tasks.live(&id, &caller.agent) {
            return self
                .tasks
                .manager
                .cancel_task(&live)
                .map_err(|_| unknown_task());
        }
        let stored = self.stored_task(&id, &caller.agent)?;
        if stored.ended.is_none() {
            end_task(self.gateway.store(), &id, "cancelled");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{McpTaskRecord, Store};

    #[test]
    fn task_ids_are_checked_before_any_lookup() {
        let id = new_task_id().unwrap();
        assert!(valid_task_id(&id), "{id}");
        assert_ne!(id, new_task_id().unwrap());
        for bad in [
            "",
            "tsk_",
            "apr_0123456789abcdef01234567",
            "tsk_0123456789ABCDEF01234567",
            "tsk_0123456789abcdef0123456",
            "tsk_0123456789abcdef012345678",
            "tsk_../../0123456789abcdef0",
        ] {
            assert!(!valid_task_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_stored_task_records_its_end_once_and_is_swept_when_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("warden.redb")).unwrap();
        let record = |expires_at| McpTaskRecord {
            agent: "t/w/e/a".into(),
            tool: "warden_text__hash".into(),
            arguments: serde_json::Map::new(),
            reason: None,
            created_at: 1,
            expires_at,
            ended: None,
        };
        store.put_mcp_task("tsk_live", Some(&record(100))).unwrap();
        store.put_mcp_task("tsk_old", Some(&record(50))).unwrap();
        end_task(&store, "tsk_live", "completed");
        end_task(&store, "tsk_live", "cancelled");
        end_task(&store, "tsk_never", "completed");
        let live = store.mcp_task("tsk_live").unwrap().unwrap();
        assert_eq!(live.ended.as_deref(), Some("completed"));
        assert!(store.mcp_task("tsk_never").unwrap().is_none());
        assert_eq!(store.forget_expired_mcp_tasks(50).unwrap(), 1);
        assert!(store.mcp_task("tsk_old").unwrap().is_none());
        assert!(store.mcp_task("tsk_live").unwrap().is_some());
    }
}
