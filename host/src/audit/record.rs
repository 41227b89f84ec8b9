//! One audit record: what is stored for a request, its typed outcome, and the pending
//! record that a request carries from arrival to its one finished record.
//!
//! Invariants: every string field is capped when the record is finished (a request can
//! never make the trail store more than [`MAX_FIELD`] bytes of one field), and a pending
//! record dropped unfinished is written as an error, so a request cannot end without its
//! record.
//!
//! Threat: disk and queue exhaustion through oversized request fields, and requests that
//! leave no trace because a code path forgot to record them.

use crate::storage::Usage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One audit record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number (1-based, contiguous). Assigned by the writer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// Unix milliseconds.
    pub ts_ms: u64,
    /// The correlation id the caller was given with an error (`req_...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// How many requests this record stands for (more than 1 only for the summary of a
    /// flood of refused requests from one address; see [`crate::transport`]).
    #[serde(default, skip_serializing_if = "is_one")]
    pub count: u64,
    /// The request: `tools/call`, `tools/list`, `initialize`, `token/exchange`, ...
    pub request: String,
    /// Agent path (or admin name), when authenticated.
    pub principal: Option<String>,
    /// Public id of the token used.
    pub token_id: Option<String>,
    /// Client address.
    pub client_ip: Option<String>,
    /// Exposed tool name.
    pub tool: Option<String>,
    /// `allow`, `deny` or `require-approval`.
    pub decision: Option<String>,
    /// Deciding policy ids.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Operator-readable reasons of a deny.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// BLAKE3 of the arguments' JSON.
    pub args_digest: Option<String>,
    /// The arguments, redacted, when the deciding policy allows keeping them.
    pub arguments: Option<Value>,
    /// How the request ended.
    pub outcome: Outcome,
    /// A short class of the error (e.g. `expired`, `timeout`, `memory`).
    pub error_class: Option<String>,
    /// Latency, microseconds.
    pub latency_us: u64,
    /// Fuel consumed, when metered.
    pub fuel: Option<u64>,
    /// Outbound requests, injected credentials and revealed secrets of a tool call,
    /// allowed or refused (hosts, grant ids and secret names; never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<CapabilityUse>,
    /// Uses beyond those kept in `capabilities`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub capabilities_dropped: u64,
    /// The approval task the request opened, waited on, ran on or decided (`apr_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// An approver's vote (`approve`, `deny`, `modify`) or the task's new state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<String>,
    /// MAC of the previous record. Assigned by the writer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev: String,
}

/// One use (or refused use) of a grant during a tool call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityUse {
    /// `egress`, `inject` or `reveal`.
    pub kind: String,
    /// `METHOD scheme://host:port/path` for egress; the secret's name for a reveal.
    pub target: String,
    /// `allowed` or `denied`.
    pub decision: String,
    /// The grant that allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Secrets injected or revealed (names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_one(n: &u64) -> bool {
    *n <= 1
}

/// How a request ended: one of a fixed set, stored as its snake_case name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Served.
    Ok,
    /// The tool ran and reported a failure (or its arguments did not validate).
    ToolError,
    /// The skill trapped (deadline, memory, fuel, stack, panic).
    Trap,
    /// Policy (or the caller's role) refused it.
    Denied,
    /// Policy requires a human's approval, which has not been given (yet).
    ApprovalRequired,
    /// An approver denied the call.
    ApprovalDenied,
    /// The approval expired before it was given or used, or the skill changed since.
    ApprovalExpired,
    /// No such tool (or not installed in the caller's workspace).
    UnknownTool,
    /// No valid credentials.
    Unauthenticated,
    /// Over a rate limit.
    RateLimited,
    /// Refused before it was served: malformed, oversized, bad headers, unknown session.
    Invalid,
    /// Anything else, including a request whose record was never finished.
    #[default]
    #[serde(other)]
    Error,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::Trap => "trap",
            Self::Denied => "denied",
            Self::ApprovalRequired => "approval_required",
            Self::ApprovalDenied => "approval_denied",
            Self::ApprovalExpired => "approval_expired",
            Self::UnknownTool => "unknown_tool",
            Self::Unauthenticated => "unauthenticated",
            Self::RateLimited => "rate_limited",
            Self::Invalid => "invalid",
            Self::Error => "error",
        }
    }
}

