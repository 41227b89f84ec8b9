//! The gateway core: the one entry point every transport calls, knowing no wire format.
//!
//! A transport hands the core what it learned of a request (the credentials, the peer
//! address if it has one, and the request's pending audit record) and gets back an
//! admitted [`Caller`] or a [`Refusal`]; then, for an admitted caller, the outcome of the
//! request ([`Gateway::list_tools`], [`Gateway::call_tool`]). Streamable HTTP
//! (`transport::http` with `transport::mcp` for rmcp) is one adapter around it; a second
//! transport reuses it unchanged.
//!
//! Invariants:
//! - Admission is: credentials -> principal (refused: 401), then the agent's rate limit
//!   (429). Unauthenticated refusals count against a per-address limit of their own;
//!   beyond it the refusals are summarised in one record per address and window, so a
//!   flood cannot fill the trail or the writer's queue.
//! - The peer is an `Option`: unknown stays unknown, and policy sees no `clientIp` then.
//! - Every request's pending record is finished here with a typed outcome, before the
//!   answer is returned; when it cannot be written the answer is withheld (fail closed).
//! - Policy runs on the entry that is then dispatched; a denied tool and an unknown tool get
//!   the same refusal; tool failures are results the model can read, with fixed messages
//!   for traps and internal failures (their details go to the trail and the log).
//!
//! Threat: a request that skips a check or leaves no trace, internal details (traps,
//! wasmtime chains) reaching an agent, and unauthenticated floods.

use super::{Entry, Gateway, target};
use crate::approvals::{self, ApprovalError, Ticket};
use crate::audit::{Outcome, PendingRecord, digest, redact};
use crate::auth::{self, AuthError, Principal};
use crate::policy::{Circumstances, Decision};
use crate::runtime::{CallContext, CallError, TrapKind};
use crate::vault::grants::CallGrants;
use serde_json::{Map, Value};
use std::net::IpAddr;
use std::sync::Arc;

/// What a transport learned of the caller's credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header (or the transport's equivalent).
    pub authorization: Option<&'a str>,
    /// The request's query string (tokens there are refused).
    pub query: Option<&'a str>,
}

/// An admitted caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The agent's path (`tenant/workspace/environment/agent`), computed once.
    pub agent: String,
    /// From where, when the transport knows.
    pub peer: Option<IpAddr>,
    /// The agent's calls in the current minute, this one included.
    pub rate: i64,
}

/// Why the core refused a request. Each has a fixed public message (see
/// `transport::wire`); the details are in the audit record and the operator's log.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No valid credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(AuthError),
    /// Over the agent's rate limit.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a request will be admitted.
        retry_after_secs: u64,
    },
    /// Unauthenticated, from an address over its limit of refusals: the transport folds
    /// the record into the address's summary ([`Gateway::absorb`]).
    #[error("too many unauthenticated requests from this address")]
    Flooded {
        /// Seconds until a request will be considered.
        retry_after_secs: u64,
    },
    /// The caller may not do this (e.g. a read-only admin role).
    #[error("forbidden")]
    Forbidden,
    /// No such tool, or one the caller may not see.
    #[error("unknown tool")]
    UnknownTool,
    /// The audit trail cannot take records (fail closed).
    #[error("the audit trail is unavailable")]
    AuditUnavailable,
    /// The store failed (fail closed).
    #[error("the store is unavailable")]
    StoreUnavailable,
}

impl Refusal {
    /// The audit outcome of this refusal.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Unauthenticated(_) => Outcome::Unauthenticated,
            Self::RateLimited { .. } | Self::Flooded { .. } => Outcome::RateLimited,
            Self::Forbidden => Outcome::Denied,
            Self::UnknownTool => Outcome::UnknownTool,
            Self::AuditUnavailable | Self::StoreUnavailable => Outcome::Error,
        }
    }
}

/// What a transport learned of a call beyond its name and arguments.
#[derive(Debug, Default)]
pub struct CallOptions {
    /// Why the agent says it makes the call (the request's `_meta`), shown to approvers.
    pub reason: Option<String>,
    /// Receives the time waited, about every [`PROGRESS_EVERY`], while the call waits
    /// for an approval (the transport turns it into progress notifications).
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<std::time::Duration>>,
    /// How long to wait for an approval instead of the gateway's setting (an MCP task
    /// waits as long as the approval can be given).
    pub wait: Option<std::time::Duration>,
}

