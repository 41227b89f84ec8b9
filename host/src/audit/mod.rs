//! The audit trail: one record per request, whatever its outcome, hash-chained with a key,
//! committed durably in groups, and the usage counters derived from it.
//!
//! A request carries a [`PendingRecord`] from its arrival (see [`AuditLog::open`]); it is
//! finished once with a typed [`Outcome`], folded into a flood summary, or, dropped
//! unfinished, written as an error. The record's fields are capped (`record.rs`).
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
//! callers wake it only when their record completes what it waits for. The writer then
//! hands the records to the store thread ([`copier`]), which copies them into redb with
//! their usage counters in transactions that do not sync (every 512 records, after 50 ms,
//! or when a reader asks: readers first wait for every acknowledged record to be stored).
//! The journal is used as two halves: when one is full the writer asks the store thread
//! to commit redb durably up to its last record, and starts over in the other half once
//! the previous commit of that other half is durable. At start, records the store lacks
//! are replayed from both halves. A call is acknowledged only after its record is on
//! disk; when a commit fails every caller in the batch gets an error (fail closed: the
//! gateway then withholds the result) and the chain resumes from the last acknowledged
//! record. An admin change rides with its record ([`PendingRecord::commit`]): the store
//! thread commits both, with every record before it, in one durable redb transaction, or
//! neither; the journal then starts over, so no record after a change is journaled behind
//! a gap that replay would stop at.
//!
//! Threat: repudiation (an agent's or operator's action without a trace), silent tampering
//! with the trail, and secrets leaking into it (arguments are stored only when policy says
//! so, and then with secret-looking values redacted).

mod chain;
mod copier;
mod journal;
mod progress;
mod query;
mod record;
mod redact;
mod writer;

use chain::unseal;
pub use chain::{Broken, ChainKey, GENESIS, Verification, decode, verify};
pub use query::{Query, query};
pub use record::*;
pub use redact::{digest, redact};
pub use writer::{Expected, recover};

use crate::storage::{Store, StoreError, Tx, Usage};
use copier::{Copier, Inbox};
use progress::{Health, Progress};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;
use writer::{LINGER_MAX, Pending, Queue, Writer, failpoint};

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

/// Usage aggregates in memory, mirrored from the store.
type UsageMap = BTreeMap<String, Usage>;

/// What one record adds to the usage counters, and under which key.
type UsageDelta = (String, Usage);

/// A request's audit record from its arrival until it is finished, once, with a typed
/// [`Outcome`]. Stages fill it in through [`PendingRecord::record`]. Dropped unfinished
/// (a path that forgot it, a panic, a cancelled request), it is still written, as an
/// [`Outcome::Error`] of class `unfinished`: every request leaves exactly one record.
pub struct PendingRecord {
    record: AuditRecord,
    started: Instant,
    /// None once finished.
    log: Option<Arc<AuditLog>>,
    /// Counted among the requests under way until the writer acknowledges the record.
    expected: Option<Expected>,
}

impl std::fmt::Debug for PendingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRecord")
            .field("request", &self.record.request)
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

impl PendingRecord {
    /// The record being filled in.
    pub fn record(&mut self) -> &mut AuditRecord {
        &mut self.record
    }

    /// The correlation id (given to the caller with an error).
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// The request it records.
    pub fn request(&self) -> &str {
        &self.record.request
    }

    /// Ends the record without writing it, because a summary record will stand for it
    /// (refused requests of a flooding address: see `ratelimit::AddressLimiter`).
    pub fn absorb(mut self) {
        self.log = None;
    }

    /// Finishes the record with `outcome` and waits until it is durable. An error means
    /// it could not be written: the caller must withhold whatever it was about to return.
    pub async fn finish(mut self, outcome: Outcome) -> Result<u64, AuditError> {
        let mut record = std::mem::take(&mut self.record);
        record.outcome = outcome;
        record.latency_us = elapsed_us(self.started);
        match self.log.take() {
            Some(log) => log.append(record, self.expected.take()).await,
            None => Err(AuditError::Unavailable("record finished twice".into())),
        }
    }
}

