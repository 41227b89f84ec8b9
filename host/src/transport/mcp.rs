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
use crate::gateway::{Caller, Entry, Gateway, Refusal, ToolReply};
use rmcp::model::SubscriptionFilter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// One handler per MCP session or stateless request; all share the gateway.
#[derive(Clone)]
pub struct McpHandler {
    gateway: Arc<Gateway>,
}

impl McpHandler {
    /// A handler over `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
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
        let reply = self
            .gateway
            .call_tool(
                &caller,
                &request.name,
                request.arguments.unwrap_or_default(),
                record,
            )
            .await
            .map_err(|r| encode(&r, &id))?;
        Ok(result(reply).into())
    }
}