/// How often a call waiting for an approval reports progress.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What policy asked of a call that needs approval.
struct Ask {
    policy_version: u64,
    policies: Vec<String>,
    quorums: Vec<crate::policy::Quorum>,
}

/// What a tool call produced: a result (`is_error` for tool failures, which the model can
/// read and correct) for the transport to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolReply {
    /// The text block.
    pub text: String,
    /// The structured result, when the tool declares an output schema.
    pub structured: Option<Value>,
    /// A tool failure (not a protocol error).
    pub is_error: bool,
}

impl ToolReply {
    fn failure(text: String) -> Self {
        Self {
            text,
            structured: None,
            is_error: true,
        }
    }
}

/// The message an agent sees for a failed call. The tool's own errors and argument
/// validation are for the model to read; traps and host-side failures get a fixed message
/// and the correlation id, never their details.
pub fn public_failure(e: &CallError, correlation: &str) -> String {
    match e {
        CallError::InvalidArguments(_) | CallError::Tool { .. } => e.to_string(),
        CallError::Trap(kind) => {
            let what = match kind {
                TrapKind::Deadline => "it ran past its deadline",
                TrapKind::OutOfFuel => "it ran out of fuel",
                TrapKind::MemoryLimit => "it needed more memory than its limit",
                TrapKind::StackOverflow => "it overflowed its stack",
                TrapKind::Panic(_) => "it panicked",
                TrapKind::Other(_) => "it trapped",
            };
            format!("the tool was stopped: {what} (ref {correlation})")
        }
        CallError::Busy => "the tool is busy; try again later".to_owned(),
        CallError::UnknownTool(_) | CallError::Unavailable(_) | CallError::BadResult(_) => {
            format!("the tool failed (ref {correlation})")
        }
    }
}

/// Masks the secrets a call used in every message its error carries.
fn mask_error(caps: &CallGrants, e: &mut CallError) {
    match e {
        CallError::InvalidArguments(m)
        | CallError::Tool { message: m, .. }
        | CallError::Trap(TrapKind::Panic(m) | TrapKind::Other(m))
        | CallError::Unavailable(m)
        | CallError::BadResult(m)
        | CallError::UnknownTool(m) => caps.mask_string(m),
        CallError::Trap(_) | CallError::Busy => {}
    }
}

/// A short class of a call error, for the audit record.
pub fn error_class(e: &CallError) -> &'static str {
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

impl Gateway {
    /// Admits a request: its credentials must name a live agent token, and the agent must
    /// be within its rate limit. Fills the principal into `record`. A refusal leaves the
    /// record for the caller to finish with [`Refusal::outcome`] (or, for an address over
    /// its unauthenticated limit, to [`Gateway::absorb`]).
    pub fn admit(
        &self,
        credentials: Credentials<'_>,
        peer: Option<IpAddr>,
        record: &mut PendingRecord,
    ) -> Result<Caller, Refusal> {
        let authenticated = auth::bearer(credentials.authorization, credentials.query)
            .and_then(|token| self.admissions.admit(&self.store, token, &self.audience));
        let principal = match authenticated {
            Ok(p) => p,
            Err(AuthError::Store(e)) => {
                tracing::error!(error = %e, "token store failed; refusing request");
                record.record().error_class = Some("store".into());
                return Err(Refusal::StoreUnavailable);
            }
            Err(e) => {
                record.record().error_class = Some(e.class().to_owned());
                if let Err(retry_after_secs) = self.addresses.take(peer) {
                    return Err(Refusal::Flooded { retry_after_secs });
                }
                return Err(Refusal::Unauthenticated(e));
            }
        };
        let agent = principal.subject.path();
        let r = record.record();
        r.principal = Some(agent.clone());
        r.token_id = Some(principal.token_id.clone());
        match self.limiter.check(&agent, principal.rate_limit) {
            Ok(admitted) => Ok(Caller {
                principal,
                agent,
                peer,
                rate: admitted.rate,
            }),
            Err(limited) => Err(Refusal::RateLimited {
                retry_after_secs: limited.retry_after_secs,
            }),
        }
    }