/// A record's body as the writer takes it (fields capped, without sequence number and
/// previous MAC, which the writer splices in), and the usage it adds.
fn serialize(mut record: AuditRecord) -> Result<(Vec<u8>, Option<UsageDelta>), AuditError> {
    record.cap_fields();
    let usage = record.usage();
    let body = serde_json::to_vec(&AuditRecord {
        seq: 0,
        prev: String::new(),
        ..record
    })
    .map_err(|e| AuditError::Unavailable(format!("record does not serialize: {e}")))?;
    Ok((body, usage))
}

/// What [`PendingRecord::commit`] did with a change.
#[derive(Debug)]
pub enum Committed<R, E> {
    /// The change and its record (outcome `ok`) were committed in one transaction.
    Applied(R),
    /// The change refused: nothing was written, and the record, handed back, is still to
    /// be finished (with the refusal's outcome).
    Refused(E, Box<PendingRecord>),
}

impl PendingRecord {
    /// Applies `change` and finishes the record with [`Outcome::Ok`] in one store
    /// transaction, run by the writer: the change is stored if and only if its record is.
    /// A change that returns an error writes nothing and hands the record back. An error
    /// of this function means neither was stored (the writer then records the request as
    /// an error when it still can): the caller must report the change as not applied.
    pub async fn commit<R, E>(
        mut self,
        change: impl FnOnce(&Tx<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<Committed<R, E>, AuditError>
    where
        R: Send + 'static,
        E: Send + 'static,
    {
        let Some(log) = self.log.clone() else {
            return Err(AuditError::Unavailable("record finished twice".into()));
        };
        let out: Arc<Mutex<Option<Result<R, E>>>> = Arc::new(Mutex::new(None));
        let slot = out.clone();
        let job: progress::Job = Box::new(move |tx| {
            let result = change(tx);
            let ok = result.is_ok();
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
            ok
        });
        let answer = if log.enabled {
            let mut done = self.record.clone();
            done.outcome = Outcome::Ok;
            done.latency_us = elapsed_us(self.started);
            let mut lost = done.clone();
            lost.outcome = Outcome::Error;
            lost.error_class = Some("audit".into());
            let (body, usage) = serialize(done)?;
            let (lost, _) = serialize(lost)?;
            let (answer, wait) = oneshot::channel();
            log.queue.push(Pending {
                body,
                usage,
                done: answer,
                change: Some(writer::Change { job, lost }),
                _expected: self.expected.take(),
            })?;
            match wait.await {
                Ok((answer, _)) => answer,
                Err(_) => Err("the audit writer stopped".into()),
            }
        } else {
            log.store
                .atomically(|tx| Ok(job(tx)))
                .map(|_| 0)
                .map_err(|e| e.to_string())
        };
        let result = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match (answer, result) {
            (Ok(_), Some(Err(e))) => Ok(Committed::Refused(e, Box::new(self))),
            (Ok(_), Some(Ok(r))) => {
                self.log = None;
                Ok(Committed::Applied(r))
            }
            (Ok(_), None) => Err(AuditError::Unavailable("the change was not run".into())),
            (Err(e), _) => {
                // The writer recorded the request as an error (or could not).
                self.log = None;
                Err(AuditError::Unavailable(e))
            }
        }
    }
}

impl Drop for PendingRecord {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let mut record = std::mem::take(&mut self.record);
            record.outcome = Outcome::Error;
            record
                .error_class
                .get_or_insert_with(|| "unfinished".to_owned());
            record.latency_us = elapsed_us(self.started);
            if log.enabled && log.enqueue(record, self.expected.take()).is_err() {
                tracing::error!("the record of an unfinished request could not be queued");
            }
        }
    }
}

