//! The audit trail: one record per MCP request, whatever its outcome, hash-chained with a
//! key, committed durably in groups, and the usage counters derived from it.
//!
//! Each stored value is `<mac hex (64)><record JSON>`. A record holds the MAC of the record
//! before it (`prev`), and its own MAC is keyed BLAKE3 (key in `audit.key`, 0600) over its
//! exact JSON bytes, so any change to a stored record, a reordering or a deletion inside the
//! chain breaks verification at that record, and nobody without the key can forge a
//! consistent chain.
//!
//! Group commit: callers serialize their record and enqueue it, then wait; one writer
//! thread takes everything queued (up to a batch limit), splices in the sequence number and
//! the previous MAC, chains it, writes the batch to the write-ahead journal
//! ([`journal`]: one write, one data sync) and then wakes each caller. While fewer records
//! are queued than half the requests under way, the writer sleeps until that many have
//! arrived or 1 ms has passed (a lone caller never waits), so one sync covers many calls;
//! callers wake it only when their record completes what it waits for. The writer copies
//! journaled records into redb with their usage counters in transactions that do not sync
//! (when nothing is queued, every 512 records, or when a reader asks: readers first wait
//! for every acknowledged record to be stored), and commits redb durably before the
//! journal starts over. At start, records the store lacks are replayed from the journal. A
//! call is acknowledged only after its record is on disk; when a commit fails every caller
//! in the batch gets an error (fail closed: the gateway then withholds the result) and the
//! chain resumes from the last acknowledged record.
//!
//! Threat: repudiation (an agent's or operator's action without a trace), silent tampering
//! with the trail, and secrets leaking into it (arguments are stored only when policy says
//! so, and then with secret-looking values redacted).

mod journal;

use crate::storage::{Store, StoreError, Usage};
use journal::Journal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most records committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Records queued before further callers are refused (each caller waits for its own record,
/// so this is only reached with that many requests under way at once).
const QUEUE: usize = 16_384;
/// The longest the writer waits for more records before it commits.
const LINGER_MAX: Duration = Duration::from_millis(1);
/// Journaled records the writer lets wait before it copies them into the store (it copies
/// sooner when nothing is queued, or when a reader asks).
const APPLY_BATCH: usize = 512;
/// The longest a reader waits for the writer to store what it acknowledged.
const CATCH_UP: Duration = Duration::from_secs(10);
/// MAC of the record before the first one.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number (1-based, contiguous). Assigned by the writer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// Unix milliseconds.
    pub ts_ms: u64,
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
    /// `ok`, `tool_error`, `trap`, `denied`, `approval_required`, `unknown_tool`,
    /// `unauthenticated`, `rate_limited`, `error`.
    pub outcome: String,
    /// A short class of the error (e.g. `expired`, `timeout`, `memory`).
    pub error_class: Option<String>,
    /// Latency, microseconds.
    pub latency_us: u64,
    /// Fuel consumed, when metered.
    pub fuel: Option<u64>,
    /// MAC of the previous record. Assigned by the writer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// The message of a request refused because the trail cannot take records.
pub const UNAVAILABLE: &str = "the audit trail is unavailable, so requests are refused";

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
        self.outcome != "ok"
    }

    /// The usage this record adds, under `agent path|tool` (tool `-` when none).
    fn usage(&self) -> Option<(String, Usage)> {
        let principal = self.principal.as_deref()?;
        let key = format!("{principal}|{}", self.tool.as_deref().unwrap_or("-"));
        let delta = Usage {
            calls: 1,
            errors: u64::from(self.is_error()),
            latency_us: self.latency_us,
            fuel: self.fuel.unwrap_or(0),
        };
        Some((key, delta))
    }
}

/// Errors of the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The record could not be made durable; the call must be refused.
    #[error("the audit trail is unavailable: {0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key file could not be read or created.
    #[error("audit key {0}")]
    Key(String),
}

/// The chain's secret key.
#[derive(Clone)]
pub struct ChainKey([u8; 32]);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// Loads `path`, creating it (0600, 32 random bytes) if missing.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let err = |e: &dyn std::fmt::Display| AuditError::Key(format!("{}: {e}", path.display()));
        // Created once; a key of the wrong length is an error, never replaced (a new key
        // would make every existing record unverifiable).
        if !path.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| err(&e))?;
            crate::runtime::cache::write_private_atomic(path, &key).map_err(|e| err(&e))?;
        }
        let bytes = std::fs::read(path).map_err(|e| err(&e))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| err(&"is not 32 bytes long"))?;
        Ok(Self(key))
    }

    fn mac(&self, json: &[u8]) -> String {
        blake3::keyed_hash(&self.0, json).to_hex().to_string()
    }
}

