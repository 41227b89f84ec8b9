//! Approvals: a call that policy marks `@approval(...)` becomes an approval task that humans
//! decide (approve, deny, or modify its arguments), and an approved task lets exactly one
//! call run.
//!
//! A task is bound to the agent, the exposed tool, the digest of the canonical (RFC 8785)
//! arguments the agent sent, the skill's digest and an expiry. The agent's call looks its
//! task up by that binding: the same call retried later picks up the decision, and a call
//! with other arguments, from another agent or for another tool never finds it.
//!
//! Invariants:
//! - Single use: consuming an approved task and closing its binding happen in one store
//!   transaction, so two calls can never both run on one approval.
//! - An approved task runs only while it has not expired and the skill still has the digest
//!   it had when the task was created (an updated skill needs a new approval).
//! - Only approvers whose scope covers the task's workspace decide (operators decide
//!   everywhere); the agent's owner never decides on its agent's task; each approver votes
//!   once; a quorum counts distinct approver names, each in the group a rule asks for; a
//!   modification discards the votes cast for the earlier arguments.
//! - Tasks live in the store and survive a restart. Waiting calls are woken by an in-memory
//!   broadcast and then re-read the store, which stays the only source of truth.
//! - An agent has at most [`MAX_OPEN_PER_AGENT`] open tasks; beyond that its new calls are
//!   refused, so an agent cannot bury the approvers.
//!
//! Threat: an approval replayed, stretched to other arguments, another agent or an updated
//! skill; self-approval; one approver counted twice towards a quorum; approver flooding.

use crate::policy::Quorum;
use crate::storage::{ApprovalRecord, ApprovalVote, ApproverRecord, Store, StoreError, Tables, Tx};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long a call waits for a decision by default before it answers "pending".
pub const DEFAULT_WAIT: Duration = Duration::from_secs(25);
/// How long a task stays decidable by default (seconds).
pub const DEFAULT_TTL: u64 = 3_600;
/// Open tasks one agent may have at once.
pub const MAX_OPEN_PER_AGENT: usize = 32;
/// Longest note (a denial's, or an approver's remark), in bytes.
pub const MAX_NOTE: usize = 2_000;
/// Longest reason an agent may state, in bytes (longer ones are cut).
pub const MAX_REASON: usize = 2_000;

/// States of a task.
pub mod state {
    /// Waiting for decisions.
    pub const PENDING: &str = "pending";
    /// Approved: the next matching call runs.
    pub const APPROVED: &str = "approved";
    /// Denied: the next matching call gets the denial.
    pub const DENIED: &str = "denied";
    /// Nobody decided in time, or it was approved and not used in time.
    pub const EXPIRED: &str = "expired";
    /// Approved and used by a call.
    pub const EXECUTED: &str = "executed";
    /// Approved, but the skill changed before the call ran.
    pub const INVALIDATED: &str = "invalidated";
}

/// What a call needing approval brings (everything a task records about it).
#[derive(Debug, Clone)]
pub struct Request {
    /// The agent's path.
    pub agent: String,
    /// The exposed tool name.
    pub tool: String,
    /// The skill's key (`namespace/name`).
    pub skill: String,
    /// The skill's digest now.
    pub skill_digest: String,
    /// The tool's description.
    pub description: String,
    /// The tool's annotations (untrusted hints, shown as risk hints).
    pub annotations: Value,
    /// The arguments as the agent sent them.
    pub arguments: Value,
    /// Digest of their canonical form.
    pub args_digest: String,
    /// The policy version that asked.
    pub policy_version: u64,
    /// The rules that asked.
    pub policies: Vec<String>,
    /// The approvals the rules ask for.
    pub quorums: Vec<Quorum>,
    /// Why the agent says it makes the call (from the request's `_meta`).
    pub reason: Option<String>,
    /// The correlation id of the request that opened the task.
    pub request_id: String,
}

impl Request {
    fn binding(&self) -> String {
        binding(&self.agent, &self.tool, &self.args_digest)
    }
}

/// The key a task is looked up by.
fn binding(agent: &str, tool: &str, args_digest: &str) -> String {
    format!("{agent}\n{tool}\n{args_digest}")
}