/// The audit log: the writer's queue, the chain key and the live usage counters.
pub struct AuditLog {
    /// False only in benchmark mode (`warden up --unsafe-no-audit`): records are dropped.
    enabled: bool,
    queue: Arc<Queue>,
    progress: Arc<Progress>,
    health: Arc<Health>,
    /// The store thread's inbox (readers ask it to catch up).
    copier: Arc<Inbox>,
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
            .field("healthy", &self.health.ok())
            .finish_non_exhaustive()
    }
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
        let health = Arc::new(Health::default());
        let queue = Arc::new(Queue::new(LINGER_MAX));
        let progress = Arc::new(Progress::default());
        progress.acked.store(seq, Ordering::Release);
        // What the reopened store holds is durable (the replay above was committed so).
        progress.update(|s| (s.stored, s.durable) = (seq, seq));
        let inbox = Arc::new(Inbox::default());
        let copier = Copier {
            inbox: inbox.clone(),
            store: store.clone(),
            progress: progress.clone(),
            health: health.clone(),
            unstored: Vec::new(),
            unstored_usage: HashMap::new(),
            stored: seq,
            durable: seq,
            fail: failpoint("audit-commit"),
            fail_change: failpoint("audit-change"),
        };
        let copier_thread = std::thread::Builder::new()
            .name("warden-audit-store".into())
            .spawn(move || copier.run())
            .map_err(|e| AuditError::Unavailable(format!("cannot start the store thread: {e}")))?;
        let writer = Writer {
            queue: queue.clone(),
            progress: progress.clone(),
            journal,
            key: key.clone(),
            usage: usage.clone(),
            health: health.clone(),
            seq,
            prev,
            halves: [0, 0],
            copier: inbox.clone(),
            copier_thread: Some(copier_thread),
            fail: failpoint("audit-commit"),
        };
        let writer = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || writer.run())
            .map_err(|e| AuditError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            enabled: true,
            queue,
            progress,
            health,
            copier: inbox,
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
        copier::wait_stored(&self.copier, &self.progress, target).map_err(|(target, stored)| {
            StoreError::Db {
                path: self.store.path().to_owned(),
                message: format!(
                    "audit records up to {target} are journaled but not yet stored (stored: {stored})"
                ),
            }
        })
    }

    /// Whether the last journal commit and the last copy into the store succeeded (calls
    /// are refused up front while not). While not, asking also nudges the store thread to
    /// retry storing what is journaled.
    pub fn healthy(&self) -> bool {
        let healthy = self.health.ok();
        if !healthy {
            self.copier.request_flush();
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

    /// Opens the pending record of a request that just arrived (see [`PendingRecord`]).
    pub fn open(
        self: &Arc<Self>,
        request: impl Into<String>,
        client_ip: Option<std::net::IpAddr>,
    ) -> PendingRecord {
        let mut record = AuditRecord::begin(request, client_ip.map(|ip| ip.to_string()));
        record.id = correlation_id();
        PendingRecord {
            record,
            started: Instant::now(),
            log: Some(self.clone()),
            expected: Some(self.expect()),
        }
    }

    /// Serializes a (capped) record and queues it.
    fn enqueue(
        &self,
        record: AuditRecord,
        expected: Option<Expected>,
    ) -> Result<oneshot::Receiver<writer::Answer>, AuditError> {
        let (body, usage) = serialize(record)?;
        let (done, wait) = oneshot::channel();
        self.queue.push(Pending {
            body,
            usage,
            done,
            change: None,
            _expected: expected,
        })?;
        Ok(wait)
    }

    /// Appends a record and waits until it is durable. Returns its sequence number.
    pub async fn record(&self, record: AuditRecord) -> Result<u64, AuditError> {
        self.append(record, None).await
    }

    /// Appends a record and waits until it is durable; `expected` (the request's count
    /// among those under way) ends when the writer acknowledges it, so the writer does not
    /// wait for records that are already written.
    async fn append(
        &self,
        record: AuditRecord,
        expected: Option<Expected>,
    ) -> Result<u64, AuditError> {
        if !self.enabled {
            return Ok(0);
        }
        let wait = self.enqueue(record, expected)?;
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
    use super::chain::seal;
    use super::journal::Journal;
    use super::writer::{Answer, MAX_BATCH, QUEUE, journal_path};
    use super::*;
    use serde_json::Value;
    use std::time::Duration;

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

    #[tokio::test]
    async fn a_pending_record_is_written_once_finished_or_dropped_and_capped() {
        let (_dir, store, key) = store_and_key();
        let log = Arc::new(AuditLog::start(store.clone(), key).unwrap());
        let peer = Some("192.0.2.7".parse().unwrap());
        // Finished: the typed outcome, the correlation id, the peer.
        let mut p = log.open("tools/call", peer);
        let id = p.id().to_owned();
        assert!(id.starts_with("req_"), "{id}");
        p.record().tool = Some("t".repeat(1 << 20));
        p.record().principal = Some("a/b/c/d".into());
        p.record().outcome = Outcome::Ok; // overwritten by finish
        p.finish(Outcome::UnknownTool).await.unwrap();
        // Dropped unfinished: still written, as an error.
        let mut dropped = log.open("tools/list", None);
        dropped.record().principal = Some("a/b/c/d".into());
        drop(dropped);
        // Absorbed into a summary: not written.
        log.open("GET /mcp", peer).absorb();
        // The dropped record is queued without a waiter: poll until the writer has it.
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let recs = loop {
            let recs = log.query(&Query::default()).unwrap();
            if recs.len() >= 2 || Instant::now() > deadline {
                break recs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(recs.len(), 2, "{recs:?}");
        let (last, first) = (&recs[0], &recs[1]);
        assert_eq!(first.outcome, Outcome::UnknownTool);
        assert_eq!(first.id, id);
        assert_eq!(first.client_ip.as_deref(), Some("192.0.2.7"));
        let tool = first.tool.as_deref().unwrap();
        assert!(
            tool.len() <= MAX_FIELD && tool.ends_with("..."),
            "{}",
            tool.len()
        );
        assert_eq!(last.outcome, Outcome::Error);
        assert_eq!(last.error_class.as_deref(), Some("unfinished"));
        assert_eq!(last.request, "tools/list");
        // Usage of unknown tools lands in one bucket, whatever the name.
        let usage = log.usage("tool");
        assert_eq!(usage[UNKNOWN_TOOL_BUCKET].calls, 1);
        assert!(usage.keys().all(|k| k.len() < 64), "{usage:?}");
        assert_eq!(log.verify().unwrap().first_broken, None);
    }

    #[tokio::test]
    async fn a_record_answered_is_no_longer_counted_as_under_way() {
        let (_dir, store, key) = store_and_key();
        let log = AuditLog::start(store, key).unwrap();
        let wait = log.enqueue(rec("ok"), Some(log.expect())).unwrap();
        // The writer gives up the count when it answers, before the caller runs again,
        // so it does not wait for records that are already written.
        let (seq, _) = wait.await.unwrap();
        assert_eq!(seq.unwrap(), 1);
        assert_eq!(log.queue.inflight.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_change_is_committed_with_its_record_or_not_at_all() {
        use crate::storage::{ScopeRecord, StoreError, Tables};
        let (_dir, store, key) = store_and_key();
        let log = Arc::new(AuditLog::start(store.clone(), key.clone()).unwrap());
        let scope = |path: &'static str| {
            move |tx: &Tx<'_>| tx.create_scope(path, &ScopeRecord { created_at: 1 })
        };
        // Records queued around a change keep their order of arrival in the chain.
        let spawn_records = |n: usize| -> Vec<_> {
            (0..n)
                .map(|_| {
                    let log = log.clone();
                    tokio::spawn(async move { log.record(rec("ok")).await.unwrap() })
                })
                .collect()
        };
        let mut calls = spawn_records(20);
        let mut p = log.open("admin POST /admin/v1/scopes", None);
        p.record().principal = Some("admin:ops".into());
        let changed = tokio::spawn(p.commit(scope("acme")));
        calls.extend(spawn_records(20));
        assert!(matches!(
            changed.await.unwrap().unwrap(),
            Committed::Applied(())
        ));
        assert!(store.scope("acme").unwrap().is_some());
        let mut seqs = Vec::new();
        for call in calls {
            seqs.push(call.await.unwrap());
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 40);
        let trail = log.query(&Query::default()).unwrap();
        assert_eq!(trail.len(), 41);
        let admin = trail
            .iter()
            .find(|r| r.request.starts_with("admin"))
            .unwrap();
        assert_eq!(
            (admin.outcome, admin.principal.as_deref()),
            (Outcome::Ok, Some("admin:ops"))
        );
        // Queued after the first 20 and before the last 20.
        assert_eq!(admin.seq, 21);
        assert!(!seqs.contains(&admin.seq));
        // A change that refuses writes nothing and hands the record back to be finished.
        let p = log.open("admin POST /admin/v1/scopes", None);
        let Committed::Refused(e, p) = p.commit(scope("acme")).await.unwrap() else {
            panic!("an existing scope was created again");
        };
        assert!(matches!(e, StoreError::Conflict(_)));
        assert_eq!(log.query(&Query::default()).unwrap().len(), 41);
        assert_eq!(p.finish(Outcome::Invalid).await.unwrap(), 42);
        // The chain holds, and the restarted log continues it.
        assert_eq!(log.verify().unwrap().first_broken, None);
        drop(log);
        let log = AuditLog::start(store.clone(), key).unwrap();
        assert_eq!(log.record(rec("ok")).await.unwrap(), 43);
        assert_eq!(log.verify().unwrap().first_broken, None);
    }

    #[test]
    fn stored_outcome_names_round_trip_and_unknown_ones_are_errors() {
        for o in [
            Outcome::Ok,
            Outcome::ToolError,
            Outcome::Trap,
            Outcome::Denied,
            Outcome::ApprovalRequired,
            Outcome::ApprovalDenied,
            Outcome::ApprovalExpired,
            Outcome::UnknownTool,
            Outcome::Unauthenticated,
            Outcome::RateLimited,
            Outcome::Invalid,
            Outcome::Error,
        ] {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), o);
            assert_eq!(Outcome::from(o.as_str()), o);
        }
        assert_eq!(
            serde_json::from_str::<Outcome>("\"from-the-future\"").unwrap(),
            Outcome::Error
        );
    }

    fn pending() -> (Pending, oneshot::Receiver<Answer>) {
        let (done, wait) = oneshot::channel();
        let p = Pending {
            body: b"{}".to_vec(),
            usage: None,
            done,
            change: None,
            _expected: None,
        };
        (p, wait)
    }

    #[test]
    fn a_lone_caller_is_taken_at_once_even_with_a_long_linger() {
        let queue = Arc::new(Queue::new(Duration::from_secs(3600)));
        let _me = AuditLog::expect_on(&queue);
        queue.push(pending().0).unwrap();
        let mut batch = Vec::new();
        assert!(queue.next_batch(&mut batch));
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
                assert!(queue.next_batch(&mut batch));
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
        assert!(queue.next_batch(&mut batch));
        assert_eq!(batch.len(), 1);
        batch.clear();
        assert!(!queue.next_batch(&mut batch));
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
        assert!(queue.next_batch(&mut batch));
        assert_eq!(batch.len(), MAX_BATCH);
    }

    #[test]
    fn a_reader_flush_wakes_the_idle_store_thread_with_nothing_to_store() {
        let inbox = Arc::new(Inbox::default());
        let copier = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let mut msgs = Vec::new();
                let woken = inbox.next(&mut msgs);
                (woken, msgs.len())
            })
        };
        inbox.request_flush();
        let (woken, n) = copier.join().unwrap();
        assert_eq!(
            woken,
            copier::Woken {
                flush: true,
                closed: false
            }
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn the_store_thread_copies_a_full_batch_at_once_and_a_few_records_after_a_while() {
        use copier::{APPLY_BATCH, IDLE, Msg};
        let inbox = Inbox::default();
        let records = |from: u64, n: usize| {
            let r: Vec<(u64, Vec<u8>)> = (from..from + n as u64).map(|s| (s, vec![])).collect();
            Msg::Records(r, HashMap::new())
        };
        // One record short of a batch: nothing to do before IDLE has passed.
        inbox.send(records(1, APPLY_BATCH - 1));
        let started = Instant::now();
        let mut msgs = Vec::new();
        inbox.next(&mut msgs);
        assert!(started.elapsed() >= IDLE, "{:?}", started.elapsed());
        assert_eq!(msgs.len(), 1);
        // A whole batch (in two messages) is taken without waiting.
        msgs.clear();
        inbox.send(records(1, APPLY_BATCH - 1));
        inbox.send(records(APPLY_BATCH as u64, 1));
        let started = Instant::now();
        inbox.next(&mut msgs);
        assert!(started.elapsed() < IDLE, "{:?}", started.elapsed());
        assert_eq!(msgs.len(), 2);
    }

    fn big(outcome: &str, bytes: usize) -> AuditRecord {
        AuditRecord {
            reasons: vec!["x".repeat(bytes)],
            ..rec(outcome)
        }
    }

    /// Appends `record` as [`AuditLog::record`] does but without capping its fields, so
    /// that tests can fill the journal with few records. Returns its sequence number.
    async fn record_uncapped(log: &AuditLog, record: AuditRecord) -> u64 {
        let usage = record.usage();
        let body = serde_json::to_vec(&AuditRecord {
            seq: 0,
            prev: String::new(),
            ..record
        })
        .unwrap();
        let (done, wait) = oneshot::channel();
        log.queue
            .push(Pending {
                body,
                usage,
                done,
                change: None,
                _expected: None,
            })
            .unwrap();
        wait.await.unwrap().0.unwrap()
    }

    #[tokio::test]
    async fn a_full_journal_is_stored_and_started_over_and_oversized_batches_go_straight_in() {
        let (_dir, store, key) = store_and_key();
        let log = AuditLog::start(store.clone(), key.clone()).unwrap();
        // 80 records of 64 KiB: more than the journal holds, so each half is filled and
        // taken again at least once; then one record larger than a half.
        let n = 80u64;
        for i in 1..=n {
            assert_eq!(record_uncapped(&log, big("ok", 64 << 10)).await, i);
        }
        assert!(log.progress.lock().durable >= 30);
        let huge = big("tool_error", journal::HALF as usize + 1);
        assert_eq!(record_uncapped(&log, huge).await, n + 1);
        // Stored durably, not journaled.
        assert_eq!(log.progress.lock().durable, n + 1);
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

    /// What a crash of `log` now would leave, restarted in a new directory under `dir`: the
    /// journal as it is on disk and the store as its last durable commit left it.
    fn crash(log: &AuditLog, store: &Store, key: &ChainKey, dir: &std::path::Path) -> AuditLog {
        let journal = std::fs::read(journal_path(store)).unwrap();
        let durable_to = log.progress.lock().durable;
        let mut durable = Vec::new();
        store
            .scan_audit(1, |seq, bytes| {
                if seq <= durable_to {
                    durable.push((seq, bytes.to_vec()));
                }
                seq < durable_to
            })
            .unwrap();
        let crashed = tempfile::tempdir_in(dir).unwrap().keep();
        let after = Store::open(&crashed.join("db")).unwrap();
        after.append_audit(&durable, &[], true).unwrap();
        std::fs::write(journal_path(&after), journal).unwrap();
        AuditLog::start(Arc::new(after), key.clone()).unwrap()
    }

    #[tokio::test]
    async fn records_in_both_journal_halves_survive_a_crash() {
        let (dir, store, key) = store_and_key();
        let log = AuditLog::start(store.clone(), key.clone()).unwrap();
        // 80 records of 64 KiB: each half (30 of them) is filled, stored durably
        // and filled again.
        for i in 1..=80 {
            assert_eq!(record_uncapped(&log, big("ok", 64 << 10)).await, i);
        }
        let durable = log.progress.lock().durable;
        assert!((30..80).contains(&durable), "{durable}");
        let log = crash(&log, &store, &key, dir.path());
        let v = log.verify().unwrap();
        assert_eq!((v.records, v.first_broken), (80, None));
        assert_eq!(log.record(rec("ok")).await.unwrap(), 81);
    }

    #[tokio::test]
    async fn records_acknowledged_after_an_admin_change_survive_a_crash() {
        use crate::storage::{ScopeRecord, Tables};
        let (dir, store, key) = store_and_key();
        let log = Arc::new(AuditLog::start(store.clone(), key.clone()).unwrap());
        for _ in 0..2 {
            log.record(rec("ok")).await.unwrap();
        }
        let p = log.open("admin POST /admin/v1/scopes", None);
        let changed = p
            .commit(|tx: &Tx<'_>| tx.create_scope("acme", &ScopeRecord { created_at: 1 }))
            .await
            .unwrap();
        assert!(matches!(changed, Committed::Applied(())));
        for seq in 4..=5 {
            assert_eq!(log.record(rec("denied")).await.unwrap(), seq);
        }
        assert_eq!(log.progress.lock().durable, 3);
        let log = crash(&log, &store, &key, dir.path());
        // Restarted, the trail holds all five records and goes on from them.
        let v = log.verify().unwrap();
        assert_eq!((v.records, v.first_broken), (5, None));
        assert_eq!(log.usage("tenant")["a"].errors, 2);
        assert_eq!(log.record(rec("ok")).await.unwrap(), 6);
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