impl From<&str> for Outcome {
    /// The outcome of a stored name; unknown names are [`Outcome::Error`].
    fn from(name: &str) -> Self {
        [
            Self::Ok,
            Self::ToolError,
            Self::Trap,
            Self::Denied,
            Self::ApprovalRequired,
            Self::ApprovalDenied,
            Self::ApprovalExpired,
            Self::UnknownTool,
            Self::Unauthenticated,
            Self::RateLimited,
            Self::Invalid,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
        .unwrap_or(Self::Error)
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most bytes of one string field a record stores (longer values are cut at a character
/// boundary and marked with `...`).
pub const MAX_FIELD: usize = 256;
/// Most entries of a list field (policies, reasons) a record stores.
pub const MAX_LIST: usize = 32;
/// Most bytes of kept arguments (JSON); larger arguments are replaced by a note of their size.
pub const MAX_ARGUMENTS: usize = 8 * 1024;
/// The tool name usage is counted under for calls to tools that do not exist, so made-up
/// names cannot grow the usage table.
pub const UNKNOWN_TOOL_BUCKET: &str = "(unknown)";

/// Cuts `s` to at most [`MAX_FIELD`] bytes.
pub fn cap(s: &mut String) {
    if s.len() > MAX_FIELD {
        let mut end = MAX_FIELD - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
}

/// A new correlation id: `req_`, a random prefix drawn once per process, and a counter
/// (unique within the process, unguessable across restarts; no system call per request).
/// It names a record; it grants nothing.
pub fn correlation_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use base64::Engine as _;
        let mut bytes = [0u8; 6];
        if getrandom::fill(&mut bytes).is_err() {
            bytes.copy_from_slice(&now_ms().to_le_bytes()[..6]);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    });
    format!("req_{prefix}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Microseconds since `since`.
pub fn elapsed_us(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl AuditRecord {
    /// A record of `request` from `client_ip`, stamped now.
    pub fn begin(request: impl Into<String>, client_ip: Option<String>) -> Self {
        Self {
            ts_ms: now_ms(),
            request: request.into(),
            client_ip,
            ..Self::default()
        }
    }

    /// Whether the outcome counts as an error in usage.
    pub fn is_error(&self) -> bool {
        self.outcome != Outcome::Ok
    }

    /// Caps every field a request controls (see [`MAX_FIELD`], [`MAX_LIST`],
    /// [`MAX_ARGUMENTS`]).
    pub fn cap_fields(&mut self) {
        for field in [
            Some(&mut self.request),
            Some(&mut self.id),
            self.principal.as_mut(),
            self.token_id.as_mut(),
            self.client_ip.as_mut(),
            self.tool.as_mut(),
            self.decision.as_mut(),
            self.args_digest.as_mut(),
            self.error_class.as_mut(),
            self.approval.as_mut(),
            self.vote.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            cap(field);
        }
        for list in [&mut self.policies, &mut self.reasons] {
            list.truncate(MAX_LIST);
            list.iter_mut().for_each(cap);
        }
        self.capabilities.truncate(MAX_LIST);
        for u in &mut self.capabilities {
            for field in [
                Some(&mut u.kind),
                Some(&mut u.target),
                Some(&mut u.decision),
                u.grant.as_mut(),
                u.reason.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                cap(field);
            }
            u.secrets.truncate(MAX_LIST);
            u.secrets.iter_mut().for_each(cap);
        }
        if let Some(args) = &self.arguments {
            let len = args.to_string().len();
            if len > MAX_ARGUMENTS {
                self.arguments = Some(serde_json::json!({ "[omitted]": format!("{len} bytes") }));
            }
        }
    }

    /// The usage this record adds, under `agent path|tool` (tool `-` when none, and one
    /// bucket for every unknown tool).
    pub(super) fn usage(&self) -> Option<(String, Usage)> {
        let principal = self.principal.as_deref()?;
        let tool = match (self.outcome, self.tool.as_deref()) {
            (_, None) => "-",
            (Outcome::UnknownTool, Some(_)) => UNKNOWN_TOOL_BUCKET,
            (_, Some(t)) => t,
        };
        let key = format!("{principal}|{tool}");
        let delta = Usage {
            calls: self.count.max(1),
            errors: if self.is_error() {
                self.count.max(1)
            } else {
                0
            },
            latency_us: self.latency_us,
            fuel: self.fuel.unwrap_or(0),
        };
        Some((key, delta))
    }
}