    /// Counts a request that needs no credentials to be refused (`POST /token`) against
    /// its address's limit: `Err(Refusal::Flooded)` beyond it.
    pub fn admit_address(&self, peer: Option<IpAddr>) -> Result<(), Refusal> {
        self.addresses
            .take(peer)
            .map_err(|retry_after_secs| Refusal::Flooded { retry_after_secs })
    }

    /// Folds a refused request over its address's limit into the summary record written
    /// for that address (see [`Gateway::housekeeping`]), so a flood costs one record per
    /// address and window, not one per request.
    pub fn absorb(&self, record: PendingRecord, peer: Option<IpAddr>) {
        record.absorb();
        self.addresses.absorbed(peer);
    }

    /// The policy circumstances of a call by `caller`.
    fn circumstances(caller: &Caller, arguments: Map<String, Value>) -> Circumstances {
        Circumstances {
            now: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            client_ip: caller.peer,
            rate: caller.rate,
            arguments,
        }
    }

    /// `tools/list`: the tools `caller` may call (or call with approval), recorded.
    pub async fn list_tools(
        &self,
        caller: &Caller,
        record: PendingRecord,
    ) -> Result<Vec<Entry>, Refusal> {
        let mut record = self.audit_gate(record).await?;
        let c = Self::circumstances(caller, Map::new());
        let policy = self.policy();
        let subject = &caller.principal.subject;
        let entries: Vec<Entry> = self
            .catalog
            .list()
            .into_iter()
            .filter(|e| self.installed_for(&e.key, subject))
            .filter(|e| policy.engine.may_call(subject, &target(e), &c))
            .collect();
        record.record().policies = vec![format!("policy-set-v{}", policy.version)];
        self.finish(record, Outcome::Ok).await?;
        Ok(entries)
    }

    /// Fail closed: while the trail cannot take records, the request is refused before
    /// anything runs (its record is still attempted).
    async fn audit_gate(&self, record: PendingRecord) -> Result<PendingRecord, Refusal> {
        if self.audit.healthy() {
            return Ok(record);
        }
        let _ = record.finish(Outcome::Error).await;
        Err(Refusal::AuditUnavailable)
    }

    /// Finishes `record`; a record that cannot be written refuses the request.
    async fn finish(&self, record: PendingRecord, outcome: Outcome) -> Result<(), Refusal> {
        let request = record.request().to_owned();
        record.finish(outcome).await.map_err(|e| {
            tracing::error!(%request, error = %e, "audit record failed; request refused");
            Refusal::AuditUnavailable
        })?;
        Ok(())
    }