/// Where a call stands with its approval.
#[derive(Debug, Clone)]
pub enum Ticket {
    /// Approved and consumed: run with `arguments` (the approver's, when modified).
    Run {
        /// The task (now `executed`).
        task: Box<ApprovalRecord>,
        /// What to run with.
        arguments: Value,
    },
    /// Waiting for decisions.
    Pending {
        /// The task.
        task: Box<ApprovalRecord>,
    },
    /// Denied (delivered once; the next call opens a new task).
    Denied {
        /// The task.
        task: Box<ApprovalRecord>,
    },
    /// Expired before it was decided or used.
    Expired {
        /// The task.
        task: Box<ApprovalRecord>,
    },
    /// Approved for another version of the skill.
    Invalidated {
        /// The task.
        task: Box<ApprovalRecord>,
    },
}

impl Ticket {
    /// The task behind the ticket.
    pub fn task(&self) -> &ApprovalRecord {
        match self {
            Self::Run { task, .. }
            | Self::Pending { task }
            | Self::Denied { task }
            | Self::Expired { task }
            | Self::Invalidated { task } => task,
        }
    }
}

/// Why a task could not be opened or looked up.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The agent has too many open tasks.
    #[error("the agent has {0} approval tasks open; wait for decisions before asking for more")]
    TooMany(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who casts a vote: an authenticated admin and what the store says they may decide.
#[derive(Debug, Clone)]
pub struct Voter {
    /// Admin name (quorums count distinct names).
    pub name: String,
    /// Operators decide in every workspace.
    pub operator: bool,
    /// The approver record of `name`, if any (scopes and groups).
    pub approver: Option<ApproverRecord>,
}

impl Voter {
    /// Whether this voter may see and decide tasks of `tenant/workspace`.
    pub fn covers(&self, tenant: &str, workspace: &str) -> bool {
        self.operator
            || self.approver.as_ref().is_some_and(|a| {
                a.scopes
                    .iter()
                    .any(|s| s == "*" || s == tenant || *s == format!("{tenant}/{workspace}"))
            })
    }

    fn groups(&self) -> Vec<String> {
        self.approver
            .as_ref()
            .map(|a| a.groups.clone())
            .unwrap_or_default()
    }
}

/// A decision an approver casts.
#[derive(Debug, Clone)]
pub enum Ballot {
    /// Approve the task's current arguments.
    Approve {
        /// Optional remark.
        note: Option<String>,
    },
    /// Deny; the agent sees the note.
    Deny {
        /// Why (shown to the agent).
        note: String,
    },
    /// Replace the arguments (already checked against the tool's schema and policy) and
    /// approve them.
    Modify {
        /// The new arguments.
        arguments: Value,
        /// Optional remark (shown to the agent).
        note: Option<String>,
    },
}

impl Ballot {
    /// `approve`, `deny` or `modify`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Approve { .. } => "approve",
            Self::Deny { .. } => "deny",
            Self::Modify { .. } => "modify",
        }
    }
}

/// Why a vote was refused (each maps to an HTTP status in the admin API).
#[derive(Debug, thiserror::Error)]
pub enum VoteError {
    /// No such task, or one outside the voter's scope.
    #[error("no approval task `{0}`")]
    NotFound(String),
    /// The voter may not decide this task.
    #[error("{0}")]
    Forbidden(String),
    /// The task is no longer open to votes, or the voter already voted.
    #[error("{0}")]
    Conflict(String),
    /// The ballot itself is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Something changed about a task (for waiting calls, live views and webhooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The task was just opened (else it changed).
    pub created: bool,
    /// The task.
    pub id: String,
    /// Its state now.
    pub state: String,
    /// `tenant/workspace` of the task.
    pub workspace: String,
}