/// Chains a record's JSON body (serialized without `seq` and `prev`) after `prev`: the
/// stored JSON is the body with `"seq"` and `"prev"` spliced in front, and the MAC covers
/// those exact bytes. Returns (mac, stored bytes).
fn seal(key: &ChainKey, seq: u64, prev: &str, body: &[u8]) -> (String, Vec<u8>) {
    let fields = body.get(1..).unwrap_or_default();
    let mut json = Vec::with_capacity(body.len() + 100);
    json.extend_from_slice(b"{\"seq\":");
    json.extend_from_slice(seq.to_string().as_bytes());
    json.extend_from_slice(b",\"prev\":\"");
    json.extend_from_slice(prev.as_bytes());
    json.push(b'"');
    if fields.len() > 1 {
        json.push(b',');
    }
    json.extend_from_slice(if fields.is_empty() { b"}" } else { fields });
    let mac = key.mac(&json);
    let mut stored = Vec::with_capacity(64 + json.len());
    stored.extend_from_slice(mac.as_bytes());
    stored.extend_from_slice(&json);
    (mac, stored)
}

/// Splits stored bytes into (mac, json).
fn unseal(bytes: &[u8]) -> Option<(&str, &[u8])> {
    if bytes.len() < 64 {
        return None;
    }
    let (mac, json) = bytes.split_at(64);
    Some((std::str::from_utf8(mac).ok()?, json))
}

/// Decodes a stored record without checking its MAC.
pub fn decode(bytes: &[u8]) -> Option<AuditRecord> {
    let (_, json) = unseal(bytes)?;
    serde_json::from_slice(json).ok()
}

/// The result of verifying the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// The first record that does not verify, with why.
    pub first_broken: Option<Broken>,
}

/// A record that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// Its sequence number.
    pub seq: u64,
    /// Why.
    pub reason: String,
}

/// Walks the whole chain and names the first record that does not verify.
pub fn verify(store: &Store, key: &ChainKey) -> Result<Verification, StoreError> {
    let mut prev = GENESIS.to_owned();
    let mut expected = 1u64;
    let mut records = 0u64;
    let mut broken = None;
    store.scan_audit(0, |seq, bytes| {
        records += 1;
        let fail = |reason: &str| {
            Some(Broken {
                seq,
                reason: reason.to_owned(),
            })
        };
        broken = if seq != expected {
            fail(&format!(
                "expected record {expected} here (a record is missing)"
            ))
        } else {
            match unseal(bytes) {
                None => fail("record is truncated"),
                Some((mac, json)) => {
                    if key.mac(json) != mac {
                        fail("MAC does not match the record's content (modified)")
                    } else {
                        match serde_json::from_slice::<AuditRecord>(json) {
                            Err(_) => fail("record does not decode"),
                            Ok(r) if r.seq != seq => fail("record's sequence number was changed"),
                            Ok(r) if r.prev != prev => {
                                fail("chain link to the previous record is broken")
                            }
                            Ok(_) => {
                                prev = mac.to_owned();
                                None
                            }
                        }
                    }
                }
            }
        };
        expected = seq + 1;
        broken.is_none()
    })?;
    Ok(Verification {
        records,
        first_broken: broken,
    })
}

/// A query over the trail (newest first).
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Principal (agent path or a prefix of it: `tenant`, `tenant/workspace`, ...).
    pub principal: Option<String>,
    /// Exposed tool name.
    pub tool: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Only records at or after this Unix millisecond.
    pub since_ms: Option<u64>,
    /// Only records before this Unix millisecond.
    pub until_ms: Option<u64>,
    /// Only records with a sequence number below this (paging backwards).
    pub before_seq: Option<u64>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<usize>,
}

impl Query {
    fn matches(&self, r: &AuditRecord) -> bool {
        let principal_ok = self.principal.as_deref().is_none_or(|p| {
            r.principal.as_deref().is_some_and(|rp| {
                rp == p || (rp.starts_with(p) && rp.as_bytes().get(p.len()) == Some(&b'/'))
            })
        });
        principal_ok
            && self
                .tool
                .as_deref()
                .is_none_or(|t| r.tool.as_deref() == Some(t))
            && self.outcome.as_deref().is_none_or(|o| r.outcome == o)
            && self.since_ms.is_none_or(|s| r.ts_ms >= s)
            && self.until_ms.is_none_or(|u| r.ts_ms < u)
    }
}

/// Runs a query (newest first).
pub fn query(store: &Store, q: &Query) -> Result<Vec<AuditRecord>, StoreError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut out = Vec::new();
    store.scan_audit_rev(q.before_seq.unwrap_or(u64::MAX), |_, bytes| {
        if let Some(r) = decode(bytes)
            && q.matches(&r)
        {
            out.push(r);
        }
        out.len() < limit
    })?;
    Ok(out)
}

/// Names whose values are never stored.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "pass",
        "secret",
        "token",
        "auth",
        "key",
        "cookie",
        "credential",
        "session",
        "private",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Values that look like credentials.