    /// Whether a call of `name` with `arguments` by `caller` would wait for a human's
    /// approval (a transport may then answer with a task to poll instead of holding the
    /// request open). A pure check: nothing is recorded or opened.
    pub fn needs_approval(
        &self,
        caller: &Caller,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> bool {
        let subject = &caller.principal.subject;
        let Some(entry) = self
            .catalog
            .get(name)
            .filter(|e| self.installed_for(&e.key, subject))
        else {
            return false;
        };
        let c = Self::circumstances(caller, arguments.clone());
        matches!(
            self.policy().engine.decide(subject, &target(&entry), &c),
            Decision::RequireApproval { .. }
        )
    }

    /// `tools/call`: policy, then the skill, then the durable record, then the reply.
    pub async fn call_tool(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Map<String, Value>,
        record: PendingRecord,
    ) -> Result<ToolReply, Refusal> {
        self.call_tool_with(caller, name, arguments, CallOptions::default(), record)
            .await
    }

    /// [`Gateway::call_tool`] with what the transport learned beyond the arguments (the
    /// agent's stated reason, a progress channel for approval waits).
    pub async fn call_tool_with(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Map<String, Value>,
        options: CallOptions,
        mut record: PendingRecord,
    ) -> Result<ToolReply, Refusal> {
        let _in_flight = self.begin_call();
        record.record().tool = Some(name.to_owned());
        let mut record = self.audit_gate(record).await?;
        let c = Self::circumstances(caller, arguments);
        let subject = &caller.principal.subject;
        let arguments = Value::Object(c.arguments.clone());
        record.record().args_digest = Some(digest(&arguments));

        // A skill not installed in the caller's workspace does not exist for it.
        let Some(entry) = self
            .catalog
            .get(name)
            .filter(|e| self.installed_for(&e.key, subject))
        else {
            self.finish(record, Outcome::UnknownTool).await?;
            return Err(Refusal::UnknownTool);
        };
        let policy = self.policy();
        let decision = policy.engine.decide(subject, &target(&entry), &c);
        {
            let r = record.record();
            r.decision = Some(decision.label().to_owned());
            r.policies = decision.policies().to_vec();
        }
        match decision {
            Decision::Deny { reasons, .. } => {
                record.record().reasons = reasons;
                self.finish(record, Outcome::Denied).await?;
                // Indistinguishable from an unknown tool.
                Err(Refusal::UnknownTool)
            }
            Decision::RequireApproval { policies, quorums } => {
                let ask = Ask {
                    policy_version: policy.version,
                    policies,
                    quorums,
                };
                self.call_with_approval(caller, &entry, arguments, ask, options, record)
                    .await
            }
            Decision::Allow { ref policies } => {
                if policy.engine.records_arguments(policies) {
                    record.record().arguments =
                        Some(redact(&arguments, &entry.tool().input_schema));
                }
                self.execute(caller, &entry, &arguments, record).await
            }
        }
    }

    /// A call policy allows only with a human's approval: find or open its task, wait for
    /// a decision (up to the configured wait), then run it, or say why not.
    async fn call_with_approval(
        &self,
        caller: &Caller,
        entry: &Entry,
        arguments: Value,
        ask: Ask,
        options: CallOptions,
        mut record: PendingRecord,
    ) -> Result<ToolReply, Refusal> {
        let request = approvals::Request {
            agent: caller.agent.clone(),
            tool: entry.exposed.clone(),
            skill: entry.key.to_string(),
            skill_digest: entry.skill.digest().to_owned(),
            description: entry.tool().description.clone(),
            annotations: serde_json::to_value(&entry.tool().annotations).unwrap_or_default(),
            args_digest: digest(&arguments),
            arguments,
            policy_version: ask.policy_version,
            policies: ask.policies,
            quorums: ask.quorums,
            reason: options
                .reason
                .map(|r| approvals::truncate(r, approvals::MAX_REASON)),
            request_id: record.id().to_owned(),
        };
        let first = match self.approvals.take_or_open(&request) {
            Ok(ticket) => ticket,
            Err(ApprovalError::TooMany(n)) => {
                record.record().error_class = Some("too_many_approvals".into());
                self.finish(record, Outcome::ApprovalRequired).await?;
                return Ok(ToolReply::failure(ApprovalError::TooMany(n).to_string()));
            }
            Err(ApprovalError::Store(e)) => {
                tracing::error!(error = %e, "approval tasks could not be read; refusing call");
                record.record().error_class = Some("store".into());
                self.finish(record, Outcome::Error).await?;
                return Err(Refusal::StoreUnavailable);
            }
        };
        let id = first.task().id.clone();
        record.record().approval = Some(id.clone());
        if matches!(first, Ticket::Pending { .. }) && first.task().request_id == request.request_id
        {
            self.record_request(caller, &request, &id).await?;
        }
        let progress = options.progress;
        let wait = options.wait.unwrap_or_else(|| self.approvals.wait());
        let settled = self
            .approvals
            .settle(&request, first, wait, PROGRESS_EVERY, |waited| {
                if let Some(p) = &progress {
                    let _ = p.send(waited);
                }
            })
            .await;
        let ticket = match settled {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "approval tasks could not be read; refusing call");
                record.record().error_class = Some("store".into());
                self.finish(record, Outcome::Error).await?;
                return Err(Refusal::StoreUnavailable);
            }
        };
        record.record().approval = Some(ticket.task().id.clone());
        let name = &entry.exposed;
        match ticket {
            Ticket::Run { task, arguments } => {
                record.record().vote = Some("executed".into());
                let modified = task.modified_arguments.is_some();
                if modified {
                    // An approver's arguments pass policy like the agent's did.
                    let args = arguments.as_object().cloned().unwrap_or_default();
                    let c = Self::circumstances(caller, args);
                    let decision =
                        self.policy()
                            .engine
                            .decide(&caller.principal.subject, &target(entry), &c);
                    if let Decision::Deny { reasons, .. } = decision {
                        record.record().reasons = reasons;
                        self.finish(record, Outcome::Denied).await?;
                        return Ok(ToolReply::failure(format!(
                            "an approver modified the arguments of `{name}`, and policy does \
                             not allow the modified call (approval {})",
                            task.id
                        )));
                    }
                }
                let mut reply = self.execute(caller, entry, &arguments, record).await?;
                if modified {
                    let note = task
                        .note
                        .as_deref()
                        .map(|n| format!(" (note: {n})"))
                        .unwrap_or_default();
                    reply.text = format!(
                        "[warden] An approver modified the arguments before this call ran{note}. \
                         It ran with: {arguments}\n\n{}",
                        reply.text
                    );
                }
                Ok(reply)
            }
            Ticket::Pending { task } => {
                self.finish(record, Outcome::ApprovalRequired).await?;
                let needs = approvals::missing(&approvals::quorums(&task), &task.votes);
                let expires = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(task.expires_at),
                );
                let restarting = if self.approvals.closing() {
                    " The gateway is restarting; the task is kept and stays decidable."
                } else {
                    ""
                };
                Ok(ToolReply::failure(format!(
                    "approval pending: calling `{name}` needs a human's approval (task {}; \
                     waiting for {}; expires {expires}). Nothing ran.{restarting} Call `{name}` \
                     again with the same arguments to get the decision.",
                    task.id,
                    needs.join(" and "),
                )))
            }
            Ticket::Denied { task } => {
                record.record().vote = Some("denied".into());
                self.finish(record, Outcome::ApprovalDenied).await?;
                Ok(ToolReply::failure(format!(
                    "denied by an approver: {} (task {}). Nothing ran.",
                    task.note.as_deref().unwrap_or("no reason given"),
                    task.id
                )))
            }
            Ticket::Expired { task } => {
                record.record().vote = Some("expired".into());
                self.finish(record, Outcome::ApprovalExpired).await?;
                Ok(ToolReply::failure(format!(
                    "the approval of this call expired: task {} was not decided, or not used, \
                     in time. Nothing ran. Call `{name}` again to ask for a new approval.",
                    task.id
                )))
            }
            Ticket::Invalidated { task } => {
                record.record().vote = Some("invalidated".into());
                record.record().error_class = Some("skill_changed".into());
                self.finish(record, Outcome::ApprovalExpired).await?;
                Ok(ToolReply::failure(format!(
                    "the skill behind `{name}` changed after this call was approved (task {}), \
                     so the approval no longer holds. Nothing ran. Call `{name}` again to ask \
                     for a new approval.",
                    task.id
                )))
            }
        }
    }

    /// The trail's record of a new approval task (the call's own record follows when the
    /// call answers).
    async fn record_request(
        &self,
        caller: &Caller,
        request: &approvals::Request,
        id: &str,
    ) -> Result<(), Refusal> {
        let mut r = self.audit.open("approval/requested", caller.peer);
        {
            let rec = r.record();
            rec.principal = Some(caller.agent.clone());
            rec.token_id = Some(caller.principal.token_id.clone());
            rec.tool = Some(request.tool.clone());
            rec.decision = Some("require-approval".into());
            rec.policies = request.policies.clone();
            rec.args_digest = Some(request.args_digest.clone());
            rec.approval = Some(id.to_owned());
            rec.vote = Some("requested".into());
        }
        self.finish(r, Outcome::ApprovalRequired).await
    }

    /// Runs an allowed call: the skill's grants in the caller's environment, the skill,
    /// the durable record, then the reply.
    async fn execute(
        &self,
        caller: &Caller,
        entry: &Entry,
        arguments: &Value,
        mut record: PendingRecord,
    ) -> Result<ToolReply, Refusal> {
        let name = &entry.exposed;
        // What the call may reach: the skill's grants in the caller's environment.
        let env = caller.agent.rsplit_once('/').map_or("", |(env, _)| env);
        let grants = match self.grants.for_call(&entry.key, env) {
            Ok(set) => set,
            Err(e) => {
                tracing::error!(error = %e, "grants could not be read; refusing call");
                record.record().error_class = Some("store".into());
                self.finish(record, Outcome::Error).await?;
                return Err(Refusal::StoreUnavailable);
            }
        };
        let caps = Arc::new(CallGrants::new(grants, self.vault.clone(), &entry.key, env));
        let ctx = CallContext {
            isolation_key: caller.agent.clone(),
            capabilities: Some(caps.clone()),
        };
        let result = entry.skill.call(&entry.tool().name, arguments, &ctx).await;
        let (reply, outcome) = match result {
            Ok(mut done) => {
                record.record().fuel = done.fuel_consumed;
                caps.mask_value(&mut done.value);
                let text = match &done.value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let structured = entry.tool().output_schema.is_some().then_some(done.value);
                let reply = ToolReply {
                    text,
                    structured,
                    is_error: false,
                };
                (reply, Outcome::Ok)
            }
            Err(mut e) => {
                mask_error(&caps, &mut e);
                let outcome = match &e {
                    CallError::Trap(_) => Outcome::Trap,
                    CallError::InvalidArguments(_) | CallError::Tool { .. } => Outcome::ToolError,
                    _ => Outcome::Error,
                };
                record.record().error_class = Some(error_class(&e).to_owned());
                if outcome != Outcome::ToolError {
                    tracing::warn!(tool = %name, id = %record.id(), error = %e, "tool call failed");
                }
                let mut text = public_failure(&e, record.id());
                // What warden refused during the call explains a failure the skill may
                // only know as "denied".
                for refusal in caps.refusals().iter().take(4) {
                    text.push_str("\nwarden refused ");
                    text.push_str(refusal);
                }
                (ToolReply::failure(text), outcome)
            }
        };
        let (uses, dropped) = caps.take_events();
        {
            let r = record.record();
            r.capabilities = uses;
            r.capabilities_dropped = dropped as u64;
            if let Some(args) = r.arguments.as_mut() {
                caps.mask_value(args);
            }
        }
        // Acknowledge only once the record is durable; otherwise withhold the result.
        self.finish(record, outcome).await?;
        Ok(reply)
    }
}

