//! The MCP face of the gateway: an rmcp `ServerHandler` over the catalog.
//!
//! Invariants:
//! - Only authenticated requests reach this handler over HTTP (the transport's auth layer
//!   inserts the `Principal`; a request without one is refused here too, fail closed).
//! - Policy runs before anything executes, on the entry that is then dispatched. `tools/list`
//!   shows only what the principal may call (or call with approval); a denied tool and an
//!   unknown tool get the same error, so an agent cannot probe for tools it may not use.
//!   The deny's reasons go to the audit trail, never to the agent.
//! - Every `tools/call` and `tools/list` is audited, and a call's result is returned only
//!   after its record is durable; when the audit trail cannot take records, calls are refused
//!   before they run (fail closed).
//! - Tool failures, traps and argument errors are `isError: true` results the model can read
//!   and correct.

use super::{Entry, Gateway, target};
use crate::audit::{self, AuditRecord, elapsed_us};
use crate::auth::Principal;
use crate::policy::{Circumstances, Decision};
use crate::ratelimit::Admitted;
use crate::runtime::{CallContext, CallError, TrapKind};
use rmcp::model::SubscriptionFilter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Map;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
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

    /// Stamps the latency and waits until `record` is durable; if it cannot be, the request
    /// is refused (and a result it would have carried is withheld).
    async fn commit(&self, mut record: AuditRecord, started: Instant) -> Result<(), ErrorData> {
        record.latency_us = elapsed_us(started);
        let request = record.request.clone();
        self.gateway.audit.record(record).await.map_err(|e| {
            tracing::error!(%request, error = %e, "audit record failed; request refused");
            audit_refusal()
        })?;
        Ok(())
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

/// What the transport learned about the caller besides its identity.
fn circumstances(cx: &RequestContext<RoleServer>, arguments: Map<String, Value>) -> Circumstances {
    let parts = cx.extensions.get::<http::request::Parts>();
    let client_ip = parts
        .and_then(|p| p.extensions.get::<axum::extract::ConnectInfo<SocketAddr>>())
        .map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
    let rate = parts
        .and_then(|p| p.extensions.get::<Admitted>())
        .map_or(1, |a| a.rate);
    Circumstances {
        now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        client_ip,
        rate,
        arguments,
    }
}

fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

fn unknown_tool(name: &str) -> ErrorData {
    ErrorData::invalid_params(format!("unknown tool: {name}"), None)
}

fn audit_refusal() -> ErrorData {
    ErrorData::internal_error(audit::UNAVAILABLE, None)
}

/// The audit record of a request by `principal`.
fn base_record(request: &str, principal: &Principal, c: &Circumstances) -> AuditRecord {
    AuditRecord {
        principal: Some(principal.subject.path()),
        token_id: Some(principal.token_id.clone()),
        ..AuditRecord::begin(request, Some(c.client_ip.to_string()))
    }
}

fn error_class(e: &CallError) -> &'static str {
    match e {
        CallError::UnknownTool(_) => "unknown_tool",
        CallError::InvalidArguments(_) => "invalid_arguments",
        CallError::Tool { .. } => "tool",
        CallError::Trap(TrapKind::Deadline) => "deadline",
        CallError::Trap(TrapKind::OutOfFuel) => "fuel",
        CallError::Trap(TrapKind::MemoryLimit) => "memory",
        CallError::Trap(TrapKind::StackOverflow) => "stack",
        CallError::Trap(TrapKind::Panic(_)) => "panic",
        CallError::Trap(TrapKind::Other(_)) => "trap",
        CallError::Busy => "busy",
        CallError::Unavailable(_) => "unavailable",
        CallError::BadResult(_) => "bad_result",
    }
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
        let Some(principal) = principal(&cx) else {
            return Err(ErrorData::invalid_request("not authenticated", None));
        };
        if !self.gateway.audit.healthy() {
            return Err(audit_refusal());
        }
        let started = std::time::Instant::now();
        let c = circumstances(&cx, Map::new());
        let policy = self.gateway.policy();
        let tools: Vec<Tool> = self
            .gateway
            .catalog
            .list()
            .iter()
            .filter(|e| {
                self.gateway
                    .installed_for(e.skill.name(), &principal.subject)
            })
            .filter(|e| policy.engine.may_call(&principal.subject, &target(e), &c))
            .map(mcp_tool)
            .collect();
        let mut record = base_record("tools/list", &principal, &c);
        record.outcome = "ok".into();
        record.policies = vec![format!("policy-set-v{}", policy.version)];
        self.commit(record, started).await?;
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
        let started = std::time::Instant::now();
        let _in_flight = self.gateway.begin_call();
        if !self.gateway.audit.healthy() {
            return Err(audit_refusal());
        }
        let arguments = request.arguments.unwrap_or_default();
        let c = circumstances(&cx, arguments);
        let mut record = base_record("tools/call", &principal, &c);
        record.tool = Some(request.name.to_string());
        let arguments = Value::Object(c.arguments.clone());
        record.args_digest = Some(audit::digest(&arguments));

        // A skill not installed in the caller's workspace does not exist for it.
        let entry = self.gateway.catalog.get(&request.name).filter(|e| {
            self.gateway
                .installed_for(e.skill.name(), &principal.subject)
        });
        let policy = self.gateway.policy();
        let decision = entry
            .as_ref()
            .map(|e| policy.engine.decide(&principal.subject, &target(e), &c));
        if let Some(d) = &decision {
            record.decision = Some(d.label().to_owned());
            record.policies = d.policies().to_vec();
        }
        // The response for everything but an allowed call, recorded before it is sent.
        let refusal: Option<Result<CallToolResponse, ErrorData>> = match (&entry, &decision) {
            (None, _) | (_, None) => {
                record.outcome = "unknown_tool".into();
                Some(Err(unknown_tool(&request.name)))
            }
            (Some(_), Some(Decision::Deny { reasons, .. })) => {
                record.outcome = "denied".into();
                record.reasons = reasons.clone();
                // Indistinguishable from an unknown tool.
                Some(Err(unknown_tool(&request.name)))
            }
            (Some(_), Some(Decision::RequireApproval { .. })) => {
                record.outcome = "approval_required".into();
                Some(Ok(tool_error(format!(
                    "approval required: calling `{}` needs a human's approval, which this gateway \
                     cannot collect yet; the request was recorded and refused",
                    request.name
                ))
                .into()))
            }
            (Some(_), Some(Decision::Allow { .. })) => None,
        };
        if let Some(response) = refusal {
            self.commit(record, started).await?;
            return response;
        }
        let Some(entry) = entry else {
            return Err(unknown_tool(&request.name));
        };
        if policy
            .engine
            .records_arguments(decision.as_ref().map_or(&[], |d| d.policies()))
        {
            record.arguments = Some(audit::redact(&arguments, &entry.tool().input_schema));
        }
        let ctx = CallContext {
            isolation_key: principal.subject.path(),
        };
        let result = match entry.skill.call(&entry.tool().name, &arguments, &ctx).await {
            Ok(outcome) => {
                record.outcome = "ok".into();
                record.fuel = outcome.fuel_consumed;
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
            Err(e) => {
                record.outcome = match &e {
                    CallError::Trap(_) => "trap",
                    CallError::InvalidArguments(_) | CallError::Tool { .. } => "tool_error",
                    _ => "error",
                }
                .into();
                record.error_class = Some(error_class(&e).to_owned());
                if !matches!(e, CallError::InvalidArguments(_) | CallError::Tool { .. }) {
                    tracing::warn!(tool = %request.name, error = %e, "tool call failed");
                }
                tool_error(e.to_string())
            }
        };
        // Acknowledge only once the record is durable; otherwise withhold the result.
        self.commit(record, started).await?;
        Ok(result.into())
    }
}