fn secret_value(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    v.starts_with("wdn_")
        || lower.starts_with("bearer ")
        || lower.starts_with("basic ")
        || v.starts_with("-----BEGIN")
        || ["ghp_", "gho_", "github_pat_", "xox", "sk-", "AKIA", "eyJ"]
            .iter()
            .any(|p| v.starts_with(p))
}

/// Redacts secret values: by argument name, by the input schema (`writeOnly`, `format:
/// password`) and by value shape. Nested objects and arrays are walked.
pub fn redact(arguments: &Value, schema: &Value) -> Value {
    fn walk(v: &Value, schema: Option<&Value>, name: Option<&str>) -> Value {
        let schema_secret = schema.is_some_and(|s| {
            s.get("writeOnly").and_then(Value::as_bool) == Some(true)
                || s.get("format").and_then(Value::as_str) == Some("password")
        });
        if schema_secret || name.is_some_and(secret_name) {
            return Value::String("[redacted]".into());
        }
        match v {
            Value::String(s) if secret_value(s) => Value::String("[redacted]".into()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let sub = schema
                            .and_then(|s| s.get("properties"))
                            .and_then(|p| p.get(k));
                        (k.clone(), walk(v, sub, Some(k)))
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                let sub = schema.and_then(|s| s.get("items"));
                Value::Array(items.iter().map(|i| walk(i, sub, None)).collect())
            }
            other => other.clone(),
        }
    }
    walk(arguments, Some(schema), None)
}

/// BLAKE3 digest of the arguments' JSON.
pub fn digest(arguments: &Value) -> String {
    blake3::hash(arguments.to_string().as_bytes())
        .to_hex()
        .to_string()
}

/// A request under way that will append a record (see [`AuditLog::expect`]): the writer
/// counts them to judge how many records are about to arrive.
pub struct Expected(Arc<Queue>);

impl std::fmt::Debug for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expected")
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A record on its way to the writer: its JSON body and usage delta are made on the
/// caller's thread, so the writer only chains, MACs and commits.
struct Pending {
    body: Vec<u8>,
    usage: Option<(String, Usage)>,
    done: oneshot::Sender<Answer>,
}

/// The writer's answer: the sequence number (or why the commit failed), and the body's
/// buffer, handed back so that the caller's thread frees what it allocated (a free from
/// another thread costs the allocator more).
type Answer = (Result<u64, String>, Vec<u8>);

/// The writer's queue, shared with the callers.
struct Queue {
    /// The longest the writer waits for more records ([`LINGER_MAX`] but in tests).
    linger: Duration,
    state: Mutex<QueueState>,
    /// Signalled when the queue reaches what the sleeping writer waits for, and on close.
    ready: Condvar,
    /// Requests under way that will each append a record (see [`AuditLog::expect`]).
    inflight: AtomicUsize,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<Pending>,
    /// How many queued records wake the sleeping writer (0: it is not asleep). Callers
    /// signal only when their record reaches it, so a batch costs the writer one wake-up.
    wake_at: usize,
    /// Set when the log is dropped: the writer commits what is queued and stops.
    closed: bool,
    /// A reader waits for every acknowledged record to be in the store.
    flush: bool,
}

/// What [`Queue::next_batch`] saw besides the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Next {
    /// A reader asked for the store to catch up.
    flush: bool,
}

