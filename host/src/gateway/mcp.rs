//! The MCP face of the gateway: an rmcp `ServerHandler` over the catalog.
//!
//! Invariants: only authenticated requests reach this handler over HTTP (the transport's
//! auth layer inserts the `Principal`; a request without one is refused here too, fail
//! closed); tool failures, traps and argument errors are `isError: true` results the model
//! can read and correct; an unknown tool is a JSON-RPC invalid-params error.

use super::{Entry, Gateway};
use crate::auth::Principal;
use crate::runtime::{CallContext, CallError};
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

fn principal(cx: &RequestContext<RoleServer>) -> Option<Principal> {
    cx.extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .cloned()
}

fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
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
        let mut changes = self.gateway.catalog.subscribe();
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
        if principal(cx.request_context()).is_none() {
            return Err(ErrorData::invalid_request("not authenticated", None));
        }
        let mut changes = self.gateway.catalog.subscribe();
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
        if principal(&cx).is_none() {
            return Err(ErrorData::invalid_request("not authenticated", None));
        }
        let tools = self.gateway.catalog.list().iter().map(mcp_tool).collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(principal) = principal(&cx) else {
            return Err(ErrorData::invalid_request("not authenticated", None));
        };
        let _in_flight = self.gateway.begin_call();
        let Some(entry) = self.gateway.catalog.get(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {}", request.name),
                None,
            ));
        };
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let ctx = CallContext {
            isolation_key: principal.agent,
        };
        let result = match entry.skill.call(&entry.tool().name, &arguments, &ctx).await {
            Ok(outcome) => {
                let text = match &outcome.value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                if entry.tool().output_schema.is_some() {
                    result.structured_content = Some(outcome.value);
                }
                result
            }
            Err(e @ (CallError::InvalidArguments(_) | CallError::Tool { .. })) => {
                tool_error(e.to_string())
            }
            Err(e) => {
                tracing::warn!(tool = %request.name, error = %e, "tool call failed");
                tool_error(e.to_string())
            }
        };
        Ok(result.into())
    }
}