/// The approvals service: opens and settles tasks for calls, counts votes, and tells
/// waiters and live views when something changed.
pub struct Approvals {
    store: Arc<Store>,
    events: tokio::sync::broadcast::Sender<Event>,
    wait: Duration,
    ttl: u64,
    /// Cancelled when the gateway begins to shut down: waiting calls answer at once.
    closing: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("wait", &self.wait)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
fn now() -> u64 {
    crate::identity::now_secs()
}

fn new_id() -> Result<String, StoreError> {
    random_id("apr_").map_err(|e| StoreError::Corrupt(format!("no randomness for a task id: {e}")))
}

/// `prefix` and 24 random lower-case hex digits: the ids of approval tasks (`apr_`) and
/// MCP tasks (`tsk_`).
pub(crate) fn random_id(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{prefix}{hex}"))
}

/// Whether `id` has the shape [`random_id`] gives with `prefix`.
pub(crate) fn id_shaped(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|h| {
        h.len() == 24
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Whether `id` has the shape of a task id (checked before any lookup).
pub fn valid_id(id: &str) -> bool {
    id_shaped(id, "apr_")
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl Approvals {
    /// A service over `store`: calls wait up to `wait` for a decision, tasks stay
    /// decidable for `ttl` seconds.
    pub fn new(store: Arc<Store>, wait: Duration, ttl: u64) -> Self {
        let (events, _) = tokio::sync::broadcast::channel(256);
        Self {
            store,
            events,
            wait,
            ttl: ttl.max(1),
            closing: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The gateway is shutting down: calls waiting for a decision stop waiting and answer
    /// "pending" (their tasks are stored and stay decidable after the restart), so no
    /// agent's call is cut off mid-wait and the shutdown is not held up by a human.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Whether [`Approvals::close`] was called.
    pub fn closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// How long a call waits for a decision.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// How long a task stays decidable (seconds).
    pub fn ttl(&self) -> u64 {
        self.ttl
    }

    /// Subscribes to task changes.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Tells waiters and live views that `task` changed.
    pub fn announce(&self, task: &ApprovalRecord) {
        self.send(task, false);
    }

    fn send(&self, task: &ApprovalRecord, created: bool) {
        let _ = self.events.send(Event {
            created,
            id: task.id.clone(),
            state: task.state.clone(),
            workspace: format!("{}/{}", task.tenant, task.workspace),
        });
    }

    /// Looks up the call's task by its binding and, in one transaction: consumes it when
    /// approved (and still valid), closes it when denied, expired or stale, or opens a new
    /// one when there is none.
    pub fn take_or_open(&self, req: &Request) -> Result<Ticket, ApprovalError> {
        let key = req.binding();
        let mut out: Option<Result<(Ticket, bool), ApprovalError>> = None;
        self.store.atomically(|tx| {
            let looked_up = self.take_or_open_in(tx, req, &key);
            // Commit only what changed something (a lookup of a pending task writes nothing).
            let commit = matches!(looked_up, Ok((_, true)));
            out = Some(looked_up);
            Ok(commit)
        })?;
        let (ticket, changed) = out.unwrap_or_else(|| {
            Err(ApprovalError::Store(StoreError::Corrupt(
                "approval lookup did not run".into(),
            )))
        })?;
        if changed {
            // Only opening a task changes the store and leaves it pending.
            self.send(ticket.task(), matches!(ticket, Ticket::Pending { .. }));
        }
        Ok(ticket)
    }

    /// The lookup of [`Approvals::take_or_open`] in `tx`: the ticket, and whether the
    /// store changed (then the transaction is committed and the change announced).
    fn take_or_open_in(
        &self,
        tx: &Tx<'_>,
        req: &Request,
        key: &str,
    ) -> Result<(Ticket, bool), ApprovalError> {
        let now = now();
        if let Some(id) = tx.open_approval(key)?
            && let Some(mut task) = tx.approval(&id)?
        {
            let expired = now >= task.expires_at;
            let closed = match task.state.as_str() {
                state::PENDING if !expired => {
                    return Ok((
                        Ticket::Pending {
                            task: Box::new(task),
                        },
                        false,
                    ));
                }
                state::PENDING | state::APPROVED if expired => {
                    task.state = state::EXPIRED.into();
                    task.decided_at.get_or_insert(now);
                    tx.put_approval(&mut task)?;
                    Some(Ticket::Expired {
                        task: Box::new(task),
                    })
                }
                state::APPROVED if task.skill_digest != req.skill_digest => {
                    task.state = state::INVALIDATED.into();
                    tx.put_approval(&mut task)?;
                    Some(Ticket::Invalidated {
                        task: Box::new(task),
                    })
                }
                state::APPROVED => {
                    task.state = state::EXECUTED.into();
                    task.executed_at = Some(now);
                    task.executed_by_request = Some(req.request_id.clone());
                    tx.put_approval(&mut task)?;
                    let arguments = task
                        .modified_arguments
                        .clone()
                        .unwrap_or_else(|| task.arguments.clone());
                    Some(Ticket::Run {
                        task: Box::new(task),
                        arguments,
                    })
                }
                // A denial or an expiry is delivered once.
                state::DENIED => Some(Ticket::Denied {
                    task: Box::new(task),
                }),
                state::EXPIRED => Some(Ticket::Expired {
                    task: Box::new(task),
                }),
                // Executed or invalidated tasks are closed: a stale binding is dropped and
                // a new task opened below.
                _ => None,
            };
            // Whatever the call heard, the binding is closed.
            tx.set_open_approval(key, None)?;
            if let Some(ticket) = closed {
                return Ok((ticket, true));
            }
        }
        let prefix = format!("{}\n", req.agent);
        let open = tx
            .open_approvals()?
            .iter()
            .filter(|(binding, _)| binding.starts_with(&prefix))
            .count();
        if open >= MAX_OPEN_PER_AGENT {
            return Err(ApprovalError::TooMany(open));
        }
        let (tenant, workspace, environment) = split_agent(&req.agent);
        let mut task = ApprovalRecord {
            id: new_id()?,
            state: state::PENDING.into(),
            tool: req.tool.clone(),
            skill: req.skill.clone(),
            skill_digest: req.skill_digest.clone(),
            description: req.description.clone(),
            annotations: req.annotations.clone(),
            arguments: req.arguments.clone(),
            args_digest: req.args_digest.clone(),
            modified_arguments: None,
            agent: req.agent.clone(),
            tenant,
            workspace,
            environment,
            policy_version: req.policy_version,
            policies: req.policies.clone(),
            quorums: req.quorums.iter().map(ToString::to_string).collect(),
            reason: req.reason.clone(),
            request_id: req.request_id.clone(),
            created_at: now,
            expires_at: now + self.ttl,
            decided_at: None,
            votes: Vec::new(),
            note: None,
            executed_at: None,
            executed_by_request: None,
            revision: 0,
        };
        tx.put_approval(&mut task)?;
        tx.set_open_approval(key, Some(&task.id))?;
        Ok((
            Ticket::Pending {
                task: Box::new(task),
            },
            true,
        ))
    }

    /// Waits (up to `wait`; expiry is noticed within `every`) until the call's task is no
    /// longer pending, then settles it like [`Approvals::take_or_open`]. Calls `tick` about
    /// every `every` while waiting (progress notifications).
    pub async fn settle(
        &self,
        req: &Request,
        first: Ticket,
        wait: Duration,
        every: Duration,
        mut tick: impl FnMut(Duration),
    ) -> Result<Ticket, ApprovalError> {
        let Ticket::Pending { task } = &first else {
            return Ok(first);
        };
        let id = task.id.clone();
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        let mut events = self.subscribe();
        let mut ticket = first;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(ticket);
            }
            let step = every.min(deadline - now);
            let event = tokio::select! {
                () = self.closing.cancelled() => return Ok(ticket),
                e = tokio::time::timeout(step, events.recv()) => e,
            };
            match event {
                Ok(Ok(e)) if e.id != id => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) | Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Ok(ticket);
                }
                Err(_) => tick(started.elapsed()),
            }
            // Something changed (or a tick passed: expiry is noticed too): re-read.
            ticket = self.take_or_open(req)?;
            if !matches!(ticket, Ticket::Pending { .. }) || ticket.task().id != id {
                return Ok(ticket);
            }
        }
    }

    /// Marks pending tasks past their expiry as expired (their bindings stay, so the
    /// agent's next call hears it once); returns them.
    pub fn expire_due(&self) -> Result<Vec<ApprovalRecord>, StoreError> {
        let now = now();
        let mut due = Vec::new();
        for (_, id) in self.store.open_approvals()? {
            if let Some(task) = self.store.approval(&id)?
                && task.state == state::PENDING
                && now >= task.expires_at
            {
                due.push(task);
            }
        }
        if due.is_empty() {
            return Ok(due);
        }
        let mut expired = Vec::new();
        self.store.atomically(|tx| {
            for t in &due {
                if let Some(mut task) = tx.approval(&t.id)?
                    && task.state == state::PENDING
                {
                    task.state = state::EXPIRED.into();
                    task.decided_at = Some(now);
                    tx.put_approval(&mut task)?;
                    expired.push(task);
                }
            }
            Ok(true)
        })?;
        for task in &expired {
            self.announce(task);
        }
        Ok(expired)
    }
}

/// `tenant`, `workspace`, `environment` of an agent path.
fn split_agent(agent: &str) -> (String, String, String) {
    let mut parts = agent.split('/');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    (next(), next(), next())
}

/// The quorums a task asks for.
pub fn quorums(task: &ApprovalRecord) -> Vec<Quorum> {
    task.quorums
        .iter()
        .filter_map(|q| Quorum::parse(q).ok())
        .collect()
}

/// Distinct approvers among `votes` (approvals of the current arguments) who count towards
/// `q` (members of its group, if it names one).
fn counted(q: &Quorum, votes: &[ApprovalVote]) -> usize {
    let mut names: Vec<&str> = votes
        .iter()
        .filter(|v| v.vote != "deny")
        .filter(|v| q.group.as_ref().is_none_or(|g| v.groups.contains(g)))
        .map(|v| v.approver.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

/// Whether `votes` meet every quorum.
pub fn quorum_met(quorums: &[Quorum], votes: &[ApprovalVote]) -> bool {
    quorums
        .iter()
        .all(|q| counted(q, votes) >= q.count as usize)
}

/// What is still missing, in words (`"1 more approver of group finance"`).
pub fn missing(quorums: &[Quorum], votes: &[ApprovalVote]) -> Vec<String> {
    quorums
        .iter()
        .filter_map(|q| {
            let short = (q.count as usize).saturating_sub(counted(q, votes));
            (short > 0).then(|| {
                let who = if short == 1 { "approver" } else { "approvers" };
                match &q.group {
                    Some(g) => format!("{short} more {who} of group {g}"),
                    None => format!("{short} more {who}"),
                }
            })
        })
        .collect()
}

/// Casts `ballot` on task `id` in `tx` (the admin API commits it with its audit record).
/// The caller has checked a modification's arguments against the tool and policy.
pub fn vote(
    tx: &impl Tables,
    id: &str,
    voter: &Voter,
    ballot: Ballot,
) -> Result<ApprovalRecord, VoteError> {
    let now = now();
    let mut task = tx
        .approval(id)?
        .filter(|t| voter.covers(&t.tenant, &t.workspace))
        .ok_or_else(|| VoteError::NotFound(id.to_owned()))?;
    if task.state == state::PENDING && now >= task.expires_at {
        task.state = state::EXPIRED.into();
        task.decided_at = Some(now);
        tx.put_approval(&mut task)?;
        return Err(VoteError::Conflict(format!(
            "approval task `{id}` expired before it was decided"
        )));
    }
    if task.state != state::PENDING {
        return Err(VoteError::Conflict(format!(
            "approval task `{id}` is {}, not pending",
            task.state
        )));
    }
    let owner = tx.agent(&task.agent)?.and_then(|a| a.owner);
    if owner.as_deref() == Some(voter.name.as_str()) {
        return Err(VoteError::Forbidden(format!(
            "`{}` owns agent `{}` and cannot decide its requests",
            voter.name, task.agent
        )));
    }
    if task.votes.iter().any(|v| v.approver == voter.name) {
        return Err(VoteError::Conflict(format!(
            "`{}` already voted on approval task `{id}`",
            voter.name
        )));
    }
    let quorums = quorums(&task);
    let groups = voter.groups();
    let counts = quorums
        .iter()
        .any(|q| q.group.as_ref().is_none_or(|g| groups.contains(g)));
    if !counts {
        let wanted: Vec<String> = quorums.iter().map(ToString::to_string).collect();
        return Err(VoteError::Forbidden(format!(
            "approval task `{id}` needs {}; `{}` is in none of its groups",
            wanted.join(" and "),
            voter.name
        )));
    }
    let label = ballot.label();
    let note = match ballot {
        Ballot::Approve { note } => note,
        Ballot::Deny { note } => {
            if note.trim().is_empty() {
                return Err(VoteError::Invalid(
                    "a denial needs a note: the agent is told why".into(),
                ));
            }
            task.state = state::DENIED.into();
            task.decided_at = Some(now);
            task.note = Some(note.clone());
            Some(note)
        }
        Ballot::Modify { arguments, note } => {
            // Votes cast for the earlier arguments do not carry over.
            task.votes.clear();
            task.modified_arguments = Some(arguments);
            if let Some(n) = &note {
                task.note = Some(n.clone());
            }
            note
        }
    };
    if let Some(n) = &note
        && n.len() > MAX_NOTE
    {
        return Err(VoteError::Invalid(format!(
            "a note is at most {MAX_NOTE} bytes"
        )));
    }
    task.votes.push(ApprovalVote {
        approver: voter.name.clone(),
        vote: label.into(),
        groups,
        note,
        at: now,
    });
    if task.state == state::PENDING && quorum_met(&quorums, &task.votes) {
        task.state = state::APPROVED.into();
        task.decided_at = Some(now);
    }
    tx.put_approval(&mut task)?;
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::AgentRecord;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("warden.redb")).unwrap());
        (dir, store)
    }

    fn request(agent: &str, args: Value, quorums: &[&str]) -> Request {
        Request {
            agent: agent.into(),
            tool: "acme_pay__transfer".into(),
            skill: "acme/pay".into(),
            skill_digest: "d1".into(),
            description: "Moves money".into(),
            annotations: json!({"destructiveHint": true}),
            args_digest: crate::audit::digest(&args),
            arguments: args,
            policy_version: 3,
            policies: vec!["policy0".into()],
            quorums: quorums.iter().map(|q| Quorum::parse(q).unwrap()).collect(),
            reason: Some("paying the invoice".into()),
            request_id: "req_1".into(),
        }
    }

    fn approver(name: &str, scopes: &[&str], groups: &[&str]) -> Voter {
        Voter {
            name: name.into(),
            operator: false,
            approver: Some(ApproverRecord {
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                groups: groups.iter().map(|s| (*s).to_owned()).collect(),
                created_at: 0,
            }),
        }
    }

    fn cast(
        store: &Store,
        id: &str,
        voter: &Voter,
        ballot: Ballot,
    ) -> Result<ApprovalRecord, VoteError> {
        let mut out = None;
        store
            .atomically(|tx| {
                let r = vote(tx, id, voter, ballot);
                let ok = r.is_ok();
                out = Some(r);
                Ok(ok)
            })
            .unwrap();
        out.unwrap()
    }

    #[test]
    fn an_approval_runs_exactly_one_call_with_exactly_its_arguments() {
        let (_d, store) = store();
        let a = Approvals::new(store.clone(), Duration::ZERO, 60);
        let req = request(
            "t/w/prod/bot",
            json!({"to": "bob", "cents": 500}),
            &["required"],
        );
        let Ticket::Pending { task } = a.take_or_open(&req).unwrap() else {
            panic!("a new task is pending")
        };
        // The same call again finds the same task.
        assert_eq!(a.take_or_open(&req).unwrap().task().id, task.id);
        // Other arguments, another agent: other tasks.
        let other_args = request(
            "t/w/prod/bot",
            json!({"to": "eve", "cents": 500}),
            &["required"],
        );
        assert_ne!(a.take_or_open(&other_args).unwrap().task().id, task.id);
        let other_agent = request(
            "t/w/prod/bot2",
            json!({"to": "bob", "cents": 500}),
            &["required"],
        );
        assert_ne!(a.take_or_open(&other_agent).unwrap().task().id, task.id);

        let alice = approver("alice", &["t/w"], &[]);
        let t = cast(&store, &task.id, &alice, Ballot::Approve { note: None }).unwrap();
        assert_eq!(t.state, state::APPROVED);
        // Key order does not matter: the canonical digest binds.
        let same = request(
            "t/w/prod/bot",
            json!({"cents": 500, "to": "bob"}),
            &["required"],
        );
        let Ticket::Run {
            arguments,
            task: ran,
        } = a.take_or_open(&same).unwrap()
        else {
            panic!("the approved call runs")
        };
        assert_eq!(arguments, json!({"to": "bob", "cents": 500}));
        assert_eq!(ran.state, state::EXECUTED);
        // Every store makes a newer revision (live views order their updates by it).
        assert!(task.revision < t.revision && t.revision < ran.revision);
        assert_eq!(
            store.approval(&task.id).unwrap().unwrap().revision,
            ran.revision
        );
        // Single use: the replay opens a new pending task.
        let replay = a.take_or_open(&req).unwrap();
        assert!(matches!(replay, Ticket::Pending { .. }));
        assert_ne!(replay.task().id, task.id);
        // A vote on the used task is refused.
        let bob = approver("bob", &["t"], &[]);
        assert!(matches!(
            cast(&store, &task.id, &bob, Ballot::Approve { note: None }),
            Err(VoteError::Conflict(_))
        ));
    }

    #[test]
    fn an_updated_skill_invalidates_the_approval() {
        let (_d, store) = store();
        let a = Approvals::new(store.clone(), Duration::ZERO, 60);
        let mut req = request("t/w/prod/bot", json!({"x": 1}), &["required"]);
        let id = a.take_or_open(&req).unwrap().task().id.clone();
        cast(
            &store,
            &id,
            &approver("alice", &["*"], &[]),
            Ballot::Approve { note: None },
        )
        .unwrap();
        req.skill_digest = "d2".into();
        assert!(matches!(
            a.take_or_open(&req).unwrap(),
            Ticket::Invalidated { .. }
        ));
        assert_eq!(
            store.approval(&id).unwrap().unwrap().state,
            state::INVALIDATED
        );
    }

    #[test]
    fn a_quorum_needs_distinct_approvers_of_its_group_and_never_the_owner() {
        let (_d, store) = store();
        store
            .put_agent(
                "t/w/prod/bot",
                &AgentRecord {
                    groups: vec![],
                    rate_limit: None,
                    created_at: 0,
                    owner: Some("olga".into()),
                },
            )
            .unwrap();
        let a = Approvals::new(store.clone(), Duration::ZERO, 60);
        let req = request("t/w/prod/bot", json!({"x": 1}), &["2-of:group:finance"]);
        let id = a.take_or_open(&req).unwrap().task().id.clone();
        let olga = approver("olga", &["t/w"], &["finance"]);
        assert!(matches!(
            cast(&store, &id, &olga, Ballot::Approve { note: None }),
            Err(VoteError::Forbidden(m)) if m.contains("owns agent")
        ));
        let outsider = approver("oscar", &["t/w"], &["it"]);
        assert!(matches!(
            cast(&store, &id, &outsider, Ballot::Approve { note: None }),
            Err(VoteError::Forbidden(m)) if m.contains("none of its groups")
        ));
        let elsewhere = approver("eve", &["t/other"], &["finance"]);
        assert!(matches!(
            cast(&store, &id, &elsewhere, Ballot::Approve { note: None }),
            Err(VoteError::NotFound(_))
        ));
        let fin1 = approver("fin1", &["t/w"], &["finance"]);
        let t = cast(&store, &id, &fin1, Ballot::Approve { note: None }).unwrap();
        assert_eq!(t.state, state::PENDING);
        assert_eq!(
            missing(&quorums(&t), &t.votes),
            ["1 more approver of group finance"]
        );
        assert!(matches!(
            cast(&store, &id, &fin1, Ballot::Approve { note: None }),
            Err(VoteError::Conflict(m)) if m.contains("already voted")
        ));
        let fin2 = approver("fin2", &["t"], &["finance"]);
        let t = cast(&store, &id, &fin2, Ballot::Approve { note: None }).unwrap();
        assert_eq!(t.state, state::APPROVED);
    }

    #[test]
    fn a_modification_replaces_the_arguments_and_resets_the_votes() {
        let (_d, store) = store();
        let a = Approvals::new(store.clone(), Duration::ZERO, 60);
        let req = request("t/w/prod/bot", json!({"cents": 90000}), &["2-of:any"]);
        let id = a.take_or_open(&req).unwrap().task().id.clone();
        cast(
            &store,
            &id,
            &approver("a1", &["*"], &[]),
            Ballot::Approve { note: None },
        )
        .unwrap();
        let t = cast(
            &store,
            &id,
            &approver("a2", &["*"], &[]),
            Ballot::Modify {
                arguments: json!({"cents": 9000}),
                note: Some("one zero too many".into()),
            },
        )
        .unwrap();
        // a1 approved other arguments: only a2's modification counts.
        assert_eq!(t.state, state::PENDING);
        assert_eq!(t.votes.len(), 1);
        let t = cast(
            &store,
            &id,
            &approver("a1", &["*"], &[]),
            Ballot::Approve { note: None },
        )
        .unwrap();
        assert_eq!(t.state, state::APPROVED);
        let Ticket::Run { arguments, .. } = a.take_or_open(&req).unwrap() else {
            panic!("runs")
        };
        assert_eq!(arguments, json!({"cents": 9000}));
    }

    #[test]
    fn a_denial_is_delivered_once_with_its_note() {
        let (_d, store) = store();
        let a = Approvals::new(store.clone(), Duration::ZERO, 60);
        let req = request("t/w/prod/bot", json!({"x": 1}), &["required"]);
        let id = a.take_or_open(&req).unwrap().task().id.clone();
        let alice = approver("alice", &["t/w"], &[]);
        assert!(matches!(
            cast(&store, &id, &alice, Ballot::Deny { note: " ".into() }),
            Err(VoteError::Invalid(_))
        ));
        cast(
            &store,
            &id,
            &alice,
            Ballot::Deny {
                note: "not this month".into(),
            },
        )
        .unwrap();
        let Ticket::Denied { task } = a.take_or_open(&req).unwrap() else {
            panic!("denied")
        };
        assert_eq!(task.note.as_deref(), Some("not this month"));
        assert!(matches!(
            a.take_or_open(&req).unwrap(),
            Ticket::Pending { .. }
        ));
    }

    #[test]
    fn expired_tasks_cannot_be_decided_or_used_and_agents_are_capped() {
        let (_d, store) = store();
        let a = Approvals::new(store.clone(), Duration::ZERO, 1);
        let req = request("t/w/prod/bot", json!({"x": 1}), &["required"]);
        let id = a.take_or_open(&req).unwrap().task().id.clone();
        // Move the expiry into the past rather than sleeping.
        let mut t = store.approval(&id).unwrap().unwrap();
        t.expires_at = 1;
        store.put_approval(&mut t).unwrap();
        assert_eq!(a.expire_due().unwrap().len(), 1);
        assert!(matches!(
            cast(
                &store,
                &id,
                &approver("alice", &["*"], &[]),
                Ballot::Approve { note: None }
            ),
            Err(VoteError::Conflict(_))
        ));
        assert!(matches!(
            a.take_or_open(&req).unwrap(),
            Ticket::Expired { .. }
        ));

        for i in 0..MAX_OPEN_PER_AGENT {
            let r = request("t/w/prod/flood", json!({ "i": i }), &["required"]);
            a.take_or_open(&r).unwrap();
        }
        let r = request("t/w/prod/flood", json!({"i": "one more"}), &["required"]);
        assert!(matches!(a.take_or_open(&r), Err(ApprovalError::TooMany(_))));
    }

    #[test]
    fn ids_are_checked_before_lookups() {
        assert!(valid_id(&new_id().unwrap()));
        for bad in [
            "",
            "apr_",
            "apr_../../etc",
            "tok_0123456789abcdef01234567",
            "apr_0123456789ABCDEF01234567",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(truncate("héllo".into(), 2), "h");
    }
}