impl Queue {
    fn new(linger: Duration) -> Self {
        Self {
            linger,
            state: Mutex::default(),
            ready: Condvar::new(),
            inflight: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, pending: Pending) -> Result<(), AuditError> {
        let mut state = self.lock();
        if state.closed {
            return Err(AuditError::Unavailable("the audit writer stopped".into()));
        }
        if state.pending.len() >= QUEUE {
            return Err(AuditError::Unavailable("the audit queue is full".into()));
        }
        state.pending.push(pending);
        let wake = state.wake_at != 0 && state.pending.len() >= state.wake_at;
        if wake {
            state.wake_at = 0;
        }
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    fn is_empty(&self) -> bool {
        self.lock().pending.is_empty()
    }

    fn request_flush(&self) {
        self.lock().flush = true;
        self.ready.notify_one();
    }

    /// Waits for the next batch and moves it into `batch` (empty when only a reader's
    /// flush woke the writer); None once closed and empty.
    ///
    /// After the first record, while fewer records are queued than half the requests under
    /// way (the others will append soon), the writer sleeps until enough have arrived or
    /// the linger time has passed, so one sync covers many calls. Half, not all: the rest
    /// are served by the next commit, so the cores keep working during this one's sync. A
    /// lone caller never waits.
    fn next_batch(&self, batch: &mut Vec<Pending>) -> Option<Next> {
        let mut state = self.lock();
        while state.pending.is_empty() && !state.flush {
            if state.closed {
                return None;
            }
            state.wake_at = 1;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let deadline = Instant::now() + self.linger;
        while !state.pending.is_empty() {
            let want = (self.inflight.load(Ordering::Acquire) / 2).min(MAX_BATCH);
            let now = Instant::now();
            if state.pending.len() >= want || state.closed || state.flush || now >= deadline {
                break;
            }
            state.wake_at = want;
            state = self
                .ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state.wake_at = 0;
        let n = state.pending.len().min(MAX_BATCH);
        batch.extend(state.pending.drain(..n));
        Some(Next {
            flush: std::mem::take(&mut state.flush),
        })
    }
}

/// How far the writer got: acknowledged (journaled) and stored, by sequence number.
#[derive(Debug, Default)]
struct Progress {
    acked: AtomicU64,
    stored: Mutex<u64>,
    stored_changed: Condvar,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, u64> {
        self.stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_stored(&self, seq: u64) {
        *self.lock() = seq;
        self.stored_changed.notify_all();
    }
}

/// Usage aggregates in memory, mirrored from the store.
type UsageMap = BTreeMap<String, Usage>;

/// The audit log: the writer's queue, the chain key and the live usage counters.
pub struct AuditLog {
    /// False only in benchmark mode (`warden up --unsafe-no-audit`): records are dropped.
    enabled: bool,
    queue: Arc<Queue>,
    progress: Arc<Progress>,
    healthy: Arc<AtomicBool>,
    usage: Arc<Mutex<UsageMap>>,
    key: ChainKey,
    store: Arc<Store>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Whether the debug-build fault injection asks commits to fail (`WARDEN_FAILPOINTS`
/// containing `audit-commit`). Release builds never fail on purpose.
fn failpoint_audit_commit() -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("WARDEN_FAILPOINTS").is_ok_and(|v| v.split(',').any(|f| f == "audit-commit"))
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// The writer thread's state: the chain's head, the journal, the records journaled but not
/// yet in the store, and what it shares with [`AuditLog`].
struct Writer {
    queue: Arc<Queue>,
    progress: Arc<Progress>,
    store: Arc<Store>,
    journal: Journal,
    key: ChainKey,
    usage: Arc<Mutex<UsageMap>>,
    healthy: Arc<AtomicBool>,
    /// Sequence number and MAC of the last acknowledged record.
    seq: u64,
    prev: String,
    /// Journaled records not yet in the store, and their usage.
    unstored: Vec<(u64, Vec<u8>)>,
    unstored_usage: HashMap<String, Usage>,
    /// The last copy into the store failed (calls are refused until one succeeds).
    store_failed: bool,
    /// Debug-build fault injection: every commit fails.
    fail: bool,
}

impl Writer {
    /// Commits batches until the log is closed and its queue empty, then stores everything
    /// durably.
    fn run(mut self) {
        let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
        while let Some(next) = self.queue.next_batch(&mut batch) {
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            // Idle is judged after the sync: what arrived meanwhile goes first.
            if next.flush || self.unstored.len() >= APPLY_BATCH || self.queue.is_empty() {
                self.store_journaled(false);
            }
        }
        self.store_journaled(true);
    }

    /// Chains `batch` after the last record, makes it durable in the journal, and answers
    /// every caller: with its sequence number, or with the error when that failed (the
    /// chain then resumes from the last acknowledged record). When the journal is full, it
    /// first stores everything journaled durably and starts the journal over; a batch too
    /// large for the journal goes straight into the store, durably.
    fn commit(&mut self, batch: &mut Vec<Pending>) {
        let mut sealed = Vec::with_capacity(batch.len());
        let mut deltas: HashMap<String, Usage> = HashMap::new();
        let mut prev = self.prev.clone();
        for (p, seq) in batch.iter_mut().zip(self.seq + 1..) {
            let (mac, bytes) = seal(&self.key, seq, &prev, &p.body);
            prev = mac;
            sealed.push((seq, bytes));
            if let Some((k, d)) = p.usage.take() {
                deltas.entry(k).or_default().add(&d);
            }
        }
        match self.make_durable(&sealed, &deltas) {
            Ok(direct) => {
                let first = self.seq + 1;
                self.seq += batch.len() as u64;
                self.prev = prev;
                self.healthy.store(!self.store_failed, Ordering::Release);
                let mut usage = self
                    .usage
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (k, d) in &deltas {
                    usage.entry(k.clone()).or_default().add(d);
                    if !direct {
                        self.unstored_usage.entry(k.clone()).or_default().add(d);
                    }
                }
                drop(usage);
                if direct {
                    self.progress.set_stored(self.seq);
                } else {
                    self.unstored.append(&mut sealed);
                }
                // Readers that learn of a record from its answer must find it acknowledged.
                self.progress.acked.store(self.seq, Ordering::Release);
                for (p, seq) in batch.drain(..).zip(first..) {
                    let _ = p.done.send((Ok(seq), p.body));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "audit commit failed; refusing the calls");
                self.healthy.store(false, Ordering::Release);
                for p in batch.drain(..) {
                    let _ = p.done.send((Err(e.clone()), p.body));
                }
            }
        }
    }

    /// Makes `sealed` durable: in the journal, after storing everything journaled durably
    /// and starting the journal over when it is full, or (larger than the whole journal)
    /// straight in the store. Ok(true) for the latter.
    fn make_durable(
        &mut self,
        sealed: &[(u64, Vec<u8>)],
        deltas: &HashMap<String, Usage>,
    ) -> Result<bool, String> {
        if self.fail {
            return Err("commit refused (failpoint audit-commit)".to_owned());
        }
        if !self.journal.fits(sealed) {
            if !self.store_journaled(true) {
                return Err("the audit trail could not be stored".to_owned());
            }
            self.journal.reset();
        }
        if self.journal.fits(sealed) {
            return self
                .journal
                .append(sealed)
                .map(|()| false)
                .map_err(|e| format!("audit journal {}: {e}", self.journal.path().display()));
        }
        let usage: Vec<(String, Usage)> =
            deltas.iter().map(|(k, d)| (k.clone(), d.clone())).collect();
        self.store
            .append_audit(sealed, &usage, true)
            .map(|()| true)
            .map_err(|e| e.to_string())
    }

    /// Copies the journaled records into the store with their usage, durably or not (the
    /// journal holds them durably already). A durable copy also persists every earlier one,
    /// so the journal may start over after it. False when the store failed: the records
    /// stay journaled and the next copy retries them, and calls are refused meanwhile.
    fn store_journaled(&mut self, durable: bool) -> bool {
        if self.unstored.is_empty() && !durable {
            return true;
        }
        let usage: Vec<(String, Usage)> = self.unstored_usage.drain().collect();
        let result = if self.fail {
            Err("store refused (failpoint audit-commit)".to_owned())
        } else {
            self.store
                .append_audit(&self.unstored, &usage, durable)
                .map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                self.unstored.clear();
                self.progress.set_stored(self.seq);
                if self.store_failed {
                    self.store_failed = false;
                    self.healthy.store(true, Ordering::Release);
                }
                true
            }
            Err(e) => {
                if !self.store_failed {
                    tracing::error!(error = %e, records = self.unstored.len(), "storing journaled audit records failed; refusing calls");
                }
                self.unstored_usage.extend(usage);
                self.store_failed = true;
                self.healthy.store(false, Ordering::Release);
                false
            }
        }
    }
}

/// Replays into `store` the journaled records it lacks (after a crash), durably, and
/// returns the journal, ready to start over. Fails when the journal does not continue the
/// store's trail (records would be missing in between).
pub fn recover(store: &Store) -> Result<Journal, AuditError> {
    let path = journal_path(store);
    let (journal, records) = Journal::open(&path)
        .map_err(|e| AuditError::Unavailable(format!("audit journal {}: {e}", path.display())))?;
    let last = store.last_audit()?.map_or(0, |(seq, _)| seq);
    let missing: Vec<(u64, Vec<u8>)> = records.into_iter().filter(|(s, _)| *s > last).collect();
    if let Some((first, _)) = missing.first()
        && *first != last + 1
    {
        return Err(AuditError::Unavailable(format!(
            "audit journal {} continues at record {first} but the store ends at record {last}",
            path.display()
        )));
    }
    // What the reopened store holds is durable, so the journal may start over once the
    // missing records are durable too.
    if missing.is_empty() {
        return Ok(journal);
    }
    let mut usage: HashMap<String, Usage> = HashMap::new();
    for (_, bytes) in &missing {
        if let Some((k, d)) = decode(bytes).and_then(|r| r.usage()) {
            usage.entry(k).or_default().add(&d);
        }
    }
    tracing::warn!(
        records = missing.len(),
        from = last + 1,
        "replaying audit records from the journal"
    );
    store.append_audit(&missing, &usage.into_iter().collect::<Vec<_>>(), true)?;
    Ok(journal)
}

fn journal_path(store: &Store) -> std::path::PathBuf {
    store.path().with_file_name("audit.journal")
}

impl AuditLog {
    /// Starts the writer over `store` (replaying its journal first), continuing the chain
    /// from its last record.
    pub fn start(store: Arc<Store>, key: ChainKey) -> Result<Self, AuditError> {
        let journal = recover(&store)?;
        let (seq, prev) = match store.last_audit()? {
            Some((seq, bytes)) => {
                let (mac, _) = unseal(&bytes).ok_or_else(|| {
                    AuditError::Unavailable(format!("audit record {seq} is truncated"))
                })?;
                (seq, mac.to_owned())
            }
            None => (0, GENESIS.to_owned()),
        };
        let usage = Arc::new(Mutex::new(store.usage()?.into_iter().collect()));
        let healthy = Arc::new(AtomicBool::new(true));
        let queue = Arc::new(Queue::new(LINGER_MAX));
        let progress = Arc::new(Progress::default());
        progress.acked.store(seq, Ordering::Release);
        progress.set_stored(seq);
        let writer = Writer {
            queue: queue.clone(),
            progress: progress.clone(),
            store: store.clone(),
            journal,
            key: key.clone(),
            usage: usage.clone(),
            healthy: healthy.clone(),
            seq,
            prev,
            unstored: Vec::new(),
            unstored_usage: HashMap::new(),
            store_failed: false,
            fail: failpoint_audit_commit(),
        };
        let writer = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || writer.run())
            .map_err(|e| AuditError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            enabled: true,
            queue,
            progress,
            healthy,
            usage,
            key,
            store,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Stops the writer once it has committed what is queued and stored everything
    /// durably (later records are refused). At shutdown, so the store alone holds the
    /// trail; idempotent.
    pub fn close(&self) {
        self.queue.close();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }

    /// Waits until every acknowledged record is in the store, so readers see them all.
    fn catch_up(&self) -> Result<(), StoreError> {
        let target = self.progress.acked.load(Ordering::Acquire);
        let mut stored = self.progress.lock();
        if *stored >= target {
            return Ok(());
        }
        self.queue.request_flush();
        let deadline = Instant::now() + CATCH_UP;
        while *stored < target {
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Db {
                    path: self.store.path().to_owned(),
                    message: format!(
                        "audit records up to {target} are journaled but not yet stored (stored: {})",
                        *stored
                    ),
                });
            }
            stored = self
                .progress
                .stored_changed
                .wait_timeout(stored, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    /// Whether the last commit succeeded (calls are refused up front while it did not).
    /// While not, asking also nudges the writer to retry storing what is journaled.
    pub fn healthy(&self) -> bool {
        let healthy = self.healthy.load(Ordering::Acquire);
        if !healthy {
            self.queue.request_flush();
        }
        healthy
    }

    /// Benchmark mode: acknowledge without recording (to measure what the trail costs).
    /// Never for production: nothing is audited.
    pub fn disable_for_benchmarks(&mut self) {
        self.enabled = false;
    }

    /// Announces a request that will append a record; hold the guard until its record is
    /// acknowledged (or the request ends).
    pub fn expect(&self) -> Expected {
        Self::expect_on(&self.queue)
    }

    fn expect_on(queue: &Arc<Queue>) -> Expected {
        queue.inflight.fetch_add(1, Ordering::AcqRel);
        Expected(queue.clone())
    }

    /// Appends a record and waits until it is durable. Returns its sequence number.
    pub async fn record(&self, record: AuditRecord) -> Result<u64, AuditError> {
        if !self.enabled {
            return Ok(0);
        }
        let usage = record.usage();
        let body = serde_json::to_vec(&AuditRecord {
            seq: 0,
            prev: String::new(),
            ..record
        })
        .map_err(|e| AuditError::Unavailable(format!("record does not serialize: {e}")))?;
        let (done, wait) = oneshot::channel();
        self.queue.push(Pending { body, usage, done })?;
        match wait.await {
            Ok((Ok(seq), _)) => Ok(seq),
            Ok((Err(e), _)) => Err(AuditError::Unavailable(e)),
            Err(_) => Err(AuditError::Unavailable("the audit writer stopped".into())),
        }
    }

    /// Verifies the whole chain.
    pub fn verify(&self) -> Result<Verification, StoreError> {
        self.catch_up()?;
        verify(&self.store, &self.key)
    }

    /// Queries the trail.
    pub fn query(&self, q: &Query) -> Result<Vec<AuditRecord>, StoreError> {
        self.catch_up()?;
        query(&self.store, q)
    }

    /// Usage counters grouped by `tenant`, `workspace`, `environment`, `agent` or `tool`.
    pub fn usage(&self, group_by: &str) -> BTreeMap<String, Usage> {
        let usage = self
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: BTreeMap<String, Usage> = BTreeMap::new();
        for (key, u) in usage.iter() {
            let (principal, tool) = key.split_once('|').unwrap_or((key.as_str(), "-"));
            let segments: Vec<&str> = principal.split('/').collect();
            let group = match group_by {
                "tenant" => segments[..1.min(segments.len())].join("/"),
                "workspace" => segments[..2.min(segments.len())].join("/"),
                "environment" => segments[..3.min(segments.len())].join("/"),
                "tool" => tool.to_owned(),
                _ => principal.to_owned(),
            };
            out.entry(group).or_default().add(u);
        }
        out
    }

    /// The raw counters (`agent path|tool` -> usage), for metrics.
    pub fn usage_raw(&self) -> UsageMap {
        self.usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(outcome: &str) -> AuditRecord {
        AuditRecord {
            request: "tools/call".into(),
            principal: Some("a/b/c/d".into()),
            tool: Some("warden_text__stats".into()),
            outcome: outcome.into(),
            ..AuditRecord::default()
        }
    }

    /// A new store and chain key in a temporary directory.
    fn store_and_key() -> (tempfile::TempDir, Arc<Store>, ChainKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let key = ChainKey::load_or_create(&dir.path().join("audit.key")).unwrap();
        (dir, store, key)
    }

    #[tokio::test]
    async fn chain_verifies_and_names_the_first_modified_record() {
        let (_dir, store, key) = store_and_key();
        let log = AuditLog::start(store.clone(), key.clone()).unwrap();
        let mut seqs = Vec::new();
        for i in 0..10 {
            seqs.push(
                log.record(rec(if i % 3 == 0 { "denied" } else { "ok" }))
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(log.verify().unwrap().first_broken, None);
        assert_eq!(log.usage("tenant")["a"].calls, 10);
        assert_eq!(log.usage("tool")["warden_text__stats"].errors, 4);
        let q = Query {
            outcome: Some("denied".into()),
            principal: Some("a/b".into()),
            ..Query::default()
        };
        assert_eq!(log.query(&q).unwrap().len(), 4);
        // Flip one byte inside record 6's JSON.
        let mut bytes = Vec::new();
        store
            .scan_audit(6, |_, b| {
                bytes = b.to_vec();
                false
            })
            .unwrap();
        let pos = bytes.len() - 5;
        bytes[pos] ^= 0x01;
        store.overwrite_audit_record(6, &bytes).unwrap();
        let v = verify(&store, &key).unwrap();
        assert_eq!(v.first_broken.unwrap().seq, 6);
        // A restarted log continues the chain after the last record.
        drop(log);
        let log = AuditLog::start(store.clone(), key).unwrap();
        assert_eq!(log.record(rec("ok")).await.unwrap(), 11);
    }

    fn pending() -> (Pending, oneshot::Receiver<Answer>) {
        let (done, wait) = oneshot::channel();
        let p = Pending {
            body: b"{}".to_vec(),
            usage: None,
            done,
        };
        (p, wait)
    }

    #[test]
    fn a_lone_caller_is_taken_at_once_even_with_a_long_linger() {
        let queue = Arc::new(Queue::new(Duration::from_secs(3600)));
        let _me = AuditLog::expect_on(&queue);
        queue.push(pending().0).unwrap();
        let mut batch = Vec::new();
        assert!(queue.next_batch(&mut batch).is_some());
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn the_writer_waits_for_half_the_requests_under_way() {
        let queue = Arc::new(Queue::new(Duration::from_secs(3600)));
        let guards: Vec<Expected> = (0..4).map(|_| AuditLog::expect_on(&queue)).collect();
        queue.push(pending().0).unwrap();
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                assert!(queue.next_batch(&mut batch).is_some());
                batch.len()
            })
        };
        // The writer, holding one record of four requests under way, waits for a second
        // (half of four) however long that takes; the second push wakes it.
        queue.push(pending().0).unwrap();
        assert_eq!(writer.join().unwrap(), 2);
        drop(guards);
    }

    #[test]
    fn closing_hands_over_what_is_queued_then_refuses() {
        let queue = Arc::new(Queue::new(Duration::from_secs(3600)));
        let _under_way: Vec<Expected> = (0..8).map(|_| AuditLog::expect_on(&queue)).collect();
        queue.push(pending().0).unwrap();
        queue.close();
        let mut batch = Vec::new();
        // Closed: no lingering, the queued record is still committed.
        assert!(queue.next_batch(&mut batch).is_some());
        assert_eq!(batch.len(), 1);
        batch.clear();
        assert!(queue.next_batch(&mut batch).is_none());
        assert!(matches!(
            queue.push(pending().0),
            Err(AuditError::Unavailable(_))
        ));
    }

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let queue = Queue::new(Duration::ZERO);
        let mut waits = Vec::new();
        for _ in 0..QUEUE {
            let (p, w) = pending();
            queue.push(p).unwrap();
            waits.push(w);
        }
        let err = queue.push(pending().0).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        let mut batch = Vec::new();
        assert!(queue.next_batch(&mut batch).is_some());
        assert_eq!(batch.len(), MAX_BATCH);
    }

    #[test]
    fn a_reader_flush_wakes_the_idle_writer_with_nothing_to_commit() {
        let queue = Arc::new(Queue::new(Duration::from_secs(3600)));
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                let next = queue.next_batch(&mut batch);
                (next, batch.len())
            })
        };
        queue.request_flush();
        let (next, n) = writer.join().unwrap();
        assert_eq!(next, Some(Next { flush: true }));
        assert_eq!(n, 0);
    }

    fn big(outcome: &str, bytes: usize) -> AuditRecord {
        AuditRecord {
            reasons: vec!["x".repeat(bytes)],
            ..rec(outcome)
        }
    }

    #[tokio::test]
    async fn a_full_journal_is_stored_and_started_over_and_oversized_batches_go_straight_in() {
        let (_dir, store, key) = store_and_key();
        let log = AuditLog::start(store.clone(), key.clone()).unwrap();
        // 80 records of 64 KiB: more than the journal holds, so it starts over at least
        // once; then one record larger than the whole journal.
        let n = 80u64;
        for i in 1..=n {
            assert_eq!(log.record(big("ok", 64 << 10)).await.unwrap(), i);
        }
        let huge = big("tool_error", journal::CAPACITY as usize + 1);
        assert_eq!(log.record(huge).await.unwrap(), n + 1);
        assert_eq!(log.record(rec("ok")).await.unwrap(), n + 2);
        let v = log.verify().unwrap();
        assert_eq!((v.records, v.first_broken), (n + 2, None));
        assert_eq!(log.usage("tenant")["a"].calls, n + 2);
        drop(log);
        // After a clean stop nothing is replayed, and the chain goes on.
        let log = AuditLog::start(store.clone(), key.clone()).unwrap();
        assert_eq!(log.record(rec("ok")).await.unwrap(), n + 3);
        assert_eq!(log.verify().unwrap().first_broken, None);
        assert_eq!(log.usage("tenant")["a"].calls, n + 3);
    }

    /// Seals `outcomes` as records `from..` after `prev`, as the writer would.
    fn sealed(key: &ChainKey, from: u64, prev: &str, outcomes: &[&str]) -> Vec<(u64, Vec<u8>)> {
        let mut prev = prev.to_owned();
        let mut out = Vec::new();
        for (seq, outcome) in (from..).zip(outcomes) {
            let body = serde_json::to_vec(&rec(outcome)).unwrap();
            let (mac, bytes) = seal(key, seq, &prev, &body);
            prev = mac;
            out.push((seq, bytes));
        }
        out
    }

    #[tokio::test]
    async fn records_journaled_before_a_crash_are_replayed_with_their_usage() {
        let (_dir, store, key) = store_and_key();
        // Record 1 reached the store; 1 to 3 were journaled (acknowledged), then a crash.
        let records = sealed(&key, 1, GENESIS, &["ok", "denied", "ok"]);
        store.append_audit(&records[..1], &[], true).unwrap();
        let (mut j, _) = Journal::open(&journal_path(&store)).unwrap();
        j.append(&records).unwrap();
        drop(j);
        let log = AuditLog::start(store.clone(), key.clone()).unwrap();
        let v = log.verify().unwrap();
        assert_eq!((v.records, v.first_broken), (3, None));
        // Usage counts the replayed records (record 1's usage was not stored with it).
        assert_eq!(log.usage("tenant")["a"].calls, 2);
        assert_eq!(log.usage("tenant")["a"].errors, 1);
        assert_eq!(log.record(rec("ok")).await.unwrap(), 4);
        assert_eq!(log.verify().unwrap().first_broken, None);
    }

    #[test]
    fn a_journal_that_does_not_continue_the_store_is_refused() {
        let (_dir, store, key) = store_and_key();
        let records = sealed(&key, 1, GENESIS, &["ok", "ok", "ok", "ok"]);
        store.append_audit(&records[..1], &[], true).unwrap();
        let (mut j, _) = Journal::open(&journal_path(&store)).unwrap();
        j.append(&records[2..]).unwrap();
        drop(j);
        let err = AuditLog::start(store, key).unwrap_err().to_string();
        assert!(
            err.contains("continues at record 3 but the store ends at record 1"),
            "{err}"
        );
    }

    #[test]
    fn sealed_records_decode_with_their_place_in_the_chain() {
        let key = ChainKey([7; 32]);
        let body = serde_json::to_vec(&rec("ok")).unwrap();
        let (mac, stored) = seal(&key, 42, GENESIS, &body);
        let (stored_mac, json) = unseal(&stored).unwrap();
        assert_eq!(stored_mac, mac);
        assert_eq!(key.mac(json), mac);
        let r = decode(&stored).unwrap();
        assert_eq!(
            (r.seq, r.prev.as_str(), r.outcome.as_str()),
            (42, GENESIS, "ok")
        );
        // A body without fields still makes valid JSON.
        let (_, stored) = seal(&key, 1, &mac, b"{}");
        let v: Value = serde_json::from_slice(unseal(&stored).unwrap().1).unwrap();
        assert_eq!(v, serde_json::json!({"seq": 1, "prev": mac}));
    }

    #[test]
    fn secrets_are_redacted() {
        let schema = serde_json::json!({"properties": {"body": {"format": "password"}}});
        let args = serde_json::json!({
            "url": "https://x", "api_key": "abc", "body": "pw",
            "headers": [{"name": "x", "value": "Bearer abc"}], "note": "wdn_st_xyz"
        });
        let r = redact(&args, &schema);
        assert_eq!(r["url"], "https://x");
        assert_eq!(r["api_key"], "[redacted]");
        assert_eq!(r["body"], "[redacted]");
        assert_eq!(r["headers"][0]["value"], "[redacted]");
        assert_eq!(r["note"], "[redacted]");
    }
}