/// How often [`Gateway::housekeeping`] should run.
pub const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Gateway {
    /// Periodic upkeep (every [`HOUSEKEEPING_EVERY`]): writes the summary record of each
    /// address whose refused requests were folded, expires idle session bindings and
    /// approval tasks past their expiry, and
    /// (hourly) prunes long-expired tokens.
    pub async fn housekeeping(&self) {
        for (peer, count) in self.addresses.drain_absorbed() {
            let mut record = self.audit.open("refused (summary)", peer);
            record.record().count = count;
            record.record().error_class = Some("flood".into());
            if record.finish(Outcome::RateLimited).await.is_err() {
                tracing::error!(
                    count,
                    "the summary of refused requests could not be recorded"
                );
            }
        }
        self.sessions.expire_idle();
        match self.approvals.expire_due() {
            Ok(expired) => {
                for task in expired {
                    tracing::info!(task = %task.id, tool = %task.tool, "approval task expired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "expiring approval tasks failed"),
        }
        let now = crate::identity::now_secs();
        if let Err(e) = crate::storage::Tables::forget_expired_mcp_tasks(&*self.store, now) {
            tracing::warn!(error = %e, "forgetting expired MCP tasks failed");
        }
        let due = {
            let mut last = self
                .last_prune
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let due = now.saturating_sub(*last) >= PRUNE_EVERY_SECS;
            if due {
                *last = now;
            }
            due
        };
        if due {
            match auth::prune_expired(&self.store, now) {
                Ok(0) => {}
                Ok(n) => tracing::info!(tokens = n, "pruned long-expired tokens"),
                Err(e) => tracing::warn!(error = %e, "pruning expired tokens failed"),
            }
        }
    }
}

/// How often long-expired tokens are pruned.
const PRUNE_EVERY_SECS: u64 = 3_600;
